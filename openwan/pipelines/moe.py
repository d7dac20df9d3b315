"""Wan 2.2 A14B: two experts of the 14B architecture switched by noise level (mixture of experts).

    step t >= boundary x 1000 -> high-noise expert, guide scale ``high``
    otherwise                 -> low-noise expert,  guide scale ``low``

One solver runs across the switch (its history is kept); both CFG passes of a step use the same expert.
:class:`ExpertSwitch` is that rule as a denoiser wrapper (:class:`openwan.denoiser.Wrapper`) over two
:class:`~openwan.denoiser.Denoiser` objects that share one :class:`~openwan.denoiser.Conditioning`.

Memory plan (``experts="one"``, the default): only the active expert is on the device; on a switch the
idle one goes to ``offload_device`` (the CPU) before the other comes in, so two experts run where one
fits (the reference's ``--offload_model``). ``experts="both"`` keeps both resident (faster switch).

    pipe = openwan.load_pipeline("Wan2.2-T2V-A14B")                   # official or diffusers folder
    video = pipe("a cat surfing", guide_scale=(3.0, 4.0)).frames[0]   # (low-noise, high-noise)
"""
from __future__ import annotations

from collections.abc import MutableMapping
from contextlib import contextmanager
from typing import Callable, Optional

import torch

from openwan.denoiser import Denoiser, Guidance, Wrapper
from openwan.pipelines.base import Sampling, WanPipeline
from openwan.pipelines.i2v import ImageToVideo
from openwan.pipelines.t2v import TextToVideo

EXPERTS = ("high", "low")


class ExpertSwitch(Wrapper):
    """``ExpertSwitch(high, low, boundary)(x, step)``: the high-noise denoiser while ``step.t >= boundary *
    1000`` (the reference's comparison, on the solver's integer timestep), else the low-noise one.

    ``activate(name)`` (optional) is called before an expert's forward: the pipeline's residency hook.
    ``used`` records the expert of every call; ``stats`` sums both experts' counts and adds
    ``dit_forwards_high`` / ``dit_forwards_low``. Attributes it lacks come from the active expert.
    """

    def __init__(self, high, low, boundary: float, activate: Optional[Callable[[str], None]] = None):
        if not 0 < boundary < 1:
            raise ValueError(f"boundary must be in (0, 1) (0.875 for T2V-A14B, 0.9 for I2V-A14B), got {boundary}")
        super().__init__(high)
        self.experts = {"high": high, "low": low}
        self.boundary = boundary
        self.activate = activate
        self.used: list[str] = []

    def expert_for(self, t) -> str:
        t = float(torch.as_tensor(t).flatten()[-1])     # per-token t: the noisy tokens' value
        return "high" if t >= self.boundary * 1000 else "low"

    def __call__(self, x: torch.Tensor, step) -> torch.Tensor:
        name = self.expert_for(step.t)
        if self.activate is not None:
            self.activate(name)
        self.inner = self.experts[name]
        self.used.append(name)
        return self.inner(x, step)

    @property
    def stats(self) -> "SwitchStats":
        return SwitchStats(self)


class SwitchStats(MutableMapping):
    """Both experts' counts summed, plus ``dit_forwards_high`` / ``_low``. Live: a wrapper that adds to a
    count (a step cache's ``stats["dit_forwards_skipped"] += n``) adds it to the active expert's."""

    def __init__(self, switch: ExpertSwitch):
        self.switch = switch

    def _all(self) -> dict:
        s = {"dit_forwards": 0, "dit_forwards_skipped": 0}
        for name, d in self.switch.experts.items():
            for k, v in d.stats.items():
                s[k] = s.get(k, 0) + v
            s[f"dit_forwards_{name}"] = d.stats.get("dit_forwards", 0)
        return s

    def __getitem__(self, k):
        return self._all()[k]

    def __setitem__(self, k, v):
        self.switch.inner.stats[k] = self.switch.inner.stats.get(k, 0) + v - self._all().get(k, 0)

    def __delitem__(self, k):
        raise TypeError("expert switch counts cannot be deleted")

    def __iter__(self):
        return iter(self._all())

    def __len__(self):
        return len(self._all())


def parse_guide_scales(value, default: tuple) -> tuple[float, float]:
    """None -> ``default``; one number -> both experts; (low, high) or "LOW,HIGH" -> as given."""
    if value is None:
        return tuple(float(v) for v in default)
    if isinstance(value, str):
        from openwan.validate import guide_scale_numbers
        try:
            nums = guide_scale_numbers(value)
        except ValueError as e:
            raise ValueError(f"guide scale: {e}; one number is both experts' scale") from None
        value = nums if len(nums) == 2 else nums[0]
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"guide scale {value!r}: give one number or a pair (low-noise, high-noise)")
        return float(value[0]), float(value[1])
    return float(value), float(value)


class MixtureOfExperts:
    """The two-expert part of the A14B pipelines (mixed into a task pipeline before it)."""

    two_experts = True

    def _init_experts(self, experts: str):
        if experts not in ("one", "both"):
            raise ValueError(f"experts must be 'one' (only the active expert on the device) or 'both', "
                             f"got {experts!r}")
        if self.c.dit_low is None:
            raise ValueError(f"the {self.variant.name} pipeline needs two experts (high_noise_model/ and "
                             f"low_noise_model/, or diffusers transformer/ and transformer_2/); this checkpoint "
                             f"has one DiT ({self.c.source})")
        self.experts = {"high": self.c.dit, "low": self.c.dit_low}
        self.experts_plan = experts
        self.experts_pinned: Optional[str] = None      # why both experts stay in place (pin_experts)
        self.boundary = self.c.boundary or self.defaults().boundary
        # On a CPU the device memory is the host memory: the idle expert is released and reloaded from its
        # file instead (openwan.release), when both came from float safetensors (not quantized / GGUF)
        self.expert_weights = None
        if experts == "one" and self.device == self.offload_device and len(self.c.dit_sources) == 2:
            from openwan.release import FileWeights
            self.expert_weights = {n: FileWeights(self.experts[n], src) for n, src in zip(EXPERTS, self.c.dit_sources)}
        elif any(p.is_meta for e in self.experts.values() for p in e.parameters()):
            raise ValueError("an expert's weights are not loaded (meta): load with load_components(..., "
                             "release_low=True) only for the CPU's experts='one' plan")

    def pin_experts(self, reason: str) -> None:
        """Keep both experts where they are from now on (plan "both"), both loaded: for experts sharded over
        processes (openwan.parallel.parallelize with dit_fsdp), whose weights FSDP2 keeps on the group's device."""
        if self.expert_weights is not None:
            for w in self.expert_weights.values():
                w.restore()
            self.expert_weights = None
        self.experts_plan = "both"
        self.experts_pinned = reason

    # -------------------------------------------------------------- residency
    def activate(self, name: str) -> None:
        """Put expert ``name`` on the device; under the "one" plan the other leaves first (on a CPU: its
        weights are released, and the active one's reloaded from its file if they were)."""
        active = self.experts[name]
        if self.offload == "blocks":      # each expert streams its blocks (openwan.offload): none moves whole
            return
        if self.expert_weights is not None:
            for other, w in self.expert_weights.items():
                if other != name:
                    w.release()
            self.expert_weights[name].restore()
            return
        if self.experts_plan == "one" and self.device != self.offload_device:
            for other in self.experts.values():
                if other is not active and self.where(other) != self.offload_device:
                    self.move(other, self.offload_device)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        if self.where(active) != self.device:
            self.move(active, self.device)

    @contextmanager
    def resident(self, module):
        """The experts' residency is per step (:meth:`activate`); the others' as the base plan."""
        if module is not self.dit:
            with WanPipeline.resident(self, module) as m:
                yield m
            return
        try:
            yield module
        finally:
            if self.offload == "sequential" and self.device != self.offload_device:
                for e in self.experts.values():
                    if self.where(e) != self.offload_device:
                        self.move(e, self.offload_device)

    # -------------------------------------------------------------- LoRA
    def load_lora(self, path_or_sd, expert: str = "both", strength: float = 1.0, name: Optional[str] = None,
                  strict: bool = True) -> str:
        """Attach a LoRA (any format :func:`openwan.training.lora.load_lora` reads, LightX2V included) to the
        ``expert`` "high", "low" or "both" (one file for both experts); returns the adapter name."""
        from openwan.training.lora import load_lora
        if expert not in ("high", "low", "both"):
            raise ValueError(f"expert must be 'high', 'low' or 'both', got {expert!r}")
        names = EXPERTS if expert == "both" else (expert,)
        for n in names:
            name = load_lora(self.experts[n], path_or_sd, strength=strength, name=name, strict=strict)
        return name

    # -------------------------------------------------------------- sampling
    def resolve_sampling(self, negative_prompt=None, sample_steps=None, sample_shift=None, guide_scale=None,
                         sample_solver=None, seed=None, *, width: int = 0, height: int = 0) -> Sampling:
        """As the base, with ``guide_scale`` resolved to (low-noise, high-noise)."""
        d = self.defaults()
        scales = parse_guide_scales(guide_scale, d.guide_scales or (d.guide_scale, d.guide_scale))
        sp = WanPipeline.resolve_sampling(self, negative_prompt, sample_steps, sample_shift, scales[1],
                                          sample_solver, seed, width=width, height=height)
        return Sampling(sp.steps, sp.shift, scales, sp.solver, sp.negative_prompt, sp.seed)

    def denoiser(self, cond, guidance: Guidance, step_cache=None, windows=None, dit=None):
        """Both experts' denoisers on the shared conditioning, under one :class:`ExpertSwitch` (each expert
        windowed for a long video). A continuation expert (``dit``) does not combine with the two."""
        from openwan.cache import step_cache_wrapper
        if dit is not None:
            raise ValueError("a continuation expert (continuation_model/) does not combine with Wan 2.2 A14B's two "
                             "experts: pass long_expert=False")
        low_s, high_s = guidance.scale if isinstance(guidance.scale, tuple) else (guidance.scale,) * 2

        def expert(name, scale):
            d = Denoiser(self.experts[name], cond, Guidance(scale, guidance.cfg_batch, share=guidance.share,
                                                        method=guidance.method))
            if windows is not None:
                from openwan.long_video import Windowed
                d = Windowed(d, *windows)
            return d
        d = ExpertSwitch(expert("high", high_s), expert("low", low_s), self.boundary, activate=self.activate)
        self.last_switch = d
        wrap = step_cache_wrapper(step_cache)
        return d if wrap is None else wrap(d)


class TextToVideoA14B(MixtureOfExperts, TextToVideo):
    """Wan 2.2 T2V-A14B: :class:`~openwan.pipelines.t2v.TextToVideo` with two experts.

    ``guide_scale``: one number for both experts, or (low-noise, high-noise) (default (3.0, 4.0)).
    """

    task = "t2v"

    def __init__(self, components, offload: str = "none", progress: bool = True, experts: str = "one"):
        super().__init__(components, offload=offload, progress=progress)
        self._init_experts(experts)


class ImageToVideoA14B(MixtureOfExperts, ImageToVideo):
    """Wan 2.2 I2V-A14B: 2.1's image-to-video conditioning without CLIP (y = first-frame mask + the 2.1 VAE
    latent of the image followed by zero frames; 36 input channels), on two experts. Shift 5 at every
    size, the plain negative prompt (no i2v prefix); the size rule is 2.1's (:func:`~openwan.pipelines.i2v.i2v_size`).
    """

    task = "i2v"

    def __init__(self, components, offload: str = "none", progress: bool = True, experts: str = "one"):
        WanPipeline.__init__(self, components, offload=offload, progress=progress)
        cfg = self.dit.config
        if cfg.model_type != "i2v" or cfg.has_image_input:
            raise ValueError(f"the i2v-A14B task needs Wan 2.2 I2V-A14B experts (model_type 'i2v', 36 input "
                             f"channels, no CLIP); this checkpoint's DiT is {cfg.model_type!r}"
                             f"{' with CLIP input (a Wan 2.1 I2V model: task i2v)' if cfg.has_image_input else ''}")
        self._init_experts(experts)

    def default_shift(self, width: int, height: int) -> float:
        return self.defaults().shift

    def default_negative_prompt(self) -> str:
        return self.defaults().negative_prompt

    def condition(self, images, frame_num: int, height: int, width: int) -> dict:
        from openwan.pipelines.i2v import image_condition
        known = [0] if len(images) == 1 else [0, frame_num - 1]
        with self.resident(self.vae) as vae:
            y = image_condition(vae, dict(zip(known, images)), frame_num, height, width).to(self.device)
        return {"y": y, "clip_fea": None}


def moe_pipeline(task: str) -> type:
    """The two-expert pipeline class of a task (t2v or i2v)."""
    table = {"t2v": TextToVideoA14B, "i2v": ImageToVideoA14B}
    if task not in table:
        raise ValueError(f"a two-expert (A14B) checkpoint runs the tasks t2v or i2v, not {task!r}")
    return table[task]


__all__ = ["ExpertSwitch", "MixtureOfExperts", "TextToVideoA14B", "ImageToVideoA14B", "parse_guide_scales",
           "moe_pipeline"]
