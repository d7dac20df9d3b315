"""Training one expert of a Wan 2.2 A14B checkpoint (the config's ``model.expert: high | low``).

An A14B folder holds two DiTs of one architecture, switched by noise level while sampling: the high-noise expert
runs the steps at timestep t >= boundary x 1000, the low-noise one the rest (boundary 0.875 for T2V, 0.9 for I2V;
a diffusers folder's ``boundary_ratio``). So an expert trains only on its own range of noise levels:

    high:  sigma in [boundary, 1)        folder high_noise_model/ (official) or transformer/ (diffusers)
    low:   sigma in [0, boundary)        folder low_noise_model/  (official) or transformer_2/ (diffusers)

(the timestep sampling's ``sigma_min`` / ``sigma_max``, training/loss.py: the chosen distribution truncated to the
range). Its LoRA then loads with ``--lora high:FILE`` / ``low:FILE`` (openwan generate, the server, the API).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

EXPERT_FOLDERS = {"high": ("high_noise_model", "transformer"), "low": ("low_noise_model", "transformer_2")}


def two_experts(path: Path) -> bool:
    """Whether the folder holds an A14B model's two experts (either layout)."""
    return (path / "high_noise_model").is_dir() or (path / "transformer_2").is_dir()


def expert_folder(path: Path, expert: str) -> Path:
    """The expert's DiT folder inside an A14B checkpoint folder."""
    official, diffusers = EXPERT_FOLDERS[expert]
    return path / (official if (path / official).is_dir() else diffusers)


def boundary(path: Path) -> float:
    """The noise level where the experts switch: a diffusers folder's boundary_ratio, else the variant's."""
    index = path / "model_index.json"
    if index.is_file():
        ratio = json.loads(index.read_text(encoding="utf-8")).get("boundary_ratio")
        if ratio is not None:
            return float(ratio)
    from openwan.pipelines.components import checkpoint_variant
    variant = checkpoint_variant(path)
    b = getattr(getattr(variant, "sample", None), "boundary", None)
    if b is None:
        raise ValueError(f"{path}: two experts but no switch point known (no boundary_ratio in model_index.json, "
                         f"no A14B variant recognised)")
    return float(b)


def check_expert(path: Optional[str], expert: Optional[str]) -> None:
    """An A14B folder needs model.expert; model.expert needs an A14B folder (one-line errors)."""
    if expert is not None and expert not in EXPERT_FOLDERS:
        raise ValueError(f"model.expert must be high or low, got {expert!r}")
    folder = Path(path) if path is not None and Path(path).is_dir() else None
    if expert is None and folder is not None and two_experts(folder):
        raise ValueError(f"{path} holds a Wan 2.2 A14B model's two experts: set model.expert: high or low (each "
                         f"trains on its own noise range; train the other in a second run)")
    if expert is not None and (folder is None or not two_experts(folder)):
        raise ValueError(f"model.expert {expert!r}: {path} is no Wan 2.2 A14B folder with two experts "
                         f"(high_noise_model/ + low_noise_model/, or transformer/ + transformer_2/)")


def expert_timesteps(sampling, path: Path, expert: str):
    """The run's timestep sampling narrowed to the expert's noise range (a range set by the user is kept when it
    lies inside it; one reaching outside is an error)."""
    b = boundary(path)
    lo, hi = (b, 1.0) if expert == "high" else (0.0, b)
    smin, smax = max(sampling.sigma_min, lo), min(sampling.sigma_max, hi)
    if not smin < smax:
        raise ValueError(f"timesteps sigma_min {sampling.sigma_min} / sigma_max {sampling.sigma_max} lie outside "
                         f"the {expert}-noise expert's range [{lo}, {hi})")
    return dataclasses.replace(sampling, sigma_min=smin, sigma_max=smax)
