"""openwan.convert on Wan 2.2 (one converter for every model): the A14B experts and TI2V-5B with the 2.2 VAE,
official <-> diffusers, round trips exact, and diffusers' own from_pretrained on the converted folders."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from openwan.convert import convert
from openwan.testing import make_tiny_wan22_checkpoint

KINDS = ("t2v-A14B", "i2v-A14B", "ti2v-5B")
IMG = np.broadcast_to(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (32, 64, 3)).copy()


@pytest.fixture(scope="module")
def trips(tmp_path_factory):
    """kind -> (official source, converted to diffusers, converted back to official)."""
    root = tmp_path_factory.mktemp("convert22")
    out = {}
    for kind in KINDS:
        src = make_tiny_wan22_checkpoint(root / f"{kind}-src", kind, "official")
        d = convert(src, root / f"{kind}-diffusers", to="diffusers")
        o = convert(d, root / f"{kind}-official", to="official")
        out[kind] = (src, d, o)
    return out


def _tensors(folder: Path) -> dict:
    """Every weight file of a folder (relative path -> {key: tensor}), read with the loader's readers."""
    from openwan.checkpoints import read_safetensors, read_torch_file
    out = {}
    for f in sorted(folder.rglob("*")):
        if f.suffix == ".safetensors":
            out[str(f.relative_to(folder))] = read_safetensors(f)
        elif f.suffix == ".pth":
            out[str(f.relative_to(folder))] = read_torch_file(f)
    return out


def _run(folder, kind):
    import openwan
    kw = {"image": IMG} if kind != "t2v-A14B" else {}
    pipe = openwan.load_pipeline(folder, progress=False, experts="both")
    return pipe("a red circle", size="64*32", frame_num=5, sample_steps=4, seed=2, strict_size=False,
                output_type="latent", **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_is_exact(trips, kind):
    src, d, o = trips[kind]
    a, b = _tensors(src), _tensors(o)
    assert sorted(a) == sorted(b)
    for f in a:
        assert sorted(a[f]) == sorted(b[f]), f
        assert all(torch.equal(a[f][k], b[f][k]) for k in a[f]), f
    if kind == "ti2v-5B":
        assert (o / "Wan2.2_VAE.pth").is_file() and (o / "config.json").is_file()
    else:
        assert (o / "high_noise_model" / "config.json").is_file() and (o / "low_noise_model").is_dir()
        assert (o / "Wan2.1_VAE.pth").is_file()
    index = json.loads((d / "model_index.json").read_text())
    cls = {"t2v-A14B": "WanPipeline", "i2v-A14B": "WanImageToVideoPipeline", "ti2v-5B": "WanPipeline"}[kind]
    assert index["_class_name"] == cls
    if kind == "ti2v-5B":
        assert index["expand_timesteps"] is True and "transformer_2" not in index
        assert json.loads((d / "vae" / "config.json").read_text())["is_residual"] is True
    else:
        assert index["transformer_2"] == ["diffusers", "WanTransformer3DModel"]
        assert index["boundary_ratio"] == {"t2v-A14B": 0.875, "i2v-A14B": 0.9}[kind]
    if kind == "i2v-A14B":
        assert index["image_encoder"] == [None, None] and not (d / "image_encoder").exists()
    lat = [_run(f, kind) for f in (src, d, o)]
    assert torch.equal(lat[0].latents, lat[1].latents) and torch.equal(lat[0].latents, lat[2].latents)
    if kind != "ti2v-5B":
        s = lat[1].settings["stats"]
        assert s["dit_forwards_high"] > 0 and s["dit_forwards_low"] > 0


def test_diffusers_from_pretrained_loads_the_converted_folders(trips):
    """diffusers' own loader reads every converted folder: both experts, the boundary, TI2V's expand_timesteps
    and residual 2.2 VAE, I2V-A14B without an image encoder."""
    import diffusers
    for kind in KINDS:
        d = trips[kind][1]
        cls = getattr(diffusers, json.loads((d / "model_index.json").read_text())["_class_name"])
        pipe = cls.from_pretrained(d, dtype=torch.float32)
        if kind == "ti2v-5B":
            assert pipe.config.expand_timesteps and pipe.transformer_2 is None and pipe.vae.config.is_residual
            assert pipe.vae.config.z_dim == 48
        else:
            assert pipe.transformer_2 is not None and pipe.config.boundary_ratio == {"t2v-A14B": 0.875,
                                                                                      "i2v-A14B": 0.9}[kind]
            w1 = dict(pipe.transformer.named_parameters())
            w2 = dict(pipe.transformer_2.named_parameters())
            assert any(not torch.equal(w1[k], w2[k]) for k in w1)       # two different experts
        if kind == "i2v-A14B":
            assert pipe.image_encoder is None


def test_diffusers_runs_the_converted_a14b_folder_to_openwans_latent(trips):
    """WanPipeline.from_pretrained on the converted t2v-A14B folder vs openwan on the official source: same
    noise, the reference's UniPC grid fed to diffusers' scheduler (as tests/test_wan22_pipelines.py); bound
    1e-4 relative, derived there (time sinusoid / RoPE in fp32 vs float64, x (2g + 1), over sum |dsigma| = 1)."""
    from diffusers import WanPipeline

    from openwan import sampling
    from openwan.pipelines import load_pipeline
    from openwan.pipelines.base import make_noise
    src, d, _ = trips["t2v-A14B"]
    steps, shift, seed = 6, 12.0, 5
    res = load_pipeline(src, progress=False)("a red circle", negative_prompt="blurry", seed=seed,
                                             sample_steps=steps, sample_shift=shift, frame_num=5, size="64*32",
                                             strict_size=False, output_type="latent")
    pipe = WanPipeline.from_pretrained(d, dtype=torch.float32)
    sched = pipe.scheduler
    assert sched.config.flow_shift == shift                     # the variant's shift in scheduler_config.json
    base = sampling.unipc_sigmas(steps, 1.0)[:-1].numpy()
    orig = sched.set_timesteps
    sched.set_timesteps = lambda n, device=None, **k: orig(sigmas=base.copy(), device=device)
    pipe.set_progress_bar_config(disable=True)
    noise = make_noise((16, 2, 4, 8), seed, "cpu")[None]
    lat = pipe("a red circle", negative_prompt="blurry", height=32, width=64, num_frames=5,
               num_inference_steps=steps, guidance_scale=4.0, guidance_scale_2=3.0, latents=noise.clone(),
               output_type="latent", max_sequence_length=512).frames[0].float()
    r = ((res.latents - lat).abs().max() / lat.abs().max()).item()
    assert r <= 1e-4, r


def test_boundary_and_dtype_travel(tmp_path):
    """A diffusers folder's own boundary_ratio survives a trip through the official layout (which has no place
    for it: openwan.json); --dtype casts both experts."""
    import openwan
    src = make_tiny_wan22_checkpoint(tmp_path / "d", "t2v-A14B", "diffusers")
    idx = json.loads((src / "model_index.json").read_text())
    (src / "model_index.json").write_text(json.dumps({**idx, "boundary_ratio": 0.8}))
    (src / "openwan.json").unlink()
    o = convert(src, tmp_path / "o", to="official", dtype="bf16")
    assert openwan.load_pipeline(o, progress=False).boundary == 0.8
    back = convert(o, tmp_path / "back", to="diffusers")
    assert json.loads((back / "model_index.json").read_text())["boundary_ratio"] == 0.8
    for e in ("high_noise_model", "low_noise_model"):
        assert {t.dtype for t in _tensors(o / e)[next(iter(_tensors(o / e)))].values()} == {torch.bfloat16}
