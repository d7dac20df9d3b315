"""Training data: captioned videos and images -> same-size clips -> (cached) latents -> batches.

    captions file (CSV / JSONL / JSON, or a folder of media + .txt)   read_captions
        -> one (path, caption) per sample
    media file -> uint8 frames (+ fps)                                 load_media   (images = 1 frame)
        -> bucket (frames 4n+1, H, W) with the nearest aspect ratio    select_bucket
        -> resize (aspect kept, covering) + center crop -> [3,F,H,W]   resize_center_crop
    latents cached on disk (openwan.training.cache)                    CachedLatentDataset
    or latents held in memory (tests, the demo)                        InMemoryLatentDataset
        -> global batches of one bucket each, deterministic per epoch  BucketBatchSampler
        -> each process takes its slice of the global batch            (data parallel)

A media file that cannot be read is skipped with a warning naming it (:func:`prepare_media`
returns None), so one corrupt clip never stops a long run.
"""
from __future__ import annotations

import csv
import functools
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from openwan.video import frame_indices, read_image, read_video

EMPTY_PROMPT = "empty_prompt.safetensors"  # in a latent cache: {"context": [L, D]}, the text features of ""

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg"}
PATH_COLUMNS = ("path", "file", "video", "image", "media", "filename", "file_name")
CAPTION_COLUMNS = ("caption", "text", "prompt")
CONTROL_COLUMNS = ("control", "control_video", "src_video")   # VACE: the video to follow (optional)
MASK_COLUMNS = ("mask", "src_mask")                             # VACE: white = generate (optional)

Bucket = tuple  # (frames, height, width)


# ============================================================================ captions

@dataclass(frozen=True)
class Sample:
    """One training item: a media file and its caption (for VACE, optionally its control video and mask)."""
    path: Path
    caption: str
    control: Optional[Path] = None
    mask: Optional[Path] = None


def _pick(row: dict, names: Sequence[str], what: str, where: str, optional: bool = False) -> Optional[str]:
    lowered = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
    for n in names:
        if n in lowered and lowered[n] is not None:
            return str(lowered[n])
    if optional:
        return None
    raise ValueError(f"{where}: no {what} column; name it one of {', '.join(names)} "
                     f"(found: {', '.join(map(str, row.keys()))})")


def read_captions(file: Union[str, Path], root: Union[str, Path, None] = None) -> list[Sample]:
    """Read (path, caption) pairs.

    ``file`` is a CSV with a header (columns ``path`` and ``caption``; aliases file/video/image/media
    and text/prompt), a JSONL file (one ``{"path": ..., "caption": ...}`` per line), a JSON list of
    such objects, or a folder: every media file in it (recursively) paired with the ``.txt`` of the
    same name (a missing .txt gives an empty caption, with a warning). Relative paths are taken
    from ``root`` (default: the captions file's folder). Optional columns for VACE training: ``control`` (a
    control video the clip follows: depth, pose, ...; aliases control_video, src_video) and ``mask`` (a mask video
    or image, white = generate; alias src_mask); an empty cell is none.
    """
    file = Path(file)
    if not file.exists():
        raise FileNotFoundError(f"captions file not found: {file}")
    if file.is_dir():
        return _read_folder(file)
    base = Path(root) if root is not None else file.parent
    suffix = file.suffix.lower()
    rows: list[tuple[dict, str]] = []
    if suffix == ".csv":
        with open(file, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise ValueError(f"{file}: empty CSV (it needs a header line: path,caption)")
            for i, row in enumerate(reader, start=2):
                if any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    rows.append((row, f"{file}:{i}"))
    elif suffix in (".jsonl", ".json"):
        text = file.read_text(encoding="utf-8")
        if suffix == ".json" and text.lstrip().startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{file}: not valid JSON ({e})") from None
            rows = [(r, f"{file}[{i}]") for i, r in enumerate(items)]
        else:
            for i, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((json.loads(line), f"{file}:{i}"))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{file}:{i}: not valid JSON ({e.msg}); each line must be one object "
                                     f'like {{"path": "clip.mp4", "caption": "..."}}') from None
    else:
        raise ValueError(f"{file}: captions must be .csv, .jsonl or .json (or a folder of media + .txt files)")
    out = []
    for row, where in rows:
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object with path and caption, got {type(row).__name__}")
        path = Path(_pick(row, PATH_COLUMNS, "path", where).strip())
        caption = _pick(row, CAPTION_COLUMNS, "caption", where).strip()
        extra = {}
        for field, names in (("control", CONTROL_COLUMNS), ("mask", MASK_COLUMNS)):
            value = (_pick(row, names, field, where, optional=True) or "").strip()
            if value:
                extra[field] = Path(value) if Path(value).is_absolute() else base / value
        out.append(Sample(path if path.is_absolute() else base / path, caption, **extra))
    if not out:
        raise ValueError(f"{file}: no samples")
    return out


def _read_folder(folder: Path) -> list[Sample]:
    out = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS and p.is_file():
            txt = p.with_suffix(".txt")
            if txt.exists():
                caption = txt.read_text(encoding="utf-8").strip()
            else:
                warnings.warn(f"{p}: no caption file {txt.name}; using an empty caption", stacklevel=2)
                caption = ""
            out.append(Sample(p, caption))
    if not out:
        raise ValueError(f"{folder}: no image or video files found")
    return out


# ============================================================================ buckets

def parse_buckets(spec) -> list[Bucket]:
    """Buckets from a list of [frames, height, width] (or "FxHxW" strings), validated.

    Frames must be 4n+1 (the VAE's temporal stride; 1 = images) and H, W multiples of 16 (VAE
    stride 8 times the DiT patch 2).
    """
    if not spec:
        raise ValueError("no buckets given: list [frames, height, width] triples, e.g. [[33, 480, 832], [1, 480, 832]]")
    out = []
    for b in spec:
        if isinstance(b, str):
            b = [int(v) for v in b.lower().replace("*", "x").split("x")]
        if len(b) != 3:
            raise ValueError(f"bucket {b!r} must be [frames, height, width]")
        f, h, w = (int(v) for v in b)
        if f < 1 or (f - 1) % 4:
            raise ValueError(f"bucket {b!r}: frames must be 4n+1 (1, 5, 9, ..., 81), got {f}")
        if h <= 0 or w <= 0 or h % 16 or w % 16:
            raise ValueError(f"bucket {b!r}: height and width must be positive multiples of 16, got {h}x{w}")
        if (f, h, w) not in out:
            out.append((f, h, w))
    return out


def select_bucket(num_frames: int, height: int, width: int, buckets: Sequence[Bucket]) -> Optional[Bucket]:
    """The bucket for a clip of num_frames x height x width, or None when no bucket fits.

    Candidates are the buckets with no more frames than the clip has (an image, 1 frame, only fits
    1-frame buckets). Among them the nearest aspect ratio wins (|log(ar_bucket / ar_clip)|), then
    the most frames, then the largest area.
    """
    ar = math.log(width / height)
    fits = [b for b in buckets if b[0] <= num_frames]
    if not fits:
        return None
    return min(fits, key=lambda b: (round(abs(math.log(b[2] / b[1]) - ar), 6), -b[0], -b[1] * b[2]))


# ============================================================================ media -> clip

def load_media(path: Union[str, Path]) -> tuple[np.ndarray, float]:
    """uint8 frames [F, H, W, 3] and fps (0 for images) of a video or image file."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_EXTS:
        return read_image(path)[None], 0.0
    return read_video(path)


def _cover_crop(x: torch.Tensor, height: int, width: int, **interpolation) -> torch.Tensor:
    """float [N, C, H0, W0] scaled (aspect kept) so it covers height x width (``F.interpolate`` with
    ``interpolation``), then its center cropped: the geometry every frame of a sample shares (clip, control, mask)."""
    h0, w0 = x.shape[-2:]
    scale = max(height / h0, width / w0)
    nh, nw = max(height, round(h0 * scale)), max(width, round(w0 * scale))
    if (nh, nw) != (h0, w0):
        x = F.interpolate(x, size=(nh, nw), **interpolation)
    top, left = (nh - height) // 2, (nw - width) // 2
    return x[:, :, top:top + height, left:left + width]


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 [F, H0, W0, 3] -> float [3, F, height, width] in [-1, 1].

    Scales (aspect kept) so the frame covers the target, with antialiased bilinear filtering, then
    crops the center.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # [F, 3, H0, W0]
    x = _cover_crop(x, height, width, mode="bilinear", align_corners=False, antialias=True)
    return (x / 127.5 - 1.0).clamp_(-1, 1).permute(1, 0, 2, 3).contiguous()


def prepare_media(path: Union[str, Path], buckets: Sequence[Bucket], target_fps: Optional[float] = None):
    """(video [3, F, H, W] in [-1, 1], bucket) for one media file, or None (with a warning) when the
    file cannot be read or no bucket fits it."""
    r = prepare_clip(path, buckets, target_fps)
    return None if r is None else r[:2]


def prepare_clip(path: Union[str, Path], buckets: Sequence[Bucket], target_fps: Optional[float] = None):
    """:func:`prepare_media` plus the file's own frame size: (video, bucket, (height, width)), or None."""
    path = Path(path)
    try:
        frames, fps = load_media(path)
    except Exception as e:  # noqa: BLE001 - any decoder error means "skip this file"
        warnings.warn(f"skipping unreadable media file {path}: {e}", stacklevel=2)
        return None
    idx = frame_indices(len(frames), fps, target_fps)
    bucket = select_bucket(len(idx), frames.shape[1], frames.shape[2], buckets)
    if bucket is None:
        warnings.warn(f"skipping {path}: {len(idx)} frame(s), and no bucket has that few "
                      f"(buckets: {list(buckets)}; add a 1-frame bucket for images)", stacklevel=2)
        return None
    return resize_center_crop(frames[idx[:bucket[0]]], bucket[1], bucket[2]), bucket, frames.shape[1:3]


def prepare_aligned(path: Union[str, Path], clip_size: tuple, bucket: Bucket, target_fps: Optional[float],
                    what: str, mask: bool = False) -> torch.Tensor:
    """A clip's companion file (a VACE control video, or a mask video / image) in the clip's ``bucket``: the same
    frame resampling, resize and crop as the clip (of ``clip_size``: its height, width), so every pixel lines up.
    A control gives [3, F, H, W] in [-1, 1]; a mask (``mask=True``, its first channel, white = generate; one image
    for every frame; resized by nearest neighbour) [F, H, W] in [0, 1]. Raises ValueError naming the file when it
    cannot line up: another aspect ratio than the clip's, or fewer frames than the bucket (a mask may be one image)."""
    path = Path(path)
    h0, w0 = clip_size
    try:
        frames, fps = load_media(path)
    except Exception as e:  # noqa: BLE001 - any decoder error: this sample is skipped
        raise ValueError(f"{what} {path}: unreadable ({e})") from None
    if abs(math.log((frames.shape[2] / frames.shape[1]) / (w0 / h0))) > 0.01:
        raise ValueError(f"{what} {path} is {frames.shape[2]}x{frames.shape[1]} but its clip is {w0}x{h0}: give it "
                         f"the clip's aspect ratio so the two line up")
    if mask and len(frames) == 1:
        idx = [0] * bucket[0]
    else:
        idx = frame_indices(len(frames), fps, target_fps)
        if len(idx) < bucket[0]:
            raise ValueError(f"{what} {path} has {len(idx)} frame(s) (after resampling to the training fps), its "
                             f"clip's bucket {bucket[0]}: give it one frame per frame of the clip")
        idx = idx[:bucket[0]]
    if not mask:
        return resize_center_crop(frames[idx], bucket[1], bucket[2])
    m = torch.from_numpy(np.ascontiguousarray(frames[idx][..., 0])).float() / 255.0      # [F, H0, W0]
    return _cover_crop(m[:, None], bucket[1], bucket[2], mode="nearest-exact")[:, 0].contiguous()


class MediaDataset(torch.utils.data.Dataset):
    """Captioned media as (video [3,F,H,W], caption, bucket) items; unreadable items give None."""

    def __init__(self, samples: Union[str, Path, Sequence[Sample]], buckets, target_fps: Optional[float] = None):
        self.samples = read_captions(samples) if isinstance(samples, (str, Path)) else list(samples)
        self.buckets = parse_buckets(buckets)
        self.target_fps = target_fps

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        s = self.samples[i]
        r = prepare_media(s.path, self.buckets, self.target_fps)
        if r is None:
            return None
        return {"video": r[0], "caption": s.caption, "bucket": r[1], "path": str(s.path)}


# ============================================================================ latent datasets

class LatentDataset:
    """Items are dicts: ``latent`` [16, T, h, w], ``context`` [L, D], optional model extras
    (``y`` [C, T, h, w], ``clip_fea`` [N, D']). ``bucket(i)`` groups items of equal latent shape.
    ``empty_context`` [L, D]: the text features of the empty prompt, which caption dropout puts in place of
    a caption (None where the dataset has none)."""

    empty_context: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict:
        raise NotImplementedError

    def bucket(self, i: int) -> tuple:
        raise NotImplementedError


class InMemoryLatentDataset(LatentDataset):
    """(latent, context) pairs held in memory, e.g. latents of a procedural world (demo) or tests.

    ``items``: a list of ``(latent, context)`` tuples or of dicts with those keys (+ extras).
    """

    def __init__(self, items: Sequence, empty_context: Optional[torch.Tensor] = None):
        if empty_context is not None and empty_context.ndim != 2:
            raise ValueError(f"empty_context must be [L, D], got shape {tuple(empty_context.shape)}")
        self.empty_context = empty_context
        self.items = []
        for i, it in enumerate(items):
            d = dict(it) if isinstance(it, dict) else {"latent": it[0], "context": it[1]}
            if "latent" not in d or "context" not in d:
                raise ValueError(f"item {i}: needs 'latent' and 'context'")
            if d["latent"].ndim != 4:
                raise ValueError(f"item {i}: latent must be [C, T, h, w], got shape {tuple(d['latent'].shape)}")
            if d["context"].ndim != 2:
                raise ValueError(f"item {i}: context must be [L, D], got shape {tuple(d['context'].shape)}")
            self.items.append(d)
        if not self.items:
            raise ValueError("empty dataset")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def bucket(self, i):
        return tuple(self.items[i]["latent"].shape)


class CachedLatentDataset(LatentDataset):
    """The per-sample safetensors files written by :func:`openwan.training.cache.cache_latents`."""

    def __init__(self, cache_dir: Union[str, Path]):
        from safetensors import safe_open
        self.dir = Path(cache_dir)
        if not self.dir.is_dir():
            raise FileNotFoundError(f"latent cache folder not found: {self.dir} (run `openwan cache-latents` first)")
        manifest = self.dir / "manifest.json"
        if manifest.exists():  # the files of the last cache-latents run (stale ones are left out)
            names = json.loads(manifest.read_text(encoding="utf-8")).get("files", [])
            missing = [n for n in names if not (self.dir / n).exists()]
            if missing:
                raise ValueError(f"{self.dir}: {len(missing)} file(s) listed in manifest.json are missing "
                                 f"(e.g. {missing[0]}); re-run `openwan cache-latents`")
            self.files = [self.dir / n for n in names]
        else:
            self.files = sorted(f for f in self.dir.glob("*.safetensors") if f.name != EMPTY_PROMPT)
        if not self.files:
            raise ValueError(f"{self.dir} holds no cached samples (*.safetensors); run `openwan cache-latents`")
        self._buckets = []
        for f in self.files:
            with safe_open(str(f), "pt") as fh:
                if "latent" not in fh.keys() or "context" not in fh.keys():
                    raise ValueError(f"{f}: not a latent cache file (needs 'latent' and 'context' tensors)")
                self._buckets.append(tuple(fh.get_slice("latent").get_shape()))

    @functools.cached_property
    def empty_context(self) -> Optional[torch.Tensor]:
        """The empty prompt's features cached beside the samples (None in a cache written before they were)."""
        from openwan.checkpoints import read_safetensors
        path = self.dir / EMPTY_PROMPT
        return read_safetensors(path)["context"] if path.is_file() else None

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from openwan.checkpoints import read_safetensors
        return dict(read_safetensors(self.files[i]))

    def bucket(self, i):
        return self._buckets[i]


def collate(items: Sequence[dict]) -> dict:
    """Stack latents (and y, vace_context) of one bucket; contexts stay a list (prompts differ in length). Any other
    tensor an item carries (per-sample data for an objective, e.g. a flag or an extra latent) is stacked under
    ``out["extra"][name]``; every item of a batch must carry the same ones."""
    out = {"latent": torch.stack([it["latent"].float() for it in items]),
           "context": [it["context"].float() for it in items]}
    names = sorted(k for k, v in items[0].items() if torch.is_tensor(v) and k not in ("latent", "context", "y",
                                                                                          "clip_fea", "vace_context"))
    if names:
        missing = [i for i, it in enumerate(items) if any(k not in it for k in names)]
        if missing:
            raise ValueError(f"items {missing} lack some of the per-sample tensors {names} the first item has")
        out["extra"] = {k: torch.stack([it[k] for it in items]) for k in names}
    for k in ("y", "vace_context"):
        if k in items[0]:
            out[k] = torch.stack([it[k].float() for it in items])
    if "clip_fea" in items[0]:
        out["clip_fea"] = torch.cat([it["clip_fea"].float()[None] if it["clip_fea"].ndim == 2
                                     else it["clip_fea"].float() for it in items])
    return out


# ============================================================================ batching

class BucketBatchSampler:
    """Global batches of ``batch_size`` indices sharing a bucket, the same on every process.

    Epoch e shuffles the indices with a generator seeded by (seed, e), then deals them into their
    buckets; a batch is emitted as soon as its bucket holds ``batch_size`` indices, so buckets
    interleave in random order. Leftovers (fewer than batch_size in a bucket) are dropped unless
    ``drop_last=False``. The order depends only on (seed, epoch), which makes resuming exact: the
    trainer records (epoch, number of batches consumed).

    Data parallel: ``batch_size`` is the global batch (per-process batch x world size) and process
    r takes ``batch[r * b:(r + 1) * b]`` (:func:`shard_batch`).
    """

    def __init__(self, dataset: LatentDataset, batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.keys = [dataset.bucket(i) for i in range(len(dataset))]
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._cache: dict[int, list[list[int]]] = {}
        if not self.batches(0):
            counts = {}
            for k in self.keys:
                counts[k] = counts.get(k, 0) + 1
            raise ValueError(f"no bucket holds a full global batch of {batch_size} samples "
                             f"(samples per bucket: {counts}); lower batch_size (x processes) or add data")

    def batches(self, epoch: int) -> list[list[int]]:
        if epoch not in self._cache:
            from openwan.training.loss import sample_seed
            n = len(self.keys)
            if self.shuffle:
                g = torch.Generator().manual_seed(sample_seed(self.seed, epoch))
                order = torch.randperm(n, generator=g).tolist()
            else:
                order = list(range(n))
            pending: dict = {}
            out = []
            for i in order:
                p = pending.setdefault(self.keys[i], [])
                p.append(i)
                if len(p) == self.batch_size:
                    out.append(list(p))
                    p.clear()
            if not self.drop_last:
                out.extend(p for p in pending.values() if p)
            self._cache = {epoch: out}
        return self._cache[epoch]

    def __len__(self):
        return len(self.batches(0))


def shard_batch(batch: Sequence[int], rank: int, world_size: int) -> tuple[list[int], int]:
    """This process's slice of a global batch and the slice's offset in it."""
    if len(batch) % world_size:
        raise ValueError(f"a global batch of {len(batch)} cannot be split evenly over {world_size} processes")
    b = len(batch) // world_size
    return list(batch[rank * b:(rank + 1) * b]), rank * b
