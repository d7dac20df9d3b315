"""Does a demo DiT read each attribute from its prompt? Its loss with the right caption against wrong ones.

    python benchmarks/demo_text_use.py runs/demo2/dit/checkpoints/step-00003883 --latents runs/demo2/latents.pt
    python benchmarks/demo_text_use.py openwan/demo/assets/demo_checkpoint --latents runs/demo1/latents.pt

For ``--n`` one-object clips of a translation motion (left, right, up, down) the text-to-video flow-matching
loss of the checkpoint's EMA weights (``ema.safetensors``, or a ``.safetensors`` file; DEMO_V2_DIT) is measured
on the clip's first window with four captions, the same noise for all four: the right one ("a red circle
moving to the right"), and the same with the opposite motion, with another color, with another shape. A model
that reads an attribute from the text does worse with it wrong: the ratio wrong / right per attribute and per
noise level t is the report (1.00: the attribute is ignored). The sampled videos' motion follows the prompt
only if the motion ratio is well above 1 at high t, where the trajectory is decided.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
PHRASE = {"left": "moving to the left", "right": "moving to the right", "up": "moving up", "down": "moving down"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a Trainer checkpoint folder (holding ema.safetensors), a .safetensors file, "
                    "or a model folder (config.json: e.g. openwan/demo/assets/demo_checkpoint)")
    ap.add_argument("--latents", default="runs/demo2/latents.pt")
    ap.add_argument("--n", type=int, default=16, help="clips")
    ap.add_argument("--ts", default="0.3,0.6,0.9", help="noise levels sigma")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from openwan.checkpoints import read_safetensors
    from openwan.configs import DEMO_V2_DIT
    from openwan.demo import DEMO_DIR, world
    from openwan.demo.latents import windows
    from openwan.models.dit import WanModel
    from openwan.models.text_encoder import TextEncoder
    path = Path(a.checkpoint)
    if (path / "config.json").exists():                      # a model folder (the shipped demo: DEMO_DIR)
        model = WanModel.from_pretrained(path).eval()
    else:
        model = WanModel(DEMO_V2_DIT).eval()
        model.load_state_dict(read_safetensors(path / "ema.safetensors" if path.is_dir() else path))
    _, ph, pw = model.config.patch_size
    encoder = TextEncoder.from_pretrained(DEMO_DIR)
    data = torch.load(a.latents, weights_only=False)
    colors, shapes = list(world.COLORS), list(world.SHAPES)
    ts = [float(t) for t in a.ts.split(",")]
    g = torch.Generator().manual_seed(0)
    kinds = ("right", "motion", "color", "shape")
    loss = {(k, t): 0.0 for k in kinds for t in ts}
    n = 0
    for z, attrs in zip(data["latents"], data["attributes"]):
        if len(attrs) != 1 or attrs[0][2] not in OPPOSITE:
            continue
        c, s, m = attrs[0]
        x0 = windows(z, data["frames"])[0][0][None].float()
        caps = {"right": f"a {c} {s} {PHRASE[m]}", "motion": f"a {c} {s} {PHRASE[OPPOSITE[m]]}",
                "color": f"a {colors[(colors.index(c) + 3) % len(colors)]} {s} {PHRASE[m]}",
                "shape": f"a {c} {shapes[(shapes.index(s) + 1) % len(shapes)]} {PHRASE[m]}"}
        with torch.no_grad():
            ctx = {k: encoder.encode([v])[0] for k, v in caps.items()}
            for t in ts:
                noise = torch.randn(x0.shape, generator=g)
                x_t = (1 - t) * x0 + t * noise
                tokens = x0.shape[2] * (x0.shape[3] // ph) * (x0.shape[4] // pw)
                tt = torch.full((1, tokens), round(t * 1000.0), dtype=torch.float32)
                for k in kinds:
                    loss[(k, t)] += float((model(x_t, tt, [ctx[k]]) - (noise - x0)).pow(2).mean())
        n += 1
        if n >= a.n:
            break
    print(f"{path}: {n} clips; loss with the right caption, and wrong / right per attribute")
    print("t      right   motion  color   shape")
    for t in ts:
        r = loss[("right", t)] / n
        print(f"{t:.2f}  {r:7.4f}  " + "  ".join(f"{loss[(k, t)] / n / r:5.2f}x" for k in kinds[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
