"""The training configuration: one typed dataclass per YAML section, checked field by field.

    TrainConfig                      top-level fields (steps, batch_size, ...) and the sections:
      model:      ModelConfig        variant | path | dit (inline DiTConfig fields), dtype, expert (A14B)
      data:       DataConfig         cache_dir | file + buckets (+ ckpt_dir, vae, text_encoder, ...), fps,
                                     caption_dropout
      optimizer:  OptimizerConfig    lr, betas, weight_decay, eps
      schedule:   ScheduleConfig     type constant|cosine|linear, warmup_steps, min_lr_ratio
      timesteps:  TimestepSampling   distribution uniform|shift|logit_normal, shift, mean, std
      lora:       LoRAConfig | None  rank, alpha, targets, seed, weights (None: full fine-tuning)
      ema:        EMAConfig | None   decay (None: no EMA)
      objective:  ObjectiveConfig    name (flow_matching, a registered name or "module:Class") + options
      validation: ValidationConfig | None   prompts (+ seed, sample_steps, size, ...): videos every validate_every

A value of the wrong type, an unknown field, or a YAML file that does not parse gives a one-line
ValueError naming the field (``optimizer.lr: expected a number, got 'fast'``). YAML 1.1 reads ``1e-4``
(no dot) as a string: number-looking strings are accepted where a number is expected.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from openwan.training.loss import TimestepSampling

DEFAULT_LORA_TARGETS = ("q", "k", "v", "o", "ffn.0", "ffn.2")  # = openwan.training.lora.DEFAULT_TARGETS
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


# ============================================================================ typed conversion

def _type_name(tp) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
             list: "a list"}
    if tp in names:
        return names[tp]
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {tp.__name__} fields"
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0]).split(' ', 1)[-1]}s"
    if origin is Union:
        return " or ".join(_type_name(a) if a is not type(None) else "null" for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _convert(value, tp, where: str):
    """``value`` as type ``tp`` (a field annotation), or a ValueError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error names the inner field
            return _convert(value, options[0], where)
        for a in options:
            try:
                return _convert(value, a, where)
            except ValueError:
                pass
        raise ValueError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    bad = ValueError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            value = float(value)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            return float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, os.PathLike):
            return str(value)
        if isinstance(value, str):
            return value
        raise bad
    if tp is dict:
        if isinstance(value, dict):
            return _coerce_numbers(value)
        raise bad
    if tp is list:
        if isinstance(value, (list, tuple)):
            return _coerce_numbers(list(value))
        raise bad
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if isinstance(value, str) and item is str:  # "q, k, ffn.0"
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad
        return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise bad
        return build_section(tp, value, where)
    raise TypeError(f"{where}: unsupported field type {tp!r}")  # a bug in a config class, not in the input


def build_section(cls, d: dict, where: str = ""):
    """An instance of the dataclass ``cls`` from the mapping ``d``: unknown fields and wrong types are
    ValueErrors naming the field (``where`` is the section's path, "" for the top level)."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(d) - set(fields))
    if unknown:
        section = f"{where} fields" if where else "training config fields"
        raise ValueError(f"unknown {section} {unknown}; known: {', '.join(fields)}")
    kw = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in d.items()}
    return cls(**kw)


def _coerce_numbers(v):
    """Number-looking strings (YAML 1.1 reads ``1e-4`` as a string) as numbers, in free-form mappings."""
    if isinstance(v, dict):
        return {k: _coerce_numbers(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_coerce_numbers(x) for x in v]
    if isinstance(v, str) and _NUMBER.match(v.strip()):
        f = float(v)
        return int(f) if f.is_integer() and not any(c in v for c in ".eE") else f
    return v


def _sparse(obj) -> dict:
    """A section as the mapping of its fields that differ from their defaults (what a user would write)."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if v != default:
            out[f.name] = _plain(v)
    return out


def _plain(v):
    if dataclasses.is_dataclass(v):
        return _sparse(v)
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _check_int(name, v, minimum=1):
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")


# ============================================================================ the sections

@dataclass
class ModelConfig:
    variant: Optional[str] = None        # an architecture name (t2v-1.3B, tiny, ...)
    path: Optional[str] = None           # a checkpoint dir / .safetensors, or "demo" (the embedded demo model)
    dit: Optional[dict] = None           # inline DiTConfig fields (random init)
    dtype: str = "fp32"                  # storage dtype of the weights: fp32 | bf16 | fp16
    expert: Optional[str] = None         # Wan 2.2 A14B: high | low, the expert to train (training/experts.py)

    def __post_init__(self):
        if self.expert is not None and self.expert not in ("high", "low"):
            raise ValueError(f"model.expert must be high or low (a Wan 2.2 A14B expert), got {self.expert!r}")
        if self.dtype not in ("fp32", "float32", "bf16", "bfloat16", "fp16", "float16"):
            raise ValueError(f"model.dtype must be fp32, bf16 or fp16, got {self.dtype!r}")


@dataclass
class DataConfig:
    cache_dir: Optional[str] = None      # a latent cache (openwan cache-latents); default <output_dir>/latent_cache
    file: Optional[str] = None           # captions (CSV / JSONL / folder): encoded into cache_dir first
    buckets: Optional[list] = None       # [frames, height, width] triples (with file)
    ckpt_dir: Optional[str] = None       # where the VAE + text encoder live (default: model.path)
    vae: Optional[str] = None
    text_encoder: Optional[str] = None
    image_encoder: Optional[str] = None
    task: str = "t2v"                    # t2v | i2v | flf2v | vace (what the cache stores)
    fps: Optional[float] = None
    shuffle: bool = True
    caption_dropout: float = 0.0         # share of samples trained on the empty prompt (for guidance), [0, 1)

    def __post_init__(self):
        if not (0.0 <= self.caption_dropout < 1.0):
            raise ValueError(f"data.caption_dropout must be in [0, 1) (a share of the samples, e.g. 0.1), "
                             f"got {self.caption_dropout!r}")


@dataclass
class OptimizerConfig:
    lr: float = 1e-4
    betas: tuple[float, ...] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8

    def __post_init__(self):
        if len(self.betas) != 2:
            raise ValueError(f"optimizer.betas must be two numbers, got {list(self.betas)}")


@dataclass
class ScheduleConfig:
    type: str = "constant"               # constant | cosine | linear
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __post_init__(self):
        if self.type not in ("constant", "cosine", "linear"):
            raise ValueError(f"schedule type must be constant, cosine or linear, got {self.type!r}")
        _check_int("schedule.warmup_steps", self.warmup_steps, 0)


@dataclass
class LoRAConfig:
    rank: int = 16
    alpha: Optional[float] = None        # default: rank (scale 1)
    targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    seed: Optional[int] = None           # A's init; default: the run's seed
    weights: Optional[str] = None        # a LoRA file to start from (training/lora_init.py); rank = its rank

    def __post_init__(self):
        _check_int("lora.rank", self.rank)


@dataclass
class EMAConfig:
    decay: float = 0.999

    def __post_init__(self):
        if not (0 < self.decay < 1):
            raise ValueError(f"ema decay must be in (0, 1), got {self.decay!r}")


@dataclass
class ValidationConfig:
    """Videos sampled with the model being trained (openwan.training.validation): every ``validate_every`` steps
    (0: at the end only), written to ``<output_dir>/samples/step-<N>/``. Unset fields take the model's defaults."""
    prompts: list = field(default_factory=list)   # a list, never split on commas (prompts have them)
    seed: int = 0
    sample_steps: Optional[int] = None
    guide_scale: Optional[float] = None
    size: Optional[str] = None           # "W*H"
    frame_num: Optional[int] = None
    negative_prompt: Optional[str] = None

    def __post_init__(self):
        if not self.prompts or any(not isinstance(p, str) or not p.strip() for p in self.prompts):
            raise ValueError("validation.prompts: give one or more prompts, none empty (e.g. prompts: [\"a red "
                             "circle moving to the right\"])")
        if self.sample_steps is not None:
            _check_int("validation.sample_steps", self.sample_steps)
        if self.frame_num is not None:
            _check_int("validation.frame_num", self.frame_num)


@dataclass
class ObjectiveConfig:
    name: str = "flow_matching"          # a registered objective, or "package.module:Factory"
    options: dict = field(default_factory=dict)   # keyword arguments for the objective's factory


# The timesteps section is the loss module's TimestepSampling (a frozen dataclass; "type" = distribution).

def _timesteps(v, where="timesteps"):
    if isinstance(v, TimestepSampling):
        return v
    if v is None:
        return TimestepSampling()
    if not isinstance(v, dict):
        raise ValueError(f"{where}: expected a mapping (distribution, shift, mean, std), got {v!r}")
    d = dict(v)
    if "type" in d and "distribution" not in d:
        d["distribution"] = d.pop("type")
    return build_section(TimestepSampling, d, where)


# ============================================================================ the whole config

@dataclass
class TrainConfig:
    """Everything a run needs; the YAML file has the same fields (see docs/training.md)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    timesteps: TimestepSampling = field(default_factory=TimestepSampling)
    lora: Optional[LoRAConfig] = None                # None: full fine-tuning
    ema: Optional[EMAConfig] = None                  # None: no EMA
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    validation: Optional[ValidationConfig] = None    # None: no sampled videos
    steps: int = 1000
    stop_at: Optional[int] = None                    # end this run here (checkpoint); schedule still spans `steps`
    batch_size: int = 1                              # per process
    grad_accum: int = 1
    grad_clip: Optional[float] = 1.0
    gradient_checkpointing: bool = False
    precision: str = "auto"                          # auto (bf16: CUDA, AMX CPUs >= 50M params) | fp32 | bf16
    parallel: str = "auto"                           # auto (fsdp when >1 process) | fsdp | ddp | none
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    validate_every: int = 0
    output_dir: str = "runs/train"
    seed: int = 0
    resume: Optional[str] = "auto"                   # auto | none (or null) | path to a checkpoint folder
    progress: bool = True
    save_final: bool = True
    lora_formats: tuple[str, ...] = ("diffusers", "comfyui")

    def __post_init__(self):
        self.validate()

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "TrainConfig":
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ValueError(f"a training config is a mapping of fields, got {type(d).__name__}")
        d = dict(d)
        if "timesteps" in d:
            d["timesteps"] = _timesteps(d["timesteps"])
        obj = d.get("objective")
        if isinstance(obj, str):
            d["objective"] = {"name": obj}
        elif isinstance(obj, dict) and set(obj) - {"name", "options"}:  # {name: x, lr: 1e-4}: the rest are options
            rest = {k: v for k, v in obj.items() if k not in ("name", "options")}
            d["objective"] = {"name": obj.get("name", "flow_matching"), "options": {**obj.get("options", {}), **rest}}
        return build_section(cls, d)

    @classmethod
    def from_yaml(cls, path: Union[str, Path], overrides: Optional[list] = None) -> "TrainConfig":
        return cls.from_dict(apply_overrides(read_yaml(path), overrides or []))

    def to_dict(self) -> dict:
        """The config as YAML-ready data: top-level fields in full, each section's non-default fields."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = _sparse(v) if dataclasses.is_dataclass(v) else _plain(v)
        return out

    def validate(self) -> None:
        _check_int("steps", self.steps)
        if self.stop_at is not None:
            _check_int("stop_at", self.stop_at)
        _check_int("batch_size", self.batch_size)
        _check_int("grad_accum", self.grad_accum)
        _check_int("checkpoint_every", self.checkpoint_every, 0)
        _check_int("keep_checkpoints", self.keep_checkpoints)
        _check_int("validate_every", self.validate_every, 0)
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.parallel not in ("auto", "fsdp", "ddp", "none"):
            raise ValueError(f"parallel must be auto, fsdp, ddp or none, got {self.parallel!r}")
        if self.grad_clip is not None and not (self.grad_clip > 0):
            raise ValueError(f"grad_clip must be positive (or null for no clipping), got {self.grad_clip!r}")
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


# ============================================================================ paths

def resolve_model_path(path: Optional[str], field: str = "model.path") -> Optional[str]:
    """A checkpoint path of the config as a folder or file: "demo" is the embedded demo checkpoint; a missing
    path is an error that names ``field`` and says what to prepare."""
    if path is None:
        return None
    if str(path) == "demo":
        from openwan.demo import demo_checkpoint_dir
        return str(demo_checkpoint_dir())
    if not Path(path).exists():
        raise FileNotFoundError(f"{field} {path} does not exist: download or prepare the checkpoint first "
                                f"(a tiny one: python -c \"from openwan.testing import make_tiny_checkpoint as m; "
                                f"m('{path}')\"), or use model.path=demo for the embedded demo model")
    return str(path)


# ============================================================================ YAML and --set

def read_yaml(path: Union[str, Path]) -> dict:
    """A training YAML file as a mapping; a missing file, bad YAML or a non-mapping is a one-line error."""
    import yaml
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML{at}: {problem}") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ValueError(f"{path}: the top level must be a mapping of config fields (steps: ..., model: ...), "
                         f"not a {type(d).__name__}")
    return d


def apply_overrides(d: dict, sets: list[str]) -> dict:
    """``d`` with each ``key.sub=value`` (YAML value) of ``sets`` applied; a bad one is a one-line error."""
    import yaml
    d = copy.deepcopy(d)
    for s in sets or []:
        if "=" not in s:
            raise ValueError(f"--set expects key=value (e.g. optimizer.lr=2e-5), got {s!r}")
        key, val = s.split("=", 1)
        node = d
        parts = key.strip().split(".")
        if not all(parts):
            raise ValueError(f"--set {key}: not a field name (e.g. optimizer.lr)")
        for i, p in enumerate(parts[:-1]):
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(val)
        except yaml.YAMLError:
            node[parts[-1]] = val
    return d
