"""First-last-frame-to-video: a clip that starts on one picture and ends on another (needs the FLF2V checkpoint).

    python examples/first_last_frame.py --ckpt_dir ./Wan2.1-FLF2V-14B-720P --first_frame start.png \
        --last_frame end.png --prompt "a bird lands on the branch" --size 1280*720

The size follows the first frame's aspect; give both frames the same size. Defaults: 50 steps, shift 16.
"""
import argparse
import sys

import openwan
from openwan.checkpoints import CheckpointError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt_dir", required=True, help="Wan2.1-FLF2V-14B-720P folder (official or diffusers)")
    ap.add_argument("--first_frame", required=True)
    ap.add_argument("--last_frame", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--size", default=None, help="W*H area (default: the checkpoint's)")
    ap.add_argument("--frames", type=int, default=None, help="4n+1, at least 5 (default 81)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="flf2v.mp4")
    a = ap.parse_args(argv)
    try:
        pipe = openwan.load_pipeline(a.ckpt_dir, task="flf2v", progress=False)
        out = pipe(a.prompt, first_frame=a.first_frame, last_frame=a.last_frame, size=a.size, frame_num=a.frames,
                   sample_steps=a.steps, seed=a.seed, output_path=a.out, overwrite=True)
    except (ValueError, OSError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out.path}: {out.frames[0].shape[0]} frames, seed {a.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
