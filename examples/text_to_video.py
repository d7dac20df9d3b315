"""Text-to-video with openwan's Python API (the embedded demo model unless --ckpt_dir is given).

    python examples/text_to_video.py                                      # demo: 128x128, 33 frames, 30 steps
    python examples/text_to_video.py --prompt "a blue square moving up" --steps 10 --out square.mp4
    python examples/text_to_video.py --ckpt_dir ./Wan2.1-T2V-1.3B --size 832*480 --prompt "A cat walks on the grass"
"""
import argparse
import sys

import openwan
from openwan.checkpoints import CheckpointError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt_dir", default="demo", help="checkpoint folder, official or diffusers (default: demo)")
    ap.add_argument("--prompt", default="a red circle moving to the right")
    ap.add_argument("--size", default=None, help="W*H (default: the model's)")
    ap.add_argument("--frames", type=int, default=None, help="4n+1 (default: the model's)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="t2v.mp4", help="output .mp4 (.png for one frame)")
    a = ap.parse_args(argv)
    try:
        pipe = openwan.load_pipeline(a.ckpt_dir, progress=False)
        out = pipe(a.prompt, size=a.size, frame_num=a.frames, sample_steps=a.steps, seed=a.seed,
                   output_path=a.out, overwrite=True)
    except (ValueError, OSError, CheckpointError) as e:          # bad sizes, missing files: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    video = out.frames[0]                       # uint8 [F, H, W, 3]
    print(f"wrote {out.path}: {video.shape[0]} frames of {video.shape[2]}x{video.shape[1]}, seed {a.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
