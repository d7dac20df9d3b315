"""Wan-VAE: the 3D causal video autoencoder of Wan 2.1 (paper section 3.1).

The VAE maps a video ``[B, 3, 1 + 4n, H, W]`` in ``[-1, 1]`` to a latent ``[B, 16, 1 + n, H/8, W/8]``
and back. It reads top to bottom like the paper's figure:

* **Building blocks** -- :class:`CausalConv3d` (all temporal padding in front, so frame ``t`` never
  sees frame ``t+1``), :class:`RMSNorm` over channels, :class:`ResidualBlock`,
  :class:`AttentionBlock` (single head, per frame), :class:`Resample` (2x spatial down/up sampling,
  optionally with a causal temporal conv that halves / doubles the frames).
* **Feature cache** -- :class:`FeatureCache`. Video is processed in temporal chunks (encoder: frame 0
  alone, then 4 frames at a time; decoder: one latent frame at a time). Every cached causal conv
  remembers the last ``CACHE_T = 2`` frames of its input, so the next chunk sees the same history as
  if the whole video had been convolved at once. This is what makes memory independent of the video
  length, and the chunking is exactly the reference's, so results are bit-compatible with the
  reference ``WanVAE`` and with diffusers' ``AutoencoderKLWan``.
* **Encoder3d / Decoder3d** -- conv1, a stack of residual blocks and resamplers (``downsamples`` /
  ``upsamples``), a middle block (res, attention, res) and a head (norm, SiLU, conv).
* **WanVAE** -- encoder, ``conv1`` (to mu / log-variance), ``conv2`` (latent in), decoder; plus the
  per-channel latent normalization ``z = (mu - mean) / std``. Public API: :meth:`WanVAE.encode`,
  :meth:`WanVAE.decode`, :meth:`WanVAE.encode_stream`, :meth:`WanVAE.decode_stream`, spatial tiling
  through the ``tile=`` argument of each, :meth:`WanVAE.from_pretrained`, :meth:`WanVAE.save_pretrained`.

Parameter names are the official ones (``Wan2.1_VAE.pth``): ``encoder.*``, ``conv1``, ``conv2``,
``decoder.*``. :func:`official_to_diffusers` / :func:`diffusers_to_official` rename them to and from
the diffusers layout (``AutoencoderKLWan``).

Checkpoint folders written by :meth:`WanVAE.save_pretrained`:

* ``layout="official"``: ``Wan2.1_VAE.pth`` (``torch.save`` of a plain ``{name: tensor}`` dict). When
  the config is not the published one, a ``vae_config.json`` (the :class:`~openwan.configs.VAEConfig`
  fields) is written beside it so that :meth:`WanVAE.from_pretrained` can rebuild the model; without
  that file the published config is assumed.
* ``layout="diffusers"``: ``config.json`` + ``diffusion_pytorch_model.safetensors`` with diffusers key
  and config names, loadable by ``AutoencoderKLWan.from_pretrained``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from openwan.checkpoints import (CheckpointError, atomic_write, check_keys, read_safetensors,
                                 read_state_dict, read_torch_file, save_safetensors, strip_prefix,
                                 write_json)
from openwan.configs import VAEConfig

CACHE_T = 2                      # frames of history each cached causal conv keeps
OFFICIAL_FILE = "Wan2.1_VAE.pth"
CONFIG_FILE = "vae_config.json"  # beside OFFICIAL_FILE, for non-default configs
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DEFAULT_TILE = 256               # pixels, for tile=True
TileArg = Union[None, bool, int, Sequence[int]]


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
            return super().forward(x)
        buf, inner = self.padded_input(x, history)
        inner.copy_(x)
        return super().forward(buf)

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
        """The convolution of a buffer from :meth:`padded_input` (already padded)."""
        return super().forward(buf)


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
    two activations of the chunk's size less than a plain norm -> SiLU -> pad -> conv. Same operations
    on the same values, so the results are bit-identical.
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


class RMSNorm(nn.Module):
    """``F.normalize(x, dim=channels) * sqrt(C) * gamma`` (no bias), computed in fp32.

    ``images=True`` is for [N, C, H, W] inputs (gamma [C,1,1]), False for [B, C, T, H, W] (gamma [C,1,1,1]).
    """

    def __init__(self, dim: int, images: bool = True):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``out``: write the result there (a tensor of x's shape, any dtype or strides; no gradients)."""
        if out is None:
            y = F.normalize(x.float(), dim=1)
            if torch.is_grad_enabled():
                y = y * self.scale * self.gamma.float()
            else:                                   # same arithmetic in place: one activation less
                y.mul_(self.scale).mul_(self.gamma.float())
            return y.to(x.dtype)
        x = x.float()                               # F.normalize's own steps, the quotient written to out
        denom = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12)
        if out.dtype == torch.float32:
            y = torch.div(x, denom.expand_as(x), out=out)
        else:
            y = x / denom
        y.mul_(self.scale).mul_(self.gamma.float())
        return y if y is out else out.copy_(y)


class SiLU(nn.SiLU):
    """SiLU, in place when no gradient is needed (its inputs here are always fresh norm outputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x, inplace=not torch.is_grad_enabled())


class Upsample2x(nn.Upsample):
    """Nearest-exact 2x spatial upsampling, computed in fp32 and cast back."""

    def __init__(self):
        super().__init__(scale_factor=(2.0, 2.0), mode="nearest-exact")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type_as(x)


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
    * ``upsample2d`` / ``upsample3d``: nearest-exact 2x (fp32) + Conv2d to C/2 (``resample.1``);
      3D first runs ``time_conv`` C -> 2C and interleaves the halves in time (doubling the frames).
      The first chunk skips it (1 frame stays 1 frame); the second runs it with zero history.
    """

    def __init__(self, dim: int, mode: str):
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
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


def _run(layers: Iterable[nn.Module], x: torch.Tensor, cache: Optional[FeatureCache]) -> torch.Tensor:
    """Run ``layers`` in order on one chunk. A (norm, SiLU, conv) head is one fused step. The caller
    passes every layer of a stack in one call, so no caller keeps an intermediate activation alive."""
    layers = list(layers)
    i = 0
    while i < len(layers):
        layer = layers[i]
        if (isinstance(layer, RMSNorm) and i + 2 < len(layers) and isinstance(layers[i + 1], SiLU)
                and isinstance(layers[i + 2], CausalConv3d)):
            x = padded_activation(layer, layers[i + 2], x, cache)
            x = layers[i + 2].forward_padded(x)
            i += 3
            continue
        if isinstance(layer, (ResidualBlock, Resample, AttentionBlock)):
            x = layer(x, cache)
        elif isinstance(layer, CausalConv3d):
            x = cached_conv(layer, x, cache)
        else:
            x = layer(x)
        i += 1
    return x


# ============================================================================ encoder / decoder

class Encoder3d(nn.Module):
    """Video [B,3,T,H,W] -> [B, z_channels, latent T, H/8, W/8] (z_channels = 2 * z_dim: mu, log-variance)."""

    def __init__(self, dim: int, z_channels: int, dim_mult: Sequence[int], num_res_blocks: int,
                 attn_scales: Sequence[float], temporal_downsample: Sequence[bool], dropout: float = 0.0):
        super().__init__()
        dims = [dim * u for u in (1, *dim_mult)]
        scale = 1.0
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(num_res_blocks):
                layers.append(ResidualBlock(cin, cout, dropout))
                if scale in attn_scales:
                    layers.append(AttentionBlock(cout))
                cin = cout
            if i != len(dim_mult) - 1:
                layers.append(Resample(cout, "downsample3d" if temporal_downsample[i] else "downsample2d"))
                scale /= 2.0
        self.downsamples = nn.Sequential(*layers)
        self.middle = nn.Sequential(ResidualBlock(cout, cout, dropout), AttentionBlock(cout),
                                    ResidualBlock(cout, cout, dropout))
        self.head = nn.Sequential(RMSNorm(cout, images=False), SiLU(),
                                  CausalConv3d(cout, z_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: Optional[FeatureCache]) -> torch.Tensor:
        return _run([self.conv1, *self.downsamples, *self.middle, *self.head], x, cache)


class Decoder3d(nn.Module):
    """Latent [B, z_dim, t, h, w] (one latent frame per call) -> pixels [B, 3, 1 or 4, 8h, 8w]."""

    def __init__(self, dim: int, z_dim: int, dim_mult: Sequence[int], num_res_blocks: int,
                 attn_scales: Sequence[float], temporal_upsample: Sequence[bool], dropout: float = 0.0):
        super().__init__()
        dims = [dim * u for u in (dim_mult[-1], *reversed(dim_mult))]
        scale = 1.0 / 2 ** (len(dim_mult) - 2)
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0], dropout), AttentionBlock(dims[0]),
                                    ResidualBlock(dims[0], dims[0], dropout))
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                cin //= 2                      # the previous upsampler halved the channels
            for _ in range(num_res_blocks + 1):
                layers.append(ResidualBlock(cin, cout, dropout))
                if scale in attn_scales:
                    layers.append(AttentionBlock(cout))
                cin = cout
            if i != len(dim_mult) - 1:
                layers.append(Resample(cout, "upsample3d" if temporal_upsample[i] else "upsample2d"))
                scale *= 2.0
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(RMSNorm(cout, images=False), SiLU(),
                                  CausalConv3d(cout, 3, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: Optional[FeatureCache]) -> torch.Tensor:
        return _run([self.conv1, *self.middle, *self.upsamples, *self.head], x, cache)


# ============================================================================ tiling helpers

def _tile_sizes(tile: TileArg, overlap: TileArg, ratio: int) -> Optional[tuple[tuple[int, int], tuple[int, int]]]:
    """(tile, overlap) in latent units per axis (h, w), from pixel sizes; None = no tiling."""
    if tile is None or tile is False:
        return None
    if tile is True:
        tile = DEFAULT_TILE
    th, tw = (tile, tile) if isinstance(tile, int) else tuple(tile)
    if overlap is None:
        oh, ow = (max(ratio, (th // 4) // ratio * ratio), max(ratio, (tw // 4) // ratio * ratio))
    else:
        oh, ow = (overlap, overlap) if isinstance(overlap, int) else tuple(overlap)
    for name, v in (("tile height", th), ("tile width", tw), ("overlap height", oh), ("overlap width", ow)):
        if not isinstance(v, int) or v < 0 or v % ratio:
            raise ValueError(f"{name} must be a non-negative multiple of {ratio} pixels, got {v!r}")
    if th < 2 * ratio or tw < 2 * ratio or oh >= th or ow >= tw:
        raise ValueError(f"tile {th}x{tw} must be at least {2 * ratio} pixels and larger than the overlap "
                         f"{oh}x{ow}")
    return (th // ratio, tw // ratio), (oh // ratio, ow // ratio)


def _axis_tiles(n: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Tiles [start, end) of ``size`` covering 0..n, evenly spaced, neighbours overlapping >= overlap."""
    if n <= size:
        return [(0, n)]
    count = 1 + -(-(n - size) // (size - overlap))           # ceil: enough tiles for the overlap
    starts = [round(k * (n - size) / (count - 1)) for k in range(count)]
    return [(s, s + size) for s in starts]


def _axis_weights(tiles: list[tuple[int, int]], scale: int) -> list[torch.Tensor]:
    """Blend weights per tile at ``scale`` x the tile units: linear ramps over each overlap."""
    out = []
    for k, (s, e) in enumerate(tiles):
        w = torch.ones((e - s) * scale)
        if k > 0:
            ov = (tiles[k - 1][1] - s) * scale
            if ov > 0:
                w[:ov] = torch.minimum(w[:ov], torch.arange(1, ov + 1) / (ov + 1))
        if k < len(tiles) - 1:
            ov = (e - tiles[k + 1][0]) * scale
            if ov > 0:
                w[-ov:] = torch.minimum(w[-ov:], torch.arange(ov, 0, -1) / (ov + 1))
        out.append(w)
    return out


class _TilePlan:
    """Spatial tiles of a latent grid h x w, with their blend weights at a given output scale."""

    def __init__(self, h: int, w: int, sizes, out_scale: int, device):
        (th, tw), (oh, ow) = sizes
        rows, cols = _axis_tiles(h, th, oh), _axis_tiles(w, tw, ow)
        wr, wc = _axis_weights(rows, out_scale), _axis_weights(cols, out_scale)
        self.tiles = [(r, c) for r in rows for c in cols]
        self.weights = [(wr[i][:, None] * wc[j][None, :]).to(device) for i in range(len(rows))
                        for j in range(len(cols))]
        self.weight_sum = torch.zeros(h * out_scale, w * out_scale, device=device)
        for ((r0, r1), (c0, c1)), wt in zip(self.tiles, self.weights):
            self.weight_sum[r0 * out_scale:r1 * out_scale, c0 * out_scale:c1 * out_scale] += wt
        self.scale = out_scale

    def out_slice(self, k: int):
        (r0, r1), (c0, c1) = self.tiles[k]
        s = self.scale
        return slice(r0 * s, r1 * s), slice(c0 * s, c1 * s)

    def in_slice(self, k: int, in_scale: int):
        (r0, r1), (c0, c1) = self.tiles[k]
        return slice(r0 * in_scale, r1 * in_scale), slice(c0 * in_scale, c1 * in_scale)


def _nearest(n: int, step: int, offset: int = 0) -> str:
    lo = offset + (n - offset) // step * step
    cands = [v for v in (lo, lo + step) if v >= max(offset, 1)]
    return " or ".join(str(v) for v in cands)


# ============================================================================ the VAE

class WanVAE(nn.Module):
    """The Wan 2.1 VAE with official parameter names. See the module docstring for the layout.

    Numerics: ``encode`` / ``decode`` chunk the video exactly like the reference (frame 0 alone then 4
    frames per chunk; one latent frame per decoder step), so fp32 results match the reference and
    diffusers to float rounding. Norms and the nearest upsampling run in fp32 in every dtype.
    """

    def __init__(self, config: VAEConfig = VAEConfig()):
        super().__init__()
        dim_mult = tuple(config.dim_mult)
        tdown = tuple(bool(t) for t in config.temporal_downsample)
        if len(tdown) != len(dim_mult) - 1:
            raise ValueError(f"temporal_downsample needs {len(dim_mult) - 1} entries (one per downsampling "
                             f"stage) for dim_mult {dim_mult}, got {tdown}")
        if len(config.mean) != config.z_dim or len(config.std) != config.z_dim:
            raise ValueError(f"mean/std need z_dim={config.z_dim} values each, got {len(config.mean)} "
                             f"and {len(config.std)}")
        self.config = config
        self.z_dim = config.z_dim
        self.spatial_ratio = 2 ** (len(dim_mult) - 1)
        self.temporal_ratio = 2 ** sum(tdown)
        attn = tuple(config.attn_scales)
        self.encoder = Encoder3d(config.dim, config.z_dim * 2, dim_mult, config.num_res_blocks, attn, tdown)
        self.conv1 = CausalConv3d(config.z_dim * 2, config.z_dim * 2, 1)
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, 1)
        self.decoder = Decoder3d(config.dim, config.z_dim, dim_mult, config.num_res_blocks, attn, tdown[::-1])

    # ------------------------------------------------------------------ small helpers
    @property
    def dtype(self) -> torch.dtype:
        return self.conv1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv1.weight.device

    def _stats(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, 1/std) as fp32 [1, z, 1, 1, 1] (the reference scales by the reciprocal of std)."""
        mean = torch.tensor(self.config.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1, 1)
        inv_std = 1.0 / torch.tensor(self.config.std, dtype=torch.float32, device=device).view(1, -1, 1, 1, 1)
        return mean, inv_std

    def _check_frames(self, f: int, h: int, w: int) -> None:
        r, s = self.temporal_ratio, self.spatial_ratio
        problems = []
        if f < 1 or (f - 1) % r:
            problems.append(f"{f} frames is not {r}n+1 (use {_nearest(f, r, 1)} frames)")
        if h < s or h % s:
            problems.append(f"height {h} is not a multiple of {s} (use {_nearest(h, s)})")
        if w < s or w % s:
            problems.append(f"width {w} is not a multiple of {s} (use {_nearest(w, s)})")
        if problems:
            raise ValueError("video of shape [B, 3, F, H, W] cannot be encoded: " + "; ".join(problems))

    def _check_video(self, video) -> torch.Tensor:
        if not torch.is_tensor(video) or video.dim() != 5 or video.shape[1] != 3:
            shape = tuple(video.shape) if torch.is_tensor(video) else type(video).__name__
            raise ValueError(f"expected a video tensor [B, 3, F, H, W] in [-1, 1], got {shape}")
        self._check_frames(*video.shape[2:])
        return video.to(device=self.device, dtype=self.dtype)

    def _check_latent(self, latent) -> torch.Tensor:
        if not torch.is_tensor(latent) or latent.dim() != 5 or latent.shape[1] != self.z_dim:
            shape = tuple(latent.shape) if torch.is_tensor(latent) else type(latent).__name__
            raise ValueError(f"expected a latent [B, {self.z_dim}, T, h, w], got {shape}")
        if latent.shape[2] < 1 or latent.shape[3] < 1 or latent.shape[4] < 1:
            raise ValueError(f"latent has an empty dimension: {tuple(latent.shape)}")
        return latent

    def num_frames(self, latent_frames: int) -> int:
        """Pixel frames decoded from ``latent_frames`` latent frames: 1 + 4 (T - 1)."""
        return 1 + self.temporal_ratio * (latent_frames - 1)

    def _chunk_frames(self, index: int) -> slice:
        """Pixel frames of encoder chunk / decoder step ``index``: [0], then 4 at a time."""
        r = self.temporal_ratio
        return slice(0, 1) if index == 0 else slice(1 + r * (index - 1), 1 + r * index)

    # ------------------------------------------------------------------ encode
    def _encode_region(self, video: torch.Tensor) -> torch.Tensor:
        """Chunked encoder pass over a whole clip -> normalized mu (fp32). The reference's exact loop."""
        cache = FeatureCache()
        chunks = [self.encoder(video[:, :, self._chunk_frames(i)], cache)
                  for i in range(1 + (video.shape[2] - 1) // self.temporal_ratio)]
        mu = self.conv1(torch.cat(chunks, dim=2))[:, :self.z_dim]
        mean, inv_std = self._stats(mu.device)
        return (mu.float() - mean) * inv_std

    @torch.no_grad()
    def encode(self, video, tile: TileArg = None, overlap: TileArg = None) -> torch.Tensor:
        """Video [B, 3, 1+4n, H, W] in [-1, 1] -> normalized latent [B, 16, 1+n, H/8, W/8] (fp32).

        Returns mu only (no sampling), normalized as ``(mu - mean) / std`` with the config's 16 values.
        ``video`` may also be an iterable of frame tensors ([B,3,H,W] or [B,3,n,H,W]): it is then
        encoded by :meth:`encode_stream` without holding all frames.

        ``tile`` (pixels: int, (h, w), or True for 256) encodes overlapping spatial tiles one at a time
        and blends their latents linearly over ``overlap`` pixels (default tile/4), so the working set
        is bounded by the tile size (plus the input and the latent). Tiled results are NOT identical
        to untiled ones: each tile is zero padded at its own borders and its middle attention sees
        only the tile, so latents differ most within ``overlap`` of a seam and slightly elsewhere.
        A tile at least as large as the frame gives exactly the untiled result.
        """
        if not torch.is_tensor(video):
            return torch.cat(list(self.encode_stream(video, tile=tile, overlap=overlap)), dim=2)
        video = self._check_video(video)
        sizes = _tile_sizes(tile, overlap, self.spatial_ratio)
        if sizes is None:
            return self._encode_region(video)
        s = self.spatial_ratio
        b, _, f, hp, wp = video.shape
        plan = _TilePlan(hp // s, wp // s, sizes, 1, video.device)
        out = torch.zeros(b, self.z_dim, 1 + (f - 1) // self.temporal_ratio, hp // s, wp // s,
                          device=video.device)
        for k in range(len(plan.tiles)):
            ys, xs = plan.in_slice(k, s)
            oy, ox = plan.out_slice(k)
            out[..., oy, ox] += self._encode_region(video[..., ys, xs]) * plan.weights[k]
        return out / plan.weight_sum

    @torch.no_grad()
    def encode_stream(self, frames: Iterable[torch.Tensor], tile: TileArg = None,
                      overlap: TileArg = None) -> Iterator[torch.Tensor]:
        """Encode frames as they arrive; yields normalized latent frames [B, 16, 1, H/8, W/8] (fp32).

        ``frames`` yields [B, 3, H, W] frames or [B, 3, n, H, W] pieces in any mix. Frame 0 is encoded
        as soon as it arrives, then every 4 frames give one latent frame; only the pending (< 5) frames
        and the per-conv cache are held, so memory does not grow with the video length. The total must
        be 4n+1 frames (ValueError at the end otherwise, naming the nearest valid counts). With ``tile``
        every chunk is split into the same tiles as :meth:`encode` (one cache per tile), and the result
        equals tiled :meth:`encode` up to float rounding.
        """
        r, s = self.temporal_ratio, self.spatial_ratio
        sizes = _tile_sizes(tile, overlap, s)
        pending: list[torch.Tensor] = []
        n_pending = total = index = 0
        shape = plan = None
        caches: list[FeatureCache] = []
        for piece in frames:
            if torch.is_tensor(piece) and piece.dim() == 4:
                piece = piece.unsqueeze(2)
            if not torch.is_tensor(piece) or piece.dim() != 5 or piece.shape[1] != 3:
                got = tuple(piece.shape) if torch.is_tensor(piece) else type(piece).__name__
                raise ValueError(f"encode_stream expects frames [B, 3, H, W] or [B, 3, n, H, W], got {got}")
            if shape is None:
                shape = (piece.shape[0], *piece.shape[3:])
                self._check_frames(1, *shape[1:])
                plan = _TilePlan(shape[1] // s, shape[2] // s, sizes, 1, self.device) if sizes else None
                caches = [FeatureCache() for _ in (plan.tiles if plan else [None])]
            elif (piece.shape[0], *piece.shape[3:]) != shape:
                raise ValueError(f"frame batch/size changed mid-stream: {(piece.shape[0], *piece.shape[3:])} "
                                 f"after {shape} (B, H, W)")
            pending.append(piece.to(device=self.device, dtype=self.dtype))
            n_pending += piece.shape[2]
            total += piece.shape[2]
            while n_pending >= (1 if index == 0 else r):
                need = 1 if index == 0 else r
                buf = torch.cat(pending, dim=2) if len(pending) > 1 else pending[0]
                chunk, rest = buf[:, :, :need], buf[:, :, need:]
                pending, n_pending = ([rest] if rest.shape[2] else []), rest.shape[2]
                yield self._encode_chunk(chunk, caches, plan)
                index += 1
        if total == 0:
            raise ValueError("encode_stream got no frames")
        if n_pending:
            raise ValueError(f"{total} frames is not {r}n+1 (use {_nearest(total, r, 1)} frames); "
                             f"the last {n_pending} frame(s) were not encoded")

    def _encode_chunk(self, chunk: torch.Tensor, caches: list[FeatureCache], plan) -> torch.Tensor:
        mean, inv_std = self._stats(chunk.device)

        def one(x, cache):
            return (self.conv1(self.encoder(x, cache))[:, :self.z_dim].float() - mean) * inv_std

        if plan is None:
            return one(chunk, caches[0])
        s = self.spatial_ratio
        b, _, _, hp, wp = chunk.shape
        out = torch.zeros(b, self.z_dim, 1, hp // s, wp // s, device=chunk.device)
        for k, cache in enumerate(caches):
            ys, xs = plan.in_slice(k, s)
            oy, ox = plan.out_slice(k)
            out[..., oy, ox] += one(chunk[..., ys, xs], cache) * plan.weights[k]
        return out / plan.weight_sum

    # ------------------------------------------------------------------ decode
    def _decoder_input(self, latent: torch.Tensor) -> torch.Tensor:
        """Undo the normalization (z / (1/std) + mean, as the reference) and apply conv2."""
        latent = self._check_latent(latent).to(self.device)
        mean, inv_std = self._stats(latent.device)
        return self.conv2((latent.float() / inv_std + mean).to(self.dtype))

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, tile: TileArg = None, overlap: TileArg = None) -> torch.Tensor:
        """Normalized latent [B, 16, T, h, w] -> video [B, 3, 1+4(T-1), 8h, 8w] clamped to [-1, 1].

        The output has the model's dtype. ``tile`` (pixels: int, (h, w), or True for 256) decodes
        overlapping spatial tiles one after the other (each through all frames) and blends them
        linearly over ``overlap`` pixels (default tile/4), so peak memory is the output plus one
        tile's working set (caches and activations). Tiled output is NOT identical to untiled: each
        tile's convolutions are zero padded at its own borders and its middle attention sees only
        the tile, so pixels differ most within ``overlap`` of a seam and slightly elsewhere; larger
        tiles and overlaps shrink the difference, and a tile covering the frame is exact.
        """
        x = self._decoder_input(latent)
        b, _, t, h, w = x.shape
        s = self.spatial_ratio
        sizes = _tile_sizes(tile, overlap, s)
        if sizes is None:
            out = torch.empty(b, 3, self.num_frames(t), h * s, w * s, dtype=self.dtype, device=x.device)
            cache = FeatureCache()
            for i in range(t):
                out[:, :, self._chunk_frames(i)] = self.decoder(x[:, :, i:i + 1], cache).clamp_(-1.0, 1.0)
            return out
        plan = _TilePlan(h, w, sizes, s, x.device)
        out = torch.zeros(b, 3, self.num_frames(t), h * s, w * s, device=x.device)
        for k in range(len(plan.tiles)):         # tile by tile: one tile's cache alive at a time
            ys, xs = plan.in_slice(k, 1)
            oy, ox = plan.out_slice(k)
            cache = FeatureCache()
            for i in range(t):
                y = self.decoder(x[:, :, i:i + 1, ys, xs], cache)
                out[:, :, self._chunk_frames(i), oy, ox] += y.float() * plan.weights[k]
        return (out / plan.weight_sum).clamp_(-1.0, 1.0).to(self.dtype)

    @torch.no_grad()
    def decode_stream(self, latent: torch.Tensor, tile: TileArg = None,
                      overlap: TileArg = None) -> Iterator[torch.Tensor]:
        """Yield pixel chunks [B, 3, n, H, W] (n = 1 for the first latent frame, then 4) as decoded.

        Concatenated along time they equal :meth:`decode` exactly. Memory holds one chunk plus the
        per-conv cache (2 frames per conv), independent of the number of frames. With ``tile`` every
        latent frame is decoded tile by tile (one cache per tile, so the caches together cover the whole
        frame; the transient activations are bounded by the tile) and blended like tiled :meth:`decode`.
        """
        x = self._decoder_input(latent)
        b, _, t, h, w = x.shape
        s = self.spatial_ratio
        sizes = _tile_sizes(tile, overlap, s)
        if sizes is None:
            cache = FeatureCache()
            for i in range(t):
                yield self.decoder(x[:, :, i:i + 1], cache).clamp_(-1.0, 1.0)
            return
        plan = _TilePlan(h, w, sizes, s, x.device)
        caches = [FeatureCache() for _ in plan.tiles]
        for i in range(t):
            n = self._chunk_frames(i).stop - self._chunk_frames(i).start
            out = torch.zeros(b, 3, n, h * s, w * s, device=x.device)
            for k, cache in enumerate(caches):
                ys, xs = plan.in_slice(k, 1)
                oy, ox = plan.out_slice(k)
                out[..., oy, ox] += self.decoder(x[:, :, i:i + 1, ys, xs], cache).float() * plan.weights[k]
            yield (out / plan.weight_sum).clamp_(-1.0, 1.0).to(self.dtype)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Reconstruction: decode(encode(video))."""
        return self.decode(self.encode(video))

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: Optional[torch.dtype] = None,
                        device: Optional[Union[str, torch.device]] = None,
                        config: Optional[VAEConfig] = None) -> "WanVAE":
        """Load official or diffusers weights.

        ``path`` is the official ``Wan2.1_VAE.pth`` (any .pth / .safetensors with official or diffusers
        key names), a directory holding it (an official checkpoint directory), a diffusers ``vae/``
        folder (config.json + diffusion_pytorch_model.safetensors) or a diffusers root with ``vae/``.
        The config comes from ``config`` if given, else the diffusers config.json, else a
        ``vae_config.json`` beside the official file, else the published config. Keys and shapes are
        checked strictly (CheckpointError listing every problem). ``dtype`` defaults to float32.
        """
        sd, found_config, source = _read_checkpoint(Path(path))
        config = config or found_config or VAEConfig()
        if _is_diffusers_layout(sd):
            sd = diffusers_to_official(sd, config)
        with torch.device("meta"):
            model = cls(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        check_keys(expected, {k: tuple(v.shape) for k, v in sd.items()}, f"WanVAE({config})", source,
                   hint=f"a non-default VAE needs its config: pass config=VAEConfig(...) or put {CONFIG_FILE} "
                        f"beside {OFFICIAL_FILE}")
        dtype = dtype or torch.float32
        model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
        return model.to(device=device or "cpu").eval().requires_grad_(False)

    def save_pretrained(self, path: str | os.PathLike, layout: str = "official") -> Path:
        """Write the weights (atomically) into directory ``path``; returns the weights file.

        ``official``: ``Wan2.1_VAE.pth`` (+ ``vae_config.json`` when the config is not the published one).
        ``diffusers``: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (AutoencoderKLWan names).
        """
        path = Path(path)
        if path.suffix == ".pth" and layout == "official":
            path, name = path.parent, path.name
        else:
            name = OFFICIAL_FILE
        sd = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        path.mkdir(parents=True, exist_ok=True)
        if layout == "official":
            out = atomic_write(path / name, lambda tmp: torch.save(sd, tmp))
            cfg = path / CONFIG_FILE
            if self.config != VAEConfig():
                write_json(self.config.to_dict(), cfg)
            elif cfg.exists():
                cfg.unlink()
            return out
        if layout == "diffusers":
            out = save_safetensors(official_to_diffusers(sd, self.config), path / DIFFUSERS_WEIGHTS)
            write_json(_to_diffusers_config(self.config), path / "config.json")
            return out
        raise ValueError(f"layout must be 'official' or 'diffusers', got {layout!r}")


# ============================================================================ checkpoint reading

def _is_diffusers_layout(sd: dict) -> bool:
    return any(k.startswith(("quant_conv.", "post_quant_conv.", "encoder.conv_in.", "decoder.conv_in."))
               for k in sd)


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        sd = read_safetensors(file)
    else:
        sd = read_torch_file(file)
    return strip_prefix(sd, ("vae.", "first_stage_model.", "model."))


def _read_checkpoint(path: Path) -> tuple[dict, Optional[VAEConfig], str]:
    """(state dict, config if the checkpoint says one, description) for any supported layout."""
    if not path.exists():
        raise CheckpointError(f"VAE checkpoint not found: {path}")
    if path.is_file():
        sd = _read_weights(path)
        cfg = None
        if (path.parent / CONFIG_FILE).is_file():
            cfg = _read_official_config(path.parent / CONFIG_FILE)
        elif _is_diffusers_layout(sd) and (path.parent / "config.json").is_file():
            cfg = _read_diffusers_config(path.parent / "config.json", required=False)
        return sd, cfg, str(path)
    if (path / OFFICIAL_FILE).is_file():
        return _read_checkpoint(path / OFFICIAL_FILE)
    if (path / "config.json").is_file() and (any(path.glob("*.safetensors")) or any(path.glob("*.index.json"))):
        cfg = _read_diffusers_config(path / "config.json", required=True)
        sd = read_state_dict(path)
        return sd, cfg, str(path)
    if (path / "vae").is_dir():
        return _read_checkpoint(path / "vae")
    raise CheckpointError(
        f"{path} holds no Wan VAE: expected {OFFICIAL_FILE}, a diffusers vae folder (config.json + "
        f"{DIFFUSERS_WEIGHTS}) or a diffusers root folder with vae/")


def _read_official_config(file: Path) -> VAEConfig:
    try:
        return VAEConfig.from_dict(json.loads(file.read_text()), strict=True)
    except (json.JSONDecodeError, ValueError, TypeError) as e:
        raise CheckpointError(f"bad VAE config {file}: {e}") from None


_DIFFUSERS_CONFIG_NAMES = {  # diffusers AutoencoderKLWan config name -> VAEConfig field
    "base_dim": "dim", "z_dim": "z_dim", "dim_mult": "dim_mult", "num_res_blocks": "num_res_blocks",
    "attn_scales": "attn_scales", "temperal_downsample": "temporal_downsample",
    "latents_mean": "mean", "latents_std": "std",
}


def _read_diffusers_config(file: Path, required: bool) -> Optional[VAEConfig]:
    try:
        d = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"bad diffusers config {file}: {e}") from None
    cls = d.get("_class_name")
    if cls not in (None, "AutoencoderKLWan") or "base_dim" not in d:
        if not required:
            return None
        raise CheckpointError(f"{file} is not an AutoencoderKLWan config (_class_name={cls!r}); "
                              f"point at the diffusers vae/ folder of a Wan 2.1 model")
    unsupported = []
    if d.get("decoder_base_dim") not in (None, d["base_dim"]):
        unsupported.append(f"decoder_base_dim={d['decoder_base_dim']}")
    if d.get("is_residual", False):
        unsupported.append("is_residual=true (the Wan 2.2 VAE)")
    if d.get("patch_size") not in (None, 1):
        unsupported.append(f"patch_size={d['patch_size']}")
    if d.get("in_channels", 3) != 3 or d.get("out_channels", 3) != 3:
        unsupported.append("in/out channels other than 3")
    if unsupported:
        raise CheckpointError(f"{file}: unsupported AutoencoderKLWan options: {', '.join(unsupported)}; "
                              f"openwan implements the Wan 2.1 VAE")
    kw = {ours: d[theirs] for theirs, ours in _DIFFUSERS_CONFIG_NAMES.items() if d.get(theirs) is not None}
    return VAEConfig.from_dict(kw)


def _to_diffusers_config(config: VAEConfig) -> dict:
    out = {"_class_name": "AutoencoderKLWan", "_diffusers_version": "0.33.1"}
    for theirs, ours in _DIFFUSERS_CONFIG_NAMES.items():
        v = getattr(config, ours)
        out[theirs] = list(v) if isinstance(v, tuple) else v
    out.update(dropout=0.0, is_residual=False, in_channels=3, out_channels=3, patch_size=None,
               decoder_base_dim=None, scale_factor_temporal=2 ** sum(map(bool, config.temporal_downsample)),
               scale_factor_spatial=2 ** (len(config.dim_mult) - 1))
    return out


# ============================================================================ official <-> diffusers keys

_RESBLOCK_NAMES = {  # official ResidualBlock suffix -> diffusers WanResidualBlock suffix
    "residual.0.gamma": "norm1.gamma",
    "residual.2.weight": "conv1.weight", "residual.2.bias": "conv1.bias",
    "residual.3.gamma": "norm2.gamma",
    "residual.6.weight": "conv2.weight", "residual.6.bias": "conv2.bias",
    "shortcut.weight": "conv_shortcut.weight", "shortcut.bias": "conv_shortcut.bias",
}


def _decoder_layout(config: VAEConfig) -> list[tuple]:
    """For each official ``decoder.upsamples.{i}``: ("res", stage, j), ("attn", stage, j) or ("up", stage)."""
    out = []
    n = len(config.dim_mult)
    scale = 1.0 / 2 ** (n - 2)
    for stage in range(n):
        for j in range(config.num_res_blocks + 1):
            out.append(("res", stage, j))
            if scale in tuple(config.attn_scales):
                out.append(("attn", stage, j))
        if stage != n - 1:
            out.append(("up", stage))
            scale *= 2.0
    return out


def _official_to_diffusers_key(key: str, layout: list[tuple]) -> str:
    top = {"conv1.": "quant_conv.", "conv2.": "post_quant_conv."}
    for a, b in top.items():
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
        return f"{part}.mid_block.resnets.{int(idx) // 2}.{_RESBLOCK_NAMES[sub]}"
    if rest.startswith("downsamples."):
        _, idx, sub = rest.split(".", 2)
        return f"encoder.down_blocks.{idx}.{_RESBLOCK_NAMES.get(sub, sub)}"
    if rest.startswith("upsamples."):
        _, idx, sub = rest.split(".", 2)
        kind = layout[int(idx)]
        if kind[0] == "res":
            return f"decoder.up_blocks.{kind[1]}.resnets.{kind[2]}.{_RESBLOCK_NAMES[sub]}"
        if kind[0] == "up":
            return f"decoder.up_blocks.{kind[1]}.upsamplers.0.{sub}"
        raise ValueError("diffusers' AutoencoderKLWan has no attention in the decoder's up blocks; a VAE "
                         "with decoder attn_scales cannot be written in the diffusers layout")
    raise KeyError(f"not a WanVAE key: {key}")


def diffusers_key_map(config: VAEConfig) -> dict[str, str]:
    """official name -> diffusers name for every parameter of ``WanVAE(config)``."""
    with torch.device("meta"):
        keys = list(WanVAE(config).state_dict())
    layout = _decoder_layout(config)
    return {k: _official_to_diffusers_key(k, layout) for k in keys}


def official_to_diffusers(sd: dict[str, torch.Tensor], config: VAEConfig) -> dict[str, torch.Tensor]:
    """Rename an official-layout state dict to diffusers' AutoencoderKLWan names."""
    m = diffusers_key_map(config)
    unknown = sorted(set(sd) - set(m))
    if unknown:
        raise CheckpointError(f"keys not in WanVAE({config}): {unknown[:8]}")
    return {m[k]: v for k, v in sd.items()}


def diffusers_to_official(sd: dict[str, torch.Tensor], config: VAEConfig) -> dict[str, torch.Tensor]:
    """Rename a diffusers AutoencoderKLWan state dict to official names (unknown keys pass through
    unchanged, so the strict key check reports them)."""
    inverse = {v: k for k, v in diffusers_key_map(config).items()}
    return {inverse.get(k, k): v for k, v in sd.items()}
