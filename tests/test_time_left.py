"""The time a long video has left to denoise, on its progress bars (openwan.pipelines.job.TimeLeft): work counted in
window forwards over the windows and the refinement pass, at the rate measured so far, what an earlier run kept
counted done."""
import pytest

from openwan.long_video import plan_windows, refine_plan
from openwan.pipelines import load_pipeline
from openwan.pipelines.job import TimeLeft
from openwan.pipelines.resume import resume_path

PROMPT = "a red square bouncing left and right"
CALL = dict(frame_num=65, sample_steps=3, seed=2)          # 3 continued windows of 3 steps, then the pass


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_time_left_counts_work_at_the_rate_so_far():
    clock = Clock()
    left = TimeLeft(3 * 4 + 2 * 3, clock)        # 3 windows of 4 steps, then 2 pass steps of 3 windows each
    assert left.seconds() is None and left.text() == ""
    for _ in range(4):                           # window 1: 1 s a step
        clock.t += 1
        left.add(1)
    assert left.seconds() == pytest.approx(14.0) and left.text() == ", ~14s of denoising left"
    left.skip(4)                                 # a kept window is done, and took no time here
    assert left.seconds() == pytest.approx(10.0)
    clock.t += 2 * 3                             # a pass step: three windows' work at the same rate
    left.add(3)
    assert left.done == 11 and left.seconds() == pytest.approx(7 * 10 / 7)   # 7 units left at 10 s / 7 units
    left.add(100)                                # never below zero
    assert left.seconds() == 0.0
    assert TimeLeft(1, Clock()).text() == ""
    slow = TimeLeft(50, clock)
    clock.t += 40
    slow.add(1)
    assert slow.text() == ", ~32m40s of denoising left"          # 49 x 40 s
    clock.t += 40 * 49
    slow.add(49)
    assert slow.text() == ", ~0s of denoising left"
    hours = TimeLeft(1000, clock)
    clock.t += 40
    hours.add(1)
    assert hours.text() == ", ~11h06m of denoising left"       # 999 x 40 s = 39960 s


@pytest.fixture()
def recorded(monkeypatch):
    """Every TimeLeft the pipelines make, and the (units, done, total) of each add."""
    made, adds = [], []
    add = TimeLeft.add

    def spy(self, units):
        add(self, units)
        adds.append((units, self.done, self.total))
    init = TimeLeft.__init__

    def record(self, *a, **kw):
        init(self, *a, **kw)
        made.append(self)
    monkeypatch.setattr(TimeLeft, "add", spy)
    monkeypatch.setattr(TimeLeft, "__init__", record)
    return made, adds


def test_a_long_videos_bars_count_its_windows_and_its_pass(recorded, capsys):
    made, adds = recorded
    pipe = load_pipeline("demo", progress=True)
    out = pipe(PROMPT, **CALL)
    lv = out.settings["long_video"]
    plan = plan_windows(lv["latent_frames"], lv["window"], lv["overlap"])
    assert len(made) == 1 and lv["windows"] == len(plan.spans) == 3
    units = [u for u, _, _ in adds]
    assert units[:9] == [1] * 9                                   # the windows' steps: one window forward each
    assert set(units[9:]) == {len(refine_plan(plan).spans)} and len(refine_plan(plan).spans) > 1   # the pass's
    assert adds[-1][1] == adds[-1][2] == made[0].total            # it ends with all the work counted
    assert "of denoising left" in capsys.readouterr().err
    load_pipeline("demo", progress=False)(PROMPT, **CALL)         # no bars, no count
    assert len(made) == 1


def test_a_resumed_long_video_counts_what_was_kept_as_done(recorded, tmp_path, monkeypatch):
    made, adds = recorded
    monkeypatch.setenv("OPENWAN_RESUME_EVERY", "0")               # every step kept
    pipe = load_pipeline("demo", progress=True)
    out = tmp_path / "out.mp4"
    count = [0]

    class Stop(Exception):
        pass

    def stop(i, t, x):
        count[0] += 1
        if count[0] == 5:                                          # window 2, its second step
            raise Stop()
    with pytest.raises(Stop):
        pipe(PROMPT, output_path=out, callback=stop, **CALL)
    assert resume_path(out).is_file()
    first = len(made)
    adds.clear()
    again = pipe(PROMPT, output_path=out, **CALL)
    assert again.settings["stats"]["resumed_windows"] == 1
    left = made[first]
    kept_steps = again.settings["stats"]["resumed_steps"]          # of window 2 (the stopped step itself not kept)
    assert kept_steps >= 1 and adds[0][1] == 3 + kept_steps + 1     # window 1 and those counted done, then one
    assert adds[-1][1] == left.total                               # the whole call's work, no more


def test_progress_counts_a_pass_step_as_the_windows_it_runs():
    """The API's callback and the server's progress (openwan.pipelines.long.overall) move with the work: a window's
    step by one, a step of the pass by the windows of its plan, each step at the last unit it finishes."""
    from openwan.pipelines.long import overall
    from openwan.sampling import Step
    seen = []
    progress = overall(lambda step, x, x0: seen.append((step.i, step.n)), 3 * 3 + 2 * 4)   # 3 windows, 2 x 4
    for k in range(3):
        for i in range(3):
            progress(k * 3)(Step(i, 3, None, 0.5, 0.4), None, None)
    for i in range(2):
        progress(9, 4)(Step(i, 2, None, 0.5, 0.4), None, None)
    assert seen == [(i, 17) for i in range(9)] + [(12, 17), (16, 17)]      # ends at the last unit, 17 - 1
    assert overall(None, 5)(0) is None
