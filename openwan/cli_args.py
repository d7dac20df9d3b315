"""The arguments of `openwan generate`: the reference generate.py's flags (the ones openwan does not support
only to say what to do instead) and openwan's own. The command itself is :func:`openwan.cli.cmd_generate`."""
from __future__ import annotations

import argparse

from openwan.validate import guide_scale_arg

TASK_ALIASES = {"i2v-14B": "i2v-14B-480P"}
DEMO_NAMES = ("demo", "demo-4step")     # the embedded models: the demo and its distilled 4-step student
SOLVER_CHOICES = ("unipc", "dpm++", "euler", "consistency")   # openwan.sampling.SOLVERS (a test keeps them equal)
GUIDE_METHOD_CHOICES = ("cfg", "cfg-zero-star")   # openwan.denoiser.GUIDE_METHODS (a test keeps them equal)

# Flags of the reference generate.py that openwan accepts only to say what to do instead.
UNSUPPORTED_OFFICIAL_FLAGS = {
    "--t5_fsdp": "the text encoder runs once per prompt and is released under --offload_model sequential; "
                 "keep it off the GPU with --t5_cpu (--dit_fsdp shards the DiT)",
    "--ring_size": "ring attention is not implemented; use --ulysses_size N (DeepSpeed-Ulysses sequence parallel)",
    "--use_prompt_extend": "prompt extension with an LLM (Qwen / DashScope) is not implemented; extend the prompt "
                           "yourself (the embedded demo extends its prompts itself: --prompt_extend world, its "
                           "default)",
    "--prompt_extend_method": "LLM prompt extension is not implemented (see --use_prompt_extend)",
    "--prompt_extend_model": "LLM prompt extension is not implemented (see --use_prompt_extend)",
    "--prompt_extend_target_lang": "LLM prompt extension is not implemented (see --use_prompt_extend)",
}


def offload_choice(value: str) -> str:
    """--offload_model: openwan.offload's parser (the one load_pipeline uses), its canonical spelling."""
    from openwan.offload import format_offload, parse_offload_spec
    try:
        return format_offload(*parse_offload_spec(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid choice {value!r} (choose none, sequential, True, False, "
                                         f"blocks[:N] or auto)") from None


def _flag_value(text) -> bool:
    """A reference-style boolean flag's value: given bare (True) or as true / false."""
    if text is True or str(text).lower() in ("true", "1", "yes"):
        return True
    if str(text).lower() in ("false", "0", "no", "none"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def riflex_value(text):
    """``--long_riflex``'s value: "auto" (or no value) the model's frequency, "off", or the frequency's index."""
    if text is True or str(text).lower() in ("auto", "on"):
        return True
    if str(text).lower() in ("off", "none"):
        return False
    if str(text).isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a frequency index (1, 2, ...), auto or off, got {text!r}")


def generate_parser(sub, func):
    """The `openwan generate` subcommand's arguments (flags of the reference generate.py, and openwan's own);
    ``func`` runs it."""
    p = sub.add_parser("generate", help="generate a video (or image) from a prompt",
                       description="Generate a video. With no --ckpt_dir the embedded demo model is used.")
    p.add_argument("prompt_pos", nargs="?", metavar="PROMPT", help="the prompt (or use --prompt)")
    p.add_argument("--prompt", default=None)
    p.add_argument("--prompt_file", default=None, metavar="FILE",
                   help="a text file of prompts, one per line (blank lines and # comments skipped): one video each, "
                        "the model loaded once, each named from its prompt in outputs/ (or -o DIR); --base_seed: "
                        "the same seed for every prompt (default: a random one each, recorded). A .jsonl file: one "
                        "request per line with its own settings, as openwan serve takes them ({\"prompt\": ..., \"seed\": 3})")
    p.add_argument("--neg_prompt", "--negative_prompt", dest="neg_prompt", default=None,
                   help="negative prompt (default: the reference's)")
    p.add_argument("--task", default=None,
                   help="t2v-1.3B, t2v-14B, t2i-14B, i2v-14B(-480P/-720P), flf2v-14B, vace-1.3B, vace-14B, v2v, "
                        "Wan 2.2: t2v-A14B, i2v-A14B, ti2v-5B; demo; default: the checkpoint's own (demo without "
                        "--ckpt_dir)")
    p.add_argument("--ckpt_dir", default=None, help="checkpoint directory (official or diffusers layout)")
    p.add_argument("--dit", default=None, metavar="PATH",
                   help="DiT weights to use in place of the checkpoint's: a folder or .safetensors file of the same "
                        "architecture (a full fine-tune: openwan train's final/); the rest comes from --ckpt_dir")
    p.add_argument("--size", default=None, help="W*H, e.g. 832*480 (default: the variant's: 1280*720 for the 14B "
                                                "models, 832*480 for 1.3B, 128*128 for the demo)")
    p.add_argument("--frame_num", type=int, default=None,
                   help="number of frames, 4n+1 (default: the variant's: 81; 33 for the demo; past it: --long_method)")
    p.add_argument("--sample_steps", type=int, default=None,
                   help="denoising steps (default: the variant's: 50 for t2v, 40 for i2v, 30 for the demo)")
    p.add_argument("--sample_shift", type=float, default=None,
                   help="noise schedule shift (default: the variant's, e.g. 5.0 for t2v at 480p, 3.0 at 480p i2v)")
    p.add_argument("--sample_guide_scale", type=guide_scale_arg, default=None, metavar="SCALE|LOW,HIGH",
                   help="classifier-free guidance scale, 1 = none (default: the variant's, 5.0 for t2v); Wan 2.2 "
                        "A14B: one value for both experts or LOW,HIGH (low-noise, high-noise expert; 3.0,4.0 for "
                        "t2v-A14B); one-DiT models: LOW,HIGH with --guide_boundary is a guidance interval")
    p.add_argument("--guide_method", choices=GUIDE_METHOD_CHOICES, default=None,
                   help="how a guided step combines its two passes: cfg (classifier-free guidance, the default) or "
                        "cfg-zero-star (CFG-Zero*: the unconditional velocity scaled by its projection first, and "
                        "zero velocity on the first step from pure noise)")
    p.add_argument("--guide_boundary", type=float, default=None, metavar="B",
                   help="with --sample_guide_scale LOW,HIGH on a one-DiT model: HIGH guides the steps whose "
                        "timestep t >= B x 1000 (the high-noise ones), LOW the rest (a guidance interval; LOW 1 "
                        "skips the uncond pass there). B in (0, 1); default: the variant's")
    p.add_argument("--sample_solver", choices=SOLVER_CHOICES, default=None,
                   help="flow-matching solver (default: unipc, the reference's)")
    p.add_argument("--base_seed", "--seed", dest="base_seed", type=int, default=None,
                   help="random seed (default, or -1: a random one, recorded in the settings)")
    p.add_argument("--offload_model", type=offload_choice, default="none",
                   metavar="{none,sequential,True,False,blocks[:N],auto}",
                   help="memory plan. sequential (= the reference's True): release the text encoder after use and "
                        "move the DiT off the GPU before decoding; blocks[:N]: keep N DiT blocks (default 2) on the "
                        "device and stream the rest from CPU memory; auto: the cheapest plan that fits the device "
                        "(openwan plan); none (= False, default): keep everything resident")
    p.add_argument("--quantize", choices=["none", "int8", "fp8"], default=None,
                   help="weight-only quantized DiT (per-output-channel scales, computed in the compute dtype), "
                        "applied shard by shard while loading: int8 halves bf16's weight memory (default none)")
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"], default=None,
                   help="DiT compute dtype. auto (default): bf16 where the device multiplies it fast (CUDA, CPUs "
                        "with AMX) and the model is big enough to gain, fp32 elsewhere; the choice is printed")
    p.add_argument("--step_cache", nargs="?", const="default", default=None, metavar="NAME[:THRESHOLD]",
                   help="skip DiT work whose output can be predicted: the bare flag = the recommended method and "
                        "threshold (docs/performance.md); NAME[:THRESHOLD[:WARMUP]] picks one of easycache, teacache, "
                        "magcache, fbcache, plan (e.g. magcache:0.12); none computes every step. Default: the model's "
                        "(the embedded demo: plan:0.5 at its default 30 steps; published models: none)")
    p.add_argument("--lora", action="append", default=None, metavar="FILE[:STRENGTH]",
                   help="a LoRA file (any format openwan reads: diffusers, ComfyUI, musubi, LightX2V distill) "
                        "applied unmerged at STRENGTH (default 1.0); repeat for several; Wan 2.2 A14B: high:FILE / "
                        "low:FILE for one expert")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the DiT (pays off over many steps or videos; the first step compiles)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of the written video, in (0, 240] (default: the variant's)")
    p.add_argument("--tile", type=int, nargs="?", const=256, default=None, metavar="PIXELS",
                   help="decode with the VAE in overlapping spatial tiles of this size (default 256): bounded "
                        "decode memory for large frames, seams blended (not bit-identical to untiled)")
    p.add_argument("--long_method", choices=["windows", "continue", "rolling", "none"], default=None,
                   help="--frame_num past the model's native length (81; the demo's 33): windows (overlapping "
                        "windows denoised together, one trajectory), continue (window after window, each "
                        "continuing the last one's latent frames), rolling (after the first window, frames on a "
                        "ladder of noise levels, one finished at a time: no seams; TI2V models trained for it, "
                        "the demo) or none (one pass over every frame). Default: the model's (the demo: continue; "
                        "published models: windows). A prompt 'A | B' spreads its parts over the windows")
    p.add_argument("--long_overlap", type=int, default=None, metavar="LATENT_FRAMES",
                   help="latent frames shared by neighbouring windows, at least 1 (default: the model's for its "
                        "default method, the demo's continue: 2; else half a window)")
    p.add_argument("--long_expert", choices=["on", "off"], default=None,
                   help="with --long_method continue: run the windows after the first on the checkpoint's "
                        "continuation expert (its continuation_model/ folder; the demo has one); with rolling, the "
                        "ladder on its rolling expert (rolling_model/). Default: on where there is one")
    p.add_argument("--prompt_extend", choices=["world", "off"], default=None,
                   help="rewrite the prompt into the wording the model was trained on before encoding it: world "
                        "(the embedded demo's: the demo world's parser reads the objects, in any wording it knows, "
                        "and writes its canonical caption). Default: the model's (the demo: world; others: off)")
    p.add_argument("--two_objects", choices=["compose", "expert"], default=None,
                   help="how the embedded demo draws a prompt naming two objects (up to 4): compose (the default: "
                        "each object its own run of the main DiT, laid out apart and merged; docs/demo.md) or expert "
                        "(its two-object expert, one run)")
    p.add_argument("--long_context_noise", type=float, default=None, metavar="SIGMA",
                   help="with --long_method continue on a TI2V model: give each window the frames it carries over "
                        "at noise level SIGMA (0-1), their timestep saying so (Diffusion Forcing). Default: the "
                        "continuation expert's own level when it runs, else 0")
    p.add_argument("--long_refine", type=float, default=None, metavar="SIGMA",
                   help="with --long_method continue or rolling: afterwards noise the whole latent to SIGMA (0-1) "
                        "and denoise it again with the windows method, so every seam is redrawn inside a window "
                        "(0: off). Default: the model's (the demo: 0.85; others: 0)")
    p.add_argument("--long_riflex", nargs="?", const=True, default=None, metavar="K", type=riflex_value,
                   help="with --long_method none (one DiT call over every frame): RIFLEx on the DiT's RoPE, the frame "
                        "axis's frequency K lowered to stay within one period over the whole video; without K the "
                        "model's own (Wan: 6; the demo: 2). Off by default")
    for flag, why in UNSUPPORTED_OFFICIAL_FLAGS.items():
        p.add_argument(flag, default=None, nargs="?", const=True, help=argparse.SUPPRESS)
    p.add_argument("--convert_model_dtype", nargs="?", const=True, default=None, type=_flag_value,
                   help="the reference's (Wan 2.2): the models in bf16, as its config's param_dtype; the same as "
                        "--dtype bf16 (an explicit --dtype wins)")
    p.add_argument("--t5_cpu", action="store_true", help="run the text encoder on the CPU")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--ulysses_size", type=int, default=None,
                   help="sequence parallel over this many processes (= torchrun --nproc_per_node; one GPU each): "
                        "torchrun --nproc_per_node 2 -m openwan.cli generate ... --ulysses_size 2")
    p.add_argument("--dit_fsdp", action="store_true",
                   help="under torchrun: shard the DiT's weights over the processes (FSDP2), ~1/N of them each")
    p.add_argument("--window_parallel", action="store_true",
                   help="under torchrun: share a long video's windows over the processes, each running whole "
                        "windows on its own DiT (the windows method and the continue method's refinement pass): "
                        "torchrun --nproc_per_node 2 -m openwan.cli generate ... --frame_num 321 --window_parallel")
    p.add_argument("--cfg_parallel", action="store_true",
                   help="under torchrun with 2 processes: one runs the prompt's pass of classifier-free guidance, the "
                        "other the negative prompt's, each on its own DiT: torchrun --nproc_per_node 2 -m openwan.cli "
                        "generate ... --cfg_parallel")
    p.add_argument("--save_file", "--output", "-o", dest="save_file", default=None, help="output file: .mp4 (a video) or .png (one frame, with --frame_num 1); default outputs/<task>_<prompt>_<time>")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--from", dest="from_json", default=None, help="reproduce a run from its .json (or .mp4)")
    p.add_argument("--image", default=None, help="i2v / ti2v: the first frame")
    p.add_argument("--first_frame", default=None, help="flf2v / ti2v: the first frame")
    p.add_argument("--last_frame", default=None, help="flf2v / ti2v: the last frame")
    p.add_argument("--src_video", default=None,
                   help="vace / v2v: source video (without --task, alone on a t2v or ti2v model: v2v)")
    p.add_argument("--extend", default=None, metavar="VIDEO",
                   help="continue this video: --frame_num is the whole length, its frames included (default: one "
                        "native length more), kept as they are; t2v / ti2v carry its latents, i2v / flf2v start from "
                        "its last frame (instead of --image / --first_frame), vace keeps its last frames (instead of "
                        "--src_video / --src_mask); without a prompt, the one its openwan record holds "
                        "(docs/long_video.md)")
    p.add_argument("--src_mask", default=None, help="mask video or image (white = generate, black = keep): VACE's; "
                        "with a T2V/TI2V model (the demo) masked video-to-video of --src_video")
    p.add_argument("--src_ref_images", default=None, help="vace: reference images, comma separated; the "
                   "embedded demo: one picture of an object, drawn by its reference expert doing what the prompt says")
    p.add_argument("--context_scale", type=float, default=None, help="vace: strength of the control")
    p.add_argument("--strength", type=float, default=None, help="v2v: noise strength in (0, 1]")
    p.add_argument("--src_fps", type=float, default=None,
                   help="vace / v2v: resample a source video file to this frame rate first (default: the "
                        "model's, 16 for Wan, 8 for the demo; 0 uses every frame)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: 1 for the embedded demo model, which runs fastest on "
                        "one thread and is not slowed by other busy processes; torch's default otherwise)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=func)
