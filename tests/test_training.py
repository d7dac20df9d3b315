"""Training: the loss, the trainer (resume, multi-process, overfitting, accumulation, checkpointing), injectable
objectives and the command line (the data: test_training_data.py)."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from bounds import fp32_bound
from safetensors.torch import load_file
from training_helpers import TINY, config, latents, rand_model, write_clip

from openwan.models.dit import WanModel
from openwan.training.data import InMemoryLatentDataset
from openwan.training.loss import TimestepSampling, draw_noise, flow_matching_loss, sample_seed, sigma_to_timestep
from openwan.training.trainer import Trainer, TrainConfig, launch_local, lr_multiplier, main


# =========================================================================== loss

def test_timesteps_match_the_sampler():
    from openwan.sampling import timesteps_from_sigmas, unipc_sigmas
    grid = unipc_sigmas(50, 5.0)[:-1]
    assert torch.equal(sigma_to_timestep(grid), timesteps_from_sigmas(grid))
    assert sigma_to_timestep(torch.tensor([0.0, 0.0009, 0.001, 0.5, 0.9999, 1.0])).tolist() == [0, 0, 1, 500, 999, 999]


def test_flow_matching_loss_by_hand():
    seen = {}

    def stub(x, t, context):
        seen.update(x=x, t=t, context=context)
        return torch.full_like(x, 0.25)

    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 16, 1, 2, 2, generator=g), torch.randn(3, 16, 1, 2, 2, generator=g)
    sigma = torch.tensor([0.1, 0.5, 0.9999], dtype=torch.float64)
    ctx = [torch.zeros(4, 32)] * 3
    loss, per = flow_matching_loss(stub, x0, ctx, noise, sigma)
    s = sigma.float().view(3, 1, 1, 1, 1)
    # (1 - s) x0 + s noise, the same fp32 ops as add_noise (so equal bit for bit here) or another order: 1 - s, two
    # products and the sum, 2 ulps each (both sides) of |x0|, |noise| (<= 3.9): 3.7e-6; a wrong sigma is off by O(1)
    want = (1 - s) * x0 + s * noise
    assert (seen["x"] - want).abs().max().item() <= fp32_bound(x0, noise, terms=4, ulps=2)
    assert seen["t"].tolist() == [100, 500, 999] and seen["t"].dtype == torch.int64
    want = ((0.25 - (noise - x0)) ** 2).flatten(1).mean(1)
    assert torch.allclose(per, want) and torch.allclose(loss, want.mean())
    # list input (different sizes) gives the same per-sample values
    loss2, per2 = flow_matching_loss(lambda x, t, c: [torch.full_like(u, 0.25) for u in x], list(x0), ctx,
                                     list(noise), sigma)
    assert torch.allclose(per2, want)


def test_timestep_distributions():
    n = 20000
    u = TimestepSampling("uniform").sample(n, torch.Generator().manual_seed(0))
    assert abs(u.mean().item() - 0.5) < 0.01 and 0 <= u.min() and u.max() < 1
    sh = TimestepSampling("shift", shift=3.0).sample(n, torch.Generator().manual_seed(0))
    assert torch.allclose(sh, 3 * u / (1 + 2 * u))  # same draws, shifted
    ln = TimestepSampling("logit_normal", mean=1.0, std=0.5).sample(n, torch.Generator().manual_seed(0))
    assert abs(ln.median().item() - 1 / (1 + math.exp(-1.0))) < 0.01
    assert abs(torch.logit(ln).std().item() - 0.5) < 0.01
    with pytest.raises(ValueError, match="logit_normal"):
        TimestepSampling("beta")
    # noise/sigma of a sample depend only on its seed
    a, sa = draw_noise([(16, 1, 2, 2)] * 2, [sample_seed(0, 5, 0), sample_seed(0, 5, 1)], TimestepSampling())
    b, sb = draw_noise([(16, 1, 2, 2)], [sample_seed(0, 5, 1)], TimestepSampling())
    assert torch.equal(a[1], b[0]) and sa[1] == sb[0] and not torch.equal(a[0], a[1])


def test_lr_schedules():
    assert [lr_multiplier(s, "constant", 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = [lr_multiplier(s, "cosine", 2, 12, 0.1) for s in range(13)]
    assert cos[:3] == [0.5, 1.0, 1.0] and abs(cos[7] - 0.55) < 1e-9 and abs(cos[12] - 0.1) < 1e-9
    assert abs(lr_multiplier(6, "linear", 0, 12) - 0.5) < 1e-9


# =========================================================================== the trainer

class _InterruptingData(InMemoryLatentDataset):
    """Raises KeyboardInterrupt at the n-th item access (inside a step: the step is abandoned)."""

    def __init__(self, base, n):
        super().__init__(base.items)
        self.n, self.calls = n, 0

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return super().__getitem__(i)


@pytest.mark.parametrize("lora,how", [(False, "sigint"), (True, "mid-step"), (True, "hook")])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, lora, how):
    import os
    import signal
    kw = dict(ema={"decay": 0.9}, schedule={"type": "cosine", "warmup_steps": 2}, validate_every=1,
              timesteps={"distribution": "logit_normal", "shift": 2.0}, grad_accum=2)
    if lora:
        kw["lora"] = {"rank": 2, "alpha": 4, "targets": ["q", "ffn.2"]}
    ds = latents(8)
    Trainer(config(tmp_path / "a", **kw), model=rand_model(), dataset=ds).train()

    def at_step_3(model, step):
        if step == 3:
            if how == "sigint":   # a real Ctrl-C: the trainer finishes the step, saves, raises
                os.kill(os.getpid(), signal.SIGINT)
            elif how == "hook":
                raise KeyboardInterrupt
    # mid-step: 2 samples x 2 micro-batches per step; the 15th access is in step 4's second micro-batch
    data = _InterruptingData(ds, 15) if how == "mid-step" else ds
    with pytest.raises(KeyboardInterrupt):
        Trainer(config(tmp_path / "b", **kw), model=rand_model(), dataset=data, on_validate=at_step_3).train()
    assert [p.name for p in (tmp_path / "b/checkpoints").iterdir()] == ["step-00000003"]
    state = json.loads((tmp_path / "b/checkpoints/step-00000003/state.json").read_text())
    assert (state["epoch"], state["position"]) == (1, 2)  # 4 batches per epoch, 2 per step
    Trainer(config(tmp_path / "b", **kw), model=rand_model(), dataset=ds).train()   # resume: auto
    for f in ("model", "ema"):
        a = load_file(str(tmp_path / f"a/checkpoints/step-00000006/{f}.safetensors"))
        b = load_file(str(tmp_path / f"b/checkpoints/step-00000006/{f}.safetensors"))
        assert set(a) == set(b) and len(a) == (12 if lora else 69)
        assert all(torch.equal(a[k], b[k]) for k in a), f
    # the loss curve continues exactly too
    rows = lambda d: [r[:3] for r in csv.reader(open(tmp_path / d / "loss.csv"))]  # noqa: E731
    assert rows("a") == rows("b") and len(rows("a")) == 7


def test_stop_at_ends_part_way_through_the_schedule(tmp_path):
    """stop_at ends a run at that step with a checkpoint and no final weights; running again with a later (or no)
    stop_at continues on the same schedule, bit-identical to the run that never stopped."""
    kw = dict(schedule={"type": "cosine", "warmup_steps": 1}, ema={"decay": 0.9}, steps=5, save_final=True)
    ds = latents(8)
    Trainer(config(tmp_path / "a", **kw), model=rand_model(), dataset=ds).train()
    summary = Trainer(config(tmp_path / "b", stop_at=2, **kw), model=rand_model(), dataset=ds).train()
    assert summary["step"] == 2 and not (tmp_path / "b/final").exists()
    assert (tmp_path / "b/checkpoints/step-00000002/state.json").is_file()
    Trainer(config(tmp_path / "b", stop_at=4, **kw), model=rand_model(), dataset=ds).train()
    assert not (tmp_path / "b/final").exists()
    Trainer(config(tmp_path / "b", **kw), model=rand_model(), dataset=ds).train()
    for f in ("model", "ema"):
        a = load_file(str(tmp_path / f"a/checkpoints/step-00000005/{f}.safetensors"))
        b = load_file(str(tmp_path / f"b/checkpoints/step-00000005/{f}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), f
    assert (tmp_path / "b/final_ema/config.json").is_file()
    with pytest.raises(ValueError, match="stop_at must be an integer >= 1"):
        Trainer(config(tmp_path / "c", stop_at=0, **kw), model=rand_model(), dataset=ds)


def test_checkpoints_are_pruned_and_complete(tmp_path):
    Trainer(config(tmp_path, steps=5, checkpoint_every=1, keep_checkpoints=2), dataset=latents()).train()
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-00000004", "step-00000005"]
    state = json.loads((root / "step-00000005/state.json").read_text())
    assert (state["step"], state["epoch"], state["position"]) == (5, 1, 2)  # 3 batches per epoch
    assert set(p.name for p in (root / "step-00000005").iterdir()) == {"model.safetensors", "optimizer.pt",
                                                                      "rng.pt", "state.json"}


def _final_weights(out):
    return load_file(str(Path(out) / "checkpoints" / sorted(p.name for p in (Path(out) / "checkpoints").iterdir())[-1]
                         / "model.safetensors"))


# Runs that differ only in the order of float sums (batch vs accumulated micro-batches, one process vs an
# all-reduce) are compared with AdamW's eps raised to 1e-3 (ROUNDING_OPTIMIZER). Adam's step lr * m / (sqrt(v) + eps)
# turns an absolute gradient rounding error dg into a step error of up to ~lr * dg / eps, largest on the elements
# whose gradient is about eps: with the default eps 1e-8 that is ~1e5 * lr * dg, so the result would depend on
# how many gradients happen to be tiny and on how the CPU's vector width rounds them (1e-7 on AVX2, 5e-6 on
# AMX). With eps 1e-3 the step error is at most lr / eps * dg = dg, a few ulps of the per-sample gradients (clipped
# to norm 1, so ulps of 1 at most and mostly far smaller); together with the rounding of the weight update itself
# that stays within a couple of ulps of the largest weight per step. A wrong reduction changes the gradients
# themselves, and the steps by ~lr.
ROUNDING_OPTIMIZER = {"lr": 1e-3, "eps": 1e-3}


def _rounding_bound(weights, steps):
    """Two fp32 roundings of the largest weight per optimizer step, doubled for headroom."""
    return fp32_bound(*weights.values(), terms=steps, ulps=4)


def test_grad_accumulation_and_checkpointing_match_the_plain_batch(tmp_path):
    ds = latents(8)
    Trainer(config(tmp_path / "a", steps=3, batch_size=4, optimizer=ROUNDING_OPTIMIZER), model=rand_model(),
            dataset=ds).train()
    Trainer(config(tmp_path / "b", steps=3, batch_size=1, grad_accum=4, gradient_checkpointing=True,
                   optimizer=ROUNDING_OPTIMIZER), model=rand_model(), dataset=ds).train()
    a, b = _final_weights(tmp_path / "a"), _final_weights(tmp_path / "b")
    init = rand_model().state_dict()
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-3  # a real step is ~lr per weight
    # float summation order only (checkpointing alone is exact)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= _rounding_bound(a, 3)


def test_two_processes_match_one_process_with_the_combined_batch(tmp_path):
    """FSDP2 (full fine-tuning and LoRA) and DDP (LoRA) on 2 CPU processes (gloo) vs one process, batch 2x."""
    ckpt = tmp_path / "base"
    rand_model().save_pretrained(ckpt)
    ds = latents(8)
    common = dict(model={"path": str(ckpt)}, steps=3, grad_accum=2, ema={"decay": 0.5},
                  optimizer=ROUNDING_OPTIMIZER)
    lora = {"rank": 2, "targets": ["q", "ffn.0"]}
    runs = {"fsdp": config(tmp_path / "fsdp", batch_size=1, parallel="fsdp", **common),
            "ddp": config(tmp_path / "ddp", batch_size=1, parallel="ddp", lora=lora, **common),
            "fsdp_lora": config(tmp_path / "fsdp_lora", batch_size=1, parallel="fsdp", lora=lora, **common)}
    launch_local(list(runs.values()), 2, dataset=ds, start_method="fork")  # fork: no re-import of torch
    init = rand_model().state_dict()
    for name, lo, single in (("fsdp", None, "one_fsdp"), ("ddp", lora, "one_lora"), ("fsdp_lora", lora, "one_lora")):
        if not (tmp_path / single).exists():
            Trainer(config(tmp_path / single, batch_size=2, lora=lo, **common), dataset=ds).train()
        for f in ("model", "ema"):
            one = load_file(str(tmp_path / f"{single}/checkpoints/step-00000003/{f}.safetensors"))
            two = load_file(str(tmp_path / f"{name}/checkpoints/step-00000003/{f}.safetensors"))
            assert set(one) == set(two) and len(one) == (69 if lo is None else 12)
            diff = max((one[k] - two[k]).abs().max().item() for k in one)
            if lo is None:
                moved = max((one[k] - init[k]).abs().max().item() for k in one)
            else:
                moved = max(one[k].abs().max().item() for k in one if k.endswith(".B"))
            # float summation order only (see _rounding_bound); a wrong gradient reduction moves weights by ~lr
            assert diff <= _rounding_bound(one, 3) and moved > 1e-4, (name, f, diff)
        rows = lambda d: [r[1] for r in csv.reader(open(tmp_path / d / "loss.csv"))][1:]  # noqa: E731
        # loss.csv holds %.6g values: each within half a unit of its 6th digit, so the two within one unit, plus the
        # fp32 losses' own difference: a tiny DiT forward's 16 ulps (as tests/test_dit22.py), doubled by the square
        # and for the two runs (steps 2 and 3 start from weights _rounding_bound apart): 5.8e-5 on losses ~6.3; the
        # loss of one process's samples only is off by the per-sample losses' spread (3 .. 15 here)
        two_rows, one_rows = [float(v) for v in rows(name)], [float(v) for v in rows(single)]
        assert len(two_rows) == len(one_rows) == 3
        for a, b in zip(two_rows, one_rows):
            bound = 10 ** (math.floor(math.log10(b)) - 5) + fp32_bound(b, terms=4, ulps=16)
            assert abs(a - b) <= bound, (name, a, b)


def test_overfits_one_tiny_clip(tmp_path):
    """The honest objective (fresh noise and sigma every step) on one clip: the loss falls >10x."""
    g = torch.Generator().manual_seed(0)
    clip = (torch.randn(16, 1, 2, 2, generator=g), torch.randn(4, 32, generator=g))
    t = Trainer(config(tmp_path, model={"dit": dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32,
                                                      text_len=8)},
                       steps=400, batch_size=8, grad_clip=None, optimizer={"lr": 5e-3, "weight_decay": 0.0},
                       schedule={"type": "cosine", "warmup_steps": 10},
                       timesteps={"distribution": "logit_normal", "shift": 3.0}),
                dataset=InMemoryLatentDataset([clip] * 8))
    t.train()
    first, last = np.mean(t.history[:10]), np.mean(t.history[-30:])
    assert first > 1.5 and last < first / 10, (first, last)


def test_yaml_config_command_line_and_final_export(tmp_path):
    import yaml

    from openwan.training.cache import cache_latents
    for i in range(2):
        write_clip(tmp_path / f"c{i}.mp4", frames=5, h=32, w=32)
    (tmp_path / "d.csv").write_text("path,caption\nc0.mp4,zero\nc1.mp4,one\n")
    cache_latents(tmp_path / "d.csv", tmp_path / "cache", lambda v: v[:, :, ::4, ::8, ::8].repeat(1, 6, 1, 1, 1)[:, :16],
                  lambda ps: [torch.ones(3, 32)] * len(ps), [[5, 32, 32]], progress=False)
    cfg = {"model": {"dit": TINY}, "data": {"cache_dir": str(tmp_path / "cache")}, "steps": 2, "batch_size": 2,
           "output_dir": str(tmp_path / "run"), "progress": False, "lora": {"rank": 2}, "checkpoint_every": 1,
           "lora_formats": ["diffusers", "comfyui", "musubi"]}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(tmp_path / "t.yaml"), "--set", "steps=3", "--set", "optimizer.lr=2e-3"]) == 0
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["optimizer"] == {"lr": 2e-3}
    assert len(list(csv.reader(open(run / "loss.csv")))) == 4
    for f in ("lora.safetensors", "lora_comfyui.safetensors", "lora_musubi.safetensors"):
        assert (run / f).exists()
    # full fine-tuning exports an official-layout directory that loads back
    assert main(["--config", str(tmp_path / "t.yaml"), "--set", "lora=null", "--set",
                 f"output_dir={tmp_path / 'full'}"]) == 0
    m = WanModel.from_pretrained(tmp_path / "full" / "final")
    assert m.config.dim == 24
    # bad configs are one-line errors
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**cfg, "stepz": 3}))
    assert main(["--config", str(tmp_path / "bad.yaml")]) == 2
    with pytest.raises(ValueError, match="unknown optimizer fields"):
        TrainConfig.from_dict({**cfg, "optimizer": {"learning_rate": 1}})


# =========================================================================== injectable objectives

class _CriticObjective:
    """Flow matching plus a second trained part with its own optimizer (the shape of a distillation's
    fake-score model): a linear critic regresses each sample's mean latent to a target drawn from that
    sample's generator; its AdamW steps in after_step; both go into the checkpoint."""

    def __init__(self, config, lr=1e-2):
        from openwan.training.objectives import FlowMatching
        self.fm = FlowMatching(config.timesteps)
        self.lr = lr
        self.steps_seen = []

    def setup(self, ctx):
        torch.manual_seed(123)
        self.critic = torch.nn.Linear(16, 1).to(ctx.device)
        self.opt = torch.optim.AdamW(self.critic.parameters(), lr=self.lr)

    def __call__(self, model, batch, rng):
        loss, _ = self.fm(model, batch, rng)
        target = torch.stack([torch.randn((), generator=g) for g in rng]).to(batch.latent.device)
        critic_loss = (self.critic(batch.latent.mean((2, 3, 4))).squeeze(-1) - target).pow(2).mean()
        critic_loss.backward()  # the critic's own gradients; the DiT's come from `loss`
        return loss, {"critic": critic_loss.detach()}

    def after_step(self, step):
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.steps_seen.append(step)
        return {}

    def state_dict(self):
        return {"critic": self.critic.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        self.critic.load_state_dict(state["critic"])
        self.opt.load_state_dict(state["opt"])


def test_a_custom_objective_with_its_own_optimizer_resumes_bit_exactly(tmp_path):
    from openwan.training.objectives import register_objective
    register_objective("critic_test", _CriticObjective)
    kw = dict(objective={"name": "critic_test", "lr": 0.05}, ema={"decay": 0.9}, grad_accum=2,
              schedule={"type": "cosine", "warmup_steps": 1})
    ds = latents(8)
    full = Trainer(config(tmp_path / "a", **kw), model=rand_model(), dataset=ds)
    assert isinstance(full.objective, _CriticObjective) and full.objective.lr == 0.05  # chosen by the config
    init = {k: v.clone() for k, v in full.objective.critic.state_dict().items()}
    full.train()
    assert full.objective.steps_seen == [1, 2, 3, 4, 5, 6]
    Trainer(config(tmp_path / "b", stop_at=3, **kw), model=rand_model(), dataset=ds).train()
    resumed = Trainer(config(tmp_path / "b", **kw), model=rand_model(), dataset=ds)
    resumed.train()
    assert resumed.objective.steps_seen == [4, 5, 6]
    a = torch.load(tmp_path / "a/checkpoints/step-00000006/objective.pt", weights_only=True)
    b = torch.load(tmp_path / "b/checkpoints/step-00000006/objective.pt", weights_only=True)
    assert not torch.equal(a["critic"]["weight"], init["weight"])  # the critic was trained ...
    for k in a["critic"]:                                          # ... and resumed exactly, with its optimizer
        assert torch.equal(a["critic"][k], b["critic"][k]), k
    for k, s in a["opt"]["state"].items():
        assert all(torch.equal(s[n], b["opt"]["state"][k][n]) for n in s)
    for f in ("model", "ema"):
        x = load_file(str(tmp_path / f"a/checkpoints/step-00000006/{f}.safetensors"))
        y = load_file(str(tmp_path / f"b/checkpoints/step-00000006/{f}.safetensors"))
        assert all(torch.equal(x[k], y[k]) for k in x), f
    # the DiT's own curve is the plain flow-matching one: the critic's draws come after the noise's
    plain = Trainer(config(tmp_path / "c", ema={"decay": 0.9}, grad_accum=2, schedule={"type": "cosine",
                                                                                       "warmup_steps": 1}),
                    model=rand_model(), dataset=ds)
    plain.train()
    assert plain.history == full.history


def test_objective_selection_errors(tmp_path):
    for name, msg in (("nope", "not a known objective"), ("openwan.nothing:f", "cannot import")):
        with pytest.raises(ValueError, match=msg):
            Trainer(config(tmp_path, objective=name), dataset=latents())
    with pytest.raises(ValueError, match="bad options"):
        Trainer(config(tmp_path, objective={"name": "flow_matching", "gamma": 1}), dataset=latents())


# =========================================================================== command-line errors and messages

def _one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_bad_yaml_and_bad_overrides_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\nmodel: {dit: [unclosed\n")
    assert "not valid YAML (line" in _one_line_error(capsys, ["--config", str(bad)])
    bad.write_text("- steps: 3\n- batch_size: 2\n")
    assert "must be a mapping" in _one_line_error(capsys, ["--config", str(bad)])
    good = tmp_path / "good.yaml"
    good.write_text(f"model: {{dit: {json.dumps(TINY)}}}\ndata: {{cache_dir: {tmp_path / 'nocache'}}}\n")
    for override, msg in (("optimizer.lr=fast", "optimizer.lr: expected a number, got 'fast'"),
                          ("steps=2.5", "steps: expected an integer, got 2.5"),
                          ("lora.rank=big", "lora.rank: expected an integer, got 'big'"),
                          ("ema=0.9", "ema: expected a mapping of EMAConfig fields"),
                          ("progress=maybe", "progress: expected true or false"),
                          ("steps.x=1", "steps: expected an integer"),
                          ("model.dit.dim.x=1", "--set model.dit.dim.x: model.dit.dim is not a section"),
                          ("optimizer.learning_rate=1", "unknown optimizer fields ['learning_rate']")):
        assert msg in _one_line_error(capsys, ["--config", str(good), "--set", override]), override
    assert "data.cache_dir" in _one_line_error(capsys, ["--config", str(good)])  # a missing prep step, named


def test_missing_preparation_is_named_and_demo_is_a_model_path(tmp_path, capsys):
    import yaml
    cfg = {"model": {"path": str(tmp_path / "tiny-ckpt")}, "output_dir": str(tmp_path / "run"), "progress": False,
           "data": {"file": str(tmp_path / "captions.csv"), "buckets": [[5, 32, 32]]}, "steps": 1}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    err = _one_line_error(capsys, ["--config", str(tmp_path / "t.yaml")])
    assert "model.path" in err and "make_tiny_checkpoint" in err and "VAE" not in err, err
    err = _one_line_error(capsys, ["--config", str(tmp_path / "t.yaml"), "--set", "model.path=demo"])
    assert "data.file" in err and "captions" in err, err
    # model.path: demo trains the embedded demo model (LoRA, on latents of its shape)
    g = torch.Generator().manual_seed(0)
    ds = InMemoryLatentDataset([(torch.randn(16, 1, 4, 4, generator=g), torch.randn(5, 128, generator=g))] * 2)
    t = Trainer(config(tmp_path / "demo", model={"path": "demo"}, steps=1, lora={"rank": 2}), dataset=ds)
    assert t.module.config.dim == 128 and t.train()["step"] == 1


def test_a_finished_run_says_so_instead_of_loss_none(tmp_path, capsys):
    import yaml
    cfg = {**config(tmp_path / "run", steps=2), "data": {}}
    del cfg["data"]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    cache = tmp_path / "cache"
    from openwan.training.cache import cache_latents
    write_clip(tmp_path / "c0.mp4", frames=5, h=32, w=32)
    (tmp_path / "d.csv").write_text("path,caption\nc0.mp4,zero\n")
    cache_latents(tmp_path / "d.csv", cache, lambda v: v[:, :, ::4, ::8, ::8].repeat(1, 6, 1, 1, 1)[:, :16],
                  lambda ps: [torch.ones(3, 32)] * len(ps), [[5, 32, 32]], progress=False)
    argv = ["--config", str(tmp_path / "t.yaml"), "--set", f"data.cache_dir={cache}", "--set", "batch_size=1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "done at step 2, last loss " in out and "None" not in out, out
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "None" not in out, out


def _header_scripts(example: Path) -> list:
    """The Python the header comments of an example YAML run: ``python -c "..."`` lines and ``python - <<'PY'``
    blocks, in order."""
    lines = [ln[4:] if ln.startswith("#   ") else None for ln in example.read_text().splitlines()]
    scripts, block = [], None
    for ln in lines:
        if block is not None:
            if ln is None or ln.strip() == "PY":
                scripts.append("\n".join(block))
                block = None
            else:
                block.append(ln)
        elif ln is not None and ln.startswith("python - <<'PY'"):
            block = []
        elif ln is not None and ln.startswith('python -c "'):
            scripts.append(ln[len('python -c "'):ln.rindex('"')])
    return scripts


@pytest.mark.parametrize("name,steps", [("train_tiny", 2), ("train_demo_lora", 1), ("train_tiny_vace", 2)])
def test_the_example_yamls_run_as_their_headers_say(tmp_path, monkeypatch, name, steps):
    """Each example YAML's preparation (its header), then `openwan train --config` on it (fewer steps), then
    the header's sampling code when it has one, all in a scratch folder (the examples use relative runs/ paths)."""
    example = Path(__file__).resolve().parents[1] / "examples" / f"{name}.yaml"
    scripts = _header_scripts(example)
    assert scripts, "the header has no commands"
    monkeypatch.chdir(tmp_path)
    prep = scripts[0].replace("range(16)", "range(2)") if name == "train_demo_lora" else "\n".join(scripts[:2])
    exec(compile(prep, f"{name} prep", "exec"), {})  # (the demo example's 16 clips cut to 2 for time)
    fast = ["--set", "validation.sample_steps=2"] if name == "train_demo_lora" else []
    assert main(["--config", str(example), "--set", f"steps={steps}", "--set", "progress=false",
                 "--set", "batch_size=1", *fast]) == 0
    out = tmp_path / yaml_output_dir(example)
    if name == "train_demo_lora":   # its validation prompts, sampled at the (last) step
        assert sorted(p.name for p in (out / "samples" / f"step-{steps:08d}").glob("*.mp4")) == ["00.mp4", "01.mp4"]
    assert (out / "lora.safetensors").is_file()
    if name != "train_tiny_vace":        # (which writes the diffusers format only)
        assert (out / "lora_comfyui.safetensors").is_file()
    if name == "train_tiny_vace":        # every clip cached with its VACE context; then the header's sampling
        from openwan.training.data import CachedLatentDataset
        ds = CachedLatentDataset(tmp_path / "runs/tiny-vace-data/cache")
        assert len(ds) == 4 and all(ds[i]["vace_context"].shape == (96, 2, 4, 4) for i in range(len(ds)))
        exec(compile(scripts[2], f"{name} sampling", "exec"), {})
        assert (tmp_path / "runs/tiny-vace-1.mp4").stat().st_size > 0
    if name == "train_demo_lora":
        sampling = scripts[1].replace("seed=0,", "seed=0, sample_steps=2,")  # the code runs; not the video's quality
        assert sampling != scripts[1]
        exec(compile(sampling, f"{name} sampling", "exec"), {})
        assert (tmp_path / "runs/demo-lora-1.mp4").stat().st_size > 0


def yaml_output_dir(example: Path) -> str:
    import yaml
    return yaml.safe_load(example.read_text())["output_dir"]


def test_config_sections_are_typed_and_round_trip():
    from openwan.training.config import EMAConfig, LoRAConfig, OptimizerConfig
    cfg = TrainConfig.from_dict({"model": {"dit": TINY}, "optimizer": {"lr": "1e-4", "betas": ["0.8", 0.9]},
                                 "lora": {"rank": 4, "targets": "q, ffn.0"}, "ema": {}, "steps": 1e3,
                                 "timesteps": {"type": "logit_normal", "shift": 3}, "objective": "flow_matching"})
    assert cfg.optimizer == OptimizerConfig(lr=1e-4, betas=(0.8, 0.9)) and cfg.steps == 1000
    assert cfg.lora == LoRAConfig(rank=4, targets=("q", "ffn.0")) and cfg.ema == EMAConfig()
    assert cfg.timesteps.distribution == "logit_normal" and cfg.timesteps.shift == 3.0
    d = cfg.to_dict()
    assert d["optimizer"] == {"betas": [0.8, 0.9]} and d["ema"] == {} and d["lora"]["targets"] == ["q", "ffn.0"]
    assert TrainConfig.from_dict(d) == cfg  # what config.json / state.json hold reads back to the same config
    assert TrainConfig.from_dict({}).lora is None and TrainConfig.from_dict({}).ema is None


def test_leftovers_of_killed_runs_are_cleaned(tmp_path):
    """A kill while pruning or writing leaves a half-deleted or half-written folder: the next save removes it."""
    from openwan.training.checkpoint import clean_leftovers
    root = tmp_path / "checkpoints"
    Trainer(config(tmp_path, steps=2, checkpoint_every=1, keep_checkpoints=5), dataset=latents()).train()
    half = root / "step-00000001"
    (half / "state.json").unlink()                        # pruning killed after its first file
    (root / ".step-00000009.tmp").mkdir()                 # a save killed before its rename
    (root / ".step-00000000.deleting").mkdir()            # a prune killed after its rename
    assert sorted(p.name for p in clean_leftovers(root)) == [".step-00000000.deleting", ".step-00000009.tmp",
                                                             "step-00000001"]
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002"]


def test_auto_precision_follows_the_cpu_and_the_model_size(tmp_path, monkeypatch):
    """precision auto: bf16 autocast on CUDA and on AMX CPUs for models of >= 50M parameters (1.9x faster a
    training step at the 1.3B width there), fp32 for small models and CPUs without fast bf16."""
    from openwan import runtime
    amx, avx2 = {"amx_tile", "amx_bf16", "avx512_bf16"}, {"avx2"}
    big, small = runtime.BF16_MIN_PARAMS, runtime.BF16_MIN_PARAMS - 1
    assert runtime.training_precision("auto", "cpu", big, amx)[0] == "bf16"
    assert runtime.training_precision("auto", "cpu", small, amx) == (
        "fp32", f"auto: a small model ({small / 1e6:.1f}M parameters: bf16 gains nothing at its GEMM sizes)")
    assert runtime.training_precision("auto", "cpu", big, avx2)[0] == "fp32"
    assert runtime.training_precision("auto", "cuda", 10, avx2)[0] == "bf16"
    assert runtime.training_precision("fp32", "cpu", big, amx) == ("fp32", "as requested")
    assert runtime.training_precision("bf16", "cpu", small, avx2) == ("bf16", "as requested")
    # the Trainer asks with its model's parameter count: a tiny model on a (faked) AMX CPU stays fp32
    monkeypatch.setattr(runtime, "cpu_features", lambda: frozenset(amx))
    tr = Trainer(config(tmp_path / "a", steps=1, batch_size=1), model=rand_model(), dataset=latents(2))
    assert tr.autocast_dtype is None and tr.precision == "fp32" and "small model" in tr.precision_reason
    monkeypatch.setattr(runtime, "BF16_MIN_PARAMS", 10)
    tr = Trainer(config(tmp_path / "b", steps=1, batch_size=1), model=rand_model(), dataset=latents(2))
    assert tr.autocast_dtype == torch.bfloat16 and tr.train()["precision"] == "bf16"
    monkeypatch.setattr(runtime, "cpu_features", lambda: frozenset(avx2))
    with pytest.warns(UserWarning, match="bf16 autocast is slow on a CPU without AMX"):
        Trainer(config(tmp_path / "c", steps=1, batch_size=1, precision="bf16"), model=rand_model(),
                dataset=latents(2))
