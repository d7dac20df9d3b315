"""Where the work runs: the compute dtype and the number of CPU threads, chosen from what the machine has.

dtype: ``auto`` is bf16 where bf16 matrix multiplication is fast - CUDA devices that support it, and CPUs with
AMX tiles (Intel Sapphire Rapids and later: bf16 GEMM ~6x fp32 there) - and fp32 elsewhere. AVX512-BF16 alone is
not enough: on such a CPU without AMX (measured on a Xeon with avx512_bf16, one thread, 1024x1536x1536) bf16
GEMM ran at 71 GFLOP/s against fp32's 114, so bf16 would only lose accuracy and time.

threads: a model whose forward pass is a few GFLOP runs fastest on one thread (the per-op overhead of a thread
pool dominates, and on a busy 2-core machine a second thread waits for a core: the embedded demo's 30 steps took
93 s with torch's default threads and 8 s with one). Bigger work gets torch's default (all cores).
"""
from __future__ import annotations

import functools
import os
from typing import Iterable, Optional, Union

import torch

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
# below this many FLOPs per DiT forward pass one thread is faster than a pool (the demo DiT: ~1 GFLOP)
SMALL_WORK_FLOPS = 2e10


@functools.lru_cache(maxsize=1)
def cpu_features() -> frozenset:
    """The CPU's feature flags (Linux /proc/cpuinfo), plus what torch itself detects."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    probes = {"amx_tile": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
    for flag, fn in probes.items():
        probe = getattr(torch.cpu, fn, None)
        try:
            if probe is not None and probe():
                flags.add(flag)
        except Exception:  # pragma: no cover - a torch build without the probe
            pass
    return frozenset(flags)


def fast_bf16(device: Union[str, torch.device], features: Optional[Iterable[str]] = None) -> tuple[bool, str]:
    """Whether bf16 matmul is faster than fp32 on ``device``, and why (one line)."""
    device = torch.device(device)
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "CUDA device with bf16 support" if ok else "CUDA device without bf16 support"
    if device.type != "cpu":
        return False, f"{device.type} device: no measured bf16 advantage"
    flags = set(cpu_features() if features is None else features)
    if "amx_tile" in flags and ("amx_bf16" in flags or "avx512_bf16" in flags):
        return True, "CPU with AMX bf16 tiles"
    if "avx512_bf16" in flags:
        return False, "CPU with AVX512-BF16 but no AMX (bf16 GEMM is slower than fp32 there)"
    return False, "CPU without bf16 matrix units"


@functools.lru_cache(maxsize=8)
def _bf16_matmul_in_fp32(device_type: str, setting: str) -> bool:
    if setting not in ("auto", "native", "fp32"):
        raise ValueError(f"OPENWAN_BF16_MATMUL must be auto, native or fp32, got {setting!r}")
    if setting != "auto":
        return setting == "fp32"
    return device_type == "cpu" and not fast_bf16("cpu")[0]


def bf16_matmul_in_fp32(device: Union[str, torch.device]) -> bool:
    """Whether bf16 inference matmuls (linear layers, attention) on ``device`` run as fp32 ones.

    True on CPUs without bf16 matrix units (:func:`fast_bf16`), where torch's bf16 GEMM is slower than
    its fp32 GEMM (here 28 against 74 GFLOP/s at 1560x1536x1536, one thread): the bf16 operands are
    widened to fp32 (exactly), multiplied with fp32 sums and the result rounded to bf16 - what a bf16
    GEMM computes (bf16 products are exact in fp32; only the summation order differs). The weights stay
    stored in bf16 (one layer's weight is widened at a time). ``OPENWAN_BF16_MATMUL=native`` keeps torch's
    bf16 kernels, ``fp32`` forces the widening, ``auto`` (default) decides by the CPU.
    """
    return _bf16_matmul_in_fp32(torch.device(device).type, os.environ.get("OPENWAN_BF16_MATMUL", "auto"))


def resolve_dtype(dtype: Union[None, str, torch.dtype], device: Union[str, torch.device],
                  features: Optional[Iterable[str]] = None) -> tuple[torch.dtype, str]:
    """The compute dtype for ``dtype`` (``auto``, a name, a torch dtype, or None = auto) on ``device``,
    and a one-line reason to print."""
    if isinstance(dtype, torch.dtype):
        return dtype, "as requested"
    name = "auto" if dtype is None else str(dtype).lower()
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPE_CHOICES)}")
        return DTYPES[name], "as requested"
    fast, why = fast_bf16(device, features)
    return (torch.bfloat16 if fast else torch.float32), f"auto: {why}"


# A model smaller than this gains nothing from bf16 on a CPU, even with AMX: its matrices are too small for bf16
# GEMM to pay for the casts (the demo DiT, 1.8M parameters: a training step 2.9-3.0 s fp32, 3.5-4.4 s bf16 autocast;
# the 1.3B architecture with 2 layers, 119M: 12.0 s fp32, 6.3 s bf16 autocast, on an AMX Xeon, one thread).
BF16_MIN_PARAMS = 50_000_000


def training_precision(precision: str, device: Union[str, torch.device], num_params: int,
                       features: Optional[Iterable[str]] = None) -> tuple[str, str]:
    """The training precision for ``precision`` (``auto``, ``fp32`` or ``bf16``) and a one-line reason: ``auto``
    is bf16 autocast on CUDA and on CPUs with fast bf16 (:func:`fast_bf16`) for models of at least
    :data:`BF16_MIN_PARAMS` parameters, fp32 otherwise."""
    if precision != "auto":
        return precision, "as requested"
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16", "auto: CUDA"
    fast, why = fast_bf16(device, features)
    if not fast:
        return "fp32", f"auto: {why}"
    if num_params < BF16_MIN_PARAMS:
        return "fp32", f"auto: a small model ({num_params / 1e6:.1f}M parameters: bf16 gains nothing at its GEMM sizes)"
    return "bf16", f"auto: {why}"


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def forward_flops(num_params: int, tokens: int) -> float:
    """~FLOPs of one transformer forward pass: two per parameter per token (attention's own is smaller here)."""
    return 2.0 * num_params * tokens


def pick_threads(flops: Optional[float] = None, requested: Optional[int] = None) -> Optional[int]:
    """Threads for work of ``flops`` per model call: ``requested`` if given (must be >= 1), 1 for small work,
    None (torch's default, all cores) otherwise. ``OPENWAN_THREADS`` overrides the choice."""
    if requested is None and os.environ.get("OPENWAN_THREADS"):
        try:
            requested = int(os.environ["OPENWAN_THREADS"])
        except ValueError:
            raise ValueError(f"OPENWAN_THREADS must be an integer >= 1, got {os.environ['OPENWAN_THREADS']!r}")
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"threads must be an integer >= 1, got {requested!r}")
        return requested
    if flops is not None and flops < SMALL_WORK_FLOPS:
        return 1
    return None


def apply_threads(flops: Optional[float] = None, requested: Optional[int] = None) -> int:
    """Set torch's CPU threads by :func:`pick_threads`; returns the number in force."""
    n = pick_threads(flops, requested)
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
    return torch.get_num_threads()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a local process group's rendezvous)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
