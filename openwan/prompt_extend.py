"""Prompt extension: a user's prompt rewritten into the wording the model was trained on, before it is encoded.

The reference ``generate.py`` does this with an LLM (``--use_prompt_extend``: Qwen rewrites the prompt in the
style of Wan's training captions), because a model follows best the kind of sentence it was trained on. The
embedded demo's captions come from the demo world's templates, and its text encoder is a frozen random umT5
(openwan.configs.DEMO_TEXT_ENCODER): a word no training caption uses means nothing to it. Its extender is the
world's own reader instead of an LLM:

    world   openwan.demo.world_captions.canonical_prompt: the objects a prompt names (colour, shape, motion, a
            size word), read in any wording the world's parser knows ("a square, red in colour, heading off
            toward the left edge"), written in the world's canonical caption ("a red square moving to the left";
            two objects joined by "and"). A prompt of one object whose motion it reads but whose color or shape
            is a word outside the world keeps that word in the canonical caption ("a golden ball ping-ponging
            between the walls" -> "a golden circle bouncing left and right"; the warning names the word), and
            one that names no color keeps none ("a plum-coloured square heading right" -> "a square moving to
            the right"); one whose color and shape it reads but not one motion is given those two ("a red
            circle"); where its rules leave a color, shape or motion unread (none, or several at odds), the
            world's learned reader (openwan.demo.world_reader, trained on the world's captions and the
            benchmark's paraphrase sets) fills it when it is at least half sure; any other prompt it cannot
            read whole is left as it is. Each part of a prompt
            schedule ("A | B") is extended alone. With a picture (a reference image, or the first frame) the
            extender also looks at it, as the reference's extender does with a vision-language model for
            image-to-video: a prompt that says what the object does but not what it looks like ("the object
            moving to the right") gets the color and shape of the object in the picture
            (openwan.demo.detect), "a red square moving to the right".

A call takes ``prompt_extend=`` ("world", or "off"; default: the variant's ``SampleDefaults.prompt_extend``, the
demo's "world"). The settings hold the prompt the model was given as ``prompt`` and, as ``prompt_extend``,
``{"method": ..., "original": ...}`` when the extension changed it, or "off" when a call turned the model's
default off; ``--from`` replays either (extending an extended prompt again changes nothing). An LLM
extender for the published models is not implemented: write the prompt in full.
"""
from __future__ import annotations

import re
from typing import Optional

METHODS = ("world",)
OFF = ("off", "none")


def resolve(value, default: Optional[str], model: str, demo: bool) -> Optional[str]:
    """The extension method of a call: ``value`` (None: ``default``; "off" / "none" / False: none), checked
    against what the model has (``demo``: whether it is the embedded demo, whose world the "world" method
    reads). Errors name the fix."""
    if value is None:
        value = default
    if value is None or value is False or (isinstance(value, str) and value.lower() in OFF):
        return None
    if not isinstance(value, str) or value not in METHODS:
        raise ValueError(f"prompt_extend must be one of {', '.join(METHODS + OFF)} (or None: the model's default), "
                         f"got {value!r}")
    if value == "world" and not demo:
        raise ValueError(f"prompt_extend='world' rewrites prompts of the embedded demo's world; {model} has no "
                         f"prompt extender (the reference's LLM extension is not implemented): write the prompt in "
                         f"full and leave prompt_extend unset")
    return value


def extend(prompt: str, method: Optional[str], look=None, reader=None) -> str:
    """``prompt`` extended by ``method`` (None: unchanged); each part of a schedule ("A | B") alone. ``look``:
    (color, shape) of the object in the call's picture (:func:`picture_look`), for a part that names neither or
    one of them and nothing outside the world; or a function that returns it, called at most once and only when
    a part needs it (reading a picture is a detector pass). ``reader``: the learned reader's model for what the
    rules leave unread (None: the shipped one; False: none)."""
    if method is None or not isinstance(prompt, str):
        return prompt
    import functools
    read = functools.cache(look) if callable(look) else (lambda: look)
    parts = prompt.split("|")
    out = [_extend_part(p, read, reader) or p.strip() if p.strip() else p for p in parts]
    if all(o == p.strip() for o, p in zip(out, parts)):
        return prompt            # nothing read differently: the prompt as given, spacing and all
    return " | ".join(out)


def _extend_part(part: str, read_look, reader=None) -> Optional[str]:
    from openwan.demo.world_captions import CANONICAL_PHRASE, canonical_prompt, understand
    out = canonical_prompt(part)
    if out is not None:
        return out
    attrs, problems = understand(part, 1)
    learn = reader is not False and not any("objects named" in p for p in problems)
    if learn:                    # the motion first: a picture never says it
        import functools

        from openwan.demo import world_reader
        guesses = functools.cache(lambda: world_reader.guesses(part, reader))     # one reading of the part
        attrs, problems = _learned(attrs, problems, guesses, ("motion",))
    if attrs.motion is not None and problems and all(p in ("no color", "no shape") for p in problems):
        look = read_look()       # a color or shape named nowhere (nor outside the world): the picture's, before
        if look is not None:     # any guess
            attrs, problems = attrs._replace(color=attrs.color or look[0], shape=attrs.shape or look[1]), []
    if learn:
        attrs, problems = _learned(attrs, problems, guesses, ("color", "shape"))
    if attrs.motion is None:
        # its color and shape read, its motion not (none, or several): those two in the world's words, so the
        # model gets at least them right (the warning says what it did not read)
        several = any("objects named" in p for p in problems)
        return f"a {attrs.color} {attrs.shape}" if None not in attrs[:2] and not several else None
    words = {}
    for k, kind in enumerate(("color", "shape")):
        if attrs[k] is not None:
            continue
        unknown = [p for p in problems if p.startswith(f"unknown {kind} ")]
        if len(unknown) == 1 and unknown[0].count("'") == 2:     # one word outside the world: kept as written
            words[kind] = unknown[0].split("'")[1]
        elif f"no {kind}" not in problems:
            return None
    if any(not p.startswith(("unknown color ", "unknown shape ", "no color", "no shape")) for p in problems):
        return None
    shape = attrs.shape or words.get("shape")
    if shape is None:
        return None
    color = attrs.color or words.get("color")          # no color named nor seen: none (the model picks one)
    thing = f"{color} {shape}" if color else shape
    return f"{'an' if thing[0] in 'aeiou' else 'a'} {thing} {CANONICAL_PHRASE[attrs.motion]}"


def _learned(attrs, problems: list, guesses, kinds) -> tuple:
    """``attrs`` with each field of ``kinds`` the rules left unread ("no motion", "2 motions for one object")
    filled by the learned reader (``guesses()``: openwan.demo.world_reader.guesses of the part) where it is at
    least ``MIN_PROBABILITY`` sure, and its problem dropped; a color or shape named outside the world ("unknown
    color 'teal'") stays the rules' word."""
    from openwan.demo import world_reader
    fields = attrs._asdict()
    for kind in kinds:
        unread = [p for p in problems if p == f"no {kind}" or re.match(rf"\d+ {kind}s for one object ", p)]
        if fields[kind] is not None or not unread:
            continue
        value, probability = guesses().get(kind, (None, 0.0))
        if value is not None and probability >= world_reader.MIN_PROBABILITY:
            fields[kind] = value
            problems = [p for p in problems if p not in unread]
    return type(attrs)(**fields), problems


def picture_look(picture) -> Optional[tuple]:
    """(color, shape) of the one object of the demo world in ``picture`` (uint8 [H, W, 3]), read by the world's
    detector (openwan.demo.detect, on the picture held still for 5 frames); None when it finds none."""
    import numpy as np

    from openwan.demo import detect
    pic = np.asarray(picture)
    if pic.dtype != np.uint8 or pic.ndim != 3 or pic.shape[-1] != 3:
        return None
    det = detect.detect(np.repeat(pic[None], 5, axis=0))
    if not det.get("found") or det.get("color") is None or det.get("shape") is None:
        return None
    return det["color"], det["shape"]
