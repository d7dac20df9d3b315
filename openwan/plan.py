"""Memory planner: estimate the peak memory of a generation, and pick the cheapest settings that fit.

    estimate("t2v-14B", "1280*720", 81, dtype=torch.bfloat16, quantize="int8", offload="blocks:4")
        -> Estimate(total, phases, parts)        # bytes; str() prints a table
    plan("i2v-14B-480P", "832*480", 81, device_memory="24GB") -> Plan(settings, estimate) or a clear error

What is counted (bytes on the compute device):

* weights: every tensor of the DiT at its storage size (built on the meta device, so counts are
  exact): quantized layers (openwan.quant) 1 byte per weight + a 4-byte scale per output row; with
  ``offload="blocks:N"`` only the non-block weights and N + 1 blocks are on the device
  (openwan.offload). Text encoder (umT5) and CLIP weights by their configs;
  VAE weights.
* DiT activations at L tokens (L = latent frames x (h/16) x (w/16)), B = 2 with classifier-free
  guidance batched (cond + uncond in one forward, the pipeline's default), per element of the
  [B, L, dim] token tensor (D = B L dim), from the code of openwan.models.dit:
  residual stream x (fp32, 4 bytes) + the block input after norm/modulation (fp32, 4) + q, k, v in the
  compute dtype (3c) + rotated q and k (2c: ``q, k = rope(q), rope(k)`` keeps the unrotated q alive) +
  below fp32, RoPE's fp32 copy of k and its fp32 output (8): 8 + 5c (+ 8) bytes per element at the RoPE
  of k; or, in the FFN, x + input (8) + chunk outputs and their concatenation (2c) per element plus the
  ffn_dim-wide Linear output of one 2048-token chunk (B x 2048 x ffn_dim x c; GELU runs in place),
  whichever is larger; plus the cached RoPE tables (2 x fp32 [L, head_dim/2]) and the text features
  and their embedding (fp32; ``context`` rows: at most text_len, the prompt's length + 1 when it is
  shorter, see WanModel._context), and the context cache: every block's cross-attention keys and values of
  those rows (and of the 257 CLIP rows for i2v), kept over the steps (openwan.models.context_cache).
* VAE decode: the streaming decode's peak grows with the pixels of one frame, not with the frame
  count (docs/vae.md: ~1400 MB over the model at 256x256 in fp32); 21.4 KB per output pixel in fp32,
  half in bf16; tiled decode (``vae_tile``) bounds it by the tile (256 px tiles: ~0.35x at 256x256).
* long video (past the model's native length, unless ``long_method="none"``): the DiT's activations are one
  native-length window's, plus the whole video's latent in fp32 ``LONG_LATENT_COPIES`` times (the sample, the
  solver's history, the blended velocity); the VAE decode streams, so it does not grow with the length.
* Wan 2.2 TI2V-5B: its VAE (openwan.models.vae22: z 48, 16x16 pixels a latent), the decode scaled by its width
  160: 36.5 KiB an output pixel in fp32, against 35.3 measured (565 MiB over the weights at 128x128, docs/wan22.md).
* phases: encode (text encoder + its activations), denoise (DiT weights + activations), decode (VAE);
  what stays loaded across phases follows the offload setting ("none": everything stays;
  "sequential" / "blocks:N": the text encoder is released after encoding and the DiT is off the
  device during decode). A fixed runtime overhead (CUDA context, allocator slack) is added on CUDA.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Optional, Union

import torch

GB = 2**30
MB = 2**20
VAE_DECODE_BYTES_PER_PIXEL_FP32 = 1400 * MB / (256 * 256)   # docs/vae.md: stream decode, op peak at 256x256
VAE_TILE_FACTOR = 0.35                                      # docs/vae.md: tiled (128 px) / stream, 256x256
LONG_LATENT_COPIES = 6    # a long video's whole latent (fp32): the sample, the solver's history, the blended velocity
CUDA_OVERHEAD = 1 * GB                                      # context + allocator slack, a round number
RUNTIME_OVERHEAD = {"cuda": CUDA_OVERHEAD, "cpu": 0}


def parse_bytes(s: Union[str, int, float]) -> int:
    """'24GB', '24G', '24 GiB', '800MB', 24e9 -> bytes (GB = GiB = 2^30, as torch reports)."""
    if isinstance(s, (int, float)):
        return int(s)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)i?b?\s*", s.lower())
    if not m:
        raise ValueError(f"cannot read the memory size {s!r}: write e.g. 24GB, 16GiB or 800MB")
    return int(float(m.group(1)) * 1024 ** "bkmgt".index(m.group(2) or "b"))


def _fmt(n: int) -> str:
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / MB:.0f} MB"


def _dtype_bytes(dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


# ----------------------------------------------------------------------------- model sizes

@functools.lru_cache(maxsize=64)
def dit_weight_bytes(cfg, dtype=torch.bfloat16, quantize: Optional[str] = None) -> dict:
    """{"blocks": [bytes per block], "other": bytes} of a DiT at dtype, optionally quantized."""
    from openwan.models.dit import WanModel
    from openwan.quant import quantize_model_
    with torch.device("meta"):
        m = WanModel(cfg).to(dtype)
        if quantize not in (None, "none"):
            quantize_model_(m, quantize)
    def size(mod):
        return sum(t.numel() * t.element_size() for t in list(mod.parameters()) + list(mod.buffers()))

    blocks = [size(b) for b in m.blocks]
    return {"blocks": tuple(blocks), "other": size(m) - sum(blocks)}


def text_encoder_weight_bytes(cfg, dtype=torch.bfloat16) -> int:
    """umT5 encoder: token embedding + per layer attention (4), gated FFN (3), norms, position bias."""
    per_layer = 4 * cfg.dim * cfg.dim_attn + 3 * cfg.dim * cfg.dim_ffn + 2 * cfg.dim + cfg.num_buckets * cfg.num_heads
    return (cfg.vocab * cfg.dim + cfg.num_layers * per_layer + cfg.dim) * _dtype_bytes(dtype)


def image_encoder_weight_bytes(cfg, dtype=torch.bfloat16) -> int:
    d = cfg.dim
    per_layer = 4 * d * d + 2 * d * d * cfg.mlp_ratio + 9 * d
    return (cfg.num_layers * per_layer + 3 * 14 * 14 * d + 300 * d) * _dtype_bytes(dtype)


@functools.lru_cache(maxsize=16)
def vae_weight_bytes(vae_cfg, dtype=torch.float32) -> int:
    from openwan.models.vae import WanVAE
    from openwan.models.vae22 import VAE22Config, WanVAE22
    with torch.device("meta"):
        if isinstance(vae_cfg, VAE22Config):
            m = WanVAE22(vae_cfg)
        else:
            try:
                m = WanVAE(vae_cfg)
            except TypeError:
                m = WanVAE(config=vae_cfg)
    return sum(p.numel() for p in m.parameters()) * _dtype_bytes(dtype)


def vae_of(v) -> tuple:
    """(config, (temporal, spatial, spatial) stride) of a variant's VAE: its own config, or for Wan 2.2 TI2V-5B
    (``vae=None`` in openwan.configs) the Wan 2.2 VAE (z 48, 16x16x4)."""
    if v.vae is not None:
        return v.vae, (4, 8, 8)
    from openwan.models.vae22 import VAE22Config
    return VAE22Config(), (4, 16, 16)


# ----------------------------------------------------------------------------- activations

def latent_grid(size: str, frame_num: int, patch=(1, 2, 2), vae_stride=(4, 8, 8)) -> tuple[int, int, int]:
    """(frames, h, w) of the DiT's token grid for a 'W*H' size (the reference's order) and frame count."""
    try:
        w, h = (int(v) for v in size.lower().replace("x", "*").split("*"))
    except ValueError:
        raise ValueError(f"size must look like 832*480 (width*height), got {size!r}") from None
    f = (frame_num - 1) // vae_stride[0] + 1
    return f // patch[0], h // vae_stride[1] // patch[1], w // vae_stride[2] // patch[2]


def dit_activation_bytes(cfg, tokens: int, batch: int = 2, dtype=torch.bfloat16, context: int = 512,
                         ffn_chunk: int = 2048) -> int:
    """Peak bytes of the DiT's live activations at ``tokens`` tokens (see the module docstring)."""
    c = _dtype_bytes(dtype)
    d = batch * tokens * cfg.dim                                  # elements of one [B, L, dim] tensor
    rope_stage = d * (4 + 4 + 5 * c + (0 if c == 4 else 8))      # x, input, q k v, rotated q and k, fp32 in/out
    chunk = batch * min(tokens, ffn_chunk or tokens) * cfg.ffn_dim
    ffn_stage = d * (4 + 4 + 2 * c) + chunk * c                  # x, input, chunk outputs + cat; Linear (GELU in place)
    modulate_stage = 16 * d                                       # x, norm out, x*(1+scale), + shift (fp32)
    fixed = (2 * 4 * tokens * (cfg.head_dim // 2)                 # RoPE cos/sin tables (fp32, one per grid)
             + 4 * batch * context * (cfg.text_dim + 2 * cfg.dim)  # padded text features, text embedding (fp32)
             + (4 * batch * 257 * cfg.dim if cfg.has_image_input else 0))
    # the context cache (openwan.models.context_cache): every block's cross-attention keys and values of the text
    # rows (fp32 when the padding is folded, context < text_len) and of the image rows, kept over the steps
    blocks = cfg.num_layers + len(cfg.vace_layers or ())
    img = (514 if cfg.model_type == "flf2v" else 257) if cfg.has_image_input else 0
    kv = 2 * batch * blocks * cfg.dim * (context * (4 if context < cfg.text_len else c) + img * c)
    return fixed + kv + max(rope_stage, ffn_stage, modulate_stage)


def vae_decode_bytes(size: str, dtype=torch.float32, tiled: bool = False, vae_dim: int = 96) -> int:
    """The streaming decode's peak over the VAE's weights: measured for Wan's VAE (base width 96) and
    scaled by the width ``vae_dim`` (its activations have that many channels times the stage multipliers)."""
    w, h = (int(v) for v in size.lower().replace("x", "*").split("*"))
    b = VAE_DECODE_BYTES_PER_PIXEL_FP32 * w * h * _dtype_bytes(dtype) / 4 * vae_dim / 96
    return int(b * (VAE_TILE_FACTOR if tiled else 1.0))


def call_estimate(dit_cfg, width: int, height: int, frame_num: int, *, vae_stride=(4, 8, 8), vae_dim: int = 96,
                  dtype=torch.float32, vae_dtype=torch.float32, cfg_batch: bool = True, parallel: int = 1,
                  dit_frames: Optional[int] = None, return_frames: bool = True, tiled: bool = False) -> dict:
    """What one generation call needs on top of the loaded models (bytes), with the formulas of
    :func:`estimate`: the DiT's activations (:func:`dit_activation_bytes` at the tokens one process holds:
    1/``parallel`` under sequence parallel, one window's when the DiT sees ``dit_frames`` at a time), the
    VAE's decode (:func:`vae_decode_bytes`) and the output frames (uint8; twice when also returned).
    Keys: tokens (the DiT's tokens per forward: a long video's window), dit, vae, frames,
    total = max(dit, vae) + frames.
    ``openwan.validate`` refuses a call whose total exceeds the free memory (through the pipeline's
    ``memory_estimate``)."""
    size = f"{width}*{height}"
    f, h, w = latent_grid(size, min(frame_num, dit_frames or frame_num), dit_cfg.patch_size, vae_stride)
    tokens = f * max(1, h) * max(1, w)
    per_process = -(-tokens // max(1, parallel))
    dit = dit_activation_bytes(dit_cfg, per_process, 2 if cfg_batch else 1, dtype)
    vae = vae_decode_bytes(size, vae_dtype, tiled, vae_dim)
    frames = frame_num * height * width * 3 * (2 if return_frames else 1)
    return {"tokens": tokens, "dit": dit, "vae": vae, "frames": frames, "total": max(dit, vae) + frames}


def pipeline_estimate(pipe, width: int, height: int, frame_num: int, **kw) -> dict:
    """:func:`call_estimate` for a loaded pipeline: its DiT's config and compute dtype, its VAE's strides and width."""
    vae = pipe.vae
    dtype = next((p.dtype for p in pipe.dit.parameters() if p.is_floating_point()), torch.float32)
    return call_estimate(pipe.dit.config, width, height, frame_num,
                         vae_stride=(vae.temporal_ratio, vae.spatial_ratio, vae.spatial_ratio),
                         vae_dim=getattr(getattr(vae, "config", None), "dim", 96), dtype=dtype, **kw)


# ----------------------------------------------------------------------------- estimate / plan

@dataclass
class Estimate:
    total: int                                   # the peak over the phases, bytes
    phases: dict = field(default_factory=dict)   # phase -> bytes
    parts: dict = field(default_factory=dict)    # component -> bytes
    settings: dict = field(default_factory=dict)

    def __str__(self):
        rows = [f"  {k:<28}{_fmt(v):>12}" for k, v in self.parts.items()]
        rows += [f"  phase {k:<22}{_fmt(v):>12}" for k, v in self.phases.items()]
        head = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"estimated peak {_fmt(self.total)} ({head})\n" + "\n".join(rows)


def _variant(task_or_variant):
    from openwan.configs import Variant, get_variant
    return task_or_variant if isinstance(task_or_variant, Variant) else get_variant(task_or_variant)


def estimate(task_or_variant, size: str, frame_num: int, dtype=torch.bfloat16, quantize: Optional[str] = None,
             offload: str = "none", device: str = "cuda", cfg_batch: bool = True, t5_cpu: bool = False,
             vae_tile: bool = False, dit_config=None, include_encoders: bool = True,
             long_method: Optional[str] = None) -> Estimate:
    """Peak device memory of one generation (bytes, with the parts), see the module docstring.

    ``dit_config`` overrides the variant's DiT (e.g. fewer layers for a measurement);
    ``include_encoders=False`` counts the DiT alone (weights + activations). Past the model's native length a
    video is a long video (openwan.long_video, ``long_method``: default the model's, ``"none"`` one DiT call over
    every frame): the DiT's activations are then one window's, plus the whole video's latent a few times over.
    """
    from openwan.long_video import model_defaults, plan_long_video
    from openwan.offload import parse_offload
    v = _variant(task_or_variant)
    cfg = dit_config or v.dit
    vae_cfg, stride = vae_of(v)
    native = v.sample.frame_num
    long = None            # the pipeline's own window plan (None: one DiT call over every frame)
    if native > 1:
        method, overlap = model_defaults(v.sample, long_method)
        long = plan_long_video(frame_num, native, method, overlap, temporal_ratio=stride[0])
    f, h, w = latent_grid(size, native if long else frame_num, cfg.patch_size, stride)
    tokens = f * h * w
    wb = dit_weight_bytes(cfg, dtype, quantize)
    n_res = parse_offload(offload, cfg.num_layers)
    if n_res is None:
        dit_w = wb["other"] + sum(wb["blocks"])
    else:
        dit_w = wb["other"] + sum(sorted(wb["blocks"], reverse=True)[: min(cfg.num_layers, n_res + 1)])
    act = dit_activation_bytes(cfg, tokens, 2 if cfg_batch else 1, dtype)
    parts = {"dit weights": dit_w, "dit activations": act}
    if long:
        lf, lh, lw = latent_grid(size, frame_num, (1, 1, 1), stride)
        parts["long video latents"] = LONG_LATENT_COPIES * vae_cfg.z_dim * lf * lh * lw * 4
    phases = {"denoise": dit_w + act + parts.get("long video latents", 0)}
    if include_encoders:
        te = 0 if t5_cpu else text_encoder_weight_bytes(v.text_encoder, dtype)
        clip = image_encoder_weight_bytes(v.image_encoder, dtype) if v.image_encoder is not None else 0
        vae_w = vae_weight_bytes(vae_cfg, dtype)
        dec = vae_decode_bytes(size, dtype, vae_tile, getattr(vae_cfg, "dim", 96))
        released = offload != "none"
        parts.update({"text encoder weights": te, "image encoder weights": clip, "vae weights": vae_w,
                      "vae decode": dec})
        te_act = 4 * v.text_encoder.text_len * v.text_encoder.dim_ffn * 2
        phases["encode"] = te + clip + te_act + (0 if released else dit_w + vae_w)
        phases["denoise"] += vae_w + (0 if released else te + clip)
        phases["decode"] = vae_w + dec + (0 if released else dit_w + te + clip) \
            + parts.get("long video latents", 0) // LONG_LATENT_COPIES   # the finished latent it decodes from
    over = RUNTIME_OVERHEAD.get(device, 0)
    parts["runtime overhead"] = over
    total = max(phases.values()) + over
    settings = {"quantize": quantize or "none", "offload": offload, "dtype": str(dtype).replace("torch.", ""),
                "t5_cpu": t5_cpu, "vae_tile": vae_tile, "tokens": tokens}
    if long:
        settings["long_video"] = (f"{long.method}, {len(long.plan.spans)} windows of {native} frames, overlap "
                                  f"{long.plan.overlap} latent frames")
    return Estimate(total, phases, parts, settings)


@dataclass
class Plan:
    settings: dict
    estimate: Estimate

    def __str__(self):
        s = " ".join(f"--{k}" if v is True else f"--{k} {v}" for k, v in self.settings.items()
                     if v not in (False, None))
        return f"fits: {s}\n{self.estimate}"


def candidates(num_layers: int):
    """Settings from the cheapest (no slowdown, no quality change) to the most frugal, in order."""
    base = dict(quantize="none", offload="none", t5_cpu=False, vae_tile=False)
    yield dict(base)
    yield dict(base, offload="sequential")
    yield dict(base, offload="sequential", quantize="int8")
    yield dict(base, offload="sequential", quantize="int8", t5_cpu=True)
    yield dict(base, offload="sequential", quantize="int8", t5_cpu=True, vae_tile=True)
    for n in range(num_layers - 1, -1, -1):   # fewer resident blocks: more streaming per step
        yield dict(base, offload=f"blocks:{n}", quantize="int8", t5_cpu=True, vae_tile=True)


def plan(task_or_variant, size: str, frame_num: int, device_memory, dtype=torch.bfloat16,
         device: str = "cuda", cfg_batch: bool = True, **kw) -> Plan:
    """The first of :func:`candidates` whose estimate fits ``device_memory``; a ValueError saying what
    the smallest setting needs when none does."""
    budget = parse_bytes(device_memory)
    v = _variant(task_or_variant)
    cfg = kw.get("dit_config") or v.dit
    last = None
    for s in candidates(cfg.num_layers):
        e = estimate(v, size, frame_num, dtype, device=device, cfg_batch=cfg_batch, **s, **kw)
        if e.total <= budget:
            return Plan(s, e)
        last = e
    raise ValueError(f"{v.name} at {size}, {frame_num} frames does not fit in {_fmt(budget)}: even with int8 "
                     f"weights, every block streamed, the text encoder on the CPU and a tiled VAE decode it "
                     f"needs about {_fmt(last.total)}; use a smaller size or fewer frames "
                     f"(tokens: {last.settings['tokens']}), {_long_video_hint(v, frame_num, kw.get('long_method'))}"
                     f"or a device with more memory.\n{last}")


def _long_video_hint(v, frame_num: int, long_method: Optional[str]) -> str:
    """For a refusal: a video past the native length asked for as one DiT call fits better as a long video."""
    if long_method == "none" and frame_num > v.sample.frame_num > 1:
        return "make it a long video, one window of the DiT at a time (--long_method windows or continue), "
    return ""


def fits_or_raise(task_or_variant, size: str, frame_num: int, device_memory, **kw) -> Estimate:
    """For ``openwan generate``: the estimate, or a clear error before anything is loaded."""
    e = estimate(task_or_variant, size, frame_num, **kw)
    budget = parse_bytes(device_memory)
    if e.total > budget:
        hint = _long_video_hint(_variant(task_or_variant), frame_num, kw.get("long_method"))
        raise MemoryError(f"this generation needs about {_fmt(e.total)} of device memory, {_fmt(budget)} are "
                          f"available: {hint}try --offload_model auto, --quantize int8, --t5_cpu, or a smaller "
                          f"--size / --frame_num (`openwan plan` lists the options).\n{e}")
    return e


def resolve_auto(task_or_variant, size: Optional[str], frame_num: Optional[int], device=None,
                 quantize: Optional[str] = None, **kw) -> dict:
    """``--offload_model auto`` (CLI and ``openwan serve``): {"offload", "quantize", "t5_cpu", "fits"} of the
    cheapest :func:`plan` that fits the device's memory. On a device of unknown memory (the CPU) or for an
    unknown model: offload "none" and ``quantize`` as given (nothing to fit). A ``quantize`` the caller
    chose is kept; the plan's is used only when the caller left it unset."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    budget = device_memory_of(device)
    if budget is None or task_or_variant is None:
        return {"offload": "none", "quantize": quantize, "t5_cpu": False, "fits": False}
    v = _variant(task_or_variant)
    chosen = plan(v, size or v.sample.size, frame_num or v.sample.frame_num, budget, device=device.type,
                  **kw).settings
    q = quantize if quantize is not None else (None if chosen["quantize"] == "none" else chosen["quantize"])
    return {"offload": chosen["offload"], "quantize": q, "t5_cpu": bool(chosen["t5_cpu"]), "fits": True}


def device_memory_of(device) -> Optional[int]:
    """Total memory of a CUDA device (None elsewhere)."""
    d = torch.device(device)
    if d.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(d).total_memory
    return None


__all__ = ["estimate", "call_estimate", "pipeline_estimate", "plan", "resolve_auto", "Estimate", "Plan", "parse_bytes", "fits_or_raise", "latent_grid",
           "dit_weight_bytes", "dit_activation_bytes", "device_memory_of"]
