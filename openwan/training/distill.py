"""Few-step distillation on the teacher's own ODE trajectories (data-free), as a training objective.

The method is trajectory distillation (Luhman & Luhman 2021, "Knowledge distillation in iterative
generative models"; the k-step form of progressive distillation, Salimans & Ho 2022; the "jump along the
teacher's probability-flow ODE from t to s" target of Consistency Trajectory Models, Kim et al. 2023):

1. **Trajectories** (:func:`generate_trajectories`). For each prompt and noise draw, the teacher (any
   openwan-loadable DiT, with CFG, at many solver steps) integrates the flow ODE on a grid that contains
   the student's k sigmas ``s_0 > ... > s_{k-1}``; the points ``x(s_0) .. x(s_{k-1})`` and the final
   ``x(0)`` are stored. Nothing but the teacher and prompts is needed (data-free); the files form a
   latent cache whose ``latent`` holds the k + 1 points stacked on the channel axis, so the trainer's
   data path (shuffling, buckets, several processes) reads them unchanged.
2. **Objective** (:class:`TrajectoryDistill`). Per sample one student index j is drawn (from the
   sample's generator: reproducible, resume bit-exact); the student gets ``x(s_j)`` at timestep
   ``t_j`` with the prompt only (no negative prompt: guidance is baked in) and is trained so that one
   Euler step lands on the teacher's next point:
   ``target v = (x(s_j) - x(s_{j+1})) / (s_j - s_{j+1})`` (``target: next``, default; with
   ``s_k = 0`` the last step's target is the teacher's x0), or on the teacher's final sample
   ``target v = (x(s_j) - x(0)) / s_j`` (``target: x0``, for the "consistency" re-noising solver).
   The loss is the MSE in velocity space.

A student trained with ``target: next`` samples with the ``euler`` solver on exactly its k timesteps,
guide scale 1: each step then reproduces one stretch of the teacher's 30-step CFG trajectory. Its
sampler settings are its *preset* (:class:`DistillPreset`), stored with the exported weights.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from openwan import sampling
from openwan.training.objectives import Objective, register_objective

__all__ = ["DistillPreset", "teacher_grid", "trajectory_batch", "generate_trajectories", "demo_prompts",
           "TrajectoryDistill", "split_trajectory"]


@dataclass(frozen=True)
class DistillPreset:
    """The sampler settings a student was trained for (recorded with its weights and in generated files)."""
    timesteps: tuple = (999, 900, 750, 500)
    solver: str = "euler"
    guide_scale: float = 1.0
    shift: float = 3.0          # informational: the shift the timesteps were laid out with

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "timesteps": list(self.timesteps)})

    @classmethod
    def from_json(cls, text: str) -> "DistillPreset":
        d = json.loads(text)
        return cls(timesteps=tuple(int(t) for t in d["timesteps"]), solver=d.get("solver", "euler"),
                   guide_scale=float(d.get("guide_scale", 1.0)), shift=float(d.get("shift", 1.0)))


def _student_sigmas(timesteps: Sequence[int]) -> torch.Tensor:
    """The student's grid (float64, final 0 appended) with a clear error for a bad list."""
    return sampling.sigmas_from_timesteps(timesteps)


def teacher_grid(timesteps: Sequence[int], steps: int, shift: float, solver: str = "unipc") -> torch.Tensor:
    """The teacher's grid: its solver's usual ``steps``-step grid below the student's first sigma, with the
    student's sigmas inserted (so the trajectory passes through each of them exactly). Float64, ends at 0."""
    student = _student_sigmas(timesteps)
    base = sampling.sigmas_for(solver, steps, shift)
    top = float(student[0])
    keep = [float(s) for s in base if float(s) < top - 1e-6]
    pts = sorted({round(s, 12) for s in keep + [float(s) for s in student]}, reverse=True)
    return torch.tensor(pts, dtype=torch.float64)


def trajectory_batch(dit, noise: torch.Tensor, contexts: list, context_null: Optional[torch.Tensor],
                     timesteps: Sequence[int], *, steps: int = 30, shift: float = 3.0, guide_scale: float = 5.0,
                     solver: str = "unipc") -> torch.Tensor:
    """The teacher's trajectories of a batch: noise [B, C, F, H, W] (at the student's first sigma) ->
    [B, k + 1, C, F, H, W]: the points at the student's k sigmas, then the final sample (sigma 0).
    CFG runs as one batched cond + uncond forward per step."""
    grid = teacher_grid(timesteps, steps, shift, solver)
    student = _student_sigmas(timesteps)
    at = {round(float(s), 12): j for j, s in enumerate(student[1:-1].tolist(), start=1)}
    b = noise.shape[0]
    dtype = next(dit.parameters()).dtype
    guided = guide_scale != 1.0 and context_null is not None
    ctx = list(contexts) + ([context_null] * b if guided else [])

    def denoise(x, step):
        xin = torch.cat([x, x]) if guided else x
        out = dit(xin.to(dtype), step.t.expand(xin.shape[0]), ctx).float()
        return sampling.cfg(out[:b], out[b:], guide_scale) if guided else out

    points = [None] * (len(student))
    points[0] = noise.float()
    grid_vals = [round(float(s), 12) for s in grid]

    def on_step(step, x, x0):
        j = at.get(grid_vals[step.i + 1])
        if j is not None:
            points[j] = x.float().clone()

    with torch.no_grad():          # not inference_mode: the result may feed a training run in memory
        final = sampling.run(denoise, noise, grid, solver, on_step=on_step)
    points[-1] = final.float()
    return torch.stack(points, dim=1)


def split_trajectory(latent: torch.Tensor, channels: int) -> torch.Tensor:
    """A trajectory-cache latent [B, (k+1)*C, F, H, W] -> [B, k+1, C, F, H, W]."""
    b, kc = latent.shape[:2]
    if kc % channels:
        raise ValueError(f"the training latents have {kc} channels, not a multiple of the DiT's {channels}: "
                         f"data.cache_dir must be a trajectory cache written by `openwan distill` "
                         f"(its data stage), not a plain latent cache")
    return latent.reshape(b, kc // channels, channels, *latent.shape[2:])


# ============================================================================ prompts

def demo_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` captions of the demo world's *training* combinations (held-out ones never appear) of its classic
    motions (those the shipped demo-4step student was distilled on), drawn with the world's own caption
    templates and paraphrases."""
    from openwan.demo import world
    rng = np.random.default_rng(seed)
    templates = [t for t in world.CAPTION_TEMPLATES if "{size}" not in t]
    combos = [a for a in world.TRAIN_COMBOS if a.motion in world.CLASSIC_MOTIONS]    # same order as before
    out = []
    for _ in range(n):
        a = combos[int(rng.integers(len(combos)))]
        shape = a.shape
        syn = world.SHAPE_SYNONYMS.get(shape, ())
        if syn and rng.random() < world.SHAPE_SYNONYM_PROB:
            shape = str(rng.choice(syn))
        motion = str(rng.choice(world.MOTION_PHRASES[a.motion]))
        out.append(str(rng.choice(templates)).format(color=a.color, shape=shape, motion=motion, size=""))
    return out


def read_prompts(spec: Union[str, Sequence[str]], n: int, seed: int = 0) -> list[str]:
    """``demo`` (the demo world's training captions), a text file (one prompt a line, cycled), or a list."""
    if isinstance(spec, str) and spec == "demo":
        return demo_prompts(n, seed)
    if isinstance(spec, str):
        p = Path(spec)
        if not p.exists():
            raise FileNotFoundError(f"prompts file {p} not found (one prompt per line, or `prompts: demo`)")
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    else:
        lines = [str(s) for s in spec]
    if not lines:
        raise ValueError("no prompts: give a file with one prompt per line, a list, or `demo`")
    return [lines[i % len(lines)] for i in range(n)]


# ============================================================================ the data stage

def generate_trajectories(pipe, prompts: Sequence[str], out_dir: Union[str, Path], timesteps: Sequence[int], *,
                          steps: int = 30, shift: float = 3.0, guide_scale: float = 5.0, solver: str = "unipc",
                          negative_prompt: str = "", frame_num: Optional[int] = None,
                          size: Optional[str] = None, seed: int = 0, batch: int = 8,
                          progress: bool = True) -> list[Path]:
    """Sample the teacher (``pipe``: a text-to-video pipeline) on every prompt and write one trajectory file
    per sample into ``out_dir`` (``traj-<i>.safetensors``: ``latent`` [(k+1)*C, F, H, W], ``context``),
    atomically. Resumable: finished files are kept; a manifest lists the files and the settings, and a
    folder made with other settings is an error rather than silently mixed. Sample i's noise comes from
    seed ``seed * 1_000_003 + i``."""
    from safetensors.torch import save_file
    from openwan.fileio import atomic_write, write_json
    from openwan.pipelines.base import parse_size
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = pipe.defaults()
    width, height = parse_size(size, d.size)
    frame_num = frame_num or d.frame_num
    vae = pipe.vae
    shape = (vae.z_dim, (frame_num - 1) // vae.temporal_ratio + 1, height // vae.spatial_ratio,
             width // vae.spatial_ratio)
    settings = {"timesteps": [int(t) for t in timesteps], "teacher_steps": steps, "teacher_shift": shift,
                "teacher_guide_scale": guide_scale, "teacher_solver": solver, "negative_prompt": negative_prompt,
                "frame_num": frame_num, "size": f"{width}*{height}", "seed": seed}
    man = out / "distill.json"
    if man.exists():
        old = json.loads(man.read_text(encoding="utf-8")).get("settings")
        if old != settings:
            raise ValueError(f"{out} holds trajectories made with other settings ({old}); use a new folder")
    names = [f"traj-{i:06d}.safetensors" for i in range(len(prompts))]
    write_json({"settings": settings, "count": len(prompts)}, man)
    todo = [i for i, n in enumerate(names) if not (out / n).exists()]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc="teacher trajectories", unit="sample")
    for a in range(0, len(todo), batch):
        idx = todo[a: a + batch]
        ctx = pipe.encode_prompts([prompts[i] for i in idx] + [negative_prompt])
        noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + i))
                             for i in idx]).to(pipe.device)
        traj = trajectory_batch(pipe.dit, noise, ctx[:-1], ctx[-1], timesteps, steps=steps, shift=shift,
                                guide_scale=guide_scale, solver=solver)
        for b, i in enumerate(idx):
            lat = traj[b].flatten(0, 1).cpu().contiguous()
            meta = {"prompt": prompts[i], "index": str(i), "distill": json.dumps(settings)}
            tensors = {"latent": lat, "context": ctx[b].float().cpu().contiguous()}
            atomic_write(out / names[i], lambda tmp, t=tensors, m=meta: save_file(t, tmp, metadata=m),
                         suffix=".safetensors")
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    write_json({"settings": settings, "count": len(prompts), "files": names}, man)
    write_json({"files": names}, out / "manifest.json")
    return [out / n for n in names]


# ============================================================================ the objective

class TrajectoryDistill(Objective):
    """``objective: {name: trajectory_distill, timesteps: [999, 900, 750, 500], target: next}``.

    The training data is a trajectory cache (:func:`generate_trajectories`); the options that only the data
    stage reads (teacher, prompts, ...) are accepted and ignored here so one YAML serves both stages.

    ``rollout: p`` (Euler students): that share of the samples at a later step ``j`` start from where the
    student's own ``j`` steps put them (no gradient through those steps) rather than from the teacher's point,
    and regress the step from there to the teacher's next point: the student learns to correct its own errors
    as it samples instead of only the teacher's (the train / sample mismatch of Imagine Flash's "backward
    distillation", Kohler et al. 2024)."""

    DATA_OPTIONS = ("teacher", "teacher_lora", "teacher_steps", "teacher_shift", "teacher_guide_scale",
                    "teacher_solver", "negative_prompt", "prompts", "samples", "data_seed", "data_batch",
                    "frame_num", "size", "shift")

    def __init__(self, config=None, timesteps: Sequence[int] = (999, 900, 750, 500), target: str = "next",
                 rollout: float = 0.0, **data_options):
        unknown = sorted(set(data_options) - set(self.DATA_OPTIONS))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}")
        if target not in ("next", "x0"):
            raise ValueError(f"objective target must be 'next' (Euler student) or 'x0' (consistency student), "
                             f"got {target!r}")
        self.timesteps = [int(t) for t in timesteps]
        self.sigmas = _student_sigmas(self.timesteps).to(torch.float32)
        self.target = target
        rollout = float(rollout)
        if not 0.0 <= rollout <= 1.0:
            raise ValueError(f"objective rollout is the share of samples whose input is the student's own "
                             f"steps, between 0 and 1; got {rollout}")
        if rollout > 0 and target != "next":
            raise ValueError("objective rollout needs target: next (the Euler student's own steps)")
        self.rollout = rollout

    def draw(self, rng: list) -> list[int]:
        k = len(self.timesteps)
        return [int(torch.randint(k, (1,), generator=g)) for g in rng]

    def draw_rollout(self, rng: list) -> list[bool]:
        """Per sample: does its input come from the student's own steps? (Drawn after :meth:`draw`, and only
        when ``rollout`` > 0, so runs without it draw exactly what they always did.)"""
        if self.rollout <= 0.0:
            return [False] * len(rng)
        return [bool(torch.rand((1,), generator=g).item() < self.rollout) for g in rng]

    @torch.no_grad()
    def student_inputs(self, model, traj: torch.Tensor, j: torch.Tensor, roll: torch.Tensor, batch) -> torch.Tensor:
        """Each row's input: the teacher's point ``x(s_j)``, or for the rows in ``roll`` the student's own point
        after ``j`` of its Euler steps from the teacher's first point (where sampling puts it)."""
        rows = torch.arange(len(j))
        x = traj[rows, j].clone()
        need = roll & (j > 0)
        if not bool(need.any()):
            return x
        cur = traj[:, 0].clone()
        for i in range(int(j[need].max())):
            t = torch.full((len(j),), self.timesteps[i], device=cur.device)
            v = model(cur, t, batch.context, **batch.cond).float()
            step = (need & (j > i)).view(-1, 1, 1, 1, 1).to(cur.device)
            cur = torch.where(step, cur - (self.sigmas[i] - self.sigmas[i + 1]) * v, cur)
        x[need] = cur[need]
        return x

    def __call__(self, model, batch, rng):
        channels = getattr(getattr(model, "module", model), "config", None)
        channels = channels.in_dim if channels is not None else batch.latent.shape[1] // (len(self.timesteps) + 1)
        traj = split_trajectory(batch.latent.float(), channels)
        k = len(self.timesteps)
        if traj.shape[1] != k + 1:
            raise ValueError(f"the trajectory cache holds {traj.shape[1] - 1} student points, the objective has "
                             f"{k} timesteps {self.timesteps}: generate the data with the same timesteps")
        j = torch.tensor(self.draw(rng))
        rows = torch.arange(len(j))
        roll = torch.tensor(self.draw_rollout(rng), dtype=torch.bool)
        x = self.student_inputs(model, traj, j, roll, batch) if bool(roll.any()) else traj[rows, j]
        s = self.sigmas[j].to(x.device).view(-1, 1, 1, 1, 1)
        if self.target == "next":
            s_next = self.sigmas[j + 1].to(x.device).view(-1, 1, 1, 1, 1)
            v_target = (x - traj[rows, j + 1]) / (s - s_next)
        else:
            v_target = (x - traj[:, -1]) / s
        t = torch.tensor([self.timesteps[i] for i in j.tolist()], device=x.device)
        pred = model(x, t, batch.context, **batch.cond)
        per = (pred.float() - v_target).pow(2).flatten(1).mean(1)
        return per.mean(), {}

    def preset(self, shift: float = 1.0) -> DistillPreset:
        return DistillPreset(tuple(self.timesteps), "euler" if self.target == "next" else "consistency", 1.0,
                             shift)


register_objective("trajectory_distill", lambda config, **options: TrajectoryDistill(config, **options))

