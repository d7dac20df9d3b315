"""The demo recipe's ``latents`` stage with every looping clip faster than the world: its pace the world's times a
factor drawn log-uniform in [``--pace_low``, ``--pace_spread``] (the stage's own ``--pace_spread`` draws from
[1 / spread, spread], around the world's pace). An experiment, not an option of the recipe: docs/long_video_log.md,
"A continuation expert trained on faster clips", reports it (not kept).

    python benchmarks/faster_clips.py --pace_low 1.2 --stage latents --work_dir runs/q43 --threads 1 \\
        --init_vae openwan/demo/assets/demo_checkpoint --seed 43 --size 128 --frames 33 --extend 16 \\
        --extend_classic --still --two_object_prob 0 --looping_share 0.5 --n_clips 640 --pace_spread 2.4

Every argument but ``--pace_low`` goes to ``python -m openwan.demo.train`` unchanged; classic clips are as without.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    ap.add_argument("--pace_low", type=float, required=True, help="the smallest pace factor (> 0)")
    a, rest = ap.parse_known_args(argv)
    if not a.pace_low > 0:
        raise SystemExit(f"--pace_low must be > 0, got {a.pace_low}")
    import openwan.demo.latents as latents
    from openwan.demo import world
    from openwan.demo.train import main as train

    def paced(clip, rng, spread):
        factor = float(np.exp(rng.uniform(np.log(a.pace_low), np.log(spread))))
        return replace(clip, objects=tuple(replace(o, period=o.period / factor) if o.motion in world.LOOPING_MOTIONS
                                           else o for o in clip.objects))

    latents.paced = paced            # encode_latents draws each looping clip's pace through this module function
    return train(rest)


if __name__ == "__main__":
    sys.exit(main())
