"""DiT forward: openwan's WanModel vs diffusers' WanTransformer3DModel, same config and weights.

Each case runs in its own subprocess; after the weights are loaded the peak RSS counter is reset
(/proc/self/clear_refs), so the peak measured is that of the forward passes. Reported:
median forward time, peak RSS during the forwards, that peak over the weights-loaded baseline
(activations + workspace), and the ratio ours/diffusers (< 1 means openwan is faster / lighter).

Time and memory come from separate processes: memory runs set MALLOC_MMAP_THRESHOLD_=65536 so that RSS
follows the live tensors rather than allocator arenas, but that setting makes every large allocation a fresh
mmap (page faults on each forward: +44% on bf16 time), so timed runs leave the allocator alone. The two
implementations alternate (diffusers, openwan, openwan, diffusers, ...) for --rounds rounds, so a machine
that slows down during the run weighs on both alike; the time reported is the median over all rounds.
Beside the wall time, the CPU time of the process per forward (with one thread: the time the forward
computed, not the time it waited for a core on a shared machine) and its ratio.

    python benchmarks/dit.py                       # 1.3B width, 2 layers, 1560 tokens, fp32 + bf16
    python benchmarks/dit.py --layers 4 --dtypes fp32 --repeats 5
    python benchmarks/dit.py --compile --dtypes fp32   # torch.compile on both sides
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import add_dit_args

CHILD = r"""
import json, resource, statistics, sys, time
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
torch.manual_seed(0)
dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args["dtype"]]
from openwan.configs import DiTConfig
from openwan.models.dit import WanModel
from openwan.checkpoints import read_safetensors, dit_official_to_diffusers
cfg = DiTConfig(**args["cfg"])
sd = read_safetensors(args["weights"])
if args["impl"] == "openwan":
    with torch.device("meta"):
        model = WanModel(cfg)
    model.load_state_dict({k: v.to(dtype).clone() for k, v in sd.items()}, assign=True)  # resident, not mmap
    def run(x, t, ctx):
        return model(x, t, ctx)
else:
    from diffusers import WanTransformer3DModel
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=cfg.num_heads,
            attention_head_dim=cfg.head_dim, in_channels=16, out_channels=16, text_dim=cfg.text_dim,
            freq_dim=256, ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers)
    model.load_state_dict({k: v.to(dtype) for k, v in dit_official_to_diffusers(sd).items()})
    def run(x, t, ctx):
        ctx = torch.nn.functional.pad(ctx, (0, 0, 0, 512 - ctx.shape[1]))
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            return model(x.to(dtype), t, ctx.to(dtype), return_dict=False)[0]
model.eval()
del sd
if args["compile"]:
    model = torch.compile(model)
f, h, w = args["latent"]
g = torch.Generator().manual_seed(1)
x = torch.randn(1, 16, f, h, w, generator=g)
ctx = torch.randn(1, 64, cfg.text_dim, generator=g)
t = torch.tensor([500])
import gc; gc.collect()
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
base = status("VmRSS")
times, cpu = [], []
with torch.no_grad():
    out = run(x, t, ctx)  # warm-up
    for _ in range(args["repeats"]):
        t0, c0 = time.perf_counter(), time.process_time()
        out = run(x, t, ctx)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
peak = status("VmHWM")
print(json.dumps({"time": statistics.median(times), "times": times, "cpu": cpu, "peak_over_weights": peak - base,
                  "peak": peak, "out_std": float(out.float().std())}))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dit_args(ap)
    ap.add_argument("--latent", type=int, nargs=3, default=(1, 60, 104),
                    help="latent F H W (default 1x60x104 = 1560 tokens, one 480x832 latent frame)")
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of timed runs per implementation")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models (timed after a warm-up)")
    ap.add_argument("--no-memory", action="store_true", help="skip the separate memory runs")
    a = ap.parse_args(argv)

    import statistics
    import torch
    from openwan.checkpoints import save_safetensors
    from openwan.configs import DiTConfig
    from openwan.models.dit import WanModel
    cfg = DiTConfig(dim=a.dim, ffn_dim=a.ffn_dim, num_heads=a.heads, num_layers=a.layers)
    tokens = a.latent[0] * (a.latent[1] // 2) * (a.latent[2] // 2)
    timed_env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    # A fixed glibc mmap threshold makes RSS follow the live tensors instead of the allocator's
    # arena growth, which otherwise adds +-100 MB of noise to either side (memory runs only).
    memory_env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=os.environ.get("MALLOC_MMAP_THRESHOLD_", "65536"))
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "w.safetensors"
        torch.manual_seed(0)
        m = WanModel(cfg)
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.02)
        save_safetensors(m.state_dict(), weights)
        n_params = sum(p.numel() for p in m.parameters())
        del m
        print(f"DiT dim {a.dim}, ffn {a.ffn_dim}, {a.heads} heads, {a.layers} layers ({n_params / 1e6:.0f}M params), "
              f"{tokens} tokens, {a.threads} threads, {'compiled' if a.compile else 'eager'}, "
              f"{a.rounds} alternating rounds x {a.repeats} forwards")
        print(f"{'dtype':6} {'impl':9} {'time s':>9} {'peak MB':>9} {'act MB':>8} {'time ratio':>11} {'act ratio':>10}"
              f" {'cpu s':>8} {'cpu ratio':>10}")

        def child(impl, dt, env):
            args = dict(cfg=cfg.to_dict(), weights=str(weights), dtype=dt, impl=impl, latent=list(a.latent),
                        repeats=a.repeats, threads=a.threads, compile=a.compile)
            out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True,
                                 env=env)
            if out.returncode != 0:
                print(f"{dt:6} {impl:9} failed: {out.stderr.strip().splitlines()[-1]}")
                return None
            return json.loads(out.stdout.strip().splitlines()[-1])

        for dt in a.dtypes:
            times = {"diffusers": [], "openwan": []}
            cpus = {"diffusers": [], "openwan": []}
            for r in range(a.rounds):
                for impl in (("diffusers", "openwan") if r % 2 == 0 else ("openwan", "diffusers")):
                    res = child(impl, dt, timed_env)
                    if res:
                        times[impl] += res["times"]
                        cpus[impl] += res["cpu"]
            mem = {} if a.no_memory else {impl: child(impl, dt, memory_env) for impl in ("diffusers", "openwan")}
            med = {impl: statistics.median(ts) for impl, ts in times.items() if ts}
            cmed = {impl: statistics.median(ts) for impl, ts in cpus.items() if ts}
            for impl in ("diffusers", "openwan"):
                if impl not in med:
                    continue
                m_ = mem.get(impl) or {}
                peak = f"{m_['peak'] / 2**20:9.0f}" if m_ else f"{'-':>9}"
                act = f"{m_['peak_over_weights'] / 2**20:8.0f}" if m_ else f"{'-':>8}"
                ratio_t = ratio_m = ""
                if impl == "openwan" and "diffusers" in med:
                    ratio_t = f"{med['openwan'] / med['diffusers']:.2f}x"
                    if mem.get("openwan") and mem.get("diffusers"):
                        ratio_m = f"{mem['openwan']['peak_over_weights'] / max(1, mem['diffusers']['peak_over_weights']):.2f}x"
                ratio_c = f"{cmed['openwan'] / cmed['diffusers']:.2f}x" if impl == "openwan" and "diffusers" in cmed else ""
                print(f"{dt:6} {impl:9} {med[impl]:9.3f} {peak} {act} {ratio_t:>11} {ratio_m:>10} {cmed[impl]:8.3f}"
                      f" {ratio_c:>10}")


if __name__ == "__main__":
    main()
