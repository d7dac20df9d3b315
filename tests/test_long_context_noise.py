"""``long_context_noise``: the ``continue`` method's carried frames given at a noise level the model is told of
(Diffusion Forcing's noisy history), for a TI2V-style model (openwan.pipelines.ti2v.continued_window) trained with
``clean_frames``' ``context_timestep``. Tiny random stand-in of the embedded demo (5 frames native, 2 latent
frames), windows of 2 latent frames sharing 1."""
import dataclasses
import json

import pytest
import torch

from openwan.pipelines import load_pipeline
from openwan.pipelines.job import make_noise
from openwan.testing import forwards, make_tiny_demo_with_expert

KW = dict(sample_steps=2, seed=4, output_type="latent", frame_num=17, long_method="continue", long_overlap=1,
          long_refine=0)         # the carried frames as the windows left them (no refinement pass after)
PROMPT = "a red circle moving to the right"
VARIANT = None


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(plain folder, the same folder with a continuation expert of other weights)."""
    global VARIANT
    plain, with_expert, VARIANT = make_tiny_demo_with_expert(tmp_path_factory.mktemp("ctxnoise"))
    return plain, with_expert


def _load(folder, **defaults):
    variant = VARIANT
    if defaults:
        variant = dataclasses.replace(VARIANT, sample=VARIANT.sample.replace(**defaults))
    return load_pipeline(folder, variant=variant, progress=False)


def _inputs(pipe, **kw):
    """The call's output and every DiT forward's (x, t), in order."""
    with forwards(pipe.dit, inputs=True) as seen:
        out = pipe(PROMPT, **{**KW, **kw})
    return out, seen


def test_carried_frames_are_given_noised_with_their_timestep(folders):
    plain, _ = folders
    pipe = _load(plain)
    sigma = 0.25
    out, seen = _inputs(pipe, long_context_noise=sigma)
    ref, ref_seen = _inputs(pipe)
    lv = out.settings["long_video"]
    assert lv["context_noise"] == sigma and "context_noise" not in ref.settings["long_video"]
    spans = [(0, 2), (1, 3), (2, 4), (3, 5)]
    assert lv["windows"] == len(spans)
    assert torch.equal(out.latents[:, :2], ref.latents[:, :2])           # window 0: as without it
    z = out.latents.float()                                               # [C, F, h, w]
    noise = make_noise(z.shape, KW["seed"], "cpu")
    per_frame = z.shape[2] // 2 * (z.shape[3] // 2)                       # patch (1, 2, 2)
    for k, (s, e) in enumerate(spans):
        for x, t in seen[2 * k:2 * k + 2]:                                 # 2 steps (batched CFG) per window
            if k == 0:
                assert bool((t == t.flatten()[0]).all())                   # plain text-to-video: one t
                continue
            assert t.shape[-1] == 2 * per_frame                            # per-token timesteps
            assert bool((t[..., :per_frame] == 250).all())                 # the carried frame: floor(1000 sigma)
            assert bool((t[..., per_frame:] > 250).all())                  # the frame to make: the step's t
            want = (1 - sigma) * z[:, s:s + 1] + sigma * noise[:, s:s + 1]
            tol = 4 * torch.finfo(torch.float32).eps * float(want.abs().max() + 1)
            x = x[0] if isinstance(x, (list, tuple)) or x.dim() == 5 else x     # the cond half (batched CFG)
            assert float((x[:, :1].float() - want).abs().max()) <= tol     # the previous window's latent, noised
    assert not torch.equal(out.latents[:, 2:], ref.latents[:, 2:])       # the later windows see other inputs
    for x, t in ref_seen[2:]:
        assert bool((t[..., :per_frame] == 0).all())                       # without it: clean, timestep 0
    zero = pipe(PROMPT, **KW, long_context_noise=0.0)
    assert torch.equal(zero.latents, ref.latents) and "context_noise" not in zero.settings["long_video"]


def test_the_variants_level_goes_with_the_expert_only(folders):
    plain, with_expert = folders
    pipe = _load(with_expert, long_context_noise=0.2)
    assert pipe(PROMPT, **KW).settings["long_video"]["context_noise"] == 0.2
    off = pipe(PROMPT, **KW, long_expert=False).settings["long_video"]
    assert "context_noise" not in off and "expert" not in off
    named = pipe(PROMPT, **KW, long_context_noise=0.0).settings["long_video"]
    assert named["expert"] is True and "context_noise" not in named
    assert "context_noise" not in _load(plain, long_context_noise=0.2)(PROMPT, **KW).settings["long_video"]
    with pytest.warns(UserWarning, match="had no effect"):
        native = pipe(PROMPT, **{**KW, "frame_num": 5})
    assert "long_video" not in native.settings


@pytest.mark.parametrize("value", [True, -0.1, 1.0, "0.1"])
def test_bad_levels_are_named(folders, value):
    with pytest.raises(ValueError, match=r"long_context_noise must be a number in \[0, 1\)"):
        _load(folders[0])(PROMPT, **KW, long_context_noise=value)


def test_only_continue_on_a_ti2v_model_takes_it(folders, tmp_path):
    with pytest.raises(ValueError, match="long_method='continue' and a TI2V model"):
        _load(folders[0])(PROMPT, **{**KW, "long_method": "windows"}, long_context_noise=0.1)
    from openwan.testing import make_tiny_checkpoint
    t2v = load_pipeline(make_tiny_checkpoint(tmp_path / "t2v", "tiny-t2v"), variant="tiny-t2v", progress=False)
    frames = 4 * t2v.defaults().frame_num + 1
    with pytest.raises(ValueError, match="on the t2v task"):
        t2v(PROMPT, **{**KW, "frame_num": frames}, long_context_noise=0.1)


def test_the_cli_records_and_replays_it(folders, tmp_path, monkeypatch):
    from openwan.cli import main
    from openwan.testing import use_demo
    from openwan.video import read_video
    use_demo(monkeypatch, folders[0], VARIANT)
    monkeypatch.chdir(tmp_path)
    common = ["--sample_steps", "2", "--base_seed", "4", "--frame_num", "17", "--long_overlap", "1", "--quiet"]
    assert main(["generate", PROMPT, *common, "--long_context_noise", "0.3", "-o", "a.mp4"]) == 0
    rec = json.loads((tmp_path / "a.json").read_text())["openwan"]
    assert rec["long_video"]["context_noise"] == 0.3
    assert main(["generate", "--from", "a.json", "-o", "b.mp4", "--quiet"]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["openwan"]["long_video"]["context_noise"] == 0.3
    assert (read_video(tmp_path / "a.mp4")[0] == read_video(tmp_path / "b.mp4")[0]).all()
