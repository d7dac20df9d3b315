"""A demo DiT checkpoint's flow-matching loss on training clips against clips it never saw (overfitting check).

    python benchmarks/demo_dit_loss.py runs/demo2/dit/checkpoints/step-00003883 \\
        --train runs/demo2/latents.pt --unseen runs/demo2/latents_partial.pt --unseen_from 1024

Text-to-video loss of the checkpoint's EMA weights (``ema.safetensors``; DEMO_V2_DIT) at t = 0.3, 0.6 and 0.9,
the same noise for both sets: ``mean((v - (noise - z))^2)`` over the first 9 latent frames of ``--n`` clips of
each set whose caption has text features in the training file. ``--unseen``: a latents file whose clips from
``--unseen_from`` on were not in the training set (the recipe's clip i depends only on (seed, i), so a set
extended with ``--n_clips`` past the trained one, or its ``latents_partial.pt``, holds such clips).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a Trainer checkpoint folder (holding ema.safetensors)")
    ap.add_argument("--train", default="runs/demo2/latents.pt")
    ap.add_argument("--unseen", default="runs/demo2/latents_partial.pt")
    ap.add_argument("--unseen_from", type=int, default=1024, help="first clip index of --unseen not trained on")
    ap.add_argument("--n", type=int, default=24, help="clips per set")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from openwan.checkpoints import read_safetensors
    from openwan.configs import DEMO_V2_DIT
    from openwan.models.dit import WanModel
    model = WanModel(DEMO_V2_DIT).eval()
    model.load_state_dict(read_safetensors(Path(a.checkpoint) / "ema.safetensors"))
    train = torch.load(a.train, weights_only=False)
    unseen = torch.load(a.unseen, weights_only=False)
    text = train["text"]

    def clips(data, start):
        out = []
        for i in range(start, len(data["latents"])):
            cap = next((c for c in data["captions"][i] if c in text), None)
            if cap is not None:
                out.append((data["latents"][i][:, :9].float(), text[cap]))
            if len(out) == a.n:
                break
        return out

    sets = {"training clips": clips(train, 0), "unseen clips": clips(unseen, a.unseen_from)}
    g = torch.Generator().manual_seed(0)
    noise = [torch.randn(sets["training clips"][0][0].shape, generator=g) for _ in range(a.n)]
    ts = (0.3, 0.6, 0.9)
    print(f"{a.checkpoint}: text-to-video flow-matching loss of the EMA, {a.n} clips per set")
    print("| set | clips | " + " | ".join(f"t = {t}" for t in ts) + " |")
    print("|---|---|" + "---|" * len(ts))
    with torch.no_grad():
        for name, cs in sets.items():
            losses = []
            for s in ts:
                tot = 0.0
                for (z, ctx), e in zip(cs, noise):
                    v = model(((1 - s) * z + s * e)[None], torch.tensor([s * 1000]), [ctx])[0]
                    tot += float(((v - (e - z)) ** 2).mean())
                losses.append(tot / len(cs))
            print(f"| {name} | {len(cs)} | " + " | ".join(f"{v:.3f}" for v in losses) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
