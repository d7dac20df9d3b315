"""Training checkpoints, resume, final weights and the loss log of a run folder.

    <output_dir>/checkpoints/step-00000100/
        model.safetensors    the trainable weights (full tensors, gathered under FSDP)
        ema.safetensors      their EMA (when the run keeps one)
        optimizer.pt         the optimizer state (full, by parameter name)
        objective.pt         the objective's own state (a distillation's fake-score model + optimizer), if any
        rng.pt               every process's RNG states
        state.json           step, epoch, batches consumed, world size, global batch, the config

A checkpoint is written to a temp folder then renamed (atomic); only the last ``keep_checkpoints``
are kept. Loading it restores all of the above, so a resumed run reproduces the uninterrupted one
exactly. The functions take the :class:`~openwan.training.trainer.Trainer` (its ``module``,
``optimizer``, ``ema``, ``objective``, ``step`` ... attributes) and every process must call them.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.distributed as dist

from openwan.training.launch import barrier

CKPT_PREFIX = "step-"


# ============================================================================ RNG states

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


# ============================================================================ save / load

def _sd_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


def trainable_state_dict(tr) -> dict:
    """Full (gathered) trainable weights on process 0 (empty elsewhere under FSDP)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    sd = get_model_state_dict(tr.module, options=_sd_options(ignore_frozen_params=True))
    names = set(tr.trainable_names)
    return {k: v for k, v in sd.items() if k in names}


def _ema_full(tr) -> dict:
    return {n: (e.full_tensor() if hasattr(e, "full_tensor") else e).detach().cpu()
            for n, e in zip(tr.trainable_names, tr.ema or [])}


def checkpoints(out: Union[str, Path]) -> list[Path]:
    """The complete checkpoints of a run folder, oldest first."""
    root = Path(out) / "checkpoints"
    return sorted(p for p in root.glob(f"{CKPT_PREFIX}*") if (p / "state.json").exists())


def latest_checkpoint(out: Union[str, Path]) -> Optional[Path]:
    done = checkpoints(out)
    return done[-1] if done else None


def _discard(path: Path) -> None:
    """Delete a checkpoint folder so that a kill part-way leaves nothing that looks like one: first an atomic
    rename to a hidden ``.NAME.deleting``, then the removal (a leftover is finished by clean_leftovers)."""
    doomed = path.with_name(f".{path.name}.deleting")
    if doomed.exists():
        shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def clean_leftovers(root: Path) -> list[Path]:
    """Remove what killed runs left in a checkpoints folder: half-deleted (``.*.deleting``) and half-written
    (``.*.tmp``) folders, and step folders without their ``state.json`` (written last, so never complete).
    Returns what was removed."""
    gone = []
    for p in sorted(Path(root).glob(".*.deleting")) + sorted(Path(root).glob(".*.tmp")):
        shutil.rmtree(p, ignore_errors=True)
        gone.append(p)
    for p in sorted(Path(root).glob(f"{CKPT_PREFIX}*")):
        if p.is_dir() and not (p / "state.json").exists():
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


def save_checkpoint(tr) -> Optional[Path]:
    """Write a checkpoint of the trainer's current step; returns its folder on process 0."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    from openwan.checkpoints import save_safetensors, write_json
    model_sd = trainable_state_dict(tr)
    optim_sd = get_optimizer_state_dict(tr.module, tr.optimizer, options=_sd_options())
    ema_sd = _ema_full(tr) if tr.ema is not None else None
    objective_sd = tr.objective.state_dict() if hasattr(tr.objective, "state_dict") else {}
    rng = rng_state()
    rngs = [None] * tr.world
    if tr.world > 1:
        dist.all_gather_object(rngs, rng)
    else:
        rngs = [rng]
    path = None
    if tr.rank == 0:
        root = tr.out / "checkpoints"
        path = root / f"{CKPT_PREFIX}{tr.step:08d}"
        tmp = root / f".{path.name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_safetensors(model_sd, tmp / "model.safetensors")
        if ema_sd is not None:
            save_safetensors(ema_sd, tmp / "ema.safetensors")
        torch.save(optim_sd, tmp / "optimizer.pt")
        if objective_sd:
            torch.save(objective_sd, tmp / "objective.pt")
        torch.save(rngs, tmp / "rng.pt")
        write_json({"step": tr.step, "epoch": tr.epoch, "position": tr.position,
                    "world_size": tr.world, "global_batch": tr.cfg.batch_size * tr.world,
                    "lora": tr.is_lora, "loss": tr.history[-1] if tr.history else None,
                    "config": tr.cfg.to_dict()}, tmp / "state.json")
        if path.exists():
            _discard(path)
        os.replace(tmp, path)
        for p in checkpoints(tr.out)[:-tr.cfg.keep_checkpoints]:
            _discard(p)
        clean_leftovers(root)
    tr.last_saved = tr.step
    barrier()
    return path


def load_checkpoint(tr, path: Union[str, Path]) -> None:
    """Restore model, optimizer, EMA, objective state, step, data position and RNG states from ``path``."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict
    from openwan.checkpoints import CheckpointError, read_safetensors
    path = Path(path)
    if not (path / "state.json").exists():
        raise CheckpointError(f"{path} is not a training checkpoint (no state.json)")
    state = json.loads((path / "state.json").read_text())
    if bool(state.get("lora")) != tr.is_lora:
        raise CheckpointError(f"{path} is a {'LoRA' if state.get('lora') else 'full'} fine-tuning checkpoint but "
                              f"this config is {'LoRA' if tr.is_lora else 'full'} fine-tuning")
    model_sd = read_safetensors(path / "model.safetensors")
    missing = sorted(set(tr.trainable_names) - set(model_sd))
    if missing:
        raise CheckpointError(f"{path}: the checkpoint lacks trainable weights {missing[:5]} (a different "
                              f"model or LoRA config?)")
    set_model_state_dict(tr.module, model_sd, options=_sd_options(strict=False))
    optim_sd = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    set_optimizer_state_dict(tr.module, tr.optimizer, optim_sd, options=_sd_options())
    if tr.ema is not None:
        if (path / "ema.safetensors").exists():
            ema_sd = read_safetensors(path / "ema.safetensors")
            for i, (n, e) in enumerate(zip(tr.trainable_names, tr.ema)):
                full = ema_sd[n].to(tr.device)
                if hasattr(e, "full_tensor"):
                    from torch.distributed.tensor import distribute_tensor
                    tr.ema[i] = distribute_tensor(full, e.device_mesh, e.placements)
                else:
                    e.copy_(full)
        else:
            warnings.warn(f"{path} has no EMA weights; the EMA restarts from the current weights", stacklevel=2)
    if hasattr(tr.objective, "load_state_dict"):
        f = path / "objective.pt"
        tr.objective.load_state_dict(torch.load(f, map_location="cpu", weights_only=True) if f.exists() else {})
    rngs = torch.load(path / "rng.pt", map_location="cpu", weights_only=True)
    set_rng_state(rngs[tr.rank % len(rngs)])
    tr.step, tr.epoch, tr.position = int(state["step"]), int(state["epoch"]), int(state["position"])
    if state.get("global_batch") != tr.cfg.batch_size * tr.world:
        warnings.warn(f"resuming with a global batch of {tr.cfg.batch_size * tr.world} (was "
                      f"{state.get('global_batch')}): the data order differs from the original run", stacklevel=2)
    tr.last_saved = tr.step
    if tr.rank == 0 and tr.cfg.progress:
        print(f"resumed from {path} (step {tr.step})")


def maybe_resume(tr) -> bool:
    """Resume as the config's ``resume`` says (auto: the newest checkpoint, if any); True if it did."""
    r = str(tr.cfg.resume or "none")
    if r == "none":
        return False
    path = latest_checkpoint(tr.out) if r == "auto" else Path(r)
    if path is None:
        return False
    load_checkpoint(tr, path)
    return True


# ============================================================================ final weights

@contextlib.contextmanager
def ema_weights(tr):
    """Swap the EMA values into the trainable parameters for the duration of the block."""
    if tr.ema is None:
        yield
        return
    saved = [p.detach().clone() for p in tr.params]
    with torch.no_grad():
        for p, e in zip(tr.params, tr.ema):
            p.copy_(e.to(p.dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(tr.params, saved):
                p.copy_(s)


def export(tr) -> list[Path]:
    """Final weights: LoRA files (one per lora_formats entry) or a full official-layout directory;
    with EMA, the EMA weights too (``*_ema``)."""
    written = []
    variants = [("", contextlib.nullcontext)]
    if tr.ema is not None:
        variants.append(("_ema", lambda: ema_weights(tr)))
    for suffix, ctx in variants:
        with ctx():
            if tr.is_lora:
                from openwan.training.lora import save_lora
                for fmt in tr.cfg.lora_formats:
                    name = "lora" if fmt == "diffusers" else f"lora_{fmt}"
                    p = save_lora(tr.module, tr.out / f"{name}{suffix}.safetensors", format=fmt,
                                  metadata={"openwan_step": tr.step})
                    if p is not None:
                        written.append(p)
            else:
                from torch.distributed.checkpoint.state_dict import get_model_state_dict
                sd = get_model_state_dict(tr.module, options=_sd_options())
                if tr.rank == 0:
                    written += export_full(sd, tr.module.config, tr.out / f"final{suffix}")
    barrier()
    return written


def export_full(state_dict: dict, config, path: Union[str, Path]) -> list[Path]:
    """Write a full DiT state dict (official keys) + config.json as an official-layout directory."""
    from openwan.checkpoints import dit_config_to_official_json, save_sharded, write_json
    path = Path(path)
    cfg = dit_config_to_official_json(config)
    files = save_sharded(state_dict, path, metadata={"format": "pt", "openwan_config": json.dumps(cfg)})
    write_json(cfg, path / "config.json")
    return files


# ============================================================================ loss.csv

class LossLog:
    """loss.csv in the output folder; on resume, rows after the resumed step are dropped."""
    HEADER = ["step", "loss", "lr", "grad_norm", "samples_per_s", "elapsed_s"]

    def __init__(self, path: Path, keep_until: int):
        from openwan.checkpoints import atomic_write
        self.path = path
        rows = []
        if keep_until > 0 and path.exists():
            with open(path, newline="") as fh:
                rows = [r for r in csv.reader(fh)][1:]
            rows = [r for r in rows if r and r[0].isdigit() and int(r[0]) <= keep_until]

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
