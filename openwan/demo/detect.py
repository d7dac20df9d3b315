"""Plain image-processing detector of the demo world's objects: color, shape and motion from video frames.

It is what ``openwan bench demo`` uses to grade generated videos, so it is built to survive blur, noise and
slightly wrong colors. The background color is the median of the frames' 2-pixel border (or given). Each pixel's
contrast ``d`` is its RGB distance to the background; a frame's object is the largest 4-connected component of the
pixels with ``d`` above half the frame's peak contrast (the peak is the maximum of a 3x3 box average, so single
noisy pixels do not set it; the half-maximum level is where a blurred edge crosses the true edge, so the mask
keeps its size under blur) and above ``MIN_CONTRAST`` = 40; frames whose peak is below ``MIN_PEAK`` = 80 or whose
object is under 0.1% of the frame are skipped. **Color**: a vote, weighted by contrast, over the object's core
pixels (``d`` >= 75% of the peak): a pixel of saturation (max-min)/max below ``WHITE_MAX_SATURATION`` = 0.35 votes
white, any other votes for the palette color nearest in hue (mixing a color with the neutral background keeps its
hue, so blurred edges vote right). **Shape**: on up to 6 frames where the object is largest, its coverage (the
3x3-smoothed frame projected on object color minus background, clipped to [0, 1], values under 0.25 zeroed as
noise) gives two ratios of cumulants about its centroid that a Gaussian blur leaves unchanged:
``gamma=k3(y)/|k4|^(3/4)`` (about -1 for the world's apex-up triangle, 0 for shapes symmetric top to bottom) and
``rho=k22(x,y)/k4`` (1/3 for a disk, 0 for an axis-aligned square); ``|gamma|`` >= 0.2 says triangle, else ``rho``
>= 0.22 says circle, else square. **Motion**: robust (Theil-Sen) straight-line fits over time t in [0, 1] of the
centroid (fractions of the frame) and of log(area) give the displacement dx, dy and the log area ratio over the
clip; ``move=max(|dx|,|dy|)/MOVE_MIN`` (``MOVE_MIN`` = 0.12 of the frame, the world moves 0.35-0.45) and
``size=|log_ratio|/GROW_MIN`` (``GROW_MIN`` = log 1.8, the world's area changes 4.8-6.8x); both below 1 means
still, otherwise the larger decides: the dominant axis and its sign (image y grows downward) or growing/shrinking
by the sign of the ratio. Before that, the path of the (running-median) centroid is checked for the looping
motions: a **bounce** ranges over at least ``MOVE_MIN`` along one axis, comes back along it (range minus the
distance between its ends) by at least ``BOUNCE_MIN_BACK`` = 0.05 of the frame and 10% of its range (the shipped
model's one-way moves come back by at most 0.023), and ranges across under half as much; **circling** ranges comparably on both axes (the smaller >= half the larger) and its
heading turns clockwise by at least 90 degrees. A straight move or a still object comes back by neither. ``detect_objects`` handles two objects by first splitting the foreground pixels by color
class; ``match_objects`` / ``score_scene`` pair them with a prompt's objects (best one-to-one assignment).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from openwan.demo.world import COLORS, COLOR_NAMES, Attributes, from_tensor

MIN_CONTRAST = 40.0             # uint8 RGB distance below which a pixel is background
MIN_PEAK = 80.0                 # a frame whose peak contrast is lower shows no object
MIN_AREA_FRACTION = 0.001       # a frame whose object covers less of the frame is skipped
CORE_LEVEL = 0.75               # core pixels (for color): contrast >= this fraction of the frame's peak
WHITE_MAX_SATURATION = 0.35
SOFT_FLOOR = 0.25               # coverage below this is treated as background noise (shape measurement)
TRIANGLE_MIN_GAMMA = 0.2        # |gamma| at or above this: triangle (exact: 1 triangle, 0 circle and square)
MAX_SHAPE_FRAMES = 6            # shape is measured on at most this many of the frames where the object is largest
CIRCLE_MIN_RHO = 0.22           # rho at or above this: circle, else square (exact: 1/3 circle, 0 square)
MOVE_MIN = 0.12
GROW_MIN = math.log(1.8)
BOUNCE_MIN_BACK = 0.05          # a bounce comes back at least this fraction of the frame along its axis ...
BOUNCE_MIN_BACK_SHARE = 0.1     # ... and this share of its range (a straight move comes back by neither)
BOUNCE_MAX_ACROSS = 0.5         # its range across the axis is under this share of the range along it
CIRCLE_MIN_ASPECT = 0.5         # a circling path's smaller range is at least this share of the larger one
CIRCLE_MIN_TURN = math.pi / 2   # ... and its heading turns one way by at least this much (radians)


# --------------------------------------------------------------------------------------------------------------
# Input and pixel-level helpers
# --------------------------------------------------------------------------------------------------------------

def as_frames(video) -> np.ndarray:
    """uint8 [F, H, W, 3] from uint8 frames, or from a float video [3, F, H, W] in [-1, 1] (torch or numpy)."""
    if hasattr(video, "detach") or (isinstance(video, np.ndarray) and video.dtype != np.uint8):
        return from_tensor(video)
    a = np.asarray(video)
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [F, H, W, 3] or a float video [3, F, H, W] in [-1, 1], "
                         f"got {a.dtype} {tuple(a.shape)}")
    return a


def estimate_background(frames: np.ndarray) -> np.ndarray:
    """The median color of the frames' 2-pixel border, float32 [3]."""
    b = 2 if min(frames.shape[1:3]) > 8 else 1
    ring = np.concatenate([frames[:, :b].reshape(-1, 3), frames[:, -b:].reshape(-1, 3),
                           frames[:, :, :b].reshape(-1, 3), frames[:, :, -b:].reshape(-1, 3)])
    return np.median(ring, axis=0).astype(np.float32)


def _hue_saturation(rgb: np.ndarray):
    """Hue in degrees [0, 360) and saturation (max-min)/max of float RGB [..., 3]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(axis=-1), rgb.min(axis=-1)
    c = np.maximum(mx - mn, 1e-6)
    h = np.where(mx == r, ((g - b) / c) % 6.0, np.where(mx == g, (b - r) / c + 2.0, (r - g) / c + 4.0))
    return h * 60.0, (mx - mn) / np.maximum(mx, 1e-6)


_HUE_NAMES = tuple(n for n in COLOR_NAMES if n != "white")
_HUES = _hue_saturation(np.array([COLORS[n] for n in _HUE_NAMES], np.float32))[0]
_WHITE = COLOR_NAMES.index("white")
_HUE_INDEX = np.array([COLOR_NAMES.index(n) for n in _HUE_NAMES])


def classify_pixels(rgb: np.ndarray) -> np.ndarray:
    """Index into ``COLOR_NAMES`` of each pixel of float RGB [..., 3]."""
    hue, sat = _hue_saturation(np.asarray(rgb, np.float32))
    diff = np.abs(hue[..., None] - _HUES)
    nearest = _HUE_INDEX[np.argmin(np.minimum(diff, 360.0 - diff), axis=-1)]
    return np.where(sat < WHITE_MAX_SATURATION, _WHITE, nearest)


def classify_color(rgb) -> str:
    """The palette name of one RGB color."""
    return COLOR_NAMES[int(classify_pixels(np.asarray(rgb, np.float32)[None])[0])]


def _box3(a: np.ndarray) -> np.ndarray:
    """3x3 box average over axes 1 and 2 of [F, H, W, ...] (edges replicated)."""
    pad = [(0, 0), (1, 1), (1, 1)] + [(0, 0)] * (a.ndim - 3)
    p = np.pad(a, pad, mode="edge")
    rows = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
    return (rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]) / 9.0


def _box3_max(d: np.ndarray) -> np.ndarray:
    """Per frame, the maximum of the 3x3 box average of d [F, H, W]."""
    return _box3(d).reshape(len(d), -1).max(axis=1)


def _largest_components(mask: np.ndarray) -> np.ndarray:
    """Per frame, the largest 4-connected component of mask [F, H, W] (union-find with pointer jumping)."""
    f, h, w = mask.shape
    n = mask.size
    flat = mask.reshape(-1)
    ids = np.arange(n).reshape(f, h, w)
    horiz = mask[:, :, :-1] & mask[:, :, 1:]
    vert = mask[:, :-1, :] & mask[:, 1:, :]
    p = np.concatenate([ids[:, :, :-1][horiz], ids[:, :-1, :][vert]])
    q = np.concatenate([ids[:, :, 1:][horiz], ids[:, 1:, :][vert]])
    parent = np.arange(n)
    while True:
        rp, rq = parent[p], parent[q]
        diff = rp != rq
        if not diff.any():
            break
        lo, hi = np.minimum(rp[diff], rq[diff]), np.maximum(rp[diff], rq[diff])
        np.minimum.at(parent, hi, lo)           # hook the larger root under the smaller: no cycles
        while True:                             # pointer jumping until every pixel points at its root
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
    roots = np.where(flat, parent, -1)
    counts = np.bincount(roots[flat], minlength=n).reshape(f, h * w)
    best = counts.argmax(axis=1) + np.arange(f) * h * w
    keep = (roots.reshape(f, h * w) == best[:, None]) & (counts.max(axis=1) > 0)[:, None]
    return keep.reshape(f, h, w)


def _theil_sen(t: np.ndarray, v: np.ndarray) -> float:
    """Median of pairwise slopes (robust straight-line slope)."""
    i, j = np.triu_indices(len(t), k=1)
    return float(np.median((v[j] - v[i]) / (t[j] - t[i])))


def _median3(v: np.ndarray) -> np.ndarray:
    """Running median of 3 (ends kept): one bad frame does not move a path's range."""
    if len(v) < 3:
        return v.copy()
    out = v.copy()
    out[1:-1] = np.median(np.stack([v[:-2], v[1:-1], v[2:]]), axis=0)
    return out


def path_features(cx: np.ndarray, cy: np.ndarray) -> dict:
    """What a centroid path (fractions of the frame, one point per frame where the object was found, in
    order) does beyond a straight line: per axis its range and how far it came back (range minus the distance
    between its ends; 0 for a straight or still path), and the heading's total signed turn in radians (positive
    = clockwise on screen, image y growing downward), summed over displacements of 2 frames (steps shorter
    than 1% of the frame are skipped as jitter)."""
    x, y = _median3(np.asarray(cx, np.float64)), _median3(np.asarray(cy, np.float64))
    out = {"range": [0.0, 0.0], "back": [0.0, 0.0], "turn": 0.0}
    if len(x) < 2:
        return out
    for i, v in enumerate((x, y)):
        rng = float(v.max() - v.min())
        out["range"][i] = rng
        out["back"][i] = rng - abs(float(v[-1] - v[0]))
    if len(x) >= 5:
        d = np.stack([x[2:] - x[:-2], y[2:] - y[:-2]], axis=1)[::2]
        d = d[np.linalg.norm(d, axis=1) >= 0.01]
        if len(d) >= 2:
            a = np.arctan2(d[:, 1], d[:, 0])
            out["turn"] = float(np.sum((np.diff(a) + np.pi) % (2 * np.pi) - np.pi))
    return out


def looping_motion(feat: dict) -> Optional[str]:
    """``bounce_lr``, ``bounce_ud`` or ``circling`` from :func:`path_features`, or None (a straight move or
    no move). Circling needs both ranges comparable and a steady clockwise turn; a bounce needs its range
    along one axis with a return of ``BOUNCE_MIN_BACK`` and little range across. A bounce whose reversal
    falls in the first or last two frames of a video looks like a one-way move (the shipped model's one-way
    moves span up to 0.56 of the frame, so distance cannot tell them apart either)."""
    (rx, ry), (bx, by), turn = feat["range"], feat["back"], feat["turn"]
    big, small = max(rx, ry), min(rx, ry)
    if big < MOVE_MIN:
        return None
    if small >= CIRCLE_MIN_ASPECT * big and turn >= CIRCLE_MIN_TURN:
        return "circling"
    along, back, across = (rx, bx, ry) if rx >= ry else (ry, by, rx)
    if back >= max(BOUNCE_MIN_BACK, BOUNCE_MIN_BACK_SHARE * along) and across < BOUNCE_MAX_ACROSS * along:
        return "bounce_lr" if rx >= ry else "bounce_ud"
    return None


def shape_features(w: np.ndarray) -> tuple:
    """(gamma, rho) of a 2-D weight image w (the object's coverage), from its cumulants about the centroid:
    gamma = k3(y) / |k4|^(3/4) and rho = k22(x, y) / k4, where k4 is the mean of the fourth cumulants of x and
    y. A Gaussian blur adds nothing to any cumulant above the second, so both are blur invariant.
    Exact values: disk gamma 0, rho 1/3; axis-aligned square gamma 0, rho 0; triangle with its apex up
    gamma about -1 (+1 apex down)."""
    w = np.asarray(w, np.float64)
    m = w.sum()
    if m <= 0:
        return 0.0, 0.0
    ys, xs = np.mgrid[0:w.shape[0], 0:w.shape[1]].astype(np.float64)
    x = xs - (w * xs).sum() / m
    y = ys - (w * ys).sum() / m

    def mean(a):
        return float((w * a).sum() / m)

    x2, y2 = x * x, y * y
    vx, vy, cxy = mean(x2), mean(y2), mean(x * y)
    k4 = 0.5 * ((mean(x2 * x2) - 3 * vx * vx) + (mean(y2 * y2) - 3 * vy * vy))
    k22 = mean(x2 * y2) - vx * vy - 2 * cxy * cxy
    k3 = mean(y2 * y)
    if abs(k4) < 1e-9:
        return 0.0, 0.0
    return k3 / abs(k4) ** 0.75, k22 / k4


# --------------------------------------------------------------------------------------------------------------
# One object from a contrast map
# --------------------------------------------------------------------------------------------------------------

def _not_found(reason: str) -> dict:
    return {"found": False, "color": None, "shape": None, "motion": None, "confidence": {},
            "measurements": {"reason": reason}}


def _analyze(d: np.ndarray, frames_f: np.ndarray, bg: np.ndarray, color: Optional[str] = None,
             select: Optional[np.ndarray] = None) -> dict:
    """Find the object in contrast map d [F, H, W] and measure its color (unless given), shape and motion."""
    f, h, w = d.shape
    peak = _box3_max(d)
    thr = np.maximum(0.5 * peak, MIN_CONTRAST)
    mask = (d > thr[:, None, None]) & (peak >= MIN_PEAK)[:, None, None]
    keep = _largest_components(mask)
    area = keep.sum(axis=(1, 2)).astype(np.float64)
    valid = (peak >= MIN_PEAK) & (area >= max(MIN_AREA_FRACTION * h * w, 3.0))
    if not valid.any():
        return _not_found("no frame shows an object that stands out from the background")

    # Color: contrast-weighted vote of the core pixels.
    core = keep & (d >= CORE_LEVEL * peak[:, None, None]) & valid[:, None, None]
    if color is None:
        cls = classify_pixels(frames_f[core])
        votes = np.bincount(cls, weights=d[core], minlength=len(COLOR_NAMES))
        color = COLOR_NAMES[int(votes.argmax())]
        color_conf = float(votes.max() / max(votes.sum(), 1e-9))
    else:
        color_conf = 1.0
    rgb = np.median(frames_f[core], axis=0) if core.any() else frames_f[keep].mean(axis=0)

    # Shape: blur-invariant cumulant ratios of the object's coverage, on the frames where it is largest.
    # Coverage = the 3x3-smoothed frame projected on (object color - background), clipped to [0, 1], with
    # values under SOFT_FLOOR zeroed (noise), in the mask's bounding box padded by half its size.
    big = np.flatnonzero(valid & (area >= 0.5 * area[valid].max()))
    big = big[np.argsort(-area[big], kind="stable")[:MAX_SHAPE_FRAMES]]
    u = rgb - bg
    uu = float(u @ u)
    gamma = rho = 0.0
    weight = 0.0
    for k in big:
        rows, cols = np.flatnonzero(keep[k].any(axis=1)), np.flatnonzero(keep[k].any(axis=0))
        pad = max(3, (max(len(rows), len(cols)) + 1) // 2)
        r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, h)
        c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, w)
        e0, e1, f0, f1 = max(r0 - 1, 0), min(r1 + 1, h), max(c0 - 1, 0), min(c1 + 1, w)   # 1-pixel margin
        smooth = _box3(frames_f[k:k + 1, e0:e1, f0:f1])[0, r0 - e0:r1 - e0, c0 - f0:c1 - f0]
        cover = np.clip((smooth - bg) @ u / max(uu, 1e-6), 0.0, 1.0)
        cover[cover < SOFT_FLOOR] = 0.0
        if select is not None:
            cover = cover * select[k, r0:r1, c0:c1]
        g, r = shape_features(cover)
        gamma += area[k] * g
        rho += area[k] * r
        weight += area[k]
    gamma, rho = gamma / weight, rho / weight
    if abs(gamma) >= TRIANGLE_MIN_GAMMA:
        shape = "triangle"
    else:
        shape = "circle" if rho >= CIRCLE_MIN_RHO else "square"

    # Motion: robust line fits of the centroid and log area over time.
    ys = (np.arange(h) + 0.5) / h
    xs = (np.arange(w) + 0.5) / w
    safe = np.maximum(area, 1.0)
    cx = (keep.sum(axis=1) * xs).sum(axis=1) / safe
    cy = (keep.sum(axis=2) * ys).sum(axis=1) / safe
    t = np.linspace(0.0, 1.0, f) if f > 1 else np.zeros(1)
    idx = np.flatnonzero(valid)
    if len(idx) >= 2:
        dx = _theil_sen(t[idx], cx[idx])
        dy = _theil_sen(t[idx], cy[idx])
        dlog = _theil_sen(t[idx], np.log(area[idx] / (h * w)))
        move, size = max(abs(dx), abs(dy)) / MOVE_MIN, abs(dlog) / GROW_MIN
        path = path_features(cx[idx], cy[idx])
        looping = looping_motion(path) if size < 1.0 or size <= max(path["range"]) / MOVE_MIN else None
        if looping is not None:
            motion = looping
        elif max(move, size) < 1.0:
            motion = "still"
        elif move >= size:
            motion = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
        else:
            motion = "growing" if dlog > 0 else "shrinking"
    else:
        dx = dy = dlog = move = size = float("nan")
        motion, path = None, path_features(cx[:0], cy[:0])

    return {
        "found": True, "color": color, "shape": shape, "motion": motion,
        "confidence": {"color": color_conf, "shape": {"gamma": gamma, "rho": rho},
                       "motion": {"move_score": move, "size_score": size}},
        "measurements": {"rgb": [float(v) for v in rgb], "dx": dx, "dy": dy,
                         "log_area_ratio": dlog, "valid_frames": int(valid.sum()), "path": path,
                         "mean_area_fraction": float(area[valid].mean() / (h * w)),
                         "centroid_start": (float(cx[idx[0]]), float(cy[idx[0]]))},
    }


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------

def _contrast(frames, background):
    frames = as_frames(frames)
    x = frames.astype(np.float32)
    bg = estimate_background(frames) if background is None else np.asarray(background, np.float32)
    if bg.shape != (3,):
        raise ValueError(f"background must be an RGB triple, got {background!r}")
    diff = x - bg
    return x, np.sqrt(np.einsum("...c,...c->...", diff, diff)), bg


def detect(frames, background=None) -> dict:
    """The single (most salient) object of a video: {found, color, shape, motion, confidence, measurements}.

    ``frames``: uint8 [F, H, W, 3] or a float video [3, F, H, W] in [-1, 1]. ``background``: RGB triple, or
    None to estimate it from the frame borders. Attributes are None when no object is found."""
    x, d, bg = _contrast(frames, background)
    out = _analyze(d, x, bg)
    out["measurements"]["background"] = [float(v) for v in bg]
    return out


def detect_objects(frames, n_objects: int = 2, background=None) -> list:
    """Up to ``n_objects`` objects of different colors, most contrast mass first (same dicts as :func:`detect`)."""
    x, d, bg = _contrast(frames, background)
    fg = d > np.maximum(MIN_CONTRAST, 0.25 * _box3_max(d))[:, None, None]
    cls = np.where(fg, classify_pixels(x), -1)
    mass = np.bincount(cls[fg], weights=d[fg], minlength=len(COLOR_NAMES))
    order = [int(k) for k in np.argsort(-mass) if mass[k] > 0.1 * mass.max() and mass[k] > 0]
    out = []
    for k in order[:n_objects]:
        sel = cls == k
        det = _analyze(np.where(sel, d, 0.0), x, bg, color=COLOR_NAMES[k], select=sel)
        if det["found"]:
            det["measurements"]["background"] = [float(v) for v in bg]
            out.append(det)
    return out


def object_pictures(picture: np.ndarray, colors, grow: int = 2) -> Optional[list]:
    """One picture per named color (uint8 [H, W, 3] each): ``picture`` with every other object painted over in
    the background color, an object being the pixels of its color class at least ``MIN_CONTRAST`` from the
    background, and ``grow`` pixels around them (the anti-aliased edge). None when the colors are not all different
    or one of them has no object in the picture."""
    pic = np.asarray(picture)
    if len(set(colors)) != len(colors) or any(c not in COLOR_NAMES for c in colors):
        return None
    x = pic.astype(np.float32)
    bg = estimate_background(x[None])
    core = np.linalg.norm(x - bg, axis=-1) >= MIN_CONTRAST
    classes = classify_pixels(x)
    regions = []
    for c in colors:
        own = core & (classes == COLOR_NAMES.index(c))
        if not own.any():
            return None
        padded, (h, w) = np.pad(own, grow), own.shape
        regions.append(np.any([padded[grow + dy: grow + dy + h, grow + dx: grow + dx + w]
                               for dy in range(-grow, grow + 1) for dx in range(-grow, grow + 1)], axis=0))
    out = []
    for k in range(len(colors)):
        p = pic.copy()
        for j, region in enumerate(regions):
            if j != k:
                p[region & ~regions[k]] = np.round(bg).astype(np.uint8).reshape(3)
        out.append(p)
    return out


def track(frames, background=None) -> dict:
    """Per frame, the object as :func:`detect` finds it (the largest component above half the frame's peak
    contrast), without the clip-level attributes: ``found`` [F] bool, centroid ``cx``, ``cy`` [F] in pixels
    (pixel centres at i + 0.5), ``area`` [F] in pixels and ``rgb`` [F, 3], the mean color of its core pixels
    (contrast >= ``CORE_LEVEL`` of the peak); NaN (area 0) where no object is found. For long videos, where
    the clip-level fits of :func:`detect` say little, ``openwan bench long`` measures drift from these."""
    x, d, bg = _contrast(frames, background)
    f, h, w = d.shape
    peak = _box3_max(d)
    thr = np.maximum(0.5 * peak, MIN_CONTRAST)
    keep = _largest_components((d > thr[:, None, None]) & (peak >= MIN_PEAK)[:, None, None])
    area = keep.sum(axis=(1, 2)).astype(np.float64)
    found = (peak >= MIN_PEAK) & (area >= max(MIN_AREA_FRACTION * h * w, 3.0))
    safe = np.maximum(area, 1.0)
    cx = (keep.sum(axis=1) * (np.arange(w) + 0.5)).sum(axis=1) / safe
    cy = (keep.sum(axis=2) * (np.arange(h) + 0.5)).sum(axis=1) / safe
    core = keep & (d >= CORE_LEVEL * peak[:, None, None])
    n_core = np.maximum(core.sum(axis=(1, 2)), 1)[:, None]
    rgb = np.einsum("fhw,fhwc->fc", core.astype(np.float64), x.astype(np.float64)) / n_core
    nan = np.where(found, 1.0, np.nan)
    return {"found": found, "cx": cx * nan, "cy": cy * nan, "area": np.where(found, area, 0.0),
            "rgb": rgb * nan[:, None], "background": [float(v) for v in bg], "size": (h, w)}


def _expected(expected) -> Attributes:
    if isinstance(expected, dict):
        return Attributes(expected["color"], expected["shape"], expected["motion"])
    if hasattr(expected, "attributes") and isinstance(expected.attributes, Attributes):
        return expected.attributes
    return Attributes(*expected)


def score(detected: dict, expected) -> dict:
    """Per-attribute correctness {color, shape, motion, all} of a detection against the expected
    ``Attributes`` (or a (color, shape, motion) tuple, a dict, or a BenchmarkPrompt)."""
    e = _expected(expected)
    out = {k: detected.get(k) == getattr(e, k) for k in ("color", "shape", "motion")}
    out["all"] = all(out.values())
    return out


def score_objects(detected: Sequence[dict], expected: Sequence) -> list:
    """Scores of multi-object detections: each expected object is matched to the detection of its color (a
    missing color scores all False)."""
    by_color = {d["color"]: d for d in detected}
    out = []
    for e in expected:
        e = _expected(e)
        out.append(score(by_color.get(e.color, {}), e))
    return out


def match_objects(detected: Sequence[dict], expected: Sequence) -> list:
    """Each expected object's detection under the one-to-one assignment that gets the most attributes right
    (ties: the most colors right, then the detections in order), or {} where there are fewer detections. Unlike
    :func:`score_objects`' match by color, a scene whose model swapped or changed a color still has the shape and
    motion of each object graded against the object it drew."""
    import itertools
    exp = [_expected(e) for e in expected]
    det = list(detected)
    slots = det + [{}] * max(0, len(exp) - len(det))
    best, best_key = None, None
    for perm in itertools.permutations(range(len(slots)), len(exp)):
        sc = [score(slots[j], e) for j, e in zip(perm, exp)]
        key = (sum(s[k] for s in sc for k in ("color", "shape", "motion")), sum(s["color"] for s in sc))
        if best_key is None or key > best_key:
            best, best_key = perm, key
    return [slots[j] for j in best] if best is not None else []


def score_scene(detected: Sequence[dict], expected: Sequence) -> list:
    """Per expected object, its scores {color, shape, motion, all} against its detection under
    :func:`match_objects`."""
    return [score(d, e) for d, e in zip(match_objects(detected, expected), expected)]
