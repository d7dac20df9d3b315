"""Training objectives: what one micro-batch's loss is, injected into the trainer.

    loss, logs = objective(model, batch, rng)

* ``model``: the module to call (the DDP wrapper under ddp, else the DiT);
* ``batch``: a :class:`Batch` (clean latents, text context, image condition, the step, each sample's
  index among the step's samples);
* ``rng``: one CPU ``torch.Generator`` per sample, seeded by (seed, step, sample index), so every random
  draw of the objective is the same however the step is split over processes and micro-batches, and
  after a resume.

The trainer calls the objective under autocast and its gradient-sync context, backpropagates
``loss / grad_accum``, and after the optimizer step calls ``objective.after_step(step)`` once, where an
objective with its own trainable parts (a distillation's fake-score model and its optimizer) updates
them. Whatever ``state_dict()`` returns goes into every checkpoint (``objective.pt``) and comes back
through ``load_state_dict`` on resume, so such objectives resume bit-exactly too. ``setup(ctx)`` is
called once with the run's :class:`ObjectiveContext` (config, DiT, device, process rank / count)
before any resume.

The config selects the objective: ``objective: flow_matching`` (default), a name registered with
:func:`register_objective`, or ``package.module:factory``; ``objective: {name: ..., options: {...}}``
passes keyword arguments to the factory, called as ``factory(config, **options)``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from openwan.training.loss import TimestepSampling, flow_matching_loss


@dataclass
class Batch:
    """One micro-batch on the training device."""
    latent: torch.Tensor                       # [B, C, F, H, W] clean latents
    context: list                              # B text embeddings [L_i, D]
    cond: dict = field(default_factory=dict)   # y [B, C', F, H, W] and clip_fea (i2v / flf2v); vace_context
    step: int = 0                              # the optimizer step being computed (0-based)
    index: list = field(default_factory=list)  # each sample's index among this step's samples
    extra: dict = field(default_factory=dict)  # other per-sample tensors of the items, stacked [B, ...]

    def __len__(self) -> int:
        return self.latent.shape[0]


@dataclass
class ObjectiveContext:
    config: Any                    # the TrainConfig
    module: nn.Module              # the DiT being trained (unwrapped)
    device: torch.device
    rank: int = 0
    world: int = 1


class Objective:
    """Base class: override ``__call__``; the hooks default to nothing."""

    def setup(self, ctx: ObjectiveContext) -> None:
        """Build extra modules / optimizers (called once, after the model is built and wrapped)."""

    def __call__(self, model: Callable, batch: Batch, rng: list) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def after_step(self, step: int) -> dict:
        """After the optimizer step ``step`` (1-based count of finished steps): the objective's own updates.
        Returns extra logs."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state, but the checkpoint holds {sorted(state)}")


class FlowMatching(Objective):
    """Wan's flow-matching MSE (openwan.training.loss): per sample, sigma from ``sampling`` then the noise,
    both drawn from that sample's generator."""

    def __init__(self, sampling: Optional[TimestepSampling] = None):
        self.sampling = sampling or TimestepSampling()

    def draw(self, batch: Batch, rng: list) -> tuple[torch.Tensor, torch.Tensor]:
        noise, sigma = [], []
        for x, g in zip(batch.latent, rng):
            sigma.append(self.sampling.sample(1, g)[0])
            noise.append(torch.randn(tuple(x.shape), generator=g, dtype=torch.float32))
        return torch.stack(noise).to(batch.latent.device), torch.stack(sigma)

    def __call__(self, model, batch, rng):
        noise, sigma = self.draw(batch, rng)
        loss, _ = flow_matching_loss(model, batch.latent, batch.context, noise, sigma, **batch.cond)
        return loss, {}


# ============================================================================ the registry

_REGISTRY: dict[str, Callable[..., Objective]] = {}


def register_objective(name: str, factory: Callable[..., Objective]) -> None:
    """Make ``objective: name`` in a config build ``factory(config, **options)``."""
    _REGISTRY[name] = factory


register_objective("flow_matching", lambda config, **options: FlowMatching(config.timesteps, **options))
# objectives of other modules (they import this one): name -> module
_BUILT_IN = {"clean_frames": "openwan.training.clean_frames"}


def build_objective(config) -> Objective:
    """The objective a TrainConfig names (``config.objective.name`` with ``.options``)."""
    name, options = config.objective.name, dict(config.objective.options or {})
    if name in _BUILT_IN and name not in _REGISTRY:      # registers itself on import
        importlib.import_module(_BUILT_IN[name])
    if name in _REGISTRY:
        factory = _REGISTRY[name]
    elif ":" in name:
        mod, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"objective.name {name!r}: cannot import it ({e})") from None
    else:
        known = sorted({*_REGISTRY, *_BUILT_IN})
        raise ValueError(f"objective.name {name!r} is not a known objective; use one of {known} "
                         f"or 'package.module:factory'")
    try:
        obj = factory(config, **options)
    except TypeError as e:
        raise ValueError(f"objective {name!r}: bad options {sorted(options)} ({e})") from None
    if not callable(obj):
        raise ValueError(f"objective {name!r}: the factory returned {type(obj).__name__}, not an objective")
    return obj
