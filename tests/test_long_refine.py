"""``long_refine``: after the ``continue`` windows, the whole latent moved back to a noise level and denoised again by
the ``windows`` method (openwan.pipelines.long.refine), so every seam is redrawn inside a window that straddles it.
The embedded demo's default is 0.85 (docs/long_video_log.md, "Seams redrawn")."""
import json

import pytest
import torch

from openwan.long_video import noised, owners, plan_windows, refine_from, refine_plan
from openwan.pipelines import load_pipeline
from openwan.pipelines.job import make_noise, refine_noise

FAST = dict(sample_steps=4, seed=5, output_type="latent", frame_num=97)
PROMPT = "a red circle moving to the right"


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("demo", progress=False)


def test_refine_starts_at_the_first_step_at_or_below_the_level():
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])                # exact in float32
    assert [refine_from(sigmas, v) for v in (0.99, 0.75, 0.7, 0.5, 0.4, 0.1)] == [1, 1, 2, 2, 3, 3]


def test_refine_plan_straddles_every_seam_and_owners_follow_the_middle_frame():
    """Every seam's last carried and first new latent frame lie inside one refinement window (with a frame before);
    each refinement window's prompt is that of the continued window that made its middle frame."""
    plan = plan_windows(41, 9, 2)                       # the demo's continue: 6 windows, stride 7
    ref = refine_plan(plan)
    assert (ref.length, ref.overlap) == (9, 5) and ref.spans[0] == (0, 9) and ref.spans[-1][1] == 41
    for k in range(1, len(plan.spans)):                 # the first new frame of each continued window and the one
        seam = plan.spans[k - 1][1]                     # before it share a refinement window
        assert any(s < seam - 1 and seam < e for s, e in ref.spans)
    own = owners(plan, ref)
    for (a, b), k in zip(ref.spans, own):
        s, e = plan.spans[k]
        assert s <= (a + b) // 2 < e and all(not (s2 <= (a + b) // 2 < e2) for s2, e2 in plan.spans[:k])
    assert own == sorted(own) and own[0] == 0 and own[-1] == 4       # frame 36: made by (28, 37), the first holding it


def test_refine_noises_the_continued_latent_and_runs_the_windows_pass(pipe, monkeypatch):
    """The pass starts from exactly the continued latent at the grid's first sigma <= the level (with its own noise,
    from the seed), runs the windows method over refine_plan from there with the call's step cache, and is the
    output; the DiT forwards are the continued windows' plus the pass's."""
    runs = []
    run = type(pipe).run

    def spy(self, job, *a, **kw):
        out = run(self, job, *a, **kw)
        runs.append((job, out.clone()))
        return out
    monkeypatch.setattr(type(pipe), "run", spy)
    level = 0.6
    out = pipe(PROMPT, long_refine=level, **FAST)
    continued = [(j, o) for j, o in runs if j.long is None]
    passes = [(j, o) for j, o in runs if j.long is not None and j.long.method == "windows"]
    top = runs[-1][0]
    assert len(passes) == 1 and top.long.method == "continue" and top.long.refine == level
    job, result = passes[0]
    plan = top.long.plan
    assert job.long.plan == refine_plan(plan) and job.step_cache is top.step_cache and job.dit is None
    i0 = refine_from(top.sigmas, level)
    assert 0 < i0 < len(top.sigmas) - 1 and float(top.sigmas[i0]) <= level < float(top.sigmas[i0 - 1])
    assert torch.equal(job.sigmas, top.sigmas[i0:])
    whole = torch.zeros_like(result)                    # the continued latent, window by window
    for k, ((s, e), (_, o)) in enumerate(zip(plan.spans, continued)):
        shared = plan.spans[k - 1][1] - s if k else 0
        whole[:, s + shared:e] = o[:, shared:].float()
    assert len(continued) == len(plan.spans)
    fresh = refine_noise(whole.shape, FAST["seed"], "cpu")
    assert not torch.equal(fresh, make_noise(whole.shape, FAST["seed"], "cpu"))      # apart from the call's noise
    assert torch.equal(job.start, noised(whole, fresh, float(top.sigmas[i0])).to(job.start.dtype))
    assert torch.equal(out.latents, result.to(out.latents.dtype))
    steps = len(top.sigmas) - 1
    windows = len(refine_plan(plan).spans)
    assert out.settings["stats"]["dit_forwards"] == len(plan.spans) * steps + windows * (steps - i0)
    assert out.settings["long_video"]["refine"] == level


def test_refine_off_is_the_continued_windows_and_is_not_recorded(pipe):
    on = pipe(PROMPT, **FAST)                            # the demo's default: 0.85
    off = pipe(PROMPT, long_refine=0, **FAST)
    assert on.settings["long_video"]["refine"] == 0.85 and "refine" not in off.settings["long_video"]
    assert on.settings["stats"]["dit_forwards"] > off.settings["stats"]["dit_forwards"]
    assert not torch.equal(on.latents, off.latents)
    again = pipe(PROMPT, **FAST)
    assert torch.equal(on.latents, again.latents)        # the pass's noise comes from the seed


def test_video_to_video_runs_the_variants_pass_by_default(tmp_path):
    """A long video-to-video re-render runs the variant's pass too (measured: without it every long v2v of the
    world's clips had a seam jump above its in-window motion, docs/long_video.md); 0 turns it off, a level is used."""
    import numpy as np

    from openwan.video import write_video
    rng = np.random.default_rng(0)
    src = write_video(rng.integers(0, 255, (49, 128, 128, 3), dtype=np.uint8), tmp_path / "src.mp4", fps=16)
    v2v = load_pipeline("demo", task="v2v", progress=False)
    kw = dict(src_video=str(src), sample_steps=4, seed=1, output_type="latent")
    plain = v2v(PROMPT, **kw)
    assert plain.settings["long_video"]["method"] == "continue"
    assert plain.settings["long_video"]["refine"] == v2v.defaults().long_refine == 0.85
    off = v2v(PROMPT, long_refine=0, **kw)
    assert "refine" not in off.settings["long_video"]
    assert plain.settings["stats"]["dit_forwards"] > off.settings["stats"]["dit_forwards"]
    named = v2v(PROMPT, long_refine=0.5, **kw)
    assert named.settings["long_video"]["refine"] == 0.5


def test_refine_keeps_the_prompt_schedule_per_window(pipe, monkeypatch):
    conds = []
    run = type(pipe).run

    def spy(self, job, *a, **kw):
        if job.long is not None and job.long.method == "windows":
            conds.append([c.context for c in job.window_conds])
        return run(self, job, *a, **kw)
    monkeypatch.setattr(type(pipe), "run", spy)
    out = pipe("a red circle moving to the right | a blue square moving up", long_refine=0.5, **FAST)
    lv = out.settings["long_video"]
    assert lv["prompts"] == ["a red circle moving to the right"] * 2 + ["a blue square moving up"] * 2
    red, blue = pipe.encode_prompts(["a red circle moving to the right", "a blue square moving up"])
    plan = plan_windows(lv["latent_frames"], lv["window"], lv["overlap"])
    want = [red if k < 2 else blue for k in owners(plan, refine_plan(plan))]
    assert len(conds) == 1 and len(conds[0]) == len(want)
    assert all(torch.equal(c, w) for c, w in zip(conds[0], want))
    assert {k < 2 for k in owners(plan, refine_plan(plan))} == {True, False}       # both prompts have windows


@pytest.mark.parametrize("kw,match", [
    (dict(long_refine=1.0), "long_refine must be a number in \\[0, 1\\)"),
    (dict(long_refine=-0.1), "long_refine"),
    (dict(long_refine="high"), "long_refine"),
    (dict(long_refine=0.5, long_method="windows"), "long_refine redraws the seams of long_method='continue'")])
def test_bad_refine_settings_are_clear_errors(pipe, kw, match):
    with pytest.raises(ValueError, match=match):
        pipe(PROMPT, **{**FAST, **kw})


def test_cli_records_and_replays_the_refine(tmp_path):
    from openwan.cli import main
    for level, name in ((None, "default"), ("0", "off")):
        out = tmp_path / f"{name}.mp4"
        args = ["generate", PROMPT, "--frame_num", "65", "--sample_steps", "3", "--seed", "1", "-o", str(out),
                "--quiet"]
        assert main(args + ([] if level is None else ["--long_refine", level])) == 0
        rec = json.loads(out.with_suffix(".json").read_text())["openwan"]["long_video"]
        assert rec.get("refine") == (0.85 if level is None else None)
        again = tmp_path / f"{name}_again.mp4"
        assert main(["generate", "--from", str(out.with_suffix(".json")), "-o", str(again), "--quiet"]) == 0
        assert again.read_bytes() == out.read_bytes()


def test_refine_runs_with_the_calls_step_cache(pipe, monkeypatch):
    seen = []
    run = type(pipe).run

    def spy(self, job, *a, **kw):
        seen.append((job.long.method if job.long is not None else None, job.step_cache))
        return run(self, job, *a, **kw)
    monkeypatch.setattr(type(pipe), "run", spy)
    out = pipe(PROMPT, long_refine=0.5, step_cache="plan:0.5", **FAST)
    caches = {m: c for m, c in seen}
    assert caches["windows"] is not None and caches["windows"] is caches["continue"]
    assert out.settings["step_cache"] == str(caches["windows"]) and out.settings["stats"]["dit_forwards_skipped"] > 0


def test_a_long_video_leaves_no_tensor_to_the_garbage_collector(pipe, tmp_path):
    """A long video's runs (each continued window, the pass, a step cache's states, the progress kept beside a file)
    free what they hold when they end: no reference cycle leaves tensors for a gc pass to find, so a window's memory
    goes with its window (a cache tied to its denoiser in a cycle once held every window's residual)."""
    import gc
    for kw in (dict(output_type="latent"), dict(output_path=tmp_path / "v.mp4", return_frames=False)):
        gc.collect()
        gc.disable()
        try:
            pipe(PROMPT, **{**FAST, "sample_steps": 6, "step_cache": "plan:0.5", **kw})
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            held = [o for o in gc.garbage if isinstance(o, torch.Tensor)]
            assert not held, [tuple(t.shape) for t in held]
        finally:
            gc.garbage.clear()
            gc.set_debug(0)
            gc.enable()
