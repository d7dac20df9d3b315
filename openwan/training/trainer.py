"""Flow-matching fine-tuning of the Wan DiT (full or LoRA), on one process or many.

    config (YAML)  ->  model (variant / checkpoint / inline config)  [+ LoRA adapters, base frozen]
                   ->  data (latent cache, or captions encoded into one first; or an in-memory set)
    each step:  grad_accum x { global batch of one bucket -> this process's slice
                               -> noise + sigma per sample (seeded by seed, step, sample index)
                               -> flow-matching MSE (bf16 autocast on CUDA) -> backward }
                -> clip grad norm -> AdamW (lr from the schedule) -> EMA
                -> loss.csv row, progress bar, validation hook, periodic checkpoint
    end / Ctrl-C / SIGTERM -> checkpoint; final weights (full: official layout dir; LoRA: .safetensors)

Multi-process: run under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) or use
:func:`launch_local`. ``parallel: fsdp`` shards every DiT block then the root with FSDP2
(``fully_shard``); ``ddp`` replicates the model (DistributedDataParallel). gloo on CPU, nccl on CUDA.
Every process sees the same global batch order and takes its slice, so a run on N processes with
per-process batch b follows the same curve as one process with batch N*b.

Checkpoints (``<output_dir>/checkpoints/step-00000100/``) hold the trainable weights, the optimizer,
the EMA, the data position (epoch, batches consumed), every process's RNG states and the config;
they are written to a temp folder then renamed (atomic), and only the last ``keep_checkpoints``
are kept. ``resume: auto`` continues from the newest one, reproducing the uninterrupted run exactly.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from openwan.training.data import BucketBatchSampler, CachedLatentDataset, LatentDataset, collate, shard_batch
from openwan.training.loss import TimestepSampling, draw_noise, flow_matching_loss, sample_seed

CKPT_PREFIX = "step-"


# ============================================================================ config

@dataclass
class TrainConfig:
    """Everything a run needs; the YAML file has the same fields (see docs/training.md)."""
    model: dict = field(default_factory=dict)        # variant | path | dit (inline DiTConfig fields), dtype
    data: dict = field(default_factory=dict)         # cache_dir | file + buckets (+ ckpt_dir), fps
    optimizer: dict = field(default_factory=dict)    # lr, betas, weight_decay, eps
    schedule: dict = field(default_factory=dict)     # type constant|cosine|linear, warmup_steps, min_lr_ratio
    timesteps: dict = field(default_factory=dict)    # distribution uniform|shift|logit_normal, shift, mean, std
    lora: Optional[dict] = None                      # rank, alpha, targets (None: full fine-tuning)
    ema: Optional[dict] = None                       # decay (None: no EMA)
    steps: int = 1000
    stop_at: Optional[int] = None                    # end this run here (checkpoint); schedule still spans `steps`
    batch_size: int = 1                              # per process
    grad_accum: int = 1
    grad_clip: Optional[float] = 1.0
    gradient_checkpointing: bool = False
    precision: str = "auto"                          # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    parallel: str = "auto"                           # auto (fsdp when >1 process) | fsdp | ddp | none
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    validate_every: int = 0
    output_dir: str = "runs/train"
    seed: int = 0
    resume: str = "auto"                             # auto | none | path to a checkpoint folder
    progress: bool = True
    save_final: bool = True
    lora_formats: tuple = ("diffusers", "comfyui")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training config fields {unknown}; known: {sorted(names)}")
        cfg = cls(**_coerce_numbers(d))
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "TrainConfig":
        import yaml
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"training config not found: {path}")
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: the top level must be a mapping of config fields")
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lora_formats"] = list(self.lora_formats)
        return d

    def validate(self) -> None:
        def pos_int(name, v, zero_ok=False):
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if zero_ok else 1):
                raise ValueError(f"{name} must be an integer >= {0 if zero_ok else 1}, got {v!r}")
        pos_int("steps", self.steps)
        if self.stop_at is not None:
            pos_int("stop_at", self.stop_at)
        pos_int("batch_size", self.batch_size)
        pos_int("grad_accum", self.grad_accum)
        pos_int("checkpoint_every", self.checkpoint_every, zero_ok=True)
        pos_int("keep_checkpoints", self.keep_checkpoints)
        pos_int("validate_every", self.validate_every, zero_ok=True)
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.parallel not in ("auto", "fsdp", "ddp", "none"):
            raise ValueError(f"parallel must be auto, fsdp, ddp or none, got {self.parallel!r}")
        if self.grad_clip is not None and not (self.grad_clip > 0):
            raise ValueError(f"grad_clip must be positive (or null for no clipping), got {self.grad_clip!r}")
        unknown = sorted(set(self.optimizer) - {"lr", "betas", "weight_decay", "eps"})
        if unknown:
            raise ValueError(f"unknown optimizer fields {unknown}; use lr, betas, weight_decay, eps")
        unknown = sorted(set(self.schedule) - {"type", "warmup_steps", "min_lr_ratio"})
        if unknown:
            raise ValueError(f"unknown schedule fields {unknown}; use type, warmup_steps, min_lr_ratio")
        if self.schedule.get("type", "constant") not in ("constant", "cosine", "linear"):
            raise ValueError(f"schedule type must be constant, cosine or linear, got {self.schedule.get('type')!r}")
        TimestepSampling.from_dict(self.timesteps)
        if self.lora is not None:
            unknown = sorted(set(self.lora) - {"rank", "alpha", "targets", "seed"})
            if unknown:
                raise ValueError(f"unknown lora fields {unknown}; use rank, alpha, targets")
        if self.ema is not None:
            d = self.ema.get("decay", 0.999)
            if not (0 < d < 1):
                raise ValueError(f"ema decay must be in (0, 1), got {d!r}")
        bad = [f for f in self.lora_formats if f not in ("diffusers", "comfyui", "musubi")]
        if bad:
            raise ValueError(f"lora_formats {bad}: choose from diffusers, comfyui, musubi")


def lr_multiplier(step: int, kind: str = "constant", warmup: int = 0, total: int = 1,
                  min_ratio: float = 0.0) -> float:
    """LR factor for optimizer step ``step`` (0-based): linear warmup to 1 over ``warmup`` steps,
    then constant, cosine or linear decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "linear":
        return min_ratio + (1 - min_ratio) * (1 - progress)
    raise ValueError(f"unknown schedule {kind!r}")


# ============================================================================ small helpers

def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _barrier():
    if _world() > 1:
        dist.barrier()


def init_distributed() -> bool:
    """Join the process group described by RANK / WORLD_SIZE (torchrun) if not done yet.

    Returns True when this call created the group (the caller then destroys it)."""
    if not dist.is_available() or dist.is_initialized():
        return False
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return True


def _default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if _world() > 1 else torch.cuda.current_device())
    return torch.device("cpu")


def _dtype(name) -> torch.dtype:
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; use fp32 or bf16")
    return table[name]


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                       int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(v):
    return tuple(_to_tuple(x) for x in v) if isinstance(v, list) else v


def build_model(spec: dict, seed: int = 0):
    """The DiT from the config's ``model`` section.

    * ``path``: a checkpoint (official/diffusers directory or .safetensors), optionally with ``variant``
      to pick the architecture when the files carry no config;
    * ``variant`` alone: that architecture, randomly initialised (training from scratch);
    * ``dit``: inline DiTConfig fields, randomly initialised (tests, the demo).
    ``dtype`` (fp32 default) is the storage dtype of the weights.
    """
    from openwan.configs import DiTConfig, get_variant
    from openwan.models.dit import WanModel, init_weights
    spec = dict(spec or {})
    unknown = sorted(set(spec) - {"variant", "path", "dit", "dtype"})
    if unknown:
        raise ValueError(f"unknown model fields {unknown}; use variant, path, dit, dtype")
    dtype = _dtype(spec.get("dtype", "fp32"))
    cfg = None
    if spec.get("dit") is not None:
        cfg = DiTConfig.from_dict({k: _to_tuple(v) for k, v in spec["dit"].items()}, strict=True)
    elif spec.get("variant"):
        cfg = get_variant(spec["variant"]).dit
    if spec.get("path"):
        model = WanModel.from_pretrained(spec["path"], dtype=dtype, config=cfg if spec.get("dit") else None)
    elif cfg is not None:
        torch.manual_seed(seed)
        model = init_weights(WanModel(cfg)).to(dtype)
    else:
        raise ValueError("the model section needs a checkpoint `path`, a `variant` name or an inline `dit` config")
    return model


# ============================================================================ the trainer

class Trainer:
    """One training run. ``Trainer(config).train()``; see the module docstring.

    model: a WanModel to train (else built from ``config.model``); dataset: a LatentDataset (else
    from ``config.data``); on_validate(model, step): called every ``validate_every`` steps (and at
    the end) with the model in eval mode under no_grad, on every process.
    """

    def __init__(self, config: Union[TrainConfig, dict], model: Optional[nn.Module] = None,
                 dataset: Optional[LatentDataset] = None,
                 on_validate: Optional[Callable[[nn.Module, int], Any]] = None,
                 device: Union[str, torch.device, None] = None):
        self.cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        self.cfg.validate()
        self._own_group = init_distributed()
        self.rank, self.world = _rank(), _world()
        self.device = torch.device(device) if device is not None else _default_device()
        self.out = Path(str(self.cfg.output_dir))
        self.on_validate = on_validate
        self.sampling = TimestepSampling.from_dict(self.cfg.timesteps)
        precision = self.cfg.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        elif precision == "bf16" and self.device.type == "cpu":
            warnings.warn("bf16 autocast on the CPU is very slow; precision fp32 is the CPU default", stacklevel=2)
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" else None

        random.seed(self.cfg.seed)
        np.random.seed(self.cfg.seed % 2 ** 32)
        torch.manual_seed(self.cfg.seed)

        # ---- data first (building a latent cache needs the VAE and text encoder in memory for a while)
        self.dataset = dataset if dataset is not None else self._build_dataset()
        self.sampler = BucketBatchSampler(self.dataset, self.cfg.batch_size * self.world, seed=self.cfg.seed,
                                          shuffle=bool(self.cfg.data.get("shuffle", True)))

        # ---- model (+ LoRA), then parallel wrapping, then the optimizer over the trainable params
        self.module = model if model is not None else build_model(self.cfg.model, self.cfg.seed)
        self.module.to(self.device)
        self.module.train()
        self._check_conditioning()
        self.is_lora = self.cfg.lora is not None
        if self.is_lora:
            from openwan.training.lora import DEFAULT_TARGETS, add_lora
            self.module.requires_grad_(False)
            lc = self.cfg.lora
            add_lora(self.module, rank=int(lc.get("rank", 16)), alpha=lc.get("alpha"),
                     targets=lc.get("targets", DEFAULT_TARGETS), seed=int(lc.get("seed", self.cfg.seed)))
        else:
            if any(p.dtype != torch.float32 for p in self.module.parameters()):
                warnings.warn("full fine-tuning with non-fp32 weights: AdamW updates will be rounded away; "
                              "use model.dtype fp32 (bf16 compute comes from precision: bf16)", stacklevel=2)
            self.module.requires_grad_(True)
        self.module.gradient_checkpointing = bool(self.cfg.gradient_checkpointing)
        self.trainable_names = [n for n, p in self.module.named_parameters() if p.requires_grad]
        self.parallel = self._wrap()
        params = [p for p in self.module.parameters() if p.requires_grad]
        oc = self.cfg.optimizer
        self.base_lr = float(oc.get("lr", 1e-4))
        self.optimizer = torch.optim.AdamW(params, lr=self.base_lr, betas=tuple(oc.get("betas", (0.9, 0.999))),
                                           weight_decay=float(oc.get("weight_decay", 0.01)),
                                           eps=float(oc.get("eps", 1e-8)), foreach=True)
        self.ema_decay = float(self.cfg.ema.get("decay", 0.999)) if self.cfg.ema is not None else None
        self.ema = [p.detach().clone().float() for p in params] if self.ema_decay else None
        self._params = params

        self.step = 0
        self.epoch = 0
        self.position = 0
        self.last_saved = -1
        self.history: list[float] = []
        self._stop = False          # stopped early (SIGTERM)
        self._interrupt = False     # Ctrl-C seen
        self._sigterm = False
        self._phase = None          # None | "compute" | "update": where an interrupt landed
        self._snapshot = (0, 0)

    # ------------------------------------------------------------------ setup pieces

    def _wrap(self) -> str:
        mode = self.cfg.parallel
        if self.world == 1:
            return "none"
        if mode == "auto":
            mode = "fsdp"
        if mode == "none":
            raise ValueError("parallel: none with several processes; use fsdp or ddp")
        if mode == "fsdp":
            from openwan.parallel.shard import fully_shard_dit
            fully_shard_dit(self.module, self.device.type)
            self.model = self.module
        else:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.model = DDP(self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return mode

    @property
    def model(self) -> nn.Module:
        """The module to call for training (the DDP wrapper under ddp, else the model itself)."""
        return getattr(self, "_model", self.module)

    @model.setter
    def model(self, m):
        self._model = m

    def _check_conditioning(self) -> None:
        """The samples carry the image condition exactly when the DiT takes one (i2v / flf2v)."""
        cfg = getattr(self.module, "config", None)
        if cfg is None or not len(self.dataset):
            return
        item = self.dataset[0]
        has = "y" in item and "clip_fea" in item
        kind = getattr(cfg, "model_type", "t2v")
        if cfg.has_image_input and not has:
            raise ValueError(f"the model is an {kind} DiT (image-conditioned) but the training samples have no "
                             f"image condition (y, clip_fea): cache them with `openwan cache-latents --task "
                             f"{kind}` (or data.task: {kind})")
        if not cfg.has_image_input and ("y" in item or "clip_fea" in item):
            raise ValueError(f"the training samples carry an image condition (y / clip_fea, an i2v/flf2v cache) "
                             f"but the model is a {kind} DiT: use an I2V/FLF2V model, or cache with --task t2v")

    def _build_dataset(self) -> LatentDataset:
        dc = dict(self.cfg.data)
        unknown = sorted(set(dc) - {"cache_dir", "file", "buckets", "ckpt_dir", "vae", "text_encoder", "fps",
                                    "shuffle", "task", "image_encoder"})
        if unknown:
            raise ValueError(f"unknown data fields {unknown}; use cache_dir, file, buckets, ckpt_dir, vae, "
                             f"text_encoder, image_encoder, task, fps, shuffle")
        cache_dir = Path(dc.get("cache_dir") or self.out / "latent_cache")
        if dc.get("file"):
            if "buckets" not in dc:
                raise ValueError("data.file needs data.buckets ([frames, height, width] triples)")
            if self.rank == 0:
                from openwan.training.cache import cache_latents_from_checkpoint
                ckpt = dc.get("ckpt_dir") or self.cfg.model.get("path")
                cache_latents_from_checkpoint(dc["file"], cache_dir, ckpt, dc["buckets"], vae_path=dc.get("vae"),
                                              text_encoder_path=dc.get("text_encoder"), device=self.device,
                                              target_fps=dc.get("fps"), progress=self.cfg.progress,
                                              task=dc.get("task", "t2v"), image_encoder_path=dc.get("image_encoder"))
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()  # the encoders are gone; give their memory back
            _barrier()
        elif not dc.get("cache_dir"):
            raise ValueError("the data section needs cache_dir (from `openwan cache-latents`) or file + buckets")
        return CachedLatentDataset(cache_dir)

    # ------------------------------------------------------------------ one step

    def _next_batch(self) -> list[int]:
        batches = self.sampler.batches(self.epoch)
        if self.position >= len(batches):
            self.epoch += 1
            self.position = 0
            batches = self.sampler.batches(self.epoch)
        b = batches[self.position]
        self.position += 1
        return b

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _sync_context(self, last: bool):
        if self.parallel == "ddp" and not last:
            return self.model.no_sync()
        if self.parallel == "fsdp" and hasattr(self.module, "set_requires_gradient_sync"):
            self.module.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def train_step(self) -> tuple[float, float]:
        """One optimizer step (grad_accum micro-batches). Returns (mean loss over the global batch, grad norm)."""
        cfg = self.cfg
        self._snapshot = (self.epoch, self.position)
        self._phase = "compute"  # an interrupt now loses only this step's gradients
        total = torch.zeros((), device=self.device)
        for micro in range(cfg.grad_accum):
            global_batch = self._next_batch()
            local, offset = shard_batch(global_batch, self.rank, self.world)
            batch = collate([self.dataset[i] for i in local])
            x0 = batch["latent"].to(self.device)
            ctx = [c.to(self.device) for c in batch["context"]]
            extra = {k: batch[k].to(self.device) for k in ("y", "clip_fea") if k in batch}
            first = micro * len(global_batch) + offset  # index in the step's samples, however split
            seeds = [sample_seed(cfg.seed, self.step, first + j) for j in range(len(local))]
            noise, sigma = draw_noise([x.shape for x in x0], seeds, self.sampling)
            noise = torch.stack(noise).to(self.device)
            with self._sync_context(micro == cfg.grad_accum - 1), self._autocast():
                loss, _ = flow_matching_loss(self.model, x0, ctx, noise, sigma, **extra)
            (loss / cfg.grad_accum).backward()
            total += loss.detach() / cfg.grad_accum
        if self.world > 1:
            dist.all_reduce(total)
            total /= self.world
        self._phase = "update"  # weights and optimizer state change from here to the end of the step
        gn = torch.nn.utils.clip_grad_norm_(self._params, cfg.grad_clip if cfg.grad_clip else float("inf"))
        gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn
        sc = cfg.schedule
        mult = lr_multiplier(self.step, sc.get("type", "constant"), int(sc.get("warmup_steps", 0)), cfg.steps,
                             float(sc.get("min_lr_ratio", 0.0)))
        for g in self.optimizer.param_groups:
            g["lr"] = self.base_lr * mult
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, [p.detach().float() for p in self._params], 1 - self.ema_decay)
        self.step += 1
        self._phase = None
        return float(total), float(gn)

    # ------------------------------------------------------------------ the loop

    def train(self) -> dict:
        cfg = self.cfg
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            from openwan.checkpoints import write_json
            write_json(cfg.to_dict(), self.out / "config.json")
        resumed = self._maybe_resume()
        log = _LossLog(self.out / "loss.csv", self.step if resumed else 0) if self.rank == 0 else None
        bar = None
        if cfg.progress and self.rank == 0:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        handlers = {}
        if threading_is_main():
            handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        t0 = time.perf_counter()
        try:
            end = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)
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
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
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
            if cfg.validate_every and self.step % cfg.validate_every:
                self.validate()
            if cfg.save_final:
                self.export()
        summary = {"step": self.step, "loss": self.history[-1] if self.history else None,
                   "stopped": self._stop, "output_dir": str(self.out)}
        self.close()
        return summary

    def close(self):
        if self._own_group and dist.is_initialized():
            dist.destroy_process_group()
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

    # ------------------------------------------------------------------ checkpoints

    def _sd_options(self, **kw):
        from torch.distributed.checkpoint.state_dict import StateDictOptions
        return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)

    def trainable_state_dict(self) -> dict:
        """Full (gathered) trainable weights on process 0 (empty elsewhere under FSDP)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict
        sd = get_model_state_dict(self.module, options=self._sd_options(ignore_frozen_params=True))
        return {k: v for k, v in sd.items() if k in set(self.trainable_names)}

    def _ema_full(self) -> dict:
        out = {}
        for n, e in zip(self.trainable_names, self.ema or []):
            out[n] = (e.full_tensor() if hasattr(e, "full_tensor") else e).detach().cpu()
        return out

    def save_checkpoint(self) -> Optional[Path]:
        """Write a checkpoint for the current step (every process must call it)."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
        from openwan.checkpoints import save_safetensors, write_json
        model_sd = self.trainable_state_dict()
        optim_sd = get_optimizer_state_dict(self.module, self.optimizer, options=self._sd_options())
        ema_sd = self._ema_full() if self.ema is not None else None
        rng = rng_state()
        rngs = [None] * self.world
        if self.world > 1:
            dist.all_gather_object(rngs, rng)
        else:
            rngs = [rng]
        path = None
        if self.rank == 0:
            root = self.out / "checkpoints"
            path = root / f"{CKPT_PREFIX}{self.step:08d}"
            tmp = root / f".{path.name}.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            save_safetensors(model_sd, tmp / "model.safetensors")
            if ema_sd is not None:
                save_safetensors(ema_sd, tmp / "ema.safetensors")
            torch.save(optim_sd, tmp / "optimizer.pt")
            torch.save(rngs, tmp / "rng.pt")
            write_json({"step": self.step, "epoch": self.epoch, "position": self.position,
                        "world_size": self.world, "global_batch": self.cfg.batch_size * self.world,
                        "lora": self.is_lora, "loss": self.history[-1] if self.history else None,
                        "config": self.cfg.to_dict()}, tmp / "state.json")
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
            self._prune(root)
        self.last_saved = self.step
        _barrier()
        return path

    def _prune(self, root: Path):
        done = sorted(p for p in root.glob(f"{CKPT_PREFIX}*") if (p / "state.json").exists())
        for p in done[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(p, ignore_errors=True)

    def latest_checkpoint(self) -> Optional[Path]:
        root = self.out / "checkpoints"
        done = sorted(p for p in root.glob(f"{CKPT_PREFIX}*") if (p / "state.json").exists())
        return done[-1] if done else None

    def _maybe_resume(self) -> bool:
        r = str(self.cfg.resume or "none")
        if r == "none":
            return False
        path = self.latest_checkpoint() if r == "auto" else Path(r)
        if path is None:
            return False
        self.load_checkpoint(path)
        return True

    def load_checkpoint(self, path: Union[str, Path]) -> None:
        """Restore model, optimizer, EMA, step, data position and RNG states from a checkpoint folder."""
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict
        from openwan.checkpoints import CheckpointError, read_safetensors
        path = Path(path)
        if not (path / "state.json").exists():
            raise CheckpointError(f"{path} is not a training checkpoint (no state.json)")
        state = json.loads((path / "state.json").read_text())
        if bool(state.get("lora")) != self.is_lora:
            raise CheckpointError(f"{path} is a {'LoRA' if state.get('lora') else 'full'} fine-tuning checkpoint but "
                                  f"this config is {'LoRA' if self.is_lora else 'full'} fine-tuning")
        model_sd = read_safetensors(path / "model.safetensors")
        missing = sorted(set(self.trainable_names) - set(model_sd))
        if missing:
            raise CheckpointError(f"{path}: the checkpoint lacks trainable weights {missing[:5]} (a different "
                                  f"model or LoRA config?)")
        set_model_state_dict(self.module, model_sd, options=self._sd_options(strict=False))
        optim_sd = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        set_optimizer_state_dict(self.module, self.optimizer, optim_sd, options=self._sd_options())
        if self.ema is not None:
            if (path / "ema.safetensors").exists():
                ema_sd = read_safetensors(path / "ema.safetensors")
                for i, (n, e) in enumerate(zip(self.trainable_names, self.ema)):
                    full = ema_sd[n].to(self.device)
                    if hasattr(e, "full_tensor"):
                        from torch.distributed.tensor import distribute_tensor
                        self.ema[i] = distribute_tensor(full, e.device_mesh, e.placements)
                    else:
                        e.copy_(full)
            else:
                warnings.warn(f"{path} has no EMA weights; the EMA restarts from the current weights", stacklevel=2)
        rngs = torch.load(path / "rng.pt", map_location="cpu", weights_only=True)
        set_rng_state(rngs[self.rank % len(rngs)])
        self.step, self.epoch, self.position = int(state["step"]), int(state["epoch"]), int(state["position"])
        if state.get("global_batch") != self.cfg.batch_size * self.world:
            warnings.warn(f"resuming with a global batch of {self.cfg.batch_size * self.world} (was "
                          f"{state.get('global_batch')}): the data order differs from the original run", stacklevel=2)
        self.last_saved = self.step
        if self.rank == 0 and self.cfg.progress:
            print(f"resumed from {path} (step {self.step})")

    # ------------------------------------------------------------------ final weights

    @contextlib.contextmanager
    def ema_weights(self):
        """Swap the EMA values into the trainable parameters for the duration of the block."""
        if self.ema is None:
            yield
            return
        saved = [p.detach().clone() for p in self._params]
        with torch.no_grad():
            for p, e in zip(self._params, self.ema):
                p.copy_(e.to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self._params, saved):
                    p.copy_(s)

    def export(self) -> list[Path]:
        """Final weights: LoRA files (one per lora_formats entry) or a full official-layout directory;
        with EMA, the EMA weights too (``*_ema``). Every process must call it."""
        written = []
        variants = [("", contextlib.nullcontext)]
        if self.ema is not None:
            variants.append(("_ema", self.ema_weights))
        for suffix, ctx in variants:
            with ctx():
                if self.is_lora:
                    from openwan.training.lora import save_lora
                    for fmt in self.cfg.lora_formats:
                        name = "lora" if fmt == "diffusers" else f"lora_{fmt}"
                        p = save_lora(self.module, self.out / f"{name}{suffix}.safetensors", format=fmt,
                                      metadata={"openwan_step": self.step})
                        if p is not None:
                            written.append(p)
                else:
                    from torch.distributed.checkpoint.state_dict import get_model_state_dict
                    sd = get_model_state_dict(self.module, options=self._sd_options())
                    if self.rank == 0:
                        written += export_full(sd, self.module.config, self.out / f"final{suffix}")
        _barrier()
        return written


def export_full(state_dict: dict, config, path: Union[str, Path]) -> list[Path]:
    """Write a full DiT state dict (official keys) + config.json as an official-layout directory."""
    from openwan.checkpoints import dit_config_to_official_json, save_sharded, write_json
    path = Path(path)
    cfg = dit_config_to_official_json(config)
    files = save_sharded(state_dict, path, metadata={"format": "pt", "openwan_config": json.dumps(cfg)})
    write_json(cfg, path / "config.json")
    return files


def threading_is_main() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


class _LossLog:
    """loss.csv in the output folder; on resume, rows after the resumed step are dropped."""
    HEADER = ["step", "loss", "lr", "grad_norm", "samples_per_s", "elapsed_s"]

    def __init__(self, path: Path, keep_until: int):
        self.path = path
        rows = []
        if keep_until > 0 and path.exists():
            with open(path, newline="") as fh:
                rows = [r for r in csv.reader(fh)][1:]
            rows = [r for r in rows if r and r[0].isdigit() and int(r[0]) <= keep_until]
        from openwan.checkpoints import atomic_write

        def write(tmp):
            with open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(self.HEADER)
                w.writerows(rows)
        atomic_write(path, write)
        self.fh = open(path, "a", newline="", buffering=1)
        self.w = csv.writer(self.fh)

    def write(self, step, loss, lr, gn, sps, elapsed):
        self.w.writerow([step, f"{loss:.6g}", f"{lr:.6g}", f"{gn:.6g}", f"{sps:.4g}", f"{elapsed:.2f}"])

    def close(self):
        self.fh.close()


# ============================================================================ entry points

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _coerce_numbers(v):
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: turn number-looking strings into floats."""
    if isinstance(v, dict):
        return {k: _coerce_numbers(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_coerce_numbers(x) for x in v]
    if isinstance(v, str) and _NUMBER.match(v.strip()):
        f = float(v)
        return int(f) if f.is_integer() and not any(c in v for c in ".eE") else f
    return v


def _apply_overrides(d: dict, sets: list[str]) -> dict:
    import yaml
    d = copy.deepcopy(d)
    for s in sets or []:
        if "=" not in s:
            raise ValueError(f"--set expects key=value (e.g. optimizer.lr=2e-5), got {s!r}")
        key, val = s.split("=", 1)
        node = d
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(val)
    return d


def train_from_config(config: Union[str, Path, dict, TrainConfig], *, overrides: Optional[list] = None,
                      dataset: Optional[LatentDataset] = None, model: Optional[nn.Module] = None,
                      on_validate: Optional[Callable] = None) -> dict:
    """Run a training config (YAML path, dict or TrainConfig); returns the trainer's summary."""
    if isinstance(config, TrainConfig):
        d = config.to_dict()
    elif isinstance(config, dict):
        d = config
    else:
        import yaml
        p = Path(config)
        if not p.exists():
            raise FileNotFoundError(f"training config not found: {p}")
        d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    cfg = TrainConfig.from_dict(_apply_overrides(d, overrides or []))
    return Trainer(cfg, model=model, dataset=dataset, on_validate=on_validate).train()


def _local_worker(rank: int, world: int, port: int, configs: list, dataset, result_dir: Optional[str]):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    init_distributed()
    try:
        for cfg in configs:
            train_from_config(cfg, dataset=dataset)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch_local(config, nprocs: int, dataset: Optional[LatentDataset] = None, start_method: str = "spawn") -> None:
    """Run one config (or a list of configs, in turn) on ``nprocs`` local processes (no torchrun needed).

    gloo on CPU, nccl on CUDA (one GPU per process). Blocks until all processes finish; an error
    in one is raised here. ``start_method="fork"`` starts faster (the children inherit the
    imported modules) but must not be used once CUDA is initialised.
    """
    import socket
    import torch.multiprocessing as mp
    configs = config if isinstance(config, list) else [config]
    configs = [c.to_dict() if isinstance(c, TrainConfig) else c for c in configs]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_local_worker, args=(nprocs, port, configs, dataset, None), nprocs=nprocs, join=True,
                       start_method=start_method)


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
    try:
        if a.nproc > 1:
            import yaml
            d = _apply_overrides(yaml.safe_load(Path(a.config).read_text(encoding="utf-8")) or {}, sets)
            TrainConfig.from_dict(d)
            launch_local(d, a.nproc)
            return 0
        summary = train_from_config(a.config, overrides=sets)
    except KeyboardInterrupt:
        print("\ninterrupted: a checkpoint was saved; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a bad checkpoint: one line, not a traceback
        from openwan.checkpoints import CheckpointError
        if isinstance(e, CheckpointError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
    if _rank() == 0:
        state = "stopped (SIGTERM)" if summary["stopped"] else "done"
        print(f"{state} at step {summary['step']}, loss {summary['loss']}; outputs in {summary['output_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
