"""Videos sampled with the model being trained: the training config's ``validation`` section.

    validation: {prompts: [...], seed: 0, sample_steps: 20, ...}   (validate_every: N; 0: at the end only)

    setup (once):  the pipeline of the checkpoint the run starts from (model.path, or data.ckpt_dir: its VAE,
                   text encoder and sampling defaults) built around the DiT being trained (with its LoRA): the
                   checkpoint's own DiT is never read (an A14B expert's run: the other expert loaded beside it)
                   -> the prompts encoded once; the text encoder freed when they all stay in its memo
    each time:     every prompt, seed ``seed`` -> <output_dir>/samples/step-<N>/<i>.mp4 (.png for one frame)
                   and its settings <i>.json (prompt, seed, steps, ...), written atomically by the pipeline on
                   process 0; every process runs the sampler (the DiT's forward needs all of them under FSDP)
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn


def _source(cfg) -> str:
    """Where the VAE, text encoder and sampling defaults come from: data.ckpt_dir, else model.path (a folder)."""
    from openwan.training.config import resolve_model_path
    for field, path in (("data.ckpt_dir", cfg.data.ckpt_dir), ("model.path", cfg.model.path)):
        if path is None:
            continue
        if str(path) == "demo":
            return "demo"
        resolved = resolve_model_path(path, field)
        if Path(resolved).is_dir():
            return resolved
    raise ValueError("validation samples need a checkpoint folder for the VAE, text encoder and sampling defaults: "
                     "set model.path to one (or to demo), or data.ckpt_dir (a model built from model.variant or "
                     "model.dit, or a single DiT .safetensors file, has none)")


def make_sampler(cfg, module: nn.Module, device: torch.device, out: Path,
                 rank: int = 0) -> Callable[[nn.Module, int], None]:
    """The Trainer's ``on_validate`` hook for ``cfg.validation`` (see the module docstring)."""
    from openwan import validate
    from openwan.pipelines import load_pipeline
    from openwan.pipelines.base import PROMPT_MEMO_MAX
    from openwan.pipelines.components import ARCHITECTURE, ArchitectureMismatch, config_mismatch
    vc = cfg.validation
    expert = cfg.model.expert          # Wan 2.2 A14B: the trained expert samples beside the other, as loaded

    def mismatch(differ: str) -> ValueError:
        return ValueError(f"validation: the model being trained is not the architecture of {_source(cfg)}, whose VAE "
                          f"and text encoder sample it (the checkpoint's vs the model's: {differ}); point "
                          f"data.ckpt_dir at a checkpoint of the same model")
    try:            # one DiT: the trained one (and its LoRA) is the pipeline's, the checkpoint's never read
        pipe = load_pipeline(_source(cfg), device=device, progress=False, t5_cpu=device.type == "cuda",
                             **({"experts": "both"} if expert else {"dit": module}))
    except ArchitectureMismatch as e:
        raise mismatch(e.differ) from None
    if expert is not None:
        differ = config_mismatch(pipe.experts[expert].config, module.config, ARCHITECTURE)
        if differ:
            raise mismatch(differ)
        setattr(pipe.c, "dit" if expert == "high" else "dit_low", module)   # the loaded expert goes
        pipe.experts[expert] = module
    negative = pipe.default_negative_prompt() if vc.negative_prompt is None else vc.negative_prompt
    prompts = list(vc.prompts)
    settings = dict(negative_prompt=negative, seed=vc.seed, sample_steps=vc.sample_steps, guide_scale=vc.guide_scale,
                    size=vc.size, frame_num=vc.frame_num)
    for i, prompt in enumerate(prompts):     # the pipeline's own checks (and the prompts encoded) now, not at step N
        try:
            pipe.prepare(prompt, **settings)
        except (ValueError, TypeError) as e:
            raise ValueError(f"validation prompt {i + 1} ({prompt!r}): {e}") from None
    te = pipe.c.text_encoder
    if len({*prompts, negative}) <= PROMPT_MEMO_MAX and hasattr(te, "release"):
        te.release()      # every prompt's features stay in the pipeline's memo

    def sample(model: nn.Module, step: int) -> None:
        folder = Path(out) / "samples" / f"step-{step:08d}"
        ext = "png" if validate.call_frames(pipe, vc.frame_num) == 1 else "mp4"
        for i, prompt in enumerate(prompts):
            path = folder / f"{i:02d}.{ext}" if rank == 0 else None
            if path is not None:
                folder.mkdir(parents=True, exist_ok=True)
            try:
                pipe(prompt, output_path=path, overwrite=True, **settings)
            except Exception as e:  # noqa: BLE001 - a failed sample (out of memory, a full disk) ends no training
                warnings.warn(f"validation at step {step}, prompt {i + 1}: {type(e).__name__}: {e}; training goes "
                              f"on", stacklevel=2)
        if rank == 0:
            print(f"validation: step {step}'s samples in {folder}", flush=True)
    return sample


def sampler_for(trainer) -> Optional[Callable[[nn.Module, int], None]]:
    """The hook of a Trainer whose config has a validation section (None otherwise)."""
    if trainer.cfg.validation is None:
        return None
    return make_sampler(trainer.cfg, trainer.module, trainer.device, trainer.out, trainer.rank)
