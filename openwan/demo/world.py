"""A procedural video world: flat shapes of plain colors moving over a dark gray background.

Every clip is drawn from a seed and is described exactly by its caption. One object (optionally two) of a
shape in ``SHAPES`` (circle, square, upward triangle), a color in ``COLORS`` (seven colors: six hues about 60
degrees apart on the hue circle plus white, all far from the neutral dark gray background ``BACKGROUND`` =
(32, 32, 32), so blending an object's edge into the background changes its brightness and saturation but never
its hue) does one motion in ``MOTIONS``: the seven ``CLASSIC_MOTIONS`` (moves left, right, up or down by 35-45% of
the frame over the clip, stays still, grows or shrinks: its linear size changes 2.2-2.6x, geometric in time,
about a fixed center) or one of the ``LOOPING_MOTIONS``, which go on for any length and start at a random phase:
bounces between the left and right (``bounce_lr``) or top and bottom (``bounce_ud``) edges, reversing every
0.75-1 clip lengths, or circles clockwise (one turn per 1.5-2.2 clip lengths).
Geometry lives in normalized units (positions as fractions of the frame, size ``r`` = half the side of the
object's bounding box in units of the frame's shorter side), so the same clip renders at any ``size`` and
``frames``; rendering supersamples 4x per axis for anti-aliasing. Captions are drawn from templates with
paraphrases ("a red circle moving to the right", "red circle sliding right", "a small red circle growing", ...);
``parse_prompt`` maps any of them (or a user prompt) back to its ``Attributes``. ``HELD_OUT`` is 30 of the 210
(color, shape, motion) combinations (14%; 21 of the 147 classic ones), those with ``(color_index + 2 *
shape_index + 3 * motion_index) % 7 == 0``: every (shape, motion) pair misses exactly one color and every
(color, shape) pair misses one or two motions, so each pair of attributes is still seen in training and only
the triple is new. ``split="train"``
never draws them; ``benchmark_prompts()`` lists 24 seen and 12 held-out prompts for ``openwan bench demo``.

Here: sampling clips, the benchmark prompts and the dataset. The vocabulary and the scene's types (an object
and its motion in time, a clip) are in :mod:`openwan.demo.world_scene`, captions and prompt parsing in
:mod:`openwan.demo.world_captions`, rendering in :mod:`openwan.demo.world_render`; every public name of those is
importable from here.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple, Optional, Sequence

import numpy as np

# The scene's vocabulary and types, captions and rendering live in their own modules; every name is importable
# from here.
from openwan.demo.world_scene import (  # noqa: F401
    ALL_COMBOS, BACKGROUND, BIG_WORD_MIN, BOUNCE_HALF_PERIOD, CIRCLE_PERIOD, CIRCLE_RADIUS, CIRCLE_SIZE,
    CLASSIC_MOTIONS, COLOR_NAMES, COLORS, GROW_FACTOR, HELD_OUT, HELD_OUT_COMBOS, LOOPING_MOTIONS, MARGIN,
    MOTIONS, MOVE_DISTANCE, SHAPES, SMALL_SIZE, SMALL_WORD_MAX, SPLITS, STATIC_SIZE, TRAIN_COMBOS, Attributes, Clip,
    WorldObject)
from openwan.demo.world_captions import (  # noqa: F401
    CANONICAL_PHRASE, CAPTION_TEMPLATES, COLOR_SYNONYMS, MOTION_PHRASES, OTHER_COLORS, OTHER_SHAPES,
    SHAPE_SYNONYM_PROB, SHAPE_SYNONYMS, SIZE_WORDS, TWO_OBJECT_JOINERS, WIDE_COLOR_SYNONYM_PROB, WIDE_MOTION_PHRASES,
    WIDE_TEMPLATES, REFERENCE_SUBJECTS, caption_phrases, caption_templates, describe, make_caption, reference_caption,
    reference_prompt, reading_order, objects_named,
    outside_world_warning, parse_objects, parse_prompt, understand, warn_outside_world)
from openwan.demo.world_render import _hw, clip_tensor, from_tensor, render_clip, to_tensor  # noqa: F401

# --------------------------------------------------------------------------------------------------------------
# Sampling clips
# --------------------------------------------------------------------------------------------------------------

def _check_choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; this world knows {list(allowed)}")


def sample_object(rng: np.random.Generator, color: str, shape: str, motion: str) -> WorldObject:
    """Random placement, size and speed for an object with the given attributes (fits in the frame)."""
    _check_choice("color", color, COLORS)
    _check_choice("shape", shape, SHAPES)
    _check_choice("motion", motion, MOTIONS)
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    if motion in ("growing", "shrinking"):
        small = u(*SMALL_SIZE)
        big = small * u(*GROW_FACTOR)
        x = u(big + MARGIN, 1 - big - MARGIN)
        y = u(big + MARGIN, 1 - big - MARGIN)
        r0, r1 = (small, big) if motion == "growing" else (big, small)
        return WorldObject(color, shape, motion, x, y, r0, x, y, r1)
    if motion == "circling":
        r, orbit = u(*CIRCLE_SIZE), u(*CIRCLE_RADIUS)
        reach = orbit + r + MARGIN
        x, y = u(reach, 1 - reach), u(reach, 1 - reach)
        return WorldObject(color, shape, motion, x, y, r, x, y, r, period=u(*CIRCLE_PERIOD), phase=u(0, 1),
                           orbit=orbit)
    r = u(*STATIC_SIZE)
    lo, hi = r + MARGIN, 1 - r - MARGIN
    if motion in ("bounce_lr", "bounce_ud"):            # from edge to edge, starting anywhere in the cycle
        across, period, phase = u(lo, hi), 2 * u(*BOUNCE_HALF_PERIOD), u(0, 1)
        ends = (lo, across, hi, across) if motion == "bounce_lr" else (across, lo, across, hi)
        return WorldObject(color, shape, motion, ends[0], ends[1], r, ends[2], ends[3], r, period=period,
                           phase=phase)
    if motion == "still":
        x, y = u(lo, hi), u(lo, hi)
        return WorldObject(color, shape, motion, x, y, r, x, y, r)
    dist = u(*MOVE_DISTANCE)
    along, across = u(lo, hi - dist), u(lo, hi)      # start of the low-to-high coordinate path
    if motion == "right":
        return WorldObject(color, shape, motion, along, across, r, along + dist, across, r)
    if motion == "left":
        return WorldObject(color, shape, motion, along + dist, across, r, along, across, r)
    if motion == "down":                                # image y grows downward
        return WorldObject(color, shape, motion, across, along, r, across, along + dist, r)
    return WorldObject(color, shape, motion, across, along + dist, r, across, along, r)   # up


_OVERLAP_T = np.linspace(0.0, 1.0, 17)


def _overlap(a: WorldObject, b: WorldObject, gap: float = 0.03) -> bool:
    """Whether the two objects' boxes (plus ``gap``) ever touch during the clip."""
    t = _OVERLAP_T
    (ax, ay), (bx, by) = a.center(t), b.center(t)
    reach = a.radius(t) + b.radius(t) + gap
    return bool(np.any((np.abs(ax - bx) < reach) & (np.abs(ay - by) < reach)))


def _combos(split: str, motions: Optional[Sequence] = None) -> tuple:
    _check_choice("split", split, SPLITS)
    combos = {"train": TRAIN_COMBOS, "heldout": HELD_OUT_COMBOS, "all": ALL_COMBOS}[split]
    return combos if motions is None else tuple(a for a in combos if a.motion in motions)


def _check_motions(motions: Optional[Sequence]) -> Optional[tuple]:
    if motions is None:
        return None
    motions = tuple(motions)
    for m in motions:
        _check_choice("motion", m, MOTIONS)
    if not motions:
        raise ValueError(f"motions must name at least one of {list(MOTIONS)} (or be None for all)")
    return motions


def sample_clip(rng: np.random.Generator, split: str = "train", n_objects: int = 1,
                attributes: Optional[Sequence] = None, motions: Optional[Sequence] = None) -> Clip:
    """A random clip. ``split`` picks the combinations: "train" never uses ``HELD_OUT``, "heldout" uses only
    ``HELD_OUT`` for the first object (a second object comes from the training combinations), "all" uses any.
    ``motions`` (default all of ``MOTIONS``) restricts the draw to those motions: with ``CLASSIC_MOTIONS`` a
    seed gives the same clip as the world before the looping motions were added.
    ``attributes`` (a sequence of ``Attributes`` or (color, shape, motion) tuples) fixes the objects instead.
    Two objects always have different colors and never overlap."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError("sample_clip needs a numpy Generator, e.g. numpy.random.default_rng(seed)")
    if attributes is not None:
        wanted = [Attributes(*a) for a in attributes]
        if len(wanted) not in (1, 2):
            raise ValueError(f"a clip holds 1 or 2 objects, got {len(wanted)} attribute sets")
        if len(wanted) == 2 and wanted[0].color == wanted[1].color:
            raise ValueError("two objects of one clip must have different colors")
    else:
        if n_objects not in (1, 2):
            raise ValueError(f"n_objects must be 1 or 2, got {n_objects}")
        motions = _check_motions(motions)
        combos = _combos(split, motions)
        first = combos[int(rng.integers(len(combos)))]
        wanted = [first]
        if n_objects == 2:
            pool = [a for a in _combos("train" if split != "all" else "all", motions) if a.color != first.color]
            wanted.append(pool[int(rng.integers(len(pool)))])
    for _ in range(1000):
        objects = [sample_object(rng, *wanted[0])]
        if len(wanted) == 2:
            for _ in range(50):
                second = sample_object(rng, *wanted[1])
                if not _overlap(objects[0], second):
                    objects.append(second)
                    break
        if len(objects) == len(wanted):
            break
    else:  # pragma: no cover - two objects always fit, this is a safety net
        raise RuntimeError("could not place two non-overlapping objects")
    return Clip(tuple(objects), make_caption(objects, rng))


def make_clip(seed: int, split: str = "train", n_objects: int = 1,
              attributes: Optional[Sequence] = None, motions: Optional[Sequence] = None) -> Clip:
    """The clip of a seed (deterministic)."""
    return sample_clip(np.random.default_rng(seed), split=split, n_objects=n_objects, attributes=attributes,
                       motions=motions)


def reference_picture(obj: "WorldObject | Attributes", rng: np.random.Generator, size=64) -> np.ndarray:
    """uint8 [H, W, 3]: a picture of ``obj``'s color and shape alone, still, at a place and size of its own drawn
    from ``rng`` (as any still object's): a reference picture that shows what the object looks like, not where it
    is or how big (VACE's reference images on the demo)."""
    still = sample_object(rng, obj.color, obj.shape, "still")
    return render_clip(Clip((still,), ""), size=size, frames=1)[0]


def generate(seed: int, size=64, frames: int = 17, split: str = "train", n_objects: int = 1):
    """(uint8 video [F, H, W, 3], Clip) of a seed."""
    clip = make_clip(seed, split=split, n_objects=n_objects)
    return render_clip(clip, size=size, frames=frames), clip

# --------------------------------------------------------------------------------------------------------------
# Benchmark prompts and dataset
# --------------------------------------------------------------------------------------------------------------

class BenchmarkPrompt(NamedTuple):
    prompt: str
    attributes: Attributes
    split: str          # "seen" or "heldout"


_BENCH_SEEN = (
    ("red", "square", "left"), ("green", "circle", "left"), ("blue", "circle", "left"),
    ("red", "square", "right"), ("green", "triangle", "right"), ("purple", "triangle", "right"),
    ("red", "triangle", "up"), ("green", "square", "up"), ("cyan", "circle", "up"), ("purple", "circle", "up"),
    ("red", "circle", "down"), ("yellow", "square", "down"), ("cyan", "triangle", "down"),
    ("purple", "square", "down"),
    ("yellow", "triangle", "still"), ("cyan", "square", "still"), ("white", "circle", "still"),
    ("yellow", "circle", "growing"), ("blue", "triangle", "growing"), ("white", "square", "growing"),
    ("yellow", "triangle", "shrinking"), ("green", "triangle", "shrinking"), ("blue", "square", "shrinking"),
    ("white", "circle", "shrinking"),
)
_BENCH_HELD_OUT = (
    ("red", "circle", "left"), ("purple", "square", "left"), ("red", "triangle", "right"),
    ("blue", "circle", "right"), ("white", "square", "up"), ("yellow", "triangle", "down"),
    ("cyan", "square", "down"), ("green", "circle", "still"), ("purple", "triangle", "still"),
    ("green", "triangle", "growing"), ("white", "circle", "growing"), ("yellow", "square", "shrinking"),
)


def prompt_for(attrs) -> str:
    """The canonical prompt of a combination: "a red circle moving to the right"."""
    a = Attributes(*attrs)
    return f"a {a.color} {a.shape} {CANONICAL_PHRASE[a.motion]}"


def benchmark_prompts() -> list:
    """The fixed benchmark: 24 seen and 12 held-out single-object prompts, as BenchmarkPrompt(prompt,
    attributes, split) with split "seen" or "heldout". Each list covers every color, shape and motion."""
    out = [BenchmarkPrompt(prompt_for(a), Attributes(*a), "seen") for a in _BENCH_SEEN]
    out += [BenchmarkPrompt(prompt_for(a), Attributes(*a), "heldout") for a in _BENCH_HELD_OUT]
    return out


class WorldDataset:
    """``n`` clips of a seed, indexable and iterable, yielding (video [3, F, H, W] float32 in [-1, 1], caption).

    Item ``i`` is the clip of ``numpy.random.default_rng([seed, i])``, so it does not depend on the order of
    access (safe to shard across DataLoader workers). ``n_objects=2`` makes a mix where a fraction
    ``two_object_prob`` of the clips hold two objects."""

    def __init__(self, n: int, seed: int = 0, size=64, frames: int = 17, split: str = "train",
                 n_objects: int = 1, two_object_prob: float = 0.25, motions: Optional[Sequence] = None):
        if int(n) < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        _combos(split)
        _hw(size)
        if n_objects not in (1, 2):
            raise ValueError(f"n_objects must be 1 or 2, got {n_objects}")
        self.n, self.seed, self.size, self.frames = int(n), int(seed), size, int(frames)
        self.split, self.n_objects, self.two_object_prob = split, n_objects, float(two_object_prob)
        self.motions = _check_motions(motions)

    def __len__(self) -> int:
        return self.n

    def clip(self, i: int) -> Clip:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for a WorldDataset of {self.n} clips")
        i = i % self.n
        rng = np.random.default_rng([self.seed, i])
        k = 2 if self.n_objects == 2 and rng.random() < self.two_object_prob else 1
        return sample_clip(rng, split=self.split, n_objects=k, motions=self.motions)

    def __getitem__(self, i: int):
        c = self.clip(i)
        return clip_tensor(c, size=self.size, frames=self.frames), c.caption

    def __iter__(self) -> Iterator:
        for i in range(self.n):
            yield self[i]
