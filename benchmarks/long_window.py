"""Long video on the demo with windows longer than the model's native length: the ``continue`` windows (and the
refinement pass's) ``--extra`` latent frames longer (4 frames each), so a 161-frame video has fewer windows and
seams, each DiT call past the length it was trained on by that much. The idea: the size and pace wander a little
at every continued window, so fewer windows should wander less, if the DiT holds up at the longer window. An
experiment, not an option of the package: docs/long_video_log.md reports it beside the shipped way.

    python benchmarks/long_window.py --extra 4 --prompts bounce --seeds 2 --first_seed 0
    python benchmarks/long_window.py --extra -2 --prompts bounce       # shorter: less of the future per window

Each run: ``openwan bench long``'s measurement (openwan.demo.long_bench, over the windows the run used) of the
default method (``continue``, its expert and refinement pass) at 161 frames, 20 steps, one thread; prints the videos
meeting each target and writes ``--json``.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from long_experiment import add_options, demo_pipeline, run  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--extra", type=int, default=4, help="latent frames added to the native window (negative: "
                                                           "taken from it)")
    add_options(ap)
    a = ap.parse_args(argv)
    pipe = demo_pipeline()
    cls = type(pipe)
    shipped = cls._plan_long_video
    ratio = pipe.vae.temporal_ratio

    def plan(self, job, prompt, native, opts):
        return shipped(self, job, prompt, native + ratio * a.extra, opts)
    cls._plan_long_video = plan
    return run(pipe, a, {"extra": a.extra})


if __name__ == "__main__":
    raise SystemExit(main())
