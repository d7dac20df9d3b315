"""Weight-only int8 / fp8 layers: rounding bounds, model conversion, shard-by-shard loading, save/reload, LoRA."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from openwan import quant
from openwan.configs import DiTConfig
from openwan.models.dit import WanModel
from openwan.quant import QuantLinear, quantize_model_, quantize_tensor

EPS32 = torch.finfo(torch.float32).eps


def tiny(**kw):
    base = dict(dim=48, ffn_dim=64, num_heads=4, num_layers=2, text_dim=32)
    base.update(kw)
    return DiTConfig(**base)


def rand_model(cfg, seed=0, std=0.2):
    torch.manual_seed(seed)
    m = WanModel(cfg).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    for p in m.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * std)
    return m


def inputs(cfg, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 16, 3, 8, 8, generator=g), torch.randn(1, 7, cfg.text_dim, generator=g)


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_quantize_tensor_error_within_half_step(kind):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 96, generator=g) * torch.linspace(0.01, 3, 64)[:, None]   # rows of very different scale
    q, s = quantize_tensor(w, kind)
    assert q.dtype == quant.QDTYPE[kind] and s.shape == (64,)
    err = (quant.dequantize_tensor(q, s) - w).abs()
    if kind == "int8":
        # round to nearest on a grid of step s: |err| <= s/2 (+ fp32 rounding of w/s and q*s)
        bound = s[:, None] / 2 + 4 * EPS32 * w.abs()
    else:
        # e4m3: 3 mantissa bits -> relative half-step 2^-4 for normal values; subnormals (below
        # 2^-6 * s) have absolute step 2^-9 * s
        bound = torch.maximum(w.abs() * 2.0 ** -4, s[:, None] * 2.0 ** -10) * (1 + 4 * EPS32)
    assert bool((err <= bound).all()), (err - bound).max()
    assert (q.float().abs().amax(1) == quant.QMAX[kind]).all()   # the grid spans each row's range


def test_quantize_tensor_zero_row_and_bad_dtype():
    w = torch.zeros(3, 4)
    q, s = quantize_tensor(w, "int8")
    assert (q == 0).all() and (s == 1).all()
    with pytest.raises(ValueError, match="float weight"):
        quantize_tensor(torch.zeros(3, 4, dtype=torch.int8), "int8")
    with pytest.raises(ValueError, match="int8, fp8"):
        quantize_tensor(w, "int4")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quant_linear_matches_dequantized_float_layer(dtype):
    torch.manual_seed(0)
    lin = nn.Linear(32, 24).to(dtype)
    ql = QuantLinear.from_linear(lin, "int8")
    assert ql.compute_dtype == dtype and ql.qweight.dtype == torch.int8
    x = torch.randn(5, 32, dtype=dtype)
    w = ql.dequantized(dtype)
    assert torch.equal(ql(x), F.linear(x, w, lin.bias))   # the same arithmetic: bit equal
    assert torch.equal(ql.weight, w)


def test_model_conversion_targets_and_memory():
    cfg = tiny()
    m = rand_model(cfg)
    names = quant.quantizable_names(m)
    assert "blocks.0.self_attn.q" in names and "blocks.1.ffn.2" in names and "text_embedding.0" in names
    assert not any(n.startswith(("head", "time_", "img_emb")) for n in names)   # the fp32 islands stay float
    before = quant.weight_bytes(m)
    quantize_model_(m, "int8")
    assert isinstance(m.blocks[0].cross_attn.k, QuantLinear) and isinstance(m.head.head, nn.Linear)
    q_bytes = sum(m.get_submodule(n).qweight.numel() for n in names)
    # the int8 layers hold 1 byte per weight instead of 4 (+ 4-byte scales per row)
    assert quant.weight_bytes(m) == before - 3 * q_bytes + 4 * sum(m.get_submodule(n).out_features for n in names)
    assert quant.quant_info(m)["kind"] == "int8"


@pytest.mark.parametrize("kind,tol", [("int8", 0.03), ("fp8", 0.06)])
def test_quantized_model_output_close(kind, tol):
    cfg = tiny()
    m = rand_model(cfg)
    x, ctx = inputs(cfg)
    ref = m(x, torch.tensor([500]), ctx)
    quantize_model_(m, kind)
    out = m(x, torch.tensor([500]), ctx)
    # int8: half-step relative error per weight ~ 1/(2*127*sqrt(3)) r.m.s. of row max; the target 3 %.
    # fp8 e4m3: 2^-4 relative half-step per weight, about twice int8's on Gaussian rows.
    assert 0 < rel(out, ref) < tol


def test_meta_conversion_then_assign_load_quantizes_float_weights():
    cfg = tiny()
    src = rand_model(cfg)
    with torch.device("meta"):
        m = WanModel(cfg)
    quantize_model_(m, "int8")
    assert m.blocks[0].ffn[0].qweight.device.type == "meta"
    m.load_state_dict(src.state_dict(), strict=False, assign=True)
    ref = quantize_model_(rand_model(cfg), "int8")
    for (k, a), (k2, b) in zip(sorted(m.state_dict().items()), sorted(ref.state_dict().items())):
        assert k == k2 and torch.equal(a, b), k


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_load_quantized_from_float_checkpoint_and_save_reload(tmp_path, kind):
    cfg = tiny()
    src = rand_model(cfg).to(torch.bfloat16)
    src.save_pretrained(tmp_path / "float")
    m = quant.load_dit_quantized(tmp_path / "float", kind, rows_per_read=7, build=WanModel)   # rows split unevenly
    ref = quantize_model_(rand_model(cfg).to(torch.bfloat16), kind)
    assert m.blocks[1].self_attn.o.compute_dtype == torch.bfloat16
    for k, v in ref.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
    path = quant.save_quantized(m, tmp_path / "q")
    from safetensors import safe_open
    with safe_open(str(path), "pt") as fh:
        assert fh.get_slice("blocks.0.ffn.0.weight").get_dtype() == ("I8" if kind == "int8" else "F8_E4M3")
        assert fh.get_slice("blocks.0.ffn.0.weight_scale").get_dtype() == "F32"
    back = quant.load_dit_quantized(tmp_path / "q", None, build=WanModel)
    x, ctx = inputs(cfg)
    assert torch.equal(back(x, torch.tensor([3]), ctx), m(x, torch.tensor([3]), ctx))
    with pytest.raises(ValueError, match="holds"):
        quant.load_dit_quantized(tmp_path / "q", "fp8" if kind == "int8" else "int8", build=WanModel)


def test_lora_on_quantized_layers_stays_unmerged():
    from openwan.training import lora as L
    cfg = tiny()
    m = rand_model(cfg)
    g = torch.Generator().manual_seed(3)
    sd = {}
    for n in ("blocks.0.self_attn.q", "blocks.1.ffn.0", "head.head"):   # two quantized, one float layer
        lin = m.get_submodule(n)
        sd[f"diffusion_model.{n}.lora_down.weight"] = torch.randn(4, lin.in_features, generator=g) * 0.3
        sd[f"diffusion_model.{n}.lora_up.weight"] = torch.randn(lin.out_features, 4, generator=g) * 0.3
        sd[f"diffusion_model.{n}.alpha"] = torch.tensor(2.0)
    x, ctx = inputs(cfg)
    quantize_model_(m, "int8")
    base = m(x, torch.tensor([500]), ctx)
    # the expected model: a float twin holding the dequantized weights with the LoRA deltas merged (fp32)
    twin = rand_model(cfg)
    with torch.no_grad():
        for n in quant.quantizable_names(twin):
            twin.get_submodule(n).weight.copy_(m.get_submodule(n).dequantized(torch.float32))
        for n in ("blocks.0.self_attn.q", "blocks.1.ffn.0", "head.head"):
            d = sd[f"diffusion_model.{n}.lora_up.weight"] @ sd[f"diffusion_model.{n}.lora_down.weight"] * (0.8 * 2 / 4)
            twin.get_submodule(n).weight.add_(d)
    name = quant.load_lora(m, sd, strength=0.8)
    q = m.blocks[0].self_attn.q
    assert name in q.adapters and isinstance(m.head.head, nn.Linear)
    assert q.qweight.dtype == torch.int8   # nothing merged into the int8 weight
    y = m(x, torch.tensor([500]), ctx)
    ref = twin(x, torch.tensor([500]), ctx)
    assert rel(ref, base) > 1e-2   # the adapters change the output ...
    # ... to the merged twin's, up to fp32 rounding of the same sums in another order (factored vs merged),
    # amplified through two blocks: a few hundred eps relative
    assert rel(y, ref) < 1000 * EPS32
    y_in = torch.randn(3, q.in_features)   # the layer's own forward (factored) against its merged weight
    w, b = q.weight, q.bias
    assert (q(y_in) - F.linear(y_in, w, b)).abs().max() <= 64 * EPS32 * (y_in.abs() @ w.abs().T + b.abs()).max()
    assert L.lora_summary(m)   # the float layer got the usual parametrization
    quant.remove_lora(m)
    assert not len(q.adapters) and not L.lora_summary(m)
    assert torch.equal(m(x, torch.tensor([500]), ctx), base)


def test_bad_quant_metadata_is_a_clear_error(tmp_path):
    from openwan.checkpoints import CheckpointError, save_safetensors
    m = quantize_model_(rand_model(tiny()), "int8")
    save_safetensors(m.state_dict(), tmp_path / "q.safetensors", metadata={"openwan_quant": "[1, 2"})
    with pytest.raises(CheckpointError, match="openwan_quant"):
        quant.load_dit_quantized(tmp_path / "q.safetensors", None, config=tiny(), build=WanModel)


def test_lora_shape_mismatch_on_quantized_layer_is_named():
    from openwan.checkpoints import CheckpointError
    m = quantize_model_(rand_model(tiny()), "int8")
    bad = {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 7),
           "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(48, 4)}
    with pytest.raises(CheckpointError, match="blocks.0.self_attn.q"):
        quant.load_lora(m, bad)


def test_load_hook_with_load_dit_gives_the_same_model(tmp_path):
    from openwan.checkpoints import load_dit
    cfg = tiny()
    src = rand_model(cfg).to(torch.bfloat16)
    src.save_pretrained(tmp_path / "f")
    m = load_dit(tmp_path / "f", build=WanModel, hook=quant.load_hook("int8"))
    ref = quant.load_dit_quantized(tmp_path / "f", "int8", build=WanModel)
    assert isinstance(m.blocks[0].ffn[0], QuantLinear) and m.blocks[0].ffn[0].compute_dtype == torch.bfloat16
    assert isinstance(m.head.head, nn.Linear) and not isinstance(m.head.head, QuantLinear)
    for k, v in ref.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
