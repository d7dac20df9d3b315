"""Flow-matching grids and solvers: golden vectors of the reference, diffusers parity, ODE checks."""
import json
import math

import numpy as np
import pytest
import torch
from bounds import EPS, fp32_bound

from openwan import sampling
from openwan.sampling import (
    DPMPP2MSolver, EulerSolver, UniPCSolver, add_noise, cfg, dpmpp_sigmas, make_solver, sample,
    shift_sigmas, sigmas_for, sigmas_for_strength, timesteps_from_sigmas, unipc_sigmas,
)


def fake_model(x, t, sigma):
    """The reference's fake model: v(x, t) = tanh(x) * (t / 1000) - 0.3 x, t the integer timestep."""
    return torch.tanh(x) * (t / 1000) - 0.3 * x


def _grid_entries(reference_dir):
    grids = json.loads((reference_dir / "solver_grids.json").read_text())
    for key, g in grids.items():
        steps, shift = key.split("_")
        yield int(steps), float(shift), g


def _solver_file(reference_dir, steps, shift):
    from safetensors.torch import load_file
    return load_file(str(reference_dir / f"solver_{steps}_{str(float(shift)).replace('.', 'p')}.safetensors"))


# ----------------------------------------------------------------------------- reference golden data

def test_grids_equal_reference(reference_dir):
    entries = list(_grid_entries(reference_dir))
    assert len(entries) >= 4
    for steps, shift, g in entries:
        for ours, name in ((unipc_sigmas(steps, shift), "unipc"), (dpmpp_sigmas(steps, shift), "dpmpp")):
            ref_sigmas = torch.tensor(g[f"{name}_sigmas"], dtype=torch.float64)
            assert ours.shape == ref_sigmas.shape == (steps + 1,)
            assert ours[-1] == 0
            # the reference stores sigmas in float32: ours rounded to float32 are bit-identical
            assert torch.equal(ours.float(), ref_sigmas.float()), (steps, shift, name)
            assert (ours - ref_sigmas).abs().max() <= 1e-6
            assert timesteps_from_sigmas(ours[:-1]).tolist() == g[f"{name}_timesteps"], (steps, shift, name)
        assert g["unipc_timesteps"][0] == 999 and g["dpmpp_timesteps"][0] == 1000


@pytest.mark.parametrize("steps,shift", [(50, 5.0), (40, 3.0), (30, 16.0), (10, 8.0)])
def test_full_solves_match_reference(reference_dir, steps, shift):
    f = _solver_file(reference_dir, steps, shift)
    x = f["in.x"]
    for solver, grid, key in (("unipc", unipc_sigmas, "out.unipc"), ("dpm++", dpmpp_sigmas, "out.dpmpp")):
        out = sample(fake_model, x, grid(steps, shift), solver)
        assert out.dtype == x.dtype and out.shape == x.shape
        err = (out - f[key]).abs().max().item()
        # the reference ran on another CPU: fp32 rounding of the same steps differs by a few ulps there (vector
        # width, fused multiply-add), so the bound is 10 ulps of the largest value (~3.8 -> 4.5e-6; the README's
        # 5e-6). A wrong coefficient or a swapped solver is off by > 1e-4 (checked below).
        bound = 10 * torch.finfo(torch.float32).eps * f[key].abs().max().item()
        assert err <= bound, (solver, steps, shift, err, bound)
    # the two solvers really differ (the comparison above would catch a swapped solver)
    assert (f["out.unipc"] - f["out.dpmpp"]).abs().max() > 1e-4


# ----------------------------------------------------------------------------- diffusers parity

DIFFUSERS_CASES = [(50, 5.0), (40, 3.0), (30, 16.0)]


def _x_start():
    return torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0))


def _run_diffusers(scheduler, x):
    for t in scheduler.timesteps:
        v = fake_model(x, t.reshape(1), None)
        x = scheduler.step(v, t, x, return_dict=False)[0]
    return x


def solve_bound(expected):
    """diffusers' solvers run the same fp32 formulas on the same float32 grid; only the per-step coefficients
    (expm1 / log of the grid: vectorized here, on 0-d tensors there) may round differently on another CPU, as the
    reference's did (test_full_solves_match_reference, the README's 'a few fp32 ulps'): 10 ulps of the largest value
    (|x| <= 2.6: 3.1e-6; equal bit for bit here). The order-1 solver is 1e-2 off, DPM++ on UniPC's grid 1e-3."""
    return fp32_bound(expected, ulps=10)


def _unshift(s, shift):
    """Inverse of the time shift: sigma = s' / (shift - (shift - 1) s')."""
    return s / (shift - (shift - 1) * s)


@pytest.mark.parametrize("steps,shift", DIFFUSERS_CASES)
def test_unipc_matches_diffusers(reference_dir, steps, shift):
    diffusers = pytest.importorskip("diffusers")
    ref = json.loads((reference_dir / "solver_grids.json").read_text())[f"{steps}_{shift}"]
    ours = unipc_sigmas(steps, shift)
    assert timesteps_from_sigmas(ours[:-1]).tolist() == ref["unipc_timesteps"]
    assert torch.equal(ours.float(), torch.tensor(ref["unipc_sigmas"], dtype=torch.float32))

    kw = dict(num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True,
              flow_shift=shift, solver_order=2, solver_type="bh2", predict_x0=True,
              lower_order_final=True, final_sigmas_type="zero")
    # Feeding diffusers the reference's unshifted sigmas makes its grid identical to ours.
    sched = diffusers.UniPCMultistepScheduler(**kw)
    sched.set_timesteps(sigmas=np.linspace(sampling._UNIPC_SIGMA_MAX, 0.0, steps + 1)[:-1])
    assert torch.equal(sched.sigmas, ours.float())
    assert torch.equal(sched.timesteps, timesteps_from_sigmas(ours[:-1]))
    x = _x_start()
    expected = _run_diffusers(sched, x.clone())
    got = sample(fake_model, x, ours, "unipc")
    assert (got - expected).abs().max().item() <= solve_bound(expected)

    # diffusers' own grid (set_timesteps(steps)) is linspace(1, 1/1000, N+1)[:-1] before the
    # shift; the reference's is linspace(0.999, 0, N+1)[:-1]: every unshifted sigma is exactly
    # 0.001 larger (the first is 1 - 1e-6 * shift after diffusers' guard against log(0)).
    native = diffusers.UniPCMultistepScheduler(**kw)
    native.set_timesteps(steps)
    gap = _unshift(native.sigmas[:-1].double(), shift) - _unshift(ours[:-1], shift)
    # diffusers' guard moves the first sigma by 1e-6 (its constant) and its float32 grid rounds each by <= eps / 2;
    # unshifting scales both by its slope, <= shift (at sigma 1): 3.4e-6 (shift 3) .. 1.8e-5 (shift 16), of which
    # the guard's 1.6e-5 is exact, not rounding; << the 1e-3 gap
    assert (gap - 1e-3).abs().max().item() <= shift * (1e-6 + EPS)
    assert (native.sigmas.double() - ours).abs().max() <= 1e-3 * shift   # the shift's slope is <= shift


@pytest.mark.parametrize("steps,shift", DIFFUSERS_CASES)
def test_dpmpp_matches_diffusers(reference_dir, steps, shift):
    diffusers = pytest.importorskip("diffusers")
    ref = json.loads((reference_dir / "solver_grids.json").read_text())[f"{steps}_{shift}"]
    ours = dpmpp_sigmas(steps, shift)
    assert timesteps_from_sigmas(ours[:-1]).tolist() == ref["dpmpp_timesteps"]
    assert torch.equal(ours.float(), torch.tensor(ref["dpmpp_sigmas"], dtype=torch.float32))

    kw = dict(num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True,
              flow_shift=shift, solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint",
              lower_order_final=True, final_sigmas_type="zero")
    sched = diffusers.DPMSolverMultistepScheduler(**kw)
    sched.set_timesteps(steps)
    # diffusers' DPM++ flow grid is shift(1 - linspace(1, 1/1000)) reversed, i.e. it starts at
    # shift(0.999), not at 1 like the reference's DPM++ grid. It is the reference's *UniPC* grid
    # up to float rounding; against the DPM++ grid the unshifted gap is 0.001 * sigma.
    native = sched.sigmas.double()
    # diffusers rounds its float64 grid to float32 once (1/2 ulp of sigma < 1: <= 3e-8), and the reference's grid
    # starts at float32(0.999) = 0.999 + 1.3e-8 (a third of that at most after the shift): < EPS / 2 (6e-8); the
    # DPM++ grid (ours) is 1e-3 x shift off
    assert (native - unipc_sigmas(steps, shift)).abs().max() <= EPS / 2
    assert (native - ours).abs().max() <= 1e-3 * shift
    assert torch.equal(sched.timesteps, timesteps_from_sigmas(unipc_sigmas(steps, shift)[:-1]))

    x = _x_start()
    # (a) on diffusers' own grid our DPM++ 2M gives its result
    expected = _run_diffusers(sched, x.clone())
    got = sample(fake_model, x, sched.sigmas, "dpm++")
    assert (got - expected).abs().max().item() <= solve_bound(expected)
    # (b) diffusers' set_timesteps takes no sigmas: install the reference grid (sigma 1 first) directly
    sched.set_timesteps(steps)
    sched.sigmas = ours.float()
    sched.timesteps = timesteps_from_sigmas(ours[:-1])
    expected = _run_diffusers(sched, x.clone())
    got = sample(fake_model, x, ours, "dpm++")
    assert (got - expected).abs().max().item() <= solve_bound(expected)


# ----------------------------------------------------------------------------- ODE behaviour

def test_all_solvers_exact_for_a_straight_flow():
    """If the model's x0 prediction is the same everywhere, every solver lands exactly on it."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 3, 4, generator=g)
    noise = torch.randn(2, 3, 4, generator=g)

    def straight(x, t, sigma):             # v such that x - sigma * v == x0 for any x
        return (x - x0) / sigma

    def constant_velocity(x, t, sigma):    # the true velocity of the path (1-s) x0 + s noise
        return noise - x0

    # exact in exact arithmetic; each of the 7 steps rounds the model's v, its x0 = x - sigma v and the solver's
    # combination of x0's (weights of order 1), 8 ulps of the largest |x| per step: 1.8e-5 here, while a wrong
    # solver coefficient leaves a multiple of |x - x0| ~ 1 (a bound ~1e-5 relative to it)
    for solver in sampling.SOLVERS:
        grid = sigmas_for(solver, 7, 5.0)
        start = add_noise(x0, noise, grid[0].item())
        out = sample(straight, start, grid, solver)
        assert (out - x0).abs().max().item() <= fp32_bound(start, x0, terms=7), solver
    euler = sample(constant_velocity, noise.clone(), dpmpp_sigmas(7, 3.0), "euler")
    # x + dsigma v, 7 times: two roundings per step, 2 ulps each (both sides) of max(|x|, |v|): 1.2e-5 here
    assert (euler - x0).abs().max().item() <= fp32_bound(noise, noise - x0, x0, terms=7, ulps=4)
    # and a hand-computed Euler step
    s = EulerSolver(torch.tensor([1.0, 0.25, 0.0]))
    assert torch.allclose(s.step(torch.full((2,), 2.0), torch.ones(2), 0), torch.full((2,), 1 - 0.75 * 2))


def _gaussian_data_model(c):
    """Exact velocity when the data is N(0, c^2): x0_hat = (1-s) c^2 x / ((1-s)^2 c^2 + s^2)."""
    def model(x, t, s):
        x = x.double()
        x0 = (1 - s) * c * c / ((1 - s) ** 2 * c * c + s * s) * x
        return ((x - x0) / s).float()
    return model


def test_solver_orders_of_accuracy():
    """Along the exact ODE x(s) = std(s) z, Euler converges at order 1, DPM++/UniPC at order 2."""
    c, shift = 3.0, 3.0
    model = _gaussian_data_model(c)
    z = torch.linspace(-2, 2, 11)
    errors = {}
    for solver in sampling.SOLVERS:
        errors[solver] = []
        for n in (20, 40, 80):
            grid = sigmas_for(solver, n, shift)
            s0 = grid[0].item()
            exact = c * z / math.sqrt((1 - s0) ** 2 * c * c + s0 * s0)
            errors[solver].append((sample(model, z, grid, solver) - exact).abs().max().item())
    e = errors["euler"]
    assert 1.8 < e[0] / e[1] < 2.1 and 1.8 < e[1] / e[2] < 2.1, e
    u = errors["unipc"]
    assert u[0] / u[1] > 3.5 and u[1] / u[2] > 3.5, u
    d = errors["dpm++"]
    assert d[1] / d[2] > 3.0, d
    assert u[1] < e[1] / 10 and d[1] < e[1] / 10, errors


def test_unipc_step_orders_and_corrector():
    """First and last steps are first order; the corrector changes the sample from step 1 on."""
    sig = unipc_sigmas(4, 5.0)
    x = torch.randn(5, generator=torch.Generator().manual_seed(3))
    s = UniPCSolver(sig)
    orders, xs = [], [x]
    for i in range(4):
        x = s.step(fake_model(x, timesteps_from_sigmas(sig[i:i + 1]), None), x, i)
        orders.append(s._last_order)
        xs.append(x)
    assert orders == [1, 2, 2, 1]
    # the final step of any of these solvers returns the x0 prediction of the last model call
    last_x0 = xs[3] - sig[3].float() * fake_model(xs[3], timesteps_from_sigmas(sig[3:4]), None)
    d = DPMPP2MSolver(sig)
    y = xs[0]
    for i in range(4):
        y_in = y
        y = d.step(fake_model(y, timesteps_from_sigmas(sig[i:i + 1]), None), y, i)
    y_x0 = y_in - sig[3].float() * fake_model(y_in, timesteps_from_sigmas(sig[3:4]), None)
    # x - sigma v: two roundings, 2 ulps each (both sides) of the larger of |x|, |sigma v|: 3.3e-7 here (the final
    # step to sigma 0 is x0 exactly: (0 / sigma) x + (e^-inf - 1) (-x0)); a step that is not x0 is off by
    # ~|sigma v| ~ 0.1
    for got, x_in, want in ((y, y_in, y_x0), (xs[4], xs[3], last_x0)):
        assert (got - want).abs().max().item() <= fp32_bound(x_in, x_in - want, terms=2, ulps=2)


# ----------------------------------------------------------------------------- grids and helpers

def test_shift_formula():
    assert shift_sigmas(0.5, 3.0) == pytest.approx(0.75)          # 1.5 / (1 + 2 * 0.5)
    assert shift_sigmas(0.2, 5.0) == pytest.approx(1.0 / 1.8)      # 1.0 / (1 + 4 * 0.2)
    s = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.equal(shift_sigmas(s, 1.0), s)
    out = shift_sigmas(s, 8.0)
    assert isinstance(out, torch.Tensor) and out[0] == 0 and out[-1] == 1
    assert (out >= s).all() and (out[1:] > out[:-1]).all()
    a = shift_sigmas(np.array([0.25]), 2.0)
    assert isinstance(a, np.ndarray) and a[0] == pytest.approx(0.5 / 1.25)
    with pytest.raises(ValueError, match="shift"):
        shift_sigmas(s, 0.0)


def test_grid_shapes_and_timesteps():
    u = unipc_sigmas(50, 5.0)
    assert u.dtype == torch.float64 and u.shape == (51,) and u[-1] == 0
    assert (u[1:] < u[:-1]).all()
    assert timesteps_from_sigmas(u[:1]).item() == 999
    d = dpmpp_sigmas(50, 5.0)
    assert d[0] == 1.0 and timesteps_from_sigmas(d[:1]).item() == 1000
    t = timesteps_from_sigmas(torch.tensor([0.5, 0.0129999, 0.0], dtype=torch.float64))
    assert t.dtype == torch.int64 and t.tolist() == [500, 12, 0]   # floor, not round
    assert torch.equal(sigmas_for("euler", 8, 2.0), dpmpp_sigmas(8, 2.0))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown solver"):
        sample(fake_model, torch.zeros(2), unipc_sigmas(3, 5.0), "ddim")
    with pytest.raises(ValueError, match="unknown solver"):
        make_solver("UniPC++", unipc_sigmas(3, 5.0))
    with pytest.raises(ValueError, match="unknown solver"):
        sigmas_for(None, 3, 5.0)
    assert isinstance(make_solver("DPMPP", unipc_sigmas(3, 5.0)), DPMPP2MSolver)
    with pytest.raises(ValueError, match="steps"):
        unipc_sigmas(0, 5.0)
    with pytest.raises(ValueError, match="shift"):
        dpmpp_sigmas(10, -1.0)
    with pytest.raises(ValueError, match="decreasing"):
        sample(fake_model, torch.zeros(2), torch.tensor([0.5, 0.7, 0.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sample(fake_model, torch.zeros(2), torch.tensor([1.5, 0.0]))
    with pytest.raises(ValueError, match="1-D grid"):
        sample(fake_model, torch.zeros(2), torch.tensor([]))
    with pytest.raises(ValueError, match="1-D grid"):
        sample(fake_model, torch.zeros(2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="shape"):
        sample(lambda x, t, s: torch.zeros(3), torch.zeros(2), unipc_sigmas(3, 5.0))
    s = UniPCSolver(unipc_sigmas(3, 5.0))
    with pytest.raises(ValueError, match="in order"):
        s.step(torch.zeros(2), torch.zeros(2), 1)
    with pytest.raises(ValueError, match="strength"):
        sigmas_for_strength(10, 5.0, 1.5)


def test_sample_driver_calls_model_with_int_timesteps_and_keeps_dtype():
    grid = unipc_sigmas(5, 5.0)
    seen, steps = [], []

    def model(x, t, sigma):
        assert t.dtype == torch.int64 and t.shape == (1,)
        assert isinstance(sigma, float)
        seen.append((int(t), sigma))
        return fake_model(x.float(), t, sigma).to(x.dtype)

    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    out = sample(model, x, grid, "unipc", callback=lambda i, t, xi: steps.append((i, t, xi.dtype)))
    assert out.dtype == torch.bfloat16
    assert [t for t, _ in seen] == timesteps_from_sigmas(grid[:-1]).tolist()
    assert [s for _, s in seen] == grid[:-1].float().tolist()
    assert steps == [(i, t, torch.bfloat16) for i, (t, _) in enumerate(seen)]


def test_cfg_and_add_noise():
    c, u = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    assert torch.equal(cfg(c, u, 5.0), torch.tensor([0.5 + 5 * 0.5, -1.0 + 5 * 3.0]))
    assert torch.equal(cfg(c, u, 1.0), c)
    x0, n = torch.full((2, 3), 2.0), torch.full((2, 3), -1.0)
    assert torch.allclose(add_noise(x0, n, 0.25), torch.full((2, 3), 0.75 * 2 - 0.25))
    per_item = add_noise(x0, n, torch.tensor([0.0, 1.0]))
    assert torch.equal(per_item[0], x0[0]) and torch.equal(per_item[1], n[1])
    assert add_noise(x0.half(), n.half(), 0.5).dtype == torch.float16
    with pytest.raises(ValueError, match="one per item"):
        add_noise(x0, n, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="differ"):
        add_noise(x0, n[:1], 0.5)


def test_sigmas_for_strength():
    full = unipc_sigmas(50, 5.0)
    assert torch.equal(sigmas_for_strength(50, 5.0, 1.0), full)
    assert sigmas_for_strength(50, 5.0, 0.0).tolist() == [0.0]
    tail = sigmas_for_strength(50, 5.0, 0.5)
    k = len(full) - len(tail)
    assert torch.equal(tail, full[k:]) and tail[0] <= 0.5 < full[k - 1]
    # shift 5 maps an unshifted sigma of 1/6 to 0.5: the steps with 0.999 (1 - i/50) <= 1/6 remain
    assert len(tail) - 1 == sum(0.999 * (1 - i / 50) <= 1 / 6 for i in range(50)) == 8
    assert torch.equal(sigmas_for_strength(10, 3.0, 0.7, solver="dpm++"),
                       dpmpp_sigmas(10, 3.0)[dpmpp_sigmas(10, 3.0) <= 0.7])
    # SDEdit with a straight-flow model returns the clean input exactly
    x0 = torch.randn(4, generator=torch.Generator().manual_seed(2))
    start = add_noise(x0, torch.randn(4), tail[0].item())
    out = sample(lambda x, t, s: (x - x0) / s, start, tail, "unipc")
    # as test_all_solvers_exact_for_a_straight_flow: 8 ulps of the largest |x| per step (8 steps): 9.5e-6 here
    assert (out - x0).abs().max().item() <= fp32_bound(start, x0, terms=len(tail) - 1)
    # strength 0: a grid without steps, the input comes back unchanged and the model is not called
    calls = []
    out = sample(lambda x, t, s: calls.append(t) or x, start, sigmas_for_strength(50, 5.0, 0.0), "unipc")
    assert torch.equal(out, start) and calls == []


# ----------------------------------------------------------------------------- the step protocol

def test_solver_table_is_the_one_place():
    """Every solver name maps to (stepper class, default grid); sigmas_for and make_solver read it."""
    assert set(sampling.SOLVERS) >= {"unipc", "dpm++", "euler", "consistency"}
    for name, (cls, grid) in sampling.SOLVERS.items():
        assert torch.equal(sigmas_for(name, 6, 3.0), grid(6, 3.0))
        assert type(make_solver(name, grid(6, 3.0))) is cls
    assert type(make_solver("dpmpp", dpmpp_sigmas(3, 1.0))) is DPMPP2MSolver      # aliases still work


def test_run_hooks_get_step_x_and_x0_and_post_step_modifies_x():
    grid = dpmpp_sigmas(4, 2.0)
    seen, posts = [], []
    x_in = []

    def denoiser(x, step):
        x_in.append(x.clone())
        return torch.tanh(x) * (step.t / 1000) - 0.3 * x

    def post_step(step, x, x0):
        posts.append(step.i)
        return x + 1.0 if step.i == 1 else None            # modify after step 1 only

    def on_step(step, x, x0):
        seen.append((step, x.clone(), x0.clone()))

    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    out = sampling.run(denoiser, x, grid, "euler", on_step=on_step, post_step=post_step)
    sig = grid.float().tolist()
    ts = timesteps_from_sigmas(grid[:-1]).tolist()
    assert posts == [0, 1, 2, 3] and len(seen) == 4
    for i, (step, xi, x0) in enumerate(seen):
        assert (step.i, step.n, int(step.t), step.sigma, step.sigma_next) == (i, 4, ts[i], sig[i], sig[i + 1])
        v = denoiser(x_in[i], step)
        assert torch.equal(x0, x_in[i] - sig[i] * v)                      # the x0 prediction of that step
        euler = x_in[i] + (torch.tensor(sig[i + 1]) - torch.tensor(sig[i])) * v
        assert torch.equal(xi, euler + 1.0 if i == 1 else euler)           # on_step sees the modified sample
        if i + 1 < 4:
            assert torch.equal(x_in[i + 1], xi)                            # ... and so does the next model call
    assert torch.equal(out, seen[-1][1])


def test_sample_keeps_legacy_callback_and_takes_hooks():
    grid = unipc_sigmas(3, 5.0)
    calls, x0s = [], []
    x = torch.randn(4, generator=torch.Generator().manual_seed(0))
    out = sample(fake_model, x, grid, "unipc", callback=lambda i, t, xi: calls.append((i, t)),
                 on_step=lambda step, xi, x0: x0s.append(step.i))
    assert calls == list(enumerate(timesteps_from_sigmas(grid[:-1]).tolist())) and x0s == [0, 1, 2]
    assert torch.equal(out, sample(fake_model, x, grid, "unipc"))


def test_explicit_timestep_list_euler_and_consistency_by_hand():
    """A few-step student's timesteps [999, 750, 500, 250]: the grid is t/1000 (+0), the model sees exactly
    those timesteps; Euler and "denoise to x0, re-noise" (with a seeded generator) against hand arithmetic."""
    ts = [999, 750, 500, 250]
    grid = sampling.sigmas_from_timesteps(ts)
    assert grid.tolist() == [0.999, 0.75, 0.5, 0.25, 0.0]
    assert timesteps_from_sigmas(grid[:-1]).tolist() == ts
    assert all(int(np.float64(t / 1000) * 1000) == t for t in range(1001))   # exact for every timestep
    x0_true = torch.tensor([0.5, -1.0, 2.0])
    start = torch.tensor([1.0, 0.3, -0.7])

    def model(x, t, sigma):            # a straight flow towards x0_true: v = (x - x0) / sigma
        return (x - x0_true) / sigma

    seen = []
    out = sample(lambda x, t, s: seen.append(int(t)) or model(x, t, s), start, grid, "euler")
    assert seen == ts
    x = start.clone()
    for s0, s1 in zip(grid.float().tolist(), grid.float().tolist()[1:]):
        x = x + (torch.tensor(s1) - torch.tensor(s0)) * model(x, None, s0)
    assert torch.equal(out, x)
    # a straight flow: Euler is exact up to rounding, a few fp32 ulps of the values per step (4 steps)
    assert (out - x0_true).abs().max() <= 4 * 4 * torch.finfo(torch.float32).eps * x0_true.abs().max()

    gen = torch.Generator().manual_seed(7)
    out = sampling.run(lambda x, step: model(x, step.t, step.sigma), start, grid, "consistency", generator=gen)
    hand, g = start.clone(), torch.Generator().manual_seed(7)
    sig = grid.float()
    for i in range(4):
        x0 = hand - sig[i] * model(hand, None, sig[i].item())
        hand = x0 if i == 3 else (1 - sig[i + 1]) * x0 + sig[i + 1] * torch.randn(3, generator=g)
    assert torch.equal(out, hand)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sampling.sigmas_from_timesteps([500, 750])
