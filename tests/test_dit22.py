"""The Wan 2.2 DiTs: per-token timesteps, golden vectors of the Wan 2.2 reference, configs, diffusers parity."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from openwan.configs import DiTConfig
from openwan.models.dit import WanModel

REF22 = Path(__file__).resolve().parents[1].parent / "shared" / "reference22"
EPS = torch.finfo(torch.float32).eps


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
    return ulps * EPS * ref.abs().max().item()


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
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_sp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    (ref, got0), (_, got1) = torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt")
    assert torch.equal(got0, got1)
    assert (got0 - ref).abs().max().item() <= ulp_bound(ref)
