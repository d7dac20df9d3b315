"""The demo world's learned prompt reader (openwan.demo.world_reader): the prompt extension's fallback where the
rules leave an attribute unread."""
import numpy as np
import pytest

from openwan.demo import world, world_reader
from openwan.prompt_extend import extend


def test_the_reader_fills_what_the_rules_leave_unread():
    # "dosnt" is no word the rules know (two letters from "doesnt"): the motion unread by them
    assert extend("a cyan circle that dosnt move at all", "world", reader=False) == "a cyan circle"
    assert extend("a cyan circle that dosnt move at all", "world") == "a cyan circle staying still"


def test_the_reader_says_when_a_prompt_names_no_color_or_shape():
    assert world_reader.guess("the object moving to the right", "color")[0] is None
    assert world_reader.guess("the object moving to the right", "shape")[0] is None
    assert extend("the object moving to the right", "world") == "the object moving to the right"


def test_the_reader_never_overrides_a_whole_reading_nor_a_word_outside_the_world():
    rng = np.random.default_rng(5)
    for color in world.COLOR_NAMES:
        for motion in world.MOTIONS:
            caption = world.make_caption([world.Attributes(color, "square", motion)], rng, wide=True)
            assert extend(caption, "world") == extend(caption, "world", reader=False), caption
    assert extend("a teal square moving left", "world").startswith("a teal square")      # named outside: kept
    assert extend("a dog barking", "world") == "a dog barking"                            # nothing of the world


def test_the_reader_is_sure_only_where_the_words_say_so():
    probs = world_reader.probabilities("a red square moving to the left")
    assert set(probs) == set(world_reader.ATTRIBUTES)
    assert all(abs(sum(p.values()) - 1.0) < 1e-9 for p in probs.values())
    assert max(probs["color"], key=probs["color"].get) == "red" and probs["color"]["red"] > 0.9
    assert max(probs["motion"], key=probs["motion"].get) == "left"
    for a in world_reader.ATTRIBUTES:                                          # no words: nothing it is sure of
        value, p = world_reader.guess("", a)
        assert value is None or p < world_reader.MIN_PROBABILITY


def test_the_shipped_reader_reads_its_training_sets():
    from openwan.demo import bench_sets
    cases = [c for n in bench_sets.PARAPHRASE_SETS for c in bench_sets.cases([n])]
    right = sum(world_reader.guess(c.prompt, a)[0] == getattr(c.objects[0], a)
                for c in cases for a in world_reader.ATTRIBUTES)
    assert right / (3 * len(cases)) >= 0.9


@pytest.mark.slow
def test_held_out_sets_are_read_at_least_as_well_with_the_reader():
    from openwan.demo.world_reader_build import holdout_report
    counts = holdout_report(["paraphrase24"])["counts"]
    assert counts["rules + reader"] >= counts["rules"] and counts["prompts"] == 21
