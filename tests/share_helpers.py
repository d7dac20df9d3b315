"""What the tests of a generation shared over processes (test_window_parallel.py, test_cfg_parallel.py) run in each
of their 2 gloo processes: the same calls by one process and shared, kept for the test to compare."""
import os

import torch
import torch.distributed as dist

PROMPT = "a red circle moving to the right"


def compare_calls(rank, world, port, out_dir, ckpt, enable, attr, calls, reference=None):
    """In process ``rank`` of ``world``: for each ``calls`` entry {name: (pipeline name, kwargs)} (pipeline name:
    "tiny" for the tiny t2v checkpoint ``ckpt``, "demo"), the latents of one process's call (with ``reference``'s
    extra kwargs) and of the call shared by ``enable(pipe)`` (which sets ``pipe.<attr>``), with their recorded forward
    counts and the forwards this process ran; saved to ``out_dir/<rank>.pt``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from openwan.parallel import pipeline_dits
        from openwan.pipelines import load_pipeline
        from openwan.pipelines.moe import TextToVideoA14B
        from openwan.testing import forwards, tiny_wan22_components
        pipes = {"tiny": load_pipeline(ckpt, variant="tiny-t2v", progress=False),
                 "demo": load_pipeline("demo", progress=False),
                 "a14b": TextToVideoA14B(tiny_wan22_components("t2v-A14B"), progress=False)}
        results = {}
        for name, (which, kw) in calls.items():
            pipe = pipes[which]
            one = pipe(PROMPT, output_type="latent", **kw, **(reference or {}))
            share = enable(pipe)
            assert getattr(pipe, attr) is share and (share.rank, share.world) == (rank, world)
            dits = list(pipeline_dits(pipe).values()) + ([pipe.c.dit_continue] if pipe.c.dit_continue else [])
            try:
                with forwards(*dits) as ran:
                    shared = pipe(PROMPT, output_type="latent", **kw)
            finally:
                setattr(pipe, attr, None)
            results[name] = (one.latents, shared.latents, counts(one.settings["stats"]),
                             counts(shared.settings["stats"]), len(ran),
                             [{k: v for k, v in o.settings["stats"].items() if k.startswith("dit_")}
                              for o in (one, shared)])
        torch.save(results, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def counts(stats: dict):
    """A record's forward count (Wan 2.2 A14B: each expert's too, as a tuple)."""
    if "dit_forwards_high" in stats:
        return stats["dit_forwards_high"], stats["dit_forwards_low"]
    return stats["dit_forwards"]


def run_two(tmp_path, *args):
    """:func:`compare_calls` in 2 forked gloo processes; their two results."""
    import torch.multiprocessing as mp

    from openwan.runtime import free_port
    from openwan.testing import make_tiny_checkpoint
    ckpt = str(make_tiny_checkpoint(tmp_path / "ck", "tiny-t2v"))
    mp.start_processes(compare_calls, args=(2, free_port(), str(tmp_path), ckpt, *args), nprocs=2, join=True,
                       start_method="fork")
    return torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt")


def run_cli(cwd, args: list, processes: int = 0):
    """``openwan <args>`` in ``cwd`` (under torchrun with ``processes`` > 0), one thread a process."""
    import subprocess
    import sys

    from openwan.runtime import free_port
    head = [sys.executable] + (["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
                                str(free_port())] if processes else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(head + ["-m", "openwan.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def tiny_video_shared(tmp_path, frames: int, flag: str) -> list:
    """``openwan generate`` of the tiny t2v checkpoint, ``frames`` frames, by 2 processes under torchrun with ``flag``
    into ``two.mp4`` (checked: it worked, and only the first process reported); the arguments it shared."""
    from openwan.testing import make_tiny_checkpoint
    ckpt = make_tiny_checkpoint(tmp_path / "ck", "tiny-t2v")
    common = ["generate", PROMPT, "--ckpt_dir", str(ckpt), "--task", "tiny-t2v", "--sample_steps", "3",
              "--frame_num", str(frames), "--size", "64*32", "--seed", "4", "--quiet"]
    two = run_cli(tmp_path, [*common, flag, "-o", "two.mp4"], processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("saved ") == 1                          # only the first process writes / reports
    return common
