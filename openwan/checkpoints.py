"""Checkpoint formats in one place: reading and writing weight files safely, key maps, and the DiT's
loading and saving.

  * :mod:`openwan.weight_files`: generic I/O (used by every component): :func:`read_state_dict`,
    :func:`iter_safetensors_shards`, :func:`save_safetensors` / :func:`save_sharded` (atomic, sharded),
    :func:`check_keys`, and :class:`CheckpointError`, the one error type for a bad checkpoint, with a message
    that names the file, the keys and the fix.
  * :mod:`openwan.dit_format`: the DiT's key maps (official <-> diffusers), its config.json in either layout
    and the layout of a checkpoint folder (:func:`checkpoint_layout`).
  * here: :func:`load_dit` (shard by shard onto a meta-built model) and :func:`save_dit`.
Every name of those two modules is importable from here too. The VAE and the encoders keep their key maps
beside their modules' loaders but use the I/O helpers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

# the generic I/O and the DiT's format live in their own modules; every name is importable from here
from openwan.dit_format import (  # noqa: F401
    COMFY_PREFIXES, DIT_BLOCK, DIT_TOP, EXPERT_DIRS, Layout, checkpoint_layout, dit_config_from_diffusers_json,
    dit_config_from_official_json, dit_config_to_diffusers_json, dit_config_to_official_json,
    dit_diffusers_to_official, dit_official_to_diffusers, fit_clip_input, infer_dit_config, is_diffusers_dit,
    matching_variants)
from openwan.fileio import atomic_write, write_json  # noqa: F401 - re-exported
from openwan.weight_files import (  # noqa: F401
    CheckpointError, _check_file, _short, aligned, check_keys, iter_safetensors_shards, natural_key,
    read_safetensors, read_state_dict, read_torch_file, safetensors_files, save_safetensors, save_sharded,
    strip_prefix)

# ============================================================================ DiT load / save

def _dit_source(path: Path):
    """Resolve a path to (files, layout, config_json or None)."""
    if path.is_file():
        if path.suffix == ".gguf":
            raise CheckpointError(f"{path}: a GGUF DiT loads with WanModel.from_pretrained(path) or "
                                  f"openwan.gguf.load_dit_gguf(path, build=WanModel)")
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path}: a DiT file must be .safetensors (got {path.suffix or 'no suffix'})")
        return [path], None, None
    if not path.exists():
        raise CheckpointError(f"checkpoint path not found: {path}")
    if (path / "transformer").is_dir() and not list(path.glob("diffusion_pytorch_model*.safetensors")):
        path = path / "transformer"
    cfg_json = None
    if (path / "config.json").exists():
        from openwan import validate
        cfg_json = validate.read_json(path / "config.json", what="checkpoint config")
        if not isinstance(cfg_json, dict):
            raise CheckpointError(f"{path / 'config.json'} must hold a JSON object, got {type(cfg_json).__name__}")
    layout = None
    if cfg_json is not None:
        layout = "diffusers" if "num_attention_heads" in cfg_json else "official"
    return safetensors_files(path), layout, cfg_json


def load_dit(path, *, build: Callable, dtype=None, device=None, config=None, hook: Optional[Callable] = None):
    """Build ``build(config)`` (a WanModel class) on the meta device and assign the weights shard by shard.

    Only one shard is read at a time, so loading never holds two copies of the model.
    ``hook(name, tensor)``, with official key names, sees every tensor after the dtype cast and
    returns the tensor to store (e.g. a quantized one), or an ``nn.Module`` that replaces the
    module owning that parameter (e.g. a quantized Linear built from ``blocks.0.ffn.0.weight``;
    its other parameters, such as the bias, are then loaded into the new module by name).
    """
    from safetensors import SafetensorError, safe_open
    path = Path(path)
    files, layout, cfg_json = _dit_source(path)

    # Read shapes first (cheap: headers only) to detect the layout and validate.
    shapes: dict[str, tuple] = {}
    for f in files:
        _check_file(f)
        try:
            with safe_open(str(f), "pt") as fh:
                if cfg_json is None and (fh.metadata() or {}).get("openwan_config"):
                    cfg_json = json.loads(fh.metadata()["openwan_config"])  # written by save_dit
                for k in fh.keys():
                    shapes[k] = tuple(fh.get_slice(k).get_shape())
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"cannot read {f}: {e}. The file is truncated or not safetensors; "
                                  f"download or copy it again.") from None
    prefix = next((p for p in COMFY_PREFIXES if shapes and all(k.startswith(p) for k in shapes)), "")
    prefix_free = {k[len(prefix):]: v for k, v in shapes.items()}
    diffusers = layout == "diffusers" or (layout is None and is_diffusers_dit(prefix_free))
    to_official = dit_diffusers_to_official if diffusers else (lambda d: d)
    off_shapes = to_official(prefix_free)

    if config is None:
        if cfg_json is not None:
            from openwan import validate
            from openwan.configs import NOT_IMPLEMENTED_TYPES, not_implemented
            kind = cfg_json.get("model_type") if isinstance(cfg_json, dict) else None
            if isinstance(kind, str) and kind in NOT_IMPLEMENTED_TYPES:
                raise CheckpointError(f"{path}: a DiT of model_type {kind!r}: "
                                      + not_implemented(NOT_IMPLEMENTED_TYPES[kind]))
            try:
                config = (dit_config_from_diffusers_json(cfg_json) if diffusers
                          else dit_config_from_official_json(cfg_json))
                validate.config_fields(config, path / "config.json")
            except (TypeError, KeyError, AttributeError, ValueError) as e:
                msg = str(e) if isinstance(e, validate.InvalidArgument) else (
                    f"{path / 'config.json'}: a field has the wrong type or value ({type(e).__name__}: {e}); "
                    f"fix the file or download it again")
                raise CheckpointError(msg) from None
        else:
            config = infer_dit_config(off_shapes)
        config = fit_clip_input(config, off_shapes)  # i2v without img_emb keys: Wan 2.2's (no CLIP)
    with torch.device("meta"):
        model = build(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        check_keys(expected, off_shapes, f"the DiT config ({config.model_type}, dim {config.dim}, "
                   f"{config.num_layers} layers)", str(path))
    except CheckpointError as e:
        try:
            fits = matching_variants(infer_dit_config(off_shapes))
        except CheckpointError:
            fits = []
        hint = (f"\n  this checkpoint fits the variant(s): {', '.join(fits)}" if fits else
                "\n  pass the matching config (or variant) for this checkpoint")
        raise CheckpointError(str(e) + hint) from None

    if device is not None and torch.device(device).type == "meta":
        return model.eval().requires_grad_(False)      # keys and shapes checked, nothing read (loaded later)
    for part in _dit_shards(files, prefix, to_official, dtype, device):
        if hook is not None:
            part = _apply_hook(model, part, hook)
        model.load_state_dict(part, strict=False, assign=True)
        del part
    left = [k for k, v in model.state_dict().items() if v.is_meta]
    if left:
        raise CheckpointError(f"{path}: no weights were loaded for {_short(left)}"
                              + (" (the load hook returned None for them)" if hook is not None else ""))
    return model.eval().requires_grad_(False)


def _dit_shards(files, prefix: str, to_official: Callable, dtype, device) -> Iterator[dict]:
    """Each file's tensors as {official name: tensor} (cast to ``dtype``, on ``device``), one file at a time."""
    from safetensors import safe_open
    for f in files:
        part = {}
        with safe_open(str(f), "pt", device="cpu") as fh:
            for k in fh.keys():
                t = fh.get_tensor(k)
                if dtype is not None and t.is_floating_point():
                    t = t.to(dtype)
                t = aligned(t)       # mapped from the file at the header's offset: give it aligned memory
                part[k[len(prefix):]] = t.to(device) if device is not None else t
        yield to_official(part)


def _dit_naming(path):
    """(files, key prefix, to-official renamer, official key names) of a DiT checkpoint, from its headers."""
    from safetensors import safe_open
    files, layout, _ = _dit_source(Path(path))
    keys = []
    for f in files:
        _check_file(f)
        with safe_open(str(f), "pt") as fh:
            keys += list(fh.keys())
    prefix = next((p for p in COMFY_PREFIXES if keys and all(k.startswith(p) for k in keys)), "")
    keys = [k[len(prefix):] for k in keys]
    diffusers = layout == "diffusers" or (layout is None and is_diffusers_dit(keys))
    to_official = dit_diffusers_to_official if diffusers else (lambda d: d)
    return files, prefix, to_official, set(to_official(dict.fromkeys(keys)))


def dit_keys(path) -> set:
    """The official names of a DiT checkpoint's tensors (headers only)."""
    return _dit_naming(path)[3]


def dit_numel(path) -> int:
    """The number of values in a DiT checkpoint's tensors (headers only, nothing loaded)."""
    from safetensors import safe_open
    total = 0
    for f in _dit_naming(path)[0]:
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                n = 1
                for d in fh.get_slice(k).get_shape():
                    n *= d
                total += n
    return total


def read_dit_shards(path, dtype=None, device=None) -> Iterator[dict]:
    """A DiT checkpoint's (folder or file, either layout) tensors shard by shard with official names: what
    :func:`load_dit` assigns, for reloading released weights (openwan.release)."""
    files, prefix, to_official, _ = _dit_naming(path)
    return _dit_shards(files, prefix, to_official, dtype, device)


def _apply_hook(model, part: dict, hook: Callable) -> dict:
    """Run ``hook`` on one shard's tensors; a returned module replaces the parameter's owner module."""
    out = {}
    for name, t in part.items():
        r = hook(name, t)
        if isinstance(r, torch.nn.Module):
            owner, _, _ = name.rpartition(".")
            parent, _, leaf = owner.rpartition(".")
            old = model.get_submodule(owner)
            loaded = {k: v for k, v in old.state_dict().items() if not v.is_meta}  # from an earlier shard
            setattr(model.get_submodule(parent) if parent else model, leaf, r)
            if loaded:
                r.load_state_dict(loaded, strict=False, assign=True)
        elif r is not None:
            out[name] = r
    return out


def save_dit(model, path, layout: str = "official", max_shard_bytes: int = 5 * 2**30):
    """Write config.json + diffusion_pytorch_model(-0000i-of-0000n).safetensors in either layout."""
    if layout not in ("official", "diffusers"):
        raise ValueError(f"layout must be 'official' or 'diffusers', got {layout!r}")
    path = Path(path)
    sd = model.state_dict()
    if layout == "official":
        cfg = dit_config_to_official_json(model.config)
    else:
        sd = dit_official_to_diffusers(sd)
        cfg = dit_config_to_diffusers_json(model.config)
    meta = {"format": "pt", "openwan_config": json.dumps(cfg)}
    files = save_sharded(sd, path, max_shard_bytes=max_shard_bytes, metadata=meta)
    write_json(cfg, path / "config.json")
    return files
