"""Block swap: identical output, bounded number of blocks on the device, streamed blocks really leave."""
import pytest
import torch

from openwan import quant
from openwan.configs import DiTConfig
from openwan.models.dit import WanModel
from openwan.offload import block_swap_of, disable_block_swap, enable_block_swap, parse_offload

CFG = DiTConfig(dim=48, ffn_dim=64, num_heads=4, num_layers=6, text_dim=32)


def rand_model(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    m = WanModel(cfg).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    for p in m.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 16, 3, 8, 8, generator=g), torch.randn(1, 7, CFG.text_dim, generator=g)


def on_device(m):
    return [i for i, b in enumerate(m.blocks) if all(p.device.type != "meta" for p in b.parameters())]


@pytest.mark.parametrize("prefetch", [False, True])
def test_block_swap_output_identical_and_bounded(prefetch):
    m = rand_model()
    x, ctx = inputs()
    ref = m(x, torch.tensor([500]), ctx)
    swap = enable_block_swap(m, resident=2, device="cpu", prefetch=prefetch)
    stay = [0] if prefetch else [0, 1]      # with prefetch one of the two slots takes the incoming block
    seen = []
    for b in m.blocks:   # after the swap's hooks: how many blocks hold real tensors while each block runs
        b.register_forward_pre_hook(lambda mod, a: seen.append(len(on_device(m))))
    assert on_device(m) == stay               # the streamed blocks hold meta tensors between uses
    for _ in range(2):                        # two steps: blocks come and go each time
        assert torch.equal(m(x, torch.tensor([500]), ctx), ref)
        assert on_device(m) == stay
    assert max(seen) == 3 and swap.peak_blocks == 3   # N + 1: resident (+ incoming) + running
    assert swap.loads == 2 * (6 - len(stay))
    assert swap.peak_bytes == (2 if prefetch else 1) * swap.block_bytes
    disable_block_swap(m)
    assert on_device(m) == list(range(6)) and block_swap_of(m) is None
    assert torch.equal(m(x, torch.tensor([500]), ctx), ref)


def test_block_swap_missing_hook_fails_loudly():
    m = rand_model()
    x, ctx = inputs()
    swap = enable_block_swap(m, resident=1, device="cpu")
    for h in swap._handles:   # without the hooks a streamed block has only meta tensors
        h.remove()
    with pytest.raises((RuntimeError, NotImplementedError)):
        m(x, torch.tensor([500]), ctx)


def test_block_swap_with_quantized_layers_and_lora():
    m = quant.quantize_model_(rand_model(), "int8")
    g = torch.Generator().manual_seed(2)
    q = m.blocks[4].self_attn.q
    quant.load_lora(m, {"diffusion_model.blocks.4.self_attn.q.lora_down.weight": torch.randn(2, 48, generator=g),
                        "diffusion_model.blocks.4.self_attn.q.lora_up.weight": torch.randn(48, 2, generator=g)})
    x, ctx = inputs()
    ref = m(x, torch.tensor([500]), ctx)
    enable_block_swap(m, resident=2, device="cpu")
    assert q.qweight.device.type == "meta" and q.adapters["lora"].A.device.type == "meta"
    assert torch.equal(m(x, torch.tensor([500]), ctx), ref)
    with pytest.raises(RuntimeError, match="already enabled"):
        enable_block_swap(m, resident=2, device="cpu")


def test_parse_offload():
    assert parse_offload("blocks", 30) == 2 and parse_offload("blocks:5", 30) == 5
    assert parse_offload("none", 30) is None and parse_offload("sequential", 30) is None
    with pytest.raises(ValueError, match="0 to 30"):
        parse_offload("blocks:31", 30)
    with pytest.raises(ValueError, match="blocks:N"):
        parse_offload("block", 30)
    with pytest.raises(ValueError, match="resident"):
        enable_block_swap(rand_model(), resident=7, device="cpu")
