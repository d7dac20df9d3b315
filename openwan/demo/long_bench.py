"""`openwan bench long`: do long demo videos drift? Each long-video method beside the naive one-call baseline.

For every prompt, seed and method (``windows``, ``continue``, and ``none``: the whole video in one DiT call),
the demo pipeline generates a video of ``--frames`` frames (default 161, about 10x the demo's native 17), and
plain image processing measures it frame by frame (:func:`openwan.demo.detect.track`: the object's centroid,
area and mean core color per frame). Over the windows of the long-video plan (the same plan for the naive
baseline, so its numbers are measured at the same places) it reports:

- **found**: the fraction of frames where the object is found;
- **color drift**: the distance (Euclidean, RGB levels 0-255) between the object's mean color over the first
  and the last window, and whether the palette name of that color stays the same;
- **size ratio**: the object's mean area over the last window / over the first;
- **seam jumps**: the centroid's largest displacement (pixels, frame to frame) at each seam (the frames of the
  latent frames two windows share, and the next one) against the largest displacement anywhere else;
- **motion kept**: the mean speed (pixels per frame) per window, last / first window, and the direction
  reversals along the main axis of motion (turns by more than ``REVERSAL_SWING`` of the frame): their count,
  the median interval between them and the largest gap without one (from the first frame to the first
  reversal, between reversals, and from the last one to the last frame), in frames;
- **bouncing** (prompts of a looping motion: bouncing or circling): whether the object keeps turning to the
  end: at least 2 reversals, a median interval of 0.5-2 native lengths (16 frames for the demo: its bounces
  reverse every 12-16 frames, a circling object's x every 12-18), no gap over 2 native lengths, and for a bounce
  along the prompted axis.

Latent frame ``l`` holds pixel frames ``4l-3 .. 4l`` (``l`` >= 1; latent frame 0 is pixel frame 0).

    openwan bench long                                   # 3 prompts x 2 seeds x 3 methods, 161 frames
    openwan bench long --frames 49 --steps 4 --seeds 1   # a quick look
    openwan bench long --methods windows none --json out.json
    openwan bench long --extend                          # the world's own clips extended: openwan's and an i2v chain
    openwan bench long --v2v                             # the world's own long clips re-rendered by long v2v

``--extend`` starts each video from the world's own native-length clip of the prompt (so colour, size and pace are
judged against the world's), ``--v2v`` re-renders the world's own ``--frames``-frame clip; both measure the result
the same way.

Targets (issue 18): found >= 95% of frames, color drift <= 30 levels with the same color name, size ratio
0.75-1.33, no seam jump above the in-window motion, speed in the last window 0.5-2x the first; a bouncing
object keeps bouncing to the end (reversals every ~native length).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from openwan.demo import DEMO_STUDENTS
from openwan.sampling import SOLVERS

DEFAULT_PROMPTS = ("a red circle moving to the right", "a green circle staying still", "a blue square moving up")
METHODS = ("windows", "continue", "none", "none+riflex", "rolling")   # none+riflex: one call with RIFLEx on its RoPE
REVERSAL_SWING = 0.1            # a turn counts once the object has come back this fraction of the frame
TARGETS = {"found": 0.95, "color_drift": 30.0, "size_ratio": (0.75, 1.33), "seam_over_within": 1.0,
           "speed_ratio": (0.5, 2.0), "reversal_interval": (0.5, 2.0), "largest_gap": 2.0}   # last two: native lengths
# options of the continue method, given to the others only as METHOD_TAKES says (rolling: the expert and the pass)
CONTINUE_ONLY = ("long_expert", "long_context_noise", "long_refine")
METHOD_TAKES = {"continue": CONTINUE_ONLY, "rolling": ("long_expert", "long_refine")}
BOUNCE_PROMPTS = ("a red square bouncing left and right", "a green circle bouncing up and down",
                  "a purple circle circling")


# ----------------------------------------------------------------------------------------------------------
# Frames of a window plan
# ----------------------------------------------------------------------------------------------------------

def pixel_frames(latent_start: int, latent_end: int, frame_num: int, ratio: int = 4) -> tuple:
    """The pixel frames [a, b) of latent frames [latent_start, latent_end) (causal VAE: latent 0 is frame 0,
    latent l >= 1 is frames ratio*l - ratio + 1 .. ratio*l)."""
    a = 0 if latent_start == 0 else ratio * latent_start - ratio + 1
    b = 1 if latent_end <= 1 else ratio * (latent_end - 1) + 1
    return a, min(b, frame_num)


def plan_frames(spans: Sequence, frame_num: int, ratio: int = 4) -> tuple:
    """(windows, seams) in pixel frames: each window's [a, b), and for each seam between windows k and k+1 the
    frames [a, b) whose arrival is a seam transition: those of the shared latent frames and of the first one
    after them."""
    windows = [pixel_frames(s, e, frame_num, ratio) for s, e in spans]
    seams = [pixel_frames(spans[k + 1][0], spans[k][1] + 1, frame_num, ratio) for k in range(len(spans) - 1)]
    return windows, seams


# ----------------------------------------------------------------------------------------------------------
# Metrics of one tracked video
# ----------------------------------------------------------------------------------------------------------

def _nanmean(a, axis=0):
    a = np.asarray(a, np.float64)
    ok = ~np.isnan(a)
    n = ok.sum(axis=axis)
    return np.where(n > 0, np.where(ok, a, 0.0).sum(axis=axis) / np.maximum(n, 1), np.nan)


def reversals(pos: np.ndarray, swing: float) -> list:
    """Frames where a 1-D track turns around: the extreme it reached before coming back by more than
    ``swing`` (hysteresis, so jitter smaller than ``swing`` never counts). NaN positions are skipped."""
    idx = np.flatnonzero(~np.isnan(pos))
    if len(idx) < 2:
        return []
    turns, direction = [], 0
    lo = hi = ext = float(pos[idx[0]])
    ext_i = int(idx[0])
    for i in idx[1:]:
        v = float(pos[i])
        if direction == 0:                      # until the first move larger than the swing
            lo, hi = min(lo, v), max(hi, v)
            if v - lo > swing or hi - v > swing:
                direction, ext, ext_i = (1 if v - lo > swing else -1), v, int(i)
        elif (v - ext) * direction > 0:         # still going the same way: a new extreme
            ext, ext_i = v, int(i)
        elif (ext - v) * direction > swing:     # came back far enough: the extreme was a turn
            turns.append(ext_i)
            direction, ext, ext_i = -direction, v, int(i)
    return turns


def reversal_gaps(turns: Sequence, frame_num: int) -> tuple:
    """(median interval between reversals, largest gap without one counting from the first frame and to the
    last), in frames; the median is NaN with fewer than 2 reversals."""
    t = [int(v) for v in turns]
    gaps = np.diff([0] + t + [frame_num - 1])
    median = float(np.median(np.diff(t))) if len(t) >= 2 else float("nan")
    return median, float(gaps.max())


def video_metrics(track: dict, spans: Sequence, ratio: int = 4, swing: float = REVERSAL_SWING) -> dict:
    """Drift metrics of a tracked video (:func:`openwan.demo.detect.track`) over the windows ``spans`` (latent
    [start, end) pairs). Distances in pixels, colors in RGB levels, speeds in pixels per frame, reversal
    intervals and gaps in frames."""
    from openwan.demo.detect import classify_color
    found = np.asarray(track["found"], bool)
    f = len(found)
    c = np.stack([track["cx"], track["cy"]], axis=1).astype(np.float64)
    area = np.where(found, track["area"], np.nan).astype(np.float64)
    rgb = np.asarray(track["rgb"], np.float64)
    step = np.full(f, np.nan)                       # step[i]: displacement from frame i-1 to frame i
    step[1:] = np.linalg.norm(c[1:] - c[:-1], axis=1)
    windows, seams = plan_frames(spans, f, ratio)

    per_window = []
    for (a, b), (s, e) in zip(windows, spans):
        col = _nanmean(rgb[a:b])
        vel = _nanmean(c[a + 1:b] - c[a:b - 1]) if b - a > 1 else np.full(2, np.nan)
        per_window.append({
            "latent": [int(s), int(e)], "frames": [int(a), int(b)], "found": float(found[a:b].mean()),
            "rgb": [round(float(v), 2) for v in col],
            "color": classify_color(col) if not np.isnan(col).any() else None,
            "area": round(float(_nanmean(area[a:b])), 2),
            "speed": round(float(_nanmean(step[a + 1:b])), 4) if b - a > 1 else float("nan"),
            "velocity": [round(float(v), 4) for v in vel]})

    at_seam = np.zeros(f, bool)
    seam_jumps = []
    for a, b in seams:
        at_seam[max(a, 1):b] = True
        seg = step[max(a, 1):b]
        seam_jumps.append(float(np.nanmax(seg)) if (~np.isnan(seg)).any() else float("nan"))
    within = step[1:][~at_seam[1:] & ~np.isnan(step[1:])]
    within_max = float(within.max()) if len(within) else float("nan")
    seam_max = float(np.nanmax(seam_jumps)) if seam_jumps and not np.isnan(seam_jumps).all() else float("nan")

    first, last = per_window[0], per_window[-1]
    drift = float(np.linalg.norm(np.subtract(last["rgb"], first["rgb"])))
    span = np.nansum(np.abs(np.diff(c, axis=0)), axis=0)          # path length along x and along y
    axis = int(np.argmax(span)) if np.isfinite(span).all() else 0
    turns = reversals(c[:, axis], swing * track["size"][1 - axis])     # size = (height, width)
    interval, gap = reversal_gaps(turns, f)
    return {
        "frames": f, "windows": per_window,
        "found": float(found.mean()),
        "color_first": first["color"], "color_last": last["color"],
        "color_kept": first["color"] is not None and first["color"] == last["color"],
        "color_drift": round(drift, 3),
        "size_ratio": round(last["area"] / first["area"], 4) if first["area"] > 0 else float("nan"),
        "seam_jumps": [round(v, 4) for v in seam_jumps],
        "seam_max": round(seam_max, 4), "within_max": round(within_max, 4),
        "within_mean": round(float(within.mean()), 4) if len(within) else float("nan"),
        "seam_over_within": round(seam_max / within_max, 4) if within_max > 0 else float("nan"),
        "speed_first": first["speed"], "speed_last": last["speed"],
        "speed_ratio": round(last["speed"] / first["speed"], 4) if first["speed"] > 0 else float("nan"),
        "axis": "xy"[axis], "reversals": len(turns), "reversal_frames": turns,
        "reversal_interval": interval, "largest_gap": gap}


def meets(m: dict, motion: Optional[str] = None, native: int = 17) -> dict:
    """Which targets a video's metrics meet; with a looping ``motion`` (the prompt's) also "bouncing": it keeps
    reversing to the end, every ~native length (``native`` frames), along the prompted axis for a bounce."""
    t = TARGETS
    out = {"found": m["found"] >= t["found"],
           "color": m["color_kept"] and m["color_drift"] <= t["color_drift"],
           "size": t["size_ratio"][0] <= m["size_ratio"] <= t["size_ratio"][1],
           "seams": m["seam_max"] <= t["seam_over_within"] * m["within_max"],     # also 0 <= 0: no motion
           "speed": t["speed_ratio"][0] <= m["speed_ratio"] <= t["speed_ratio"][1]}
    if motion in ("bounce_lr", "bounce_ud", "circling"):
        length = native - 1
        lo, hi = t["reversal_interval"]
        axis_ok = motion == "circling" or m["axis"] == ("x" if motion == "bounce_lr" else "y")
        out["bouncing"] = bool(m["reversals"] >= 2 and lo * length <= m["reversal_interval"] <= hi * length
                               and m["largest_gap"] <= t["largest_gap"] * length and axis_ok)
    return out


# ----------------------------------------------------------------------------------------------------------
# Running it
# ----------------------------------------------------------------------------------------------------------

def spans_of(settings: dict, frame_num: int, native: int, overlap: Optional[int] = None,
             method: Optional[str] = None) -> list:
    """The latent window spans of a call: from its settings["long_video"], or for a call without one (the
    naive baseline) the plan the default method (``method``, else windows) would have used, so the baseline
    is measured at the same seams."""
    from openwan.long_video import latent_frames, plan_long_video, plan_windows
    lv = settings.get("long_video")
    if lv and lv.get("method") != "none":
        return [list(s) for s in plan_windows(lv["latent_frames"], lv["window"], lv["overlap"]).spans]
    long = plan_long_video(frame_num, native, method or "windows", overlap)
    return [[0, latent_frames(frame_num)]] if long is None else [list(s) for s in long.plan.spans]


def run_long_benchmark(pipe, prompts: Sequence[str], seeds: Sequence[int], methods: Sequence[str],
                       frame_num: int, out_dir: Optional[Path] = None, progress: bool = True, **sample_kw) -> list:
    """Generate and measure one video per (prompt, seed, method); one record each."""
    native = pipe.defaults().frame_num
    base_method, base_overlap = pipe.long_video_defaults(None, sample_kw.get("long_overlap"))   # the baseline's seams
    records = []
    for prompt in prompts:
        for seed in seeds:
            for method in methods:
                path = None
                if out_dir is not None:
                    path = Path(out_dir) / f"{prompt.replace(' ', '_')}_seed{seed}_{method}.mp4"
                t0 = time.perf_counter()
                name = method.split("+")[0]
                takes = METHOD_TAKES.get(method, ())
                kw = {k: v for k, v in sample_kw.items() if (k not in CONTINUE_ONLY or k in takes)
                      and (name != "none" or k != "long_overlap")}        # one call: no windows to overlap
                if method == "none+riflex":
                    kw["long_riflex"] = True
                out = pipe(prompt, frame_num=frame_num, seed=int(seed), long_method=name, output_path=path,
                           overwrite=True, **kw)
                dt = time.perf_counter() - t0
                spans = spans_of(out.settings, frame_num, native, base_overlap, base_method)
                records.append(measure(out.frames[0], spans, prompt, seed, method, dt, native, path))
                if progress:
                    _report(records)
    return records


def measure(video: np.ndarray, spans: Sequence, prompt: str, seed: int, method: str, seconds: float, native: int,
            path: Optional[Path] = None) -> dict:
    """The record of one video: its tracked metrics over the window ``spans``, the targets it meets."""
    from openwan.demo import detect, world
    m = video_metrics(detect.track(video), spans)
    attrs = world.parse_prompt(prompt)
    motion = attrs.motion if attrs is not None else None
    rec = {"prompt": prompt, "seed": int(seed), "method": method, "seconds": round(seconds, 2),
           "spans": spans, "motion": motion, "metrics": m, "meets": meets(m, motion, native)}
    if path is not None:
        rec["video"] = str(path)
    return rec


def _report(records: list) -> None:
    r = records[-1]
    print(f"  [{len(records):3d}] {r['method']:9s} {r['prompt']!r} seed {r['seed']}: " + _line(r["metrics"]) +
          f" ({r['seconds']:.1f}s)", file=sys.stderr, flush=True)


EXTEND_METHODS = ("extend", "i2v-chain", "last-frame")
V2V_METHODS = ("continue", "continue+pass", "windows")
EXTEND_PROMPTS = BOUNCE_PROMPTS + ("a green circle staying still",)     # motions that go on past a clip


def world_source(prompt: str, seed: int, frames: int, size: int, native: Optional[int] = None) -> np.ndarray:
    """The world's own clip of a one-object ``prompt`` (uint8 [frames, size, size, 3]) at the pace of a
    ``native``-frame clip (default ``frames``): a video to extend, or to re-render."""
    from openwan.demo import world
    attrs = world.parse_prompt(prompt)
    if attrs is None:
        raise ValueError(f"--extend / --v2v need prompts of one object of the demo's world, got {prompt!r}")
    clip = world.make_clip(int(seed), attributes=[tuple(attrs)])
    return world.render_clip(clip, size=size, frames=frames, native_frames=native or frames)


def v2v_video(pipe, method: str, prompt: str, source: np.ndarray, frame_num: int, seed: int, **kw):
    """``source`` (``frame_num`` frames) re-rendered by video-to-video as a long video: (video, latent window spans).
    ``continue`` (the demo's method) without the refinement pass, ``continue+pass`` with it (the default: the
    variant's level, or ``long_refine``'s), ``windows``."""
    name = method.split("+")[0]
    kw = {k: v for k, v in kw.items() if name == "continue" or k not in CONTINUE_ONLY}
    if method == "continue":
        kw["long_refine"] = 0
    elif method == "continue+pass" and not kw.get("long_refine"):
        kw["long_refine"] = pipe.defaults().long_refine or 0.85
    out = pipe(prompt, src_video=source, frame_num=frame_num, seed=seed, long_method=name, **kw)
    return out.frames[0], spans_of(out.settings, frame_num, pipe.defaults().frame_num)


def extend_video(pipe, method: str, prompt: str, source: np.ndarray, frame_num: int, seed: int, **kw):
    """``source`` extended to ``frame_num`` frames: (video, latent window spans). ``extend``: openwan's (the source's
    latents carried, openwan.pipelines.extend); ``i2v-chain``: the way other tools extend, each clip of the native
    length started from the last frame so far as its picture (decoded and re-encoded at every join); ``last-frame``:
    one long video from the source's last frame as its picture, by the model's own long-video method (what
    ``extend`` does on an image-to-video model, the i2v and flf2v tasks)."""
    native = source.shape[0]
    if method == "last-frame":
        out = pipe(prompt, image=source[-1], frame_num=frame_num - native + 1, seed=seed, **kw)
        w = (native - 1) // 4                          # its latent frame 0, the picture: the source's last
        spans = spans_of(out.settings, frame_num - native + 1, native)
        return np.concatenate([source, out.frames[0][1:]]), [[0, w + 1]] + [[w + s, w + e] for s, e in spans]
    if method == "extend":
        out = pipe(prompt, extend=source, frame_num=frame_num, seed=seed, **kw)
        ext = out.settings["long_video"]["extend"]              # the plan counts from the carried frames on
        a = ext["windows_from"]
        spans = spans_of(out.settings, frame_num, native)
        return out.frames[0], [[0, ext["latent_frames"]]] + [[a + s, a + e] for s, e in spans]
    if (frame_num - 1) % (native - 1):
        raise ValueError(f"i2v-chain extends by clips of {native - 1} new frames: give --frames "
                         f"{native + (native - 1) * max(1, round((frame_num - native) / (native - 1)))}")
    video, spans, w = source, [[0, (native - 1) // 4 + 1]], (native - 1) // 4
    kw = {k: v for k, v in kw.items() if k not in CONTINUE_ONLY}
    for k in range((frame_num - native) // (native - 1)):
        clip = pipe(prompt, image=video[-1], frame_num=native, seed=seed + k, **kw).frames[0]
        video = np.concatenate([video, clip[1:]])
        spans.append([spans[-1][1] - 1, spans[-1][1] - 1 + w + 1])
    return video, spans


def run_source_benchmark(pipe, prompts: Sequence[str], seeds: Sequence[int], methods: Sequence[str],
                         frame_num: int, out_dir: Optional[Path] = None, progress: bool = True, mode: str = "extend",
                         **sample_kw) -> list:
    """For each prompt and seed, the world's clip of the prompt made into a long video of ``frame_num`` frames by
    each method and measured: ``mode`` "extend", the native-length clip extended (its first window: the source);
    "v2v", the whole ``frame_num``-frame clip (at the native clip's pace) re-rendered by video-to-video."""
    from openwan.video import write_video
    native = pipe.defaults().frame_num
    size = int(pipe.defaults().size.split("*")[0])
    records = []
    for prompt in prompts:
        for seed in seeds:
            source = world_source(prompt, seed, native if mode == "extend" else frame_num, size, native)
            make = extend_video if mode == "extend" else v2v_video
            for method in methods:
                t0 = time.perf_counter()
                video, spans = make(pipe, method, prompt, source, frame_num, int(seed), **sample_kw)
                dt = time.perf_counter() - t0
                path = None
                if out_dir is not None:
                    path = Path(out_dir) / f"{prompt.replace(' ', '_')}_seed{seed}_{method}.mp4"
                    write_video(iter([video]), path, fps=pipe.variant.sample.fps, overwrite=True)
                records.append(measure(video, spans, prompt, seed, method, dt, native, path))
                if progress:
                    _report(records)
    return records


def _line(m: dict) -> str:
    return (f"found {100 * m['found']:.0f}%, color {m['color_first']}->{m['color_last']} drift "
            f"{m['color_drift']:.1f}, size x{m['size_ratio']:.2f}, seam/within {m['seam_over_within']:.2f}, "
            f"speed x{m['speed_ratio']:.2f}, {m['reversals']} reversals (median every "
            f"{m['reversal_interval']:.0f}, largest gap {m['largest_gap']:.0f} frames)")


SUMMARY_KEYS = ("found", "color_drift", "size_ratio", "seam_max", "within_max", "seam_over_within", "speed_ratio",
                "reversals", "reversal_interval", "largest_gap")


def summarize(records: Sequence[dict]) -> dict:
    """Per method: the mean of each metric over its videos, its worst value, and how many videos meet each
    target."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in records):
        rs = [r for r in records if r["method"] == method]
        s = {"videos": len(rs), "seconds_per_video": round(float(np.mean([r["seconds"] for r in rs])), 2),
             "color_kept": sum(r["metrics"]["color_kept"] for r in rs)}
        for k in SUMMARY_KEYS:
            v = np.array([r["metrics"][k] for r in rs], np.float64)
            s[k] = round(float(np.nanmean(v)), 4) if (~np.isnan(v)).any() else float("nan")
        worst = {"found": np.nanmin, "color_drift": np.nanmax, "seam_over_within": np.nanmax}
        for k, fn in worst.items():
            v = np.array([r["metrics"][k] for r in rs], np.float64)
            s[f"{k}_worst"] = round(float(fn(v)), 4) if (~np.isnan(v)).any() else float("nan")
        keys = list(dict.fromkeys(k for r in rs for k in r["meets"]))
        s["meets"] = {k: sum(bool(r["meets"].get(k)) for r in rs) for k in keys}
        s["judged"] = {k: sum(k in r["meets"] for r in rs) for k in keys}     # "bouncing": looping prompts only
        out[method] = s
    return out


def format_report(summary: dict, settings: dict, records: Sequence[dict] = (), per_window: bool = False) -> str:
    lines = ["openwan bench long  (demo)",
             "settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), ""]
    if per_window:
        for r in records:
            lines.append(f"{r['method']} {r['prompt']!r} seed {r['seed']}:")
            lines.append(f"  {'window':>6} {'frames':>9} {'found':>6} {'color':>7} {'rgb':>17} {'area':>7} "
                         f"{'speed':>6} {'seam jump':>9}")
            seams = r["metrics"]["seam_jumps"] + [None]
            for i, (w, j) in enumerate(zip(r["metrics"]["windows"], seams)):
                rgb = "/".join(f"{v:.0f}" for v in w["rgb"]) if w["color"] else "-"
                lines.append(f"  {i:6d} {w['frames'][0]:4d}-{w['frames'][1] - 1:<4d} {100 * w['found']:5.0f}% "
                             f"{str(w['color']):>7} {rgb:>17} {w['area']:7.1f} {w['speed']:6.2f} "
                             f"{'' if j is None else f'{j:9.2f}'}")
        lines.append("")
    w = max([9] + [len(m) for m in summary])
    lines.append(f"{'method':{w}s} {'videos':>6s} {'found':>7s} {'color drift':>11s} {'kept':>5s} {'size x':>7s} "
                 f"{'seam px':>8s} {'within px':>9s} {'seam/within':>11s} {'speed x':>8s} {'reversals':>9s} "
                 f"{'s/video':>8s}")
    for method, s in summary.items():
        lines.append(f"{method:{w}s} {s['videos']:6d} {100 * s['found']:6.1f}% {s['color_drift']:11.1f} "
                     f"{s['color_kept']:2d}/{s['videos']:<2d} {s['size_ratio']:7.2f} {s['seam_max']:8.2f} "
                     f"{s['within_max']:9.2f} {s['seam_over_within']:11.2f} {s['speed_ratio']:8.2f} "
                     f"{s['reversals']:9.1f} {s['seconds_per_video']:8.1f}")
    lines += ["", "videos meeting each target (found >= 95%, color drift <= 30 and same name, size 0.75-1.33x, "
                  "seam jump <= in-window motion, speed 0.5-2x; bouncing: looping prompts, reversals every "
                  "0.5-2 native lengths to the end):"]
    for method, s in summary.items():
        lines.append(f"  {method:{w}s} " + ", ".join(f"{k} {v}/{s['judged'][k]}" for k, v in s["meets"].items())
                     + f"; {sum(s['meets'].values())} of {sum(s['judged'].values())} targets")
    missed = [(r["method"], r["prompt"], r["seed"], [k for k, ok in r["meets"].items() if not ok]) for r in records]
    if any(m for *_, m in missed):
        lines += ["", "targets missed:"]
        lines += [f"  {method:{w}s} {prompt!r} seed {seed}: {', '.join(m)}" for method, prompt, seed, m in missed if m]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="openwan bench long", description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=161, help="frames per video (default 161: ~10x v1's 17 native "
                                                            "frames, ~5x v2's 33; 321 is 10x v2's)")
    ap.add_argument("--methods", nargs="+", choices=sorted(set(METHODS + EXTEND_METHODS + V2V_METHODS)),
                    default=None, help="long-video methods ('none' = the naive one-call baseline, 'none+riflex' the "
                    "same with RIFLEx on its RoPE; default windows, continue and none); "
                    "with --extend: extend (openwan's: the latents carried), i2v-chain (each clip from the last "
                    "frame), last-frame (one long video from the last frame: extend on an i2v model); with --v2v: "
                    "continue, continue+pass, windows; default all of them")
    source = ap.add_mutually_exclusive_group()
    source.add_argument("--extend", action="store_true",
                        help="extend the world's own clip of each prompt (the native length) to --frames instead of "
                             "generating from nothing (default prompts: the looping ones and a still one)")
    source.add_argument("--v2v", action="store_true",
                        help="re-render the world's own --frames-frame clip of each prompt by video-to-video (default "
                             "prompts: the looping ones and a still one)")
    ap.add_argument("--prompts", nargs="+", default=list(DEFAULT_PROMPTS),
                    help="prompts (default: three classic ones); 'bounce' = the looping-motion prompts "
                         f"{list(BOUNCE_PROMPTS)}")
    ap.add_argument("--ckpt_dir", default=None, help="a demo checkpoint folder instead of the shipped one")
    ap.add_argument("--model", default="demo", choices=["demo", *DEMO_STUDENTS],
                    help="the shipped demo, or its distilled student (demo-4step: 4 steps by default)")
    ap.add_argument("--seeds", type=int, default=2, help="videos per prompt and method (seeds 0..N-1)")
    ap.add_argument("--first_seed", type=int, default=0, help="start the seeds here (seeds F..F+N-1)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default 20; a student: its own)")
    ap.add_argument("--overlap", type=int, default=None, help="long_overlap in latent frames (default: the "
                                                                  "method's)")
    ap.add_argument("--long_expert", choices=["on", "off"], default=None,
                    help="continue: the checkpoint's continuation expert on the later windows (default: on where "
                         "the checkpoint has one)")
    ap.add_argument("--long_context_noise", type=float, default=None, metavar="SIGMA",
                    help="continue on a TI2V model: the carried frames at noise level SIGMA, told by their timestep "
                         "(default: the continuation expert's own when it runs, else 0)")
    ap.add_argument("--long_refine", type=float, default=None, metavar="SIGMA",
                    help="continue: the windows pass from noise level SIGMA that redraws the seams (0: off; default: "
                         "the model's, the demo's 0.85)")
    ap.add_argument("--negative_prompt", default=None,
                    help="the negative prompt of every video (default: the model's)")
    ap.add_argument("--guide_scale", type=float, default=None,
                    help="classifier-free guidance scale on every step (default: the model's, the demo's 2)")
    ap.add_argument("--solver", default=None, choices=sorted(SOLVERS),
                    help="the sampler of every video (default: the model's, the demo's unipc; the rolling ladder "
                         "steps each frame with it)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--out", default=None, help="folder for the videos (mp4)")
    ap.add_argument("--json", default=None, help="write the results as JSON to this file ('-' = stdout)")
    ap.add_argument("--per_window", action="store_true", help="print every video's per-window table")
    ap.add_argument("--quiet", action="store_true", help="no per-video lines")
    a = ap.parse_args(argv)
    for name in ("seeds", "steps", "threads"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(a, name)}")
    if a.first_seed < 0:
        raise ValueError(f"--first_seed must be >= 0, got {a.first_seed}")
    if a.frames < 2:
        raise ValueError(f"--frames must be >= 2, got {a.frames}")
    mode = "extend" if a.extend else "v2v" if a.v2v else None
    allowed = {"extend": EXTEND_METHODS, "v2v": V2V_METHODS}.get(mode, METHODS)
    a.methods = a.methods or list(METHODS[:3] if mode is None else allowed)
    wrong = [m for m in a.methods if m not in allowed]
    if wrong:
        raise ValueError(f"--methods {' '.join(wrong)}: {f'with --{mode}' if mode else 'without --extend or --v2v'} "
                         f"the methods are {', '.join(allowed)}")
    if mode and a.prompts == list(DEFAULT_PROMPTS):
        a.prompts = list(EXTEND_PROMPTS)

    import torch
    from openwan.pipelines import load_pipeline
    torch.set_num_threads(a.threads)
    if a.ckpt_dir and a.model != "demo":
        raise ValueError("--ckpt_dir measures a demo checkpoint folder; --model names a shipped one: give one")
    task = "v2v" if mode == "v2v" else "t2v"
    if a.ckpt_dir:
        pipe = load_pipeline(a.ckpt_dir, task=task, variant="demo", progress=False)
    else:
        pipe = load_pipeline(a.model, progress=False, **({"task": task} if mode == "v2v" else {}))
    native = pipe.defaults().frame_num
    if not mode and a.frames <= native:
        raise ValueError(f"--frames {a.frames} is not past the model's native {native} frames: a one-pass video has no "
                         f"windows or seams to measure; give more, e.g. --frames {5 * native - 4}")
    a.steps = a.steps or (20 if a.model == "demo" else pipe.defaults().steps)
    prompts = [p for q in a.prompts for p in (BOUNCE_PROMPTS if q == "bounce" else (q,))]
    kw = {"sample_steps": a.steps}
    if a.overlap is not None:
        kw["long_overlap"] = a.overlap
    if a.long_expert is not None:
        kw["long_expert"] = a.long_expert == "on"
    if a.long_context_noise is not None:
        kw["long_context_noise"] = a.long_context_noise
    if a.long_refine is not None:
        kw["long_refine"] = a.long_refine
    if a.negative_prompt is not None:
        kw["negative_prompt"] = a.negative_prompt
    if a.guide_scale is not None:
        kw["guide_scale"] = a.guide_scale
    if a.solver is not None:
        kw["sample_solver"] = a.solver
    settings = {"frames": a.frames, "steps": a.steps, "seeds": a.seeds, "first_seed": a.first_seed,
                "threads": a.threads, "long_expert": a.long_expert or "default",
                "long_context_noise": "default" if a.long_context_noise is None else a.long_context_noise,
                "long_refine": "default" if a.long_refine is None else a.long_refine,
                "native_frames": pipe.defaults().frame_num, "size": pipe.defaults().size,
                "overlap": a.overlap if a.overlap is not None else "default",
                "negative_prompt": "default" if a.negative_prompt is None else a.negative_prompt,
                "guide_scale": "default" if a.guide_scale is None else a.guide_scale,
                "solver": a.solver or "default",
                "checkpoint": a.ckpt_dir or a.model, **({mode: "the world's clip"} if mode else {})}
    out_dir = Path(a.out) if a.out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        seeds = range(a.first_seed, a.first_seed + a.seeds)
        if mode:
            kw["mode"] = mode
        run = run_source_benchmark if mode else run_long_benchmark
        records = run(pipe, prompts, seeds, a.methods, a.frames, out_dir=out_dir, progress=not a.quiet, **kw)
    summary = summarize(records)
    result = {"settings": settings, "targets": TARGETS, "summary": summary, "videos": records}
    from openwan.fileio import write_json
    if a.json == "-":
        print(json.dumps(result, indent=2, default=float))
    else:
        print(format_report(summary, settings, records, a.per_window))
        if a.json:
            write_json(result, Path(a.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
