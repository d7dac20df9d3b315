"""Video and image files: what a generation is written to, and what conditioning is read from.

* :func:`to_uint8` turns the VAE's [-1, 1] output into uint8 frames with the reference's rule.
* :func:`write_video` encodes H.264 mp4 (yuv420p) with PyAV. It takes the whole clip or an
  *iterator of frame chunks*, so a VAE decode can stream frames straight into the encoder; it
  writes atomically (temp file in the target directory, then ``os.replace``) and stores the
  generation settings both in the container (``comment`` tag, JSON) and in a ``.json`` beside it.
* :func:`write_image` does the same for single frames (text-to-image): PNG with a text chunk.
* :func:`read_video`, :func:`read_video_metadata`, :func:`read_image` read them back; the latter
  turns any Pillow-readable image (RGBA, grayscale, 16-bit, palette, EXIF-rotated) into RGB uint8.
* :func:`export_to_video` is a convenience in the style of diffusers' helper (list of frames).

Existing files are never overwritten unless ``overwrite=True``.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy as np
import torch

from openwan.fileio import OutputPathError, atomic_write  # noqa: F401 - OutputPathError re-exported

__all__ = [
    "OutputPathError", "to_uint8", "write_video", "write_image", "read_video", "read_video_metadata",
    "read_image", "read_image_metadata", "export_to_video", "sidecar_path",
]

PathLike = Union[str, os.PathLike]
Frames = Union[np.ndarray, torch.Tensor]

METADATA_KEY = "comment"          # mp4 tag and PNG text keyword holding the settings as JSON
DEFAULT_CRF = 18                  # x264 constant rate factor: ~visually lossless, small files


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


def _prepare_output(path: PathLike, overwrite: bool) -> Path:
    """Check (or create) the output directory and refuse to clobber an existing file."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{path} is a directory; give a file name such as {path / 'out.mp4'}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (or choose another name) to replace it")
    parent = path.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputPathError(f"cannot write {path}: {ancestor} is a file, not a directory; "
                                      f"choose another output path")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"cannot create output directory {parent}: {e.strerror or e}; "
                              f"choose another output path") from None
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
        return json.dumps(metadata, ensure_ascii=ascii_only, indent=None if ascii_only else 2, default=str)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata cannot be stored as JSON: {e}") from None


def _write_sidecar(path: Path, metadata: Optional[dict], replacing: bool) -> None:
    """Write <name>.json; when an output was replaced without metadata, drop its stale .json."""
    text = _metadata_json(metadata, ascii_only=False)
    side = sidecar_path(path)
    if text is not None:
        atomic_write(side, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    elif replacing and side.is_file():
        side.unlink()


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

def write_video(frames: Union[Frames, Iterable[Frames]], path: PathLike, fps: float = 16,
                metadata: Optional[dict] = None, crf: int = DEFAULT_CRF, overwrite: bool = False) -> Path:
    """Encode frames as an H.264 (yuv420p) mp4, atomically.

    Args:
        frames: uint8 [F, H, W, 3] (numpy or torch), or an iterable of such chunks (a chunk may
            also be one [H, W, 3] frame). Chunks are encoded as they arrive, so a generator that
            decodes latents piece by piece never holds the whole clip.
        path: the .mp4 to write. Its directory is created if missing.
        fps: frame rate (Wan: 16).
        metadata: dict (prompt, seed, settings...). Stored as JSON in the container's ``comment``
            tag and in ``<name>.json`` beside the video.
        crf: x264 constant rate factor (0 = lossless luma, 18 ~ visually lossless, 23 = x264 default).
        overwrite: replace an existing file instead of raising FileExistsError.

    Odd heights/widths are padded by one replicated row/column (yuv420p needs even sizes); the
    file then reads back one pixel larger there. Raises ValueError for bad frames (nothing is
    left on disk), FileExistsError, or OutputPathError when the directory cannot be written.
    """
    path = _prepare_output(path, overwrite)
    replacing = path.exists()
    rate = _rate(fps)
    if not (isinstance(crf, (int, np.integer)) and 0 <= crf <= 51):
        raise ValueError(f"crf must be an integer in [0, 51] (lower is better quality), got {crf!r}")
    comment = _metadata_json(metadata, ascii_only=True)
    chunks = _iter_chunks(frames)

    def encode(tmp: str) -> None:
        import av
        count = 0
        size = None
        with av.open(tmp, mode="w", format="mp4") as container:
            if comment is not None:
                container.metadata[METADATA_KEY] = comment
            stream = None
            for chunk in chunks:
                if size is None:
                    size = chunk.shape[1:3]
                    stream = container.add_stream("libx264", rate=rate)
                    stream.height, stream.width = _even_pad(chunk[:1]).shape[1:3]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(int(crf))}
                elif chunk.shape[1:3] != size:
                    raise ValueError(f"frame chunk of size {chunk.shape[1:3]} after frames of size {size}: "
                                     f"all frames of a video must have the same height and width")
                for frame in _even_pad(chunk):
                    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                    container.mux(stream.encode(vf))
                    count += 1
            if count == 0:
                raise ValueError("no frames to write: the frames array or iterator was empty")
            container.mux(stream.encode(None))

    atomic_write(path, encode)
    _write_sidecar(path, metadata, replacing)
    return path


def write_image(frame: Frames, path: PathLike, metadata: Optional[dict] = None, overwrite: bool = False) -> Path:
    """Write one uint8 [H, W, 3] frame (or [1, H, W, 3]) as PNG, atomically.

    ``metadata`` goes into an iTXt chunk with keyword ``comment`` (JSON, UTF-8) and into
    ``<name>.json`` beside the image.
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    arr = _to_numpy_frames(frame, what="image")
    if arr.shape[0] != 1:
        raise ValueError(f"write_image takes one frame, got {arr.shape[0]}; use write_video for several")
    path = _prepare_output(path, overwrite)
    info = PngInfo()
    comment = _metadata_json(metadata, ascii_only=False)
    if comment is not None:
        info.add_itxt(METADATA_KEY, comment)
    image = Image.fromarray(np.ascontiguousarray(arr[0]))
    replacing = path.exists()
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))
    _write_sidecar(path, metadata, replacing)
    return path


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


def read_video(path: PathLike) -> tuple[np.ndarray, float]:
    """Decode a video file -> (uint8 [F, H, W, 3] RGB frames, fps)."""
    import av
    path = _check_exists(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("it has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except Exception as e:  # noqa: BLE001 - PyAV raises many error types for bad files
        raise _open_error(path, "video", e) from None
    if not frames:
        raise ValueError(f"cannot read video {path}: it holds no decodable frames")
    return np.stack(frames), float(rate) if rate else 0.0


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
        except json.JSONDecodeError:
            return {METADATA_KEY: text}
    side = sidecar_path(path)
    if side.is_file():
        try:
            value = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
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
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return to_rgb_array(img)
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
