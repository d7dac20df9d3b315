"""A DiT's weights grown into a larger DiT that starts out computing the same thing, as a start for training.

* :func:`grow_patch`: a larger spatial patch (v1's 64-px DiT grown into v2's 128-px one: ``--grow_from``);
* :func:`deepen`: more blocks (an expert with more depth than the model it starts from: ``--deepen_from``).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from openwan.configs import DiTConfig
from openwan.demo import DEMO_V1_DIT
from openwan.demo.latents import log

# the projections that write a block's contribution into the residual stream: zero them and the block adds nothing
BLOCK_OUTPUTS = ("self_attn.o", "cross_attn.o", "ffn.2")
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.*)")         # a block's weight: (its index, the rest of the name)


def grow_patch(state: dict, old: tuple, new: tuple) -> dict:
    """DiT weights of patch ``old`` made into weights of the larger spatial patch ``new`` that compute, on a
    latent whose every ``new/old`` block is constant, what the old model computed on one of each block's cells:
    the patch embedding's taps spread evenly over the block, the head's outputs repeated for every cell (a
    start for training a model on latents of a higher resolution, whose tokens then cover what the old ones
    did)."""
    if old[0] != new[0] or any(n % o for n, o in zip(new, old)):
        raise ValueError(f"cannot grow patch {old} into {new}: the temporal patch must stay and the spatial one "
                         f"must be a multiple")
    ry, rx = new[1] // old[1], new[2] // old[2]
    out = dict(state)
    w = state["patch_embedding.weight"]                          # [dim, c, pt, ph, pw]
    out["patch_embedding.weight"] = (w.repeat_interleave(ry, 3).repeat_interleave(rx, 4) / (ry * rx)).contiguous()
    c = w.shape[1]
    hw, hb = state["head.head.weight"], state["head.head.bias"]  # [(pt ph pw c), dim], c fastest
    pt, ph, pw = old

    def spread(t):
        t = t.reshape(pt, ph, pw, c, *t.shape[1:])
        t = t.repeat_interleave(ry, 1).repeat_interleave(rx, 2)
        return t.reshape(-1, *t.shape[4:]).contiguous()
    out["head.head.weight"], out["head.head.bias"] = spread(hw), spread(hb)
    return out


def grown_init(work_dir: Path, source: Path, config: DiTConfig) -> Path:
    """``source`` DiT weights grown to ``config``'s patch (:func:`grow_patch`) and model type, saved in
    ``work_dir/init_dit`` (kept if already there). ``source``: a v1 checkpoint folder (its config.json says the
    patch; e.g. ``--stage export --export_dir runs/demo/export`` of the v1 recipe) or a bare .safetensors file of
    DEMO_V1_DIT's weights."""
    from openwan.models.dit import WanModel
    out = work_dir / "init_dit"
    if (out / "config.json").exists():
        return out
    source = Path(source)
    src = WanModel.from_pretrained(source, dtype=torch.float32,
                                   config=None if (source / "config.json").is_file() else DEMO_V1_DIT)
    if tuple(src.config.patch_size) == tuple(config.patch_size):
        raise ValueError(f"--grow_from {source}: its DiT already has patch {tuple(src.config.patch_size)}, nothing to "
                         f"grow: grow from a v1 checkpoint (patch {DEMO_V1_DIT.patch_size}; the package ships v2 now, "
                         f"docs/demo.md), or start from these weights with --init_dit")
    state = grow_patch(src.state_dict(), tuple(src.config.patch_size), tuple(config.patch_size))
    model = WanModel(config)
    model.load_state_dict(state)
    model.save_pretrained(out)
    log(f"dit: {source} grown from patch {src.config.patch_size} to {config.patch_size} into {out}")
    return out


def block_count(state: dict) -> int:
    """How many transformer blocks DiT weights hold (their ``blocks.N.`` keys)."""
    found = {int(m.group(1)) for m in map(_BLOCK_KEY.match, state) if m}
    return max(found) + 1 if found else 0


def deepen(state: dict, layers: int) -> dict:
    """DiT weights with every block followed by ``layers / blocks - 1`` copies of itself whose output projections
    (:data:`BLOCK_OUTPUTS`) are zero: the deeper DiT computes exactly what the old one did, and each copy starts
    from features the old block already had (zero-initialised residual branches, as in ReZero or ControlNet)."""
    old = block_count(state)
    if old == 0 or layers % old or layers <= old:
        raise ValueError(f"cannot deepen {old} blocks into {layers}: the new depth must be a larger multiple of "
                         f"the old one (e.g. --dit_layers {2 * max(old, 1)})")
    k = layers // old
    out = {key: v for key, v in state.items() if not key.startswith("blocks.")}
    for key, v in state.items():
        m = _BLOCK_KEY.match(key)
        if not m:
            continue
        i, rest = int(m.group(1)), m.group(2)
        for j in range(k):
            zero = j > 0 and any(rest.startswith(p + ".") for p in BLOCK_OUTPUTS)
            out[f"blocks.{i * k + j}.{rest}"] = torch.zeros_like(v) if zero else v.clone()
    return out


def deepened_init(work_dir: Path, source: Path, config: DiTConfig) -> Path:
    """``source`` DiT weights (a folder or a .safetensors file of the same width) deepened to ``config``'s
    ``num_layers`` (:func:`deepen`), saved in ``work_dir/init_dit`` (kept if already there)."""
    from safetensors.torch import load_file

    from openwan.models.dit import WanModel
    out = work_dir / "init_dit"
    if (out / "config.json").exists():
        return out
    source = Path(source)
    if source.is_dir():
        state = WanModel.from_pretrained(source, dtype=torch.float32).state_dict()
    elif source.is_file():
        state = {k: v.float() for k, v in load_file(str(source)).items()}
    else:
        raise FileNotFoundError(f"--deepen_from {source}: no such folder or .safetensors file")
    model = WanModel(config)
    try:
        model.load_state_dict(deepen(state, config.num_layers))
    except RuntimeError as e:
        raise ValueError(f"--deepen_from {source}: its weights do not fit the DiT of --dit_* (only the depth may "
                         f"differ): {str(e).splitlines()[0]}") from None
    model.save_pretrained(out)
    log(f"dit: {source} deepened from {block_count(state)} to {config.num_layers} blocks into {out}")
    return out
