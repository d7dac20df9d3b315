"""The whole text-to-video call up to the latents: openwan's TextToVideo vs diffusers' WanPipeline.

Both load the same tiny random checkpoint (``openwan.testing.make_tiny_checkpoint``, diffusers layout) and
run the same work: prompt + negative prompt through the text encoder, then the reference's UniPC grid
(diffusers is fed openwan's sigmas, as in tests/test_pipeline.py) for ``--steps`` steps with guidance,
from the same noise, to latents. Each side does what it does by default: openwan batches the two
guidance passes into one DiT call and encodes the prompts at their length; diffusers runs the DiT twice
per step and encodes 512 padded tokens. Step caching is off unless ``--step_cache SPEC`` turns openwan's on
(diffusers' side stays uncached: the target "<= 0.25x with the cache on"). Load time is not counted.

Each implementation runs in its own subprocess (one thread by default), one warm-up call, then
``--repeats`` timed calls; the two alternate (diffusers, openwan, openwan, diffusers, ...) for ``--rounds``
rounds, so a machine that slows down weighs on both alike. Reported: the median call time per side and
the ratio openwan/diffusers (< 1: openwan is faster), in wall time and in the process's CPU time (with one
thread: the time computed, not the time spent waiting for a core on a shared machine).

    python benchmarks/sampling.py                        # tiny-t2v, 64x32, 5 frames, 50 steps, 1 thread
    python benchmarks/sampling.py --size 32*32 --rounds 4
    python benchmarks/sampling.py --step_cache default   # openwan with its default step cache
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPT = "a red circle moving to the right"
NEGATIVE = "blurry, static"

CHILD = r"""
import json, sys, time
import torch
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
w, h = (int(v) for v in a["size"].split("*"))
root = a["root"]
from openwan import sampling
from openwan.pipelines.base import make_noise
sigmas = sampling.unipc_sigmas(a["steps"], 1.0)[:-1].numpy()   # the reference's unshifted grid
if a["impl"] == "openwan":
    from openwan.pipelines import load_pipeline
    pipe = load_pipeline(root, variant="tiny-t2v", progress=False, threads=a["threads"])
    def call(steps):
        return pipe(a["prompt"], negative_prompt=a["negative"], seed=0, sample_steps=steps, sample_shift=a["shift"],
                    guide_scale=a["scale"], frame_num=a["frames"], size=a["size"], output_type="latent",
                    step_cache=a["step_cache"]).latents
else:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=a["shift"],
                                    num_train_timesteps=1000)
    orig = sched.set_timesteps
    def set_timesteps(n, device=None, **kw):
        return orig(sigmas=sampling.unipc_sigmas(n, 1.0)[:-1].numpy(), device=device)
    sched.set_timesteps = set_timesteps
    pipe = WanPipeline(tokenizer=AutoTokenizer.from_pretrained(root + "/tokenizer"),
                       text_encoder=UMT5EncoderModel.from_pretrained(root + "/text_encoder"),
                       transformer=WanTransformer3DModel.from_pretrained(root + "/transformer"),
                       vae=AutoencoderKLWan.from_pretrained(root + "/vae"), scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    lat_f = (a["frames"] - 1) // 4 + 1
    noise = make_noise((16, lat_f, h // 8, w // 8), 0, "cpu")[None]
    def call(steps):
        return pipe(a["prompt"], negative_prompt=a["negative"], height=h, width=w, num_frames=a["frames"],
                    num_inference_steps=steps, guidance_scale=a["scale"], latents=noise.clone(),
                    output_type="latent").frames
with torch.no_grad():
    call(2)                                   # warm-up (allocator, first-call paths)
    times, cpu = [], []
    for _ in range(a["repeats"]):
        t0, c0 = time.perf_counter(), time.process_time()
        call(a["steps"])
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
print(json.dumps({"times": times, "cpu": cpu}))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="64*32", help="W*H (default 64*32, a tiny-t2v size)")
    ap.add_argument("--frames", type=int, default=5, help="frames (default 5: tiny-t2v's native length, one window)")
    ap.add_argument("--steps", type=int, default=50, help="sampling steps (default 50: Wan 2.1 t2v's)")
    ap.add_argument("--shift", type=float, default=5.0)
    ap.add_argument("--scale", type=float, default=5.0, help="guidance scale")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--step_cache", default="none",
                    help="openwan's step cache (default none; 'default' for the recommended one); diffusers' runs uncached")
    a = ap.parse_args(argv)

    from openwan.testing import make_tiny_checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        root = make_tiny_checkpoint(Path(tmp) / "ckpt", "tiny-t2v", layout="diffusers")
        print(f"tiny-t2v, {a.size}, {a.frames} frames, {a.steps} UniPC steps, guidance {a.scale}, openwan step "
              f"cache {a.step_cache}, {a.threads} "
              f"thread(s), {a.rounds} alternating rounds x {a.repeats} calls (prompt to latents, load not counted)")
        times = {"diffusers": [], "openwan": []}
        cpus = {"diffusers": [], "openwan": []}
        for r in range(a.rounds):
            for impl in (("diffusers", "openwan") if r % 2 == 0 else ("openwan", "diffusers")):
                args = dict(vars(a), impl=impl, root=str(root), prompt=PROMPT, negative=NEGATIVE)
                out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"{impl} failed: {out.stderr.strip().splitlines()[-1]}")
                    continue
                res = json.loads(out.stdout.strip().splitlines()[-1])
                times[impl] += res["times"]
                cpus[impl] += res["cpu"]
        med = {k: statistics.median(v) for k, v in times.items() if v}
        cmed = {k: statistics.median(v) for k, v in cpus.items() if v}
        print(f"{'impl':9} {'wall s':>8} {'ratio':>6} {'cpu s':>8} {'ratio':>6}")
        for impl in ("diffusers", "openwan"):
            if impl in med:
                both = impl == "openwan" and "diffusers" in med
                r = f"{med['openwan'] / med['diffusers']:.2f}x" if both else ""
                rc = f"{cmed['openwan'] / cmed['diffusers']:.2f}x" if both else ""
                print(f"{impl:9} {med[impl]:8.3f} {r:>6} {cmed[impl]:8.3f} {rc:>6}")


if __name__ == "__main__":
    main()
