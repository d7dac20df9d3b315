"""Whole-pipeline conversion: openwan's demo -> a diffusers folder that diffusers' own from_pretrained loads and
runs to openwan's output, and back to the official layout with its weights and sampling defaults."""
import json

import numpy as np
import pytest
import torch

from openwan.checkpoints import read_state_dict
from openwan.configs import get_variant
from openwan.convert import convert, to_diffusers, to_official
from openwan.demo import demo_checkpoint_dir
from openwan.variant_io import VARIANT_FILE, read_variant

PROMPT = "a red circle moving to the right"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    d = to_diffusers("demo", root / "demo-diffusers")
    o = to_official(d, root / "demo-official")
    return {"diffusers": d, "official": o}


def _same_variant(a, b):
    return (a.name, a.task, a.sample, a.dit, a.vae, a.text_encoder, a.image_encoder) == \
           (b.name, b.task, b.sample, b.dit, b.vae, b.text_encoder, b.image_encoder)


def test_diffusers_folder_layout(folders):
    d = folders["diffusers"]
    index = json.loads((d / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKLWan"]
    assert index["text_encoder"] == ["transformers", "UMT5EncoderModel"]
    for sub in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (d / sub).is_dir(), sub
    sched = json.loads((d / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "UniPCMultistepScheduler"
    assert sched["flow_shift"] == get_variant("demo").sample.shift and sched["use_flow_sigmas"]
    assert _same_variant(read_variant(d), get_variant("demo"))
    assert not list(d.parent.glob(".*partial*"))   # staging folder renamed into place


def test_diffusers_from_pretrained_runs_to_openwans_output(folders):
    """diffusers' own WanPipeline.from_pretrained on the converted folder, same noise and the reference's UniPC
    grid (diffusers' default grid starts 0.001 higher before the shift; fed our unshifted sigmas, as in
    test_pipeline), text padded to the demo's text_len (32; diffusers' max_sequence_length)."""
    from diffusers import WanPipeline

    from openwan import load_pipeline, sampling
    from openwan.pipelines.base import make_noise
    steps, seed, scale = 4, 7, 5.0
    ours = load_pipeline("demo", progress=False)
    ref = ours(PROMPT, seed=seed, sample_steps=steps, guide_scale=scale, output_type="latent").latents
    video = ours(PROMPT, seed=seed, sample_steps=steps, guide_scale=scale, output_type="np").frames[0]
    # This network's response to fp32 rounding: the same run with the time sinusoid and RoPE in fp32 instead of
    # float64 (diffusers' choice) perturbs its inputs by ~1 ulp; diffusers rounds at other places too (text
    # encoder, attention, solver arithmetic) by the same ulps, so its distance is bounded by a few times this.
    ours.dit.sinusoid_dtype = ours.dit.rope_dtype = torch.float32
    ref32 = ours(PROMPT, seed=seed, sample_steps=steps, guide_scale=scale, output_type="latent").latents
    ours.dit.sinusoid_dtype = ours.dit.rope_dtype = torch.float64
    floor = max((ref - ref32).abs().max().item(), torch.finfo(torch.float32).eps * ref.abs().max().item())

    pipe = WanPipeline.from_pretrained(folders["diffusers"], dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.flow_shift == 3.0
    orig = pipe.scheduler.set_timesteps
    base = sampling.unipc_sigmas(steps, 1.0)[:-1].numpy()
    pipe.scheduler.set_timesteps = lambda n, device=None, **kw: orig(sigmas=base.copy(), device=device)
    noise = make_noise(ref.shape, seed, "cpu")[None]
    out = pipe(PROMPT, negative_prompt="", height=128, width=128, num_frames=33, num_inference_steps=steps,
               guidance_scale=scale, latents=noise.clone(), max_sequence_length=32, output_type="np",
               generator=torch.Generator().manual_seed(seed))
    assert out.frames.shape == (1, 33, 128, 128, 3)                 # the demo's size and length
    lat = pipe(PROMPT, negative_prompt="", height=128, width=128, num_frames=33, num_inference_steps=steps,
               guidance_scale=scale, latents=noise.clone(), max_sequence_length=32, output_type="latent").frames[0]
    diff = (lat.float() - ref).abs().max().item()
    assert diff <= 10 * floor, (diff, floor)
    # decoded by each side's VAE: one uint8 level for the latent difference plus ours' truncation to uint8
    assert np.abs(out.frames[0] - video).max() <= 2 / 255 + 1e-6


def test_round_trip_keeps_weights_and_defaults(folders):
    from openwan import load_pipeline
    o, src = folders["official"], demo_checkpoint_dir()
    assert _same_variant(read_variant(o), get_variant("demo"))
    for name in ("diffusion_pytorch_model.safetensors", "Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth",
                 "continuation_model/diffusion_pytorch_model.safetensors"):     # the long-video expert travels too
        a, b = read_state_dict(src / name), read_state_dict(o / name)
        assert a.keys() == b.keys(), name
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), (name, k)
    for name in ("config.json", "t5_config.json", "vae_config.json"):
        assert json.loads((src / name).read_text()) == json.loads((o / name).read_text()), name
    # the same files: the same video, bit for bit
    a = load_pipeline("demo", progress=False)(PROMPT, seed=1, sample_steps=2).frames[0]
    b = load_pipeline(o, variant=read_variant(o), progress=False)(PROMPT, seed=1, sample_steps=2).frames[0]
    assert np.array_equal(a, b)


def test_openwan_loads_a_converted_folder_with_its_defaults(folders):
    from openwan import load_pipeline
    for folder in folders.values():
        pipe = load_pipeline(folder, progress=False)
        assert pipe.variant.name == "demo" and pipe.defaults() == get_variant("demo").sample
        assert pipe.c.dit_continue is not None and pipe.c.dit_continue.config == pipe.dit.config
        assert pipe.dit.config.text_len == 32


def test_image_to_video_folder_loads_in_diffusers(tmp_path):
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    from openwan.testing import make_tiny_checkpoint
    from openwan.variant_io import write_variant
    src = make_tiny_checkpoint(tmp_path / "src", "tiny-i2v")
    write_variant(get_variant("tiny-i2v"), src)         # a source's own record is carried over
    d = to_diffusers(src, tmp_path / "d")
    index = json.loads((d / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline"
    assert index["image_processor"] == ["transformers", "CLIPImageProcessor"] and index["image_encoder"][0] == \
        "transformers"
    assert json.loads((d / "scheduler" / "scheduler_config.json").read_text())["flow_shift"] == 3.0
    assert read_variant(d).name == "tiny-i2v"
    pipe = WanImageToVideoPipeline.from_pretrained(d, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    image = Image.fromarray(np.full((32, 64, 3), 128, np.uint8))
    out = pipe(image, "a red circle", height=32, width=64, num_frames=5, num_inference_steps=1,
               output_type="np", max_sequence_length=32)
    assert out.frames.shape == (1, 5, 32, 64, 3) and np.isfinite(out.frames).all()


@pytest.mark.parametrize("variant, cls", [
    pytest.param("tiny-flf2v", "WanImageToVideoPipeline", marks=pytest.mark.slow),   # ~25 s: CLIP at 224 pixels
    ("tiny-vace", "WanVACEPipeline")])
def test_flf2v_and_vace_folders_load_and_run_in_diffusers(tmp_path, variant, cls):
    import diffusers
    from PIL import Image

    from openwan.testing import make_tiny_checkpoint
    src = make_tiny_checkpoint(tmp_path / "src", variant)
    d = convert(src, tmp_path / "d", to="diffusers")
    index = json.loads((d / "model_index.json").read_text())
    assert index["_class_name"] == cls
    assert ("image_encoder" in index) == (variant == "tiny-flf2v")
    if variant == "tiny-vace":
        assert index["transformer"] == ["diffusers", "WanVACETransformer3DModel"]
    pipe = getattr(diffusers, cls).from_pretrained(d, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(height=32, width=64, num_frames=5, num_inference_steps=1, output_type="np", max_sequence_length=32)
    if variant == "tiny-flf2v":
        image = Image.fromarray(np.full((32, 64, 3), 128, np.uint8))
        out = pipe(image, "a red circle", last_image=image, **kw)
    else:
        out = pipe("a red circle", **kw)
    assert out.frames.shape == (1, 5, 32, 64, 3) and np.isfinite(out.frames).all()


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(Exception, match="not found"):
        to_diffusers(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(Exception, match="weights.safetensors is a file, not a folder"):
        to_diffusers(tmp_path / "weights.safetensors", tmp_path / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        to_diffusers("demo", busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    with pytest.raises(ValueError, match="--to must be"):
        convert("demo", tmp_path / "x", to="comfy")
    with pytest.raises(ValueError, match="dtype must be one of"):
        convert("demo", tmp_path / "x", to="official", dtype="int8")
    assert not (tmp_path / "x").exists()


def test_variant_record_errors(tmp_path):
    (tmp_path / VARIANT_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="openwan.json"):
        read_variant(tmp_path)
    (tmp_path / VARIANT_FILE).write_text(json.dumps({"openwan_variant_format": 1, "name": "x"}))
    with pytest.raises(ValueError, match="bad openwan variant record"):
        read_variant(tmp_path)
    assert read_variant(tmp_path / "empty") is None


def test_cli_convert_and_bench_listing(tmp_path, capsys):
    from openwan.cli import main
    assert main(["convert", "demo", str(tmp_path / "d"), "--to", "diffusers"]) == 0
    assert (tmp_path / "d" / "model_index.json").is_file() and read_variant(tmp_path / "d").name == "demo"
    assert main(["convert", "demo", str(tmp_path / "d"), "--to", "official"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["bench"]) == 0
    assert "openwan bench demo" in capsys.readouterr().out
