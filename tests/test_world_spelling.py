"""Slips of informal writing the demo world's prompt reader mends (openwan.demo.world_spelling)."""
import pytest

from openwan.demo import world
from openwan.demo import world_spelling as S
from openwan.demo.world_captions import parse_prompt, understand


def test_one_edit_is_one_letter_changed_added_dropped_or_swapped():
    assert S.one_edit("purpel", "purple") and S.one_edit("yelow", "yellow") and S.one_edit("biger", "bigger")
    assert S.one_edit("sqaure", "square") and S.one_edit("squares", "square") and S.one_edit("rigth", "right")
    assert not S.one_edit("purple", "purple") and not S.one_edit("prupel", "purple") and not S.one_edit("yel", "yellow")
    word = "circle"
    vs = S.variants(word)
    assert word not in vs and all(S.one_edit(v, word) for v in vs)
    assert {"cirle", "circel", "cirlce", "circlee", "xircle"} <= vs


@pytest.mark.parametrize("prompt, attrs", [
    ("purpel triangle heading west", ("purple", "triangle", "left")),         # a color next to a shape
    ("yelow sqaure heading west", ("yellow", "square", "left")),              # ... both misspelt
    ("a red sqaure heading west", ("red", "square", "left")),
    ("a red triangle gettin biger n biger, doesnt go anywhere", ("red", "triangle", "growing")),   # a motion word
    ("a red triangle movin rigth", ("red", "triangle", "right")),
    ("a red circle bouncin off the left and right walls", ("red", "circle", "bounce_lr")),        # a dropped g
])
def test_misspellings_are_read_as_the_world_words(prompt, attrs):
    assert parse_prompt(prompt) == world.Attributes(*attrs)


def test_english_words_and_lone_names_are_not_mended():
    assert understand("a fellow square heading west")[0].color is None        # an English word, not "yellow"
    assert understand("the greet circle heading west")[0].color is None
    assert understand("a purpel thing heading west")[0].color is None         # no shape after it
    assert understand("a cirlce heading west")[0].shape is None               # no color before it
    assert understand("a red circle, lager in hand, heading west")[0].motion == "left"   # "lager" is no "larger"
    from openwan.demo.world_captions import _SPELLING_NAMES
    known = S._words(_SPELLING_NAMES)[-1]
    assert "fellow" in known and "lager" in known
