"""Memory benchmarks for docs/memory.md: quantized loading, int8/fp8 accuracy, block swap, the planner.

    python benchmarks/memory.py load    [--layers 8]                 # load peaks: bf16, fp32, int8 (+fp32 parts)
    python benchmarks/memory.py quality [--layers 4] [--tokens 1560] # int8 / fp8 vs float output, rel. L2
    python benchmarks/memory.py swap    [--layers 30 --resident 2]   # block swap: bytes on the device, output
    python benchmarks/memory.py planner                              # DiT forward peak vs openwan.plan.estimate
    python benchmarks/memory.py demo [--seeds 2]                     # demo bench accuracy: float, int8, fp8
    python benchmarks/memory.py experts [--layers 2]                 # Wan 2.2 A14B: two experts vs one (CPU)
    python benchmarks/memory.py gguf    [--layers 2]                 # GGUF Q8_0 / Q4_K: bytes, load peak, error

Random weights at the 1.3B model's width (dim 1536, ffn 8960, 12 heads), CPU. Memory is the peak of
VmRSS (sampled every 1 ms by a thread) over its value before the operation; it counts the pages of a
memory-mapped checkpoint that the loaded model's tensors point into. Every case runs in its own
subprocess, with MALLOC_MMAP_THRESHOLD_=65536 so that glibc gives each tensor its own mapping and RSS
follows the live tensors.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_dit_args  # noqa: E402

MB = 2**20


def rss() -> int:
    """VmRSS: anonymous memory + mapped file pages (a checkpoint's tensors may be views of its mmap)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRSS:
    """Context manager: .peak = max VmRSS during the block minus VmRSS at its start (bytes)."""

    def __enter__(self):
        self.base = rss()
        self.max = self.base
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            self.max = max(self.max, rss())
            time.sleep(0.001)

    def __exit__(self, *a):
        self._stop = True
        self._t.join()
        self.max = max(self.max, rss())
        self.peak = self.max - self.base


def dit_config(args, layers=None):
    from openwan.configs import DiTConfig
    return DiTConfig(dim=args.dim, ffn_dim=args.ffn_dim, num_heads=args.heads,
                     num_layers=layers if layers is not None else args.layers)


def random_dit(cfg, dtype=torch.float32, seed=0):
    from openwan.models.dit import WanModel
    torch.manual_seed(seed)
    with torch.device("meta"):
        m = WanModel(cfg)
    m = m.to_empty(device="cpu").to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():   # unit-variance inputs keep unit-variance outputs: std 1/sqrt(fan_in)
            fan = p.shape[-1] if p.dim() >= 2 else p.numel()
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) / fan ** 0.5)
    return m.eval().requires_grad_(False)


def inputs(cfg, f, h, w, batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, f, 2 * h, 2 * w, generator=g)
    ctx = torch.randn(batch, 64, cfg.text_dim, generator=g)
    return x, ctx


def run_child(mode, **kw):
    """Run one case in a fresh interpreter; returns its JSON result."""
    cmd = [sys.executable, __file__, "_child", json.dumps({"mode": mode, **kw})]
    # glibc: tensors above 64 KiB get their own mapping, returned on free, so RSS follows the live tensors
    # (otherwise freed heap chunks inflate the peak by an amount that depends on the allocation order)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- cases (in the child)

def child(spec):
    torch.set_num_threads(1)
    from openwan import quant
    from openwan.checkpoints import load_dit
    from openwan.models.dit import WanModel
    mode = spec["mode"]
    if mode == "load":
        dtype = getattr(torch, spec["dtype"])
        with tempfile.TemporaryDirectory() as d:   # warm-up: imports and lazy initialisation outside the measure
            from openwan.configs import TINY_DIT
            random_dit(TINY_DIT).save_pretrained(d)
            load_dit(d, build=WanModel, dtype=dtype)
            quant.load_dit_quantized(d, "int8", dtype=dtype, build=WanModel)
        with PeakRSS() as pk:
            if spec["quantize"] == "none":
                m = load_dit(spec["path"], build=WanModel, dtype=dtype)
            else:
                m = quant.load_dit_quantized(spec["path"], spec["quantize"], dtype=dtype, build=WanModel)
            for t in m.state_dict().values():   # page in tensors that are views of the file's mmap
                t.detach().contiguous().view(-1).view(torch.uint8)[::4096].sum()
        return {"peak": pk.peak, "weights": quant.weight_bytes(m)}
    if mode == "gguf":
        from openwan.gguf import load_dit_gguf
        load_dit_gguf(spec["warm"], torch.float32, packed=spec["packed"], build=WanModel)   # warm-up
        with PeakRSS() as pk:
            m = load_dit_gguf(spec["path"], torch.float32, packed=spec["packed"], build=WanModel)
        return {"peak": pk.peak, "weights": quant.weight_bytes(m)}
    if mode == "forward":
        from openwan.configs import DiTConfig
        cfg = DiTConfig(**spec["cfg"])
        dtype = getattr(torch, spec["dtype"])
        x, ctx = inputs(cfg, *spec["grid"], batch=spec["batch"])
        m = random_dit(cfg, dtype)
        t = torch.tensor([500] * spec["batch"])
        with torch.no_grad():   # warm-up (lazy kernel and thread-pool set-up) on a 2-token input
            x0, ctx0 = inputs(cfg, 1, 1, 2, batch=spec["batch"])
            m(x0, t, ctx0)
        with PeakRSS() as pk, torch.no_grad():
            m(x, t, ctx)
        return {"peak": pk.peak + quant.weight_bytes(m), "weights": quant.weight_bytes(m), "act": pk.peak}
    if mode == "pipeline":                  # load a checkpoint folder and generate once: peak over both
        import openwan
        with PeakRSS() as pk:
            pipe = openwan.load_pipeline(spec["path"], progress=False, experts=spec["experts"])
            out = pipe("a red circle", size=spec["size"], frame_num=9, sample_steps=4, seed=1, strict_size=False,
                       output_type="latent")
        w = getattr(pipe, "expert_weights", None) or {}
        return {"peak": pk.peak, "stats": {k: v for k, v in out.settings["stats"].items() if k.startswith("dit_")},
                "reloads": sum(x.reloads for x in w.values()),
                "reload_s": sum(x.reload_seconds for x in w.values()),
                "weights": quant.weight_bytes(pipe.dit), "latent": out.latents.flatten()[:4].tolist()}
    raise ValueError(mode)


# ----------------------------------------------------------------------------- benchmarks (parent)

def bench_load(args):
    from openwan.quant import weight_bytes
    cfg = dit_config(args)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for dt in ("bfloat16", "float32"):
            m = random_dit(cfg, getattr(torch, dt))
            m.save_pretrained(Path(d) / dt)
            del m
        cases = [("bf16 file -> bf16", "bfloat16", "bfloat16", "none"),
                 ("fp32 file -> fp32", "float32", "float32", "none"),
                 ("bf16 file -> int8 (bf16 parts)", "bfloat16", "bfloat16", "int8"),
                 ("bf16 file -> fp8 (bf16 parts)", "bfloat16", "bfloat16", "fp8"),
                 ("fp32 file -> int8 (fp32 parts)", "float32", "float32", "int8")]
        for name, src, dt, q in cases:
            r = run_child("load", path=str(Path(d) / src), dtype=dt, quantize=q)
            rows.append((name, r["peak"], r["weights"]))
    base = {"bf16": rows[0][1], "fp32": rows[1][1]}
    print(f"DiT dim {cfg.dim}, ffn {cfg.ffn_dim}, {cfg.num_layers} layers; load peak = VmRSS peak over start "
          f"(after a warm-up load of a tiny DiT)")
    print("| load | peak MB | weights MB | peak / bf16 load | peak / fp32 load |\n|---|---|---|---|---|")
    for name, peak, w in rows:
        print(f"| {name} | {peak / MB:.0f} | {w / MB:.0f} | {peak / base['bf16']:.3f} | {peak / base['fp32']:.3f} |")
    del weight_bytes


def bench_quality(args):
    from openwan.quant import quantize_model_
    cfg = dit_config(args)
    f, h, w = 2, 6, args.tokens // 12
    x, ctx = inputs(cfg, f, h, w)
    print(f"DiT dim {cfg.dim}, {cfg.num_layers} layers, {f * h * w} tokens, t=500; relative L2 vs the float model "
          f"of the same dtype")
    print("| compute dtype | quantize | rel. L2 |\n|---|---|---|")
    for dt in (torch.float32, torch.bfloat16):
        with torch.no_grad():
            ref = random_dit(cfg, dt)(x, torch.tensor([500]), ctx).float()
            for kind in ("int8", "fp8"):
                out = quantize_model_(random_dit(cfg, dt), kind)(x, torch.tensor([500]), ctx).float()
                print(f"| {str(dt)[6:]} | {kind} | {((out - ref).norm() / ref.norm()).item():.4f} |")


def bench_swap(args):
    from openwan.offload import enable_block_swap
    from openwan.quant import weight_bytes
    cfg = dit_config(args)
    m = random_dit(cfg, torch.bfloat16)
    x, ctx = inputs(cfg, 1, 4, 4)
    with torch.no_grad():
        ref = m(x, torch.tensor([500]), ctx)
        total = weight_bytes(m)
        block = weight_bytes(m.blocks[0])
        other = total - sum(weight_bytes(b) for b in m.blocks)
        for prefetch in (False, True):
            swap = enable_block_swap(m, resident=args.resident, device="cpu", prefetch=prefetch)
            out = m(x, torch.tensor([500]), ctx)
            peak = other + swap.permanent * block + swap.peak_bytes
            target = total * (args.resident + 1) / cfg.num_layers + block
            print(f"prefetch={prefetch}: peak on device {peak / MB:.0f} MB of {total / MB:.0f} MB "
                  f"({peak / total:.3f} of the model; target {target / MB:.0f} MB = {target / total:.3f}); "
                  f"blocks on device at most {swap.peak_blocks}; output identical: {torch.equal(out, ref)}")
            from openwan.offload import disable_block_swap
            disable_block_swap(m)


def bench_planner(args):
    from openwan.configs import get_variant
    from openwan.plan import estimate
    v = get_variant("t2v-1.3B")
    cases = [(dict(num_layers=2), (2, 16, 16), 1), (dict(num_layers=1), (2, 30, 52), 1),
             (dict(num_layers=1), (5, 16, 16), 2), (dict(num_layers=1), (5, 30, 52), 1)]
    print("peak = weights (tensor bytes) + the forward's VmRSS peak over its start; fp32, 1 thread")
    print("| DiT | tokens | batch | measured MB (activations) | estimated MB (activations) | est / measured |")
    print("|---|---|---|---|---|---|")
    for over, grid, batch in cases:
        cfg = v.dit.replace(**over)
        r = run_child("forward", cfg=cfg.to_dict(), grid=grid, batch=batch, dtype="float32")
        f, h, w = grid
        size = f"{w * 16}*{h * 16}"
        e = estimate(v, size, (f - 1) * 4 + 1, dtype=torch.float32, device="cpu", cfg_batch=batch == 2,
                     dit_config=cfg, include_encoders=False)
        e_tot = e.parts["dit weights"] + e.parts["dit activations"]
        print(f"| 1.3B width, {cfg.num_layers} layers | {f * h * w} | {batch} | {r['peak'] / MB:.0f} "
              f"({r['act'] / MB:.0f}) | {e_tot / MB:.0f} ({e.parts['dit activations'] / MB:.0f}) | "
              f"{e_tot / r['peak']:.3f} |")


def write_gguf(model, path, qtype):
    """The DiT as a GGUF file: Linear weights whose rows are whole 256-value super-blocks in ``qtype``
    (Q8_0 by gguf's quantizer, Q4_K by openwan.testing.q4_k), the rest F32 (as published files keep
    norms, biases and small tensors in float)."""
    import gguf
    import numpy as np
    from openwan.testing import q4_k
    w = gguf.GGUFWriter(str(path), "wan")
    for k, v in model.state_dict().items():
        a = v.float().numpy()
        if a.ndim > 2:
            a = a.reshape(a.shape[0], -1)
        if a.ndim == 2 and a.shape[1] % 256 == 0:
            data = q4_k(a)[0] if qtype.name == "Q4_K" else gguf.quants.quantize(a, qtype)
            w.add_tensor(k, data, raw_dtype=qtype)
        else:
            w.add_tensor(k, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def bench_gguf(args):
    """GGUF Q8_0 and Q4_K files of a DiT at the 1.3B width: what stays resident (packed layers vs the file's
    bytes), the load peak packed vs dequantized at load, and the output's distance to the unquantized model."""
    import gguf
    from openwan.configs import TINY_DIT
    from openwan.gguf import load_dit_gguf
    from openwan.models.dit import WanModel
    from openwan.quant import QuantLinear, weight_bytes
    cfg = dit_config(args)
    src = random_dit(cfg, torch.float32)
    f, h, w = 2, 6, args.tokens // 12
    x, ctx = inputs(cfg, f, h, w)
    t = torch.tensor([500])
    with torch.no_grad():
        ref = src(x, t, ctx)
    print(f"DiT dim {cfg.dim}, ffn {cfg.ffn_dim}, {cfg.num_layers} layers, weights N(0, 1/fan_in), {f * h * w} "
          f"tokens, t=500, fp32 compute; load peak = VmRSS peak over start, fresh process")
    print("| file | file MB | packed layers: resident MB / file MB | bits / weight | load peak MB packed "
          "(dequantized at load) | model weights MB packed (dequantized at load) | weight rel. L2 | output rel. L2 |\n"
          "|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        warm = Path(d) / "warm.gguf"
        write_gguf(random_dit(TINY_DIT.replace(dim=256, ffn_dim=256, num_heads=2, text_dim=256, freq_dim=256)),
                   warm, gguf.GGMLQuantizationType.Q8_0)
        for name in ("Q8_0", "Q4_K"):
            qt = gguf.GGMLQuantizationType[name]
            path = Path(d) / f"dit-{name}.gguf"
            write_gguf(src, path, qt)
            r = gguf.GGUFReader(str(path))
            nbytes = {tt.name: int(tt.n_bytes) for tt in r.tensors}
            del r
            m = load_dit_gguf(path, torch.float32, build=WanModel)
            packed = {n: mod for n, mod in m.named_modules() if isinstance(mod, QuantLinear)}
            held = sum(weight_bytes(mod) - (mod.bias.numel() * 4 if mod.bias is not None else 0)
                       for mod in packed.values())
            in_file = sum(nbytes[n + ".weight"] for n in packed)
            n_w = sum(mod.in_features * mod.out_features for mod in packed.values())
            num = sum(float((mod.weight - src.get_submodule(n).weight).pow(2).sum()) for n, mod in packed.items())
            den = sum(float(src.get_submodule(n).weight.pow(2).sum()) for n in packed)
            with torch.no_grad():
                out = m(x, t, ctx)
            del m
            pk = run_child("gguf", path=str(path), warm=str(warm), packed=True)
            pk0 = run_child("gguf", path=str(path), warm=str(warm), packed=False)
            print(f"| {name} | {path.stat().st_size / MB:.0f} | {held / MB:.1f} / {in_file / MB:.1f} | "
                  f"{8 * held / n_w:.3f} | {pk['peak'] / MB:.0f} ({pk0['peak'] / MB:.0f}) | {pk['weights'] / MB:.0f} "
                  f"({pk0['weights'] / MB:.0f}) | {(num / den) ** 0.5:.4f} | "
                  f"{((out - ref).norm() / ref.norm()).item():.4f} |", flush=True)


def bench_demo(args):
    """The demo benchmark (openwan bench demo) with the float DiT and with its Linear layers in int8/fp8."""
    from openwan.demo.bench import run_benchmark, summarize
    from openwan.pipelines import load_pipeline
    from openwan.quant import quantize_model_
    print("| DiT | split | videos | color | shape | motion | all 3 |\n|---|---|---|---|---|---|---|")
    for kind in ("none", "int8", "fp8"):
        pipe = load_pipeline("demo", task="t2v", variant="demo", progress=False)
        quantize_model_(pipe.c.dit, kind)
        with torch.inference_mode():
            summary = summarize(run_benchmark(pipe, seeds=range(args.seeds), progress=False))
        for split in ("seen", "heldout", "total"):
            a = summary[split]["accuracy"]
            print(f"| {kind} | {split} | {summary[split]['videos']} | " +
                  " | ".join(f"{100 * a[k]:.1f}%" for k in ("color", "shape", "motion", "all")) + " |", flush=True)


def bench_experts(args):
    """Wan 2.2 A14B on a CPU: peak RSS of load + one 4-step call (over the expert switch) of a two-expert pipeline
    (experts="one": the idle expert released and reloaded from its file; experts="both": both in memory) vs a
    one-expert pipeline (the same high-noise expert, VAE and text encoder as a one-DiT folder)."""
    from openwan.configs import TINY_DIT
    from openwan.convert import write_components
    from openwan.testing import tiny_wan22_components
    widths = {"tiny": (TINY_DIT, "64*32"), f"1.3B width, {args.layers} layers":
              (dit_config(args).replace(text_dim=TINY_DIT.text_dim), "256*256")}
    print("peak = VmRSS peak over the start (load + one call: 4 steps, 9 frames, fp32, 1 thread)")
    print("| DiT | size | pipeline | expert MB | peak MB | peak / one expert | DiT forwards (high, low) | reloads |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for label, (cfg, size) in widths.items():
            comps = tiny_wan22_components("t2v-A14B", dit=cfg)
            write_components(comps, Path(d) / "two", "official")
            comps.dit_low = None     # a one-DiT folder: recorded as a plain (2.1-style) t2v variant
            comps.variant = dataclasses.replace(comps.variant, name=comps.variant.name.replace("-A14B", "-one-expert"))
            write_components(comps, Path(d) / "one", "official")
            del comps
            rows = [("one expert", run_child("pipeline", path=str(Path(d) / "one"), experts="one", size=size))]
            for plan in ("one", "both"):
                rows.append((f'two experts, experts="{plan}"',
                             run_child("pipeline", path=str(Path(d) / "two"), experts=plan, size=size)))
            base = rows[0][1]["peak"]
            for name, r in rows:
                st = r["stats"]
                fw = f"{st.get('dit_forwards_high', st['dit_forwards'])}, {st.get('dit_forwards_low', 0)}"
                print(f"| {label} | {size} | {name} | {r['weights'] / MB:.1f} | {r['peak'] / MB:.0f} | "
                      f"{r['peak'] / base:.3f} | {fw} | {r['reloads']} ({r['reload_s']:.2f} s) |", flush=True)
            import shutil
            shutil.rmtree(Path(d) / "two")
            shutil.rmtree(Path(d) / "one")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["load", "quality", "swap", "planner", "demo", "experts", "gguf"])
    add_dit_args(ap, layers=8)
    ap.add_argument("--tokens", type=int, default=1560)
    ap.add_argument("--resident", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    {"load": bench_load, "quality": bench_quality, "swap": bench_swap, "planner": bench_planner,
     "demo": bench_demo, "experts": bench_experts, "gguf": bench_gguf}[args.what](args)


if __name__ == "__main__":
    main()
