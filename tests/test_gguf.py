"""GGUF DiT files written with the gguf package's own writer and quantizers: load, match, errors."""
import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from openwan.checkpoints import CheckpointError  # noqa: E402
from openwan.configs import DiTConfig  # noqa: E402
from openwan.gguf import gguf_types, load_dit_gguf, load_gguf_state_dict  # noqa: E402
from openwan.models.dit import WanModel  # noqa: E402
from openwan.quant import QuantLinear  # noqa: E402

EPS32 = torch.finfo(torch.float32).eps
QT = gguf.GGMLQuantizationType
# the smallest DiT whose Linear inputs are multiples of Q4_K's 256-value super-blocks
CFG = DiTConfig(dim=256, ffn_dim=256, num_heads=2, num_layers=2, text_dim=256, freq_dim=256)


def rand_model(seed=0, std=0.05):
    torch.manual_seed(seed)
    m = WanModel(CFG).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    for p in m.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * std)
    return m


def q4_k(w: np.ndarray):
    """A plain Q4_K encoder (gguf ships only the decoder): per 256 values, 8 sub-blocks of 32 with
    6-bit scale and min indices under f16 super-scales d and dmin; x ~ d*sc_j*q - dmin*m_j, q in 0..15.
    Returns (bytes [rows, n*144], half-step d*sc_j per value)."""
    x = w.astype(np.float32).reshape(-1, 8, 32)
    lo = np.minimum(x.min(-1), 0)
    # f16 rounds by <= 2^-11 relative: scaling the super-scales up by 2^-9 first keeps m_j and sc_j <= 63
    dmin = np.float16((-lo).max(-1) / 63 * (1 + 2 ** -9)).astype(np.float32)
    dmin = np.maximum(dmin, np.float32(2 ** -24))
    m = np.clip(np.ceil(-lo / dmin[:, None]), 0, 63).astype(np.int32)                # -dmin*m_j <= min_j
    span = x.max(-1) + dmin[:, None] * m
    d = np.float16(span.max(-1) / (15 * 63) * (1 + 2 ** -9)).astype(np.float32)
    d = np.maximum(d, np.float32(2 ** -24))
    sc = np.clip(np.ceil(span / (15 * d[:, None])), 1, 63).astype(np.int32)
    step = d[:, None] * sc
    q = np.clip(np.round((x + (dmin[:, None] * m)[..., None]) / step[..., None]), 0, 15).astype(np.uint8)
    scales = np.zeros((x.shape[0], 12), np.uint8)
    scales[:, 0:4] = (sc[:, :4] & 0x3F) | ((sc[:, 4:] >> 4) << 6)
    scales[:, 4:8] = (m[:, :4] & 0x3F) | ((m[:, 4:] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:] & 0xF) | ((m[:, 4:] & 0xF) << 4)
    qs = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(x.shape[0], 128)  # sub-blocks 2c (low) and 2c+1 (high)
    blocks = np.concatenate([d.astype(np.float16).view(np.uint8).reshape(-1, 2),
                             dmin.astype(np.float16).view(np.uint8).reshape(-1, 2), scales, qs], axis=1)
    return blocks.reshape(w.shape[0], -1), np.repeat(step / 2, 32, axis=-1).reshape(w.shape)


def write(path, model, qtype, extra=None):
    """Official keys; 2-D Linear weights in qtype, small/odd tensors F32, biases F16, norms BF16."""
    w = gguf.GGUFWriter(str(path), "wan")
    half_steps = {}
    for k, v in model.state_dict().items():
        a = v.float().numpy()
        if k == "patch_embedding.weight":
            a = a.reshape(a.shape[0], -1)                   # GGUF holds <= 4 dims: flattened as converters do
        if a.ndim == 2 and a.shape[1] % 256 == 0 and qtype is not None:
            if qtype == QT.Q4_K:
                data, hs = q4_k(a)
                half_steps[k] = hs
            else:
                data = gguf.quants.quantize(a, qtype)
                d = np.abs(a.reshape(a.shape[0], -1, 32)).max(-1) / 127          # Q8_0's block step
                half_steps[k] = np.repeat(d * (0.5 + 127 * 2.0 ** -11), 32, -1).reshape(a.shape)   # + f16(d) rounding
            w.add_tensor(k, data, raw_dtype=qtype)
        elif k.endswith(".bias"):
            w.add_tensor(k, a.astype(np.float16))
        elif "norm" in k:
            w.add_tensor(k, gguf.quants.quantize(a, QT.BF16), raw_dtype=QT.BF16)
        else:
            w.add_tensor(k, a)
    for k, (data, t) in (extra or {}).items():
        w.add_tensor(k, data, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return half_steps


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 5, CFG.text_dim, generator=g)


@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q4_K])
def test_gguf_weights_within_their_quantization_step(tmp_path, qtype):
    src = rand_model()
    half = write(tmp_path / "m.gguf", src, qtype)
    types = gguf_types(tmp_path / "m.gguf")
    assert types["blocks.0.ffn.0.weight"] == qtype.name and types["blocks.0.ffn.0.bias"] == "F16"
    sd = load_gguf_state_dict(tmp_path / "m.gguf")
    ref = src.state_dict()
    for k, hs in half.items():
        err = (sd[k] - ref[k]).abs().numpy()
        # each value within half its block's step (+ the f16 scale's rounding, + fp32 rounding)
        assert (err <= hs + 4 * EPS32 * np.abs(ref[k].numpy())).all(), (k, (err - hs).max())
        assert err.max() > 0
    assert torch.equal(sd["blocks.1.ffn.2.bias"], ref["blocks.1.ffn.2.bias"].half().float())
    assert torch.equal(sd["blocks.0.norm3.weight"], ref["blocks.0.norm3.weight"].bfloat16().float())


@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q4_K])
def test_load_dit_gguf_matches_float_model_with_the_same_weights(tmp_path, qtype):
    src = rand_model()
    write(tmp_path / "m.gguf", src, qtype)
    m = load_dit_gguf(tmp_path / "m.gguf", torch.float32)
    assert m.config.dim == CFG.dim and m.config.num_layers == 2
    sd = load_gguf_state_dict(tmp_path / "m.gguf", shapes={k: v.shape for k, v in src.state_dict().items()})
    twin = WanModel(CFG).eval()
    twin.load_state_dict(sd)
    x, ctx = inputs()
    out = m(x, torch.tensor([500]), ctx)
    assert torch.equal(out, twin(x, torch.tensor([500]), ctx))          # dequantized at load: same weights
    ref = src(x, torch.tensor([500]), ctx)
    rel = ((out - ref).norm() / ref.norm()).item()
    # the weights' relative r.m.s. error: Q8_0 ~ 1/(127 sqrt 12) of the block max (< 1 %), Q4_K ~ 1/(15 sqrt 12)
    # of the sub-block range (~ 10 %); the output's error is of that order after two blocks
    assert 0 < rel < (0.03 if qtype == QT.Q8_0 else 0.3)


def test_load_dit_gguf_into_int8_layers(tmp_path):
    src = rand_model()
    write(tmp_path / "m.gguf", src, QT.Q8_0)
    m = load_dit_gguf(tmp_path / "m.gguf", torch.bfloat16, quantize="int8")
    assert isinstance(m.blocks[0].ffn[0], QuantLinear) and m.blocks[0].ffn[0].compute_dtype == torch.bfloat16
    x, ctx = inputs()
    ref = src(x, torch.tensor([500]), ctx)
    out = m(x, torch.tensor([500]), ctx)
    assert ((out.float() - ref).norm() / ref.norm()).item() < 0.05   # Q8_0 + int8 + bf16 compute


def test_unknown_gguf_type_is_named(tmp_path):
    src = rand_model()
    bad = gguf.quants.quantize(np.zeros((4, 256), np.float32), QT.TQ1_0)
    write(tmp_path / "m.gguf", src, QT.Q8_0, extra={"extra.weight": (bad, QT.TQ1_0)})
    with pytest.raises(CheckpointError, match="TQ1_0"):
        load_gguf_state_dict(tmp_path / "m.gguf")


def test_not_a_gguf_file(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(CheckpointError, match="GGUF"):
        load_gguf_state_dict(p)


def test_load_any_dit_dispatch(tmp_path):
    from openwan.gguf import load_any_dit
    from openwan.quant import convert_checkpoint
    src = rand_model()
    (tmp_path / "g").mkdir()
    write(tmp_path / "g" / "dit.gguf", src, QT.Q8_0)
    assert isinstance(load_any_dit(tmp_path / "g", quantize="int8").blocks[0].ffn[0], QuantLinear)
    src.save_pretrained(tmp_path / "f")
    assert isinstance(load_any_dit(tmp_path / "f").blocks[0].ffn[0], torch.nn.Linear)
    convert_checkpoint(tmp_path / "f", tmp_path / "q", "int8", dtype=torch.float32)
    back = load_any_dit(tmp_path / "q")
    assert isinstance(back.blocks[0].ffn[0], QuantLinear) and back.blocks[0].ffn[0].qweight.dtype == torch.int8


def test_q8_0_kept_as_int8_blocks(tmp_path):
    """quantize="int8" takes Q8_0 weights as they are: the layer's weight equals gguf's own dequantization."""
    src = rand_model()
    write(tmp_path / "m.gguf", src, QT.Q8_0)
    m = load_dit_gguf(tmp_path / "m.gguf", torch.float32, quantize="int8")
    f = load_dit_gguf(tmp_path / "m.gguf", torch.float32)
    layer = m.blocks[1].ffn[2]
    assert layer.weight_scale.shape == (layer.out_features, layer.in_features // 32)
    assert torch.equal(layer.weight, f.blocks[1].ffn[2].weight)   # d * q in fp32, as gguf computes it
    x, ctx = inputs()
    assert torch.equal(m(x, torch.tensor([500]), ctx), f(x, torch.tensor([500]), ctx))
    from openwan.quant import load_dit_quantized, save_quantized
    back = load_dit_quantized(save_quantized(m, tmp_path / "q"), None)   # block scales survive save/reload
    assert torch.equal(back(x, torch.tensor([500]), ctx), f(x, torch.tensor([500]), ctx))
