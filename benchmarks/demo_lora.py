"""What a LoRA trained on the demo model does to its videos: for each LoRA (and the model without one), a few
prompts x seeds, and what the demo's detector sees in each video (colour, shape, motion), against the prompt.

Measures the example examples/train_demo_lora.yaml (a style: every object white): run its header, then

    python benchmarks/demo_lora.py --lora runs/demo-lora/lora.safetensors --expect_color white --threads 1

The VAE round trip of a clip on another background (why that example changes the objects, not the background):

    python benchmarks/demo_lora.py --background 20,30,110 --threads 1
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

PROMPTS = ("a red circle moving to the right", "a small blue square moving up",
           "a big green triangle moving to the left", "a yellow square moving down", "a purple circle growing",
           "a cyan triangle moving to the right")


def wanted(prompt: str) -> dict:
    """The colour, shape and motion a prompt asks for (the demo world's own parser)."""
    from openwan.demo.world_captions import parse_prompt
    a = parse_prompt(prompt)
    return {"color": a.color, "shape": a.shape, "motion": a.motion}


def run_lora(lora, seeds, steps, expect_color) -> dict:
    import openwan
    from openwan.demo.detect import detect
    from openwan.training.lora import load_lora
    from openwan.video import read_video
    pipe = openwan.load_pipeline("demo", progress=False)
    if lora:
        load_lora(pipe.dit, lora)
    hits = {"color": 0, "shape": 0, "motion": 0}
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for prompt in PROMPTS:
                path = Path(tmp) / "v.mp4"
                pipe(prompt, seed=seed, sample_steps=steps, output_path=str(path), overwrite=True)
                seen = detect(read_video(str(path))[0])
                want = {**wanted(prompt), **({"color": expect_color} if expect_color and lora else {})}
                for k in hits:
                    hits[k] += seen[k] == want[k]
                n += 1
                print(f"  {lora or 'no LoRA'} | seed {seed} | {prompt} -> {seen['color']} {seen['shape']} "
                      f"{seen['motion']}", flush=True)
    return {"videos": n, **hits}


def round_trip(background) -> None:
    """PSNR of world clips on ``background`` through the demo VAE's encode-decode, and the background it returns."""
    import dataclasses

    import openwan
    from openwan.demo import world
    vae = openwan.load_pipeline("demo").vae
    for bg in ((32, 32, 32), tuple(background)):
        psnr, back = [], None
        for seed in range(3):
            clip = dataclasses.replace(world.make_clip(seed), background=bg)
            v = world.render_clip(clip, size=128, frames=33)
            x = torch.from_numpy(v).float().permute(3, 0, 1, 2)[None] / 127.5 - 1
            with torch.no_grad():
                y = vae.decode(vae.encode(x))
            r = ((y.clamp(-1, 1) + 1) * 127.5)[0].permute(1, 2, 3, 0).numpy()
            psnr.append(10 * np.log10(255 ** 2 / ((r - v.astype(np.float32)) ** 2).mean()))
            back = np.median(r.reshape(-1, 3), 0)
        print(f"background {bg}: round trip {np.mean(psnr):.1f} dB PSNR (3 clips), comes back as "
              f"({', '.join(f'{c:.0f}' for c in back)})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lora", action="append", default=[], help="a LoRA file (repeat for several)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--expect_color", default=None, help="the colour a LoRA's videos should have (a style)")
    ap.add_argument("--background", default=None, help="R,G,B: only the VAE round trip of clips on it")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.background:
        round_trip([int(c) for c in a.background.split(",")])
        return 0
    rows = [(lora or "no LoRA", run_lora(lora, range(a.seeds), a.steps, a.expect_color)) for lora in [None, *a.lora]]
    print("| weights | videos | colour | shape | motion |\n|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['videos']} | {r['color']} | {r['shape']} | {r['motion']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
