"""Stage 4 of the demo recipe (:mod:`openwan.demo.train`): the trained DiT, VAE and text encoder -> the shipped
checkpoint folder (official layout, fp16), or, for the next demo (``DEMO_V2_DIT``), a candidate folder that
carries its variant (``openwan.json``) so the benchmark and ``openwan generate --ckpt_dir`` run it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import torch

from openwan.demo import DEMO_DIR, DEMO_DIT, DEMO_VAE
from openwan.demo.latents import load_trained_vae, log, make_text_encoder


def trained_dit_weights(work_dir: Path) -> Path:
    """The DiT to ship: the Trainer's final EMA weights (else final raw weights), unless a checkpoint is newer
    than them (a run resumed for more steps and stopped before its end leaves the previous run's final
    folders behind): then the newest checkpoint's EMA (or raw) weights."""
    root = work_dir / "dit"
    done = sorted(p for p in (root / "checkpoints").glob("step-*") if (p / "state.json").exists())
    newest = (done[-1] / "state.json").stat().st_mtime if done else float("-inf")
    for name in ("final_ema", "final"):
        cfg = root / name / "config.json"
        if cfg.exists() and cfg.stat().st_mtime >= newest:
            return root / name
    if not done:
        raise FileNotFoundError(f"no trained DiT under {root}: run `python -m openwan.demo.train --stage dit` first")
    ema = done[-1] / "ema.safetensors"
    return ema if ema.exists() else done[-1] / "model.safetensors"


def export(work_dir: Path, export_dir: Path = DEMO_DIR, dit_path: Optional[Path] = None) -> Path:
    """Write the shipped checkpoint: official layout (config.json + diffusion_pytorch_model.safetensors,
    Wan2.1_VAE + vae_config.json, models_t5_umt5-xxl-enc-bf16 + t5_config.json, google/umt5-xxl/), every
    tensor in half precision. The folder is built beside the target and swapped in, then loaded back with
    strict key checks through ``load_pipeline``."""
    from openwan.checkpoints import CheckpointError
    from openwan.models.dit import WanModel
    export_dir = Path(export_dir)
    dit_path = Path(dit_path) if dit_path is not None else trained_dit_weights(work_dir)
    # A folder carries its config (then it is checked against DEMO_DIT); a bare checkpoint file does not say
    # its head count or text length, so it is loaded as DEMO_DIT (strict keys and shapes).
    # The next demo (DEMO_V2_*, docs/demo.md) exports too, as a candidate: its folder carries its variant
    # (openwan.json: TI2V task, 128x128, 33 frames, the VAE's re-measured mean/std), so `openwan bench demo
    # --ckpt_dir FOLDER` and `openwan generate --ckpt_dir FOLDER` run it before it replaces the shipped one.
    from openwan.configs import DEMO_V2_DIT, DEMO_V2_VARIANT
    has_config = (dit_path / "config.json").is_file()
    if has_config:
        dit = WanModel.from_pretrained(dit_path, dtype=torch.float32)
    else:   # the patch size, from the file's header (the weights are read once, by from_pretrained)
        from safetensors import safe_open
        with safe_open(str(dit_path), "pt") as f:
            patch = (tuple(f.get_slice("patch_embedding.weight").get_shape()[2:])
                     if "patch_embedding.weight" in f.keys() else None)
        dit = WanModel.from_pretrained(dit_path, dtype=torch.float32,
                                       config=DEMO_V2_DIT if patch == DEMO_V2_DIT.patch_size else DEMO_DIT)
    if dit.config not in (DEMO_DIT, DEMO_V2_DIT):
        raise CheckpointError(f"the trained DiT's config is neither DEMO_DIT nor DEMO_V2_DIT: {dit.config}")
    vae = load_trained_vae(work_dir)
    if vae.config.replace(mean=DEMO_VAE.mean, std=DEMO_VAE.std) != DEMO_VAE:
        raise CheckpointError(f"the trained VAE's architecture differs from DEMO_VAE: {vae.config}")
    variant = None
    if dit.config == DEMO_V2_DIT:
        if export_dir.resolve() == DEMO_DIR.resolve():
            raise CheckpointError(f"this DiT is the next demo's (DEMO_V2_DIT); it exports as a candidate, not over "
                                  f"the shipped model in {DEMO_DIR}: pass --export_dir FOLDER, then "
                                  f"`openwan bench demo --ckpt_dir FOLDER` (docs/demo.md)")
        variant = DEMO_V2_VARIANT.replace(vae=vae.config)
    elif (vae.config.mean, vae.config.std) != (DEMO_VAE.mean, DEMO_VAE.std):
        log("note: DEMO_VAE's mean/std in openwan/demo/__init__.py differ from the trained VAE's; copy them:\n"
            f"  mean={vae.config.mean},\n  std={vae.config.std}")
    te = make_text_encoder()
    tmp = export_dir.parent / f".{export_dir.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    dit.half().save_pretrained(tmp)
    vae.half().save_pretrained(tmp)
    te.save_pretrained(tmp, dtype=torch.float16)
    if variant is not None:
        from openwan.variant_io import write_variant
        write_variant(variant, tmp)
    old = export_dir.parent / f".{export_dir.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if export_dir.exists():
        os.replace(export_dir, old)
    os.replace(tmp, export_dir)
    if old.exists():
        shutil.rmtree(old)
    from openwan.pipelines import load_pipeline
    pipe = load_pipeline(export_dir, task=None if variant else "t2v", variant=None if variant else "demo",
                         device="cpu", progress=False)
    size = sum(f.stat().st_size for f in export_dir.rglob("*") if f.is_file())
    log(f"export: {export_dir} ({size / 2 ** 20:.2f} MiB), loads strictly; DiT dtype "
        f"{next(pipe.dit.parameters()).dtype}")
    return export_dir
