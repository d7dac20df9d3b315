"""Check a job request before it is queued: every field by name and type, with a 400 naming it.

A request is a JSON object (or multipart form) of the pipeline's ``__call__`` arguments by name,
plus OpenAI's ``seconds`` (clip length, turned into ``frame_num`` at the model's fps), ``model``
(ignored: one model per server) and ``input_reference`` (the i2v image, an upload).

Types are checked here (a JSON body or a form has its own pitfalls: ``seed: true``, ``size: [64,
64]``, numbers as strings); ranges and resource limits are openwan.validate's, the checks the CLI and
the Python API use (``VideoService.submit`` calls ``validate.for_pipeline`` on the result).
"""
from __future__ import annotations

import inspect
import math
import re
from typing import Any

# Arguments the server sets itself (clients cannot).
# (and the Python call's own: a torch.Generator, diffusers' return_dict and num_videos_per_prompt, not request fields)
RESERVED = {"output_path", "overwrite", "return_frames", "callback", "output_type", "self", "generator", "return_dict",
            "num_videos_per_prompt"}
# Image/video arguments: server-side paths in JSON, or uploaded files in a multipart form.
FILE_FIELDS = {"image", "first_frame", "last_frame", "src_video", "src_mask", "src_ref_images", "input_reference",
               "extend"}
# Ranges of the server's own fields (the pipeline's are openwan.validate's).
LIMITS = {"seconds": (0.0, 600.0)}
MAX_SIDE = 4096                           # pixels, per side of 'size'
# Types of the usual arguments (others are read from the pipeline's signature).
KNOWN = {"prompt": "str", "negative_prompt": "str", "size": "size", "frame_num": "int", "sample_steps": "int",
         "sample_shift": "float", "guide_scale": "scale", "guide_boundary": "float", "guide_method": "str",
         "sample_solver": "str",
         "seed": "int",
         "cfg_batch": "bool", "strict_size": "bool", "strength": "float", "src_fps": "float", "seconds": "seconds",
         "model": "str", "lora": "any", "step_cache": "any", "long_method": "str", "long_overlap": "int",
         "long_expert": "bool",
         "long_context_noise": "float", "long_refine": "float", "long_riflex": "any", "prompt_extend": "str",
         "two_objects": "str"}


class RequestError(ValueError):
    """A client error: answered with status 400 and ``{"error": message}``."""


def parameter_kinds(pipe) -> dict[str, str]:
    """name -> kind ("str", "int", "float", "bool", "size", "file", "any") of what ``pipe(...)`` takes.

    A ``__call__`` that passes ``**kw`` on (t2i) takes its parent's arguments too; t2i fixes frame_num.
    """
    kinds, open_kw = {}, True
    for cls in type(pipe).__mro__:
        if not open_kw or "__call__" not in vars(cls):
            continue
        open_kw = False
        for name, p in inspect.signature(vars(cls)["__call__"]).parameters.items():
            if p.kind == p.VAR_KEYWORD:
                open_kw = True
            if name in RESERVED or name in kinds or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            m = re.fullmatch(r"(?:Optional\[)?(bool|int|float|str)\]?", str(p.annotation).replace("'", ""))
            kinds[name] = KNOWN.get(name) or ("file" if name in FILE_FIELDS else m.group(1) if m else "any")
    if getattr(pipe, "task", None) == "t2i":
        kinds.pop("frame_num", None)
    return kinds


def _number(name: str, v: Any, kind: str):
    # bool is an int in Python, never a number here: `seed: true` is a mistake, not seed 1.
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind == "int" and not isinstance(v, int)):
        raise RequestError(f"{name!r} must be {'an integer' if kind == 'int' else 'a number'}, got "
                           f"{type(v).__name__} {v!r:.40}")
    if isinstance(v, float) and not math.isfinite(v):
        raise RequestError(f"{name!r} must be finite, got {v}")
    lo, hi = LIMITS.get(name, (None, None))
    if lo is not None and not lo <= v <= hi:
        raise RequestError(f"{name!r} must be in [{lo}, {hi}], got {v}")
    return v


def _size(v: Any, sizes) -> str:
    if not isinstance(v, str):
        raise RequestError(f"'size' must be a string \"WIDTHxHEIGHT\" (or W*H), e.g. \"{(sizes or ['832*480'])[0]}\", "
                           f"got {type(v).__name__} {v!r:.40}")
    parts = v.lower().replace("x", "*").split("*")
    if len(parts) != 2 or not all(p.strip().isdigit() and len(p.strip()) <= 5 for p in parts):
        raise RequestError(f"'size' {v!r:.40} is not of the form WIDTHxHEIGHT, e.g. \"{(sizes or ['832*480'])[0]}\"")
    w, h = int(parts[0]), int(parts[1])
    if not (16 <= w <= MAX_SIDE and 16 <= h <= MAX_SIDE):
        raise RequestError(f"'size' {w}x{h}: each side must be in [16, {MAX_SIDE}] pixels")
    return f"{w}*{h}"


def field_paths(field: str, value) -> list:
    """The paths a checked file field names (check_request: one path or a list of them); ``src_ref_images`` as a
    string is the comma-separated form."""
    if isinstance(value, str):
        return [p.strip() for p in value.split(",")] if field == "src_ref_images" else [value.strip()]
    return list(value)


def check_request(req: Any, kinds: dict[str, str], *, fps: float, sizes=(), taker: str = "this server") -> dict:
    """The request as pipeline keyword arguments (``seconds`` -> ``frame_num``), or RequestError (``taker``: what
    the unknown-field message says takes the fields)."""
    if not isinstance(req, dict):
        raise RequestError("the body must be a JSON object, e.g. {\"prompt\": \"a red circle moving to the right\"}")
    allowed = set(kinds) | {"model"} | ({"seconds"} if "frame_num" in kinds else set()) | \
        ({"input_reference"} if "image" in kinds else set())
    unknown = sorted(set(req) - allowed)
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; {taker} takes {sorted(allowed)}")
    out: dict[str, Any] = {}
    for name, v in req.items():
        kind = kinds.get(name) or KNOWN.get(name) or "file"
        if v is None and name != "prompt":
            continue                                                 # null = the default
        if name == "prompt" and isinstance(v, list):      # a long video's prompt schedule, one item per part
            from openwan.long_video import LongVideoError, schedule_text
            try:
                v = schedule_text(v)                         # the "A | B" text the pipeline reads and records
            except LongVideoError as e:
                raise RequestError(f"'prompt': {e}") from None
        if kind == "str":
            if not isinstance(v, str):
                raise RequestError(f"{name!r} must be a string, got {type(v).__name__} {v!r:.40}")
            if len(v) > 10000:
                raise RequestError(f"{name!r} is {len(v)} characters; at most 10000")
        elif kind in ("int", "float"):
            v = _number(name, v, kind)
        elif kind == "scale":        # one number, or [low, high] (A14B experts; one DiT: with guide_boundary)
            if isinstance(v, list):
                if len(v) != 2:
                    raise RequestError(f"{name!r} must be a number or a pair [low-noise, high-noise], got {v!r:.40}")
                v = tuple(_number(name, x, "float") for x in v)
            else:
                v = _number(name, v, "float")
        elif kind == "bool":
            if not isinstance(v, bool):
                raise RequestError(f"{name!r} must be true or false, got {type(v).__name__} {v!r:.40}")
        elif kind == "size":
            v = _size(v, sizes)
        elif kind == "seconds":
            if isinstance(v, str):                                  # OpenAI sends "4"
                try:
                    v = float(v)
                except ValueError:
                    raise RequestError(f"'seconds' must be a number (e.g. \"4\"), got {v!r:.40}") from None
            v = _number(name, v, "float")
        elif kind == "file":
            if not isinstance(v, str) and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                raise RequestError(f"{name!r} must be a path on the server (a string) or an uploaded file")
        out[name] = v
    if not isinstance(out.get("prompt"), str) or not out["prompt"].strip():
        raise RequestError("\"prompt\" (a non-empty string, or a list of them: a long video's schedule) is required")
    if "model" in out:
        out.pop("model")                                             # one model per server; the reply names it
    if "input_reference" in out:
        if "image" in out:
            raise RequestError("give the i2v image as 'image' or 'input_reference', not both")
        out["image"] = out.pop("input_reference")
    if "seconds" in out:
        if "frame_num" in out:
            raise RequestError("give 'seconds' or 'frame_num', not both")
        n = max(1, round(out.pop("seconds") * fps))
        out["frame_num"] = 4 * round((n - 1) / 4) + 1               # Wan takes 4n+1 frames
    if out.get("frame_num") is not None:
        from openwan.pipelines.job import check_frames
        try:
            check_frames(out["frame_num"])
        except ValueError as e:
            raise RequestError(str(e)) from None
    return out
