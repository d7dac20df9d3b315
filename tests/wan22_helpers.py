"""The Wan 2.2 reference's golden runs (../shared/reference22) as pipelines: its experts, VAEs and prompts, and the
derived bounds a replay is held to (test_wan22_pipelines.py, test_wan22_folders.py)."""
import json
from pathlib import Path

import pytest
import torch
from bounds import fp32_bound, guided_run_bound
from safetensors.torch import load_file

from openwan.configs import DiTConfig, VAEConfig
from openwan.models.dit import WanModel
from openwan.pipelines.base import Components, lookup_variant

REF22 = Path(__file__).resolve().parents[1].parent / "shared" / "reference22"
PROMPT, NEG = "a prompt", "a negative prompt"


def ulps(ref: torch.Tensor, n: int = 16) -> float:
    """n fp32 ulps of the largest value compared: a tiny DiT forward chains ~8 fp32 reductions (2 blocks x
    self-attention, cross-attention, FFN, plus the head) whose rounding depends on the CPU's SIMD width;
    a few ulps each (as tests/test_dit22.py). For the golden v's (|v| <= ~5) 16 ulps are < 1e-5."""
    return fp32_bound(ref, ulps=n)


def run_bound(sd, steps: int, scale: float) -> float:
    """The bound on the latent after any step of a whole run, derived: each DiT pass differs from the
    reference only by rounding order (<= 16 ulps of max |v|, asserted step by step); the guided velocity
    v_u + g (v_c - v_u) scales that by at most 2g + 1; both solvers move the latent by a combination of past
    velocities whose weights sum to the step size, so the flow integrates it over sum |dsigma| = 1 at most.
    For these runs (g <= 5, |v| <= 5) it is <= 1.05e-4, i.e. the README's whole-run 1e-4."""
    v = max(sd[f"step{i}.{k}"].abs().max().item() for i in range(steps) for k in ("v_cond", "v_uncond"))
    return guided_run_bound(v, scale)


def reference22_meta() -> dict:
    """The golden runs' README.json (skips the test where ../shared/reference22 is absent)."""
    if not REF22.is_dir():
        pytest.skip(f"Wan 2.2 golden vectors not found at {REF22}")
    return json.loads((REF22 / "README.json").read_text())


def expert(sd, prefix, cfg):
    cfg = DiTConfig.from_dict({**cfg, "clip_input": False} if cfg["model_type"] == "i2v" else cfg)
    m = WanModel(cfg).eval()
    m.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, strict=True)
    return m


def vae21(sd):
    from openwan.models.vae import WanVAE
    v = WanVAE(VAEConfig(dim=8))
    v.load_state_dict({k[4:]: t for k, t in sd.items() if k.startswith("vae.")}, strict=True)
    return v.eval()


def vae22():
    from openwan.models.vae22 import VAE22Config, WanVAE22
    sd = load_file(str(REF22 / "vae22.safetensors"))
    v = WanVAE22(VAE22Config(dim=4, dec_dim=8))
    v.load_state_dict({k[6:]: t for k, t in sd.items() if k.startswith("model.")}, strict=True)
    return v.eval()


def with_prompts(pipe, sd):
    """The reference runs used a fake text encoder: its outputs stand in the pipeline's prompt memo."""
    pipe._prompt_memo[PROMPT] = sd["in.context"]
    pipe._prompt_memo[NEG] = sd["in.context_null"]
    return pipe


def moe_pipe(name, meta, sd_experts, vae, experts="one"):
    from openwan.pipelines.moe import ImageToVideoA14B, TextToVideoA14B
    m = meta[name]
    cfg = m["expert_config"]
    high, low = expert(sd_experts, "high.", cfg), expert(sd_experts, "low.", cfg)
    var = lookup_variant(m["task"])
    var = var.replace(dit=high.config, sample=var.sample.replace(sizes=()))
    comps = Components(high, vae, None, None, var, "golden", dit_low=low)
    cls = TextToVideoA14B if m["task"] == "t2v-A14B" else ImageToVideoA14B
    return cls(comps, progress=False, experts=experts)


def check_run(pipe, job, sd, m, scale_max):
    """Replay: every step's DiT outputs from the recorded inputs (single steps), then the whole run."""
    steps = m["steps"]
    assert torch.equal(job.start, sd["in.noise"]) or torch.equal(job.start[:, 1:], sd["in.noise"][:, 1:])
    job.start = sd["step0.latent_in"].clone()
    sw_used, seen = [], []
    for i in range(steps):
        t = sd[f"step{i}.timestep"]
        name = None
        if hasattr(pipe, "experts"):
            name = "high" if float(t.flatten()[-1]) >= pipe.boundary * 1000 else "low"
        sw_used.append(name)
        dit = pipe.experts[name] if name else pipe.dit
        x = sd[f"step{i}.latent_in"][None]
        with torch.no_grad():
            for key, ctx in (("v_cond", sd["in.context"]), ("v_uncond", sd["in.context_null"])):
                kw = {"y": job.cond.y[None]} if job.cond.y is not None else {}
                tt = t[None] if t.numel() > 1 else t
                out = dit(x, tt, [ctx], **kw)[0]
                ref = sd[f"step{i}.{key}"]
                assert (out - ref).abs().max().item() <= ulps(ref), (i, key)

    def on_step(step, x, x0):
        seen.append(x.clone())
    latent = pipe.run(job, on_step=on_step)
    for i, x in enumerate(seen):
        ref = sd[f"step{i}.latent_out"]
        assert (x - ref).abs().max().item() <= run_bound(sd, steps, scale_max), i
    ref = sd["out.final_latent"]
    diff = (latent - ref).abs().max().item()
    assert run_bound(sd, steps, scale_max) <= 1.1e-4          # the README's whole-run bound, as derived
    assert diff <= run_bound(sd, steps, scale_max), diff
    return latent, sw_used
