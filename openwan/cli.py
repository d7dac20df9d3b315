"""The `openwan` command: generate | train | cache-latents | convert | bench.

    openwan generate "a red circle moving to the right"            # the embedded demo model
    openwan generate --task t2v-1.3B --ckpt_dir ./Wan2.1-T2V-1.3B --size 832*480 --prompt "..."
    openwan generate --from outputs/video.json                     # reproduce an earlier run
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Optional

from openwan.cli_args import DEMO_NAMES, TASK_ALIASES, UNSUPPORTED_OFFICIAL_FLAGS, generate_parser, offload_choice
from openwan.cli_record import apply_record, load_record


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def _slug(text: str, n: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:n]
    return s or "video"


# How the CLI names the arguments it validates (for the messages).
CLI_NAMES = {"prompt": "the prompt", "negative_prompt": "--neg_prompt", "size": "--size", "frame_num": "--frame_num",
             "sample_steps": "--sample_steps", "sample_shift": "--sample_shift",
             "guide_scale": "--sample_guide_scale", "sample_solver": "--sample_solver", "seed": "--seed",
             "strength": "--strength", "context_scale": "--context_scale", "src_fps": "--src_fps",
             "threads": "--threads"}


def _check_args(a, prompt: Optional[str]) -> None:
    """Every value checked (openwan.validate) before a model is loaded (``prompt`` None: a prompt file's, line by
    line)."""
    from openwan import validate
    validate.generation_args(names=CLI_NAMES, prompt=prompt, negative_prompt=a.neg_prompt, size=a.size,
                             frame_num=a.frame_num, sample_steps=a.sample_steps, sample_shift=a.sample_shift,
                             guide_scale=a.sample_guide_scale, sample_solver=a.sample_solver, seed=a.base_seed,
                             strength=a.strength, context_scale=a.context_scale, src_fps=a.src_fps, threads=a.threads)
    if a.save_file is not None:
        validate.output_path(a.save_file, "--output", overwrite=a.overwrite)
    if a.device is not None:
        validate.device(a.device, "--device")


def cmd_generate(a) -> int:
    from openwan.configs import VARIANTS, WAN22_VARIANTS, not_implemented
    from openwan.pipelines.base import lookup_variant as get_variant
    if a.from_json:
        apply_record(a, load_record(a.from_json))
    for flag, why in UNSUPPORTED_OFFICIAL_FLAGS.items():
        value = getattr(a, flag.lstrip("-"), None)
        if value is not None and str(value).lower() not in ("false", "0", "none"):
            raise CLIError(f"{flag} (from the reference generate.py) is not supported: {why}")
    if a.convert_model_dtype and a.dtype is None:     # the reference's flag: its models in bf16 (param_dtype)
        a.dtype = "bf16"
    if a.lora is not None and a.lora and isinstance(a.lora[0], dict):   # from a --from settings record
        a.lora = [(f"{d['expert']}:" if d.get("expert") else "") + f"{d['path']}:{d['strength']}" for d in a.lora]
    prompt = a.prompt_pos or a.prompt
    if not prompt and a.extend:                 # extending an openwan video: the prompt it was made with
        from openwan.cli_record import recorded_prompt
        prompt = a.prompt = recorded_prompt(a.extend)
        if not a.quiet:
            print(f"prompt from {a.extend}'s record: {prompt!r}")
    lines = _prompt_file(a, prompt) if a.prompt_file else [{"prompt": prompt}]   # one request per video
    if not lines[0]["prompt"]:
        raise CLIError("no prompt: openwan generate \"a red circle moving to the right\" (or --prompt TEXT)")
    _check_args(a, None if a.prompt_file else prompt)    # a file's prompts: checked line by line
    if a.dit is not None and not Path(a.dit).exists():
        raise CLIError(f"--dit {a.dit}: not found (a DiT folder or a .safetensors file)")

    task = TASK_ALIASES.get(a.task, a.task)
    variant = None
    pipe_task = None
    if task is not None:
        if task in ("v2v",):
            pipe_task = "v2v"
        else:
            try:
                variant = get_variant(task)
            except ValueError as e:
                if not_implemented(task):           # get_variant's message says what the model is
                    raise CLIError(f"--task {e}") from None
                raise CLIError(f"unknown task {a.task!r}; choose one of: "
                               f"{', '.join(list(VARIANTS) + list(WAN22_VARIANTS) + ['v2v', 'demo'])}")
            pipe_task = variant.task
    if a.ckpt_dir is None:
        if variant is not None and variant.name not in DEMO_NAMES and not variant.name.startswith("tiny"):
            raise CLIError(f"--task {variant.name} needs --ckpt_dir: the folder with its downloaded weights "
                           f"(only the embedded demo models, {' and '.join(DEMO_NAMES)}, run without one)")
        ckpt = variant.name if variant is not None and variant.name in DEMO_NAMES else "demo"
    else:
        ckpt = a.ckpt_dir
        if not Path(ckpt).is_dir():
            raise CLIError(f"--ckpt_dir {ckpt}: " + ("a file, not a folder: give the checkpoint folder (the one "
                                                      "holding config.json, or diffusers' model_index.json)"
                                                      if Path(ckpt).exists() else "directory not found"))

    if task is None or task in DEMO_NAMES:           # the inputs choose the pipeline (v2v), or are refused early
        pipe_task = _route(a, ckpt, variant) or pipe_task

    import torch

    from openwan.pipelines import load_pipeline
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    elif ckpt in DEMO_NAMES:        # known to be small: one thread from the start (load included)
        torch.set_num_threads(1)
    planned = variant
    if planned is None and a.offload_model == "auto":     # the checkpoint's own, from its headers
        from openwan.pipelines.components import checkpoint_variant
        planned = checkpoint_variant(ckpt)
    offload = _memory_plan(a, planned)
    _refuse_if_too_big(a, planned, offload)
    dist_run = _setup_distributed(a)   # (rank, created) under torchrun, else None
    rank = dist_run[0] if dist_run else 0
    t0 = time.perf_counter()
    if not a.quiet and rank == 0:
        print(f"loading {'the embedded demo model' if ckpt in DEMO_NAMES else ckpt} ...", file=sys.stderr)
    pipe = load_pipeline(ckpt, task=pipe_task, variant=variant.name if variant and ckpt not in DEMO_NAMES else None,
                         device=a.device, offload=offload, t5_cpu=a.t5_cpu, quantize=a.quantize,
                         progress=not a.quiet and rank == 0, dtype=a.dtype or "auto", threads=a.threads,
                         compile=a.compile, dit=a.dit)
    if a.lora:                        # a distill LoRA (LightX2V ...) brings its sampler: timesteps, no CFG
        from openwan.distill import apply_preset, preset_for
        from openwan.pipelines.adapters import parse_lora_specs
        for spec in parse_lora_specs(a.lora):
            preset = preset_for(spec["path"])
            if preset is not None:
                apply_preset(pipe, preset)
                if not a.quiet and rank == 0:
                    print(f"{Path(spec['path']).name}: a distill LoRA; its sampler: {len(preset.timesteps)} "
                          f"{preset.solver} steps at timesteps {list(preset.timesteps)}, guide scale "
                          f"{preset.guide_scale:g}", file=sys.stderr)
    if not a.quiet and rank == 0 and (a.dtype or "auto") == "auto":
        print(f"dtype {pipe.settings()['dtype']} ({pipe.c.dtype_reason})", file=sys.stderr)
    if dist_run:
        from openwan.parallel import parallelize
        parallelize(pipe, a.ulysses_size, a.dit_fsdp, a.window_parallel, a.cfg_parallel)   # every DiT (A14B: both)
    if a.prompt_file:                # every line checked as the server checks a request, before the first video
        lines = _line_requests(a, pipe, lines)
    done = False
    started = time.perf_counter()
    try:
        for i, line in enumerate(lines):
            if len(lines) > 1 and not a.quiet and rank == 0:
                left = ""
                if i:                   # the videos so far at their mean time (a .jsonl's lines may differ in size)
                    from openwan.pipelines.job import duration_text
                    left = (f" (~{duration_text((time.perf_counter() - started) / i * (len(lines) - i))} left for "
                            f"the file)")
                print(f"[{i + 1}/{len(lines)}] {line['prompt']}{left}", file=sys.stderr)
            _generate_one(a, pipe, line.pop("prompt"), dist_run, t0 if i == 0 else time.perf_counter(), line)
        done = True
    finally:
        if dist_run and dist_run[1]:
            # every process past its work (the first one's decode and write) before the group goes: one leaving
            # early could abort at teardown while the other still used it
            from openwan.parallel import end_process_group
            end_process_group(wait_for_all=done)
    return 0


def _prompt_file(a, given) -> list:
    """The requests of --prompt_file: a text file, one prompt per line (blank lines and # comments skipped), or a
    .jsonl file, one JSON object per line with the fields `openwan serve` takes ({"prompt": ..., "seed": 3,
    "image": "a.png", ...}; relative paths from the file's folder): [{"prompt": ..., other fields}]."""
    from openwan import validate
    if a.from_json or a.extend:
        raise CLIError("--prompt_file makes one video per prompt from nothing; --from / --extend take one video")
    if given:
        raise CLIError("a prompt and --prompt_file: give one of them")
    if a.save_file is not None:      # a folder for the videos, each named from its prompt (default outputs/)
        folder = Path(a.save_file)
        if folder.exists() and not folder.is_dir():
            raise CLIError(f"--output {folder} with --prompt_file: a file; give a folder for the videos (each is "
                           f"named from its prompt), or leave out --output for outputs/")
        a.output_folder, a.save_file = folder, None
    path = Path(a.prompt_file)
    if not path.is_file():
        raise CLIError(f"--prompt_file {path}: " + ("a folder, not a file" if path.exists() else "file not found"))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CLIError(f"--prompt_file {path}: not a UTF-8 text file (one prompt per line)") from None
    rows = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1)
            if ln.strip() and not ln.lstrip().startswith("#")]
    if not rows:
        raise CLIError(f"--prompt_file {path} holds no prompt (one per line; blank lines and # comments are "
                       f"skipped)")
    if path.suffix.lower() == ".jsonl":
        lines = []
        for n, ln in rows:
            try:
                obj = json.loads(ln)
            except json.JSONDecodeError as e:
                raise CLIError(f"--prompt_file {path}, line {n}: not JSON ({e.msg}); one object per line, e.g. "
                               f'{{"prompt": "a red circle moving to the right", "seed": 3}}') from None
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), (str, list)):
                raise CLIError(f"--prompt_file {path}, line {n}: an object with a \"prompt\" is needed, got "
                               f"{ln[:60]}")
            lines.append({**obj, "_line": n})
        return lines
    for n, p in rows:
        try:
            validate.generation_args(names=CLI_NAMES, prompt=p)
        except ValueError as e:
            raise CLIError(f"--prompt_file {path}, line {n}: {e}") from None
    return [{"prompt": p, "_line": n} for n, p in rows]


def _line_requests(a, pipe, lines: list) -> list:
    """Each line's fields as the pipeline's keyword arguments (the server's request check, openwan.serve.params),
    file paths taken from the prompt file's folder; a bad line is named before any video is made."""
    from openwan.serve.params import FILE_FIELDS, RequestError, check_request, field_paths, parameter_kinds
    kinds, folder, out = parameter_kinds(pipe), Path(a.prompt_file).parent, []
    for line in lines:
        n = line.pop("_line", None)
        try:
            kw = check_request(line, kinds, fps=pipe.defaults().fps, taker="a line")
        except RequestError as e:
            raise CLIError(f"--prompt_file {a.prompt_file}, line {n}: {e}") from None
        for field in FILE_FIELDS & set(kw):
            paths = [str(folder / p) for p in field_paths(field, kw[field])]     # (an absolute p stays itself)
            missing = [p for p in paths if not Path(p).is_file()]
            if missing:
                raise CLIError(f"--prompt_file {a.prompt_file}, line {n}: {field} {missing[0]}: file not found")
            kw[field] = paths[0] if isinstance(kw[field], str) and field != "src_ref_images" else paths
        out.append(kw)
    return out


def _generate_one(a, pipe, prompt: str, dist_run, t0: float, line: Optional[dict] = None) -> None:
    """One video of ``prompt`` with the loaded pipeline: its output name, the call, the report. ``line``: a prompt
    file line's own settings, over the command line's."""
    import torch
    rank = dist_run[0] if dist_run else 0
    out = a.save_file
    if out is not None:       # a .png name holds one frame (the model's default length known only now)
        from openwan import validate
        validate.output_frames(out, validate.call_frames(pipe, a.frame_num), "--output")
    if out is None:
        frame_num = (line or {}).get("frame_num", a.frame_num)
        ext = ".png" if (frame_num == 1 or pipe.task == "t2i") else ".mp4"
        stamp = time.strftime("%Y%m%d_%H%M%S")
        folder = getattr(a, "output_folder", None) or Path("outputs")
        out = folder / f"{pipe.task}_{_slug(prompt)}_{stamp}{ext}"
        n = 1
        while out.exists() or out.with_suffix(".json").exists():   # a run in the same second: next free name
            n += 1
            out = folder / f"{pipe.task}_{_slug(prompt)}_{stamp}_{n}{ext}"
        if dist_run:  # one name for every process (their clocks may tick apart)
            out = _broadcast(str(out))
    kw = dict(negative_prompt=a.neg_prompt, size=a.size, frame_num=a.frame_num, sample_steps=a.sample_steps,
              sample_shift=a.sample_shift, guide_scale=a.sample_guide_scale, sample_solver=a.sample_solver,
              seed=a.base_seed, output_path=out, overwrite=a.overwrite, return_frames=False)
    if a.long_expert is not None:
        kw["long_expert"] = a.long_expert == "on"
    if a.long_riflex is not None:
        kw["long_riflex"] = a.long_riflex
    for name in ("image", "first_frame", "last_frame", "src_video", "src_mask", "src_ref_images", "strength",
                 "context_scale", "src_fps", "step_cache", "lora", "fps", "extend", "long_method", "long_overlap", "tile",
                 "guide_boundary", "guide_method", "long_context_noise", "long_refine", "prompt_extend",
                 "two_objects"):
        if getattr(a, name) is not None:
            kw[name] = getattr(a, name)
    kw = {k: v for k, v in kw.items() if v is not None or k in ("negative_prompt",)}
    kw.update(line or {})
    import inspect
    params = inspect.signature(pipe.__call__).parameters
    from openwan.pipelines.call_options import CALL_OPTIONS
    extra = [k for k in kw if k not in params and k != "negative_prompt" and k not in CALL_OPTIONS]
    if extra:
        raise CLIError(f"the {pipe.task} task does not take --{', --'.join(extra)}")
    if dist_run:
        from openwan.pipelines.i2v import check_output_free
        check_output_free(out, a.overwrite)          # on every process, so none waits for a failed one
        if kw.get("seed") is None or kw["seed"] < 0:  # one random seed for every process
            kw["seed"] = _broadcast(random.randint(0, 2**31 - 1))
        if rank != 0:                                # only the first process decodes and writes
            kw.update(output_path=None, output_type="latent")
    with torch.inference_mode():
        result = pipe(prompt, **kw)
    dt = time.perf_counter() - t0
    if rank == 0:
        extended = result.settings.get("prompt_extend")
        if isinstance(extended, dict):          # the reference logs its extended prompt too
            print(f"prompt extended ({extended['method']}): {result.settings['prompt']!r}")
        stats = result.settings.get("stats") or {}
        if stats.get("resumed_windows") or stats.get("resumed_steps"):    # an earlier run's progress (resume.py)
            parts = [f"{stats['resumed_windows']} finished window(s)"] if stats.get("resumed_windows") else []
            if stats.get("resumed_steps"):          # a solve's step (with windows: of the window or pass after them)
                parts.append(f"step {stats['resumed_steps']}" + (" of the next" if parts else ""))
            what = " and ".join(parts)
            print(f"went on from {what}, kept by an earlier run of this command")
        print(f"saved {result.path} ({dt:.1f}s, seed {result.settings['seed']}); settings in "
              f"{Path(result.path).with_suffix('.json')}")


ROUTED_INPUTS = ("image", "first_frame", "last_frame", "src_video", "src_mask", "src_ref_images", "context_scale")


def _route(a, ckpt: str, variant):
    """Without --task (or with the demo's name): the pipeline the inputs need, from the checkpoint's own task
    (openwan.pipelines.routing): --src_video alone is video-to-video on a text-to-video or TI2V model; VACE inputs
    on a model without VACE layers and pictures on a text-to-video model are refused before loading."""
    given = [n for n in ROUTED_INPUTS if getattr(a, n, None) is not None]
    if not given:
        return None
    if variant is None:
        from openwan.pipelines.components import checkpoint_variant
        variant = checkpoint_variant(ckpt)          # "demo" or the folder's headers; None: a custom model
    if variant is None:
        return None
    from openwan.pipelines.routing import has_reference_expert, route_inputs
    try:
        return route_inputs(variant.task, variant.name, given,
                            references=has_reference_expert(ckpt))
    except ValueError as e:
        raise CLIError(str(e)) from None


def _memory_plan(a, variant) -> str:
    """--offload_model for load_pipeline (which parses blocks[:N] once the DiT's block count is known);
    'auto' asks openwan.plan for the cheapest settings that fit the device (and sets --quantize / --t5_cpu
    when the plan needs them)."""
    spec = a.offload_model
    if spec == "auto":
        from openwan import plan as planner
        try:
            chosen = planner.resolve_auto(variant, a.size, a.frame_num, a.device, quantize=a.quantize,
                                          long_method=a.long_method)
        except ValueError as e:                      # even the most frugal plan does not fit
            raise CLIError(str(e)) from None
        spec = chosen["offload"]
        a.quantize = chosen["quantize"]
        a.t5_cpu = a.t5_cpu or chosen["t5_cpu"]
        if not a.quiet and chosen.get("fits"):
            print(f"--offload_model auto: {spec}, quantize {a.quantize or 'none'}, t5_cpu {a.t5_cpu}",
                  file=sys.stderr)
    a.offload_model = spec
    return spec


def _refuse_if_too_big(a, variant, offload: str) -> None:
    """Before loading anything: refuse (a CLIError with the estimate and the options) a generation that
    openwan.plan estimates to need more than the device has. Only where the device's memory is known (CUDA)
    and the model is a published variant."""
    import torch

    from openwan import plan as planner
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    budget = planner.device_memory_of(device)
    if budget is None or variant is None:
        return
    dtype = {"fp32": torch.float32, "fp16": torch.float16}.get(a.dtype or "auto", torch.bfloat16)
    try:
        planner.fits_or_raise(variant, a.size or variant.sample.size, a.frame_num or variant.sample.frame_num, budget,
                              dtype=dtype, quantize=a.quantize, offload=offload, device=device.type,
                              t5_cpu=a.t5_cpu, long_method=a.long_method)
    except MemoryError as e:
        raise CLIError(str(e)) from None


def _setup_distributed(a):
    """Under torchrun with --ulysses_size N (N = the process count) and/or --dit_fsdp, or --window_parallel: join the
    group, pick this process's device. Returns (rank, created the group) or None for a single-process run."""
    import os
    from openwan.parallel.pipeline import check_group_modes
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        if not check_group_modes(world, a.ulysses_size, a.dit_fsdp, a.window_parallel, a.cfg_parallel):
            return None
    except ValueError as e:
        raise CLIError(str(e)) from None
    if a.dit_fsdp and a.offload_model != "none":
        raise CLIError("--dit_fsdp keeps the sharded DiT in place: use it without --offload_model sequential")
    import torch
    import torch.distributed as dist

    from openwan.parallel import init_process_group
    created = init_process_group()
    if torch.cuda.is_available() and (a.device is None or a.device == "cuda"):
        a.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return dist.get_rank(), created


def _broadcast(value):
    """Process 0's value on every process."""
    import torch.distributed as dist
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _train_parser(sub):
    # listed for --help; main() hands their options to the training modules' own parsers
    sub.add_parser("train", help="fine-tune a model (full or LoRA): openwan train --config train.yaml "
                                 "[--set key=value] [--resume auto|none|PATH] [--nproc N]")
    sub.add_parser("distill", help="few-step distillation of a teacher into a 1-4 step student: "
                                   "openwan distill --config x.yaml (openwan distill --help, docs/distill.md)")
    sub.add_parser("cache-latents", help="encode a captioned video folder to latents once, for training "
                                         "(openwan cache-latents --help)")
    sub.add_parser("serve", help="keep a pipeline loaded and generate over HTTP: openwan serve [--ckpt_dir DIR] "
                                 "[--port 8000] (openwan serve --help)")


def _delegate(module: str, argv) -> int:
    import importlib
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise CLIError(f"{module} is not available ({e})") from None
    return int(mod.main(list(argv)) or 0)


def _convert_parser(sub):
    p = sub.add_parser("convert", help="convert a whole checkpoint folder between the official and diffusers layouts",
                       description="Write SRC (an official or diffusers folder, or 'demo') as a complete diffusers "
                                   "pipeline folder (model_index.json, scheduler, tokenizer, text_encoder, vae, "
                                   "transformer; image_encoder + image_processor for i2v/flf2v) or in the official "
                                   "layout. The sampling defaults travel in openwan.json (docs/ecosystem.md).")
    p.add_argument("src", help="checkpoint folder (official or diffusers layout) or 'demo'")
    p.add_argument("dst", help="output folder (must not exist, or be empty)")
    p.add_argument("--to", choices=["official", "diffusers"], required=True, help="the layout to write")
    p.add_argument("--dtype", choices=["keep", "bf16", "fp16", "fp32"], default="keep",
                   help="dtype of the DiT's weights (default: keep; every other component keeps its stored dtype)")
    p.add_argument("--quantize", choices=["int8", "fp8"], default=None,
                   help="write only the DiT, weight-only quantized (DST: a .safetensors file; loads with "
                        "--ckpt_dir holding it, docs/memory.md)")
    p.add_argument("--lora", action="append", default=None, metavar="FILE[:STRENGTH]",
                   help="merge a LoRA file (any format --lora of generate reads) into the DiT's weights at "
                        "STRENGTH (default 1.0); repeat for several; Wan 2.2 A14B: high:FILE / low:FILE for one "
                        "expert. The output then samples as SRC with --lora does")
    p.set_defaults(func=cmd_convert)


def cmd_convert(a) -> int:
    if a.quantize and a.lora:
        raise CLIError("--lora and --quantize together: merge first (openwan convert SRC MERGED --to official "
                       "--lora FILE), then quantize MERGED")
    if a.quantize:
        from openwan.models.dit import WanModel
        from openwan.quant import convert_checkpoint
        if Path(a.dst).exists():
            raise CLIError(f"{a.dst} exists: choose a new output file")
        dst = convert_checkpoint(a.src, a.dst, a.quantize, build=WanModel)
        print(f"wrote the {a.quantize} DiT to {dst}")
        return 0
    from openwan.convert import (
        convert,  # Wan 2.1, Wan 2.2 (both experts, TI2V), the demo
    )
    dst = convert(a.src, a.dst, to=a.to, dtype=a.dtype, lora=a.lora)
    merged = f", {len(a.lora)} LoRA file(s) merged into the DiT" if a.lora else ""
    print(f"wrote the {a.to} layout to {dst}{merged}")
    return 0


def _bench_parser(sub):
    p = sub.add_parser("bench", help="benchmarks: openwan bench (lists them), openwan bench demo|long [--help]")
    p.add_argument("what", nargs="?", choices=["demo", "long"], help="the benchmark to run (none: list them)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(a) -> int:
    from openwan.demo.bench import list_benchmarks
    print(list_benchmarks())
    return 0


def _plan_parser(sub):
    p = sub.add_parser("plan", help="estimate a generation's peak memory and the cheapest settings that fit",
                       description="Estimate the peak device memory of a generation (weights by dtype and "
                                   "quantization, DiT activations, text encoder, VAE decode) and, with "
                                   "--device_memory, the cheapest settings that fit (docs/memory.md).")
    p.add_argument("--task", required=True, help="a variant, e.g. t2v-1.3B, t2v-14B, i2v-14B-480P, t2v-A14B")
    p.add_argument("--size", default=None, help="W*H (default: the variant's)")
    p.add_argument("--frame_num", type=int, default=None, help="frames (default: the variant's)")
    p.add_argument("--device_memory", default=None, help="e.g. 24GB (default: the CUDA device's, if any)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16", help="compute dtype (default bf16)")
    p.add_argument("--quantize", choices=["none", "int8", "fp8"], default="none")
    p.add_argument("--offload_model", type=offload_choice, default="none", metavar="{none,sequential,blocks[:N]}")
    p.add_argument("--long_method", choices=["windows", "continue", "rolling", "none"], default=None,
                   help="past the model's native length: the long-video method (default: the model's; the DiT "
                        "holds one window), or none (one DiT call over every frame)")
    p.set_defaults(func=cmd_plan)


def cmd_plan(a) -> int:
    import torch

    from openwan import plan as planner
    from openwan.pipelines.base import lookup_variant
    try:
        variant = lookup_variant(TASK_ALIASES.get(a.task, a.task))
    except (KeyError, ValueError) as e:
        from openwan.configs import not_implemented
        if not_implemented(a.task):                 # get_variant's message says what the model is
            raise CLIError(f"--task {e}") from None
        raise CLIError(f"unknown task {a.task!r}; choose one of: {', '.join(VARIANT_NAMES())}") from None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    size, frames = a.size or variant.sample.size, a.frame_num or variant.sample.frame_num
    est = planner.estimate(variant, size, frames, dtype=dtype, quantize=a.quantize, offload=a.offload_model,
                           long_method=a.long_method)
    print(f"{variant.name} {size} {frames} frames, {a.dtype}, quantize {a.quantize}, offload {a.offload_model}:")
    print(est)
    budget = a.device_memory or planner.device_memory_of("cuda")
    if budget is not None:
        print()
        print(planner.plan(variant, size, frames, budget, dtype=dtype, long_method=a.long_method))
    return 0


def VARIANT_NAMES():
    from openwan.configs import VARIANTS, WAN22_VARIANTS
    return list(VARIANTS) + list(WAN22_VARIANTS)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="openwan", description="Wan 2.1 video generation, from scratch in PyTorch.")
    sub = ap.add_subparsers(dest="command", required=True)
    generate_parser(sub, cmd_generate)
    _train_parser(sub)
    _convert_parser(sub)
    _bench_parser(sub)
    _plan_parser(sub)
    return ap


# Subcommands whose own module parses the options (the CLI hands them the rest of the line).
DELEGATED = {"train": "openwan.training.trainer", "cache-latents": "openwan.training.cache", "distill": "openwan.distill",
             "serve": "openwan.serve"}


def _plain_warnings(python_format):
    """``warnings.formatwarning`` that prints openwan's own warnings as one line, ``openwan: warning: ...``."""
    root = str(Path(__file__).resolve().parent)

    def fmt(message, category, filename, lineno, line=None):
        if issubclass(category, UserWarning) and str(Path(filename).resolve()).startswith(root):
            return f"openwan: warning: {message}\n"
        return python_format(message, category, filename, lineno, line)
    return fmt


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    import warnings

    from openwan.checkpoints import CheckpointError
    python_format = warnings.formatwarning
    warnings.formatwarning = _plain_warnings(python_format)
    try:
        if argv and argv[0] in DELEGATED:
            return _delegate(DELEGATED[argv[0]], argv[1:])
        if argv[:2] == ["bench", "demo"]:
            return _delegate("openwan.demo.bench", argv[2:])
        if argv[:2] == ["bench", "long"]:
            return _delegate("openwan.demo.long_bench", argv[2:])
        a = build_parser().parse_args(argv)
        return a.func(a)
    except (CLIError, ValueError, CheckpointError, FileExistsError, FileNotFoundError, PermissionError,
            OSError) as e:
        print(f"openwan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("openwan: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = python_format


if __name__ == "__main__":
    sys.exit(main())
