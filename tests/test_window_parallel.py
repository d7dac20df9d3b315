"""Window parallel (openwan.parallel.windows): a long video's windows shared over processes, each process running
whole windows; the video is one process's, bit for bit. 2 CPU processes on gloo against one process."""
import json
import warnings

import pytest
import torch
from share_helpers import PROMPT, run_cli, run_two, tiny_video_shared

from openwan.long_video import blend_weights, plan_windows, windowed_velocity
from openwan.parallel.windows import WindowShare


class LocalShare(WindowShare):
    """A share whose gather reads every process's windows from a dict the test fills (no process group)."""

    def __init__(self, rank, world, pool):
        super().__init__(None, rank, world)
        object.__setattr__(self, "pool", pool)

    def others(self, counts):
        return {k: 0 for k in counts}

    def gather(self, mine, count, like):
        self.pool.update(mine)
        return [self.pool.get(i, torch.zeros_like(like)) for i in range(count)]     # (missing: not yet run)


@pytest.mark.parametrize("overlap", [1, 2, 3])      # 3 of 4: a frame in up to 4 windows
def test_shared_windows_blend_to_the_one_process_velocity_bit_for_bit(overlap):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 13, 3, 5, generator=g)
    plan = plan_windows(13, 4, overlap)
    runs = []

    def model(i, xi):
        runs.append(i)
        return torch.sin(xi * (i + 1)) * 3.7 + i

    one = windowed_velocity(model, x, plan)
    assert runs == list(range(len(plan.spans)))
    pool, ran = {}, {}
    for rank in (1, 0):         # rank 1 first: its windows are in the pool when rank 0 gathers (its v is checked)
        runs.clear()
        v = windowed_velocity(model, x, plan, blend_weights(plan), share=LocalShare(rank, 2, pool))
        ran[rank] = list(runs)
    assert ran == {0: list(range(0, len(plan.spans), 2)), 1: list(range(1, len(plan.spans), 2))}
    assert torch.equal(v, one)


def test_window_parallel_pipelines_equal_one_process(tmp_path):
    """The windows method (tiny t2v, Wan 2.2 A14B's two experts) and the demo's continue with its refinement pass (the
    pass's windows shared, a frame in up to three of them): the same latents as one process, bit for bit, on both
    processes, the windows' forwards split between them."""
    from openwan.parallel import enable_window_parallel
    calls = {"tiny windows": ("tiny", dict(frame_num=17, long_method="windows", sample_steps=3, seed=4)),
             "demo continue + pass": ("demo", dict(frame_num=65, sample_steps=4, seed=1, long_refine=0.5)),
             "Wan 2.2 A14B windows": ("a14b", dict(size="64*32", frame_num=161, long_method="windows", sample_steps=3,
                                                   seed=3, strict_size=False))}
    r0, r1 = run_two(tmp_path, enable_window_parallel, "window_share", calls)
    for name in r0:
        one, shared0, forwards_one, forwards0, _, _ = r0[name]
        _, shared1, _, forwards1, _, _ = r1[name]
        assert torch.equal(shared0, one) and torch.equal(shared1, one), name
        assert forwards0 == forwards1 == forwards_one, name     # the call's forwards, counted over the processes
    high, low = r0["Wan 2.2 A14B windows"][2]                   # both experts ran, their windows shared
    assert high > 0 and low > 0 and r0["Wan 2.2 A14B windows"][4] + r1["Wan 2.2 A14B windows"][4] == high + low
    for name, ran in (("tiny windows", (6, 6)), ("demo continue + pass", None)):
        own = [r[name][4] for r in (r0, r1)]            # the forwards each process ran itself
        if ran is not None:                             # 4 windows of 3 steps: 2 each
            assert tuple(own) == ran
        else:               # 3 continue windows of 4 steps each, on both; the pass's 3 windows: 2 on one, 1 on the other
            steps = own[0] - own[1]
            assert steps > 0 and own == [3 * 4 + 2 * steps, 3 * 4 + steps] and r0[name][2] == 3 * 4 + 3 * steps


def test_a_call_with_no_windows_to_share_warns(tmp_path):
    from openwan.pipelines import load_pipeline
    pipe = load_pipeline("demo", progress=False)
    pipe.window_share = WindowShare(None, 0, 2)          # what enable_window_parallel sets (no windows run here)
    with pytest.warns(UserWarning, match="this call is one DiT call, so every process runs all of it"):
        pipe(PROMPT, sample_steps=1, output_type="latent")
    with pytest.warns(UserWarning, match="continue windows, one after another, without a refinement pass"):
        pipe(PROMPT, sample_steps=1, frame_num=49, long_refine=0, output_type="latent")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        job = pipe.prepare(PROMPT, frame_num=49, sample_steps=1)       # continue with the pass: shared, no warning
        assert job.long.refine > 0
        job = pipe.prepare(PROMPT, frame_num=49, sample_steps=1, long_method="windows")
        assert job.long.method == "windows"


def test_cli_torchrun_window_parallel_equals_one_process(tmp_path):
    common = tiny_video_shared(tmp_path, 17, "--window_parallel")
    one = run_cli(tmp_path, [*common, "-o", "one.mp4"])
    assert one.returncode == 0, one.stderr
    assert (tmp_path / "two.mp4").read_bytes() == (tmp_path / "one.mp4").read_bytes()    # the same latents, encoded
    rec = json.loads((tmp_path / "two.json").read_text())["openwan"]
    assert rec["long_video"]["method"] == "windows" and rec["long_video"]["windows"] == 4
    for extra, says in ((["--window_parallel"], "--window_parallel shares the work over several processes (this "
                                                "is 1): start with torchrun"),
                        (["--window_parallel", "--ulysses_size", "2"], "it goes alone, not with --ulysses_size or "
                                                                        "--dit_fsdp"),
                        (["--window_parallel", "--cfg_parallel"], "it goes alone, not with --cfg_parallel")):
        bad = run_cli(tmp_path, [*common, *extra, "-o", "x.mp4"])
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr[-2000:]
        assert "Traceback" not in bad.stderr and not (tmp_path / "x.mp4").exists()
