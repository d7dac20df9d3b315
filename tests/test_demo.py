"""The embedded demo model: shipped files, strict loading, generation, the recipe's pieces, the benchmark."""
import json
import os

import numpy as np
import pytest
import torch
from bounds import float64_twin, noise_floor

from openwan.demo import (
    DEMO_DIR,
    DEMO_DIT,
    DEMO_SAMPLE,
    DEMO_TEXT_ENCODER,
    DEMO_V1_DIT,
    DEMO_V1_VAE,
    DEMO_V1_VARIANT,
    DEMO_VAE,
    demo_checkpoint_dir,
)

SEEN_PROMPT = "a red circle moving to the right"   # ("red", "circle", "right") is a training combination


@pytest.fixture(scope="module")
def pipe():
    from openwan.pipelines import load_pipeline
    return load_pipeline("demo", progress=False)


# ----------------------------------------------------------------------------- the shipped files

def test_shipped_checkpoint_is_small_half_precision_official_layout():
    from safetensors import safe_open
    d = demo_checkpoint_dir()
    assert d == DEMO_DIR
    for name in ("config.json", "diffusion_pytorch_model.safetensors", "vae_config.json", "t5_config.json",
                 "google/umt5-xxl/tokenizer.json"):
        assert (d / name).is_file(), name
    assert (d / "Wan2.1_VAE.pth").is_file() or (d / "Wan2.1_VAE.safetensors").is_file()
    total = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    # (issue 22: "a few tens of MB at most"; four DiTs of 3.4 MiB, the VAE and the text encoder: 18.3 MiB)
    assert total < 20 * 2 ** 20, f"demo checkpoint is {total / 2 ** 20:.1f} MiB"
    from openwan.pipelines.components import EXPERTS, ROLLING_DIR
    experts = [d / folder for _, folder, _ in EXPERTS if folder != ROLLING_DIR]
    assert all(e.is_dir() for e in experts)              # continuation, reference and two-object experts ship
    assert not (d / ROLLING_DIR).exists()                 # a rolling expert does not (docs/long_video.md, "Rolling")
    for dit in [d] + experts:                              # the main DiT and every expert in half precision
        with safe_open(str(dit / "diffusion_pytorch_model.safetensors"), "pt") as fh:
            dtypes = {fh.get_slice(k).get_dtype() for k in fh.keys()}
        assert dtypes == {"F16"}


def test_shipped_continuation_expert_is_the_demos_architecture_with_its_own_weights():
    from openwan.models.dit import WanModel
    from openwan.pipelines.components import CONTINUATION_DIR
    d = demo_checkpoint_dir()
    main = WanModel.from_pretrained(d, dtype=torch.float32)
    expert = WanModel.from_pretrained(d / CONTINUATION_DIR, dtype=torch.float32)
    assert expert.config == main.config == DEMO_DIT
    assert not all(torch.equal(a, b) for a, b in zip(main.state_dict().values(), expert.state_dict().values()))


def test_demo_configs_match_the_shipped_files():
    from openwan.checkpoints import dit_config_from_official_json
    from openwan.configs import (
        DEMO_V1_VAE,
        DEMO_V2_VARIANT,
        DEMO_VARIANT,
        TextEncoderConfig,
        VAEConfig,
    )
    from openwan.variant_io import read_variant, variant_to_dict
    d = demo_checkpoint_dir()
    assert dit_config_from_official_json(json.loads((d / "config.json").read_text())) == DEMO_DIT
    assert VAEConfig.from_dict(json.loads((d / "vae_config.json").read_text()), strict=True) == DEMO_VAE
    assert TextEncoderConfig.from_dict(json.loads((d / "t5_config.json").read_text()), strict=True) == DEMO_TEXT_ENCODER
    assert DEMO_VARIANT == DEMO_V2_VARIANT                         # the shipped model is v2, and its folder says so
    assert variant_to_dict(read_variant(d)) == variant_to_dict(DEMO_VARIANT)
    assert (DEMO_DIT.model_type, DEMO_DIT.patch_size) == ("ti2v", (1, 2, 2))
    assert (DEMO_SAMPLE.size, DEMO_SAMPLE.frame_num, DEMO_SAMPLE.fps) == ("128*128", 33, 16)
    # the VAE's latent normalization was measured on the world (not the published VAE's numbers), v2's anew at
    # its size: the same VAE architecture (and weights) as v1's, other statistics
    assert DEMO_VAE.mean != VAEConfig().mean and all(s > 0 for s in DEMO_VAE.std)
    assert DEMO_VAE.replace(mean=DEMO_V1_VAE.mean, std=DEMO_V1_VAE.std) == DEMO_V1_VAE and DEMO_VAE != DEMO_V1_VAE


def test_shipped_weights_load_strictly_and_upcast_to_fp32(tmp_path):
    from openwan.checkpoints import CheckpointError, read_safetensors, save_safetensors
    from openwan.models.dit import WanModel
    d = demo_checkpoint_dir()
    dit = WanModel.from_pretrained(d, dtype=torch.float32)
    assert dit.config == DEMO_DIT
    assert all(p.dtype == torch.float32 for p in dit.parameters())
    sd = read_safetensors(d / "diffusion_pytorch_model.safetensors")
    assert set(sd) == set(dit.state_dict())
    k = "blocks.0.self_attn.q.weight"
    assert torch.equal(dit.state_dict()[k], sd[k].float())
    # strict: one missing tensor is a CheckpointError naming it
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((d / "config.json").read_text())
    save_safetensors({n: t for n, t in sd.items() if n != k}, bad / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError, match="missing keys: blocks.0.self_attn.q.weight"):
        WanModel.from_pretrained(bad, dtype=torch.float32)


def test_load_pipeline_demo_uses_the_demo_variant(pipe):
    assert pipe.variant.name == "demo" and pipe.variant.task == "ti2v"
    assert pipe.dit.config == DEMO_DIT
    assert pipe.vae.config == DEMO_VAE
    assert pipe.c.text_encoder.config == DEMO_TEXT_ENCODER
    assert next(pipe.dit.parameters()).dtype == torch.float32
    assert pipe.vae.dtype == torch.float32


def test_generation_shape(pipe):
    out = pipe(SEEN_PROMPT, seed=0, sample_steps=2)
    video = out.frames[0]
    assert video.dtype == np.uint8 and video.shape == (33, 128, 128, 3) and DEMO_SAMPLE.frame_num == 33
    assert out.settings["sample_steps"] == 2 and out.settings["variant"] == "demo"
    assert pipe.task == "ti2v"


@pytest.mark.parametrize("prompt,color", [("a red square moving to the left", "red"),
                                          ("a green circle moving to the left", "green"),
                                          ("a blue circle moving to the left", "blue")])
def test_short_generation_gets_the_color_right(pipe, prompt, color):
    """Color is the attribute the demo model reads best (100% in the benchmark): a 12-step generation of each of
    the benchmark's first three seen prompts (one per primary colour) shows an object of that color."""
    from openwan.demo import detect
    det = detect.detect(pipe(prompt, seed=0, sample_steps=12).frames[0])
    assert det["found"] and det["color"] == color, det


@pytest.mark.slow
def test_benchmark_meets_targets(pipe):
    """Issue 7's targets, measured like `openwan bench demo` (all 36 prompts, seeds 0 and 1; about 3 minutes
    on one thread): attribute accuracy >= 90% on seen combinations and >= 75% on held-out ones."""
    from openwan.demo.bench import (
        ATTRIBUTES,
        TARGETS,
        meets_targets,
        run_benchmark,
        summarize,
    )
    s = summarize(run_benchmark(pipe, seeds=(0, 1), progress=False))
    assert s["seen"]["videos"] == 48 and s["heldout"]["videos"] == 24
    for split, target in TARGETS.items():
        for k in ATTRIBUTES:
            assert s[split]["accuracy"][k] >= target, (split, k, s[split]["accuracy"])
    assert meets_targets(s) == {"seen": True, "heldout": True}


# ----------------------------------------------------------------------------- the recipe's pieces

@pytest.fixture(scope="module")
def small_vae():
    from openwan.configs import VAEConfig
    from openwan.models.vae import WanVAE
    from openwan.testing import randomize_
    torch.manual_seed(0)
    cfg = VAEConfig(dim=4, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temporal_downsample=(False, True),
                    mean=(0.1, -0.2, 0.3, 0.0), std=(0.5, 2.0, 1.0, 1.5))
    return randomize_(WanVAE(cfg), seed=3, std=0.05).eval()


def test_differentiable_vae_passes_match_encode_and_decode(small_vae):
    """The training loop's encode/decode (with gradients) are the inference passes exactly."""
    from openwan.demo.train import vae_posterior, vae_reconstruct
    vae = small_vae
    video = torch.rand(2, 3, 9, 16, 16) * 2 - 1
    mu, logvar = vae_posterior(vae, video)
    assert mu.shape == logvar.shape == (2, 4, 5, 4, 4)   # temporal ratio 2, spatial 4
    mean = torch.tensor(vae.config.mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.std).view(1, -1, 1, 1, 1)
    z = vae.encode(video)
    rec = vae_reconstruct(vae, mu)
    assert rec.shape == video.shape
    dec = vae.decode(z)
    # Equal in exact arithmetic, but the passes with gradients round differently (RMSNorm through F.normalize,
    # SiLU out of place; the decoder then carries the encoder's difference), by an amount that depends on the CPU.
    # The noise floor is measured here: each fp32 path against the same path in float64; the two fp32 results
    # differ by at most about twice that (triangle inequality through the float64 values, which agree but for
    # the latent's rounding to fp32, ~1 ulp). Typically 5.6e-7 (|z| <= 0.53) and 9.2e-6 (|pixels| <= 1.1);
    # a wrong mean or std is off by >= 0.1.
    wide = float64_twin(vae)
    mu64, _ = vae_posterior(wide, video.double())
    z64 = wide.encode(video.double())
    lat, lat64 = (mu - mean) / std, (mu64 - mean.double()) / std.double()
    floor = noise_floor((lat, lat64), (z, z64))
    torch.testing.assert_close(lat, z, rtol=0, atol=2 * floor)
    floor = noise_floor((rec, vae_reconstruct(wide, mu64)), (dec, wide.decode(z64)))
    torch.testing.assert_close(rec.clamp(-1, 1), dec, rtol=0, atol=2 * floor)
    # and gradients flow to the encoder's first conv
    video.requires_grad_(False)
    with torch.enable_grad():
        vae.requires_grad_(True)
        mu, _ = vae_posterior(vae, video)
        vae_reconstruct(vae, mu).abs().mean().backward()
        assert vae.encoder.conv1.weight.grad is not None and vae.encoder.conv1.weight.grad.abs().sum() > 0
        vae.zero_grad(set_to_none=True)
        vae.requires_grad_(False)


def test_inflated_vae_is_a_per_frame_autoencoder():
    """After inflate_init_, a still video reconstructs to identical frames (every causal conv sees only the
    current frame, temporal down/upsampling picks/repeats frames); a plain random VAE mixes frames."""
    from openwan.configs import VAEConfig
    from openwan.demo.train import inflate_init_
    from openwan.models.vae import WanVAE
    from openwan.testing import randomize_
    cfg = VAEConfig(dim=4, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temporal_downsample=(True, True),
                    mean=(0.0,) * 4, std=(1.0,) * 4)
    frame = torch.rand(1, 3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    still = frame.expand(1, 3, 9, 16, 16).contiguous()
    plain = randomize_(WanVAE(cfg), seed=1, std=0.2).eval()
    out = plain.decode(plain.encode(still))[0]
    mixing = (out[:, 1:] - out[:, :1]).abs().max().item()
    assert mixing > 1e-3
    inflated = randomize_(WanVAE(cfg), seed=1, std=0.2).eval()
    inflate_init_(inflated)
    assert torch.all(inflated.decoder.head[-1].bias == 32 / 127.5 - 1)
    out = inflated.decode(inflated.encode(still))[0]
    image = inflated.decode(inflated.encode(frame))[0, :, 0]
    # Frames are computed in chunks of different lengths (1 frame, then 4), so fp32 rounds them differently by an
    # amount that depends on the CPU. The noise floor is measured here: the same model in float64 (its norms still
    # compute in fp32, elementwise, so alike in every frame) has far less rounding, and fp32's distance to it is
    # this machine's rounding. Frames equal in exact arithmetic differ in fp32 by at most about twice that
    # (triangle inequality through the float64 values); a model that mixes frames differs by ~`mixing`.
    wide = float64_twin(inflated)
    out64 = wide.decode(wide.encode(still.double()))[0]
    image64 = wide.decode(wide.encode(frame.double()))[0, :, 0]
    floor = max((out - out64).abs().max().item(), (image - image64).abs().max().item())
    floor += torch.finfo(torch.float32).eps * out.abs().max().item()  # and one ulp of the values themselves
    assert 2 * floor < mixing / 10, (floor, mixing)  # the check below can tell mixing from rounding
    torch.testing.assert_close(out, out[:, :1].expand_as(out), rtol=0, atol=2 * floor)
    # and frame 0 alone gives the same frame: the video path is the image path
    torch.testing.assert_close(image, out[:, 0], rtol=0, atol=2 * floor)


def test_object_weight_marks_the_object():
    from openwan.demo import world
    from openwan.demo.train import object_weight
    clip = world.make_clip(0, attributes=[("red", "square", "still")])
    frames = world.render_clip(clip, size=32, frames=1)
    w = object_weight(world.to_tensor(frames)[None], boost=4.0)[0, 0, 0].numpy()
    differs = np.abs(frames[0].astype(int) - 32).max(axis=-1) > 3
    assert set(np.unique(w)) == {1.0, 5.0}
    np.testing.assert_array_equal(w == 5.0, differs)


def test_caption_variants_paraphrase_the_same_attributes():
    from openwan.demo import world
    from openwan.demo.train import caption_variants
    rng = np.random.default_rng(0)
    for i in range(20):
        clip = world.make_clip(i)
        caps = caption_variants(clip, rng, 3)
        assert len(caps) == 3 and caps[0] == clip.caption and len(set(caps)) == 3
        assert all(world.parse_prompt(c) == clip.objects[0].attributes for c in caps)


def test_text_encoder_is_deterministic_and_half_exact():
    from openwan.demo.train import make_text_encoder
    a, b = make_text_encoder(), make_text_encoder()
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
        assert torch.equal(p, p.half().float())      # exactly representable in the shipped fp16


def test_shipped_text_encoder_is_the_training_one(pipe):
    from openwan.demo.train import make_text_encoder
    te = make_text_encoder()
    prompts = [SEEN_PROMPT, ""]
    for x, y in zip(te.encode(prompts), pipe.c.text_encoder.encode(prompts)):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# ----------------------------------------------------------------------------- the benchmark

def _record(split, ok, expected=None, detected=None):
    r = {"split": split, "seconds": 1.0, "correct": {"color": ok[0], "shape": ok[1], "motion": ok[2],
                                                      "all": all(ok)}}
    if expected is not None:
        r["expected"] = dict(zip(("color", "shape", "motion"), expected))
        r["detected"] = dict(zip(("color", "shape", "motion"), detected))
    return r


def test_bench_summary_hand_computed():
    from openwan.demo.bench import format_report, meets_targets, summarize
    recs = [_record("seen", (True, True, True)), _record("seen", (True, False, True)),
            _record("heldout", (True, True, False)), _record("heldout", (False, True, False))]
    s = summarize(recs)
    assert s["seen"]["accuracy"] == {"color": 1.0, "shape": 0.5, "motion": 1.0, "all": 0.5,
                                     "attribute_mean": pytest.approx(2.5 / 3)}
    assert s["heldout"]["accuracy"]["motion"] == 0.0 and s["heldout"]["accuracy"]["color"] == 0.5
    assert s["total"]["videos"] == 4 and s["total"]["accuracy"]["all"] == 0.25
    assert meets_targets(s) == {"seen": False, "heldout": False}
    assert meets_targets(summarize([_record("seen", (True,) * 3), _record("heldout", (True,) * 3)])) == \
        {"seen": True, "heldout": True}
    text = format_report(s, {"steps": 3})
    assert "seen" in text and "50.0%" in text and "MISSED" in text


def test_bench_summary_by_value():
    from openwan.demo.bench import format_report, summarize
    up, left = ("red", "circle", "up"), ("red", "square", "left")
    recs = [_record("seen", (True, True, False), up, ("red", "circle", "down")),
            _record("seen", (True, True, False), up, ("red", "circle", "down")),
            _record("heldout", (True, True, True), up, up),
            _record("seen", (True, False, False), left, ("red", None, None))]
    s = summarize(recs)
    m = s["by_value"]["motion"]
    assert m["up"] == {"videos": 3, "correct": 1, "mistaken_for": {"down": 2}}
    assert m["left"] == {"videos": 1, "correct": 0, "mistaken_for": {"None": 1}}
    assert s["by_value"]["color"]["red"] == {"videos": 4, "correct": 4, "mistaken_for": {}}
    assert s["by_value"]["shape"]["square"]["mistaken_for"] == {"None": 1}
    text = format_report(s, {})
    assert "motion by prompt: up 1/3, left 0/1" in text and "up->down x2" in text
    assert "translations" not in s          # no tracks in these records


def test_bench_translation_placement():
    from openwan.demo.bench import format_report, summarize, translation_placement
    def rec(motion, start, dx, dy):
        r = _record("seen", (True, True, True), ("red", "circle", motion), ("red", "circle", motion))
        r["track"] = {"start": list(start), "dx": dx, "dy": dy}
        return r
    recs = [rec("up", (0.5, 0.8), 0.0, -0.4),      # starts low, moves up: right side, right sign, away
            rec("up", (0.5, 0.2), 0.0, 0.4),       # starts high, moves down: wrong side, wrong sign, away
            rec("right", (0.7, 0.5), 0.1, 0.0),    # starts right, moves right: wrong side, right sign, toward
            rec("still", (0.5, 0.5), 0.0, 0.0),    # not a translation: ignored
            rec("down", (0.5, 0.3), float("nan"), float("nan"))]   # no track: ignored
    t = translation_placement(recs)
    assert t == {"videos": 3, "start_on_needed_side": 1, "move_sign_as_prompted": 2,
                 "move_away_from_nearer_border": 2}
    s = summarize(recs)
    assert s["translations"] == t
    assert "translations (3 videos): start on the side the motion needs 1" in format_report(s, {})


def test_bench_cli_json(tmp_path, capsys):
    from openwan.demo.bench import main
    out = tmp_path / "r.json"
    assert main(["--limit", "1", "--seeds", "1", "--sample_steps", "2", "--json", str(out), "--quiet"]) == 0
    r = json.loads(out.read_text())
    assert [v["split"] for v in r["videos"]] == ["seen", "heldout"]
    assert {"seen", "heldout", "total", "by_value"} <= set(r["summary"])
    assert all(0 <= v <= 1 for v in r["videos"][0]["track"]["start"])
    assert r["settings"]["steps"] == 2
    assert "color" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the recipe, end to end

def test_recipe_end_to_end_tiny(tmp_path):
    """Every stage of `python -m openwan.demo.train` on a few steps: VAE (both phases), latents, DiT with the
    openwan Trainer, export; the exported folder loads strictly and generates."""
    from openwan.demo import train
    from openwan.pipelines import load_pipeline
    work = tmp_path / "work"
    assert train.main(["--stage", "vae", "--work_dir", str(work), "--vae_image_steps", "2", "--vae_image_batch", "1",
                       "--vae_steps", "1", "--vae_batch", "1", "--vae_frames", "5", "--vae_stats_clips", "4"]) == 0
    assert (work / "vae" / "vae_config.json").is_file()
    assert train.main(["--stage", "latents", "--work_dir", str(work), "--n_clips", "4", "--captions", "2"]) == 0
    data = torch.load(work / "latents.pt", weights_only=False)
    assert data["latents"].shape == (4, 16, 5, 8, 8) and len(data["captions"]) == 4 and "" in data["text"]
    path = train.train_dit(work, steps=2, batch=2, validate_every=0, checkpoint_every=1)
    assert (path / "final_ema" / "config.json").is_file()
    assert train.trained_dit_weights(work) == path / "final_ema"
    out = train.export(work, tmp_path / "ckpt")
    pipe = load_pipeline(out, progress=False)     # its openwan.json: v1's variant with the trained VAE's statistics
    assert pipe.task == "t2v" and pipe.dit.config == DEMO_V1_DIT
    assert pipe.vae.config.replace(mean=DEMO_V1_VAE.mean, std=DEMO_V1_VAE.std) == DEMO_V1_VAE
    assert pipe(SEEN_PROMPT, seed=0, sample_steps=2).frames[0].shape == (17, 64, 64, 3)
    from openwan.demo.bench import _ckpt_variant
    assert _ckpt_variant(out) is DEMO_V1_VARIANT
    # A run resumed for more steps and stopped early leaves an older final_ema: export takes the newer checkpoint.
    newest = sorted((path / "checkpoints").glob("step-*"))[-1]
    t = (path / "final_ema" / "config.json").stat().st_mtime + 10
    os.utime(newest / "state.json", (t, t))
    assert train.trained_dit_weights(work) == newest / "ema.safetensors"
    # --dit_weights picks the weights to ship explicitly (here the raw, non-EMA weights of the first checkpoint).
    first = sorted((path / "checkpoints").glob("step-*"))[0]
    assert train.main(["--stage", "export", "--work_dir", str(work), "--export_dir", str(tmp_path / "ck2"),
                       "--dit_weights", str(first / "model.safetensors")]) == 0
    from safetensors.torch import load_file
    raw = load_file(first / "model.safetensors")
    shipped = load_file(tmp_path / "ck2" / "diffusion_pytorch_model.safetensors")
    assert shipped.keys() == raw.keys()
    assert all(torch.equal(shipped[k], raw[k].half()) for k in raw)


def test_bench_lists_what_it_can_run(tmp_path):
    from openwan.demo.bench import list_benchmarks
    text = list_benchmarks()
    assert "openwan bench demo" in text
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "common.py").write_text('"""helpers"""')
    (tmp_path / "benchmarks" / "vae.py").write_text('"""VAE: ours vs diffusers.\n\nmore"""')
    text = list_benchmarks(tmp_path)
    assert "python benchmarks/vae.py" in text and "VAE: ours vs diffusers." in text and "common" not in text
    assert "benchmarks/" not in list_benchmarks(tmp_path / "none")


def test_grow_patch_computes_the_small_model_on_blocky_latents():
    """A DiT grown from patch (1,1,1) to (1,2,2) gives, on a latent made of constant 2x2 blocks, the old
    model's output on one cell per block, repeated over the block (the same tokens, positions and text)."""
    import dataclasses

    from openwan.configs import get_variant
    from openwan.demo.train import grow_patch
    from openwan.models.dit import WanModel
    from openwan.testing import randomize_
    old_cfg = dataclasses.replace(get_variant("tiny-t2v").dit, patch_size=(1, 1, 1))
    new_cfg = dataclasses.replace(old_cfg, patch_size=(1, 2, 2), model_type="ti2v")
    old = randomize_(WanModel(old_cfg).eval(), seed=3, std=0.2)
    new = WanModel(new_cfg).eval()
    new.load_state_dict(grow_patch(old.state_dict(), (1, 1, 1), (1, 2, 2)))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, old_cfg.in_dim, 3, 4, 6, generator=g)
    ctx = torch.randn(1, 7, old_cfg.text_dim, generator=g)
    with torch.no_grad():
        ref = old(x, torch.tensor([700]), ctx)
        out = new(x.repeat_interleave(2, 3).repeat_interleave(2, 4), torch.tensor([700]), ctx)
    want = ref.repeat_interleave(2, 3).repeat_interleave(2, 4)
    # the embedding sums 4 quarter-weight taps instead of one: a few fp32 roundings per layer, carried
    # through the blocks; 64 ulps of the largest output covers them and is far below a wrong layout (O(1))
    assert (out - want).abs().max() <= 64 * torch.finfo(torch.float32).eps * ref.abs().max()
    with pytest.raises(ValueError, match="cannot grow"):
        grow_patch(old.state_dict(), (1, 2, 2), (1, 3, 3))


def test_export_ships_v2_into_the_package_and_v1_into_a_folder_of_its_own(tmp_path, monkeypatch):
    """The shipping command (`--stage export --work_dir W --dit_weights FILE`, no --export_dir) writes a v2 DiT
    into the package with its variant (TI2V, 128x128, 33 frames at 16 fps, the VAE's measured mean/std); it loads
    strictly as that and generates, and the package's step-cache calibration is the new DiT's (the replaced one's
    removed). A v1 DiT is refused there before anything is written, and exports to a folder of its own as v1
    (the folder --grow_from grows v2 from; growing a v2 folder is refused)."""
    from openwan.caches import store
    from openwan.checkpoints import CheckpointError
    from openwan.configs import DEMO_V2_DIT, DEMO_V2_VARIANT
    from openwan.demo import export as export_module
    from openwan.demo import train
    from openwan.demo.bench import _ckpt_variant
    from openwan.models.dit import WanModel
    from openwan.models.vae import WanVAE
    from openwan.pipelines import load_pipeline
    from openwan.testing import randomize_
    from openwan.variant_io import read_variant, variant_to_dict
    pkg = tmp_path / "package"
    monkeypatch.setattr(export_module, "DEMO_DIR", pkg)       # the package folder, a stand-in here
    monkeypatch.setattr(store, "PACKAGE_DIR", tmp_path / "calibration")          # and the package's calibrations
    monkeypatch.setattr(export_module, "CALIBRATION_STEPS", 2)                   # (short runs: the mechanics)
    monkeypatch.setattr(export_module, "CALIBRATION_PROMPTS", 1)
    work = tmp_path / "work"
    stats = dict(mean=tuple(0.01 * i for i in range(16)), std=tuple(1.0 + 0.02 * i for i in range(16)))
    randomize_(WanVAE(DEMO_VAE.replace(**stats)), 1, std=0.05).save_pretrained(work / "vae")
    from safetensors.torch import save_file
    v1, v2 = work / "v1.safetensors", work / "v2.safetensors"
    save_file(randomize_(WanModel(DEMO_V1_DIT), 2, std=0.05).state_dict(), str(v1))
    save_file(randomize_(WanModel(DEMO_V2_DIT), 2, std=0.05).state_dict(), str(v2))
    with pytest.raises(CheckpointError, match="--export_dir"):
        train.export(work, pkg, dit_path=v1)
    assert not pkg.exists() and not (tmp_path / ".package.tmp").exists()
    assert train.main(["--stage", "export", "--work_dir", str(work), "--export_dir", str(pkg),
                       "--dit_weights", str(v2)]) == 0
    assert variant_to_dict(read_variant(pkg)) == variant_to_dict(DEMO_V2_VARIANT.replace(vae=DEMO_VAE.replace(**stats)))
    pipe = load_pipeline(pkg, progress=False)
    d = pipe.defaults()
    assert pipe.task == "ti2v" and pipe.dit.config == DEMO_V2_DIT and (d.frame_num, d.size, d.fps) == (33, "128*128", 16)
    assert (pipe.vae.config.mean, pipe.vae.config.std) == (stats["mean"], stats["std"])
    assert pipe(SEEN_PROMPT, seed=0, sample_steps=1, frame_num=5).frames[0].shape == (5, 128, 128, 3)
    assert _ckpt_variant(pkg) is DEMO_V2_VARIANT
    first = store.model_key(pipe.dit)
    assert [p.name for p in (tmp_path / "calibration").iterdir()] == [f"{first}.json"]
    assert store.find_calibration(pipe.dit)["steps"] == 2
    save_file(randomize_(WanModel(DEMO_V2_DIT), 3, std=0.05).state_dict(), str(v2))   # shipping other weights
    second = store.model_key(train.export(work, pkg, dit_path=v2) and load_pipeline(pkg, progress=False).dit)
    assert second != first and [p.name for p in (tmp_path / "calibration").iterdir()] == [f"{second}.json"]
    # a continuation expert goes into continuation_model/, in half precision, beside the main DiT
    expert = work / "expert.safetensors"
    save_file(randomize_(WanModel(DEMO_V2_DIT), 4, std=0.05).state_dict(), str(expert))
    cand = tmp_path / "cand"
    assert train.main(["--stage", "export", "--work_dir", str(work), "--export_dir", str(cand),
                       "--dit_weights", str(v2), "--continuation_weights", str(expert), "--two_object_weights",
                       str(v2)]) == 0
    c = load_pipeline(cand, progress=False).c
    from safetensors.torch import load_file
    for loaded, src in ((c.dit_continue, expert), (c.dit_two_objects, v2)):     # (a two-object expert too)
        want = load_file(str(src))
        assert loaded is not None and all(torch.equal(v, want[k].half().float()) for k, v in loaded.state_dict().items())
    assert c.dit_reference is None
    with pytest.raises(CheckpointError, match="patch_size .* depth and width only"):
        train.export(work, tmp_path / "bad", dit_path=v2, continuation=v1)
    # an expert deeper than the main DiT (grow.deepen) is written with its own depth and loads so
    deeper = work / "deeper.safetensors"
    save_file(train.deepen(load_file(str(v2)), 2 * DEMO_V2_DIT.num_layers), str(deeper))
    train.export(work, tmp_path / "deep", dit_path=v2, two_objects=deeper)
    c = load_pipeline(tmp_path / "deep", progress=False).c
    assert c.dit_two_objects.config == DEMO_V2_DIT.replace(num_layers=2 * DEMO_V2_DIT.num_layers)
    assert c.dit.config == DEMO_V2_DIT
    assert not (tmp_path / "bad").exists()
    own = train.export(work, tmp_path / "v1", dit_path=v1)
    assert read_variant(own).task == "t2v" and read_variant(own).sample == DEMO_V1_VARIANT.sample
    assert _ckpt_variant(own) is DEMO_V1_VARIANT
    grown = WanModel.from_pretrained(train.grown_init(tmp_path / "w2", own, DEMO_V2_DIT), dtype=torch.float32)
    want = train.grow_patch(WanModel.from_pretrained(own, dtype=torch.float32).state_dict(), (1, 1, 1), (1, 2, 2))
    assert grown.config == DEMO_V2_DIT and all(torch.equal(grown.state_dict()[k], want[k]) for k in want)
    with pytest.raises(ValueError, match="nothing to grow"):
        train.grown_init(tmp_path / "w3", pkg, DEMO_V2_DIT)
    # `--stage all` trains v1 unless told otherwise: into the package it is refused before any stage runs
    with pytest.raises(ValueError, match="--export_dir"):
        train.main(["--stage", "all", "--work_dir", str(tmp_path / "all")])
    assert not (tmp_path / "all").exists()


def test_dit_subset_keeps_one_object_classic_clips(tmp_path):
    """--dit_subset one-object-classic: only clips of one object doing a classic motion become training items;
    classic: the clips of one or two objects doing classic motions; one-object: one object, any motion."""
    from openwan.demo.train import build_dataset
    attrs = [[("red", "circle", "left")], [("red", "circle", "bounce_lr")],
             [("red", "circle", "left"), ("blue", "square", "up")], [("blue", "square", "growing")]]
    caps = [[f"clip {i} a", f"clip {i} b"] for i in range(4)]
    data = {"latents": torch.randn(4, 4, 5, 2, 2), "captions": caps, "attributes": attrs, "frames": 17,
            "text": {c: torch.full((2, 8), float(i)) for i, c in enumerate([""] + [c for cs in caps for c in cs])}}
    torch.save(data, tmp_path / "latents.pt")
    every, _ = build_dataset(tmp_path / "latents.pt", caption_dropout=0.0)
    some, _ = build_dataset(tmp_path / "latents.pt", caption_dropout=0.0, subset="one-object-classic")
    assert len(every) == 8 and len(some) == 4
    kept = {float(some[i]["context"][0, 0]) for i in range(len(some))}
    assert kept == {float(data["text"][c][0, 0]) for c in caps[0] + caps[3]}
    classic, _ = build_dataset(tmp_path / "latents.pt", caption_dropout=0.0, subset="classic")
    assert {float(classic[i]["context"][0, 0]) for i in range(len(classic))} == {
        float(data["text"][c][0, 0]) for c in caps[0] + caps[2] + caps[3]}
    one, _ = build_dataset(tmp_path / "latents.pt", caption_dropout=0.0, subset="one-object")
    assert {float(one[i]["context"][0, 0]) for i in range(len(one))} == {
        float(data["text"][c][0, 0]) for c in caps[0] + caps[1] + caps[3]}
    looping, _ = build_dataset(tmp_path / "latents.pt", caption_dropout=0.0, subset="one-object-looping")
    assert {float(looping[i]["context"][0, 0]) for i in range(len(looping))} == {
        float(data["text"][c][0, 0]) for c in caps[1]}
    with pytest.raises(ValueError, match="unknown subset"):
        build_dataset(tmp_path / "latents.pt", subset="two")


def test_extend_classic_and_mid_windows_for_a_continuation_expert(tmp_path, monkeypatch):
    """--extend_classic renders classic clips longer too, their whole path over the longer clip (the looping ones
    at their own speed, past their native length), so every clip has a window that starts mid-motion;
    --dit_windows mid trains on those windows only."""
    from openwan.demo import latents as latents_module
    from openwan.demo import world
    from openwan.demo.train import build_dataset
    from openwan.models.vae import WanVAE
    from openwan.testing import randomize_
    randomize_(WanVAE(DEMO_VAE), 1, std=0.05).save_pretrained(tmp_path / "vae")
    rendered = []
    real = world.render_clip

    def spy(clip, size, frames, native_frames=None):
        rendered.append((clip.objects[0].motion, frames, native_frames))
        return real(clip, size=size, frames=frames, native_frames=native_frames)
    monkeypatch.setattr(world, "render_clip", spy)
    out = latents_module.encode_latents(tmp_path, n_clips=4, captions=1, seed=3, size=32, frames=9, extend=8,
                                        looping_share=0.5, extend_classic=True, still=True)
    data = torch.load(out, weights_only=False)
    assert data["extend_classic"] is True
    looping = [m in world.LOOPING_MOTIONS for m, _, _ in rendered]
    assert any(looping) and not all(looping)
    for (motion, frames, native), z in zip(rendered, data["latents"]):
        assert frames == 17 and z.shape[1] == 5                          # (17 - 1) / 4 + 1 latent frames
        assert native == (9 if motion in world.LOOPING_MOTIONS else 17)  # classic: the path spread over 17
    everything, _ = build_dataset(out, caption_dropout=0.0)
    mid, _ = build_dataset(out, caption_dropout=0.0, windows_kept="mid")
    assert len(everything) == 8 and len(mid) == 4
    assert all(bool(mid[i]["mid"]) for i in range(4))                   # the objective continues them all
    assert sum(bool(everything[i]["mid"]) for i in range(8)) == 4
    assert [int(mid[i]["latent"].shape[1]) for i in range(4)] == [3] * 4
    for i in range(4):       # each kept window is the last native-length window of its clip
        assert any(torch.equal(mid[i]["latent"], z[:, -3:]) for z in data["latents"])
    with pytest.raises(ValueError, match="--dit_windows"):
        build_dataset(out, windows_kept="first")
