"""Weight files, read and written safely (used by every component's loader).

  * :func:`read_state_dict` reads a ``.safetensors`` file, a sharded safetensors directory
    (``*.safetensors.index.json``), or a ``.pth``/``.pt``/``.bin`` file with
    ``torch.load(weights_only=True)`` (never unpickling code).
  * :func:`iter_safetensors_shards` yields shard by shard, so a 14B model is never held twice.
  * :func:`save_safetensors` writes atomically (temp file, then rename); :func:`save_sharded` shards above a size.
  * :func:`check_keys` compares a checkpoint's keys and shapes with a model's, naming every problem.
  * :class:`CheckpointError` is the one error type for a bad checkpoint, with a message that names
    the file, the keys and the fix.

Every name here is also importable from :mod:`openwan.checkpoints`.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Optional

import torch

from openwan.fileio import atomic_write

class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded: the message says which file/keys and what to do."""


# ----------------------------------------------------------------------------- reading

def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")


# Tensors read from a safetensors file sit at the file's byte offsets (8 + header length + ...), which SIMD
# kernels may treat differently from torch's 64-byte aligned allocations: a loaded model would then round its
# sums differently from the model that was saved (a few ulps) and run misaligned loads. Loaded tensors are
# therefore copied to aligned memory when they are not aligned already.
_ALIGN = 64


def read_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(path)
    _check_file(path)
    try:
        sd = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"cannot read {path}: {e}. The file is truncated or not a safetensors file; "
            f"download or copy it again.") from None
    return {k: aligned(t) for k, t in sd.items()}


def aligned(t: torch.Tensor) -> torch.Tensor:
    """``t``, copied to aligned memory when it is not 64-byte aligned (see ``_ALIGN``)."""
    return t.clone() if t.device.type == "cpu" and t.data_ptr() % _ALIGN else t


def read_torch_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True: tensors only, never code."""
    path = Path(path)
    _check_file(path)
    head = b"PK\x03\x04"
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":      # torch.save's zip archive, or a legacy pickle
        raise CheckpointError(f"{path} is not a weights file: neither a torch file (.pt / .pth / .bin, a zip archive) "
                              f"nor safetensors; give the LoRA's or checkpoint's .safetensors or torch file")
    try:
        # (torch's pre-zip format cannot be memory-mapped: read whole)
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=head[:4] == b"PK\x03\x04")
    except Exception as e:  # noqa: BLE001 - torch raises many types here
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"cannot read {path} as a weights-only torch file ({msg}). It may be truncated, or "
            f"contain pickled code, which openwan refuses to load; convert it to safetensors.") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(sd).__name__})")
    return sd


def safetensors_files(path: str | os.PathLike, prefix: str = "diffusion_pytorch_model") -> list[Path]:
    """The safetensors file(s) of a directory, in index order when sharded."""
    path = Path(path)
    if path.is_file():
        return [path]
    index = sorted(path.glob("*.safetensors.index.json"))
    if index:
        with open(index[0]) as f:
            try:
                weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"bad shard index {index[0]}: {e}") from None
        files = []
        for name in weight_map.values():
            if name not in files:
                files.append(name)
        missing = [n for n in files if not (path / n).exists()]
        if missing:
            raise CheckpointError(f"{path}: shards named in {index[0].name} are missing: {missing}")
        return [path / n for n in files]
    files = sorted(path.glob(f"{prefix}*.safetensors")) or sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no .safetensors weights in {path} (expected {prefix}.safetensors "
                              f"or a sharded {prefix}-0000x-of-0000y.safetensors set with its index json)")
    return files


def iter_safetensors_shards(files: Iterable[Path]) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
    for f in files:
        yield f, read_safetensors(f)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a whole state dict from a file or directory (safetensors preferred)."""
    path = Path(path)
    if path.is_dir():
        out = {}
        for _, sd in iter_safetensors_shards(safetensors_files(path)):
            out.update(sd)
        return out
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return read_torch_file(path)


# ----------------------------------------------------------------------------- writing

def save_safetensors(state_dict: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: Optional[dict] = None) -> Path:
    from safetensors.torch import save_file
    sd = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    return atomic_write(path, lambda tmp: save_file(sd, tmp, metadata=metadata))


def save_sharded(state_dict: dict[str, torch.Tensor], directory: str | os.PathLike,
                 prefix: str = "diffusion_pytorch_model", max_shard_bytes: int = 5 * 2**30,
                 metadata: Optional[dict] = None) -> list[Path]:
    """Write a state dict as one file, or as shards plus an index json above max_shard_bytes."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shards: list[dict] = [{}]
    size = 0
    for k, v in state_dict.items():
        nbytes = v.numel() * v.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += nbytes
    if len(shards) == 1:
        return [save_safetensors(shards[0], directory / f"{prefix}.safetensors", metadata)]
    n = len(shards)
    names = [f"{prefix}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    paths = [save_safetensors(s, directory / name, metadata) for s, name in zip(shards, names)]
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in state_dict.values())},
             "weight_map": {k: name for s, name in zip(shards, names) for k in s}}
    atomic_write(directory / f"{prefix}.safetensors.index.json",
                 lambda tmp: Path(tmp).write_text(json.dumps(index, indent=2)))
    return paths


# ----------------------------------------------------------------------------- key checks

def strip_prefix(sd: dict, prefixes: Iterable[str]) -> dict:
    """Remove the first prefix that every key carries (e.g. ComfyUI's ``model.diffusion_model.``)."""
    for p in prefixes:
        if sd and all(k.startswith(p) for k in sd):
            return {k[len(p):]: v for k, v in sd.items()}
    return sd


def _short(keys, n: int = 8) -> str:
    keys = sorted(keys)
    s = ", ".join(keys[:n])
    return s + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def check_keys(expected: dict[str, tuple], got: dict[str, tuple], what: str, source: str,
               hint: str = "") -> None:
    """Compare key -> shape maps; raise one CheckpointError listing every problem."""
    missing = set(expected) - set(got)
    unexpected = set(got) - set(expected)
    bad_shape = [k for k in set(expected) & set(got) if tuple(expected[k]) != tuple(got[k])]
    if not (missing or unexpected or bad_shape):
        return
    lines = [f"{source} does not fit {what}:"]
    if missing:
        lines.append(f"  missing keys: {_short(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys: {_short(unexpected)}")
    for k in sorted(bad_shape)[:8]:
        lines.append(f"  shape mismatch for {k}: checkpoint {tuple(got[k])}, model {tuple(expected[k])}")
    if hint:
        lines.append(f"  {hint}")
    raise CheckpointError("\n".join(lines))


def natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]

