"""The building blocks shared by both Wan VAEs (2.1 and 2.2): causal convs, the feature cache, norms,
residual / attention / resampling blocks, and the flat layer loop that keeps activations short-lived.

* :class:`FeatureCache` -- the per-conv history of one chunked pass (a video is processed in temporal
  chunks; every cached causal conv remembers the last ``CACHE_T = 2`` frames of its input, so the next
  chunk sees the same history as if the whole video had been convolved at once).
* :class:`CausalConv3d` (all temporal padding in front, so frame ``t`` never sees frame ``t+1``),
  :class:`RMSNorm` over channels, :class:`ResidualBlock`, :class:`AttentionBlock` (single head, per
  frame), :class:`Resample` (2x spatial down/up sampling, optionally with a causal temporal conv that
  halves / doubles the frames).
* :func:`run_layers` -- runs a stack of layers on one chunk; a (norm, SiLU, conv) triple is fused so the
  activation is written straight into the conv's padded input (:func:`padded_activation`).

Parameter names follow the official checkpoints (``residual.0/2/3/6``, ``shortcut``, ``resample.1``,
``time_conv``, ``to_qkv``, ``proj``, ``norm``, ``gamma``).
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

CACHE_T = 2                      # frames of history each cached causal conv keeps

# ============================================================================ feature cache

class FeatureCache:
    """The per-conv history of one chunked pass over one video (or one spatial tile of it).

    Keys are the modules that own the history (a :class:`CausalConv3d`, or a temporal
    :class:`Resample`); values are the last ``CACHE_T`` input frames of that module, or the marker
    :data:`FeatureCache.FIRST` for a temporal upsampler that has seen only the first chunk. A new
    cache is made for every call, so two calls (or two interleaved generators) never interfere.
    """

    FIRST = "first-chunk"  # upsample3d saw the first chunk: the next one runs time_conv with zero history

    def __init__(self):
        self._state: dict[nn.Module, object] = {}

    def get(self, module: nn.Module):
        return self._state.get(module)

    def set(self, module: nn.Module, value) -> None:
        self._state[module] = value

    def nbytes(self) -> int:
        """Total bytes held (constant once every conv has seen two chunks)."""
        return sum(v.numel() * v.element_size() for v in self._state.values() if torch.is_tensor(v))

    def __len__(self) -> int:
        return len(self._state)


# ============================================================================ building blocks

class CausalConv3d(nn.Conv3d):
    """Conv3d whose temporal padding (2 * pad_t) is all in front: output frame t sees frames <= t.

    ``history`` (the previous chunk's last frames) replaces as many of the front zero frames.
    The padded input [zeros | history | x] is built in one buffer (the reference concatenates, then
    pads: the same values, one copy less), then a padding-free conv runs on it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        self.causal_padding = (pw, pw, ph, ph, 2 * pt, 0)

    def forward(self, x: torch.Tensor, history: Optional[torch.Tensor] = None) -> torch.Tensor:
        pw, _, ph, _, front, _ = self.causal_padding
        if front == 0 and ph == 0 and pw == 0:             # a 1x1x1 conv: nothing to pad
            return self.forward_padded(x)
        buf, inner = self.padded_input(x, history)
        inner.copy_(x)
        return self.forward_padded(buf)

    def padded_input(self, x: torch.Tensor, history: Optional[torch.Tensor] = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(buffer, view): a zeroed [zeros | history | x] buffer with the spatial padding, and the view of
        it where ``x`` goes (left for the caller to fill, so a producer can write its output there)."""
        pw, _, ph, _, front, _ = self.causal_padding
        if history is None or front == 0:
            history = x[:, :, :0]
        elif history.shape[2] > front:
            history = history[:, :, -front:]
        front -= history.shape[2]
        b, c, t, h, w = x.shape
        buf = x.new_zeros(b, c, front + history.shape[2] + t, h + 2 * ph, w + 2 * pw)
        inner = buf[:, :, :, ph:ph + h, pw:pw + w]
        inner[:, :, front:front + history.shape[2]] = history
        return buf, inner[:, :, front + history.shape[2]:]

    def forward_padded(self, buf: torch.Tensor) -> torch.Tensor:
        """The convolution of a buffer from :meth:`padded_input` (already padded): :func:`conv3d`."""
        return conv3d(buf, self.weight, self.bias, self.stride)


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, stride)`` (no padding); a float32 CPU conv goes through oneDNN unless it
    is wide and has few outputs.

    PyTorch sends a batch-1 fp32 conv3d to its oneDNN kernel only when ``C * T * H`` of the input exceeds
    20480 (or the kernel is larger than 3 spatially, ...); below that it uses ``slow_conv3d`` (vol2col +
    GEMM), 3-7x slower than oneDNN for the narrow, large-frame convs of a VAE decoder step (docs/vae.md,
    "Speed on CPU"). The GEMM is as fast or faster only for wide convs with few output positions (C_in >=
    96 and at most 256 outputs per channel: the middle of the published width on tiny latents), which are
    left to ``F.conv3d``. The same convolution through oneDNN differs only by the order of the fp32 sums
    (docs/vae.md, "Rounding").
    """
    stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
    if (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.layout == torch.strided and _onednn()):
        outputs = math.prod((n - k) // s + 1 for n, k, s in zip(x.shape[2:], weight.shape[2:], stride))
        if weight.shape[1] < _GEMM_MIN_CHANNELS or outputs > _GEMM_MAX_OUTPUTS:
            return torch.mkldnn_convolution(x, weight, bias, (0, 0, 0), stride, (1, 1, 1), 1)
    return F.conv3d(x, weight, bias, stride)


_GEMM_MIN_CHANNELS, _GEMM_MAX_OUTPUTS = 96, 256     # measured (docs/vae.md): where vol2col + GEMM is not slower


def _onednn() -> bool:
    return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


def _keep(x: torch.Tensor, history: Optional[torch.Tensor]) -> torch.Tensor:
    """The history to save after chunk ``x``: its last CACHE_T frames, a 1-frame chunk completed with the
    last frame of the previous history."""
    keep = x[:, :, -CACHE_T:].clone()
    if keep.shape[2] < CACHE_T and history is not None:
        keep = torch.cat([history[:, :, -1:].to(keep.device), keep], dim=2)
    return keep


def cached_conv(conv: CausalConv3d, x: torch.Tensor, cache: Optional[FeatureCache]) -> torch.Tensor:
    """Run ``conv`` on one chunk, feeding it the previous chunk's history and saving the new one.

    The saved history is the chunk's last ``CACHE_T`` input frames; a 1-frame chunk is completed with
    the last frame of the previous history.
    """
    if cache is None:
        return conv(x)
    history = cache.get(conv)
    keep = _keep(x, history)
    out = conv(x, history)
    cache.set(conv, keep)
    return out


def padded_activation(norm: "RMSNorm", conv: CausalConv3d, x: torch.Tensor, cache: Optional[FeatureCache],
                      dropout: Optional[nn.Module] = None) -> torch.Tensor:
    """The padded input of ``conv`` (see :meth:`CausalConv3d.padded_input`) holding
    ``dropout(SiLU(norm(x)))`` after the cached history, which it updates; ``conv.forward_padded`` of
    it is the pre-activation conv of a residual block or a head.

    Without gradients (and with dropout inactive) the activation is computed straight into the buffer
    instead of into a tensor of its own that is then copied there, and the caller drops ``x`` by
    rebinding it to the buffer: at the conv only the buffer, the output and the caches are alive,
    two activations of the chunk's size less than a plain norm -> SiLU -> pad -> conv.

    Same operations on the same values, but not always the same rounding: the SiLU runs in place on a
    strided view (each row of the view ends at the padding), and PyTorch's CPU kernels compute the last
    ``n mod vector width`` elements of every contiguous run with the scalar formula instead of the
    vectorized one. Where the two round differently (measured on AVX-512 with 45-wide rows: the last 13
    of each row take the scalar path, and 495 of those 12480 elements differ, by 1 ulp) a plain
    contiguous SiLU differs from this one in those elements; the plain path's own tail elements (one
    per tensor, or per thread chunk) likewise.
    Whether results are bit-identical to the reference therefore depends on the CPU, the width and the
    thread count; the tests bound the difference by float32 rounding instead of asserting equality.
    """
    history = cache.get(conv) if cache is not None else None
    if torch.is_grad_enabled() or (dropout is not None and dropout.training and dropout.p > 0):
        y = F.silu(norm(x))
        y = dropout(y) if dropout is not None else y
        buf, inner = conv.padded_input(y, history)
        inner.copy_(y)
    else:
        buf, inner = conv.padded_input(x, history)
        y = F.silu(norm(x, out=inner), inplace=True)
    if cache is not None:
        cache.set(conv, _keep(y, history))
    return buf


def _wide(dtype: torch.dtype) -> torch.dtype:
    """The dtype norms and upsampling compute in: float32, or float64 for a float64 model (which the tests
    use as the exact reference of the fp32 one)."""
    return torch.promote_types(dtype, torch.float32)


class RMSNorm(nn.Module):
    """``F.normalize(x, dim=channels) * sqrt(C) * gamma`` (no bias), computed in fp32 (float64 in a float64 model).

    ``images=True`` is for [N, C, H, W] inputs (gamma [C,1,1]), False for [B, C, T, H, W] (gamma [C,1,1,1]).
    """

    def __init__(self, dim: int, images: bool = True):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``out``: write the result there (a tensor of x's shape, any dtype or strides; no gradients)."""
        if torch.is_grad_enabled():
            if out is not None:
                raise RuntimeError("RMSNorm(out=...) is for inference (torch.no_grad)")
            wide = _wide(x.dtype)
            return (F.normalize(x.to(wide), dim=1) * self.scale * self.gamma.to(wide)).to(x.dtype)
        # F.normalize's steps (x / max(||x||, eps)), the norm as sqrt(sum(x * x)) over the channels: a
        # plain sum reduction is ~20-40x faster on CPU than linalg.vector_norm over a non-innermost dim
        # (same value up to the order of the fp32 sum). The squares are written where the result goes.
        dtype, x = x.dtype, x.to(_wide(x.dtype))
        y = out if out is not None and out.dtype == x.dtype else torch.empty_like(x)
        denom = torch.mul(x, x, out=y).sum(dim=1, keepdim=True).sqrt_().clamp_min_(1e-12)
        torch.div(x, denom, out=y)
        y.mul_(self.scale).mul_(self.gamma.to(x.dtype))
        if out is None:
            return y.to(dtype)
        return y if y is out else out.copy_(y)


class SiLU(nn.SiLU):
    """SiLU, in place when no gradient is needed (its inputs here are always fresh norm outputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x, inplace=not torch.is_grad_enabled())


class Upsample2x(nn.Upsample):
    """Nearest-exact 2x spatial upsampling, computed in fp32 (float64 in a float64 model) and cast back."""

    def __init__(self):
        super().__init__(scale_factor=(2.0, 2.0), mode="nearest-exact")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(_wide(x.dtype))).type_as(x)


def _frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _batch_to_frames(x: torch.Tensor, t: int) -> torch.Tensor:
    bt, c, h, w = x.shape
    return x.view(bt // t, t, c, h, w).permute(0, 2, 1, 3, 4)


class ResidualBlock(nn.Module):
    """norm, SiLU, conv3x3x3, norm, SiLU, dropout, conv3x3x3, plus a 1x1x1 shortcut when C changes.

    Keys: residual.0 (norm), residual.2 (conv), residual.3 (norm), residual.6 (conv), shortcut.
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim, images=False), SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, images=False), SiLU(), nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, 3, padding=1))
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: Optional[FeatureCache] = None) -> torch.Tensor:
        h = self.shortcut(x)
        norm1, _, conv1, norm2, _, dropout, conv2 = self.residual
        x = conv1.forward_padded(padded_activation(norm1, conv1, x, cache))
        x = padded_activation(norm2, conv2, x, cache, dropout)    # rebinding x frees conv1's output
        x = conv2.forward_padded(x)
        return x + h if torch.is_grad_enabled() else x.add_(h)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (1x1 conv q/k/v and output projection)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: Optional[FeatureCache] = None) -> torch.Tensor:
        identity = x
        b, c, t, h, w = x.shape
        x = self.norm(_frames_to_batch(x))
        qkv = self.to_qkv(x).reshape(b * t, 1, c * 3, h * w).permute(0, 1, 3, 2).contiguous()
        q, k, v = qkv.chunk(3, dim=-1)
        x = F.scaled_dot_product_attention(q, k, v)           # [b*t, 1, h*w, c]
        x = x.squeeze(1).permute(0, 2, 1).reshape(b * t, c, h, w)
        return _batch_to_frames(self.proj(x), t) + identity


class Resample(nn.Module):
    """2x spatial resampling per frame, with an optional causal temporal conv (``time_conv``).

    * ``downsample2d`` / ``downsample3d``: ZeroPad2d(0,1,0,1) + Conv2d 3x3 stride 2 (``resample.1``);
      3D adds ``time_conv`` (3,1,1) stride 2 over [last frame of the previous chunk, this chunk]. The
      first chunk (frame 0) skips it, so 1 + 4n frames become 1 + 2n.
    * ``upsample2d`` / ``upsample3d``: nearest-exact 2x (fp32) + Conv2d to ``out_dim`` (``resample.1``;
      C/2 by default as in Wan 2.1, C in Wan 2.2);
      3D first runs ``time_conv`` C -> 2C and interleaves the halves in time (doubling the frames).
      The first chunk skips it (1 frame stays 1 frame); the second runs it with zero history.
    """

    def __init__(self, dim: int, mode: str, out_dim: Optional[int] = None):
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(dim, out_dim or dim // 2, 3, padding=1))
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode.startswith("downsample"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))
        else:
            raise ValueError(f"unknown resample mode {mode!r}")

    def forward(self, x: torch.Tensor, cache: Optional[FeatureCache] = None) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._double_frames(x, cache)
        t = x.shape[2]
        x = _batch_to_frames(self.resample(_frames_to_batch(x)), t)
        if self.mode == "downsample3d":
            x = self._halve_frames(x, cache)
        return x

    def _double_frames(self, x: torch.Tensor, cache: Optional[FeatureCache]) -> torch.Tensor:
        if cache is None:
            raise ValueError("a temporal upsampler needs a FeatureCache (decode chunk by chunk)")
        history = cache.get(self)
        if history is None:                    # first chunk: 1 frame in, 1 frame out
            cache.set(self, FeatureCache.FIRST)
            return x
        first = isinstance(history, str)
        keep = x[:, :, -CACHE_T:].clone()
        if keep.shape[2] < CACHE_T:
            prev = torch.zeros_like(keep) if first else history[:, :, -1:].to(keep.device)
            keep = torch.cat([prev, keep], dim=2)
        x = self.time_conv(x) if first else self.time_conv(x, history)
        cache.set(self, keep)
        b, c2, t, h, w = x.shape
        x = x.reshape(b, 2, c2 // 2, t, h, w)
        x = torch.stack((x[:, 0], x[:, 1]), 3)   # [b, c, t, 2, h, w]: the two halves interleaved
        return x.reshape(b, c2 // 2, t * 2, h, w)

    def _halve_frames(self, x: torch.Tensor, cache: Optional[FeatureCache]) -> torch.Tensor:
        if cache is None:
            raise ValueError("a temporal downsampler needs a FeatureCache (encode chunk by chunk)")
        history = cache.get(self)
        if history is None:                    # first chunk (frame 0) passes through
            cache.set(self, x[:, :, -1:].clone())
            return x
        keep = x[:, :, -1:].clone()
        x = self.time_conv(torch.cat([history[:, :, -1:].to(x.device), x], dim=2))
        cache.set(self, keep)
        return x


class CachedLayer(nn.Module):
    """A layer that runs one chunk with the feature cache and takes ownership of its input: it is called
    with a one-element list ``[x]`` that it pops, so no caller keeps ``x`` alive while it runs (a Wan 2.2
    stage keeps only what its shortcut needs)."""

    def forward(self, box: list, cache: Optional[FeatureCache] = None) -> torch.Tensor:
        raise NotImplementedError


def run_layers(layers: Iterable[nn.Module], x, cache: Optional[FeatureCache]) -> torch.Tensor:
    """Run ``layers`` in order on one chunk. A (norm, SiLU, conv) head is one fused step. The caller
    passes every layer of a stack in one call, so no caller keeps an intermediate activation alive;
    ``x`` may be a one-element list (ownership passed in: the list is emptied)."""
    layers = list(layers)
    if isinstance(x, list):
        x = x.pop()
    i = 0
    while i < len(layers):
        layer = layers[i]
        if (isinstance(layer, RMSNorm) and i + 2 < len(layers) and isinstance(layers[i + 1], SiLU)
                and isinstance(layers[i + 2], CausalConv3d)):
            x = padded_activation(layer, layers[i + 2], x, cache)
            x = layers[i + 2].forward_padded(x)
            i += 3
            continue
        if isinstance(layer, CachedLayer):
            box, x = [x], None
            x = layer(box, cache)
        elif isinstance(layer, (ResidualBlock, Resample, AttentionBlock)):
            x = layer(x, cache)
        elif isinstance(layer, CausalConv3d):
            x = cached_conv(layer, x, cache)
        else:
            x = layer(x)
        i += 1
    return x


_run = run_layers  # the name used before the split


def check_config(config) -> tuple[tuple, tuple]:
    """A VAE config's (dim_mult, temporal_downsample as bools), or a ValueError naming the mismatch."""
    dim_mult = tuple(config.dim_mult)
    tdown = tuple(bool(t) for t in config.temporal_downsample)
    if len(tdown) != len(dim_mult) - 1:
        raise ValueError(f"temporal_downsample needs {len(dim_mult) - 1} entries (one per downsampling "
                         f"stage) for dim_mult {dim_mult}, got {tdown}")
    if len(config.mean) != config.z_dim or len(config.std) != config.z_dim:
        raise ValueError(f"mean/std need z_dim={config.z_dim} values each, got {len(config.mean)} "
                         f"and {len(config.std)}")
    return dim_mult, tdown
