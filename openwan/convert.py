"""Whole-pipeline folders: official <-> diffusers (Wan 2.1, Wan 2.2, the demo), with the sampling defaults kept.

    openwan.convert.to_diffusers("demo", "demo-diffusers")      # or any official / diffusers checkpoint folder
    diffusers.WanPipeline.from_pretrained("demo-diffusers")     # loads and runs
    openwan.convert.to_official("demo-diffusers", "demo-official")

``to_diffusers`` writes what ``DiffusionPipeline.from_pretrained`` reads: ``model_index.json`` (``WanPipeline``
for t2v/t2i, ``WanImageToVideoPipeline`` for i2v/flf2v, ``WanVACEPipeline`` for vace), ``scheduler/`` (UniPC on
flow sigmas with ``flow_shift`` = the variant's default shift, as diffusers configures its Wan pipelines),
``tokenizer/``, ``text_encoder/`` (UMT5EncoderModel), ``vae/`` (AutoencoderKLWan), ``transformer/``
(WanTransformer3DModel) and, for i2v/flf2v, ``image_encoder/`` (CLIPVisionModel) + ``image_processor/``.
Wan 2.2: the A14B experts as ``transformer/`` (high-noise) + ``transformer_2/`` (low-noise) with
``boundary_ratio`` in ``model_index.json`` (``WanPipeline`` / ``WanImageToVideoPipeline``, no image encoder),
officially ``high_noise_model/`` + ``low_noise_model/``; TI2V-5B with ``expand_timesteps: true`` and the 2.2
VAE (``vae/`` AutoencoderKLWan with is_residual, officially ``Wan2.2_VAE.pth``).
Both directions also write ``openwan.json`` (:mod:`openwan.variant_io`): the variant's name, task, sampling
defaults and component configs, which diffusers and the official ``generate.py`` ignore and openwan reads back.

``lora=`` (``openwan convert ... --lora FILE[:STRENGTH]``) merges LoRA files into the DiT on the way
(:func:`bake_loras`): the output samples as the source with ``--lora`` does, in tools that read no LoRA and
without the per-step cost of applying one.

The output folder is built beside ``dst`` and renamed into place at the end: a failed conversion leaves nothing.
Weights keep their stored dtype per component (``dtype=`` casts the DiT only, the large part).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional, Union

import torch

from openwan.configs import OFFICIAL_FILES, Variant
from openwan.fileio import write_json
from openwan.variant_io import read_variant, write_variant

PathLike = Union[str, os.PathLike]
DIFFUSERS_VERSION = "0.33.1"     # the oldest diffusers with every Wan class named below
DTYPES = {"keep": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PIPELINE_CLASS = {"t2v": "WanPipeline", "t2i": "WanPipeline", "i2v": "WanImageToVideoPipeline",
                  "flf2v": "WanImageToVideoPipeline", "vace": "WanVACEPipeline", "ti2v": "WanPipeline"}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
_ST_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


# ----------------------------------------------------------------------------- public API

def to_diffusers(src: PathLike, dst: PathLike, *, dtype: Union[str, torch.dtype, None] = None, lora=None) -> Path:
    """Write ``src`` (official or diffusers folder, or "demo") as a complete diffusers pipeline folder ``dst``
    (``lora``: LoRA files merged into the DiT first, :func:`bake_loras`)."""
    return _convert(src, dst, "diffusers", dtype, lora)


def to_official(src: PathLike, dst: PathLike, *, dtype: Union[str, torch.dtype, None] = None, lora=None) -> Path:
    """Write ``src`` (diffusers or official folder, or "demo") in the official Wan 2.1 / 2.2 layout."""
    return _convert(src, dst, "official", dtype, lora)


def convert(src: PathLike, dst: PathLike, to: str, dtype: Union[str, torch.dtype, None] = "keep",
            lora=None) -> Path:
    """``openwan convert SRC DST --to diffusers|official [--dtype keep|bf16|fp16|fp32] [--lora FILE[:S]]``."""
    if to not in ("diffusers", "official"):
        raise ValueError(f"--to must be 'diffusers' or 'official', got {to!r}")
    return _convert(src, dst, to, dtype, lora)


def bake_loras(c, lora) -> list[dict]:
    """Merge LoRA files (``"FILE[:STRENGTH]"``, a list of them; Wan 2.2 A14B: ``"high:FILE"`` / ``"low:FILE"``
    for one expert, a plain file for both) into the loaded components' DiT(s), as ``openwan generate --lora``
    applies them: the main DiT (and both A14B experts), not a checkpoint's other experts (the demo's long-video
    ones). The weights then hold W + delta, computed as the on-the-fly path computes it in the DiT's dtype, so
    the converted checkpoint samples exactly what the source with ``--lora`` samples. Returns the parsed specs."""
    from openwan.pipelines.adapters import use_loras, use_loras_on_experts
    from openwan.training.lora import adapter_names, merge_lora
    if not lora:
        return []               # (use_loras parses and checks the specs, once)
    if c.dit_low is not None:
        parsed = use_loras_on_experts({"high": c.dit, "low": c.dit_low}, lora)
    else:
        parsed = use_loras(c.dit, lora)
    for model in (c.dit, c.dit_low):
        if model is not None and adapter_names(model):
            merge_lora(model, keep_original=False)
    return parsed


def pipeline_class(task: str) -> str:
    if task not in PIPELINE_CLASS:
        raise ValueError(f"no diffusers pipeline for task {task!r}; tasks: {', '.join(PIPELINE_CLASS)}")
    return PIPELINE_CLASS[task]


def scheduler_config(shift: float) -> dict:
    """UniPC on flow-matching sigmas, the way diffusers' Wan pipelines ship it, with ``flow_shift`` = shift."""
    return {"_class_name": "UniPCMultistepScheduler", "_diffusers_version": DIFFUSERS_VERSION,
            "num_train_timesteps": 1000, "prediction_type": "flow_prediction", "use_flow_sigmas": True,
            "flow_shift": float(shift), "solver_order": 2, "solver_type": "bh2", "predict_x0": True,
            "lower_order_final": True, "final_sigmas_type": "zero", "timestep_spacing": "linspace",
            "steps_offset": 0, "disable_corrector": []}


def image_processor_config(image_size: int) -> dict:
    """CLIPImageProcessor settings of CLIP ViT at ``image_size`` pixels (diffusers' Wan I2V folders)."""
    return {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": image_size},
            "resample": 3, "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD, "do_convert_rgb": True}


# ----------------------------------------------------------------------------- the conversion

def _resolve_source(src: PathLike) -> tuple[Path, Optional[Variant]]:
    from openwan.checkpoints import CheckpointError
    if str(src) == "demo":
        from openwan.configs import get_variant
        from openwan.demo import demo_checkpoint_dir
        return demo_checkpoint_dir(), get_variant("demo")
    path = Path(src)
    if not path.is_dir():
        what = f"{path} is a file, not a folder" if path.exists() else f"folder not found: {path}"
        raise CheckpointError(f"source checkpoint {what} (give an official or diffusers checkpoint folder, or "
                              f"'demo')")
    return path, read_variant(path)


def _check_destination(dst: Path, src: Path) -> None:
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst} exists and is not an empty folder: choose a new output folder")
    if dst.resolve() == src.resolve():
        raise ValueError("the output folder must differ from the source folder")


def _convert(src: PathLike, dst: PathLike, to: str, dtype, lora=None) -> Path:
    from openwan.pipelines import load_components
    src_dir, variant = _resolve_source(src)
    dst = Path(dst)
    _check_destination(dst, src_dir)
    if isinstance(dtype, str) or dtype is None:
        if (dtype or "keep") not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype or "keep"]
    from openwan.pipelines.adapters import parse_lora_specs
    parse_lora_specs(lora)                 # a missing LoRA file is named before the models load
    stored = _stored_dtypes(src_dir)
    dit_dtype = dtype or stored["dit"] or torch.float32
    c = load_components(src_dir, variant=variant, device="cpu", dtype=dit_dtype)
    _adopt_text_len(c, c.variant)
    bake_loras(c, lora)

    staging = dst.parent / f".{dst.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        staging.mkdir(parents=True)
        write_components(c, staging, to, stored)
        if dst.exists():
            dst.rmdir()   # an empty folder, checked above
        os.replace(staging, dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dst


def write_components(c, out: PathLike, layout: str, stored: Optional[dict] = None) -> Path:
    """Write loaded components (:class:`openwan.pipelines.components.Components`: Wan 2.1, Wan 2.2 A14B with
    ``dit_low``, TI2V-5B on the 2.2 VAE) as a complete folder in ``layout`` "official" or "diffusers", with
    ``openwan.json``. ``stored``: the dtype to write each component in (:func:`_stored_dtypes`; default: as
    they are)."""
    if layout not in ("official", "diffusers"):
        raise ValueError(f"layout must be 'official' or 'diffusers', got {layout!r}")
    from openwan.configs import VAEConfig
    out = Path(out)
    stored = stored or {}
    variant = c.variant.replace(dit=c.dit.config)      # the record holds the models' own configs
    te_config = getattr(c.text_encoder, "config", None)
    if te_config is not None:
        variant = variant.replace(text_encoder=te_config)
    vae_config = getattr(c.vae, "config", None)
    variant = variant.replace(vae=vae_config if isinstance(vae_config, VAEConfig) else None)   # 2.2 VAE: its files
    if c.dit_low is not None:
        boundary = c.boundary or variant.sample.boundary
        if boundary is None:
            raise ValueError("two experts but no boundary: load with a variant (t2v-A14B / i2v-A14B)")
        if boundary != variant.sample.boundary:   # a diffusers folder's own boundary_ratio travels in openwan.json
            variant = variant.replace(sample=variant.sample.replace(boundary=boundary))
    (_write_diffusers if layout == "diffusers" else _write_official)(c, variant, out, stored)
    for folder, expert in c.experts():      # each expert: its own folder, the same layout
        expert.save_pretrained(out / folder, layout=layout)
    write_variant(variant, out)
    return out


def _write_diffusers(c, variant: Variant, out: Path, stored: dict) -> None:
    c.dit.save_pretrained(out / "transformer", layout="diffusers")
    if c.dit_low is not None:
        c.dit_low.save_pretrained(out / "transformer_2", layout="diffusers")
    vae = c.vae.to(stored["vae"]) if stored.get("vae") is not None else c.vae
    vae.save_pretrained(out / "vae", layout="diffusers")
    c.text_encoder.save_pretrained(out, layout="diffusers", dtype=stored.get("text_encoder"))
    transformer = ["diffusers", json.loads((out / "transformer" / "config.json").read_text())["_class_name"]]
    index = {"_class_name": pipeline_class(variant.task), "_diffusers_version": DIFFUSERS_VERSION,
             "scheduler": ["diffusers", "UniPCMultistepScheduler"],
             "text_encoder": ["transformers", _architecture(out / "text_encoder", "UMT5EncoderModel")],
             "tokenizer": ["transformers", _tokenizer_class(out / "tokenizer")],
             "transformer": transformer, "vae": ["diffusers", "AutoencoderKLWan"]}
    if c.dit_low is not None:            # Wan 2.2 A14B: diffusers' transformer_2 + boundary_ratio
        index.update(transformer_2=transformer, boundary_ratio=variant.sample.boundary, expand_timesteps=False)
    if c.dit.config.model_type == "ti2v":
        index.update(expand_timesteps=True)
    if c.image_encoder is not None:
        c.image_encoder.save_pretrained(out, layout="diffusers", dtype=stored.get("image_encoder"))
        write_json(image_processor_config(c.image_encoder.config.image_size),
                   out / "image_processor" / "preprocessor_config.json")
        index["image_encoder"] = ["transformers", _architecture(out / "image_encoder", "CLIPVisionModel")]
        index["image_processor"] = ["transformers", "CLIPImageProcessor"]
    elif index["_class_name"] == "WanImageToVideoPipeline":     # I2V-A14B: no CLIP (as diffusers writes None)
        index.update(image_encoder=[None, None], image_processor=[None, None])
    write_json(scheduler_config(variant.sample.shift), out / "scheduler" / "scheduler_config.json")
    write_json(index, out / "model_index.json")


def _write_official(c, variant: Variant, out: Path, stored: dict) -> None:
    if c.dit_low is None:
        c.dit.save_pretrained(out, layout="official")
    else:                                # Wan 2.2 A14B (the boundary travels in openwan.json)
        from openwan.checkpoints import EXPERT_DIRS
        for dit, d in zip((c.dit, c.dit_low), EXPERT_DIRS):
            dit.save_pretrained(out / d, layout="official")
    vae = c.vae.to(stored["vae"]) if stored.get("vae") is not None else c.vae
    vae.save_pretrained(out, layout="official")
    c.text_encoder.save_pretrained(out, layout="official", dtype=stored.get("text_encoder"))
    if c.image_encoder is not None:
        c.image_encoder.save_pretrained(out, layout="official", dtype=stored.get("image_encoder"))


def _adopt_text_len(c, variant: Variant) -> None:
    """diffusers configs have no text length (its pipeline takes max_sequence_length per call): take it from
    the variant record when that is the only difference, so a converted demo (text_len 32) stays itself."""
    for model, want in ((c.dit, variant.dit), (c.text_encoder, variant.text_encoder)):
        have = getattr(model, "config", None)
        if want is None or have is None or type(have) is not type(want) or have.text_len == want.text_len:
            continue
        if have.replace(text_len=want.text_len) == want:
            model.config = want


def _architecture(folder: Path, default: str) -> str:
    try:
        return json.loads((folder / "config.json").read_text()).get("architectures", [default])[0]
    except (OSError, json.JSONDecodeError, IndexError):
        return default


def _tokenizer_class(folder: Path) -> str:
    try:
        return json.loads((folder / "tokenizer_config.json").read_text()).get("tokenizer_class") or "T5TokenizerFast"
    except (OSError, json.JSONDecodeError):
        return "T5TokenizerFast"


# ----------------------------------------------------------------------------- stored dtypes

def _stored_dtypes(src: Path) -> dict:
    """The dtype each component's weights are stored in (None when mixed or not found)."""
    diffusers = (src / "model_index.json").exists() or (src / "transformer").is_dir()
    if diffusers:
        where = {"dit": [*(src / "transformer").glob("*.safetensors"), *(src / "transformer_2").glob("*.safetensors")],
                 "vae": list((src / "vae").glob("*.safetensors")),
                 "text_encoder": list((src / "text_encoder").glob("*.safetensors")),
                 "image_encoder": list((src / "image_encoder").glob("*.safetensors"))}
    else:
        t5, clip = OFFICIAL_FILES["t5"], OFFICIAL_FILES["clip"]
        where = {"dit": [*src.glob("diffusion_pytorch_model*.safetensors"),
                         *src.glob("*_noise_model/diffusion_pytorch_model*.safetensors")],   # Wan 2.2 A14B
                 "vae": [src / f"Wan2.{v}_VAE.{ext}" for v in (1, 2) for ext in ("pth", "safetensors")],
                 "text_encoder": [src / t5, src / t5.replace(".pth", ".safetensors")],
                 "image_encoder": [src / clip]}
    return {k: _files_dtype([f for f in files if f.is_file()]) for k, files in where.items()}


def _files_dtype(files) -> Optional[torch.dtype]:
    seen = set()
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(f), "pt") as fh:
                seen |= {_ST_DTYPES.get(fh.get_slice(k).get_dtype()) for k in fh.keys()}
        else:
            sd = torch.load(str(f), map_location="cpu", weights_only=True, mmap=True)
            sd = sd.get("state_dict", sd) if isinstance(sd, dict) else {}
            seen |= {v.dtype for v in sd.values() if torch.is_tensor(v) and v.is_floating_point()}
    seen.discard(None)
    return seen.pop() if len(seen) == 1 else None
