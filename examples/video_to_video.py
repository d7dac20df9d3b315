"""Video-to-video (SDEdit): re-noise a source video part of the way and denoise it with a new prompt.

Works with any text-to-video or TI2V model, the embedded demo included. Without --src_video the demo first makes its
own source clip (a red circle moving right) and turns it into a blue one.

    python examples/video_to_video.py                                         # demo, made-up source
    python examples/video_to_video.py --src_video in.mp4 --strength 0.7 --prompt "a blue square moving up"
    python examples/video_to_video.py --ckpt_dir ./Wan2.1-T2V-1.3B --src_video in.mp4 --size 832*480 --prompt "..."

A video file is resampled to --src_fps frames per second first (the pipeline's default is Wan's 16; give the
source's own rate, or 0 for every frame, to keep its frames as they are: the demo's clips are 16 fps).
"""
import argparse
import sys

import openwan
from openwan.checkpoints import CheckpointError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt_dir", default="demo", help="a text-to-video checkpoint folder (default: demo)")
    ap.add_argument("--src_video", default=None, help="source video (default: the demo makes one)")
    ap.add_argument("--src_fps", type=float, default=0, help="resample the source to this rate first; 0: every "
                                                            "frame as it is (default)")
    ap.add_argument("--prompt", default="a blue circle moving to the right")
    ap.add_argument("--strength", type=float, default=0.7, help="how much is re-noised, (0, 1] (default 0.7)")
    ap.add_argument("--size", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="v2v.mp4")
    a = ap.parse_args(argv)
    try:
        src = a.src_video
        if src is None:
            if a.ckpt_dir != "demo":
                raise ValueError("--src_video is required with --ckpt_dir (only the demo makes its own source)")
            t2v = openwan.load_pipeline("demo", progress=False)
            src = t2v("a red circle moving to the right", seed=a.seed, sample_steps=a.steps).frames[0]
        pipe = openwan.load_pipeline(a.ckpt_dir, task="v2v", progress=False)
        out = pipe(a.prompt, src_video=src, src_fps=a.src_fps, strength=a.strength, size=a.size,
                   sample_steps=a.steps, seed=a.seed, output_path=a.out, overwrite=True)
    except (ValueError, OSError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out.path}: {out.frames[0].shape[0]} frames, strength {a.strength}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
