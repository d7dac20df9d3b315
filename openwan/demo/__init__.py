"""The embedded default: a small Wan model trained by openwan on a procedural video world.

The same classes and pipeline as the published models; only the config differs. The weights ship
inside the package (``openwan/demo/assets/demo_checkpoint``, official layout, half precision), so
``openwan generate "a red circle moving to the right"`` works on a fresh CPU machine.
"""
from __future__ import annotations

from pathlib import Path

from openwan.configs import (  # noqa: F401 - re-exported
    DEMO_DIT,
    DEMO_SAMPLE,
    DEMO_TEXT_ENCODER,
    DEMO_V1_DIT,
    DEMO_V1_SAMPLE,
    DEMO_V1_VAE,
    DEMO_V1_VARIANT,
    DEMO_VAE,
    DEMO_VARIANT,
    Variant,
)

DEMO_DIR = Path(__file__).resolve().parent / "assets" / "demo_checkpoint"
# The demo's configs are plain data in openwan.configs (DEMO_*: the shipped model, v2, which demo-4step is distilled
# from; DEMO_V1_*: the first one, which the recipe still builds first), kept in sync with the shipped files by
# openwan/demo/train.py's export stage.


def demo_variant() -> Variant:
    return DEMO_VARIANT


def demo_checkpoint_dir() -> Path:
    """The shipped demo checkpoint, with a clear error if this install lacks it."""
    if not (DEMO_DIR / "config.json").exists():
        raise FileNotFoundError(
            f"the embedded demo model is missing from {DEMO_DIR}. Rebuild it with `python -m openwan.demo.train` "
            f"or pass --ckpt_dir with a downloaded Wan 2.1 checkpoint.")
    return DEMO_DIR


# Distilled students of a demo model (docs/distill.md): variant name -> the DiT weights (fp16) in assets/. They
# share the demo checkpoint's VAE weights and text encoder; their DiT config and VAE statistics are their own
# variant's (demo-4step: the demo's own, DEMO_4STEP_VARIANT), whatever the shipped folder's config files say.
DEMO_STUDENTS = {"demo-4step": "demo_4step.safetensors"}


def demo_student_weights(name: str) -> Path:
    """The shipped DiT weights of a distilled demo variant, with a clear error if missing."""
    path = DEMO_DIR.parent / DEMO_STUDENTS[name]
    if not path.exists():
        raise FileNotFoundError(f"the distilled demo weights {path} are missing from this install; rebuild them "
                                f"with the commands in docs/distill.md")
    return path
