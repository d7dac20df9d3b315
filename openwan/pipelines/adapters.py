"""LoRA adapters of a pipeline, chosen per call: ``pipe(prompt, lora=["style.safetensors:0.8"])`` (Wan 2.2
A14B: ``"high:FILE"`` / ``"low:FILE"`` for one expert, a plain file for both).

Each file is loaded once (any format :func:`openwan.training.lora.load_lora` reads, unmerged: the base
weights stay as they are) and kept; a call sets the strengths of the adapters it names and turns every
other loaded adapter off (strength 0), so calls do not leak adapters into each other. What a call used is
recorded in its settings (``lora``: [{"path", "strength"}]) so ``--from`` reproduces it.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Sequence, Union

LoraSpec = Union[str, tuple, dict]
EXPERTS = ("high", "low")       # Wan 2.2 A14B's experts: "high:FILE[:S]" applies to one of them only


def parse_lora_specs(specs: Union[None, LoraSpec, Sequence[LoraSpec]]) -> list[dict]:
    """``"FILE"``, ``"FILE:STRENGTH"``, ``(FILE, STRENGTH)`` or ``{"path", "strength"}`` (or a list of them)
    -> [{"path": str, "strength": float}]. A bad entry is a ValueError naming it and the expected form."""
    if specs is None:
        return []
    if isinstance(specs, (str, dict, tuple)):
        specs = [specs]
    out = []
    for s in specs:
        expert = None
        if isinstance(s, str) and s.split(":", 1)[0] in EXPERTS and ":" in s:
            expert, s = s.split(":", 1)             # Wan 2.2 A14B: "high:FILE" / "low:FILE" for one expert
        if isinstance(s, dict):
            expert = s.get("expert")
            path, strength = s.get("path"), s.get("strength", 1.0)
        elif isinstance(s, tuple) and len(s) == 2:
            path, strength = s
        elif isinstance(s, str):
            path, strength = s, 1.0
            head, sep, tail = s.rpartition(":")
            if sep and head and not tail.startswith(("/", "\\")):
                try:
                    path, strength = head, float(tail)
                except ValueError:
                    pass                          # a ':' that is part of the path (e.g. C:\...)
        else:
            raise ValueError(f"lora: expected 'FILE[:STRENGTH]', got {s!r}")
        if not isinstance(path, (str, Path)) or not str(path):
            raise ValueError(f"lora: expected a file path, got {path!r}")
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
            raise ValueError(f"lora {path}: strength must be a finite number, got {strength!r}")
        if not Path(path).is_file():
            head, sep, tail = str(path).rpartition(":")
            if sep and head and Path(head).is_file():      # FILE:STRENGTH whose strength is no number
                raise ValueError(f"lora {path}: the strength after ':' must be a number (FILE:0.8), got {tail!r}")
            raise FileNotFoundError(f"lora {path}: file not found")
        if expert not in (None,) + EXPERTS:
            raise ValueError(f"lora {path}: expert must be 'high' or 'low', got {expert!r}")
        out.append({"path": str(path), "strength": float(strength)} | ({"expert": expert} if expert else {}))
    return out


def _adapter_name(path: str) -> str:
    resolved = str(Path(path).resolve())
    return "lora_" + hashlib.sha1(resolved.encode()).hexdigest()[:10]


def use_loras_on_experts(experts: dict, specs) -> list[dict]:
    """:func:`use_loras` for a two-expert model: a spec with ``expert`` goes to that expert, others to both."""
    parsed = parse_lora_specs(specs)
    for name, model in experts.items():
        use_loras(model, [{"path": s["path"], "strength": s["strength"]} for s in parsed
                          if s.get("expert") in (None, name)])
    return parsed


def use_loras(model, specs) -> list[dict]:
    """Load (once) and weigh the adapters ``specs`` names on ``model``; every other adapter loaded this
    way is set to strength 0. Returns the parsed specs (for the settings record)."""
    from openwan.training.lora import adapter_names, load_lora, set_lora_strength
    parsed = parse_lora_specs(specs)
    if any(s.get("expert") for s in parsed):
        raise ValueError("lora: 'high:' / 'low:' name an expert of a Wan 2.2 A14B model; this model has one DiT")
    wanted = {}
    for s in parsed:
        name = _adapter_name(s["path"])
        wanted[name] = wanted.get(name, 0.0) + s["strength"]
    loaded = set(adapter_names(model))
    for name, strength in wanted.items():
        if name in loaded:
            set_lora_strength(model, name, strength)
        else:
            path = next(s["path"] for s in parsed if _adapter_name(s["path"]) == name)
            load_lora(model, path, strength=strength, name=name)
    for name in loaded - set(wanted):
        if name.startswith("lora_") and not name.endswith("_diff"):
            set_lora_strength(model, name, 0.0)
    return parsed
