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
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Optional, Sequence

import numpy as np

# --------------------------------------------------------------------------------------------------------------
# The world's vocabulary
# --------------------------------------------------------------------------------------------------------------

BACKGROUND = (32, 32, 32)

COLORS = {                      # hue (degrees) in comments
    "red": (230, 40, 40),       # 0
    "yellow": (230, 220, 30),   # 57
    "green": (40, 200, 60),     # 128
    "cyan": (40, 210, 220),     # 183
    "blue": (45, 75, 235),      # 231
    "purple": (190, 50, 220),   # 289
    "white": (235, 235, 235),   # (no hue: saturation 0)
}
SHAPES = ("circle", "square", "triangle")
CLASSIC_MOTIONS = ("left", "right", "up", "down", "still", "growing", "shrinking")
# Motions that go on for any length (a clip may start at any phase of their cycle): bouncing between the left
# and right edges, between the top and bottom edges, and circling clockwise.
LOOPING_MOTIONS = ("bounce_lr", "bounce_ud", "circling")
MOTIONS = CLASSIC_MOTIONS + LOOPING_MOTIONS
COLOR_NAMES = tuple(COLORS)

SPLITS = ("train", "heldout", "all")

# Geometry of the world (normalized units, see module docstring).
MARGIN = 0.04                   # minimum gap between an object's box and the frame edge
MOVE_DISTANCE = (0.35, 0.45)    # displacement of left/right/up/down over the whole clip
STATIC_SIZE = (0.11, 0.17)      # r of objects that move or stay still
SMALL_SIZE = (0.07, 0.09)       # r at the small end of growing / shrinking
GROW_FACTOR = (2.2, 2.6)        # ratio of the large to the small r of growing / shrinking
SMALL_WORD_MAX = 0.10           # captions may call an object "small" when its starting r is below this
BIG_WORD_MIN = 0.15             # ... and "big"/"large" when its starting r is above this
BOUNCE_HALF_PERIOD = (0.75, 1.0)  # clip lengths edge to edge: every 17-frame clip holds a reversal
CIRCLE_PERIOD = (1.5, 2.2)      # clip lengths per turn of a circling object
CIRCLE_RADIUS = (0.18, 0.27)    # radius of its path
CIRCLE_SIZE = (0.10, 0.14)      # r of a circling object (path and object fit in the frame)


class Attributes(NamedTuple):
    """What a caption says about one object (what the benchmark checks)."""
    color: str
    shape: str
    motion: str


ALL_COMBOS = tuple(Attributes(c, s, m) for c, s, m in itertools.product(COLOR_NAMES, SHAPES, MOTIONS))

# The held-out combinations, written out (they are those with (ci + 2*si + 3*mi) % 7 == 0; a test checks it):
# 21 of the 147 classic combinations (unchanged since the classic world) and 9 of the 63 looping ones.
HELD_OUT = frozenset(Attributes(*t) for t in (
    ("red", "circle", "left"), ("red", "square", "still"), ("red", "triangle", "right"),
    ("yellow", "circle", "up"), ("yellow", "square", "shrinking"), ("yellow", "triangle", "down"),
    ("green", "circle", "still"), ("green", "square", "right"), ("green", "triangle", "growing"),
    ("cyan", "circle", "shrinking"), ("cyan", "square", "down"), ("cyan", "triangle", "left"),
    ("blue", "circle", "right"), ("blue", "square", "growing"), ("blue", "triangle", "up"),
    ("purple", "circle", "down"), ("purple", "square", "left"), ("purple", "triangle", "still"),
    ("white", "circle", "growing"), ("white", "square", "up"), ("white", "triangle", "shrinking"),
    # the looping motions, by the same rule (motion index 7, 8, 9)
    ("red", "circle", "bounce_lr"), ("purple", "square", "bounce_lr"), ("cyan", "triangle", "bounce_lr"),
    ("blue", "circle", "bounce_ud"), ("green", "square", "bounce_ud"), ("red", "triangle", "bounce_ud"),
    ("yellow", "circle", "circling"), ("white", "square", "circling"), ("blue", "triangle", "circling"),
))
TRAIN_COMBOS = tuple(a for a in ALL_COMBOS if a not in HELD_OUT)
HELD_OUT_COMBOS = tuple(a for a in ALL_COMBOS if a in HELD_OUT)

# --------------------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------------------

# Verb phrases that follow "a red circle". The first of each list is the canonical one (benchmark prompts).
MOTION_PHRASES = {
    "left": ("moving to the left", "moves left", "sliding left", "going left", "drifting to the left",
             "moving left", "travels to the left"),
    "right": ("moving to the right", "moves right", "sliding right", "going right", "drifting to the right",
              "moving right", "travels to the right"),
    "up": ("moving up", "moves upward", "rising", "going up", "sliding up", "floating upward"),
    "down": ("moving down", "moves downward", "falling", "going down", "sliding down", "sinking"),
    "still": ("staying still", "standing still", "sitting still", "not moving", "resting in place",
              "staying in place"),
    "growing": ("growing", "grows", "getting bigger", "expanding", "growing larger"),
    "shrinking": ("shrinking", "shrinks", "getting smaller", "contracting", "shrinking away"),
    "bounce_lr": ("bouncing left and right", "bouncing from side to side", "bouncing back and forth",
                  "moving left and right", "going back and forth", "bouncing between the left and right edges",
                  "bouncing sideways"),
    "bounce_ud": ("bouncing up and down", "moving up and down", "bouncing between the top and bottom",
                  "going up and down", "bobbing up and down", "bouncing vertically"),
    "circling": ("circling", "circling clockwise", "moving in a circle", "going around in circles",
                 "going round and round", "orbiting clockwise"),
}
CANONICAL_PHRASE = {m: p[0] for m, p in MOTION_PHRASES.items()}

# Shape words used in captions: the canonical word most of the time, a synonym sometimes.
SHAPE_SYNONYMS = {"circle": ("disc", "dot", "ball"), "square": ("box", "block"), "triangle": ()}
SHAPE_SYNONYM_PROB = 0.25
# Colors are always named canonically in captions; parse_prompt also accepts these synonyms.
COLOR_SYNONYMS = {"purple": ("magenta", "violet"), "cyan": ("turquoise", "aqua"), "white": ()}

CAPTION_TEMPLATES = (
    "a {color} {shape} {motion}",
    "{color} {shape} {motion}",
    "the {color} {shape} {motion}",
    "a {size}{color} {shape} {motion}",
    "a {color} {shape} {motion} on a dark background",
    "a video of a {color} {shape} {motion}",
)
SIZE_WORDS = {"small": ("small ",), "big": ("big ", "large ")}
TWO_OBJECT_JOINERS = (" and ", ", and ", " while ")


def _shape_word(shape: str, rng: np.random.Generator) -> str:
    syn = SHAPE_SYNONYMS.get(shape, ())
    if syn and rng.random() < SHAPE_SYNONYM_PROB:
        return str(rng.choice(syn))
    return shape


def _size_word(r0: float, rng: np.random.Generator) -> str:
    if r0 < SMALL_WORD_MAX:
        return str(rng.choice(SIZE_WORDS["small"]))
    if r0 > BIG_WORD_MIN:
        return str(rng.choice(SIZE_WORDS["big"]))
    return ""


def describe(obj: "WorldObject", rng: np.random.Generator, template: Optional[str] = None) -> str:
    """One random caption phrase for one object ("a red circle moving to the right")."""
    template = template if template is not None else str(rng.choice(CAPTION_TEMPLATES))
    motion = str(rng.choice(MOTION_PHRASES[obj.motion]))
    return template.format(color=obj.color, shape=_shape_word(obj.shape, rng), motion=motion,
                           size=_size_word(obj.r0, rng))


def make_caption(objects: Sequence["WorldObject"], rng: np.random.Generator) -> str:
    """A random caption for one or two objects."""
    if len(objects) == 1:
        return describe(objects[0], rng)
    first = describe(objects[0], rng, template="a {color} {shape} {motion}")
    second = describe(objects[1], rng, template="a {color} {shape} {motion}")
    return first + str(rng.choice(TWO_OBJECT_JOINERS)) + second


def _word_pattern(words) -> re.Pattern:
    alts = sorted(set(words), key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in alts) + r")\b")


_COLOR_WORDS = {c: (c,) + COLOR_SYNONYMS.get(c, ()) for c in COLOR_NAMES}
_SHAPE_WORDS = {s: (s,) + SHAPE_SYNONYMS.get(s, ()) + (s + "s",) for s in SHAPES}
_MOTION_WORDS = {
    "left": ("left", "leftward", "leftwards"),
    "right": ("right", "rightward", "rightwards"),
    "up": ("up", "upward", "upwards", "rising", "rises", "rise", "ascending", "ascends"),
    "down": ("down", "downward", "downwards", "falling", "falls", "fall", "sinking", "sinks", "descending",
             "descends", "dropping", "drops"),
    "still": ("still", "not moving", "motionless", "stationary", "static", "in place", "at rest", "resting",
              "standing", "sitting"),
    "growing": ("grow", "grows", "growing", "bigger", "larger", "expanding", "expands", "enlarging", "inflating"),
    "shrinking": ("shrink", "shrinks", "shrinking", "smaller", "contracting", "contracts", "deflating"),
    "bounce_lr": ("bounce_lr",),        # tokens that _normalize puts in place of the looping motions' phrases
    "bounce_ud": ("bounce_ud",),
    "circling": ("circling", "circles_path", "orbiting", "orbits", "clockwise"),
}
# Phrases of the looping motions, replaced by one token before anything else is matched: they hold words of
# other motions ("left", "up") and of shapes ("in a circle"), and "and", which splits two-object prompts.
_LOOPING_PHRASES = (
    ("bounce_lr", ("between the left and right edges", "between the left and right", "left and right",
                   "right and left", "from side to side", "side to side", "back and forth", "sideways",
                   "horizontally")),
    ("bounce_ud", ("between the top and bottom edges", "between the top and bottom", "up and down",
                   "down and up", "vertically", "bobbing")),
    ("circles_path", ("around in circles", "round in circles", "in circles", "in a circle", "round and round")),
)
_LOOPING_RE = tuple((token, _word_pattern(words)) for token, words in _LOOPING_PHRASES)
_COLOR_RE = {c: _word_pattern(w) for c, w in _COLOR_WORDS.items()}
_SHAPE_RE = {s: _word_pattern(w) for s, w in _SHAPE_WORDS.items()}
_MOTION_RE = {m: _word_pattern(w) for m, w in _MOTION_WORDS.items()}
_SPLIT_RE = re.compile(r"\band\b|,|;|\bwhile\b")


def _normalize(text: str) -> str:
    """Lower case, with each looping motion's phrase replaced by its token ("left and right" -> bounce_lr)."""
    t = text.lower()
    for token, pat in _LOOPING_RE:
        t = pat.sub(f" {token} ", t)
    return t


def _found(patterns: dict, text: str) -> list:
    return [name for name, pat in patterns.items() if pat.search(text)]


def parse_prompt(text: str) -> Optional[Attributes]:
    """The (color, shape, motion) a single-object prompt asks for, or None when it names no color, shape or
    motion of this world, or more than one of any (two-object prompts: use :func:`parse_objects`)."""
    if not isinstance(text, str):
        return None
    t = _normalize(text)
    colors, shapes, motions = _found(_COLOR_RE, t), _found(_SHAPE_RE, t), _found(_MOTION_RE, t)
    if len(colors) == 1 and len(shapes) == 1 and len(motions) == 1:
        return Attributes(colors[0], shapes[0], motions[0])
    return None


def parse_objects(text: str) -> Optional[list]:
    """The attributes of every object of a prompt ("a red circle moving up and a blue square shrinking"), in
    order, or None if some part does not parse."""
    if not isinstance(text, str):
        return None
    parts = [p for p in _SPLIT_RE.split(_normalize(text)) if p.strip()]
    out = [parse_prompt(p) for p in parts]
    if not out or any(a is None for a in out):
        return None
    return out


# Common words outside the world, so a warning can name them ("orange" is not a color the demo knows).
OTHER_COLORS = ("orange", "pink", "brown", "black", "gray", "grey", "gold", "golden", "silver", "beige", "navy",
                "maroon", "lime", "teal", "indigo", "rainbow")
OTHER_SHAPES = ("star", "heart", "rectangle", "oval", "ellipse", "hexagon", "pentagon", "octagon", "diamond",
                "cross", "line", "cube", "sphere", "cone", "cylinder", "ring", "arrow", "rhombus", "polygon")
_OTHER_COLOR_RE = _word_pattern(OTHER_COLORS)
_OTHER_SHAPE_RE = _word_pattern(OTHER_SHAPES + tuple(s + "s" for s in OTHER_SHAPES))
_WORLD_SUMMARY = (f"one {'/'.join(COLOR_NAMES)} {'/'.join(SHAPES)} moving left/right/up/down, staying still, "
                  f"growing, shrinking, bouncing left and right or up and down, or circling")


def _one(kind: str, found: list, unknown: list) -> tuple[Optional[str], list]:
    if len(found) == 1:
        return found[0], []
    if len(found) > 1:
        return None, [f"{len(found)} {kind}s for one object ({', '.join(found)})"]
    if unknown:
        return None, [f"unknown {kind} {', '.join(repr(u) for u in unknown)}"]
    return None, [f"no {kind}"]


def understand(prompt: str) -> tuple[Attributes, list]:
    """What the demo model can take from a prompt: ``(Attributes(color, shape, motion), problems)``.

    Fields it cannot tell are None; ``problems`` lists, in words, what lies outside the world ("unknown color
    'orange'", "no motion", "2 objects named; the demo draws one"). An empty list means the prompt is fully
    inside the world. With several objects the attributes are the first one's."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    t = _normalize(prompt)
    objects = [p for p in _SPLIT_RE.split(t) if _found(_SHAPE_RE, p) or _OTHER_SHAPE_RE.search(p)]
    problems = []
    if len(objects) > 1:
        problems.append(f"{len(objects)} objects named; the demo draws one object per video")
        t = objects[0]
    color, p1 = _one("color", _found(_COLOR_RE, t), _OTHER_COLOR_RE.findall(t))
    shape, p2 = _one("shape", _found(_SHAPE_RE, t), _OTHER_SHAPE_RE.findall(t))
    motion, p3 = _one("motion", _found(_MOTION_RE, t), [])
    if color is shape is motion is None and not _OTHER_COLOR_RE.search(t) and not _OTHER_SHAPE_RE.search(t):
        return Attributes(None, None, None), ["nothing it knows"]
    return Attributes(color, shape, motion), problems + p1 + p2 + p3


def outside_world_warning(prompt: str) -> Optional[str]:
    """One line saying what the demo understood from a prompt that lies outside its world, or None."""
    attrs, problems = understand(prompt)
    if not problems:
        return None
    got = ", ".join(f"{k} {v}" for k, v in attrs._asdict().items() if v is not None) or "nothing"
    return (f"demo model: {prompt!r} is outside its world: {'; '.join(problems)} (understood: {got}); it draws "
            f"{_WORLD_SUMMARY}")


_warned: set = set()


def warn_outside_world(prompt: str) -> Optional[str]:
    """Log :func:`outside_world_warning` once per prompt (logger ``openwan.demo``); returns the line or None."""
    line = outside_world_warning(prompt)
    if line is None or prompt in _warned:
        return None
    if len(_warned) > 10_000:     # a long-running server: stay bounded
        _warned.clear()
    _warned.add(prompt)
    import logging
    logging.getLogger("openwan.demo").warning(line)
    return line


# --------------------------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WorldObject:
    """One object: attributes plus its start (t=0) and end (t=1) center and size, in normalized units.

    Time ``t`` is in clip lengths (frame k of a 17-frame clip is t = k / 16) and may run past 1. Looping
    motions have a ``period`` (clip lengths per cycle) and a ``phase`` (fraction of the cycle at t = 0): a
    bounce runs between its two ends (x0, y0) and (x1, y1) (at phase 0 it is at the first end, at phase 0.5 at
    the second); a circling object turns clockwise on screen (image y grows downward) at distance ``orbit``
    around (x0, y0) (= (x1, y1)), at phase 0 to the right of it."""
    color: str
    shape: str
    motion: str
    x0: float
    y0: float
    r0: float
    x1: float
    y1: float
    r1: float
    period: float = 0.0
    phase: float = 0.0
    orbit: float = 0.0

    @property
    def attributes(self) -> Attributes:
        return Attributes(self.color, self.shape, self.motion)

    def center(self, t):
        t = np.asarray(t, dtype=np.float64)
        if self.motion == "circling":
            a = 2.0 * np.pi * (self.phase + t / self.period)
            return self.x0 + self.orbit * np.cos(a), self.y0 + self.orbit * np.sin(a)
        if self.motion in ("bounce_lr", "bounce_ud"):
            s = np.mod(self.phase + t / self.period, 1.0)
            t = 1.0 - np.abs(2.0 * s - 1.0)             # triangle wave: 0 at the first end, 1 at the second
        return self.x0 + (self.x1 - self.x0) * t, self.y0 + (self.y1 - self.y0) * t

    def radius(self, t):
        t = np.asarray(t, dtype=np.float64)
        return self.r0 * (self.r1 / self.r0) ** t


@dataclass(frozen=True)
class Clip:
    """A scene: its objects (drawn in order, later on top), its caption and its background color."""
    objects: tuple
    caption: str
    background: tuple = BACKGROUND

    @property
    def attributes(self) -> tuple:
        return tuple(o.attributes for o in self.objects)


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


# --------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------

def _hw(size) -> tuple:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"size must be an int or (height, width), got {size!r}") from None
    if h < 8 or w < 8:
        raise ValueError(f"frames must be at least 8x8 pixels, got {h}x{w}")
    return h, w


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Whether offsets (dx, dy) from the center (units of the shorter side) fall inside the shape of size r."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= r
    if shape == "triangle":             # apex at the top, base at the bottom: height 2r, base 2r
        return (dy <= r) & (2.0 * np.abs(dx) <= dy + r)
    raise ValueError(f"unknown shape {shape!r}; this world knows {list(SHAPES)}")


def render_clip(clip: Clip, size=64, frames: int = 17, supersample: int = 4,
                native_frames: Optional[int] = None) -> np.ndarray:
    """The clip's video as uint8 [frames, H, W, 3]; frame k shows time t = k / (frames - 1), or with
    ``native_frames`` t = k / (native_frames - 1): a video of any length at the clip's own speed (the looping
    motions go on; a classic motion goes on in a straight line past t = 1, so it may leave the frame)."""
    h, w = _hw(size)
    if int(frames) < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if int(supersample) < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    if native_frames is not None and int(native_frames) < 2:
        raise ValueError(f"native_frames must be >= 2, got {native_frames}")
    f, ss = int(frames), int(supersample)
    if native_frames is not None:
        t = np.arange(f) / (int(native_frames) - 1)
    else:
        t = np.linspace(0.0, 1.0, f) if f > 1 else np.zeros(1)
    m = float(min(h, w))
    ys = (np.arange(h * ss) + 0.5) / (h * ss)       # sample positions, fractions of the frame
    xs = (np.arange(w * ss) + 0.5) / (w * ss)
    img = np.broadcast_to(np.asarray(clip.background, np.float32), (f, h, w, 3)).copy()
    for obj in clip.objects:
        cx, cy = obj.center(t)
        r = obj.radius(t)[:, None, None]
        dx = (xs[None, None, :] - cx[:, None, None]) * (w / m)
        dy = (ys[None, :, None] - cy[:, None, None]) * (h / m)
        cover = _inside(obj.shape, dx, dy, r).reshape(f, h, ss, w, ss).mean(axis=(2, 4), dtype=np.float32)
        color = np.asarray(COLORS[obj.color], np.float32)
        img += cover[..., None] * (color - img)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def to_tensor(frames: np.ndarray):
    """uint8 [F, H, W, 3] -> float32 torch tensor [3, F, H, W] in [-1, 1]."""
    import torch
    a = np.asarray(frames)
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [F, H, W, 3], got {a.dtype} {tuple(a.shape)}")
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(3, 0, 1, 2).float()
    return x / 127.5 - 1.0


def from_tensor(video) -> np.ndarray:
    """float [3, F, H, W] in [-1, 1] (torch tensor or numpy array) -> uint8 [F, H, W, 3]."""
    if hasattr(video, "detach"):
        video = video.detach().float().cpu().numpy()
    a = np.asarray(video, dtype=np.float32)
    if a.ndim != 4 or a.shape[0] != 3:
        raise ValueError(f"expected a video [3, F, H, W] in [-1, 1], got shape {tuple(a.shape)}")
    a = np.clip((a + 1.0) * 127.5, 0, 255)
    return np.rint(a).astype(np.uint8).transpose(1, 2, 3, 0)


def clip_tensor(clip: Clip, size=64, frames: int = 17):
    """The clip's video as a float32 torch tensor [3, F, H, W] in [-1, 1] (the training input layout)."""
    return to_tensor(render_clip(clip, size=size, frames=frames))


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
