"""Options every pipeline call takes (LoRA per call) and the load-time compute dtype."""
import copy
import inspect
import re

import numpy as np
import pytest
import torch

from openwan.caches import parse_step_cache
from openwan.pipelines import load_pipeline
from openwan.pipelines.adapters import parse_lora_specs

FAST = dict(sample_steps=3, seed=3, output_type="latent")


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("demo", progress=False)


@pytest.fixture(scope="module")
def lora_file(pipe, tmp_path_factory):
    from openwan.training.lora import add_lora, remove_lora, save_lora
    model = copy.deepcopy(pipe.dit)
    params = add_lora(model, rank=2, targets=["q", "ffn.0"], name="style")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    path = tmp_path_factory.mktemp("lora") / "style.safetensors"
    save_lora(model, path, name="style")
    remove_lora(model)
    return path


def test_lora_per_call_is_applied_recorded_and_turned_off_again(pipe, lora_file):
    assert "lora" in inspect.signature(pipe.__call__).parameters          # the server reads the signature
    base = pipe("a red circle moving to the right", **FAST)
    full = pipe("a red circle moving to the right", lora=str(lora_file), **FAST)
    half = pipe("a red circle moving to the right", lora=f"{lora_file}:0.5", **FAST)
    assert full.settings["lora"] == [{"path": str(lora_file), "strength": 1.0}]
    assert half.settings["lora"] == [{"path": str(lora_file), "strength": 0.5}]
    d_full = (full.latents - base.latents).abs().max().item()
    d_half = (half.latents - base.latents).abs().max().item()
    assert d_full > 1e-3 and 0 < d_half < d_full
    again = pipe("a red circle moving to the right", lora=[], **FAST)      # off again: the base model exactly
    assert torch.equal(again.latents, base.latents) and "lora" not in again.settings
    job = pipe.prepare("a red circle moving to the right", lora=(str(lora_file), 0.5), **FAST)
    assert job.settings["lora"] == [{"path": str(lora_file), "strength": 0.5}]
    pipe("a red circle moving to the right", lora=[], **FAST)


def test_lora_spec_errors_name_the_problem(tmp_path):
    f = tmp_path / "x.safetensors"
    f.write_bytes(b"")
    assert parse_lora_specs([str(f), f"{f}:0.25"]) == [{"path": str(f), "strength": 1.0},
                                                        {"path": str(f), "strength": 0.25}]
    with pytest.raises(FileNotFoundError, match="lora nope.safetensors: file not found"):
        parse_lora_specs("nope.safetensors")
    with pytest.raises(ValueError, match="the strength after ':' must be a number \\(FILE:0.8\\), got 'abc'"):
        parse_lora_specs(f"{f}:abc")
    with pytest.raises(ValueError, match="strength must be a finite number"):
        parse_lora_specs({"path": str(f), "strength": float("nan")})
    with pytest.raises(ValueError, match="expected 'FILE\\[:STRENGTH\\]'"):
        parse_lora_specs([3])


def test_dtype_auto_keeps_small_models_in_fp32_and_names_the_choice():
    p = load_pipeline("demo", dtype="auto", progress=False)
    assert next(p.dit.parameters()).dtype == torch.float32 and p.c.dtype_reason.startswith("auto")
    assert load_pipeline("demo", progress=False).c.dtype_reason == "default on CPU"
    b = load_pipeline("demo", dtype="bf16", progress=False)
    assert next(b.dit.parameters()).dtype == torch.bfloat16
    out = b("a red circle moving to the right", **FAST)
    assert out.settings["dtype"] == "bf16" and torch.isfinite(out.latents).all()
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        load_pipeline("demo", dtype="fp8", progress=False)


def test_fps_per_call_is_written_and_recorded(pipe, tmp_path):
    import av

    from openwan.video import read_video_metadata
    out = pipe("a red circle moving to the right", sample_steps=2, seed=1, fps=12, output_path=tmp_path / "a.mp4")
    assert out.settings["fps"] == 12 and read_video_metadata(out.path)["openwan"]["fps"] == 12
    with av.open(str(out.path)) as c:
        assert c.streams.video[0].average_rate == 12
    plain = pipe("a red circle moving to the right", sample_steps=2, seed=1, output_path=tmp_path / "b.mp4")
    assert "fps" not in plain.settings                                   # per call: not carried over
    with av.open(str(plain.path)) as c:
        assert c.streams.video[0].average_rate == pipe.variant.sample.fps
    with pytest.raises(ValueError, match=r"fps must be a frame rate in \(0, 240\]"):
        pipe("a red circle moving to the right", fps=0)
    # one rule for the call and for openwan.validate (CLI, server): fractional rates are written as rationals
    from openwan.validate import generation_args
    with pytest.raises(ValueError, match=r"fps must be a frame rate in \(0, 240\]"):
        generation_args(fps=241)
    assert generation_args(fps=16.0)["fps"] == 16 and isinstance(generation_args(fps=16.0)["fps"], int)
    ntsc = pipe("a red circle moving to the right", sample_steps=2, seed=1, fps=23.976, output_path=tmp_path / "c.mp4")
    with av.open(str(ntsc.path)) as c:
        assert abs(float(c.streams.video[0].average_rate) - 23.976) < 1e-3


def test_cli_takes_the_new_flags(tmp_path, capsys, lora_file):
    from openwan.cli import main
    from openwan.cli_args import GUIDE_METHOD_CHOICES, SOLVER_CHOICES
    from openwan.denoiser import GUIDE_METHODS
    from openwan.sampling import SOLVERS
    assert set(SOLVER_CHOICES) == set(SOLVERS) and GUIDE_METHOD_CHOICES == GUIDE_METHODS
    out = tmp_path / "v.mp4"
    assert main(["generate", "a red circle moving to the right", "--sample_steps", "4", "--seed", "2", "-o", str(out),
                 "--step_cache", "--lora", f"{lora_file}:0.5", "--fps", "10", "--offload_model", "False",
                 "--quiet"]) == 0
    import json
    rec = json.loads(out.with_suffix(".json").read_text())["openwan"]
    assert rec["step_cache"] == str(parse_step_cache("default")) and rec["fps"] == 10 and rec["dtype"] == "fp32"
    assert rec["lora"] == [{"path": str(lora_file), "strength": 0.5}]
    again = tmp_path / "again.mp4"
    assert main(["generate", "--from", str(out.with_suffix(".json")), "-o", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()                         # --from reproduces every setting
    capsys.readouterr()
    assert main(["generate", "x", "--ring_size", "2"]) == 2
    assert "--ring_size (from the reference generate.py) is not supported: ring attention" in capsys.readouterr().err
    bf16 = tmp_path / "bf16.mp4"                      # the reference's --convert_model_dtype: bf16, as --dtype bf16
    assert main(["generate", "a red circle moving to the right", "--sample_steps", "2", "--convert_model_dtype",
                 "-o", str(bf16), "--quiet"]) == 0
    assert json.loads(bf16.with_suffix(".json").read_text())["openwan"]["dtype"] == "bf16"
    with pytest.raises(SystemExit):                                       # argparse: invalid choice
        main(["generate", "x", "--offload_model", "maybe"])
    assert "invalid choice 'maybe' (choose none, sequential, True, False, blocks[:N] or auto)" in capsys.readouterr().err


def test_a_call_does_not_depend_on_the_calls_before_it():
    """Prompts are encoded one at a time (as the reference encodes the prompt and the negative one): a batch's
    padding and GEMM shapes moved the text features by ulps, so a pipeline's second video differed from the same
    call on a fresh pipeline (2 levels in some pixels)."""
    kw = dict(sample_steps=3, seed=4, output_type="latent")
    warm = load_pipeline("demo", progress=False)
    warm("a red circle moving to the right", **kw)
    second = warm("a small blue square moving up", **kw).latents
    fresh = load_pipeline("demo", progress=False)("a small blue square moving up", **kw).latents
    assert torch.equal(second, fresh)


def test_cli_prompt_file_makes_one_video_per_prompt_with_the_model_loaded_once(tmp_path, monkeypatch, capsys):
    import json

    from openwan.cli import main
    from openwan.video import read_video
    monkeypatch.chdir(tmp_path)
    loads = []
    import openwan.pipelines as pipelines
    real = pipelines.load_pipeline
    monkeypatch.setattr(pipelines, "load_pipeline", lambda *a, **k: loads.append(1) or real(*a, **k))
    (tmp_path / "p.txt").write_text("# a comment\na red circle moving to the right\n\n  a small blue square moving up\n")
    assert main(["generate", "--prompt_file", "p.txt", "--sample_steps", "3", "--base_seed", "4", "--quiet"]) == 0
    assert len(loads) == 1
    records = {json.loads(f.read_text())["openwan"]["prompt"]: f for f in sorted((tmp_path / "outputs").glob("*.json"))}
    capsys.readouterr()
    assert main(["generate", "--prompt_file", "p.txt", "--sample_steps", "3", "--base_seed", "4",
                 "-o", "renders"]) == 0                                   # -o: the videos' folder
    err = capsys.readouterr().err                      # each video named, from the second with the file's time left
    assert "[1/2] a red circle moving to the right\n" in err
    assert re.search(r"\[2/2\] a small blue square moving up \(~\d+s left for the file\)", err), err[-500:]
    rendered = sorted(json.loads(f.read_text())["openwan"]["prompt"] for f in (tmp_path / "renders").glob("*.json"))
    assert rendered == sorted(records) and len(list((tmp_path / "renders").glob("*.mp4"))) == 2
    assert sorted(records) == ["a red circle moving to the right", "a small blue square moving up"]
    for prompt, rec in records.items():
        assert json.loads(rec.read_text())["openwan"]["seed"] == 4       # --base_seed: the same seed for each
        assert main(["generate", prompt, "--sample_steps", "3", "--base_seed", "4", "-o", "one.mp4", "--quiet",
                     "--overwrite"]) == 0                                 # = that prompt alone, same settings
        assert np.array_equal(read_video(rec.with_suffix(".mp4"))[0], read_video(tmp_path / "one.mp4")[0])
    capsys.readouterr()
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    for argv, says in ((["--prompt_file", "empty.txt"], "holds no prompt"),
                       (["--prompt_file", "p.txt", "-o", "p.txt"], "--output p.txt with --prompt_file: a file"),
                       (["x", "--prompt_file", "p.txt"], "a prompt and --prompt_file: give one of them"),
                       (["--prompt_file", "missing.txt"], "--prompt_file missing.txt: file not found")):
        assert main(["generate", *argv]) == 2
        assert says in capsys.readouterr().err


def test_cli_jsonl_prompt_file_lines_carry_their_own_settings(tmp_path, monkeypatch, capsys):
    """A .jsonl prompt file: one request per line with the fields `openwan serve` takes (checked the same way, file
    paths from the file's folder), each line's settings over the command line's."""
    import json

    from PIL import Image

    from openwan.cli import main
    from openwan.video import read_video
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    picture = np.full((128, 128, 3), 32, np.uint8)
    picture[50:78, 20:48] = (230, 40, 40)
    Image.fromarray(picture).save(tmp_path / "in" / "red.png")
    (tmp_path / "in" / "p.jsonl").write_text(
        '{"prompt": "a red circle moving to the right", "seed": 5}\n# a comment\n'
        '{"prompt": "a red square moving up", "image": "red.png", "seed": 6, "sample_steps": 2}\n')
    assert main(["generate", "--prompt_file", "in/p.jsonl", "--sample_steps", "3", "--quiet"]) == 0
    records = {json.loads(f.read_text())["openwan"]["prompt"]: f for f in (tmp_path / "outputs").glob("*.json")}
    singles = {"a red circle moving to the right": ["--seed", "5", "--sample_steps", "3"],
               "a red square moving up": ["--seed", "6", "--sample_steps", "2", "--image", "in/red.png"]}
    assert sorted(records) == sorted(singles)
    for prompt, flags in singles.items():
        assert main(["generate", prompt, *flags, "-o", "one.mp4", "--overwrite", "--quiet"]) == 0
        assert np.array_equal(read_video(records[prompt].with_suffix(".mp4"))[0], read_video("one.mp4")[0])
    capsys.readouterr()
    for text, says in (('{"prompt": "x", "colour": 3}', "line 1: unknown field(s) ['colour']; a line takes"),
                       ('{"prompt": "x"', "line 1: not JSON"), ('{"seed": 3}', 'line 1: an object with a "prompt"'),
                       ('{"prompt": "x", "image": "nope.png"}', "line 1: image in/nope.png: file not found"),
                       ('{"prompt": "x", "src_ref_images": "red.png, nope.png"}',   # the comma-separated form
                        "line 1: src_ref_images in/nope.png: file not found")):
        (tmp_path / "in" / "bad.jsonl").write_text(text + "\n")
        assert main(["generate", "--prompt_file", "in/bad.jsonl", "--quiet"]) == 2
        assert says in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_pipeline_equals_eager_within_rounding():
    """inductor fuses and reorders float ops: the compiled DiT's latents stay within a few ulps per step."""
    eager = load_pipeline("demo", progress=False)("a red circle moving to the right", **FAST).latents
    compiled = load_pipeline("demo", progress=False, compile=True)("a red circle moving to the right", **FAST).latents
    bound = 16 * FAST["sample_steps"] * torch.finfo(torch.float32).eps * eager.abs().max().item()
    assert (compiled - eager).abs().max().item() <= bound


def test_cli_quantize_block_swap_and_plan(tmp_path, capsys):
    from openwan.cli import main
    base = ["generate", "a red circle moving to the right", "--sample_steps", "3", "--seed", "4", "--quiet"]
    assert main(base + ["-o", str(tmp_path / "plain.mp4")]) == 0
    assert main(base + ["-o", str(tmp_path / "swap.mp4"), "--offload_model", "blocks:1"]) == 0
    assert (tmp_path / "swap.mp4").read_bytes() == (tmp_path / "plain.mp4").read_bytes()   # streaming is exact
    assert main(base + ["-o", str(tmp_path / "q.mp4"), "--quantize", "int8"]) == 0
    assert (tmp_path / "q.mp4").is_file()
    capsys.readouterr()
    assert main(["plan", "--task", "t2v-1.3B", "--device_memory", "24GB"]) == 0
    out = capsys.readouterr().out
    assert "estimated peak" in out and "fits:" in out
    assert main(["plan", "--task", "t2v-99B"]) == 2
    assert "unknown task 't2v-99B'" in capsys.readouterr().err


def test_diffusers_names_give_the_same_call(pipe):
    ours = pipe("a red circle moving to the right", size="128*128", frame_num=9, sample_steps=3, guide_scale=4.0,
                seed=7, output_type="np")
    theirs = pipe("a red circle moving to the right", height=128, width=128, num_frames=9, num_inference_steps=3,
                  guidance_scale=4.0, generator=torch.Generator().manual_seed(7), output_type="np")
    assert isinstance(theirs.frames, np.ndarray) and theirs.frames.shape == (1, 9, 128, 128, 3)   # diffusers' shape
    assert np.array_equal(ours.frames, theirs.frames) and theirs.settings["seed"] == 7
    with pytest.raises(ValueError, match="num_frames and frame_num name the same setting"):
        pipe("a red circle", num_frames=9, frame_num=9)
    with pytest.raises(ValueError, match="height and width go together"):
        pipe("a red circle", height=64)
    # diffusers' return_dict=False: the frames in a tuple, as its pipelines return them
    (frames,) = pipe("a red circle moving to the right", height=128, width=128, num_frames=9, num_inference_steps=3,
                     guidance_scale=4.0, generator=torch.Generator().manual_seed(7), output_type="np",
                     return_dict=False, num_videos_per_prompt=1)
    assert np.array_equal(frames, ours.frames)
    with pytest.raises(ValueError, match="num_videos_per_prompt=2: a call makes one video"):
        pipe("a red circle", num_videos_per_prompt=2)
    with pytest.raises(ValueError, match="return_dict must be True or False"):
        pipe("a red circle", return_dict="no")


def test_tiled_decode_is_recorded_and_is_the_vaes_tiled_decode(pipe):
    from openwan.video import to_uint8
    kw = dict(sample_steps=2, seed=1, frame_num=9)                  # 9 frames: the tiling, at a third of the cost
    plain = pipe("a red circle moving to the right", **kw)
    tiled = pipe("a red circle moving to the right", tile=32, **kw)
    latent = pipe("a red circle moving to the right", output_type="latent", **kw).latents
    assert tiled.settings["tile"] == 32 and "tile" not in plain.settings
    expected = to_uint8(pipe.vae.decode(latent[None], tile=32)[0].float())
    assert np.array_equal(tiled.frames[0], expected)            # the call decodes through the VAE's tiling
    assert not np.array_equal(tiled.frames[0], plain.frames[0])  # which blends seams: not the whole decode


def test_v2v_on_a_demo_video_keeps_its_frames(pipe, tmp_path):
    """A source video file is resampled to the model's own frame rate by default (the demo's 16 fps), so a
    demo video comes back with its 33 frames."""
    src = pipe("a red circle moving to the right", sample_steps=2, seed=1, output_path=tmp_path / "src.mp4")
    v2v = load_pipeline("demo", task="v2v", progress=False)
    out = v2v("a red circle moving to the right", src_video=str(src.path), sample_steps=4, seed=1, strength=0.8)
    assert out.frames[0].shape[0] == 33 and out.settings["src_fps"] == 16.0
