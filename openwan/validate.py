"""Every argument of a generation checked in one place: types, finite values, ranges, resource limits.

Used by the Python API (the pipelines' entry), the CLI (flags and ``--from`` files) and the server, so
one bad value gets the same clear error everywhere, before any work starts:

    from openwan import validate
    kw = validate.generation_args(prompt="a cat", sample_steps=30, guide_scale=5.0, seed=7)   # normalized
    validate.resources(width=832, height=480, frame_num=81, ...)      # refuses what cannot fit
    validate.for_pipeline(pipe, kw)                                   # both, with the model's defaults

Errors are :class:`InvalidArgument` (a ValueError) naming the argument and the fix; resource refusals
are :class:`ResourceLimit` and say the limit and the environment variable that raises it.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from argparse import ArgumentTypeError
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

SEED_MAX = 2**63 - 1
MAX_PROMPT_CHARS = 100_000
OUTPUT_TYPES = ("uint8", "np", "pt", "pil", "latent")

# name: (environment variable, default). 1280*720 x 81 frames is 75,600 DiT tokens (patch 1x2x2).
LIMITS = {
    "steps": ("OPENWAN_MAX_STEPS", 1000),
    "frames": ("OPENWAN_MAX_FRAMES", 1001),
    "tokens": ("OPENWAN_MAX_TOKENS", 262_144),
    "image_pixels": ("OPENWAN_MAX_IMAGE_PIXELS", 8192 * 8192),
    "memory_gb": ("OPENWAN_MAX_MEMORY_GB", None),   # default: what the device has available now
}


class InvalidArgument(ValueError):
    """A bad argument: ``.name`` is the argument, the message says what is wrong and the fix."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


class ResourceLimit(InvalidArgument):
    """The request would exceed a resource limit (steps, frames, tokens, pixels, memory)."""


def limit(name: str):
    """The current value of a limit (its environment variable, else the default)."""
    env, default = LIMITS[name]
    raw = os.environ.get(env)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgument(env, f"environment variable {env}={raw!r} must be a positive number")
    return value if name == "memory_gb" else int(value)


def _raise_hint(name: str, value) -> str:
    return f"set {LIMITS[name][0]}={value} to go past it"


# ----------------------------------------------------------------------------- scalars

def integer(value, name: str, lo: Optional[int] = None, hi: Optional[int] = None, hint: str = "") -> int:
    """An int (numpy ints too; not bool, not float, not str) within [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgument(name, f"{name} must be an integer, got {value!r} ({type(value).__name__}){hint}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else (f"<= {hi}" if lo is None else f"in [{lo}, {hi}]")
        raise InvalidArgument(name, f"{name} must be {rng}, got {value}{hint}")
    return value


def number(value, name: str, lo: Optional[float] = None, hi: Optional[float] = None, *,
           lo_open: bool = False, hint: str = "", expect: str = "") -> float:
    """A finite real number (int or float, not bool/str) within [lo, hi] (or (lo, hi] with lo_open).
    ``expect`` replaces the generic wording: "{name} must be {expect}, got {value!r}"."""
    if expect:
        try:
            return number(value, name, lo, hi, lo_open=lo_open)
        except InvalidArgument:
            raise InvalidArgument(name, f"{name} must be {expect}, got {value!r}{hint}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgument(name, f"{name} must be a number, got {value!r} ({type(value).__name__}){hint}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidArgument(name, f"{name} must be a finite number, got {value}{hint}")
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi)
    if bad:
        left = "(" if lo_open else "["
        raise InvalidArgument(name, f"{name} must be in {left}{lo}, {hi}], got {value}{hint}")
    return value


def boolean(value, name: str) -> bool:
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise InvalidArgument(name, f"{name} must be true or false, got {value!r} ({type(value).__name__})")
    return bool(value)


def text(value, name: str, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(name, f"{name} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidArgument(name, f"{name} must be a non-empty string (describe the video to generate)")
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidArgument(name, f"{name} is {len(value)} characters, more than {MAX_PROMPT_CHARS}; the text "
                                    f"encoder reads at most a few hundred tokens, shorten it")
    return value


def seed(value, name: str = "seed") -> Optional[int]:
    """None or -1: a random seed; else an integer in [0, 2**63 - 1]."""
    if value is None:
        return None
    value = integer(value, name, hint="; use -1 (or leave it unset) for a random seed")
    if value != -1 and not 0 <= value <= SEED_MAX:
        raise InvalidArgument(name, f"{name} {value} is out of range: use -1 for a random seed or an integer in "
                                    f"[0, {SEED_MAX}]")
    return value


def size(value, name: str = "size") -> str:
    """'W*H' (also 'WxH') or a (W, H) pair of positive integers -> 'W*H'."""
    if isinstance(value, str):
        parts = value.lower().replace("x", "*").split("*")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise InvalidArgument(name, f"{name} {value!r} is not of the form W*H, e.g. 832*480")
        w, h = (int(p) for p in parts)
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        w, h = (integer(v, name) for v in value)
    else:
        raise InvalidArgument(name, f"{name} must be 'W*H' (e.g. '832*480') or a [W, H] pair, got {value!r}")
    if w <= 0 or h <= 0:
        raise InvalidArgument(name, f"{name} {w}*{h}: width and height must be positive")
    return f"{w}*{h}"


OUTPUT_SUFFIXES = (".mp4", ".png")     # what a generation writes: a video, or one frame as a picture


def output_path(value, name: str = "output_path", overwrite: bool = False, check_exists: bool = True):
    """None, or a file path ending in .mp4 or .png (the name says the format: the writer never puts one format
    under another's name), not a folder, and free (together with its .json sidecar) unless ``overwrite``."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or str(value).strip() == "":
        raise InvalidArgument(name, f"{name} must be a file path such as out.mp4, got {value!r}")
    path = Path(value)
    if str(value).endswith(("/", os.sep)) or path.is_dir():
        raise InvalidArgument(name, f"{name} {value} names a folder; give a file name such as {path / 'out.mp4'}")
    if path.suffix.lower() == ".json":
        raise InvalidArgument(name, f"{name} {path}: a .json name collides with the settings file written beside "
                                    f"the output; name it {path.with_suffix('.mp4')} (or .png for an image)")
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InvalidArgument(name, f"{name} {path}: openwan writes a video as .mp4 and one frame as .png; name it "
                                    f"{path.with_suffix('.mp4')}")
    if check_exists:
        from openwan.fileio import check_free
        check_free([path, path.with_suffix(".json")], overwrite)
    return path


def output_frames(path, frame_num: int, name: str = "output_path") -> None:
    """A .png output holds one frame: refuse a longer video under that name before any work (writing only
    its first frame would lose the rest)."""
    if path is not None and Path(path).suffix.lower() == ".png" and frame_num != 1:
        raise InvalidArgument(name, f"{name} {path} is a picture name (.png) but the video has {frame_num} frames; "
                                    f"name it {Path(path).with_suffix('.mp4')}, or ask for one frame "
                                    f"(frame_num=1 / --frame_num 1)")


def device(value, name: str = "device"):
    """A torch.device this machine has: "cpu", "cuda", "cuda:N" (a GPU torch can use), "mps", ...; anything else is
    an InvalidArgument that says what there is (rather than torch's assertion from deep inside a load)."""
    import torch
    try:
        d = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidArgument(name, f"{name} {value!r} is not a device: use cpu, cuda or cuda:N") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgument(name, f"{name} {value}: torch sees no CUDA GPU here (a CPU build of torch "
                                        f"({torch.__version__}), or no GPU or driver); use cpu, or leave it unset")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise InvalidArgument(name, f"{name} {value}: this machine has {torch.cuda.device_count()} CUDA "
                                        f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif d.type not in ("cpu", "meta"):
        backend = getattr(torch.backends, d.type, None) or getattr(torch, d.type, None)
        if backend is None or not getattr(backend, "is_available", lambda: False)():
            raise InvalidArgument(name, f"{name} {value}: torch has no {d.type} device here; use cpu"
                                        + (" or cuda" if torch.cuda.is_available() else ""))
    return d


def output_fps(value, name: str = "fps"):
    """The frame rate of a written video: a number in (0, 240]; an int when whole (12, 16.0 -> 16),
    else a float such as 23.976 (written as a rational). The one rule for the CLI, the Python call and
    the server."""
    v = number(value, name, 0.0, 240.0, lo_open=True,
               expect="a frame rate in (0, 240] such as 16 or 23.976 (leave it unset for the model's own)")
    return int(v) if v.is_integer() else v


# ----------------------------------------------------------------------------- a whole call

def _solvers():
    from openwan.sampling import SOLVERS
    return SOLVERS


GUIDE_BOUNDARY = "a number in (0, 1): the timestep fraction above which the high guide scale applies (e.g. 0.9)"


def generation_args(names: Optional[Mapping[str, str]] = None, **kw) -> dict:
    """Check and normalize the arguments of a generation; returns a new dict (unknown keys unchanged).

    ``names`` maps argument names to what the caller calls them in messages (the CLI passes
    ``{"guide_scale": "--sample_guide_scale", ...}``). None means "the model's default" and passes.
    """
    nm = dict(names or {})
    n = lambda k: nm.get(k, k)  # noqa: E731
    out = dict(kw)
    for key, value in kw.items():
        if value is None:
            continue
        if key == "prompt":
            out[key] = text(value, n(key), allow_empty=False)
        elif key == "negative_prompt":
            out[key] = text(value, n(key))
        elif key == "size":
            out[key] = size(value, n(key))
        elif key == "frame_num":
            mx = limit("frames")
            out[key] = integer(value, n(key), 1, None)
            if out[key] > mx:
                raise ResourceLimit(key, f"{n(key)} {value} is more than the limit of {mx} frames; use fewer "
                                         f"frames, or {_raise_hint('frames', value)}")
        elif key == "sample_steps":
            out[key] = integer(value, n(key), 1, None, hint="; leave it unset for the model's default")
            mx = limit("steps")
            if out[key] > mx:
                raise ResourceLimit(key, f"{n(key)} {value} is more than the limit of {mx} steps (Wan uses "
                                         f"40-50); use fewer, or {_raise_hint('steps', value)}")
        elif key == "sample_shift":
            out[key] = number(value, n(key), 0.0, 1000.0, lo_open=True)
        elif key == "guide_scale":
            if isinstance(value, (list, tuple)):      # Wan 2.2: (low-noise, high-noise) scales
                if len(value) != 2:
                    raise InvalidArgument(key, f"{n(key)} must be a number or a pair of numbers, got {value!r}")
                out[key] = tuple(number(v, n(key), 0.0, 100.0) for v in value)
            else:
                out[key] = number(value, n(key), 0.0, 100.0)
        elif key == "guide_boundary":
            out[key] = number(value, n(key), 0.0, 1.0, lo_open=True, expect=GUIDE_BOUNDARY)
            if out[key] >= 1.0:
                raise InvalidArgument(key, f"{n(key)} must be {GUIDE_BOUNDARY}, got {value!r}")
        elif key == "sample_solver":
            if value not in _solvers():
                raise InvalidArgument(key, f"{n(key)} must be one of {', '.join(_solvers())}, got {value!r}")
        elif key in ("seed", "base_seed"):
            out[key] = seed(value, n(key))
        elif key == "strength":
            out[key] = number(value, n(key), 0.0, 1.0, lo_open=True,
                              expect="a number in (0, 1] (the noise level the source is pushed to: small keeps "
                                     "more of it, 1 ignores it)")
        elif key == "context_scale":
            out[key] = number(value, n(key), 0.0, 100.0)
        elif key == "src_fps":
            out[key] = number(value, n(key), 0.0, 1000.0,
                              expect="a frame rate > 0 (up to 1000) to resample a source video file to (default "
                                     "16, Wan's), or 0 to use every frame as it is")
        elif key == "fps":
            out[key] = output_fps(value, n(key))
        elif key == "threads":
            out[key] = integer(value, n(key), 1)
        elif key == "output_type":
            if value not in OUTPUT_TYPES:
                raise InvalidArgument(key, f"{n(key)} must be one of {', '.join(OUTPUT_TYPES)}, got {value!r}")
        elif key in ("overwrite", "cfg_batch", "strict_size", "return_frames"):
            out[key] = boolean(value, n(key))
        elif key == "output_path":
            out[key] = output_path(value, n(key), overwrite=bool(kw.get("overwrite")))
    return out


# ----------------------------------------------------------------------------- resources

def available_memory(device=None) -> tuple[float, str]:
    """(bytes free now, description) for a torch device (CPU: MemAvailable of /proc/meminfo)."""
    dev = str(device) if device is not None else "cpu"
    if dev.startswith("cuda"):
        import torch
        free, _ = torch.cuda.mem_get_info(torch.device(dev))
        return float(free), f"free on {dev}"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024, "available RAM"
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")), "available RAM"
    except (ValueError, OSError, AttributeError):
        return float("inf"), "available RAM"


def resources(width: int, height: int, frame_num: int, est: dict, *, device=None) -> dict:
    """Refuse (ResourceLimit) a request whose DiT tokens or estimated memory exceed the limits.

    ``est``: the call's memory estimate, ``openwan.plan.call_estimate``'s dict (tokens, dit, vae, frames,
    total; a pipeline's ``memory_estimate`` gives it). Returns it.
    """
    what = f"size {width}*{height} with {frame_num} frame{'s' if frame_num != 1 else ''}"
    mx = limit("tokens")
    if est["tokens"] > mx:
        raise ResourceLimit("size", f"{what} is {est['tokens']} DiT tokens per step, more than the limit of {mx} "
                                    f"(3.5x Wan's 1280*720 with 81 frames); use a smaller size or fewer frames, or "
                                    f"{_raise_hint('tokens', est['tokens'])}")
    cap_gb = limit("memory_gb")
    if cap_gb is None:
        cap, where = available_memory(device)
    else:
        cap, where = cap_gb * 2**30, f"allowed by {LIMITS['memory_gb'][0]}"
    if est["total"] > cap:
        gib = lambda b: f"{b / 2**30:.1f} GiB"  # noqa: E731
        raise ResourceLimit("size", f"{what} needs about {gib(est['total'])} (DiT activations {gib(est['dit'])}, "
                                    f"VAE decode {gib(est['vae'])}, frames {gib(est['frames'])}), more than the "
                                    f"{gib(cap)} {where}; use a smaller size or fewer frames, or set "
                                    f"{LIMITS['memory_gb'][0]}={math.ceil(est['total'] / 2**30)} to try anyway")
    return est


def image_size(width: int, height: int, what: str = "image") -> None:
    """Refuse an input image too large to decode safely (checked from its header, before decoding)."""
    mx = limit("image_pixels")
    if width * height > mx:
        raise ResourceLimit(what, f"{what} is {width}x{height} = {width * height} pixels, more than the limit of "
                                  f"{mx}; downscale it first, or {_raise_hint('image_pixels', width * height)}")


def call_frames(pipe, frame_num: Optional[int]) -> int:
    """The frames a call on ``pipe`` makes: ``frame_num``, else the model's (one for text-to-image)."""
    return frame_num or (1 if getattr(pipe, "task", "") == "t2i" else pipe.defaults().frame_num)


def for_pipeline(pipe, kw: dict, dit_frames: Optional[int] = None) -> dict:
    """generation_args + the output check + resources, with the pipeline's defaults filled in for the
    estimate (the returned dict keeps None where the caller left the default). ``dit_frames``: the frames
    the DiT sees at once (a long video's window)."""
    out = generation_args(**kw)
    d = pipe.defaults()
    if isinstance(out.get("guide_scale"), tuple) and not getattr(pipe, "two_experts", False) \
            and out.get("guide_boundary") is None and d.boundary is None:
        raise InvalidArgument("guide_scale", f"guide_scale {out['guide_scale']}: a pair (low-noise, high-noise) on "
                                             f"{pipe.variant.name} is a guidance interval and needs guide_boundary "
                                             f"(--guide_boundary B): HIGH applies while the timestep t >= B x 1000, "
                                             f"e.g. 0.9; or give one number")
    w, h = (int(v) for v in (out.get("size") or d.size).split("*"))
    frames = call_frames(pipe, out.get("frame_num"))
    output_frames(out.get("output_path"), frames)
    if out.get("output_type") == "latent":
        frames_kept = False
    else:
        frames_kept = out.get("return_frames", True) is not False
    parallel = 1
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            parallel = dist.get_world_size()
    except ImportError:                      # pragma: no cover
        pass
    est = pipe.memory_estimate(w, h, frames, parallel=parallel, return_frames=frames_kept, dit_frames=dit_frames)
    resources(w, h, frames, est, device=getattr(pipe, "device", None))
    return out


# ----------------------------------------------------------------------------- files

def read_json(path, what: str = "file"):
    """Parse a JSON file; any problem (missing, not UTF-8, not JSON, nested too deep) is one clear error."""
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {p}: file not found") from None
    except UnicodeDecodeError as e:
        raise InvalidArgument(what, f"{what} {p} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise InvalidArgument(what, f"cannot read {what} {p}: {e.strerror or e}") from None
    return loads(raw, f"{what} {p}")


def loads(text: str, what: str = "request"):
    """json.loads with one clear error for bad JSON, bare NaN/Infinity and nesting too deep."""
    def no_constants(name):
        raise InvalidArgument(what, f"{what} holds {name}, which is not a JSON number; use a finite number")
    try:
        return json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as e:
        raise InvalidArgument(what, f"{what} is not valid JSON ({e})") from None
    except RecursionError:
        raise InvalidArgument(what, f"{what} is nested too deeply to be a settings file") from None


def settings_file(obj: Any, source: str) -> dict:
    """The settings of a run as recorded in its .json / mp4 (``{"openwan": {...}}`` or the bare dict),
    with every known field type-checked; errors name the file and the field."""
    if not isinstance(obj, dict):
        raise InvalidArgument("--from", f"--from {source}: expected a JSON object with the run's settings, got "
                                         f"{type(obj).__name__}")
    settings = obj.get("openwan", obj)
    if not isinstance(settings, dict):
        raise InvalidArgument("--from", f"--from {source}: 'openwan' must be an object with the run's settings, "
                                         f"got {type(settings).__name__}")
    if "prompt" not in settings:
        raise InvalidArgument("--from", f"--from {source}: no openwan settings found in it (no 'prompt')")
    for key in ("task", "variant", "checkpoint", "image", "first_frame", "last_frame", "src_video", "src_mask",
                "src_ref_images", "sample_solver"):
        if settings.get(key) is not None and not isinstance(settings[key], str):
            raise InvalidArgument(key, f"--from {source}: field '{key}' must be a string, got "
                                       f"{type(settings[key]).__name__}")
    try:
        generation_args(**{k: v for k, v in settings.items() if k != "output_path"})
    except InvalidArgument as e:
        raise type(e)(e.name, f"--from {source}: field '{e.name}': {e}") from None
    return settings


def config_fields(config, source) -> None:
    """Check a loaded config dataclass against its fields' default types (int, float, bool, str, tuple);
    a wrong type raises InvalidArgument naming ``source`` (e.g. the config.json) and the field."""
    if not is_dataclass(config):
        return
    for f in fields(config):
        value = getattr(config, f.name)
        default = f.default
        if default is None or value is None or default.__class__.__name__ == "_MISSING_TYPE":
            continue
        expect = type(default)
        ok = isinstance(value, expect)
        if expect is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif expect is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            raise InvalidArgument(f.name, f"{source}: field '{f.name}' must be {expect.__name__}, got {value!r}; "
                                          f"fix the file or download it again")
        if expect is int and value < 0:
            raise InvalidArgument(f.name, f"{source}: field '{f.name}' must be >= 0, got {value}")


def guide_scale_numbers(text: str) -> list:
    """The numbers of a guide scale written as text: "5" -> [5.0], "3,4" -> [3.0, 4.0]. Anything else, an empty
    part ("3,") included, is a ValueError naming the accepted forms. One parser for the command line
    (:func:`guide_scale_arg`) and the A14B pipelines' ``guide_scale="LOW,HIGH"``."""
    parts = [t.strip() for t in str(text).split(",")]
    try:
        nums = [float(t) for t in parts]
    except ValueError:
        nums = []
    if len(nums) not in (1, 2):
        raise ValueError(f"{text!r} is not a number or LOW,HIGH (e.g. 5.0 or 3.0,4.0)")
    return nums


def guide_scale_arg(text: str):
    """--sample_guide_scale: a number, or LOW,HIGH (the two experts of a Wan 2.2 A14B model; a guidance interval
    on one DiT)."""
    try:
        nums = guide_scale_numbers(text)
    except ValueError as e:
        raise ArgumentTypeError(str(e)) from None
    return nums[0] if len(nums) == 1 else tuple(nums)
