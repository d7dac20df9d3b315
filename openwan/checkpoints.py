"""Checkpoint formats in one place: reading and writing weight files safely, and key maps.

Generic I/O (used by every component):
  * :func:`read_state_dict` reads a ``.safetensors`` file, a sharded safetensors directory
    (``*.safetensors.index.json``), or a ``.pth``/``.pt``/``.bin`` file with
    ``torch.load(weights_only=True)`` (never unpickling code).
  * :func:`iter_safetensors_shards` yields shard by shard, so a 14B model is never held twice.
  * :func:`save_safetensors` writes atomically (temp file, then rename), sharding above a size.
  * :class:`CheckpointError` is the one error type for a bad checkpoint, with a message that names
    the file, the keys and the fix.

Key maps for the DiT (official <-> diffusers) live here too; the VAE and the encoders keep
theirs beside their modules' loaders but use the I/O helpers below.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import torch

from openwan.fileio import atomic_write, write_json  # noqa: F401 - re-exported


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
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
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


# ============================================================================ DiT key maps
# Module paths, official name -> diffusers name (parameter suffixes such as .weight ride along).

DIT_TOP = {
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
    "img_emb.emb_pos": "condition_embedder.image_embedder.pos_embed",
    "head.head": "proj_out",
    "head.modulation": "scale_shift_table",
}
DIT_BLOCK = {
    "modulation": "scale_shift_table",
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "self_attn.norm_q": "attn1.norm_q", "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0", "cross_attn.norm_q": "attn2.norm_q", "cross_attn.norm_k": "attn2.norm_k",
    "cross_attn.k_img": "attn2.add_k_proj", "cross_attn.v_img": "attn2.add_v_proj",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
    "norm3": "norm2",
    "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
    "before_proj": "proj_in", "after_proj": "proj_out",
}
_BLOCK_RE = re.compile(r"^((?:vace_)?blocks\.\d+)\.(.+)$")


def _rename(rest: str, table: dict) -> str:
    for src in sorted(table, key=len, reverse=True):  # longest module path first
        if rest == src or rest.startswith(src + "."):
            return table[src] + rest[len(src):]
    return rest


def dit_official_to_diffusers(sd: dict) -> dict:
    return _map_keys(sd, DIT_TOP, DIT_BLOCK)


def dit_diffusers_to_official(sd: dict) -> dict:
    return _map_keys(sd, {v: k for k, v in DIT_TOP.items()}, {v: k for k, v in DIT_BLOCK.items()})


def _map_keys(sd: dict, top: dict, block: dict) -> dict:
    out = {}
    for k, v in sd.items():
        m = _BLOCK_RE.match(k)
        out[f"{m.group(1)}.{_rename(m.group(2), block)}" if m else _rename(k, top)] = v
    return out


def is_diffusers_dit(keys) -> bool:
    return any(k.startswith("condition_embedder.") or k == "scale_shift_table" for k in keys)


COMFY_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")


# ============================================================================ DiT configs

def dit_config_from_official_json(d: dict):
    from openwan.configs import DiTConfig
    d = dict(d)
    if d.get("model_type") == "vace" or d.get("_class_name") == "VaceWanModel":
        d["model_type"] = "t2v"
        d.setdefault("vace_layers", list(range(0, d.get("num_layers", 30), 2)))
        d.setdefault("vace_in_dim", 96)
    return DiTConfig.from_dict(d)


def dit_config_to_official_json(cfg) -> dict:
    d = cfg.to_dict()
    if not cfg.is_vace:
        d.pop("vace_layers"), d.pop("vace_in_dim")
    else:
        d["model_type"] = "vace"
    if not cfg.has_image_input:
        d.pop("image_dim")
    if cfg.clip_input is None:
        d.pop("clip_input")  # the model type's default: the official config.json has no such field
    d["_class_name"] = "VaceWanModel" if cfg.is_vace else "WanModel"
    return d


def dit_config_from_diffusers_json(d: dict):
    from openwan.configs import DiTConfig
    image_dim = d.get("image_dim")
    in_dim, out_dim = d.get("in_channels", 16), d.get("out_channels", 16)
    model_type, clip_input = _model_type_without_clip(in_dim, out_dim), None
    if image_dim:
        model_type = "flf2v" if d.get("pos_embed_seq_len") else "i2v"
    elif model_type == "i2v":
        clip_input = False  # Wan 2.2 i2v-A14B: image latent channels, no CLIP
    qk = d.get("qk_norm", "rms_norm_across_heads")
    kw = dict(model_type=model_type, patch_size=tuple(d.get("patch_size", (1, 2, 2))),
              in_dim=d.get("in_channels", 16), out_dim=d.get("out_channels", 16),
              dim=d["num_attention_heads"] * d["attention_head_dim"], num_heads=d["num_attention_heads"],
              ffn_dim=d["ffn_dim"], freq_dim=d.get("freq_dim", 256), text_dim=d.get("text_dim", 4096),
              num_layers=d["num_layers"], qk_norm=bool(qk), cross_attn_norm=d.get("cross_attn_norm", True),
              eps=d.get("eps", 1e-6), image_dim=image_dim or 1280, clip_input=clip_input)
    if "vace_layers" in d:
        kw.update(vace_layers=tuple(d["vace_layers"]), vace_in_dim=d.get("vace_in_channels", 96))
    return DiTConfig(**kw)


def dit_config_to_diffusers_json(cfg) -> dict:
    d = {"_class_name": "WanVACETransformer3DModel" if cfg.is_vace else "WanTransformer3DModel",
         "patch_size": list(cfg.patch_size), "num_attention_heads": cfg.num_heads,
         "attention_head_dim": cfg.head_dim, "in_channels": cfg.in_dim, "out_channels": cfg.out_dim,
         "text_dim": cfg.text_dim, "freq_dim": cfg.freq_dim, "ffn_dim": cfg.ffn_dim, "num_layers": cfg.num_layers,
         "cross_attn_norm": cfg.cross_attn_norm, "qk_norm": "rms_norm_across_heads" if cfg.qk_norm else None,
         "eps": cfg.eps, "image_dim": cfg.image_dim if cfg.has_image_input else None,
         "added_kv_proj_dim": cfg.dim if cfg.has_image_input else None, "rope_max_seq_len": 1024,
         "pos_embed_seq_len": 514 if cfg.model_type == "flf2v" else None}
    if cfg.is_vace:
        d.update(vace_layers=list(cfg.vace_layers), vace_in_channels=cfg.vace_in_dim)
    return d


def _model_type_without_clip(in_dim: int, out_dim: int) -> str:
    """A DiT without CLIP input: i2v (Wan 2.2 A14B) when the input adds the 20 channels of mask + image
    latent to the output's, ti2v for the Wan 2.2 VAE's 48 channels, else t2v."""
    if in_dim == out_dim + 20:
        return "i2v"
    return "ti2v" if in_dim == out_dim == 48 else "t2v"


def fit_clip_input(cfg, shapes) -> object:
    """An i2v config whose checkpoint has no ``img_emb`` is Wan 2.2's (no CLIP input): say so."""
    if cfg.model_type == "i2v" and cfg.clip_input is None and shapes and "img_emb.proj.0.weight" not in shapes:
        return cfg.replace(clip_input=False)
    return cfg


def infer_dit_config(shapes: dict[str, tuple]):
    """Rebuild a DiTConfig from official key shapes (heads assume the published head_dim 128)."""
    from openwan.configs import DiTConfig
    try:
        pe = shapes["patch_embedding.weight"]
        dim, in_dim, patch = pe[0], pe[1], tuple(pe[2:])
        if dim % 128:
            raise CheckpointError(f"cannot infer the number of heads of a DiT of width {dim} (published models use "
                                  f"head_dim 128): pass config= (a DiTConfig) or a directory with config.json")
        n_layers = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
        out_dim = shapes["head.head.weight"][0] // math.prod(patch)
        model_type = "flf2v" if "img_emb.emb_pos" in shapes else ("i2v" if "img_emb.proj.0.weight" in shapes else
                                                                  _model_type_without_clip(in_dim, out_dim))
        kw = dict(model_type=model_type, patch_size=patch, in_dim=in_dim, dim=dim,
                  ffn_dim=shapes["blocks.0.ffn.0.weight"][0], freq_dim=shapes["time_embedding.0.weight"][1],
                  text_dim=shapes["text_embedding.0.weight"][1], out_dim=out_dim,
                  num_heads=dim // 128, num_layers=n_layers,
                  qk_norm="blocks.0.self_attn.norm_q.weight" in shapes,
                  cross_attn_norm="blocks.0.norm3.weight" in shapes)
        if "img_emb.proj.0.weight" in shapes:
            kw["image_dim"] = shapes["img_emb.proj.0.weight"][0]
        elif model_type == "i2v":
            kw["clip_input"] = False
        n_vace = len({k.split(".")[1] for k in shapes if k.startswith("vace_blocks.")})
        if n_vace:
            step = max(1, n_layers // n_vace)
            kw.update(vace_layers=tuple(range(0, step * n_vace, step)),
                      vace_in_dim=shapes["vace_patch_embedding.weight"][1])
        return DiTConfig(**kw)
    except (KeyError, IndexError) as e:
        raise CheckpointError(f"not a Wan DiT checkpoint: key {e} is missing") from None


def matching_variants(cfg) -> list[str]:
    """Names of published variants whose DiT has the same architecture as cfg."""
    from openwan.configs import VARIANTS, WAN22_VARIANTS
    fields = ("model_type", "in_dim", "dim", "ffn_dim", "num_layers", "out_dim", "text_dim", "vace_layers",
              "has_image_input")
    return [n for n, v in {**VARIANTS, **WAN22_VARIANTS}.items()
            if all(getattr(v.dit, f) == getattr(cfg, f) for f in fields)]


# ============================================================================ checkpoint folders (Wan 2.1 / 2.2)

EXPERT_DIRS = ("high_noise_model", "low_noise_model")       # Wan 2.2 A14B, official layout


@dataclass(frozen=True)
class Layout:
    """What a checkpoint folder holds: ``kind`` official | diffusers, the DiT folders (one, or the high-
    and low-noise experts), the expert boundary of a diffusers folder, its expand_timesteps flag."""
    kind: str
    dits: tuple
    boundary: Optional[float] = None
    expand_timesteps: bool = False


def _model_index(path: Path) -> dict:
    from openwan import validate
    f = path / "model_index.json"
    if not f.exists():
        return {}
    d = validate.read_json(f, what="diffusers model index")
    return d if isinstance(d, dict) else {}


def checkpoint_layout(path: Path) -> Layout:
    """The layout of a checkpoint folder, Wan 2.1 or 2.2, or a CheckpointError naming what is missing or
    contradictory (never a silent fallback: a folder with a second expert loads both or fails)."""
    path = Path(path)
    diffusers = (path / "transformer").is_dir() or (path / "model_index.json").exists()
    if not diffusers:
        experts = [(path / d).is_dir() for d in EXPERT_DIRS]
        if any(experts):
            if not all(experts):
                have, lack = (EXPERT_DIRS if experts[0] else EXPERT_DIRS[::-1])
                raise CheckpointError(f"{path}: a Wan 2.2 A14B checkpoint holds {have}/ and {lack}/; {lack}/ is "
                                      f"missing (download the whole Wan2.2-*-A14B folder)")
            return Layout("official", tuple(path / d for d in EXPERT_DIRS))
        return Layout("official", (path,))
    idx = _model_index(path)
    boundary = idx.get("boundary_ratio")
    second_listed = isinstance(idx.get("transformer_2"), list) and idx["transformer_2"][0] is not None
    second_dir = (path / "transformer_2").is_dir()
    if second_listed and not second_dir:
        raise CheckpointError(f"{path}: model_index.json lists transformer_2 (the Wan 2.2 low-noise expert) but the "
                              f"folder transformer_2/ is missing")
    if second_dir and boundary is None:
        raise CheckpointError(f"{path}: transformer_2/ (a Wan 2.2 low-noise expert) is present but model_index.json "
                              f"gives no boundary_ratio (0.875 for T2V-A14B, 0.9 for I2V-A14B): add it, openwan "
                              f"does not guess when to switch experts")
    if boundary is not None and not second_dir:
        raise CheckpointError(f"{path}: model_index.json gives boundary_ratio {boundary} (two experts) but "
                              f"transformer_2/ (the low-noise expert) is missing")
    if boundary is not None and not (isinstance(boundary, (int, float)) and 0 < boundary < 1):
        raise CheckpointError(f"{path}: model_index.json boundary_ratio must be a number in (0, 1), got {boundary!r}")
    dits = (path / "transformer", path / "transformer_2") if second_dir else (path / "transformer",)
    return Layout("diffusers", dits, None if boundary is None else float(boundary),
                  bool(idx.get("expand_timesteps", False)))


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
