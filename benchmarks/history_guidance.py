"""Long video and extension on the demo with history guidance on the continued windows (after Song et al. 2025,
"History-guided video diffusion"): each continued window's velocity pushed away from what the model draws without
the carried frames, ``v = v_free + w (v_history - v_free)`` on the window's new frames. ``v_history`` is the shipped
call (the continuation expert, the carried frames clean at timestep 0); ``v_free`` the main DiT on the new frames
alone, plain text-to-video (the mode it was trained in; the expert never saw a window without carried frames).
w = 1 is the shipped sampler. An experiment, not part of the package: docs/long_video_log.md reports it.

    python benchmarks/history_guidance.py --w 1.5 --mode extend --seeds 2 --first_seed 0
    python benchmarks/history_guidance.py --w 1.5 --mode t2v --prompts bounce --seeds 2

Each run: ``openwan bench long``'s measurement (openwan.demo.long_bench) at 161 frames, 20 steps, one thread, the
default method (continue, the expert, the refinement pass: the pass is not guided so); prints the videos meeting
each target and writes ``--json``.
"""
from __future__ import annotations

import argparse
import os
import sys

from openwan.denoiser import Denoiser, Wrapper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from long_experiment import add_options, demo_pipeline, run, wrap_denoisers  # noqa: E402


class HistoryGuided(Wrapper):
    """``inner`` (the continued window's guided denoiser: carried frames clean, timestep 0) combined with ``free``
    (the main DiT's guided denoiser, text-to-video) run on the new frames alone."""

    def __init__(self, inner, free, carried: int, w: float, above: float = 0.0):
        super().__init__(inner)
        self.free, self.carried, self.w, self.above = free, carried, w, above

    def __call__(self, x, step):
        v = self.inner(x, step)
        if float(step.sigma) <= self.above:
            return v
        c = self.carried
        v_free = self.free(x[:, c:], step)
        out = v.clone()
        out[:, c:] = v_free + self.w * (v[:, c:] - v_free)
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--w", type=float, default=1.5, help="history guidance (1: the shipped sampler)")
    ap.add_argument("--above", type=float, default=0.0, help="guide only the steps whose noise level is above this "
                                                             "(0: every step)")
    ap.add_argument("--mode", choices=["t2v", "extend"], default="extend")
    add_options(ap)
    a = ap.parse_args(argv)
    pipe = demo_pipeline()

    def guided(self, d, cond, guidance, windows, dit):
        first = getattr(cond, "first_frame", None)
        if dit is None or dit is self.dit or first is None or windows is not None or a.w == 1:
            return d                        # not a continued window (the first window, the pass, a native video)
        free = Denoiser(self.dit, cond, guidance)       # the main DiT, no clean frames: text-to-video
        return HistoryGuided(d, free, first.shape[1], a.w, a.above)
    wrap_denoisers(pipe, guided)
    return run(pipe, a, {"w": a.w, "above": a.above, "mode": a.mode}, extend=a.mode == "extend")


if __name__ == "__main__":
    raise SystemExit(main())
