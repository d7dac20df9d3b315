"""The measurement floor of ``openwan bench long``'s seam target: how far the detector's centroid moves from one
frame to the next on world clips that the demo VAE only encodes and decodes (no DiT), per motion.

A seam jump is compared with the largest in-window step (docs/long_video.md); for a still object both are tiny,
and this says how much of them the VAE round trip and the detector alone make (a rendered still clip moves by 0).

    python benchmarks/centroid_floor.py --clips 4 --threads 1
"""
from __future__ import annotations

import argparse

import numpy as np
import torch


def largest_steps(frames: np.ndarray) -> float:
    """The largest frame-to-frame centroid step (pixels) of the object :func:`openwan.demo.detect.track` finds."""
    from openwan.demo import detect
    tr = detect.track(frames)
    cx, cy = np.asarray(tr["cx"], float), np.asarray(tr["cy"], float)
    return float(np.nanmax(np.hypot(np.diff(cx), np.diff(cy))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=4, help="clips per motion")
    ap.add_argument("--motions", default="still,right,up,bounce_lr")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    from openwan.demo import world
    from openwan.pipelines import load_pipeline
    torch.set_num_threads(a.threads)
    pipe = load_pipeline("demo", progress=False)
    size, frames = int(pipe.defaults().size.split("*")[0]), pipe.defaults().frame_num
    print(f"largest frame-to-frame centroid step (px, {size}-px frames, {frames} frames), per clip:")
    for motion in a.motions.split(","):
        rendered, round_trip = [], []
        for i in range(a.clips):
            rng = np.random.default_rng([7, i, len(motion)])
            clip = world.sample_clip(rng, split="train", n_objects=1, motions=(motion,))
            video = world.render_clip(clip, size=size, frames=frames)
            with torch.inference_mode():
                y = pipe.vae.decode(pipe.vae.encode(world.to_tensor(video)[None].to(pipe.vae.dtype)))[0].float()
            decoded = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()
            rendered.append(largest_steps(video))
            round_trip.append(largest_steps(decoded))
        print(f"  {motion:10s} rendered {[round(v, 2) for v in rendered]}  VAE round trip "
              f"{[round(v, 2) for v in round_trip]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
