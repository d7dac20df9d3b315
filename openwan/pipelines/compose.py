"""Scenes composed of objects drawn one at a time: each object's phrase is its own denoising run of the model (one
latent each, from its own seed, decoded), and the objects are laid out apart and merged into one video. For a world
of objects over a plain background (the embedded demo), where the model draws one object of its prompt's words
nearly always right and binding two objects' words in one run is what it gets wrong.

The layout works per latent token (one token: one VAE cell, 8x8 pixels of 1 or 4 frames):

* An object's tokens are found in its run's decoded frames: the pixels that differ from the frame's background (its
  median color) by at least :data:`CONTRAST` levels (uint8 RGB distance), pooled onto the token grid
  (:func:`object_tokens`). (The latent's own distance from its background is a poor guide: no threshold on it
  both keeps an object's anti-aliased edge and leaves the background's noise out.)
* The first object stays where its run drew it. Each later one is moved by whole tokens (:func:`placement`) to the
  nearest place where, in every latent frame, it keeps :data:`GAP` tokens to the objects already placed and stays
  inside the frame: the world's own rule (its two objects never touch). An object that fits nowhere goes where it
  overlaps least.
* The video is the runs' decoded frames merged in pixels (:func:`compose_frames`): each later run's frames moved
  by its move, an earlier object's pixels in front, elsewhere the pixel that stands out more from its own
  background (an object's anti-aliased edge). Nothing is decoded again.
* The latent (``output_type="latent"``) is merged the same way per token (:func:`compose`): the first run's, each
  later object's tokens from its moved latent, in the token around them the latent that stands out more, an
  earlier object in front.

:func:`run_composed` runs a job's parts (``Job.parts``) and merges them; :func:`part_seed` gives each part's seed.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from openwan.models.vae_protocol import latent_cells
from openwan.pipelines.job import add_stats

CONTRAST = 40.0     # uint8 RGB distance from the background at or above which a pixel is an object's
GAP = 1             # tokens kept free around each placed object


def part_seed(seed: int, k: int) -> int:
    """The seed of a composed call's part ``k``: the call's own for the first, a fixed derivation for the others
    (so the same call draws the same scene)."""
    return seed if k == 0 else (seed * 6364136223846793005 + 1442695040888963407 * k) % 2**31


def object_tokens(frames: np.ndarray, temporal_ratio: int, spatial_ratio: int) -> torch.Tensor:
    """bool [F, h, w]: the latent tokens whose pixels (uint8 ``frames`` [T, H, W, 3], T = 1 + temporal_ratio *
    (F - 1)) show an object: a pixel differing from its frame's median color by >= :data:`CONTRAST`."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float()
    background = x.flatten(1, 2).median(dim=1).values[:, None, None]
    return latent_cells((x - background).norm(dim=-1) >= CONTRAST, temporal_ratio, spatial_ratio)


def _grow(mask: torch.Tensor, by: int) -> torch.Tensor:
    if by <= 0:
        return mask
    return F.max_pool2d(mask[:, None].float(), 2 * by + 1, stride=1, padding=by)[:, 0] > 0


def placement(occupied: torch.Tensor, mask: torch.Tensor) -> tuple[int, int]:
    """(dy, dx) in tokens: the smallest move of an object of ``mask`` [F, h, w] that keeps it inside the frame in
    every latent frame and :data:`GAP` tokens from ``occupied`` [F, h, w]; where none is free, the move that
    overlaps ``occupied`` least (then the one nearest to a gap, then the smallest); (0, 0) when nothing is
    occupied."""
    if not occupied.any() or not mask.any():
        return 0, 0
    h, w = mask.shape[1:]
    rows, cols = mask.any(dim=(0, 2)).nonzero()[:, 0], mask.any(dim=(0, 1)).nonzero()[:, 0]
    blocked = _grow(occupied, GAP).float()
    best = None
    for dy in range(-int(rows[0]), h - int(rows[-1])):
        for dx in range(-int(cols[0]), w - int(cols[-1])):
            moved = torch.roll(mask, (dy, dx), dims=(1, 2)).float()
            near = float((moved * blocked).sum())
            key = (near > 0, float((moved * occupied).sum()), near, abs(dy) + abs(dx), abs(dy), dy, dx)
            if best is None or key < best:
                best = key
    return best[5], best[6]


def _standout(z: torch.Tensor) -> torch.Tensor:
    """[F, h, w]: each token's distance from its latent's background (each channel's median per latent frame)."""
    background = z.flatten(2).median(dim=2).values[..., None, None]
    return (z.float() - background.float()).norm(dim=0)


def compose(latents: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], move: bool = True) -> tuple[torch.Tensor,
                                                                                                           list]:
    """One latent [C, F, h, w] from the parts' ``latents`` and their objects' token ``masks`` (:func:`object_tokens`),
    as the module docstring says, and each part's move (dy, dx) in tokens (none with ``move=False``: image-to-video,
    whose picture placed each object). Where a later object lands on an earlier one (no free place), the earlier
    is drawn in front; in the token around a later object (its edge) the part whose latent stands out more from its
    own background is taken."""
    out, standout = latents[0].clone(), _standout(latents[0])
    occupied = masks[0]
    moves = [(0, 0)]
    for z, mask in zip(latents[1:], masks[1:]):
        dy, dx = placement(occupied, mask) if move else (0, 0)
        z, mask = torch.roll(z, (dy, dx), dims=(2, 3)), torch.roll(mask, (dy, dx), dims=(1, 2))
        z_standout = _standout(z)
        core = mask & ~occupied
        edge = _grow(mask, 1) & ~mask & ~occupied & (z_standout > standout)
        take = core | edge
        out = torch.where(take[None], z, out)
        standout = torch.where(take, z_standout, standout)
        occupied = occupied | mask
        moves.append((dy, dx))
    return out, moves


def _contrast(frames: np.ndarray) -> np.ndarray:
    """float32 [T, H, W]: each pixel's distance (uint8 RGB levels) from its frame's background (median color)."""
    x = frames.astype(np.float32)
    background = np.median(x.reshape(len(x), -1, 3), axis=1)[:, None, None]
    return np.linalg.norm(x - background, axis=-1)


def compose_frames(videos: Sequence[np.ndarray], moves: Sequence[tuple], spatial_ratio: int) -> np.ndarray:
    """uint8 [T, H, W, 3]: the parts' decoded ``videos`` merged in pixels, each moved by its ``moves`` (tokens of
    ``spatial_ratio`` pixels; :func:`compose`'s): a pixel of an earlier part's object (:data:`CONTRAST` from its
    background) stays in front, and elsewhere each pixel is the part's whose pixel stands out more from its own
    background (an object's anti-aliased edge over the other's plain background)."""
    out = videos[0].copy()
    contrast = _contrast(out)
    front = contrast >= CONTRAST
    for video, (dy, dx) in zip(videos[1:], moves[1:]):
        video = np.roll(video, (dy * spatial_ratio, dx * spatial_ratio), axis=(1, 2))
        c = _contrast(video)
        take = (c > contrast) & ~front
        out[take] = video[take]
        contrast = np.where(take, c, contrast)
        front |= c >= CONTRAST
    return out


def run_composed(pipe, job, on_step: Optional[Callable] = None, cancelled: Optional[Callable] = None):
    """The clean latent of a composed job: each of ``job.parts`` (jobs of their own: one object's phrase, its seed)
    run by ``pipe.run`` and decoded to find its object (:func:`object_tokens`), merged by :func:`compose`; the
    video itself merged in pixels from the decoded parts (:func:`compose_frames`) into ``job.pixels``, which is
    written instead of decoding the merged latent (``output_type="latent"`` gives that latent).
    ``on_step`` sees the steps of all parts in one count; the job's stats get the parts' summed and its settings
    each part's move and whether it stands apart (a token's gap from the others)."""
    latents, masks, videos = [], [], []
    vae = pipe.vae
    n_parts = len(job.parts)
    for k, part in enumerate(job.parts):
        hook = None
        if on_step is not None:
            def hook(step, x, x0, k=k):
                return on_step(dataclasses.replace(step, i=k * step.n + step.i, n=n_parts * step.n), x, x0)
        latents.append(pipe.run(part, hook, cancelled))
        videos.append(np.concatenate(list(pipe.decode_frames(latents[-1], part.stats))))
        masks.append(object_tokens(videos[-1], vae.temporal_ratio, vae.spatial_ratio))
        add_stats(job.stats, part.stats)
    out, moves = compose(latents, masks, move=not job.keep_places)
    job.pixels = compose_frames(videos, moves, vae.spatial_ratio)
    occupied = masks[0]
    for k, (rec, move) in enumerate(zip(job.settings["composed"], moves)):
        rec["moved_tokens"] = list(move)
        if k:
            moved = torch.roll(masks[k], move, dims=(1, 2))
            rec["apart"] = not bool((moved & _grow(occupied, GAP)).any())
            occupied = occupied | moved
    return out
