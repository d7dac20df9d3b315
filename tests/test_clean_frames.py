"""The clean-frames objective (openwan.training.clean_frames): TI2V-style training of t2v / i2v / flf2v /
continuation in one model."""
import pytest
import torch

from openwan.training.clean_frames import MODES, CleanFrames
from openwan.training.loss import TimestepSampling, sigma_to_timestep
from openwan.training.objectives import Batch, FlowMatching, ObjectiveContext

EPS = torch.finfo(torch.float32).eps
B, C, F, H, W = 3, 4, 5, 4, 6          # patch (1, 2, 2): 2 x 3 = 6 tokens per latent frame
PER_FRAME = (H // 2) * (W // 2)


class Spy(torch.nn.Module):
    """A model that records its inputs and answers a fixed function of x (so errors are checkable)."""
    patch_size = (1, 2, 2)

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))
        self.calls = []

    def forward(self, x, t, context, **kw):
        self.calls.append((x.detach().clone(), torch.as_tensor(t).clone()))
        return self.scale * x


def make(**kw):
    obj = CleanFrames(TimestepSampling(), **kw)
    obj.setup(ObjectiveContext(config=None, module=Spy(), device=torch.device("cpu")))
    return obj


def batch(extra=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(latent=torch.randn(B, C, F, H, W, generator=g), context=[torch.randn(3, 8)] * B,
                 extra=extra or {})


def gens(seed=0, n=B):
    return [torch.Generator().manual_seed(seed * 1000 + i) for i in range(n)]


def test_t2v_only_is_the_flow_matching_loss():
    b = batch()
    spy_a, spy_b = Spy(), Spy()
    ours, _ = make(t2v=1, i2v=0, flf2v=0, continue_=0)(spy_a, b, gens())
    ref, _ = FlowMatching(TimestepSampling())(spy_b, b, gens())
    assert torch.equal(spy_a.calls[0][0], spy_b.calls[0][0])        # the same sigma and noise draws
    assert abs(ours.item() - ref.item()) <= 8 * EPS * ref.item()   # one mean, summed in another order
    t = spy_a.calls[0][1]
    assert t.shape == (B, F * PER_FRAME) and bool((t == t[:, :1]).all())


@pytest.mark.parametrize("mode", ["i2v", "flf2v", "continue"])
def test_given_frames_are_clean_at_timestep_zero_and_out_of_the_loss(mode):
    still = torch.randn(B, C, 1, H, W)
    b = batch({"last_still": still})
    shares = {m: float(m == mode) for m in MODES}
    shares["continue_"] = shares.pop("continue")
    obj = make(**shares, max_prefix=3)
    spy = Spy()
    loss, _ = obj(spy, b, gens())
    x, t = spy.calls[0]
    # replay the draws: sigma, noise, then mode and k from each sample's generator
    for i, g in enumerate(gens()):
        sigma = TimestepSampling().sample(1, g)[0]
        noise = torch.randn((C, F, H, W), generator=g)
        name, given = obj.mode(g, False, F)
        assert name == mode
        x0 = b.latent[i].clone()
        if mode == "flf2v":
            assert given == [0, F - 1]
            x0[:, -1:] = still[i]
        elif mode == "i2v":
            assert given == [0]
        else:
            assert 1 <= len(given) <= 3 and given == list(range(len(given)))
        assert torch.equal(x[i][:, given], x0[:, given])                       # clean, exactly
        noisy = [j for j in range(F) if j not in given]
        expect = (1 - sigma) * x0[:, noisy].double() + sigma * noise[:, noisy].double()
        assert (x[i][:, noisy].double() - expect).abs().max() <= 4 * EPS * expect.abs().max()
        tt = t[i].view(F, PER_FRAME)
        assert bool((tt[given] == 0).all()) and bool((tt[noisy] == sigma_to_timestep(sigma)).all())
    # the loss does not see the given frames: change the prediction there and nothing moves
    class Shift(Spy):
        def forward(self, x, t, context, **kw):
            out = super().forward(x, t, context)
            out = out.clone()
            out[:, :, 0] += 100.0                               # frame 0 is given in every mode here
            return out
    loss2, _ = obj(Shift(), b, gens())
    assert torch.equal(loss, loss2)


def test_mid_windows_always_continue_and_shares_follow_the_config():
    obj = make(t2v=0.4, i2v=0.3, flf2v=0.1, continue_=0.2, max_prefix=3)
    n = 4000
    counts = dict.fromkeys(MODES, 0)
    for s in range(n):
        g = torch.Generator().manual_seed(s)
        counts[obj.mode(g, False, F)[0]] += 1
        name, given = obj.mode(torch.Generator().manual_seed(s), True, F)
        assert name == "continue" and 1 <= len(given) <= 3
    for m, p in zip(MODES, (0.4, 0.3, 0.1, 0.2)):
        sd = (n * p * (1 - p)) ** 0.5
        assert abs(counts[m] - n * p) <= 5 * sd, (m, counts)          # 5 binomial standard deviations


def test_focus_weights_the_object_and_is_the_plain_loss_when_off():
    """focus: a position's weight grows with its distance from its frame's background, capped at 1 + focus; a
    flat latent (all background) weighs 1 everywhere, so its weighted loss equals the unweighted one."""
    obj = make(t2v=1, i2v=0, flf2v=0, continue_=0, focus=3.0, focus_scale=0.5)
    x0 = torch.zeros(1, C, F, H, W)
    x0[0, :, :, 1, 2] = 2.0                        # an "object" at one position of every frame: RMS distance 2
    x0[0, :, :, 0, 0] = 0.25                       # a faint one: RMS 0.25 -> half the scale
    w = obj.weights(x0)
    assert w.shape == (1, 1, F, H, W)
    assert bool((w[0, 0, :, 1, 2] == 4.0).all()) and bool((w[0, 0, :, 0, 0] == 2.5).all())
    assert int((w == 1).sum()) == F * (H * W - 2)
    flat = Batch(latent=torch.full((B, C, F, H, W), 0.3), context=[torch.randn(3, 8)] * B, extra={})
    plain, _ = make(t2v=1, i2v=0, flf2v=0, continue_=0)(Spy(), flat, gens())
    focused, _ = obj(Spy(), flat, gens())
    assert abs(plain.item() - focused.item()) <= 8 * EPS * plain.item()
    # the loss is the weighted mean, replayed by hand from each sample's draws
    b = Batch(latent=x0.expand(B, -1, -1, -1, -1).clone(), context=[torch.randn(3, 8)] * B, extra={})
    spy = Spy()
    loss, _ = obj(spy, b, gens())
    expect = 0.0
    for i, g in enumerate(gens()):
        sigma = TimestepSampling().sample(1, g)[0].double()
        noise = torch.randn((C, F, H, W), generator=g).double()
        x_t = (1 - sigma) * x0[0].double() + sigma * noise
        err = (0.5 * x_t - (noise - x0[0].double())).pow(2)
        expect += float((err * w[0].double()).sum() / (w.double().sum() * C)) / B
    assert abs(loss.item() - expect) <= 16 * EPS * expect
    with pytest.raises(ValueError, match="focus"):
        CleanFrames(focus=-1)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="mode shares"):
        CleanFrames(t2v=0, i2v=0, flf2v=0, continue_=0)
    with pytest.raises(ValueError, match="max_prefix"):
        CleanFrames(max_prefix=0)
    spy = Spy()
    spy.patch_size = (2, 2, 2)
    with pytest.raises(ValueError, match="temporal patch"):
        CleanFrames().setup(ObjectiveContext(config=None, module=spy, device=torch.device("cpu")))


def test_trainer_runs_clean_frames_with_per_sample_tensors(tmp_path):
    """End to end: items carry ``mid`` and ``last_still``; the trainer stacks them into ``batch.extra`` and the
    objective trains a tiny DiT; a resumed run ends with the same weights bit for bit."""
    import dataclasses

    from openwan.configs import get_variant
    from openwan.training.data import InMemoryLatentDataset
    from openwan.training.trainer import Trainer
    dit = dataclasses.replace(get_variant("tiny-t2v").dit, model_type="ti2v")
    g = torch.Generator().manual_seed(0)
    items = [{"latent": torch.randn(dit.in_dim, 3, 4, 4, generator=g), "context": torch.randn(5, dit.text_dim,
                                                                                             generator=g),
              "mid": torch.tensor(i % 2 == 1), "last_still": torch.randn(dit.in_dim, 1, 4, 4, generator=g)}
             for i in range(8)]
    cfg_dit = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dit.to_dict().items()}

    def run(out, stop):
        config = {"model": {"dit": cfg_dit, "dtype": "fp32"}, "optimizer": {"lr": 1e-3},
                  "objective": {"name": "clean_frames", "options": {"t2v": 0.25, "i2v": 0.25, "flf2v": 0.25,
                                                                     "continue": 0.25}},
                  "steps": 4, "stop_at": stop, "batch_size": 4, "checkpoint_every": 2, "output_dir": str(out),
                  "seed": 3, "resume": "auto", "progress": False, "precision": "fp32"}
        tr = Trainer(config, dataset=InMemoryLatentDataset(items), device="cpu")
        tr.train()
        return tr
    full = run(tmp_path / "a", None)
    half = {k: v.clone() for k, v in run(tmp_path / "b", 2).model.state_dict().items()}
    resumed = run(tmp_path / "b", None)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], half[k]) for k in a)          # steps 3-4 trained something


def test_context_noise_moves_only_the_continued_frames_toward_noise():
    """context_noise: a continuation's given frames are x0 moved toward fresh noise by a fraction in [0, c] (timestep
    still 0 on them); the frames to make, the other modes and every earlier draw are as without it."""
    b = batch()
    plain, noisy = Spy(), Spy()
    shares = dict(t2v=0, i2v=0, flf2v=0, continue_=1, max_prefix=2)
    loss_a, _ = make(**shares)(plain, b, gens(3))
    loss_b, _ = make(**shares, context_noise=0.2)(noisy, b, gens(3))
    (xa, ta), (xb, tb) = plain.calls[0], noisy.calls[0]
    assert torch.equal(ta, tb)                                         # timestep 0 on the given tokens still
    given = (ta.reshape(B, F, PER_FRAME) == 0).all(2)                  # [B, F]
    assert given[:, 0].all() and not given.all()
    for i in range(B):
        g, m = given[i], ~given[i]
        assert torch.equal(xa[i][:, m], xb[i][:, m])                   # the frames to make: the same draws
        assert torch.equal(xa[i][:, g], b.latent[i][:, g])             # without it the given frames are x0
        d = (xb[i][:, g] - b.latent[i][:, g]).abs()
        assert 0 < float(d.max()) <= 0.2 * float((b.latent[i][:, g].abs() + 6).max())   # |s (eps - x0)|, |eps| < 6
    assert loss_a.item() == loss_b.item()                              # the loss covers the frames to make only
    with pytest.raises(ValueError, match="context_noise"):
        make(context_noise=1.5)
    t2v_a, t2v_b = Spy(), Spy()                                         # another mode: untouched
    make(t2v=1, i2v=0, flf2v=0, continue_=0)(t2v_a, b, gens(3))
    make(t2v=1, i2v=0, flf2v=0, continue_=0, context_noise=0.2)(t2v_b, b, gens(3))
    assert torch.equal(t2v_a.calls[0][0], t2v_b.calls[0][0])


def test_context_timestep_tells_the_model_the_given_frames_noise_level():
    """context_timestep: the same inputs as context_noise alone, and the given frames' tokens see floor(1000 x the
    drawn fraction) (the fraction replayed from the same generators) instead of 0; the others the step's t."""
    b = batch()
    shares = dict(t2v=0, i2v=0, flf2v=0, continue_=1, max_prefix=2)
    quiet, told = Spy(), Spy()
    loss_a, _ = make(**shares, context_noise=0.3)(quiet, b, gens(4))
    obj = make(**shares, context_noise=0.3, context_timestep=True)
    loss_b, _ = obj(told, b, gens(4))
    (xa, ta), (xb, tb) = quiet.calls[0], told.calls[0]
    assert torch.equal(xa, xb) and loss_a.item() == loss_b.item()     # the same draws, the same loss
    rng = gens(4)
    sigma = obj.draw(b, rng)[1]
    for i, g in enumerate(rng):
        _, given = obj.mode(g, False, F)
        frac = 0.3 * float(torch.rand(1, generator=g, dtype=torch.float64))
        ti, tq = tb[i].reshape(F, PER_FRAME), ta[i].reshape(F, PER_FRAME)
        assert bool((ti[given] == int(frac * 1000)).all()) and bool((tq[given] == 0).all())
        rest = [f for f in range(F) if f not in given]
        assert bool((ti[rest] == sigma_to_timestep(sigma[i:i + 1])[0]).all())
    with pytest.raises(ValueError, match="context_noise > 0"):
        make(context_timestep=True)
    with pytest.raises(ValueError, match="true or false"):
        make(context_noise=0.1, context_timestep=1)


def test_rolling_puts_the_frames_to_make_on_the_samplers_ladder():
    """rolling: a continuation sample's frames to make on the noise ladder a rolling long video gives them (the
    oldest nearly clean, one rung of the shifted grid apart, each frame's tokens at its own timestep), x_t each
    frame's own (1 - s) x0 + s eps; ramp caps the ladder; rolling 0 changes no draw."""
    b = batch()
    shares = dict(t2v=0, i2v=0, flf2v=0, continue_=1, max_prefix=2)
    plain, rolled = Spy(), Spy()
    make(**shares)(plain, b, gens(5))
    obj = make(**shares, rolling=1.0, ramp=0.0, rolling_shift=3.0)
    obj(rolled, b, gens(5))
    (xa, _), (xb, tb) = plain.calls[0], rolled.calls[0]
    for i, g in enumerate(gens(5)):                 # replay: sigma, noise, mode and k, then the ladder
        TimestepSampling().sample(1, g)
        noise = torch.randn((C, F, H, W), generator=g)
        _, given = obj.mode(g, False, F)
        m = F - len(given)
        ladder = obj.ladder(g, m)
        u = ladder / (3 - 2 * ladder)                           # the shift undone: (j + 1 - q) / m, oldest first
        steps = (u - u[0]) * m - torch.arange(m, dtype=torch.float64)
        # float64 throughout: the shift and its inverse a few ulps of u (<= 1) each, times m
        assert float(steps.abs().max()) <= 16 * m * torch.finfo(torch.float64).eps and 0 < float(u[0]) <= 1 / m
        rest = [f for f in range(F) if f not in given]
        tt = tb[i].reshape(F, PER_FRAME)
        assert bool((tt[given] == 0).all())
        x0 = b.latent[i].double()
        for j, f in enumerate(rest):
            assert bool((tt[f] == sigma_to_timestep(ladder[j:j + 1])[0]).all())
            expect = (1 - ladder[j]) * x0[:, f] + ladder[j] * noise[:, f].double()
            assert (xb[i][:, f].double() - expect).abs().max() <= 4 * EPS * expect.abs().max()
        assert torch.equal(xb[i][:, given], xa[i][:, given])      # the given frames as without it
    capped = make(**shares, rolling=1.0, ramp=1.0)              # the ramp: the ladder capped, still in order
    for k in range(20):
        lv = capped.ladder(torch.Generator().manual_seed(k), 4)
        assert bool((lv[1:] >= lv[:-1]).all()) and 0 <= float(lv.min()) and float(lv.max()) <= 1
    off = make(**shares, rolling=0.0)
    assert all(off.ladder(torch.Generator().manual_seed(k), 4) is None for k in range(5))
    with pytest.raises(ValueError, match="rolling"):
        make(rolling=1.5)
