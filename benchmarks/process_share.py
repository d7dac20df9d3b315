"""A generation's work shared over processes against one process: window parallel (openwan.parallel.windows: a long
video's windows) or CFG parallel (openwan.parallel.cfg: the two passes of guidance). A demo video made by one process
(1 thread), by N processes under torchrun sharing it (1 thread each), and by one process with N threads (the other
way to use N cores), interleaved, each run a fresh process. Timed inside the processes: the generation call (denoise,
decode, write; the model loaded and warmed up first), so process start and loading are not counted; and whether the
video is one process's, byte for byte (under CFG parallel: one process's with cfg_batch=False, run beside them).

    python benchmarks/process_share.py                                    # window parallel, 161 frames, windows method
    python benchmarks/process_share.py --method default                   # the demo's continue + refinement pass
    python benchmarks/process_share.py --split cfg --method default       # CFG parallel (2 processes)
    python benchmarks/process_share.py --split cfg --frames 33            # CFG parallel, the native length

diffusers has nothing to set beside it: its ParallelConfig offers context (Ulysses / ring) and tensor parallelism, no
CFG or window parallel, and its pipelines make one call of any length.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(a) -> int:
    """One timed generation (under torchrun: window parallel; process 0 writes the output and the timing)."""
    import torch

    from openwan.pipelines import load_pipeline
    torch.set_num_threads(a.threads)
    rank = 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from openwan.parallel import enable_cfg_parallel, enable_window_parallel, init_process_group
        init_process_group()
        import torch.distributed as dist
        rank = dist.get_rank()
    pipe = load_pipeline("demo", progress=False)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        (enable_window_parallel if a.split == "window" else enable_cfg_parallel)(pipe)
    kw = dict(frame_num=a.frames, seed=0, **({"long_method": "windows"} if a.method == "windows" else {}))
    if a.unbatched:
        kw["cfg_batch"] = False
    pipe(a.prompt, frame_num=33, seed=1, output_type="latent")          # warm-up: one native-length video
    shared = pipe.window_share is not None or pipe.cfg_share is not None
    if shared:
        import torch.distributed as dist
        dist.barrier()
    t0 = time.perf_counter()
    out = pipe(a.prompt, output_path=a.out if rank == 0 else None, overwrite=True,
               output_type="uint8" if rank == 0 else "latent", return_frames=False, **kw)
    seconds = time.perf_counter() - t0
    if rank == 0:
        Path(a.out + ".time").write_text(json.dumps({"seconds": seconds, "long_video": out.settings.get("long_video"),
                                                     "steps": out.settings["sample_steps"]}))
    if shared:
        from openwan.parallel import end_process_group
        end_process_group()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=161)
    ap.add_argument("--method", choices=["windows", "default"], default="windows",
                    help="windows: long_method='windows' (every step's windows shared); default: the demo's continue "
                         "and its refinement pass (the pass's windows shared)")
    ap.add_argument("--split", choices=["window", "cfg"], default="window",
                    help="window: --window_parallel (a long video's windows); cfg: --cfg_parallel (2 processes)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt", default="a red square bouncing left and right")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--unbatched", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a)
    from openwan.runtime import free_port
    n = 2 if a.split == "cfg" else a.processes
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    me = [os.path.abspath(__file__), "--child", "--frames", str(a.frames), "--method", a.method, "--prompt", a.prompt,
          "--split", a.split]
    labels = ["1 process, 1 thread", f"{n} processes, 1 thread each", f"1 process, {n} threads"]
    if a.split == "cfg":            # the video CFG parallel makes: the two passes one after the other
        labels.append("1 process, 1 thread, passes unbatched")
    times: dict = {k: [] for k in labels}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {k: str(Path(tmp) / f"{i}.mp4") for i, k in enumerate(labels)}
        for _ in range(a.repeats):
            for label in labels:
                if label == labels[1]:
                    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
                           str(free_port()), *me, "--threads", "1", "--out", outs[label]]
                else:
                    cmd = [sys.executable, *me, "--threads", str(n) if label == labels[2] else "1",
                           "--out", outs[label]] + (["--unbatched"] if label.endswith("unbatched") else [])
                r = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if r.returncode != 0:
                    raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
                info = json.loads(Path(outs[label] + ".time").read_text())
                times[label].append(info["seconds"])
                print(f"  {label}: {info['seconds']:.2f} s", file=sys.stderr)
        ref = outs[labels[-1]] if a.split == "cfg" else outs[labels[0]]
        same = {k: Path(v).read_bytes() == Path(ref).read_bytes() for k, v in outs.items()}
    lv = info["long_video"]
    base = statistics.median(times[labels[0]])
    how = "one pass" if lv is None else (f"{lv['method']} ({lv['windows']} windows"
                                         f"{', refinement pass' if lv.get('refine') else ''})")
    print(f"{a.frames} frames, {how}, {info['steps']} steps; the call (denoise, decode, write), median of "
          f"{a.repeats}, interleaved")
    print(f"{a.split} parallel; the byte-for-byte reference: {'the unbatched one' if a.split == 'cfg' else 'one process'}")
    print("| run | call s (median) | vs 1 process, 1 thread | video byte for byte |")
    print("|---|---|---|---|")
    rows = {}
    for label, ts in times.items():
        m = statistics.median(ts)
        rows[label] = {"seconds": [round(t, 3) for t in ts], "median": round(m, 3), "speedup": round(base / m, 2),
                       "same": same[label]}
        print(f"| {label} | {m:.2f} | {base / m:.2f}x | {'yes' if same[label] else 'no'} |")
    if a.json:
        from openwan.fileio import write_json
        write_json({"settings": vars(a), "runs": rows}, Path(a.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
