"""Step caching: the speed/quality curve of every method over thresholds, beside diffusers' own caches.

    python benchmarks/step_cache.py                          # demo model, 6 prompts, seed 0, every method
    python benchmarks/step_cache.py --model tiny --steps 50  # tiny random weights, 50 steps (calibrated first)
    python benchmarks/step_cache.py --model tiny --size 832*480 --caches plan:0.5 --diffusers none   # at 480p
    python benchmarks/step_cache.py --caches easycache:0.1,magcache:0.12 --diffusers none --prompts 12 --seeds 0 1

For every (prompt, seed) the uncached video is generated first; each cache setting then generates the same
video and is compared with it: PSNR over the clip and SSIM (benchmarks/quality.py) of the decoded uint8
frames, the DiT forward passes computed (``stats.dit_forwards``; for diffusers, the passes whose last block
ran), the share of the blocks' attention passes actually computed ("block work": FirstBlockCache still runs
block 0, TaylorSeer predicts attention but runs the rest), the denoising seconds and, on the demo model,
whether the demo's detector still gives the prompt's colour, shape and motion the same verdict as uncached.

diffusers' caches (``diffusers.hooks``: ``fbc:T`` FirstBlockCacheConfig(threshold=T), ``mag:T``
MagCacheConfig(threshold=T, mag_ratios = openwan's calibration of the same weights), ``taylor:N``
TaylorSeerCacheConfig(cache_interval=N, first order, fp32 factors, forecasting every block's attention and
FFN outputs)) run on diffusers' WanTransformer3DModel holding the
same weights (saved in the diffusers layout and loaded by diffusers), inside openwan's sampling loop (same
noise, grid, solver, text features, batched CFG), and are compared with diffusers' own uncached video
(``diffusers:none``). Prints a markdown table (means; min PSNR/SSIM over the videos); --json writes every
record.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import psnr, ssim  # noqa: E402

OURS = ("easycache:0.1,easycache:0.2,easycache:0.3,easycache:0.5:0.4,teacache:0.1,teacache:0.2,"
        "magcache:0.06,magcache:0.09,magcache:0.12,magcache:0.25,fbcache:0.05,fbcache:0.1,fbcache:0.12,fbcache:0.2")
DIFFUSERS = "fbc:0.05,fbc:0.1,fbc:0.12,fbc:0.2,mag:0.06,mag:0.12,mag:0.25,taylor:2,taylor:3,taylor:4"


class DiffusersDiT(torch.nn.Module):
    """diffusers' WanTransformer3DModel behind openwan's DiT call ``(x, t, contexts, y=, clip_fea=)``."""

    def __init__(self, transformer, text_len: int):
        super().__init__()
        self.transformer, self.text_len = transformer, text_len

    def forward(self, x, t, context, clip_fea=None, y=None):
        ctx = torch.stack([F.pad(c.float(), (0, 0, 0, self.text_len - c.shape[0])) for c in context])
        hs = x if y is None else torch.cat([x, y.to(x.dtype)], 1)
        kw = {} if clip_fea is None else {"encoder_hidden_states_image": clip_fea}
        with self.transformer.cache_context("inference"):
            return self.transformer(hidden_states=hs, timestep=t.reshape(-1).expand(len(x)), encoder_hidden_states=ctx,
                                    return_dict=False, **kw)[0]


def diffusers_config(spec: str, steps: int, mag_ratios):
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig
    kind, _, val = spec.partition(":")
    if kind == "fbc":
        return FirstBlockCacheConfig(threshold=float(val))
    if kind == "mag":
        return MagCacheConfig(threshold=float(val), num_inference_steps=steps, mag_ratios=list(mag_ratios))
    if kind == "taylor":
        # its default module patterns ("^blocks.*attn", fullmatch) match none of Wan's (attn1, attn2): name them
        return TaylorSeerCacheConfig(cache_interval=int(val), taylor_factors_dtype=torch.float32,
                                     cache_identifiers=[r"blocks\.\d+\.(attn1|attn2|ffn)"])
    raise ValueError(f"unknown diffusers cache {spec!r} (fbc:T, mag:T, taylor:N)")


class AttentionCount:
    """Counts the blocks' self-attention passes (the q projection runs only when the block computes)."""

    def __init__(self, blocks, attr, *more):
        """``blocks`` of one DiT, and ``more`` block lists of other DiTs the pipeline runs (a long video's
        continuation expert), all counted."""
        self.n, self.last = 0, 0
        self.hooks = [getattr(getattr(b, attr[0]), attr[1]).register_forward_hook(self._hook(i == len(bs) - 1))
                      for bs in (blocks, *more) for i, b in enumerate(bs)]

    def _hook(self, last):
        def fn(*a):
            self.n += 1
            self.last += last
        return fn

    def reset(self):
        self.n = self.last = 0


def load(model: str, tmp: str):
    import openwan
    from openwan.caches import store
    from openwan.caches.calibration import calibrate
    if model == "demo":
        from openwan.demo import world
        pipe = openwan.load_pipeline("demo", progress=False)
        return pipe, world.benchmark_prompts(), {}
    from openwan.testing import make_tiny_checkpoint
    ckpt = make_tiny_checkpoint(os.path.join(tmp, "tiny"), "tiny-t2v")
    pipe = openwan.load_pipeline(ckpt, variant="tiny-t2v", progress=False)
    prompts = [type("P", (), {"prompt": p, "attributes": None})()
               for p in ("a red circle moving right", "a blue square falling", "green waves at sunset",
                         "a cat on a sofa", "a car on a road at night", "snow on mountains")]
    return pipe, prompts, {"store": store, "calibrate": calibrate}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["demo", "tiny"], default="demo",
                    help="demo: the embedded demo model; tiny: random tiny-t2v weights (calibrated here first)")
    ap.add_argument("--caches", default=OURS, help="comma-separated openwan step_cache settings")
    ap.add_argument("--diffusers", default=DIFFUSERS, help="comma-separated diffusers caches, or 'none'")
    ap.add_argument("--prompts", type=int, default=6, help="the first N prompts")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's; tiny: 50)")
    ap.add_argument("--frames", type=int, default=None, help="frame_num (default: the model's native length)")
    ap.add_argument("--size", default=None, help="W*H (default: the model's; any other size runs unchecked, "
                                                  "e.g. --model tiny --size 832*480: tiny weights at a real size)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write every record to this file")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from openwan.caches import store
    from openwan.demo import detect
    tmp = tempfile.mkdtemp(prefix="step_cache_bench_")
    pipe, prompts, extra = load(a.model, tmp)
    prompts = prompts[: a.prompts]
    steps = a.steps or (50 if a.model == "tiny" else pipe.defaults().steps)
    kw = {"sample_steps": steps}
    if a.frames:
        kw["frame_num"] = a.frames
    if a.size:
        kw.update(size=a.size, strict_size=False)
    if a.model == "tiny":   # calibrate the random weights (what `python -m openwan.caches calibrate` does)
        os.environ["OPENWAN_STEP_CACHE_DIR"] = os.path.join(tmp, "cal")
        with torch.inference_mode():
            for cal in extra["calibrate"](pipe, [p.prompt for p in prompts][:3], steps, **{k: v for k, v in kw.items()
                                                                                           if k != "sample_steps"}).values():
                store.save_calibration(cal)
    ours = ["none"] + [c.strip() for c in a.caches.split(",") if c.strip()]
    theirs = [] if a.diffusers.strip() in ("", "none") else ["none"] + [c.strip() for c in a.diffusers.split(",")]
    expert = getattr(pipe.c, "dit_continue", None)      # a long video's later windows run it: counted too
    if expert is not None and len(expert.blocks) != len(pipe.dit.blocks):
        raise SystemExit("the continuation expert's depth differs from the main DiT's: block work is not one share")
    ours_count = AttentionCount(pipe.dit.blocks, ("self_attn", "q"), *([expert.blocks] if expert is not None else []))
    mag_ratios = store.find_calibration(pipe.dit)["mag_ratios"]
    adapter = None
    if theirs:
        from diffusers import WanTransformer3DModel

        from openwan.denoiser import Denoiser
        pipe.dit.save_pretrained(os.path.join(tmp, "transformer"), layout="diffusers")
        tr = WanTransformer3DModel.from_pretrained(os.path.join(tmp, "transformer")).eval()
        adapter = DiffusersDiT(tr, pipe.dit.config.text_len)
        their_count = AttentionCount(tr.blocks, ("attn1", "to_q"))
    layers = len(pipe.dit.blocks)

    def generate(p, seed, cache, side):
        if side == "ours":
            ours_count.reset()
            out = pipe(p, seed=seed, step_cache=cache, **kw)
            return out, ours_count
        their_count.reset()
        if cache != "none":
            adapter.transformer.enable_cache(diffusers_config(cache, steps, mag_ratios))
        orig = pipe.denoiser
        pipe.denoiser = lambda cond, guidance, step_cache=None, windows=None: Denoiser(adapter, cond, guidance)
        try:
            out = pipe(p, seed=seed, **kw)
        finally:
            pipe.denoiser = orig
            if cache != "none":
                adapter.transformer.disable_cache()
        out.settings["stats"]["dit_forwards"] = their_count.last
        out.settings["stats"]["dit_forwards_skipped"] = steps - their_count.last
        return out, their_count

    records, base = [], {}
    for bp in prompts:
        for seed in a.seeds:
            for side, caches in (("ours", ours), ("diffusers", theirs)):
                for cache in caches:
                    t0 = time.perf_counter()
                    out, count = generate(bp.prompt, seed, cache, side)
                    wall = time.perf_counter() - t0
                    frames, st = out.frames[0], out.settings["stats"]
                    if cache == "none":
                        base[(bp.prompt, seed, side)] = frames
                    ref = base[(bp.prompt, seed, side)]
                    ok = None
                    if bp.attributes is not None:
                        verdict = detect.score(detect.detect(frames), bp.attributes)["all"]
                        ok = bool(verdict == detect.score(detect.detect(base[(bp.prompt, seed, "ours")]),
                                                          bp.attributes)["all"])
                    passes = st["dit_forwards"] + st["dit_forwards_skipped"]
                    rec = {"prompt": bp.prompt, "seed": seed, "side": side,
                           "cache": (out.settings["step_cache"] if side == "ours" else f"diffusers:{cache}"),
                           "dit_forwards": st["dit_forwards"], "skipped": st["dit_forwards_skipped"],
                           "block_work": count.n / (passes * layers), "denoise_s": st["denoise"],
                           "wall_s": round(wall, 3), "psnr": psnr(frames, ref), "ssim": ssim(frames, ref),
                           "same_verdict": ok}
                    if side == "diffusers" and cache == "none":
                        rec["psnr_vs_openwan"] = psnr(frames, base[(bp.prompt, seed, "ours")])
                    records.append(rec)
                    print(json.dumps(rec), file=sys.stderr, flush=True)
    print(f"{a.model} model, {len(prompts)} prompts x {len(a.seeds)} seeds, {steps} steps, {a.threads} thread(s); "
          f"fidelity vs the same side's uncached video\n")
    print("| step_cache | DiT forwards | fewer forwards | block work | denoise s | speed-up | PSNR dB (min) "
          "| SSIM (min) | same detector verdict |")
    print("|---|---|---|---|---|---|---|---|---|")
    for side in ("ours", "diffusers"):
        none = [r for r in records if r["side"] == side and r["cache"] in ("none", "diffusers:none")]
        if not none:
            continue
        f0, t0 = np.mean([r["dit_forwards"] for r in none]), np.mean([r["denoise_s"] for r in none])
        for cache in dict.fromkeys(r["cache"] for r in records if r["side"] == side):
            rs = [r for r in records if r["cache"] == cache]
            f, t = np.mean([r["dit_forwards"] for r in rs]), np.mean([r["denoise_s"] for r in rs])
            ps = [r["psnr"] for r in rs]
            finite = [p for p in ps if math.isfinite(p)]
            pm = "inf" if len(finite) < len(ps) and not finite else \
                (f"{np.mean(finite):.1f}" if len(finite) == len(ps) else "inf")
            pmin = "inf" if min(ps) == math.inf else f"{min(ps):.1f}"
            ss = [r["ssim"] for r in rs]
            same = [r["same_verdict"] for r in rs if r["same_verdict"] is not None]
            verdict = f"{np.mean(same):.0%}" if same else "-"
            print(f"| {cache} | {f:.1f} | {f0 / f:.2f}x | {np.mean([r['block_work'] for r in rs]):.0%} | {t:.2f} "
                  f"| {t0 / t:.2f}x | {pm} ({pmin}) | {np.mean(ss):.4f} ({min(ss):.4f}) | {verdict} |")
    vs = [r["psnr_vs_openwan"] for r in records if "psnr_vs_openwan" in r]
    if vs:
        print(f"\ndiffusers uncached vs openwan uncached (same weights): PSNR mean {np.mean(vs):.1f} dB, "
              f"min {min(vs):.1f} dB")
    if a.json:
        from openwan.fileio import write_json
        write_json(records, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
