"""Captions of the demo world and what a prompt asks of it.

:func:`make_caption` draws a paraphrased caption for a clip's objects from templates; :func:`parse_prompt`
and :func:`parse_objects` map a caption (or any prompt) back to its ``Attributes``; :func:`understand` and
:func:`warn_outside_world` say in words what a prompt asks that lies outside the world. The world itself is
described in :mod:`openwan.demo.world` (which re-exports every public name here).
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np

from openwan.demo.world_scene import (
    BIG_WORD_MIN,
    COLOR_NAMES,
    SHAPES,
    SMALL_WORD_MAX,
    Attributes,
    WorldObject,
)

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


# The wide caption style (``make_caption(..., wide=True)``, the recipe's ``--stage recaption``): the templates and
# phrases above plus these, so that every word the world's parser accepts for a classic motion, every color and
# shape synonym, and more sentence shapes (a word before the object, the color after the shape, a phrase after the
# motion) are seen in training. Each phrase is several words and none is part of a benchmark paraphrase
# (openwan.demo.bench_sets; a test checks both), so the paraphrase set stays sentences the model never read.
WIDE_MOTION_PHRASES = {
    "left": ("moving leftward", "going leftwards", "shifting to the left"),
    "right": ("moving rightward", "going rightwards", "shifting to the right"),
    "up": ("moving upwards", "moving upward slowly", "rises steadily", "ascending slowly", "ascends steadily",
           "starting to rise"),
    "down": ("moving downwards", "moving downward slowly", "falls steadily", "sinks steadily", "descending slowly",
             "descends steadily", "dropping down", "drops down", "starting to fall"),
    "still": ("staying motionless", "standing stationary", "staying static", "remaining at rest", "resting quietly",
              "sitting in place"),
    "growing": ("starting to grow", "getting larger", "enlarging steadily", "inflating slowly", "expands steadily",
                "growing bigger"),
    "shrinking": ("starting to shrink", "becoming smaller", "deflating slowly", "contracts steadily",
                  "shrinking steadily"),
}
WIDE_TEMPLATES = (
    "there is a {color} {shape} {motion}",
    "a single {color} {shape} {motion}",
    "a {shape} in {color} {motion}",
    "a {color} colored {shape} {motion}",
    "a {color} {shape} {motion} across the screen",
    "a {color} {shape} {motion} over a plain background",
    "in this clip a {color} {shape} {motion}",
)
WIDE_COLOR_SYNONYM_PROB = 0.2


def caption_phrases(motion: str, wide: bool = False) -> tuple:
    """The verb phrases a caption may use for ``motion`` (the wide style's added ones too with ``wide``)."""
    return MOTION_PHRASES[motion] + (WIDE_MOTION_PHRASES.get(motion, ()) if wide else ())


def caption_templates(wide: bool = False) -> tuple:
    """The one-object caption templates (the wide style's added ones too with ``wide``)."""
    return CAPTION_TEMPLATES + (WIDE_TEMPLATES if wide else ())


def _shape_word(shape: str, rng: np.random.Generator) -> str:
    syn = SHAPE_SYNONYMS.get(shape, ())
    if syn and rng.random() < SHAPE_SYNONYM_PROB:
        return str(rng.choice(syn))
    return shape


def _color_word(color: str, rng: np.random.Generator, wide: bool) -> str:
    syn = COLOR_SYNONYMS.get(color, ())
    if wide and syn and rng.random() < WIDE_COLOR_SYNONYM_PROB:
        return str(rng.choice(syn))
    return color


def _size_word(r0: Optional[float], rng: np.random.Generator) -> str:
    if r0 is None:
        return ""
    if r0 < SMALL_WORD_MAX:
        return str(rng.choice(SIZE_WORDS["small"]))
    if r0 > BIG_WORD_MIN:
        return str(rng.choice(SIZE_WORDS["big"]))
    return ""


def describe(obj: "WorldObject | Attributes", rng: np.random.Generator, template: Optional[str] = None,
             wide: bool = False) -> str:
    """One random caption phrase for one object ("a red circle moving to the right"). ``obj``: a
    ``WorldObject``, or anything with ``color``, ``shape`` and ``motion`` (``Attributes``: no size word).
    ``wide``: the wide caption style (:data:`WIDE_TEMPLATES`, :data:`WIDE_MOTION_PHRASES`, color synonyms)."""
    template = template if template is not None else str(rng.choice(caption_templates(wide)))
    motion = str(rng.choice(caption_phrases(obj.motion, wide)))
    color = _color_word(obj.color, rng, wide)
    return template.format(color=color, shape=_shape_word(obj.shape, rng), motion=motion,
                           size=_size_word(getattr(obj, "r0", None), rng))


def make_caption(objects: Sequence["WorldObject | Attributes"], rng: np.random.Generator, wide: bool = False) -> str:
    """A random caption for one or two objects (``WorldObject`` or ``Attributes``; ``wide``: as
    :func:`describe`). The classic style draws from ``rng`` exactly as it always has (clips stay functions of
    their seed)."""
    if len(objects) == 1:
        return describe(objects[0], rng, wide=wide)
    first = describe(objects[0], rng, template="a {color} {shape} {motion}", wide=wide)
    second = describe(objects[1], rng, template="a {color} {shape} {motion}", wide=wide)
    return first + str(rng.choice(TWO_OBJECT_JOINERS)) + second


def reading_order(objects: Sequence["WorldObject"]) -> tuple:
    """Two objects in the order a caption in the reading-order style names them: along the axis on which their
    frame-0 centers lie farther apart, the left (or top) one first; one object as it is. A caption so ordered
    tells the model which of two objects each phrase means (the one to the left of the other), where a free
    order leaves it to guess (the two-object expert's captions, ``--two_object_order reading``)."""
    objects = tuple(objects)
    if len(objects) != 2:
        return objects
    (ax, ay), (bx, by) = (tuple(float(v) for v in o.center(0.0)) for o in objects)
    swap = bx < ax if abs(bx - ax) >= abs(by - ay) else by < ay
    return objects[::-1] if swap else objects


# A reference picture's captions (VACE's reference-to-video on the demo: openwan.pipelines.ti2v, docs/demo.md): the
# object is named by what it is in the picture, not by color and shape ("the object moving to the right"), so the
# model has to take its look from the picture. The first subject is the canonical one (the benchmark's).
REFERENCE_SUBJECTS = ("the object", "an object", "the shape", "a shape", "the same object",
                      "the object from the picture")


def reference_caption(motion: str, rng: np.random.Generator) -> str:
    """A random caption of an object shown by a reference picture: a subject of :data:`REFERENCE_SUBJECTS` and one
    of ``motion``'s phrases ("the shape sliding left")."""
    return f"{rng.choice(REFERENCE_SUBJECTS)} {rng.choice(MOTION_PHRASES[motion])}"


def reference_prompt(motion: str) -> str:
    """The canonical reference caption of ``motion`` ("the object moving to the right")."""
    return f"{REFERENCE_SUBJECTS[0]} {CANONICAL_PHRASE[motion]}"


def _word_pattern(words, space: str = " ") -> re.Pattern:
    """Any of ``words`` as whole words, longest first; ``space``: what may stand between a phrase's words."""
    alts = sorted(set(words), key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(space.join(map(re.escape, w.split(" "))) for w in alts) + r")\b")


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
# other motions ("left", "up") and of shapes ("in a circle"), and "and", which splits two-object prompts. (An axis
# alone, "vertically", "sideways", is a bounce's only with a bounce: world_lexicon's rule.)
_LOOPING_PHRASES = (
    ("bounce_lr", ("between the left and right edges", "between the left and right", "left and right",
                   "right and left", "from side to side", "side to side", "back and forth")),
    ("bounce_ud", ("between the top and bottom edges", "between the top and bottom", "up and down",
                   "down and up", "bobbing")),
    ("circles_path", ("around in circles", "round in circles", "in circles", "in a circle", "round and round")),
)
_LOOPING_RE = tuple((token, _word_pattern(words, space="[ -]")) for token, words in _LOOPING_PHRASES)  # "side-to-side"
_LOOPING_TOKENS = frozenset(token for token, _ in _LOOPING_PHRASES)
_COLOR_RE = {c: _word_pattern(w) for c, w in _COLOR_WORDS.items()}
_SHAPE_RE = {s: _word_pattern(w) for s, w in _SHAPE_WORDS.items()}
_MOTION_RE = {m: _word_pattern(w) for m, w in _MOTION_WORDS.items()}
_SPLIT_RE = re.compile(r"\band\b|,|;|\bwhile\b")
_SPELLING_NAMES = tuple(tuple(w for words in d.values() for w in words)        # what misspellings are mended to
                        for d in (_COLOR_WORDS, _SHAPE_WORDS, _MOTION_WORDS))


def _normalize(text: str) -> str:
    """Lower case, an underscore inside a word a space ("scale_down"), with each looping motion's phrase replaced
    by its token ("left and right" -> bounce_lr), the slips of informal writing mended
    (:mod:`openwan.demo.world_spelling`: "purpel" -> purple), then the wider vocabulary and wording rules of
    :mod:`openwan.demo.world_lexicon` rewritten into the world's words ("climbing" -> rising, "does not move" ->
    motionless)."""
    from openwan.demo.world_lexicon import read
    from openwan.demo.world_spelling import mend
    t = re.sub(r"[a-z]+(?:_[a-z]+)+", lambda m: m.group(0) if m.group(0) in _LOOPING_TOKENS
               else m.group(0).replace("_", " "), text.lower())     # "anim=scale_down", "translate_y": words
    for token, pat in _LOOPING_RE:
        t = pat.sub(f" {token} ", t)
    return read(mend(t, _SPELLING_NAMES))


def _found(patterns: dict, text: str) -> list:
    return [name for name, pat in patterns.items() if pat.search(text)]


def _motions(text: str) -> list:
    """The motions a text names; a size change said to happen in place ("shrinking where it stands") is the size
    change, as the world's growing and shrinking always are, and so is one read beside a bare "up" or "down",
    which is then a verb's particle ("puffed up bigger", "like a balloon being blown up", "takes up the frame"):
    the world has no object that changes its size while it moves;
    where nothing else is read, what :func:`~openwan.demo.world_lexicon.weak_motions` reads; a still camera ("a
    static shot") is no still object where the object does something else."""
    from openwan.demo.world_lexicon import weak_motions, without_camera
    found = _found(_MOTION_RE, text) or weak_motions(text)
    if len(found) > 1 and "still" in found:              # "a static shot of ...": the camera's, if it does more
        found = _found(_MOTION_RE, without_camera(text)) or found
    sizes = [m for m in found if m in ("growing", "shrinking")]
    if len(sizes) == 1 and set(found) - set(sizes) <= {"up", "down"} and \
            _found(_MOTION_RE, re.sub(r"\b(?:up|down)\b", " ", text)) == sizes:
        return sizes                         # a verb's particle ("puffed up bigger", "blown up"), not a direction
    return sizes if len(sizes) == 1 and set(found) - set(sizes) == {"still"} else found


def parse_prompt(text: str) -> Optional[Attributes]:
    """The (color, shape, motion) a single-object prompt asks for, or None when it names no color, shape or
    motion of this world, or more than one of any (two-object prompts: use :func:`parse_objects`)."""
    if not isinstance(text, str):
        return None
    t = _normalize(text)
    colors, shapes, motions = _found(_COLOR_RE, t), _found(_SHAPE_RE, t), _motions(t)
    if len(colors) == 1 and len(shapes) == 1 and len(motions) == 1:
        return Attributes(colors[0], shapes[0], motions[0])
    return None


def _parts(text: str) -> list:
    """A prompt's object parts: normalized, split at "and", commas, semicolons and "while", empty ones dropped."""
    return [p for p in _SPLIT_RE.split(_normalize(text)) if p.strip()]


def parse_objects(text: str) -> Optional[list]:
    """The attributes of every object of a prompt ("a red circle moving up and a blue square shrinking"), in
    order, or None if some part does not parse."""
    if not isinstance(text, str):
        return None
    out = [parse_prompt(p) for p in _parts(text)]
    if not out or any(a is None for a in out):
        return None
    return out


_SIZE_RE = {size: _word_pattern(w.strip() for w in words) for size, words in SIZE_WORDS.items()}


def canonical_prompt(text: str) -> Optional[str]:
    """The prompt in the world's canonical wording (the benchmark's): the one object :func:`parse_prompt` reads
    from the whole prompt, else each object :func:`parse_objects` reads from its parts, as "a [small |big ]{color}
    {shape} {canonical motion}" (a size word kept when its text names exactly one), two objects joined by
    " and "; None when the prompt does not parse whole."""
    one = parse_prompt(text)
    objects = [one] if one is not None else parse_objects(text)
    if objects is None:
        return None
    parts = [_normalize(text)] if one is not None else _parts(text)
    out = []
    for attrs, part in zip(objects, parts):
        sizes = _found(_SIZE_RE, part)
        size = f"{sizes[0]} " if len(sizes) == 1 else ""
        out.append(f"a {size}{attrs.color} {attrs.shape} {CANONICAL_PHRASE[attrs.motion]}")
    return " and ".join(out)


# Common words outside the world, so a warning can name them ("orange" is not a color the demo knows).
OTHER_COLORS = ("orange", "pink", "brown", "black", "gray", "grey", "silver", "beige", "maroon", "lime", "teal",
                "indigo", "rainbow")
OTHER_SHAPES = ("star", "heart", "rectangle", "oval", "ellipse", "hexagon", "pentagon", "octagon", "diamond",
                "cross", "line", "cube", "sphere", "cone", "cylinder", "ring", "arrow", "rhombus", "polygon")
_OTHER_COLOR_RE = _word_pattern(OTHER_COLORS)
_OTHER_SHAPE_RE = _word_pattern(OTHER_SHAPES + tuple(s + "s" for s in OTHER_SHAPES))
_WORLD_SUMMARY = (f"{{}} {'/'.join(COLOR_NAMES)} {'/'.join(SHAPES)} moving left/right/up/down, staying still, "
                  f"growing, shrinking, bouncing left and right or up and down, or circling")


# How many objects the TI2V-style demo's main DiT draws per video. Its recipe trains on two-object scenes, but the
# main DiT was finished on one-object scenes and draws one (`openwan bench demo --prompts two_objects`: 32% of the
# objects get their shape; docs/demo.md). A checkpoint with a two-object expert (two_object_model/: the shipped
# demo) draws two: its pipelines count 2 (``pipe.scene_objects()``), the student (demo-4step) and v1 warn.
V2_SCENE_OBJECTS = 1


def scene_objects(variant=None) -> int:
    """How many objects a demo model draws in one video: :data:`V2_SCENE_OBJECTS` for the TI2V-style model (v2)
    and its distilled student (demo-4step), 1 for the first one (v1). ``variant``: default the embedded default's
    (``openwan.demo.demo_variant()``)."""
    if variant is None:
        from openwan.demo import demo_variant
        variant = demo_variant()
    return V2_SCENE_OBJECTS if variant.dit is not None and variant.dit.model_type == "ti2v" else 1


def _named_parts(t: str) -> list:
    return [p for p in _SPLIT_RE.split(t) if _found(_SHAPE_RE, p) or _OTHER_SHAPE_RE.search(p)]


def object_phrases(prompt: str) -> list:
    """The parts of a prompt (split as :func:`parse_objects` splits) that name a shape, of this world or another,
    in lower case and otherwise as written: one phrase per object ("a red circle moving up and a blue star" -> ["a
    red circle moving up", "a blue star"]; "a red circle bouncing left and right and ..." keeps "bouncing left and
    right" whole)."""
    if not isinstance(prompt, str):
        return []
    kept: list = []

    def hold(m) -> str:                       # a looping motion's phrase (it may hold "and"), held whole
        kept.append(m.group(0))
        return f"\x00{len(kept) - 1}\x00"
    t = prompt.lower()
    for _, pat in _LOOPING_RE:
        t = pat.sub(hold, t)
    parts = [re.sub(r"\x00(\d+)\x00", lambda m: kept[int(m.group(1))], p) for p in _SPLIT_RE.split(t)]
    return [p.strip() for p in parts if _named_parts(_normalize(p))]


def objects_named(prompt: str) -> int:
    """How many objects a prompt names (:func:`object_phrases`)."""
    return len(object_phrases(prompt))


def _one(kind: str, found: list, unknown: list) -> tuple[Optional[str], list]:
    if len(found) == 1:
        return found[0], []
    if len(found) > 1:
        return None, [f"{len(found)} {kind}s for one object ({', '.join(found)})"]
    if unknown:
        return None, [f"unknown {kind} {', '.join(repr(u) for u in unknown)}"]
    return None, [f"no {kind}"]


def _object(t: str) -> tuple[Attributes, list]:
    color, p1 = _one("color", _found(_COLOR_RE, t), _OTHER_COLOR_RE.findall(t))
    shape, p2 = _one("shape", _found(_SHAPE_RE, t), _OTHER_SHAPE_RE.findall(t))
    motion, p3 = _one("motion", _motions(t), [])
    return Attributes(color, shape, motion), p1 + p2 + p3


def understand(prompt: str, objects: Optional[int] = None) -> tuple[Attributes, list]:
    """What the demo model can take from a prompt: ``(Attributes(color, shape, motion), problems)``.

    Fields it cannot tell are None; ``problems`` lists, in words, what lies outside the world ("unknown color
    'orange'", "no motion", "3 objects named; the demo draws at most 2 objects per video"). An empty list means
    the prompt is fully inside the world. ``objects``: how many objects the model draws per video (default
    :func:`scene_objects` of the embedded default). With several objects the attributes are the first one's;
    when the model draws that many, every object is checked ("object 2: unknown shape 'star'")."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    objects = scene_objects() if objects is None else objects
    t = _normalize(prompt)
    named = _named_parts(t)
    problems, others = [], []
    if len(named) > objects:
        most = "one object" if objects == 1 else f"at most {objects} objects"
        problems.append(f"{len(named)} objects named; the demo draws {most} per video")
    elif len(named) > 1:
        others = [f"object {i}: {q}" for i, part in enumerate(named[1:], 2) for q in _object(part)[1]]
    if len(named) > 1:
        t = named[0]
    attrs, own = _object(t)
    if attrs == (None, None, None) and not _OTHER_COLOR_RE.search(t) and not _OTHER_SHAPE_RE.search(t):
        return attrs, ["nothing it knows"]
    return attrs, problems + own + others


def outside_world_warning(prompt: str, objects: Optional[int] = None, look_given: bool = False) -> Optional[str]:
    """One line saying what the demo understood from a prompt that lies outside its world, or None (``objects``:
    as :func:`understand`). ``look_given``: a reference picture shows the object, so a prompt without a color
    or shape ("the object moving to the right") asks nothing outside the world; its motion still counts."""
    objects = scene_objects() if objects is None else objects
    attrs, problems = understand(prompt, objects)
    if look_given:
        problems = [p for p in problems if p not in ("no color", "no shape", "nothing it knows")]
        if attrs.motion is None and "no motion" not in problems:
            problems.append("no motion")
    if not problems:
        return None
    got = ", ".join(f"{k} {v}" for k, v in attrs._asdict().items() if v is not None) or "nothing"
    return (f"demo model: {prompt!r} is outside its world: {'; '.join(problems)} (understood: {got}); it draws "
            f"{_WORLD_SUMMARY.format(_how_many(objects))}")


def _how_many(objects: int) -> str:
    if objects == 1:
        return "one"
    return f"one {'or two' if objects == 2 else f'to {objects}'} objects, each a"


_warned: set = set()


def warn_outside_world(prompt: str, objects: Optional[int] = None, look_given: bool = False) -> Optional[str]:
    """Log :func:`outside_world_warning` once per prompt (logger ``openwan.demo``); returns the line or None."""
    objects = scene_objects() if objects is None else objects
    line = outside_world_warning(prompt, objects, look_given)
    if line is None or (prompt, objects, look_given) in _warned:
        return None
    if len(_warned) > 10_000:     # a long-running server: stay bounded
        _warned.clear()
    _warned.add((prompt, objects, look_given))
    import logging
    logging.getLogger("openwan.demo").warning(line)
    return line
