"""CLIP ViT vision tower: golden parity, key conversion, one block by hand, preprocessing by hand."""
import json
import math

import numpy as np
import pytest
import torch
from bounds import EPS, fp32_bound

from openwan.checkpoints import CheckpointError, read_safetensors
from openwan.configs import TINY_IMAGE_ENCODER, ImageEncoderConfig
from openwan.models import image_encoder as ie
from openwan.models.image_encoder import CLIP_MEAN, CLIP_STD, ImageEncoder, hf_to_official, official_to_hf

CFG = TINY_IMAGE_ENCODER  # image 28, patch 14, dim 32, 4 heads, 3 layers -> features [N, 5, 32]


def _golden(reference_dir):
    g = read_safetensors(reference_dir / "clip_visual.safetensors")
    c = json.loads((reference_dir / "README.json").read_text())["clip_visual"]["config"]
    cfg = ImageEncoderConfig(image_size=c["image_size"], patch_size=c["patch_size"], dim=c["dim"],
                             mlp_ratio=c["mlp_ratio"], num_heads=c["num_heads"], num_layers=c["num_layers"],
                             norm_eps=c["norm_eps"])
    return g, cfg


# ----------------------------------------------------------------------------- golden vectors

def test_golden_clip_through_official_file(reference_dir, tmp_path):
    g, cfg = _golden(reference_dir)
    visual = {k: v for k, v in g.items() if k.startswith("visual.")}
    # the official file also holds the text tower: it must be ignored
    torch.save({**visual, "textual.token_embedding.weight": torch.zeros(10, 4), "log_scale": torch.zeros(())},
               tmp_path / ie.OFFICIAL_CLIP_FILE)
    (tmp_path / ie.CONFIG_FILE).write_text(json.dumps(cfg.to_dict()))  # heads are not in the shapes
    enc = ImageEncoder.from_pretrained(tmp_path, dtype=torch.float32)
    assert enc.config == cfg and enc.projection_dim == visual["visual.head"].shape[1]
    diff = (enc.features(g["in.pixels"]) - g["out.features"]).abs().max().item()
    assert diff <= 1e-5, diff
    # config= instead of clip_config.json gives the same
    (tmp_path / ie.CONFIG_FILE).unlink()
    enc2 = ImageEncoder.from_pretrained(tmp_path / ie.OFFICIAL_CLIP_FILE, config=cfg)
    assert torch.equal(enc2.features(g["in.pixels"]), enc.features(g["in.pixels"]))


# ----------------------------------------------------------------------------- key conversion

def test_key_map_round_trip(reference_dir):
    g, cfg = _golden(reference_dir)
    visual = {k: v for k, v in g.items() if k.startswith("visual.")}
    hf = official_to_hf(visual)
    assert "vision_model.encoder.layers.2.self_attn.v_proj.bias" in hf
    assert hf["vision_model.embeddings.class_embedding"].shape == (cfg.dim,)
    assert torch.equal(hf["visual_projection.weight"], visual["visual.head"].t())
    back = hf_to_official(hf)
    assert set(back) == set(visual)
    for k in visual:
        assert torch.equal(back[k], visual[k]), k
    with pytest.raises(CheckpointError, match="visual.transformer.0.attn.bogus.weight"):
        official_to_hf({**visual, "visual.transformer.0.attn.bogus.weight": torch.zeros(1)})


def test_official_and_diffusers_layouts_give_identical_outputs(tmp_path):
    from transformers import CLIPVisionModelWithProjection
    enc = ImageEncoder(CFG, projection_dim=8, seed=0)
    images = torch.rand(2, 3, 40, 52) * 2 - 1
    ref = enc.encode(images)
    assert ref.shape == (2, 5, CFG.dim)
    enc.save_pretrained(tmp_path / "off", layout="official")
    enc.save_pretrained(tmp_path / "dif", layout="diffusers")
    raw = torch.load(tmp_path / "off" / ie.OFFICIAL_CLIP_FILE, weights_only=True)
    assert all(k.startswith("visual.") for k in raw) and "visual.transformer.1.attn.to_qkv.weight" in raw
    loaded = {
        "official file": ImageEncoder.from_pretrained(tmp_path / "off" / ie.OFFICIAL_CLIP_FILE),
        "official dir": ImageEncoder.from_pretrained(tmp_path / "off"),
        "diffusers root": ImageEncoder.from_pretrained(tmp_path / "dif"),
        "image_encoder folder": ImageEncoder.from_pretrained(tmp_path / "dif" / "image_encoder"),
    }
    for name, other in loaded.items():
        assert other.config == CFG and other.projection_dim == 8, name
        assert torch.equal(other.encode(images), ref), name
        assert torch.equal(other.projection.weight, enc.projection.weight), name

    # transformers reads our diffusers folder; its hidden_states[-2] (what diffusers' Wan i2v uses) is ours
    hf = CLIPVisionModelWithProjection.from_pretrained(tmp_path / "dif" / "image_encoder",
                                                       local_files_only=True).eval()
    with torch.no_grad():
        out = hf(pixel_values=enc.preprocess(images), output_hidden_states=True)
    assert torch.equal(out.hidden_states[-2], ref)
    # and our loader reads transformers' own save
    hf.save_pretrained(tmp_path / "hf_save")
    assert torch.equal(ImageEncoder.from_pretrained(tmp_path / "hf_save").encode(images), ref)


def test_missing_keys_are_named_in_official_names(tmp_path):
    sd = ImageEncoder(CFG, seed=0).state_dict("official")
    del sd["visual.transformer.1.norm2.bias"]
    torch.save(sd, tmp_path / ie.OFFICIAL_CLIP_FILE)
    with pytest.raises(CheckpointError, match=r"visual\.transformer\.1\.norm2\.bias"):
        ImageEncoder.from_pretrained(tmp_path, config=CFG)
    torch.save({"textual.x": torch.zeros(1)}, tmp_path / "text_only.pth")
    with pytest.raises(CheckpointError, match="visual"):
        ImageEncoder.from_pretrained(tmp_path / "text_only.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=ie.OFFICIAL_CLIP_FILE):
        ImageEncoder.from_pretrained(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"model_type": "i2v", "dim": 5120}))
    with pytest.raises(CheckpointError, match=ie.OFFICIAL_CLIP_FILE):
        ImageEncoder.from_pretrained(tmp_path / "empty")


# ----------------------------------------------------------------------------- by hand

def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def test_features_by_hand():
    """Patch conv, class token, positions, pre-norm, then ONE block (2-layer config: the last block
    does not run), all computed from the official-layout weights."""
    cfg = CFG.replace(num_layers=2)
    enc = ImageEncoder(cfg, seed=1)
    with torch.no_grad():  # non-trivial norms and biases
        for k, v in enc.tower.state_dict().items():
            if "norm" in k or k.endswith(".bias"):
                v.copy_(torch.randn_like(v) * 0.5 + (1.0 if k.endswith("weight") else 0.0))
    w = enc.state_dict("official")
    px = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    got = enc.features(px)

    p, D, H = cfg.patch_size, cfg.dim, cfg.num_heads
    eps = cfg.norm_eps
    g = cfg.image_size // p
    patches = px.reshape(2, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(2, g * g, 3 * p * p)
    x = patches @ w["visual.patch_embedding.weight"].reshape(D, -1).t()          # conv without bias
    x = torch.cat([w["visual.cls_embedding"].expand(2, 1, D), x], 1) + w["visual.pos_embedding"]
    x = _layer_norm(x, w["visual.pre_norm.weight"], w["visual.pre_norm.bias"], eps)
    b = "visual.transformer.0."
    h = _layer_norm(x, w[b + "norm1.weight"], w[b + "norm1.bias"], eps)
    qkv = h @ w[b + "attn.to_qkv.weight"].t() + w[b + "attn.to_qkv.bias"]
    q, k, v = (t.reshape(2, -1, H, D // H).transpose(1, 2) for t in qkv.chunk(3, -1))
    a = ((q @ k.transpose(-1, -2)) / math.sqrt(D // H)).softmax(-1) @ v
    x = x + a.transpose(1, 2).reshape(2, -1, D) @ w[b + "attn.proj.weight"].t() + w[b + "attn.proj.bias"]
    h = _layer_norm(x, w[b + "norm2.weight"], w[b + "norm2.bias"], eps)
    h = h @ w[b + "mlp.0.weight"].t() + w[b + "mlp.0.bias"]
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))                            # exact GELU
    want = x + h @ w[b + "mlp.2.weight"].t() + w[b + "mlp.2.bias"]
    diff = (got - want).abs().max().item()
    # the same math in another order (conv vs patch matmul, fused attention, library layer norms): ~16 chained
    # roundings (patch embedding, 2 + 2 + 2 norm reductions, q/k/v, scores, softmax, values, out, fc1, GELU, fc2, the
    # residuals), 2 ulps each of the largest value of the residual stream (5.3): 2e-5 (measured 2.4e-6); the tanh
    # GELU is 3.6e-4 off
    assert diff <= fp32_bound(got, want, x, terms=16, ulps=2), diff


def test_only_the_needed_blocks_run(monkeypatch):
    enc = ImageEncoder(CFG, seed=0)

    def boom(*a, **k):
        raise AssertionError("the last block ran")
    monkeypatch.setattr(enc.tower.encoder.layers[-1], "forward", boom)
    assert enc.encode(torch.zeros(1, 3, 28, 28)).shape == (1, 5, CFG.dim)


def _bicubic_matrix(n_in, n_out, a=-0.75):
    """Rows of cubic-convolution weights (align_corners False, edge-clamped taps, no antialias)."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    scale = n_in / n_out
    for i in range(n_out):
        src = (i + 0.5) * scale - 0.5
        f = math.floor(src)
        t = src - f
        for j in range(-1, 3):
            d = abs(j - t)
            if d <= 1:
                wgt = (a + 2) * d ** 3 - (a + 3) * d ** 2 + 1
            elif d < 2:
                wgt = a * d ** 3 - 5 * a * d ** 2 + 8 * a * d - 4 * a
            else:
                wgt = 0.0
            m[i, min(max(f + j, 0), n_in - 1)] += wgt
    return m


def test_preprocessing_by_hand():
    enc = ImageEncoder(CFG, seed=0)
    img = torch.rand(3, 45, 61, dtype=torch.float64) * 2 - 1
    got = enc.preprocess(img)
    s = CFG.image_size
    want = _bicubic_matrix(45, s) @ img @ _bicubic_matrix(61, s).t()            # per channel
    want = want * 0.5 + 0.5
    want = (want - torch.tensor(CLIP_MEAN, dtype=torch.float64)[:, None, None]) / \
        torch.tensor(CLIP_STD, dtype=torch.float64)[:, None, None]
    assert got.shape == (1, 3, s, s) and got.dtype == torch.float32
    # torch's fp32 bicubic rounds each source coordinate (i + 1/2) n / 28 - 1/2 (< n) by <= 1.5 ulps of n, and the 4
    # weights move with it (their slopes sum to <= 3 for a = -0.75); the weights' cubics and the 4-tap sums add a few
    # ulps: per pass (4.5 n + 16) ulps of the values (|x| <= 1.375 with the kernel's overshoot), x 0.5 / std (1.9),
    # plus the normalisation's 4 roundings: 1.6e-4 (measured 1.2e-5); PIL's a = -0.5 kernel is 0.27 off
    taps = sum(4.5 * n + 16 for n in img.shape[1:]) * EPS * 1.375 * 0.5 / min(CLIP_STD)
    diff = (got[0].double() - want).abs().max().item()
    assert diff <= taps + fp32_bound(got, terms=4, ulps=1), diff


def test_inputs_pil_list_and_errors():
    from PIL import Image
    enc = ImageEncoder(CFG, seed=0)
    arr = (np.random.default_rng(0).random((33, 47, 3)) * 255).astype(np.uint8)
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1
    pil = Image.fromarray(arr)
    a, b = enc.preprocess(pil), enc.preprocess(t)
    # the same resize of the same values (PIL's uint8 -> [-1, 1] is t's conversion): 4 x 4 bicubic taps on pixels
    # |t| <= 1, each may round differently (2 ulps: both sides), then x 0.5 / std (~1.9): 7.3e-6; a wrong conversion
    # (/ 255, BGR) is off by O(1)
    assert (a - b).abs().max().item() <= fp32_bound(t, terms=16, ulps=2) * 0.5 / min(CLIP_STD)
    both = enc.encode([pil, torch.zeros(3, 20, 20)])                           # sizes may differ
    assert both.shape == (2, 5, CFG.dim)
    one = enc.encode(t)[0]
    # batch 2 vs 1 may pick other matmul kernels: the tower chains ~16 reductions (patch embedding, 2 layers x (q/k/v,
    # scores, softmax, values, out, fc1, fc2), the layer norms), 2 ulps each of the largest feature (3.2): 1.2e-5
    assert (both[0] - one).abs().max().item() <= fp32_bound(both[0], one, terms=16, ulps=2)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        enc.encode(torch.full((1, 3, 28, 28), 255.0))
    with pytest.raises(ValueError, match="3, H, W"):
        enc.encode(torch.zeros(1, 4, 28, 28))
    with pytest.raises(ValueError, match="PIL"):
        enc.encode(["not an image"])


def test_default_config_is_vit_h_14():
    hf = ie.to_hf_config(ImageEncoderConfig())
    assert (hf.hidden_size, hf.intermediate_size, hf.num_attention_heads, hf.num_hidden_layers,
            hf.image_size, hf.patch_size, hf.hidden_act, hf.layer_norm_eps) == \
        (1280, 5120, 16, 32, 224, 14, "gelu", 1e-5)
    # the ViT-H shapes infer the ViT-H config (16 heads), 257 tokens
    with torch.device("meta"):
        shapes = {"visual.patch_embedding.weight": torch.empty(1280, 3, 14, 14),
                  "visual.pos_embedding": torch.empty(1, 257, 1280),
                  "visual.transformer.0.mlp.0.weight": torch.empty(5120, 1280),
                  "visual.transformer.31.mlp.0.weight": torch.empty(5120, 1280)}
    assert ie.infer_config(shapes) == ImageEncoderConfig()
