"""Step caches inside the DiT (openwan.caches.blocks: TeaCache, MagCache, FirstBlockCache): skip decisions
against a hand-written loop on a tiny model, exact forward counts, threshold 0 bit-identical to no cache,
per-expert state, calibration files (round trip, lookup, clear errors)."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from openwan import sampling
from openwan.caches import FirstBlockCache, MagCache, PlannedCache, TeaCache, parse_step_cache, store
from openwan.caches.blocks import nearest
from openwan.configs import DiTConfig
from openwan.denoiser import Conditioning, Denoiser, Guidance
from openwan.models.dit import WanModel
from openwan.pipelines import load_pipeline
from openwan.testing import make_tiny_checkpoint, randomize_

STEPS = 10


def tiny_dit(seed=0, layers=3):
    torch.manual_seed(seed)
    cfg = DiTConfig(dim=24, ffn_dim=32, num_heads=2, num_layers=layers, text_dim=32, model_type="t2v")
    return randomize_(WanModel(cfg).eval(), seed, std=0.2)


def setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(16, 2, 4, 4, generator=g)
    cond = Conditioning(torch.randn(5, 32, generator=g))
    return x0, cond


def run(cache_cls, dit, threshold, calibration=None, guidance=Guidance()):
    x0, cond = setup()
    d = cache_cls(Denoiser(dit, cond, guidance), threshold, calibration=calibration)
    with torch.no_grad():
        out = sampling.run(d, x0, sampling.euler_sigmas(STEPS, 3.0), "euler")
    return d, out


def hand_loop(dit, decide):
    """Euler over the tiny DiT without CFG, written out: every step embeds, asks ``decide(i, s, ind, r0)``
    (ind = block 0's modulated input, r0 = block 0's residual) whether to run the blocks, else reuses the
    residual of the last computed step (``decide`` gets both residual kinds to keep)."""
    x0, cond = setup()
    grid = sampling.euler_sigmas(STEPS, 3.0)
    ts, sig = sampling.timesteps_from_sigmas(grid[:-1]), grid.float()
    x, res, decisions = x0, {}, []
    b0 = dit.blocks[0]
    for i in range(STEPS):
        s = dit.embed(x[None], ts[i:i + 1], [cond.context])
        m = b0.modulation.float()
        ind = F.layer_norm(s.x, (24,), eps=1e-6) * (1 + m[:, None, 1] + s.e0[:, :, 1]) + m[:, None, 0] + s.e0[:, :, 0]
        x1 = b0(s.x, s.e0, s.ctx, s.seq_lens, s.rope, s.ctx_bias)
        compute = decide(i, ind, x1 - s.x, res)
        if compute:
            args = (s.e0, s.ctx, s.seq_lens, s.rope, s.ctx_bias)   # ctx_bias: the folded text padding (WanModel._context)
            full = dit.blocks[2](dit.blocks[1](x1, *args), *args)
            res.update(full=full - s.x, tail=full - x1, r0=x1 - s.x)
            out = full
        else:
            out = s.x + res["full"] if decide.kind == "full" else x1 + res["tail"]
        decisions.append(compute)
        v = dit.run_head(s.__class__(**{**s.__dict__, "x": out}))[0].float()
        x = x + (sig[i + 1] - sig[i]) * v
    return decisions, x


def rel(a, b):
    return ((a - b).abs().sum(dtype=torch.float64) / b.abs().sum(dtype=torch.float64)).item()


def test_magcache_schedule_is_the_hand_computed_one():
    """MagCache decides from the calibrated ratios alone: the schedule is a pure function written out here."""
    ratios = [1.0, 1.02, 0.99, 0.97, 0.95, 0.9, 1.1, 0.98, 0.8, 0.9]
    dit = tiny_dit()
    for thr, warmup in ((0.03, None), (0.1, None), (0.1, 0.5), (0.5, None)):
        x0, cond = setup()
        d = MagCache(Denoiser(dit, cond), thr, calibration={"mag_ratios": ratios}, warmup=warmup)
        with torch.no_grad():
            sampling.run(d, x0, sampling.euler_sigmas(STEPS, 3.0), "euler")
        want, ratio, err, k = [], 1.0, 0.0, 0
        for i in range(STEPS):
            if i >= math.ceil((warmup or 0.2) * STEPS) and i != STEPS - 1:
                ratio, k = ratio * ratios[i], k + 1
                err += abs(1 - ratio)
                if err < thr and k <= 3:
                    want.append(False)
                    continue
            ratio, err, k = 1.0, 0.0, 0
            want.append(True)
        assert d.decisions == want, (thr, warmup)
        assert d.stats == {"dit_forwards": sum(want), "dit_forwards_skipped": STEPS - sum(want)}
    assert 0 < sum(want) < STEPS           # the last threshold skips some steps and computes others


def test_nearest_reads_a_curve_at_another_step_count():
    curve = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [nearest(curve, i, 9) for i in range(9)] == [0, 0, 1, 2, 2, 2, 3, 4, 4]   # round half to even
    assert nearest(curve, 0, 1) == 4.0


@pytest.mark.parametrize("kind", ["teacache", "fbcache"])
def test_teacache_and_fbcache_schedules_equal_a_hand_written_loop(kind):
    dit = tiny_dit()
    poly = [2.0, 0.5, 0.0]        # P(r) = 2 r^2 + 0.5 r
    thr = 2.0 if kind == "teacache" else 1.0      # the tiny random DiT changes by 0.3-2 (rel. L1) per step
    state = {"prev": None, "acc": 0.0}

    def decide(i, ind, r0, res):
        if kind == "teacache":
            forced = i < math.ceil(0.1 * STEPS) or i == STEPS - 1 or not res
            skip = False
            if not forced and state["prev"] is not None:
                r = rel(ind, state["prev"])
                state["acc"] += max(0.0, poly[0] * r * r + poly[1] * r + poly[2])
                skip = state["acc"] < thr
            state["prev"] = ind
            if not skip:
                state["acc"] = 0.0
            return not skip
        return not res or rel(r0, res["r0"]) >= thr
    decide.kind = "full" if kind == "teacache" else "tail"
    with torch.no_grad():
        want, x_hand = hand_loop(dit, decide)
        cls = TeaCache if kind == "teacache" else FirstBlockCache
        d, out = run(cls, dit, thr, {"teacache_poly": poly})
    assert d.decisions == want
    assert 0 < sum(want) < STEPS, want     # a real mix of computed and reused steps
    assert d.stats == {"dit_forwards": sum(want), "dit_forwards_skipped": STEPS - sum(want)}
    # the same operations in the same order: equal up to fp32 rounding of the re-associated head/blocks calls
    assert (out - x_hand).abs().max() <= 64 * torch.finfo(torch.float32).eps * x_hand.abs().max()


@pytest.mark.parametrize("cfg_batch", [True, False])
@pytest.mark.parametrize("cls", [TeaCache, MagCache, FirstBlockCache])
def test_forward_counts_are_exact_and_zero_threshold_is_bit_identical(cls, cfg_batch):
    dit = tiny_dit()
    last_block_runs = []
    h = dit.blocks[-1].register_forward_hook(lambda *a: last_block_runs.append(1))
    cal = {"mag_ratios": [1.0] + [0.99] * 9, "teacache_poly": [1.0, 0.0]}
    x0, cond = setup()
    cond.context_null = torch.zeros(3, 32)
    g = Guidance(4.0, cfg_batch)
    plain = Denoiser(dit, cond, g)
    with torch.no_grad():
        ref = sampling.run(plain, x0, sampling.euler_sigmas(STEPS, 3.0), "euler")
        zero = cls(Denoiser(dit, cond, g), 0.0, calibration=cal)
        out0 = sampling.run(zero, x0, sampling.euler_sigmas(STEPS, 3.0), "euler")
        assert torch.equal(out0, ref) and zero.stats["dit_forwards_skipped"] == 0
        last_block_runs.clear()
        d = cls(Denoiser(dit, cond, g), 10.0, calibration=cal)
        sampling.run(d, x0, sampling.euler_sigmas(STEPS, 3.0), "euler")
    h.remove()
    per_step = 1 if cfg_batch else 2
    assert d.stats["dit_forwards"] == len(last_block_runs) == sum(d.decisions)
    assert d.stats["dit_forwards"] + d.stats["dit_forwards_skipped"] == STEPS * per_step
    assert d.stats["dit_forwards_skipped"] > 0


def test_each_expert_keeps_its_own_state():
    """Under Wan 2.2's expert switch the low-noise expert starts with a computed step (no residual of its own)."""
    from openwan.pipelines.moe import ExpertSwitch
    high, low = tiny_dit(0), tiny_dit(1)
    x0, cond = setup()
    sw = ExpertSwitch(Denoiser(high, cond), Denoiser(low, cond), boundary=0.6)
    d = MagCache(sw, 10.0, calibration={"mag_ratios": [1.0] * STEPS})
    with torch.no_grad():
        sampling.run(d, x0, sampling.euler_sigmas(STEPS, 3.0), "euler")
    first_low = sw.used.index("low")
    assert d.decisions[first_low] is True and d.decisions[first_low - 1] is False
    assert d.stats["dit_forwards_high"] + d.stats["dit_forwards_low"] == sum(d.decisions)


# --------------------------------------------------------------------------- calibration files

@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "t2v", "tiny-t2v")


def test_calibration_round_trip_and_lookup(tiny_ckpt, tmp_path, monkeypatch):
    from openwan.caches.calibration import calibrate
    monkeypatch.setenv("OPENWAN_STEP_CACHE_DIR", str(tmp_path / "cal"))
    pipe = load_pipeline(tiny_ckpt, variant="tiny-t2v", progress=False)
    kw = dict(seed=3, sample_steps=8, output_type="latent")
    with pytest.raises(ValueError, match="needs a calibration of this model.*python -m openwan.caches calibrate"):
        pipe("a red circle", step_cache="magcache", **kw)
    cals = calibrate(pipe, ["a red circle", "a blue square"], steps=8)
    (key, cal), = cals.items()
    assert key == store.model_key(pipe.dit) == store.model_key(load_pipeline(tiny_ckpt, variant="tiny-t2v").dit)
    assert len(cal["mag_ratios"]) == 8 and cal["mag_ratios"][0] == 1.0 and len(cal["teacache_poly"]) == 5
    assert cal["points"] == 2 * 7              # two runs, a change per step after the first
    path = store.save_calibration(cal)
    assert path == tmp_path / "cal" / f"{key}.json" and not list((tmp_path / "cal").glob("*.tmp*"))
    assert store.find_calibration(pipe.dit) == dict(cal, format=store.FORMAT)
    for spec in ("teacache:0", "magcache:0"):  # threshold 0: every block computed, the uncached output exactly
        assert torch.equal(pipe("a red circle", step_cache=spec, **kw).latents, pipe("a red circle", **kw).latents)
    out = pipe("a red circle", step_cache="magcache:10", **kw)
    assert out.settings["step_cache"] == "magcache:10" and out.settings["stats"]["dit_forwards_skipped"] > 0
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a step-cache calibration"):
        pipe("a red circle", step_cache="teacache", **kw)


def test_the_demo_calibration_ships_with_the_package(monkeypatch, tmp_path):
    """Both DiTs a demo video runs through a calibrated cache have their file in the package: the main one and the
    continuation expert of a long video's later windows (a long video with TeaCache / MagCache runs)."""
    import openwan
    monkeypatch.setenv("OPENWAN_STEP_CACHE_DIR", str(tmp_path))            # nothing of the user's cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    pipe = openwan.load_pipeline("demo", progress=False)
    for dit in (pipe.dit, pipe.c.dit_continue):
        key = store.model_key(dit)
        assert (store.PACKAGE_DIR / f"{key}.json").is_file()
        cal = store.load_calibration(store.PACKAGE_DIR / f"{key}.json")
        assert cal["model"] == key and len(cal["mag_ratios"]) == cal["steps"]
    for cache in ("magcache:0.5", "teacache:0.5"):
        out = pipe("a red square bouncing left and right", frame_num=65, sample_steps=10, seed=0,
                   output_type="latent", step_cache=cache)
        assert out.settings["long_video"]["expert"] and out.settings["stats"]["dit_forwards_skipped"] > 0


def test_names_and_thresholds():
    for name in ("easycache", "teacache", "magcache", "fbcache"):
        assert parse_step_cache(name).name == name
        assert str(parse_step_cache(f"{name.upper()}:0.3")) == f"{name}:0.3"
    with pytest.raises(ValueError, match="unknown step cache 'fastest'.*teacache, magcache, fbcache"):
        parse_step_cache("fastest")
    with pytest.raises(ValueError, match="threshold must be a number >= 0"):
        parse_step_cache("magcache:-0.1")
    assert str(parse_step_cache("easycache:0.5:0.4")) == "easycache:0.5:0.4"
    assert parse_step_cache("magcache:0.1:0.3").warmup == 0.3 and parse_step_cache("magcache:0.1").warmup is None
    import openwan.caches as caches
    assert parse_step_cache("default") == parse_step_cache(caches.DEFAULT_STEP_CACHE) is not None
    for bad in ("easycache:0.1:1", "easycache:0.1:x", "easycache:0.1:-0.1"):
        with pytest.raises(ValueError, match="warm-up must be a fraction of the steps in \\[0, 1\\)"):
            parse_step_cache(bad)
    with pytest.raises(TypeError, match="needs a Denoiser"):
        FirstBlockCache(lambda x, step: x, 0.1)


# --------------------------------------------------------------------------- multi-process

@pytest.mark.slow
def test_fbcache_under_sequence_parallel_decides_the_same_on_every_process(tiny_ckpt, tmp_path):
    """Each process holds half the tokens; the block-0 residual change is summed over both before the
    decision, so both skip the same steps (otherwise one would wait in attention for the other forever)."""
    import torch.multiprocessing as mp
    from test_step_cache import _sp_worker      # the same worker, another method

    from openwan.runtime import free_port
    mp.start_processes(_sp_worker, args=(2, free_port(), str(tiny_ckpt), str(tmp_path), "fbcache:0.15"), nprocs=2, join=True,
                       start_method="fork")
    (l0, s0), (l1, s1) = torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt")
    counts = ("dit_forwards", "dit_forwards_skipped")
    assert torch.equal(l0, l1) and [s0[k] for k in counts] == [s1[k] for k in counts]
    assert 0 < s0["dit_forwards_skipped"] < 16, s0       # 8 steps, cond and uncond passes (a mix)


def test_long_video_windows_keep_one_state_each(tiny_ckpt, tmp_path, monkeypatch):
    """Windows over a long video call the DiT once per window per step: each window reuses its own residual
    (MagCache's decisions depend on the step only, so every window skips the same steps)."""
    monkeypatch.setenv("OPENWAN_STEP_CACHE_DIR", str(tmp_path))
    pipe = load_pipeline(tiny_ckpt, variant="tiny-t2v", progress=False)
    store.save_calibration({"model": store.model_key(pipe.dit), "mag_ratios": [1.0] * 4})
    kw = dict(frame_num=17, long_method="windows", long_overlap=1, sample_steps=4, seed=5, output_type="latent")
    plain = pipe("a red circle moving to the right", **kw)
    zero = pipe("a red circle moving to the right", step_cache="magcache:0", **kw)
    assert torch.equal(zero.latents, plain.latents)
    out = pipe("a red circle moving to the right", step_cache="magcache:10", **kw)
    st, calls = out.settings["stats"], plain.settings["stats"]["dit_forwards"] // 4   # DiT calls per step
    assert calls > 2                     # several windows (x cond/uncond)
    # warm-up ceil(0.2 * 4) = 1 step, the last step computed: steps 1 and 2 reuse, in every window
    assert st["dit_forwards"] == 2 * calls and st["dit_forwards_skipped"] == 2 * calls


@pytest.mark.parametrize("cls", [TeaCache, MagCache, FirstBlockCache, PlannedCache])
def test_a_cache_and_its_states_go_when_the_run_does(cls):
    """The cache puts its call in the denoiser under it: no reference cycle may keep the cache (and its states, a
    residual per window) alive after the run until a gc pass, or a long video's continued windows pile them up."""
    import gc
    import weakref
    cal = {"teacache_poly": [0.0, 1.0], "mag_ratios": [1.0] * STEPS}
    gc.disable()
    try:
        d, _ = run(cls, tiny_dit(), 0.5, calibration=cal)
        assert any(st.residual is not None for st in d._states.values())
        gone, den = weakref.ref(d), weakref.ref(d.inner)
        del d
        assert gone() is None and den() is None
    finally:
        gc.enable()


def test_long_video_window_states_wait_on_the_host_off_the_cpu(tiny_ckpt, monkeypatch):
    """A cache over a long video's windows keeps one state per window: on an accelerator they wait on the host
    between their windows' calls (so the device holds one window's, not the video's); on the CPU, and for a call
    that is not windowed, they stay. The round trip keeps every state as it was: the same video."""
    from types import SimpleNamespace

    import openwan.caches.blocks as blocks
    from openwan.long_video import Windowed, plan_windows
    x0, cond = setup()
    den = Denoiser(tiny_dit(), cond, Guidance())
    windowed = PlannedCache(Windowed(Denoiser(tiny_dit(), cond, Guidance()), plan_windows(9, 5, 2)), 0.5)
    cuda = SimpleNamespace(type="cuda")
    assert windowed.host_for(cuda) == torch.device("cpu")
    assert windowed.host_for(torch.device("cpu")) is None and PlannedCache(den, 0.5).host_for(cuda) is None
    from openwan.pipelines.moe import ExpertSwitch
    two = ExpertSwitch(Windowed(Denoiser(tiny_dit(), cond, Guidance()), plan_windows(9, 5, 2)), den, 0.9)
    assert PlannedCache(two, 0.5).host_for(cuda) == torch.device("cpu")          # Wan 2.2 A14B's experts, windowed
    pipe = load_pipeline(tiny_ckpt, variant="tiny-t2v", progress=False)
    kw = dict(frame_num=17, long_method="windows", long_overlap=1, sample_steps=6, seed=5, output_type="latent",
              step_cache="plan:0.5")
    kept = pipe("a red circle moving to the right", **kw)
    moves = []
    real = blocks._move
    monkeypatch.setattr(blocks, "_move", lambda st, device: (moves.append(device), real(st, device)))
    monkeypatch.setattr(blocks.BlockCache, "host_for", lambda self, device: torch.device("cpu"))
    spilled = pipe("a red circle moving to the right", **kw)
    assert torch.equal(spilled.latents, kept.latents)
    calls = spilled.settings["stats"]["dit_forwards"] + spilled.settings["stats"]["dit_forwards_skipped"]
    assert len(moves) == 2 * calls > 0                         # back for each call, out after it


@pytest.mark.parametrize("kind", ["i2v", "vace"])
@pytest.mark.parametrize("cls", [TeaCache, MagCache, FirstBlockCache, PlannedCache])
def test_image_and_vace_conditioning_pass_through_the_cache(kind, cls):
    """i2v (y + CLIP features in embed) and VACE (hints added after blocks 0 and 2, so FirstBlockCache's block 0
    carries its hint): threshold 0 equals no cache bit for bit, a large one skips."""
    torch.manual_seed(0)
    extra = dict(model_type="i2v", in_dim=36, image_dim=32) if kind == "i2v" else dict(vace_layers=(0, 2), vace_in_dim=96)
    cfg = DiTConfig(**{**dict(dim=24, ffn_dim=32, num_heads=2, num_layers=3, text_dim=32, model_type="t2v"), **extra})
    dit = randomize_(WanModel(cfg).eval(), 0, std=0.2)
    x0, cond = setup()
    g = torch.Generator().manual_seed(3)
    if kind == "i2v":
        cond.y, cond.clip_fea = torch.randn(20, 2, 4, 4, generator=g), torch.randn(1, 257, 32, generator=g)
    else:
        cond.vace_context, cond.vace_scale = torch.randn(96, 2, 4, 4, generator=g), 0.7
    cal = {"mag_ratios": [1.0] * STEPS, "teacache_poly": [1.0, 0.0]}
    grid = sampling.euler_sigmas(STEPS, 3.0)
    with torch.no_grad():
        ref = sampling.run(Denoiser(dit, cond), x0, grid, "euler")
        assert torch.equal(sampling.run(cls(Denoiser(dit, cond), 0.0, calibration=cal), x0, grid, "euler"), ref)
        d = cls(Denoiser(dit, cond), 0.5 if cls is PlannedCache else 10.0, calibration=cal)   # plan: a fraction
        sampling.run(d, x0, grid, "euler")
    assert d.stats["dit_forwards_skipped"] > 0


def test_calibrate_long_runs_cover_the_continuation_expert_and_keep_files(tmp_path, monkeypatch):
    """`python -m openwan.caches calibrate --frame_num N` past the native length runs long videos, so the
    continuation expert of their later windows gets its file too; --keep leaves a file already there as it is."""
    from openwan.caches.calibration import main
    from openwan.testing import make_tiny_demo_with_expert, use_demo
    _, with_expert, variant = make_tiny_demo_with_expert(tmp_path / "ck")
    variant = variant.replace(sample=variant.sample.replace(frame_num=13))   # 4 latent frames: room for the overlap
    use_demo(monkeypatch, with_expert, variant)
    pipe = load_pipeline("demo", progress=False)
    main_key, expert_key = store.model_key(pipe.dit), store.model_key(pipe.c.dit_continue)
    out = tmp_path / "cal"
    out.mkdir()
    (out / f"{main_key}.json").write_text("mine")
    args = ["calibrate", "--model", "demo", "--prompt", "a red circle moving to the right", "--steps", "3",
            "--out", str(out)]
    assert main(args + ["--frame_num", "25", "--keep"]) == 0
    assert (out / f"{main_key}.json").read_text() == "mine"                 # kept
    cal = store.load_calibration(out / f"{expert_key}.json")
    assert cal["model"] == expert_key and cal["steps"] == 3 and len(cal["mag_ratios"]) == 3
    (out / f"{expert_key}.json").unlink()
    assert main(args) == 0                                                  # native length: the main DiT only
    assert not (out / f"{expert_key}.json").exists()
    assert store.load_calibration(out / f"{main_key}.json")["model"] == main_key   # without --keep: replaced
