"""Wan-VAE: the 3D causal video autoencoder of Wan 2.1 (paper section 3.1).

The VAE maps a video ``[B, 3, 1 + 4n, H, W]`` in ``[-1, 1]`` to a latent ``[B, 16, 1 + n, H/8, W/8]``
and back. It reads top to bottom like the paper's figure:

* **Building blocks** (:mod:`openwan.models.vae_layers`, shared with the Wan 2.2 VAE) --
  :class:`CausalConv3d`, :class:`RMSNorm`, :class:`ResidualBlock`, :class:`AttentionBlock`,
  :class:`Resample`, and the :class:`FeatureCache`: video is processed in temporal chunks (encoder:
  frame 0 alone, then 4 frames at a time; decoder: one latent frame at a time) and every cached causal
  conv remembers the last 2 frames of its input, so memory is independent of the video length. The
  chunking is exactly the reference's, so results match the reference ``WanVAE`` and diffusers'
  ``AutoencoderKLWan`` to float rounding.
* **Encoder3d / Decoder3d** (here) -- conv1, a stack of residual blocks and resamplers (``downsamples``
  / ``upsamples``, one flat list per side), a middle block (res, attention, res) and a head (norm,
  SiLU, conv).
* **WanVAE** (here) -- encoder, ``conv1`` (to mu / log-variance), ``conv2`` (latent in), decoder; plus
  the per-channel latent normalization ``z = (mu - mean) / std``. It supplies the four chunk hooks of
  :class:`~openwan.models.vae_stream.ChunkedVAE`, which gives the public API: ``encode``, ``decode``,
  ``encode_stream``, ``decode_stream``, spatial tiling through ``tile=``.

Parameter names are the official ones (``Wan2.1_VAE.pth``). Checkpoint reading/writing and the
official <-> diffusers key map live in :mod:`openwan.models.vae_io`; :meth:`WanVAE.from_pretrained` /
:meth:`WanVAE.save_pretrained` and the functions below wrap them. ``openwan.models.vaes.load_vae``
picks between this class and the Wan 2.2 VAE from the files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from openwan.checkpoints import CheckpointError
from openwan.configs import VAEConfig
from openwan.models import vae_io
from openwan.models.vae_io import CONFIG_FILE, DIFFUSERS_WEIGHTS  # noqa: F401 - re-exported
from openwan.models.vae_layers import (CACHE_T, AttentionBlock, check_config, CausalConv3d, FeatureCache,  # noqa: F401
                                       Resample, ResidualBlock, RMSNorm, SiLU, Upsample2x, cached_conv,
                                       padded_activation, run_layers)
from openwan.models.vae_stream import (DEFAULT_TILE, ChunkedVAE, TileArg, _axis_tiles,  # noqa: F401
                                       _axis_weights, _nearest, _tile_sizes, _TilePlan)

OFFICIAL_FILE = vae_io.OFFICIAL_FILES["2.1"]
_run = run_layers


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
        return run_layers([self.conv1, *self.downsamples, *self.middle, *self.head], x, cache)


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
        return run_layers([self.conv1, *self.middle, *self.upsamples, *self.head], x, cache)


# ============================================================================ the VAE

class WanVAE(ChunkedVAE):
    """The Wan 2.1 VAE with official parameter names. See the module docstring for the layout.

    Numerics: ``encode`` / ``decode`` chunk the video exactly like the reference (frame 0 alone then 4
    frames per chunk; one latent frame per decoder step), so fp32 results match the reference and
    diffusers to float rounding. Norms and the nearest upsampling run in fp32 in every dtype.
    """

    version = "2.1"
    config_class = VAEConfig
    official_file = OFFICIAL_FILE

    def __init__(self, config: VAEConfig = VAEConfig()):
        super().__init__()
        dim_mult, tdown = check_config(config)
        self.config = config
        self.z_dim = config.z_dim
        self.spatial_ratio = 2 ** (len(dim_mult) - 1)
        self.temporal_ratio = 2 ** sum(tdown)
        attn = tuple(config.attn_scales)
        self.encoder = Encoder3d(config.dim, config.z_dim * 2, dim_mult, config.num_res_blocks, attn, tdown)
        self.conv1 = CausalConv3d(config.z_dim * 2, config.z_dim * 2, 1)
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, 1)
        self.decoder = Decoder3d(config.dim, config.z_dim, dim_mult, config.num_res_blocks, attn, tdown[::-1])

    # ------------------------------------------------------------------ the chunk hooks
    def encode_chunk(self, x: torch.Tensor, cache: Optional[FeatureCache]) -> torch.Tensor:
        """Pixels of one chunk [B, 3, n, H, W] -> encoder features [B, 2z, n', H/8, W/8]."""
        return self.encoder(x, cache)

    def latent_from_features(self, h: torch.Tensor) -> torch.Tensor:
        """conv1, keep mu, normalize: ``(mu - mean) * (1/std)`` in fp32."""
        return self._normalize(self.conv1(h)[:, :self.z_dim])

    def decoder_input(self, latent: torch.Tensor) -> torch.Tensor:
        """Undo the normalization (z / (1/std) + mean, as the reference) and apply conv2."""
        return self.conv2(self._denormalize(latent).to(self.dtype))

    def decode_chunk(self, x: torch.Tensor, cache: Optional[FeatureCache]) -> torch.Tensor:
        """One latent frame of decoder input -> pixels [B, 3, 1 or 4, 8h, 8w] (unclamped)."""
        return self.decoder(x, cache)

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
        checked strictly (CheckpointError listing every problem). ``dtype`` defaults to float32. A Wan
        2.2 VAE is refused with an error naming :class:`~openwan.models.vae22.WanVAE22`.
        """
        return vae_io.load_pretrained(cls, path, dtype=dtype, device=device, config=config)

    def save_pretrained(self, path: str | os.PathLike, layout: str = "official") -> Path:
        """Write the weights (atomically) into directory ``path``; returns the weights file.

        ``official``: ``Wan2.1_VAE.pth`` (+ ``vae_config.json`` when the config is not the published one).
        ``diffusers``: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (AutoencoderKLWan names).
        """
        return vae_io.save_pretrained(self, path, layout)

    @staticmethod
    def diffusers_key_map(config: VAEConfig) -> dict[str, str]:
        return diffusers_key_map(config)


# ============================================================================ official <-> diffusers keys

def diffusers_key_map(config: VAEConfig) -> dict[str, str]:
    """official name -> diffusers name for every parameter of ``WanVAE(config)``."""
    with torch.device("meta"):
        keys = list(WanVAE(config).state_dict())
    return vae_io.key_map_21(keys, config)


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
