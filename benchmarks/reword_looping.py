"""A demo latents file with its bounces' captions reworded to share no direction word with a classic motion.

The check of docs/long_video_log.md, "The looping clips with more classic ones" ("Is it the shared words?"): a main
DiT that learns the looping clips draws "moving down" as "bouncing up and down"; are the words the two kinds of
captions share ("down", "right") the cause? This writes a copy of a latents file (``--stage latents`` /
``merge-latents``) whose left-right and up-down bounces are captioned only with the phrases below (each caption's
motion phrase replaced by one drawn from them), their text features encoded by the demo's text encoder; every other
clip, caption and feature is kept. Train on it as on any latents file (its ``vae`` folder: a link to the source's).

    python benchmarks/reword_looping.py runs/nx/latents.pt runs/ny/latents.pt
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REWORDED = {"bounce_lr": ("bouncing from side to side", "bouncing sideways", "bouncing back and forth"),
            "bounce_ud": ("bouncing vertically", "bobbing vertically", "hopping vertically")}


def reword(captions: list, motion: str, rng) -> list:
    """A bounce clip's captions with each one's motion phrase (the longest of the world's for ``motion`` that it
    holds) replaced by one of :data:`REWORDED`; other motions' captions as they are."""
    from openwan.demo.world_captions import MOTION_PHRASES
    if motion not in REWORDED:
        return captions
    out = []
    for c in captions:
        phrase = next((p for p in sorted(MOTION_PHRASES[motion], key=len, reverse=True) if p in c), None)
        if phrase is None:
            raise ValueError(f"no {motion} phrase in the caption {c!r}")
        out.append(c.replace(phrase, str(rng.choice(REWORDED[motion]))))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="a latents file")
    ap.add_argument("out", help="the reworded copy (written atomically)")
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args(argv)
    import numpy as np
    import torch
    from openwan.demo.latents import encode_captions
    d = torch.load(a.source, weights_only=False)
    rng = np.random.default_rng(a.seed)
    d["captions"] = [reword(caps, attrs[0][2] if len(attrs) == 1 else "", rng)
                     for caps, attrs in zip(d["captions"], d["attributes"])]
    new = sorted({c for caps in d["captions"] for c in caps} - set(d["text"]))
    if new:
        d["text"].update(encode_captions([new]))
    tmp = a.out + ".tmp"
    torch.save(d, tmp)
    os.replace(tmp, a.out)
    print(f"{a.out}: {len(new)} new captions encoded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
