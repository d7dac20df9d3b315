"""The Wan DiT's seams and fast paths: the import graph (no cycles) and loading through a given class and hook,
torch.compile (one graph, the same numbers as eager), per-token modulation kept as distinct rows, WanLinear's
compute dtype, folded text padding and bf16 matmuls widened to fp32."""
import math

import pytest
import torch
from dit_helpers import TS, inputs, rand_model, tiny

from openwan.checkpoints import CheckpointError
from openwan.models.dit import WanModel

# --------------------------------------------------------------------------- import graph

def _openwan_import_graph():
    """module -> set of openwan modules it imports (module level and inside functions), from the source.

    ``from openwan.x import y`` is an edge to openwan.x (a package's __init__ is the node of its own name),
    unless openwan.x.y is itself a module: ``from openwan import sampling`` is an edge to openwan.sampling.
    (Every import runs the root package's __init__ first anyway, so an edge to it for that reason says
    nothing; openwan/__init__ imports only configs, and pipelines lazily.)"""
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    mods = {}
    for p in (root / "openwan").rglob("*.py"):
        parts = list(p.relative_to(root).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for name, p in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                         for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                raise AssertionError(f"{p}: relative import; openwan uses absolute imports")
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def _cycles(graph):
    """The strongly connected components with more than one module (Tarjan), as frozensets."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# Known cycles in files outside the DiT's, to be removed by their owners (then shrink this list):
# openwan.pipelines.base lazily imports `from openwan.pipelines import load_pipeline` while the package
# openwan.pipelines (__init__) imports every pipeline module, base included.
KNOWN_CYCLES: list = []   # none left (the pipelines package cycle was removed with the Wan 2.2 pipelines)


def test_no_import_cycles():
    graph = _openwan_import_graph()
    assert "openwan.checkpoints" in graph["openwan.models.dit"] and "openwan.configs" in graph["openwan.demo"]
    # the cycles this test exists for are gone
    for a, b in (("openwan.checkpoints", "openwan.models.dit"), ("openwan.parallel.sequence", "openwan.models.dit"),
                 ("openwan.models.dit", "openwan.parallel.sequence"), ("openwan.configs", "openwan.demo")):
        assert b not in graph[a], f"{a} imports {b}"
    # a cycle check that can fail: an injected back edge is found
    assert any("openwan.models.dit" in c for c in _cycles({**graph, "openwan.checkpoints":
                                                             graph["openwan.checkpoints"] | {"openwan.models.dit"}}))
    new = [sorted(c) for c in _cycles(graph) if not any(c <= k for k in KNOWN_CYCLES)]
    assert not new, f"import cycles between openwan modules (lazy imports included): {new}"


def test_load_dit_builds_the_given_class_and_runs_the_hook(tmp_path):
    from openwan.checkpoints import load_dit
    cfg = tiny("t2v")
    m = rand_model(cfg)
    m.save_pretrained(tmp_path / "m", max_shard_bytes=20_000)   # several shards: the hook runs shard by shard

    class MyWan(WanModel):
        pass

    class Marked(torch.nn.Linear):
        pass

    seen = []

    def hook(name, t):
        seen.append(name)
        if name == "blocks.1.ffn.0.weight":   # replace the owner module (its bias then loads into it)
            layer = Marked(t.shape[1], t.shape[0], device="meta")
            layer.weight = torch.nn.Parameter(t * 2, requires_grad=False)
            return layer
        return t.to(torch.bfloat16) if name.endswith("self_attn.q.weight") else t

    loaded = load_dit(tmp_path / "m", build=MyWan, hook=hook)
    assert type(loaded) is MyWan and sorted(seen) == sorted(m.state_dict())
    assert loaded.blocks[0].self_attn.q.weight.dtype == torch.bfloat16
    ffn0 = loaded.blocks[1].ffn[0]
    assert isinstance(ffn0, Marked) and torch.equal(ffn0.weight, 2 * m.blocks[1].ffn[0].weight)
    assert torch.equal(ffn0.bias, m.blocks[1].ffn[0].bias)
    with pytest.raises(CheckpointError, match=r"no weights were loaded for blocks\.0\.ffn\.2\.bias"):
        load_dit(tmp_path / "m", build=WanModel, hook=lambda n, t: None if n == "blocks.0.ffn.2.bias" else t)


# --------------------------------------------------------------------------- torch.compile

def _compile_case():
    cfg = tiny("t2v")
    m = rand_model(cfg)
    x, ctx, _ = inputs(cfg, b=2, f=3, h=6, w=8)                          # 2 x 36 tokens
    per_token = torch.tensor([[0] * 12 + [900] * 24, list(range(0, 36 * 25, 25))])
    return m, x, ctx, (torch.tensor([999, 3]), per_token)


def test_forward_traces_as_one_graph():
    """fullgraph=True raises on any graph break (host syncs, out= into views, loops over tensors)."""
    import torch._dynamo
    m, x, ctx, ts = _compile_case()
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend="eager")         # dynamo's tracing only: fast
    with torch.no_grad():
        for t in ts:
            ref = m(x, t, ctx)
            out = compiled(x, t, ctx)
            # the traced graph runs the same kernels; only RoPE takes its plain (not in-place) form,
            # which gives the same values (test_rope_inference_and_training_forms_agree). Per-token timesteps:
            # eager keeps the time embeddings as distinct rows (TokenRows), the traced graph one row per token,
            # each computed in one GEMM over all tokens, so a row's rounding may depend on its place there
            if t.ndim == 1:
                assert torch.equal(out, ref)
            else:
                assert (out - ref).abs().max() <= 64 * torch.finfo(torch.float32).eps * ref.abs().max()
    torch._dynamo.reset()


def test_per_token_modulation_is_kept_as_distinct_rows():
    """Per-token timesteps of a few values (Wan 2.2 TI2V's given frames at 0, the rest at t): at inference the time
    embeddings pass through the blocks as TokenRows (one row per distinct timestep), the output is that of the same
    rows taken per token, bit for bit, and the [B, L, 6, dim] e0 is not held through the blocks."""
    from openwan.models.dit import State, TokenRows
    from openwan.testing import PeakLiveTensors
    cfg = tiny("t2v", dim=256, ffn_dim=2048, num_heads=4)                  # the blocks' peak above embed's
    m = rand_model(cfg)
    x, ctx, _ = inputs(cfg, b=2, f=5, h=16, w=16)                          # 2 x 320 tokens
    t = torch.tensor([[0] * 64 + [700] * 256, [0] * 128 + [300] * 192])

    def full(s):
        new = object.__new__(State)
        new.__dict__.update(s.__dict__, e=s.e.full(), e0=s.e0.full())
        return new

    with torch.no_grad():
        s = m.embed(x, t, ctx)
        assert isinstance(s.e0, TokenRows) and isinstance(s.e, TokenRows)
        assert s.e0.rows.shape == (3, 6, 256) and s.e0.shape == (2, 320, 6, 256) and s.e.shape == (2, 320, 256)
        assert torch.equal(s.e0.index, torch.tensor([[0] * 64 + [2] * 256, [0] * 128 + [1] * 192]))
        out = m.run_head(m.run_blocks(s))
        assert torch.equal(out, m.run_head(m.run_blocks(full(s))))
        assert torch.equal(out, m(x, t, ctx))
        with torch.enable_grad():                                          # training: one row per token
            per_token = m(x, t, ctx).detach()
        assert (out - per_token).abs().max() <= 64 * torch.finfo(torch.float32).eps * per_token.abs().max()
        peaks = []
        for make in (lambda s: s, full):
            with PeakLiveTensors() as p:
                m.run_head(m.run_blocks(make(m.embed(x, t, ctx))))
            peaks.append(p.peak)
    e0_bytes = 2 * 320 * 6 * 256 * 4
    assert peaks[1] - peaks[0] >= e0_bytes, peaks                         # e0 (and e) held per token: more


@pytest.mark.slow
def test_inductor_compiled_equals_eager():
    """torch.compile with inductor (fused kernels, other summation order) matches eager to float rounding."""
    import torch._dynamo
    m, x, ctx, ts = _compile_case()
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True)
    with torch.no_grad():
        for t in ts:
            ref = m(x, t, ctx)
            out = compiled(x, t, ctx)
            # fusion changes the order of fp32 sums and may use FMA: a few ulps per layer of the ~8 chained
            # layers; 16 ulps of the largest output (|v| ~ 11 here: 2e-5) bounds it on any CPU
            assert (out - ref).abs().max().item() <= 16 * torch.finfo(torch.float32).eps * ref.abs().max().item()
    torch._dynamo.reset()


def test_wan_linear_carries_its_compute_dtype():
    from openwan.models.dit import WanLinear
    torch.manual_seed(0)
    x = torch.randn(3, 8)
    lin, lin32 = WanLinear(8, 4).to(torch.bfloat16), WanLinear(8, 4, fp32=True).to(torch.bfloat16)
    lin32.load_state_dict(lin.state_dict())
    assert lin.compute_dtype == torch.bfloat16 and lin32.compute_dtype == torch.float32
    assert lin(x).dtype == torch.bfloat16                  # the weight's dtype (as under autocast)
    w, b = lin.weight.float(), lin.bias.float()
    assert torch.equal(lin32(x), torch.nn.functional.linear(x, w, b))   # an fp32 island, bf16 storage
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin32(x).dtype == torch.float32             # autocast does not reach inside
    m = WanModel(tiny("t2v"))
    assert isinstance(m.blocks[0].ffn[0], torch.nn.Linear) and m.head.head.fp32 and not m.blocks[0].self_attn.q.fp32


def test_fp32_islands_hold_under_training_autocast():
    """Under the trainer's bf16 autocast (grad on), the reference's fp32 islands stay fp32: the time embedding
    and projection equal their values without autocast bit for bit, the residual stream is fp32, and the head
    projects in fp32 (the head's input taken from the autocast run, so only the head's own arithmetic is compared)."""
    cfg = tiny("t2v")
    m = rand_model(cfg)
    x, ctx, kw = inputs(cfg, b=2, f=3, h=6, w=8)
    t = torch.tensor([700.0, 120.0])
    plain = m.embed(x, t, ctx, **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = m.embed(x, t, ctx, **kw)
        assert s.e.dtype == s.e0.dtype == torch.float32 and s.x.dtype == torch.float32
        assert torch.equal(s.e, plain.e) and torch.equal(s.e0, plain.e0)
        s = m.run_blocks(s)
        assert s.x.dtype == torch.float32
        head_amp = m.head(s.x, s.e)
        assert m.blocks[0].self_attn.q(s.x).dtype == torch.bfloat16      # while the other linears run in bf16
    assert head_amp.dtype == torch.float32
    assert torch.equal(head_amp, m.head(s.x, s.e))


def test_text_padding_folded_by_hand():
    """_context pads the prompts only to the longest + 1 row and weighs the zero rows by the padding they stand for."""
    m = rand_model(tiny("t2v", text_len=16))
    g = torch.Generator().manual_seed(0)
    ctx, bias = m._context([torch.randn(3, 32, generator=g), torch.randn(5, 32, generator=g)])
    assert ctx.shape == (2, 6, 24) and bias.shape == (2, 1, 1, 6)
    # sample 0: 3 real rows, zero rows 3..5 stand for 13 rows; sample 1: 5 real, one zero row for 11
    want = torch.tensor([[0, 0, 0] + [math.log(13 / 3)] * 3, [0] * 5 + [math.log(11)]])
    assert torch.equal(bias[:, 0, 0], want.float())
    assert torch.equal(ctx[0, 3], ctx[1, 5])                       # the zero rows' embedding, shared
    _, none = m._context(torch.randn(2, 16, 32))                    # full prompts: nothing to fold
    assert none is None
    _, none = m._context([torch.randn(16, 32), torch.randn(2, 32)])  # longest is full: padded as before
    assert none is None


@pytest.mark.parametrize("kind", ["t2v", "i2v", "vace"])
def test_folded_text_padding_equals_full_padding(kind):
    """Attending over the few folded padding rows equals attending over all text_len zero rows (the
    reference): a prompt list (folded) against the same prompts zero-padded to text_len (not folded)."""
    cfg = tiny("t2v", vace_layers=(0, 1)) if kind == "vace" else tiny(kind)
    m = rand_model(cfg)
    x, _, kw = inputs(cfg, b=2, f=3, h=6, w=8)
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randn(7, cfg.text_dim, generator=g), torch.randn(19, cfg.text_dim, generator=g)]
    padded = torch.stack([torch.nn.functional.pad(p, (0, 0, 0, cfg.text_len - p.shape[0])) for p in prompts])
    assert m._context(prompts)[1] is not None and m._context(padded)[1] is None
    with torch.no_grad():
        for t in TS:
            tt = torch.tensor([t, t])
            folded, full = m(x, tt, prompts, **kw), m(x, tt, padded, **kw)
            # the same sums in another order (a softmax over 20 instead of 512 keys, exp(s + log m)
            # for m exp(s)): a few fp32 ulps of the output's magnitude per layer
            bound = 16 * torch.finfo(torch.float32).eps * full.abs().max().item()
            assert (folded - full).abs().max().item() <= bound, (kind, t)


def test_bf16_matmul_widened_to_fp32(monkeypatch):
    """On CPUs without bf16 matrix units bf16 linear layers and attention run as fp32 matmuls: a linear layer
    is what a bf16 GEMM computes (exact bf16 products, fp32 sums, one rounding to bf16; torch's own kernel may
    sum in another order, so the two agree only to that rounding), attention is at least as close to the
    exact result as torch's bf16 kernel (which rounds its probabilities to bf16)."""
    from openwan import runtime
    from openwan.models.attention import attention
    from openwan.models.dit import WanLinear
    torch.manual_seed(0)
    lin = WanLinear(256, 384).to(torch.bfloat16)
    x = torch.randn(3, 50, 256)
    q, k, v = torch.randn(2, 40, 2, 16), torch.randn(2, 30, 2, 16), torch.randn(2, 30, 2, 16)
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    exact = attention(qb.double(), kb.double(), vb.double())
    out = {}
    with torch.no_grad():
        for mode in ("native", "fp32"):
            monkeypatch.setenv("OPENWAN_BF16_MATMUL", mode)
            assert runtime.bf16_matmul_in_fp32("cpu") == (mode == "fp32")
            out[mode] = lin(x), attention(qb, kb, vb)
            assert out[mode][0].dtype == out[mode][1].dtype == torch.bfloat16
    # the linear layer: exact products of the bf16 operands (float64 holds them), fp32 sums of K terms (error
    # at most K * eps32 * sum|x w|), then one rounding to bf16 (at most 2^-8 of the value)
    xb = x.bfloat16().double()
    exact_lin = xb @ lin.weight.double().T + lin.bias.double()
    sum_err = (x.shape[-1] + 1) * torch.finfo(torch.float32).eps * (xb.abs() @ lin.weight.double().abs().T
                                                                     + lin.bias.double().abs())
    bf16_u = torch.finfo(torch.bfloat16).eps / 2
    for mode in out:
        assert ((out[mode][0].double() - exact_lin).abs() <= bf16_u * (exact_lin.abs() + sum_err) + sum_err).all(), mode
    err = {m: (o[1].double() - exact).abs().max().item() for m, o in out.items()}
    assert err["fp32"] <= err["native"]
    # one bf16 rounding of the output: half an ulp, at most eps/2 of the largest value
    assert err["fp32"] <= torch.finfo(torch.bfloat16).eps / 2 * exact.abs().max().item()
    monkeypatch.setenv("OPENWAN_BF16_MATMUL", "auto")
    assert runtime.bf16_matmul_in_fp32("cpu") == (not runtime.fast_bf16("cpu")[0])
    assert not runtime.bf16_matmul_in_fp32("meta")
    monkeypatch.setenv("OPENWAN_BF16_MATMUL", "fast")
    with pytest.raises(ValueError, match="OPENWAN_BF16_MATMUL"):
        runtime.bf16_matmul_in_fp32("cpu")
