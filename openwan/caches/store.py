"""Calibration files of the step caches that need one (MagCache's magnitude ratios, TeaCache's polynomial).

A file belongs to one DiT's weights: its name is ``<model_key>.json`` (:func:`model_key`: a hash of the
config and of a few weight tensors), looked up in, in order: ``$OPENWAN_STEP_CACHE_DIR``,
``~/.cache/openwan/step_cache`` (``$XDG_CACHE_HOME``), and the package (``openwan/caches/calibration/``,
which ships the demo model's). ``python -m openwan.caches calibrate`` writes one (openwan.caches.calibration).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import torch

__all__ = ["FORMAT", "model_key", "calibration_dirs", "find_calibration", "load_calibration", "save_calibration"]

FORMAT = "openwan-step-cache-calibration/1"
PACKAGE_DIR = Path(__file__).with_name("calibration")


def model_key(dit) -> str:
    """16 hex digits identifying a DiT's weights: its config and the bytes of the patch embedding and of every
    block's modulation table (never quantized; LoRA leaves them alone)."""
    h = hashlib.sha256()
    cfg = dataclasses.asdict(dit.config) if dataclasses.is_dataclass(dit.config) else vars(dit.config)
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for t in [dit.patch_embedding.weight] + [b.modulation for b in dit.blocks]:
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def calibration_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("OPENWAN_STEP_CACHE_DIR"):
        dirs.append(Path(os.environ["OPENWAN_STEP_CACHE_DIR"]))
    dirs.append(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "openwan" / "step_cache")
    dirs.append(PACKAGE_DIR)
    return dirs


def load_calibration(path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the step-cache calibration {path}: {e}; recompute it with "
                         f"`python -m openwan.caches calibrate`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a step-cache calibration ({FORMAT}); recompute it with "
                         f"`python -m openwan.caches calibrate`")
    return data


def find_calibration(dit, method: str = "this step cache") -> dict:
    """The calibration of ``dit``'s weights, or a ValueError saying how to compute it."""
    key = model_key(dit)
    for d in calibration_dirs():
        if (d / f"{key}.json").is_file():
            return load_calibration(d / f"{key}.json")
    raise ValueError(f"{method} needs a calibration of this model (key {key}), none found in "
                     f"{', '.join(str(d) for d in calibration_dirs())}: compute it with `python -m openwan.caches "
                     f"calibrate --ckpt_dir DIR` (one uncached run), or use fbcache or easycache (no calibration)")


def save_calibration(data: dict, directory: Optional[os.PathLike] = None) -> Path:
    """Write ``data`` (with its ``model`` key) atomically as ``<directory>/<model>.json`` (default: the first
    writable search folder, ``$OPENWAN_STEP_CACHE_DIR`` or the user cache)."""
    from openwan.fileio import ensure_dir, write_json
    directory = Path(directory) if directory is not None else calibration_dirs()[0]
    ensure_dir(directory)
    return write_json(dict(data, format=FORMAT), directory / f"{data['model']}.json")
