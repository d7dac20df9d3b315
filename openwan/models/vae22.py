"""The Wan 2.2 VAE (TI2V-5B): video [B, 3, 1 + 4n, H, W] <-> normalized latent [B, 48, 1 + n, H/16, W/16].

Top to bottom, as the figure of the Wan 2.2 VAE:

* **Patchify** -- 2x2 pixel blocks go into channels before the encoder ([3, T, H, W] -> [12, T, H/2, W/2],
  channel = c*4 + column offset*2 + row offset), and back after the decoder; 16x = 2 x 2^3.
* **Encoder** -- conv1 12 -> dim, four down stages (:class:`DownStage`): residual blocks (the first
  changes the width), a resample (not in the last stage), plus a weightless *average* shortcut from the
  stage input (:class:`AvgDown`: space / time blocks into channels, then the mean of channel groups);
  middle (res, attention, res); head norm, SiLU, conv -> 2 x 48 (mu, log-variance).
* **Decoder** -- conv1 48 -> 4 x dec_dim, middle, four up stages (:class:`UpStage`): residual blocks,
  a resample that keeps the width (2.1 halved it), plus a weightless *duplicate* shortcut
  (:class:`DupUp`: channels spread back into space / time blocks); head -> 12 channels -> un-patchify.
* **WanVAE22** -- ``conv1`` / ``conv2`` (1x1x1) around the latent, the 48 means / stds, and the chunk
  hooks of :class:`~openwan.models.vae_stream.ChunkedVAE`: the same ``encode`` / ``decode`` /
  ``encode_stream`` / ``decode_stream`` / ``tile=`` API, chunking and feature cache as the 2.1 VAE.

The building blocks (causal conv, RMS norm, residual / attention / resample blocks, feature cache) are the
2.1 ones (:mod:`openwan.models.vae_layers`). Parameter names are those of the official ``Wan2.2_VAE.pth``:
the blocks nest per stage (``encoder.downsamples.{s}.downsamples.{j}``, ``decoder.upsamples.{s}.upsamples.{j}``),
where 2.1 kept one flat list. :meth:`WanVAE22.from_pretrained` also reads the diffusers ``AutoencoderKLWan``
layout with ``is_residual: true, patch_size: 2``, and :meth:`WanVAE22.save_pretrained` writes both.

Memory: as in 2.1 (activations written into the conv's padded buffer, one flat layer loop); a stage
takes ownership of its input and keeps only what its shortcut needs: the down stage keeps the averaged
shortcut (a quarter or an eighth of the input's size when it downsamples), the up stage keeps its
(smaller) input and adds the duplicated values into the output in place, offset by offset, without
materializing the output-sized shortcut.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from openwan.configs import ConfigMixin
from openwan.models import vae_io
from openwan.models.vae_layers import (AttentionBlock, check_config, CachedLayer, CausalConv3d, FeatureCache, Resample,
                                       ResidualBlock, RMSNorm, SiLU, run_layers)
from openwan.models.vae_stream import ChunkedVAE

PATCH = 2                        # pixels per side folded into channels before the encoder

VAE22_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667)
VAE22_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744)


@dataclass(frozen=True)
class VAE22Config(ConfigMixin):
    """Wan 2.2 VAE: encoder base ``dim`` 160, decoder base ``dec_dim`` 256, z 48, mults 1,2,4,4, 2 res
    blocks, no attention scales, temporal downsampling F,T,T (the decoder mirrors it)."""
    dim: int = 160
    dec_dim: int = 256
    z_dim: int = 48
    dim_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple = ()
    temporal_downsample: tuple = (False, True, True)
    mean: tuple = VAE22_MEAN
    std: tuple = VAE22_STD


# ============================================================================ patchify

def patchify(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, 4C, T, H/2, W/2]; channel c*4 + (column offset)*2 + (row offset)."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // PATCH, PATCH, w // PATCH, PATCH)
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(b, c * PATCH * PATCH, t, h // PATCH, w // PATCH)


def unpatchify(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`patchify`: [B, 4C, T, h, w] -> [B, C, T, 2h, 2w]."""
    b, c4, t, h, w = x.shape
    x = x.reshape(b, c4 // (PATCH * PATCH), PATCH, PATCH, t, h, w)
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(b, c4 // (PATCH * PATCH), t, h * PATCH, w * PATCH)


# ============================================================================ weightless shortcuts

class AvgDown(nn.Module):
    """Average shortcut: each (time ``ft`` x row ``fs`` x column ``fs``) block of every input channel goes
    into channels (j = c*f + a*fs*fs + b*fs + d, f = ft*fs*fs), output channel o is the mean of the
    g = Cin*f/Cout channels j in [o*g, o*g + g). Time is zero padded in front to a multiple of ``ft``."""

    def __init__(self, in_dim: int, out_dim: int, ft: int, fs: int):
        super().__init__()
        f = ft * fs * fs
        if in_dim * f % out_dim:
            raise ValueError(f"average shortcut: {in_dim} channels x {f} does not split into {out_dim} groups")
        self.out_dim, self.ft, self.fs, self.group = out_dim, ft, fs, in_dim * f // out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ft, fs = self.ft, self.fs
        if ft == fs == 1 and self.group == 1:
            return x                                           # the last stage: identity
        pad = (-x.shape[2]) % ft
        if pad:
            x = torch.cat([x.new_zeros(*x.shape[:2], pad, *x.shape[3:]), x], dim=2)
        b, c, t, h, w = x.shape
        x = x.reshape(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
        return x.reshape(b, self.out_dim, self.group, t // ft, h // fs, w // fs).mean(dim=2)


class DupUp(nn.Module):
    """Duplicate shortcut: output channel o at block offsets (a, b, d) (time, row, column) copies input
    channel (o*f + a*fs*fs + b*fs + d) // r, r = Cout*f/Cin. On the first chunk the first ft-1 output
    frames are dropped (the causal first frame is not doubled)."""

    def __init__(self, in_dim: int, out_dim: int, ft: int, fs: int):
        super().__init__()
        f = ft * fs * fs
        if out_dim * f % in_dim:
            raise ValueError(f"duplicate shortcut: {out_dim} channels x {f} is not a multiple of {in_dim}")
        self.in_dim, self.out_dim, self.ft, self.fs, self.repeats = in_dim, out_dim, ft, fs, out_dim * f // in_dim

    def forward(self, x: torch.Tensor, first_chunk: bool = False) -> torch.Tensor:
        """The shortcut as a tensor (what the reference adds)."""
        b, _, t, h, w = x.shape
        ft, fs = self.ft, self.fs
        x = x.repeat_interleave(self.repeats, dim=1).reshape(b, self.out_dim, ft, fs, fs, t, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, self.out_dim, t * ft, h * fs, w * fs)
        return x[:, :, ft - 1:] if first_chunk else x

    def add_to_(self, out: torch.Tensor, x: torch.Tensor, first_chunk: bool = False) -> torch.Tensor:
        """``out += forward(x)`` in place, one block offset at a time (temporaries 1/f of ``out``)."""
        ft, fs, f = self.ft, self.fs, self.ft * self.fs * self.fs
        skip = ft - 1 if first_chunk else 0                   # output frame t*ft + a lands at t*ft + a - skip
        for a in range(ft):
            t0 = -(-(skip - a) // ft) if a < skip else 0      # the first input frame whose offset a is kept
            for rb in range(fs):
                for cd in range(fs):
                    k = a * fs * fs + rb * fs + cd
                    src = (torch.arange(self.out_dim, device=x.device) * f + k) // self.repeats
                    out[:, :, t0 * ft + a - skip::ft, rb::fs, cd::fs] += x[:, :, t0:].index_select(1, src)
        return out


# ============================================================================ stages

class DownStage(CachedLayer):
    """Residual blocks + resample (``downsamples.{0..n-1}``, ``downsamples.n``) + the average shortcut."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, down: bool,
                 dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for j in range(num_res_blocks):
            layers.append(ResidualBlock(in_dim if j == 0 else out_dim, out_dim, dropout))
        if down:
            layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)
        self.shortcut = AvgDown(in_dim, out_dim, 2 if temporal else 1, 2 if down else 1)

    def forward(self, box: list, cache: Optional[FeatureCache] = None) -> torch.Tensor:
        short = self.shortcut(box[0])           # the input itself is dropped by run_layers
        y = run_layers(self.downsamples, box, cache)
        return y + short if torch.is_grad_enabled() else y.add_(short)


class UpStage(CachedLayer):
    """Residual blocks + resample keeping the width (``upsamples.{0..n}``, ``upsamples.n+1``) + the
    duplicate shortcut (not in the last stage)."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, up: bool,
                 dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for j in range(num_res_blocks + 1):
            layers.append(ResidualBlock(in_dim if j == 0 else out_dim, out_dim, dropout))
        if up:
            layers.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", out_dim=out_dim))
        self.upsamples = nn.Sequential(*layers)
        self.shortcut = DupUp(in_dim, out_dim, 2 if temporal else 1, 2) if up else None

    def forward(self, box: list, cache: Optional[FeatureCache] = None) -> torch.Tensor:
        first = cache is None or cache.get(self) is None
        if cache is not None:
            cache.set(self, FeatureCache.FIRST)
        x = box[0] if self.shortcut is not None else None
        y = run_layers(self.upsamples, box, cache)
        if x is None:
            return y
        if torch.is_grad_enabled():
            return y + self.shortcut(x, first)
        return self.shortcut.add_to_(y, x, first)


# ============================================================================ encoder / decoder

class Encoder22(nn.Module):
    """Patchified video [B, 12, T, H/2, W/2] -> [B, z_channels, latent T, H/16, W/16]."""

    def __init__(self, dim: int, z_channels: int, dim_mult: Sequence[int], num_res_blocks: int,
                 temporal_downsample: Sequence[bool], dropout: float = 0.0):
        super().__init__()
        dims = [dim * u for u in (1, *dim_mult)]
        n = len(dim_mult)
        self.conv1 = CausalConv3d(3 * PATCH * PATCH, dims[0], 3, padding=1)
        self.downsamples = nn.Sequential(*[
            DownStage(dims[i], dims[i + 1], num_res_blocks, i < n - 1 and temporal_downsample[i], i < n - 1, dropout)
            for i in range(n)])
        c = dims[-1]
        self.middle = nn.Sequential(ResidualBlock(c, c, dropout), AttentionBlock(c), ResidualBlock(c, c, dropout))
        self.head = nn.Sequential(RMSNorm(c, images=False), SiLU(), CausalConv3d(c, z_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: Optional[FeatureCache]) -> torch.Tensor:
        return run_layers([self.conv1, *self.downsamples, *self.middle, *self.head], x, cache)


class Decoder22(nn.Module):
    """Latent [B, z_dim, 1, h, w] (one latent frame per call) -> patchified pixels [B, 12, 1 or 4, 8h, 8w]."""

    def __init__(self, dim: int, z_dim: int, dim_mult: Sequence[int], num_res_blocks: int,
                 temporal_upsample: Sequence[bool], dropout: float = 0.0):
        super().__init__()
        dims = [dim * u for u in (dim_mult[-1], *reversed(dim_mult))]
        n = len(dim_mult)
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        c = dims[0]
        self.middle = nn.Sequential(ResidualBlock(c, c, dropout), AttentionBlock(c), ResidualBlock(c, c, dropout))
        self.upsamples = nn.Sequential(*[
            UpStage(dims[i], dims[i + 1], num_res_blocks, i < n - 1 and temporal_upsample[i], i < n - 1, dropout)
            for i in range(n)])
        c = dims[-1]
        self.head = nn.Sequential(RMSNorm(c, images=False), SiLU(),
                                  CausalConv3d(c, 3 * PATCH * PATCH, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: Optional[FeatureCache]) -> torch.Tensor:
        return run_layers([self.conv1, *self.middle, *self.upsamples, *self.head], x, cache)


# ============================================================================ the VAE

class WanVAE22(ChunkedVAE):
    """The Wan 2.2 VAE with official parameter names; the API of :class:`~openwan.models.vae.WanVAE`
    (``encode``, ``decode``, ``encode_stream``, ``decode_stream``, ``tile=``, ``from_pretrained``,
    ``save_pretrained``) with 48 latent channels and a 16x spatial ratio. fp32 by default, as the reference."""

    version = "2.2"
    config_class = VAE22Config
    official_file = vae_io.OFFICIAL_FILES["2.2"]

    def __init__(self, config: VAE22Config = VAE22Config()):
        super().__init__()
        dim_mult, tdown = check_config(config)
        if tuple(config.attn_scales):
            raise ValueError("the Wan 2.2 VAE has no attention outside the middle blocks (attn_scales must be ())")
        self.config = config
        self.z_dim = config.z_dim
        self.spatial_ratio = PATCH * 2 ** (len(dim_mult) - 1)
        self.temporal_ratio = 2 ** sum(tdown)
        self.encoder = Encoder22(config.dim, config.z_dim * 2, dim_mult, config.num_res_blocks, tdown)
        self.conv1 = CausalConv3d(config.z_dim * 2, config.z_dim * 2, 1)
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, 1)
        self.decoder = Decoder22(config.dec_dim, config.z_dim, dim_mult, config.num_res_blocks, tdown[::-1])

    # ------------------------------------------------------------------ the chunk hooks
    def encode_chunk(self, x: torch.Tensor, cache: Optional[FeatureCache]) -> torch.Tensor:
        """Pixels of one chunk [B, 3, n, H, W] -> encoder features [B, 96, n', H/16, W/16]."""
        return self.encoder(patchify(x), cache)

    def latent_from_features(self, h: torch.Tensor) -> torch.Tensor:
        """conv1, keep mu, normalize: ``(mu - mean) * (1/std)`` in fp32."""
        return self._normalize(self.conv1(h)[:, :self.z_dim])

    def decoder_input(self, latent: torch.Tensor) -> torch.Tensor:
        """Undo the normalization (z / (1/std) + mean, as the reference) and apply conv2."""
        return self.conv2(self._denormalize(latent).to(self.dtype))

    def decode_chunk(self, x: torch.Tensor, cache: Optional[FeatureCache]) -> torch.Tensor:
        """One latent frame of decoder input -> pixels [B, 3, 1 or 4, 16h, 16w] (unclamped)."""
        return unpatchify(self.decoder(x, cache))

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: Optional[torch.dtype] = None,
                        device: Optional[Union[str, torch.device]] = None,
                        config: Optional[VAE22Config] = None) -> "WanVAE22":
        """Load ``Wan2.2_VAE.pth`` (or any .pth / .safetensors with official or diffusers names), a folder
        holding it, a diffusers ``vae/`` folder (``is_residual: true``) or a diffusers root with ``vae/``.
        Config: ``config``, else the diffusers config.json, else ``vae_config.json`` beside the official
        file, else the published one. A Wan 2.1 VAE is refused with an error naming WanVAE."""
        return vae_io.load_pretrained(cls, path, dtype=dtype, device=device, config=config)

    def save_pretrained(self, path: str | os.PathLike, layout: str = "official") -> Path:
        """``official``: ``Wan2.2_VAE.pth`` (+ ``vae_config.json`` for a non-published config);
        ``diffusers``: ``config.json`` (AutoencoderKLWan, is_residual) + ``diffusion_pytorch_model.safetensors``."""
        return vae_io.save_pretrained(self, path, layout)

    @staticmethod
    def diffusers_key_map(config: VAE22Config) -> dict[str, str]:
        """official name -> diffusers AutoencoderKLWan (is_residual) name for every parameter."""
        with torch.device("meta"):
            keys = list(WanVAE22(config).state_dict())
        return vae_io.key_map_22(keys, config)
