"""The flow-matching training objective of Wan 2.1, and how its noise levels are drawn.

    x0 (clean latent) , eps ~ N(0, I) , sigma ~ p(sigma) in (0, 1)
    x_t    = (1 - sigma) * x0 + sigma * eps              (the sampler's forward process)
    t      = min(floor(sigma * 1000), 999)               (the integer timestep the model is fed)
    target = eps - x0                                    (the flow the DiT predicts)
    loss   = mean over samples of mean((model(x_t, t, context) - target)^2)

The noise level distribution p(sigma) is configurable (:class:`TimestepSampling`):

* ``uniform``: sigma = u, u ~ U(0, 1);
* ``logit_normal``: sigma = sigmoid(n), n ~ N(mean, std) (SD3's choice; more weight mid-range);
* either one followed by the time ``shift`` s: sigma' = s*sigma / (1 + (s-1)*sigma) (s > 1 puts more
  samples at high noise, as the sampler's shifted grid does). ``shift`` (or ``shifted``) as the
  distribution name means uniform + shift.

Reproducibility: the noise and sigma of every sample come from a generator seeded by
(seed, step, index of the sample among the step's samples) (:func:`sample_seed`), so they do not
depend on how a step's samples are split over processes and micro-batches, or on where a run was
resumed.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

NUM_TRAIN_TIMESTEPS = 1000

TensorOrList = Union[torch.Tensor, Sequence[torch.Tensor]]


# ----------------------------------------------------------------------------- noise levels

@dataclass(frozen=True)
class TimestepSampling:
    """How training noise levels sigma are drawn (see the module docstring)."""
    distribution: str = "uniform"   # uniform | logit_normal | shift (= uniform + shift)
    shift: float = 1.0
    mean: float = 0.0               # logit_normal only
    std: float = 1.0                # logit_normal only
    sigma_min: float = 0.0          # the distribution truncated to [sigma_min, sigma_max) (after the shift),
    sigma_max: float = 1.0          # e.g. a Wan 2.2 A14B expert's noise range (training/experts.py)

    def __post_init__(self):
        dist = self.distribution.replace("-", "_").lower()
        if dist in ("shift", "shifted"):
            dist = "uniform"
        if dist not in ("uniform", "logit_normal"):
            raise ValueError(f"timestep distribution must be 'uniform', 'shift' or 'logit_normal', "
                             f"got {self.distribution!r}")
        object.__setattr__(self, "distribution", dist)
        if not (math.isfinite(self.shift) and self.shift > 0):
            raise ValueError(f"timestep shift must be a positive number (1 = no shift), got {self.shift!r}")
        if not (math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"logit_normal std must be positive, got {self.std!r}")
        if not (0.0 <= self.sigma_min < self.sigma_max <= 1.0):
            raise ValueError(f"timesteps sigma_min / sigma_max must satisfy 0 <= min < max <= 1, got "
                             f"{self.sigma_min!r} / {self.sigma_max!r}")

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "TimestepSampling":
        d = dict(d or {})
        if "type" in d and "distribution" not in d:
            d["distribution"] = d.pop("type")
        unknown = sorted(set(d) - {"distribution", "shift", "mean", "std", "sigma_min", "sigma_max"})
        if unknown:
            raise ValueError(f"unknown timestep sampling fields {unknown}; use distribution, shift, mean, std, "
                             f"sigma_min, sigma_max")
        return cls(**d)

    def _unshift(self, sigma: float) -> float:
        """The pre-shift value that the shift maps to ``sigma`` (the shift's inverse)."""
        return sigma / (self.shift - (self.shift - 1) * sigma)

    def _cdf(self, sigma: float) -> float:
        """P(drawn sigma < ``sigma``) under the whole distribution."""
        u = self._unshift(sigma)
        if self.distribution == "uniform":
            return u
        if u <= 0.0 or u >= 1.0:
            return float(u >= 1.0)
        z = (math.log(u / (1 - u)) - self.mean) / self.std
        return 0.5 * math.erfc(-z / math.sqrt(2))

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n noise levels in (0, 1), float64 on the CPU; within [sigma_min, sigma_max) when a range is set (the
        distribution truncated: one uniform draw per sample, through the inverse of its CDF)."""
        truncated = (self.sigma_min, self.sigma_max) != (0.0, 1.0)
        if truncated:               # a standard normal (logit_normal) or uniform draw restricted to the range
            lo, hi = self._cdf(self.sigma_min), self._cdf(self.sigma_max)
            q = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
            draw = q if self.distribution == "uniform" else torch.special.ndtri(q)
        elif self.distribution == "uniform":
            draw = torch.rand(n, generator=generator, dtype=torch.float64)
        else:
            draw = torch.randn(n, generator=generator, dtype=torch.float64)
        sigma = draw if self.distribution == "uniform" else torch.sigmoid(draw * self.std + self.mean)
        if self.shift != 1.0:
            sigma = self.shift * sigma / (1 + (self.shift - 1) * sigma)
        return sigma.clamp(self.sigma_min, math.nextafter(self.sigma_max, 0.0)) if truncated else sigma


def sigma_to_timestep(sigma: torch.Tensor) -> torch.Tensor:
    """Integer model timestep int64(floor(sigma * 1000)), clamped to [0, 999] (as the sampler feeds it)."""
    t = torch.floor(sigma.to(torch.float64) * NUM_TRAIN_TIMESTEPS).to(torch.int64)
    return t.clamp_(0, NUM_TRAIN_TIMESTEPS - 1)


def sample_seed(*parts: int) -> int:
    """A 63-bit seed mixing the given integers (stable across runs, platforms and processes)."""
    h = hashlib.sha256(":".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2 ** 63 - 1)


def draw_noise(shapes: Sequence[torch.Size], seeds: Sequence[int], sampling: TimestepSampling):
    """Per-sample (noise [shape], sigma) pairs, each from its own seeded CPU generator."""
    noises, sigmas = [], []
    for shape, seed in zip(shapes, seeds):
        g = torch.Generator().manual_seed(int(seed))
        sigmas.append(sampling.sample(1, g)[0])
        noises.append(torch.randn(tuple(shape), generator=g, dtype=torch.float32))
    return noises, torch.stack(sigmas)


# ----------------------------------------------------------------------------- the loss

def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(1 - sigma) x0 + sigma eps (openwan.sampling.add_noise when present); sigma a 0-d tensor or
    one value per batch item, applied in x0's dtype."""
    try:
        from openwan.sampling import add_noise as _add_noise
    except ImportError:  # the sampling module is optional for training
        s = sigma.reshape(-1, *([1] * (x0.ndim - 1))) if sigma.ndim else sigma
        s = s.to(x0.dtype)
        return (1 - s) * x0 + s * noise
    return _add_noise(x0, noise, sigma)


def flow_matching_loss(model: Callable, x0: TensorOrList, context: TensorOrList, noise: TensorOrList,
                       sigma: torch.Tensor, **model_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """The flow-matching MSE for one batch.

    x0: [B, C, F, H, W] clean latents (or a list of [C, F_i, H_i, W_i]); context: [B, L, D] or a list
    of [L_i, D]; noise: like x0; sigma: [B] in [0, 1]. Extra keyword arguments (y, clip_fea, ...)
    go to the model. Returns (loss: mean over samples of each sample's mean squared error,
    per_sample: [B] detached).
    """
    xs, ns = list(x0), list(noise)
    if len(xs) != len(ns) or len(xs) != sigma.numel():
        raise ValueError(f"batch sizes differ: {len(xs)} latents, {len(ns)} noises, {sigma.numel()} sigmas")
    device = xs[0].device
    sigma = sigma.to(device)
    x_t = [add_noise(u.float(), n.to(device).float(), s) for u, n, s in zip(xs, ns, sigma)]
    target = [n.to(device).float() - u.float() for u, n in zip(xs, ns)]
    t = sigma_to_timestep(sigma).to(device)
    if torch.is_tensor(x0):
        pred = model(torch.stack(x_t), t, context, **model_kwargs)
        per_sample = (pred.float() - torch.stack(target)).pow(2).flatten(1).mean(1)
    else:
        pred = model(x_t, t, context, **model_kwargs)
        per_sample = torch.stack([(p.float() - g).pow(2).mean() for p, g in zip(pred, target)])
    return per_sample.mean(), per_sample.detach()
