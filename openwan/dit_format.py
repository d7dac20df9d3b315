"""What a Wan DiT checkpoint looks like: its key names in the official and the diffusers layout (and the maps
between them), its config.json in either layout (and the config rebuilt from key shapes when there is none),
and the layout of a checkpoint folder, Wan 2.1 or 2.2 (one DiT, or the high- and low-noise experts).

Every name here is also importable from :mod:`openwan.checkpoints`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from openwan.weight_files import CheckpointError

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

