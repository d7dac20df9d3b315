"""umT5 text encoder: golden parity, key conversion, one layer by hand, prompts, cache, errors."""
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from bounds import fp32_bound

from openwan.checkpoints import CheckpointError, read_safetensors
from openwan.configs import TINY_TEXT_ENCODER, TextEncoderConfig
from openwan.models import text_encoder as te
from openwan.models.text_encoder import (TINY_TOKENIZER_DIR, TINY_TOKENIZER_VOCAB, TextEncoder, clean_prompt,
                                         hf_to_official, official_to_hf)

# the tiny test config with a vocabulary that fits the shipped tokenizer
CFG = TINY_TEXT_ENCODER.replace(vocab=TINY_TOKENIZER_VOCAB)
PROMPTS = ["A red cube bounces on the table.", "two blue spheres orbit a golden ring, slow motion, aerial view"]


def _encoder(cfg=CFG, seed=0, **kw):
    return TextEncoder(cfg, TINY_TOKENIZER_DIR, seed=seed, **kw)


# ----------------------------------------------------------------------------- golden vectors

def test_golden_t5_through_official_file(reference_dir, tmp_path):
    g = read_safetensors(reference_dir / "t5.safetensors")
    cfg_json = json.loads((reference_dir / "README.json").read_text())["t5"]["config"]
    official = {k[len("model."):]: v for k, v in g.items() if k.startswith("model.")}
    f = tmp_path / te.OFFICIAL_T5_FILE
    torch.save(official, f)
    enc = TextEncoder.from_pretrained(f, tokenizer_path=TINY_TOKENIZER_DIR, dtype=torch.float32)
    # every size is read from the shapes, heads from the relative-bias table
    assert (enc.config.vocab, enc.config.dim, enc.config.num_heads, enc.config.num_layers, enc.config.dim_ffn) == \
        (cfg_json["vocab"], cfg_json["dim"], cfg_json["num_heads"], cfg_json["num_layers"], cfg_json["dim_ffn"])
    with torch.no_grad():
        out = enc.model(input_ids=g["in.ids"], attention_mask=g["in.mask"]).last_hidden_state
    real = g["in.mask"].bool()
    assert real.sum() < real.numel()  # the golden batch has padding
    diff = (out - g["out.hidden"])[real].abs().max().item()
    assert diff <= 1e-5, diff


# ----------------------------------------------------------------------------- key conversion

def test_key_map_round_trip_and_names():
    enc = _encoder()
    hf = {k: v for k, v in enc.model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    official = hf_to_official(hf)
    expected = {"token_embedding.weight", "norm.weight"} | {
        f"blocks.{i}.{n}" for i in range(CFG.num_layers) for n in
        ("norm1.weight", "attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.o.weight", "norm2.weight",
         "ffn.gate.0.weight", "ffn.fc1.weight", "ffn.fc2.weight", "pos_embedding.embedding.weight")}
    assert set(official) == expected
    back = official_to_hf(official)
    assert set(back) == set(hf)
    assert all(back[k] is hf[k] for k in hf)  # a pure rename
    with pytest.raises(CheckpointError, match="blocks.0.attn.qq.weight"):
        official_to_hf({**official, "blocks.0.attn.qq.weight": torch.zeros(1)})


def test_official_and_diffusers_layouts_give_identical_outputs(tmp_path):
    from transformers import UMT5EncoderModel
    cfg = CFG.replace(max_dist=20)  # non-default: must travel through t5_config.json / config.json
    enc = _encoder(cfg, seed=1)
    ref = enc.encode(PROMPTS)
    enc.save_pretrained(tmp_path / "off", layout="official")
    enc.save_pretrained(tmp_path / "dif", layout="diffusers")
    assert (tmp_path / "off" / te.CONFIG_FILE).is_file()
    assert (tmp_path / "off" / "google" / "umt5-xxl" / "tokenizer.json").is_file()
    raw = torch.load(tmp_path / "off" / te.OFFICIAL_T5_FILE, weights_only=True)
    assert "token_embedding.weight" in raw and "blocks.1.ffn.gate.0.weight" in raw

    loaded = {
        "official file": TextEncoder.from_pretrained(tmp_path / "off" / te.OFFICIAL_T5_FILE),
        "official dir": TextEncoder.from_pretrained(tmp_path / "off"),
        "diffusers root": TextEncoder.from_pretrained(tmp_path / "dif"),
        "text_encoder folder": TextEncoder.from_pretrained(tmp_path / "dif" / "text_encoder"),
    }
    for name, other in loaded.items():
        assert other.config == cfg, name
        outs = other.encode(PROMPTS)
        for a, b in zip(ref, outs):
            assert torch.equal(a, b), name

    # transformers itself reads our diffusers-layout folder and computes the same thing
    hf = UMT5EncoderModel.from_pretrained(tmp_path / "dif" / "text_encoder", local_files_only=True).eval()
    ids, mask = enc.tokenize(PROMPTS)
    with torch.no_grad():
        h = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    for i, r in enumerate(ref):
        assert torch.equal(h[i, :r.shape[0]], r)
    # and our loader reads transformers' own save
    hf.save_pretrained(tmp_path / "hf_save" / "text_encoder")
    (tmp_path / "hf_save" / "tokenizer").symlink_to(TINY_TOKENIZER_DIR)
    for a, b in zip(ref, TextEncoder.from_pretrained(tmp_path / "hf_save").encode(PROMPTS)):
        assert torch.equal(a, b)


def test_missing_and_misshaped_keys_are_named(tmp_path):
    sd = _encoder().state_dict("official")
    del sd["blocks.1.norm2.weight"]
    sd["blocks.0.attn.q.weight"] = torch.zeros(8, 32)
    torch.save(sd, tmp_path / te.OFFICIAL_T5_FILE)
    with pytest.raises(CheckpointError) as e:
        TextEncoder.from_pretrained(tmp_path, tokenizer_path=TINY_TOKENIZER_DIR, config=CFG)
    msg = str(e.value)  # reported in the official names
    assert "missing keys: blocks.1.norm2.weight" in msg and "shape mismatch for blocks.0.attn.q.weight" in msg


# ----------------------------------------------------------------------------- one layer by hand

def _bucket(rel, num_buckets=32, max_dist=128):
    """T5's bidirectional relative-position bucket, written out."""
    half = num_buckets // 2
    out = torch.where(rel > 0, half, 0)
    a = rel.abs()
    max_exact = half // 2
    large = max_exact + (torch.log(a.clamp(min=1).float() / max_exact) / math.log(max_dist / max_exact)
                         * (half - max_exact)).long()
    large = large.clamp(max=half - 1)
    return out + torch.where(a < max_exact, a, large)


def _rms(x, w, eps):
    x = x.float()
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def test_one_layer_by_hand():
    cfg = CFG.replace(num_layers=1)
    enc = _encoder(cfg, seed=3)
    w = enc.state_dict("official")
    with torch.no_grad():  # make the norms non-trivial
        for k in ("blocks.0.norm1.weight", "blocks.0.norm2.weight", "norm.weight"):
            w[k].copy_(torch.rand_like(w[k]) + 0.5)
    # long enough (160 > max_dist 128) for exact, log-spaced and clamped buckets; batch 1 padded
    L, n_real = 160, (160, 97)
    ids = torch.randint(3, cfg.vocab, (2, L))
    mask = torch.zeros(2, L, dtype=torch.long)
    for b, n in enumerate(n_real):
        mask[b, :n] = 1
    with torch.no_grad():
        got = enc.model(input_ids=ids, attention_mask=mask).last_hidden_state

    H, d = cfg.num_heads, cfg.dim_attn // cfg.num_heads
    x = w["token_embedding.weight"][ids]
    h = _rms(x, w["blocks.0.norm1.weight"], cfg.eps)
    q, k, v = (F.linear(h, w[f"blocks.0.attn.{n}.weight"]).view(2, L, H, d).transpose(1, 2) for n in "qkv")
    pos = torch.arange(L)
    bucket = _bucket(pos[None, :] - pos[:, None], cfg.num_buckets, cfg.max_dist)   # [q, k]
    assert bucket.max() == cfg.num_buckets - 1 and bucket.min() == 0
    bias = w["blocks.0.pos_embedding.embedding.weight"][bucket].permute(2, 0, 1)     # [H, q, k]
    scores = q @ k.transpose(-1, -2) + bias                                          # no 1/sqrt(d)
    scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, L, H * d)
    x = x + F.linear(a, w["blocks.0.attn.o.weight"])
    h = _rms(x, w["blocks.0.norm2.weight"], cfg.eps)
    gate = F.gelu(F.linear(h, w["blocks.0.ffn.gate.0.weight"]), approximate="tanh")
    x = x + F.linear(F.linear(h, w["blocks.0.ffn.fc1.weight"]) * gate, w["blocks.0.ffn.fc2.weight"])
    want = _rms(x, w["norm.weight"], cfg.eps)
    # the same math in another order (fused attention, library norms and GELU): ~16 chained roundings (2 norms' mean
    # of squares and rsqrt, q/k/v, scores + bias, softmax, values, o, gate, GELU, fc1, the product, fc2, the final norm,
    # the residuals), 2 ulps each of the largest residual value (6.0): 2.3e-5 (measured 1.4e-6); the exact GELU for
    # the tanh one is 6.6e-4 off, a bucket off by one 0.38
    for b, n in enumerate(n_real):
        diff = (got[b, :n] - want[b, :n]).abs().max().item()
        assert diff <= fp32_bound(got[b, :n], want[b, :n], x, terms=16, ulps=2), diff


# ----------------------------------------------------------------------------- prompts

def test_clean_prompt():
    assert clean_prompt("  a  red\n\tcube &amp;amp; a   ball  ") == "a red cube & a ball"
    assert clean_prompt("cafÃ© &lt;b&gt;") == "café <b>"  # ftfy repairs mojibake
    with pytest.raises(ValueError, match="string"):
        clean_prompt(None)


def test_encode_real_tokens_with_eos_and_batch_independence():
    enc = _encoder()
    ids = enc.tokenizer(clean_prompt(PROMPTS[0]))["input_ids"]
    assert ids[-1] == 1 == enc.tokenizer.eos_token_id and enc.tokenizer.pad_token_id == 0
    both = enc.encode(PROMPTS)
    assert both[0].shape == (len(ids), CFG.dim)
    assert both[1].shape[0] > both[0].shape[0]
    alone = enc.encode(PROMPTS[0])[0]  # no padding at all
    # batch 2 padded to the longer prompt vs batch 1 unpadded: other shapes, so other kernels may round differently
    # (equal here); 2 layers of ~8 chained reductions, 2 ulps each of the largest value (3.3): 1.3e-5; attending to
    # the padding moves the values by 1.35
    assert (alone - both[0]).abs().max().item() <= fp32_bound(alone, terms=16, ulps=2)
    assert enc.encode("  A red   cube bounces on the table.")[0].shape == alone.shape  # cleaned first


def test_truncation_warns_with_dropped_count():
    enc = _encoder(CFG.replace(text_len=16))
    prompt = " ".join(["red cube"] * 20)                      # 40 words -> 40 pieces + EOS
    full = len(enc.tokenizer(prompt)["input_ids"])
    with pytest.warns(UserWarning, match=f"last {full - 16} tokens are dropped"):
        ids, mask = enc.tokenize([prompt, "blue"])
    assert ids.shape == (2, 16) and ids[0, -1] == 1 and mask[0].all()
    assert mask[1].sum() == len(enc.tokenizer("blue")["input_ids"]) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.tokenize(["a short prompt"])
    with pytest.warns(UserWarning):
        assert enc.encode(prompt)[0].shape == (16, CFG.dim)


def test_token_id_beyond_vocab_is_a_clear_error():
    enc = _encoder(TINY_TEXT_ENCODER)  # vocab 100 < the tokenizer's 1000
    with pytest.raises(ValueError, match="vocab"):
        enc.encode("a golden spiral")


# ----------------------------------------------------------------------------- cache, release

def test_cache_hit_skips_the_model(tmp_path, monkeypatch):
    enc = _encoder(cache_dir=tmp_path)
    first = enc.encode(PROMPTS)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2

    def boom(*a, **k):
        raise AssertionError("model called on a cache hit")
    monkeypatch.setattr(enc.model, "forward", boom)
    again = enc.encode([PROMPTS[1], "  " + PROMPTS[0]])       # same cleaned prompts
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0])
    with pytest.raises(AssertionError, match="cache hit"):
        enc.encode("a new prompt")

    # released encoders still serve cached prompts
    enc.release()
    assert enc.released and torch.equal(enc.encode(PROMPTS[0])[0], first[0])
    with pytest.raises(RuntimeError, match="released"):
        enc.encode("another new prompt")

    # other weights or another dtype never hit this cache
    other = _encoder(seed=5, cache_dir=tmp_path).encode(PROMPTS[0])[0]
    assert not torch.equal(other, first[0])
    assert len(list(tmp_path.rglob("*.safetensors"))) == 3


def test_cache_key_uses_file_fingerprint(tmp_path):
    _encoder(seed=2).save_pretrained(tmp_path / "ckpt")
    enc = TextEncoder.from_pretrained(tmp_path / "ckpt", cache_dir=tmp_path / "cache")
    a = enc.encode(PROMPTS[0])[0]
    enc2 = TextEncoder.from_pretrained(tmp_path / "ckpt", cache_dir=tmp_path / "cache")
    assert enc2._cache_key(PROMPTS[0]) == enc._cache_key(PROMPTS[0])
    enc2.release()
    assert torch.equal(enc2.encode(PROMPTS[0])[0], a)


def test_cache_env_var(monkeypatch, tmp_path):
    monkeypatch.delenv(te.CACHE_ENV, raising=False)
    assert te.default_cache_dir() is None and _encoder().cache_dir is None
    monkeypatch.setenv(te.CACHE_ENV, "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert te.default_cache_dir() == tmp_path / "xdg" / "openwan" / "text"
    monkeypatch.setenv(te.CACHE_ENV, str(tmp_path / "mine"))
    assert _encoder().cache_dir == tmp_path / "mine" / "text"
    assert _encoder(cache_dir=False).cache_dir is None
    monkeypatch.setenv(te.CACHE_ENV, "0")
    assert te.default_cache_dir() is None


# ----------------------------------------------------------------------------- errors

def test_missing_tokenizer_is_named(tmp_path):
    _encoder().save_pretrained(tmp_path / "ckpt")
    import shutil
    shutil.rmtree(tmp_path / "ckpt" / "google")
    with pytest.raises(CheckpointError, match=r"google/umt5-xxl"):
        TextEncoder.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        TextEncoder(CFG, tmp_path / "empty")


def test_bad_paths(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        TextEncoder.from_pretrained(tmp_path / "nope")
    (tmp_path / "dir").mkdir()
    with pytest.raises(CheckpointError, match="models_t5_umt5-xxl-enc-bf16.pth"):
        TextEncoder.from_pretrained(tmp_path / "dir")
    (tmp_path / "dit_only").mkdir()  # an official dir without the T5 file: its config.json is the DiT's
    (tmp_path / "dit_only" / "config.json").write_text(json.dumps({"model_type": "t2v", "dim": 1536}))
    with pytest.raises(CheckpointError, match="models_t5_umt5-xxl-enc-bf16.pth"):
        TextEncoder.from_pretrained(tmp_path / "dit_only")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pth"):
        TextEncoder.from_pretrained(tmp_path / "junk.pth")


def test_tiny_tokenizer_asset():
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER_DIR), local_files_only=True)
    assert len(tok) == TINY_TOKENIZER_VOCAB
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    pieces = tok.convert_ids_to_tokens(tok("a red cube rotating slowly")["input_ids"])
    assert pieces == ["\u2581a", "\u2581red", "\u2581cube", "\u2581rotating", "\u2581slowly", "</s>"]
    assert sum(f.stat().st_size for f in TINY_TOKENIZER_DIR.iterdir()) < 300_000


def test_default_config_is_umt5_xxl():
    hf = te.to_hf_config(TextEncoderConfig())
    assert (hf.vocab_size, hf.d_model, hf.d_kv, hf.d_ff, hf.num_heads, hf.num_layers) == \
        (256384, 4096, 64, 10240, 64, 24)
    assert hf.feed_forward_proj == "gated-gelu" and hf.dense_act_fn == "gelu_new"
    assert (hf.relative_attention_num_buckets, hf.relative_attention_max_distance) == (32, 128)
    assert te.from_hf_config(hf) == TextEncoderConfig()


# ----------------------------------------------------------------------------- openwan's own umT5 network

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_own_umt5_equals_transformers(dtype):
    """openwan's UMT5Encoder runs transformers' UMT5EncoderModel (the reference) op for op: same
    weights in, the same bits out, with padding and with distances past max_dist (log and clamped buckets)."""
    from transformers import UMT5EncoderModel
    from openwan.models.umt5 import UMT5Encoder
    for cfg in (CFG, CFG.replace(max_dist=20, num_layers=3)):
        torch.manual_seed(0)
        hf = UMT5EncoderModel(te.to_hf_config(cfg)).eval().to(dtype)
        ours = UMT5Encoder(cfg).eval()
        ours.load_state_dict(hf.state_dict(), strict=True)
        ours.to(dtype)
        assert list(ours.state_dict()) == list(hf.state_dict())   # the same names, in the same order
        ids = torch.randint(3, cfg.vocab, (3, 160))
        mask = torch.zeros(3, 160, dtype=torch.long)
        for b, n in enumerate((160, 97, 5)):
            mask[b, :n] = 1
        with torch.no_grad():
            for i, m in ((ids, mask), (ids[:2, :30], torch.ones(2, 30, dtype=torch.long))):
                want = hf(input_ids=i, attention_mask=m).last_hidden_state
                got = ours(input_ids=i, attention_mask=m).last_hidden_state
                assert got.dtype == want.dtype and torch.equal(got, want)


def test_plain_tokenizer_equals_transformers():
    """The shipped tiny tokenizer read by `tokenizers` directly gives transformers' ids and masks."""
    from transformers import AutoTokenizer
    from openwan.models.tokenizer import FastTokenizer
    ours = te.load_tokenizer(TINY_TOKENIZER_DIR)
    assert isinstance(ours, FastTokenizer)
    ref = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER_DIR), local_files_only=True)
    assert len(ours) == len(ref)
    assert (ours.pad_token_id, ours.eos_token_id, ours.unk_token_id) == \
        (ref.pad_token_id, ref.eos_token_id, ref.unk_token_id)
    texts = PROMPTS + ["", "Ünïcödé ½ — ok? 4k", " ".join(["red cube"] * 300), "x"]
    assert ours(texts[0])["input_ids"] == ref(texts[0])["input_ids"]
    for kw in (dict(truncation=False), dict(truncation=True, max_length=512, padding="longest"),
               dict(truncation=True, max_length=7, padding="longest")):
        a = ours(texts, add_special_tokens=True, return_attention_mask=True, return_tensors="pt", **kw) \
            if "padding" in kw else ours(texts, add_special_tokens=True, **kw)
        b = ref(texts, add_special_tokens=True, return_attention_mask=True, return_tensors="pt", **kw) \
            if "padding" in kw else ref(texts, add_special_tokens=True, **kw)
        for k in ("input_ids", "attention_mask"):
            x, y = a[k], b[k]
            assert (x.tolist() if torch.is_tensor(x) else x) == (y.tolist() if torch.is_tensor(y) else y), (kw, k)


def test_demo_generation_imports_no_transformers():
    """The demo's whole generate path (load, encode, denoise, decode) runs without importing transformers,
    torch._dynamo or sympy: importing them is seconds of the command's start-up."""
    import subprocess
    import sys
    code = ("import sys\n"
            "from openwan.pipelines import load_pipeline\n"
            "pipe = load_pipeline('demo', progress=False)\n"
            "pipe('a red circle moving to the right', sample_steps=2, seed=0)\n"
            "bad = sorted({m.split('.')[0] if m.split('.')[0] != 'torch' else m for m in sys.modules\n"
            "              if m.split('.')[0] in ('transformers', 'sympy') or m == 'torch._dynamo'})\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_clean_prompt_skips_ftfy_only_where_it_is_a_no_op():
    """Printable ASCII without "&" skips ftfy (its import is ~50 ms of the demo's start-up): ftfy.fix_text
    returns such text unchanged, checked on random strings of exactly those characters."""
    import random

    import ftfy
    rng = random.Random(0)
    chars = [chr(c) for c in range(0x20, 0x7F) if chr(c) != "&"]
    for _ in range(3000):
        s = "".join(rng.choice(chars) for _ in range(rng.randint(0, 80)))
        assert te._PLAIN.fullmatch(s) and ftfy.fix_text(s) == s
    for s in ("a &amp;amp; b", "caf\u00c3\u00a9", "tab\there", "\x1b[31mred"):   # these still go through ftfy
        assert not te._PLAIN.fullmatch(s)
    assert clean_prompt("a &amp;amp; b") == "a & b" and clean_prompt("caf\u00c3\u00a9") == "caf\u00e9"
