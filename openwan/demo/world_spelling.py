"""Slips of informal writing that the demo world's prompt reader (:mod:`openwan.demo.world_lexicon`) forgives
before it reads a prompt:

* a word of the world misspelt by one letter (one changed, added or dropped, or two neighbours swapped: "purpel",
  "yelow", "sqaure", "biger", "bonces"), where the word is five letters or more and the misspelling is no
  English word (``near_words`` of ``assets/world_lexicon.json``: WordNet's words and their inflections one letter
  from such a word, "fellow", "greet", "raising", built by :mod:`openwan.demo.world_lexicon_build`) and is one
  letter from that word alone; a color or shape name only where it stands next to the other attribute (a color
  right before a shape's noun, a shape right after a color, either of them misspelt too);
* a verb with its final g dropped ("bouncin", "movin'", "gettin").
"""
from __future__ import annotations

import functools
import string

MIN_LENGTH = 5          # the shortest world word read through a misspelling
_STATE_VERBS = ("becoming", "turning", "getting", "going")      # world_lexicon's change of state ("getting huge")


def one_edit(a: str, b: str) -> bool:
    """Whether ``a`` is ``b`` with one letter changed, added, dropped, or two neighbours swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                  and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def variants(word: str) -> set:
    """Every string one edit from ``word`` (for the builder: which of them are English words)."""
    letters = string.ascii_lowercase
    cuts = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    return ({a + b[1:] for a, b in cuts if b} | {a + b[1] + b[0] + b[2:] for a, b in cuts if len(b) > 1}
            | {a + c + b[1:] for a, b in cuts if b for c in letters} | {a + c + b for a, b in cuts for c in letters}
            ) - {word}


def targets(lex: dict, names: tuple) -> dict:
    """The words read through a misspelling, each with its kind ("color", "shape", "motion"): the world's own
    color, shape and motion words (``names``: the words of each, as world_captions passes them) and the
    vocabulary's bounce words, of :data:`MIN_LENGTH` letters or more."""
    colors, shapes, motions = names
    out = {w: "motion" for w in motions}
    out.update({w: "motion" for w in lex["motions"].get("bounce", ())})
    out.update({w: "shape" for w in shapes})
    out.update({w: "color" for w in colors})
    return {w: kind for w, kind in out.items() if len(w) >= MIN_LENGTH and w.isalpha()}


@functools.lru_cache(maxsize=2)
def _words(names: tuple) -> tuple:
    from openwan.demo.world_lexicon import lexicon
    lex = lexicon()
    world_colors, world_shapes, _ = names
    colors = set(world_colors) | {
        w for kind in ("colors", "colors_before_shape") for words in lex[kind].values() for w in words}
    nouns = set(lex["subject_nouns"]) | set(world_shapes)
    verbs = {w for words in (*lex["motions"].values(), lex["move"], _STATE_VERBS) for w in words if " " not in w}
    known = colors | nouns | verbs | set(lex.get("near_words", ()))
    return frozenset(colors), frozenset(nouns), frozenset(verbs), targets(lex, names), frozenset(known)


def _fix(word: str, tg: dict, known: frozenset):
    """The one target ``word`` misspells, or None."""
    if len(word) < MIN_LENGTH - 1 or not word.isalpha() or word in known or word in tg:
        return None
    fixes = [x for x in tg if one_edit(word, x)]
    return fixes[0] if len(fixes) == 1 else None


def mend(t: str, names: tuple) -> str:
    """``t`` (lower case) with the slips of the module docstring mended; ``names``: the world's (color words,
    shape words, motion words), each a tuple (world_captions' own, passed in: the world's words are its)."""
    colors, nouns, verbs, tg, known = _words(names)
    words = t.split(" ")
    bare = [w.strip(",.;:!?()\"") for w in words]
    fixes = []
    for i, w in enumerate(bare):
        if w.endswith(("in", "in'")) and w.rstrip("'") + "g" in verbs:
            words[i] = words[i].replace(w, w.rstrip("'") + "g")
            bare[i] = ""
        fixes.append(_fix(bare[i], tg, known) if bare[i] else None)
    kinds = [tg[f] if f else None for f in fixes]
    for i, fix in enumerate(fixes):
        if fix is None:
            continue
        after = bare[i + 1] if i + 1 < len(bare) else ""
        before = bare[i - 1] if i > 0 else ""
        if (kinds[i] == "motion"
                or kinds[i] == "color" and (after in nouns or i + 1 < len(kinds) and kinds[i + 1] == "shape")
                or kinds[i] == "shape" and (before in colors or i > 0 and kinds[i - 1] == "color")):
            words[i] = words[i].replace(bare[i], fix)
    return " ".join(words)
