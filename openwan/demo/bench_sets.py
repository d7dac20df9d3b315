"""Prompt sets of ``openwan bench demo`` beyond the fixed single-object benchmark (world.benchmark_prompts):

* ``two_objects``: two-object scenes in the world's own two-object wording ("a red circle moving to the left and
  a blue square moving to the right"), each object graded apart (:func:`openwan.demo.detect.detect_objects`);
  a scene is "heldout" when one of its objects is a held-out combination.
* ``paraphrase``, ``paraphrase2`` ... : single objects described in ways the world's captions never are (no
  caption template, no motion phrase of ``world.MOTION_PHRASES``, other colour and shape words): whether the model
  follows the meaning or the wording. They live in ``assets/paraphrase_sets.json``, each set with a line on how
  and when it was written and which rules it tests (most were written blind by a helper given only the world's
  names and the template phrases to avoid, and read only after the rules they test were committed). Kept apart
  from training: no caption the world can draw equals one of them, and none holds a motion phrase of the templates
  (a test checks both), so the training captions (drawn from the templates) never hold them. A new set is a new
  entry at the end of that file.

Each case is a :class:`BenchCase` (prompt, the objects' Attributes, split "seen"/"heldout", set name).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from openwan.demo.world import HELD_OUT, Attributes, prompt_for

_PARAPHRASE_FILE = Path(__file__).parent / "assets" / "paraphrase_sets.json"


@lru_cache(maxsize=1)
def _paraphrase_tables() -> dict:
    """{set name: ((color, shape, motion), text) ...} from the sets' file, in its order."""
    sets = json.loads(_PARAPHRASE_FILE.read_text(encoding="utf-8"))
    return {name: tuple((tuple(p[:3]), p[3]) for p in entry["prompts"]) for name, entry in sets.items()}


PARAPHRASE_SETS = tuple(_paraphrase_tables())
SETS = ("single", "two_objects") + PARAPHRASE_SETS


class BenchCase(NamedTuple):
    prompt: str
    objects: tuple          # Attributes of each object, in the prompt's order
    split: str              # "seen" or "heldout"
    set: str                # one of SETS


def _split(objects) -> str:
    return "heldout" if any(Attributes(*a) in HELD_OUT for a in objects) else "seen"


_TWO_OBJECTS = (
    (("red", "circle", "left"), ("blue", "square", "right")),
    (("green", "square", "up"), ("yellow", "triangle", "still")),
    (("white", "circle", "growing"), ("purple", "square", "down")),
    (("cyan", "triangle", "down"), ("red", "square", "left")),
    (("yellow", "circle", "growing"), ("blue", "triangle", "left")),
    (("purple", "circle", "up"), ("green", "triangle", "right")),
    (("red", "triangle", "still"), ("cyan", "circle", "shrinking")),
    (("blue", "circle", "down"), ("white", "triangle", "up")),
    (("green", "circle", "right"), ("red", "square", "shrinking")),
    (("white", "square", "left"), ("yellow", "circle", "down")),
    (("cyan", "square", "still"), ("purple", "triangle", "growing")),
    (("yellow", "square", "right"), ("green", "triangle", "left")),
)

def two_object_cases() -> list:
    """The two-object scenes (12): the world's two-object caption with each object's canonical phrase."""
    out = []
    for objs in _TWO_OBJECTS:
        attrs = tuple(Attributes(*a) for a in objs)
        out.append(BenchCase(" and ".join(prompt_for(a) for a in attrs), attrs, _split(attrs), "two_objects"))
    return out


def paraphrase_cases(name: str = "paraphrase") -> list:
    """The cases of a paraphrase set (one of :data:`PARAPHRASE_SETS`)."""
    return [BenchCase(text, (Attributes(*a),), _split([a]), name) for a, text in _paraphrase_tables()[name]]


def single_cases() -> list:
    """The fixed benchmark (world.benchmark_prompts) as cases."""
    from openwan.demo.world import benchmark_prompts
    return [BenchCase(bp.prompt, (bp.attributes,), bp.split, "single") for bp in benchmark_prompts()]


def cases(names) -> list:
    """The cases of the named sets, in SETS order."""
    unknown = [n for n in names if n not in SETS]
    if unknown:
        raise ValueError(f"unknown prompt set(s) {unknown}; choose from {list(SETS)}")
    make = {"single": single_cases, "two_objects": two_object_cases,
            **{name: lambda name=name: paraphrase_cases(name) for name in PARAPHRASE_SETS}}
    return [c for n in SETS if n in names for c in make[n]()]
