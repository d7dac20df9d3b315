"""Wan 2.2 VAE: golden vectors of the reference, parity with diffusers, streaming, tiling, checkpoints,
version detection."""
import json
import math
import os
from pathlib import Path

import pytest
import torch

import openwan.models.vae_stream as vae_stream
from openwan.checkpoints import CheckpointError
from openwan.configs import VAEConfig
from openwan.models.vae import WanVAE
from openwan.models.vae22 import AvgDown, DupUp, VAE22Config, WanVAE22, patchify, unpatchify
from openwan.models.vae_protocol import VideoVAE, size_multiple
from openwan.models.vaes import load_vae, vae_class

EPS = torch.finfo(torch.float32).eps
# The bound of reference22/README.md for single modules. Latents here reach |3.5| (eps x 3.5 = 4.2e-7), so
# 1e-5 is ~24 fp32 ulps of the largest value: room for the rounding of ~40 conv / norm layers whose
# reductions run in a different order on other CPUs (oneDNN kernels differ by ISA), while any real error
# (a wrong channel order, shortcut or cache frame) is of the order of the values themselves.
BOUND = 1e-5
TINY = VAE22Config(dim=4, dec_dim=8)      # the golden config: encoder base 4, decoder base 8, z 48


def randomize(model, seed: int = 0):
    """Give EVERY parameter a random value (zero-init biases and unit gammas included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.25 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / math.sqrt(p[0].numel()))
    return model.eval()


@pytest.fixture(scope="module")
def tiny() -> WanVAE22:
    return randomize(WanVAE22(TINY))


def video(f, h=32, w=48, b=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, f, h, w, generator=g) * 2 - 1


# ----------------------------------------------------------------------------- golden vectors

REFERENCE22_DIR = Path(os.environ.get("OPENWAN_REFERENCE22",
                                      Path(__file__).resolve().parents[1].parent / "shared" / "reference22"))


@pytest.fixture(scope="module")
def reference22_dir():
    if not REFERENCE22_DIR.is_dir():
        pytest.skip(f"Wan 2.2 golden vectors not found at {REFERENCE22_DIR} (../shared/reference22 beside the "
                    f"repo; set OPENWAN_REFERENCE22 to point elsewhere)")
    return REFERENCE22_DIR


@pytest.fixture(scope="module")
def golden(reference22_dir):
    from safetensors.torch import load_file
    d = load_file(str(reference22_dir / "vae22.safetensors"))
    cfg = json.loads((reference22_dir / "README.json").read_text())["vae22"]["config"]
    config = VAE22Config(dim=cfg["dim"], dec_dim=cfg["dec_dim"], z_dim=cfg["z_dim"],
                         dim_mult=tuple(cfg["dim_mult"]), num_res_blocks=cfg["num_res_blocks"],
                         attn_scales=tuple(cfg["attn_scales"]), temporal_downsample=tuple(cfg["temperal_downsample"]))
    assert config == TINY
    model = WanVAE22(config)
    model.load_state_dict({k[len("model."):]: v for k, v in d.items() if k.startswith("model.")}, strict=True)
    return model.eval(), d


def test_golden_constants_and_patchify(golden):
    model, d = golden
    assert torch.equal(torch.tensor(VAE22Config().mean), d["const.latent_mean"])
    mean, inv_std = model._stats("cpu")
    assert torch.equal(inv_std.flatten(), d["const.latent_inv_std"])      # 1/std computed the same way
    assert torch.equal(patchify(d["in.patchify_ramp"]), d["out.patchify_ramp"])
    assert torch.equal(unpatchify(d["out.patchify_ramp"]), d["in.patchify_ramp"])


@pytest.mark.parametrize("n", [1, 5, 9])
def test_golden_encode_decode(golden, n):
    model, d = golden
    lat = model.encode(d[f"in.video_f{n}"][None])[0]
    assert lat.shape == d[f"out.latent_f{n}"].shape == (48, 1 + (n - 1) // 4, 2, 3)
    assert (lat - d[f"out.latent_f{n}"]).abs().max().item() <= BOUND
    dec = model.decode(d[f"out.latent_f{n}"][None])[0]
    assert dec.shape == d[f"out.decoded_f{n}"].shape == (3, n, 32, 48)
    assert (dec - d[f"out.decoded_f{n}"]).abs().max().item() <= BOUND


# ----------------------------------------------------------------------------- the shortcuts, as stated

def test_shortcuts_follow_the_stated_formulas():
    g = torch.Generator().manual_seed(0)
    # average: j = c*f + a*fs*fs + b*fs + d; output o = mean of j in [o*g, o*g+g); time zero padded in front
    x = torch.randn(1, 4, 3, 4, 6, generator=g)
    down = AvgDown(4, 8, ft=2, fs=2)                       # f = 8, g = 4
    y = down(x)
    xp = torch.cat([torch.zeros(1, 4, 1, 4, 6), x], 2)
    want = torch.zeros(1, 8, 2, 2, 3)
    for o in range(8):
        for j in range(o * 4, o * 4 + 4):
            c, k = divmod(j, 8)
            a, rest = divmod(k, 4)
            b, dd = divmod(rest, 2)
            want[0, o] += xp[0, c, a::2, b::2, dd::2] / 4
    assert y.shape == want.shape and (y - want).abs().max().item() <= 4 * EPS * x.abs().max().item()
    assert AvgDown(6, 6, 1, 1)(x[:, :3].repeat(1, 2, 1, 1, 1)) is not None
    # duplicate: output o at (a, b, d) copies input (o*f + a*fs*fs + b*fs + d) // r; first chunk drops ft-1 frames
    for cin, cout, ft in ((4, 4, 2), (4, 2, 1), (2, 4, 2)):
        up = DupUp(cin, cout, ft=ft, fs=2)
        x = torch.randn(1, cin, 2, 2, 3, generator=g)
        f, r = ft * 4, cout * ft * 4 // cin
        want = torch.zeros(1, cout, 2 * ft, 4, 6)
        for o in range(cout):
            for a in range(ft):
                for b in range(2):
                    for dd in range(2):
                        want[0, o, a::ft, b::2, dd::2] = x[0, (o * f + a * 4 + b * 2 + dd) // r]
        assert torch.equal(up(x), want)
        assert torch.equal(up(x, first_chunk=True), want[:, :, ft - 1:])
        base = torch.randn(1, cout, 2 * ft - (ft - 1), 4, 6, generator=g)
        assert torch.equal(up.add_to_(base.clone(), x, first_chunk=True), base + want[:, :, ft - 1:])


# ----------------------------------------------------------------------------- diffusers parity

diffusers = pytest.importorskip("diffusers")


def diffusers_vae(config: VAE22Config):
    from diffusers import AutoencoderKLWan
    return AutoencoderKLWan(base_dim=config.dim, decoder_base_dim=config.dec_dim, z_dim=config.z_dim,
                            dim_mult=list(config.dim_mult), num_res_blocks=config.num_res_blocks,
                            attn_scales=list(config.attn_scales),
                            temperal_downsample=list(config.temporal_downsample), is_residual=True,
                            in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                            scale_factor_temporal=4, latents_mean=list(config.mean), latents_std=list(config.std))


def test_key_map_matches_diffusers():
    for config in (TINY, VAE22Config()):          # the published one last: its keys are checked below
        with torch.device("meta"):
            ours = WanVAE22(config).state_dict()
            theirs = diffusers_vae(config).state_dict()
        m = WanVAE22.diffusers_key_map(config)
        assert set(m) == set(ours) and set(m.values()) == set(theirs)
        assert all(tuple(ours[k].shape) == tuple(theirs[m[k]].shape) for k in ours)
    # the published key names of WAN22_REFERENCE.md section 7
    assert {"encoder.conv1.weight", "conv1.weight", "conv2.weight", "decoder.head.2.weight",
            "encoder.downsamples.1.downsamples.0.shortcut.weight",
            "encoder.downsamples.2.downsamples.2.time_conv.weight",
            "encoder.downsamples.0.downsamples.2.resample.1.weight", "decoder.upsamples.0.upsamples.3.time_conv.weight",
            "decoder.upsamples.2.upsamples.3.resample.1.weight", "decoder.upsamples.3.upsamples.0.shortcut.weight",
            "encoder.middle.1.to_qkv.weight"} <= set(ours)
    assert not any(k.startswith("encoder.downsamples.3.downsamples.2") for k in ours)   # no resample in the last stage
    assert ours["encoder.conv1.weight"].shape == (160, 12, 3, 3, 3)
    assert ours["decoder.conv1.weight"].shape == (1024, 48, 3, 3, 3)
    assert ours["decoder.upsamples.0.upsamples.3.time_conv.weight"].shape == (2048, 1024, 3, 1, 1)
    assert ours["decoder.upsamples.2.upsamples.3.resample.1.weight"].shape == (512, 512, 3, 3)


@pytest.fixture(scope="module")
def pair(tiny):
    ref = diffusers_vae(TINY)
    m = WanVAE22.diffusers_key_map(TINY)
    ref.load_state_dict({m[k]: v.clone() for k, v in tiny.state_dict().items()}, strict=True)
    return tiny, ref.eval()


@pytest.mark.parametrize("f", [1, 5, 9])
def test_parity_with_diffusers(pair, f):
    ours, ref = pair
    x = video(f, seed=f)
    mean, inv_std = ours._stats("cpu")
    with torch.no_grad():
        mu = ref.encode(x).latent_dist.mean
    lat = ours.encode(x)
    assert lat.shape == (1, 48, 1 + (f - 1) // 4, 2, 3)
    assert (lat - (mu - mean) * inv_std).abs().max().item() <= BOUND
    with torch.no_grad():
        dec_ref = ref.decode(lat / inv_std + mean).sample
    dec = ours.decode(lat)
    assert dec.shape == x.shape
    assert (dec_ref.abs() < 1).float().mean().item() > 0.5, "saturated output would make the comparison weak"
    assert (dec - dec_ref).abs().max().item() <= BOUND


# ----------------------------------------------------------------------------- streaming and tiling

@pytest.fixture
def cache_spy(monkeypatch):
    made = []

    class Spy(vae_stream.FeatureCache):
        def __init__(self):
            super().__init__()
            made.append(self)

    monkeypatch.setattr(vae_stream, "FeatureCache", Spy)
    return made


def test_streams_equal_whole(tiny, cache_spy):
    x = video(9, b=2)
    lat = tiny.encode(x)
    chunks = []
    sizes = []
    for c in tiny.decode_stream(torch.cat([lat, lat], 2)):       # 6 latent frames
        chunks.append(c)
        sizes.append(cache_spy[-1].nbytes())
    assert [c.shape[2] for c in chunks] == [1] + [4] * 5
    assert torch.equal(torch.cat(chunks, 2), tiny.decode(torch.cat([lat, lat], 2)))
    assert len(set(sizes[2:])) == 1, sizes                      # the cache stops growing
    # encode_stream: conv1 runs per chunk instead of on the whole clip, so equal up to its rounding
    streamed = torch.cat(list(tiny.encode_stream(x[:, :, i] for i in range(9))), 2)
    assert (streamed - lat).abs().max().item() <= 16 * EPS * lat.abs().max().item()
    assert torch.equal(tiny.encode(iter([x[:, :, :3], x[:, :, 3:9]])), streamed)


def test_tiling(tiny):
    x = video(5, h=64, w=96, seed=3)
    lat = tiny.encode(x)
    assert torch.equal(tiny.encode(x, tile=(64, 96)), lat)      # one tile covering the frame: untiled
    assert torch.equal(tiny.decode(lat, tile=(64, 96)), tiny.decode(lat))
    tiled = tiny.decode(lat, tile=32, overlap=16)
    assert tiled.shape == x.shape
    assert torch.equal(torch.cat(list(tiny.decode_stream(lat, tile=32, overlap=16)), 2), tiled)
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny.decode(lat, tile=40)


def test_protocol_and_errors(tiny):
    assert isinstance(tiny, VideoVAE)
    assert (tiny.z_dim, tiny.spatial_ratio, tiny.temporal_ratio) == (48, 16, 4)
    assert size_multiple(tiny, (1, 2, 2)) == 32
    with pytest.raises(ValueError, match=r"height 24 is not a multiple of 16 \(use 16 or 32\)"):
        tiny.encode(video(1, h=24))
    with pytest.raises(ValueError, match=r"6 frames is not 4n\+1"):
        tiny.encode(video(6))
    with pytest.raises(ValueError, match=r"latent \[B, 48"):
        tiny.decode(torch.randn(1, 16, 1, 2, 3))


def test_activation_memory_below_diffusers(pair):
    """Peak live activation bytes, ours vs diffusers on the same input (see tests/test_vae.py for the
    method): the 2.2 stages keep only what their shortcut needs (no clone of the stage input, no
    output-sized duplicate), on top of the 2.1 savings. The counts are deterministic and scale with
    H x W: measured 0.68x (encode) and 0.71x (decode) at 64x96 and at 128x192, 9 frames."""
    from openwan.testing import PeakLiveTensors
    ours, ref = pair
    x = video(9, h=64, w=96, seed=5)
    lat = ours.encode(x)
    mean, inv_std = ours._stats("cpu")
    peaks = {}
    with torch.no_grad():
        for name, run in {"ours-encode": lambda: ours.encode(x),
                          "diffusers-encode": lambda: ref.encode(x).latent_dist.mean,
                          "ours-decode": lambda: ours.decode(lat),
                          "diffusers-decode": lambda: ref.decode(lat / inv_std + mean).sample}.items():
            with PeakLiveTensors() as m:
                run()
            peaks[name] = m.peak
    assert peaks["ours-encode"] <= 0.75 * peaks["diffusers-encode"], peaks
    assert peaks["ours-decode"] <= 0.75 * peaks["diffusers-decode"], peaks


# ----------------------------------------------------------------------------- checkpoints and detection

def test_save_load_both_layouts(tiny, tmp_path):
    from diffusers import AutoencoderKLWan
    out = tiny.save_pretrained(tmp_path / "official")
    assert out.name == "Wan2.2_VAE.pth" and (tmp_path / "official" / "vae_config.json").is_file()
    tiny.save_pretrained(tmp_path / "d" / "vae", layout="diffusers")
    cfg = json.loads((tmp_path / "d" / "vae" / "config.json").read_text())
    assert cfg["is_residual"] is True and cfg["patch_size"] == 2 and cfg["decoder_base_dim"] == 8
    lat = torch.randn(1, 48, 2, 2, 3)
    want = tiny.decode(lat)
    for src in (tmp_path / "official", out, tmp_path / "d", tmp_path / "d" / "vae"):
        for loaded in (WanVAE22.from_pretrained(src), load_vae(src)):
            assert type(loaded) is WanVAE22 and loaded.config == TINY
            assert torch.equal(loaded.decode(lat), want)
    # diffusers reads our diffusers folder, and our loader reads diffusers' own save
    ref = AutoencoderKLWan.from_pretrained(tmp_path / "d" / "vae").eval()
    assert ref.config.is_residual and ref.config.patch_size == 2
    ref.save_pretrained(tmp_path / "theirs")
    assert torch.equal(load_vae(tmp_path / "theirs").decode(lat), want)


def test_version_detection_and_clear_errors(tiny, tmp_path):
    v21 = randomize(WanVAE(VAEConfig(dim=8)))
    v21.save_pretrained(tmp_path / "a21")
    tiny.save_pretrained(tmp_path / "a22")
    v21.save_pretrained(tmp_path / "d21" / "vae", layout="diffusers")
    assert vae_class(tmp_path / "a21") is WanVAE and vae_class(tmp_path / "a22") is WanVAE22
    assert vae_class(tmp_path / "d21") is WanVAE and type(load_vae(tmp_path / "d21")) is WanVAE
    # the wrong class for the files: an error naming the right one, never a silent load
    with pytest.raises(CheckpointError, match=r"Wan 2\.2 VAE.*WanVAE22\.from_pretrained"):
        WanVAE.from_pretrained(tmp_path / "a22")
    with pytest.raises(CheckpointError, match=r"Wan 2\.1 VAE.*WanVAE\.from_pretrained"):
        WanVAE22.from_pretrained(tmp_path / "d21")
    # both official files in one folder: ambiguous
    both = tmp_path / "both"
    v21.save_pretrained(both / "Wan2.1_VAE.pth")
    tiny.save_pretrained(both / "Wan2.2_VAE.pth")
    with pytest.raises(CheckpointError, match="holds both Wan2.1_VAE.pth and Wan2.2_VAE.pth"):
        load_vae(both)
    # a file name that contradicts the keys
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    torch.save(v21.state_dict(), mixed / "Wan2.2_VAE.pth")
    with pytest.raises(CheckpointError, match=r"says Wan 2\.2 VAE .* key names are those of the Wan 2\.1 VAE"):
        load_vae(mixed)
    # weights that are neither layout, and a folder with no VAE
    torch.save({"foo.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="cannot tell whether this is a Wan 2.1 or a Wan 2.2 VAE"):
        load_vae(tmp_path / "other.pth")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match=r"holds no Wan VAE: expected Wan2.1_VAE.pth .*Wan2.2_VAE.pth.*notes.txt"):
        load_vae(tmp_path / "empty")
    # an official DiT folder without its VAE file: its config.json is the DiT's, not a VAE's
    dit_dir = tmp_path / "dit_only"
    dit_dir.mkdir()
    (dit_dir / "config.json").write_text(json.dumps({"_class_name": "WanModel", "dim": 8}))
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(dit_dir / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match=r"holds no Wan VAE.*config.json, diffusion_pytorch_model"):
        load_vae(dit_dir)
    # a diffusers 2.2 config with options neither VAE has
    cfg_file = tmp_path / "d22" / "vae" / "config.json"
    tiny.save_pretrained(cfg_file.parent, layout="diffusers")
    cfg = json.loads(cfg_file.read_text())
    cfg_file.write_text(json.dumps({**cfg, "patch_size": 4}))
    with pytest.raises(CheckpointError, match=r"unsupported AutoencoderKLWan options: patch_size=4"):
        load_vae(tmp_path / "d22")


def test_training_path_has_gradients(tiny):
    """With gradients on, the stages take the out-of-place path (autograd keeps what it needs): the
    same values up to the in-place SiLU's rounding, and gradients reach the first encoder conv."""
    from openwan.models.vae_layers import FeatureCache
    model = randomize(WanVAE22(TINY)).train()
    x = video(5, seed=9)
    with torch.no_grad():
        want = tiny.encode(x)
    cache = FeatureCache()
    h = torch.cat([model.encode_chunk(x[:, :, :1], cache), model.encode_chunk(x[:, :, 1:], cache)], 2)
    lat = model.latent_from_features(h)
    assert (lat - want).abs().max().item() <= BOUND
    cache = FeatureCache()
    z = model.decoder_input(lat)
    out = torch.cat([model.decode_chunk(z[:, :, i:i + 1], cache) for i in range(z.shape[2])], 2)
    out.square().mean().backward()
    assert model.encoder.conv1.weight.grad is not None and model.encoder.conv1.weight.grad.abs().sum() > 0
