"""How the demo draws one prompt's motion at its native length, beside the world's own clips of the same seeds.

Per seed: the mean step of the object's centroid (pixels a frame), its mean and smallest area (pixels) and the share of
frames it is found in (``openwan.demo.detect.track``, what ``openwan bench long`` measures long videos with), for the
world's clip and for the model's video of the same prompt. ``--dit continuation`` draws the video with the demo's
continuation expert in place of its main DiT (from noise: no carried frames), to see which DiT draws a motion as the
world does (docs/long_video_log.md, "The continuation expert on every window").

    python benchmarks/native_motion.py --prompt "a purple circle circling" --seeds 8
    python benchmarks/native_motion.py --prompt "a purple circle circling" --seeds 8 --dit continuation
    python benchmarks/native_motion.py --prompt "a purple circle circling" --seeds 8 --ckpt_dir runs/CAND   # a candidate
    python benchmarks/native_motion.py --prompt "a red circle bouncing sideways" --prompt_extend off   # as written
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def motion_stats(video: np.ndarray) -> dict:
    """Mean centroid step (px / frame), mean and smallest area (px) over the frames it is found in, share found."""
    from openwan.demo import detect
    t = detect.track(video)
    step = np.hypot(np.diff(t["cx"]), np.diff(t["cy"]))
    area = t["area"][t["found"]]
    return {"speed": float(np.nanmean(step)) if np.isfinite(step).any() else float("nan"),
            "area": float(area.mean()) if area.size else 0.0, "min_area": float(area.min()) if area.size else 0.0,
            "found": float(t["found"].mean())}


def with_dit(folder: str, tmp: str, src: str) -> str:
    """The demo folder ``src`` with its expert in ``folder`` as its main DiT (experts dropped)."""
    out = os.path.join(tmp, "demo")
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("*_model"))
    shutil.copy(os.path.join(src, folder, "diffusion_pytorch_model.safetensors"), out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt", default="a purple circle circling")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dit", choices=("main", "continuation"), default="main",
                    help="the DiT that draws the videos: the demo's main one or its continuation expert")
    ap.add_argument("--prompt_extend", choices=("world", "off"),
                    help="the prompt extension (default: the model's, the demo's world, which writes a motion's "
                         "phrase the canonical way); off: the prompt as given")
    ap.add_argument("--ckpt_dir", help="a demo checkpoint folder (a candidate's export) instead of the shipped demo")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    from openwan.demo.long_bench import world_source
    from openwan.pipelines import load_pipeline
    with tempfile.TemporaryDirectory() as tmp:
        from openwan.demo import demo_checkpoint_dir
        src = a.ckpt_dir or str(demo_checkpoint_dir())
        ckpt = src if a.dit == "main" else with_dit("continuation_model", tmp, src)
        pipe = load_pipeline(ckpt, progress=False)
        native = pipe.defaults().frame_num
        size = int(pipe.defaults().size.split("*")[0])
        print(f"{a.prompt!r}, {native} frames, {a.steps} steps, DiT: {a.dit}")
        print(f"{'seed':>4}  {'world: speed':>12} {'area':>6} {'min':>6} {'found':>6}   "
              f"{'model: speed':>12} {'area':>6} {'min':>6} {'found':>6}")
        rows = []
        for seed in range(a.seeds):
            w = motion_stats(world_source(a.prompt, seed, native, size))
            m = motion_stats(pipe(a.prompt, frame_num=native, seed=seed, sample_steps=a.steps,
                                   prompt_extend=a.prompt_extend).frames[0])
            rows.append((w, m))
            print(f"{seed:4d}  {w['speed']:12.2f} {w['area']:6.0f} {w['min_area']:6.0f} {w['found']:6.2f}   "
                  f"{m['speed']:12.2f} {m['area']:6.0f} {m['min_area']:6.0f} {m['found']:6.2f}", flush=True)
    for who, k in (("world", 0), ("model", 1)):
        sp = [r[k]["speed"] for r in rows]
        print(f"{who}: speed {min(sp):.2f}-{max(sp):.2f} px a frame, found in >= 95% of the frames in "
              f"{sum(r[k]['found'] >= 0.95 for r in rows)} of {len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
