"""Image-to-video: animate a picture (an I2V or TI2V checkpoint, or --ckpt_dir demo: the embedded TI2V-style model).

    python examples/image_to_video.py --ckpt_dir ./Wan2.1-I2V-14B-480P --image cat.jpg \
        --prompt "the cat turns its head and yawns" --size 832*480
    python examples/image_to_video.py --ckpt_dir demo --image start.png --prompt "a red circle moving to the right"

--size picks the area; the aspect ratio is the image's. Settings left out take the checkpoint's defaults
(40 steps, shift 3.0 at 480P and 5.0 at 720P, guidance 5).
"""
import argparse
import sys

import openwan
from openwan.checkpoints import CheckpointError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt_dir", required=True, help="Wan2.1-I2V-14B-480P / -720P folder (official or diffusers)")
    ap.add_argument("--image", required=True, help="the first frame (any image file)")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--size", default=None, help="W*H area (default: the checkpoint's)")
    ap.add_argument("--frames", type=int, default=None, help="4n+1 (default 81)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--offload", choices=["none", "sequential"], default="none",
                    help="sequential: release the text encoder after use (14B on one 24-80 GB GPU)")
    ap.add_argument("--out", default="i2v.mp4")
    a = ap.parse_args(argv)
    try:
        pipe = openwan.load_pipeline(a.ckpt_dir, task="i2v", offload=a.offload, progress=False)
        out = pipe(a.prompt, image=a.image, size=a.size, frame_num=a.frames, sample_steps=a.steps, seed=a.seed,
                   output_path=a.out, overwrite=True)
    except (ValueError, OSError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out.path}: {out.settings.get('video_size', out.settings.get('size'))}, seed {a.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
