"""A model folder's own record of what it is: ``openwan.json`` beside the weights.

Converted folders (``openwan convert``) carry the variant they came from: its name, task, sampling defaults
(size, frames, steps, shift, guide scale, solver, fps, negative prompt) and component configs, so a round trip
official -> diffusers -> official keeps them. diffusers and the official ``generate.py`` ignore the file.

    write_variant(variant, folder)      # folder/openwan.json, written atomically
    read_variant(folder)                # the Variant, or None when the folder has no openwan.json
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

from openwan.configs import (OFFICIAL_FILES, DiTConfig, ImageEncoderConfig, SampleDefaults, TextEncoderConfig,
                             VAEConfig, Variant)
from openwan.fileio import write_json

VARIANT_FILE = "openwan.json"
FORMAT = 1
_COMPONENTS = {"dit": DiTConfig, "vae": VAEConfig, "text_encoder": TextEncoderConfig,
               "image_encoder": ImageEncoderConfig}


def variant_to_dict(variant: Variant) -> dict:
    d = {"openwan_variant_format": FORMAT, "name": variant.name, "task": variant.task,
         "sample": variant.sample.to_dict()}
    for key in _COMPONENTS:
        cfg = getattr(variant, key)
        d[key] = None if cfg is None else cfg.to_dict()
    return d


def variant_from_dict(d: dict, source: str = VARIANT_FILE) -> Variant:
    """The inverse of :func:`variant_to_dict`; a clear ValueError names the file and the bad field."""
    if not isinstance(d, dict) or d.get("openwan_variant_format") != FORMAT:
        raise ValueError(f"{source}: not an openwan variant record (format {FORMAT}); delete it to use the "
                         f"checkpoint's own defaults")
    try:
        kw = {key: None if d.get(key) is None else cls.from_dict(d[key]) for key, cls in _COMPONENTS.items()}
        if kw["dit"] is None:
            raise ValueError("no dit config")
        kw = {k: v for k, v in kw.items() if v is not None}
        return Variant(str(d["name"]), str(d["task"]), sample=SampleDefaults.from_dict(d["sample"]),
                       files=dict(OFFICIAL_FILES), **kw)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: bad openwan variant record ({e}); delete it to use the checkpoint's own "
                         f"defaults") from None


def write_variant(variant: Variant, folder: Union[str, os.PathLike]) -> Path:
    return write_json(variant_to_dict(variant), Path(folder) / VARIANT_FILE)


def read_variant(folder: Union[str, os.PathLike]) -> Optional[Variant]:
    """The variant recorded in ``folder/openwan.json``, or None when there is none."""
    path = Path(folder) / VARIANT_FILE
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read ({e}); delete it to use the checkpoint's own defaults") from None
    return variant_from_dict(d, str(path))
