"""Generation pipelines, each a thin composition of the components and a solver.

    pipe = openwan.load_pipeline("path/to/Wan2.1-T2V-1.3B")      # or "demo", or a diffusers folder
    video = pipe("a red circle moving to the right", seed=0).frames[0]   # [F, H, W, 3] uint8
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Union

import torch

from openwan.pipelines.base import (
    Components,
    GenerationOutput,
    WanPipeline,
    load_components,
)
from openwan.pipelines.flf2v import FirstLastFrameToVideo
from openwan.pipelines.i2v import ImageToVideo
from openwan.pipelines.moe import ImageToVideoA14B, TextToVideoA14B, moe_pipeline
from openwan.pipelines.t2v import TextToImage, TextToVideo
from openwan.pipelines.ti2v import TextImageToVideo
from openwan.pipelines.v2v import VideoToVideo
from openwan.pipelines.vace import VACE

PIPELINES = {"t2v": TextToVideo, "t2i": TextToImage, "i2v": ImageToVideo, "flf2v": FirstLastFrameToVideo,
             "vace": VACE, "v2v": VideoToVideo, "ti2v": TextImageToVideo}
# Wan 2.2 task names (the reference's): the task and the variant whose defaults they take
WAN22_TASKS = {"t2v-A14B": "t2v", "i2v-A14B": "i2v", "ti2v-5B": "ti2v"}


def _task_pipeline(task: str, two_experts: bool = False):
    if task not in PIPELINES:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join([*PIPELINES, *WAN22_TASKS])}")
    return moe_pipeline(task) if two_experts else PIPELINES[task]


def load_pipeline(ckpt: Union[str, Path, None] = "demo", task: Optional[str] = None, *, variant=None,
                  device=None, dtype: Union[None, str, torch.dtype] = None, offload: str = "none",
                  t5_cpu: bool = False, progress: bool = True, threads: Optional[int] = None,
                  lora=None, compile: bool = False, experts: str = "one", quantize: Optional[str] = None,
                  block_swap: Optional[int] = None, dit=None) -> WanPipeline:
    """Load a pipeline from a checkpoint directory (official or diffusers layout), "demo", or a distilled demo
    variant ("demo-4step": the demo checkpoint with the student's DiT weights and sampling preset).

    ``task`` defaults to the checkpoint's own (t2v for T2V/VACE weights without VACE inputs is also
    fine: pass task="t2v"); a TI2V-style DiT (TI2V-5B, the demo's TI2V model) does t2v, i2v and flf2v in its
    own pipeline (``TextImageToVideo``: ``image=``, ``first_frame=`` / ``last_frame=``), v2v with task="v2v". ``variant`` names a published variant to take the defaults from when
    the checkpoint is not recognised automatically. ``dtype``: None (fp32 on CPU, bf16 on CUDA), "auto"
    (bf16 where the device multiplies it fast: CUDA, AMX CPUs), "fp32", "bf16" or a torch dtype.
    ``threads``: torch's CPU threads; None applies the policy of :mod:`openwan.runtime` (one thread for a
    model whose forward pass is small, like the demo's; torch's default otherwise; ``OPENWAN_THREADS``
    overrides). ``lora``: adapters for every call that does not name its own (see ``pipe(..., lora=)``).
    ``compile``: torch.compile the DiT (its forward traces as one graph; the first call pays the compile).
    ``quantize``: "int8" / "fp8" weight-only DiT (openwan.quant; applied shard by shard while loading; a .gguf
    DiT in the folder loads too). ``offload``: "none", "sequential" (True/False: the reference's) or
    "blocks[:N]": keep N DiT blocks on the device (default 2) and stream the rest from CPU memory for each
    forward (openwan.offload), the text encoder, image encoder and VAE on the device only while they run
    (``block_swap=N`` is the same as offload="blocks:N").
    ``dit``: DiT weights to use in place of the checkpoint's (a folder or a .safetensors file of the same
    architecture: a full fine-tune, e.g. ``openwan train``'s final/); recorded in every call's settings. Or a
    DiT already built (a ``WanModel`` of the checkpoint's architecture, e.g. the model being trained): used as
    it is, the checkpoint's DiT weights never read (diffusers' ``transformer=``).
    Wan 2.2: task "t2v-A14B", "i2v-A14B" or "ti2v-5B" (or
    the plain task of such a checkpoint); a two-expert folder gives a two-expert pipeline, ``experts``
    its memory plan ("one": only the active expert on the device; "both").
    """
    from openwan.demo import DEMO_STUDENTS
    student = None
    if ckpt is not None and str(ckpt) in DEMO_STUDENTS:      # a distilled demo variant: demo + its DiT weights
        from openwan.demo import demo_student_weights
        student, variant, ckpt = demo_student_weights(str(ckpt)), str(ckpt), "demo"
    if task in WAN22_TASKS:
        task, variant = WAN22_TASKS[task], variant or task
    if ckpt is None or str(ckpt) == "demo":
        from openwan.demo import demo_checkpoint_dir
        ckpt, variant = demo_checkpoint_dir(), variant or "demo"
    t0 = time.perf_counter()
    from openwan.offload import parse_offload_spec, resident_blocks
    mode, _ = parse_offload_spec(offload)
    if mode == "auto":
        raise ValueError("offload='auto' is resolved before loading: openwan.plan.plan(task, size, frame_num, "
                         "device_memory) gives the settings (the CLI and `openwan serve` do this)")
    if block_swap is not None:
        if mode not in ("none", "blocks"):
            raise ValueError("block_swap streams the DiT's blocks itself: use it with offload='none'")
        mode, offload = "blocks", f"blocks:{block_swap}"
    from openwan.pipelines.components import resolve_device
    target = resolve_device(device or None)
    if student is not None and quantize not in (None, "none"):
        raise ValueError(f"{variant} with quantize: quantize the student's own checkpoint instead")
    # a student: its own DiT (its variant's config) and VAE statistics, the demo folder's VAE and text encoder
    comps = load_components(ckpt, variant=variant, device=target, dtype=dtype, t5_cpu=t5_cpu, quantize=quantize,
                            stage="cpu" if mode == "blocks" else None,   # streamed: everything starts on the CPU
                            release_low=experts == "one" and target.type == "cpu" and mode != "blocks",
                            dit_weights=student, dit=dit)
    if mode == "blocks":        # N checked against the loaded DiT's blocks; VAE and encoders visit the device
        comps.dit_sources = ()                           # streamed blocks: the experts stay loaded
        from openwan.offload import enable_block_swap
        n = resident_blocks(offload, comps.dit.config.num_layers)
        for model in ([comps.dit] if comps.dit_low is None else [comps.dit, comps.dit_low]):
            enable_block_swap(model, n, target)
    task = task or comps.variant.task
    if task in ("t2v", "i2v") and comps.variant.name.endswith("-A14B") and comps.dit_low is None:
        raise ValueError(f"{comps.variant.name} needs two experts (high_noise_model/ and low_noise_model/, or "
                         f"diffusers transformer/ and transformer_2/); {ckpt} holds one DiT")
    if comps.dit_low is None:                       # a TI2V DiT does t2v / i2v / flf2v in its own pipeline
        from openwan.pipelines.routing import pipeline_task
        task = pipeline_task(task, comps.dit.config.model_type)
    cls = _task_pipeline(task, comps.dit_low is not None)
    kw = {"experts": experts} if comps.dit_low is not None else {}
    pipe = cls(comps, offload=mode, progress=progress, **kw)
    pipe.load_seconds = time.perf_counter() - t0      # recorded as stats["load"] in every call's settings
    _apply_threads(pipe, threads)
    if compile:
        pipe.dit.compile()
    if lora is not None:
        pipe._call_options({"lora": lora})
    return pipe


def _apply_threads(pipe: WanPipeline, threads: Optional[int]) -> int:
    """Threads by the work of one DiT forward at the variant's default size (openwan.runtime's policy)."""
    import math

    from openwan import runtime
    from openwan.plan import latent_grid
    d, vae = pipe.defaults(), pipe.vae
    tokens = math.prod(latent_grid(d.size, d.frame_num, pipe.dit.config.patch_size,
                                   (vae.temporal_ratio, vae.spatial_ratio, vae.spatial_ratio)))
    params = sum(p.numel() for p in pipe.dit.parameters())
    return runtime.apply_threads(runtime.forward_flops(params, tokens), threads)


__all__ = ["load_pipeline", "load_components", "Components", "GenerationOutput", "WanPipeline", "TextToVideo",
           "TextToImage", "ImageToVideo", "FirstLastFrameToVideo", "VACE", "VideoToVideo", "PIPELINES",
           "TextToVideoA14B", "ImageToVideoA14B", "TextImageToVideo", "WAN22_TASKS"]
