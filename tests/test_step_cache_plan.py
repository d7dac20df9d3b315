"""The planned step cache (openwan.caches.blocks.PlannedCache, ``plan:T``): the schedule against schedules
written out by hand, the sampled output against a hand-written loop on a tiny DiT, exact forward counts
(batched and unbatched CFG, the pipeline), threshold 0 bit-identical to no cache, bad thresholds."""
import math

import pytest
import torch

from openwan import sampling
from openwan.caches import PlannedCache, parse_step_cache
from openwan.caches.blocks import even_plan
from openwan.denoiser import Conditioning, Denoiser, Guidance
from openwan.pipelines import load_pipeline
from openwan.testing import make_tiny_checkpoint
from test_step_cache_blocks import STEPS, hand_loop, setup, tiny_dit


def marks(plan):
    return "".join("X" if c else "." for c in plan)


def test_even_plan_is_the_hand_written_schedule():
    # n, computed, first -> X computed, . reused (the k-th middle compute at first-1 + round(k (n-first) / (b+1)))
    assert marks(even_plan(10, 5, 2)) == "XX..X.X..X"       # b = 2: 1 + round(8/3) = 4, 1 + round(16/3) = 6
    assert marks(even_plan(10, 5, 3)) == "XXX...X..X"       # b = 1: 2 + round(7/2) = 6 (half to even: 3.5 -> 4)
    assert marks(even_plan(30, 15, 6)) == "XXXXXX..X.X..X..X.X..X..X.X..X"
    assert marks(even_plan(6, 6, 2)) == "XXXXXX" and marks(even_plan(6, 3, 2)) == "XX...X"
    for n in range(3, 60):
        for first in range(1, n):
            for computed in range(first + 1, n + 1):
                p = even_plan(n, computed, first)
                assert sum(p) == computed and all(p[:first]) and p[-1], (n, computed, first)
                runs = [len(r) for r in marks(p).split("X") if r]
                assert not runs or max(runs) - min(runs) <= 1, (n, computed, first, marks(p))


@pytest.mark.parametrize("steps,spec,want", [
    (10, "plan:0.5", "XX..X.X..X"),            # warm-up max(2, ceil(0.2*10)) = 2, 5 computed
    (30, "plan:0.5", "XXXXXX..X.X..X..X.X..X..X.X..X"),   # the demo's 30 steps: warm-up 6, 15 computed
    (50, "plan:0.5", marks(even_plan(50, 25, 10))),
    (10, "plan:0.3:0.4", "XXXX.X.X.X"),        # warm-up 4, 10 - floor(3) = 7 computed: 3 + round(2k), k = 1, 2
    (10, "plan:0.9", "XX.......X"),           # at least the warm-up and the last step
    (2, "plan:0.5", "XX"),
])
def test_planned_schedules(steps, spec, want):
    sp = parse_step_cache(spec)
    c = PlannedCache.__new__(PlannedCache)
    c.threshold, c._plans = sp.threshold, {}
    if sp.warmup is not None:
        c.warmup = sp.warmup
    assert marks(c.plan(steps)) == want


def test_planned_cache_equals_a_hand_written_loop():
    """Euler over a tiny DiT: the planned steps compute the blocks, the others add the last computed residual."""
    dit = tiny_dit()
    plan = even_plan(STEPS, STEPS - math.floor(0.5 * STEPS), 2)

    def decide(i, ind, r0, res):
        return plan[i]
    decide.kind = "full"
    x0, cond = setup()
    with torch.no_grad():
        want, x_hand = hand_loop(dit, decide)
        d = PlannedCache(Denoiser(dit, cond), 0.5)
        out = sampling.run(d, x0, sampling.euler_sigmas(STEPS, 3.0), "euler")
    assert d.decisions == want == plan and sum(plan) == 5
    assert d.stats == {"dit_forwards": 5, "dit_forwards_skipped": 5}
    # the same operations, re-associated head/blocks calls: fp32 rounding of the values' size
    assert (out - x_hand).abs().max() <= 64 * torch.finfo(torch.float32).eps * x_hand.abs().max()
    assert (out - sampling.run(Denoiser(dit, cond), x0, sampling.euler_sigmas(STEPS, 3.0), "euler")).abs().max() > 0


@pytest.mark.parametrize("cfg_batch", [True, False])
def test_planned_counts_are_exact_and_zero_is_bit_identical(cfg_batch):
    dit = tiny_dit()
    last_block_runs = []
    h = dit.blocks[-1].register_forward_hook(lambda *a: last_block_runs.append(1))
    x0, cond = setup()
    cond = Conditioning(cond.context, torch.zeros(3, 32))
    g = Guidance(4.0, cfg_batch)
    grid = sampling.euler_sigmas(STEPS, 3.0)
    with torch.no_grad():
        ref = sampling.run(Denoiser(dit, cond, g), x0, grid, "euler")
        zero = PlannedCache(Denoiser(dit, cond, g), 0.0)
        assert torch.equal(sampling.run(zero, x0, grid, "euler"), ref)
        assert zero.stats["dit_forwards_skipped"] == 0
        last_block_runs.clear()
        d = PlannedCache(Denoiser(dit, cond, g), 0.5)
        sampling.run(d, x0, grid, "euler")
    h.remove()
    per_step = 1 if cfg_batch else 2       # unbatched CFG: cond and uncond keep a state each, the same plan
    assert d.stats == {"dit_forwards": 5 * per_step, "dit_forwards_skipped": 5 * per_step}
    assert len(last_block_runs) == 5 * per_step
    assert d.decisions == [c for c in even_plan(STEPS, 5, 2) for _ in range(per_step)]


def test_bad_plan_threshold_is_refused():
    x0, cond = setup()
    with pytest.raises(ValueError, match=r"fraction of the steps reused, in \[0, 1\).*plan:0.5"):
        PlannedCache(Denoiser(tiny_dit(), cond), 1.0)


def test_plan_counts_exactly_in_the_pipeline(tmp_path):
    assert str(parse_step_cache("plan")) == "plan:0.5"      # its recommended setting
    pipe = load_pipeline(make_tiny_checkpoint(tmp_path / "t2v", "tiny-t2v"), variant="tiny-t2v", progress=False)
    out = pipe("a red circle", seed=2, sample_steps=12, step_cache="plan", output_type="latent")
    assert out.settings["step_cache"] == "plan:0.5"
    # 12 steps: warm-up max(2, ceil(2.4)) = 3, 6 computed (first 3, the last, 2 between)
    assert out.settings["stats"]["dit_forwards"] == 6 and out.settings["stats"]["dit_forwards_skipped"] == 6


def test_a_variants_default_step_cache_applies_is_recorded_and_can_be_turned_off(tmp_path):
    """SampleDefaults.step_cache (the demo's "plan:0.5") is used when a call at the default step count names no
    cache, recorded in the settings, equals naming it, and "none" turns it off; at another step count every step
    is computed; the demo's student (4 steps) has none."""
    from openwan.configs import DEMO_4STEP_VARIANT, DEMO_VARIANT, get_variant
    from openwan.testing import make_tiny_demo_v2_checkpoint
    assert DEMO_VARIANT.sample.step_cache == "plan:0.5" and DEMO_4STEP_VARIANT.sample.step_cache is None
    assert get_variant("t2v-1.3B").sample.step_cache is None          # published models: every step computed
    path, variant = make_tiny_demo_v2_checkpoint(tmp_path / "demo", size=32, frame_num=5, steps=10)
    variant = variant.replace(sample=variant.sample.replace(step_cache="plan:0.5"))
    pipe = load_pipeline(path, variant=variant, progress=False)
    default = pipe("a red circle moving up", seed=3, output_type="latent")
    named = pipe("a red circle moving up", seed=3, step_cache="plan:0.5", output_type="latent")
    off = pipe("a red circle moving up", seed=3, step_cache="none", output_type="latent")
    assert default.settings["step_cache"] == "plan:0.5" and off.settings["step_cache"] == "none"
    assert default.settings["stats"]["dit_forwards"] == 5 and off.settings["stats"]["dit_forwards"] == 10
    assert torch.equal(default.latents, named.latents) and not torch.equal(default.latents, off.latents)
    assert pipe.step_cache_for(10) == "plan:0.5" and pipe.step_cache_for(6) is None     # what the bench reports
    other = pipe("a red circle moving up", seed=3, sample_steps=6, output_type="latent")    # not the default steps
    assert other.settings["step_cache"] == "none" and other.settings["stats"]["dit_forwards"] == 6
    # video-to-video below strength 1 runs only the grid's tail: every step computed unless a cache is named
    v2v = load_pipeline(path, variant=variant, task="v2v", progress=False)
    src = (torch.rand(5, 32, 32, 3) * 255).to(torch.uint8).numpy()
    partial = v2v("a blue circle moving up", src_video=src, strength=0.7, seed=3, output_type="latent")
    assert partial.settings["step_cache"] == "none"
    assert partial.settings["stats"]["dit_forwards"] == len(sampling.sigmas_for_strength(10, 3.0, 0.7, "unipc")) - 1
    full = v2v("a blue circle moving up", src_video=src, strength=1.0, seed=3, output_type="latent")
    assert full.settings["step_cache"] == "plan:0.5" and full.settings["stats"]["dit_forwards"] == 5
