"""``openwan distill``: a teacher DiT -> a few-step, guidance-free student (docs/distill.md).

    openwan distill --config examples/distill_demo.yaml                 # data, then training (both resumable)
    openwan distill --config x.yaml --stage data                        # only the teacher's trajectories
    openwan distill --config x.yaml --stage train --nproc 2             # only the training (N local processes)
    openwan distill --config x.yaml --stage export --out student.safetensors   # fp16 DiT + sampling preset

The YAML is a training config (docs/training.md) whose objective is the trajectory distillation of
:mod:`openwan.training.distill`; its options also describe the data stage (teacher, prompts, samples,
teacher sampling). ``data.cache_dir`` is where the trajectories go. The same YAML runs under
``torchrun -m openwan.training.trainer --config x.yaml`` once the data stage is done.

Sampling presets: a student carries its sampler settings (:class:`~openwan.training.distill.DistillPreset`)
as ``openwan.sampling`` metadata in its weight files (exported student, LoRA files) and in
``<output_dir>/sampling_preset.json``; :func:`apply_preset` makes them a pipeline's defaults.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Union

import torch

from openwan.training.distill import DistillPreset, TrajectoryDistill, generate_trajectories, read_prompts

PRESET_KEY = "openwan.sampling"


def _config(path, sets):
    from openwan.training.config import TrainConfig, apply_overrides, read_yaml
    d = apply_overrides(read_yaml(path), sets)
    cfg = TrainConfig.from_dict(d)
    name = cfg.objective.name
    if name not in ("trajectory_distill", "openwan.training.distill:TrajectoryDistill"):
        raise ValueError(f"objective.name is {name!r}: a distillation config needs "
                         f"'openwan.training.distill:TrajectoryDistill' (see examples/distill_demo.yaml)")
    return d, cfg, dict(cfg.objective.options or {})


def _preset(cfg, opts) -> DistillPreset:
    obj = TrajectoryDistill(cfg, **opts)
    return obj.preset(float(opts.get("shift", opts.get("teacher_shift", 1.0))))


def load_teacher(path: str, loras=(), device=None):
    """The teacher pipeline: any openwan-loadable checkpoint (or "demo"), with LoRAs applied
    (``loras``: paths or ``{path, strength}``)."""
    from openwan.pipelines import load_pipeline
    pipe = load_pipeline(path, task="t2v", device=device, progress=False)
    if loras:
        from openwan.training.lora import load_lora
        for item in loras:
            item = {"path": item} if isinstance(item, str) else dict(item)
            load_lora(pipe.dit, item["path"], strength=float(item.get("strength", 1.0)))
    return pipe


def run_data(cfg, opts, progress: bool = True) -> list[Path]:
    """The data stage: the teacher's trajectories into ``data.cache_dir`` (resumable)."""
    if not cfg.data.cache_dir:
        raise ValueError("data.cache_dir is needed: the folder the teacher's trajectories are written to")
    teacher = opts.get("teacher") or cfg.model.path
    if not teacher:
        raise ValueError("objective.teacher (or model.path) must name the teacher checkpoint")
    n = int(opts.get("samples", 256))
    prompts = read_prompts(opts.get("prompts", "demo"), n, int(opts.get("data_seed", 0)))
    pipe = load_teacher(str(teacher), opts.get("teacher_lora") or ())
    d = pipe.defaults()
    return generate_trajectories(
        pipe, prompts, cfg.data.cache_dir, TrajectoryDistill(cfg, **opts).timesteps,
        steps=int(opts.get("teacher_steps", d.steps)), shift=float(opts.get("teacher_shift", d.shift)),
        guide_scale=float(opts.get("teacher_guide_scale", d.guide_scale)),
        solver=str(opts.get("teacher_solver", d.solver)),
        negative_prompt=str(opts.get("negative_prompt", d.negative_prompt)), frame_num=opts.get("frame_num"),
        size=opts.get("size"), seed=int(opts.get("data_seed", 0)), batch=int(opts.get("data_batch", 8)),
        progress=progress)


def add_preset_metadata(path: Union[str, Path], preset: DistillPreset) -> None:
    """Rewrite a safetensors file (atomically) with the preset in its metadata."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from openwan.fileio import atomic_write
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta[PRESET_KEY] = preset.to_json()
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def preset_of(path: Union[str, Path]) -> Optional[DistillPreset]:
    """The sampling preset stored in a weight file's metadata (a student or a distill LoRA), or None."""
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        text = (f.metadata() or {}).get(PRESET_KEY)
    return None if text is None else DistillPreset.from_json(text)


# Community distill LoRAs matched by file name when the file carries no preset: (label, groups, preset); the
# lower-cased name (with "-" and " " read as "_") must contain one substring of every group. First match wins,
# so the specific entries come first. The published sampler settings, with their sources:
# * LightX2V, Wan 2.1 step/CFG distill (T2V and I2V; e.g. wan2.1_t2v_14b_lora_rank64_lightx2v_4step,
#   lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16): ModelTC/LightX2V
#   configs/distill/wan21/wan_t2v_distill_lora_4step_cfg.json (denoising_step_list [1000, 750, 500, 250],
#   sample_shift 5, enable_cfg false) with lightx2v/models/schedulers/wan/step_distill/scheduler.py
#   (WanStepDistillScheduler: sigmas = shift-5 of t / 1000, i.e. timesteps 1000, 937.5, 833.3, 625, here the
#   integers 1000, 937, 833, 625; each step predicts x0 and re-noises it with fresh noise: "consistency").
# * LightX2V, Wan 2.2 A14B distill (wan2.2_t2v_A14b_high_noise_lora_rank64_lightx2v_4step_1217 ...): the same
#   timesteps, shift 5, no CFG (configs/distill/wan22/wan_moe_t2v_distill_lora.json), but its
#   Wan22StepDistillScheduler steps deterministically, x0 + sigma_next * v, which is an Euler step: "euler".
# * Self-Forcing (guandeh17/Self-Forcing configs/self_forcing_dmd.yaml: denoising_step_list
#   [1000, 750, 500, 250], warp_denoising_step true, timestep_shift 5 -> the same warped timesteps as LightX2V;
#   pipeline/causal_inference.py predicts x0 and adds fresh noise at the next timestep; guidance_scale 3.0 is
#   the DMD teacher's during training, inference runs without CFG): LightX2V's preset.
# * CausVid 1.3B bidirectional (Kijai's Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32, from tianweiy/CausVid's
#   bidirectional checkpoint): configs/wan_bidirectional_dmd_from_scratch.yaml denoising_step_list
#   [1000, 757, 522] unwarped (sigma = t / 1000; timestep_shift 8 is the training scheduler's), and
#   causvid/models/wan/bidirectional_inference.py predicts x0 then re-noises with fresh noise; no CFG.
# * CausVid 14B (Kijai's Wan21_CausVid_14B_T2V_lora_rank32*, extracted from lightx2v/Wan2.1-T2V-14B-CausVid):
#   LightX2V configs/causvid/wan_t2v_causvid.json: denoising_step_list [999, 934, 862, 756, 603, 410, 250,
#   140, 74], sample_shift 8, enable_cfg false; its WanCausVidScheduler takes sigma = t / 1000 and steps with
#   the base (UniPC) solver. (Wan2GP's "causvid" solver uses the same list from 1000 with Euler steps.)
# * Wan2.2-Lightning (lightx2v/Wan2.2-Lightning: folders Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1[.1],
#   Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1, Wan2.2-T2V-A14B-4steps-lora-250928, each holding
#   high_noise_model.safetensors and low_noise_model.safetensors; Kijai's repacks
#   Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH_fp16 ...): its generate.py runs wan/configs/wan_t2v_A14B.py
#   (sample_steps 4, sample_shift 5.0, sample_guide_scale (1.0, 1.0), the base boundary 0.875) with
#   wan/utils/fm_solvers_euler.py: linspace(1000, 0, 5) shifted by 5 (1000, 937.5, 833.3, 625) and
#   x + (sigma_next - sigma) * v, an Euler step. The file names are generic, so the folder's name counts too.
_LX_WARPED = (1000, 937, 833, 625)
NAMED_PRESETS = [
    ("causvid-1.3b", (("causvid",), ("bidirect", "1_3b", "1.3b")),
     DistillPreset((1000, 757, 522), "consistency", 1.0, 8.0)),
    ("causvid", (("causvid",),), DistillPreset((999, 934, 862, 756, 603, 410, 250, 140, 74), "unipc", 1.0, 8.0)),
    ("self-forcing", (("self_forcing", "selfforcing"),), DistillPreset(_LX_WARPED, "consistency", 1.0, 5.0)),
    ("wan2.2-lightning", (("lightning",), ("wan2.2", "wan22", "wan2_2", "a14b"), ("4step", "4_step", "nfe4")),
     DistillPreset(_LX_WARPED, "euler", 1.0, 5.0)),
    ("lightx2v-wan2.2", (("lightx2v",), ("wan2.2", "wan22", "wan2_2", "a14b"), ("distill", "4step")),
     DistillPreset(_LX_WARPED, "euler", 1.0, 5.0)),
    ("lightx2v", (("lightx2v",), ("distill", "4step")), DistillPreset(_LX_WARPED, "consistency", 1.0, 5.0)),
]


# Weight-file names that say nothing of what the file is (the published ones, and the usual trainer outputs).
GENERIC_NAMES = {"high_noise_model", "low_noise_model", "high_noise_model_4step_lora", "low_noise_model_4step_lora",
                 "model", "lora", "adapter_model", "pytorch_lora_weights", "diffusion_pytorch_model"}


def named_preset(path: Union[str, Path]) -> Optional[tuple]:
    """``(label, preset)`` of the first :data:`NAMED_PRESETS` entry the file name matches, or None. A generic
    name (:data:`GENERIC_NAMES`: ``high_noise_model.safetensors`` ...) is read with its two parent folders'
    names, nearest first (``Wan2.2-Lightning/Wan2.2-T2V-A14B-4steps-lora-.../``); other names alone, so a
    folder called ``distill_runs`` does not make every file in it a distill LoRA."""
    p = Path(path)
    names = [p.name]
    if p.name.lower().split(".")[0] in GENERIC_NAMES:
        names += ["/".join(p.parts[-2:]), "/".join(p.parts[-3:])]
    for name in names:
        name = name.lower().replace("-", "_").replace(" ", "_")
        for label, groups, preset in NAMED_PRESETS:
            if all(any(s in name for s in group) for group in groups):
                return label, preset
    return None


def preset_for(path: Union[str, Path]) -> Optional[DistillPreset]:
    """A weight file's sampling preset: its ``openwan.sampling`` metadata, else a :data:`NAMED_PRESETS` match
    on the file name, else None."""
    if str(path).endswith(".safetensors") and Path(path).exists():
        found = preset_of(path)
        if found is not None:
            return found
    hit = named_preset(path)
    return None if hit is None else hit[1]


def apply_preset(pipe, preset: DistillPreset) -> None:
    """Make ``preset`` the pipeline's sampling defaults (steps = its timestep count, its solver, guide scale,
    shift, timesteps; no default step cache and no task's own guidance: a few-step student computes each of
    its steps, guidance-free); calls may still override each, with a warning for guidance or more steps."""
    s = pipe.variant.sample.replace(steps=len(preset.timesteps), timesteps=tuple(preset.timesteps),
                                    solver=preset.solver, guide_scale=preset.guide_scale, shift=preset.shift,
                                    step_cache=None, task_guidance=())
    if s.guide_scales:             # Wan 2.2 A14B: a (low-noise, high-noise) pair wins over guide_scale
        s = s.replace(guide_scales=(preset.guide_scale, preset.guide_scale))
    pipe.variant = pipe.variant.replace(sample=s)


def export_student(weights: Union[str, Path], out: Union[str, Path], preset: DistillPreset) -> Path:
    """A trained full student -> one fp16 safetensors file of the DiT's state dict with the preset in its
    metadata. ``weights``: an exported official-layout folder (``<output_dir>/final_ema``) or a training
    checkpoint folder (``checkpoints/step-N``: its EMA weights when it has them, else the model's)."""
    from safetensors.torch import save_file
    from openwan.checkpoints import read_safetensors
    from openwan.fileio import atomic_write
    from openwan.models.dit import WanModel
    w = Path(weights)
    if (w / "model.safetensors").exists():        # a training checkpoint: the module's own keys
        sd = read_safetensors(w / ("ema.safetensors" if (w / "ema.safetensors").exists() else "model.safetensors"))
    else:
        sd = WanModel.from_pretrained(w, dtype=torch.float32, device="cpu").state_dict()
    sd = {k: v.to(torch.float16).contiguous() for k, v in sd.items()}
    meta = {"format": "pt", PRESET_KEY: preset.to_json()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, lambda tmp: save_file(sd, tmp, metadata=meta))


def average_students(files, out: Union[str, Path]) -> Path:
    """The mean of exported student files (fp16 safetensors of one architecture and one sampling preset): a weight
    average ("model soup", Wortsman et al. 2022) of students trained from the same teacher, written as one student
    file with their preset. Different keys, shapes or presets are refused."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from openwan.fileio import atomic_write
    files = [Path(f) for f in files]
    if len(files) < 2:
        raise ValueError("--stage average needs two or more student files (--inputs A.safetensors B.safetensors)")
    total, meta, dtypes = None, None, {}
    for f in files:
        if not f.exists():
            raise FileNotFoundError(f"student file {f} not found")
        with safe_open(str(f), "pt") as g:
            m = dict(g.metadata() or {})
            if PRESET_KEY not in m:
                raise ValueError(f"{f} has no sampling preset: average exported students (--stage export)")
            if meta is not None and m.get(PRESET_KEY) != meta.get(PRESET_KEY):
                raise ValueError(f"{f}'s sampling preset {m.get(PRESET_KEY)} differs from {files[0]}'s "
                                 f"{meta.get(PRESET_KEY)}: only students of one preset average")
            sd = {k: g.get_tensor(k) for k in g.keys()}
        if total is not None and (set(sd) != set(total) or any(sd[k].shape != total[k].shape for k in sd)):
            raise ValueError(f"{f} holds other tensors than {files[0]}: only students of one architecture average")
        meta = meta or m
        dtypes = dtypes or {k: v.dtype for k, v in sd.items()}
        total = {k: v.double() for k, v in sd.items()} if total is None else \
            {k: total[k] + v.double() for k, v in sd.items()}
    avg = {k: (v / len(files)).to(dtypes[k]).contiguous() for k, v in total.items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, lambda tmp: save_file(avg, tmp, metadata=meta))


def run_train(d: dict, cfg, opts, nproc: int = 1) -> dict:
    from openwan.fileio import write_json
    from openwan.training.trainer import Trainer, launch_local
    if nproc > 1:
        launch_local(d, nproc)
        summary = {"output_dir": cfg.output_dir}
    else:
        summary = Trainer(cfg).train()
    preset = _preset(cfg, opts)
    out = Path(cfg.output_dir)
    write_json(json.loads(preset.to_json()), out / "sampling_preset.json")
    for f in sorted(out.glob("lora*.safetensors")):
        add_preset_metadata(f, preset)
    return summary


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="openwan distill", description="Distill a Wan DiT into a few-step, "
                                 "guidance-free student on its own trajectories (docs/distill.md).")
    ap.add_argument("--config", default=None, help="distillation YAML (e.g. examples/distill_demo.yaml); every "
                                                   "stage but average needs it")
    ap.add_argument("--stage", choices=["all", "data", "train", "export", "average"], default="all",
                    help="all (default): data then train; export: fp16 student file with its sampling preset; "
                         "average: the mean of exported student files (--inputs) into --out")
    ap.add_argument("--inputs", nargs="+", default=None, metavar="FILE",
                    help="average: exported student files of one teacher and preset")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set steps=200 --set objective.samples=64")
    ap.add_argument("--resume", default=None, help="training: auto (default), none, or a checkpoint folder")
    ap.add_argument("--nproc", type=int, default=1, help="training on N local processes (without torchrun)")
    ap.add_argument("--weights", default=None, help="export: the trained folder (default <output_dir>/final_ema, "
                                                    "else final)")
    ap.add_argument("--out", default=None, help="export: the student file to write")
    a = ap.parse_args(argv)
    from openwan.checkpoints import CheckpointError
    try:
        if a.stage == "average":
            if not a.out:
                raise ValueError("--stage average needs --out FILE.safetensors")
            print(f"wrote {average_students(a.inputs or [], a.out)}")
            return 0
        if not a.config:
            raise ValueError(f"--stage {a.stage} needs --config x.yaml (e.g. examples/distill_demo.yaml)")
        sets = list(a.sets) + ([f"resume={a.resume}"] if a.resume else [])
        d, cfg, opts = _config(a.config, sets)
        if a.stage in ("all", "data"):
            files = run_data(cfg, opts, progress=cfg.progress)
            print(f"{len(files)} trajectories in {cfg.data.cache_dir}")
        if a.stage in ("all", "train"):
            s = run_train(d, cfg, opts, a.nproc)
            print(f"student trained to step {s.get('step', '?')}; outputs in {cfg.output_dir}")
        if a.stage == "export":
            if not a.out:
                raise ValueError("--stage export needs --out FILE.safetensors")
            w = Path(a.weights) if a.weights else None
            if w is None:
                w = next((Path(cfg.output_dir) / n for n in ("final_ema", "final")
                          if (Path(cfg.output_dir) / n).is_dir()), None)
            if w is None or not w.is_dir():
                raise FileNotFoundError(f"no trained student in {cfg.output_dir} (final_ema/ or final/): run "
                                        f"the train stage first, or give --weights")
            print(f"wrote {export_student(w, a.out, _preset(cfg, opts))}")
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
