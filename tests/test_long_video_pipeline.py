"""Long video through the pipeline: past the native length the DiT sees one window at a time."""
import json

import warnings

import pytest
import torch

from openwan.pipelines import load_pipeline

FAST = dict(sample_steps=4, seed=5, output_type="latent")


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("demo", progress=False)


class _Handles(list):
    def remove(self):
        for h in self:
            h.remove()


def _frames_seen(pipe):
    """The input shapes of every DiT forward: the main DiT's and the continuation expert's (the shipped demo has
    one: it runs the later windows of ``continue``)."""
    seen = []
    handle = _Handles(m.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
                      for m in (pipe.dit, pipe.c.dit_continue) if m is not None)
    return seen, handle


def test_native_length_is_todays_single_pass(pipe):
    a = pipe("a red circle moving to the right", **FAST)
    with pytest.warns(UserWarning, match=r"long_method, long_overlap had no effect: 33 frames fit the model.s native"):
        b = pipe("a red circle moving to the right", long_method="continue", long_overlap=2, **FAST)
    assert torch.equal(a.latents, b.latents) and "long_video" not in b.settings
    with warnings.catch_warnings():                     # options turned off, or none: nothing to say
        warnings.simplefilter("error")
        c = pipe("a red circle moving to the right", long_method="none", long_refine=0, long_expert=False, **FAST)
    assert torch.equal(a.latents, c.latents)


@pytest.mark.parametrize("method", ["windows", "continue"])
def test_past_the_native_length_the_dit_sees_windows(pipe, method):
    seen, handle = _frames_seen(pipe)
    try:
        out = pipe("a red circle moving to the right", frame_num=97, long_method=method, long_overlap=1,
                   **({"long_refine": 0} if method == "continue" else {}), **FAST)
    finally:
        handle.remove()
    assert out.latents.shape[1] == 25                                  # (97 - 1) / 4 + 1 latent frames
    assert {s[2] for s in seen} == {9}                                 # the demo's native 33 frames = 9
    expert = {"expert": True} if method == "continue" and pipe.c.dit_continue is not None else {}
    assert out.settings["long_video"] == {"method": method, "latent_frames": 25, "window": 9, "overlap": 1,
                                          "windows": 3, **expert}
    assert out.settings["stats"]["dit_forwards"] == len(seen) == 3 * 4  # 3 windows x 4 steps, batched CFG
    assert torch.isfinite(out.latents).all()


def test_default_overlap_is_half_the_window(pipe):
    from openwan.long_video import default_overlap
    assert (default_overlap(5), default_overlap(9), default_overlap(21), default_overlap(1)) == (3, 5, 11, 1)
    out = pipe("a red circle moving to the right", frame_num=97, long_method="windows", **FAST)   # demo: continue
    assert out.settings["long_video"] == {"method": "windows", "latent_frames": 25, "window": 9, "overlap": 5,
                                          "windows": 5}


def test_continue_keeps_each_windows_shared_frames_exactly(pipe, monkeypatch):
    results = []
    run = type(pipe).run

    def spy(self, job, *a, **kw):
        out = run(self, job, *a, **kw)
        if job.long is None:
            results.append(out.clone())
        return out
    monkeypatch.setattr(type(pipe), "run", spy)
    out = pipe("a red circle moving to the right", frame_num=97, long_method="continue", long_overlap=1,
               long_refine=0, **FAST).latents
    spans = ((0, 9), (8, 17), (16, 25))
    assert len(results) == 3
    for (s, e), r in zip(spans, results):
        assert torch.equal(out[:, s:e], r)
    # the frame window 1 shares with window 0 ends as window 0 made it: re-imposed at sigma 0 = the known latent
    assert torch.equal(results[1][:, 0], results[0][:, 8]) and torch.equal(results[2][:, 0], results[1][:, 8])


def test_prompt_schedule_spreads_over_windows(pipe):
    out = pipe("a red circle moving to the right | a blue square moving up", frame_num=97, long_overlap=1, **FAST)
    assert out.settings["long_video"]["prompts"] == ["a red circle moving to the right"] * 2 + \
        ["a blue square moving up"]
    with pytest.raises(ValueError, match=r"prompt schedule .* needs a video longer.*without '\|'"):
        pipe("a red circle | a blue square", **FAST)


def test_a_prompt_schedule_as_a_list_is_the_same_call(pipe):
    """The API's list form of a schedule is its "A | B" text: the same video, recorded as that text."""
    parts = ["a red circle moving to the right", "a blue square moving up"]
    listed = pipe(parts, frame_num=97, long_overlap=1, **FAST)
    text = pipe(" | ".join(parts), frame_num=97, long_overlap=1, **FAST)
    assert torch.equal(listed.latents, text.latents) and listed.settings["prompt"] == " | ".join(parts)
    for bad, match in (([], "empty list"), ([parts[0], " "], "part 1 is ' '"), (["a | b"], "holds a '\\|'"),
                       ([parts[0], 3], "part 1 is 3")):
        with pytest.raises(ValueError, match=match):
            pipe(bad, frame_num=97, **FAST)


def test_a_list_of_prompts_at_the_native_length_says_it_is_no_batch(pipe):
    """diffusers reads a list of prompts as a batch; openwan as a schedule over a long video's stretches. A list of
    several at the native length (no schedule possible) is refused with what to do; a list of one is that prompt."""
    parts = ["a red circle moving to the right", "a blue square moving up"]
    with pytest.raises(ValueError, match=r"a prompt schedule \('\|', or a list of prompts: .* A list of prompts is no "
                                         r"batch \(as it is in diffusers\): for several videos, call once per prompt"):
        pipe(parts, **FAST)
    one = pipe(parts[:1], frame_num=5, **FAST)
    assert torch.equal(one.latents, pipe(parts[0], frame_num=5, **FAST).latents) and one.settings["prompt"] == parts[0]


def test_an_empty_schedule_segment_is_the_error_alone(pipe, caplog, monkeypatch):
    """An empty part of a schedule is named by the error, not also warned about as a prompt outside the world."""
    from openwan.demo import world_captions
    monkeypatch.setattr(world_captions, "_warned", set())        # each warning is logged once a process
    with caplog.at_level("WARNING", logger="openwan.demo"), pytest.raises(ValueError, match="empty prompt segment"):
        pipe("a red circle moving to the right |  ", frame_num=97, **FAST)
    assert not [r for r in caplog.records if "outside its world" in r.getMessage()]


@pytest.mark.parametrize("kw,match", [(dict(long_overlap=9), "overlap \\(9\\) must be smaller than the window"),
                                      (dict(long_method="zigzag"), "unknown long-video method 'zigzag'"),
                                      (dict(long_overlap=-1), "long_overlap must be at least 1 latent frame, got -1"),
                                      (dict(long_overlap=0), "long_overlap must be at least 1 latent frame, got 0"),
                                      (dict(long_overlap=0, long_method="windows"), "at least 1 latent frame, got 0"),
                                      (dict(long_overlap=1.5), "overlap must be an integer")])
def test_bad_long_video_settings_are_clear_errors(pipe, kw, match):
    with pytest.raises(ValueError, match=match):
        pipe("a red circle moving to the right", frame_num=97, **dict(FAST, **kw))


def test_cli_long_video_and_from(tmp_path):
    from openwan.cli import main
    out = tmp_path / "long.mp4"
    assert main(["generate", "a red circle moving to the right | a red circle moving up", "--frame_num", "65",
                 "--sample_steps", "3", "--seed", "1", "--long_method", "continue", "--long_overlap", "1", "-o", str(out),
                 "--quiet"]) == 0
    rec = json.loads(out.with_suffix(".json").read_text())["openwan"]
    assert rec["long_video"]["method"] == "continue" and rec["long_video"]["windows"] == 2
    again = tmp_path / "again.mp4"
    assert main(["generate", "--from", str(out.with_suffix(".json")), "-o", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_the_variants_long_video_default_is_continue_at_overlap_2(pipe):
    """The demo's SampleDefaults name its long-video default (continue, 2 shared latent frames; measured,
    docs/long_video.md); naming the other method gets that method's own default overlap, a named overlap wins."""
    from openwan.configs import DEMO_VARIANT, get_variant
    assert (DEMO_VARIANT.sample.long_method, DEMO_VARIANT.sample.long_overlap) == ("continue", 2)
    assert get_variant("t2v-1.3B").sample.long_method is None                  # published models: windows
    fast = dict(sample_steps=1, seed=5, output_type="latent", frame_num=97)
    lv = pipe("a red circle moving to the right", **fast).settings["long_video"]
    assert (lv["method"], lv["overlap"], lv["windows"]) == ("continue", 2, 4)  # 25 latent frames, stride 7
    assert pipe.long_video_defaults("windows") == ("windows", None)            # half the window, below
    lv = pipe("a red circle moving to the right", long_method="windows", **fast).settings["long_video"]
    assert (lv["method"], lv["overlap"]) == ("windows", 5)
    lv = pipe("a red circle moving to the right", long_overlap=3, **fast).settings["long_video"]
    assert (lv["method"], lv["overlap"]) == ("continue", 3)


def test_one_call_past_the_native_length_is_recorded_and_replayed(pipe, tmp_path):
    """long_method='none' past the native length is one DiT call over every frame (the naive baseline): its record
    says so, so --from replays it that way rather than with the variant's default method."""
    from openwan.cli import main
    seen, handle = _frames_seen(pipe)
    try:
        out = pipe("a red circle moving to the right", frame_num=49, long_method="none", **FAST)
    finally:
        handle.remove()
    assert {s[2] for s in seen} == {13}                                # every latent frame at once
    assert out.settings["long_video"] == {"method": "none", "latent_frames": 13, "window": 9}
    video = tmp_path / "none.mp4"
    assert main(["generate", "a red circle moving to the right", "--frame_num", "49", "--sample_steps", "2",
                 "--seed", "3", "--long_method", "none", "-o", str(video), "--quiet"]) == 0
    again = tmp_path / "again.mp4"
    assert main(["generate", "--from", str(video.with_suffix(".json")), "-o", str(again), "--quiet"]) == 0
    assert json.loads(again.with_suffix(".json").read_text())["openwan"]["long_video"]["method"] == "none"
    assert again.read_bytes() == video.read_bytes()


@pytest.mark.parametrize("kw, match", [
    (dict(long_refine=0.5), "long_refine redraws the seams .* this call is 'none'"),
    (dict(long_expert=True), "long_expert=True runs the continuation expert .* not 'none'"),
    (dict(long_context_noise=0.1), "long_context_noise gives .* this call is 'none' on the ti2v task"),
    (dict(long_overlap=2), "long_overlap is the latent frames neighbouring windows share; long_method='none'")])
def test_continue_only_settings_with_one_call_are_clear_errors(pipe, kw, match):
    """The continue-only settings are refused with a one-call video past the native length, by the same checks
    (and words) that refuse them with windows."""
    with pytest.raises(ValueError, match=match):
        pipe("a red circle moving to the right", frame_num=49, long_method="none", **dict(FAST, **kw))


@pytest.mark.parametrize("kw", [dict(long_method="continue", long_refine=0.5), dict(long_method="continue"),
                                dict(long_method="windows")])
def test_a_long_videos_progress_runs_once_from_start_to_end(pipe, kw):
    """callback(i, t, x) counts the call's steps across every window (and the refinement pass), as the server's
    progress reads it: it never goes back and ends at the last step."""
    seen = []
    pipe("a red circle moving to the right", frame_num=97, callback=lambda i, t, x: seen.append(i),
         **dict(FAST, **kw))
    runs = 1 if kw["long_method"] == "windows" else 4       # 25 latent frames: continue's 4 windows (overlap 2)
    assert len(seen) >= runs * FAST["sample_steps"] and seen == sorted(seen)
    assert seen[0] == 0 and seen[-1] == FAST["sample_steps"] - 1
