"""Which guidance scale draws a demo shape right? The benchmark's prompts of one shape at several scales.

    python benchmarks/demo_guidance.py                                   # circles, scales 2 3 4 5 7, 2 seeds
    python benchmarks/demo_guidance.py --ckpt_dir runs/demo2e/cand1200 --shape circle --scales 2 5

For each scale, the text-to-video prompts of ``openwan bench demo`` naming ``--shape`` (12 for each shape) are
generated with seeds 0..N-1 and graded by the benchmark's detector (``openwan.demo.bench_tasks.run_cases``);
the report is the share of videos with the right shape and the right motion per scale. It is how v2's default
guidance (2; docs/demo.md, "(evening)") was chosen: at 5 the circles came out lopsided and were read as
triangles.
"""
from __future__ import annotations

import argparse
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt_dir", default=None, help="a demo checkpoint folder (default: the shipped one)")
    ap.add_argument("--shape", default="circle", choices=("circle", "square", "triangle"))
    ap.add_argument("--scales", type=float, nargs="+", default=[2.0, 3.0, 4.0, 5.0, 7.0])
    ap.add_argument("--seeds", type=int, default=2, help="videos per prompt and scale (seeds 0..N-1)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)

    import torch

    from openwan.demo import bench_tasks
    from openwan.demo.bench import _ckpt_variant
    from openwan.demo.bench_sets import cases
    from openwan.pipelines import load_pipeline
    torch.set_num_threads(a.threads)
    pipe = load_pipeline(a.ckpt_dir or "demo", task="t2v", variant=_ckpt_variant(a.ckpt_dir) if a.ckpt_dir else None,
                         progress=False)
    chosen = [c for c in cases(["single"]) if c.objects[0].shape == a.shape]
    print(f"{len(chosen)} prompts naming a {a.shape} x {a.seeds} seeds ({a.ckpt_dir or 'shipped demo'})")
    print("scale  videos  shape   motion   s")
    for scale in a.scales:
        t0 = time.perf_counter()
        with torch.inference_mode():
            recs = bench_tasks.run_cases(pipe, "t2v", chosen, range(a.seeds), progress=False, guide_scale=scale)
        shape = sum(r["correct"]["shape"] for r in recs) / len(recs)
        motion = sum(r["correct"]["motion"] for r in recs) / len(recs)
        print(f"{scale:5.1f}  {len(recs):6d}  {100 * shape:5.1f}%  {100 * motion:5.1f}%  {time.perf_counter() - t0:4.0f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
