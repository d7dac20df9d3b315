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
from openwan.testing import q4_k  # noqa: E402

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


def random_k_blocks(rows, cols, qtype, seed=0):
    """Random Q5_K / Q6_K super-blocks whose f16 scales keep |w| below ~0.05 (bytes [rows, cols/256 * size])."""
    rng = np.random.default_rng(seed)
    size = {QT.Q5_K: 176, QT.Q6_K: 210}[qtype]
    raw = rng.integers(0, 256, (rows * cols // 256, size), dtype=np.uint8)
    f16 = lambda lo, hi: np.float16(rng.uniform(lo, hi, len(raw))).view(np.uint8).reshape(-1, 2)  # noqa: E731
    if qtype == QT.Q6_K:                                  # w = d sc (q - 32): |w| <= 128 * 32 d
        raw[:, 208:210] = f16(-1e-5, 1e-5)
    else:                                                 # w = d sc q - dmin m: |w| <= 63 * 31 d + 63 dmin
        raw[:, 0:2], raw[:, 2:4] = f16(0, 2e-5), f16(0, 4e-4)
    return raw.reshape(rows, -1)


def write(path, model, qtype, extra=None):
    """Official keys; 2-D Linear weights in qtype, small/odd tensors F32, biases F16, norms BF16."""
    w = gguf.GGUFWriter(str(path), "wan")
    half_steps = {}
    for k, v in model.state_dict().items():
        a = v.float().numpy()
        if k == "patch_embedding.weight":
            a = a.reshape(a.shape[0], -1)                   # GGUF holds <= 4 dims: flattened as converters do
        if a.ndim == 2 and a.shape[1] % 256 == 0 and qtype is not None:
            if qtype in (QT.Q5_K, QT.Q6_K):                 # no encoder at hand: random blocks, sane scales
                data = random_k_blocks(a.shape[0], a.shape[1], qtype, len(half_steps))
                half_steps[k] = None
            elif qtype == QT.Q4_K:
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
    m = load_dit_gguf(tmp_path / "m.gguf", torch.float32, build=WanModel)
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
    m = load_dit_gguf(tmp_path / "m.gguf", torch.bfloat16, quantize="int8", build=WanModel)
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


def test_from_pretrained_dispatch(tmp_path):
    """WanModel.from_pretrained: a .gguf file or a folder holding one, an openwan quantized file, a float
    checkpoint (quantized while loading with quantize=)."""
    from openwan.quant import convert_checkpoint
    src = rand_model()
    (tmp_path / "g").mkdir()
    write(tmp_path / "g" / "dit.gguf", src, QT.Q8_0)
    assert isinstance(WanModel.from_pretrained(tmp_path / "g", quantize="int8").blocks[0].ffn[0], QuantLinear)
    x, ctx = inputs()
    direct = load_dit_gguf(tmp_path / "g" / "dit.gguf", build=WanModel)(x, torch.tensor([500]), ctx)
    assert torch.equal(WanModel.from_pretrained(tmp_path / "g" / "dit.gguf")(x, torch.tensor([500]), ctx), direct)
    src.save_pretrained(tmp_path / "f")
    assert isinstance(WanModel.from_pretrained(tmp_path / "f").blocks[0].ffn[0], torch.nn.Linear)
    assert isinstance(WanModel.from_pretrained(tmp_path / "f", quantize="int8").blocks[0].ffn[0], QuantLinear)
    convert_checkpoint(tmp_path / "f", tmp_path / "q", "int8", dtype=torch.float32, build=WanModel)
    back = WanModel.from_pretrained(tmp_path / "q")
    assert isinstance(back.blocks[0].ffn[0], QuantLinear) and back.blocks[0].ffn[0].qweight.dtype == torch.int8
    with pytest.raises(TypeError, match="build"):            # the model class is given, not imported
        load_dit_gguf(tmp_path / "g" / "dit.gguf")


def test_q8_0_kept_as_int8_blocks(tmp_path):
    """quantize="int8" takes Q8_0 weights as they are: the layer's weight equals gguf's own dequantization."""
    src = rand_model()
    write(tmp_path / "m.gguf", src, QT.Q8_0)
    m = load_dit_gguf(tmp_path / "m.gguf", torch.float32, quantize="int8", build=WanModel)
    f = load_dit_gguf(tmp_path / "m.gguf", torch.float32, packed=False, build=WanModel)
    assert isinstance(load_dit_gguf(tmp_path / "m.gguf", build=WanModel).blocks[1].ffn[2], QuantLinear)   # packed by default
    layer = m.blocks[1].ffn[2]
    assert layer.weight_scale.shape == (layer.out_features, layer.in_features // 32)
    assert torch.equal(layer.weight, f.blocks[1].ffn[2].weight)   # d * q in fp32, as gguf computes it
    x, ctx = inputs()
    assert torch.equal(m(x, torch.tensor([500]), ctx), f(x, torch.tensor([500]), ctx))
    from openwan.quant import load_dit_quantized, save_quantized
    back = load_dit_quantized(save_quantized(m, tmp_path / "q"), None, build=WanModel)   # block scales survive save/reload
    assert torch.equal(back(x, torch.tensor([500]), ctx), f(x, torch.tensor([500]), ctx))


@pytest.mark.parametrize("name", ["Q4_K", "Q5_K", "Q6_K"])
def test_k_quant_torch_dequantizer_is_gguf_bit_for_bit(name):
    """openwan.kquant decodes every bit field as gguf's numpy dequantizer does: random bytes (every
    scale, min and q pattern), f16 super-scales kept finite."""
    from openwan.kquant import BLOCK_BYTES, dequantize
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, (96, BLOCK_BYTES[name]), dtype=np.uint8)
    d = np.float16(rng.uniform(-0.02, 0.02, (96, 2))).view(np.uint8)
    if name == "Q6_K":
        raw[:, 208:210] = d[:, :2]
    else:
        raw[:, 0:4] = d
    ref = gguf.quants.dequantize(raw, QT[name])
    assert torch.equal(dequantize(torch.from_numpy(raw), name, ref.shape), torch.from_numpy(ref))


@pytest.mark.parametrize("qtype", [QT.Q4_K, QT.Q5_K, QT.Q6_K])
def test_k_quants_stay_packed(tmp_path, qtype):
    """Packed K-quant layers: the same output as dequantize-at-load (bit for bit), the file's bytes resident."""
    from openwan.kquant import KQuantLinear
    from openwan.offload import enable_block_swap
    from openwan.quant import weight_bytes
    write(tmp_path / "m.gguf", rand_model(), qtype)
    m = load_dit_gguf(tmp_path / "m.gguf", torch.float32, build=WanModel)
    f = load_dit_gguf(tmp_path / "m.gguf", torch.float32, packed=False, build=WanModel)
    packed = {n: x for n, x in m.named_modules() if isinstance(x, KQuantLinear)}
    assert "blocks.0.ffn.0" in packed and "blocks.1.self_attn.q" in packed and len(packed) == 2 * 10 + 2   # per block 8 attention + 2 FFN; text embedding 2
    x, ctx = inputs()
    out = m(x, torch.tensor([500]), ctx)
    assert torch.equal(out, f(x, torch.tensor([500]), ctx))
    r = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    file_bytes = {t.name: int(t.n_bytes) for t in r.tensors}
    kept = sum(x.qweight.numel() for x in packed.values())        # uint8: one byte each
    assert kept == sum(file_bytes[n + ".weight"] for n in packed)   # exactly the file's blocks
    rest = weight_bytes(m) - kept
    assert rest == weight_bytes(f) - sum(4 * x.out_features * x.in_features for x in packed.values())
    bits = {QT.Q4_K: 4.5, QT.Q5_K: 5.5, QT.Q6_K: 6.5625}[qtype]
    assert kept * 8 == bits * sum(x.out_features * x.in_features for x in packed.values())
    enable_block_swap(m, resident=1, device="cpu")                 # the packed bytes stream with their block
    assert m.blocks[1].ffn[0].qweight.device.type == "meta"
    assert torch.equal(m(x, torch.tensor([500]), ctx), out)


def test_q4_k_layer_within_its_step_and_lora_unmerged(tmp_path):
    """A packed Q4_K layer's output vs the unquantized layer: within sum_j (half step_ij) |x_j| (each weight
    is within half its sub-block's step) + fp32 rounding; a LoRA on it stays unmerged and adds B A x."""
    from openwan import quant
    src = rand_model()
    half = write(tmp_path / "m.gguf", src, QT.Q4_K)
    m = load_dit_gguf(tmp_path / "m.gguf", torch.float32, build=WanModel)
    name = "blocks.0.ffn.2"
    layer, ref = m.get_submodule(name), src.get_submodule(name)
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(4))
    w, wq = ref.weight, layer.weight
    hs = torch.from_numpy(half[name + ".weight"]).double()
    gamma = 256 * EPS32 / (1 - 256 * EPS32)                         # fp32 dot products of length 256
    xa, wa = x.abs().double(), w.abs().double()                    # the bound itself in float64
    bound = (xa @ (hs + 4 * EPS32 * wa).T) + gamma * (xa @ (wa + wq.abs().double()).T)
    err = (layer(x) - ref(x)).abs().double()
    assert (err <= bound).all() and err.max() > 0
    g = torch.Generator().manual_seed(5)
    A, B = torch.randn(4, 256, generator=g) * 0.1, torch.randn(256, 4, generator=g) * 0.1
    quant.load_lora(m, {f"diffusion_model.{name}.lora_down.weight": A, f"diffusion_model.{name}.lora_up.weight": B})
    assert layer.qweight.dtype == torch.uint8                       # still packed: the adapter is added in forward
    y = torch.nn.functional.linear(x, wq, layer.bias) + (x @ A.T) @ B.T
    # the same products summed in another order: fp32 rounding of the sums, gamma_n of their magnitudes
    tol = gamma * ((x.abs() @ wq.abs().T) + (x.abs() @ A.abs().T) @ B.abs().T + layer.bias.abs())
    assert ((layer(x) - y).abs() <= 2 * tol).all()
