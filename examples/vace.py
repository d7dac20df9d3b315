"""VACE: generate under a control video, a mask (inpaint / outpaint) and/or reference images
(needs a VACE checkpoint; the embedded demo model has no VACE layers).

    # follow a control video (depth, pose, gray ...)
    python examples/vace.py --ckpt_dir ./Wan2.1-VACE-1.3B --src_video depth.mp4 --prompt "a dancer on a stage"
    # regenerate the white region of a mask video, with a reference picture for the new subject
    python examples/vace.py --ckpt_dir ./Wan2.1-VACE-1.3B --src_video street.mp4 --src_mask mask.mp4 \
        --src_ref_images dog.png --prompt "a dog walks along the street"

Source videos are resampled to --src_fps (default 16, Wan's; 0 keeps every frame).
"""
import argparse
import sys

import openwan
from openwan.checkpoints import CheckpointError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt_dir", required=True, help="Wan2.1-VACE-1.3B / -14B folder (official or diffusers)")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--src_video", default=None, help="control or source video")
    ap.add_argument("--src_mask", default=None, help="mask video or image: white = generate")
    ap.add_argument("--src_ref_images", default=None, help="reference images, comma separated")
    ap.add_argument("--src_fps", type=float, default=None)
    ap.add_argument("--context_scale", type=float, default=1.0, help="strength of the control (default 1)")
    ap.add_argument("--size", default=None, help="W*H (default: the checkpoint's)")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="vace.mp4")
    a = ap.parse_args(argv)
    if a.src_mask and not a.src_video:
        ap.error("--src_mask needs --src_video (the mask marks which part of it to regenerate)")
    try:
        pipe = openwan.load_pipeline(a.ckpt_dir, task="vace", progress=False)
        out = pipe(a.prompt, src_video=a.src_video, src_mask=a.src_mask, src_ref_images=a.src_ref_images,
                   src_fps=a.src_fps, context_scale=a.context_scale, size=a.size, frame_num=a.frames,
                   sample_steps=a.steps, seed=a.seed, output_path=a.out, overwrite=True)
    except (ValueError, OSError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out.path}: {out.frames[0].shape[0]} frames, seed {a.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
