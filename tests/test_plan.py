"""The memory planner: sizes, ordering of settings, clear errors, and one estimate against a measured peak."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openwan.configs import get_variant
from openwan.plan import (GB, dit_weight_bytes, estimate, fits_or_raise, latent_grid, parse_bytes, plan)

ROOT = Path(__file__).resolve().parents[1]


def test_parse_bytes_and_grid():
    assert parse_bytes("24GB") == 24 * GB and parse_bytes("24 GiB") == 24 * GB and parse_bytes("800MB") == 800 * 2**20
    with pytest.raises(ValueError, match="24GB"):
        parse_bytes("lots")
    assert latent_grid("832*480", 81) == (21, 30, 52)
    with pytest.raises(ValueError, match="width\\*height"):
        latent_grid("832", 81)


def test_weight_sizes_follow_dtype_and_quantization():
    cfg = get_variant("t2v-1.3B").dit
    bf16, fp32, int8 = (dit_weight_bytes(cfg, torch.bfloat16), dit_weight_bytes(cfg, torch.float32),
                        dit_weight_bytes(cfg, torch.bfloat16, "int8"))
    tot = lambda w: w["other"] + sum(w["blocks"])  # noqa: E731
    assert tot(fp32) == 2 * tot(bf16)
    assert 0.45 < tot(int8) / tot(bf16) < 0.55     # 1 byte per quantized weight, the fp32 islands in bf16
    assert len(bf16["blocks"]) == 30


def test_estimate_and_plan_choose_cheapest_fit():
    v = "t2v-1.3B"
    e = estimate(v, "832*480", 81)
    assert e.total == max(e.phases.values()) + e.parts["runtime overhead"]
    swap = estimate(v, "832*480", 81, offload="blocks:2")
    assert swap.parts["dit weights"] < e.parts["dit weights"] / 5
    p = plan(v, "832*480", 81, "200GB")
    assert p.settings["quantize"] == "none" and p.settings["offload"] == "none"
    small = plan(v, "832*480", 81, "6GB")
    assert small.estimate.total <= 6 * GB and small.settings != p.settings
    assert "fits:" in str(small)
    with pytest.raises(ValueError, match="does not fit"):
        plan(v, "1280*720", 81, "1GB")
    with pytest.raises(MemoryError, match="--offload_model auto"):
        fits_or_raise(v, "832*480", 81, "2GB")


def test_estimate_within_15_percent_of_measured_dit_forward():
    """A DiT of half the 1.3B width (1 layer, fp32) at 1560 tokens: weights + the forward's peak RSS over its start.

    Run in a child with glibc giving each tensor its own mapping, so RSS follows the live tensors; the
    15 % is the issue's target for the planner."""
    v = get_variant("t2v-1.3B")
    cfg = v.dit.replace(num_layers=1, dim=768, ffn_dim=4480, num_heads=6)
    spec = {"mode": "forward", "cfg": cfg.to_dict(), "grid": [2, 30, 26], "batch": 1, "dtype": "float32"}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory.py"), "_child", json.dumps(spec)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])["peak"]
    e = estimate(v, "416*480", 5, dtype=torch.float32, device="cpu", cfg_batch=False, dit_config=cfg,
                 include_encoders=False)
    est = e.parts["dit weights"] + e.parts["dit activations"]
    assert abs(est - measured) <= 0.15 * measured, (est, measured)
