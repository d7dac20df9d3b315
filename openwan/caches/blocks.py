"""Step caches inside the DiT: a planned schedule, TeaCache, MagCache and FirstBlockCache.

    pipe("a red circle", step_cache="plan:0.5")          # half the steps reused, on a fixed even schedule
    pipe("a red circle", step_cache="magcache:0.12")     # calibrated magnitude ratios (openwan.caches.store)
    pipe("a red circle", step_cache="teacache:0.2")      # calibrated polynomial
    pipe("a red circle", step_cache="fbcache:0.1")       # no calibration

Each call still runs the DiT's :meth:`~openwan.models.dit.WanModel.embed` and
:meth:`~openwan.models.dit.WanModel.run_head` (cheap) and decides whether to run the transformer blocks or
to reuse their residual: ``blocks(x) ~= x + R`` with ``R`` = (blocks' output - blocks' input) of the last
computed call. A pass whose blocks were reused counts as ``dit_forwards_skipped`` (FirstBlockCache still
ran block 0 of it). The caches use the DiT's three-part forward through the guided call's slot
(:attr:`openwan.denoiser.Denoiser.dit_call`), so they work wherever a :class:`~openwan.denoiser.Denoiser`
runs: every task (the conditioning is in ``embed``), CFG batched (one decision for the [cond, uncond]
batch) or not (cond and uncond keep separate states, as the papers' Wan code does), long-video windows
(one state per window: the state is keyed by the call's place in the step), and Wan 2.2's two experts
(one state per expert: the low-noise expert starts afresh with a computed step at the switch). Under
sequence parallel the measured changes are summed over the processes, so all make the same decision.

Common to all: the first ``warmup`` fraction of the steps (at least ``min_warmup``) is always computed,
and the last step too when ``last`` is set; a threshold of 0 computes every step.
"""
from __future__ import annotations

import math
import weakref
from types import SimpleNamespace
from typing import Optional

import torch

from openwan.caches.store import find_calibration
from openwan.denoiser import Denoiser, Step, Wrapper
from openwan.models.dit_layers import token_mod

__all__ = ["BlockCache", "TeaCache", "MagCache", "FirstBlockCache", "PlannedCache", "even_plan", "find_denoisers",
           "rel_l1", "modulated_input"]


def find_denoisers(d):
    """The :class:`Denoiser` objects under a wrapper chain (both experts of an expert switch)."""
    if isinstance(d, Denoiser):
        yield d
        return
    own = getattr(d, "__dict__", {})
    if own.get("experts"):
        for e in own["experts"].values():
            yield from find_denoisers(e)
    elif own.get("inner") is not None:
        yield from find_denoisers(own["inner"])


def windowed(d) -> bool:
    """Whether a wrapper chain runs a long video's windows (a ``Windowed`` in it, under either expert too): its DiT
    calls of a step are one per window."""
    own = getattr(d, "__dict__", {})
    if own.get("plan") is not None:
        return True
    if own.get("experts"):
        return any(windowed(e) for e in own["experts"].values())
    return own.get("inner") is not None and windowed(own["inner"])


def _reduce(v: torch.Tensor, dit) -> torch.Tensor:
    """Sum ``v`` over the sequence-parallel processes (each holds a slice of the tokens)."""
    sp = getattr(dit, "sp", None)
    if sp is not None and sp.world > 1:
        import torch.distributed as dist
        dist.all_reduce(v, group=sp.group)
    return v


def rel_l1(a: torch.Tensor, b: torch.Tensor, dit=None, den: Optional[torch.Tensor] = None) -> float:
    """mean|a - b| / mean|b| over every element (all processes' tokens under sequence parallel).
    ``den``: :func:`l1_den` of ``b``, when ``b`` is a kept reference compared with many ``a`` (the same value)."""
    if den is None:
        v = torch.stack([(a - b).abs().sum(dtype=torch.float64), b.abs().sum(dtype=torch.float64)])
        v = _reduce(v, dit)
        return (v[0] / v[1].clamp_min(1e-300)).item()
    return (_reduce((a - b).abs().sum(dtype=torch.float64), dit) / den).item()


def l1_den(b: torch.Tensor, dit=None) -> torch.Tensor:
    """The denominator of :func:`rel_l1` against ``b``: sum|b| (float64, over every process), at least 1e-300."""
    return _reduce(b.abs().sum(dtype=torch.float64), dit).clamp_min(1e-300)


def modulated_input(dit, s) -> torch.Tensor:
    """Block 0's self-attention input: ``norm1(x) * (1 + scale1) + shift1`` [B, L, dim] (TeaCache's indicator)."""
    b0 = dit.blocks[0]
    m = b0.modulation.float()                                   # [1, 6, dim]; e0 [B, 1 or L, 6, dim]
    return b0.norm1(s.x) * (1 + token_mod(m, s.e0, 1)) + token_mod(m, s.e0, 0)


class BlockCache(Wrapper):
    """Base: installs itself in every Denoiser under ``inner`` and keeps one state per (denoiser, call of
    the step). Subclasses implement :meth:`blocks` (decide, then compute or reuse)."""

    warmup: float = 0.2          # fraction of the steps always computed at the start
    min_warmup: int = 1
    last: bool = True            # the last step is always computed
    needs: tuple = ()            # calibration fields the method reads
    name = "blocks"

    def __init__(self, inner, threshold: float, calibration: Optional[dict] = None, warmup: Optional[float] = None):
        super().__init__(inner)
        self.threshold = float(threshold)
        if warmup is not None:
            self.warmup = warmup
        self.decisions: list[bool] = []          # per DiT call, True when its blocks ran
        self._states: dict = {}
        self._step: Optional[Step] = None
        self._calls = 0
        self._windowed = windowed(inner)
        dens = list(find_denoisers(inner))
        if not dens:
            raise TypeError(f"{type(self).__name__} needs a Denoiser (a DiT) under it")
        for d in dens:
            cal = None
            if self.needs:
                cal = calibration if calibration is not None else find_calibration(d.dit, self.name)
                missing = [k for k in self.needs if k not in cal]
                if missing:
                    raise ValueError(f"the calibration for {self.name} lacks {missing}: recompute it with "
                                     f"`python -m openwan.caches calibrate`")
            d.dit_call = self._bind(d, cal)

    def _bind(self, den, cal):
        # the denoiser holds this call; it reaches the cache and names the denoiser by weak reference and id, so
        # no reference cycle keeps the states (a residual per window) alive after the run, until a gc pass
        me, key = weakref.ref(self), id(den)

        def call(dit, x, t, contexts, kw):
            cache = me()
            if cache is None:
                raise RuntimeError("this denoiser's step cache is gone: run the wrapper, not the denoiser under it")
            return cache._call(key, cal, dit, x, t, contexts, kw)
        return call

    def warmup_steps(self, n: int) -> int:
        return max(self.min_warmup, math.ceil(self.warmup * n))

    def __call__(self, x: torch.Tensor, step: Step) -> torch.Tensor:
        self._step, self._calls = step, 0
        return self.inner(x, step)

    # a stopped run goes on (openwan.pipelines.resume): from before a step that ran every call's blocks
    def restartable(self) -> bool:
        """Whether the last step ran the blocks of every DiT call it made. A fresh cache started at that step makes
        every call anew (its states are new) and then holds the states this one holds, so a solve kept from before
        that step goes on exactly with nothing of the cache kept."""
        return self._calls > 0 and all(self.decisions[-self._calls:])     # one decision per call of the step

    def resume_state(self) -> dict:
        return {}

    def load_resume_state(self, state: dict, device) -> None:
        """Nothing to put back (:meth:`restartable`)."""

    def new_state(self) -> SimpleNamespace:
        return SimpleNamespace(residual=None)

    def _call(self, den_id: int, cal, dit, x, t, contexts, kw):
        key = (den_id, self._calls)
        self._calls += 1
        s = dit.embed(x, t, contexts, **kw)
        st = self._states.get(key)
        if st is None or st.shape != tuple(s.x.shape):
            st = self._states[key] = self.new_state()
            st.shape = tuple(s.x.shape)
        step = self._step
        forced = (step is None or step.i < self.warmup_steps(step.n) or (self.last and step.i == step.n - 1)
                  or st.residual is None)
        host = self.host_for(s.x.device)
        if host is not None:                    # a window's state waited on the host: back for its call
            _move(st, s.x.device)
        out, computed = self.blocks(dit, s, st, step, forced, cal)
        if host is not None:
            _move(st, host)
        self.decisions.append(computed)
        return dit.run_head(s.with_x(out)), computed

    def host_for(self, device) -> Optional[torch.device]:
        """Where the states wait between their calls: the host when the DiT runs on an accelerator and the calls
        are a long video's windows (one state per window, each a residual of the window's tokens: held on the
        device they would grow with the video), else None (they stay where they are made)."""
        if getattr(device, "type", "cpu") == "cpu" or not self._windowed:
            return None
        return torch.device("cpu")

    def blocks(self, dit, s, st, step, forced: bool, cal) -> tuple[torch.Tensor, bool]:
        raise NotImplementedError

    @staticmethod
    def compute(dit, s, st, start: int = 0) -> torch.Tensor:
        """Run blocks ``start:`` on ``s.x`` and keep their residual."""
        out = dit.run_blocks(s, start).x
        st.residual = out - s.x
        return out


def _move(state: SimpleNamespace, device) -> None:
    """Every tensor of a cache state to ``device``."""
    for k, v in vars(state).items():
        if torch.is_tensor(v):
            setattr(state, k, v.to(device))


def _poly(coeffs, x: float) -> float:
    """Horner: coeffs highest degree first (numpy.polyfit's order)."""
    y = 0.0
    for c in coeffs:
        y = y * x + c
    return y


class TeaCache(BlockCache):
    """TeaCache (Liu et al. 2025, "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model",
    CVPR; arXiv 2411.19108).

    Indicator: block 0's timestep-modulated input ``I_j`` (:func:`modulated_input`). Per step after the
    warm-up, ``E += max(0, P(rel_l1(I_j, I_{j-1})))``, ``P`` a polynomial fitted per model from an
    uncached run (input change -> DiT output change; ``teacache_poly`` in the calibration,
    ``python -m openwan.caches calibrate``). ``E < threshold``: reuse the residual; else compute and set
    ``E = 0``. ``I_{j-1}`` is the previous call's indicator, computed or not. Published Wan coefficients
    were fitted on the time embedding, not on this indicator, so they are not used.
    """

    name = "teacache"
    warmup = 0.1
    needs = ("teacache_poly",)

    def new_state(self):
        return SimpleNamespace(residual=None, prev=None, acc=0.0)

    def blocks(self, dit, s, st, step, forced, cal):
        ind = modulated_input(dit, s)
        skip = False
        if not forced and st.prev is not None:
            st.acc += max(0.0, _poly(cal["teacache_poly"], rel_l1(ind, st.prev, dit)))
            skip = st.acc < self.threshold
        st.prev = ind
        if skip:
            return s.x + st.residual, False
        st.acc = 0.0
        return self.compute(dit, s, st), True


def nearest(curve, i: int, n: int) -> float:
    """The value of a per-step curve (calibrated over len(curve) steps) at step i of n: nearest position."""
    m = len(curve)
    return float(curve[-1] if n == 1 else curve[round(i * (m - 1) / (n - 1))])


class MagCache(BlockCache):
    """MagCache (Ma et al. 2025, "MagCache: Fast Video Generation with Magnitude-Aware Cache", arXiv
    2506.09045).

    Calibration: ``mag_ratios[j]`` = mean over tokens of ``|R_j| / |R_{j-1}|`` (per-token L2 norms of the
    blocks' residual, successive steps of one uncached run; read at the nearest position for another step
    count). Per step after the warm-up: ``ratio *= mag_ratios[j]``, ``skips += 1``,
    ``err += |1 - ratio|``; reuse the residual while ``err < threshold`` and ``skips <= max_skips`` (K);
    otherwise compute and reset ``ratio = 1, err = 0, skips = 0``. The same rule as diffusers'
    ``MagCacheConfig`` (retention ratio = ``warmup``), plus a computed last step.
    """

    name = "magcache"
    needs = ("mag_ratios",)
    max_skips = 3

    def new_state(self):
        return SimpleNamespace(residual=None, ratio=1.0, err=0.0, skips=0)

    def blocks(self, dit, s, st, step, forced, cal):
        if not forced:
            st.ratio *= nearest(cal["mag_ratios"], step.i, step.n)
            st.skips += 1
            st.err += abs(1.0 - st.ratio)
            if st.err < self.threshold and st.skips <= self.max_skips:
                return s.x + st.residual, False
        st.ratio, st.err, st.skips = 1.0, 0.0, 0
        return self.compute(dit, s, st), True


class FirstBlockCache(BlockCache):
    """First Block Cache (ParaAttention, 2025; diffusers' ``FirstBlockCacheConfig``), after TeaCache's idea
    that a cheap early signal predicts the output's change.

    Every call runs block 0; ``r0`` = its output - its input. When ``rel_l1(r0, r0_c) < threshold``
    (``r0_c`` of the last computed call) the other blocks are skipped: output = block 0's output + the
    cached residual of blocks 1..N-1; otherwise they run and both residuals are refreshed. No warm-up
    beyond the first step and no forced last step: diffusers' rule (it skips when the change is <= the
    threshold; here <, so that 0 computes every step).
    """

    name = "fbcache"
    warmup = 0.0
    last = False

    def new_state(self):
        return SimpleNamespace(residual=None, r0=None, den=None)

    def blocks(self, dit, s, st, step, forced, cal):
        s0 = dit.run_blocks(s, 0, 1)
        r0 = s0.x - s.x
        if not forced and st.r0 is not None and rel_l1(r0, st.r0, dit, st.den) < self.threshold:
            return s0.x + st.residual, False
        st.r0, st.den = r0, l1_den(r0, dit)
        return self.compute(dit, s0, st, start=1), True


def even_plan(n: int, computed: int, first: int) -> list[bool]:
    """Which of ``n`` steps to compute, ``computed`` of them: the first ``first`` steps, the last step, and the
    ``b`` others spread evenly between step ``first - 1`` and the last: the k-th (k = 1..b) at
    ``first - 1 + round(k * (n - first) / (b + 1))``, so runs of reused steps differ in length by at most one."""
    plan = [i < first or i == n - 1 for i in range(n)]
    b = computed - sum(plan)
    for k in range(1, b + 1):
        plan[first - 1 + round(k * (n - first) / (b + 1))] = True
    return plan


class PlannedCache(BlockCache):
    """A budgeted skip schedule, fixed before sampling (no threshold on a measured change, no calibration):
    ``threshold`` T is the fraction of the steps whose transformer blocks are reused, ``floor(T * n)`` of
    ``n`` (0.5: half the forwards), so the forward count is the same on every model and prompt. The first
    ``warmup`` fraction of the steps (at least 2; where the layout forms) and the last step are computed;
    the other computes are spread evenly between them (:func:`even_plan`); a reused step adds the blocks'
    residual of the last computed step, as the other caches here do."""

    name = "plan"
    warmup = 0.2
    min_warmup = 2

    def __init__(self, inner, threshold, calibration=None, warmup=None):
        if not 0 <= threshold < 1:
            raise ValueError(f"{self.name}: the threshold is the fraction of the steps reused, in [0, 1) (e.g. "
                             f"{self.name}:0.5), got {threshold:g}")
        super().__init__(inner, threshold, calibration, warmup)
        self._plans = {}

    def plan(self, n: int) -> list[bool]:
        """Per step of ``n``, True when it is computed (at least the warm-up and the last step)."""
        if n not in self._plans:
            first = min(self.warmup_steps(n), n)
            computed = max(n - math.floor(self.threshold * n), min(first + 1, n))
            self._plans[n] = even_plan(n, computed, first)
        return self._plans[n]

    def blocks(self, dit, s, st, step, forced, cal):
        if not forced and not self.plan(step.n)[step.i]:
            return s.x + st.residual, False
        return self.compute(dit, s, st), True
