"""Wan 2.2 pipelines: the A14B mixture of experts (t2v, i2v) and TI2V-5B, against the Wan 2.2 reference's own
sampling runs (../shared/reference22), the expert switch and its memory plan (checkpoint folders and diffusers
parity: test_wan22_folders.py)."""
import pytest
import torch
from safetensors.torch import load_file
from wan22_helpers import (NEG, PROMPT, REF22, check_run, expert, moe_pipe, reference22_meta, run_bound, vae21,
                           vae22, with_prompts)

from openwan.pipelines.base import Components, lookup_variant


@pytest.fixture(scope="module")
def meta():
    return reference22_meta()


# --------------------------------------------------------------------------- A14B golden runs

@pytest.mark.parametrize("name,solver", [("moe_t2v_unipc", "unipc"), ("moe_t2v_dpmpp", "dpm++")])
def test_moe_t2v_golden_run(meta, name, solver):
    m = meta[name]
    sd = load_file(str(REF22 / f"{name}.safetensors"))
    weights = load_file(str(REF22 / "moe_t2v_unipc.safetensors"))
    vae = vae21(load_file(str(REF22 / "moe_i2v.safetensors")))   # any z-16 VAE: the run stops at the latent
    pipe = with_prompts(moe_pipe(name, meta, weights, vae), sd)
    assert pipe.boundary == m["boundary"]
    w, h = m["size_WxH"]
    job = pipe.prepare(PROMPT, negative_prompt=NEG, size=f"{w}*{h}", frame_num=m["frame_num"],
                       sample_steps=m["steps"], sample_shift=m["shift"], sample_solver=solver, seed=m["seed"],
                       strict_size=False, output_type="latent")
    assert job.guidance.scale == tuple(m["guide_scale_low_high"])      # the t2v-A14B defaults (3, 4)
    assert job.start.shape == tuple(m["latent_shape"])
    assert torch.equal(job.start, sd["in.noise"])                      # the seed's CPU noise, bit for bit
    _, experts = check_run(pipe, job, sd, m, 4.0)
    assert experts == m["experts"]
    assert pipe.last_switch.used == m["experts"]                       # 7 high, then 3 low
    s = job.stats
    assert (s["dit_forwards_high"], s["dit_forwards_low"], s["dit_forwards"]) == (7, 3, 10)   # batched CFG
    assert [int(sd[f"step{i}.timestep"]) for i in range(m["steps"])] == m["timesteps"]


def test_moe_guide_scales_are_per_expert(meta):
    """Swapping the two scales changes the run (the golden run uses low 3 / high 4, not one scale)."""
    sd = load_file(str(REF22 / "moe_t2v_unipc.safetensors"))
    pipe = with_prompts(moe_pipe("moe_t2v_unipc", meta, sd, vae21(load_file(str(REF22 / "moe_i2v.safetensors")))),
                        sd)
    job = pipe.prepare(PROMPT, negative_prompt=NEG, size="48*32", frame_num=5, sample_steps=10, sample_shift=12.0,
                       seed=42, guide_scale=(4.0, 3.0), strict_size=False, output_type="latent")
    assert job.guidance.scale == (4.0, 3.0)
    latent = pipe.run(job)
    assert (latent - sd["out.final_latent"]).abs().max().item() > 100 * run_bound(sd, 10, 4.0)


def test_moe_i2v_golden_run(meta):
    m = meta["moe_i2v"]
    sd = load_file(str(REF22 / "moe_i2v.safetensors"))
    pipe = with_prompts(moe_pipe("moe_i2v", meta, sd, vae21(sd)), sd)
    assert pipe.c.image_encoder is None and pipe.default_negative_prompt() == pipe.defaults().negative_prompt
    job = pipe.prepare(PROMPT, negative_prompt=NEG, image=sd["in.image_uint8"].numpy(), size="48*32",
                       frame_num=m["frame_num"], sample_steps=m["steps"], seed=m["seed"], strict_size=False)
    assert job.settings["sample_shift"] == 5.0 and job.guidance.scale == (3.5, 3.5)
    assert job.cond.clip_fea is None
    y = sd["out.y"]     # 4 mask channels + the 2.1 VAE's latent of (image, 4 zero frames)
    # a VAE encode: the README's single-module bound, as tests/test_vae.py (measured 6.6e-7)
    assert (job.cond.y - y).abs().max().item() <= 1e-5
    assert torch.equal(job.start, sd["in.noise"])
    latent, experts = check_run(pipe, job, sd, m, 3.5)
    assert experts == m["experts"] and pipe.last_switch.used == m["experts"]   # 4 high, 6 low
    video = pipe.vae.decode(latent[None])[0]
    # README's bound for the decoded video (|video| <= 1; the latent is within run_bound): measured 8e-7
    assert (video - sd["out.video"]).abs().max().item() <= 1e-4


def test_expert_memory_plan_one_expert_on_device(meta):
    """With faked device moves: at every forward only the active expert is on the device, the idle one left
    before the other came in; plan "both" never moves one out."""
    sd = load_file(str(REF22 / "moe_t2v_unipc.safetensors"))
    vae = vae21(load_file(str(REF22 / "moe_i2v.safetensors")))
    for plan in ("one", "both"):
        pipe = with_prompts(moe_pipe("moe_t2v_unipc", meta, sd, vae, experts=plan), sd)
        place = {id(e): "offload" for e in pipe.experts.values()}
        fake_dev = torch.device("meta")          # stands for the accelerator; nothing really moves
        pipe.offload_device = torch.device("cpu")
        events = []

        def where(mod):
            return fake_dev if place[id(mod)] == "device" else torch.device("cpu")

        def move(mod, dev, events=events):
            place[id(mod)] = "device" if dev == fake_dev else "offload"
            events.append((next(k for k, e in pipe.experts.items() if e is mod), place[id(mod)]))
            assert plan == "both" or sum(v == "device" for v in place.values()) <= 1

        pipe.where, pipe.move = where, move
        orig = pipe.activate

        def activate(name, orig=orig):
            pipe._device, saved = fake_dev, pipe._device      # residency decisions against the fake device
            try:
                orig(name)
            finally:
                pipe._device = saved
            assert place[id(pipe.experts[name])] == "device"
            if plan == "one":
                assert sum(v == "device" for v in place.values()) == 1
        pipe.activate = activate
        job = pipe.prepare(PROMPT, negative_prompt=NEG, size="48*32", frame_num=5, sample_steps=10,
                           sample_shift=12.0, seed=42, strict_size=False, output_type="latent")
        pipe.run(job)
        if plan == "one":
            assert events == [("high", "device"), ("high", "offload"), ("low", "device")]
        else:
            assert events == [("high", "device"), ("low", "device")]


# --------------------------------------------------------------------------- TI2V golden runs

def ti2v_pipe(meta):
    from openwan.pipelines.ti2v import TextImageToVideo
    sd = load_file(str(REF22 / "dit_ti2v.safetensors"))
    dit = expert(sd, "model.", meta["dit_ti2v"]["config"])
    var = lookup_variant("ti2v-5B")
    var = var.replace(dit=dit.config, sample=var.sample.replace(sizes=()))
    return TextImageToVideo(Components(dit, vae22(), None, None, var, "golden"), progress=False)


@pytest.mark.parametrize("mode", ["t2v", "i2v"])
def test_ti2v_golden_run(meta, mode):
    name = f"ti2v_pipeline_{mode}"
    m = meta[name]
    sd = load_file(str(REF22 / f"{name}.safetensors"))
    pipe = with_prompts(ti2v_pipe(meta), sd)
    w, h = m["size_WxH"]
    image = sd["in.image_uint8"].numpy() if mode == "i2v" else None
    job = pipe.prepare(PROMPT, negative_prompt=NEG, image=image, size=f"{w}*{h}", frame_num=m["frame_num"],
                       sample_steps=m["steps"], sample_shift=m["shift"], guide_scale=m["guide_scale"],
                       seed=m["seed"], strict_size=False)
    assert job.start.shape == tuple(m["latent_shape"])
    if mode == "i2v":
        z = sd["out.image_latent"]
        # a VAE encode: the README's single-module bound, as tests/test_vae22.py (measured 1.7e-6)
        assert (job.cond.first_frame - z).abs().max().item() <= 1e-5
        assert torch.equal(job.start[:, 1:], sd["in.noise"][:, 1:])
        assert torch.equal(job.start[:, :1], job.cond.first_frame)
    else:
        assert torch.equal(job.start, sd["in.noise"])
    # the DiT's timestep vector at every step (0 on latent frame 0's 6 tokens in i2v mode)
    got = []
    orig = pipe.dit.forward

    def spy(x, t, ctx, **kw):
        got.append(t.clone())
        return orig(x, t, ctx, **kw)
    pipe.dit.forward = spy
    try:
        latent, _ = check_run(pipe, job, sd, m, m["guide_scale"])
    finally:
        del pipe.dit.forward
    run_ts = got[-m["steps"]:]           # the run's calls (after the replay's 2 per step)
    for i, t in enumerate(run_ts):
        ref = sd[f"step{i}.timestep"]
        assert t.shape[0] == 2                       # cond + uncond batched
        tok = t[0].reshape(-1)
        tok = tok.expand(ref.numel()) if tok.numel() == 1 else tok   # t2v: one t for every token
        assert torch.equal(tok, ref.to(t.dtype)), i
    if mode == "i2v":
        assert (run_ts[0][0][:6] == 0).all() and (run_ts[0][0][6:] == 999).all()
    video = pipe.vae.decode(latent[None])[0]
    assert (video - sd["out.video"]).abs().max().item() <= 1e-4      # README's bound (measured <= 1.9e-6)
    out = pipe.finish(latent, {}, "uint8")
    assert out.frames[0].shape == (m["frame_num"], h, w, 3) and pipe.variant.sample.fps == 24


def test_ti2v_size_rule():
    from openwan.pipelines.ti2v import ti2v_size
    assert ti2v_size(1920, 1080, 1280 * 704) == (1248, 704)
    assert ti2v_size(512, 512, 1280 * 704) == (960, 928)
    assert ti2v_size(96, 64, 6144) == (96, 64)
