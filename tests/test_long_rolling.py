"""The ``rolling`` long-video method (openwan.pipelines.rolling): after the first window, frames on a ladder of noise
levels, one finished at a time. Tiny random stand-in of the embedded demo, its native length set to 17 frames (5
latent frames), carried frames 2, so the ladder holds 3 frames; 6 steps give 2 steps a rung."""
import dataclasses
import json

import pytest
import torch

from openwan.pipelines import load_pipeline
from openwan.pipelines.components import ROLLING_DIR
from openwan.pipelines.job import make_noise
from openwan.pipelines.rolling import ladder_grid, rungs, substeps_for
from openwan.testing import Stop, fail_decode, forwards, make_tiny_demo_with_expert, stop_after

pytestmark = pytest.mark.filterwarnings("ignore:long_method='rolling'.*has no rolling expert")
PROMPT = "a red circle moving to the right"
KW = dict(sample_steps=6, seed=3, output_type="latent", frame_num=33, long_method="rolling", long_overlap=2,
          long_refine=0)
WINDOW, C, F = 5, 2, 9                   # latent frames: the window, carried, the video
M, R = WINDOW - C, 2                     # the ladder's frames, steps a rung (round(6 / 3))
VARIANT = None


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(plain folder, the same with a rolling expert of other weights, the same with a continuation expert)."""
    global VARIANT
    root = tmp_path_factory.mktemp("rolling")
    plain, with_expert, variant = make_tiny_demo_with_expert(root / "r", ROLLING_DIR)
    continuation = make_tiny_demo_with_expert(root / "c")[1]
    VARIANT = dataclasses.replace(variant, sample=variant.sample.replace(frame_num=17))
    return plain, with_expert, continuation


def _load(folder):
    return load_pipeline(folder, variant=VARIANT, progress=False)


def _calls(module, pipe, **kw):
    """The call's output and every forward of ``module``'s (x, t), in order."""
    with forwards(module, inputs=True) as seen:
        out = pipe(PROMPT, **{**KW, **kw})
    return out, seen


def test_the_ladder_grid_and_its_rungs():
    grid = ladder_grid(3, 2, 3.0)
    assert grid.shape == (7,) and float(grid[0]) == 1.0 and float(grid[-1]) == 0.0
    assert bool((grid[1:] < grid[:-1]).all())
    assert rungs(3, 2) == [4, 2, 0]                        # the oldest two rungs down, the newest at noise
    assert substeps_for(20, 7) == 3 and substeps_for(2, 7) == 1


def test_the_first_window_is_the_continue_methods_and_every_frame_goes_down_the_ladder(folders):
    pipe = _load(folders[0])
    out, seen = _calls(pipe.dit, pipe)
    ref = pipe(PROMPT, **{**KW, "long_method": "continue"})
    assert out.settings["long_video"]["method"] == "rolling"
    assert torch.equal(out.latents[:, :WINDOW], ref.latents[:, :WINDOW])    # the first window: the same run
    ladder = seen[KW["sample_steps"]:]                                       # batched CFG: one forward a step
    assert len(ladder) == (M - 1) * R + (F - WINDOW) * R
    z = out.latents.float()
    per_frame = (z.shape[2] // 2) * (z.shape[3] // 2)
    grid = ladder_grid(M, R, float(out.settings["sample_shift"]))
    done = WINDOW
    for i, (x, t) in enumerate(ladder):
        x = x[0] if x.dim() == 5 else x                                      # the cond half
        frame_t = t.reshape(-1, WINDOW, per_frame)[0]
        assert bool((frame_t == frame_t[:, :1]).all())                       # one timestep a frame
        ft = frame_t[:, 0]
        assert x.shape[1] == WINDOW and bool((ft[:C] == 0).all())           # the carried frames: clean, t 0
        assert bool((ft[C + 1:] >= ft[C:-1]).all())                          # the oldest the least noisy
        after_ramp = i - (M - 1) * R
        if after_ramp >= 0:
            done = WINDOW + after_ramp // R
            q = after_ramp % R
            want = torch.tensor([min(999, int(float(grid[(M - 1 - j) * R + q]) * 1000)) for j in range(M)])
            assert torch.equal(ft[C:].cpu(), want)                           # the ladder's rungs, q steps on
        assert torch.equal(x[:, :C].float(), z[:, done - C:done])             # the finished frames, exactly


@pytest.mark.parametrize("solver", ["unipc", "dpm++", "euler"])
def test_each_frame_goes_down_the_ladder_with_its_own_stepper_of_the_calls_solver(folders, monkeypatch, solver):
    """Replayed from the ladder's (input, velocity) pairs: every frame's input at every forward is what a stepper of
    the call's solver of its own (a multistep solver's history the frame's) made of its noise and its velocities, and
    the finished frames are the video's."""
    from openwan.pipelines import rolling
    from openwan.sampling import make_solver
    seen = []

    class Recording(rolling.Denoiser):
        def __call__(self, x, step):
            v = super().__call__(x, step)
            seen.append((x.float().clone(), v.float().clone()))
            return v
    monkeypatch.setattr(rolling, "Denoiser", Recording)
    out = _load(folders[0])(PROMPT, **KW, sample_solver=solver)
    z = out.latents.float()
    noise = make_noise(z.shape, KW["seed"], "cpu")
    grid, target = ladder_grid(M, R, float(out.settings["sample_shift"])), rungs(M, R)
    sim, steppers, at, done = {}, {}, {}, WINDOW
    for i, (x, v) in enumerate(seen):
        for j, f in enumerate(range(done, done + M)):
            if f not in sim:                # a frame joins: its slice of the noise (past the end: as drawn)
                sim[f] = noise[:, f:f + 1] if f < F else x[:, C + j:C + j + 1]
                steppers[f], at[f] = make_solver(solver, grid), 0
            assert torch.equal(x[:, C + j:C + j + 1], sim[f]), (i, f)
            if i >= target[0] or at[f] < target[j]:             # on the ramp each frame stops at its rung
                sim[f] = steppers[f].step(v[:, C + j:C + j + 1], sim[f], at[f])
                at[f] += 1
        if at[done] == M * R:
            assert torch.equal(z[:, done:done + 1], sim[done]), done
            done += 1
    assert done == F and len(seen) == (M - 1) * R + (F - WINDOW) * R


def test_a_still_ladder_keeps_each_frames_own_noise(folders, monkeypatch):
    """With a DiT whose velocity is 0 on the ladder, each frame after the first window ends as the call's noise of
    that frame: the frames are made in order, each from its own slice of the noise."""
    pipe = _load(folders[0])
    real = pipe.dit.forward
    count = {"n": 0}

    def still(x, t, *a, **kw):
        count["n"] += 1
        out = real(x, t, *a, **kw)
        return out if count["n"] <= KW["sample_steps"] else [o * 0 for o in out] if isinstance(out, list) else out * 0
    monkeypatch.setattr(pipe.dit, "forward", still)
    out = pipe(PROMPT, **KW, sample_solver="euler")           # (Euler: a still velocity leaves x as it is, exactly)
    noise = make_noise(out.latents.shape, KW["seed"], "cpu")
    assert torch.equal(out.latents[:, WINDOW:].float(), noise[:, WINDOW:].float())


def test_the_rolling_expert_runs_the_ladder_and_the_settings_say_so(folders):
    pipe = _load(folders[1])
    out, seen = _calls(pipe.c.dit_rolling, pipe)
    assert out.settings["long_video"]["expert"] is True
    assert len(seen) == (M - 1) * R + (F - WINDOW) * R                      # the expert: every ladder forward
    off = pipe(PROMPT, **KW, long_expert=False)
    assert "expert" not in off.settings["long_video"]
    assert torch.equal(off.latents[:, :WINDOW], out.latents[:, :WINDOW])    # the first window: the main DiT's
    assert not torch.equal(off.latents[:, WINDOW:], out.latents[:, WINDOW:])


def test_without_a_rolling_expert_the_main_dit_runs_it_with_a_warning(folders):
    """A continuation expert is not one for the ladder: without rolling_model/ the main DiT runs every step, and the
    call says that it was not trained for it; long_expert=True names the missing folder."""
    pipe = _load(folders[2])
    assert pipe.c.dit_continue is not None and pipe.c.dit_rolling is None
    with pytest.warns(UserWarning, match="rolling_model"):
        out, seen = _calls(pipe.c.dit_continue, pipe)
    assert seen == [] and "expert" not in out.settings["long_video"]
    with pytest.raises(ValueError, match="no rolling expert"):
        pipe(PROMPT, **KW, long_expert=True)


def test_progress_runs_once_over_the_window_the_ladder_and_the_pass(folders):
    pipe = _load(folders[0])
    seen = []
    out = pipe(PROMPT, **{**KW, "long_refine": 0.5}, callback=lambda i, t, x: seen.append(i))
    assert out.settings["long_video"]["refine"] == 0.5
    assert seen == sorted(seen) and seen[-1] == KW["sample_steps"] - 1


def test_bad_settings_are_clear_errors(folders, tmp_path):
    pipe = _load(folders[0])
    with pytest.raises(ValueError, match="long_context_noise"):
        pipe(PROMPT, **KW, long_context_noise=0.1)
    picture = (torch.rand(32, 32, 3) * 255).to(torch.uint8).numpy()
    with pytest.raises(ValueError, match="first-last-frame"):
        pipe(PROMPT, **KW, first_frame=picture, last_frame=picture)
    from openwan.testing import make_tiny_checkpoint
    t2v = load_pipeline(make_tiny_checkpoint(tmp_path / "t2v", "tiny-t2v"), variant="tiny-t2v", progress=False)
    frames = 4 * t2v.defaults().frame_num + 1
    with pytest.raises(ValueError, match="TI2V-style model"):
        t2v(PROMPT, **{**KW, "frame_num": frames, "long_overlap": 1})


def test_the_cli_records_and_replays_it(folders, tmp_path, monkeypatch):
    from openwan.cli import main
    from openwan.testing import use_demo
    from openwan.video import read_video
    use_demo(monkeypatch, folders[1], VARIANT)             # with its rolling expert
    monkeypatch.chdir(tmp_path)
    common = ["--sample_steps", "6", "--base_seed", "3", "--frame_num", "33", "--quiet"]
    assert main(["generate", PROMPT, *common, "--long_method", "rolling", "-o", "a.mp4"]) == 0
    rec = json.loads((tmp_path / "a.json").read_text())["openwan"]["long_video"]
    assert rec["method"] == "rolling" and rec["overlap"] == 2 and rec["expert"] is True
    assert main(["generate", "--from", "a.json", "-o", "b.mp4", "--quiet"]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["openwan"]["long_video"] == rec
    assert (read_video(tmp_path / "a.mp4")[0] == read_video(tmp_path / "b.mp4")[0]).all()


def test_bench_long_gives_rolling_the_expert_and_the_pass_but_not_continues_own(folders):
    """openwan bench long --methods rolling: the call's long_expert and long_refine reach it, long_context_noise
    (continue's own) does not; the video is measured at the plan's seams."""
    from openwan.demo import long_bench as lb
    pipe = _load(folders[1])
    calls = []

    class Spy:
        def __getattr__(self, name):
            return getattr(pipe, name)

        def __call__(self, prompt, **kw):
            calls.append(kw)
            return pipe(prompt, **kw)
    recs = lb.run_long_benchmark(Spy(), [PROMPT], [3], ["rolling"], 33, progress=False, sample_steps=6,
                                 long_overlap=2, long_expert=False, long_refine=0.5, long_context_noise=0.1)
    assert calls[0]["long_method"] == "rolling" and calls[0]["long_expert"] is False
    assert calls[0]["long_refine"] == 0.5 and "long_context_noise" not in calls[0]
    assert recs[0]["method"] == "rolling" and recs[0]["spans"] == [[0, 5], [3, 8], [4, 9]]


def test_a_stopped_rolling_video_goes_on_from_what_it_kept(folders, tmp_path, monkeypatch):
    """Writing an output, a rolling video keeps its first window, the ladder's state and the pass's steps: stopped
    after any step, the same call goes on from the last kept one to the uninterrupted video and record (the frames
    finished on the ladder written to the progress file once a window's worth, the ladder's own write holding fewer
    than a window of them); with the ladder's state lost it goes on from the first window, to the same video."""
    from openwan.pipelines.resume import resume_path, steps_path
    from openwan.video import read_video
    monkeypatch.setenv("OPENWAN_RESUME_EVERY", "0")
    pipe = _load(folders[1])
    call = dict(KW, output_type="np", frame_num=49, long_refine=0.8)      # 13 latent frames: 8 made on the ladder
    ladder = (M - 1) * R + (13 - WINDOW) * R
    seen = []
    whole = pipe(PROMPT, output_path=tmp_path / "whole.mp4", callback=lambda i, t, x: seen.append(i), **call)
    total = whole.settings["stats"]["dit_forwards"]
    n_pass = len(seen) - 6 - ladder
    units = (total - 6 - ladder) // n_pass
    assert n_pass > 1 and units > 1 and total == 6 + ladder + n_pass * units
    video, rec = read_video(tmp_path / "whole.mp4")[0], json.loads((tmp_path / "whole.json").read_text())

    lost = 6 + (M - 1) * R + WINDOW * R + 1    # stopped there (2 windows' frames kept), its ladder state lost
    # lost + 2: after the first frame drawn past the end (the generator of those frames kept too)
    for stop in sorted({3, 7, 8, 12, lost, lost + 2, 6 + ladder - 1, 6 + ladder + 1, len(seen)}):
        out = tmp_path / f"out{stop}.mp4"
        with pytest.raises(Stop):
            pipe(PROMPT, output_path=out, callback=stop_after(stop), **call)
        done = stop - 1                         # the steps made before the one stopped in
        assert resume_path(out).exists() == (done >= 6) and steps_path(out).exists()
        if 6 < done < 6 + ladder:
            kept = torch.load(resume_path(out), weights_only=True)
            chunk = torch.load(steps_path(out), weights_only=True)["partial"]["ladder"]["chunk"]
            made = WINDOW + max(0, done - 6 - (M - 1) * R) // R                 # latent frames finished
            assert kept["latent"].shape[1] == WINDOW * (made // WINDOW) and chunk.shape[1] == made % WINDOW
        if stop == lost:
            steps_path(out).unlink()            # the ladder's state lost: it goes on from the first window
        with forwards(pipe.dit, pipe.c.dit_rolling) as ran:
            again = pipe(PROMPT, output_path=out, **call)
        assert (read_video(out)[0] == video).all(), stop
        assert json.loads(out.with_suffix(".json").read_text()) == rec, stop
        assert not resume_path(out).exists() and not steps_path(out).exists()
        skipped = done if done <= 6 + ladder else 6 + ladder + (done - 6 - ladder) * units
        if stop == lost:
            skipped = 6
        assert len(ran) == total - skipped, stop
        st = again.settings["stats"]
        assert st.get("resumed_windows", 0) == (1 if done >= 6 else 0), stop
        assert st.get("resumed_steps", 0) == (done if done < 6 else 0 if stop == lost
                                              else done - 6 if done < 6 + ladder else done - 6 - ladder), stop
    # the decode fails after the pass: the same call goes on from the finished latent, and draws nothing
    out = tmp_path / "decode.mp4"
    fail_decode(pipe, PROMPT, output_path=out, **call)
    with forwards(pipe.dit, pipe.c.dit_rolling) as ran:
        pipe(PROMPT, output_path=out, **call)
    assert ran == [] and (read_video(out)[0] == video).all()
    assert json.loads(out.with_suffix(".json").read_text()) == rec
