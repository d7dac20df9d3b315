"""Sequence-parallel DiT forward: openwan (Ulysses, ``openwan.parallel``) vs diffusers (context parallel,
``enable_parallelism(ContextParallelConfig(ulysses_degree=N))``), one process vs N processes.

Every case runs in fresh processes (``torchrun --nproc_per_node N`` for N > 1, gloo on CPU), with the
same random weights (ours, moved to diffusers' layout with openwan's key map) and the same inputs.
Reported per case: median time of one forward (after a warm-up), the DiT weights each process holds
(local shards under FSDP), the peak RSS of each process
(``VmHWM``, model included) and the peak during the first forward over the RSS before it (``op_MB``,
Linux ``clear_refs``: the activations of one forward), and the max abs difference of the output from openwan on one process.

    python benchmarks/parallel.py                                  # 1.3B width, 2 layers, 1950 tokens, 2 procs
    python benchmarks/parallel.py --layers 1 --latent 3 16 16 --repeats 1    # a quick look

``openwan-fsdp`` adds ``--dit_fsdp`` (weights sharded with FSDP2) to the sequence-parallel run.

diffusers picks an accelerator device per rank (``rank % torch.accelerator.device_count()``); on a
CPU-only machine the child reports one device so that it runs on the CPU (no other change).
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

from common import add_dit_args, reset_peak, rss_kb

HERE = os.path.dirname(os.path.abspath(__file__))


def child(args: dict) -> None:
    import torch
    import torch.distributed as dist
    torch.set_num_threads(args["threads"])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    from openwan.configs import DiTConfig
    from openwan.models.dit import WanModel, init_weights
    cfg = DiTConfig(**args["cfg"])
    torch.manual_seed(0)
    model = init_weights(WanModel(cfg)).eval()
    with torch.no_grad():  # init_weights zeroes the head: give it weights so the outputs say something
        model.head.head.weight.normal_(0, 0.02)
    g = torch.Generator().manual_seed(1)
    f, h, w = args["latent"]
    x = torch.randn(1, 16, f, h, w, generator=g)
    t = torch.tensor([700])
    ctx = torch.randn(64, cfg.text_dim, generator=g)
    if args["impl"] in ("openwan", "openwan-fsdp"):
        if world > 1:
            from openwan.parallel import enable_sequence_parallel, shard_dit
            if args["impl"] == "openwan-fsdp":
                shard_dit(model)
            enable_sequence_parallel(model)

        def fwd():
            return model(x, t, [ctx])
        held = model
    else:
        from diffusers import ContextParallelConfig, WanTransformer3DModel
        ctx_512 = torch.nn.functional.pad(ctx, (0, 0, 0, cfg.text_len - ctx.shape[0]))[None]  # as its pipeline pads
        from openwan.checkpoints import dit_config_to_diffusers_json, dit_official_to_diffusers
        kw = {k: v for k, v in dit_config_to_diffusers_json(cfg).items() if not k.startswith("_")}
        ref = WanTransformer3DModel(**kw).eval()
        ref.load_state_dict(dit_official_to_diffusers(model.state_dict()), strict=True)
        del model
        if world > 1:
            if torch.accelerator.device_count() == 0:
                torch.accelerator.device_count = lambda: 1  # CPU run: diffusers places rank r on device r % count
            ref.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))

        def fwd():
            return ref(x, t, ctx_512, return_dict=False)[0]
        held = ref
    import gc
    gc.collect()
    with torch.no_grad():
        base = rss_kb("VmRSS") * 1024
        reset = reset_peak()
        fwd()  # warm-up; its peak is the forward's memory (later calls reuse the allocator's cached blocks)
        op = rss_kb("VmHWM") * 1024 - base if reset else None
        times = []
        for _ in range(args["repeats"]):
            if world > 1:
                dist.barrier()
            t0 = time.perf_counter()
            out = fwd()
            times.append(time.perf_counter() - t0)
    weights = sum((p.to_local() if hasattr(p, "to_local") else p).nbytes for p in held.parameters())
    res = {"rank": rank, "time": statistics.median(times), "peak": rss_kb("VmHWM") * 1024, "op": op,
           "weights": weights}
    if rank == 0:
        torch.save(out.float(), args["out"])
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, res)
        dist.destroy_process_group()
    else:
        gathered = [res]
    if rank == 0:
        print("RESULT " + json.dumps(gathered))


def run_case(impl: str, nproc: int, a, cfg: dict, out: str) -> list:
    args = json.dumps(dict(impl=impl, cfg=cfg, latent=a.latent, repeats=a.repeats, threads=a.threads, out=out))
    script = os.path.join(HERE, "parallel.py")
    if nproc == 1:
        cmd = [sys.executable, script, "--child", args]
    else:
        from openwan.runtime import free_port
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
               str(free_port()), script, "--child", args]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.timeout)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode or not lines:
        raise SystemExit(f"{impl} x{nproc} failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dit_args(ap)
    ap.add_argument("--latent", type=int, nargs=3, default=[5, 30, 52], metavar=("T", "H", "W"),
                    help="latent frames, height, width (default: 17 frames of 480x832; tokens = T * H/2 * W/2)")
    ap.add_argument("--nproc", type=int, default=2, help="processes of the parallel cases")
    ap.add_argument("--threads", type=int, default=1, help="threads per process")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--impls", nargs="+", default=["openwan", "openwan-fsdp", "diffusers"],
                    choices=["openwan", "openwan-fsdp", "diffusers"],
                    help="openwan-fsdp: sequence parallel + weights sharded over the processes (--dit_fsdp)")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(json.loads(a.child))
    import torch
    cfg = dict(dim=a.dim, ffn_dim=a.ffn_dim, num_heads=a.heads, num_layers=a.layers, text_dim=4096)
    t, h, w = a.latent
    print(f"DiT dim {a.dim}, ffn {a.ffn_dim}, {a.heads} heads, {a.layers} layers; latent {t}x{h}x{w} = "
          f"{t * (h // 2) * (w // 2)} tokens; {a.threads} thread(s) per process; median of {a.repeats} forwards")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ref_out = None
        for impl in a.impls:
            for n in ((a.nproc,) if impl == "openwan-fsdp" else (1, a.nproc)):
                out = os.path.join(tmp, f"{impl}{n}.pt")
                res = run_case(impl, n, a, cfg, out)
                y = torch.load(out)
                if ref_out is None:
                    ref_out = y
                rows.append(dict(impl=impl, nproc=n, time=max(r["time"] for r in res),
                                 weights_MB=max(r["weights"] for r in res) / 2**20,
                                 peak_MB=max(r["peak"] for r in res) / 2**20,
                                 op_MB=None if res[0]["op"] is None else max(r["op"] for r in res) / 2**20,
                                 diff=(y - ref_out).abs().max().item()))
    base = {r["impl"]: r for r in rows if r["nproc"] == 1}
    if "openwan" in base:
        base["openwan-fsdp"] = base["openwan"]
    print("\n| implementation | processes | time / forward (s) | speed-up vs 1 process | DiT weights per process (MB) "
          "| peak RSS per process (MB) | forward's peak over start, per process (MB) | max abs diff vs openwan x1 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        b = base.get(r["impl"])
        speed = f"{b['time'] / r['time']:.2f}x" if b else ""
        op = "" if r["op_MB"] is None else f"{r['op_MB']:.0f}"
        print(f"| {r['impl']} | {r['nproc']} | {r['time']:.2f} | {speed} | {r['weights_MB']:.0f} | "
              f"{r['peak_MB']:.0f} | "
              f"{op} | {r['diff']:.1e} |")
    if set(a.impls) == {"openwan", "diffusers"}:
        for n in (1, a.nproc):
            o = next(r for r in rows if r["impl"] == "openwan" and r["nproc"] == n)
            d = next(r for r in rows if r["impl"] == "diffusers" and r["nproc"] == n)
            op = "" if o["op_MB"] is None or not d["op_MB"] else f", forward's peak {o['op_MB'] / d['op_MB']:.2f}x"
            print(f"openwan / diffusers at {n} process(es): time {o['time'] / d['time']:.2f}x, "
                  f"peak RSS {o['peak_MB'] / d['peak_MB']:.2f}x{op}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
