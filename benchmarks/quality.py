"""Video fidelity metrics for comparing two renderings of the same video (uint8 [F, H, W, 3]).

PSNR over the whole clip, ``10 log10(255^2 / MSE)`` (inf for identical clips), and SSIM (Wang et al.
2004) with the usual 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, computed per frame
and channel on the valid region (no padding) and averaged.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: np.ndarray, b: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    x = torch.from_numpy(a.astype(np.float64)).reshape(-1, *a.shape[-3:]).permute(0, 3, 1, 2)
    y = torch.from_numpy(b.astype(np.float64)).reshape(-1, *b.shape[-3:]).permute(0, 3, 1, 2)
    x, y = x.reshape(-1, 1, *x.shape[2:]), y.reshape(-1, 1, *y.shape[2:])   # every frame and channel apart
    size = min(size, x.shape[-1], x.shape[-2])
    w = _window(size, sigma)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    vx = F.conv2d(x * x, w) - mx ** 2
    vy = F.conv2d(y * y, w) - my ** 2
    cxy = F.conv2d(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(s.mean())
