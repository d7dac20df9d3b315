"""Flow-matching sampling: noise grids (sigmas) and the ODE solvers that walk them.

Wan 2.1 is a rectified-flow model. A clean latent ``x0`` and Gaussian ``noise`` are mixed as

    x_sigma = (1 - sigma) * x0 + sigma * noise,            sigma in [0, 1]

and the DiT predicts the velocity ``v = noise - x0``, so a prediction of the clean latent is
``x0 = x_sigma - sigma * v``. Sampling integrates from sigma ~ 1 (pure noise) down to sigma = 0.

This module, top to bottom:

1. **Grids.** :func:`shift_sigmas` warps a uniform grid towards high noise
   (``s*sigma / (1 + (s-1)*sigma)``); :func:`unipc_sigmas` and :func:`dpmpp_sigmas` build the
   exact grids of the reference (float64, as numpy computes them there, with a final 0
   appended); :func:`timesteps_from_sigmas` gives the integer timesteps the DiT is fed;
   :func:`sigmas_for_strength` cuts a grid for video-to-video (SDEdit).
2. **Solvers.** Small stateful steppers over a grid, all with ``step(v, x, i) -> x_next``:
   :class:`EulerSolver` (first order), :class:`DPMPP2MSolver` (DPM-Solver++ 2M, midpoint form),
   :class:`UniPCSolver` (UniPC, B(h) = e^h - 1 ("bh2"), order 2, data prediction, with the UniC
   corrector). Their arithmetic is done in float32 on float32 sigmas, like the reference.
3. **Driver.** :func:`run` walks a grid with a ``denoiser(x, step) -> v`` (``step`` a :class:`Step`:
   i, n, t, sigma, sigma_next), hands the x0 prediction to ``on_step``, lets ``post_step`` return a
   modified sample, and passes a ``generator`` to re-noising solvers; :func:`sample` is the same
   with a plain ``model_fn(x, t, sigma) -> v``. :data:`SOLVERS` is the one table of solvers:
   ``name -> (stepper class, default grid)``. :func:`sigmas_from_timesteps` builds the grid of an
   explicit timestep list (few-step students: ``[999, 750, 500, 250]``), walked by "euler" (plain
   Euler) or "consistency" (denoise to x0, re-noise to the next sigma).
4. **Helpers.** :func:`cfg` (classifier-free guidance) and :func:`add_noise` (forward process).

Step orders of the multistep solvers (N steps, step index i = 0..N-1):

* UniPC predictor: order 1 at i = 0 (no history yet) and at i = N-1 ("lower order final"),
  order 2 otherwise. The corrector runs at the start of every step i >= 1, using the new
  model output, with the order the predictor of step i-1 used; there is none after the last
  step (that would need a model call at sigma = 0).
* DPM++ 2M: order 1 at i = 0 and i = N-1 (final sigma is 0), order 2 (midpoint) otherwise.

Notation in the solver code: ``lam(sigma) = log(alpha) - log(sigma)`` with ``alpha = 1 - sigma``
(the half log-SNR), ``h = lam(sigma_next) - lam(sigma_now)`` (> 0), subscripts ``s0`` for the
current grid point, ``s1`` for the previous one, ``t`` for the target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

__all__ = [
    "NUM_TRAIN_TIMESTEPS", "SOLVERS", "Step", "shift_sigmas", "unipc_sigmas", "dpmpp_sigmas", "euler_sigmas",
    "sigmas_for", "sigmas_from_timesteps", "timesteps_from_sigmas", "sigmas_for_strength", "EulerSolver",
    "DPMPP2MSolver", "UniPCSolver", "ConsistencySolver", "make_solver", "run", "sample", "cfg", "add_noise",
]

NUM_TRAIN_TIMESTEPS = 1000

# The reference's UniPC grid starts from the largest training sigma, 1 - 1/1000 = 0.999, which it
# holds as a float32 tensor and reads back as a Python float: 0.9990000128746033, not 0.999. Using
# the float32 value makes our float64 grid bit-identical to the reference's (checked by the tests).
_UNIPC_SIGMA_MAX = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[float], float]


# ============================================================================ 1. grids

def _check_steps_shift(steps: int, shift: float) -> None:
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not (isinstance(shift, (int, float, np.floating)) and math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a positive finite number (Wan uses 3.0 to 16.0), got {shift!r}")


def shift_sigmas(sigmas: ArrayLike, shift: float) -> ArrayLike:
    """Time shift of the noise grid: ``s * sigma / (1 + (s - 1) * sigma)``.

    ``shift > 1`` spends more steps at high noise (where the coarse layout is decided); 1 is the
    identity; sigma 0 and 1 are fixed points. Works on a float, a numpy array or a tensor and
    returns the same kind (in the input's precision).
    """
    if not (math.isfinite(float(shift)) and float(shift) > 0):
        raise ValueError(f"shift must be a positive finite number, got {shift!r}")
    if isinstance(sigmas, (list, tuple)):
        sigmas = np.asarray(sigmas, dtype=np.float64)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def _with_final_zero(sigmas: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float64))


def unipc_sigmas(steps: int, shift: float) -> torch.Tensor:
    """The reference's UniPC grid: ``linspace(0.999, 0, N+1)[:-1]``, shifted, then a final 0.

    Returns float64 [steps + 1] (computed exactly as the reference's numpy code does, so its
    integer timesteps come out identical; the first is 999). Solvers round it to float32.
    """
    _check_steps_shift(steps, shift)
    base = np.linspace(_UNIPC_SIGMA_MAX, 0.0, steps + 1)[:-1]
    return _with_final_zero(shift_sigmas(base, float(shift)))


def dpmpp_sigmas(steps: int, shift: float) -> torch.Tensor:
    """The reference's DPM++ grid: ``linspace(1, 0, N+1)[:N]``, shifted, then a final 0.

    Float64 [steps + 1]; starts at exactly sigma 1 (timestep 1000, pure noise).
    """
    _check_steps_shift(steps, shift)
    base = np.linspace(1.0, 0.0, steps + 1)[:steps]
    return _with_final_zero(shift_sigmas(base, float(shift)))


def euler_sigmas(steps: int, shift: float) -> torch.Tensor:
    """Grid for the Euler solver: the same as :func:`dpmpp_sigmas` (from sigma 1 down to 0)."""
    return dpmpp_sigmas(steps, shift)


def sigmas_for(solver: str, steps: int, shift: float) -> torch.Tensor:
    """The default grid of a solver name (a key of :data:`SOLVERS`)."""
    return SOLVERS[_check_solver(solver)][1](steps, shift)


def sigmas_from_timesteps(timesteps: Sequence[int]) -> torch.Tensor:
    """The grid of an explicit list of integer timesteps (high to low), with a final 0: ``t / 1000``.

    For few-step students trained on fixed timesteps (e.g. ``[999, 750, 500, 250]``). Float64, and
    :func:`timesteps_from_sigmas` gives the list back exactly (``int64(t / 1000 * 1000) == t`` for
    every t in 0..1000 in float64).
    """
    ts = [int(t) for t in timesteps]
    if not ts or any(not 0 < t <= NUM_TRAIN_TIMESTEPS for t in ts) or any(a <= b for a, b in zip(ts, ts[1:])):
        raise ValueError(f"timesteps must be a non-empty, strictly decreasing list of integers in "
                         f"1..{NUM_TRAIN_TIMESTEPS}, e.g. [999, 750, 500, 250]; got {list(timesteps)!r}")
    return torch.tensor([t / NUM_TRAIN_TIMESTEPS for t in ts] + [0.0], dtype=torch.float64)


def timesteps_from_sigmas(sigmas: ArrayLike) -> torch.Tensor:
    """Integer model timesteps ``int64(sigma * 1000)`` (truncation = floor for sigma >= 0).

    Maps every sigma given, elementwise; pass ``sigmas[:-1]`` to drop the final 0 of a grid.
    Computed in float64: pass the float64 grid of :func:`unipc_sigmas` / :func:`dpmpp_sigmas` to
    reproduce the reference's timesteps exactly (float32 sigmas can land one below at a boundary).
    """
    s = torch.as_tensor(sigmas).detach().to("cpu", torch.float64)
    return (s * NUM_TRAIN_TIMESTEPS).to(torch.int64)


def sigmas_for_strength(steps: int, shift: float, strength: float, solver: str = "unipc") -> torch.Tensor:
    """The tail of the full ``steps``-step grid, for SDEdit-style video-to-video.

    Choice: ``strength`` is a noise level. We build the solver's full grid for ``steps`` and keep
    it from the first sigma ``<= strength`` onwards (final 0 included). The input latent should
    be noised to the first kept sigma (``add_noise(x0, noise, tail[0])``), so the solve starts
    exactly on the grid the model would have visited in a full generation. Consequences:
    ``strength = 1`` runs the full grid; ``strength = 0`` returns ``[0]`` (no steps: the input is
    kept); with ``shift > 1`` the grid is dense at high noise, so fewer than ``strength * steps``
    steps run (e.g. 50 steps, shift 5, strength 0.5 runs 8 steps: only
    unshifted sigmas <= 1/6 map to <= 0.5).
    """
    if not (isinstance(strength, (int, float, np.floating)) and 0.0 <= float(strength) <= 1.0):
        raise ValueError(f"strength must be a number in [0, 1] (the starting noise level), got {strength!r}")
    full = sigmas_for(solver, steps, shift)
    keep = (full <= float(strength)).nonzero()[0, 0].item()  # the final 0 always qualifies
    return full[keep:].clone()


def _check_grid(sigmas: ArrayLike) -> torch.Tensor:
    s = torch.as_tensor(sigmas).detach().to("cpu")
    if not s.is_floating_point():
        s = s.to(torch.float64)
    if s.ndim != 1 or s.numel() < 1:
        raise ValueError(f"sigmas must be a non-empty 1-D grid (last value usually 0), got shape "
                         f"{tuple(s.shape)}; build one with unipc_sigmas / dpmpp_sigmas")
    if not torch.isfinite(s).all() or s.min() < 0 or s.max() > 1:
        raise ValueError(f"sigmas must lie in [0, 1], got min {s.min().item()} max {s.max().item()}")
    if not (s[1:] < s[:-1]).all():
        raise ValueError("sigmas must be strictly decreasing (high noise first, ending at 0)")
    return s


# ============================================================================ 2. solvers

def _lam(sigma: torch.Tensor) -> torch.Tensor:
    """Half log-SNR of the flow path: log(alpha) - log(sigma), alpha = 1 - sigma (+inf at sigma 0)."""
    return torch.log(1 - sigma) - torch.log(sigma)


class _Solver:
    """Shared state: the float32 grid, the step counter, and the x0 history.

    Use one instance per solve: call ``step(v, x, i)`` for i = 0, 1, ... N-1 in order (N =
    len(sigmas) - 1; a one-value grid has no steps), where ``v``
    is the model's velocity at ``(x, sigmas[i])``; it returns the sample at ``sigmas[i+1]`` in
    ``x``'s dtype. Arithmetic is float32.
    """

    def __init__(self, sigmas: ArrayLike, generator: Optional[torch.Generator] = None):
        self.sigmas = _check_grid(sigmas).to(torch.float32)
        self.num_steps = self.sigmas.numel() - 1
        self.generator = generator      # used by re-noising solvers only
        self._next = 0

    STATE = ("_next", "_x0_prev", "_x0", "_last_sample", "_last_order")    # what a solve carries from step to step

    def state(self) -> dict:
        """What the next steps depend on besides the sample (the step counter, the x0 history, the re-noising
        generator's state), as CPU tensors and numbers: :meth:`load` puts it back, so a solve stopped after any step
        goes on exactly."""
        def cpu(v):
            if isinstance(v, torch.Tensor):
                return v.detach().cpu().clone()
            return [cpu(u) for u in v] if isinstance(v, list) else v
        d = {k: cpu(v) for k, v in vars(self).items() if k in self.STATE}
        if self.generator is not None:
            d["generator"] = self.generator.get_state()
        return d

    def load(self, state: dict, device) -> None:
        """The state :meth:`state` returned (its tensors moved to ``device``)."""
        def dev(v):
            if isinstance(v, torch.Tensor):
                return v.to(device)
            return [dev(u) for u in v] if isinstance(v, list) else v
        for k, v in state.items():
            if k == "generator":
                if self.generator is not None:
                    self.generator.set_state(v)
            elif k in self.STATE:
                setattr(self, k, dev(v))

    def _check_step(self, v: torch.Tensor, x: torch.Tensor, i: int) -> None:
        if i != self._next:
            raise ValueError(f"{type(self).__name__}.step called with step {i}, expected {self._next}: "
                             f"steps must run in order 0..{self.num_steps - 1} (use a new solver per solve)")
        if v.shape != x.shape:
            raise ValueError(f"model output shape {tuple(v.shape)} does not match sample shape {tuple(x.shape)}")
        self._next += 1

    def _begin(self, v: torch.Tensor, x: torch.Tensor, i: int):
        self._check_step(v, x, i)
        dev = x.device
        return (v.to(torch.float32), x.to(torch.float32),
                self.sigmas[i].to(dev), self.sigmas[i + 1].to(dev))


class EulerSolver(_Solver):
    """First-order Euler on the flow ODE dx/dsigma = v: ``x + (sigma_next - sigma) * v``.

    Exact whenever the model's x0 prediction is constant along the path (a straight flow).
    """

    def step(self, v: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        v32, x32, s0, t = self._begin(v, x, i)
        return (x32 + (t - s0) * v32).to(x.dtype)


class DPMPP2MSolver(_Solver):
    """DPM-Solver++ (2M, midpoint form) in data prediction; first order at the first and last step.

    With ``D0 = x0_now`` and ``D1 = (x0_now - x0_prev) / r``, ``r = h_prev / h``:
    ``x_next = (sigma_t/sigma_s0) x - alpha_t (e^-h - 1) (D0 + D1/2)``. On the reference grid the
    first sigma is exactly 1 (lam = -inf), which makes the second step's ``D1`` vanish too; the
    float arithmetic below yields that on its own (1/inf = 0).
    """

    def __init__(self, sigmas: ArrayLike, generator: Optional[torch.Generator] = None):
        super().__init__(sigmas, generator)
        self._x0_prev: Optional[torch.Tensor] = None

    def step(self, v: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        v32, x32, s0, t = self._begin(v, x, i)
        x0 = x32 - s0 * v32
        alpha_t = 1 - t
        h = _lam(t) - _lam(s0)
        phi = alpha_t * (torch.exp(-h) - 1.0)                 # alpha_t (e^-h - 1), <= 0
        x_next = (t / s0) * x32 - phi * x0
        second_order = self._x0_prev is not None and i < self.num_steps - 1
        if second_order:
            s1 = self.sigmas[i - 1].to(x.device)
            r = (_lam(s0) - _lam(s1)) / h
            d1 = (1.0 / r) * (x0 - self._x0_prev)
            x_next = x_next - 0.5 * phi * d1
        self._x0_prev = x0
        return x_next.to(x.dtype)


class UniPCSolver(_Solver):
    """UniPC (Zhao et al. 2023) with B(h) = e^h - 1 ("bh2"), order 2, data (x0) prediction.

    Each ``step(v, x, i)``:

    1. ``x0_i = x - sigma_i * v`` from the model input ``x`` (the predictor's output).
    2. Corrector (UniC, i >= 1): refine the previous predictor's result with the new ``x0_i``;
       this corrected sample replaces ``x`` as the base of step 3 (``x0_i`` is not recomputed:
       the model is called once per step).
    3. Predictor (UniP) from ``sigma_i`` to ``sigma_{i+1}``, order 1 at the first and last step.

    With ``hh = -h`` (data prediction), ``B = e^hh - 1`` and the linear part
    ``base = (sigma_t/sigma_s0) x_s0 - alpha_t B x0_s0``, both updates are ``base - alpha_t B * res``:

    * predictor order 2: ``res = 0.5 * D1``, ``D1 = (x0_s1 - x0_s0) / r1``, ``r1 = (lam_s1 - lam_s0)/h``
    * corrector order 1: ``res = 0.5 * (x0_t - x0_s0)``
    * corrector order 2: ``res = rho0 D1 + rho1 (x0_t - x0_s0)`` where ``(rho0, rho1)`` solves
      ``[[1, 1], [r1, 1]] rho = [b1, b2]``, ``b_k = k! * phi_k(hh) / B`` with
      ``phi_1 = (e^hh - 1)/hh - 1`` and ``phi_2 = phi_1/hh - 1/2`` (the reference's h_phi_k recursion).
    """

    def __init__(self, sigmas: ArrayLike, generator: Optional[torch.Generator] = None):
        super().__init__(sigmas, generator)
        self._x0: list[torch.Tensor] = []     # x0 predictions, newest last (at most 2 kept)
        self._last_sample: Optional[torch.Tensor] = None   # the (corrected) sample the last predictor started from
        self._last_order = 0
        self._c: Optional[dict] = None         # the per-interval scalars (see _coefficients), on _c_dev
        self._c_dev = None

    def _order(self, i: int) -> int:
        """Predictor order at step i: 1 at the first and the last step, else 2."""
        return 1 if i == 0 or i == self.num_steps - 1 else 2

    def _coefficients(self, dev) -> dict:
        """The scalars of every interval j (sigma_j -> sigma_{j+1}), computed once per solve in float32 on ``dev``,
        elementwise over the grid, by the formulas of the class docstring: ``sigma`` (the grid), ``ratio`` =
        sigma_t/sigma_s0, ``scale`` = alpha_t B and, for j >= 1 (order 2, s1 = sigma_{j-1}), ``r1``, ``rho0``,
        ``rho1``. As Python floats (a float32 tensor times a Python float uses it as that float32 value: the
        products are those of the 0-d tensors), except ``r1``, a divisor: 0-d tensors (CUDA would divide by a
        Python float as a multiplication by its reciprocal)."""
        if self._c is None or self._c_dev != dev:
            s = self.sigmas.to(dev)
            lam = _lam(s)
            s0, t = s[:-1], s[1:]
            alpha_t = 1 - t
            h = lam[1:] - lam[:-1]
            hh = -h
            b_h = torch.expm1(hh)
            r1 = (lam[:-2] - lam[1:-1]) / h[1:]                      # intervals 1..N-1
            phi1 = torch.expm1(hh) / hh - 1
            phi2 = phi1 / hh - 0.5
            b1, b2 = phi1 / b_h, 2 * phi2 / b_h
            rho0 = (b1[1:] - b2[1:]) / (1 - r1)
            rho1 = b1[1:] - rho0
            pad = [None]                                              # interval 0 has no order-2 terms
            self._c = {"sigma": s.tolist(), "ratio": (t / s0).tolist(), "scale": (alpha_t * b_h).tolist(),
                       "r1": pad + list(r1.unbind()), "rho0": pad + rho0.tolist(), "rho1": pad + rho1.tolist()}
            self._c_dev = dev
        return self._c

    def _linear_part(self, x_s0, x0_s0, j: int):
        """(sigma_t/sigma_s0) x - alpha_t B x0 over interval j, and alpha_t B."""
        c = self._c
        scale = c["scale"][j]
        return c["ratio"][j] * x_s0 - scale * x0_s0, scale

    def _correct(self, x0_new: torch.Tensor, i: int) -> torch.Tensor:
        """UniC: corrected sample at sigma_i from the sample at sigma_{i-1} and x0 at both points."""
        j = i - 1                                                     # the interval sigma_{i-1} -> sigma_i
        x0_s0 = self._x0[-1]
        base, scale = self._linear_part(self._last_sample, x0_s0, j)
        d1_t = x0_new - x0_s0
        if self._last_order == 1:
            res = 0.5 * d1_t
        else:
            c = self._c
            d1 = (self._x0[-2] - x0_s0) / c["r1"][j]
            res = c["rho0"][j] * d1 + c["rho1"][j] * d1_t
        return base - scale * res

    def _predict(self, x: torch.Tensor, i: int, order: int) -> torch.Tensor:
        """UniP: sample at sigma_{i+1} from the (corrected) sample and x0 history at sigma_i."""
        x0_s0 = self._x0[-1]
        base, scale = self._linear_part(x, x0_s0, i)
        if order == 1:
            return base
        d1 = (self._x0[-2] - x0_s0) / self._c["r1"][i]
        return base - scale * (0.5 * d1)

    def step(self, v: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        self._check_step(v, x, i)
        c = self._coefficients(x.device)
        x32 = x.to(torch.float32)
        x0 = x32 - c["sigma"][i] * v.to(torch.float32)
        if i > 0:
            x32 = self._correct(x0, i)
        self._x0 = (self._x0 + [x0])[-2:]
        order = min(self._order(i), len(self._x0))
        self._last_sample, self._last_order = x32, order
        return self._predict(x32, i, order).to(x.dtype)


class ConsistencySolver(_Solver):
    """Denoise to x0, then re-noise to the next sigma with fresh noise (consistency / DMD-style students).

    ``x0 = x - sigma * v``; ``x_next = (1 - sigma_next) * x0 + sigma_next * n`` with ``n ~ N(0, I)`` drawn
    from ``generator`` (the global RNG when None) in float32 on the generator's device; the last step to
    sigma 0 returns ``x0``. Meant for an explicit timestep list (:func:`sigmas_from_timesteps`).
    """

    def step(self, v: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
        v32, x32, s0, t = self._begin(v, x, i)
        x0 = x32 - s0 * v32
        if float(t) == 0.0:
            return x0.to(x.dtype)
        dev = self.generator.device if self.generator is not None else torch.device("cpu")
        n = torch.randn(tuple(x.shape), generator=self.generator, dtype=torch.float32, device=dev).to(x.device)
        return ((1 - t) * x0 + t * n).to(x.dtype)


# The one table of solvers: name -> (stepper class, default grid (steps, shift) -> float64 sigmas).
SOLVERS: dict[str, tuple[type, Callable[[int, float], torch.Tensor]]] = {
    "unipc": (UniPCSolver, unipc_sigmas),
    "dpm++": (DPMPP2MSolver, dpmpp_sigmas),
    "euler": (EulerSolver, euler_sigmas),
    "consistency": (ConsistencySolver, euler_sigmas),
}
SOLVER_ALIASES = {"dpmpp": "dpm++", "dpm++2m": "dpm++", "dpmpp_2m": "dpm++"}


def _check_solver(solver: str) -> str:
    name = solver.lower() if isinstance(solver, str) else solver
    name = SOLVER_ALIASES.get(name, name)
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    return name


def make_solver(solver: str, sigmas: ArrayLike, generator: Optional[torch.Generator] = None) -> _Solver:
    """A fresh stepper for ``solver`` (a key of :data:`SOLVERS`) over the grid ``sigmas``."""
    return SOLVERS[_check_solver(solver)][0](sigmas, generator)


# ============================================================================ 3. driver

@dataclass(frozen=True)
class Step:
    """Where a model call sits on the grid: step ``i`` of ``n``, the DiT's integer timestep ``t``
    (int64 [1] on the sample's device), the float32 grid values ``sigma`` and ``sigma_next``."""
    i: int
    n: int
    t: torch.Tensor
    sigma: float
    sigma_next: float


Denoise = Callable[[torch.Tensor, Step], torch.Tensor]
StepHook = Callable[[Step, torch.Tensor, torch.Tensor], Optional[torch.Tensor]]


@torch.no_grad()
def run(denoiser: Denoise, x: torch.Tensor, sigmas: ArrayLike, solver: str = "unipc", *,
        on_step: Optional[StepHook] = None, post_step: Optional[StepHook] = None,
        generator: Optional[torch.Generator] = None, resume: Optional[tuple] = None,
        keep: Optional[Callable[[int, torch.Tensor, "_Solver"], None]] = None) -> torch.Tensor:
    """Integrate the flow from ``sigmas[0]`` to ``sigmas[-1]`` starting at the sample ``x``.

    Each step: ``v = denoiser(x, step)``; ``x = stepper.step(v, x, i)``; then, with the model's x0
    prediction ``x0 = x_in - sigma * v`` (float32), ``post_step(step, x, x0)`` may return a modified
    sample (None keeps it; e.g. re-imposing known frames), and ``on_step(step, x, x0)`` observes the
    result. ``generator`` feeds re-noising solvers ("consistency"). Returns ``x``'s dtype.

    A solve stopped part way goes on: ``keep(i, x, stepper)`` is called after every step with the number of steps
    done and the sample then (``stepper.state()`` holds the rest); ``resume=(i, x, state)`` from it starts at step
    i, and the result is the uninterrupted solve's.
    """
    grid = _check_grid(sigmas)
    stepper = make_solver(solver, grid, generator)
    timesteps = timesteps_from_sigmas(grid[:-1]).to(x.device)
    n = stepper.num_steps
    sig = stepper.sigmas.tolist()
    first = 0
    if resume is not None:
        first, x, state = resume
        stepper.load(state, x.device)
    for i in range(first, n):
        step = Step(i, n, timesteps[i: i + 1], sig[i], sig[i + 1])
        v = denoiser(x, step)
        x_next = stepper.step(v, x, i)
        if on_step is not None or post_step is not None:
            x0 = x.to(torch.float32) - stepper.sigmas[i].to(x.device) * v.to(torch.float32)
            if post_step is not None:
                new = post_step(step, x_next, x0)
                x_next = x_next if new is None else new
            if on_step is not None:
                on_step(step, x_next, x0)
        x = x_next
        if keep is not None:
            keep(i + 1, x, stepper)
    return x


ModelFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def sample(model_fn: ModelFn, x: torch.Tensor, sigmas: ArrayLike, solver: str = "unipc",
           callback: Optional[Callable[[int, int, torch.Tensor], None]] = None, **hooks) -> torch.Tensor:
    """:func:`run` with a plain ``model_fn(x, t, sigma) -> v``.

    Args:
        model_fn: ``model_fn(x, t, sigma) -> v`` with ``t`` an int64 tensor of shape [1] on
            ``x.device`` (the timestep the DiT is conditioned on, ``int64(sigma * 1000)``) and
            ``sigma`` the float32 grid value as a Python float. Classifier-free guidance goes
            inside it (see :func:`cfg`).
        x: the starting sample (noise for text-to-video, a noised latent for SDEdit), any dtype;
            the result has the same dtype.
        sigmas: the grid, e.g. ``unipc_sigmas(50, 5.0)`` (float64 keeps the timesteps exact).
        solver: a key of :data:`SOLVERS` ("unipc", the reference default, "dpm++", "euler", "consistency").
        callback: called as ``callback(i, t, x_next)`` after each step (``t`` an int).
        hooks: ``on_step``, ``post_step``, ``generator`` as in :func:`run`.
    """
    on_step = hooks.pop("on_step", None)
    if callback is not None:
        inner = on_step

        def on_step(step, x_next, x0):
            if inner is not None:
                inner(step, x_next, x0)
            callback(step.i, int(step.t), x_next)
    return run(lambda xt, step: model_fn(xt, step.t, step.sigma), x, sigmas, solver, on_step=on_step, **hooks)


# ============================================================================ 4. helpers

def cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)`` (scale 1 gives ``cond``)."""
    return uncond + scale * (cond - uncond)


def cfg_zero_star(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """CFG-Zero*'s optimized scale (Fan et al. 2025, "CFG-Zero*: improved classifier-free guidance for flow
    matching models"): the unconditional velocity first scaled by ``s = <cond, uncond> / |uncond|^2`` (over the
    whole sample: the projection of ``cond`` on it), then ``s uncond + scale * (cond - s uncond)``; scale 1 gives
    ``cond``. (Its other half, zero velocity on the first step from pure noise, is the Denoiser's:
    ``Guidance(method="cfg-zero-star")``.)"""
    s = (cond * uncond).sum() / ((uncond * uncond).sum() + 1e-8)
    return s * uncond + scale * (cond - s * uncond)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma) -> torch.Tensor:
    """Forward process ``(1 - sigma) * x0 + sigma * noise``.

    ``sigma`` is a float, a 0-d tensor, or a 1-D tensor of one value per batch item (training),
    broadcast over the remaining dimensions. The result has ``x0``'s dtype.
    """
    if x0.shape != noise.shape:
        raise ValueError(f"x0 shape {tuple(x0.shape)} and noise shape {tuple(noise.shape)} differ")
    if isinstance(sigma, torch.Tensor):
        if sigma.ndim == 1 and x0.ndim > 1:
            if sigma.numel() != x0.shape[0]:
                raise ValueError(f"{sigma.numel()} sigmas for a batch of {x0.shape[0]}: give one per item")
            sigma = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
        elif sigma.ndim > 1:
            raise ValueError(f"sigma must be a scalar or one value per batch item, got shape {tuple(sigma.shape)}")
        sigma = sigma.to(device=x0.device, dtype=x0.dtype)
    return ((1 - sigma) * x0 + sigma * noise).to(x0.dtype)
