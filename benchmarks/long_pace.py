"""Long video on the demo with the DiTs' frame positions stretched: every RoPE angle of the frame axis times
``--frame_scale``, so consecutive latent frames sit further apart in the time the models learned (> 1) or closer
(< 1). A pace knob: the models draw about the world's displacement per unit of that time, so a stretch moves the
object further per frame. An experiment, not an option of the package: docs/long_video_log.md reports it.

    python benchmarks/long_pace.py --frame_scale 1.4 --prompts bounce --seeds 2

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


def stretch_frame_positions(scale: float) -> None:
    """Every DiT made or called from now on: its frame-axis RoPE angles times ``scale`` (the tables are built per
    grid by openwan.models.dit through ``rope_angles``)."""
    import openwan.models.dit as dit
    from openwan.models.dit_layers import rope_angles, rope_axis_dims

    def stretched(grid, head_dim, theta=10000.0, device=None, riflex=None):
        angles = rope_angles(grid, head_dim, theta, device, riflex).clone()
        angles[:, :rope_axis_dims(head_dim)[0] // 2] *= scale        # the frame axis comes first
        return angles
    dit.rope_angles = stretched


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frame_scale", type=float, default=1.4, help="the frame positions' stretch (1: as trained)")
    add_options(ap)
    a = ap.parse_args(argv)
    stretch_frame_positions(a.frame_scale)
    return run(demo_pipeline(), a, {"frame_scale": a.frame_scale})


if __name__ == "__main__":
    raise SystemExit(main())
