"""Which pipeline a request needs, from the checkpoint's own task and the inputs given.

A TI2V-style DiT (model_type "ti2v": Wan 2.2 TI2V-5B, the embedded demo's next model) does text-, image- and
first-last-frame-to-video itself (:class:`~openwan.pipelines.ti2v.TextImageToVideo`), so those tasks asked of it
run there (:func:`pipeline_task`). A command line without ``--task`` picks the pipeline from its inputs
(:func:`route_inputs`): a source video alone is video-to-video (SDEdit) for a text-to-video or TI2V model, and with
a mask (``src_mask``, VACE's inpainting input) masked video-to-video (the white region generated, the rest kept);
reference images go to a TI2V-style model's reference expert where the checkpoint has one (``reference_model/``:
the embedded demo), else, like the context scale, need a VACE model; a picture needs a model that takes pictures;
both refused before anything loads, naming what to use instead.
"""
from __future__ import annotations

from typing import Iterable, Optional

VACE_INPUTS = ("src_mask", "src_ref_images", "context_scale")
VACE_LAYER_INPUTS = ("src_ref_images", "context_scale")   # what only VACE layers read (a mask: masked v2v)
ONE_MODEL_TASKS = ("t2v", "i2v", "flf2v")        # what a TI2V-style model does in its own pipeline


def pipeline_task(task: str, model_type: str) -> str:
    """The pipeline task for ``task`` asked of a DiT of ``model_type``: t2v, i2v and flf2v of a TI2V-style DiT
    run in its own pipeline ("ti2v"); anything else is unchanged."""
    return "ti2v" if model_type == "ti2v" and task in ONE_MODEL_TASKS else task


def is_demo(name: Optional[str]) -> bool:
    return bool(name) and str(name).startswith("demo")


def no_vace_message(name: str, given: Iterable[str] = (), references: bool = False) -> str:
    """Why a model without VACE layers cannot do VACE, and what to use instead (``references``: the model has a
    reference expert, which takes --src_ref_images)."""
    what = f" ({', '.join(given)})" if given else ""
    who = f"the embedded demo model ({name})" if is_demo(name) else name
    return (f"VACE{what} needs a model with VACE layers (a DiT with vace_layers, conditioned on the 96-channel VACE "
            f"context); {who} has none. Use a VACE checkpoint: --task vace-1.3B --ckpt_dir ./Wan2.1-VACE-1.3B (or "
            f"vace-14B); with this model, --src_video FILE --src_mask MASK regenerates the mask's white region "
            f"along the prompt and keeps the rest (masked video-to-video), and --src_video FILE [--strength 0.7] "
            f"re-renders the whole video (task v2v)"
            + ("; --src_ref_images FILE draws the object of a reference picture (its reference expert)" if references
               else ""))


def no_picture_message(name: str, task: str, given: Iterable[str]) -> str:
    """Why a model that takes no pictures refuses them, and what to use instead."""
    flags = ", ".join(f"--{g}" for g in given)
    if is_demo(name):
        return (f"the embedded demo model ({name}) is text-to-video only ({task}), so it does not take {flags}: "
                f"the TI2V-style demo, the embedded default (no --task, or --task demo), takes pictures (docs/demo.md, "
                f"'Every task on the embedded default'); with downloaded weights use --task i2v-14B-480P, flf2v-14B "
                f"or ti2v-5B and --ckpt_dir; --src_video FILE re-renders a video (video-to-video) with this model")
    return (f"the {task} task does not take {flags}: pictures need an image-to-video model (--task i2v-14B-480P, "
            f"i2v-A14B or ti2v-5B for --image; flf2v-14B or ti2v-5B for --first_frame/--last_frame)")


def has_reference_expert(ckpt) -> bool:
    """Whether the checkpoint ("demo" or a folder) has a reference expert (``reference_model/``)."""
    from pathlib import Path

    from openwan.pipelines.components import REFERENCE_DIR
    if ckpt is None or str(ckpt) == "demo":
        from openwan.demo import demo_checkpoint_dir
        ckpt = demo_checkpoint_dir()
    return (Path(ckpt) / REFERENCE_DIR).is_dir()


def route_inputs(own_task: str, name: str, given: Iterable[str], references: bool = False) -> Optional[str]:
    """The pipeline task for a request without an explicit task, from the checkpoint's own task and the input
    names given; None keeps the checkpoint's own. ``references``: the checkpoint has a reference expert (a TI2V
    model then takes ``src_ref_images`` itself). Raises ValueError (naming what to use) for inputs the model
    cannot take."""
    given = list(dict.fromkeys(given))
    if own_task == "vace":
        return None
    if own_task == "ti2v" and references and "src_ref_images" in given:
        others = [g for g in given if g != "src_ref_images"]
        if sorted(others) == ["src_mask", "src_video"]:
            return "v2v"           # the picture's object drawn in the mask's region (VACE's inpainting + reference)
        if others == ["src_video"]:
            raise ValueError("--src_ref_images with --src_video draws the picture's object in a region of the "
                             "video: give --src_mask too (white = where the object goes, black = kept)")
        if others:
            raise ValueError(f"--src_ref_images (reference-to-video with the model's reference expert) takes a "
                             f"prompt and one picture; it does not combine with "
                             f"{', '.join('--' + g for g in others)}")
        return None
    vace = [g for g in given if g in (VACE_LAYER_INPUTS if own_task in ("t2v", "ti2v") else VACE_INPUTS)]
    if vace:
        raise ValueError(no_vace_message(name, [f"--{g}" for g in vace], references and own_task == "ti2v"))
    if "src_mask" in given and "src_video" not in given:
        raise ValueError("--src_mask marks what to regenerate in a source video: give the video too (--src_video "
                         "FILE --src_mask MASK; white = generate, black = keep)")
    pictures = [g for g in given if g in ("image", "first_frame", "last_frame")]
    if "src_video" in given and own_task in ("t2v", "ti2v"):
        if pictures:
            raise ValueError(f"--src_video (video-to-video) and {', '.join('--' + p for p in pictures)} exclude each "
                             f"other: give a source video or pictures")
        return "v2v"
    if pictures and own_task in ("t2v", "t2i"):          # the others say what they take after loading
        raise ValueError(no_picture_message(name, own_task, pictures))
    return None


__all__ = ["pipeline_task", "route_inputs", "has_reference_expert", "no_vace_message", "no_picture_message", "VACE_INPUTS"]
