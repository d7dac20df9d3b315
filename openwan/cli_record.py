"""``openwan generate --from RECORD``: an earlier run's settings record (its .json, or the .mp4/.png that holds
it) read back into the command line's arguments, so the same command draws the same video; flags given on the
command line win over the record's."""
from __future__ import annotations

from pathlib import Path

# Flags whose values are recorded in a run's settings, with the name they have there.
SETTING_FLAGS = {"prompt": "prompt", "neg_prompt": "negative_prompt", "size": "size", "frame_num": "frame_num",
                 "sample_steps": "sample_steps", "sample_shift": "sample_shift",
                 "sample_guide_scale": "guide_scale", "sample_solver": "sample_solver", "base_seed": "seed",
                 "image": "image", "first_frame": "first_frame",
                 "last_frame": "last_frame", "src_video": "src_video", "src_mask": "src_mask",
                 "src_ref_images": "src_ref_images", "strength": "strength", "context_scale": "context_scale",
                 "src_fps": "src_fps", "step_cache": "step_cache", "lora": "lora", "fps": "fps", "dtype": "dtype",
                 "long_method": "long_method", "long_overlap": "long_overlap", "tile": "tile",
                 "guide_boundary": "guide_boundary", "guide_method": "guide_method", "two_objects": "two_objects",
                 "extend": "extend"}


def load_record(path: str) -> dict:
    """The settings recorded by an earlier run (its .json, or the .mp4/.png holding them), type-checked."""
    from openwan import validate
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--from {path}: file not found")
    if p.suffix.lower() in (".mp4", ".png"):
        from openwan.video import read_image_metadata, read_video_metadata
        meta = read_image_metadata(p) if p.suffix.lower() == ".png" else read_video_metadata(p)
    else:
        meta = validate.read_json(p, what="--from")
    return validate.settings_file(meta, path)


def apply_record(a, s: dict) -> None:
    """Fill the arguments ``a`` left unset from the settings record ``s`` (:data:`SETTING_FLAGS`, the long-video
    settings, the prompt extension, the two-object method, the task and the checkpoint), reading records written
    before a setting existed the way they were drawn."""
    inv = {v: k for k, v in SETTING_FLAGS.items()}
    for key, val in s.items():
        flag = inv.get(key)
        if flag and getattr(a, flag, None) is None and not (flag == "prompt" and a.prompt_pos):
            setattr(a, flag, val)
    if (a.prompt_extend is None and s.get("prompt_extend") is None and isinstance(s.get("prompt"), str)
            and not a.prompt_pos and a.prompt == s["prompt"]):
        from openwan.prompt_extend import extend    # a record from before prompt extension: the prompt as
        if extend(s["prompt"], "world") != s["prompt"]:     # the model read it (a newer record's is canonical)
            a.prompt_extend = "off"
    if a.prompt_extend is None and s.get("prompt_extend") == "off":     # the prompt as written, again
        a.prompt_extend = "off"
    long = s.get("long_video")
    if isinstance(long, dict):
        a.long_method = a.long_method if a.long_method is not None else long.get("method")
        a.long_overlap = a.long_overlap if a.long_overlap is not None else long.get("overlap")
        if a.long_expert is None and long.get("method") in ("continue", "rolling"):   # recorded when used
            a.long_expert = "on" if long.get("expert") else "off"
        if a.long_context_noise is None and long.get("method") == "continue":     # recorded when > 0
            a.long_context_noise = float(long.get("context_noise", 0.0))
        if a.long_refine is None and long.get("method") in ("continue", "rolling"):     # recorded when > 0
            a.long_refine = float(long.get("refine", 0.0))
        if a.long_riflex is None and long.get("method") == "none":        # recorded when on
            a.long_riflex = long.get("riflex", False)
    if (a.two_objects is None and "two_objects" not in s and str(s.get("variant", "")).startswith("demo")
            and s.get("task") == "ti2v"):         # a demo record from before composed scenes: its two-object
        from openwan.demo.world_captions import objects_named        # prompts ran the two-object expert
        if objects_named(s.get("prompt")) == 2 and not (a.image or a.first_frame or a.src_ref_images):
            a.two_objects = "expert"
    if a.task is None:
        if s.get("task") == "v2v":
            a.task = "v2v"
        elif s.get("variant") and not str(s["variant"]).startswith("custom-"):
            a.task = s["variant"]
    if a.ckpt_dir is None and s.get("checkpoint") and not str(s["checkpoint"]).endswith("demo_checkpoint"):
        a.ckpt_dir = s["checkpoint"]
    if a.dit is None and s.get("dit"):
        a.dit = s["dit"]


def recorded_prompt(video: str) -> str:
    """The prompt an openwan video was made with (its record: the mp4's metadata or the .json beside it), for
    ``--extend VIDEO`` without a prompt; a clear error where the video holds none."""
    from openwan.video import read_video_metadata
    try:
        meta = read_video_metadata(video)
    except (OSError, ValueError) as e:
        raise ValueError(f"no prompt given and {video}'s settings cannot be read ({e}): give the prompt") from None
    settings = meta.get("openwan", meta) if isinstance(meta, dict) else None
    prompt = settings.get("prompt") if isinstance(settings, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"no prompt: {video} holds no openwan record to take it from; give the prompt "
                         f"(openwan generate \"...\" --extend {video})")
    return prompt
