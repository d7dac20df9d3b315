"""The context cache (openwan.models.context_cache): the context's embedding and every block's cross-attention
keys/values computed once per generation, bit-identical outputs, exact counts, invalidation on weight changes
(in-place updates, LoRA attached / strength changed / merged), block swap, training untouched."""
import pytest
import torch

from openwan import sampling
from openwan.caches import FirstBlockCache
from openwan.configs import DiTConfig
from openwan.denoiser import Conditioning, Denoiser, Guidance
from openwan.models.context_cache import ContextCache, weights_signature
from openwan.models.dit import WanModel
from openwan.offload import disable_block_swap, enable_block_swap
from openwan.testing import randomize_
from openwan.training.lora import add_lora, merge_lora, set_lora_strength, unmerge_lora

STEPS = 6


def tiny(kind="t2v", **kw):
    base = dict(dim=24, ffn_dim=32, num_heads=2, num_layers=2, text_dim=32, model_type=kind)
    if kind in ("i2v", "flf2v"):
        base.update(in_dim=36, image_dim=32)
    if kind == "vace":
        base.update(model_type="t2v", vace_layers=(1,))
    base.update(kw)
    return DiTConfig(**base)


def model(kind="t2v", seed=0, **kw):
    torch.manual_seed(seed)
    return randomize_(WanModel(tiny(kind, **kw)).eval(), seed, std=0.2)


def conditioning(cfg, seed=1, text=7, neg=4):
    g = torch.Generator().manual_seed(seed)
    kw = {}
    if cfg.has_image_input:
        kw["y"] = torch.randn(cfg.in_dim - 16, 2, 4, 6, generator=g)
        kw["clip_fea"] = torch.randn(2 if cfg.model_type == "flf2v" else 1, 257, cfg.image_dim, generator=g)
    if cfg.is_vace:
        kw["vace_context"] = torch.randn(cfg.vace_in_dim, 2, 4, 6, generator=g)
        kw["vace_scale"] = 0.7
    return Conditioning(torch.randn(text, cfg.text_dim, generator=g), torch.randn(neg, cfg.text_dim, generator=g), **kw)


def sample(dit, cond, cfg_batch=True, cache=True, wrap=None):
    """A guided Euler solve; returns (latent, denoiser)."""
    x0 = torch.randn(16, 2, 4, 6, generator=torch.Generator().manual_seed(2))
    d = Denoiser(dit, cond, Guidance(4.0, cfg_batch), ctx_cache=cache)
    run = d if wrap is None else wrap(d)
    with torch.inference_mode():
        out = sampling.run(run, x0, sampling.euler_sigmas(STEPS, 3.0), "euler")
    return out, d


class Count:
    """Counts the calls of the cross-attention k / v projections (text and image) and of the text embedding."""

    def __init__(self, dit):
        self.n = {}
        self.handles = []
        blocks = list(dit.blocks) + list(getattr(dit, "vace_blocks", []))
        for b, block in enumerate(blocks):
            for name in ("k", "v", "k_img", "v_img"):
                if hasattr(block.cross_attn, name):
                    self._hook(getattr(block.cross_attn, name), (b, name))
        self._hook(dit.text_embedding[0], "text_embedding")

    def _hook(self, module, key):
        self.n[key] = 0

        def hook(m, args, out):
            self.n[key] += 1
        self.handles.append(module.register_forward_hook(hook))

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("kind", ["t2v", "i2v", "flf2v", "vace"])
def test_dit_forward_with_the_cache_is_bit_identical(kind):
    dit = model(kind)
    cond = conditioning(dit.config)
    g = torch.Generator().manual_seed(5)
    cache = ContextCache()
    with torch.no_grad():
        for t in (999, 500, 3):
            x = torch.randn(2, 16, 2, 4, 6, generator=g)
            args = (x, torch.tensor([t, t]), cond.contexts(True))
            ref = dit(*args, **cond.batch(2))
            assert torch.equal(dit(*args, ctx_cache=cache, **cond.batch(2)), ref)
    assert cache.misses == 1 and cache.hits == 2
    blocks = len(dit.blocks) + len(getattr(dit, "vace_blocks", []))
    assert cache.computed() == blocks


@pytest.mark.parametrize("cfg_batch", [True, False])
@pytest.mark.parametrize("kind", ["t2v", "i2v", "vace"])
def test_sampled_latent_bit_identical_and_kv_computed_once_per_context_batch(kind, cfg_batch):
    dit = model(kind)
    cond = conditioning(dit.config)
    ref, _ = sample(dit, cond, cfg_batch, cache=False)
    count = Count(dit)
    out, d = sample(dit, cond, cfg_batch)
    count.remove()
    assert torch.equal(out, ref)
    batches = 1 if cfg_batch else 2          # [cond, uncond] in one pass, or each alone: one cache entry each
    assert d.ctx_cache.misses == batches and d.ctx_cache.hits == STEPS * batches - batches
    assert set(count.n.values()) == {batches}, count.n   # every k/v projection (and the text embedding)


def test_off_computes_every_step():
    dit = model()
    count = Count(dit)
    _, d = sample(dit, conditioning(dit.config), cache=False)
    assert d.ctx_cache is None and set(count.n.values()) == {STEPS}


def test_with_a_step_cache_bit_identical():
    dit = model()
    cond = conditioning(dit.config)
    ref, _ = sample(dit, cond, cache=False, wrap=lambda d: FirstBlockCache(d, 1.0))
    count = Count(dit)
    out, d = sample(dit, cond, wrap=lambda d: FirstBlockCache(d, 1.0))
    assert torch.equal(out, ref) and 0 < d.stats["dit_forwards_skipped"] < STEPS
    assert set(count.n.values()) == {1}


def test_entries_are_found_by_content():
    dit = model()
    cond = conditioning(dit.config)
    cache = ContextCache()
    x = torch.randn(1, 16, 2, 4, 6)
    with torch.no_grad():
        a = dit(x, torch.tensor([500]), [cond.context], ctx_cache=cache)
        assert torch.equal(dit(x, torch.tensor([500]), [cond.context.clone()], ctx_cache=cache), a)  # a copy: hit
        assert cache.misses == 1 and cache.hits == 1
        other = cond.context + 1
        b = dit(x, torch.tensor([500]), [other], ctx_cache=cache)                     # other content: an entry
        assert torch.equal(b, dit(x, torch.tensor([500]), [other]))
        cond.context.add_(1)                       # changed in place (its version moves): not the first entry
        assert torch.equal(dit(x, torch.tensor([500]), [cond.context], ctx_cache=cache), b)
    assert cache.misses == 2 and cache.hits == 2 and len(cache.entries) == 2


def test_weight_changes_recompute_the_keys_and_values():
    dit = model()
    cond = conditioning(dit.config)
    cache = ContextCache()
    x = torch.randn(2, 16, 2, 4, 6)
    args = (x, torch.tensor([500, 500]), cond.contexts(True))

    def check(expect_computed):
        with torch.no_grad():
            got = dit(*args, ctx_cache=cache)
            assert torch.equal(got, dit(*args))
        assert cache.computed() == expect_computed
        return got

    first = check(2)
    check(2)                                                       # unchanged weights: reused
    with torch.no_grad():
        dit.blocks[1].cross_attn.v.weight.mul_(1.5)               # in place (load_state_dict, an optimizer step)
    assert not torch.equal(check(3), first)                       # block 1 recomputed, block 0 kept
    params = add_lora(dit, rank=2, targets=["cross_attn.k", "cross_attn.v"])
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in params:                     # B starts at zero: give the adapters an effect
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    assert not torch.equal(check(5), first)                       # attached unmerged on k/v: both blocks                                                       # attached unmerged on k/v: both blocks
    check(5)
    set_lora_strength(dit, "default", 0.5)
    check(7)
    with torch.no_grad():
        params[1].mul_(2)                                          # an optimizer step on block 0's k adapter
    check(8)
    merge_lora(dit)
    check(10)
    unmerge_lora(dit)
    check(12)


def test_block_swap_keeps_the_cache_and_the_output():
    dit = model()
    cond = conditioning(dit.config)
    ref, _ = sample(dit, cond, cache=False)
    enable_block_swap(dit, resident=0, device="cpu")
    try:
        count = Count(dit)
        out, d = sample(dit, cond)
        count.remove()
    finally:
        disable_block_swap(dit)
    assert torch.equal(out, ref) and set(count.n.values()) == {1}


def test_training_ignores_the_cache():
    dit = model()
    cond = conditioning(dit.config)
    cache = ContextCache()
    x = torch.randn(1, 16, 2, 4, 6)
    out = dit(x, torch.tensor([500]), [cond.context], ctx_cache=cache)
    out.square().mean().backward()
    assert not cache.entries and dit.blocks[0].cross_attn.k.weight.grad is not None


def test_signature_moves_with_versions_and_settings_only():
    dit = model()
    ca = dit.blocks[0].cross_attn
    sig = weights_signature(ca.kv_modules())
    assert weights_signature(ca.kv_modules()) == sig
    with torch.no_grad():
        ca.norm_k.weight.add_(0)                                   # any in-place op counts as a change
    assert weights_signature(ca.kv_modules()) != sig

