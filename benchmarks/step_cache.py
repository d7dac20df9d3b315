"""Step caching on the demo model: DiT forwards, time and fidelity against the uncached video.

    python benchmarks/step_cache.py                                   # 6 demo prompts, seed 0, several thresholds
    python benchmarks/step_cache.py --caches easycache:0.05,easycache:0.1 --prompts 12 --seeds 0 1

For every (prompt, seed) the uncached video is generated first; each cache setting then generates the same
video and is compared with it: PSNR over the clip and SSIM (benchmarks/quality.py) of the decoded uint8
frames, the DiT forward passes computed (``stats.dit_forwards``), the denoising seconds, and whether the
demo's detector still reads the prompt's colour, shape and motion (``openwan bench demo``'s score). Prints a
markdown table (means; min PSNR/SSIM over the videos) and, with --json, writes every record.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality import psnr, ssim  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--caches", default="easycache:0.025,easycache:0.05,easycache:0.1,easycache:0.15,easycache:0.2",
                    help="comma-separated step_cache settings to compare with 'none'")
    ap.add_argument("--prompts", type=int, default=6, help="the first N prompts of the demo benchmark")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the demo's 30)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write every record to this file")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    import openwan
    from openwan.demo import detect, world
    pipe = openwan.load_pipeline("demo", progress=False)
    prompts = world.benchmark_prompts()[: a.prompts]
    caches = ["none"] + [c.strip() for c in a.caches.split(",") if c.strip()]
    kw = {} if a.steps is None else {"sample_steps": a.steps}
    records, base = [], {}
    for bp in prompts:
        for seed in a.seeds:
            for cache in caches:
                t0 = time.perf_counter()
                out = pipe(bp.prompt, seed=seed, step_cache=cache, **kw)
                wall = time.perf_counter() - t0
                frames, st = out.frames[0], out.settings["stats"]
                if cache == "none":
                    base[(bp.prompt, seed)] = frames
                ref = base[(bp.prompt, seed)]
                score = detect.score(detect.detect(frames), bp.attributes)
                records.append({"prompt": bp.prompt, "seed": seed, "cache": out.settings["step_cache"],
                                "dit_forwards": st["dit_forwards"], "skipped": st["dit_forwards_skipped"],
                                "denoise_s": st["denoise"], "wall_s": round(wall, 3),
                                "psnr": psnr(frames, ref), "ssim": ssim(frames, ref),
                                "all_correct": bool(score["all"])})
                print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    print(f"demo model, {len(prompts)} prompts x {len(a.seeds)} seeds, "
          f"{kw.get('sample_steps', pipe.defaults().steps)} steps, {a.threads} thread(s)\n")
    print("| step_cache | DiT forwards | fewer forwards | denoise s | speed-up | PSNR dB (min) | SSIM (min) "
          "| detector all-correct |")
    print("|---|---|---|---|---|---|---|---|")
    none = [r for r in records if r["cache"] == "none"]
    f0, t0 = np.mean([r["dit_forwards"] for r in none]), np.mean([r["denoise_s"] for r in none])
    for cache in dict.fromkeys(r["cache"] for r in records):
        rs = [r for r in records if r["cache"] == cache]
        f, t = np.mean([r["dit_forwards"] for r in rs]), np.mean([r["denoise_s"] for r in rs])
        ps = [r["psnr"] for r in rs]
        finite = [p for p in ps if math.isfinite(p)]
        pm = "inf" if not finite else f"{np.mean(finite) if len(finite) == len(ps) else float('inf'):.1f}"
        pmin = "inf" if not finite or min(ps) == math.inf else f"{min(ps):.1f}"
        ss = [r["ssim"] for r in rs]
        acc = np.mean([r["all_correct"] for r in rs])
        print(f"| {cache} | {f:.1f} | {f0 / f:.2f}x | {t:.2f} | {t0 / t:.2f}x | {pm} ({pmin}) "
              f"| {np.mean(ss):.4f} ({min(ss):.4f}) | {acc:.0%} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(records, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
