"""A LoRA fine-tuning walk-through on the embedded demo model, start to finish on a CPU.

1. make a small captioned video set from the demo's own world (here: clips of one held-out combination,
   "a red circle moving to the left", which the shipped model never saw in training);
2. fine-tune a LoRA on it (the latents and prompts are encoded once into a cache, then the DiT trains);
3. load the LoRA into the demo pipeline and generate the same prompt and seed without and with it.

    python examples/train_lora_demo.py                    # 200 steps at batch 4: several minutes on a CPU
    python examples/train_lora_demo.py --steps 5          # just the mechanics (seconds)

Outputs in --work (default runs/lora-demo): data/ (mp4 + captions.csv), train/ (loss.csv, checkpoints/,
lora.safetensors in diffusers' format, lora_comfyui.safetensors), before.mp4 and after.mp4. The same run from
the command line: write the config below as YAML and run `openwan train --config lora.yaml` (docs/training.md).
"""
import argparse
import sys
from pathlib import Path

from openwan.demo import DEMO_SAMPLE

FRAMES, FPS = DEMO_SAMPLE.frame_num, DEMO_SAMPLE.fps          # the shipped demo's clips: 33 frames, 128 px, 16 fps
SIZE = int(DEMO_SAMPLE.size.split("*")[0])


def make_dataset(folder: Path, attributes, clips: int, seed: int = 0) -> Path:
    """Render `clips` clips of one (color, shape, motion) from the demo's world, with their captions."""
    from openwan.demo import world
    from openwan.video import write_video
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,caption"]
    for i in range(clips):
        clip = world.make_clip(seed + i, attributes=[attributes])
        frames = world.render_clip(clip, size=SIZE, frames=FRAMES)    # uint8 [33, 128, 128, 3]: the demo's own
        write_video(frames, folder / f"clip{i:03d}.mp4", fps=FPS, overwrite=True)
        rows.append(f'clip{i:03d}.mp4,"{clip.caption}"')
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")
    return folder / "captions.csv"


def lora_config(captions: Path, out: Path, steps: int, batch_size: int = 4) -> dict:
    from openwan.demo import demo_checkpoint_dir
    return {
        "model": {"path": str(demo_checkpoint_dir()), "dtype": "fp32"},
        "data": {"file": str(captions), "buckets": [[FRAMES, SIZE, SIZE]], "fps": FPS, "cache_dir": str(out / "cache")},
        "optimizer": {"lr": 5e-4, "weight_decay": 0.0},
        "schedule": {"type": "constant", "warmup_steps": 0},
        "timesteps": {"distribution": "logit_normal", "shift": 3.0},     # the demo samples with shift 3
        "lora": {"rank": 8, "alpha": 8, "targets": ["q", "k", "v", "o", "ffn.0", "ffn.2"]},
        "steps": steps, "batch_size": batch_size, "checkpoint_every": steps, "validate_every": 0,
        "output_dir": str(out), "seed": 0, "resume": "none", "lora_formats": ["diffusers", "comfyui"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/lora-demo", help="folder for the data, the run and the videos")
    ap.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    ap.add_argument("--clips", type=int, default=16, help="training clips to render (default 16)")
    ap.add_argument("--sample_steps", type=int, default=None, help="sampling steps of the videos (default 30)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest for the demo)")
    a = ap.parse_args(argv)
    if a.steps < 1 or a.clips < 1:
        ap.error("--steps and --clips must be >= 1")
    import torch

    import openwan
    from openwan.training import load_lora, train_from_config
    torch.set_num_threads(a.threads)
    work = Path(a.work)
    target = ("red", "circle", "left")
    prompt = "a red circle moving to the left"

    captions = make_dataset(work / "data", target, a.clips)
    print(f"1. {a.clips} clips of {prompt!r} in {captions.parent}")
    summary = train_from_config(lora_config(captions, work / "train", a.steps, min(4, a.clips)))
    print(f"2. trained {summary['step']} steps; LoRA in {work / 'train' / 'lora.safetensors'}")

    pipe = openwan.load_pipeline("demo", progress=False)
    kw = dict(seed=0, sample_steps=a.sample_steps, overwrite=True)
    pipe(prompt, output_path=work / "before.mp4", **kw)
    load_lora(pipe.dit, work / "train" / "lora.safetensors", strength=1.0)
    pipe(prompt, output_path=work / "after.mp4", **kw)
    print(f"3. {work / 'before.mp4'} (shipped model) and {work / 'after.mp4'} (with the LoRA), same seed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
