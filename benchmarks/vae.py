"""Benchmark the Wan-VAE: time and peak memory of encode / decode, ours vs diffusers' AutoencoderKLWan.

Every case runs in its own subprocess, so peak RSS (``resource.getrusage`` in the child) never mixes
between cases. Both models have the same weights: the full-width published config (dim 96) with random
weights (ours seeded, converted to diffusers' names), or with ``--vae demo`` the embedded demo model's VAE
(``DEMO_VAE``: dim 8, the shipped checkpoint; default size 128x128, 33 frames). Ours
runs whole, streaming (``decode_stream`` / ``encode_stream`` with chunks consumed and dropped) and
tiled (``--tile`` 256 px tiles, ``--overlap`` 64 px, like diffusers' defaults); diffusers runs plain and with
``enable_tiling()``.

Columns: ``time_s`` wall time of the call; ``peak_MB`` the child's peak RSS (model included);
``op_MB`` the peak RSS during the call minus the RSS before it (Linux: VmHWM reset through
/proc/self/clear_refs; blank elsewhere); with ``--live``, ``live_MB`` the peak bytes of tensors alive
at once during the call (``openwan.testing.PeakLiveTensors``: exact and repeatable, no allocator
slack, weights and input not counted). Ratios are ours / diffusers (plain) for the same case.
``--repeat N`` runs every case N times, the modes interleaved round by round (diffusers, ours, diffusers,
ours, ...), and reports the median time (peak memory of the first run); ``load`` is the 1-minute load
average when the case finished (the machine is shared: read ratios, not absolute times, when it is high).

    python benchmarks/vae.py --quick                       # 64x64, 5 and 17 frames, decode only
    python benchmarks/vae.py --ops decode --sizes 256x256 --frames 17 81 --modes stream diffusers
    python benchmarks/vae.py --sizes 256x256 480x832 --frames 17 81       # everything (slow on CPU)
    python benchmarks/vae.py --sizes 240x416 --frames 9 --modes diffusers whole --live   # + live tensors
    python benchmarks/vae.py --vae 2.2 --sizes 256x256 --frames 17 --modes diffusers whole --live   # Wan 2.2 VAE
    python benchmarks/vae.py --vae demo --modes diffusers whole --repeat 3 --threads 1   # the demo VAE, 128x128x33
    python benchmarks/vae.py --vae demo --ops decode --modes whole --profile 12         # where the time goes

``--vae 2.2`` runs the Wan 2.2 VAE (``WanVAE22``, published config: encoder base 160, decoder base 256,
z 48, 16x) against diffusers' ``AutoencoderKLWan`` configured as 2.2 (``is_residual``, patch 2); sizes
must then be multiples of 16.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from common import reset_peak, rss_kb

OURS = ("whole", "stream", "tiled")
THEIRS = ("diffusers", "diffusers-tiled")


def _diffusers_22():
    from diffusers import AutoencoderKLWan

    from openwan.models.vae22 import VAE22Config
    c = VAE22Config()
    return AutoencoderKLWan(base_dim=c.dim, decoder_base_dim=c.dec_dim, z_dim=c.z_dim, is_residual=True,
                            in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                            latents_mean=list(c.mean), latents_std=list(c.std))


def _ours(version: str):
    """Our model: the demo VAE from the shipped checkpoint, else the published config with seeded random
    weights (PyTorch's default init after ``torch.manual_seed(0)``)."""
    import torch
    if version == "demo":
        from openwan.demo import demo_checkpoint_dir
        from openwan.models.vae import WanVAE
        return WanVAE.from_pretrained(demo_checkpoint_dir(), dtype=torch.float32)
    torch.manual_seed(0)
    if version == "2.2":
        from openwan.models.vae22 import WanVAE22
        return WanVAE22()
    from openwan.models.vae import WanVAE
    return WanVAE()


def _diffusers_21(ours):
    """diffusers' AutoencoderKLWan with our config and our weights (renamed to diffusers' keys)."""
    from diffusers import AutoencoderKLWan

    from openwan.models.vae import official_to_diffusers
    c = ours.config
    ref = AutoencoderKLWan(base_dim=c.dim, z_dim=c.z_dim, dim_mult=list(c.dim_mult),
                           num_res_blocks=c.num_res_blocks, attn_scales=list(c.attn_scales),
                           temperal_downsample=list(c.temporal_downsample), latents_mean=list(c.mean),
                           latents_std=list(c.std))
    ref.load_state_dict(official_to_diffusers(ours.state_dict(), c), strict=True)
    return ref


def child(op: str, mode: str, h: int, w: int, frames: int, threads: int, tile: int, overlap: int,
          live: bool = False, version: str = "2.1", profile: int = 0) -> dict:
    import contextlib

    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    latent_frames = 1 + (frames - 1) // 4
    with torch.no_grad():
        if mode in OURS:
            model = _ours(version).eval().requires_grad_(False)
        else:
            model = (_diffusers_22() if version == "2.2" else _diffusers_21(_ours(version)))
            model = model.eval().requires_grad_(False)
            if mode == "diffusers-tiled":
                model.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile,
                                    tile_sample_stride_height=tile - overlap,
                                    tile_sample_stride_width=tile - overlap)
        z = x = None
        if op == "decode":
            s, zc = (16, 48) if version == "2.2" else (8, 16)
            z = torch.randn(1, zc, latent_frames, h // s, w // s)
        elif mode != "stream":
            x = torch.rand(1, 3, frames, h, w) * 2 - 1
        before = rss_kb("VmRSS")
        can_reset = reset_peak()
        if live:
            from openwan.testing import PeakLiveTensors
        tracker = PeakLiveTensors() if live else contextlib.nullcontext()
        if profile:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile
            tracker = torch_profile(activities=[ProfilerActivity.CPU])
        t0 = time.perf_counter()
        with tracker:
            out = _call(model, op, mode, z, x, h, w, frames, tile, overlap)
        elapsed = time.perf_counter() - t0
        hwm = rss_kb("VmHWM") if can_reset else None
    del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"time_s": elapsed, "peak_MB": peak / 1024,
            "op_MB": (hwm - before) / 1024 if hwm is not None and before is not None else None,
            "live_MB": tracker.peak / 2**20 if live and not profile else None, "load": os.getloadavg()[0],
            "profile": tracker.key_averages().table(sort_by="self_cpu_time_total", row_limit=profile)
            if profile else None}


def _call(model, op, mode, z, x, h, w, frames, tile, overlap):
    """The measured call of one case; returns its output (None for a streaming decode, whose chunks are
    consumed and dropped)."""
    import torch
    if op == "decode":
        if mode == "stream":
            n = 0
            for chunk in model.decode_stream(z):
                n += chunk.shape[2]
            assert n == frames
            return None
        if mode == "tiled":
            return model.decode(z, tile=tile, overlap=overlap)
        return model.decode(z) if mode == "whole" else model.decode(z).sample
    if mode == "stream":
        g = torch.Generator().manual_seed(0)
        frames_iter = (torch.rand(1, 3, h, w, generator=g) * 2 - 1 for _ in range(frames))
        return torch.cat(list(model.encode_stream(frames_iter)), 2)
    if mode == "tiled":
        return model.encode(x, tile=tile, overlap=overlap)
    return model.encode(x) if mode == "whole" else model.encode(x).latent_dist.mean


def run_case(op, mode, h, w, frames, threads, tile, overlap, timeout, live=False, version="2.1",
             profile=0) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child",
           json.dumps([op, mode, h, w, frames, threads, tile, overlap, live, version, profile])]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout}s"}
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1][:80]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _merge(runs: list) -> dict:
    """One row from the runs of a case: the median time (the lower middle one for an even count), the
    first run's memory, the load averages of all runs; the first error if any run failed."""
    bad = [r for r in runs if "error" in r]
    if bad:
        return dict(bad[0])
    times = sorted(r["time_s"] for r in runs)
    row = dict(runs[0], time_s=times[(len(times) - 1) // 2], times=[r["time_s"] for r in runs])
    row["load"] = "/".join(f"{r['load']:.1f}" for r in runs)
    return row


def _fmt(v, spec):
    return "" if v is None else format(v, spec)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", nargs="+", default=["decode", "encode"], choices=["decode", "encode"])
    p.add_argument("--sizes", nargs="+", help="HxW, multiples of 8 (16 with --vae 2.2); default 256x256 480x832 "
                   "(--vae demo: 128x128)")
    p.add_argument("--frames", nargs="+", type=int, help="default 17 81 (--vae demo: 33)")
    p.add_argument("--repeat", type=int, default=1, help="runs per case, modes interleaved; the median time")
    p.add_argument("--modes", nargs="+", default=list(OURS + THEIRS), choices=list(OURS + THEIRS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tile", type=int, default=256, help="tile size in pixels for the tiled modes")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels for the tiled modes")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    p.add_argument("--quick", action="store_true", help="64x64, 5 and 17 frames, decode, stream + diffusers")
    p.add_argument("--live", action="store_true",
                   help="also measure the peak bytes of live tensors (live_MB; a dispatch-mode tracker)")
    p.add_argument("--vae", default="2.1", choices=["2.1", "2.2", "demo"],
                   help="which Wan VAE (default 2.1; demo: the embedded demo model's, shipped weights)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="run each case under torch.profiler and print its N most expensive ops (self CPU "
                        "time; the time_s column then includes the profiler's overhead)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(*json.loads(a.child))))
        return
    if a.quick:
        a.ops, a.sizes, a.frames, a.modes = ["decode"], ["64x64"], [5, 17], ["whole", "stream", "diffusers"]
    a.sizes = a.sizes or (["128x128"] if a.vae == "demo" else ["256x256", "480x832"])
    a.frames = a.frames or ([33] if a.vae == "demo" else [17, 81])
    if a.repeat < 1:
        p.error(f"--repeat must be at least 1, got {a.repeat}")
    rows = []
    keys = ("time_s", "peak_MB", "op_MB") + (("live_MB",) if a.live else ())
    print(f"{'op':7} {'size':8} {'F':>3} {'mode':16} " + " ".join(f"{k:>8}" for k in keys) + " "
          + " ".join(f"{k.split('_')[0] + '/diff':>9}" for k in keys) + "   load", flush=True)
    for op in a.ops:
        for size in a.sizes:
            h, w = (int(v) for v in size.lower().split("x"))
            for f in a.frames:
                modes = sorted(a.modes, key=lambda m: m not in THEIRS)   # diffusers first
                runs = {m: [] for m in modes}
                for _ in range(a.repeat):                                 # rounds: modes interleaved
                    for mode in modes:
                        runs[mode].append(run_case(op, mode, h, w, f, a.threads, a.tile, a.overlap,
                                                   a.timeout, a.live, a.vae, a.profile))
                base = None
                for mode in modes:
                    r = _merge(runs[mode])
                    r.update(op=op, size=size, frames=f, mode=mode)
                    rows.append(r)
                    if mode == "diffusers" and "error" not in r:
                        base = r
                    if "error" in r:
                        print(f"{op:7} {size:8} {f:>3} {mode:16} {r['error']}", flush=True)
                        continue
                    ratio = ({k: r[k] / base[k] if r.get(k) and base.get(k) else None for k in keys}
                             if base and mode in OURS else {})
                    print(f"{op:7} {size:8} {f:>3} {mode:16} "
                          + " ".join(f"{_fmt(r.get(k), '8.2f' if k == 'time_s' else '8.0f'):>8}" for k in keys) + " "
                          + " ".join(f"{_fmt(ratio.get(k), '9.2f'):>9}" for k in keys)
                          + f"   {r['load']}", flush=True)
                    if r.get("profile"):
                        print(r["profile"], flush=True)
    # streaming decode: peak for the most frames vs the fewest, per size
    for size in a.sizes:
        s = {r["frames"]: r for r in rows if r["op"] == "decode" and r["mode"] == "stream"
             and r["size"] == size and "error" not in r}
        if len(s) >= 2:
            lo, hi = min(s), max(s)
            print(f"stream decode {size}: peak RSS {hi} frames / {lo} frames = "
                  f"{s[hi]['peak_MB'] / s[lo]['peak_MB']:.3f}"
                  + (f" (op-only {s[hi]['op_MB'] / s[lo]['op_MB']:.3f})" if s[lo].get("op_MB") else ""))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
