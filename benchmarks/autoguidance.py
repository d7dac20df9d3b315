"""Long video and extension on the demo with autoguidance on the continued windows (after Karras et al. 2024,
"Guiding a diffusion model with a bad version of itself"): each continued window's velocity pushed away from what
a weaker model of the same task draws, ``v = v_bad + w (v_good - v_bad)``. ``v_good`` is the shipped call (the
continuation expert, the carried frames clean at timestep 0, classifier-free guidance as shipped); ``v_bad`` the
main DiT, the expert's starting point before its continuation training, given exactly the same inputs (it saw the
continuation mode in a tenth of its last phase's samples). w = 1 is the shipped sampler. Why: both DiTs draw the
world's motions at about half its pace, with a larger, softer object, the look of a model averaging the futures it
cannot tell apart; guiding away from a worse model of the same task is what autoguidance offers against that. An
experiment, not part of the package: docs/long_video_log.md reports it.

    python benchmarks/autoguidance.py --w 1.5 --prompts bounce --seeds 2 --first_seed 0
    python benchmarks/autoguidance.py --w 1.5 --mode extend --seeds 2

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


class AutoGuided(Wrapper):
    """``inner`` (a window's guided denoiser) extrapolated away from ``bad`` (another DiT's guided denoiser on the
    same inputs) by ``w`` on the steps whose noise level is above ``above``."""

    def __init__(self, inner, bad, w: float, above: float = 0.0):
        super().__init__(inner)
        self.bad, self.w, self.above = bad, w, above

    def __call__(self, x, step):
        v = self.inner(x, step)
        if float(step.sigma) <= self.above:
            return v
        v_bad = self.bad(x, step)
        return v_bad + self.w * (v - v_bad)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--w", type=float, default=1.5, help="autoguidance (1: the shipped sampler)")
    ap.add_argument("--above", type=float, default=0.0, help="guide only the steps whose noise level is above this "
                                                             "(0: every step)")
    ap.add_argument("--first", type=float, default=1.0,
                    help="autoguidance on the first window too (1: none), away from --first_bad")
    ap.add_argument("--first_bad", default="training_state/demo2/step-00003883/ema.safetensors",
                    help="the first window's bad model: an earlier, shorter-trained EMA of the main DiT's run")
    ap.add_argument("--mode", choices=["t2v", "extend"], default="t2v")
    add_options(ap)
    a = ap.parse_args(argv)
    pipe = demo_pipeline()
    first_bad = None
    if a.first != 1:
        import copy

        from safetensors.torch import load_file
        first_bad, dtype = copy.deepcopy(pipe.dit), next(pipe.dit.parameters()).dtype
        first_bad.load_state_dict({k: v.to(dtype) for k, v in load_file(a.first_bad).items()})

    def guided(self, d, cond, guidance, windows, dit):
        if windows is not None:
            return d                        # the refinement pass
        if dit is None or dit is self.dit:  # the first window (every video here is long)
            return d if first_bad is None else AutoGuided(d, Denoiser(first_bad, cond, guidance), a.first, a.above)
        if a.w == 1:
            return d
        return AutoGuided(d, Denoiser(self.dit, cond, guidance), a.w, a.above)
    wrap_denoisers(pipe, guided)
    return run(pipe, a, {"w": a.w, "first": a.first, "above": a.above, "mode": a.mode}, extend=a.mode == "extend")


if __name__ == "__main__":
    raise SystemExit(main())
