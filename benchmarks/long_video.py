"""Long video memory and time: peak RSS of a long demo generation vs a short one, per long-video method.

Each case (method x frame count) runs in its own subprocess: the demo pipeline is loaded, one native-length
1-step generation warms it up (thread pools, lazy buffers), then the peak RSS counter is reset
(/proc/self/clear_refs) and the measured generation runs, decoding streaming into an mp4 writer
(``return_frames=False``, as `openwan generate` does). Reported: seconds, peak RSS (VmHWM), and the peak over
the warmed-up baseline (what the generation itself adds); then per method the ratio long / short of both.
Issue 18's target: 161 frames <= 1.3x the peak of 33 frames. ``none`` is the naive one-call baseline (the DiT
sees every frame at once). MALLOC_MMAP_THRESHOLD_ is fixed so that RSS follows the live tensors rather than
allocator arenas (as benchmarks/dit.py does for its memory runs); the times are taken in the same runs.

    python benchmarks/long_video.py                         # 33 vs 161 frames, 3 methods, 20 steps, 1 thread
    python benchmarks/long_video.py --frames 17 33 161 --methods windows --steps 10
    python benchmarks/long_video.py --extend 33 321 --steps 20   # extending a 33- and a 321-frame file by 128 frames
    python benchmarks/long_video.py --wide 2 --steps 2           # a DiT of 1.3B's width at 256x256 (random weights)

The demo's DiT is so small that the libraries and the writer set its peak; ``--wide LAYERS`` runs a random DiT of
Wan 2.1 1.3B's width on the demo's VAE and text encoder instead, where the DiT's activations set it (``--ckpt DIR``:
any checkpoint folder; ``--step_cache SPEC``: the calls' step cache).

With ``--extend N ...`` each case extends an N-frame mp4 (the world's own clip of a bouncing square, rendered at
its pace) by ``--add`` frames (default 128) with the demo's default (openwan.pipelines.extend): the file is read in
chunks and only its tail encoded, so the peak should not grow with N.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import gc, json, os, sys, tempfile, time
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from openwan.pipelines import load_pipeline
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
pipe = load_pipeline(args["ckpt"], progress=False)
prompt = args["prompt"]
size = {"size": args["size"]} if args.get("size") else {}
cache = {"step_cache": args["step_cache"]} if args.get("step_cache") else {}
with torch.inference_mode():
    pipe(prompt, sample_steps=1, seed=0, output_type="latent", **size)    # warm-up at the native length
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")                          # peak (VmHWM) := current RSS
    base = status("VmRSS")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        kw = {"extend": args["extend"]} if args.get("extend") else {"long_method": args["method"]}
        out = pipe(prompt, frame_num=args["frames"], sample_steps=args["steps"], seed=0,
                   output_path=os.path.join(tmp, "v.mp4"), return_frames=False, **size, **cache, **kw)
        dt = time.perf_counter() - t0
peak = status("VmHWM")
print(json.dumps({"seconds": dt, "peak": peak, "base": base, "over_base": peak - base,
                  "long_video": out.settings.get("long_video"),
                  "dit_forwards": out.settings["stats"].get("dit_forwards")}))
"""


def run_case(method: str, frames: int, steps: int, threads: int, prompt: str, extend=None, ckpt: str = "demo",
             size=None, step_cache=None) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=os.environ.get("MALLOC_MMAP_THRESHOLD_", "65536"),
               OMP_NUM_THREADS=str(threads))
    args = dict(method=method, frames=frames, steps=steps, threads=threads, prompt=prompt, extend=extend, ckpt=ckpt,
                size=size, step_cache=step_cache)
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{method} {frames} frames failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[33, 161], help="frame counts (first = reference)")
    ap.add_argument("--methods", nargs="+", default=["windows", "continue", "none"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", default="a red circle moving to the right")
    ap.add_argument("--extend", type=int, nargs="+", default=None, metavar="N",
                    help="extend N-frame source files instead (4n+1 each; first = reference)")
    ap.add_argument("--add", type=int, default=128, help="--extend: frames added (a multiple of 4)")
    ap.add_argument("--json", default=None, help="also write the results as JSON to this file")
    ap.add_argument("--ckpt", default="demo", help="the checkpoint folder to run (default: the embedded demo)")
    ap.add_argument("--wide", type=int, default=0, metavar="LAYERS",
                    help="run a random DiT of Wan 2.1 1.3B's width (dim 1536, FFN 8960, 12 heads) and LAYERS blocks "
                         "on the demo's VAE and text encoder, written to a temporary folder: a model whose activations, "
                         "not the libraries, set the peak")
    ap.add_argument("--size", default=None, help="W*H (default: the checkpoint's; --wide: 256*256)")
    ap.add_argument("--step_cache", default=None,
                    help="the calls' step cache, e.g. plan:0.5 (default: the checkpoint's at its default steps)")
    a = ap.parse_args(argv)
    if a.extend:
        return extend_cases(a)
    if a.wide:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            a.size = a.size or "256*256"
            a.ckpt = wide_checkpoint(os.path.join(tmp, "wide"), a.wide, a.size)
            return measure_cases(a)
    return measure_cases(a)


def wide_checkpoint(path: str, layers: int, size: str) -> str:
    """The embedded demo's folder with its DiT replaced by random weights of Wan 2.1 1.3B's width and ``layers``
    blocks (no experts), ``size`` among its sizes: at 256x256 a 161-frame one-call forward holds hundreds of MB of
    activations, where the demo's own DiT holds a few."""
    import shutil
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import torch
    from openwan.configs import DEMO_V2_DIT
    from openwan.demo import demo_checkpoint_dir
    from openwan.fileio import write_json
    from openwan.models.dit import WanModel
    from openwan.testing import randomize_
    shutil.copytree(demo_checkpoint_dir(), path, ignore=shutil.ignore_patterns("*_model"))
    cfg = DEMO_V2_DIT.replace(dim=1536, ffn_dim=8960, num_heads=12, num_layers=layers)
    torch.manual_seed(0)
    randomize_(WanModel(cfg), seed=0, std=0.02).save_pretrained(path)
    with open(os.path.join(path, "openwan.json")) as f:
        meta = json.load(f)
    meta["dit"].update(dim=1536, ffn_dim=8960, num_heads=12, num_layers=layers)
    meta["sample"].update(sizes=[size], size=size)
    write_json(meta, os.path.join(path, "openwan.json"))
    return path


def measure_cases(a) -> int:
    """Each method at each frame count in its own process; the peaks and their ratios to the first count."""
    mb = 2 ** 20
    model = "demo" if a.ckpt == "demo" else (f"random {a.wide}-block DiT of 1.3B's width" if a.wide else a.ckpt)
    print(f"{model} pipeline{f' at {a.size}' if a.size else ''}, {a.steps} steps, {a.threads} thread(s)"
          f"{f', step cache {a.step_cache}' if a.step_cache else ''}; peak RSS of the generation in a fresh process")
    print(f"{'method':9} {'frames':>6} {'windows':>7} {'forwards':>8} {'time s':>8} {'peak MB':>8} "
          f"{'over base MB':>12}")
    results = []
    for method in a.methods:
        for frames in a.frames:
            r = dict(run_case(method, frames, a.steps, a.threads, a.prompt, ckpt=a.ckpt, size=a.size,
                              step_cache=a.step_cache), method=method, frames=frames)
            results.append(r)
            lv = r["long_video"] or {}
            print(f"{method:9} {frames:6d} {lv.get('windows', 1):7d} {r['dit_forwards']:8d} {r['seconds']:8.1f} "
                  f"{r['peak'] / mb:8.1f} {r['over_base'] / mb:12.1f}", flush=True)
    ref, ratios = a.frames[0], []
    print(f"\nratio to {ref} frames (target for 161 vs 33: peak <= 1.3x)")
    for method in a.methods:
        base = next(r for r in results if r["method"] == method and r["frames"] == ref)
        for r in results:
            if r["method"] == method and r["frames"] != ref:
                ratio = {"method": method, "frames": r["frames"], "reference": ref,
                         "peak": r["peak"] / base["peak"], "over_base": r["over_base"] / max(base["over_base"], 1),
                         "time": r["seconds"] / base["seconds"]}
                ratios.append(ratio)
                print(f"{method:9} {r['frames']:6d}: peak {ratio['peak']:.3f}x, over base {ratio['over_base']:.2f}x, "
                      f"time {ratio['time']:.2f}x")
    if a.json:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from openwan.fileio import write_json
        write_json({"settings": vars(a), "cases": results, "ratios": ratios}, a.json)
    return 0


def extend_cases(a) -> int:
    """The peak of extending sources of each length in ``a.extend`` by ``a.add`` frames, and the ratios to the first."""
    import tempfile
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from openwan.demo import world
    from openwan.video import write_video
    mb, results = 2 ** 20, []
    prompt = "a red square bouncing left and right"
    print(f"demo pipeline, {a.steps} steps, {a.threads} thread(s); extending an N-frame file by {a.add} frames; "
          f"peak RSS of the generation in a fresh process")
    print(f"{'source':>6} {'frames':>6} {'forwards':>8} {'time s':>8} {'peak MB':>8} {'over base MB':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        clip = world.make_clip(0, attributes=[("red", "square", "bounce_lr")])
        for n in a.extend:
            path = os.path.join(tmp, f"source{n}.mp4")
            write_video(iter([world.render_clip(clip, size=128, frames=n, native_frames=33)]), path, fps=16, overwrite=True)
            r = dict(run_case("extend", n + a.add, a.steps, a.threads, prompt, extend=path), source=n,
                     frames=n + a.add)
            results.append(r)
            print(f"{n:6d} {n + a.add:6d} {r['dit_forwards']:8d} {r['seconds']:8.1f} {r['peak'] / mb:8.1f} "
                  f"{r['over_base'] / mb:12.1f}", flush=True)
    ref, ratios = results[0], []
    print(f"\nratio to the {ref['source']}-frame source")
    for r in results[1:]:
        ratio = {"source": r["source"], "reference": ref["source"], "peak": r["peak"] / ref["peak"],
                 "over_base": r["over_base"] / max(ref["over_base"], 1), "time": r["seconds"] / ref["seconds"]}
        ratios.append(ratio)
        print(f"{r['source']:6d}: peak {ratio['peak']:.3f}x, over base {ratio['over_base']:.2f}x, "
              f"time {ratio['time']:.2f}x")
    if a.json:
        from openwan.fileio import write_json
        write_json({"settings": vars(a), "cases": results, "ratios": ratios}, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
