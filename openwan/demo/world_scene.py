"""The demo world's scene: its vocabulary (colors, shapes, motions, splits), the ranges every clip's geometry is
drawn from, the (color, shape, motion) combinations with the held-out ones written out, and the scene's types:
a :class:`WorldObject` (where it is and how big at any time) and a :class:`Clip`.

What these mean is described in :mod:`openwan.demo.world` (which re-exports every name here).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

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
# Objects and clips
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
