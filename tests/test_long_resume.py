"""A long video stopped part way goes on from its finished windows (openwan.pipelines.resume): the result and its
record are the uninterrupted run's; another call, or a damaged file, starts over; the file goes once the output is
written."""
import json

from pathlib import Path

import numpy as np
import pytest

from openwan.pipelines import load_pipeline
from openwan.pipelines.resume import resume_path, steps_path
from openwan.testing import Stop, fail_decode, forwards, stop_after
from openwan.video import read_video

PROMPT = "a red square bouncing left and right"
CALL = dict(frame_num=65, sample_steps=3, seed=2)          # 3 continued windows, then the refinement pass


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("demo", progress=False)


def _windows_run(pipe, monkeypatch) -> list:
    """The labels of the denoising runs the pipeline makes from now on (windows, the pass)."""
    ran = []
    run = type(pipe).run

    def spy(self, job, *a, **kw):
        if job.label != "denoising":        # a window, or the refinement pass
            ran.append(job.label)
        return run(self, job, *a, **kw)
    monkeypatch.setattr(type(pipe), "run", spy)
    return ran


@pytest.mark.parametrize("stop_at, resumed", [(5, 1), (7, 2), (10, 3)])
def test_a_stopped_long_video_goes_on_from_its_finished_windows(pipe, tmp_path, monkeypatch, stop_at, resumed):
    whole = tmp_path / "whole.mp4"
    pipe(PROMPT, output_path=whole, **CALL)
    assert not resume_path(whole).exists()                       # removed once the output is written
    out = tmp_path / "out.mp4"
    with pytest.raises(Stop):                                    # 3 steps a window: stopped in window 2, 3 / the pass
        pipe(PROMPT, output_path=out, callback=stop_after(stop_at), **CALL)
    assert resume_path(out).is_file() and not out.exists()
    ran = _windows_run(pipe, monkeypatch)
    again = pipe(PROMPT, output_path=out, **CALL)
    assert ran == ["window 1/3", "window 2/3", "window 3/3", "refining"][resumed:]
    assert again.settings["stats"]["resumed_windows"] == resumed
    assert np.array_equal(read_video(out)[0], read_video(whole)[0])
    rec, ref = (json.loads(p.with_suffix(".json").read_text()) for p in (out, whole))
    assert rec == ref                                            # the record too (the forward counts included)
    assert not resume_path(out).exists()


def test_a_long_video_stopped_inside_a_window_goes_on_from_its_kept_step(pipe, tmp_path, monkeypatch):
    """The steps of the window (or the pass) in progress are kept too, beside the finished windows: stopped after any
    step, the same call goes on from the last step it made, to the uninterrupted video and record."""
    monkeypatch.setenv("OPENWAN_RESUME_EVERY", "0")
    call = dict(CALL, sample_steps=4)          # 3 windows of 4 steps, then the pass: 2 steps of 3 windows each
    whole = tmp_path / "whole.mp4"
    ref = pipe(PROMPT, output_path=whole, **call)
    rec = json.loads(whole.with_suffix(".json").read_text())
    assert ref.settings["stats"]["dit_forwards"] == 3 * 4 + 2 * 3
    for stop in (2, 4, 6, 7, 13, 14):          # stopped in step `stop`: the steps before it done
        out = tmp_path / f"out{stop}.mp4"
        with pytest.raises(Stop):
            pipe(PROMPT, output_path=out, callback=stop_after(stop), **call)
        with forwards(pipe.dit, pipe.c.dit_continue) as ran:
            again = pipe(PROMPT, output_path=out, **call)
        assert np.array_equal(read_video(out)[0], read_video(whole)[0]), stop
        assert json.loads(out.with_suffix(".json").read_text()) == rec and not resume_path(out).exists()
        assert not steps_path(out).exists()
        done = stop - 1
        windows, steps = min(done // 4, 3), done - 4 * min(done // 4, 3)       # in a window, or in the pass
        st = again.settings["stats"]
        assert (st.get("resumed_windows", 0), st.get("resumed_steps", 0)) == (windows, steps), stop
        assert len(ran) == 18 - 4 * windows - steps * (3 if windows == 3 else 1), stop
    # with a step cache (the demo's default one): kept from before a computed step, the same video and record
    call = dict(CALL, sample_steps=8, step_cache="plan:0.5")
    ref = pipe(PROMPT, output_path=tmp_path / "cached.mp4", **call)
    assert ref.settings["stats"]["dit_forwards_skipped"] > 0
    rec = json.loads((tmp_path / "cached.json").read_text())
    resumed = set()
    for stop in (7, 15, 27):
        out = tmp_path / f"cached{stop}.mp4"
        with pytest.raises(Stop):
            pipe(PROMPT, output_path=out, callback=stop_after(stop), **call)
        st = pipe(PROMPT, output_path=out, **call).settings["stats"]
        resumed.add(st.get("resumed_steps", 0))
        assert np.array_equal(read_video(out)[0], read_video(tmp_path / "cached.mp4")[0]), stop
        assert json.loads(out.with_suffix(".json").read_text()) == rec, stop
    assert len(resumed - {0}) >= 2


def test_a_step_writes_one_windows_solve_and_finished_windows_are_written_once(pipe, tmp_path, monkeypatch):
    """The steps of the window in progress go to a file of their own: a step's write holds that window's solve only
    (not the video made so far), and the file of finished windows is written once a window (and once for the pass)."""
    import torch

    from openwan import fileio
    monkeypatch.setenv("OPENWAN_RESUME_EVERY", "0")
    writes = []
    real = fileio.atomic_write

    def spy(path, write, *a, **kw):
        def saving(tmp):
            write(tmp)
            writes.append((Path(path).name, torch.load(tmp, weights_only=True)))
        return real(path, saving, *a, **kw)
    monkeypatch.setattr(fileio, "atomic_write", spy)
    out = tmp_path / "out.mp4"
    pipe(PROMPT, output_path=out, **dict(CALL, sample_steps=4))      # 3 windows of 4 steps, a pass of 2
    main = [d for name, d in writes if name == resume_path(out).name]
    steps = [d for name, d in writes if name == steps_path(out).name]
    assert [d["windows"] for d in main] == [1, 2, 3, 3] and [d["refined"] for d in main] == [False] * 3 + [True]
    assert [d["windows"] for d in steps] == [0] * 3 + [1] * 3 + [2] * 3 + [3]     # after every step but a run's last
    for d in steps:
        assert set(d) == {"version", "key", "windows", "partial"}
        assert d["partial"]["x"].shape[1] == (9 if d["windows"] < 3 else 17)       # a window (the pass: the latent)
    assert not resume_path(out).exists() and not steps_path(out).exists()


def test_an_extension_stopped_part_way_goes_on(pipe, tmp_path, monkeypatch):
    """Extending a video (its first window carries the source's last latent frames): stopped inside the first window,
    inside the second and in the pass, it goes on to the uninterrupted video."""
    monkeypatch.setenv("OPENWAN_RESUME_EVERY", "0")
    source = tmp_path / "source.mp4"
    pipe(PROMPT, output_path=source, frame_num=33, sample_steps=3, seed=5)
    call = dict(extend=str(source), frame_num=89, sample_steps=4, seed=2)     # 2 windows of 4 steps, a pass of 2
    whole = tmp_path / "whole.mp4"
    pipe(PROMPT, output_path=whole, **call)
    for stop in (3, 6, 10):
        out = tmp_path / f"out{stop}.mp4"
        with pytest.raises(Stop):
            pipe(PROMPT, output_path=out, callback=stop_after(stop), **call)
        st = pipe(PROMPT, output_path=out, **call).settings["stats"]
        assert st.get("resumed_windows", 0) * 4 + st.get("resumed_steps", 0) == stop - 1, (stop, st)
        assert np.array_equal(read_video(out)[0], read_video(whole)[0]), stop


def test_a_progress_file_that_cannot_be_written_does_not_stop_the_run(pipe, tmp_path, monkeypatch):
    """A full disk at a progress write: the run goes on to the same video, with one warning."""
    import errno

    from openwan import fileio
    monkeypatch.setenv("OPENWAN_RESUME_EVERY", "0")
    whole = tmp_path / "whole.mp4"
    pipe(PROMPT, output_path=whole, **CALL)
    real = fileio.atomic_write

    def full(path, *a, **kw):
        if str(path).endswith(".resume.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *a, **kw)
    monkeypatch.setattr(fileio, "atomic_write", full)
    out = tmp_path / "out.mp4"
    with pytest.warns(UserWarning, match="could not keep this run's progress") as caught:
        pipe(PROMPT, output_path=out, **CALL)
    assert sum("could not keep" in str(w.message) for w in caught) == 1
    assert np.array_equal(read_video(out)[0], read_video(whole)[0]) and not resume_path(out).exists()


def test_another_call_or_a_damaged_file_starts_over(pipe, tmp_path, monkeypatch):
    out = tmp_path / "out.mp4"
    with pytest.raises(Stop):
        pipe(PROMPT, output_path=out, callback=stop_after(7), **CALL)
    ran = _windows_run(pipe, monkeypatch)
    other = pipe(PROMPT, output_path=out, **dict(CALL, seed=3))      # another seed: another call
    assert ran[0] == "window 1/3" and "resumed_windows" not in other.settings["stats"]
    with pytest.raises(Stop):
        pipe(PROMPT, output_path=tmp_path / "b.mp4", callback=stop_after(7), **CALL)
    resume_path(tmp_path / "b.mp4").write_bytes(b"not a checkpoint")
    ran.clear()
    pipe(PROMPT, output_path=tmp_path / "b.mp4", **CALL)
    assert ran[0] == "window 1/3"


def test_decode_only_settings_keep_the_windows(pipe, tmp_path, monkeypatch):
    """A run stopped after its denoising (say a decode out of memory) goes on with another tile or fps."""
    out = tmp_path / "out.mp4"
    with pytest.raises(Stop):
        pipe(PROMPT, output_path=out, callback=stop_after(10), **CALL)   # the pass's first step: windows kept
    ran = _windows_run(pipe, monkeypatch)
    pipe(PROMPT, output_path=out, tile=64, fps=8, **CALL)
    assert ran == ["refining"]


def test_a_failed_decode_goes_on_from_the_finished_pass(pipe, tmp_path, monkeypatch):
    """The pass's result is kept too: a run whose decode fails redraws nothing when it goes on (here with tiles)."""
    whole = tmp_path / "whole.mp4"
    pipe(PROMPT, output_path=whole, tile=64, **CALL)
    out = tmp_path / "out.mp4"
    fail_decode(pipe, PROMPT, output_path=out, **CALL)
    ran = _windows_run(pipe, monkeypatch)
    again = pipe(PROMPT, output_path=out, tile=64, **CALL)
    assert ran == [] and again.settings["stats"]["resumed_windows"] == 3
    assert np.array_equal(read_video(out)[0], read_video(whole)[0])


def test_a_server_stopped_mid_video_goes_on_after_its_restart(pipe, tmp_path):
    """The server's job back in the queue (stopped, or killed and restarted) goes on from its kept windows; the file
    goes with the completed job."""
    import threading

    from serve_helpers import Running, jcall, wait_done, wait_for
    out = tmp_path / "out"
    r = Running(pipe, out)
    v = jcall(r.base + "/v1/videos", {"prompt": PROMPT, "frame_num": 65, "sample_steps": 6, "seed": 1})[1]
    kept = resume_path(out / f"{v['id']}.mp4")
    try:
        wait_for(kept.exists, 120, every=0.01, what="a finished window kept")
    finally:
        threading.Thread(target=r.srv.stop, daemon=True).start()      # what SIGTERM does
        r.thread.join(60)
        r.srv.server_close()
    r = Running(pipe, out)
    try:
        done = wait_done(r.base, v["id"], timeout=240)
        assert done["status"] == "completed" and done["attempts"] == 2, done
        assert done["settings"]["stats"]["resumed_windows"] >= 1 and not kept.exists()
    finally:
        r.close()


def test_a_cancelled_job_leaves_no_kept_windows(pipe, tmp_path):
    from serve_helpers import Running, jcall, wait_done, wait_for
    out = tmp_path / "out"
    r = Running(pipe, out)
    try:
        v = jcall(r.base + "/v1/videos", {"prompt": PROMPT, "frame_num": 65, "sample_steps": 6, "seed": 1})[1]
        kept = resume_path(out / f"{v['id']}.mp4")
        wait_for(kept.exists, 120, every=0.01, what="a finished window kept")
        jcall(r.base + f"/v1/videos/{v['id']}", method="DELETE")
        assert wait_done(r.base, v["id"])["status"] == "cancelled" and not kept.exists()
        assert not steps_path(out / f"{v['id']}.mp4").exists()
    finally:
        r.close()


def test_not_under_torchrun(pipe, tmp_path, monkeypatch):
    """Under torchrun only the first process writes an output, and every process must run every window (their
    forwards exchange activations): no process keeps or skips windows."""
    import torch.distributed as dist
    out = tmp_path / "out.mp4"
    with pytest.raises(Stop):
        pipe(PROMPT, output_path=out, callback=stop_after(7), **CALL)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    ran = _windows_run(pipe, monkeypatch)
    pipe(PROMPT, output_path=out, **CALL)
    assert ran[0] == "window 1/3"


# ---------------------------------------------------------------------------- a solve's steps (any run, windows)

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from openwan.testing import make_tiny_checkpoint
    ck = make_tiny_checkpoint(tmp_path_factory.mktemp("resume") / "t2v", "tiny-t2v")
    return load_pipeline(ck, variant="tiny-t2v", progress=False)


@pytest.mark.parametrize("solver, frame_num", [("unipc", 5), ("dpm++", 5), ("euler", 5), ("consistency", 5),
                                               ("unipc", 13)])          # 13: past the native 5, windows
def test_a_stopped_solve_goes_on_from_its_last_kept_step(tiny, tmp_path, monkeypatch, solver, frame_num):
    """Stopped at step 4 of 6 (its sample and solver state kept after step 3), the same call goes on from step 3 to
    the uninterrupted video and record; the file goes with the written output."""
    monkeypatch.setenv("OPENWAN_RESUME_EVERY", "0")
    call = dict(frame_num=frame_num, sample_steps=6, seed=3, sample_solver=solver)
    whole = tmp_path / "whole.mp4"
    tiny("a cat", output_path=whole, **call)
    out = tmp_path / "out.mp4"
    with pytest.raises(Stop):
        tiny("a cat", output_path=out, callback=stop_after(4), **call)
    assert resume_path(out).is_file() and not out.exists()
    again = tiny("a cat", output_path=out, **call)
    assert again.settings["stats"]["resumed_steps"] == 3 and not resume_path(out).exists()
    assert np.array_equal(read_video(out)[0], read_video(whole)[0])
    rec, ref = (json.loads(p.with_suffix(".json").read_text()) for p in (out, whole))
    assert rec == ref and rec["openwan"]["stats"]["dit_forwards"] == 6 * (1 if frame_num == 5 else 3)


@pytest.mark.parametrize("cache, frame_num", [("plan:0.5", 5), ("fbcache:0.15", 5), ("easycache:1", 5),
                                              ("plan:0.5", 13)])
def test_a_stopped_solve_with_a_step_cache_goes_on_from_before_a_computed_step(tiny, tmp_path, monkeypatch, cache,
                                                                               frame_num):
    """With a step cache the solve is kept from before a step whose DiT calls all ran (a fresh cache makes that step
    anew too): stopped after any step, the same call goes on to the uninterrupted video and record (its skipped
    forwards counted alike); where no such step came after the start, it starts over."""
    monkeypatch.setenv("OPENWAN_RESUME_EVERY", "0")
    n = 12
    call = dict(frame_num=frame_num, sample_steps=n, seed=3, step_cache=cache)
    whole = tmp_path / "whole.mp4"
    ref = tiny("a cat", output_path=whole, **call)
    assert ref.settings["stats"]["dit_forwards_skipped"] > 0             # the cache did reuse steps
    rec = json.loads(whole.with_suffix(".json").read_text())
    resumed = set()
    for stop in range(2, n + 1):
        out = tmp_path / f"out{stop}.mp4"
        with pytest.raises(Stop):
            tiny("a cat", output_path=out, callback=stop_after(stop), **call)
        assert not out.exists()
        again = tiny("a cat", output_path=out, **call)
        resumed.add(again.settings["stats"].get("resumed_steps", 0))
        assert np.array_equal(read_video(out)[0], read_video(whole)[0]), stop
        assert json.loads(out.with_suffix(".json").read_text()) == rec and not resume_path(out).exists()
    assert len(resumed - {0}) >= 2                                      # went on from several kept steps


def test_steps_are_kept_at_most_every_interval(tiny, tmp_path, monkeypatch):
    """The default interval (30 s) writes nothing in a run of a second, with a step cache or not."""
    monkeypatch.delenv("OPENWAN_RESUME_EVERY", raising=False)
    for name, cache in (("a", None), ("b", "plan:0.5")):
        with pytest.raises(Stop):
            tiny("a cat", output_path=tmp_path / f"{name}.mp4", callback=stop_after(4), sample_steps=6, seed=3,
                 step_cache=cache)
        assert not resume_path(tmp_path / f"{name}.mp4").exists()
    monkeypatch.setenv("OPENWAN_RESUME_EVERY", "soon")
    with pytest.raises(ValueError, match="OPENWAN_RESUME_EVERY must be a number of seconds"):
        tiny("a cat", output_path=tmp_path / "c.mp4", sample_steps=2, seed=3)


def test_a_two_expert_solve_goes_on_and_a_changed_checkpoint_starts_over(tmp_path, monkeypatch):
    """Wan 2.2 A14B (the idle expert released to its file on a CPU between runs: the fingerprint reads the weight
    files' stamps, not the weights); touching a weight file makes it another call."""
    import os

    from openwan.testing import make_tiny_wan22_checkpoint
    monkeypatch.setenv("OPENWAN_RESUME_EVERY", "0")
    ck = make_tiny_wan22_checkpoint(tmp_path / "a14b", "t2v-A14B")
    moe = load_pipeline(ck, progress=False)
    call = dict(sample_steps=6, seed=1, size="64*32", strict_size=False, frame_num=5)
    moe("a cat", output_path=tmp_path / "whole.mp4", **call)
    out = tmp_path / "out.mp4"
    with pytest.raises(Stop):
        moe("a cat", output_path=out, callback=stop_after(5), **call)      # in the low-noise expert's steps
    again = moe("a cat", output_path=out, **call)
    assert again.settings["stats"]["resumed_steps"] == 4
    assert np.array_equal(read_video(out)[0], read_video(tmp_path / "whole.mp4")[0])
    with pytest.raises(Stop):
        moe("a cat", output_path=tmp_path / "b.mp4", callback=stop_after(5), **call)
    weights = sorted(p for p in ck.rglob("*.safetensors"))[0]
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    other = moe("a cat", output_path=tmp_path / "b.mp4", **call)
    assert "resumed_steps" not in other.settings["stats"]
    # with a step cache (a state per expert; the low-noise one's starts afresh at the switch), stopped after each step
    call = dict(call, sample_steps=10, step_cache="plan:0.5")
    whole = moe("a cat", output_path=tmp_path / "cached.mp4", **call)
    assert whole.settings["stats"]["dit_forwards_skipped"] > 0
    resumed = set()
    for stop in range(2, 11):
        out = tmp_path / f"c{stop}.mp4"
        with pytest.raises(Stop):
            moe("a cat", output_path=out, callback=stop_after(stop), **call)
        resumed.add(moe("a cat", output_path=out, **call).settings["stats"].get("resumed_steps", 0))
        assert np.array_equal(read_video(out)[0], read_video(tmp_path / "cached.mp4")[0]), stop
    assert len(resumed - {0}) >= 2


def test_the_cli_goes_on_and_says_so(tmp_path, monkeypatch, capsys):
    """The same command after a stop (here: in the refinement pass) goes on from the kept windows and says so."""
    from openwan.cli import main
    from openwan.pipelines import long
    refine = long.refine
    calls = [0]

    def stopping(*a, **kw):
        calls[0] += 1
        if calls[0] == 1:
            raise Stop()
        return refine(*a, **kw)
    monkeypatch.setattr(long, "refine", stopping)
    cmd = ["generate", PROMPT, "--frame_num", "65", "--sample_steps", "3", "--seed", "2", "-o",
           str(tmp_path / "v.mp4"), "--quiet"]
    with pytest.raises(Stop):
        main(cmd)
    assert resume_path(tmp_path / "v.mp4").is_file()
    capsys.readouterr()
    assert main(cmd) == 0
    assert "went on from 3 finished window(s), kept by an earlier run of this command" in capsys.readouterr().out
    assert not resume_path(tmp_path / "v.mp4").exists()
    # stopped in the second window's last step (its first two kept): it says so
    from openwan.models.dit import WanModel
    monkeypatch.setattr(long, "refine", refine)
    monkeypatch.setenv("OPENWAN_RESUME_EVERY", "0")
    forward, count = WanModel.forward, [0]

    def stop_at_sixth(self, *a, **kw):
        count[0] += 1
        if count[0] == 6:
            raise Stop()
        return forward(self, *a, **kw)
    monkeypatch.setattr(WanModel, "forward", stop_at_sixth)
    cmd[cmd.index("-o") + 1] = str(tmp_path / "w.mp4")
    with pytest.raises(Stop):
        main(cmd)
    capsys.readouterr()
    assert main(cmd) == 0
    assert "went on from 1 finished window(s) and step 2 of the next, kept by an earlier run" in capsys.readouterr().out
