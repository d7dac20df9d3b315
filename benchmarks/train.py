"""Training step: time and peak memory, with and without gradient checkpointing, full and LoRA.

Each case runs in its own subprocess: a DiT of the 1.3B model's width (dim 1536, FFN 8960, 12 heads,
text_dim 4096) with fewer layers, one latent per step, AdamW, through openwan's Trainer
(``train_step``: noise, flow-matching loss, backward, clipping, optimizer). Reported: median step
time over ``--repeats`` steps after one warm-up step, the peak RSS of the process (VmHWM: weights
+ gradients + optimizer state + activations) and that peak over the RSS before the first step
(activations + optimizer state + workspace).

    python benchmarks/train.py                     # 2 layers, latent 5x16x16 (320 tokens), CPU, 1 thread
    python benchmarks/train.py --layers 4 --latent 5 16 32 --threads 2
    python benchmarks/train.py --modes lora lora-unfactored   # LoRA as trained vs through W + BA

``lora-unfactored`` runs LoRA the way a plain weight parametrization would (every layer reads the
adapted weight W + s B A, which autograd keeps for backward, and gets a full-size weight gradient);
``lora`` is what openwan trains with (W x + s B (A x) while gradients are on).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import add_dit_args

CHILD = r"""
import json, statistics, sys, time, tempfile
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from openwan.configs import DiTConfig
from openwan.models.dit import WanModel
from openwan.training.data import InMemoryLatentDataset
from openwan.training.trainer import Trainer
if args["unfactored"]:
    from openwan.training.lora import LoRAParametrization
    del LoRAParametrization.linear  # WanLinear.forward then reads the adapted (merged) weight
torch.manual_seed(0)
model = WanModel(DiTConfig(**args["cfg"]))
f, h, w = args["latent"]
g = torch.Generator().manual_seed(1)
ds = InMemoryLatentDataset([(torch.randn(16, f, h, w, generator=g), torch.randn(64, 4096, generator=g))])
tmp = tempfile.TemporaryDirectory()
cfg = dict(steps=1000, batch_size=1, output_dir=tmp.name, progress=False, save_final=False,
           checkpoint_every=0, gradient_checkpointing=args["ckpt"], precision="fp32",
           lora={"rank": 32} if args["lora"] else None)
trainer = Trainer(cfg, model=model, dataset=ds)
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
import gc; gc.collect()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
base = status("VmRSS")
trainer.train_step()  # warm-up (creates the optimizer state)
times = []
for _ in range(args["repeats"]):
    t0 = time.perf_counter()
    loss, gn = trainer.train_step()
    times.append(time.perf_counter() - t0)
peak = status("VmHWM")
n_train = sum(p.numel() for p in trainer.params)
print(json.dumps({"time": statistics.median(times), "peak": peak, "over": peak - base, "trainable": n_train,
                  "loss": loss}))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dit_args(ap)
    ap.add_argument("--latent", type=int, nargs=3, default=[5, 16, 16], metavar=("T", "H", "W"),
                    help="latent frames, height, width (tokens = T * H/2 * W/2)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", nargs="+", default=["full", "lora"], choices=["full", "lora", "lora-unfactored"])
    a = ap.parse_args(argv)
    cfg = dict(dim=a.dim, ffn_dim=a.ffn_dim, num_heads=a.heads, num_layers=a.layers, text_dim=4096)
    t, h, w = a.latent
    tokens = t * (h // 2) * (w // 2)
    print(f"DiT dim {a.dim}, ffn {a.ffn_dim}, {a.layers} layers; latent {t}x{h}x{w} = {tokens} tokens; "
          f"{a.threads} thread(s); median of {a.repeats} steps after 1 warm-up")
    rows = []
    for mode in a.modes:
        for ckpt in (False, True):
            args = dict(cfg=cfg, latent=a.latent, repeats=a.repeats, threads=a.threads, ckpt=ckpt,
                        lora=mode != "full", unfactored=mode == "lora-unfactored")
            r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-3000:])
                raise SystemExit(f"case {mode} ckpt={ckpt} failed")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append((mode, ckpt, res))
    print("\n| mode | grad. checkpointing | trainable params | step time (s) | peak RSS (GiB) | "
          "peak over start (GiB) |")
    print("|---|---|---|---|---|---|")
    for mode, ckpt, r in rows:
        print(f"| {mode} | {'on' if ckpt else 'off'} | {r['trainable'] / 1e6:.1f}M | {r['time']:.2f} | "
              f"{r['peak'] / 2**30:.2f} | {r['over'] / 2**30:.2f} |")


if __name__ == "__main__":
    main()
