"""The model call as an object (Denoiser, Conditioning, wrappers), the pipeline's prepare/run/complete split,
residency under the memory plan, the bounded prompt memo and the settings record's stats."""
import numpy as np
import pytest
import torch

from openwan import sampling
from openwan.denoiser import Conditioning, Denoiser, Guidance, Wrapper
from openwan.pipelines import base, load_pipeline
from openwan.testing import make_tiny_checkpoint


class FakeDiT(torch.nn.Module):
    """Records every call; v = x * (1 + mean of the context) + t / 1000 (so cond and uncond differ)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.calls = []

    def forward(self, x, t, context, **kw):
        self.calls.append((x.shape[0], t.clone(), [c.clone() for c in context], kw))
        scale = torch.stack([1 + c.mean() for c in context]).view(-1, *[1] * (x.ndim - 1))
        return x * scale * self.w + t.view(-1, *[1] * (x.ndim - 1)) / 1000


def _step(t=500, i=0, n=1):
    return sampling.Step(i, n, torch.tensor([t]), t / 1000, 0.0)


def _cond(**kw):
    g = torch.Generator().manual_seed(0)
    return Conditioning(torch.randn(3, 8, generator=g), torch.randn(2, 8, generator=g), **kw)


def test_conditioning_batches_and_slices_itself():
    y, vace, clip = torch.randn(20, 5, 2, 2), torch.randn(96, 5, 2, 2), torch.randn(2, 7, 4)
    c = _cond(y=y, clip_fea=clip, vace_context=vace, vace_scale=0.5)
    one, two = c.batch(1), c.batch(2)
    assert torch.equal(one["y"], y[None]) and one["clip_fea"] is clip and torch.equal(one["vace_context"], vace[None])
    assert torch.equal(two["y"], torch.stack([y, y])) and torch.equal(two["vace_context"], torch.stack([vace, vace]))
    assert torch.equal(two["clip_fea"], torch.cat([clip, clip]))    # flf2v: [2, 7, 4] -> [4, 7, 4] (two samples)
    assert one["vace_context_scale"] == two["vace_context_scale"] == 0.5
    assert _cond().batch(2) == {}                                      # t2v: no extra inputs at all
    w = c.frames(1, 3)
    assert torch.equal(w.y, y[:, 1:3]) and torch.equal(w.vace_context, vace[:, 1:3])
    assert w.clip_fea is clip and w.context is c.context and w.vace_scale == 0.5
    assert [t.shape[0] for t in c.contexts(True)] == [3, 2] and len(c.contexts(False)) == 1


@pytest.mark.parametrize("scale, cfg_batch, passes", [(4.0, True, [2]), (4.0, False, [1, 1]), (1.0, True, [1])])
def test_denoiser_guidance_and_forward_counts(scale, cfg_batch, passes):
    dit, c = FakeDiT(), _cond(y=torch.randn(4, 2, 2, 2))
    d = Denoiser(dit, c, Guidance(scale, cfg_batch))
    x = torch.randn(2, 2, 2, 2, generator=torch.Generator().manual_seed(3))
    v = d(x, _step(700))
    assert [b for b, *_ in dit.calls] == passes
    assert d.stats == {"dit_forwards": len(passes), "dit_forwards_skipped": 0} and d.passes == len(passes)
    cond = x * (1 + c.context.mean()) + 0.7
    uncond = x * (1 + c.context_null.mean()) + 0.7
    expected = cond if scale == 1.0 else uncond + scale * (cond - uncond)
    # the fake's arithmetic differs in order between the batched and the single pass: a few ulps of |v|
    assert (v - expected).abs().max() <= 8 * torch.finfo(torch.float32).eps * expected.abs().max()
    first = dit.calls[0]
    assert torch.equal(first[3]["y"], c.batch(first[0])["y"])
    assert torch.equal(first[2][0], c.context)


def test_wrappers_compose_and_see_the_inner_denoiser():
    class Double(Wrapper):
        def __call__(self, x, step):
            return 2 * self.inner(x, step)

    dit = FakeDiT()
    d = Double(Double(Denoiser(dit, _cond(), Guidance(1.0))))
    x = torch.ones(1, 1, 1, 1)
    assert torch.equal(d(x, _step(0)), 4 * Denoiser(FakeDiT(), _cond(), Guidance(1.0))(x, _step(0)))
    assert d.dit is dit and d.stats["dit_forwards"] == 1 and d.passes == 1


# --------------------------------------------------------------------------- pipelines

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "t2v", "tiny-t2v")


@pytest.fixture(scope="module")
def pipe(ckpt):
    return load_pipeline(ckpt, variant="tiny-t2v", progress=False)


def test_prepare_run_complete_equals_the_call(pipe):
    kw = dict(seed=4, sample_steps=3, frame_num=5)
    whole = pipe("a red circle", **kw)
    job = pipe.prepare("a red circle", **kw)
    assert isinstance(job, base.Job) and job.start.shape == (16, 2, 4, 8)
    seen = []
    latent = pipe.run(job, on_step=lambda step, x, x0: seen.append((step.i, step.n, x0.shape)))
    assert seen == [(i, 3, (16, 2, 4, 8)) for i in range(3)]
    out = pipe.complete(job, latent)
    assert np.array_equal(out.frames[0], whole.frames[0])


def test_run_checks_cancelled_before_every_step(pipe):
    job = pipe.prepare("a red circle", seed=1, sample_steps=4, frame_num=5)
    steps = []
    with pytest.raises(base.Cancelled):
        pipe.run(job, on_step=lambda step, x, x0: steps.append(step.i), cancelled=lambda: len(steps) >= 2)
    assert steps == [0, 1]                              # two steps ran, the third was never started
    assert job.stats["dit_forwards"] == 2
    with pytest.raises(base.Cancelled):
        pipe.run(pipe.prepare("a red circle", seed=1, sample_steps=4), cancelled=lambda: True)


def test_settings_record_stats_and_step_cache(pipe, tmp_path):
    from openwan.video import read_video_metadata
    out = pipe("a red circle", seed=1, sample_steps=3, frame_num=5, output_path=tmp_path / "a.mp4")
    s = out.settings
    assert s["step_cache"] == "none"
    st = s["stats"]
    assert st["dit_forwards"] == 3 and st["dit_forwards_skipped"] == 0     # batched cond+uncond counts once
    assert all(st[k] >= 0 for k in ("load", "text", "denoise", "decode", "write"))
    meta = read_video_metadata(out.path)["openwan"]       # the file keeps the counts, not the wall seconds
    assert meta["stats"] == {"dit_forwards": 3, "dit_forwards_skipped": 0} and meta["step_cache"] == "none"
    unbatched = pipe("a red circle", seed=1, sample_steps=3, frame_num=5, cfg_batch=False, output_type="latent")
    assert unbatched.settings["stats"]["dit_forwards"] == 6
    assert pipe("a", seed=1, sample_steps=2, guide_scale=1.0, output_type="latent").settings["stats"][
        "dit_forwards"] == 2


def test_prompt_memo_is_bounded(pipe, monkeypatch):
    monkeypatch.setattr(base, "PROMPT_MEMO_MAX", 3)
    pipe._prompt_memo.clear()
    for i in range(6):
        pipe.encode_prompts([f"prompt {i}", ""])
    assert list(pipe._prompt_memo) == ["prompt 4", "prompt 5", ""]       # the least recently used went first
    again = pipe.encode_prompts(["prompt 0"])[0]                       # re-encoded, same features
    assert torch.equal(again, pipe.c.text_encoder.encode(["prompt 0"])[0].float())


def test_sequential_offload_brings_the_dit_back_for_the_next_call(ckpt, monkeypatch):
    """offload='sequential' moves the DiT off the device after the loop; the next call must run it on the
    pipeline's device again (the device is stored, not read from the DiT). Device moves are faked: the DiT's
    ``to`` records where it is sent and the pipeline reads that location."""
    p = load_pipeline(ckpt, variant="tiny-t2v", offload="sequential", progress=False)
    assert p.device == torch.device("cpu")
    p.offload_device = torch.device("meta")               # a second "device" to offload to (never really used)
    where = {"dit": torch.device("cpu")}
    moves = []

    def fake_to(device, *a, **k):
        moves.append(torch.device(device))
        where["dit"] = torch.device(device)
        return p.dit

    vae_moves = []                                        # the VAE also leaves after decoding (faked the same way)
    where["vae"] = torch.device("cpu")

    def fake_vae_to(device, *a, **k):
        vae_moves.append(torch.device(device))
        where["vae"] = torch.device(device)
        return p.vae

    real_module_device = base.module_device
    monkeypatch.setattr(p.dit, "to", fake_to)
    monkeypatch.setattr(p.vae, "to", fake_vae_to)
    monkeypatch.setattr(base, "module_device",
                        lambda m: where["dit"] if m is p.dit else where["vae"] if m is p.vae else real_module_device(m))
    inputs = []
    orig = p.dit.forward

    def spy(x, *a, **k):
        inputs.append((x.device, where["dit"]))
        return orig(x, *a, **k)

    monkeypatch.setattr(p.dit, "forward", spy)
    a = p("a red circle", seed=1, sample_steps=2).frames[0]
    assert moves == [torch.device("meta")]                # off the device after the loop, before decoding
    b = p("a red circle", seed=1, sample_steps=2).frames[0]
    assert moves == [torch.device("meta"), torch.device("cpu"), torch.device("meta")]
    assert p.device == torch.device("cpu")
    assert inputs == [(torch.device("cpu"), torch.device("cpu"))] * 4   # every forward on the pipeline's device
    assert vae_moves == [torch.device("meta"), torch.device("cpu"), torch.device("meta")]   # out after each decode
    assert np.array_equal(a, b)


def test_job_post_step_and_reproducible_consistency_solver(pipe):
    job = pipe.prepare("a red circle", seed=2, sample_steps=3, frame_num=5, output_type="latent")
    seen = []

    def post_step(step, x, x0):
        out = x.clone()
        out[:, 0] = 0.0                                   # re-impose a "known" first latent frame
        return out

    job.post_step = post_step
    latent = pipe.run(job, on_step=lambda step, x, x0: seen.append(x[:, 0].abs().max().item()))
    assert seen == [0.0, 0.0, 0.0] and latent[:, 0].abs().max() == 0
    a = pipe("a red circle", seed=2, sample_steps=3, sample_solver="consistency", output_type="latent").latents
    b = pipe("a red circle", seed=2, sample_steps=3, sample_solver="consistency", output_type="latent").latents
    c = pipe("a red circle", seed=2, sample_steps=3, sample_solver="euler", output_type="latent").latents
    assert torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------- guidance interval

@pytest.mark.parametrize("cfg_batch", [True, False])
def test_guidance_interval_guides_the_high_noise_steps_only(cfg_batch):
    c = _cond()
    g = Guidance((1.0, 4.0), cfg_batch, boundary=0.6)
    x = torch.randn(2, 2, 2, 2, generator=torch.Generator().manual_seed(5))
    for t, scale in ((999, 4.0), (600, 4.0), (599, 1.0), (0, 1.0)):     # t >= 0.6 x 1000: the high scale
        assert g.scale_at(_step(t)) == scale
        dit = FakeDiT()
        d = Denoiser(dit, c, g)
        v = d(x, _step(t))
        plain = Denoiser(FakeDiT(), c, Guidance(scale, cfg_batch))(x, _step(t))
        assert torch.equal(v, plain)                                     # the same call as a plain scale
        n = 1 if scale == 1.0 or cfg_batch else 2                        # scale 1: the cond pass only
        assert len(dit.calls) == d.stats["dit_forwards"] == d.passes_at(_step(t)) == n
    assert g.scale_at() == 4.0 and Denoiser(FakeDiT(), c, g).guided      # guided somewhere
    # per-token timesteps (TI2V: clean frames at 0): the noisy tokens' t decides
    assert g.scale_at(sampling.Step(0, 1, torch.tensor([[0, 0, 700, 700]]), 0.7, 0.0)) == 4.0
    with pytest.raises(ValueError, match="boundary"):
        Guidance((1.0, 4.0)).scale_at(_step(700))


def test_pipeline_guidance_interval_is_recorded_and_exact(pipe, tmp_path):
    kw = dict(seed=3, sample_steps=4, frame_num=5, output_type="latent")
    same = pipe("a red circle", guide_scale=(5.0, 5.0), guide_boundary=0.9, **kw)
    plain = pipe("a red circle", guide_scale=5.0, **kw)
    assert torch.equal(same.latents, plain.latents)              # an interval of one scale is that scale, bit for bit
    half = pipe("a red circle", guide_scale=(1.0, 5.0), guide_boundary=0.9, **kw)
    assert half.settings["guide_scale"] == (1.0, 5.0) and half.settings["guide_boundary"] == 0.9
    assert "guide_boundary" not in plain.settings
    sigmas = sampling.sigmas_for("unipc", 4, pipe.defaults().shift)
    high = int(sum(float(s) * 1000 >= 900 for s in sigmas[:-1]))     # steps at t >= 900 (t = sigma x 1000)
    assert 0 < high < 4
    assert half.settings["stats"]["dit_forwards"] == 4         # batched: one pass per step either way
    unb = pipe("a red circle", guide_scale=(1.0, 5.0), guide_boundary=0.9, cfg_batch=False, **kw)
    assert unb.settings["stats"]["dit_forwards"] == 4 + high   # the uncond pass only while guided
    for other in (plain, pipe("a red circle", guide_scale=1.0, **kw)):
        assert not torch.allclose(half.latents, other.latents)
    with pytest.raises(ValueError, match="guide_boundary"):
        pipe("a red circle", guide_scale=(1.0, 5.0), **kw)          # a pair without a boundary: the fix named
    for bad in (0.0, 1.0, 1.5, "x"):
        with pytest.raises(ValueError, match="guide_boundary must be a number in \\(0, 1\\)"):
            pipe("a red circle", guide_scale=(1.0, 5.0), guide_boundary=bad, **kw)
