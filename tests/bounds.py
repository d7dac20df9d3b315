"""Bounds for comparing fp32 results, derived from the magnitudes compared and fp32's epsilon (or measured on this
machine), never tuned to one machine's observed difference: fp32 rounding differs between CPUs (AVX2, AVX-512,
AMX) by a few ulps (as tests/wan22_helpers.py, tests/test_dit22.py, tests/test_training.py)."""
import copy

import torch

EPS = torch.finfo(torch.float32).eps   # 2^-23: one ulp of a value in [1, 2)


def magnitude(*values) -> float:
    """The largest |value| among tensors and numbers."""
    return max(float(v.detach().abs().max()) if torch.is_tensor(v) else abs(float(v)) for v in values)


def fp32_bound(*values, terms: int = 1, ulps: int = 8) -> float:
    """``ulps`` fp32 ulps (eps each) of the largest |value| given, per term: ``terms`` is the number of terms
    accumulated or of rounding steps chained, each of which may round differently on another CPU."""
    return ulps * terms * EPS * magnitude(*values)


def float64_twin(module):
    """A float64 copy of ``module``, to run the same path as the fp32 one for :func:`noise_floor`."""
    return copy.deepcopy(module).double()


def noise_floor(*pairs) -> float:
    """This machine's fp32 rounding of a computation, measured: the largest distance of an fp32 result to the
    same computation in float64 (``pairs`` of (fp32, float64) tensors), plus one ulp of the fp32 values."""
    return max((a.double() - b.double()).abs().max().item() + EPS * magnitude(a) for a, b in pairs)


def forward_bound(*values) -> float:
    """16 fp32 ulps of the largest output: a tiny DiT forward chains ~8 fp32 reductions (2 blocks x self-attention,
    cross-attention, FFN, plus the head), 2 ulps each, whose rounding depends on the CPU's SIMD width and on the
    kernels a shape or memory layout selects. For the golden outputs (max |v| ~ 5) this is 9e-6, inside the
    reference READMEs' stated 1e-5."""
    return fp32_bound(*values, terms=8, ulps=2)


def guided_run_bound(vmax: float, scale: float) -> float:
    """The bound on the latent of a whole sampling run whose DiT passes differ by rounding only: each pass by 16
    ulps of max |v| (:func:`forward_bound`), the guided v_u + g (v_c - v_u) by 2g + 1 times that, and the solvers
    move the latent by combinations of past velocities whose weights sum to the step size, so over the run by
    sum |dsigma| <= 1 times that."""
    return (2 * scale + 1) * 16 * EPS * vmax
