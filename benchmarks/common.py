"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``, so this imports as ``common``)."""
from __future__ import annotations


def rss_kb(field: str) -> int | None:
    """A /proc/self/status memory field (VmRSS, VmHWM ...) in KiB; None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs``); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def add_dit_args(ap, layers: int = 2) -> None:
    """--dim --ffn-dim --heads --layers: a DiT of the 1.3B model's width with few layers by default."""
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--ffn-dim", type=int, default=8960)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--layers", type=int, default=layers)
