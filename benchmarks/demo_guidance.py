"""Which guidance draws the demo right? The benchmark's prompts at several scales or guidance intervals.

    python benchmarks/demo_guidance.py                                   # circles, scales 2 3 4 5 7, 2 seeds
    python benchmarks/demo_guidance.py --ckpt_dir runs/demo2e/cand1200 --shape circle --scales 2 5
    python benchmarks/demo_guidance.py --task v2v --shape all --seeds 1 --scales 2 5 2,7@0.5   # intervals

A scale is a number, or ``LOW,HIGH@B``: a guidance interval (HIGH on the steps at timestep >= B x 1000, LOW
below; openwan.denoiser.Guidance). For each, the benchmark's prompts naming ``--shape`` (12 for each shape; all
36 with ``--shape all``) are generated for ``--task`` (t2v, or v2v: the prompt over a world clip in another
colour at strength 0.7) with seeds 0..N-1 and graded by the benchmark's detector
(``openwan.demo.bench_tasks.run_cases``); the report is the share of videos with the right colour, shape and
motion per setting. It is how v2's default guidance (2; docs/demo.md, "(evening)": at 5 the circles came out
lopsided and were read as triangles) and its v2v interval (docs/demo.md, "Video-to-video's guidance interval")
were chosen.
"""
from __future__ import annotations

import argparse
import time


def parse_setting(text: str):
    """``5`` -> (5.0, None); ``2,7@0.5`` -> ((2.0, 7.0), 0.5)."""
    scale, _, boundary = text.partition("@")
    parts = [float(p) for p in scale.split(",")]
    if len(parts) == 1 and not boundary:
        return parts[0], None
    if len(parts) != 2 or not boundary:
        raise argparse.ArgumentTypeError(f"{text!r}: give a scale (5) or an interval LOW,HIGH@BOUNDARY (2,7@0.5)")
    return (parts[0], parts[1]), float(boundary)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt_dir", default=None, help="a demo checkpoint folder (default: the shipped one)")
    ap.add_argument("--task", default="t2v", choices=("t2v", "v2v"))
    ap.add_argument("--shape", default="circle", choices=("circle", "square", "triangle", "all"))
    ap.add_argument("--scales", type=parse_setting, nargs="+", default=[parse_setting(s) for s in "2 3 4 5 7".split()],
                    metavar="SCALE|LOW,HIGH@B")
    ap.add_argument("--seeds", type=int, default=2, help="videos per prompt and setting (seeds 0..N-1)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)

    import torch

    from openwan.demo import bench_tasks
    from openwan.demo.bench import _ckpt_variant
    from openwan.demo.bench_sets import cases
    from openwan.pipelines import load_pipeline
    torch.set_num_threads(a.threads)
    pipe = load_pipeline(a.ckpt_dir or "demo", task=a.task, progress=False,
                         variant=_ckpt_variant(a.ckpt_dir) if a.ckpt_dir else None)
    chosen = [c for c in cases(["single"]) if a.shape == "all" or c.objects[0].shape == a.shape]
    print(f"{a.task}: {len(chosen)} prompts naming {'any shape' if a.shape == 'all' else 'a ' + a.shape} x "
          f"{a.seeds} seeds ({a.ckpt_dir or 'shipped demo'})")
    print("guidance       videos   color   shape  motion     s")
    for scale, boundary in a.scales:
        kw = {"guide_scale": scale} if boundary is None else {"guide_scale": scale, "guide_boundary": boundary}
        t0 = time.perf_counter()
        with torch.inference_mode():
            recs = bench_tasks.run_cases(pipe, a.task, chosen, range(a.seeds), progress=False, **kw)
        acc = {k: 100 * sum(r["correct"][k] for r in recs) / len(recs) for k in ("color", "shape", "motion")}
        name = f"{scale:g}" if boundary is None else f"{scale[0]:g},{scale[1]:g}@{boundary:g}"
        print(f"{name:13s}  {len(recs):6d}  {acc['color']:5.1f}%  {acc['shape']:5.1f}%  {acc['motion']:5.1f}%  "
              f"{time.perf_counter() - t0:4.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
