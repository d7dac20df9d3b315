"""Wan-VAE: golden vectors of the reference, parity with diffusers, streaming, tiling, checkpoints."""
import json
import math

import pytest
import torch
from bounds import float64_twin, fp32_bound, noise_floor

import openwan.models.vae as vae_mod
import openwan.models.vae_stream as vae_stream
from openwan.checkpoints import CheckpointError
from openwan.configs import VAEConfig
from openwan.models.vae import OFFICIAL_FILE, WanVAE, diffusers_key_map, official_to_diffusers

TINY = VAEConfig(dim=8)                    # 4 levels, 2 res blocks, temporal F,T,T: the golden config


def randomize(model: WanVAE, seed: int = 0) -> WanVAE:
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
                fan_in = p[0].numel()
                p.copy_(noise / math.sqrt(fan_in))
    return model.eval()


@pytest.fixture(scope="module")
def tiny() -> WanVAE:
    return randomize(WanVAE(TINY))


def video(f, h=16, w=24, b=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, f, h, w, generator=g) * 2 - 1


# ----------------------------------------------------------------------------- golden vectors

@pytest.fixture(scope="module")
def golden(reference_dir):
    from safetensors.torch import load_file
    d = load_file(str(reference_dir / "vae.safetensors"))
    cfg = json.loads((reference_dir / "README.json").read_text())["vae"]["config"]
    config = VAEConfig(dim=cfg["dim"], z_dim=cfg["z_dim"], dim_mult=tuple(cfg["dim_mult"]),
                       num_res_blocks=cfg["num_res_blocks"], attn_scales=tuple(cfg["attn_scales"]),
                       temporal_downsample=tuple(cfg["temperal_downsample"]))
    model = WanVAE(config)
    model.load_state_dict({k[len("model."):]: v for k, v in d.items() if k.startswith("model.")}, strict=True)
    return model.eval(), d


# Bound for the reference comparisons: the README's 1e-5 (vae.safetensors, "<= 1e-5"). Latents and pixels here
# are of magnitude 1-3 (fp32 ulp 1.2e-7 - 4.8e-7), so 1e-5 is ~20-80 ulps: room for oneDNN reduction orders and the
# in-place SiLU's scalar/vector rounding (docs/vae.md, "Rounding") on other CPUs, far below any real error. The error
# of a deep fp32 network is set by its intermediate magnitudes, though, not the output's: so the golden
# test also measures our own fp32 rounding (``err``: our fp32 result vs the same model in float64) and
# allows twice that (the reference's fp32 result carries a like error with its own summation order).
# Measured on the AVX2 test machine: encode <= 6.6e-7 (err <= 8.3e-7), decode <= 7.9e-6 (err <= 6.6e-6).
@pytest.mark.parametrize("n", [1, 5, 17])
def test_golden_encode_decode(golden, n):
    model, d = golden
    exact = float64_twin(model)
    lat = model.encode(d[f"in.video_f{n}"])
    assert lat.shape == d[f"out.latent_f{n}"].shape
    err = (lat.double() - exact.encode(d[f"in.video_f{n}"].double())).abs().max().item()
    assert (lat - d[f"out.latent_f{n}"]).abs().max().item() <= max(1e-5, 2 * err)
    dec = model.decode(d[f"out.latent_f{n}"])
    assert dec.shape == d[f"out.decoded_f{n}"].shape == (1, 3, n, 32, 48)
    acts = []                          # the decoder's activations, as the float64 copy computes them
    hooks = [mod.register_forward_hook(lambda mod, i, out: acts.append(out.abs().max().item())
                                       if torch.is_tensor(out) else None) for mod in exact.decoder.modules()]
    try:
        err = (dec.double() - exact.decode(d[f"out.latent_f{n}"].double())).abs().max().item()
    finally:
        for h in hooks:
            h.remove()
    # our own fp32 rounding: 2 ulps of the activations (|x| <= 3.7: the RMS norms keep them O(1)) for each of the
    # decoder's chained convolutions (conv2 and the 33 in the decoder, shortcuts counted too): 3e-5 (measured: up
    # to 4.7e-6); larger, and the bound max(1e-5, 2 err) below would stop meaning anything
    convs = 1 + sum(isinstance(mod, torch.nn.Conv3d) for mod in exact.decoder.modules())
    assert err <= fp32_bound(max(acts), terms=convs, ulps=2), "our own fp32 rounding is implausibly large"
    assert (dec - d[f"out.decoded_f{n}"]).abs().max().item() <= max(1e-5, 2 * err)


# ----------------------------------------------------------------------------- diffusers parity

diffusers = pytest.importorskip("diffusers")


def diffusers_from_ours(model: WanVAE):
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
    c = model.config
    ref = AutoencoderKLWan(base_dim=c.dim, z_dim=c.z_dim, dim_mult=list(c.dim_mult),
                           num_res_blocks=c.num_res_blocks, attn_scales=list(c.attn_scales),
                           temperal_downsample=list(c.temporal_downsample),
                           latents_mean=list(c.mean), latents_std=list(c.std))
    sd = convert_wan_vae_to_diffusers({k: v.clone() for k, v in model.state_dict().items()})
    ref.load_state_dict(sd, strict=True)
    return ref.eval()


def test_key_map_matches_diffusers_converter():
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
    for config in (VAEConfig(), TINY):
        with torch.device("meta"):
            ours = WanVAE(config).state_dict()
            theirs = AutoencoderKLWan(base_dim=config.dim).state_dict()
        converted = convert_wan_vae_to_diffusers(dict(ours))
        mapping = diffusers_key_map(config)
        assert set(mapping.values()) == set(converted) == set(theirs)
        for k, v in ours.items():
            assert converted[mapping[k]] is v, k
        # official layout: the published key names of section 3
        assert {"encoder.conv1.weight", "conv1.weight", "conv2.weight", "decoder.head.2.weight",
                "encoder.middle.1.to_qkv.weight", "decoder.upsamples.3.time_conv.weight",
                "encoder.downsamples.5.time_conv.weight", "decoder.upsamples.4.shortcut.weight"} <= set(ours)
        assert ours["encoder.downsamples.0.residual.0.gamma"].shape == (config.dim, 1, 1, 1)
        assert ours["decoder.middle.1.norm.gamma"].shape == (config.dim * 4, 1, 1)


@pytest.fixture(scope="module")
def pair(tiny):
    return tiny, diffusers_from_ours(tiny)


@pytest.fixture(scope="module")
def wide_pair(pair):
    """float64 copies of ours and diffusers' VAE: the twins that measure each side's own fp32 rounding."""
    return tuple(float64_twin(m) for m in pair)


def encode_floor(ours, wide, x, lat, mu, mu64):
    """The noise floor of ``lat`` (ours) and of diffusers' latent ``mu`` normalized as ours does: each fp32 result
    against its float64 twin (``mu64`` normalized by the same fp32 ops as ours: the twins then agree exactly)."""
    mean, inv_std = ours._stats("cpu")
    return noise_floor((lat, wide.encode(x.double())), ((mu - mean) * inv_std, (mu64.float() - mean) * inv_std))


@pytest.mark.parametrize("f", [1, 5, 9, 17])
def test_parity_with_diffusers(pair, wide_pair, f):
    ours, ref = pair
    wide, ref64 = wide_pair
    x = video(f, seed=f)
    mean, inv_std = ours._stats("cpu")
    with torch.no_grad():
        mu = ref.encode(x).latent_dist.mean
        mu64 = ref64.encode(x.double()).latent_dist.mean
    lat = ours.encode(x)
    assert lat.shape == (1, 16, 1 + (f - 1) // 4, 2, 3)
    # the same convolutions with other kernels and orders (oneDNN here, the in-place SiLU): each side's fp32
    # rounding, measured against its float64 twin, and the two differ by at most the sum (triangle inequality
    # through the twins): 2 x 3.4e-7..1e-6 here; a wrong weight, block or normalization is off by O(|lat|) ~ 1
    floor = encode_floor(ours, wide, x, lat, mu, mu64)
    assert (lat - (mu - mean) * inv_std).abs().max().item() <= 2 * floor
    with torch.no_grad():
        z = lat / inv_std + mean            # what ours feeds its decoder (the same fp32 ops)
        dec_ref = ref.decode(z).sample
        dec_ref64 = ref64.decode(z.double()).sample
    dec = ours.decode(lat)
    assert dec.shape == x.shape
    inside = (dec_ref.abs() < 1).float().mean().item()
    assert inside > 0.3, "random weights saturate the output; the comparison would be weak"
    # likewise (diffusers' upsampling rounds to fp32 even in its float64 twin: the twins agree to ~1.5 ulps of the
    # pixels, inside the floor's own ulp on each side): 2 x 6.9e-7..3e-6 here; a wrong decoder is off by ~0.1
    floor = noise_floor((dec, wide.decode(lat)), (dec_ref, dec_ref64))
    assert (dec - dec_ref).abs().max().item() <= 2 * floor


# ----------------------------------------------------------------------------- streaming

@pytest.mark.parametrize("f", [1, 9])
def test_decode_stream_equals_decode(tiny, f):
    lat = tiny.encode(video(f))
    chunks = list(tiny.decode_stream(lat))
    assert [c.shape[2] for c in chunks] == [1] + [4] * ((f - 1) // 4)
    assert torch.equal(torch.cat(chunks, 2), tiny.decode(lat))


def test_encode_stream_equals_encode(tiny):
    x = video(13, b=2)
    whole = tiny.encode(x)
    # frames one by one, and pieces of uneven sizes (1, 3, 2, 7): same result
    one_by_one = torch.cat(list(tiny.encode_stream(x[:, :, i] for i in range(13))), 2)
    pieces = [x[:, :, 0:1], x[:, :, 1:4], x[:, :, 4:6], x[:, :, 6:13]]
    uneven = tiny.encode(iter(pieces))
    # the same math on other chunk shapes (1 frame vs the encoder's 1 + 4 + 4 + 4), which may pick other conv kernels
    # (equal here): each within its noise floor of the same code run in float64, so within twice the larger of each
    # other (8e-7 here); a dropped or repeated frame, or a lost causal cache, changes the latent by O(0.1)
    wide, x64 = float64_twin(tiny), x.double()
    floor = noise_floor((whole, wide.encode(x64)),
                        (one_by_one, torch.cat(list(wide.encode_stream(x64[:, :, i] for i in range(13))), 2)))
    assert (one_by_one - whole).abs().max().item() <= 2 * floor
    assert torch.equal(uneven, one_by_one)


def test_two_calls_do_not_interfere(tiny):
    la, lb = tiny.encode(video(5, seed=3)), tiny.encode(video(5, seed=4))
    ga, gb = tiny.decode_stream(la), tiny.decode_stream(lb)
    inter_a, inter_b = [], []
    for ca, cb in zip(ga, gb):               # interleaved generators
        inter_a.append(ca)
        inter_b.append(cb)
    assert torch.equal(torch.cat(inter_a, 2), tiny.decode(la))
    assert torch.equal(torch.cat(inter_b, 2), tiny.decode(lb))


@pytest.fixture
def cache_spy(monkeypatch):
    made = []

    class Spy(vae_mod.FeatureCache):
        def __init__(self):
            super().__init__()
            made.append(self)

    # the caches of encode / decode / the streams are made by the chunked API (vae_stream)
    monkeypatch.setattr(vae_stream, "FeatureCache", Spy)
    return made


def test_stream_memory_does_not_grow(tiny, cache_spy):
    lat = torch.randn(1, 16, 8, 2, 3)
    sizes = []
    for _ in tiny.decode_stream(lat):
        (cache,) = cache_spy
        sizes.append((cache.nbytes(), len(cache)))
    assert sizes[0][0] > 0
    # from the 3rd latent frame on every conv holds exactly CACHE_T frames: constant size
    assert len({s for s in sizes[2:]}) == 1, sizes
    cache_spy.clear()
    enc_sizes = []
    for _ in tiny.encode_stream(video(1, seed=i)[:, :, 0] for i in range(25)):
        enc_sizes.append(cache_spy[0].nbytes())
    assert len(enc_sizes) == 7 and len(set(enc_sizes[1:])) == 1, enc_sizes


# ----------------------------------------------------------------------------- tiling

@pytest.fixture(scope="module")
def big_input(tiny):
    x = video(5, h=64, w=80, seed=7)
    return x, tiny.encode(x)


def test_tiled_decode_close_to_untiled(tiny, big_input):
    _, lat = big_input
    full = tiny.decode(lat)
    tiled = tiny.decode(lat, tile=32, overlap=16)
    bigger = tiny.decode(lat, tile=64, overlap=32)
    assert tiled.shape == full.shape
    # random weights and a global per-frame attention make seams matter more than with real weights;
    # the error is bounded and shrinks as tiles grow (measured: mean 0.136 and 0.030, |full| mean 0.31)
    err_small, err_big = (tiled - full).abs().mean().item(), (bigger - full).abs().mean().item()
    assert err_small < 0.6 * full.abs().mean().item()
    assert err_big < 0.5 * err_small
    # a tile as big as the frame is the untiled computation
    assert torch.equal(tiny.decode(lat, tile=(64, 80)), full)
    # tiled streaming = tiled whole decode
    assert torch.equal(torch.cat(list(tiny.decode_stream(lat, tile=32, overlap=16)), 2), tiled)


def test_tiled_encode_close_to_untiled(tiny, big_input):
    x, lat = big_input
    tiled = tiny.encode(x, tile=32, overlap=16)
    bigger = tiny.encode(x, tile=64, overlap=32)
    assert tiled.shape == lat.shape
    scale = lat.abs().mean().item()
    err_small, err_big = (tiled - lat).abs().mean().item(), (bigger - lat).abs().mean().item()
    assert err_small < 0.5 * scale and err_big < 0.5 * err_small   # measured: 0.25 and 0.054 of scale
    assert torch.equal(tiny.encode(x, tile=True), lat)        # a 256 px tile covers 64x80: untiled
    streamed = torch.cat(list(tiny.encode_stream(iter(x.unbind(2)), tile=32, overlap=16)), 2)
    # the same tiles and blend, frame by frame: as in test_encode_stream_equals_encode, twice the larger noise floor
    # of the two against the same code run in float64 (9e-7 here; equal here); a misplaced tile or blend weight is
    # off by O(0.1)
    wide, x64 = float64_twin(tiny), x.double()
    floor = noise_floor((tiled, wide.encode(x64, tile=32, overlap=16)),
                        (streamed, torch.cat(list(wide.encode_stream(iter(x64.unbind(2)), tile=32, overlap=16)), 2)))
    assert (streamed - tiled).abs().max().item() <= 2 * floor


def test_tile_plan_and_blend_weights():
    tiles = vae_mod._axis_tiles(20, 8, 3)
    assert tiles == [(0, 8), (4, 12), (8, 16), (12, 20)]     # evenly spaced, overlap 4 >= 3
    assert vae_mod._axis_tiles(8, 8, 3) == [(0, 8)] and vae_mod._axis_tiles(5, 8, 3) == [(0, 5)]
    ws = vae_mod._axis_weights(tiles, 8)
    assert torch.allclose(ws[1][:32], torch.arange(1, 33) / 33)   # linear ramp over the 32 px overlap
    total = torch.zeros(160)
    for (s, e), w in zip(tiles, ws):
        total[s * 8:e * 8] += w
    assert torch.allclose(total, torch.ones(160))           # pairwise overlaps cross-fade exactly


# ----------------------------------------------------------------------------- errors and dtype

def test_bad_shapes_raise(tiny):
    with pytest.raises(ValueError, match=r"6 frames is not 4n\+1 \(use 5 or 9 frames\)"):
        tiny.encode(video(6))
    with pytest.raises(ValueError, match=r"height 20 is not a multiple of 8 \(use 16 or 24\)"):
        tiny.encode(video(1, h=20))
    with pytest.raises(ValueError, match=r"width 30 is not a multiple of 8 \(use 24 or 32\)"):
        tiny.encode(video(1, w=30))
    with pytest.raises(ValueError, match=r"use 5 or 9 frames"):
        list(tiny.encode_stream(iter(video(7).unbind(2))))
    with pytest.raises(ValueError, match="latent"):
        tiny.decode(torch.randn(1, 4, 2, 2, 2))
    with pytest.raises(ValueError, match="multiple of 8"):
        tiny.decode(torch.randn(1, 16, 1, 4, 4), tile=20)


def test_bf16_runs_close_to_fp32(tiny):
    half = randomize(WanVAE(TINY)).to(torch.bfloat16)
    x = video(5)
    lat16 = half.encode(x)
    assert lat16.dtype == torch.float32 and torch.isfinite(lat16).all()
    dec16 = half.decode(lat16)
    assert dec16.dtype == torch.bfloat16
    ref = randomize(WanVAE(TINY))
    lat32 = ref.encode(x)
    assert (lat16 - lat32).abs().max().item() < 0.1 * lat32.abs().max().item()
    assert (dec16.float() - ref.decode(lat32)).abs().mean().item() < 0.05


# ----------------------------------------------------------------------------- checkpoints

def test_save_load_official(tiny, tmp_path):
    out = tiny.save_pretrained(tmp_path, layout="official")
    assert out.name == OFFICIAL_FILE and (tmp_path / "vae_config.json").is_file()
    sd = torch.load(out, weights_only=True)
    assert set(sd) == set(tiny.state_dict())
    for src in (tmp_path, out):
        loaded = WanVAE.from_pretrained(src)
        assert loaded.config == TINY
        for k, v in tiny.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v)
    lat = torch.randn(1, 16, 2, 2, 3)
    assert torch.equal(WanVAE.from_pretrained(tmp_path).decode(lat), tiny.decode(lat))
    # without vae_config.json the published config is assumed, so shapes do not fit
    (tmp_path / "vae_config.json").unlink()
    with pytest.raises(CheckpointError, match="vae_config.json"):
        WanVAE.from_pretrained(tmp_path)
    half = WanVAE.from_pretrained(tmp_path, config=TINY, dtype=torch.bfloat16, device="cpu")
    assert half.config == TINY and half.dtype == torch.bfloat16 and not half.training


def test_save_load_diffusers(tiny, tmp_path):
    from diffusers import AutoencoderKLWan
    vae_dir = tmp_path / "vae"
    tiny.save_pretrained(vae_dir, layout="diffusers")
    cfg = json.loads((vae_dir / "config.json").read_text())
    assert cfg["_class_name"] == "AutoencoderKLWan" and cfg["base_dim"] == 8
    assert cfg["temperal_downsample"] == [False, True, True]
    # vae/ folder, a diffusers root with vae/, and the weights file itself (config.json beside it)
    for src in (vae_dir, tmp_path, vae_dir / "diffusion_pytorch_model.safetensors"):
        loaded = WanVAE.from_pretrained(src)
        assert loaded.config == TINY
        for k, v in tiny.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v)
    ref = AutoencoderKLWan.from_pretrained(vae_dir).eval()
    x = video(5)
    mean, inv_std = tiny._stats("cpu")
    with torch.no_grad():
        mu = ref.encode(x).latent_dist.mean
        mu64 = float64_twin(ref).encode(x.double()).latent_dist.mean
    # as test_parity_with_diffusers: twice the larger noise floor (5.3e-7 here); a weight lost in the layout is O(1) off
    lat = tiny.encode(x)
    floor = encode_floor(tiny, float64_twin(tiny), x, lat, mu, mu64)
    assert (lat - (mu - mean) * inv_std).abs().max().item() <= 2 * floor
    # diffusers' own save -> our loader
    ref.save_pretrained(tmp_path / "theirs")
    theirs = WanVAE.from_pretrained(tmp_path / "theirs")
    assert torch.equal(theirs.encode(x), tiny.encode(x))


def test_diffusers_renaming_roundtrip(tiny):
    sd = tiny.state_dict()
    d = official_to_diffusers(sd, TINY)
    assert "quant_conv.weight" in d and "decoder.up_blocks.1.resnets.0.conv_shortcut.weight" in d
    assert vae_mod.diffusers_to_official(d, TINY).keys() == sd.keys()


def test_truncated_and_wrong_checkpoints(tiny, tmp_path):
    out = tiny.save_pretrained(tmp_path / "ok", layout="official")
    data = out.read_bytes()
    bad = tmp_path / "bad" / OFFICIAL_FILE
    bad.parent.mkdir()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        WanVAE.from_pretrained(bad)
    st = tiny.save_pretrained(tmp_path / "d", layout="diffusers")
    st.write_bytes(st.read_bytes()[:1000])
    with pytest.raises(CheckpointError):
        WanVAE.from_pretrained(tmp_path / "d")
    sd = {k: v for k, v in tiny.state_dict().items() if k != "conv2.bias"}
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"(?s)missing keys: conv2.bias.*unexpected keys: extra.weight"):
        WanVAE.from_pretrained(tmp_path / "missing.pth", config=TINY)
    with pytest.raises(CheckpointError, match="holds no Wan VAE"):
        WanVAE.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------- activation memory

def test_activation_memory_below_diffusers(pair):
    """Peak live activation bytes of encode and decode, ours vs diffusers on the same input.

    Ours writes each norm + SiLU straight into its conv's padded buffer and keeps no caller reference
    to a finished activation; at the conv of a full-resolution residual block diffusers holds the
    block input, the SiLU output, the cache-concatenated input and its padded copy, ours the block
    input and the padded buffer only. Every activation scales with H x W, so the ratio hardly depends
    on the size: here encode 0.84x, decode 0.82x; `benchmarks/vae.py --live` at 240x416 gives the same."""
    from openwan.testing import PeakLiveTensors
    ours, ref = pair
    x = video(9, h=48, w=64, seed=5)
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
    assert peaks["ours-encode"] <= 0.88 * peaks["diffusers-encode"], peaks
    assert peaks["ours-decode"] <= 0.85 * peaks["diffusers-decode"], peaks


# ----------------------------------------------------------------------------- fast paths vs plain ops

EPS32 = torch.finfo(torch.float32).eps


@pytest.mark.parametrize("shape", [(1, 8, 6, 18, 20), (2, 3, 4, 10, 12), (1, 64, 3, 6, 6), (1, 96, 3, 6, 6)])
@pytest.mark.parametrize("out_channels, stride", [(8, 1), (5, (2, 1, 1))])
def test_onednn_conv3d_equals_plain_conv3d(shape, out_channels, stride):
    """``conv3d`` (oneDNN in fp32 on CPU; F.conv3d for the 96-channel input with 16 outputs per channel) vs
    ``F.conv3d`` with oneDNN off (PyTorch's own kernel, which it picks for these small batch-1 shapes
    anyway) and vs float64. Each fp32 result is a sum of
    n = C_in * k + 1 terms, off from the exact sum by at most gamma_n * sum|terms| (gamma_n = n eps / (1 - n
    eps)); so the two differ by at most twice that, elementwise (sum|terms| = conv(|x|, |w|) + |b|)."""
    import torch.nn.functional as F
    from openwan.models.vae_layers import conv3d
    g = torch.Generator().manual_seed(sum(shape) + out_channels)
    x = torch.randn(shape, generator=g) * 3
    k = (3, 3, 3) if stride == 1 else (3, 1, 1)
    w = torch.randn(out_channels, shape[1], *k, generator=g) / math.sqrt(shape[1] * math.prod(k))
    b = torch.randn(out_channels, generator=g)
    fast = conv3d(x, w, b, stride)
    torch.backends.mkldnn.enabled = False
    try:
        plain = F.conv3d(x, w, b, stride)
    finally:
        torch.backends.mkldnn.enabled = True
    exact = F.conv3d(x.double(), w.double(), b.double(), stride)
    n = shape[1] * math.prod(k) + 1
    gamma = n * EPS32 / (1 - n * EPS32)
    scale = F.conv3d(x.double().abs(), w.double().abs(), b.double().abs(), stride)
    assert fast.shape == plain.shape == exact.shape
    assert ((fast.double() - exact).abs() <= gamma * scale).all()
    assert ((fast - plain).double().abs() <= 2 * gamma * scale).all()
    assert (fast - plain).abs().max().item() < 1e-3 * exact.abs().max().item()   # not vacuous


@pytest.mark.parametrize("channels", [3, 8, 64])
def test_inference_rmsnorm_equals_f_normalize(channels):
    """The no-grad RMSNorm (sqrt of a channel sum of squares, written into ``out``) vs the autograd path
    (F.normalize, i.e. linalg.vector_norm). Per element each result has a relative error of at most
    (channels / 2 + 5) eps (the sum of squares gamma_C, halved by the sqrt, plus the sqrt, the division and
    the two scalings), so they differ by at most twice that times |y|; a zero vector stays zero in both."""
    from openwan.models.vae_layers import RMSNorm
    g = torch.Generator().manual_seed(channels)
    norm = RMSNorm(channels, images=False)
    with torch.no_grad():
        norm.gamma.copy_(1 + 0.25 * torch.randn(norm.gamma.shape, generator=g))
    x = torch.randn(2, channels, 3, 5, 7, generator=g) * 10
    x[0, :, 1, 2, 3] = 0
    with torch.enable_grad():
        plain = norm(x)                                          # the autograd path: F.normalize
    exact = (x.double() / x.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
             * channels ** 0.5 * norm.gamma.double())
    bound = 2 * (channels / 2 + 5) * EPS32 * exact.abs()
    with torch.no_grad():
        fast = norm(x)
        buf = torch.full((2, channels, 4, 7, 9), float("nan"))
        inner = buf[:, :, 1:, 1:-1, 1:-1]                        # a strided view, as in padded_activation
        norm(x, out=inner)
    for y in (fast, inner):
        assert ((y.double() - plain.double()).abs() <= bound).all()
        assert torch.equal(y[0, :, 1, 2, 3], torch.zeros(channels))
    assert torch.isnan(buf[:, :, 0]).all() and torch.isnan(buf[..., 0]).all()   # only the view written


# ----------------------------------------------------------------------------- the VAE protocol

def test_wan_vae_satisfies_the_protocol(tiny):
    from openwan.models.vae_protocol import VideoVAE, check_size, latent_shape, size_multiple
    assert isinstance(tiny, VideoVAE)
    assert not isinstance(torch.nn.Linear(2, 2), VideoVAE)          # the check is not vacuous
    assert (tiny.z_dim, tiny.spatial_ratio, tiny.temporal_ratio) == (16, 8, 4)
    assert tiny.device == torch.device("cpu") and tiny.dtype == torch.float32
    # the size multiple: VAE ratio x DiT spatial patch (Wan 2.1: 8 x 2; Wan 2.2 TI2V: 16 x 2)
    assert size_multiple(tiny, (1, 2, 2)) == 16 and size_multiple(16, (1, 2, 2)) == 32 and size_multiple(8, 1) == 8
    assert latent_shape(tiny, 81, 480, 832) == (16, 21, 60, 104)
    check_size(832, 480, 16)
    with pytest.raises(ValueError, match=r"multiples of 32 .*width 832 or 864, height 480 or 512"):
        check_size(848, 496, 32)
