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


# ---------------------------------------------------------------- the pipeline's plan for the other models

def _fake_moves(p, monkeypatch):
    """Device moves faked as in test_denoiser's sequential test: ``p.offload_device`` is a stand-in second
    "device" (meta, never really used); move/where record where each model is; nothing is copied."""
    te, vae, dit = p.c.text_encoder, p.vae, p.dit
    names = {id(te): "te", id(vae): "vae", id(dit): "dit"}
    place = {"te": "off", "vae": "off", "dit": "device"}          # block swap: the DiT's frame is on the device
    events = []
    p.offload_device = torch.device("meta")

    def where(m):
        return p.device if place[names[id(m)]] == "device" else p.offload_device

    def move(m, dev):
        place[names[id(m)]] = "device" if dev == p.device else "off"
        events.append((names[id(m)], place[names[id(m)]]))
    monkeypatch.setattr(p, "where", where)
    monkeypatch.setattr(p, "move", move)
    seen = []
    enc, dec = te.encode, vae.decode_stream
    monkeypatch.setattr(te, "encode", lambda *a, **k: (seen.append(("te", place["te"])), enc(*a, **k))[1])
    monkeypatch.setattr(vae, "decode_stream", lambda *a, **k: (seen.append(("vae", place["vae"])), dec(*a, **k))[1])
    return place, events, seen


def test_blocks_plan_moves_text_encoder_and_vae_only_while_they_run(tmp_path, monkeypatch):
    """offload="blocks:N": the DiT streams its blocks, the text encoder and the VAE are on the device only
    while they run (in before, out after), the text encoder is kept for new prompts; output identical."""
    from openwan.pipelines import load_pipeline
    from openwan.testing import make_tiny_checkpoint
    ck = make_tiny_checkpoint(tmp_path / "ck", "tiny-t2v")
    ref = load_pipeline(ck, variant="tiny-t2v", progress=False)("a red circle", seed=1, sample_steps=2).frames[0]
    p = load_pipeline(ck, variant="tiny-t2v", progress=False, offload="blocks:1")
    assert p.offload == "blocks" and block_swap_of(p.dit).resident == 1
    place, events, seen = _fake_moves(p, monkeypatch)
    out = p("a red circle", seed=1, sample_steps=2).frames[0]
    assert events == [("te", "device"), ("te", "off"), ("vae", "device"), ("vae", "off")]
    # each ran on the device (the text encoder once per prompt: the prompt, the negative one)
    assert seen == [("te", "device"), ("te", "device"), ("vae", "device")]
    assert place == {"te": "off", "vae": "off", "dit": "device"}
    assert torch.equal(torch.as_tensor(out), torch.as_tensor(ref))
    p("a blue square", seed=1, sample_steps=2)                      # a new prompt: the encoder was kept
    assert events[4:] == [("te", "device"), ("te", "off"), ("vae", "device"), ("vae", "off")]
    assert block_swap_of(p.dit).peak_blocks <= 2                    # N + 1 blocks at most


def test_sequential_plan_releases_text_encoder_and_vae_leaves_after_decode(tmp_path, monkeypatch):
    from openwan.pipelines import load_pipeline
    from openwan.testing import make_tiny_checkpoint
    p = load_pipeline(make_tiny_checkpoint(tmp_path / "ck", "tiny-t2v"), variant="tiny-t2v", progress=False,
                      offload="sequential")
    place, events, seen = _fake_moves(p, monkeypatch)
    place["te"] = place["vae"] = "device"                           # sequential loads everything on the device
    p("a red circle", seed=1, sample_steps=2)
    assert p.c.text_encoder.released                                # the reference's: freed after encoding
    assert events == [("dit", "off"), ("vae", "off")]               # DiT out before decoding, VAE out after
    assert seen == [("te", "device"), ("te", "device"), ("vae", "device")]


def test_offload_values_parsed_once():
    from openwan.offload import parse_offload_spec, resident_blocks
    assert parse_offload_spec("True") == ("sequential", None) and parse_offload_spec(False) == ("none", None)
    assert parse_offload_spec("blocks") == ("blocks", None) and parse_offload_spec("BLOCKS:0") == ("blocks", 0)
    assert resident_blocks("blocks", 1) == 1 and resident_blocks("auto", 30) is None
    for bad in ("blocks:-1", "blocks:x", "block", "blocks:"):
        with pytest.raises(ValueError, match="blocks:N"):
            parse_offload_spec(bad)


def test_serve_loads_with_quantize_and_offload(monkeypatch, capsys):
    """`openwan serve --quantize int8 --offload_model blocks:1`: every worker's pipeline is loaded with them
    (the server itself is not started: make_server is replaced by a stop)."""
    import openwan.serve as serve
    from openwan.quant import QuantLinear
    got = []

    class Stop(Exception):
        pass

    def fake_make_server(pipes, *a, **k):
        got.extend(pipes)
        raise Stop
    monkeypatch.setattr(serve, "make_server", fake_make_server)
    with pytest.raises(Stop):
        serve.main(["--quantize", "int8", "--offload_model", "blocks:1", "--devices", "cpu,cpu", "--quiet"])
    assert len(got) == 2
    for p in got:
        assert p.offload == "blocks" and block_swap_of(p.dit).resident == 1
        assert isinstance(p.dit.blocks[0].ffn[0], QuantLinear)
    got.clear()
    with pytest.raises(Stop):                 # auto on a CPU: nothing to fit, the plain plan
        serve.main(["--offload_model", "auto", "--device", "cpu"])
    assert got[0].offload == "none" and "auto on cpu: none" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        serve.main(["--offload_model", "blocks:x"])
    assert "blocks:N" in capsys.readouterr().err
    help_text = serve.build_parser().format_help()
    assert "--quantize {none,int8,fp8}" in help_text and "--offload_model" in help_text


def test_cuda_prefetch_path_with_the_stream_api_faked(monkeypatch):
    """The side-stream prefetch (openwan.offload.CudaStreams), run on the CPU with torch.cuda's stream calls
    faked: each streamed block after the first is copied on the side stream during the previous block's
    pre-hook, an event is recorded there, and the compute stream waits on that event (and takes the copied
    tensors) before the block runs. Output identical. What this cannot show: real overlap on a GPU."""
    from openwan.offload import CudaStreams
    log = []

    class Stream:
        def __init__(self, device=None, name="side"):
            self.name = name

        def wait_event(self, ev):
            log.append(("wait", ev.n))

    class Event:
        count = 0

        def record(self, stream):
            Event.count += 1
            self.n = Event.count
            log.append(("record", stream.name, self.n))

    class StreamCtx:
        def __init__(self, s):
            self.s = s

        def __enter__(self):
            log.append(("enter", self.s.name))

        def __exit__(self, *a):
            log.append(("exit", self.s.name))
    compute = Stream(name="compute")
    recorded = []
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "stream", StreamCtx)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: compute)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda t, s: recorded.append(s.name), raising=False)
    m = rand_model()
    x, ctx = inputs()
    ref = m(x, torch.tensor([500]), ctx)
    ran = []
    for i, b in enumerate(m.blocks):
        b.register_forward_pre_hook(lambda mod, a, i=i: ran.append(i))
    swap = enable_block_swap(m, resident=2, device="cpu", prefetch=True, streams=CudaStreams("cpu"))
    for i, b in enumerate(m.blocks):         # after the swap's hooks: a block runs after its wait
        b.register_forward_pre_hook(lambda mod, a, i=i: log.append(("run", i)))
    assert torch.equal(m(x, torch.tensor([500]), ctx), ref)
    # blocks 1..5 stream (block 0 stays: one of the 2 slots takes the incoming block); 2..5 are prefetched
    waits = [e for e in log if e[0] == "wait"]
    records = [e for e in log if e[0] == "record"]
    assert [r[1] for r in records] == ["side"] * 4 and len(waits) == 4
    for k, blk in enumerate(range(2, 6)):    # block blk: copied (recorded) before block blk-1 runs ...
        rec = log.index(("record", "side", k + 1))
        assert log.index(("run", blk - 1)) > rec
        assert log.index(("wait", k + 1)) < log.index(("run", blk))   # ... and waited for before it runs
    n_tensors = sum(len(swap.home[i]) for i in range(2, 6))
    assert recorded == ["compute"] * n_tensors
    assert not swap._events and swap.peak_blocks == 3


def test_block_swap_without_cuda_uses_no_stream(monkeypatch):
    """The CUDA path is guarded: without CUDA nothing touches torch.cuda (no stream made, no prefetch
    by default), and a CUDA device is refused with a clear error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: pytest.fail("a CUDA stream was made"))
    m = rand_model()
    swap = enable_block_swap(m, resident=2, device="cpu")
    assert swap.streams is None and not swap.prefetch
    with pytest.raises(RuntimeError, match="CUDA build of torch and a GPU"):
        enable_block_swap(rand_model(), resident=2, device="cuda")


def test_generate_refuses_before_loading_when_the_plan_does_not_fit(tmp_path, monkeypatch, capsys):
    """openwan generate asks openwan.plan for the estimate before loading anything: on a device whose memory
    is known (faked here: 4 GB) a 14B generation that does not fit is refused with the estimate and the
    options (the checkpoint folder is empty: nothing was read)."""
    from openwan import plan as planner
    from openwan.cli import main
    monkeypatch.setattr(planner, "device_memory_of", lambda device: 4 * planner.GB)
    assert main(["generate", "a cat", "--task", "t2v-14B", "--ckpt_dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "this generation needs about" in err and "4.00 GB are available" in err and "--offload_model auto" in err


def test_auto_that_cannot_fit_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from openwan import plan as planner
    from openwan.cli import main
    monkeypatch.setattr(planner, "device_memory_of", lambda device: planner.GB // 4)
    assert main(["generate", "a cat", "--task", "t2v-14B", "--ckpt_dir", str(tmp_path), "--offload_model", "auto",
                 "--quiet"]) == 2
    assert "does not fit in 256 MB" in capsys.readouterr().err
