"""The model call as an object: ``Denoiser(dit, conditioning, guidance)(x, step) -> velocity``.

    cond = Conditioning(context, context_null, y=y, clip_fea=clip_fea)     # per-sample, no batch dim
    d = Denoiser(dit, cond, Guidance(scale=5.0))                            # CFG: cond + uncond in one pass
    d = StepCache(d)                                                         # wrappers compose, k-diffusion style
    latent = sampling.run(d, noise, sigmas, "unipc")

:class:`Conditioning` holds everything the DiT is conditioned on besides ``x`` and ``t``, and knows how
to batch itself (``.batch(n)``: the DiT keyword arguments for n samples) and to slice itself in time
(``.frames(a, b)``: the latent frames a..b of the per-frame conditionings, for windows over a long
video). :class:`Denoiser` is the guided call; :class:`Wrapper` is the base of every wrapper (step cache,
expert switch, windows, guidance-free students): it forwards the call and every attribute to ``inner``.

Context cache: a Denoiser over a DiT that takes ``ctx_cache=`` (:class:`~openwan.models.dit.WanModel`) keeps a
:class:`~openwan.models.context_cache.ContextCache` for its lifetime (one generation): the text/image context's
embedding and every block's cross-attention keys and values are computed at the first step and reused (the
same tensors: outputs bit-identical). ``Denoiser(..., ctx_cache=False)`` turns it off.

Counting: every Denoiser keeps ``stats`` = {"dit_forwards", "dit_forwards_skipped"}: a DiT forward pass
is one call of the DiT (a batched cond + uncond pass counts once; unbatched CFG makes two per step).
A wrapper that skips a step adds the passes the step would have made (``passes``) to the skipped count.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

from openwan.models.context_cache import ContextCache
from openwan.sampling import Step, cfg, cfg_zero_star

__all__ = ["Conditioning", "Guidance", "Denoiser", "Wrapper", "Step", "GUIDE_METHODS"]

# How a guided step combines its two passes (Guidance.method): classifier-free guidance, or CFG-Zero*.
GUIDE_METHODS = ("cfg", "cfg-zero-star")


def _repeat(v: torch.Tensor, n: int) -> torch.Tensor:
    """[...] -> [n, ...] (n copies)."""
    return v[None] if n == 1 else torch.stack([v] * n)


@dataclass
class Conditioning:
    """What the DiT is conditioned on, per sample (no batch dim).

    context, context_null: text features [L, text_dim] of the prompt and the negative prompt (None: no CFG);
    clip_fea: CLIP image features [N_img, 257, image_dim] (it carries its own leading dim: flf2v has 2);
    y: i2v/flf2v mask + image latent [4 + 16, F, H, W]; vace_context: [96, F, H, W], vace_scale its weight;
    riflex: (k, latent frames) for one call past the native length (the DiT's RoPE, dit_layers.rope_angles).
    """
    context: torch.Tensor
    context_null: Optional[torch.Tensor] = None
    clip_fea: Optional[torch.Tensor] = None
    y: Optional[torch.Tensor] = None
    vace_context: Optional[torch.Tensor] = None
    vace_scale: float = 1.0
    riflex: Optional[tuple] = None

    def batch(self, n: int) -> dict:
        """The DiT's keyword arguments for a batch of ``n`` samples with this conditioning (text apart:
        see :meth:`contexts`). Absent inputs are left out."""
        kw = {}
        if self.y is not None:
            kw["y"] = _repeat(self.y, n)
        if self.clip_fea is not None:
            kw["clip_fea"] = self.clip_fea if n == 1 else torch.cat([self.clip_fea] * n)
        if self.vace_context is not None:
            kw["vace_context"] = _repeat(self.vace_context, n)
            kw["vace_context_scale"] = self.vace_scale
        if self.riflex is not None:
            kw["riflex"] = self.riflex
        return kw

    def contexts(self, guided: bool) -> list[torch.Tensor]:
        """Text contexts of one pass: [cond] or [cond, uncond] (the batched CFG order)."""
        return [self.context, self.context_null] if guided else [self.context]

    def frames(self, a: int, b: int) -> "Conditioning":
        """The latent frames ``a:b`` of the per-frame conditionings (y, vace_context); text and CLIP
        features are global and kept (a window is the native length: no RIFLEx)."""
        def cut(v):
            return None if v is None else v[:, a:b]
        return replace(self, y=cut(self.y), vace_context=cut(self.vace_context), riflex=None)   # windows: native

    def to(self, device) -> "Conditioning":
        def mv(v):
            return v.to(device) if torch.is_tensor(v) else v
        return replace(self, context=mv(self.context), context_null=mv(self.context_null), clip_fea=mv(self.clip_fea),
                       y=mv(self.y), vace_context=mv(self.vace_context))


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance: ``scale`` (1 = none) and whether cond + uncond share one batched pass.

    A guidance interval: ``scale=(low, high)`` with ``boundary`` b in (0, 1) guides at ``high`` while the
    step's timestep t >= b x 1000 (the high-noise steps, where layout, colour and motion are decided) and at
    ``low`` below (where a strong scale distorts detail: Kynkaanniemi et al. 2024, "Applying guidance in a
    limited interval"); the same rule as Wan 2.2 A14B's two experts. A step at scale 1 makes the cond pass
    only. (The A14B pipelines read a pair as one scale per expert and switch experts at their own boundary.)
    """
    scale: object = 1.0                 # float, or (low, high) with boundary
    cfg_batch: bool = True
    boundary: Optional[float] = None
    share: Optional[object] = None      # two processes: one pass each (openwan.parallel.cfg.CfgShare)
    method: str = "cfg"                 # or "cfg-zero-star" (GUIDE_METHODS)

    def combine(self, cond: torch.Tensor, uncond: torch.Tensor, scale: float, step: Step) -> torch.Tensor:
        """The guided velocity of a guided step: classifier-free guidance, or CFG-Zero* (its optimized scale, and
        zero velocity on the first step of a run from pure noise: its "zero-init", where the model's first estimate
        is least accurate; every solver's grid from noise starts above sigma 0.99, UniPC's at 0.9997; a
        video-to-video or refinement start below has none)."""
        if self.method == "cfg":
            return cfg(cond, uncond, scale)
        if step.i == 0 and float(step.sigma) > 0.99:
            return torch.zeros_like(cond)
        return cfg_zero_star(cond, uncond, scale)

    def guides(self, cond: "Conditioning", step: Optional[Step] = None) -> bool:
        """Whether ``step`` (None: any step) is guided: its scale is not 1 and ``cond`` has a negative context."""
        return self.scale_at(step) != 1.0 and cond.context_null is not None

    def scale_at(self, step: Optional[Step] = None) -> float:
        """The scale at ``step`` (the largest over ``step``'s timesteps, for per-token t); without a step, the
        largest scale used anywhere."""
        if not isinstance(self.scale, (tuple, list)):
            return float(self.scale)
        low, high = (float(v) for v in self.scale)
        if step is None:
            return high if abs(high - 1.0) >= abs(low - 1.0) else low
        if self.boundary is None:
            raise ValueError("a (low, high) guide scale needs a boundary (guide_boundary): the timestep fraction "
                             "above which the high scale applies, e.g. 0.9")
        return high if float(step.t.max()) >= self.boundary * 1000 else low


class Denoiser:
    """``Denoiser(dit, cond, guidance)(x, step)`` -> the guided velocity, float32 [C, F, H, W].

    ``x`` is one sample [C, F, H, W] (any dtype; cast to the DiT's). Guidance runs when the scale is not 1
    and there is a negative context: one batched forward of [cond, uncond] (``cfg_batch``), or two.
    """

    def __init__(self, dit, cond: Conditioning, guidance: Guidance = Guidance(), ctx_cache: bool = True):
        self.dit = dit
        self.cond = cond
        self.guidance = guidance
        self.dtype = next(dit.parameters()).dtype
        self.stats = {"dit_forwards": 0, "dit_forwards_skipped": 0}
        # a step cache inside the DiT (openwan.caches.blocks) puts its call here: (dit, x, t, contexts, kw) ->
        # (output, computed); a pass whose blocks it skipped counts as skipped
        self.dit_call: Optional[Callable] = None
        self.ctx_cache = ContextCache() if ctx_cache and getattr(dit, "accepts_ctx_cache", False) else None

    @property
    def guided(self) -> bool:
        """Whether any step is guided (a guidance interval may leave some at scale 1)."""
        return self.guided_at(None)

    def guided_at(self, step: Optional[Step]) -> bool:
        return self.guidance.guides(self.cond, step)

    @property
    def passes(self) -> int:
        """DiT forward passes one call makes (at most)."""
        return self.passes_at(None)

    def passes_at(self, step: Optional[Step]) -> int:
        """DiT forward passes the call at ``step`` makes (under CFG parallel: the two processes' together)."""
        unbatched = not self.guidance.cfg_batch or self.guidance.share is not None
        return 2 if self.guided_at(step) and unbatched else 1

    def _forward(self, x, t, contexts, kw):
        if self.ctx_cache is not None:
            kw = dict(kw, ctx_cache=self.ctx_cache)
        if self.dit_call is None:
            self.stats["dit_forwards"] += 1
            return self.dit(x, t, contexts, **kw)
        out, computed = self.dit_call(self.dit, x, t, contexts, kw)
        self.stats["dit_forwards" if computed else "dit_forwards_skipped"] += 1
        return out

    def __call__(self, x: torch.Tensor, step: Step) -> torch.Tensor:
        c, t, dt = self.cond, step.t, self.dtype
        guided, scale = self.guided_at(step), self.guidance.scale_at(step)
        share = self.guidance.share
        if guided and share is not None:        # this process's pass; the other's gathered (openwan.parallel.cfg)
            from openwan.parallel.share import counted
            context = c.context if share.rank == 0 else c.context_null
            cond, uncond = counted(self.stats, share, lambda: share.pair(
                self._forward(x[None].to(dt), t, [context], c.batch(1))[0].float()))
            return self.guidance.combine(cond, uncond, scale, step)
        if guided and self.guidance.cfg_batch:
            # [x, x] as a view (batch stride 0): the DiT patch-embeds it once
            out = self._forward(x.to(dt)[None].expand(2, *x.shape), t.expand(2, *t.shape[1:]), c.contexts(True),
                                c.batch(2))   # t [1] or per token [1, L]
            return self.guidance.combine(out[0].float(), out[1].float(), scale, step)
        kw = c.batch(1)
        cond = self._forward(x[None].to(dt), t, [c.context], kw)[0].float()
        if not guided:
            return cond
        uncond = self._forward(x[None].to(dt), t, [c.context_null], kw)[0].float()
        return self.guidance.combine(cond, uncond, scale, step)


class Wrapper:
    """Base of a denoiser wrapper: ``Wrapper(inner)(x, step)`` calls ``inner``; attributes it does not
    have (dit, cond, guidance, stats, passes...) are the inner denoiser's."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, x: torch.Tensor, step: Step) -> torch.Tensor:
        return self.inner(x, step)

    def __getattr__(self, name):
        if name == "inner":          # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.inner, name)
