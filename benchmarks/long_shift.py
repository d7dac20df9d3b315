"""Long video on the demo at another sampling shift: every window (and the refinement pass) sampled with
``sample_shift`` ``--shift`` instead of the demo's 3, which moves the steps toward the high noise levels (a larger
shift), where a window's layout and motion are decided, or toward the low ones (a smaller). An experiment, not an
option of the package (``--sample_shift`` is one of ``openwan generate``): docs/long_video_log.md reports it.

    python benchmarks/long_shift.py --shift 5 --prompts bounce --seeds 2

Each run: ``openwan bench long``'s measurement (openwan.demo.long_bench) of the default method (``continue``, its
expert and refinement pass) at 161 frames, 20 steps, one thread; prints the videos meeting each target and writes
``--json``.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from long_experiment import add_options, demo_pipeline, run  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shift", type=float, default=5.0, help="the sampling shift (the demo's: 3)")
    add_options(ap)
    a = ap.parse_args(argv)
    return run(demo_pipeline(), a, {"shift": a.shift}, sample_shift=a.shift)


if __name__ == "__main__":
    raise SystemExit(main())
