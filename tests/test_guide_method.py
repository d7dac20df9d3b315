"""CFG-Zero* (``guide_method="cfg-zero-star"``, ``--guide_method``): the unconditional velocity scaled by its
projection before guiding, and zero velocity on the first step from pure noise; classifier-free guidance stays the
default, unchanged."""
import json

import pytest
import torch

from openwan.denoiser import Guidance
from openwan.sampling import Step, cfg, cfg_zero_star

EPS = torch.finfo(torch.float32).eps


def _step(sigma):
    return Step(i=0, n=4, t=torch.tensor([int(sigma * 1000)]), sigma=sigma, sigma_next=sigma / 2)


def test_the_optimized_scale_is_the_projection_of_cond_on_uncond():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(16, 3, 4, 4, generator=g)
    c = 0.7 * u + 0.3 * torch.randn(16, 3, 4, 4, generator=g)
    s = (c.double() * u.double()).sum() / (u.double() ** 2).sum()
    want = s * u.double() + 5.0 * (c.double() - s * u.double())
    got = cfg_zero_star(c, u, 5.0)
    # s is a ratio of two fp32 sums of n products, each within n eps (relative) of its exact value whatever the
    # summation order: |ds| <= 2 n eps |s|, which the result carries as (scale - 1) ds u; then a few roundings of
    # the final terms (s u, c - s u, the sum: each within an ulp of the largest of them)
    n, su = u.numel(), (s * u.double()).abs().max()
    bound = (5.0 - 1.0) * 2 * n * EPS * abs(float(s)) * u.abs().max() + 8 * EPS * (want.abs().max() + 5 * su)
    assert (got.double() - want).abs().max() <= bound
    assert abs(float(s) - 0.7) < 0.1                      # c is mostly 0.7 u: the scale finds it
    one = cfg_zero_star(c, u, 1.0)                        # scale 1: the conditional velocity
    # s u + (c - s u): exact in exact arithmetic; two fp32 roundings, each within an ulp of the terms' magnitude
    assert (one - c).abs().max() <= 4 * EPS * (c.abs().max() + (s * u.double()).abs().max())
    assert torch.equal(cfg_zero_star(2 * u, u, 3.0), 2 * u)   # cond along uncond: s = 2, nothing left to guide


def test_guidance_combines_by_its_method_and_zeroes_the_first_step_from_noise():
    g = torch.Generator().manual_seed(1)
    c, u = torch.randn(16, 2, 4, 4, generator=g), torch.randn(16, 2, 4, 4, generator=g)
    plain, star = Guidance(5.0), Guidance(5.0, method="cfg-zero-star")
    for sigma in (1.0, 0.6):
        assert torch.equal(plain.combine(c, u, 5.0, _step(sigma)), cfg(c, u, 5.0))
    assert torch.equal(star.combine(c, u, 5.0, _step(1.0)), torch.zeros_like(c))
    assert torch.equal(star.combine(c, u, 5.0, _step(0.9997)), torch.zeros_like(c))      # UniPC's first sigma
    assert torch.equal(star.combine(c, u, 5.0, _step(0.6)), cfg_zero_star(c, u, 5.0))   # a v2v / refinement start
    later = Step(i=1, n=4, t=torch.tensor([999]), sigma=0.9995, sigma_next=0.5)
    assert torch.equal(star.combine(c, u, 5.0, later), cfg_zero_star(c, u, 5.0))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from openwan import load_pipeline
    from openwan.testing import make_tiny_checkpoint
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("gm") / "ckpt")
    return ckpt, load_pipeline(str(ckpt), progress=False)


KW = dict(size="32*32", frame_num=5, sample_steps=4, seed=3, guide_scale=5.0, output_type="latent")


def test_the_pipeline_stays_put_on_its_first_step_and_records_the_method(tiny):
    from openwan.pipelines.job import make_noise
    _, pipe = tiny
    after = {}
    out = pipe("a red ball", guide_method="cfg-zero-star", callback=lambda i, t, x: after.setdefault(i, x.clone()),
               **KW)
    first = after[0][0] if after[0].ndim == 5 else after[0]
    noise = make_noise(first.shape, 3, "cpu")
    # zero velocity: x0 = x, and the step from sigma_0 to sigma_1 maps x to sigma_1 x + (1 - sigma_1) x = x (up to
    # the solver's fp rounding: a few ulps of the sample's magnitude)
    assert (first - noise).abs().max() <= 16 * EPS * noise.abs().max()
    assert out.settings["guide_method"] == "cfg-zero-star"
    plain = pipe("a red ball", **KW)
    assert "guide_method" not in plain.settings and (plain.latents - out.latents).abs().max() > 1e-4
    assert torch.equal(pipe("a red ball", guide_method="cfg", **KW).latents, plain.latents)
    with pytest.raises(ValueError, match="guide_method must be one of \\['cfg', 'cfg-zero-star'\\]"):
        pipe("a red ball", guide_method="apg", **KW)


def test_the_cli_records_and_replays_it(tiny, tmp_path):
    from openwan.cli import main
    from openwan.video import read_video
    ckpt, _ = tiny
    out = tmp_path / "a.mp4"
    assert main(["generate", "a red ball", "--ckpt_dir", str(ckpt), "--size", "32*32", "--frame_num", "5",
                 "--sample_steps", "3", "--guide_method", "cfg-zero-star", "-o", str(out), "--quiet"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["openwan"]["guide_method"] == "cfg-zero-star"
    assert main(["generate", "--from", str(out.with_suffix(".json")), "-o", str(tmp_path / "b.mp4"), "--quiet"]) == 0
    assert (read_video(out)[0] == read_video(tmp_path / "b.mp4")[0]).all()
