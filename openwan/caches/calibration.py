"""Calibrate the step caches that need it, from uncached runs of a model.

    python -m openwan.caches calibrate --model demo --out openwan/caches/calibration   # the shipped demo file
    python -m openwan.caches calibrate --ckpt_dir Wan2.1-T2V-1.3B --steps 50              # -> the user cache
    python -m openwan.caches calibrate --model demo --frame_num 161 --keep --out openwan/caches/calibration
                                            # + the demo's continuation expert (long videos' later windows)

Runs ``--prompts`` uncached generations (every block computed) and records, per DiT call and step:
TeaCache's indicator change ``rel_l1(I_j, I_{j-1})`` and the DiT output's change, and MagCache's
``mean |R_j| / |R_{j-1}|`` (per-token norms of the blocks' residual). Writes, per DiT (both experts of a
Wan 2.2 A14B model), ``mag_ratios`` (the mean curve over the runs) and ``teacache_poly`` (a degree-4
least-squares fit of output change on indicator change, numpy.polyfit order) as ``<model_key>.json``
(:mod:`openwan.caches.store`), atomically.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import torch

from openwan.caches import store
from openwan.caches.blocks import BlockCache, modulated_input, rel_l1

__all__ = ["Recorder", "fit", "calibrate", "main"]


class Recorder(BlockCache):
    """Computes every call and records the calibration signals: ``records[model_key]`` = list of
    (step index, steps, indicator change, output change, residual magnitude ratio)."""

    name = "calibration"

    def __init__(self, inner):
        super().__init__(inner, 0.0)
        self.records = defaultdict(list)
        self._keys = {}

    def new_state(self):
        return SimpleNamespace(residual=None, ind=None, out=None)

    def _call(self, den_id, cal, dit, x, t, contexts, kw):
        out, computed = super()._call(den_id, cal, dit, x, t, contexts, kw)
        st = self._states[(den_id, self._calls - 1)]
        o = out.float()
        st.rec["out"] = float("nan") if st.out is None else rel_l1(o, st.out)
        st.out = o
        key = self._keys.get(id(dit)) or self._keys.setdefault(id(dit), store.model_key(dit))
        step = self._step
        self.records[key].append((step.i, step.n, st.rec["ind"], st.rec["out"], st.rec["mag"]))
        return out, computed

    def blocks(self, dit, s, st, step, forced, cal):
        ind = modulated_input(dit, s)
        prev = st.residual
        out = self.compute(dit, s, st)
        mag = 1.0 if prev is None else (st.residual.norm(dim=-1) / prev.norm(dim=-1).clamp_min(1e-12)).mean().item()
        st.rec = {"ind": float("nan") if st.ind is None else rel_l1(ind, st.ind), "mag": mag}
        st.ind = ind
        return out, True


def fit(records: list, steps: int, degree: int = 4) -> dict:
    """mag_ratios (mean per step; 1.0 at steps never seen) and teacache_poly from one model's records."""
    by_step = defaultdict(list)
    xs, ys = [], []
    for i, n, ind, out, mag in records:
        if n != steps:
            continue
        by_step[i].append(mag)
        if np.isfinite(ind) and np.isfinite(out):
            xs.append(ind)
            ys.append(out)
    ratios = [float(np.mean(by_step[i])) if by_step[i] else 1.0 for i in range(steps)]
    poly = np.polyfit(np.array(xs), np.array(ys), degree) if len(xs) > degree else np.array([1.0, 0.0])
    return {"steps": steps, "mag_ratios": [round(r, 6) for r in ratios],
            "teacache_poly": [float(c) for c in poly], "points": len(xs)}


def calibrate(pipe, prompts, steps=None, seed: int = 0, **call) -> dict:
    """{model_key: calibration dict} from uncached runs of ``pipe`` over ``prompts``."""
    import openwan.caches as caches
    recorders = []   # the pipeline builds its wrapper by name: register the recorder under one for these runs
    orig = caches.STEP_CACHES.get("calibration")
    caches.STEP_CACHES["calibration"] = (lambda inner, thr: recorders.append(Recorder(inner)) or recorders[-1], 0.0)
    try:
        for k, p in enumerate(prompts):
            kw = dict(call, seed=seed + k, step_cache="calibration", output_type="latent")
            if steps is not None:
                kw["sample_steps"] = steps
            pipe(p, **kw)
    finally:
        if orig is None:
            caches.STEP_CACHES.pop("calibration")
        else:
            caches.STEP_CACHES["calibration"] = orig
    merged = defaultdict(list)
    for r in recorders:
        for key, recs in r.records.items():
            merged[key].extend(recs)
    steps_seen = {key: max(rec[1] for rec in recs) for key, recs in merged.items()}
    return {key: dict(fit(recs, steps_seen[key]), model=key, prompts=len(prompts)) for key, recs in merged.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m openwan.caches", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calibrate", help="compute the calibration file(s) of a model")
    c.add_argument("--model", default=None, help="'demo' for the embedded demo model")
    c.add_argument("--ckpt_dir", default=None, help="a checkpoint folder (as openwan generate)")
    c.add_argument("--variant", default=None, help="the variant name when the folder does not tell it")
    c.add_argument("--prompt", action="append", default=None, help="a prompt (repeat; default: built-in ones)")
    c.add_argument("--prompts", type=int, default=3, help="how many prompts to run (default 3)")
    c.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", default=None, help="folder to write <model_key>.json to (default: the user cache)")
    c.add_argument("--threads", type=int, default=None)
    c.add_argument("--frame_num", type=int, default=None,
                   help="frames per run (default: the model's); past the native length the runs are long videos, "
                        "so a continuation expert that draws their later windows is calibrated too")
    c.add_argument("--keep", action="store_true",
                   help="leave the calibrations already in the output folder as they are (write the new DiTs' only)")
    a = ap.parse_args(argv)
    if (a.model is None) == (a.ckpt_dir is None):
        ap.error("give --model demo or --ckpt_dir DIR")
    if a.threads:
        torch.set_num_threads(a.threads)
    import openwan
    if a.model is not None:
        if a.model != "demo":
            ap.error(f"--model: only 'demo' is embedded, got {a.model!r} (use --ckpt_dir)")
        from openwan.demo import world
        pipe = openwan.load_pipeline("demo", progress=False)
        prompts = a.prompt or [bp.prompt for bp in world.benchmark_prompts()]
    else:
        pipe = openwan.load_pipeline(a.ckpt_dir, variant=a.variant, progress=False)
        prompts = a.prompt or ["a cat walking on grass, cinematic", "waves breaking on a rocky shore at sunset",
                               "a person riding a bicycle through a city street"]
    prompts = prompts[: a.prompts]
    call = {} if a.frame_num is None else {"frame_num": a.frame_num}
    with torch.inference_mode():
        cals = calibrate(pipe, prompts, a.steps, a.seed, **call)
    cmd = "python -m openwan.caches " + " ".join(sys.argv[1:] if argv is None else argv)
    out = a.out if a.out is not None else store.calibration_dirs()[0]
    for key, cal in cals.items():
        if a.keep and (Path(out) / f"{key}.json").exists():
            print(f"{Path(out) / f'{key}.json'}: kept (--keep)")
            continue
        path = store.save_calibration(dict(cal, command=cmd), out)
        print(f"{path}: {cal['steps']} steps, {cal['points']} points, teacache_poly {cal['teacache_poly']}")
    return 0
