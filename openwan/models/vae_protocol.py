"""What a pipeline may rely on from a video VAE (Wan 2.1's :class:`~openwan.models.vae.WanVAE` and Wan 2.2's
:class:`~openwan.models.vae22.WanVAE22` both implement it), and the size rules derived from it.

Pipelines get a VAE from :func:`openwan.models.vaes.load_vae` (the class is picked from the files) and
then use only the members below: the latent shape of a video is
``(z_dim, 1 + (F - 1) // temporal_ratio, H // spatial_ratio, W // spatial_ratio)``, and pixel sizes must be
multiples of :func:`size_multiple` (the VAE's spatial ratio times the DiT's spatial patch: 8 x 2 = 16 for
Wan 2.1, 16 x 2 = 32 for Wan 2.2 TI2V).
"""
from __future__ import annotations

import math
from typing import Iterable, Iterator, Optional, Protocol, Sequence, Union, runtime_checkable

import torch

TileArg = Union[None, bool, int, Sequence[int]]


@runtime_checkable
class VideoVAE(Protocol):
    """A causal video VAE: [B, 3, 1 + r n, H, W] in [-1, 1] <-> normalized latent [B, z, 1 + n, H/s, W/s]."""

    z_dim: int              # latent channels (16 for Wan 2.1, 48 for Wan 2.2)
    spatial_ratio: int      # s: pixels per latent cell per side (8, 16)
    temporal_ratio: int     # r: frames per latent frame after the first (4)

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def encode(self, video, tile: TileArg = None, overlap: TileArg = None) -> torch.Tensor:
        """A video tensor or an iterable of frame pieces -> normalized latent (fp32)."""

    def encode_stream(self, frames: Iterable[torch.Tensor], tile: TileArg = None,
                      overlap: TileArg = None) -> Iterator[torch.Tensor]:
        """Frames as they arrive -> latent frames as soon as they are complete."""

    def decode(self, latent: torch.Tensor, tile: TileArg = None, overlap: TileArg = None) -> torch.Tensor:
        """Normalized latent -> video clamped to [-1, 1] in the model dtype."""

    def decode_stream(self, latent: torch.Tensor, tile: TileArg = None,
                      overlap: TileArg = None) -> Iterator[torch.Tensor]:
        """Pixel chunks (1 frame, then r frames per latent frame); concatenated they equal decode()."""

    def num_frames(self, latent_frames: int) -> int:
        """Pixel frames decoded from ``latent_frames``: 1 + r (T - 1)."""

    def save_pretrained(self, path, layout: str = "official"):
        """Write the weights in the official or the diffusers layout."""


def size_multiple(vae_or_ratio: Union[VideoVAE, int], patch_size: Union[int, Sequence[int]] = 2) -> int:
    """The multiple every pixel height and width must have: the VAE's spatial ratio times the DiT's
    spatial patch (``patch_size`` an int or the DiT's (t, h, w) patch; h and w combined by their lcm)."""
    ratio = vae_or_ratio if isinstance(vae_or_ratio, int) else vae_or_ratio.spatial_ratio
    if isinstance(patch_size, int):
        patch = patch_size
    else:
        p = tuple(patch_size)
        patch = math.lcm(*p[-2:]) if len(p) >= 2 else p[0]
    return ratio * patch


def check_size(width: int, height: int, multiple: int, what: Optional[str] = None) -> None:
    """ValueError naming the nearest valid sizes unless width and height are positive multiples."""
    if width % multiple or height % multiple or width <= 0 or height <= 0:
        def near(v):
            lo = max(multiple, v // multiple * multiple)
            return f"{lo}" if lo >= v else f"{lo} or {lo + multiple}"
        raise ValueError(f"size {width}*{height}: width and height must be positive multiples of {multiple}"
                         f"{' for ' + what if what else ''} (width {near(width)}, height {near(height)})")


def latent_shape(vae: VideoVAE, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(z, T, h, w) of the latent of a ``frames`` x ``height`` x ``width`` video."""
    s, r = vae.spatial_ratio, vae.temporal_ratio
    if frames < 1 or (frames - 1) % r:
        raise ValueError(f"{frames} frames is not {r}n+1")
    return vae.z_dim, 1 + (frames - 1) // r, height // s, width // s


def latent_cells(pixels: torch.Tensor, temporal: int, spatial: int) -> torch.Tensor:
    """bool [T', h, w]: the latent cells any of whose pixels is set in ``pixels`` (bool [F, H, W], F = 1 +
    temporal * (T' - 1)): frame 0 alone for latent frame 0, frames 1 + temporal * (t - 1) .. temporal * t for latent
    frame t (the causal VAE's grouping), each spatial x spatial block of pixels one cell."""
    groups = [pixels[:1]] + [pixels[1 + temporal * t: 1 + temporal * (t + 1)]
                             for t in range((pixels.shape[0] - 1) // temporal)]
    per = torch.stack([g.any(0) for g in groups]).float()                                # [T', H, W]
    return torch.nn.functional.max_pool2d(per[None], spatial)[0] > 0
