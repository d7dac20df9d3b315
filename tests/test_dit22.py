"""The Wan 2.2 DiTs: per-token timesteps, golden vectors of the Wan 2.2 reference, configs, diffusers parity."""
import json
from pathlib import Path

import pytest
import torch
from bounds import EPS, fp32_bound
from safetensors.torch import load_file

from openwan.configs import DiTConfig
from openwan.models.dit import WanModel

REF22 = Path(__file__).resolve().parents[1].parent / "shared" / "reference22"


def tiny22(model_type="ti2v", **kw):
    base = dict(model_type=model_type, dim=48, ffn_dim=64, num_heads=2, num_layers=2, text_dim=32,
                in_dim={"ti2v": 48, "i2v": 36}.get(model_type, 16), out_dim=48 if model_type == "ti2v" else 16)
    if model_type == "i2v":
        base["clip_input"] = False
    base.update(kw)
    return DiTConfig(**base)


def rand_model(cfg, seed=0, std=0.2):
    m = WanModel(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return m


def ulp_bound(ref: torch.Tensor, ulps: int = 16) -> float:
    """16 fp32 ulps of the largest output: the tiny DiTs chain ~8 fp32 reductions (2 blocks x self-attention,
    cross-attention, FFN, plus the head) whose rounding depends on the CPU's SIMD width and the matmul shape;
    a few ulps each. For the golden outputs (max |v| ~ 5) this is 9e-6, inside reference22's stated 1e-5."""
    return fp32_bound(ref, ulps=ulps)


# --------------------------------------------------------------------------- golden vectors (Wan 2.2 reference)

def golden(name):
    if not REF22.is_dir():
        pytest.skip(f"Wan 2.2 golden vectors not found at {REF22}")
    meta = json.loads((REF22 / "README.json").read_text())[name]
    sd = load_file(str(REF22 / f"{name}.safetensors"))
    cfg = meta["config"]
    # Wan 2.2's i2v experts take no CLIP input (no img_emb): the loader reads that from the keys
    cfg = DiTConfig.from_dict({**cfg, "clip_input": False} if cfg["model_type"] == "i2v" else cfg)
    model = WanModel(cfg).eval()
    model.load_state_dict({k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}, strict=True)
    return model, sd


@pytest.mark.parametrize("name", ["dit_ti2v", "dit_t2v22", "dit_i2v22"])
def test_golden_vectors_one_timestep(name):
    model, sd = golden(name)
    kw = {"y": sd["in.y"][None]} if "in.y" in sd else {}
    with torch.no_grad():
        for t in (999, 500, 3):
            ref = sd[f"out.t{t}"]
            out = model(sd["in.x"][None], torch.tensor([t]), sd["in.context"][None], **kw)[0]
            assert out.shape == ref.shape
            assert (out - ref).abs().max().item() <= ulp_bound(ref), (name, t)


@pytest.mark.parametrize("case,tokens", [("ti2v_t999", "tokens_t999"), ("ti2v_t500", "tokens_t500"),
                                         ("ti2v_pad_t500", "tokens_pad_t500"), ("tokens_random", "tokens_random")])
def test_golden_vectors_per_token_timesteps(case, tokens):
    model, sd = golden("dit_ti2v")
    t = sd[f"in.{tokens}"][None]                  # [1, 18] (the padded case: [1, 21], padding t = 500)
    assert t.shape[1] >= 18 and len(t.unique()) > 1
    ref = sd[f"out.{case}"]
    with torch.no_grad():
        out = model(sd["in.x"][None], t, sd["in.context"][None])[0]
    assert (out - ref).abs().max().item() <= ulp_bound(ref), case
    if case == "ti2v_t500":  # frame-0 tokens at t=0 really change the output (the path is not ignored)
        assert (out - sd["out.t500"]).abs().max().item() > 1e3 * ulp_bound(ref)


# --------------------------------------------------------------------------- per-token timestep API

def test_per_token_all_equal_is_exactly_one_per_sample():
    cfg = tiny22()
    m = rand_model(cfg)
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(2, 48, 2, 4, 6, generator=g), torch.randn(2, 7, 32, generator=g)
    L = 2 * 2 * 3
    with torch.no_grad():
        one = m(x, torch.tensor([700, 300]), ctx)
        per_token = m(x, torch.tensor([[700] * L, [300] * L]), ctx)
        one1 = m(x[:1], torch.tensor([700]), ctx[:1])
        padded = m(x[:1], torch.full((1, L + 5), 700), ctx[:1])   # positions past L are padding: ignored
    assert torch.equal(one, per_token)
    assert torch.equal(one1, padded)


def test_per_token_training_path_equals_inference_and_its_gradients():
    """With gradients on, a block makes its six per-token modulations in one add (their backward is one
    stack, not a zero-filled e0-sized gradient per select); the values are the same sums as inference's
    lazy ones, so the outputs are equal bit for bit, and the gradients equal those of the select form."""
    cfg = tiny22()
    m = rand_model(cfg)
    g = torch.Generator().manual_seed(3)
    x, ctx = torch.randn(2, 48, 2, 4, 6, generator=g), torch.randn(2, 7, 32, generator=g)
    t = torch.tensor([[0] * 6 + [800] * 6, [300] * 12])
    with torch.no_grad():
        lazy = m(x, t, ctx)
    out = m(x, t, ctx)
    assert torch.equal(out, lazy)
    w = torch.randn(out.shape, generator=g)
    (out * w).sum().backward()
    fused = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad(set_to_none=True)

    from openwan.models import dit_layers

    def select_form(self, x, e0, context, seq_lens, rope, ctx_bias=None, kv_slot=None):
        mm = self.modulation.float()

        def mod(i):
            return mm[:, None, i] + e0[:, :, i]
        y = self.self_attn(dit_layers.modulate(self.norm1(x), mod(0), mod(1)), seq_lens, rope)
        x = torch.addcmul(x, y.float(), mod(2))
        x = x + self.cross_attn(self.norm3(x).float(), context, ctx_bias, kv_slot).float()
        y = self.ffn(dit_layers.modulate(self.norm2(x), mod(3), mod(4)))
        return torch.addcmul(x, y.float(), mod(5))
    orig = dit_layers.WanBlock.forward
    dit_layers.WanBlock.forward = select_form
    try:
        out2 = m(x, t, ctx)
        (out2 * w).sum().backward()
    finally:
        dit_layers.WanBlock.forward = orig
    assert torch.equal(out2, out)
    for n, p in m.named_parameters():
        if n in fused:   # only the modulations' gradients differ: each a sum over the B*L = 24 tokens, in another
            # order (one sum over the stacked six vs one per select); <= 24 eps of the terms' sum, 64 eps of
            # the largest gradient leaves room for terms ~2.7x it (observed: 1% of this bound)
            bound = 64 * EPS * (fused[n].abs().max().item() + 1e-30)
            assert (p.grad - fused[n]).abs().max().item() <= bound, n


def test_per_token_batched_equals_separate():
    """Batched CFG with per-token t: each sample uses its own row (not the reference's batch-1 widening)."""
    cfg = tiny22()
    m = rand_model(cfg)
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(48, 2, 4, 6, generator=g), torch.randn(48, 1, 2, 4, generator=g)]
    ctx = [torch.randn(7, 32, generator=g), torch.randn(4, 32, generator=g)]
    t = torch.tensor([[0] * 6 + [800] * 6, [0] * 2 + [200] * 10])   # frame-0 tokens at 0; row 2 has 2 real tokens
    with torch.no_grad():
        both = m(xs, t, ctx)
        for i, n in enumerate((12, 2)):
            single = m([xs[i]], t[i:i + 1, :n], [ctx[i]])[0]
            assert both[i].shape == xs[i].shape
            assert (both[i] - single).abs().max().item() <= ulp_bound(single)


def test_bad_timestep_shapes_are_named():
    m = rand_model(tiny22())
    x, ctx = torch.randn(1, 48, 2, 4, 6), torch.randn(1, 7, 32)
    for t in (torch.zeros(1, 11), torch.zeros(3), torch.zeros(1, 12, 1)):
        with pytest.raises(ValueError, match=r"timesteps t must be .*L >= 12 tokens"):
            m(x, t, ctx)


# --------------------------------------------------------------------------- sequence parallel

def _sp_worker(rank, world, port, out_dir):
    import os
    import torch.distributed as dist
    from openwan.parallel import enable_sequence_parallel, set_sequence_parallel
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        m = rand_model(tiny22())
        g = torch.Generator().manual_seed(3)
        x, ctx = torch.randn(2, 48, 3, 2, 6, generator=g), torch.randn(2, 7, 32, generator=g)   # 9 tokens: padded
        t = torch.tensor([[0] * 3 + [900] * 6, list(range(0, 900, 100))])
        with torch.no_grad():
            ref = m(x, t, ctx)
            enable_sequence_parallel(m)
            got = m(x, t, ctx)
            set_sequence_parallel(m, None)
        torch.save((ref, got), os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_sequence_parallel_per_token_timesteps(tmp_path):
    """Per-token e / e0 are split with the tokens: 2 processes give the one-process output."""
    import torch.multiprocessing as mp

    from openwan.runtime import free_port
    mp.start_processes(_sp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    (ref, got0), (_, got1) = torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt")
    assert torch.equal(got0, got1)
    assert (got0 - ref).abs().max().item() <= ulp_bound(ref)


# --------------------------------------------------------------------------- Wan 2.2 variants (configs as data)

def test_wan22_variants_sampling_defaults():
    """WAN22_REFERENCE.md section 2, as data the pipelines read."""
    from openwan.configs import NEGATIVE_PROMPT, SIZES_14B, WAN22_VARIANTS
    t2v, i2v, ti2v = (WAN22_VARIANTS[n] for n in ("t2v-A14B", "i2v-A14B", "ti2v-5B"))
    assert (t2v.sample.steps, t2v.sample.shift, t2v.sample.boundary, t2v.sample.guide_scales) == (40, 12.0, 0.875,
                                                                                                  (3.0, 4.0))
    assert (i2v.sample.steps, i2v.sample.shift, i2v.sample.boundary, i2v.sample.guide_scales) == (40, 5.0, 0.9,
                                                                                                  (3.5, 3.5))
    assert (ti2v.sample.steps, ti2v.sample.shift, ti2v.sample.guide_scale, ti2v.sample.boundary) == (50, 5.0, 5.0, None)
    assert (ti2v.sample.fps, ti2v.sample.frame_num, ti2v.sample.sizes, ti2v.sample.size) == \
        (24, 121, ("1280*704", "704*1280"), "1280*704")
    for v in (t2v, i2v):
        assert (v.sample.fps, v.sample.frame_num, v.sample.sizes) == (16, 81, SIZES_14B)
        assert v.files["dit_high"] == "high_noise_model" and v.files["dit_low"] == "low_noise_model"
        assert v.files["vae"] == "Wan2.1_VAE.pth" and v.vae.z_dim == 16
    for v in (t2v, i2v, ti2v):
        assert v.sample.negative_prompt == NEGATIVE_PROMPT and v.image_encoder is None and "clip" not in v.files
    assert ti2v.files["vae"] == "Wan2.2_VAE.pth" and ti2v.dit.in_dim == ti2v.dit.out_dim == 48
    # the expert switch rule: t >= boundary x 1000 -> the high-noise expert's scale (reference tuple: low, high)
    assert [t2v.sample.guide_scale_at(t) for t in (999, 875, 874.9, 3)] == [4.0, 4.0, 3.0, 3.0]
    assert ti2v.sample.guide_scale_at(999) == 5.0


def official_keys(dim, ffn, in_dim, out_dim, layers):
    """The Wan 2.2 official key set (WAN22_REFERENCE.md section 4: the 2.1 t2v keys, new shapes)."""
    s = {"patch_embedding.weight": (dim, in_dim, 1, 2, 2), "patch_embedding.bias": (dim,),
         "text_embedding.0.weight": (dim, 4096), "text_embedding.0.bias": (dim,),
         "text_embedding.2.weight": (dim, dim), "text_embedding.2.bias": (dim,),
         "time_embedding.0.weight": (dim, 256), "time_embedding.0.bias": (dim,),
         "time_embedding.2.weight": (dim, dim), "time_embedding.2.bias": (dim,),
         "time_projection.1.weight": (6 * dim, dim), "time_projection.1.bias": (6 * dim,),
         "head.modulation": (1, 2, dim), "head.head.weight": (4 * out_dim, dim), "head.head.bias": (4 * out_dim,)}
    for i in range(layers):
        b = f"blocks.{i}."
        s.update({b + "modulation": (1, 6, dim), b + "norm3.weight": (dim,), b + "norm3.bias": (dim,),
                  b + "ffn.0.weight": (ffn, dim), b + "ffn.0.bias": (ffn,), b + "ffn.2.weight": (dim, ffn),
                  b + "ffn.2.bias": (dim,)})
        for a in ("self_attn", "cross_attn"):
            for p in "qkvo":
                s[f"{b}{a}.{p}.weight"], s[f"{b}{a}.{p}.bias"] = (dim, dim), (dim,)
            s[f"{b}{a}.norm_q.weight"] = s[f"{b}{a}.norm_k.weight"] = (dim,)
    return s


@pytest.mark.parametrize("name,count", [("t2v-A14B", 1.4288e10), ("i2v-A14B", 1.4288e10), ("ti2v-5B", 5.0e9)])
def test_wan22_variant_keys_and_counts(name, count):
    from openwan.checkpoints import infer_dit_config, matching_variants
    from openwan.configs import WAN22_VARIANTS
    cfg = WAN22_VARIANTS[name].dit
    with torch.device("meta"):
        m = WanModel(cfg)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == official_keys(cfg.dim, cfg.ffn_dim, cfg.in_dim, cfg.out_dim, cfg.num_layers)
    n = sum(v.numel() for v in m.parameters())
    assert abs(n / count - 1) < 1e-3, n    # 14B per expert (as Wan 2.1 14B); TI2V-5B: 4.9998e9
    assert infer_dit_config(shapes) == cfg and name in matching_variants(cfg)


# --------------------------------------------------------------------------- loading Wan 2.2 folders

def test_load_wan22_official_and_diffusers_layouts(tmp_path):
    from openwan.checkpoints import save_safetensors, write_json
    cases = {"i2v": (tiny22("i2v"), {"y": torch.randn(1, 20, 2, 4, 6)}), "ti2v": (tiny22("ti2v"), {})}
    for kind, (cfg, kw) in cases.items():
        m = rand_model(cfg)
        x = torch.randn(1, cfg.in_dim - (20 if kw else 0), 2, 4, 6)
        ctx = torch.randn(1, 7, 32)
        with torch.no_grad():
            ref = m(x, torch.tensor([500]), ctx, **kw)
        # an official Wan 2.2 folder: its config.json names model_type only (no CLIP flag)
        off = tmp_path / kind / "high_noise_model"
        save_safetensors(m.state_dict(), off / "diffusion_pytorch_model.safetensors")
        write_json({k: v for k, v in cfg.to_dict().items() if k not in ("clip_input", "image_dim",
                                                                       "vace_layers", "vace_in_dim")},
                   off / "config.json")
        m.save_pretrained(tmp_path / kind / "dif" / "transformer", layout="diffusers")
        m.save_pretrained(tmp_path / kind / "ours")
        for p in (off, tmp_path / kind / "dif", tmp_path / kind / "ours",
                  off / "diffusion_pytorch_model.safetensors"):
            loaded = WanModel.from_pretrained(p, config=None if p.is_dir() else cfg)   # a file: config given
            assert loaded.config.model_type == kind and not loaded.config.has_image_input, p
            assert not hasattr(loaded, "img_emb")
            # the saved bits, in aligned memory (as the saved model's): the same kernels, the same output
            assert all(torch.equal(v, m.state_dict()[k]) for k, v in loaded.state_dict().items()), p
            assert all(v.data_ptr() % 64 == 0 for v in loaded.state_dict().values()), p
            with torch.no_grad():
                assert torch.equal(loaded(x, torch.tensor([500]), ctx, **kw), ref), p


# --------------------------------------------------------------------------- diffusers parity

@pytest.mark.parametrize("kind", ["ti2v", "i2v"])
def test_parity_with_diffusers_per_token(kind):
    """diffusers' WanTransformer3DModel (Wan 2.2: [B, L] timesteps for TI2V) on the same tiny weights, moved by
    diffusers' own converter; batched CFG with a different per-token t per sample."""
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    cfg = tiny22(kind)
    ours = rand_model(cfg, std=0.1)
    ref = WanTransformer3DModel(patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads,
                                attention_head_dim=cfg.head_dim, in_channels=cfg.in_dim, out_channels=cfg.out_dim,
                                text_dim=cfg.text_dim, freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim,
                                num_layers=cfg.num_layers, cross_attn_norm=cfg.cross_attn_norm, eps=cfg.eps).eval()
    ref.load_state_dict(convert_wan_transformer_to_diffusers(
        {f"model.diffusion_model.{k}": v for k, v in ours.state_dict().items()}), strict=True)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 48 if kind == "ti2v" else 16, 3, 4, 6, generator=g)       # 18 tokens per sample
    y = torch.randn(2, 20, 3, 4, 6, generator=g) if kind == "i2v" else None
    ctx = torch.randn(2, 7, 32, generator=g)
    ts = [torch.tensor([700, 300])]
    if kind == "ti2v":   # frame-0 tokens at 0 (TI2V image-to-video), and arbitrary values per token
        ts += [torch.tensor([[0] * 6 + [900] * 12, [0] * 6 + [400] * 12]),
               torch.randint(0, 1000, (2, 18), generator=g)]
    # diffusers builds the sinusoid and RoPE in fp32 (the reference: float64): switch ours to the same
    ours.sinusoid_dtype = ours.rope_dtype = torch.float32
    with torch.no_grad():
        for t in ts:
            o = ours(x, t, ctx, y=y)
            r = ref(hidden_states=x if y is None else torch.cat([x, y], 1), timestep=t,
                    encoder_hidden_states=torch.nn.functional.pad(ctx, (0, 0, 0, cfg.text_len - 7)),
                    return_dict=False)[0]
            assert (o - r).abs().max().item() <= ulp_bound(r), (kind, t)
