"""CFG parallel (openwan.parallel.cfg): the two passes of classifier-free guidance on two processes, one each; the
video is one process's with cfg_batch=False (the passes one after the other), bit for bit. 2 CPU processes on gloo."""
import json

import pytest
import torch
from share_helpers import PROMPT, run_cli, run_two, tiny_video_shared

from openwan.parallel.cfg import CfgShare


def test_cfg_parallel_pipelines_equal_one_process_with_unbatched_guidance(tmp_path):
    """A native-length video, the windows method, the demo's continue with its refinement pass (TI2V: clean carried
    frames, the continuation expert) and a guidance interval (its low steps unguided: the cond pass on both): the
    latents of one process with cfg_batch=False, bit for bit, on both processes; each process ran one pass of each
    guided step, and the record counts both."""
    from openwan.parallel import enable_cfg_parallel
    calls = {"tiny native": ("tiny", dict(sample_steps=3, seed=4)),
             "tiny windows": ("tiny", dict(frame_num=17, long_method="windows", sample_steps=3, seed=4)),
             "demo continue + pass": ("demo", dict(frame_num=65, sample_steps=4, seed=1, long_refine=0.5)),
             "demo guidance interval": ("demo", dict(sample_steps=4, seed=2, guide_scale=(1.0, 3.0),
                                                     guide_boundary=0.5)),
             "Wan 2.2 A14B, two experts": ("a14b", dict(size="64*32", frame_num=5, sample_steps=4, seed=3,
                                                        strict_size=False)),
             "demo easycache": ("demo", dict(sample_steps=12, seed=5, step_cache="easycache:0.2"))}
    r0, r1 = run_two(tmp_path, enable_cfg_parallel, "cfg_share", calls, {"cfg_batch": False})
    for name in r0:
        one, shared0, forwards_one, counted0, ran0, (stats_one, stats0) = r0[name]
        _, shared1, _, counted1, ran1, (_, stats1) = r1[name]
        assert torch.equal(shared0, one) and torch.equal(shared1, one), name
        assert counted0 == counted1 == forwards_one, name          # the call's forwards, counted over the processes
        assert stats0 == stats1 == stats_one, name                  # and skipped, per expert: the record's counts
        total = sum(forwards_one) if isinstance(forwards_one, tuple) else forwards_one
        if name == "demo guidance interval":      # 4 steps: the guided ones split, the others on both
            assert ran0 == ran1 and total > ran0 > total // 2, (name, total, ran0)
        else:
            assert ran0 == ran1 == total // 2, (name, total, ran0, ran1)
    high, low = r0["Wan 2.2 A14B, two experts"][2]
    assert high > 0 and low > 0                                     # both experts ran (and were split)
    assert r0["demo easycache"][5][0]["dit_forwards_skipped"] > 0   # steps the cache skipped, counted alike


def test_an_unguided_call_warns():
    from openwan.pipelines import load_pipeline
    pipe = load_pipeline("demo", progress=False)
    pipe.cfg_share = CfgShare(None, 0, 2)                 # what enable_cfg_parallel sets (nothing guided runs here)
    with pytest.warns(UserWarning, match="this call is not guided \\(guide scale 1\\), so both processes run all"):
        pipe(PROMPT, sample_steps=1, guide_scale=1.0, output_type="latent")


def test_cli_torchrun_cfg_parallel(tmp_path):
    common = tiny_video_shared(tmp_path, 5, "--cfg_parallel")
    rec = json.loads((tmp_path / "two.json").read_text())["openwan"]
    assert rec["stats"]["dit_forwards"] == 2 * 3                    # both passes of 3 guided steps, counted
    from openwan.pipelines import load_pipeline
    from openwan.video import read_video
    one = load_pipeline(str(tmp_path / "ck"), variant="tiny-t2v", progress=False)(
        PROMPT, sample_steps=3, frame_num=5, size="64*32", seed=4, cfg_batch=False, output_path=tmp_path / "one.mp4")
    assert one.settings["stats"]["dit_forwards"] == 6
    assert (read_video(tmp_path / "two.mp4")[0] == read_video(tmp_path / "one.mp4")[0]).all()
    three = run_cli(tmp_path, [*common, "--cfg_parallel", "-o", "x.mp4"], processes=3)
    assert three.returncode != 0 and "--cfg_parallel shares the work over two processes (this is 3)" in three.stderr
    bad = run_cli(tmp_path, [*common, "--cfg_parallel", "-o", "x.mp4"])
    assert bad.returncode == 2 and "--cfg_parallel shares the work over two processes (this is 1)" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x.mp4").exists()


def test_the_collectives_device_follows_the_backend(monkeypatch):
    """Share.others' count tensor: on the host under gloo; on the current accelerator under any other backend
    (nccl, xccl, ...), and a clear error where the process has no accelerator (no hard-coded CUDA)."""
    import torch.distributed as dist

    from openwan.parallel import share
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "gloo")
    assert share.collective_device(None) == torch.device("cpu")
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    if torch.accelerator.current_accelerator() is None:
        with pytest.raises(RuntimeError, match="backend 'nccl' needs an accelerator"):
            share.collective_device(None)
    else:
        assert share.collective_device(None).type == torch.accelerator.current_accelerator().type
