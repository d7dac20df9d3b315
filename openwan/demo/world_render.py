"""Rendering the demo world's clips: a :class:`~openwan.demo.world_scene.Clip` to uint8 frames (supersampled for
anti-aliasing, at any size and length), and frames to and from the float tensors models take.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from openwan.demo.world_scene import COLORS, SHAPES, Clip


def _hw(size) -> tuple:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"size must be an int or (height, width), got {size!r}") from None
    if h < 8 or w < 8:
        raise ValueError(f"frames must be at least 8x8 pixels, got {h}x{w}")
    return h, w


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Whether offsets (dx, dy) from the center (units of the shorter side) fall inside the shape of size r."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= r
    if shape == "triangle":             # apex at the top, base at the bottom: height 2r, base 2r
        return (dy <= r) & (2.0 * np.abs(dx) <= dy + r)
    raise ValueError(f"unknown shape {shape!r}; this world knows {list(SHAPES)}")


def render_clip(clip: Clip, size=64, frames: int = 17, supersample: int = 4,
                native_frames: Optional[int] = None) -> np.ndarray:
    """The clip's video as uint8 [frames, H, W, 3]; frame k shows time t = k / (frames - 1), or with
    ``native_frames`` t = k / (native_frames - 1): a video of any length at the clip's own speed (the looping
    motions go on; a classic motion goes on in a straight line past t = 1, so it may leave the frame)."""
    h, w = _hw(size)
    if int(frames) < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if int(supersample) < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    if native_frames is not None and int(native_frames) < 2:
        raise ValueError(f"native_frames must be >= 2, got {native_frames}")
    f, ss = int(frames), int(supersample)
    if native_frames is not None:
        t = np.arange(f) / (int(native_frames) - 1)
    else:
        t = np.linspace(0.0, 1.0, f) if f > 1 else np.zeros(1)
    m = float(min(h, w))
    ys = (np.arange(h * ss) + 0.5) / (h * ss)       # sample positions, fractions of the frame
    xs = (np.arange(w * ss) + 0.5) / (w * ss)
    img = np.broadcast_to(np.asarray(clip.background, np.float32), (f, h, w, 3)).copy()
    for obj in clip.objects:
        cx, cy = obj.center(t)
        r = obj.radius(t)[:, None, None]
        dx = (xs[None, None, :] - cx[:, None, None]) * (w / m)
        dy = (ys[None, :, None] - cy[:, None, None]) * (h / m)
        cover = _inside(obj.shape, dx, dy, r).reshape(f, h, ss, w, ss).mean(axis=(2, 4), dtype=np.float32)
        color = np.asarray(COLORS[obj.color], np.float32)
        img += cover[..., None] * (color - img)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def to_tensor(frames: np.ndarray):
    """uint8 [F, H, W, 3] -> float32 torch tensor [3, F, H, W] in [-1, 1]."""
    import torch
    a = np.asarray(frames)
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [F, H, W, 3], got {a.dtype} {tuple(a.shape)}")
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(3, 0, 1, 2).float()
    return x / 127.5 - 1.0


def from_tensor(video) -> np.ndarray:
    """float [3, F, H, W] in [-1, 1] (torch tensor or numpy array) -> uint8 [F, H, W, 3]."""
    if hasattr(video, "detach"):
        video = video.detach().float().cpu().numpy()
    a = np.asarray(video, dtype=np.float32)
    if a.ndim != 4 or a.shape[0] != 3:
        raise ValueError(f"expected a video [3, F, H, W] in [-1, 1], got shape {tuple(a.shape)}")
    a = np.clip((a + 1.0) * 127.5, 0, 255)
    return np.rint(a).astype(np.uint8).transpose(1, 2, 3, 0)


def clip_tensor(clip: Clip, size=64, frames: int = 17):
    """The clip's video as a float32 torch tensor [3, F, H, W] in [-1, 1] (the training input layout)."""
    return to_tensor(render_clip(clip, size=size, frames=frames))

