"""Step caching (openwan.cache): the skip rule against hand computation, exact forward counts, cache off
(and threshold 0) bit-identical to no cache, every pipeline takes ``step_cache``."""
import math

import numpy as np
import pytest
import torch
from bounds import guided_run_bound
from task_helpers import LargestVelocity

from openwan import sampling
from openwan.cache import EasyCache, parse_step_cache
from openwan.denoiser import Wrapper
from openwan.pipelines import load_pipeline
from openwan.testing import make_tiny_checkpoint


class Counting(Wrapper):
    """A stand-in for the guided Denoiser over a plain model function (counts its calls like a DiT)."""

    def __init__(self, fn, passes=1):
        self.inner = None
        self.fn, self._passes = fn, passes
        self.stats = {"dit_forwards": 0, "dit_forwards_skipped": 0}

    @property
    def passes(self):
        return self._passes

    def __call__(self, x, step):
        self.stats["dit_forwards"] += self._passes
        return self.fn(x, step)


def test_constant_velocity_skips_everything_between_warmup_and_the_last_step():
    """v = c: after two computed steps the transformation rate k = |c - c| / |x1 - x0| = 0, so every estimate
    is 0 < threshold and every step is skipped except the warm-up ones (ceil(0.2 * 10) = 2) and the last."""
    c = torch.tensor([0.5, -0.25])
    d = EasyCache(Counting(lambda x, step: c.clone()), threshold=0.05)
    grid = sampling.euler_sigmas(10, 1.0)
    x = torch.tensor([1.0, 2.0])
    out = sampling.run(d, x, grid, "euler")
    assert d.decisions == [True, True] + [False] * 7 + [True]
    assert d.stats == {"dit_forwards": 3, "dit_forwards_skipped": 7}
    # a skipped step returns x_j + (v_c - x_c): the cached transformation from the last computed step (1)
    sig = grid.float()
    xs = [x]
    for i in range(10):
        v = c if d.decisions[i] else xs[i] + (c - xs[1])
        xs.append(xs[i] + (sig[i + 1] - sig[i]) * v)
    assert torch.allclose(out, xs[-1], rtol=0, atol=16 * torch.finfo(torch.float32).eps * 4)  # |x| <= ~4, 10 steps


def _hand_schedule(fn, x0, sigmas, threshold, warmup):
    """The rule of openwan.cache written out in plain Python floats on a one-element sample with Euler."""
    sig = [float(s) for s in sigmas.float()]
    n = len(sig) - 1
    x, decisions = x0, []
    k = xc = vc = prev = None
    acc = 0.0
    for i in range(n):
        skip = False
        if i >= warmup and i != n - 1 and k is not None:
            acc += k * abs(x - prev[0]) / abs(prev[1])
            skip = acc < threshold
        if skip:
            v = x + (vc - xc)
        else:
            v = fn(x, sig[i])
            if xc is not None:
                k = abs(v - vc) / abs(x - xc)
            xc, vc, acc = x, v, 0.0
        prev = (x, v)
        decisions.append(not skip)
        x = x + (sig[i + 1] - sig[i]) * v
    return decisions, x


@pytest.mark.parametrize("threshold", [0.02, 0.1, 0.3])
def test_skip_schedule_equals_hand_computation(threshold):
    def fn(x, sigma):                     # a smooth, curved flow: the velocity turns as sigma falls
        return 0.8 * x * (1.5 - sigma) - 0.3 * sigma + 0.1

    grid = sampling.euler_sigmas(20, 3.0)
    d = EasyCache(Counting(lambda x, step: fn(x, step.sigma)), threshold=threshold)
    out = sampling.run(d, torch.tensor([1.25]), grid, "euler")
    want, x_hand = _hand_schedule(lambda x, s: fn(x, s), 1.25, grid, threshold, warmup=4)
    assert d.decisions == want
    assert d.stats["dit_forwards"] == sum(want) and d.stats["dit_forwards_skipped"] == 20 - sum(want)
    # float32 arithmetic vs Python floats: 20 Euler steps of values ~2, a few ulps each
    assert abs(out.item() - x_hand) <= 20 * 4 * torch.finfo(torch.float32).eps * 2
    print(threshold, "".join("C" if c else "." for c in want))
    assert want[:4] == [True] * 4 and want[-1] is True
    if threshold >= 0.1:   # the schedule mixes skipped and recomputed steps (a real test of the rule)
        assert 0 < sum(want[4:-1]) < len(want[4:-1])


def test_more_threshold_more_skipping_and_zero_computes_all():
    counts = []
    for thr in (0.0, 0.02, 0.1, 0.3):
        d = EasyCache(Counting(lambda x, step: 0.8 * x * (1.5 - step.sigma) + 0.1), threshold=thr)
        sampling.run(d, torch.tensor([1.25]), sampling.euler_sigmas(20, 3.0), "euler")
        counts.append(d.stats["dit_forwards"])
    assert counts[0] == 20 and counts == sorted(counts, reverse=True) and counts[-1] < counts[1]


def test_skipped_steps_count_the_passes_they_save():
    d = EasyCache(Counting(lambda x, step: torch.ones_like(x), passes=2), threshold=0.05)
    sampling.run(d, torch.zeros(3), sampling.euler_sigmas(10, 1.0), "euler")
    assert d.stats == {"dit_forwards": 2 * 3, "dit_forwards_skipped": 2 * 7}   # unbatched CFG: 2 per step


def test_parse_step_cache():
    assert parse_step_cache(None) is None and parse_step_cache("none") is None and parse_step_cache("") is None
    assert str(parse_step_cache("easycache")) == "easycache:0.1"
    assert str(parse_step_cache("EasyCache:0.2")) == "easycache:0.2"
    with pytest.raises(ValueError, match="unknown step cache 'tecache'.*easycache"):
        parse_step_cache("tecache")
    with pytest.raises(ValueError, match="threshold must be a number >= 0"):
        parse_step_cache("easycache:-1")
    with pytest.raises(ValueError, match="threshold must be a number >= 0"):
        parse_step_cache("easycache:abc")


# --------------------------------------------------------------------------- pipelines

@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {v: make_tiny_checkpoint(root / v, f"tiny-{v}") for v in ("t2v", "i2v")}


def test_cache_off_and_threshold_zero_are_bit_identical(ckpts):
    pipe = load_pipeline(ckpts["t2v"], variant="tiny-t2v", progress=False)
    kw = dict(seed=3, sample_steps=6, output_type="latent")
    plain = pipe("a red circle", **kw)
    for spec in ("none", "easycache:0"):
        out = pipe("a red circle", step_cache=spec, **kw)
        assert torch.equal(out.latents, plain.latents), spec
        assert out.settings["stats"]["dit_forwards"] == 6 and out.settings["stats"]["dit_forwards_skipped"] == 0
    assert plain.settings["step_cache"] == "none"


@pytest.mark.parametrize("cfg_batch", [True, False])
def test_pipeline_forward_counts_are_exact(ckpts, cfg_batch, monkeypatch):
    pipe = load_pipeline(ckpts["t2v"], variant="tiny-t2v", progress=False)
    calls = []
    orig = pipe.dit.forward
    monkeypatch.setattr(pipe.dit, "forward", lambda *a, **k: calls.append(1) or orig(*a, **k))
    out = pipe("a red circle", seed=3, sample_steps=10, step_cache="easycache:10", cfg_batch=cfg_batch,
               output_type="latent")
    st, per_step = out.settings["stats"], 1 if cfg_batch else 2
    assert out.settings["step_cache"] == "easycache:10"
    assert st["dit_forwards"] == len(calls)
    assert st["dit_forwards"] + st["dit_forwards_skipped"] == 10 * per_step
    # a huge threshold: only the warm-up (2 of 10) and the last step run
    assert st["dit_forwards"] == 3 * per_step


def test_every_task_takes_step_cache(ckpts):
    img = (np.random.default_rng(0).random((32, 64, 3)) * 255).astype(np.uint8)
    i2v = load_pipeline(ckpts["i2v"], variant="tiny-i2v", progress=False)
    out = i2v("x", image=img, seed=1, sample_steps=6, step_cache="easycache:10", output_type="latent")
    assert out.settings["stats"]["dit_forwards"] == 3 and out.settings["stats"]["dit_forwards_skipped"] == 3
    v2v = load_pipeline(ckpts["t2v"], variant="tiny-t2v", task="v2v", progress=False)
    video = (np.random.default_rng(1).random((5, 32, 64, 3)) * 255).astype(np.uint8)
    out = v2v("x", src_video=video, strength=1.0, seed=1, sample_steps=6, step_cache="easycache:10",
              output_type="latent")
    assert out.settings["stats"]["dit_forwards"] == 3
    with pytest.raises(ValueError, match="unknown step cache"):
        v2v("x", src_video=video, step_cache="fastest")
    import inspect

    from openwan.pipelines import PIPELINES
    for name, cls in PIPELINES.items():
        if name == "t2i":              # forwards **kw to t2v
            continue
        assert "step_cache" in inspect.signature(cls.__call__).parameters, name


# --------------------------------------------------------------------------- multi-process

def _sp_worker(rank, world, port, ckpt, out_dir, step_cache="easycache:1.75"):
    import os

    import torch.distributed as dist

    from openwan.parallel import enable_sequence_parallel
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        pipe = load_pipeline(ckpt, variant="tiny-t2v", progress=False)
        enable_sequence_parallel(pipe.dit)
        with torch.inference_mode():
            out = pipe("a red circle", seed=5, sample_steps=8, frame_num=9, step_cache=step_cache,
                       output_type="latent")
        torch.save((out.latents, out.settings["stats"]), os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_step_cache_under_sequence_parallel_equals_one_process(ckpts, tmp_path):
    """The cache wraps the whole model call above the DiT: under sequence parallel every process gets the same
    gathered output, so all make the same skip decisions, and the run equals one process's."""
    import torch.multiprocessing as mp

    from openwan.runtime import free_port
    mp.start_processes(_sp_worker, args=(2, free_port(), str(ckpts["t2v"]), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    (l0, s0), (l1, s1) = torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt")
    pipe = load_pipeline(ckpts["t2v"], variant="tiny-t2v", progress=False)
    with LargestVelocity(pipe) as vmax:
        one = pipe("a red circle", seed=5, sample_steps=8, frame_num=9, step_cache="easycache:1.75",
                   output_type="latent")
    assert torch.equal(l0, l1) and s0["dit_forwards"] == s1["dit_forwards"] == one.settings["stats"]["dit_forwards"]
    assert s0["dit_forwards_skipped"] == 4      # decisions C C . . C . . C (the same at 1.5 and 2: not on an edge)
    # sequence-parallel attention sums in another order: each DiT pass within 16 ulps of max |v| (as
    # tests/test_parallel.py), the run within guided_run_bound of that; a skipped step reuses the last computed
    # v - x on the current x, so an error carried in x comes back in v at gain 1, which over sum |dsigma| <= 1
    # grows it by at most e (Gronwall): 1.2e-4 here (equal here); the run without the cache is 0.36 off
    bound = math.e * guided_run_bound(vmax.value, pipe.defaults().guide_scale)
    assert (l0 - one.latents).abs().max().item() <= bound
