"""Prompt extension (openwan.prompt_extend): the embedded demo's "world" method rewrites a prompt into the world's
canonical caption with the world's own parser; recorded, replayed, refused where a model has no extender."""
import json

import numpy as np
import pytest

from openwan import prompt_extend
from openwan.demo import world
from openwan.demo.world_captions import canonical_prompt, make_caption
from openwan.pipelines import load_pipeline
from openwan.testing import make_tiny_checkpoint, make_tiny_demo_v2_checkpoint

KW = dict(sample_steps=2, seed=3, output_type="latent")


@pytest.mark.parametrize("text, want", [
    ("the blue box slides over toward the right", "a blue square moving to the right"),
    ("look: a violet triangle, falling", "a purple triangle moving down"),
    ("a small yellow ball going round and round", "a small yellow circle circling"),
    ("a large green square that grows", "a big green square growing"),
    ("a red dot moving up and a white block shrinking", "a red circle moving up and a white square shrinking"),
    ("a turquoise disc bouncing left and right", "a cyan circle bouncing left and right"),
])
def test_world_prompts_in_other_words_become_the_canonical_caption(text, want):
    assert canonical_prompt(text) == want
    assert canonical_prompt(want) == want                                # canonical stays canonical


@pytest.mark.parametrize("text", ["a red circle", "an orange star moving left", "a sunset over the sea",
                                  "a red circle and a blue square"])
def test_prompts_it_cannot_read_whole_are_none(text):
    assert canonical_prompt(text) is None


def test_every_training_caption_extends_to_its_clip_and_is_a_fixed_point():
    """Captions the world writes (both styles, one and two objects) extend to the canonical caption of their own
    objects, and extending that again changes nothing."""
    for i in range(60):
        rng = np.random.default_rng(i)
        clip = world.sample_clip(rng, n_objects=1 + i % 2)
        caption = make_caption(clip.objects, rng, wide=bool(i % 3 == 0))
        out = canonical_prompt(caption)
        assert out is not None, caption
        assert world.parse_objects(out) == [world.Attributes(o.color, o.shape, o.motion) for o in clip.objects]
        assert canonical_prompt(out) == out


def test_the_benchmarks_template_prompts_are_unchanged():
    """Every prompt of the demo benchmark's single and two-object sets is already canonical: the extension leaves
    them (and so the template benchmark's numbers) as they are."""
    from openwan.demo.bench_sets import cases
    for case in cases(["single", "two_objects"]):
        assert prompt_extend.extend(case.prompt, "world") is case.prompt


def test_schedules_extend_part_by_part():
    assert prompt_extend.extend("a red dot rising | a blue box falling", "world") == \
        "a red circle moving up | a blue square moving down"
    same = "a red circle moving up |  a sunset"
    assert prompt_extend.extend(same, "world") is same                   # nothing read differently: as given
    head, tail = prompt_extend.extend("a red dot rising | ", "world").split("|")
    assert head.strip() == "a red circle moving up" and tail.strip() == ""   # an empty part stays empty (refused)
    assert prompt_extend.extend("a red dot rising", None) == "a red dot rising"


def test_resolve_names_the_fix():
    assert prompt_extend.resolve(None, "world", "demo", True) == "world"
    assert prompt_extend.resolve(None, None, "t2v-1.3B", False) is None
    for off in ("off", "none", False):
        assert prompt_extend.resolve(off, "world", "demo", True) is None
    with pytest.raises(ValueError, match="must be one of world, off, none"):
        prompt_extend.resolve("qwen", None, "demo", True)
    with pytest.raises(ValueError, match="t2v-1.3B has no prompt extender"):
        prompt_extend.resolve("world", None, "t2v-1.3B", False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder, variant = make_tiny_demo_v2_checkpoint(tmp_path_factory.mktemp("pe") / "demo", size=32, frame_num=5)
    return folder, variant


def test_the_demo_encodes_the_extended_prompt_and_records_it(demo):
    folder, variant = demo
    pipe = load_pipeline(folder, variant=variant, progress=False)
    assert variant.sample.prompt_extend == "world"
    words = "the blue box slides over toward the right"
    out = pipe(words, **KW)
    assert out.settings["prompt"] == "a blue square moving to the right"
    assert out.settings["prompt_extend"] == {"method": "world", "original": words}
    direct = pipe("a blue square moving to the right", **KW)
    assert (out.latents == direct.latents).all() and "prompt_extend" not in direct.settings
    off = pipe(words, prompt_extend="off", **KW)
    assert off.settings["prompt"] == words and off.settings["prompt_extend"] == "off"
    assert not (off.latents == out.latents).all()
    sched = pipe("a red dot rising | a blue box falling", frame_num=17, long_method="windows", **KW)
    assert sched.settings["long_video"]["prompts"][0] == "a red circle moving up"


def test_a_model_without_an_extender_refuses_it(tmp_path):
    pipe = load_pipeline(make_tiny_checkpoint(tmp_path / "t2v", "tiny-t2v"), variant="tiny-t2v", progress=False)
    with pytest.raises(ValueError, match="no prompt extender"):
        pipe("a red dot rising", prompt_extend="world", **KW)
    assert "prompt_extend" not in pipe("a red dot rising", **KW).settings


def test_the_cli_records_and_replays_it_off(demo, tmp_path, monkeypatch, capsys):
    from openwan.cli import main
    from openwan.testing import use_demo
    from openwan.video import read_video
    use_demo(monkeypatch, *demo)
    monkeypatch.chdir(tmp_path)
    common = ["--sample_steps", "2", "--base_seed", "3", "--quiet"]
    words = "the blue box slides over toward the right"
    assert main(["generate", words, *common, "--prompt_extend", "off", "-o", "a.mp4"]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["openwan"]["prompt_extend"] == "off"
    assert main(["generate", "--from", "a.json", "-o", "b.mp4", "--quiet"]) == 0
    b = json.loads((tmp_path / "b.json").read_text())["openwan"]
    assert b["prompt"] == words and b["prompt_extend"] == "off"
    assert (read_video(tmp_path / "a.mp4")[0] == read_video(tmp_path / "b.mp4")[0]).all()
    old = json.loads((tmp_path / "a.json").read_text())                   # a record from before the extension:
    del old["openwan"]["prompt_extend"]                                   # no key, the prompt as the model read it
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert main(["generate", "--from", "old.json", "-o", "d.mp4", "--quiet"]) == 0
    assert json.loads((tmp_path / "d.json").read_text())["openwan"]["prompt"] == words
    assert (read_video(tmp_path / "a.mp4")[0] == read_video(tmp_path / "d.mp4")[0]).all()
    capsys.readouterr()
    assert main(["generate", words, *common, "-o", "c.mp4"]) == 0
    assert "prompt extended (world): 'a blue square moving to the right'" in capsys.readouterr().out
    c = json.loads((tmp_path / "c.json").read_text())["openwan"]
    assert c["prompt"] == "a blue square moving to the right" and c["prompt_extend"]["original"] == words


def test_the_server_takes_it_as_a_string(demo):
    from openwan.serve.params import RequestError, check_request, parameter_kinds
    pipe = load_pipeline(demo[0], variant=demo[1], progress=False)
    kinds = parameter_kinds(pipe)
    assert kinds["prompt_extend"] == "str"
    assert check_request({"prompt": "p", "prompt_extend": "off"}, kinds, fps=16)["prompt_extend"] == "off"
    with pytest.raises(RequestError, match="prompt_extend"):
        check_request({"prompt": "p", "prompt_extend": 3}, kinds, fps=16)


def test_text_to_image_extends_once_and_keeps_off(tmp_path):
    """t2i's prepare goes through t2v's: the outer call's choice holds (off stays off), extended once."""
    from openwan.configs import get_variant
    base = get_variant("tiny-t2v")
    variant = base.replace(name="demo-tiny", sample=base.sample.replace(prompt_extend="world"))
    pipe = load_pipeline(make_tiny_checkpoint(tmp_path / "t2v", "tiny-t2v"), task="t2i", variant=variant,
                         progress=False)
    assert pipe.task == "t2i"
    words = "the blue box slides over toward the right"
    assert pipe(words, **KW).settings["prompt"] == "a blue square moving to the right"
    off = pipe(words, prompt_extend="off", **KW).settings
    assert off["prompt"] == words and off["prompt_extend"] == "off"
