"""The task pipelines beyond T2V (i2v, flf2v, vace, v2v) on tiny random weights.

End to end (mp4 written and read back), parity with diffusers' WanImageToVideoPipeline and
WanVACEPipeline on the same weights, the conditioning tensors against hand-built expectations,
and bad inputs (clear ValueError, nothing written). VACE's and video-to-video's own tests: test_tasks_vace_v2v.py.
"""
import json

import numpy as np
import pytest
import torch
from bounds import EPS, float64_twin, fp32_bound, guided_run_bound, noise_floor
from PIL import Image
from task_helpers import (NEG, PROMPT, LargestVelocity, diffusers_scheduler, fp32_numerics,
                          last_latent, make_ckpts, pipe_getter, random_video, save_png, smooth_image)

from openwan.cli import main as cli
from openwan.configs import I2V_NEGATIVE_PREFIX, FLF2V_NEGATIVE_PREFIX, NEGATIVE_PROMPT
from openwan.models.image_encoder import CLIP_MEAN, CLIP_STD
from openwan.models.text_encoder import TINY_TOKENIZER_DIR
from openwan.pipelines import load_pipeline
from openwan.pipelines.base import make_noise
from openwan.pipelines.flf2v import match_last_frame
from openwan.pipelines.i2v import (fit_contain, fit_cover, frame_mask, i2v_size, image_condition, image_to_tensor,
                                   load_image)
from openwan.pipelines.vace import fold_mask, load_mask
from openwan.video import read_video, read_video_metadata, write_video


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return make_ckpts(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def pipes(ckpts):
    return pipe_getter(ckpts)


# --------------------------------------------------------------------------- helpers by hand

def test_i2v_size_rule():
    assert i2v_size(100, 100, 832 * 480) == (624, 624)        # sqrt(399360) = 631.9 -> 624 (39 * 16)
    assert i2v_size(300, 400, 832 * 480) == (544, 720)        # 4:3 landscape
    assert i2v_size(480, 832, 832 * 480) == (480, 832)        # exact aspect keeps its size (see docstring)
    assert i2v_size(720, 1280, 1280 * 720) == (720, 1280)
    assert i2v_size(40, 60, 64 * 32) == (32, 48)
    for ih, iw in [(37, 91), (1080, 1920), (1920, 1080), (500, 500)]:
        h, w = i2v_size(ih, iw, 832 * 480)
        assert h % 16 == 0 and w % 16 == 0 and abs(w / h - iw / ih) < 0.2
    with pytest.raises(ValueError, match="too elongated"):
        i2v_size(1, 500, 64 * 32)


def test_frame_mask_layout_by_hand():
    m = frame_mask(9, 2, 3)                                   # i2v: 9 frames -> 3 latent frames
    assert m.shape == (4, 3, 2, 3)
    assert torch.equal(m[:, 0], torch.ones(4, 2, 3)) and not m[:, 1:].any()
    m = frame_mask(9, 2, 3, known=(0, 8))                     # flf2v: last pixel frame is channel 3
    expected = torch.zeros(4, 3, 2, 3)
    expected[:, 0] = 1
    expected[3, 2] = 1
    assert torch.equal(m, expected)
    # the general rule: channel c of latent frame t > 0 is pixel frame 4t + c - 3
    m = frame_mask(9, 1, 1, known=(5,))                       # frame 5 = 4*2 + 0 - 3: channel 0, latent 2
    assert m.flatten().nonzero().flatten().tolist() == [0 * 3 + 2]


def test_load_image_conversions(tmp_path):
    rgb = smooth_image(6, 5)
    assert np.array_equal(load_image(rgb), rgb)
    assert np.array_equal(load_image(torch.from_numpy(rgb)), rgb)
    assert np.array_equal(load_image(Image.fromarray(rgb)), rgb)
    assert np.array_equal(load_image(save_png(rgb, tmp_path / "a.png")), rgb)
    grey = rgb[..., 0]
    assert np.array_equal(load_image(grey), np.repeat(grey[..., None], 3, -1))
    rgba = np.concatenate([rgb, np.zeros_like(rgb[..., :1])], -1)    # fully transparent -> white
    assert (load_image(rgba) == 255).all()
    rgba[..., 3] = 255                                                # opaque -> the colour
    assert np.array_equal(load_image(rgba), rgb)
    assert np.array_equal(load_image(rgb.astype(np.uint16) * 257), rgb)    # 16-bit scaled to 8
    assert np.array_equal(load_image(Image.fromarray(rgba, "RGBA")), rgb)
    with pytest.raises(ValueError, match="uint8"):
        load_image(rgb.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="shape"):
        load_image(np.zeros((3, 4, 5, 3), np.uint8))


def test_fit_helpers_by_hand():
    x = torch.arange(2 * 4 * 10, dtype=torch.float32).view(2, 4, 10)
    assert torch.equal(fit_cover(x, 4, 6), x[:, :, 2:8])              # same height: centre crop only
    assert fit_cover(x, 4, 10) is x
    assert fit_cover(x, 8, 8).shape == (2, 8, 8)
    img = torch.full((3, 10, 20), -1.0)                                # fit_contain: white canvas, centred
    out = fit_contain(img, 16, 16)
    assert out.shape == (3, 16, 16)
    assert (out[:, 4:12] == -1).all() and (out[:, :4] == 1).all() and (out[:, 12:] == 1).all()


def test_flf2v_last_frame_matching():
    first = image_to_tensor(smooth_image(40, 60))
    wide = image_to_tensor(smooth_image(40, 90, seed=1))
    assert torch.equal(match_last_frame(first, wide), wide[:, :, 15:75])     # no resize, centre crop
    tall = image_to_tensor(smooth_image(80, 60, seed=2))
    assert torch.equal(match_last_frame(first, tall), tall[:, 20:60])
    # a 2x (pixel-repeated) copy of the first frame comes back close to it, aspect intact
    big = first.repeat_interleave(2, 1).repeat_interleave(2, 2)
    back = match_last_frame(first, big)
    assert back.shape == first.shape and (back - first).abs().mean() < 0.05
    # other aspect: resized to cover (no stretching) then cropped: a 2x copy of a 40x90 frame -> its middle
    big_wide = wide.repeat_interleave(2, 1).repeat_interleave(2, 2)            # 80 x 180 -> 40 x 90 -> crop
    assert (match_last_frame(first, big_wide) - wide[:, :, 15:75]).abs().mean() < 0.05
    assert match_last_frame(first, big_wide).min() >= -1 and match_last_frame(first, big_wide).max() <= 1


def test_fold_mask_by_hand():
    f, h, w = 9, 16, 24
    mask = torch.zeros(f, h, w)
    mask[4, 8 + 3, 16 + 5] = 1.0            # frame 4, block (1, 2), pixel (3, 5) of the block
    mask[7, 0, 0] = 0.25                    # soft values are kept
    m = fold_mask(mask, num_refs=2)
    assert m.shape == (64, 2 + 3, 2, 3)
    assert not m[:, :2].any()                                          # reference frames: zeros
    # nearest-exact from 9 to 3 frames picks pixel frames 1, 4, 7
    assert m[8 * 3 + 5, 2 + 1, 1, 2] == 1.0 and m.sum() == 1.25
    assert m[0, 2 + 2, 0, 0] == 0.25
    # every latent frame is one pixel frame folded: channel 8i+j of block (a, b) = pixel (8a+i, 8b+j)
    rnd = torch.rand(f, h, w)
    m = fold_mask(rnd)
    for t, src in enumerate((1, 4, 7)):
        for i, j in [(0, 0), (3, 5), (7, 7)]:
            assert torch.equal(m[8 * i + j, t], rnd[src, i::8, j::8])


# --------------------------------------------------------------------------- image-to-video

def test_i2v_end_to_end_mp4(pipes, tmp_path):
    pipe = pipes("i2v")
    img = save_png(smooth_image(40, 60), tmp_path / "first.png")
    out = pipe(PROMPT, image=str(img), seed=3, sample_steps=3, output_path=tmp_path / "i2v.mp4")
    assert out.frames[0].shape == (5, 32, 48, 3)                      # 3:2 image at area 64*32 -> 48x32
    frames, fps = read_video(out.path)
    assert frames.shape == (5, 32, 48, 3) and fps == 16
    meta = read_video_metadata(out.path)["openwan"]
    assert meta["image"] == str(img) and meta["size"] == "64*32" and meta["video_size"] == "48*32"
    assert meta["negative_prompt"] == I2V_NEGATIVE_PREFIX + NEGATIVE_PROMPT
    assert meta["sample_shift"] == 3.0 and meta["task"] == "i2v"
    # the same image as an array / PIL gives the same video
    again = pipe(PROMPT, image=Image.open(img), seed=3, sample_steps=3).frames[0]
    assert np.array_equal(again, out.frames[0])


def test_i2v_defaults(pipes):
    pipe = pipes("i2v")
    assert pipe.default_shift(832, 480) == 3.0 and pipe.default_shift(480, 832) == 3.0
    assert pipe.default_shift(1280, 720) == 5.0 and pipe.default_shift(64, 32) == pipe.defaults().shift
    assert pipe.default_negative_prompt().startswith(I2V_NEGATIVE_PREFIX)


def test_i2v_conditioning_by_hand(pipes):
    pipe = pipes("i2v")
    img = smooth_image(40, 60)
    x = image_to_tensor(img)
    with torch.no_grad():
        cond = pipe.condition([x], 9, 32, 48)
        resized = torch.nn.functional.interpolate(x[None], size=(32, 48), mode="bicubic", align_corners=False)
        video = torch.cat([resized[:, :, None], torch.zeros(1, 3, 8, 32, 48)], dim=2)
        latent = pipe.vae.encode(video)[0]
        clip = pipe.c.image_encoder.encode(x[None])
    y = cond["y"]
    assert y.shape == (20, 3, 4, 6)                                   # mask 4 + latent 16, channel order
    assert torch.equal(y[:4], frame_mask(9, 4, 6))
    # streamed encode == whole-clip encode: the same math on other chunk shapes (as tests/test_vae.py), each within
    # its noise floor of the same code run with the VAE in float64, so within twice the larger of each other (7.2e-7
    # here; equal here); a wrong or misplaced frame is O(0.1) off
    assert (y[4:] - latent).abs().max().item() <= 2 * vae_floor(pipe.vae, {0: x}, 9, y[4:], video, latent)
    assert torch.equal(cond["clip_fea"], clip.float()) and clip.shape == (1, 5, 32)


def vae_floor(vae, images, frame_num, y_latent, video, latent):
    """The noise floor of a pipeline's condition latent ``y_latent`` (image_condition: the clip of ``images``
    streamed to the encoder) and of the whole-clip encode ``latent`` of ``video``, each against the same code run
    with the VAE in float64."""
    wide = float64_twin(vae)
    height, width = video.shape[-2:]
    return noise_floor((y_latent, image_condition(wide, images, frame_num, height, width)[4:]),
                       (latent, wide.encode(video.double())[0]))


def _diffusers_i2v(ck, shift):
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import AutoTokenizer, BatchFeature, CLIPVisionModel, UMT5EncoderModel

    class ReferenceClipPreprocess:
        """The reference's CLIP preprocessing, written out: [-1, 1], bicubic (no antialias) to 28x28,
        then CLIP normalisation. diffusers' CLIPImageProcessor resizes with PIL (antialiased) and, in
        the published config, centre-crops, so it cannot reproduce it (see the test below)."""

        def __call__(self, images, return_tensors="pt"):
            x = torch.from_numpy(np.array(images.convert("RGB"))).permute(2, 0, 1).float()[None] / 255 * 2 - 1
            x = torch.nn.functional.interpolate(x, size=(28, 28), mode="bicubic", align_corners=False) * 0.5 + 0.5
            x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
            return BatchFeature({"pixel_values": x})

    pipe = WanImageToVideoPipeline(
        tokenizer=AutoTokenizer.from_pretrained(str(TINY_TOKENIZER_DIR)),
        text_encoder=UMT5EncoderModel.from_pretrained(ck / "text_encoder"),
        vae=AutoencoderKLWan.from_pretrained(ck / "vae"),
        transformer=WanTransformer3DModel.from_pretrained(ck / "transformer"),
        image_encoder=CLIPVisionModel.from_pretrained(ck / "image_encoder"),
        image_processor=ReferenceClipPreprocess(), scheduler=diffusers_scheduler(shift))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_i2v_parity_with_diffusers(pipes, ckpts):
    """Same tiny weights (diffusers layout), same noise, same grid: diffusers' WanImageToVideoPipeline.

    The image already has the output size (64x32), so neither pipeline resizes it for the VAE
    (diffusers resizes with PIL Lanczos, the reference with torch bicubic). CLIP preprocessing: see
    ReferenceClipPreprocess. Remaining differences are float rounding (fp32).
    """
    pytest.importorskip("diffusers")
    ours = fp32_numerics(pipes("i2v-diffusers"))
    theirs = _diffusers_i2v(ckpts["i2v-diffusers"], shift=3.0)
    img = smooth_image(32, 64)
    steps, frames = 4, 5
    got = {}
    with torch.no_grad():
        # the conditioning tensors first: y = [mask, image latent] and the CLIP features
        pixels = theirs.video_processor.preprocess(Image.fromarray(img), 32, 64)
        ref_y = theirs.prepare_latents(pixels, 1, 16, 32, 64, frames, torch.float32, "cpu")[1][0]
        cond = ours.condition([image_to_tensor(img)], frames, 32, 64)
        # the mask channels are exact; the latents, as tests/test_vae.py: each side's fp32 rounding against the same
        # code run with its VAE in float64 (both normalize in fp32: the twins agree), twice the larger floor (6e-7
        # here); a wrong frame, mean or std is O(0.1) off
        assert torch.equal(cond["y"][:4], ref_y[:4])
        vae32 = theirs.vae
        theirs.vae = float64_twin(vae32)
        try:
            ref_y64 = theirs.prepare_latents(pixels, 1, 16, 32, 64, frames, torch.float32, "cpu")[1][0]
        finally:
            theirs.vae = vae32
        ours_y64 = image_condition(float64_twin(ours.vae), {0: image_to_tensor(img)}, frames, 32, 64)
        floor = noise_floor((cond["y"][4:], ours_y64[4:]), (ref_y[4:], ref_y64[4:]))
        assert (cond["y"][4:] - ref_y[4:]).abs().max().item() <= 2 * floor
        # the same pixels (x / 255 * 2 - 1 there, (x / 255 - 0.5) / 0.5 here: equal, the 2 is exact) and resize into
        # the same transformers tower, maybe through another attention kernel: as tests/test_image_encoder.py, 2 ulps
        # of the largest feature for each of the tower's ~16 reductions: 1.1e-5 (equal here); another image's
        # features differ by O(1)
        clip = theirs.encode_image(Image.fromarray(img), "cpu")
        assert (cond["clip_fea"] - clip).abs().max().item() <= fp32_bound(cond["clip_fea"], clip, terms=16, ulps=2)

        with LargestVelocity(ours) as vmax:
            out = ours(PROMPT, NEG, image=img, seed=0, sample_steps=steps, frame_num=frames, guide_scale=5.0,
                       cfg_batch=False, callback=last_latent(got))

        def grab(p, i, t, kw):
            got["theirs"] = kw["latents"]
            return {}
        ref = theirs(image=Image.fromarray(img), prompt=PROMPT, negative_prompt=NEG, height=32, width=64,
                     num_frames=frames, num_inference_steps=steps, guidance_scale=5.0,
                     latents=make_noise((16, 2, 4, 8), 0, "cpu")[None], output_type="np",
                     callback_on_step_end=grab).frames[0]
    # the DiT passes differ by rounding only (the conditions above agree to a few ulps): guided_run_bound, 16 ulps of
    # max |v| x (2g + 1) over the run: 3.4e-5 here (measured 1.8e-6); a guidance scale of 4.9 is 5.3e-5 off, 5 steps
    # for 4 0.48
    assert (got["latent"] - got["theirs"][0]).abs().max().item() <= guided_run_bound(vmax.value, 5.0)
    # decoded: ours truncates (x+1)/2*255 to uint8 (the reference's rule), diffusers returns floats
    assert np.abs(out.frames[0].astype(np.float32) - ref * 255).max() <= 1.01


def test_clip_preprocessing_vs_diffusers_processor(pipes):
    """Why the parity test brings its own CLIP preprocessing.

    diffusers' CLIPImageProcessor, configured as close as it goes (28x28, bicubic, no crop, CLIP
    mean/std), equals the reference on a flat image (normalisation identical) but not on a detailed
    one: PIL's bicubic antialiases when shrinking, the reference's torch bicubic does not.
    """
    from transformers import CLIPImageProcessor
    enc = pipes("i2v").c.image_encoder
    proc = CLIPImageProcessor(do_resize=True, size={"height": 28, "width": 28}, resample=3, do_center_crop=False,
                              do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=list(CLIP_MEAN),
                              image_std=list(CLIP_STD), do_convert_rgb=True)
    flat = np.full((32, 64, 3), (200, 30, 90), np.uint8)
    theirs = proc(images=Image.fromarray(flat), return_tensors="pt")["pixel_values"]
    ours = enc.preprocess(image_to_tensor(flat))
    # a flat image stays flat through PIL's resize (integer, rounded to the level); torch's fp32 bicubic sums 4 taps per
    # pass whose fp32 weights sum to 1 but for their cubics' rounding, ~16 ulps of the value per pass (|terms| sum
    # <= 1.375 |x|), x 0.5 / std (1.9), plus each side's normalisation (4 roundings): 1.1e-5 (measured 9.5e-7); a
    # wrong mean, std or rescale is O(0.1) off
    bound = 2 * 16 * 1.375 * EPS * 0.5 / min(CLIP_STD) + fp32_bound(theirs, ours, terms=4, ulps=1)
    assert (theirs - ours).abs().max().item() <= bound
    detail = smooth_image(32, 64)
    diff = (proc(images=Image.fromarray(detail), return_tensors="pt")["pixel_values"]
            - enc.preprocess(image_to_tensor(detail))).abs()
    assert 0.01 < diff.mean() < 0.5                                    # a real but bounded difference


# --------------------------------------------------------------------------- first-last-frame

def test_flf2v_end_to_end_mp4(pipes, tmp_path):
    pipe = pipes("flf2v")
    first = save_png(smooth_image(40, 60), tmp_path / "first.png")
    last = save_png(smooth_image(90, 90, seed=4), tmp_path / "last.png")    # other size and aspect
    out = pipe(PROMPT, first_frame=str(first), last_frame=str(last), seed=1, sample_steps=3, frame_num=9,
               output_path=tmp_path / "flf.mp4")
    frames, fps = read_video(out.path)
    assert frames.shape == (9, 32, 48, 3) and fps == 16
    meta = read_video_metadata(out.path)["openwan"]
    assert meta["first_frame"] == str(first) and meta["last_frame"] == str(last)
    assert meta["negative_prompt"] == FLF2V_NEGATIVE_PREFIX + I2V_NEGATIVE_PREFIX + NEGATIVE_PROMPT
    assert meta["sample_shift"] == 16.0


def test_flf2v_conditioning_by_hand(pipes):
    pipe = pipes("flf2v")
    a, b = image_to_tensor(smooth_image(40, 60)), image_to_tensor(smooth_image(40, 60, seed=7))
    with torch.no_grad():
        cond = pipe.condition([a, b], 9, 32, 48)
        r = [torch.nn.functional.interpolate(x[None], size=(32, 48), mode="bicubic", align_corners=False)[:, :, None]
             for x in (a, b)]
        video = torch.cat([r[0], torch.zeros(1, 3, 7, 32, 48), r[1]], dim=2)
        latent = pipe.vae.encode(video)[0]
    assert torch.equal(cond["y"][:4], frame_mask(9, 4, 6, known=(0, 8)))
    # as in test_i2v_conditioning_by_hand: twice the noise floor of the streamed and the whole-clip encode
    assert (cond["y"][4:] - latent).abs().max().item() <= 2 * vae_floor(pipe.vae, {0: a, 8: b}, 9, cond["y"][4:],
                                                                        video, latent)
    assert cond["clip_fea"].shape == (2, 257, 32)                       # -> [1, 514, 32] + emb_pos in the DiT


def test_flf2v_clip_token_mismatch_is_named(ckpts):
    pipe = load_pipeline(ckpts["flf2v-5tok"], variant="tiny-flf2v", progress=False)
    with pytest.raises(ValueError, match="5 tokens per image.*expects 257"):
        pipe(PROMPT, first_frame=smooth_image(32, 64), last_frame=smooth_image(32, 64), sample_steps=1)


# --------------------------------------------------------------------------- bad input

def test_wrong_checkpoint_for_task(ckpts):
    with pytest.raises(ValueError, match="i2v task needs a i2v checkpoint.*t2v model"):
        load_pipeline(ckpts["t2v"], task="i2v", variant="tiny-t2v", progress=False)
    with pytest.raises(ValueError, match="vace task needs a VACE checkpoint"):
        load_pipeline(ckpts["t2v"], task="vace", variant="tiny-t2v", progress=False)
    with pytest.raises(ValueError, match="video-to-video needs a text-to-video checkpoint"):
        load_pipeline(ckpts["vace"], task="v2v", variant="tiny-vace", progress=False)


def test_bad_images_leave_no_output(pipes, tmp_path):
    pipe, out = pipes("i2v"), tmp_path / "out" / "v.mp4"
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ValueError, match="image: cannot read image .*corrupt"):
        pipe(PROMPT, image=str(corrupt), output_path=out)
    with pytest.raises(FileNotFoundError, match="image: no such file"):
        pipe(PROMPT, image=str(tmp_path / "missing.png"), output_path=out)
    with pytest.raises(ValueError, match="image is required"):
        pipe(PROMPT, output_path=out)
    with pytest.raises(ValueError, match="uint8"):
        pipe(PROMPT, image=np.zeros((32, 32, 3), np.float32), output_path=out)
    flf = pipes("flf2v")
    with pytest.raises(ValueError, match="last_frame is required"):
        flf(PROMPT, first_frame=smooth_image(32, 32), output_path=out)
    with pytest.raises(ValueError, match="at least 5"):
        flf(PROMPT, first_frame=smooth_image(32, 32), last_frame=smooth_image(32, 32), frame_num=1, output_path=out)
    assert not out.exists() and not out.parent.exists()


def test_source_video_files_are_resampled_to_16_fps(pipes, tmp_path):
    """A 32 fps source (and mask) file is taken at 16 fps by default (every 2nd frame), like the
    reference; src_fps=0 keeps every frame; arrays carry no rate and are used as they are."""
    from openwan.pipelines.v2v import load_video
    levels = 12 * np.arange(17)                                   # frame i is uniformly grey at 12 i
    vid = np.broadcast_to(levels[:, None, None, None].astype(np.uint8), (17, 32, 64, 3)).copy()
    src = write_video(vid, tmp_path / "s32.mp4", fps=32)
    got = load_video(str(src), target_fps=16)
    assert got.shape[0] == 9 and np.abs(got.mean(axis=(1, 2, 3)) - levels[::2]).max() < 3
    assert load_video(str(src)).shape[0] == 17 and load_video(vid, target_fps=16).shape[0] == 17
    assert load_video(str(src), target_fps=8).shape[0] == 5

    v2v, vace = pipes("t2v", task="v2v"), pipes("vace")
    mask = np.zeros((17, 32, 64, 3), np.uint8)
    mask[:, 8:24, 16:48] = 255
    msk = write_video(mask, tmp_path / "m32.mp4", fps=32)
    for pipe, kw in ((v2v, dict(strength=0.9)), (vace, dict(src_mask=str(msk)))):
        out = pipe(PROMPT, src_video=str(src), seed=1, sample_steps=2, output_type="latent", **kw)
        assert out.settings["frame_num"] == 9 and out.settings["src_fps"] == 16.0
        assert out.latents.shape[-3] == 3                          # 9 frames -> 3 latent frames
        out = pipe(PROMPT, src_video=str(src), seed=1, sample_steps=2, output_type="latent", src_fps=0, **kw)
        assert out.settings["frame_num"] == 17 and out.settings["src_fps"] == 0
        with pytest.raises(ValueError, match="src_fps must be a frame rate"):
            pipe(PROMPT, src_video=str(src), src_fps=-1, **kw)
    # a 16 fps mask next to the 32 fps source: the counts differ after resampling, which is named
    msk16 = write_video(mask, tmp_path / "m16.mp4", fps=16)
    with pytest.raises(ValueError, match="src_mask has 17 frames but src_video has 9"):
        vace(PROMPT, src_video=str(src), src_mask=str(msk16))


def test_bad_videos_and_masks_leave_no_output(pipes, tmp_path):
    vace, v2v = pipes("vace"), pipes("t2v", task="v2v")
    out = tmp_path / "v.mp4"
    video = random_video(5, 32, 64)
    cases = [
        (vace, dict(src_video=video, src_mask=np.ones((5, 16, 64), bool)), "mask must have the video's size"),
        (vace, dict(src_video=video, src_mask=np.ones((3, 32, 64), bool)), "src_mask has 3 frames but src_video has 5"),
        (vace, dict(src_mask=np.ones((5, 32, 64), bool)), "src_mask needs src_video"),
        (vace, dict(src_video=np.zeros((0, 32, 64, 3), np.uint8)), "no frames"),
        (vace, dict(src_video=video, frame_num=9), "5 frames, fewer than frame_num=9"),
        (vace, dict(src_video=video, src_mask=np.full((5, 32, 64), 2.0)), "values must lie in \\[0, 1\\]"),
        (vace, dict(src_ref_images="a.png,,b.png"), "empty entry"),
        (vace, dict(context_scale=float("nan")), "context_scale"),
        (v2v, dict(src_video=video, strength=0.0), "strength must be a number in \\(0, 1\\]"),
        (v2v, dict(src_video=video, strength=1.5), "strength"),
        (v2v, dict(src_video=video, strength=0.01, sample_steps=4), "no denoising step"),
        (v2v, dict(), "src_video is required"),
        (v2v, dict(src_video=video.astype(np.float32)), "uint8"),
    ]
    for pipe, kw, message in cases:
        with pytest.raises(ValueError, match=message):
            pipe(PROMPT, output_path=out, sample_steps=kw.pop("sample_steps", 1), **kw)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="src_video: cannot read video"):
        v2v(PROMPT, src_video=str(empty), output_path=out)
    with pytest.raises(ValueError, match="is an image"):
        v2v(PROMPT, src_video=str(save_png(smooth_image(32, 64), tmp_path / "x.png")), output_path=out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.mp4", "x.png"]   # no temp files either


def test_load_mask_forms(tmp_path):
    m = np.zeros((2, 8, 16), np.uint8)
    m[:, :, 8:] = 255
    assert np.array_equal(load_mask(m), (m / 255).astype(np.float32))
    assert np.array_equal(load_mask(m.astype(bool)), (m > 0).astype(np.float32))
    assert load_mask(save_png(m[0], tmp_path / "m.png")).shape == (1, 8, 16)      # one image for every frame
    rgb = np.zeros((2, 8, 16, 3), np.uint8)
    rgb[..., 0] = 255                                                             # red channel is used
    assert (load_mask(rgb) == 1).all()


# --------------------------------------------------------------------------- CLI

def test_cli_vace_and_i2v(ckpts, tmp_path, capsys):
    src = write_video(random_video(5, 32, 64), tmp_path / "src.mp4")
    ref = save_png(smooth_image(32, 64), tmp_path / "ref.png")
    out = tmp_path / "vace.mp4"
    rc = cli(["generate", PROMPT, "--ckpt_dir", str(ckpts["vace"]), "--task", "tiny-vace", "--src_video", str(src),
              "--src_ref_images", f"{ref},{ref}", "--context_scale", "0.5", "--sample_steps", "2", "--base_seed", "1",
              "--save_file", str(out), "--quiet"])
    assert rc == 0 and read_video(out)[0].shape == (5, 32, 64, 3)
    meta = json.loads(out.with_suffix(".json").read_text())["openwan"]
    assert meta["context_scale"] == 0.5 and meta["src_ref_images"] == f"{ref},{ref}" and meta["src_fps"] == 16.0
    again = tmp_path / "again.mp4"                                   # reproduce from the settings
    assert cli(["generate", "--from", str(out.with_suffix(".json")), "--save_file", str(again), "--quiet"]) == 0
    assert np.array_equal(read_video(again)[0], read_video(out)[0])
    # a corrupt image: one clear line, exit 2, no file
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    capsys.readouterr()
    rc = cli(["generate", PROMPT, "--ckpt_dir", str(ckpts["i2v"]), "--task", "tiny-i2v", "--image", str(bad),
              "--save_file", str(tmp_path / "i2v.mp4"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "image" in err and "Traceback" not in err and not (tmp_path / "i2v.mp4").exists()
