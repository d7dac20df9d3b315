"""`openwan bench demo`: does the embedded demo model do what its prompts say?

For every prompt of the fixed benchmark (:func:`openwan.demo.world.benchmark_prompts`: 24 prompts whose
(color, shape, motion) combinations were seen in training, 12 held out from it) and every seed, the demo
pipeline generates a video; the world's detector (:func:`openwan.demo.detect.detect`) measures the object's
color, shape and motion, and :func:`openwan.demo.detect.score` compares them with the prompt. The report
gives the accuracy of each attribute and of all three together, for seen and held-out prompts apart, and
the seconds per video (model load apart); then each attribute per prompted value with what it was mistaken
for, and whether translating objects start on the side their motion needs (:func:`translation_placement`).

    openwan bench demo                          # the shipped defaults, 2 seeds per prompt
    openwan bench demo --seeds 4 --out bench/   # also write every video (mp4) and results.json there
    openwan bench demo --json -                 # results as JSON on stdout
    openwan bench demo --check                  # exit 1 when a target is missed (CI)
    openwan bench demo --task i2v               # every task: t2v (default), i2v, flf2v, v2v, vace, r2v, swap
    openwan bench demo --prompts all            # + two-object scenes and paraphrased prompts (bench_sets.py, assets/paraphrase_sets.json)

Targets (issue 7): attribute accuracy >= 90% on seen combinations, >= 75% on held-out ones. With the tasks and
sets beyond it (issue 22): PSNR of the given first / last frames >= 25 dB, two-object scenes >= 85% per object
attribute.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

ATTRIBUTES = ("color", "shape", "motion")
TARGETS = {"seen": 0.90, "heldout": 0.75}


def _last_paraphrase_set() -> str:
    from openwan.demo.bench_sets import PARAPHRASE_SETS
    return PARAPHRASE_SETS[-1]


def run_benchmark(pipe, prompts: Optional[Sequence] = None, seeds: Sequence[int] = (0, 1),
                  out_dir: Optional[Path] = None, progress: bool = True, **sample_kw) -> list[dict]:
    """Generate and score one text-to-video video per (prompt, seed). ``prompts``: BenchmarkPrompts (default: all
    of :func:`~openwan.demo.world.benchmark_prompts`); ``sample_kw`` go to the pipeline (sample_steps,
    sample_shift, guide_scale, sample_solver, ...). Returns one record per video
    (:func:`openwan.demo.bench_tasks.run_cases` runs the other tasks and prompt sets)."""
    from openwan.demo import world
    from openwan.demo.bench_sets import BenchCase
    from openwan.demo.bench_tasks import run_cases
    prompts = list(world.benchmark_prompts() if prompts is None else prompts)
    cases = [BenchCase(bp.prompt, (bp.attributes,), bp.split, "single") for bp in prompts]
    return run_cases(pipe, "t2v", cases, seeds, out_dir=out_dir, progress=progress, **sample_kw)


def summarize(records: Sequence[dict]) -> dict:
    """Accuracy per attribute and overall ("all": every attribute right) per split, and seconds per video;
    under ``"by_value"``, for every attribute and expected value over all splits: videos, correct, and what the
    detector saw instead ({detected: count}, None when no object was found) -- where a model goes wrong."""
    out = {}
    for split in ("seen", "heldout", "total"):
        rs = [r for r in records if split == "total" or r["split"] == split]
        if not rs:
            continue
        acc = {k: sum(r["correct"][k] for r in rs) / len(rs) for k in ATTRIBUTES + ("all",)}
        acc["attribute_mean"] = sum(acc[k] for k in ATTRIBUTES) / len(ATTRIBUTES)
        out[split] = {"videos": len(rs), "accuracy": acc,
                      "seconds_per_video": sum(r["seconds"] for r in rs) / len(rs)}
        if all("dit_forwards" in r for r in rs):   # DiT forward passes computed (a step cache skips some)
            out[split]["dit_forwards_per_video"] = sum(r["dit_forwards"] for r in rs) / len(rs)
    by_value: dict = {}
    for r in records:
        if "expected" not in r:
            continue
        for k in ATTRIBUTES:
            v = by_value.setdefault(k, {}).setdefault(r["expected"][k], {"videos": 0, "correct": 0, "mistaken_for": {}})
            v["videos"] += 1
            if r["correct"][k]:
                v["correct"] += 1
            else:
                got = str(r["detected"].get(k))
                v["mistaken_for"][got] = v["mistaken_for"].get(got, 0) + 1
    if by_value:
        out["by_value"] = by_value
    placement = translation_placement(records)
    if placement["videos"]:
        out["translations"] = placement
    return out


# For a translation the object has to start on the side it moves away from: (axis of the start centroid, sign
# of the move along it). The world starts a "right" object within [margin + r, 1 - margin - r - distance] of
# the width (world.sample_object), so in its left part.
_TRANSLATIONS = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}


def translation_placement(records: Sequence[dict]) -> dict:
    """For translation prompts (left/right/up/down) with a detected object: how often it starts on the side the
    motion needs (the half of the frame it moves away from), how often the move along that axis has the
    prompt's sign, and how often that sign is simply "away from the nearer border" of where it started. A model
    that cannot place objects (no absolute positions) shows the third number high and the first near 50%."""
    n = side = sign = away = 0
    for r in records:
        axis_sign = _TRANSLATIONS.get(r.get("expected", {}).get("motion"))
        tr = r.get("track")
        if axis_sign is None or tr is None:
            continue
        axis, want = axis_sign
        start, move = tr["start"][axis], (tr["dx"], tr["dy"])[axis]
        if move != move:    # NaN: fewer than two frames with the object
            continue
        n += 1
        side += (start < 0.5) == (want > 0)
        sign += (move > 0) == (want > 0)
        away += (move > 0) == (start < 0.5)
    return {"videos": n, "start_on_needed_side": side, "move_sign_as_prompted": sign,
            "move_away_from_nearer_border": away}


def meets_targets(summary: dict) -> dict:
    """{split: True/False}: every attribute's accuracy at or above the split's target."""
    return {split: all(summary[split]["accuracy"][k] >= t for k in ATTRIBUTES)
            for split, t in TARGETS.items() if split in summary}


def format_report(summary: dict, settings: dict) -> str:
    lines = [f"openwan bench demo  ({settings.get('checkpoint', 'demo')})",
             "settings: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "checkpoint")]
    if any(split in summary for split in ("seen", "heldout", "total")):     # the fixed single-object benchmark
        lines += ["", f"{'split':8s} {'videos':>6s} {'color':>7s} {'shape':>7s} {'motion':>7s} {'all 3':>7s} "
                      f"{'s/video':>8s}"]
    for split in ("seen", "heldout", "total"):
        if split not in summary:
            continue
        s = summary[split]
        a = s["accuracy"]
        lines.append(f"{split:8s} {s['videos']:6d} " + " ".join(f"{100 * a[k]:6.1f}%" for k in
                                                                 ATTRIBUTES + ("all",))
                     + f" {s['seconds_per_video']:8.2f}")
    if "dit_forwards_per_video" in summary.get("total", {}):
        lines.append(f"DiT forwards per video: {summary['total']['dit_forwards_per_video']:.2f}")
    if "by_value" in summary:
        lines.append("")
        for k in ATTRIBUTES:
            vals = summary["by_value"].get(k, {})
            lines.append(f"{k} by prompt: " + ", ".join(f"{v} {d['correct']}/{d['videos']}" for v, d in vals.items()))
            wrong = [f"{v}->{g} x{n}" for v, d in vals.items()
                     for g, n in sorted(d["mistaken_for"].items(), key=lambda t: -t[1])]
            if wrong:
                lines.append("  mistaken: " + ", ".join(wrong))
    if "translations" in summary:
        t = summary["translations"]
        lines.append(f"translations ({t['videos']} videos): start on the side the motion needs "
                     f"{t['start_on_needed_side']}, move with the prompted sign {t['move_sign_as_prompted']}, "
                     f"move away from the nearer border {t['move_away_from_nearer_border']}")
    from openwan.demo.bench_tasks import format_extra, task_targets
    lines += format_extra(summary)
    if "refused" in summary:
        lines.append(f"refused: {summary['refused']['videos']} videos, counted wrong ("
                     + "; ".join(summary["refused"]["errors"]) + ")")
    ok = meets_targets(summary)
    extra = task_targets(summary)
    if extra:
        lines.append("task targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in extra.items()))
    if ok:
        lines.append("")
        lines.append("targets: " + ", ".join(f"{split} >= {100 * TARGETS[split]:.0f}% per attribute: "
                                              f"{'met' if v else 'MISSED'}" for split, v in ok.items()))
    return "\n".join(lines)


def list_benchmarks(repo_root: Optional[Path] = None) -> str:
    """What `openwan bench` can run (its text when called with no benchmark name), plus the comparison scripts
    of a source checkout (``benchmarks/*.py``), each with the first line of its docstring."""
    lines = ["openwan bench: benchmarks this install can run", "",
             "  openwan bench demo    does the embedded demo model draw what its prompts say? (24 seen + 12 held-out",
             "                        prompts x 2 seeds, about 8 s a video on one CPU core; options: openwan bench",
             "                        demo --help; a quick look: openwan bench demo --limit 2 --seeds 1); every task:",
             "                        --task t2v|i2v|flf2v|v2v|vace|r2v|swap; two-object scenes and paraphrased prompts:",
             "                        --prompts all",
             "  openwan bench long    do long demo videos drift? (161 frames per video, each long-video method beside",
             "                        the one-call baseline: object found, color and size drift, seam jumps, motion",
             "                        kept; options: openwan bench long --help; a quick look: --frames 49 --steps 4)"]
    root = repo_root or Path(__file__).resolve().parents[2]
    scripts = sorted(f for f in (root / "benchmarks").glob("*.py") if f.stem != "common")
    if scripts:
        import ast
        lines += ["", f"In this source checkout ({root}), comparisons with diffusers:"]
        for f in scripts:
            try:
                doc = ast.get_docstring(ast.parse(f.read_text())) or ""
            except (OSError, SyntaxError, ValueError):
                doc = ""
            lines.append(f"  python benchmarks/{f.name:<12} {doc.splitlines()[0] if doc else ''}".rstrip())
    return "\n".join(lines)


def _model_and_task(a) -> tuple[str, str]:
    """(--model, --task): the earlier ``--task demo|demo-4step`` named the model (text-to-video)."""
    if a.task in ("demo", "demo-4step"):
        if a.model not in (None, a.task):
            raise ValueError(f"--task {a.task} names the model; it contradicts --model {a.model}")
        return a.task, "t2v"
    return a.model or "demo", a.task or "t2v"


def _ckpt_variant(ckpt_dir):
    """The demo variant whose DiT a checkpoint folder holds, read from its config: DEMO_V2_VARIANT (the shipped
    TI2V-style model, or a candidate export of it) or DEMO_V1_VARIANT (the first, text-to-video demo); "demo" when
    it cannot tell."""
    from openwan.checkpoints import (
        _dit_source,
        checkpoint_layout,
        dit_config_from_diffusers_json,
        dit_config_from_official_json,
    )
    from openwan.configs import DEMO_V1_VARIANT, DEMO_V2_VARIANT
    try:
        _, kind, cfg_json = _dit_source(Path(checkpoint_layout(Path(ckpt_dir)).dits[0]))
        cfg = (dit_config_from_diffusers_json if kind == "diffusers" else dit_config_from_official_json)(cfg_json)
    except Exception:                    # noqa: BLE001 - load_pipeline names what is wrong with the folder
        return "demo"
    for v in (DEMO_V2_VARIANT, DEMO_V1_VARIANT):
        if (v.dit.model_type, tuple(v.dit.patch_size)) == (cfg.model_type, tuple(cfg.patch_size)):
            return v
    return "demo"


def main(argv=None) -> int:
    from openwan.cli_args import GUIDE_METHOD_CHOICES
    from openwan.validate import guide_scale_arg
    ap = argparse.ArgumentParser(prog="openwan bench demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt_dir", default=None, help="checkpoint to benchmark (default: the embedded demo model)")
    ap.add_argument("--task", choices=["t2v", "i2v", "flf2v", "v2v", "vace", "r2v", "swap", "demo", "demo-4step"],
                    default=None,
                    help="the task: t2v (default), i2v (frame 0 of a rendered world clip given), flf2v (its first and "
                         "last frames), v2v (the clip in other colours re-rendered at --strength), vace (that clip "
                         "with a mask of the object: the masked region regenerated, the rest kept), r2v (a "
                         "reference picture of the object and a prompt of its motion only), swap (the vace clip in "
                         "another shape too, its mask and r2v's picture: the picture's object in the masked region); "
                         "demo / "
                         "demo-4step name the model as --model does (earlier spelling)")
    ap.add_argument("--model", choices=["demo", "demo-4step"], default=None,
                    help="the demo variant: demo (the 30-step CFG model) or demo-4step (its distilled student)")
    ap.add_argument("--prompts", default="single", metavar="SETS",
                    help="prompt sets, comma separated: single (the fixed benchmark, default), two_objects, "
                         f"paraphrase, paraphrase2 ... {_last_paraphrase_set()}, or all")
    ap.add_argument("--strength", type=float, default=None, help="v2v: the noise level the source is pushed to "
                                                                 "(default 0.7)")
    ap.add_argument("--seeds", type=int, default=2, help="videos per prompt (seeds 0..N-1; default 2)")
    ap.add_argument("--first_seed", type=int, default=0, help="start the seeds here (seeds K..K+N-1): fresh seeds "
                                                              "to confirm a choice made on the first ones")
    ap.add_argument("--split", choices=["all", "seen", "heldout"], default="all")
    ap.add_argument("--limit", type=int, default=None, help="only the first N prompts of each split (and set)")
    ap.add_argument("--sample_steps", type=int, default=None)
    ap.add_argument("--sample_shift", type=float, default=None)
    ap.add_argument("--sample_guide_scale", type=guide_scale_arg, default=None, metavar="SCALE|LOW,HIGH",
                    help="guidance (default: the model's); LOW,HIGH with --guide_boundary: a guidance interval")
    ap.add_argument("--guide_boundary", type=float, default=None, metavar="B",
                    help="with LOW,HIGH: HIGH guides the steps at timestep >= B x 1000")
    ap.add_argument("--guide_method", choices=GUIDE_METHOD_CHOICES, default=None,
                    help="how a guided step combines its passes (the pipeline's guide_method; default cfg)")
    ap.add_argument("--sample_solver", choices=["unipc", "dpm++", "euler", "consistency"], default=None)
    ap.add_argument("--step_cache", default=None, metavar="NAME[:THRESHOLD]",
                    help="step cache for every video (e.g. easycache, easycache:0.1; default none)")
    ap.add_argument("--two_objects", choices=["compose", "expert"], default=None,
                    help="how two-object prompts are drawn (the pipeline's two_objects; default compose: each object "
                         "its own run, merged; expert: the checkpoint's two-object expert)")
    ap.add_argument("--prompt_extend", choices=["world", "off"], default=None,
                    help="prompt extension (openwan.prompt_extend; default: the model's, the demo's world); off: "
                         "the model reads each prompt as written")
    ap.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default=None,
                    help="DiT compute dtype (default fp32 on CPU; auto: bf16 where it is fast)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: openwan's policy, one for the small demo model)")
    ap.add_argument("--out", default=None, help="folder for the videos (mp4) and results.json")
    ap.add_argument("--json", default=None, help="write the results as JSON to this file ('-' = stdout)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--quiet", action="store_true", help="no per-video lines")
    a = ap.parse_args(argv)
    if a.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {a.seeds}")
    if a.first_seed < 0:
        raise ValueError(f"--first_seed must be >= 0, got {a.first_seed}")
    model, task = _model_and_task(a)
    from openwan.demo.bench_sets import SETS
    from openwan.demo.bench_sets import cases as make_cases
    sets = list(SETS) if a.prompts == "all" else [p.strip() for p in a.prompts.split(",") if p.strip()]
    if a.strength is not None and task != "v2v":
        raise ValueError("--strength is v2v's (--task v2v)")
    from openwan.demo.bench_tasks import V2V_STRENGTH
    from openwan.pipelines.v2v import MASKED_STRENGTH, check_strength
    strength = check_strength(V2V_STRENGTH if a.strength is None else a.strength)

    import torch

    from openwan.pipelines import load_pipeline
    if a.threads:
        torch.set_num_threads(a.threads)
    cases = make_cases(sets)
    if a.split != "all":
        cases = [c for c in cases if c.split == a.split]
    if a.limit is not None:
        keep = []
        for name in SETS:
            for split in ("seen", "heldout"):
                keep += [c for c in cases if c.set == name and c.split == split][:a.limit]
        cases = keep
    from openwan.demo.bench_tasks import MASKED_TASKS, REFERENCE_TASKS
    if task in REFERENCE_TASKS and any(c.set != "single" for c in cases):     # (before loading anything)
        raise ValueError(f"--task {task} grades one object drawn from one reference picture: use --prompts single")
    t0 = time.perf_counter()
    if a.ckpt_dir and model != "demo":
        raise ValueError("--ckpt_dir and --model demo-4step exclude each other (the student is its own weights)")
    pipe = load_pipeline(a.ckpt_dir or model, task="v2v" if task in ("v2v",) + MASKED_TASKS else "t2v",
                         variant=_ckpt_variant(a.ckpt_dir) if a.ckpt_dir else None, progress=False,
                         dtype=a.dtype, threads=a.threads)
    if task in REFERENCE_TASKS and pipe.c.dit_reference is None:
        raise ValueError(f"--task {task} needs a model with a reference expert (a reference_model/ folder); "
                         f"{a.ckpt_dir or model} has none")
    if task in ("i2v", "flf2v") and pipe.task != "ti2v":
        raise ValueError(f"--task {task} needs a model that takes pictures; {pipe.variant.name} is a text-to-video "
                         f"model ({pipe.dit.config.model_type}); the TI2V-style demo (the embedded default, "
                         f"--model demo without --ckpt_dir) does i2v and flf2v")
    load_s = time.perf_counter() - t0
    kw = {k: v for k, v in dict(sample_steps=a.sample_steps, sample_shift=a.sample_shift,
                                guide_scale=a.sample_guide_scale, guide_boundary=a.guide_boundary,
                                guide_method=a.guide_method, sample_solver=a.sample_solver, step_cache=a.step_cache,
                                prompt_extend=a.prompt_extend, two_objects=a.two_objects).items()
          if v is not None}
    d = pipe.defaults()
    steps = kw.get("sample_steps", d.steps)
    settings = {"checkpoint": a.ckpt_dir or model, "steps": steps,
                "shift": kw.get("sample_shift", d.shift),
                "guide_scale": kw.get("guide_scale", d.guidance),
                "solver": kw.get("sample_solver", d.solver), "seeds": a.seeds, "size": d.size,
                "frames": d.frame_num, "threads": torch.get_num_threads(), "load_s": round(load_s, 2),
                "step_cache": a.step_cache or pipe.step_cache_for(steps, strength if task == "v2v" else None) or "none",
                "dtype": pipe.settings()["dtype"],
                "prompt_extend": a.prompt_extend or d.prompt_extend or "off"}
    if any(c.set == "two_objects" for c in cases):
        settings["two_objects"] = a.two_objects or "compose"
    if isinstance(settings["guide_scale"], (tuple, list)):
        settings["guide_boundary"] = kw.get("guide_boundary", d.boundary)
    if a.guide_method not in (None, "cfg"):
        settings["guide_method"] = a.guide_method
    if d.timesteps and steps == len(d.timesteps):
        settings["timesteps"] = list(d.timesteps)
    if task != "t2v":
        settings["task"] = task
    if task in ("v2v",) + MASKED_TASKS:
        settings["strength"] = strength if task == "v2v" else MASKED_STRENGTH
    if sets != ["single"]:
        settings["prompts"] = sets
    if a.first_seed:
        settings["first_seed"] = a.first_seed
    out_dir = Path(a.out) if a.out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    from openwan.demo import bench_tasks
    with torch.inference_mode():
        records = bench_tasks.run_cases(pipe, task, cases, range(a.first_seed, a.first_seed + a.seeds),
                                        out_dir=out_dir, progress=not a.quiet,
                                        **({"strength": strength} if task == "v2v" else {}), **kw)
    summary = summarize_all(records)
    meets = {**meets_targets(summary), **bench_tasks.task_targets(summary)}
    result = {"settings": settings, "summary": summary, "targets": TARGETS, "meets_targets": meets,
              "videos": records}
    extra_targets = {k: v for k, v in bench_tasks.TASK_TARGETS.items() if k in meets}
    if extra_targets:
        result["task_targets"] = extra_targets
    from openwan.fileio import write_json
    if out_dir is not None:
        write_json(result, out_dir / "results.json")
    if a.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print(format_report(summary, settings))
        if a.json:
            write_json(result, Path(a.json))
    if a.check and not all(result["meets_targets"].values()):
        return 1
    return 0


def summarize_all(records: Sequence[dict]) -> dict:
    """:func:`summarize` of the fixed single-object benchmark's records, plus each paraphrase set's (``paraphrase``,
    ``paraphrase2`` ... : the same summary, with ``classic`` and ``looping``: the totals of the videos of each kind
    of motion, where a set has both), ``two_objects`` (per-object accuracy) and ``fidelity`` (PSNR of given frames,
    v2v's measures) when the records hold them."""
    from openwan.demo.bench_tasks import summarize_objects, summarize_task
    summary = summarize([r for r in records if r.get("set", "single") == "single"])
    from openwan.demo.bench_sets import PARAPHRASE_SETS
    from openwan.demo.world_scene import LOOPING_MOTIONS
    for name in PARAPHRASE_SETS:
        para = [r for r in records if r.get("set") == name]
        if para:
            summary[name] = summarize(para)
            # by kind of motion: at the native length the looping ones are not drawn as loops, whatever the wording
            for kind, rs in (("classic", [r for r in para if r["expected"]["motion"] not in LOOPING_MOTIONS]),
                             ("looping", [r for r in para if r["expected"]["motion"] in LOOPING_MOTIONS])):
                if rs and len(rs) < len(para):
                    summary[name][kind] = summarize(rs)["total"]
    two = [r for r in records if r.get("set") == "two_objects"]
    if two:
        summary["two_objects"] = summarize_objects(two)
    fid = summarize_task(records)
    if fid:
        summary["fidelity"] = fid
    refused = sorted({r["refused"] for r in records if "refused" in r})
    if refused:                  # videos the call would not make (counted wrong above)
        summary["refused"] = {"videos": sum("refused" in r for r in records), "errors": refused}
    return summary


if __name__ == "__main__":
    sys.exit(main())
