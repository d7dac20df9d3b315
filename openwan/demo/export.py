"""Stage 4 of the demo recipe (:mod:`openwan.demo.train`): the trained DiT, VAE and text encoder -> a checkpoint
folder (official layout, fp16) that carries its variant (``openwan.json``): the shipped model's (``DEMO_DIT``, v2)
into the package, or any demo DiT (v1's ``DEMO_V1_DIT``, a v2 candidate) into a folder of its own, which
``openwan bench demo --ckpt_dir`` and ``openwan generate --ckpt_dir`` then run with its own defaults."""
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


def load_demo_dit(path: Path):
    """A demo DiT in fp32 from a folder (with its config: v1's or v2's) or a bare checkpoint file (which does not
    say its head count or text length: loaded as the version its patch embedding's shape says; strict keys)."""
    from safetensors import safe_open

    from openwan.configs import DEMO_V1_DIT, DEMO_V2_DIT
    from openwan.demo.grow import block_count
    from openwan.models.dit import WanModel
    if (path / "config.json").is_file():
        return WanModel.from_pretrained(path, dtype=torch.float32)
    # the patch size and depth, from the file's header (weights read once, below)
    with safe_open(str(path), "pt") as f:
        patch = (tuple(f.get_slice("patch_embedding.weight").get_shape()[2:])
                 if "patch_embedding.weight" in f.keys() else None)
        layers = block_count(dict.fromkeys(f.keys()))
    config = DEMO_V2_DIT if patch == DEMO_V2_DIT.patch_size else DEMO_V1_DIT
    if layers and layers != config.num_layers:      # a deeper expert (grow.deepen)
        config = config.replace(num_layers=layers)
    return WanModel.from_pretrained(path, dtype=torch.float32, config=config)


def export(work_dir: Path, export_dir: Path = DEMO_DIR, dit_path: Optional[Path] = None,
           continuation: Optional[Path] = None, reference: Optional[Path] = None,
           two_objects: Optional[Path] = None, rolling: Optional[Path] = None) -> Path:
    """Write a checkpoint folder: official layout (config.json + diffusion_pytorch_model.safetensors, Wan2.1_VAE +
    vae_config.json, models_t5_umt5-xxl-enc-bf16 + t5_config.json, google/umt5-xxl/, openwan.json), every tensor in
    half precision. The DiT is v1's (``DEMO_V1_DIT``) or v2's (``DEMO_V2_DIT``), the variant written its version's
    with the trained VAE's latent mean/std. Only the shipped model's DiT (``DEMO_DIT``) goes into the package
    (``DEMO_DIR``); anything else is refused there before anything is written. The folder is built beside the
    target and swapped in, then loaded back with strict key checks through ``load_pipeline``. Into the package,
    the step caches' calibration of the new DiT is written too (:func:`ship_calibration`). ``continuation``: a
    continuation expert's weights (the same DiT fine-tuned on continuing a video), written as the folder's
    ``continuation_model/``, run on the later windows of a ``continue`` long video. ``reference``: a reference
    expert's weights (the DiT fine-tuned on drawing a reference picture's object), the folder's ``reference_model/``,
    run when a call gives ``src_ref_images``. ``two_objects``: a two-object expert's weights (the DiT fine-tuned on
    scenes of two objects), the folder's ``two_object_model/``, run when a prompt names two objects. ``rolling``: a
    rolling expert's weights (the DiT fine-tuned on frames at a ladder of noise levels), the folder's
    ``rolling_model/``, run on the ladder of a ``rolling`` long video."""
    from openwan.checkpoints import CheckpointError
    from openwan.configs import (
        DEMO_V1_DIT,
        DEMO_V1_VARIANT,
        DEMO_V2_DIT,
        DEMO_V2_VARIANT,
    )
    from openwan.pipelines.components import EXPERTS, expert_mismatch
    export_dir = Path(export_dir)
    dit_path = Path(dit_path) if dit_path is not None else trained_dit_weights(work_dir)
    versions = {DEMO_V1_DIT: DEMO_V1_VARIANT, DEMO_V2_DIT: DEMO_V2_VARIANT}
    dit = load_demo_dit(dit_path)
    experts = {}
    given = {"continuation": continuation, "reference": reference, "two-object": two_objects, "rolling": rolling}
    for what, folder, _ in EXPERTS:
        weights = given[what]
        if weights is None:
            continue
        expert = experts[folder] = load_demo_dit(Path(weights))
        differ = expert_mismatch(dit.config, expert.config)
        if differ:
            raise CheckpointError(f"the {what} expert {weights} takes other inputs than the main DiT ({differ}): an "
                                  f"expert may differ in depth and width only")
    if dit.config not in versions:
        raise CheckpointError(f"the trained DiT's config is neither DEMO_V1_DIT nor DEMO_V2_DIT: {dit.config}")
    if export_dir.resolve() == DEMO_DIR.resolve() and dit.config != DEMO_DIT:
        raise CheckpointError(f"the package ships DEMO_DIT ({DEMO_DIT.model_type}, patch {DEMO_DIT.patch_size}); this "
                              f"DiT is {dit.config.model_type} with patch {dit.config.patch_size}: export it to a "
                              f"folder of its own with --export_dir FOLDER (docs/demo.md)")
    vae = load_trained_vae(work_dir)
    if vae.config.replace(mean=DEMO_VAE.mean, std=DEMO_VAE.std) != DEMO_VAE:
        raise CheckpointError(f"the trained VAE's architecture differs from DEMO_VAE: {vae.config}")
    version = versions[dit.config]
    if (vae.config.mean, vae.config.std) != (version.vae.mean, version.vae.std):
        name = "DEMO_V2_VAE" if version is DEMO_V2_VARIANT else "DEMO_V1_VAE"
        log(f"note: {name}'s mean/std in openwan/configs.py differ from the trained VAE's (written to the folder); "
            f"if this model ships, copy them:\n  mean={vae.config.mean},\n  std={vae.config.std}")
    variant = version.replace(vae=vae.config)
    package = export_dir.resolve() == DEMO_DIR.resolve()
    replaced = _model_key(export_dir) if package else None
    te = make_text_encoder()
    tmp = export_dir.parent / f".{export_dir.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    dit.half().save_pretrained(tmp)
    for folder, expert in experts.items():
        expert.half().save_pretrained(tmp / folder)
    vae.half().save_pretrained(tmp)
    te.save_pretrained(tmp, dtype=torch.float16)
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
    pipe = load_pipeline(export_dir, device="cpu", progress=False)
    size = sum(f.stat().st_size for f in export_dir.rglob("*") if f.is_file())
    d = pipe.defaults()
    log(f"export: {export_dir} ({size / 2 ** 20:.2f} MiB), loads strictly; task {pipe.task}, {d.size} x "
        f"{d.frame_num} frames at {d.fps} fps; DiT dtype {next(pipe.dit.parameters()).dtype}"
        + "".join(f"; with a {what} expert" for what, _, field in EXPERTS if getattr(pipe.c, field) is not None))
    if package:
        log(f"export: step-cache calibration {ship_calibration(pipe, replaced)}")
    return export_dir


CALIBRATION_PROMPTS, CALIBRATION_STEPS = 3, None      # None: the model's own steps


def _model_key(folder: Path) -> Optional[str]:
    """The step-cache calibration key of the DiT in ``folder`` (None when there is none)."""
    if not (folder / "config.json").is_file():
        return None
    from openwan.caches import store
    from openwan.models.dit import WanModel
    return store.model_key(WanModel.from_pretrained(folder, dtype=torch.float32))


def ship_calibration(pipe, replaced: Optional[str] = None) -> Path:
    """The step caches' calibration (MagCache's ratios, TeaCache's polynomial) of the shipped demo's DiT, as
    ``python -m openwan.caches calibrate --model demo --out openwan/caches/calibration`` computes it (uncached
    runs of the first benchmark prompts), into the package's calibration folder; the file of the DiT it replaces
    (``replaced``: its key) is removed. Returns the file."""
    from openwan.caches import store
    from openwan.caches.calibration import calibrate
    from openwan.demo import world
    prompts = [b.prompt for b in world.benchmark_prompts()][:CALIBRATION_PROMPTS]
    with torch.inference_mode():
        (key, cal), = calibrate(pipe, prompts, CALIBRATION_STEPS).items()
    path = store.save_calibration(dict(cal, command="python -m openwan.demo.train --stage export"),
                                  store.PACKAGE_DIR)
    if replaced is not None and replaced != key:
        (store.PACKAGE_DIR / f"{replaced}.json").unlink(missing_ok=True)
    return path
