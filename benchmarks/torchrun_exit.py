"""How often a two-process ``openwan generate`` under torchrun fails, run after run: the command of
tests/test_parallel22.py::test_cli_torchrun_a14b_equals_one_process (a tiny random Wan 2.2 T2V-A14B folder,
``--ulysses_size 2 --dit_fsdp``, 4 steps, 5 frames at 64x32, one thread a process), ``--runs`` times.

    python benchmarks/torchrun_exit.py --runs 100

A process that aborted at exit ("terminate called without an active exception": gloo's barrier freeing an earlier
collective's tensors on its worker thread while the interpreter shut down; docs/parallel.md) counts as a failure like
any other non-zero exit. Prints one JSON line: runs, failures, and the first failure's last lines.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    a = ap.parse_args(argv)
    from openwan.runtime import free_port
    from openwan.testing import make_tiny_wan22_checkpoint
    failures, first = 0, None
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_tiny_wan22_checkpoint(Path(tmp) / "ck", "t2v-A14B", "official")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for i in range(a.runs):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(free_port()), "-m", "openwan.cli", "generate", "a red circle", "--ckpt_dir", str(ckpt),
                   "--sample_steps", "4", "--frame_num", "5", "--size", "64*32", "--quiet", "--ulysses_size", "2",
                   "--dit_fsdp", "-o", f"run{i}.mp4"]
            r = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                failures += 1
                first = first or r.stderr[-1500:]
    print(json.dumps({"runs": a.runs, "failures": failures, "first_failure": first}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
