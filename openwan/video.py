"""Video and image files: what a generation is written to, and what conditioning is read from.

* :func:`to_uint8` turns the VAE's [-1, 1] output into uint8 frames with the reference's rule.
* :func:`write_video` encodes H.264 mp4 with PyAV, the same bytes for the same frames. It takes the
  whole clip or an *iterator of frame chunks*, so a VAE decode can stream frames straight into the
  encoder; it stores the generation settings both in the container (``comment`` tag, JSON) and in a
  ``.json`` beside it, and publishes the two as one unit (openwan.fileio.write_files).
* :func:`write_image` does the same for single frames (text-to-image): PNG with a text chunk.
* :func:`read_video`, :func:`read_video_metadata`, :func:`read_image` read them back; the latter
  turns any Pillow-readable image (RGBA, grayscale, 16-bit, palette, EXIF-rotated) into RGB uint8.
* :func:`export_to_video` is a convenience in the style of diffusers' helper (list of frames).

Existing files are never overwritten unless ``overwrite=True``.
"""
from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import warnings
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy as np
import torch

from openwan import validate
from openwan.fileio import OutputPathError, check_free, ensure_dir, write_files  # noqa: F401 - OutputPathError re-exported

__all__ = [
    "OutputPathError", "to_uint8", "write_video", "write_image", "read_video", "iter_video", "read_video_metadata",
    "read_image", "read_image_metadata", "export_to_video", "sidecar_path",
]

PathLike = Union[str, os.PathLike]
Frames = Union[np.ndarray, torch.Tensor]

METADATA_KEY = "comment"          # mp4 tag and PNG text keyword holding the settings as JSON
DEFAULT_CRF = 18                  # x264 constant rate factor: ~visually lossless, small files
SMALL_FRAME_PIXELS = 256 * 256    # frames up to this size are stored near-lossless (yuv444p, crf 0)
PIX_FMTS = ("yuv420p", "yuv444p")
# Repeatable x264: one thread, and no MB-tree rate control (its float propagation made repeated encodes of
# the same frames differ, up to tens of levels after decoding, even on one thread).
ENCODER_OPTIONS = {"threads": "1", "x264-params": "mbtree=0"}


@functools.lru_cache(maxsize=None)
def _one_scale_thread() -> dict:
    """``threads=1`` for PyAV's pixel-format conversions, where the installed PyAV takes it (17 and later).

    From PyAV 17 a conversion (``reformat``, ``to_ndarray``) runs on a pool of swscale threads, one per CPU, that
    the conversion context keeps between frames. A process forked after one (``launch_local(...,
    start_method="fork")``, a DataLoader worker) inherits the context without its threads, and its first
    conversion waits on them for ever (seen with PyAV 18.1.1). One thread has no pool; our frames are small.
    """
    import av
    try:
        av.VideoFrame(2, 2, "rgb24").reformat(format="yuv444p", threads=1)
    except TypeError:
        return {}
    return {"threads": 1}


# ============================================================================ tensors -> uint8

def to_uint8(video: torch.Tensor) -> np.ndarray:
    """VAE output in [-1, 1] -> uint8 frames, channels last.

    ``[3, F, H, W] -> [F, H, W, 3]`` and ``[B, 3, F, H, W] -> [B, F, H, W, 3]``. The reference's
    rule: clamp to [-1, 1], ``(x + 1) / 2 * 255`` in float32, truncated (not rounded) to uint8.
    """
    if not isinstance(video, torch.Tensor):
        video = torch.as_tensor(np.asarray(video))
    if video.ndim not in (4, 5) or video.shape[-4] != 3:
        raise ValueError(f"to_uint8 expects a [3, F, H, W] or [B, 3, F, H, W] video in [-1, 1], got shape "
                         f"{tuple(video.shape)}")
    x = video.detach().to("cpu", torch.float32).clamp(-1, 1)
    x = ((x + 1) / 2 * 255).to(torch.uint8)
    x = x.movedim(-4, -1)                       # channels last
    return x.contiguous().numpy()


# ============================================================================ helpers

def sidecar_path(path: PathLike) -> Path:
    """The ``.json`` written beside an output: ``clip.mp4 -> clip.json``."""
    return Path(path).with_suffix(".json")


def _to_numpy_frames(chunk, what: str = "frames") -> np.ndarray:
    """A uint8 [f, H, W, 3] array from an array/tensor/PIL image of one frame or a chunk."""
    if hasattr(chunk, "convert") and hasattr(chunk, "size"):        # PIL image
        chunk = np.asarray(chunk.convert("RGB"))
    if isinstance(chunk, torch.Tensor):
        chunk = chunk.detach().cpu().numpy()
    chunk = np.asarray(chunk)
    if chunk.ndim == 3:
        chunk = chunk[None]
    if chunk.ndim != 4 or chunk.shape[-1] != 3:
        raise ValueError(f"{what} must be uint8 [F, H, W, 3] (or [H, W, 3] for one frame), got shape "
                         f"{chunk.shape}; for a [-1, 1] VAE output use openwan.video.to_uint8 first")
    if chunk.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got {chunk.dtype}; convert [-1, 1] tensors with "
                         f"openwan.video.to_uint8")
    return chunk


def _iter_chunks(frames) -> Iterator[np.ndarray]:
    if isinstance(frames, (np.ndarray, torch.Tensor)):
        yield _to_numpy_frames(frames)
        return
    if isinstance(frames, (str, bytes, dict)) or not hasattr(frames, "__iter__"):
        raise ValueError(f"frames must be a uint8 array/tensor [F, H, W, 3] or an iterable of frame chunks, "
                         f"got {type(frames).__name__}")
    for i, chunk in enumerate(frames):
        yield _to_numpy_frames(chunk, what=f"frame chunk {i}")


def check_output(path: PathLike, overwrite: bool, sidecar: bool = True) -> Path:
    """Refuse an output before any work: a directory, an unwritable place, an existing file (or, with
    ``sidecar``, an existing ``.json`` beside it) without ``overwrite``, or a ``.json`` name that its own
    settings file would collide with. Creates the output directory."""
    path = Path(path)
    if sidecar:
        validate.output_path(path, "output", overwrite=overwrite)
    else:
        check_free([path], overwrite)
    parent = path.parent
    ensure_dir(parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"output directory {parent} is not writable; fix its permissions or choose "
                              f"another output path")
    return path


def _metadata_json(metadata: Optional[dict], ascii_only: bool) -> Optional[str]:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict (prompt, seed, settings), got {type(metadata).__name__}")
    try:
        text = json.dumps(metadata, ensure_ascii=ascii_only, indent=None if ascii_only else 2, default=str)
        if not ascii_only:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:      # lone surrogates (undecodable bytes in a prompt): escape them
                text = json.dumps(metadata, ensure_ascii=True, indent=2, default=str)
        return text
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"metadata cannot be stored as JSON: {e}") from None


def _publish(path: Path, write_fn, metadata: Optional[dict], overwrite: bool) -> Path:
    """The output and its sidecar as one unit (both or neither); a replaced output's stale sidecar goes."""
    text = _metadata_json(metadata, ascii_only=False)
    side = sidecar_path(path)
    replacing = overwrite and path.exists()
    items = [(path, write_fn)]
    if text is not None:
        items.append((side, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8")))
    write_files(items, overwrite=overwrite)
    if text is None and replacing and side.is_file():
        side.unlink()
    return path


def _even_pad(chunk: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: replicate the last row / column when H or W is odd."""
    ph, pw = chunk.shape[1] % 2, chunk.shape[2] % 2
    if ph or pw:
        chunk = np.pad(chunk, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return chunk


def _rate(fps) -> Union[int, Fraction]:
    try:
        ok = float(fps) > 0 and np.isfinite(float(fps))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if float(fps).is_integer():
        return int(fps)
    return Fraction(fps).limit_denominator(1001)


# ============================================================================ writing

def encode_settings(width: int, height: int, crf: Optional[int] = None,
                    pix_fmt: Optional[str] = None) -> tuple[int, str]:
    """(crf, pix_fmt) for a clip of this frame size: small frames (up to SMALL_FRAME_PIXELS) are stored
    near-lossless (yuv444p, crf 0: only the RGB -> YUV rounding, a level or two); larger ones as
    yuv420p at crf 18, the widely playable ~visually lossless default. Explicit values win."""
    small = width * height <= SMALL_FRAME_PIXELS
    crf = (0 if small else DEFAULT_CRF) if crf is None else crf
    pix_fmt = pix_fmt or ("yuv444p" if small else "yuv420p")
    if isinstance(crf, bool) or not (isinstance(crf, (int, np.integer)) and 0 <= crf <= 51):
        raise ValueError(f"crf must be an integer in [0, 51] (lower is better quality), got {crf!r}")
    if pix_fmt not in PIX_FMTS:
        raise ValueError(f"pix_fmt must be one of {', '.join(PIX_FMTS)}, got {pix_fmt!r}")
    return int(crf), pix_fmt


def write_video(frames: Union[Frames, Iterable[Frames]], path: PathLike, fps: float = 16,
                metadata: Optional[dict] = None, crf: Optional[int] = None, overwrite: bool = False,
                pix_fmt: Optional[str] = None) -> Path:
    """Encode frames as an H.264 mp4, atomically and reproducibly.

    Args:
        frames: uint8 [F, H, W, 3] (numpy or torch), or an iterable of such chunks (a chunk may
            also be one [H, W, 3] frame). Chunks are encoded as they arrive, so a generator that
            decodes latents piece by piece never holds the whole clip.
        path: the .mp4 to write. Its directory is created if missing.
        fps: frame rate (Wan: 16).
        metadata: dict (prompt, seed, settings...). Stored as JSON in the container's ``comment``
            tag and in ``<name>.json`` beside the video; the two files are published together.
        crf, pix_fmt: x264 quality (0 = lossless .. 51) and chroma layout; default by frame size, see
            :func:`encode_settings` (pass ``pix_fmt="yuv420p"`` for players without H.264 4:4:4).
        overwrite: replace an existing file (and sidecar) instead of raising FileExistsError.

    The same frames always give the same bytes (see ENCODER_OPTIONS; the RGB -> YUV conversion is
    done explicitly before encoding).
    Odd heights/widths are padded by one replicated row/column (4:2:0 needs even sizes); the
    file then reads back one pixel larger there. Raises ValueError for bad frames (nothing is
    left on disk), FileExistsError, or OutputPathError when the directory cannot be written.
    """
    path = check_output(path, overwrite, sidecar=metadata is not None)
    rate = _rate(fps)
    if crf is not None or pix_fmt is not None:
        encode_settings(64, 64, crf, pix_fmt)               # argument errors before any work
    comment = _metadata_json(metadata, ascii_only=True)
    chunks = _iter_chunks(frames)

    def encode(tmp: str) -> None:
        import av
        count = 0
        size = None
        with av.open(tmp, mode="w", format="mp4") as container:
            if comment is not None:
                container.metadata[METADATA_KEY] = comment
            stream = fmt = None
            scale = _one_scale_thread()
            for chunk in chunks:
                if size is None:
                    size = chunk.shape[1:3]
                    q, fmt = encode_settings(size[1], size[0], crf, pix_fmt)
                    stream = container.add_stream("libx264", rate=rate)
                    stream.height, stream.width = _even_pad(chunk[:1]).shape[1:3]
                    stream.pix_fmt = fmt
                    stream.options = dict(ENCODER_OPTIONS, crf=str(q))
                    stream.codec_context.thread_count = 1
                elif chunk.shape[1:3] != size:
                    raise ValueError(f"frame chunk of size {chunk.shape[1:3]} after frames of size {size}: "
                                     f"all frames of a video must have the same height and width")
                for frame in _even_pad(chunk):
                    vf = av.VideoFrame.from_ndarray(np.array(frame, order="C"), format="rgb24")
                    vf = vf.reformat(format=fmt, **scale)
                    vf.pts = count
                    vf.time_base = Fraction(1) / Fraction(rate)
                    container.mux(stream.encode(vf))
                    count += 1
            if count == 0:
                raise ValueError("no frames to write: the frames array or iterator was empty")
            container.mux(stream.encode(None))

    return _publish(path, encode, metadata, overwrite)


def write_image(frame: Frames, path: PathLike, metadata: Optional[dict] = None, overwrite: bool = False) -> Path:
    """Write one uint8 [H, W, 3] frame (or [1, H, W, 3]) as PNG, atomically.

    ``metadata`` goes into an iTXt chunk with keyword ``comment`` (JSON) and into ``<name>.json``
    beside the image (both or neither).
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    arr = _to_numpy_frames(frame, what="image")
    if arr.shape[0] != 1:
        raise ValueError(f"write_image takes one frame, got {arr.shape[0]}; use write_video for several")
    path = check_output(path, overwrite, sidecar=metadata is not None)
    info = PngInfo()
    comment = _metadata_json(metadata, ascii_only=False)
    if comment is not None:
        info.add_itxt(METADATA_KEY, comment)
    image = Image.fromarray(np.ascontiguousarray(arr[0]))
    return _publish(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info), metadata, overwrite)


def export_to_video(frames, path: Optional[PathLike] = None, fps: float = 16, overwrite: bool = False,
                    **kwargs) -> str:
    """Convenience like diffusers' ``export_to_video``: a list of PIL images or numpy frames.

    Numpy frames may be uint8, or floats in [0, 1] (scaled by 255 and rounded, as diffusers does).
    Without ``path`` a temporary .mp4 is created. Returns the path as a string. Extra keyword
    arguments (``metadata``, ``crf``) go to :func:`write_video`.
    """
    def convert():
        for f in frames:
            if isinstance(f, torch.Tensor):
                f = f.detach().cpu().numpy()
            if isinstance(f, np.ndarray) and np.issubdtype(f.dtype, np.floating):
                f = (np.clip(f, 0.0, 1.0) * 255).round().astype(np.uint8)
            yield f

    if path is None:
        fd, tmp = tempfile.mkstemp(suffix=".mp4")
        os.close(fd)
        path, overwrite = tmp, True
    return str(write_video(convert(), path, fps=fps, overwrite=overwrite, **kwargs))


# ============================================================================ reading

def _open_error(path: Path, what: str, e: Exception) -> ValueError:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return ValueError(f"cannot read {what} {path}: {msg}. The file is corrupt, truncated or not a readable {what} file.")


def _check_exists(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a file")
    return path


def frame_indices(num_frames: int, fps: float, target_fps: Optional[float]) -> np.ndarray:
    """Indices of the source frames to use when resampling fps -> target_fps (all when unset).

    Frame k of the output is the source frame nearest to time k / target_fps (rounded index k * fps /
    target_fps); the output covers the source's duration.
    """
    if not target_fps or not fps or fps <= 0 or num_frames <= 1:
        return np.arange(num_frames)
    step = fps / float(target_fps)
    n = int(math.floor((num_frames - 1) / step + 1e-9)) + 1
    return np.minimum(np.round(np.arange(n) * step).astype(np.int64), num_frames - 1)


@contextmanager
def _video_frames(path: Path):
    """``(fps, frames)`` of a video file while in the block: ``frames`` an iterator of its RGB uint8 frames as decoded.
    A file PyAV cannot open or decode, or one with no video stream, is a ValueError naming it; a frame size past the
    limit a ResourceLimit (checked from the header)."""
    import av
    try:
        container = av.open(str(path))
    except Exception as e:  # noqa: BLE001 - PyAV raises many error types for bad files
        raise _open_error(path, "video", e) from None
    with container:
        if not container.streams.video:
            raise _open_error(path, "video", ValueError("it has no video stream"))
        stream = container.streams.video[0]
        validate.image_size(stream.width, stream.height, what=f"video {path}")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        scale = _one_scale_thread()

        def frames():
            try:
                for f in container.decode(stream):
                    yield f.to_ndarray(format="rgb24", **scale)
            except Exception as e:  # noqa: BLE001
                raise _open_error(path, "video", e) from None
        yield (float(rate) if rate else 0.0), frames()


def read_video(path: PathLike) -> tuple[np.ndarray, float]:
    """Decode a video file -> (uint8 [F, H, W, 3] RGB frames, fps)."""
    path = _check_exists(path)
    with _video_frames(path) as (fps, frames):
        frames = list(frames)
    if not frames:
        raise ValueError(f"cannot read video {path}: it holds no decodable frames")
    return np.stack(frames), fps


def iter_video(path: PathLike, target_fps: Optional[float] = None, chunk: int = 16) -> Iterator[np.ndarray]:
    """Decode a video file a chunk at a time: uint8 [<= chunk, H, W, 3] RGB frames, resampled to ``target_fps`` by
    the rule of :func:`frame_indices` (the same frames as ``read_video`` then ``frame_indices``), in bounded memory:
    a long video to extend is read twice this way rather than held whole (openwan.pipelines.extend)."""
    path = _check_exists(path)
    with _video_frames(path) as (fps, it):
        step = fps / float(target_fps) if target_fps and fps > 0 else None
        out, k, i = [], 0, 0
        cur = next(it, None)
        if cur is None:
            raise ValueError(f"cannot read video {path}: it holds no decodable frames")
        while cur is not None:
            nxt = next(it, None)                  # one frame ahead: the last frame's rule is frame_indices' end
            if step is None:
                out.append(cur)
            else:
                while int(np.round(k * step)) == i and (nxt is not None or k * step <= i + 1e-9 * step):
                    out.append(cur)
                    k += 1
            if len(out) >= chunk:
                yield np.stack(out[:chunk])
                out = out[chunk:]
            cur, i = nxt, i + 1
        if out:
            yield np.stack(out)


def read_video_metadata(path: PathLike) -> dict:
    """Settings stored by :func:`write_video`: the container's JSON comment, else the ``.json``
    beside the file, else ``{}``. A comment that is not JSON comes back as ``{"comment": text}``."""
    import av
    path = _check_exists(path)
    try:
        with av.open(str(path)) as container:
            tags = dict(container.metadata)
    except Exception as e:  # noqa: BLE001
        raise _open_error(path, "video", e) from None
    return _parse_metadata(tags.get(METADATA_KEY), path)


def _parse_metadata(text: Optional[str], path: Path) -> dict:
    if text:
        try:
            value = json.loads(text)
            return value if isinstance(value, dict) else {METADATA_KEY: value}
        except (json.JSONDecodeError, RecursionError):
            return {METADATA_KEY: text}
    side = sidecar_path(path)
    if side.is_file():
        try:
            value = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"cannot read metadata file {side}: {e}") from None
        return value if isinstance(value, dict) else {METADATA_KEY: value}
    return {}


def to_rgb_array(img) -> np.ndarray:
    """Any Pillow image -> RGB uint8 [H, W, 3]."""
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit / 32-bit grayscale: Pillow's convert() clips instead of rescaling, so scale here.
        # I;16*: always 0..65535. I (32-bit int) and F (float): judged by their largest value.
        a = np.asarray(img).astype(np.float64)
        top = a.max(initial=0)
        if mode.startswith("I;16") or (mode == "I" and top > 255):
            a = a / 257.0                          # 0..65535 -> 0..255
        elif mode == "F" and top <= 1.0:
            a = a * 255.0                          # float images in [0, 1]
        g = np.clip(np.round(a), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")                  # keeps a transparent palette entry
    elif mode == "LA" or (mode in ("L", "RGB") and "transparency" in img.info):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_image(path: PathLike) -> np.ndarray:
    """Read an image as RGB uint8 [H, W, 3].

    Conversions: EXIF orientation applied; alpha (RGBA, LA, transparent palette) composited on
    white; grayscale replicated to 3 channels; 16-bit values scaled to 8 bits (v / 257, rounded;
    32-bit integer images only when their maximum exceeds 255, float images in [0, 1] times 255);
    palette and CMYK converted; animated formats give their first frame. A corrupt or unreadable
    file raises ValueError naming it; a missing one FileNotFoundError.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = _check_exists(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # our own limit speaks instead
            with Image.open(path) as img:
                validate.image_size(img.width, img.height, what=f"image {path}")   # from the header, before decoding
                img.load()
                img = ImageOps.exif_transpose(img) or img
                return to_rgb_array(img)
    except validate.ResourceLimit:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _open_error(path, "image", e) from None


def read_image_metadata(path: PathLike) -> dict:
    """Settings stored by :func:`write_image` (PNG text chunk, else the ``.json`` beside, else {})."""
    from PIL import Image, UnidentifiedImageError

    path = _check_exists(path)
    try:
        with Image.open(path) as img:
            img.load()
            text = img.info.get(METADATA_KEY)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise _open_error(path, "image", e) from None
    return _parse_metadata(text, path)
