"""Tiling and streaming for any chunked causal VAE (Wan 2.1 and Wan 2.2), as helpers over four hooks.

A VAE built on :class:`ChunkedVAE` provides:

* ``encode_chunk(x, cache)`` -- pixels of one temporal chunk [B, 3, n, H, W] (frame 0 alone, then
  ``temporal_ratio`` frames) -> encoder features, using and updating the :class:`FeatureCache`;
* ``latent_from_features(h)`` -- features of one or more chunks -> normalized latent (fp32);
* ``decoder_input(latent)`` -- normalized latent [B, z, T, h, w] -> the decoder's input (un-normalized
  and projected), whole;
* ``decode_chunk(x, cache)`` -- one latent frame of decoder input -> pixels [B, 3, 1 or r, H, W]
  (unclamped).

and gets the public API from here: :meth:`ChunkedVAE.encode`, :meth:`~ChunkedVAE.encode_stream`,
:meth:`~ChunkedVAE.decode`, :meth:`~ChunkedVAE.decode_stream`, each with spatial tiling through
``tile=`` / ``overlap=``, and the input checks with errors naming the nearest valid sizes. Every call
makes its own caches, so two calls (or interleaved generators) never interfere, and the chunking is the
reference's, so whole, streamed and chunked results agree.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional, Sequence, Union

import torch
import torch.nn as nn

from openwan.models.vae_layers import FeatureCache

DEFAULT_TILE = 256               # pixels, for tile=True
TileArg = Union[None, bool, int, Sequence[int]]


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


# ============================================================================ the chunked API

class ChunkedVAE(nn.Module):
    """encode / decode / streaming / tiling over the four chunk hooks (see the module docstring).

    Subclasses set ``config`` (with ``mean`` and ``std``), ``z_dim``, ``spatial_ratio``,
    ``temporal_ratio`` and have ``conv1`` (its weight gives ``dtype`` and ``device``).
    """

    z_dim: int
    spatial_ratio: int
    temporal_ratio: int

    # ------------------------------------------------------------------ hooks
    def encode_chunk(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        raise NotImplementedError

    def latent_from_features(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decoder_input(self, latent: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode_chunk(self, x: torch.Tensor, cache: FeatureCache) -> torch.Tensor:
        raise NotImplementedError

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

    def _normalize(self, mu: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self._stats(mu.device)
        return (mu.float() - mean) * inv_std

    def _denormalize(self, latent: torch.Tensor) -> torch.Tensor:
        """z / (1/std) + mean, as the reference, in fp32."""
        latent = self._check_latent(latent).to(self.device)
        mean, inv_std = self._stats(latent.device)
        return latent.float() / inv_std + mean

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
        """Pixel frames decoded from ``latent_frames`` latent frames: 1 + r (T - 1)."""
        return 1 + self.temporal_ratio * (latent_frames - 1)

    def _chunk_frames(self, index: int) -> slice:
        """Pixel frames of encoder chunk / decoder step ``index``: [0], then r at a time."""
        r = self.temporal_ratio
        return slice(0, 1) if index == 0 else slice(1 + r * (index - 1), 1 + r * index)

    # ------------------------------------------------------------------ encode
    def _encode_region(self, video: torch.Tensor) -> torch.Tensor:
        """Chunked encoder pass over a whole clip -> normalized mu (fp32). The reference's exact loop."""
        cache = FeatureCache()
        chunks = [self.encode_chunk(video[:, :, self._chunk_frames(i)], cache)
                  for i in range(1 + (video.shape[2] - 1) // self.temporal_ratio)]
        return self.latent_from_features(torch.cat(chunks, dim=2) if len(chunks) > 1 else chunks[0])

    @torch.no_grad()
    def encode(self, video, tile: TileArg = None, overlap: TileArg = None) -> torch.Tensor:
        """Video [B, 3, 1+rn, H, W] in [-1, 1] -> normalized latent [B, z, 1+n, H/s, W/s] (fp32).

        Returns mu only (no sampling), normalized as ``(mu - mean) / std`` with the config's values.
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
        """Encode frames as they arrive; yields normalized latent frames [B, z, 1, H/s, W/s] (fp32).

        ``frames`` yields [B, 3, H, W] frames or [B, 3, n, H, W] pieces in any mix. Frame 0 is encoded
        as soon as it arrives, then every r (4) frames give one latent frame; only the pending frames
        and the per-conv cache are held, so memory does not grow with the video length. The total must
        be rn+1 frames (ValueError at the end otherwise, naming the nearest valid counts). With ``tile``
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
                yield self._encode_stream_chunk(chunk, caches, plan)
                index += 1
        if total == 0:
            raise ValueError("encode_stream got no frames")
        if n_pending:
            raise ValueError(f"{total} frames is not {r}n+1 (use {_nearest(total, r, 1)} frames); "
                             f"the last {n_pending} frame(s) were not encoded")

    def _encode_stream_chunk(self, chunk: torch.Tensor, caches: list[FeatureCache], plan) -> torch.Tensor:
        if plan is None:
            return self.latent_from_features(self.encode_chunk(chunk, caches[0]))
        s = self.spatial_ratio
        b, _, _, hp, wp = chunk.shape
        out = torch.zeros(b, self.z_dim, 1, hp // s, wp // s, device=chunk.device)
        for k, cache in enumerate(caches):
            ys, xs = plan.in_slice(k, s)
            oy, ox = plan.out_slice(k)
            out[..., oy, ox] += self.latent_from_features(self.encode_chunk(chunk[..., ys, xs], cache)) \
                * plan.weights[k]
        return out / plan.weight_sum

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self, latent: torch.Tensor, tile: TileArg = None, overlap: TileArg = None) -> torch.Tensor:
        """Normalized latent [B, z, T, h, w] -> video [B, 3, 1+r(T-1), s*h, s*w] clamped to [-1, 1].

        The output has the model's dtype. ``tile`` (pixels: int, (h, w), or True for 256) decodes
        overlapping spatial tiles one after the other (each through all frames) and blends them
        linearly over ``overlap`` pixels (default tile/4), so peak memory is the output plus one
        tile's working set (caches and activations). Tiled output is NOT identical to untiled: each
        tile's convolutions are zero padded at its own borders and its middle attention sees only
        the tile, so pixels differ most within ``overlap`` of a seam and slightly elsewhere; larger
        tiles and overlaps shrink the difference, and a tile covering the frame is exact.
        """
        x = self.decoder_input(latent)
        b, _, t, h, w = x.shape
        s = self.spatial_ratio
        sizes = _tile_sizes(tile, overlap, s)
        if sizes is None:
            out = torch.empty(b, 3, self.num_frames(t), h * s, w * s, dtype=self.dtype, device=x.device)
            cache = FeatureCache()
            for i in range(t):
                out[:, :, self._chunk_frames(i)] = self.decode_chunk(x[:, :, i:i + 1], cache).clamp_(-1.0, 1.0)
            return out
        plan = _TilePlan(h, w, sizes, s, x.device)
        out = torch.zeros(b, 3, self.num_frames(t), h * s, w * s, device=x.device)
        for k in range(len(plan.tiles)):         # tile by tile: one tile's cache alive at a time
            ys, xs = plan.in_slice(k, 1)
            oy, ox = plan.out_slice(k)
            cache = FeatureCache()
            for i in range(t):
                y = self.decode_chunk(x[:, :, i:i + 1, ys, xs], cache)
                out[:, :, self._chunk_frames(i), oy, ox] += y.float() * plan.weights[k]
        return (out / plan.weight_sum).clamp_(-1.0, 1.0).to(self.dtype)

    @torch.no_grad()
    def decode_stream(self, latent: torch.Tensor, tile: TileArg = None,
                      overlap: TileArg = None) -> Iterator[torch.Tensor]:
        """Yield pixel chunks [B, 3, n, H, W] (n = 1 for the first latent frame, then r) as decoded.

        Concatenated along time they equal :meth:`decode` exactly. Memory holds one chunk plus the
        per-conv cache (2 frames per conv), independent of the number of frames. With ``tile`` every
        latent frame is decoded tile by tile (one cache per tile, so the caches together cover the whole
        frame; the transient activations are bounded by the tile) and blended like tiled :meth:`decode`.
        """
        x = self.decoder_input(latent)
        b, _, t, h, w = x.shape
        s = self.spatial_ratio
        sizes = _tile_sizes(tile, overlap, s)
        if sizes is None:
            cache = FeatureCache()
            for i in range(t):
                yield self.decode_chunk(x[:, :, i:i + 1], cache).clamp_(-1.0, 1.0)
            return
        plan = _TilePlan(h, w, sizes, s, x.device)
        caches = [FeatureCache() for _ in plan.tiles]
        for i in range(t):
            n = self._chunk_frames(i).stop - self._chunk_frames(i).start
            out = torch.zeros(b, 3, n, h * s, w * s, device=x.device)
            for k, cache in enumerate(caches):
                ys, xs = plan.in_slice(k, 1)
                oy, ox = plan.out_slice(k)
                out[..., oy, ox] += self.decode_chunk(x[:, :, i:i + 1, ys, xs], cache).float() * plan.weights[k]
            yield (out / plan.weight_sum).clamp_(-1.0, 1.0).to(self.dtype)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Reconstruction: decode(encode(video))."""
        return self.decode(self.encode(video))
