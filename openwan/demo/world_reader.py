"""A learned reader of the demo world's prompts: the prompt extension's fallback where the rules
(:mod:`openwan.demo.world_lexicon`) leave an attribute unread.

The rules read what they were written for and nothing else; each new set of prompts written by others brings
wording none of them has met ("scale-out animation", "from YOUR left ... to YOUR right"). This reader guesses from
the words as a whole: one multinomial logistic regression per attribute (color, shape, motion) over the prompt's
words and word pairs, as written and as the rules rewrite them (``n:`` features: "climbing" is "rising" there),
and the 3- and 4-letter pieces of its words (``c:``, for misspellings the rules do not mend: "sian", "dosnt"),
trained by :mod:`openwan.demo.world_reader_build` on the world's own captions, captions that leave an attribute out
(its class :data:`NONE`: the reader says so rather than guess the common case), and the benchmark's paraphrase
sets (prompts that people, imagined by helpers, wrote to ask for the world's videos). Its weights ship in
``assets/world_reader.json`` (read with plain Python).

It is used only where the rules fail: :func:`guess` gives an attribute's class and probability, and
:mod:`openwan.prompt_extend` takes it for an attribute the rules left unread (none, or several at odds) when the
probability is at least :data:`MIN_PROBABILITY`; a color or shape the prompt names outside the world ("teal",
"cube") stays as written.
"""
from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from typing import Optional

READER_PATH = Path(__file__).parent / "assets" / "world_reader.json"
ATTRIBUTES = ("color", "shape", "motion")
MIN_PROBABILITY = 0.5
NONE = "none"           # the class of an attribute the prompt does not name
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+(?:\.\d+)?|->|→")


def features(text: str) -> list:
    """The words and word pairs of ``text`` as written (lower case) and as the rules rewrite them (``n:``), and the
    3- and 4-letter pieces of its words as written, ends marked (``c:<sq``)."""
    from openwan.demo.world_captions import _normalize
    out = []
    for prefix, t in (("", text.lower()), ("n:", _normalize(text))):
        words = _WORD.findall(t)
        out += [prefix + w for w in words] + [f"{prefix}{a}_{b}" for a, b in zip(words, words[1:])]
    out += [f"c:{g}" for w in _WORD.findall(text.lower()) for n in (3, 4) for g in
            (f"<{w}>"[i:i + n] for i in range(len(w) + 3 - n))]
    return out


def model_from(data: dict) -> dict:
    """The model :func:`probabilities` reads, from the weights' data (``{"features": [...], "heads": {...}}``, as
    the builder writes them)."""
    return {"index": {f: i for i, f in enumerate(data["features"])}, "heads": data["heads"]}


@functools.lru_cache(maxsize=1)
def _model() -> Optional[dict]:
    if not READER_PATH.exists():
        return None
    return model_from(json.loads(READER_PATH.read_text()))


def probabilities(text: str, model: Optional[dict] = None) -> dict:
    """{attribute: {class: probability}} for ``text``; {} where no reader ships."""
    model = model or _model()
    if model is None:
        return {}
    rows = [model["index"][f] for f in features(text) if f in model["index"]]
    out = {}
    for attr, head in model["heads"].items():
        logits = list(head["bias"])
        for r in rows:
            for k, w in enumerate(head["weights"][r]):
                logits[k] += w
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        total = sum(exps)
        out[attr] = {c: e / total for c, e in zip(head["classes"], exps)}
    return out


def guesses(text: str, model: Optional[dict] = None) -> dict:
    """{attribute: (the reader's class, its probability)} for ``text``, the class None where its best guess is
    that the text does not name the attribute (:data:`NONE`); {} where no reader ships."""
    out = {}
    for attr, probs in probabilities(text, model).items():
        best = max(probs, key=probs.get)
        out[attr] = (None if best == NONE else best), probs[best]
    return out


def guess(text: str, attribute: str, model: Optional[dict] = None) -> tuple[Optional[str], float]:
    """:func:`guesses` of one attribute; (None, 0.0) where no reader ships."""
    return guesses(text, model).get(attribute, (None, 0.0))
