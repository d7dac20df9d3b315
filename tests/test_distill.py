"""Few-step distillation (openwan.training.distill, openwan.distill): trajectories, the objective, presets."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from openwan import sampling
from openwan.configs import DiTConfig
from openwan.models.dit import WanModel
from openwan.training.data import InMemoryLatentDataset
from openwan.training.distill import (
    DistillPreset,
    TrajectoryDistill,
    split_trajectory,
    teacher_grid,
    trajectory_batch,
)
from openwan.training.trainer import Trainer

TINY = dict(dim=24, ffn_dim=32, num_heads=2, num_layers=2, text_dim=32)
TS = [999, 900, 750, 500]
SHAPE = (16, 1, 4, 4)


def teacher(seed=0):
    torch.manual_seed(seed)
    m = WanModel(DiTConfig(**TINY))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m.eval()


def prompts(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(5 + i % 3, 32, generator=g) for i in range(n)], torch.randn(4, 32, generator=g)


def noises(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g)


TEACHER = dict(steps=20, shift=3.0, guide_scale=4.0, solver="unipc")


def dataset(model, n=16, seed=0):
    ctx, null = prompts(n, seed)
    traj = trajectory_batch(model, noises(n, seed + 100), ctx, null, TS, **TEACHER)
    return InMemoryLatentDataset([{"latent": t.flatten(0, 1), "context": c} for t, c in zip(traj, ctx)]), traj


def config(out, **kw):
    base = dict(model={"dit": TINY}, steps=6, batch_size=4, checkpoint_every=0, output_dir=str(out), progress=False,
                optimizer={"lr": 1e-3, "weight_decay": 0.0}, save_final=False,
                objective={"name": "openwan.training.distill:TrajectoryDistill", "timesteps": TS})
    base.update(kw)
    return base


def test_teacher_grid_passes_through_the_student_timesteps():
    grid = teacher_grid(TS, 30, 3.0)
    student = sampling.sigmas_from_timesteps(TS)
    assert all(float(s) in grid.tolist() for s in student)      # exactly on the grid (the final 0 too)
    assert grid[0] == student[0] and (grid[1:] < grid[:-1]).all()
    assert len(grid) - 1 == 30 + 3                              # the 30-step grid plus the 3 inner student points
    assert sampling.timesteps_from_sigmas(student[:-1]).tolist() == TS


def test_trajectory_points_lie_on_the_teacher_run():
    """Euler teacher: restarting the solve at a stored point on the rest of the grid reproduces the final
    sample bit for bit (each stored point is the teacher's state at that sigma, not an estimate)."""
    m = teacher()
    ctx, null = prompts(3)
    x = noises(3, 1)
    kw = dict(steps=12, shift=3.0, guide_scale=4.0, solver="euler")
    traj = trajectory_batch(m, x, ctx, null, TS, **kw)
    assert traj.shape == (3, len(TS) + 1, *SHAPE)
    assert torch.equal(traj[:, 0], x)
    grid = teacher_grid(TS, 12, 3.0, "euler")
    for j, s in enumerate(sampling.sigmas_from_timesteps(TS)[1:-1].tolist(), start=1):
        i = grid.tolist().index(s)

        def den(v, st):
            out = m(torch.cat([v, v]), st.t.expand(6), ctx + [null] * 3).float()
            return sampling.cfg(out[:3], out[3:], 4.0)
        with torch.inference_mode():
            final = sampling.run(den, traj[:, j], grid[i:], "euler")
        assert torch.equal(final, traj[:, -1]), j


def test_split_trajectory_and_mismatched_data_are_clear_errors():
    lat = torch.zeros(2, 5 * 16, 1, 4, 4)
    assert split_trajectory(lat, 16).shape == (2, 5, 16, 1, 4, 4)
    with pytest.raises(ValueError, match="trajectory cache"):
        split_trajectory(torch.zeros(2, 20, 1, 4, 4), 16)
    obj = TrajectoryDistill(None, timesteps=[999, 500])
    from openwan.training.objectives import Batch
    with pytest.raises(ValueError, match="same timesteps"):
        obj(teacher(), Batch(lat, [torch.zeros(5, 32)] * 2), [torch.Generator()] * 2)
    with pytest.raises(ValueError, match="target"):
        TrajectoryDistill(None, target="eps")
    with pytest.raises(TypeError, match="unknown option"):
        TrajectoryDistill(None, bogus=1)


def test_objective_matches_a_hand_computation():
    m = teacher()
    ds, traj = dataset(m, n=4)
    obj = TrajectoryDistill(None, timesteps=TS)
    from openwan.training.objectives import Batch
    rng = [torch.Generator().manual_seed(i) for i in range(4)]
    batch = Batch(torch.stack([ds[i]["latent"] for i in range(4)]), [ds[i]["context"] for i in range(4)])
    loss, _ = obj(m, batch, rng)
    j = [int(torch.randint(4, (1,), generator=torch.Generator().manual_seed(i))) for i in range(4)]
    sig = [t / 1000 for t in TS] + [0.0]
    want = []
    for b in range(4):
        x, nxt = traj[b, j[b]], traj[b, j[b] + 1]
        v = m(x[None], torch.tensor([TS[j[b]]]), [batch.context[b]])[0].float()
        target = (x - nxt) / (torch.tensor(sig[j[b]], dtype=torch.float32) - torch.tensor(sig[j[b] + 1],
                                                                                           dtype=torch.float32))
        want.append((v - target).pow(2).mean())
    want = torch.stack(want).mean()
    # batched vs one-at-a-time forwards: a few float32 ulps of the loss's magnitude
    assert abs(loss.item() - want.item()) <= 64 * torch.finfo(torch.float32).eps * want.item()


def test_rollout_inputs_are_the_students_own_euler_steps():
    m = teacher()
    ds, traj = dataset(m, n=4)
    from openwan.training.objectives import Batch
    batch = Batch(torch.stack([ds[i]["latent"] for i in range(4)]), [ds[i]["context"] for i in range(4)])
    obj = TrajectoryDistill(None, timesteps=TS, rollout=1.0)
    j = torch.tensor([0, 1, 3, 2])
    roll = torch.tensor([True, True, True, False])
    x = obj.student_inputs(m, traj, j, roll, batch)
    sig = [t / 1000 for t in TS] + [0.0]
    assert torch.equal(x[0], traj[0, 0]) and torch.equal(x[3], traj[3, 2])     # j = 0, and a row not rolled out
    for b in (1, 2):
        cur = traj[b, 0]
        for i in range(int(j[b])):
            v = m(cur[None], torch.tensor([TS[i]]), [batch.context[b]])[0].float()
            cur = cur - (torch.tensor(sig[i]) - torch.tensor(sig[i + 1])) * v
        # batched vs one-at-a-time forwards, compounded over <= 3 steps: ulps of the latents' magnitude
        tol = 256 * torch.finfo(torch.float32).eps * cur.abs().max().item()
        assert (x[b] - cur).abs().max().item() <= tol
        assert (x[b] - traj[b, j[b]]).abs().max().item() > 1e3 * tol           # not the teacher's point
    # rollout 0 draws exactly what runs before it drew; 1 rolls every sample out; bad values are named
    rng = lambda: [torch.Generator().manual_seed(i) for i in range(4)]           # noqa: E731
    assert TrajectoryDistill(None, timesteps=TS).draw_rollout(rng()) == [False] * 4
    assert obj.draw_rollout(rng()) == [True] * 4
    with pytest.raises(ValueError, match="rollout"):
        TrajectoryDistill(None, timesteps=TS, rollout=1.5)
    with pytest.raises(ValueError, match="target: next"):
        TrajectoryDistill(None, timesteps=TS, target="x0", rollout=0.5)


def test_resume_with_rollout_is_bit_exact(tmp_path):
    t = teacher()
    ds, _ = dataset(t, n=8)
    obj = {"name": "openwan.training.distill:TrajectoryDistill", "timesteps": TS, "rollout": 0.5}
    kw = dict(ema={"decay": 0.9}, batch_size=4, objective=obj)
    Trainer(config(tmp_path / "a", **kw), model=copy.deepcopy(t), dataset=ds).train()
    Trainer(config(tmp_path / "b", stop_at=3, **kw), model=copy.deepcopy(t), dataset=ds).train()
    Trainer(config(tmp_path / "b", **kw), model=copy.deepcopy(t), dataset=ds).train()
    a = load_file(str(tmp_path / "a/checkpoints/step-00000006/model.safetensors"))
    b = load_file(str(tmp_path / "b/checkpoints/step-00000006/model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _few_step(model, x, ctx, ts, guide=1.0, null=None):
    def den(v, st):
        if guide == 1.0:
            return model(v, st.t.expand(v.shape[0]), ctx).float()
        out = model(torch.cat([v, v]), st.t.expand(2 * v.shape[0]), ctx + [null] * v.shape[0]).float()
        return sampling.cfg(out[:v.shape[0]], out[v.shape[0]:], guide)
    with torch.inference_mode():
        return sampling.run(den, x, sampling.sigmas_from_timesteps(ts), "euler")


def test_loss_falls_and_the_student_beats_the_teacher_at_the_same_few_steps(tmp_path):
    t = teacher()
    ds, traj = dataset(t, n=16)
    student = copy.deepcopy(t).train()
    tr = Trainer(config(tmp_path, steps=150, batch_size=8, schedule={"type": "cosine", "warmup_steps": 5}),
                 model=student, dataset=ds)
    tr.train()
    import csv
    losses = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / "loss.csv"))]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    student.eval()
    # distance to the teacher's many-step CFG samples: training noises and unseen noises / prompts
    ctx, null = prompts(16)
    x = traj[:, 0]
    for noise, c, n, ref in ((x, ctx, null, traj[:, -1]),) + ((lambda c2: (
            noises(8, 7), c2[0], c2[1], trajectory_batch(t, noises(8, 7), c2[0], c2[1], TS, **TEACHER)[:, -1]))(
            prompts(8, 5)),):
        d_student = (_few_step(student, noise, c, TS) - ref).pow(2).mean().sqrt()
        d_teacher = (_few_step(t, noise, c, TS, guide=TEACHER["guide_scale"], null=n) - ref).pow(2).mean().sqrt()
        assert d_student < 0.5 * d_teacher, (d_student, d_teacher)


def test_resume_is_bit_exact(tmp_path):
    t = teacher()
    ds, _ = dataset(t, n=8)
    kw = dict(ema={"decay": 0.9}, schedule={"type": "cosine", "warmup_steps": 1}, grad_accum=2, batch_size=2)
    Trainer(config(tmp_path / "a", **kw), model=copy.deepcopy(t), dataset=ds).train()
    Trainer(config(tmp_path / "b", stop_at=3, **kw), model=copy.deepcopy(t), dataset=ds).train()
    Trainer(config(tmp_path / "b", **kw), model=copy.deepcopy(t), dataset=ds).train()
    for f in ("model", "ema"):
        a = load_file(str(tmp_path / f"a/checkpoints/step-00000006/{f}.safetensors"))
        b = load_file(str(tmp_path / f"b/checkpoints/step-00000006/{f}.safetensors"))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), f
    ref = {k: v for k, v in t.state_dict().items()}
    assert any(not torch.equal(a[k].float(), ref[k].float()) for k in a if k in ref)   # it did train


# ============================================================================ presets

@pytest.fixture(scope="module")
def demo_pipe():
    from openwan.pipelines import load_pipeline
    torch.set_num_threads(1)
    return load_pipeline("demo", progress=False)


def _timesteps_seen(pipe):
    seen = []
    h = pipe.dit.register_forward_pre_hook(lambda mod, args: seen.append(int(args[1].reshape(-1)[0])))
    return seen, h


def test_a_preset_applies_and_is_recorded(demo_pipe, tmp_path):
    from openwan.distill import apply_preset
    pipe = copy.copy(demo_pipe)
    apply_preset(pipe, DistillPreset((999, 500), "euler", 1.0, 3.0))
    seen, h = _timesteps_seen(pipe)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")          # the preset's own settings warn about nothing
            out = pipe("a red circle moving to the right", seed=0, output_type="latent")
    finally:
        h.remove()
    s = out.settings
    assert (s["sample_steps"], s["guide_scale"], s["sample_solver"], s["sample_timesteps"]) == (2, 1.0, "euler",
                                                                                                 [999, 500])
    assert seen == [999, 500]                       # one guidance-free forward per step, at the preset's timesteps
    assert s["step_cache"] == "none" and demo_pipe.defaults().step_cache == "plan:0.5"   # not the demo's cache
    assert pipe.variant.sample.for_task("v2v").guidance == 1.0   # nor v2v's own guidance interval
    assert demo_pipe.defaults().timesteps is None   # the original pipeline is untouched
    with pytest.warns(UserWarning, match="guide scale 1"):
        pipe("a red circle moving to the right", seed=0, guide_scale=5.0, output_type="latent")
    with pytest.warns(UserWarning, match="distilled for 2 steps"):
        out = pipe("a red circle moving to the right", seed=0, sample_steps=8, output_type="latent")
    assert "sample_timesteps" not in out.settings and out.settings["sample_steps"] == 8


def test_presets_travel_in_the_weight_files(tmp_path):
    from openwan.distill import add_preset_metadata, export_student, preset_of
    from openwan.training.checkpoint import export_full
    p = DistillPreset((999, 750, 500), "consistency", 1.0, 5.0)
    f = tmp_path / "lora.safetensors"
    save_file({"a": torch.ones(2)}, str(f), metadata={"openwan_step": "3"})
    assert preset_of(f) is None
    add_preset_metadata(f, p)
    assert preset_of(f) == p and torch.equal(load_file(str(f))["a"], torch.ones(2))
    m = teacher()
    export_full(m.state_dict(), m.config, tmp_path / "final")
    out = export_student(tmp_path / "final", tmp_path / "student.safetensors", p)
    assert preset_of(out) == p
    sd = load_file(str(out))
    assert all(sd[k].dtype == torch.float16 and torch.equal(sd[k], v.half()) for k, v in m.state_dict().items())


LX_WARPED = (1000, 937, 833, 625)     # LightX2V / Self-Forcing: shift 5 of [1000, 750, 500, 250], as integers
CAUSVID_14B = (999, 934, 862, 756, 603, 410, 250, 140, 74)


@pytest.mark.parametrize("name, expected", [
    # published file names -> the sampler settings their publishers run (sources in openwan/distill.py)
    ("Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors", (LX_WARPED, "consistency", 5.0)),
    ("lightx2v_I2V_14B_480p_cfg_step_distill_rank128_bf16.safetensors", (LX_WARPED, "consistency", 5.0)),
    ("wan2.1_t2v_14b_lora_rank64_lightx2v_4step.safetensors", (LX_WARPED, "consistency", 5.0)),
    ("wan2.2_t2v_A14b_high_noise_lora_rank64_lightx2v_4step_1217.safetensors", (LX_WARPED, "euler", 5.0)),
    ("Wan2_2-T2V-A14B_low_noise_lightx2v_4step.safetensors", (LX_WARPED, "euler", 5.0)),
    ("self_forcing_dmd_lora.safetensors", (LX_WARPED, "consistency", 5.0)),
    ("Wan21_T2V_1_3B_Self-Forcing_lora.safetensors", (LX_WARPED, "consistency", 5.0)),
    ("Wan21_CausVid_14B_T2V_lora_rank32_v2.safetensors", (CAUSVID_14B, "unipc", 8.0)),
    ("Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors", ((1000, 757, 522), "consistency", 8.0)),
    ("Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH_fp16.safetensors", (LX_WARPED, "euler", 5.0)),
    ("Wan2.2-Lightning/Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1/high_noise_model.safetensors",
     (LX_WARPED, "euler", 5.0)),
    ("Wan2.2-Lightning/Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1/low_noise_model.safetensors",
     (LX_WARPED, "euler", 5.0)),
    ("Wan2.2-T2V-A14B-4steps-lora-250928/Wan2.2-Lightning/low_noise_model.safetensors", (LX_WARPED, "euler", 5.0)),
    ("loras/high_noise_model.safetensors", None),  # a generic name in a folder that says nothing either
    ("Wan2.2-T2V-A14B/lightning_style.safetensors", None),  # "lightning" alone is no 4-step distill
    ("lightx2v_distill_runs/lightning_wan2.2_4step/style.safetensors", None),  # folders count for generic names only
    ("my_style_lora.safetensors", None),
    ("lightx2v_style.safetensors", None),          # the org name alone is not a distill LoRA
])
def test_community_distill_loras_are_matched_by_name(tmp_path, name, expected):
    from openwan.distill import preset_for
    f = tmp_path / name
    f.parent.mkdir(parents=True, exist_ok=True)
    save_file({"a": torch.ones(1)}, str(f))
    p = preset_for(f)
    if expected is None:
        assert p is None
    else:
        assert (p.timesteps, p.solver, p.shift, p.guide_scale) == (*expected, 1.0)


def test_a_preset_in_the_metadata_wins_over_the_name(tmp_path):
    from openwan.distill import add_preset_metadata, preset_for
    f = tmp_path / "Wan21_CausVid_14B_T2V_lora_rank32.safetensors"
    save_file({"a": torch.ones(1)}, str(f))
    mine = DistillPreset((999, 500), "euler", 1.0, 3.0)
    add_preset_metadata(f, mine)
    assert preset_for(f) == mine


@pytest.mark.parametrize("label", ["causvid", "causvid-1.3b", "lightx2v", "lightx2v-wan2.2", "wan2.2-lightning"])
def test_each_named_preset_samples_on_its_timesteps(demo_pipe, label):
    """Every community preset runs as published: one guidance-free DiT call per listed timestep, with its
    solver (UniPC and the re-noising consistency solver on an explicit list included), recorded, no warning."""
    from openwan.distill import NAMED_PRESETS, apply_preset
    preset = next(p for lab, _, p in NAMED_PRESETS if lab == label)
    pipe = copy.copy(demo_pipe)
    apply_preset(pipe, preset)
    seen, h = _timesteps_seen(pipe)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = pipe("a red circle moving to the right", seed=0, output_type="latent")
    finally:
        h.remove()
    assert seen == list(preset.timesteps)
    s = out.settings
    assert (s["sample_timesteps"], s["sample_solver"], s["guide_scale"]) == (list(preset.timesteps), preset.solver,
                                                                             1.0)
    assert torch.isfinite(out.latents).all()


def test_the_cli_applies_a_distill_loras_preset_records_it_and_warns(demo_pipe, tmp_path, capsys):
    """`openwan generate --lora <LightX2V file>`: the file's name brings its sampler (timesteps, solver, no CFG),
    the output's record holds it, and guidance set on top of it warns."""
    import json

    from openwan.cli import main
    from openwan.training.lora import add_lora, remove_lora, save_lora
    model = copy.deepcopy(demo_pipe.dit)
    params = add_lora(model, rank=2, targets=["q"], name="distill")
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    lora = tmp_path / "lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors"
    save_lora(model, lora, name="distill")
    remove_lora(model)
    out = tmp_path / "v.mp4"
    assert main(["generate", "a red circle moving to the right", "--lora", str(lora), "-o", str(out)]) == 0
    assert "a distill LoRA; its sampler: 4 consistency steps at timesteps [1000, 937, 833, 625]" in \
        capsys.readouterr().err
    rec = json.loads(out.with_suffix(".json").read_text())["openwan"]
    assert (rec["sample_timesteps"], rec["sample_steps"], rec["sample_solver"], rec["guide_scale"]) == \
        ([1000, 937, 833, 625], 4, "consistency", 1.0)
    with pytest.warns(UserWarning, match="guide scale 1"):
        assert main(["generate", "a red circle moving to the right", "--lora", str(lora), "--quiet",
                     "--sample_guide_scale", "5", "-o", str(tmp_path / "w.mp4")]) == 0


def test_the_distill_command_names_a_wrong_objective(tmp_path, capsys):
    from openwan.distill import main
    y = tmp_path / "x.yaml"
    y.write_text("model: {path: demo}\ndata: {cache_dir: x}\nobjective: flow_matching\n")
    assert main(["--config", str(y), "--stage", "data"]) == 2
    assert "TrajectoryDistill" in capsys.readouterr().err


def test_the_shipped_demo_student_loads_with_its_preset(demo_pipe):
    from openwan.demo import demo_student_weights
    from openwan.distill import preset_of
    from openwan.pipelines import load_pipeline
    pipe = load_pipeline("demo-4step", progress=False)
    d = pipe.defaults()
    assert (d.steps, d.timesteps, d.guide_scale, d.solver) == (4, (999, 900, 750, 500), 1.0, "euler")
    f = demo_student_weights("demo-4step")
    assert preset_of(f) == DistillPreset((999, 900, 750, 500), "euler", 1.0, 3.0)   # the file agrees
    sd = load_file(str(f))
    mine = pipe.dit.state_dict()
    assert set(sd) == set(mine) and all(torch.equal(sd[k].float(), mine[k]) for k in sd)
    # the demo's architecture (its teacher), not the demo's weights
    teacher = demo_pipe.dit.state_dict()
    assert pipe.dit.config == demo_pipe.dit.config and set(teacher) == set(mine)
    assert not all(torch.equal(teacher[k], mine[k]) for k in mine)


def test_demo_4step_is_the_demo_with_its_own_dit():
    """demo-4step is distilled from the shipped demo (v2): the demo's configs, VAE and text encoder with the student's
    DiT weights. A 1-step sample through load_pipeline is bit for bit the one made from those parts by hand."""
    import numpy as np

    from openwan.configs import DEMO_4STEP_VARIANT, DEMO_DIT, DEMO_VAE
    from openwan.demo import DEMO_DIR, demo_student_weights
    from openwan.models.text_encoder import TextEncoder
    from openwan.models.vae import WanVAE
    from openwan.pipelines import Components, TextImageToVideo, load_pipeline
    pipe = load_pipeline("demo-4step", progress=False)
    assert pipe.dit.config == DEMO_DIT and pipe.vae.config == DEMO_VAE and pipe.task == "ti2v"
    dit = WanModel.from_pretrained(demo_student_weights("demo-4step"), dtype=torch.float32, config=DEMO_DIT)
    vae = WanVAE.from_pretrained(DEMO_DIR, config=DEMO_VAE)
    by_hand = TextImageToVideo(Components(dit, vae, TextEncoder.from_pretrained(DEMO_DIR),
                                          variant=DEMO_4STEP_VARIANT), progress=False)
    kw = dict(seed=0, sample_steps=1)
    got = pipe("a red circle moving to the right", **kw).frames[0]
    want = by_hand("a red circle moving to the right", **kw).frames[0]
    assert got.shape == (33, 128, 128, 3) and np.array_equal(got, want)


def test_average_students_is_the_mean_with_the_preset(tmp_path, capsys):
    from openwan.distill import PRESET_KEY, average_students
    from openwan.distill import main as distill_main
    g = torch.Generator().manual_seed(0)
    preset = DistillPreset((999, 500), "euler", 1.0, 3.0).to_json()
    tensors = []
    for i in range(3):
        t = {"a.weight": torch.randn(4, 3, generator=g).half(), "b.bias": torch.randn(5, generator=g).half()}
        save_file(t, str(tmp_path / f"s{i}.safetensors"), metadata={"format": "pt", PRESET_KEY: preset})
        tensors.append(t)
    out = average_students([tmp_path / f"s{i}.safetensors" for i in range(3)], tmp_path / "avg.safetensors")
    got = load_file(str(out))
    for k in ("a.weight", "b.bias"):
        want = (sum(t[k].double() for t in tensors) / 3).half()
        assert got[k].dtype == torch.float16 and torch.equal(got[k], want)
    from safetensors import safe_open
    with safe_open(str(out), "pt") as f:
        assert f.metadata()[PRESET_KEY] == preset
    other = DistillPreset((999, 750, 500), "euler", 1.0, 3.0).to_json()
    save_file(tensors[0], str(tmp_path / "o.safetensors"), metadata={"format": "pt", PRESET_KEY: other})
    with pytest.raises(ValueError, match="preset"):
        average_students([tmp_path / "s0.safetensors", tmp_path / "o.safetensors"], tmp_path / "x.safetensors")
    save_file({"a.weight": tensors[0]["a.weight"]}, str(tmp_path / "k.safetensors"),
              metadata={"format": "pt", PRESET_KEY: preset})
    with pytest.raises(ValueError, match="other tensors"):
        average_students([tmp_path / "s0.safetensors", tmp_path / "k.safetensors"], tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    assert distill_main(["--stage", "average", "--inputs", str(tmp_path / "s0.safetensors"), "--out",
                         str(tmp_path / "y.safetensors")]) == 2
    assert "two or more" in capsys.readouterr().err
    assert distill_main(["--stage", "export", "--out", str(tmp_path / "z.safetensors")]) == 2
    assert "--config" in capsys.readouterr().err
