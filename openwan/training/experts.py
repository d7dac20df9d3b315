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
from pathlib import Path
from typing import Optional

EXPERTS = ("high", "low")        # in the order of the checkpoint layout's DiT folders


def _layout(path: Path):
    from openwan.dit_format import checkpoint_layout
    return checkpoint_layout(path)


def two_experts(path: Path) -> bool:
    """Whether the folder holds an A14B model's two experts (either layout; openwan.dit_format's reading)."""
    return len(_layout(path).dits) == 2


def expert_folder(path: Path, expert: str) -> Path:
    """The expert's DiT folder inside an A14B checkpoint folder."""
    return _layout(path).dits[EXPERTS.index(expert)]


def boundary(path: Path) -> float:
    """The noise level where the experts switch: a diffusers folder's boundary_ratio, else the variant's."""
    b = _layout(path).boundary
    if b is not None:
        return b
    from openwan.pipelines.components import checkpoint_variant
    b = getattr(getattr(checkpoint_variant(path), "sample", None), "boundary", None)
    if b is None:
        raise ValueError(f"{path}: two experts but no switch point known (no boundary_ratio in model_index.json, "
                         f"no A14B variant recognised)")
    return float(b)


def check_expert(path: Optional[str], expert: Optional[str]) -> None:
    """An A14B folder needs model.expert; model.expert needs an A14B folder (one-line errors)."""
    if expert is not None and expert not in EXPERTS:
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
