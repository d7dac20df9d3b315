"""Long video on the demo with a stochastic sampler in place of UniPC: a flow-matching Euler ancestral step,
x0 and the noise predicted from the velocity, the next sample ``(1 - t) x0 + t (sqrt(1 - eta^2) noise_pred +
eta fresh)`` (eta 0: plain Euler; eta 1: the "consistency" solver's full re-noising). An experiment, not a
solver of the package: docs/long_video_log.md, "A stochastic sampler", reports it beside the shipped UniPC.

    python benchmarks/long_sampler.py --eta 0.5 --prompts bounce --seeds 2 --first_seed 0
    python benchmarks/long_sampler.py --eta 0.5 --where high --prompts classic     # noise only at sigma > 0.5

Each run: ``openwan bench long``'s measurement (openwan.demo.long_bench) of the default method at 161 frames, 20
steps, one thread; prints the videos meeting each target and writes ``--json``.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from openwan import sampling
from openwan.sampling import UniPCSolver, _Solver, euler_sigmas, unipc_sigmas

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from long_experiment import add_options, demo_pipeline, run  # noqa: E402

NAME = "euler_a_experiment"


def ancestral(eta: float, where: str, pass_unipc: bool = False):
    """The stepper class: ``where`` "all" steps, "later" (not the first window's solve), or "high" (sigma > 0.5);
    ``pass_unipc``: the refinement pass (a solve whose grid starts below sigma 0.99) runs the shipped UniPC."""
    class EulerAncestral(_Solver):
        count = 0               # solves in the current call (the first is the first window's)

        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.index = EulerAncestral.count
            EulerAncestral.count += 1
            self.unipc = UniPCSolver(*a, **k) if pass_unipc and float(self.sigmas[0]) < 0.99 else None

        def step(self, v, x, i):
            if self.unipc is not None:
                return self.unipc.step(v, x, i)
            v32, x32, s, t = self._begin(v, x, i)
            x0 = x32 - s * v32
            if float(t) == 0:
                return x0.to(x.dtype)
            e = (where == "later" and self.index == 0) or (where == "high" and float(self.sigmas[i]) <= 0.5)
            k = 0.0 if e else eta
            noise = x32 + (1 - s) * v32
            dev = self.generator.device if self.generator is not None else torch.device("cpu")
            n = torch.randn(tuple(x.shape), generator=self.generator, dtype=torch.float32, device=dev).to(x.device)
            return ((1 - t) * x0 + t * ((1 - k ** 2) ** 0.5 * noise + k * n)).to(x.dtype)
    return EulerAncestral


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eta", type=float, default=0.5)
    ap.add_argument("--where", choices=["all", "later", "high"], default="all")
    ap.add_argument("--pass_solver", choices=["same", "unipc"], default="same",
                    help="the refinement pass's solver: this one, or the shipped UniPC (on UniPC's grid)")
    add_options(ap)
    a = ap.parse_args(argv)
    cls = ancestral(a.eta, a.where, a.pass_solver == "unipc")
    sampling.SOLVERS[NAME] = (cls, unipc_sigmas if a.pass_solver == "unipc" else euler_sigmas)
    pipe = demo_pipeline()
    call = type(pipe).__call__

    def counted(self, *args, **kw):
        cls.count = 0
        return call(self, *args, **kw)
    type(pipe).__call__ = counted
    return run(pipe, a, {"eta": a.eta, "where": a.where, "pass": a.pass_solver}, sample_solver=NAME)


if __name__ == "__main__":
    raise SystemExit(main())
