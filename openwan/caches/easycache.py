"""EasyCache: skip whole guided model calls whose output can be predicted from the last computed one.

    pipe("a red circle", step_cache="easycache:0.1")

**EasyCache** (Zhou et al. 2025, "EasyCache: Training-Free Video Diffusion Acceleration
via Runtime-Adaptive Caching"), chosen because it needs no calibration data (TeaCache fits a polynomial
per model, MagCache a magnitude-ratio curve per model) and looks only at the model call's input and output,
so it wraps the whole guided call (:class:`openwan.denoiser.Denoiser`) without touching the DiT: it works for
every task, with CFG batched or not, and under sequence parallel (every process sees the same gathered
output, so every process makes the same decision).

The rule, per step j with input x_j (the sampler's sample) and output v_j (the guided velocity):

* The first 20% of the steps (``warmup``; at least 2) and the last step are always computed.
* After two computed steps c' < c the *transformation rate* is
  ``k = mean|v_c - v_c'| / mean|x_c - x_c'|`` (how much the output moves per unit of input movement; the
  paper observes it is stable along the trajectory), and the cached *transformation* is ``D = v_c - x_c``.
* At a later step j the output's relative change is estimated as
  ``eps_j = k * mean|x_j - x_{j-1}| / mean|v_{j-1}|`` (v_{j-1} computed or reused) and accumulated since the
  last computed step: ``E += eps_j``. If ``E < threshold`` the step is skipped with ``v_j = x_j + D``;
  otherwise it is computed, ``k`` and ``D`` are refreshed and ``E`` is reset to 0.

Skipped steps count the DiT passes they saved in ``stats["dit_forwards_skipped"]`` (one per step with
batched CFG). The quality/speed curve on the demo model is in docs/performance.md
(``python benchmarks/step_cache.py``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from openwan.denoiser import Step, Wrapper

__all__ = ["EasyCache"]


def _mean_abs(x: torch.Tensor) -> float:
    return x.abs().mean().item()


class EasyCache(Wrapper):
    """EasyCache over a denoiser (see the module docstring for the rule).

    ``threshold``: the accumulated relative-change budget between computed steps (0 computes every step);
    ``warmup``: fraction of the steps always computed at the start (at least 2, so ``k`` exists).
    ``decisions`` records, per step, True when it was computed.
    """

    def __init__(self, inner, threshold: float, warmup: float = 0.2):
        super().__init__(inner)
        self.threshold = float(threshold)
        self.warmup = warmup
        self.decisions: list[bool] = []
        self._k: Optional[float] = None
        self._delta: Optional[torch.Tensor] = None
        self._computed: Optional[tuple[torch.Tensor, torch.Tensor]] = None   # (x_c, v_c) of the last compute
        self._prev: Optional[tuple[torch.Tensor, torch.Tensor]] = None       # (x_{j-1}, v_{j-1})
        self._acc = 0.0

    # a stopped run goes on (openwan.pipelines.resume): from before a step that computed
    def restartable(self) -> bool:
        """Whether the last step was computed. A fresh cache started at that step computes it too (it has no rate
        yet) and, given :meth:`resume_state` of before it (the last computed step's input and output, which the rate
        is refreshed from), then holds what this one holds."""
        return bool(self.decisions) and self.decisions[-1]

    def resume_state(self) -> dict:
        """The cache's state a computed step reads: the last computed step's (x, v), as CPU copies."""
        return {"computed": None if self._computed is None else [t.detach().cpu().clone() for t in self._computed]}

    def load_resume_state(self, state: dict, device) -> None:
        computed = state.get("computed")
        self._computed = None if computed is None else tuple(t.to(device) for t in computed)

    def warmup_steps(self, n: int) -> int:
        return max(2, math.ceil(self.warmup * n))

    def _skip(self, x: torch.Tensor, step: Step) -> bool:
        if step.i < self.warmup_steps(step.n) or step.i == step.n - 1 or self._k is None or self._prev is None:
            return False
        x_prev, v_prev = self._prev
        eps = self._k * _mean_abs(x.float() - x_prev) / max(_mean_abs(v_prev), 1e-12)
        self._acc += eps
        return self._acc < self.threshold

    def __call__(self, x: torch.Tensor, step: Step) -> torch.Tensor:
        x32 = x.float()
        if self._skip(x, step):
            v = x32 + self._delta
            at = getattr(self, "passes_at", None)          # a guidance interval: this step's passes
            self.stats["dit_forwards_skipped"] += self.passes if at is None else at(step)
            self.decisions.append(False)
        else:
            v = self.inner(x, step)
            if self._computed is not None:
                xc, vc = self._computed
                self._k = _mean_abs(v - vc) / max(_mean_abs(x32 - xc), 1e-12)
            self._delta = v - x32
            self._computed = (x32, v)
            self._acc = 0.0
            self.decisions.append(True)
        self._prev = (x32, v)
        return v
