"""Loading a checkpoint folder's models (Wan 2.1 and 2.2, official and diffusers layouts) and saving them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

from openwan.configs import SampleDefaults, Variant, get_variant
from openwan.weight_files import CheckpointError

PathLike = Union[str, Path]


@dataclass
class Components:
    """The loaded models of one checkpoint: DiT, VAE, text encoder, optional image encoder.

    Wan 2.2 A14B: ``dit`` is the high-noise expert and ``dit_low`` the low-noise one (None otherwise);
    ``boundary`` the switch point read from a diffusers folder (None: the variant's); ``dit_continue`` a
    continuation expert (the folder's ``continuation_model/``, :data:`CONTINUATION_DIR`): a DiT of the same
    architecture fine-tuned on continuing a video, run on the later windows of the ``continue`` long-video
    method (openwan.pipelines.long); ``dit_reference`` a reference expert (``reference_model/``,
    :data:`REFERENCE_DIR`): the same architecture fine-tuned to draw the object of a reference picture given as a
    clean latent frame before the video (VACE's reference images on a TI2V-style model, openwan.pipelines.ti2v);
    ``dit_two_objects`` a two-object expert (``two_object_model/``, :data:`TWO_OBJECT_DIR`): the same architecture
    fine-tuned on scenes of two objects, run when a demo prompt names two and is not composed
    (openwan.pipelines.ti2v: ``two_objects="expert"``, or a picture that does not show the colours it names);
    ``dit_rolling`` a rolling expert (``rolling_model/``, :data:`ROLLING_DIR`): the same architecture fine-tuned on
    frames at a ladder of noise levels, run on the ladder of the ``rolling`` long-video method
    (openwan.pipelines.rolling)."""
    dit: Any
    vae: Any
    text_encoder: Any
    image_encoder: Any = None
    variant: Optional[Variant] = None
    source: str = ""
    dtype_reason: str = ""
    dit_low: Any = None
    boundary: Optional[float] = None
    dit_sources: tuple = ()      # the DiT folders the float weights came from (reloadable: openwan.release)
    t5_cpu: bool = False          # the text encoder was loaded on the CPU to stay there
    dit_continue: Any = None
    dit_reference: Any = None
    dit_two_objects: Any = None
    dit_rolling: Any = None
    dit_path: str = ""            # DiT weights loaded in place of the folder's (load_components' ``dit``)

    def experts(self) -> list:
        """[(folder, DiT)] of the checkpoint's experts beside the main DiT (:data:`EXPERTS`), those it has."""
        return [(folder, getattr(self, field)) for _, folder, field in EXPERTS if getattr(self, field) is not None]


def resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from openwan import validate
    return validate.device(device)


def load_components(path: PathLike, *, variant: Optional[Union[str, Variant]] = None, device=None,
                    dtype: Optional[torch.dtype] = None, t5_cpu: bool = False,
                    need_image_encoder: Optional[bool] = None, quantize: Optional[str] = None,
                    release_low: bool = False, stage=None, dit_weights: Optional[PathLike] = None,
                    dit: Union[PathLike, torch.nn.Module, None] = None) -> Components:
    """Load every model of a checkpoint directory, official or diffusers layout, Wan 2.1 or 2.2.

    Official: config.json + diffusion_pytorch_model*.safetensors (Wan 2.2 A14B: in high_noise_model/ and
    low_noise_model/), models_t5_umt5-xxl-enc-bf16.pth, google/umt5-xxl/, Wan2.1_VAE.pth or Wan2.2_VAE.pth
    (+ models_clip_...pth for 2.1 i2v/flf2v).
    Diffusers: transformer/ (+ transformer_2/ = the low-noise expert, with model_index.json's
    boundary_ratio), vae/, text_encoder/, tokenizer/ (+ image_encoder/).
    The A14B low-noise expert is loaded onto the CPU when the device is not (only the active expert needs
    the device; the pipeline moves them); with ``release_low`` (the CPU's active-expert plan) it is only
    checked, its weights left unread (meta) until the pipeline first needs it (openwan.release). What the
    folder holds is checked first (:func:`checkpoint_layout`). ``stage`` (e.g. "cpu"): load every model
    there, in the dtypes of ``device`` (block swap: the models visit the device only while they run).
    ``dit_weights``: a DiT weights file to load instead of the folder's, as ``variant``'s DiT config, with the
    folder's VAE weights under ``variant``'s latent mean/std (a distilled demo student: its own DiT and the
    normalization it was trained with, whatever the folder's DiT and vae_config.json are).
    ``dit``: DiT weights (a folder, official or diffusers, or a .safetensors file) to load in place of the folder's,
    of the folder's DiT architecture (checked from the headers): a full fine-tune (``openwan train``'s final/), a
    merge, a community checkpoint of the same model; everything else is the folder's. Or a DiT already built
    (a :class:`~openwan.models.dit.WanModel`, e.g. the model being trained): used as it is (its dtype and device
    untouched), nothing read for it but the folder's config, which its architecture must match (as diffusers'
    ``from_pretrained(..., transformer=model)``).
    """
    from openwan.checkpoints import matching_variants
    from openwan.models.dit import WanModel
    from openwan.models.text_encoder import TextEncoder
    from openwan.models.vaes import load_vae
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path} (give the folder holding config.json, "
                              f"the DiT weights, the VAE and the text encoder, or a diffusers folder)")
    lay = check_checkpoint_dir(path)
    if isinstance(variant, str):
        variant = lookup_variant(variant)
    if dit is not None and (dit_weights is not None or len(lay.dits) == 2):
        raise ValueError("dit= replaces the DiT of a one-DiT checkpoint: " + (
            "not with a distilled student's weights" if dit_weights is not None else
            f"{path} holds Wan 2.2 A14B's two experts; put the expert's weights in its folder (high_noise_model/ or "
            f"low_noise_model/) of a copy of the checkpoint instead"))
    given = dit if isinstance(dit, torch.nn.Module) else None     # a DiT already built: nothing to read
    if given is not None:
        dit = None
    elif dit is not None and not Path(dit).exists():
        raise CheckpointError(f"DiT weights not found: {dit} (a DiT folder or a .safetensors file)")
    if dit_weights is not None and variant is None:
        raise ValueError("dit_weights needs the variant whose DiT they are (its DiT config and VAE statistics)")
    from openwan.variant_io import read_variant
    stored = read_variant(path)   # openwan.json, written by `openwan convert`: the variant's own defaults
    device = resolve_device(device)
    dit_dtype, dtype_reason = _dit_dtype(dtype, device)
    on_device = device
    home = torch.device(stage) if stage is not None else device   # where the weights are put
    quantize = None if quantize in (None, "none") else quantize

    def load_dit(folder, dtype, device, config=None):
        """A float checkpoint; a .gguf DiT in the folder or an openwan-quantized one; or quantized while
        loading (``quantize``: int8 / fp8 weight-only, shard by shard: openwan.quant)."""
        return WanModel.from_pretrained(folder, dtype=dtype, device=device, config=config, quantize=quantize)

    from openwan.gguf import find_gguf
    plain = quantize is None and not any(find_gguf(d) for d in lay.dits) and dit_weights is None   # reloadable
    small = "auto: a small model (bf16 gains nothing at its GEMM sizes)"
    auto_bf16_cpu = dtype == "auto" and dit_dtype != torch.float32 and on_device.type == "cpu"
    if auto_bf16_cpu and not any(find_gguf(d) for d in lay.dits):
        # decided from the headers before loading: weights read as bf16 and widened back would have lost bits
        from openwan.checkpoints import dit_numel
        if dit_numel(dit_weights or lay.dits[0]) < AUTO_BF16_MIN_PARAMS:
            dit_dtype, dtype_reason, auto_bf16_cpu = torch.float32, small, False
    dit_path = dit
    if dit_weights is not None:
        dit = load_dit(dit_weights, dit_dtype, home, variant.dit)
    elif dit_path is not None:          # the folder's architecture (its DiT checked on meta: headers only)
        ref = load_dit(lay.dits[0], dit_dtype, torch.device("meta"), stored.dit if stored else None).config
        try:
            dit = load_dit(dit_path, dit_dtype, home, ref)
        except CheckpointError as e:
            raise CheckpointError(f"dit {dit_path}: not a DiT of {path}'s architecture ({ref.model_type}, dim "
                                  f"{ref.dim}, {ref.num_layers} layers): {e}") from None
    elif given is not None:             # checked against the folder's config (headers only, on meta)
        ref = load_dit(lay.dits[0], dit_dtype, torch.device("meta"), stored.dit if stored else None).config
        differ = config_mismatch(ref, getattr(given, "config", None), ARCHITECTURE)
        if differ:
            raise ArchitectureMismatch(f"dit: the given model is not a DiT of {path}'s architecture (the folder's "
                                       f"vs the model's: {differ})", differ)
        dit = given
    else:
        dit = load_dit(lay.dits[0], dit_dtype, home, stored.dit if stored else None)
    if auto_bf16_cpu and given is None and sum(p.numel() for p in dit.parameters()) < AUTO_BF16_MIN_PARAMS:
        dit_dtype = torch.float32           # a GGUF DiT: its dequantized weights computed in fp32
        dit = dit.to(dit_dtype)
        dtype_reason = small
    dit_low = None
    if len(lay.dits) == 2:
        dit_low = load_dit(lay.dits[1], dit_dtype, torch.device("meta" if release_low and plain else "cpu"))
        if dit_low.config != dit.config:
            raise CheckpointError(f"{path}: the two experts differ ({lay.dits[0].name}: {dit.config.model_type}, "
                                  f"dim {dit.config.dim}; {lay.dits[1].name}: {dit_low.config.model_type}, dim "
                                  f"{dit_low.config.dim}); both must be of the same architecture")
    experts = {}
    for what, folder, field in EXPERTS:
        expert_dir = path / folder
        if expert_dir.is_dir() and dit_low is not None:
            raise CheckpointError(f"{expert_dir}: a {what} expert does not combine with Wan 2.2 A14B's two experts "
                                  f"(remove the folder)")
        if expert_dir.is_dir() and dit_weights is None:     # (a student's own DiT has no experts)
            try:                # the main DiT's architecture (its keys and shapes checked from the headers first)
                experts[field] = load_dit(expert_dir, dit_dtype, home, dit.config)
            except CheckpointError:             # or its own depth and width (grow.deepen)
                expert = load_dit(expert_dir, dit_dtype, home)
                differ = expert_mismatch(dit.config, expert.config)
                if differ:
                    raise CheckpointError(f"{expert_dir}: the {what} expert's DiT takes other inputs than the main "
                                          f"one ({differ}); an expert may differ in depth and width only (remove "
                                          f"the folder to run without it)") from None
                expert.config = dit.config.replace(**{k: getattr(expert.config, k) for k in EXPERT_SIZE})
                experts[field] = expert
    if lay.expand_timesteps and dit.config.model_type != "ti2v":
        raise CheckpointError(f"{path}: model_index.json sets expand_timesteps (Wan 2.2 TI2V) but the DiT is "
                              f"{dit.config.model_type!r} with {dit.config.in_dim} input channels, not a TI2V-5B DiT")
    if variant is None:
        variant = stored
    if variant is None:
        fits = [n for n in matching_variants(dit.config) if _is_moe_name(n) == (dit_low is not None)]
        variant = lookup_variant(fits[0]) if fits else _custom_variant(dit.config, dit_low is not None)
    vae = load_vae(path, device=home, config=variant.vae if dit_weights is not None else None)
    if vae.z_dim != dit.config.out_dim:
        raise CheckpointError(f"{path}: the VAE's latent has {vae.z_dim} channels but the DiT predicts "
                              f"{dit.config.out_dim}: Wan 2.2 TI2V-5B needs Wan2.2_VAE.pth (z 48), the 2.1 models "
                              f"and the A14B experts Wan2.1_VAE.pth (z 16)")
    te_device = torch.device("cpu") if t5_cpu else on_device
    staged = home != on_device            # the encoders' dtypes: their defaults on the compute device
    text_encoder = TextEncoder.from_pretrained(path, device=torch.device("cpu") if t5_cpu else home,
                                               dtype=torch.bfloat16 if staged and te_device.type != "cpu" else None,
                                               config=stored.text_encoder if stored else None)
    image_encoder = None
    if need_image_encoder if need_image_encoder is not None else dit.config.has_image_input:
        from openwan.models.image_encoder import ImageEncoder
        image_encoder = ImageEncoder.from_pretrained(path, device=home, dtype=torch.float16
                                                     if staged and on_device.type != "cpu" else None)
    return Components(dit, vae, text_encoder, image_encoder, variant, str(path), dtype_reason, dit_low=dit_low,
                      boundary=lay.boundary,
                      dit_sources=tuple(lay.dits) if plain and dit_path is None and given is None else (),
                      t5_cpu=t5_cpu, dit_path="" if dit_path is None else str(dit_path), **experts)


# A checkpoint folder's continuation expert (Components.dit_continue): a DiT folder (the layout of the main DiT's)
# in this subfolder.
CONTINUATION_DIR = "continuation_model"
# ... and its reference expert (Components.dit_reference), the same way.
REFERENCE_DIR = "reference_model"
# ... and its two-object expert (Components.dit_two_objects).
TWO_OBJECT_DIR = "two_object_model"
# ... and its rolling expert (Components.dit_rolling).
ROLLING_DIR = "rolling_model"
# Every expert a checkpoint folder may hold beside its main DiT: (what it is, its folder, its Components field).
EXPERTS = (("continuation", CONTINUATION_DIR, "dit_continue"), ("reference", REFERENCE_DIR, "dit_reference"),
           ("two-object", TWO_OBJECT_DIR, "dit_two_objects"), ("rolling", ROLLING_DIR, "dit_rolling"))


# What an expert's DiT shares with the main one, so that the same latents and text features go in and the same
# velocity comes out (read from its weights' shapes); the rest of its config is the main DiT's but for its size,
# which is its own (a two-object expert may be deeper: openwan.demo.grow.deepen).
EXPERT_INTERFACE = ("patch_size", "in_dim", "out_dim", "text_dim")
EXPERT_SIZE = ("dim", "ffn_dim", "num_heads", "num_layers")
# What a DiT given to load_components(dit=module) must share with the folder's: every field that shapes a weight.
ARCHITECTURE = ("model_type", *EXPERT_INTERFACE, *EXPERT_SIZE, "freq_dim", "vace_layers", "vace_in_dim")


def config_mismatch(ref, other, fields) -> str:
    """The ``fields`` in which DiT config ``other`` differs from ``ref``, as "field ref vs other" ('' where it
    fits)."""
    return ", ".join(f"{k} {getattr(ref, k)} vs {getattr(other, k, None)}" for k in fields
                     if getattr(ref, k) != getattr(other, k, None))


def expert_mismatch(main, expert) -> str:
    """The :data:`EXPERT_INTERFACE` fields in which an expert's DiT config differs from the main DiT's, as
    "field main vs expert" ('' where it fits)."""
    return config_mismatch(main, expert, EXPERT_INTERFACE)


class ArchitectureMismatch(CheckpointError):
    """A DiT given to ``load_components(dit=model)`` that is not of the checkpoint's architecture; ``differ``: where
    (:func:`config_mismatch` over :data:`ARCHITECTURE`, the checkpoint's vs the model's)."""

    def __init__(self, message: str, differ: str):
        super().__init__(message)
        self.differ = differ


# With dtype="auto", a CPU model smaller than this computes in fp32 even where bf16 is fast: its matrices are
# too small for bf16 GEMM to pay for the casts (the embedded demo DiT has 1.8M parameters).
AUTO_BF16_MIN_PARAMS = 50_000_000                # = openwan.runtime.BF16_MIN_PARAMS (training's rule)


def _dit_dtype(dtype, device: torch.device) -> tuple[torch.dtype, str]:
    """The DiT's dtype: None = fp32 on CPU, bf16 on CUDA (the published weights' dtype); "auto" = bf16 where
    the device multiplies bf16 fast (CUDA, AMX CPUs), fp32 elsewhere; or a name / torch dtype."""
    from openwan import runtime
    if dtype is None:
        return (torch.float32, "default on CPU") if device.type == "cpu" else (torch.bfloat16, "default on CUDA")
    return runtime.resolve_dtype(dtype, device)


def _is_moe_name(name: str) -> bool:
    return name.endswith("-A14B")


def checkpoint_variant(path) -> Optional[Variant]:
    """The published variant a checkpoint holds, read from headers only (nothing loaded): "demo" (or None)
    the demo's; a folder's openwan.json, else its DiT's config.json matched against the published
    variants; None when it matches none (a custom model) or the folder cannot tell."""
    from openwan.checkpoints import (
        CheckpointError,
        _dit_source,
        checkpoint_layout,
        dit_config_from_diffusers_json,
        dit_config_from_official_json,
        matching_variants,
    )
    from openwan.variant_io import read_variant
    if path is None or str(path) == "demo":
        return get_variant("demo")
    try:
        stored = read_variant(path)
        if stored is not None:
            return stored
        lay = checkpoint_layout(Path(path))
        _, kind, cfg_json = _dit_source(Path(lay.dits[0]))
    except (CheckpointError, OSError, ValueError):
        return None
    if cfg_json is None:
        return None
    cfg = (dit_config_from_diffusers_json if kind == "diffusers" else dit_config_from_official_json)(cfg_json)
    fits = [n for n in matching_variants(cfg) if _is_moe_name(n) == (len(lay.dits) == 2)]
    return lookup_variant(fits[0]) if fits else None


def lookup_variant(name: str) -> Variant:
    """A variant by name: the Wan 2.2 ones (t2v-A14B, i2v-A14B, ti2v-5B) or any of get_variant's."""
    from openwan.configs import WAN22_VARIANTS
    return WAN22_VARIANTS[name] if name in WAN22_VARIANTS else get_variant(name)


OFFICIAL_NEEDS = {"DiT config": ["config.json"],
                  "VAE": ["Wan2.1_VAE.pth", "Wan2.1_VAE.safetensors", "Wan2.2_VAE.pth", "Wan2.2_VAE.safetensors"],
                  "text encoder": ["models_t5_umt5-xxl-enc-bf16.pth", "models_t5_umt5-xxl-enc-bf16.safetensors"],
                  "tokenizer": ["google/umt5-xxl"]}
DIFFUSERS_NEEDS = {"DiT": ["transformer"], "VAE": ["vae"], "text encoder": ["text_encoder"],
                   "tokenizer": ["tokenizer"]}
def check_checkpoint_dir(path: Path):
    """Name every file a checkpoint directory lacks before loading anything; returns its
    :class:`openwan.checkpoints.Layout` (Wan 2.1 or 2.2, one DiT or two experts)."""
    from openwan.checkpoints import CheckpointError, checkpoint_layout
    lay = checkpoint_layout(path)
    needs = dict(DIFFUSERS_NEEDS if lay.kind == "diffusers" else OFFICIAL_NEEDS)
    if lay.dits[0] != path and lay.kind == "official":
        needs.pop("DiT config")
    missing = [f"{what} ({' or '.join(names)})" for what, names in needs.items()
               if not any((path / n).exists() for n in names)]
    if lay.kind == "official":
        for d in lay.dits:
            where = "" if d == path else f" in {d.name}/"
            if d != path and not (d / "config.json").exists():
                missing.append(f"DiT config{where} (config.json)")
            if not list(d.glob("diffusion_pytorch_model*.safetensors")) and not list(d.glob("*.gguf")):
                missing.insert(0, f"DiT weights{where} (diffusion_pytorch_model*.safetensors, or one .gguf file)")
    if missing:
        raise CheckpointError(f"checkpoint directory {path} ({lay.kind} layout) is missing: {'; '.join(missing)}")
    return lay


def _custom_variant(dit_config, two_experts: bool = False) -> Variant:
    """Defaults for a checkpoint that is none of the published ones (tests, fine-tunes). Wan 2.2 shapes
    (two experts, or a ti2v DiT) take the sampling defaults of their published variant, any size."""
    from openwan.configs import WAN22_VARIANTS
    task = "vace" if dit_config.is_vace else dit_config.model_type
    if two_experts or task == "ti2v":
        base = WAN22_VARIANTS["ti2v-5B" if task == "ti2v" else f"{task}-A14B"]
        return base.replace(name=f"custom-{base.name}", dit=dit_config, vae=base.vae,
                            sample=base.sample.replace(sizes=()))
    sample = SampleDefaults(sizes=(), size="832*480")
    if task == "i2v":
        sample = sample.replace(steps=40, shift=3.0)
    elif task in ("flf2v", "vace"):
        sample = sample.replace(shift=16.0)
    return Variant(f"custom-{task}", task, dit_config, sample=sample)
