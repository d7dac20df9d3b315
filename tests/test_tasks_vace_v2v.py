"""VACE (inpainting from files, conditioning by hand, parity with diffusers' WanVACEPipeline) and video-to-video
(end to end, strength, parity) on tiny random weights; the other tasks: test_tasks.py."""

import numpy as np
import pytest
import torch
from bounds import float64_twin, guided_run_bound, noise_floor
from PIL import Image
from task_helpers import (NEG, PROMPT, LargestVelocity, diffusers_scheduler, fp32_numerics,
                          last_latent, make_ckpts, pipe_getter, random_video, save_png, smooth_image)

from openwan import sampling
from openwan.models.text_encoder import TINY_TOKENIZER_DIR
from openwan.pipelines import load_pipeline
from openwan.pipelines.base import make_noise
from openwan.pipelines.i2v import image_to_tensor
from openwan.pipelines.vace import fold_mask, vace_context
from openwan.video import read_video, read_video_metadata, write_video


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return make_ckpts(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def pipes(ckpts):
    return pipe_getter(ckpts)


# --------------------------------------------------------------------------- VACE

def test_vace_end_to_end_inpaint_files(pipes, tmp_path):
    pipe = pipes("vace")
    src = write_video(random_video(9, 32, 64), tmp_path / "src.mp4")
    mask = np.zeros((9, 32, 64, 3), np.uint8)
    mask[:, 8:24, 16:48] = 255
    msk = write_video(mask, tmp_path / "mask.mp4")
    r1 = save_png(smooth_image(40, 48), tmp_path / "r1.png")
    r2 = save_png(smooth_image(32, 64, seed=2), tmp_path / "r2.png")
    got = {}
    out = pipe(PROMPT, src_video=str(src), src_mask=str(msk), src_ref_images=f"{r1},{r2}", context_scale=0.8,
               seed=2, sample_steps=3, output_path=tmp_path / "vace.mp4", callback=last_latent(got))
    frames, fps = read_video(out.path)
    assert frames.shape == (9, 32, 64, 3) and fps == 16
    assert got["latent"].shape == (16, 2 + 3, 4, 8)                    # two reference frames denoised ...
    meta = read_video_metadata(out.path)["openwan"]                    # ... and dropped before decoding
    assert meta["src_ref_images"] == f"{r1},{r2}" and meta["context_scale"] == 0.8
    assert meta["src_video"] == str(src) and meta["src_mask"] == str(msk) and meta["frame_num"] == 9


def test_vace_context_by_hand(pipes):
    pipe = pipes("vace")
    vae = pipe.vae
    frames = image_to_tensor(random_video(1, 32, 64)[0])[:, None].repeat(1, 5, 1, 1) * torch.linspace(1, 0.2, 5)[
        None, :, None, None]
    mask = torch.zeros(5, 32, 64)
    mask[:, :, 29:] = 0.8                                              # > 0.5: generate the right part
    ref = image_to_tensor(smooth_image(32, 64))
    with torch.no_grad():
        ctx = pipe.encode_context(frames, mask, [ref])
        keep = vae.encode((frames * (mask < 0.5))[None])[0]
        gen = vae.encode((frames * (mask > 0.5))[None])[0]
        ref_lat = vae.encode(ref[None, :, None])[0]
    assert ctx.shape == (96, 1 + 2, 4, 8)
    # equal bit for bit: the context encodes frames x (1 - [mask > 0.5]) and frames x [mask > 0.5], the same values
    # as frames x [mask < 0.5] and frames x [mask > 0.5] here (the mask is 0 or 0.8, none at the threshold; x 1 and
    # x 0 are exact), in the same shapes, with the same VAE in this process: the same kernels on the same inputs
    assert torch.equal(ctx[:16, 1:], keep)                             # inactive: what is kept
    assert torch.equal(ctx[16:32, 1:], gen)                            # reactive: what is generated
    assert torch.equal(ctx[:16, :1], ref_lat)                          # reference latent first in time ...
    assert not ctx[16:, :1].any()                                      # ... padded with zeros, mask zeros
    assert torch.equal(ctx[32:, 1:], fold_mask(mask))                  # the soft (0.8) mask values, folded
    # no source: zero video, mask all ones, both halves the same latent
    with torch.no_grad():
        ctx0 = pipe.encode_context(torch.zeros(3, 5, 32, 64), torch.ones(5, 32, 64))
        zero_lat = vae.encode(torch.zeros(1, 3, 5, 32, 64))[0]
    assert torch.equal(ctx0[:16], ctx0[16:32]) and torch.equal(ctx0[:16], zero_lat)     # zeros x 1: as above
    assert (ctx0[32:] == 1).all()


def test_vace_from_scratch_and_control_video(pipes):
    pipe = pipes("vace")
    kw = dict(seed=5, sample_steps=2, output_type="latent")
    scratch = pipe(PROMPT, frame_num=5, **kw).latents
    assert scratch.shape == (16, 2, 4, 8)
    control = pipe(PROMPT, src_video=random_video(7, 32, 64), **kw).latents      # 7 frames -> first 5 used
    assert control.shape == (16, 2, 4, 8) and not torch.equal(control, scratch)
    off = pipe(PROMPT, src_video=random_video(7, 32, 64), context_scale=0.0, **kw).latents
    assert (off - scratch).abs().max() > 0                             # scale 0 drops the hints ...
    assert torch.equal(pipe(PROMPT, context_scale=0.0, **kw).latents, off)   # ... so any control gives the same
    bigger = pipe(PROMPT, src_video=random_video(5, 64, 96), **kw).latents        # fitted to 64x32 by cover+crop
    assert bigger.shape == (16, 2, 4, 8)


def _diffusers_vace(ck, shift):
    from diffusers import AutoencoderKLWan, WanVACEPipeline, WanVACETransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel
    pipe = WanVACEPipeline(
        tokenizer=AutoTokenizer.from_pretrained(str(TINY_TOKENIZER_DIR)),
        text_encoder=UMT5EncoderModel.from_pretrained(ck / "text_encoder"),
        vae=AutoencoderKLWan.from_pretrained(ck / "vae"),
        transformer=WanVACETransformer3DModel.from_pretrained(ck / "transformer"), scheduler=diffusers_scheduler(shift))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_vace_parity_with_diffusers(pipes, ckpts):
    """Inpainting with one reference image of another size (fitted on a white canvas by both), same
    weights, noise and grid as diffusers' WanVACEPipeline. One reference only: diffusers prepends
    several in reverse order (the reference keeps their order). Differences are float rounding."""
    pytest.importorskip("diffusers")
    ours = fp32_numerics(pipes("vace-diffusers"))
    theirs = _diffusers_vace(ckpts["vace-diffusers"], shift=16.0)
    video = random_video(5, 32, 64, seed=3)
    mask = np.zeros((5, 32, 64), np.uint8)
    mask[:, 5:27, 13:50] = 255              # edges inside 8x8 blocks: the folding order matters
    mask[3:, :, 50:] = 255                  # and it changes over time
    ref = smooth_image(40, 48, seed=4)
    pil_video = [Image.fromarray(f) for f in video]
    pil_mask = [Image.fromarray(m).convert("RGB") for m in mask]
    got = {}
    with torch.no_grad():
        v, m, refs = theirs.preprocess_conditions(pil_video, pil_mask, [Image.fromarray(ref)], 1, 32, 64, 5,
                                                  torch.float32, "cpu")
        ref_ctx = torch.cat([theirs.prepare_video_latents(v, m, refs, None, "cpu"), theirs.prepare_masks(m, refs)], 1)
        frames, msk, ref_t, _ = ours.prepare_inputs(video, mask, [ref], None, 64, 32)
        got_ctx = ours.encode_context(frames, msk, ref_t)
        assert torch.equal(got_ctx[32:], ref_ctx[0, 32:])                # the folded masks: exact
        # the latents, as tests/test_vae.py: each side's fp32 rounding against the same code run with its VAE in
        # float64 (diffusers' normalizes in fp32 as ours does: the twins agree), twice the larger floor (6.6e-7
        # here); a latent of the wrong part of the frame, or out of order, is O(0.1) off
        vae32 = theirs.vae
        theirs.vae = float64_twin(vae32)
        try:
            ref64 = theirs.prepare_video_latents(v, m, refs, None, "cpu")[0].float()
        finally:
            theirs.vae = vae32
        floor = noise_floor((got_ctx[:32], vace_context(float64_twin(ours.vae), frames, msk, ref_t)[:32]),
                            (ref_ctx[0, :32], ref64))
        assert (got_ctx[:32] - ref_ctx[0, :32]).abs().max().item() <= 2 * floor

        with LargestVelocity(ours) as vmax:
            out = ours(PROMPT, NEG, src_video=video, src_mask=mask, src_ref_images=[ref], context_scale=0.7, seed=0,
                       sample_steps=4, guide_scale=5.0, cfg_batch=False, callback=last_latent(got))

        def grab(p, i, t, kw):
            got["theirs"] = kw["latents"]
            return {}
        frames_ref = theirs(video=pil_video, mask=pil_mask, reference_images=[Image.fromarray(ref)],
                            conditioning_scale=0.7, prompt=PROMPT, negative_prompt=NEG, height=32, width=64,
                            num_frames=5, num_inference_steps=4, guidance_scale=5.0,
                            latents=make_noise((16, 3, 4, 8), 0, "cpu")[None], output_type="np",
                            callback_on_step_end=grab).frames[0]
    # reference frame included; the DiT passes differ by rounding only (the contexts agree to a few ulps):
    # guided_run_bound, 16 ulps of max |v| x (2g + 1) over the run: 4.3e-5 here (measured 2.6e-6); 5 steps for 4
    # are O(0.1) off
    diff = (got["latent"] - got["theirs"][0]).abs().max().item()
    assert diff <= guided_run_bound(vmax.value, 5.0)
    assert np.abs(out.frames[0].astype(np.float32) - frames_ref * 255).max() <= 1.01


# --------------------------------------------------------------------------- video-to-video

def test_v2v_end_to_end_mp4(pipes, tmp_path):
    pipe = pipes("t2v", task="v2v")
    assert pipe.task == "v2v"
    src = write_video(random_video(10, 48, 80), tmp_path / "src.mp4")   # 10 frames -> 9 used; 80x48 -> 64x32
    out = pipe(PROMPT, src_video=str(src), strength=0.9, seed=4, sample_steps=6, sample_shift=1.0,
               output_path=tmp_path / "v2v.mp4")
    frames, fps = read_video(out.path)
    assert frames.shape == (9, 32, 64, 3) and fps == 16
    meta = read_video_metadata(out.path)["openwan"]
    assert meta["src_video"] == str(src) and meta["strength"] == 0.9 and meta["task"] == "v2v"
    assert meta["steps_run"] == len(sampling.sigmas_for_strength(6, 1.0, 0.9)) - 1 == 5


def test_v2v_starts_from_the_noised_source(pipes, monkeypatch):
    pipe = pipes("t2v", task="v2v")
    video = random_video(5, 32, 64, seed=9)
    seen = []
    orig = pipe.dit.forward

    def spy(x, t, *a, **k):
        seen.append((x.clone(), t.clone()))
        return orig(x, t, *a, **k)

    monkeypatch.setattr(pipe.dit, "forward", spy)
    pipe(PROMPT, src_video=video, strength=0.5, seed=11, sample_steps=10, sample_shift=2.0, guide_scale=1.0,
         output_type="latent")
    sigmas = sampling.sigmas_for_strength(10, 2.0, 0.5)
    assert len(seen) == len(sigmas) - 1 and sigmas[0] <= 0.5
    with torch.no_grad():
        x0 = pipe.vae.encode(torch.from_numpy(video).permute(3, 0, 1, 2)[None].float() / 127.5 - 1)[0]
    expected = sampling.add_noise(x0, make_noise(x0.shape, 11, "cpu"), sigmas[0].float())
    # equal bit for bit: video_to_tensor's (x / 255 - 0.5) / 0.5 is x / 127.5 - 1 exactly (the factor 2 is exact), in
    # the same layout (fit_video returns a frame of the target size unchanged), so the same VAE encode and add_noise
    # in this process give the same latent; another sigma or seed is O(0.1) off
    assert torch.equal(seen[0][0][0], expected)
    assert seen[0][1].item() == sampling.timesteps_from_sigmas(sigmas[:1]).item()


def test_a_task_can_have_its_own_default_guidance_interval(ckpts, tmp_path):
    """SampleDefaults.task_guidance: v2v guides its high-noise steps harder by default (the demo's recolouring);
    other tasks keep the variant's scale; an explicit guide_scale wins; the record round-trips openwan.json."""
    from openwan.configs import get_variant
    from openwan.variant_io import read_variant, write_variant
    base = get_variant("tiny-t2v")
    variant = base.replace(sample=base.sample.replace(task_guidance=(("v2v", 1.0, 4.0, 0.9),)))
    write_variant(variant, tmp_path)
    assert read_variant(tmp_path).sample.for_task("v2v") == variant.sample.for_task("v2v")
    t2v = load_pipeline(ckpts["t2v"], task="t2v", variant=variant, progress=False)
    v2v = load_pipeline(ckpts["t2v"], task="v2v", variant=variant, progress=False)
    assert t2v.defaults().guide_scales is None and t2v.defaults().boundary is None
    assert v2v.defaults().guide_scales == (1.0, 4.0) and v2v.defaults().boundary == 0.9
    kw = dict(src_video=random_video(5, 32, 64, seed=2), strength=1.0, seed=5, sample_steps=4, frame_num=5,
              output_type="latent")
    out = v2v(PROMPT, **kw)
    assert out.settings["guide_scale"] == (1.0, 4.0) and out.settings["guide_boundary"] == 0.9
    same = v2v(PROMPT, guide_scale=(1.0, 4.0), guide_boundary=0.9, **kw)
    assert torch.equal(out.latents, same.latents)
    plain = v2v(PROMPT, guide_scale=4.0, **kw)
    assert plain.settings["guide_scale"] == 4.0 and "guide_boundary" not in plain.settings
    assert not torch.allclose(plain.latents, out.latents)
    assert t2v(PROMPT, seed=5, sample_steps=2, frame_num=5, output_type="latent").settings["guide_scale"] == \
        base.sample.guide_scale


@pytest.mark.parametrize("name", ["i2v", "flf2v", "vace"])
def test_batched_cfg_equals_separate_passes(pipes, name):
    """cond + uncond in one batched forward: y / clip features / vace context are duplicated right
    (flf2v: the [2, 257] features of both frames become [4, 257] = two samples of 514 tokens)."""
    img = smooth_image(32, 64)
    inputs = {"i2v": dict(image=img), "flf2v": dict(first_frame=img, last_frame=img[::-1].copy()),
              "vace": dict(src_video=random_video(5, 32, 64), src_ref_images=[img])}[name]
    kw = dict(seed=6, sample_steps=2, guide_scale=4.0, output_type="latent", **inputs)
    with LargestVelocity(pipes(name)) as vmax:
        a = pipes(name)(PROMPT, cfg_batch=True, **kw).latents
        b = pipes(name)(PROMPT, cfg_batch=False, **kw).latents
    # batch 2 vs 1 may pick other kernels: each DiT pass within 16 ulps of max |v|, the guided v within 2g + 1 times
    # that, over the run (guided_run_bound): 3.2e-5..3.5e-5 here (measured <= 1.7e-6); a guidance scale of 3.9 is
    # 2e-3 off, none (uncond fed the condition) 0.06
    assert (a - b).abs().max().item() <= guided_run_bound(vmax.value, 4.0)
