"""Long video on the demo with the later windows' starting noise taken from the first window's (after FreeNoise,
Qiu et al. 2023, "noise rescheduling"): each continued window's new latent frames start from the first window's
noise at the same places in the window (``repeat``), or from those frames in an order of their own (``shuffle``,
FreeNoise's local shuffle), instead of fresh noise. The idea: a window's layout and pace come mostly from its noise,
so windows that share noise should draw the object at one size and pace. An experiment, not an option of the
package: docs/long_video_log.md reports it beside the shipped way.

    python benchmarks/long_noise.py --mode repeat --prompts bounce --seeds 2 --first_seed 0

Each run: ``openwan bench long``'s measurement (openwan.demo.long_bench) of the default method (``continue``, its
expert and refinement pass) at 161 frames, 20 steps, one thread; prints the videos meeting each target and writes
``--json``.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from long_experiment import add_options, demo_pipeline, run  # noqa: E402


def rescheduled(start: torch.Tensor, spans, mode: str, seed: int) -> torch.Tensor:
    """``start`` [C, T, H, W] with the new frames of every window after the first taken from the first window's
    noise at the same window positions (``repeat``) or a seeded permutation of them (``shuffle``)."""
    out = start.clone()
    first = start[:, spans[0][0]:spans[0][1]]
    g = torch.Generator().manual_seed(seed)
    for k in range(1, len(spans)):
        s, e = spans[k]
        shared = spans[k - 1][1] - s
        src = first[:, shared:e - s]
        if mode == "shuffle":
            src = src[:, torch.randperm(src.shape[1], generator=g)]
        out[:, s + shared:e] = src
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["repeat", "shuffle", "off"], default="repeat")
    add_options(ap)
    a = ap.parse_args(argv)
    from openwan.pipelines import long
    shipped = long.run_continued

    def run_continued(pipe, job, *args, **kw):
        if a.mode != "off" and job.given is None:
            seed = int(job.settings.get("seed", 0))
            job = replace(job, start=rescheduled(job.start, job.long.plan.spans, a.mode, seed))
        return shipped(pipe, job, *args, **kw)
    long.run_continued = run_continued
    return run(demo_pipeline(), a, {"mode": a.mode})


if __name__ == "__main__":
    raise SystemExit(main())
