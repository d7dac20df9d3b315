"""LoRA: training hooks, the file formats (diffusers' loader as the reference), stacking, merge/unmerge."""
import copy

import pytest
import torch
from bounds import EPS, fp32_bound
from safetensors.torch import load_file, save_file

from openwan.checkpoints import CheckpointError
from openwan.configs import DiTConfig
from openwan.models.dit import WanModel
from openwan.training.lora import (add_lora, find_targets, load_lora, lora_parameters, lora_summary, merge_lora,
                                   remove_lora, save_lora, set_lora_strength, unmerge_lora)

ALL = ["q", "k", "v", "o", "ffn.0", "ffn.2"]


def tiny(**kw):
    return DiTConfig(**{**dict(dim=24, ffn_dim=32, num_heads=2, num_layers=2, text_dim=32), **kw})


def rand_model(cfg=None, seed=0):
    torch.manual_seed(seed)
    m = WanModel(cfg or tiny()).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m.requires_grad_(False)


def inputs(cfg, b=2, f=3, h=6, w=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 16, f, h, w, generator=g), torch.tensor([500, 200][:b]),
            torch.randn(b, 7, cfg.text_dim, generator=g))


def delta_terms(module, name="weight"):
    """sum |strength scale| |B| |A| over a layer's low-rank adapters: the magnitudes of the products its delta sums
    (a delta's rounding is relative to these; a full delta's is relative to itself)."""
    adapters = module.parametrizations[name][0].adapters.values()
    return sum(abs(a.scale * a.strength) * (a.B.abs() @ a.A.abs()) for a in adapters if hasattr(a, "B"))


def randomize_lora(model, seed=3, std=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * std)


def fwd(model, x, t, ctx):
    with torch.no_grad():
        return model(x, t, ctx)


# --------------------------------------------------------------------------- training side

def test_targets_and_zero_init():
    m = rand_model()
    names = find_targets(m, ["q", "ffn.0"])
    assert names == ["blocks.0.self_attn.q", "blocks.0.cross_attn.q", "blocks.0.ffn.0",
                     "blocks.1.self_attn.q", "blocks.1.cross_attn.q", "blocks.1.ffn.0"]
    assert find_targets(m, ["self_attn.o"]) == ["blocks.0.self_attn.o", "blocks.1.self_attn.o"]
    assert find_targets(m, ["blocks.1.*.v"]) == ["blocks.1.self_attn.v", "blocks.1.cross_attn.v"]
    assert find_targets(m, ["re:blocks\\.0\\.ffn\\.\\d"]) == ["blocks.0.ffn.0", "blocks.0.ffn.2"]
    with pytest.raises(ValueError, match="match no Linear"):
        find_targets(m, ["nonexistent"])

    cfg = m.config
    x, t, ctx = inputs(cfg)
    before = fwd(m, x, t, ctx)
    params = add_lora(m, rank=4, alpha=8, targets=ALL)
    assert len(params) == 2 * 20 and all(p.requires_grad for p in params)
    assert lora_summary(m) == {"default": {"layers": 20, "rank": 4, "strength": 1.0}}
    assert torch.equal(fwd(m, x, t, ctx), before)  # B = 0: the adapter starts as the identity

    # gradients reach A and B only; an optimizer step leaves the base weights untouched
    base = {k: v.clone() for k, v in m.state_dict().items() if "adapters" not in k}
    randomize_lora(m)
    out = m(x, t, ctx)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert all(p.grad is None for n, p in m.named_parameters() if "adapters" not in n)
    torch.optim.SGD(params, lr=0.1).step()
    after = {k: v for k, v in m.state_dict().items() if "adapters" not in k}
    assert all(torch.equal(base[k], after[k]) for k in base)


def test_effective_weight_is_hand_computed():
    m = rand_model()
    W = m.blocks[1].ffn[2].weight.clone()
    add_lora(m, rank=3, alpha=6, targets=["ffn.2"])
    randomize_lora(m)
    mod = m.blocks[1].ffn[2]
    a = mod.parametrizations.weight[0].adapters["default"]
    # W + s B A: both sides round the rank-3 sums and the add, 2 ulps each (both sides) of the terms' magnitudes
    # (|W|, s |B| |A|): 6e-7..1.3e-6 here; a wrong scale (alpha / rank) or strength is off by up to |B A| ~ 0.6
    for strength, scale in ((1.0, 2.0), (0.5, 1.0)):
        set_lora_strength(m, "default", strength)
        bound = fp32_bound(W, delta_terms(mod), terms=4, ulps=2)
        assert (mod.weight - (W + scale * a.B @ a.A)).abs().max().item() <= bound, strength


def _train_pass(m, x, t, ctx):
    """loss, grads of the LoRA parameters, and the tensors autograd saved for backward that are not
    the model's own parameters and have the shape of a LoRA'd weight (as (shape, bytes) pairs)."""
    own = {p.data_ptr() for p in m.parameters()}
    shapes = {tuple(mod.weight.shape) for mod in m.modules() if hasattr(mod, "parametrizations")}
    saved = {}

    def pack(tensor):
        if tensor.data_ptr() not in own and tuple(tensor.shape) in shapes:
            saved[tensor.data_ptr()] = (tuple(tensor.shape), tensor.numel() * tensor.element_size())
        return tensor

    for p in lora_parameters(m):
        p.grad = None
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = m(x, t, ctx).square().mean()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in lora_parameters(m)], sorted(saved.values())


def _rounding_spread(m, x, t, ctx, draws=3):
    """This machine's fp32 rounding noise of a training pass, measured: how far the loss and each LoRA gradient move
    when every LoRA'd weight moves by 1-2 ulps (a random sign per element), the largest move over ``draws`` draws plus
    one ulp of the value (as bounds.noise_floor). Such a change is of the size and at the place of the rounding that
    tells the factored and the merged-weight paths apart: W + s B A rounded (1/2 ulp per element), each layer's sums
    in another order (like 1-2 ulps of every weight, summed over the same terms). It also follows the gradients'
    cancellation (those of q / k behind a saturated softmax are 1e-5 of the others, their rounding is not)."""
    loss, grads, _ = _train_pass(m, x, t, ctx)
    loss_spread, grad_spread = 0.0, [0.0] * len(grads)
    for k in range(draws):
        moved = copy.deepcopy(m)
        g = torch.Generator().manual_seed(100 + k)
        with torch.no_grad():
            for mod in moved.modules():
                if hasattr(mod, "parametrizations"):
                    w = mod.parametrizations.weight.original
                    w.mul_(1 + EPS * (torch.randint(0, 2, w.shape, generator=g) * 2 - 1))
        loss_k, grads_k, _ = _train_pass(moved, x, t, ctx)
        loss_spread = max(loss_spread, abs(loss_k.item() - loss.item()))
        grad_spread = [max(s, (a - b).abs().max().item()) for s, a, b in zip(grad_spread, grads_k, grads)]
    return (loss_spread + EPS * abs(loss.item()),
            [s + EPS * g.abs().max().item() for s, g in zip(grad_spread, grads)])


def test_training_runs_lora_factored_without_adapted_weights(monkeypatch):
    """With gradients on, LoRA layers compute W x + s B (A x): same loss and gradients as the merged
    weight (W + s B A) x, but autograd keeps no full-size copy of the adapted weight per layer."""
    from openwan.training.lora import LoRAParametrization
    cfg = tiny(dim=64, ffn_dim=256, num_heads=4)
    m = rand_model(cfg)
    add_lora(m, rank=4, alpha=8, targets=ALL)
    randomize_lora(m)
    # a loaded full-matrix delta stacked on one trained layer goes through the factored path too
    D = torch.randn(256, 64, generator=torch.Generator().manual_seed(5)) * 0.05
    load_lora(m, {"diffusion_model.blocks.0.ffn.0.diff": D}, strength=0.5, name="extra")
    x, t, ctx = inputs(cfg)
    loss, grads, saved = _train_pass(m, x, t, ctx)
    # the factored and merged-weight paths differ by rounding only: by about as much as the loss and the gradients
    # move when every LoRA'd weight moves by an ulp or two (measured, see _rounding_spread: 7.9e-6 on the loss 34,
    # 6e-11..4.7e-6 on gradients of 1.4e-5..8.6), 8x that for the largest of one random field against another's
    # (2.1x seen); a LoRA left out of one path, or a wrong scale in its backward, moves the loss by O(1) and its
    # gradients by O(|gradient|)
    loss_spread, grad_spread = _rounding_spread(m, x, t, ctx)
    with torch.no_grad():
        assert abs(m(x, t, ctx).square().mean().item() - loss.item()) <= 8 * loss_spread
    # the only weight-sized tensor kept for backward is the full delta itself (for d/dx; F.linear
    # keeps it as its transpose view)
    assert saved == [((64, 256), 256 * 64 * 4)], saved

    monkeypatch.delattr(LoRAParametrization, "linear")  # back to the parametrization: adapted weights
    loss_p, grads_p, saved_p = _train_pass(m, x, t, ctx)
    assert abs(loss_p.item() - loss.item()) <= 8 * loss_spread
    for i, (g, gp, spread) in enumerate(zip(grads, grads_p, grad_spread)):
        assert (g - gp).abs().max().item() <= 8 * spread, i
    # ... while the parametrized path keeps the adapted weight of every LoRA'd layer whose input
    # needs a gradient: not cross-attention k / v (constant text context), nor block 0's self-attention
    # q / k / v (frozen patch embedding below them); 9 of the 16 attention layers and all 4 FFN layers
    assert sorted(saved_p) == sorted([((64, 64), 64 * 64 * 4)] * 9 + [((64, 256), 256 * 64 * 4)] * 2
                                   + [((256, 64), 256 * 64 * 4)] * 2), saved_p  # (transposed views)


# --------------------------------------------------------------------------- diffusers as the reference

def diffusers_transformer(cfg, official_sd):
    from diffusers import WanTransformer3DModel
    from openwan.checkpoints import dit_config_to_diffusers_json, dit_official_to_diffusers
    kw = {k: v for k, v in dit_config_to_diffusers_json(cfg).items() if not k.startswith("_")}
    ref = WanTransformer3DModel(**kw)
    ref.load_state_dict(dit_official_to_diffusers(official_sd), strict=True)
    return ref.eval()


def diffusers_fwd(ref, cfg, x, t, ctx):
    ctx = torch.nn.functional.pad(ctx, (0, 0, 0, cfg.text_len - ctx.shape[1]))
    with torch.no_grad():
        return ref(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]


@pytest.mark.parametrize("fmt", ["diffusers", "comfyui", "musubi"])
def test_saved_lora_loads_in_diffusers_with_the_same_effect(tmp_path, fmt):
    pytest.importorskip("peft")
    from diffusers.loaders import WanLoraLoaderMixin
    cfg = tiny()
    m = rand_model(cfg)
    ref = diffusers_transformer(cfg, m.state_dict())
    add_lora(m, rank=4, alpha=8, targets=ALL)  # musubi files need every block's q,k,v,o,ffn in diffusers
    randomize_lora(m)
    path = save_lora(m, tmp_path / f"lora_{fmt}.safetensors", format=fmt)
    x, t, ctx = inputs(cfg)
    m.sinusoid_dtype = m.rope_dtype = torch.float32  # diffusers' numerics (see test_dit)
    ours = fwd(m, x, t, ctx)
    base = diffusers_fwd(ref, cfg, x, t, ctx)

    sd = WanLoraLoaderMixin.lora_state_dict(str(path))  # diffusers' own format conversion
    assert len(sd) == 2 * 20
    ref.load_lora_adapter(sd, prefix="transformer", adapter_name="ours")
    theirs = diffusers_fwd(ref, cfg, x, t, ctx)
    assert (theirs - base).abs().max().item() > 1.0  # the LoRA changes the output a lot ...
    # ... the same way: 16 ulps of the largest output for two implementations of a tiny DiT forward (as
    # test_dit.forward_bound), as much again for the LoRA (W + s B A here, W x + s B (A x) in PEFT: two more rounded
    # sums in each adapted layer on the path): 2.9e-5 (|ours| 7.5), against the LoRA's 5.8
    assert (ours - theirs).abs().max().item() <= fp32_bound(ours, terms=16, ulps=2)

    # and our loader reads the file back to the same model
    m2 = rand_model(cfg)
    m2.sinusoid_dtype = m2.rope_dtype = torch.float32
    load_lora(m2, path)
    # equal bit for bit: the file holds A and B as they are (diffusers: B x 2, exact) and the scale alpha / rank = 2 is
    # a power of two, so both merged weights are W + 2 fl(B A) from the same kernels, and so are the outputs
    assert torch.equal(fwd(m2, x, t, ctx), ours)


# --------------------------------------------------------------------------- community formats

def _ab(rank, w, g):
    return torch.randn(rank, w.shape[1], generator=g) * 0.3, torch.randn(w.shape[0], rank, generator=g) * 0.3


def community_files(model, tmp_path):
    """The same LoRA (A, B, alpha 2 on rank 4) written in every format we read, plus expected deltas."""
    from openwan.checkpoints import dit_official_to_diffusers
    g = torch.Generator().manual_seed(7)
    mods = dict(model.named_modules())
    names = find_targets(model, ALL)
    ab = {n: _ab(4, mods[n].weight, g) for n in names}
    alpha = 2.0
    expected = {n: (alpha / 4) * B @ A for n, (A, B) in ab.items()}
    dmap = {n: next(iter(dit_official_to_diffusers({n + ".weight": 0})))[:-7] for n in names}
    files = {}

    def put(name, sd):
        files[name] = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(files[name]))

    # official / ComfyUI names, lora_down/lora_up + alpha
    put("comfy_down_up", {k: v for n, (A, B) in ab.items() for k, v in
                          ((f"diffusion_model.{n}.lora_down.weight", A), (f"diffusion_model.{n}.lora_up.weight", B),
                           (f"diffusion_model.{n}.alpha", torch.tensor(alpha)))})
    # official names, lora_A/lora_B + alpha (Comfy-Org repacks)
    put("comfy_A_B", {k: v for n, (A, B) in ab.items() for k, v in
                      ((f"diffusion_model.{n}.lora_A.weight", A), (f"diffusion_model.{n}.lora_B.weight", B),
                       (f"diffusion_model.{n}.alpha", torch.tensor(alpha)))})
    # ComfyUI full-model prefix
    put("comfy_model_prefix", {k: v for n, (A, B) in ab.items() for k, v in
                               ((f"model.diffusion_model.{n}.lora_down.weight", A),
                                (f"model.diffusion_model.{n}.lora_up.weight", B),
                                (f"model.diffusion_model.{n}.alpha", torch.tensor(alpha)))})
    # diffusers / PEFT: transformer.* diffusers names, no alpha (scale folded into B)
    put("diffusers_peft", {k: v for n, (A, B) in ab.items() for k, v in
                           ((f"transformer.{dmap[n]}.lora_A.weight", A),
                            (f"transformer.{dmap[n]}.lora_B.weight", B * (alpha / 4)))})
    # musubi-tuner: lora_unet_ + underscored official names
    put("musubi", {k: v for n, (A, B) in ab.items() for k, v in
                   ((f"lora_unet_{n.replace('.', '_')}.lora_down.weight", A),
                    (f"lora_unet_{n.replace('.', '_')}.lora_up.weight", B),
                    (f"lora_unet_{n.replace('.', '_')}.alpha", torch.tensor(alpha)))})
    return files, expected


def test_every_community_format_loads_with_the_same_deltas(tmp_path):
    m = rand_model()
    base = {n: mod.weight.clone() for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear)}
    files, expected = community_files(m, tmp_path)
    x, t, ctx = inputs(m.config)
    outs = []
    for name, f in files.items():
        key = load_lora(m, f, strength=0.5)
        mods = dict(m.named_modules())
        for n, d in expected.items():
            got = mods[n].weight - base[n]
            # the rank-4 sums, the add to W and the subtraction of W here, 2 ulps each (both sides) of |W| and
            # the products' terms (~1e-6); a format read with the wrong scale is off by up to |0.5 d| >= 0.15
            bound = fp32_bound(base[n], delta_terms(mods[n]), terms=6, ulps=2)
            assert (got - 0.5 * d).abs().max().item() <= bound, (name, n)
        outs.append(fwd(m, x, t, ctx))
        remove_lora(m, key)
        assert lora_summary(m) == {}
    # equal bit for bit: every file holds the same A and B (diffusers_peft: B x 0.5, exact), scale and strength are
    # powers of two (0.5, 0.5), so every weight is W + 0.25 fl(B A) from the same kernels, and so are the outputs
    for o in outs[1:]:
        assert torch.equal(o, outs[0])


def test_diff_and_bias_delta_keys(tmp_path):
    m = rand_model()
    W, b = m.head.head.weight.clone(), m.blocks[0].self_attn.q.bias.clone()
    D = torch.randn_like(W)
    db = torch.randn_like(b)
    load_lora(m, {"diffusion_model.head.head.diff": D, "diffusion_model.blocks.0.self_attn.q.diff_b": db}, strength=2.0)
    # 2 D is exact (a power of two), so each side is W + 2 D rounded once: equal bit for bit on any CPU
    assert torch.equal(m.head.head.weight, W + 2 * D)
    assert torch.equal(m.blocks[0].self_attn.q.bias, b + 2 * db)
    remove_lora(m)
    assert torch.equal(m.head.head.weight, W) and torch.equal(m.blocks[0].self_attn.q.bias, b)


def test_bad_lora_files_give_clear_errors(tmp_path):
    m = rand_model()
    A, B = torch.zeros(4, 24), torch.zeros(24, 4)
    with pytest.raises(CheckpointError, match=r"2 key\(s\) match no layer.*blocks\.0\.self_attn\.qq"):
        load_lora(m, {"diffusion_model.blocks.0.self_attn.qq.lora_down.weight": A,
                      "diffusion_model.blocks.0.self_attn.qq.lora_up.weight": B,
                      "diffusion_model.blocks.0.self_attn.q.lora_down.weight": A,
                      "diffusion_model.blocks.0.self_attn.q.lora_up.weight": B})
    with pytest.raises(CheckpointError, match="no layer.*blocks.7"):
        load_lora(m, {"diffusion_model.blocks.7.self_attn.q.lora_down.weight": A})
    with pytest.raises(CheckpointError, match="not its up/B partner"):
        load_lora(m, {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": A})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_lora(m, {"diffusion_model.blocks.0.ffn.0.lora_down.weight": A,
                      "diffusion_model.blocks.0.ffn.0.lora_up.weight": B})
    with pytest.raises(CheckpointError, match="DoRA"):
        load_lora(m, {"diffusion_model.blocks.0.self_attn.q.dora_scale": torch.ones(24)})
    assert lora_summary(m) == {}  # nothing half-attached


# --------------------------------------------------------------------------- stacking / merging

def test_stacking_two_loras_sums_their_deltas(tmp_path):
    m = rand_model()
    files, expected = community_files(m, tmp_path)
    base = {n: dict(m.named_modules())[n].weight.clone() for n in expected}
    # a second, different LoRA on a subset of layers
    g = torch.Generator().manual_seed(11)
    second, d2 = {}, {}
    for n in find_targets(m, ["ffn.0"]):
        A, B = _ab(2, base[n], g)
        second[f"diffusion_model.{n}.lora_down.weight"] = A
        second[f"diffusion_model.{n}.lora_up.weight"] = B
        d2[n] = B @ A  # no alpha: scale 1
    load_lora(m, files["musubi"], strength=0.7, name="style")
    load_lora(m, second, strength=-1.5, name="detail")
    assert set(lora_summary(m)) == {"style", "detail"}
    mods = dict(m.named_modules())
    # the rank-4 and rank-2 sums, the scalings and the two adds (in another order here), 2 ulps each (both sides)
    # of |W| and the products' terms (1e-6..2.7e-6); a lost or wrongly scaled LoRA is off by ~|delta| ~ 0.2
    for n in expected:
        want = base[n] + 0.7 * expected[n] + (-1.5 * d2[n] if n in d2 else 0)
        bound = fp32_bound(base[n], delta_terms(mods[n]), terms=8, ulps=2)
        assert (mods[n].weight - want).abs().max().item() <= bound, n
    remove_lora(m, "style")
    for n in expected:
        want = base[n] + (-1.5 * d2[n] if n in d2 else 0)
        bound = fp32_bound(base[n], delta_terms(mods[n]) if n in d2 else 0, terms=4, ulps=2)
        assert (mods[n].weight - want).abs().max().item() <= bound, n


def test_merge_and_unmerge_are_exact(tmp_path):
    m = rand_model()
    files, _ = community_files(m, tmp_path)
    x, t, ctx = inputs(m.config)
    original = {k: v.clone() for k, v in m.state_dict().items()}
    plain = fwd(m, x, t, ctx)
    load_lora(m, files["comfy_down_up"], strength=0.8)
    load_lora(m, files["diffusers_peft"], strength=0.3)
    dynamic = fwd(m, x, t, ctx)
    assert (dynamic - plain).abs().max().item() > 0.1

    assert merge_lora(m) == 20
    assert set(m.state_dict()) == set(original)  # plain weights again: no parametrization keys
    assert torch.equal(fwd(m, x, t, ctx), dynamic)  # merged weight = the on-the-fly weight, bit for bit
    with pytest.raises(RuntimeError, match="unmerge_lora"):
        load_lora(m, files["musubi"])

    unmerge_lora(m)
    assert torch.equal(fwd(m, x, t, ctx), dynamic)
    remove_lora(m)
    sd = m.state_dict()
    assert set(sd) == set(original) and all(torch.equal(sd[k], original[k]) for k in sd)
    assert torch.equal(fwd(m, x, t, ctx), plain)

    # without keeping the originals, unmerge subtracts: exact up to rounding
    load_lora(m, files["comfy_down_up"])
    merge_lora(m, keep_original=False)
    merged = {k: v.clone() for k, v in m.state_dict().items()}
    unmerge_lora(m)
    remove_lora(m)
    # unmerge recomputes the same delta d (same kernels, same A and B), so W' = fl(fl(W + d) - d): two correctly
    # rounded fp32 operations, <= 1/2 ulp of |W + d| plus 1/2 ulp of |W| on any CPU (<= 1 ulp of the larger:
    # 3.6e-8..1.1e-7 here); an unmerge that forgets the scale or an adapter leaves a delta of >= 0.3 in every weight
    for k in original:
        assert (m.state_dict()[k] - original[k]).abs().max().item() <= fp32_bound(merged[k], original[k], ulps=1), k


def test_bf16_weights_merge_like_on_the_fly(tmp_path):
    m = rand_model().to(torch.bfloat16)
    files, _ = community_files(m, tmp_path)
    load_lora(m, files["comfy_down_up"])
    w_dyn = m.blocks[0].ffn[0].weight.clone()
    assert w_dyn.dtype == torch.bfloat16
    merge_lora(m)
    assert torch.equal(m.blocks[0].ffn[0].weight, w_dyn)


def test_saved_comfyui_file_roundtrip_keys(tmp_path):
    m = rand_model()
    add_lora(m, rank=2, alpha=1, targets=["self_attn.q", "ffn.2"])
    randomize_lora(m)
    p = save_lora(m, tmp_path / "c.safetensors", format="comfyui")
    sd = load_file(str(p))
    assert set(sd) == {f"diffusion_model.blocks.{i}.{n}.{s}" for i in (0, 1) for n in ("self_attn.q", "ffn.2")
                       for s in ("lora_down.weight", "lora_up.weight", "alpha")}
    assert sd["diffusion_model.blocks.0.ffn.2.alpha"].item() == 1.0
    m2 = rand_model()
    load_lora(m2, p)
    # the same W + 0.5 B A from the same W, A, B (the file stores them as they are): equal but for the rank-2 sums'
    # and the add's rounding (2 ulps each, both sides, of |W| and the terms: 4.2e-7); a wrong alpha is off by ~0.3
    got, want = m2.blocks[1].ffn[2].weight, m.blocks[1].ffn[2].weight
    bound = fp32_bound(want, delta_terms(m.blocks[1].ffn[2]), terms=3, ulps=2)
    assert (got - want).abs().max().item() <= bound


# --------------------------------------------------------------------------- distill LoRAs (LightX2V layout)

def lightx2v_file(model, g, rank=4, alpha=2.0):
    """A distill LoRA in the key layout of the LightX2V / CausVid / Self-Forcing files: diffusion_model.* names,
    lora_down / lora_up + alpha on every Linear, full deltas ``diff`` (norm weights, the patch embedding),
    ``diff_b`` (every bias) and ``diff_m`` (each block's and the head's modulation)."""
    sd = {}
    for name, mod in model.named_modules():
        p = f"diffusion_model.{name}"
        if isinstance(mod, torch.nn.Linear):
            A, B = _ab(rank, mod.weight, g)
            sd.update({f"{p}.lora_down.weight": A, f"{p}.lora_up.weight": B, f"{p}.alpha": torch.tensor(alpha)})
        elif getattr(mod, "weight", None) is not None and name:  # norms with a weight, the patch embedding
            sd[f"{p}.diff"] = torch.randn(mod.weight.shape, generator=g) * 0.1
        if getattr(mod, "bias", None) is not None and name:
            sd[f"{p}.diff_b"] = torch.randn(mod.bias.shape, generator=g) * 0.1
        if isinstance(getattr(mod, "modulation", None), torch.nn.Parameter):
            sd[f"{p}.diff_m"] = torch.randn(mod.modulation.shape, generator=g) * 0.1
    return sd


def by_hand(state, sd, strength):
    """Each delta of ``sd`` applied to a plain state dict (official keys) by hand."""
    out = {k: v.clone() for k, v in state.items()}
    for key, v in sd.items():
        mod = key[len("diffusion_model."):].rsplit(".", 1)[0]
        if key.endswith(".lora_down.weight"):
            mod = key[len("diffusion_model."):-len(".lora_down.weight")]
            B = sd[f"diffusion_model.{mod}.lora_up.weight"]
            scale = sd[f"diffusion_model.{mod}.alpha"].item() / v.shape[0]
            out[f"{mod}.weight"] = out[f"{mod}.weight"] + strength * scale * (B @ v)
        elif key.endswith(".diff"):
            out[f"{mod}.weight"] = out[f"{mod}.weight"] + strength * v
        elif key.endswith(".diff_b"):
            out[f"{mod}.bias"] = out[f"{mod}.bias"] + strength * v
        elif key.endswith(".diff_m"):
            out[f"{mod}.modulation"] = out[f"{mod}.modulation"] + strength * v
    return out


def test_lightx2v_layout_with_diff_diff_b_diff_m_gives_the_hand_applied_weights(tmp_path):
    m = rand_model()
    m.blocks[0].ffn[0].__class__ = type("LinearSubclass", (torch.nn.Linear,), {})  # Linear subclasses count too
    assert "blocks.0.ffn.0" in find_targets(m, ["ffn.0"])
    sd = lightx2v_file(m, torch.Generator().manual_seed(5))
    kinds = {k.rsplit(".", 1)[-1] for k in sd}
    assert {"diff", "diff_b", "diff_m", "alpha"} <= kinds
    assert "diffusion_model.blocks.1.diff_m" in sd and "diffusion_model.blocks.0.self_attn.norm_q.diff" in sd
    path = tmp_path / "lightx2v.safetensors"
    save_file(sd, str(path))
    original = {k: v.clone() for k, v in m.state_dict().items()}
    want = by_hand(original, sd, 0.7)
    changed = [k for k in original if not torch.equal(want[k], original[k])]
    assert len(changed) == len(original)  # every parameter of the tiny model has a delta in the file

    load_lora(m, path, strength=0.7)
    x, t, ctx = inputs(m.config)
    dynamic = fwd(m, x, t, ctx)
    merge_lora(m)
    got = m.state_dict()
    assert set(got) == set(want)
    # the same deltas applied by hand to |W| and |A|, |B|, |diffs|: the magnitudes of the terms each weight sums
    terms = by_hand({k: v.abs() for k, v in original.items()}, {k: v.abs() for k, v in sd.items()}, 0.7)
    for k in want:
        # the rank-4 sums and the add (or a full delta's scaling and add), 2 ulps each (both sides) of the terms'
        # magnitudes (4e-7..1.1e-6 here); a delta applied to the wrong key, or scaled wrongly, is off by ~0.1
        assert (got[k] - want[k]).abs().max().item() <= fp32_bound(terms[k], terms=5, ulps=2), k
    m2 = rand_model()
    m2.load_state_dict(want)
    # the same forward on weights that agree within the bound above (equal here): a weight a few ulps of its terms
    # off moves its layer's output by as much; 2 ulps for each of ~16 layers on the path (two blocks' attention
    # projections and FFN, the embeddings, the head) of the largest output (11.5): 4.4e-5; every parameter has a
    # delta of ~0.1, so a delta dropped or applied twice moves the output by O(1)
    assert (fwd(m2, x, t, ctx) - dynamic).abs().max().item() <= fp32_bound(dynamic, terms=16, ulps=2)
    unmerge_lora(m)
    remove_lora(m)
    assert all(torch.equal(m.state_dict()[k], original[k]) for k in original)


def test_unmatched_keys_are_listed_never_dropped():
    m = rand_model()
    W = m.blocks[0].modulation.clone()
    D = torch.ones_like(W)
    stray = {"diffusion_model.blocks.0.diff_m": D, "diffusion_model.blocks.0.self_attn.diff_m": torch.ones(3),
             "diffusion_model.blocks.0.norm1.diff": torch.ones(24),
             "diffusion_model.img_emb.proj.0.diff_b": torch.ones(5)}
    with pytest.raises(CheckpointError, match=r"3 key\(s\) match no layer.*norm1.diff, .*self_attn.diff_m, "
                                              r".*img_emb.proj.0.diff_b\."):
        load_lora(m, stray)
    assert lora_summary(m) == {}
    with pytest.warns(UserWarning, match=r"3 key\(s\) match no layer.*NOT applied"):
        load_lora(m, stray, strength=0.5, strict=False)
    assert torch.equal(m.blocks[0].modulation, W + 0.5 * D)  # the key that matches is applied
    # the modulation delta of the generic <module>.<parameter>.diff spelling too; shapes are checked
    remove_lora(m)
    H = m.head.modulation.clone()
    load_lora(m, {"diffusion_model.head.modulation.diff": torch.full((1, 2, 24), 0.25)})
    assert torch.equal(m.head.modulation, H + 0.25)
    with pytest.raises(CheckpointError, match="delta of blocks.1.modulation has 5 values"):
        load_lora(m, {"diffusion_model.blocks.1.diff_m": torch.ones(5)})
