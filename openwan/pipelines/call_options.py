"""The options every task's call takes besides its own arguments (:data:`CALL_OPTIONS`: LoRA adapters, the
written video's frame rate, long video past the model's native length, tiled decoding and diffusers'
argument names), handled in one place for every pipeline by :class:`CallOptions`.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from typing import TYPE_CHECKING, Optional

import torch

from openwan.validate import output_fps

if TYPE_CHECKING:
    from openwan.pipelines.job import Job

# Options every task's call takes besides its own arguments (handled in one place: WanPipeline._call_options).
# lora: "FILE[:STRENGTH]" or a list of them (openwan.pipelines.adapters); fps: the written video's frame rate;
# extend (a video file, uint8 [F, H, W, 3] array or list of frames): the video continued to frame_num frames in all
# (openwan.pipelines.extend; default frame_num: the source's and one native length more);
# long_method ("windows", "continue", "none"; default: the variant's, else windows) and long_overlap (latent
# frames): frame_num beyond the model's native length (openwan.long_video); long_expert (True / False; default:
# True where the checkpoint has a continuation expert): the expert on the later windows of ``continue``;
# long_context_noise (0 <= sigma < 1; default: the variant's with the expert, else 0): ``continue`` on a TI2V model
# gives the carried frames at noise level sigma and says so in their timestep (Diffusion Forcing); long_refine
# (0 <= sigma < 1; default: the variant's under ``continue``, else 0): after ``continue``, the whole latent noised to
# sigma and denoised again by the ``windows`` method, redrawing the seams (openwan.pipelines.long.refine); long_riflex
# (True: the model's frequency; an int k; default off): with long_method="none", RIFLEx on the DiT's RoPE for the one
# call over every latent frame (openwan.models.dit_layers.rope_angles); prompt_extend
# ("world" / "off"; default: the variant's): the prompt rewritten into the model's training wording
# (openwan.prompt_extend); tile: VAE decode in spatial tiles (pixels, or True for 256); guide_boundary: with
# guide_scale=(low, high), the guidance interval's switch (openwan.denoiser.Guidance); guide_method ("cfg" or
# "cfg-zero-star"; default cfg): how a guided step combines its two passes (Guidance.method); height/width/num_frames/
# num_inference_steps/guidance_scale/generator: diffusers' names (and its return_dict; num_videos_per_prompt 1 only);
# two_objects ("compose" / "expert"; default compose): how the embedded demo draws a prompt naming two objects, up to
# 4 (openwan.pipelines.compose), or two with its two-object expert.
CALL_OPTIONS = ("lora", "fps", "extend", "long_method", "long_overlap", "long_expert", "long_context_noise",
                "long_refine", "long_riflex", "prompt_extend", "tile", "guide_boundary", "guide_method", "height",
                "width", "num_frames", "num_inference_steps", "guidance_scale", "generator", "two_objects",
                "return_dict", "num_videos_per_prompt")
TWO_OBJECT_METHODS = ("compose", "expert")
# diffusers' names for openwan's arguments (pipe(prompt, height=480, width=832, num_frames=81, ...))
DIFFUSERS_NAMES = {"num_frames": "frame_num", "num_inference_steps": "sample_steps", "guidance_scale": "guide_scale"}


def _diffusers_output(kwargs: dict) -> bool:
    """diffusers' output arguments, removed from kwargs: ``return_dict`` (False: the call returns ``(frames,)``, as
    diffusers' pipelines do) is returned; ``num_videos_per_prompt`` is 1 (or unset): a call makes one video."""
    return_dict = kwargs.pop("return_dict", None)
    if return_dict is not None and not isinstance(return_dict, bool):
        raise ValueError(f"return_dict must be True or False, got {return_dict!r}")
    n = kwargs.pop("num_videos_per_prompt", None)
    if n is not None and (isinstance(n, bool) or n != 1):
        raise ValueError(f"num_videos_per_prompt={n!r}: a call makes one video; for several, call once per video "
                         f"with seeds of their own (seed=0, seed=1, ...)")
    return return_dict is not False


class CallOptions:
    """The per-call options of :class:`~openwan.pipelines.base.WanPipeline` (its base class): every subclass's
    ``__call__`` takes :data:`CALL_OPTIONS` besides its own arguments, and its ``prepare`` applies them and
    checks every argument (openwan.validate) before any work. Uses the pipeline's ``_pending`` (a call's
    options, from ``__call__`` to ``prepare``), ``_loras``, ``defaults()``, ``dit``, ``vae`` and
    ``encode_prompts``."""

    def __init_subclass__(cls, **kw):
        """Every task's ``prepare`` (which every call goes through) checks all its arguments first
        (openwan.validate), before any work."""
        super().__init_subclass__(**kw)
        prepare = cls.__dict__.get("prepare")
        if prepare is not None:
            @functools.wraps(prepare)
            def checked(self, prompt, *args, **kwargs):
                from openwan import validate
                if isinstance(prompt, (list, tuple)):       # a prompt schedule as a list: its "A | B" text
                    from openwan.long_video import schedule_text
                    prompt = schedule_text(prompt)
                self._call_options(kwargs)
                pending, self._pending = self._pending, {}
                fps, tile, long_opts = pending.get("fps"), pending.get("tile"), pending.get("long", {})
                native = self.defaults().frame_num
                outer = not getattr(self, "_preparing", False)     # t2i's prepare calls t2v's: keep the outer's
                source = whole = None
                if pending.get("extend") is not None and outer:     # a video to continue: read before any work
                    from openwan.pipelines import extend
                    extend.check_pipeline(self)
                    source = extend.read_source(pending["extend"], self.variant.sample.fps, native)
                    whole = kwargs.get("frame_num") or extend.default_frames(source, native)
                    kwargs = extend.job_arguments(self, source, kwargs, whole, long_opts)    # the job's own
                picture = next((kwargs[k] for k in ("src_ref_images", "image", "first_frame")
                                if kwargs.get(k) is not None), None)          # what a picture shows, for the extender
                original, (prompt, record) = prompt, (self._extend_prompt(prompt, pending.get("prompt_extend"), picture)
                                                      if outer else (prompt, None))    # (the outer's, extended)
                frames = kwargs.get("frame_num") or native
                long_on = source is not None or (frames > native and long_opts.get("method") != "none")
                boundary = pending.get("guide_boundary") if outer else self._guide_boundary
                kwargs = validate.for_pipeline(self, dict(kwargs, prompt=prompt, guide_boundary=boundary),
                                               dit_frames=native if long_on else None)
                boundary = kwargs.pop("guide_boundary")
                method = self._guide_method_option(pending.get("guide_method")) if outer else self._guide_method
                if outer:
                    self._guide_method = method
                    self._two_objects = self._two_object_method(pending.get("two_objects"))
                    self.warn_outside_world(original, look_given=bool(kwargs.get("src_ref_images")))   # as written
                    self._guide_boundary, self._preparing = boundary, True
                try:
                    job = prepare(self, kwargs.pop("prompt"), *args, **kwargs)
                finally:
                    if outer:
                        self._preparing = False
                if source is not None:
                    from openwan.pipelines import extend
                    extend.plan(self, job, source, prompt, long_opts, whole)
                else:
                    self._plan_long_video(job, prompt, native, long_opts)
                for part in job.parts or ():       # a composed scene's objects: each its own long video
                    self._plan_long_video(part, part.settings["prompt"], native, long_opts)
                if record is not None:
                    job.settings["prompt_extend"] = record
                if self._loras:
                    job.settings["lora"] = [dict(s) for s in self._loras]
                if fps is not None:
                    job.fps = job.settings["fps"] = fps
                if tile not in (None, False):
                    job.tile = job.settings["tile"] = tile
                return job
            cls.prepare = checked
        call = cls.__dict__.get("__call__")
        if call is not None:
            @functools.wraps(call)
            def with_options(self, prompt, *args, **kwargs):
                outer = not getattr(self, "_calling", False)     # t2i's __call__ calls t2v's: keep its options
                return_dict = _diffusers_output(kwargs)
                if outer:
                    self._pending, self._calling = {}, True
                try:
                    self._call_options(kwargs)
                    out = call(self, prompt, *args, **kwargs)
                    return out if return_dict else (out.frames,)
                finally:
                    if outer:
                        self._calling = False
            sig = inspect.signature(call)
            extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None)
                     for name in CALL_OPTIONS if name not in sig.parameters]
            params = list(sig.parameters.values())
            tail = [q for q in params if q.kind == inspect.Parameter.VAR_KEYWORD]
            head = [q for q in params if q.kind != inspect.Parameter.VAR_KEYWORD]
            with_options.__signature__ = sig.replace(parameters=head + extra + tail)
            cls.__call__ = with_options

    def composes_scenes(self) -> bool:
        """Whether this pipeline draws a prompt of two objects as a composed scene (openwan.pipelines.compose):
        the embedded demo's TI2V-style models (TextImageToVideo says)."""
        return False

    def _two_object_method(self, value):
        """The call's ``two_objects``, checked: None (the default), or one of :data:`TWO_OBJECT_METHODS` on a
        pipeline that :meth:`composes_scenes`."""
        if value is None:
            return None
        if value not in TWO_OBJECT_METHODS:
            raise ValueError(f"two_objects must be one of {list(TWO_OBJECT_METHODS)} (or None: compose), got "
                             f"{value!r}")
        if not self.composes_scenes():
            raise ValueError(f"two_objects chooses how the embedded demo (its TI2V-style models: demo, demo-4step) "
                             f"draws a prompt naming two objects; {self.variant.name} ({self.task}) does not take "
                             f"it: leave it unset")
        return value

    def picture_look(self, picture):
        """(color, shape) of the object in a call's picture, for the prompt extension; None here (a pipeline that
        takes pictures of the demo's world reads them: TextImageToVideo)."""
        return None

    def _extend_prompt(self, prompt, value, picture=None) -> tuple:
        """(the prompt the model is given, its settings record): openwan.prompt_extend with the call's
        ``prompt_extend`` over the variant's default; ``picture`` (the call's reference picture or first frame,
        as given) for a prompt that does not say what the object looks like. Recorded: ``{"method",
        "original"}`` when the extension changed the prompt, "off" when the call turned the variant's default
        off, else nothing (None)."""
        from openwan import prompt_extend
        from openwan.pipelines.routing import is_demo
        default = self.defaults().prompt_extend
        method = prompt_extend.resolve(value, default, self.variant.name, is_demo(self.variant.name))
        if method is None:
            return prompt, ("off" if default is not None else None)
        look = None if picture is None else (lambda: self.picture_look(picture))     # read only if needed
        out = prompt_extend.extend(prompt, method, look)
        return out, (None if out == prompt else {"method": method, "original": prompt})

    def long_video_defaults(self, method=None, overlap=None) -> tuple:
        """(method, overlap) of a long video on this pipeline's model: openwan.long_video.model_defaults."""
        from openwan.long_video import model_defaults
        return model_defaults(self.defaults(), method, overlap)

    def _plan_long_video(self, job: "Job", prompt: str, native: int, opts: dict) -> None:
        """Past the native length: the window plan, each window's conditioning (and prompt of a schedule)."""
        from openwan.long_video import latent_frames, plan_long_video
        method = opts.get("method")
        if method in (None, "auto") and job.post_step is not None and not hasattr(self, "continued_window"):
            method = "windows"    # a task with its own per-step conditioning (masked v2v): one trajectory over its
            #                       whole source by default; long_method="continue" carries it window by window
        method, overlap = self.long_video_defaults(method, opts.get("overlap"))
        long = plan_long_video(job.settings.get("frame_num", native), native, method, overlap, prompt,
                               self.vae.temporal_ratio)
        expert, noise, refine = self._continue_options(opts, method)
        riflex = self._riflex_option(opts)
        total = latent_frames(job.settings.get("frame_num", native), self.vae.temporal_ratio)
        window = latent_frames(native, self.vae.temporal_ratio)
        if long is None and not (method == "none" and total > window):
            given = [f"long_{k}" for k, v in (("method", opts.get("method") not in (None, "auto", "none")),
                                                ("overlap", opts.get("overlap") is not None), ("expert", expert),
                                                ("context_noise", noise), ("refine", refine), ("riflex", riflex)) if v]
            if given:                   # the native length: today's single pass, which these (set, not off) never touch
                warnings.warn(f"{', '.join(given)} had no effect: {job.settings.get('frame_num', native)} frames fit "
                              f"the model's native length ({native} frames), which is made in one pass; the long-video "
                              f"options apply to a longer frame_num")
            self._warn_unshared(None)
            return
        name = "none" if long is None else long.method   # none: past the native length in one call
        if refine and name not in ("continue", "rolling"):
            raise ValueError(f"long_refine redraws the seams of long_method='continue' (or 'rolling') with a windows "
                             f"pass; this call is {name!r}: use long_method='continue' or leave long_refine unset")
        if name == "rolling" and not hasattr(self, "continued_window"):
            raise ValueError(f"long_method='rolling' gives each frame its own noise level (timestep per token): it "
                             f"needs a TI2V-style model (task ti2v: the embedded demo, Wan 2.2 TI2V-5B); this call is "
                             f"the {self.task} task: use long_method='continue' or 'windows'")
        if name == "rolling" and getattr(job.cond, "last_frame", None) is not None:
            raise ValueError("long_method='rolling' makes the video one frame at a time after its first window and has "
                             "no window that ends at a last picture: for first-last-frame-to-video past the native "
                             "length use long_method='continue'")
        if noise and (name != "continue" or not hasattr(self, "continued_window")):
            raise ValueError("long_context_noise gives the frames a 'continue' window carries over at a noise level "
                             "a TI2V-style model is told of: it needs long_method='continue' and a TI2V model (task "
                             f"ti2v); this call is {name!r} on the {self.task} task: leave it unset")
        if expert and name not in ("continue", "rolling"):
            raise ValueError(f"long_expert=True runs the continuation expert on the later windows of "
                             f"long_method='continue' (or the ladder of 'rolling'), not {name!r}: use "
                             f"long_method='continue'")
        if riflex and long is not None:
            raise ValueError(f"long_riflex changes the DiT's RoPE for one call over more latent frames than it was "
                             f"trained on (long_method='none'); the {name!r} method runs windows of the native length, "
                             f"which need none: use long_method='none' or leave long_riflex unset")
        if long is None and opts.get("overlap") is not None:
            raise ValueError("long_overlap is the latent frames neighbouring windows share; long_method='none' makes "
                             "the video in one call, without windows: leave long_overlap unset")
        if long is None:                              # recorded, so that --from replays it as one call
            job.settings["long_video"] = {"method": "none", "latent_frames": total, "window": window}
            if riflex:
                k = self._riflex_index(riflex, window)
                job.cond = dataclasses.replace(job.cond, riflex=(k, total))
                job.settings["long_video"]["riflex"] = k
            self._warn_unshared(None)
            return
        if long.method == "rolling" and self.c.dit_rolling is None:
            warnings.warn(f"long_method='rolling': {self.c.source or 'this checkpoint'} has no rolling expert (a "
                          f"rolling_model/ folder, a DiT trained on frames at a ladder of noise levels: "
                          f"docs/long_video.md, 'Rolling'); its main DiT runs the ladder, which it was not trained for",
                          stacklevel=5)
        if long.method in ("continue", "rolling"):
            if refine is None:              # the variant's pass (v2v too: without it every long v2v measured had a
                refine = self.defaults().long_refine      # seam jump above its motion, docs/long_video.md)
            long = self._with_continue_options(long, expert, noise, refine)
        self._warn_unshared(long)
        self._attach_long_video(job, long)

    def _warn_unshared(self, long) -> None:
        """Under window parallel (openwan.parallel.windows), a warning where the call runs no windows to share: one
        DiT call (``long`` None), or ``continue`` windows without the refinement pass."""
        if getattr(self, "window_share", None) is None or (long is not None and (long.method == "windows"
                                                                                 or long.refine)):
            return
        what = "one DiT call" if long is None else "continue windows, one after another, without a refinement pass"
        warnings.warn(f"window parallel shares the windows of long_method='windows' and of the 'continue' method's "
                      f"refinement pass; this call is {what}, so every process runs all of it (with 2 processes, "
                      f"--cfg_parallel splits every guided pass instead)", stacklevel=6)

    def long_expert(self, method: Optional[str]) -> tuple:
        """(name, folder, DiT) of the expert a long video of ``method`` runs after its first window: the checkpoint's
        rolling expert for ``rolling``, else its continuation expert (components.EXPERTS; the DiT None where the
        checkpoint has none)."""
        from openwan.pipelines.components import EXPERTS
        name = "rolling" if method == "rolling" else "continuation"
        _, folder, field = next(e for e in EXPERTS if e[0] == name)
        return name, folder, getattr(self.c, field)

    def long_expert_dit(self, method: Optional[str]):
        """The DiT of :meth:`long_expert` (None where the checkpoint has none)."""
        return self.long_expert(method)[2]

    def _continue_options(self, opts: dict, method: Optional[str] = "continue") -> tuple:
        """The call's (long_expert, long_context_noise, long_refine), each checked (None where not given)."""
        expert = opts.get("expert")
        if expert is not None and not isinstance(expert, bool):
            raise ValueError(f"long_expert must be True or False (or None: the checkpoint's default), got {expert!r}")
        name, folder, dit = self.long_expert(method)
        if expert and dit is None:
            raise ValueError(f"long_expert=True: {self.c.source or 'this checkpoint'} has no {name} expert (a "
                             f"{folder}/ folder); leave long_expert unset")
        noise = self._noise_level(opts, "context_noise", "the carried frames' noise level")
        refine = self._noise_level(opts, "refine", "the noise level the refinement pass starts from")
        return expert, noise, refine

    @staticmethod
    def _guide_method_option(value):
        """The call's ``guide_method`` (None: "cfg"), checked against :data:`openwan.denoiser.GUIDE_METHODS`."""
        from openwan.denoiser import GUIDE_METHODS
        if value is None:
            return "cfg"
        if value not in GUIDE_METHODS:
            raise ValueError(f"guide_method must be one of {list(GUIDE_METHODS)} (cfg: classifier-free guidance; "
                             f"cfg-zero-star: CFG-Zero*'s optimized scale and zero first step), got {value!r}")
        return value

    @staticmethod
    def _riflex_option(opts: dict):
        """The call's ``long_riflex``: None / False (off), True (the model's frequency) or a frequency index >= 1."""
        value = opts.get("riflex")
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int) and value >= 1:
            return value
        raise ValueError(f"long_riflex must be True (the model's RoPE frequency), False, or the frequency's index "
                         f"(an integer >= 1, 1 the fastest), got {value!r}")

    def _riflex_index(self, riflex, window: int) -> int:
        """The frame-axis RoPE frequency RIFLEx lowers: the model's (``True``) or the one given, checked."""
        from openwan.models.dit_layers import riflex_index, rope_axis_dims
        head_dim = self.dit.config.head_dim
        n = rope_axis_dims(head_dim)[0] // 2
        k = riflex_index(head_dim, window) if riflex is True else riflex
        if k > n:
            raise ValueError(f"long_riflex={k}: the DiT's frame axis has {n} RoPE frequencies (1 the fastest); give "
                             f"one of 1-{n}, or True for the model's own ({riflex_index(head_dim, window)})")
        return k

    def _with_continue_options(self, long, expert, noise, refine):
        """A ``continue`` (or ``rolling``) plan with its options: the refinement pass from ``refine`` (0 / None: none),
        the checkpoint's continuation (rolling) expert unless ``expert`` is False (with a LoRA in use: the main DiT,
        with a warning), the carried frames' noise level (default: the continuation expert's own)."""
        if refine:
            long = dataclasses.replace(long, refine=float(refine))
        name, _, dit = self.long_expert(long.method)
        if dit is not None and expert is not False:
            if self._loras:     # adapters are applied to the main DiT: its windows all run it
                warnings.warn(f"a LoRA is in use: the long video's windows all run the main DiT, not the {name} "
                              f"expert", stacklevel=5)
            else:
                long = dataclasses.replace(long, expert=True)
        if noise is None and long.expert and long.method == "continue":   # the expert's own: what it was trained for
            noise = self.defaults().long_context_noise
        if noise:
            if not hasattr(self, "continued_window"):
                raise ValueError("long_context_noise gives the frames a 'continue' window carries over at a noise "
                                 "level a TI2V-style model is told of: it needs a TI2V model (task ti2v); leave it "
                                 "unset")
            long = dataclasses.replace(long, context_noise=float(noise))
        return long

    def _attach_long_video(self, job: "Job", long) -> None:
        """``job`` runs ``long``: each window's conditioning (its prompt's features under a schedule), recorded."""
        from openwan.long_video import window_conditions
        contexts = None
        if long.prompts:
            unique = list(dict.fromkeys(long.prompts))
            feats = dict(zip(unique, self.encode_prompts(unique)))
            contexts = [feats[p] for p in long.prompts]
        job.long, job.window_conds = long, window_conditions(job.cond, long.plan, contexts)
        job.settings["long_video"] = long.settings()

    @staticmethod
    def _noise_level(opts: dict, key: str, what: str):
        """``opts[key]`` checked as a noise level in [0, 1) (None when not given)."""
        value = opts.get(key)
        if value is None:
            return None
        from openwan import validate          # as validate checks guide_boundary: [0, 1] by number(), then the open end
        expect = f"a number in [0, 1) ({what})"
        level = validate.number(value, f"long_{key}", 0.0, 1.0, expect=expect)
        if level >= 1.0:
            raise validate.InvalidArgument(f"long_{key}", f"long_{key} must be {expect}, got {value!r}")
        return level

    @staticmethod
    def _diffusers_names(kwargs: dict) -> None:
        """Rename diffusers' argument names to openwan's in place (an argument given both ways is an error)."""
        def put(name, value, given):
            if kwargs.get(name) is not None:
                raise ValueError(f"{given} and {name} name the same setting: give one of them")
            kwargs[name] = value
        for theirs, ours in DIFFUSERS_NAMES.items():
            if theirs in kwargs:
                value = kwargs.pop(theirs)
                if value is not None:
                    put(ours, value, theirs)
        h, w = kwargs.pop("height", None), kwargs.pop("width", None)
        if h is not None or w is not None:
            if h is None or w is None:
                raise ValueError("height and width go together (or give size='W*H')")
            put("size", (w, h), "height/width")
        gen = kwargs.pop("generator", None)
        if gen is not None:
            if not isinstance(gen, torch.Generator):
                raise ValueError(f"generator must be a torch.Generator (or give seed=), got {type(gen).__name__}")
            put("seed", int(gen.initial_seed()) % 2**63, "generator")

    def _call_options(self, kwargs: dict) -> None:
        """Apply the per-call options every task takes (:data:`CALL_OPTIONS`), removing them from kwargs."""
        self._diffusers_names(kwargs)
        if "tile" in kwargs:
            self._pending["tile"] = kwargs.pop("tile")
        if "guide_boundary" in kwargs:
            self._pending["guide_boundary"] = kwargs.pop("guide_boundary")
        if "guide_method" in kwargs:
            self._pending["guide_method"] = kwargs.pop("guide_method")
        if "prompt_extend" in kwargs:
            self._pending["prompt_extend"] = kwargs.pop("prompt_extend")
        if "two_objects" in kwargs:
            self._pending["two_objects"] = kwargs.pop("two_objects")
        if "extend" in kwargs:
            self._pending["extend"] = kwargs.pop("extend")
        if "fps" in kwargs:
            fps = kwargs.pop("fps")
            self._pending["fps"] = None if fps is None else output_fps(fps)
        for key in ("long_method", "long_overlap", "long_expert", "long_context_noise", "long_refine", "long_riflex"):
            if key in kwargs:
                value = kwargs.pop(key)
                if value is not None:
                    self._pending.setdefault("long", {})[key[len("long_"):]] = value
        if "lora" in kwargs:
            lora = kwargs.pop("lora")
            if lora is not None or self._loras:
                from openwan.pipelines.adapters import use_loras, use_loras_on_experts
                experts = getattr(self, "experts", None)
                self._loras = use_loras_on_experts(experts, lora) if experts else use_loras(self.dit, lora)
