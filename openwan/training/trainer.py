"""Fine-tuning of the Wan DiT (full or LoRA), on one process or many: the training loop.

    config (YAML, training/config.py)  ->  model (variant / checkpoint / inline config)  [+ LoRA, base frozen]
                                       ->  data (latent cache, or captions encoded into one first)
    each step:  grad_accum x { global batch of one bucket -> this process's slice
                               -> objective(model, batch, rng)  (default: flow matching, training/objectives.py)
                               -> backward }
                -> clip grad norm -> AdamW (lr from the schedule) -> EMA -> objective.after_step
                -> loss.csv row, progress bar, validation hook, periodic checkpoint (training/checkpoint.py)
    end / Ctrl-C / SIGTERM -> checkpoint; final weights (full: official layout dir; LoRA: .safetensors)

Multi-process (training/launch.py): run under ``torchrun`` or use :func:`launch_local`; every process
sees the same global batch order and takes its slice, and each sample's random draws come from a
generator seeded by (seed, step, sample index), so a run on N processes with per-process batch b
follows the same curve as one process with batch N*b. ``resume: auto`` continues from the newest
checkpoint, reproducing the uninterrupted run exactly.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import random
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from openwan.training import checkpoint as ckpt
from openwan.training.config import (TrainConfig, apply_overrides, lr_multiplier, read_yaml,  # noqa: F401
                                     resolve_model_path)
from openwan.training.data import BucketBatchSampler, CachedLatentDataset, LatentDataset, collate, shard_batch
from openwan.training.launch import (barrier, default_device, end_process_group, init_distributed, rank, spawn, world,
                                     wrap_model)
from openwan.training.loss import sample_seed
from openwan.training.objectives import Batch, ObjectiveContext, build_objective

CKPT_PREFIX = ckpt.CKPT_PREFIX
export_full = ckpt.export_full   # re-exported: openwan.training.trainer.export_full


# ============================================================================ model and data

def _dtype(name) -> torch.dtype:
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; use fp32 or bf16")
    return table[name]


def _to_tuple(v):
    return tuple(_to_tuple(x) for x in v) if isinstance(v, list) else v


def build_model(spec, seed: int = 0) -> nn.Module:
    """The DiT from the config's ``model`` section (a ModelConfig or its mapping).

    * ``path``: a checkpoint (official/diffusers directory or .safetensors, or "demo"), optionally with
      ``variant`` to pick the architecture when the files carry no config;
    * ``variant`` alone: that architecture, randomly initialised (training from scratch);
    * ``dit``: inline DiTConfig fields, randomly initialised (tests, the demo).
    ``dtype`` (fp32 default) is the storage dtype of the weights.
    """
    from openwan.configs import DiTConfig, get_variant
    from openwan.models.dit import WanModel, init_weights
    from openwan.training.config import ModelConfig, build_section
    spec = spec if isinstance(spec, ModelConfig) else build_section(ModelConfig, dict(spec or {}), "model")
    dtype = _dtype(spec.dtype)
    cfg = None
    if spec.dit is not None:
        cfg = DiTConfig.from_dict({k: _to_tuple(v) for k, v in spec.dit.items()}, strict=True)
    elif spec.variant:
        cfg = get_variant(spec.variant).dit
    if spec.path:
        path = resolve_model_path(spec.path)
        from openwan.training.experts import check_expert, expert_folder
        check_expert(path, spec.expert)
        if spec.expert is not None:          # one expert of a Wan 2.2 A14B folder
            path = str(expert_folder(Path(path), spec.expert))
        return WanModel.from_pretrained(path, dtype=dtype, config=cfg if spec.dit is not None else None)
    if spec.expert is not None:
        raise ValueError("model.expert picks an expert of a Wan 2.2 A14B checkpoint: it needs model.path")
    if cfg is not None:
        torch.manual_seed(seed)
        return init_weights(WanModel(cfg)).to(dtype)
    raise ValueError("the model section needs a checkpoint `path`, a `variant` name or an inline `dit` config")


def build_dataset(cfg: TrainConfig, out: Path, device: torch.device) -> LatentDataset:
    """The latent dataset of the config's ``data`` section; with ``data.file`` the captions are encoded into
    ``data.cache_dir`` first (process 0; resumable), with the VAE / text encoder of ``data.ckpt_dir`` or
    ``model.path``."""
    dc = cfg.data
    cache_dir = Path(dc.cache_dir or out / "latent_cache")
    if dc.file:
        if not Path(dc.file).exists():
            raise FileNotFoundError(f"data.file {dc.file} does not exist: write the captions file first "
                                    f"(CSV or JSONL of path, caption; see docs/training.md)")
        if dc.buckets is None:
            raise ValueError("data.file needs data.buckets ([frames, height, width] triples)")
        if dc.ckpt_dir is None and cfg.model.path is None and (dc.vae is None or dc.text_encoder is None):
            raise ValueError("data.file needs the VAE and text encoder to encode the captions: set data.ckpt_dir "
                             "(or model.path, or data.vae + data.text_encoder)")
        source = resolve_model_path(dc.ckpt_dir, "data.ckpt_dir") or resolve_model_path(cfg.model.path)
        if rank() == 0:
            from openwan.training.cache import cache_latents_from_checkpoint
            cache_latents_from_checkpoint(dc.file, cache_dir, source, dc.buckets, vae_path=dc.vae,
                                          text_encoder_path=dc.text_encoder, device=device, target_fps=dc.fps,
                                          progress=cfg.progress, task=dc.task, image_encoder_path=dc.image_encoder)
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the encoders are gone; give their memory back
        barrier()
    elif not dc.cache_dir:
        raise ValueError("the data section needs cache_dir (from `openwan cache-latents`) or file + buckets")
    elif not Path(dc.cache_dir).exists():
        raise FileNotFoundError(f"data.cache_dir {dc.cache_dir} does not exist: encode the clips first "
                                f"(`openwan cache-latents --data captions.csv --out {dc.cache_dir} ...`, or give "
                                f"data.file + data.buckets and the trainer encodes them)")
    return CachedLatentDataset(cache_dir)


_CAPTION_STREAM = 1  # caption dropout's draws: sample_seed(seed, step, index, 1), apart from the objective's


def empty_context_for(caption_dropout: float, dataset: LatentDataset) -> Optional[torch.Tensor]:
    """The empty prompt's features that ``data.caption_dropout`` trains on (None when it is 0), or an error
    saying how to get them."""
    if caption_dropout <= 0:
        return None
    empty = getattr(dataset, "empty_context", None)
    if empty is None:
        where = f" {dataset.dir}" if hasattr(dataset, "dir") else ""
        raise ValueError(f"data.caption_dropout needs the empty prompt's text features, which the latent "
                         f"cache{where} lacks (caches written before openwan cached them): run `openwan "
                         f"cache-latents` on it again (cached samples are skipped; it adds "
                         f"empty_prompt.safetensors), or set data.caption_dropout: 0")
    return empty.float()


def check_conditioning(module: nn.Module, dataset: LatentDataset) -> None:
    """The samples carry the image condition exactly when the DiT takes one (i2v / flf2v), and the VACE context
    exactly when it has VACE blocks."""
    cfg = getattr(module, "config", None)
    if cfg is None or not len(dataset):
        return
    item = dataset[0]
    has = "y" in item and "clip_fea" in item
    kind = getattr(cfg, "model_type", "t2v")
    if cfg.has_image_input and not has:
        raise ValueError(f"the model is an {kind} DiT (image-conditioned) but the training samples have no "
                         f"image condition (y, clip_fea): cache them with `openwan cache-latents --task "
                         f"{kind}` (or data.task: {kind})")
    if not cfg.has_image_input and ("y" in item or "clip_fea" in item):
        raise ValueError(f"the training samples carry an image condition (y / clip_fea, an i2v/flf2v cache) "
                         f"but the model is a {kind} DiT: use an I2V/FLF2V model, or cache with --task t2v")
    vace = bool(getattr(cfg, "is_vace", False))
    if vace and "vace_context" not in item:
        raise ValueError("the model is a VACE DiT but the training samples have no VACE context: cache them with "
                         "`openwan cache-latents --task vace` (or data.task: vace), the captions' control / mask "
                         "columns giving each clip's control video and mask")
    if not vace and "vace_context" in item:
        raise ValueError(f"the training samples carry a VACE context (a vace cache) but the model is a {kind} DiT "
                         f"without VACE blocks: train a VACE model (Wan2.1-VACE-1.3B / 14B), or cache with --task "
                         f"t2v")


# ============================================================================ the trainer

class Trainer:
    """One training run: ``Trainer(config).train()``; see the module docstring.

    model: a WanModel to train (else built from ``config.model``); dataset: a LatentDataset (else from
    ``config.data``); on_validate(model, step): called every ``validate_every`` steps (and at the end)
    with the model in eval mode under no_grad, on every process (else, with a ``validation`` section in the
    config, the sampler of training/validation.py, also at the end when validate_every is 0); objective: an
    objective instance (else built from ``config.objective``, see training/objectives.py).
    """

    def __init__(self, config: Union[TrainConfig, dict], model: Optional[nn.Module] = None,
                 dataset: Optional[LatentDataset] = None,
                 on_validate: Optional[Callable[[nn.Module, int], Any]] = None,
                 device: Union[str, torch.device, None] = None, objective: Optional[Callable] = None):
        cfg = self.cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        cfg.validate()
        self._own_group = init_distributed()
        self.rank, self.world = rank(), world()
        self.device = torch.device(device) if device is not None else default_device()
        self.out = Path(str(cfg.output_dir))
        self.on_validate = on_validate
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2 ** 32)
        torch.manual_seed(cfg.seed)

        # data first (building a latent cache needs the VAE and text encoder in memory for a while)
        if model is None and cfg.model.path:
            path = resolve_model_path(cfg.model.path)  # a missing checkpoint is named before any encoding starts
            from openwan.training.experts import check_expert, expert_timesteps
            check_expert(path, cfg.model.expert)
            if cfg.model.expert is not None:     # the expert trains on its own noise range only
                cfg.timesteps = expert_timesteps(cfg.timesteps, Path(path), cfg.model.expert)
        if cfg.lora is not None and cfg.lora.weights and not Path(cfg.lora.weights).is_file():
            raise FileNotFoundError(f"lora.weights {cfg.lora.weights}: file not found (a LoRA file to start from)")
        self.dataset = dataset if dataset is not None else build_dataset(cfg, self.out, self.device)
        self.sampler = BucketBatchSampler(self.dataset, cfg.batch_size * self.world, seed=cfg.seed,
                                          shuffle=cfg.data.shuffle)
        self.empty_context = empty_context_for(cfg.data.caption_dropout, self.dataset)

        # model (+ LoRA), then parallel wrapping, then the optimizer over the trainable parameters
        self.module = model if model is not None else build_model(cfg.model, cfg.seed)
        self.module.to(self.device).train()
        check_conditioning(self.module, self.dataset)
        self.is_lora = cfg.lora is not None
        if self.is_lora:
            from openwan.training.lora import add_lora
            self.module.requires_grad_(False)
            lc = cfg.lora
            add_lora(self.module, rank=lc.rank, alpha=lc.alpha, targets=lc.targets,
                     seed=lc.seed if lc.seed is not None else cfg.seed)
            if lc.weights:       # start from a LoRA file (a resumed checkpoint then sets the weights anyway)
                from openwan.training.lora_init import init_lora_from
                init_lora_from(self.module, lc.weights)
        else:
            if any(p.dtype != torch.float32 for p in self.module.parameters()):
                warnings.warn("full fine-tuning with non-fp32 weights: AdamW updates will be rounded away; "
                              "use model.dtype fp32 (bf16 compute comes from precision: bf16)", stacklevel=2)
            self.module.requires_grad_(True)
        self.module.gradient_checkpointing = cfg.gradient_checkpointing
        from openwan import runtime
        precision, self.precision_reason = runtime.training_precision(
            cfg.precision, self.device, sum(p.numel() for p in self.module.parameters()))
        if cfg.precision == "bf16" and self.device.type == "cpu" and not runtime.fast_bf16(self.device)[0]:
            warnings.warn("bf16 autocast is slow on a CPU without AMX; precision fp32 (or auto) is faster here",
                          stacklevel=2)
        self.precision = precision
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        self.trainable_names = [n for n, p in self.module.named_parameters() if p.requires_grad]
        self.model, self.parallel = wrap_model(self.module, cfg.parallel, self.device)
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        oc = cfg.optimizer
        self.base_lr = oc.lr
        self.optimizer = torch.optim.AdamW(self.params, lr=oc.lr, betas=tuple(oc.betas),
                                           weight_decay=oc.weight_decay, eps=oc.eps, foreach=True)
        self.ema_decay = cfg.ema.decay if cfg.ema is not None else None
        self.ema = [p.detach().clone().float() for p in self.params] if self.ema_decay else None
        if self.on_validate is None and cfg.validation is not None:   # sampled videos (training/validation.py)
            from openwan.training.validation import sampler_for
            self.on_validate = sampler_for(self)
        self.objective = objective if objective is not None else build_objective(cfg)
        if hasattr(self.objective, "setup"):
            self.objective.setup(ObjectiveContext(cfg, self.module, self.device, self.rank, self.world))

        self.step = self.epoch = self.position = 0
        self.last_saved = -1
        self.history: list[float] = []
        self.logs: dict = {}        # the objective's logs of the last step
        self._stop = False          # stopped early (SIGTERM)
        self._interrupt = False     # Ctrl-C seen
        self._sigterm = False
        self._phase = None          # None | "compute" | "update": where an interrupt landed
        self._snapshot = (0, 0)

    @property
    def _params(self) -> list:  # the older name
        return self.params

    # ------------------------------------------------------------------ one step

    def _next_batch(self) -> list[int]:
        batches = self.sampler.batches(self.epoch)
        if self.position >= len(batches):
            self.epoch, self.position = self.epoch + 1, 0
            batches = self.sampler.batches(self.epoch)
        self.position += 1
        return batches[self.position - 1]

    def _micro_batch(self, micro: int) -> tuple[Batch, list]:
        """This process's slice of the next global batch, on the device, and one generator per sample."""
        global_batch = self._next_batch()
        local, offset = shard_batch(global_batch, self.rank, self.world)
        items = collate([self.dataset[i] for i in local])
        first = micro * len(global_batch) + offset  # index in the step's samples, however split
        index = list(range(first, first + len(local)))
        context = [self.empty_context if self._caption_dropped(i) else c for c, i in zip(items["context"], index)]
        batch = Batch(latent=items["latent"].to(self.device), context=[c.to(self.device) for c in context],
                      cond={k: items[k].to(self.device) for k in ("y", "clip_fea", "vace_context") if k in items},
                      step=self.step, index=index,
                      extra={k: v.to(self.device) for k, v in items.get("extra", {}).items()})
        rng = [torch.Generator().manual_seed(sample_seed(self.cfg.seed, self.step, i)) for i in index]
        return batch, rng

    def _caption_dropped(self, index: int) -> bool:
        """Whether the step's sample ``index`` trains on the empty prompt: a draw of its own stream, so the
        same samples are dropped however the step is split over processes and after a resume."""
        p = self.cfg.data.caption_dropout
        if p <= 0:
            return False
        g = torch.Generator().manual_seed(sample_seed(self.cfg.seed, self.step, index, _CAPTION_STREAM))
        return bool(torch.rand((), generator=g) < p)

    def _context(self, last: bool):
        """Gradient sync only on the last micro-batch (DDP no_sync / FSDP2), and autocast."""
        stack = contextlib.ExitStack()
        if self.parallel == "ddp" and not last:
            stack.enter_context(self.model.no_sync())
        if self.parallel == "fsdp" and hasattr(self.module, "set_requires_gradient_sync"):
            self.module.set_requires_gradient_sync(last)
        if self.autocast_dtype is not None:
            stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast_dtype))
        return stack

    def train_step(self) -> tuple[float, float]:
        """One optimizer step (grad_accum micro-batches). Returns (mean loss over the global batch, grad norm)."""
        cfg = self.cfg
        self._snapshot = (self.epoch, self.position)
        self._phase = "compute"  # an interrupt now loses only this step's gradients
        total = torch.zeros((), device=self.device)
        logs: dict = {}
        for micro in range(cfg.grad_accum):
            batch, rng = self._micro_batch(micro)
            with self._context(last=micro == cfg.grad_accum - 1):
                loss, micro_logs = self.objective(self.model, batch, rng)
            (loss / cfg.grad_accum).backward()
            total += loss.detach() / cfg.grad_accum
            for k, v in (micro_logs or {}).items():
                logs[k] = logs.get(k, 0.0) + float(v) / cfg.grad_accum
        if self.world > 1:
            dist.all_reduce(total)
            total /= self.world
        self._phase = "update"  # weights and optimizer state change from here to the end of the step
        gn = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip if cfg.grad_clip else float("inf"))
        gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn
        sc = cfg.schedule
        for g in self.optimizer.param_groups:
            g["lr"] = self.base_lr * lr_multiplier(self.step, sc.type, sc.warmup_steps, cfg.steps, sc.min_lr_ratio)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, [p.detach().float() for p in self.params], 1 - self.ema_decay)
        self.step += 1
        if hasattr(self.objective, "after_step"):
            logs.update(self.objective.after_step(self.step) or {})
        self.logs = logs
        self._phase = None
        return float(total), float(gn)

    # ------------------------------------------------------------------ the loop

    def train(self) -> dict:
        cfg = self.cfg
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            from openwan.checkpoints import write_json
            write_json(cfg.to_dict(), self.out / "config.json")
        resumed = ckpt.maybe_resume(self)
        log = ckpt.LossLog(self.out / "loss.csv", self.step if resumed else 0) if self.rank == 0 else None
        bar = None
        if cfg.progress and self.rank == 0:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        t0 = time.perf_counter()
        end = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)
        try:
            while self.step < end:
                stop = self._stop_requested()
                if stop == 2:
                    raise KeyboardInterrupt
                if stop == 1:
                    self._stop = True
                    break
                ts = time.perf_counter()
                loss, gn = self.train_step()
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss} at step {self.step}; lower the learning rate "
                                             f"or enable grad_clip (last checkpoint: step {self.last_saved})")
                self.history.append(loss)
                dt = time.perf_counter() - ts
                lr = self.optimizer.param_groups[0]["lr"]
                if log is not None:
                    log.write(self.step, loss, lr, gn, cfg.batch_size * self.world * cfg.grad_accum / dt,
                              time.perf_counter() - t0)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", **{k: f"{v:.4g}" for k, v in self.logs.items()})
                if cfg.validate_every and self.step % cfg.validate_every == 0:
                    self.validate()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            if bar is not None:
                bar.close()
            if self._phase == "update":
                warnings.warn(f"interrupted while the weights were being updated: no checkpoint written; "
                              f"resume from step {self.last_saved}", stacklevel=2)
                raise
            if self._phase == "compute":  # drop the unfinished step: gradients and data position
                self.epoch, self.position = self._snapshot
                self.optimizer.zero_grad(set_to_none=True)
                self._phase = None
            if self.step > 0 and self.step != self.last_saved:
                self.save_checkpoint()
            raise
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            if log is not None:
                log.close()
        if bar is not None:
            bar.close()
        if self.step != self.last_saved:
            self.save_checkpoint()
        if self.step >= cfg.steps:
            had_its_turn = bool(cfg.validate_every) and self.step % cfg.validate_every == 0
            wanted = bool(cfg.validate_every) or cfg.validation is not None    # (validate_every 0: only here)
            if wanted and not had_its_turn:
                self.validate()
            if cfg.save_final:
                self.export()
        summary = {"step": self.step, "loss": self.history[-1] if self.history else None,
                   "stopped": self._stop, "output_dir": str(self.out), "resumed": resumed,
                   "precision": self.precision}
        self.close()
        return summary

    def close(self):
        if self._own_group:
            end_process_group(wait_for_all=False)
            self._own_group = False

    def _on_signal(self, signum, frame):
        """SIGTERM: finish the step, checkpoint, stop. Ctrl-C: finish the step, checkpoint, raise
        KeyboardInterrupt; a second Ctrl-C interrupts at once."""
        if signum == signal.SIGINT:
            if self._interrupt:
                raise KeyboardInterrupt
            self._interrupt = True
            if self.rank == 0:
                print("\ninterrupt: finishing this step, then saving a checkpoint (Ctrl-C again to stop now)",
                      file=sys.stderr)
        else:
            self._sigterm = True

    def _stop_requested(self) -> int:
        """0: go on; 1: stop (SIGTERM); 2: interrupt (Ctrl-C). Agreed on by every process."""
        flag = 2 if self._interrupt else (1 if self._sigterm else 0)
        if self.world > 1:
            t = torch.tensor([flag], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = int(t.item())
        return flag

    @torch.no_grad()
    def validate(self):
        if self.on_validate is None:
            return
        self.module.eval()
        try:
            self.on_validate(self.module, self.step)
        finally:
            self.module.train()

    # ------------------------------------------------------------------ checkpoints (training/checkpoint.py)

    def save_checkpoint(self) -> Optional[Path]:
        """Write a checkpoint for the current step (every process must call it)."""
        return ckpt.save_checkpoint(self)

    def load_checkpoint(self, path: Union[str, Path]) -> None:
        ckpt.load_checkpoint(self, path)

    def latest_checkpoint(self) -> Optional[Path]:
        return ckpt.latest_checkpoint(self.out)

    def trainable_state_dict(self) -> dict:
        return ckpt.trainable_state_dict(self)

    def ema_weights(self):
        return ckpt.ema_weights(self)

    def export(self) -> list[Path]:
        return ckpt.export(self)


# ============================================================================ entry points

def _config_dict(config) -> dict:
    if isinstance(config, TrainConfig):
        return config.to_dict()
    if isinstance(config, dict):
        return config
    return read_yaml(config)


def train_from_config(config: Union[str, Path, dict, TrainConfig], *, overrides: Optional[list] = None,
                      dataset: Optional[LatentDataset] = None, model: Optional[nn.Module] = None,
                      on_validate: Optional[Callable] = None) -> dict:
    """Run a training config (YAML path, dict or TrainConfig); returns the trainer's summary."""
    cfg = TrainConfig.from_dict(apply_overrides(_config_dict(config), overrides or []))
    return Trainer(cfg, model=model, dataset=dataset, on_validate=on_validate).train()


def _train_all(configs: list, dataset):
    for c in configs:
        train_from_config(c, dataset=dataset)


def launch_local(config, nprocs: int, dataset: Optional[LatentDataset] = None, start_method: str = "spawn") -> None:
    """Run one config (or a list of configs, in turn) on ``nprocs`` local processes (no torchrun needed).

    gloo on CPU, nccl on CUDA (one GPU per process). Blocks until all processes finish; an error in one is
    raised here. ``start_method="fork"`` starts faster (the children inherit the imported modules) but must
    not be used once CUDA is initialised.
    """
    configs = config if isinstance(config, list) else [config]
    configs = [c.to_dict() if isinstance(c, TrainConfig) else c for c in configs]
    spawn(_train_all, (configs, dataset), nprocs, start_method=start_method)


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="openwan train", description="Fine-tune the Wan DiT (full or LoRA) "
                                 "with flow matching. Multi-GPU: torchrun --nproc_per_node N -m openwan.cli train ...")
    ap.add_argument("--config", required=True, help="training YAML (see docs/training.md)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set optimizer.lr=2e-5 --set steps=200 (repeatable)")
    ap.add_argument("--resume", default=None, help="auto (default: newest checkpoint), none, or a checkpoint folder")
    ap.add_argument("--nproc", type=int, default=1, help="run on this many local processes (without torchrun)")
    a = ap.parse_args(argv)
    sets = list(a.sets) + ([f"resume={a.resume}"] if a.resume else [])
    from openwan.checkpoints import CheckpointError
    try:
        d = apply_overrides(read_yaml(a.config), sets)
        cfg = TrainConfig.from_dict(d)
        if a.nproc > 1:
            launch_local(d, a.nproc)
            return 0
        summary = Trainer(cfg).train()
    except KeyboardInterrupt:
        print("\ninterrupted: a checkpoint was saved; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rank() == 0:
        state = "stopped (SIGTERM)" if summary["stopped"] else "done"
        loss = "" if summary["loss"] is None else f", last loss {summary['loss']:.4g}"
        if summary["loss"] is None and summary.get("resumed"):
            loss = " (already finished: nothing to train; raise steps to go on)"
        print(f"{state} at step {summary['step']}{loss}; outputs in {summary['output_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
