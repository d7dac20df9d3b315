"""Reading, writing and renaming Wan VAE checkpoints (Wan 2.1 and Wan 2.2), both layouts.

Layouts:

* **official** -- ``Wan2.1_VAE.pth`` / ``Wan2.2_VAE.pth`` (a plain ``{name: tensor}`` dict; any ``.pth`` or
  ``.safetensors`` file with the same key names works too). For a non-published config a
  ``vae_config.json`` (the config dataclass fields) sits beside the weights; without it the published
  config is assumed.
* **diffusers** -- a ``vae/`` folder with ``config.json`` (``AutoencoderKLWan``) and
  ``diffusion_pytorch_model.safetensors``; Wan 2.2 is ``is_residual: true, patch_size: 2``.

:func:`read_checkpoint` finds the weights behind a path and says which VAE they are (from the file name,
the diffusers config and the key names, which must agree: a mismatch is an error naming both, never a
silent fallback). :func:`load_pretrained` / :func:`save_pretrained` do the rest for any VAE class that
declares ``version``, ``config_class``, ``official_file`` and ``diffusers_key_map(config)`` (the classes
are passed in: this module imports no model). Key maps: :func:`key_map_21` (the 2.1 decoder's flat list
of blocks mapped to diffusers' up blocks) and :func:`key_map_22` (per-stage nesting, a plain rename).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from openwan.checkpoints import (CheckpointError, atomic_write, check_keys, read_safetensors,
                                 read_state_dict, read_torch_file, save_safetensors, strip_prefix,
                                 write_json)

OFFICIAL_FILES = {"2.1": "Wan2.1_VAE.pth", "2.2": "Wan2.2_VAE.pth"}
CONFIG_FILE = "vae_config.json"  # beside the official file, for non-default configs
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DESCRIPTION = {"2.1": "Wan 2.1 VAE (z 16, 8x8x4)", "2.2": "Wan 2.2 VAE (z 48, 16x16x4, is_residual)"}
LOADER = {"2.1": "WanVAE.from_pretrained", "2.2": "WanVAE22.from_pretrained"}


@dataclass
class Checkpoint:
    """What :func:`read_checkpoint` found: raw weights, the config fields the files state (our names,
    or None), the layout, the VAE version ("2.1" / "2.2", None if nothing tells) and where it came from."""
    state_dict: dict
    config: Optional[dict]
    layout: str
    version: Optional[str]
    source: str


# ============================================================================ which VAE is this?

def _official_names(version: str) -> list[str]:
    stem = OFFICIAL_FILES[version][:-len(".pth")]
    return [stem + ".pth", stem + ".safetensors"]


def is_diffusers_layout(sd: dict) -> bool:
    return any(k.startswith(("quant_conv.", "post_quant_conv.", "encoder.conv_in.", "decoder.conv_in."))
               for k in sd)


def version_from_keys(keys) -> Optional[str]:
    """"2.2" for the per-stage nesting, "2.1" for the flat block list, None if neither shows."""
    keys = list(keys)
    if any(k.startswith(("encoder.downsamples.0.downsamples.", "encoder.down_blocks.0.resnets.",
                         "decoder.up_blocks.0.upsampler.")) for k in keys):
        return "2.2"
    if any(k.startswith(("encoder.downsamples.0.residual.", "encoder.down_blocks.0.norm1.",
                         "decoder.up_blocks.0.upsamplers.")) for k in keys):
        return "2.1"
    return None


def version_from_name(file: Path) -> Optional[str]:
    for version in OFFICIAL_FILES:
        if file.name in _official_names(version):
            return version
    return None


def _agree(source: str, said: Optional[str], why: str, keys) -> Optional[str]:
    """The version, checking that the keys do not contradict what the name / config says."""
    by_keys = version_from_keys(keys)
    if said and by_keys and said != by_keys:
        raise CheckpointError(f"{source}: {why} says {DESCRIPTION[said]} but the weights' key names are those of "
                              f"the {DESCRIPTION[by_keys]}; the folder mixes the two VAEs (fix the file name / "
                              f"config, or point at the weights file and load it with {LOADER[by_keys]})")
    return said or by_keys


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    sd = read_safetensors(file) if file.suffix == ".safetensors" else read_torch_file(file)
    return strip_prefix(sd, ("vae.", "first_stage_model.", "model."))


def read_checkpoint(path: Union[str, os.PathLike]) -> Checkpoint:
    """The VAE weights behind ``path`` (a file, an official checkpoint folder, a diffusers ``vae/`` folder
    or a diffusers root with ``vae/``), with the config and version its files state."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"VAE checkpoint not found: {path}")
    if path.is_file():
        sd = _read_weights(path)
        diffusers = is_diffusers_layout(sd)
        cfg, said, why = None, version_from_name(path), f"the file name {path.name}"
        if (path.parent / CONFIG_FILE).is_file() and not diffusers:
            cfg = _read_json(path.parent / CONFIG_FILE, "VAE config")
        elif diffusers and (path.parent / "config.json").is_file():
            found = read_diffusers_config(path.parent / "config.json", required=False)
            if found:
                said, cfg = found
                why = f"{path.parent / 'config.json'}"
        version = _agree(str(path), said, why, sd)
        return Checkpoint(sd, cfg, "diffusers" if diffusers else "official", version, str(path))
    official = {v: [path / n for n in _official_names(v) if (path / n).is_file()] for v in OFFICIAL_FILES}
    found = [f for files in official.values() for f in files[:1]]
    if len(found) > 1:
        raise CheckpointError(f"{path} holds both {found[0].name} and {found[1].name}: pass the VAE file you mean "
                              f"({found[0]} or {found[1]})")
    if found:
        return read_checkpoint(found[0])
    weights = any(path.glob("*.safetensors")) or any(path.glob("*.index.json"))
    found = read_diffusers_config(path / "config.json", required=False) if (path / "config.json").is_file() else None
    if found and weights:                  # (an official DiT folder has a config.json too: not a VAE's)
        version, cfg = found
        sd = read_state_dict(path)
        version = _agree(str(path), version, f"{path / 'config.json'}", sd)
        return Checkpoint(sd, cfg, "diffusers", version, str(path))
    if (path / "vae").is_dir():
        return read_checkpoint(path / "vae")
    present = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())[:12]
    raise CheckpointError(
        f"{path} holds no Wan VAE: expected {OFFICIAL_FILES['2.1']} (Wan 2.1), {OFFICIAL_FILES['2.2']} (Wan 2.2), "
        f"a diffusers vae folder (config.json + {DIFFUSERS_WEIGHTS}) or a diffusers root folder with vae/; "
        f"found: {', '.join(present) or 'nothing'}")


def detect_version(path: Union[str, os.PathLike, Checkpoint]) -> str:
    """"2.1" or "2.2" for the VAE behind ``path`` (or an already read :class:`Checkpoint`); CheckpointError
    if the files do not say which."""
    ck = path if isinstance(path, Checkpoint) else read_checkpoint(path)
    if ck.version is None:
        keys = sorted(ck.state_dict)[:6]
        raise CheckpointError(f"{ck.source}: cannot tell whether this is a Wan 2.1 or a Wan 2.2 VAE: no "
                              f"{OFFICIAL_FILES['2.1']} / {OFFICIAL_FILES['2.2']} file name, no AutoencoderKLWan "
                              f"config.json, and the keys ({', '.join(keys)}, ...) are neither layout's")
    return ck.version


# ============================================================================ configs

def _read_json(file: Path, what: str) -> dict:
    try:
        d = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"bad {what} {file}: {e}") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"bad {what} {file}: expected a JSON object")
    return d


_DIFFUSERS_NAMES = {  # diffusers AutoencoderKLWan config name -> our config field
    "base_dim": "dim", "decoder_base_dim": "dec_dim", "z_dim": "z_dim", "dim_mult": "dim_mult",
    "num_res_blocks": "num_res_blocks", "attn_scales": "attn_scales", "temperal_downsample": "temporal_downsample",
    "latents_mean": "mean", "latents_std": "std",
}


def read_diffusers_config(file: Path, required: bool) -> Optional[tuple[str, dict]]:
    """(version, our config fields) of an AutoencoderKLWan config.json; None (or an error if
    ``required``) for another class; an error naming the options neither Wan VAE has."""
    d = _read_json(file, "diffusers config")
    cls = d.get("_class_name")
    if cls not in (None, "AutoencoderKLWan") or "base_dim" not in d:
        if not required:
            return None
        raise CheckpointError(f"{file} is not an AutoencoderKLWan config (_class_name={cls!r}); "
                              f"point at the diffusers vae/ folder of a Wan 2.1 or Wan 2.2 model")
    residual = bool(d.get("is_residual", False))
    version = "2.2" if residual else "2.1"
    want = {"patch_size": 2, "in_channels": 12, "out_channels": 12} if residual else \
        {"patch_size": None, "in_channels": 3, "out_channels": 3}
    unsupported = [f"{k}={d.get(k)!r} (the {DESCRIPTION[version]} has {v!r})" for k, v in want.items()
                   if d.get(k, v) != v and not (k == "patch_size" and v is None and d.get(k) == 1)]
    if not residual and d.get("decoder_base_dim") not in (None, d["base_dim"]):
        unsupported.append(f"decoder_base_dim={d['decoder_base_dim']} (the Wan 2.1 VAE has one base width)")
    if unsupported:
        raise CheckpointError(f"{file}: unsupported AutoencoderKLWan options: {', '.join(unsupported)}; "
                              f"openwan implements the Wan 2.1 and the Wan 2.2 VAE as published")
    fields = {ours: d[theirs] for theirs, ours in _DIFFUSERS_NAMES.items() if d.get(theirs) is not None}
    if not residual:
        fields.pop("dec_dim", None)
    return version, fields


def to_diffusers_config(config, version: str) -> dict:
    out = {"_class_name": "AutoencoderKLWan", "_diffusers_version": "0.35.0"}
    for theirs, ours in _DIFFUSERS_NAMES.items():
        v = getattr(config, ours, None)
        out[theirs] = list(v) if isinstance(v, tuple) else v
    patch = 2 if version == "2.2" else 1
    out.update(dropout=0.0, is_residual=version == "2.2", in_channels=3 * patch * patch,
               out_channels=3 * patch * patch, patch_size=patch if patch > 1 else None,
               scale_factor_temporal=2 ** sum(map(bool, config.temporal_downsample)),
               scale_factor_spatial=patch * 2 ** (len(config.dim_mult) - 1))
    return out


# ============================================================================ load / save for any VAE class

def load_pretrained(cls, path, dtype: Optional[torch.dtype] = None, device=None, config=None):
    """Build ``cls`` from the checkpoint at ``path`` (see :func:`read_checkpoint`; or a :class:`Checkpoint`
    already read); strict key/shape check."""
    ck = path if isinstance(path, Checkpoint) else read_checkpoint(path)
    if ck.version is not None and ck.version != cls.version:
        raise CheckpointError(f"{ck.source} is a {DESCRIPTION[ck.version]}, not a {DESCRIPTION[cls.version]}: load "
                              f"it with {LOADER[ck.version]} (or openwan.models.vaes.load_vae, which picks the "
                              f"class from the files)")
    if config is None and ck.config is not None:
        try:
            config = cls.config_class.from_dict(ck.config, strict=ck.layout == "official")
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"bad VAE config for {ck.source}: {e}") from None
    config = config or cls.config_class()
    sd = ck.state_dict
    if ck.layout == "diffusers":
        inverse = {v: k for k, v in cls.diffusers_key_map(config).items()}
        sd = {inverse.get(k, k): v for k, v in sd.items()}     # unknown keys stay, so check_keys names them
    with torch.device("meta"):
        model = cls(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_keys(expected, {k: tuple(v.shape) for k, v in sd.items()}, f"{cls.__name__}({config})", ck.source,
               hint=f"a non-default VAE needs its config: pass config={cls.config_class.__name__}(...) or put "
                    f"{CONFIG_FILE} beside {cls.official_file}")
    dtype = dtype or torch.float32
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return model.to(device=device or "cpu").eval().requires_grad_(False)


def save_pretrained(model, path, layout: str = "official") -> Path:
    """Write ``model``'s weights atomically into folder ``path`` (see the module docstring); returns the
    weights file. A ``.pth`` path with ``layout="official"`` names the file itself."""
    path = Path(path)
    if path.suffix == ".pth" and layout == "official":
        path, name = path.parent, path.name
    else:
        name = model.official_file
    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if layout not in ("official", "diffusers"):
        raise ValueError(f"layout must be 'official' or 'diffusers', got {layout!r}")
    path.mkdir(parents=True, exist_ok=True)
    if layout == "official":
        out = atomic_write(path / name, lambda tmp: torch.save(sd, tmp))
        cfg = path / CONFIG_FILE
        if model.config != type(model.config)():
            write_json(model.config.to_dict(), cfg)
        elif cfg.exists():
            cfg.unlink()
        return out
    m = model.diffusers_key_map(model.config)
    out = save_safetensors({m[k]: v for k, v in sd.items()}, path / DIFFUSERS_WEIGHTS)
    write_json(to_diffusers_config(model.config, model.version), path / "config.json")
    return out


# ============================================================================ official <-> diffusers keys

RESBLOCK_NAMES = {  # official ResidualBlock suffix -> diffusers WanResidualBlock suffix
    "residual.0.gamma": "norm1.gamma",
    "residual.2.weight": "conv1.weight", "residual.2.bias": "conv1.bias",
    "residual.3.gamma": "norm2.gamma",
    "residual.6.weight": "conv2.weight", "residual.6.bias": "conv2.bias",
    "shortcut.weight": "conv_shortcut.weight", "shortcut.bias": "conv_shortcut.bias",
}


def _common_key(key: str) -> Optional[str]:
    """The renames both versions share (top convs, conv_in, heads, middle blocks); None for the stages."""
    for a, b in (("conv1.", "quant_conv."), ("conv2.", "post_quant_conv.")):
        if key.startswith(a):
            return b + key[len(a):]
    part, rest = key.split(".", 1)
    if rest.startswith("conv1."):
        return f"{part}.conv_in.{rest[len('conv1.'):]}"
    if rest == "head.0.gamma":
        return f"{part}.norm_out.gamma"
    if rest.startswith("head.2."):
        return f"{part}.conv_out.{rest[len('head.2.'):]}"
    if rest.startswith("middle."):
        _, idx, sub = rest.split(".", 2)
        if idx == "1":
            return f"{part}.mid_block.attentions.0.{sub}"
        return f"{part}.mid_block.resnets.{int(idx) // 2}.{RESBLOCK_NAMES[sub]}"
    return None


def decoder_layout_21(dim_mult: Sequence[int], num_res_blocks: int, attn_scales: Sequence[float]) -> list[tuple]:
    """For each official 2.1 ``decoder.upsamples.{i}``: ("res", stage, j), ("attn", stage, j) or ("up", stage)."""
    out = []
    n = len(dim_mult)
    scale = 1.0 / 2 ** (n - 2)
    for stage in range(n):
        for j in range(num_res_blocks + 1):
            out.append(("res", stage, j))
            if scale in tuple(attn_scales):
                out.append(("attn", stage, j))
        if stage != n - 1:
            out.append(("up", stage))
            scale *= 2.0
    return out


def _key_21(key: str, layout: list[tuple]) -> str:
    common = _common_key(key)
    if common is not None:
        return common
    part, rest = key.split(".", 1)
    if rest.startswith("downsamples."):
        _, idx, sub = rest.split(".", 2)
        return f"encoder.down_blocks.{idx}.{RESBLOCK_NAMES.get(sub, sub)}"
    if rest.startswith("upsamples."):
        _, idx, sub = rest.split(".", 2)
        kind = layout[int(idx)]
        if kind[0] == "res":
            return f"decoder.up_blocks.{kind[1]}.resnets.{kind[2]}.{RESBLOCK_NAMES[sub]}"
        if kind[0] == "up":
            return f"decoder.up_blocks.{kind[1]}.upsamplers.0.{sub}"
        raise ValueError("diffusers' AutoencoderKLWan has no attention in the decoder's up blocks; a VAE "
                         "with decoder attn_scales cannot be written in the diffusers layout")
    raise KeyError(f"not a Wan 2.1 VAE key: {key}")


def key_map_21(keys, config) -> dict[str, str]:
    """official -> diffusers names of a Wan 2.1 VAE's parameters ``keys``."""
    layout = decoder_layout_21(config.dim_mult, config.num_res_blocks, config.attn_scales)
    return {k: _key_21(k, layout) for k in keys}


def _key_22(key: str, num_res_blocks: int) -> str:
    common = _common_key(key)
    if common is not None:
        return common
    part, rest = key.split(".", 1)
    for ours, theirs, blocks, resample in (("downsamples", "down", num_res_blocks, "downsampler"),
                                           ("upsamples", "up", num_res_blocks + 1, "upsampler")):
        if rest.startswith(ours + "."):
            _, stage, inner, j, sub = rest.split(".", 4)
            if inner != ours:
                break
            if int(j) < blocks:
                return f"{part}.{theirs}_blocks.{stage}.resnets.{j}.{RESBLOCK_NAMES[sub]}"
            return f"{part}.{theirs}_blocks.{stage}.{resample}.{sub}"
    raise KeyError(f"not a Wan 2.2 VAE key: {key}")


def key_map_22(keys, config) -> dict[str, str]:
    """official -> diffusers names of a Wan 2.2 VAE's parameters ``keys`` (stage s block j ->
    ``{down,up}_blocks.s.resnets.j``; the resample after the blocks -> ``downsampler`` / ``upsampler``)."""
    return {k: _key_22(k, config.num_res_blocks) for k in keys}
