"""TI2V-5B image-to-video past the native length (openwan.long_video): the image conditions latent frame 0 of the
first window only (clean, timestep 0 on its tokens); the ``continue`` method carries the shared frames into the
next window the same way (clean, timestep 0), as TI2V is trained. Tiny random weights, native length 5 frames."""
import numpy as np
import pytest
import torch

from openwan.testing import tiny_wan22_components

KW = dict(size="64*32", sample_steps=3, seed=3, strict_size=False)


@pytest.fixture(scope="module")
def pipe():
    from openwan.pipelines.ti2v import TextImageToVideo
    c = tiny_wan22_components("ti2v-5B")
    c.variant = c.variant.replace(sample=c.variant.sample.replace(frame_num=5))   # 2 latent frames a window
    return TextImageToVideo(c, progress=False)


@pytest.fixture(scope="module")
def image():
    return np.broadcast_to(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (32, 64, 3)).copy()


def _spy(pipe, calls):
    dit = pipe.dit
    orig = dit.forward

    def forward(x, t, ctx, **kw):
        calls.append((x.detach().clone(), t.detach().clone()))
        return orig(x, t, ctx, **kw)
    dit.forward = forward
    return lambda: delattr(dit, "forward")


@pytest.mark.parametrize("method", ["windows", "continue"])
def test_image_to_video_past_native_length(pipe, image, method):
    from openwan.pipelines.ti2v import crop_to
    with torch.inference_mode():
        z = pipe.vae.encode(crop_to(image, 64, 32)[None, :, None])[0].float()        # [48, 1, 2, 4]
    calls = []
    undo = _spy(pipe, calls)
    try:
        out = pipe("a cat", image=image, frame_num=17, long_method=method, output_type="latent", **KW)
    finally:
        undo()
    lat = out.latents
    assert lat.shape == (48, 5, 2, 4)                                # (17 - 1) / 4 + 1 latent frames
    assert out.settings["long_video"] == {"method": method, "latent_frames": 5, "window": 2, "overlap": 1,
                                          "windows": 4}
    assert torch.equal(lat[:, :1], z)                                # frame 0 is the image's latent, exactly
    tokens = 2 * 4 // 4                                              # tokens of one latent frame (2x2 patches)
    starts = (0, 1, 2, 3)                                            # the 4 windows of 2 frames, overlap 1
    assert len(calls) == 3 * 4                                       # 3 steps x 4 windows, CFG batched
    for i, (x, t) in enumerate(calls):
        k = i % 4 if method == "windows" else i // 3                 # windows: every step visits each window
        step_t = t.flatten()[-1].item()
        zeros = (t.flatten() == 0).sum().item() if t.numel() > 2 else 0
        if k == 0:
            assert zeros == 2 * tokens, (i, t)                       # frame 0's tokens, cond and uncond: t = 0
            assert torch.equal(x[0, :, :1], z)                       # the clean image latent goes in
        elif method == "windows":
            assert zeros == 0 and step_t > 0, (i, t)                 # later windows: no image
        else:                                                        # continue: the shared frame, clean, t = 0
            assert zeros == 2 * tokens, (i, t)
            assert torch.equal(x[0, :, :1], lat[:, starts[k]:starts[k] + 1])
    video = pipe("a cat", image=image, frame_num=17, long_method=method, **KW).frames
    assert video.shape == (1, 17, 32, 64, 3)


@pytest.mark.parametrize("method", ["windows", "continue"])
def test_one_window_is_todays_output(pipe, image, method):
    """A long-video plan of one window gives the single pass exactly (image-to-video and text-to-video)."""
    from openwan.long_video import LongVideo, plan_windows, window_conditions
    for img in (image, None):
        job = pipe.prepare("a cat", image=img, frame_num=5, output_type="latent", **KW)
        ref = pipe.run(job)
        job = pipe.prepare("a cat", image=img, frame_num=5, output_type="latent", **KW)
        plan = plan_windows(2, 2, 0)
        job.long, job.window_conds = LongVideo(method, plan), window_conditions(job.cond, plan)
        assert torch.equal(pipe.run(job), ref)
