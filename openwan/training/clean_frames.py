"""Training with clean frames: one model for text-to-video, image-to-video, first-last-frame and continuation.

Wan 2.2 TI2V-5B's way of conditioning on pictures: no extra input channels; the known latent frames stand in the
noisy latent clean, the DiT sees timestep 0 on their tokens (per-token timesteps [B, L]) and the step's t on
the others, and the loss covers only the frames it has to make. Per sample, a mode is drawn:

    t2v       nothing given                          (the plain flow-matching loss)
    i2v       latent frame 0 given                   (the picture's latent: the causal VAE encodes frame 0 alone)
    flf2v     frame 0 and the last latent frame      (the last one replaced by ``extra["last_still"]`` when the
                                                      items carry it: what a lone last picture encodes to)
    continue  the first k frames, k in 1..max_prefix (a long video's next window, sharing k frames)

Items flagged ``extra["mid"]`` (a window cut from the middle of a longer clip, whose frame 0 is not a
picture's latent) always take ``continue``: nothing else would make frame 0 from noise right.

    x0' = x0 with the flf2v substitution ; eps ~ N(0, I) ; sigma ~ p(sigma)
    x_t = (1 - sigma) x0' + sigma eps, then the given frames set to x0'
    t   = floor(1000 sigma) on the tokens of the other frames, 0 on the given ones
    loss = mean over samples of the mean of (model(x_t, t) - (eps - x0'))^2 over the frames not given

``context_noise`` > 0 (continuation only): the given frames are not quite clean, x0' moved toward fresh noise by
a fraction drawn uniformly in [0, context_noise] per sample (timestep still 0 on their tokens), as the frames a
long video carries over are the model's own output, not the data's; drawn after everything above, so 0 changes
no draw. With ``context_timestep`` the model is told how far: the given frames' tokens see timestep
floor(1000 x fraction) instead of 0 (Diffusion Forcing's noisy history; at inference ``long_context_noise`` gives
the carried frames that noise level and timestep).

``rolling`` > 0 (continuation only): that share of the continuation samples have their frames to make on a ladder
of noise levels, as a ``rolling`` long video denoises them (openwan.pipelines.rolling): of the m frames after the
given ones, frame j (0 the oldest) at progress p_j = (m - 1 - j + q) / m along the sampler's shifted grid, q ~ U[0, 1)
per sample, sigma_j = shift(1 - p_j) with the sampling shift ``rolling_shift``; and in ``ramp`` of those, the
ladder's start as the sampler builds it, every p_j capped at a level drawn uniformly in [0, 1). Each frame's tokens see
its own timestep. Drawn after everything above, so 0 changes no draw.

``focus`` > 0 weights the error by where the picture is: each latent position's weight is
1 + focus * min(1, d / focus_scale), d the RMS over channels of its distance from its frame's background (the
per-channel median over the frame); the loss is then the weighted mean. A small object on a flat background
otherwise weighs a few percent of the loss, and a model can reach a low loss drawing it badly.

Draws per sample, from that sample's generator: sigma, eps (as :class:`~openwan.training.objectives.FlowMatching`
draws them, so a run of only ``t2v`` gives its loss exactly), then the mode and k.
"""
from __future__ import annotations

from typing import Optional

import torch

from openwan.training.loss import TimestepSampling, add_noise, sigma_to_timestep
from openwan.training.objectives import Batch, FlowMatching, ObjectiveContext, register_objective

MODES = ("t2v", "i2v", "flf2v", "continue")


class CleanFrames(FlowMatching):
    """See the module docstring. ``t2v``, ``i2v``, ``flf2v``, ``continue_``: the share of each mode (normalized);
    ``max_prefix``: the largest k of ``continue``. sigma and the noise are drawn as :class:`FlowMatching` draws
    them (:meth:`FlowMatching.draw`), then each sample's mode from the same generator."""

    def __init__(self, sampling: Optional[TimestepSampling] = None, t2v: float = 0.4, i2v: float = 0.3,
                 flf2v: float = 0.1, continue_: float = 0.2, max_prefix: int = 3, focus: float = 0.0,
                 focus_scale: float = 1.0, context_noise: float = 0.0, context_timestep: bool = False,
                 rolling: float = 0.0, rolling_shift: float = 3.0, ramp: float = 0.25):
        super().__init__(sampling)
        if not (0.0 <= float(rolling) <= 1.0 and 0.0 <= float(ramp) <= 1.0 and float(rolling_shift) > 0):
            raise ValueError(f"clean_frames: rolling and ramp must be in [0, 1] and rolling_shift > 0, got "
                             f"{rolling}, {ramp}, {rolling_shift}")
        self.rolling, self.rolling_shift, self.ramp = float(rolling), float(rolling_shift), float(ramp)
        if not isinstance(context_timestep, bool):
            raise ValueError(f"clean_frames: context_timestep must be true or false, got {context_timestep!r}")
        if context_timestep and not float(context_noise) > 0:
            raise ValueError("clean_frames: context_timestep tells the model the given frames' noise level: it "
                             "needs context_noise > 0")
        self.context_timestep = context_timestep
        if not 0.0 <= float(context_noise) <= 1.0:
            raise ValueError(f"clean_frames: context_noise must be in [0, 1], got {context_noise}")
        self.context_noise = float(context_noise)
        if not (float(focus) >= 0 and float(focus_scale) > 0):
            raise ValueError(f"clean_frames: focus must be >= 0 and focus_scale > 0, got {focus}, {focus_scale}")
        self.focus, self.focus_scale = float(focus), float(focus_scale)
        probs = torch.tensor([t2v, i2v, flf2v, continue_], dtype=torch.float64)
        if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()) or float(probs.sum()) <= 0:
            raise ValueError(f"clean_frames: the mode shares must be non-negative and not all 0, got "
                             f"{dict(zip(MODES, probs.tolist()))}")
        self.cum = (probs / probs.sum()).cumsum(0)
        if int(max_prefix) < 1:
            raise ValueError(f"clean_frames: max_prefix must be >= 1, got {max_prefix}")
        self.max_prefix = int(max_prefix)
        self.patch = (1, 1, 1)

    def setup(self, ctx: ObjectiveContext) -> None:
        self.patch = tuple(ctx.module.patch_size)
        if self.patch[0] != 1:
            raise ValueError(f"clean_frames gives whole latent frames: it needs a temporal patch of 1, the DiT's "
                             f"patch is {self.patch}")

    def mode(self, g: torch.Generator, mid: bool, frames: int) -> tuple[str, list]:
        """The sample's mode and its given latent frames (draws the mode, then k, from ``g``)."""
        u = torch.rand(1, generator=g, dtype=torch.float64)
        k = 1 + int(torch.randint(self.max_prefix, (1,), generator=g))
        name = "continue" if mid else MODES[min(int((u > self.cum).sum()), len(MODES) - 1)]
        given = {"t2v": [], "i2v": [0], "flf2v": [0, frames - 1],
                 "continue": list(range(min(k, frames - 1)))}[name]
        return name, given

    def __call__(self, model, batch: Batch, rng: list):
        noise, sigma = self.draw(batch, rng)
        x0 = batch.latent.float()
        b, _, f, h, w = x0.shape
        mids = batch.extra.get("mid")
        still = batch.extra.get("last_still")
        given = torch.zeros(b, f, dtype=torch.bool, device=x0.device)
        names = []
        for i, g in enumerate(rng):
            name, frames = self.mode(g, bool(mids[i]) if mids is not None else False, f)
            names.append(name)
            if name == "flf2v" and still is not None:
                x0 = x0.clone() if x0 is batch.latent else x0
                x0[i, :, -1:] = still[i].float()
            given[i, frames] = True
        keep = ~given[:, None, :, None, None]                        # [B, 1, F, 1, 1]: the frames to make
        x_t = torch.where(keep, add_noise(x0, noise, sigma.to(x0.device)), x0)
        given_t = torch.zeros(b, f, dtype=torch.long, device=x0.device)     # the given frames' timestep
        if self.context_noise > 0:
            for i, g in enumerate(rng):
                if names[i] == "continue":
                    frac = self.context_noise * float(torch.rand(1, generator=g, dtype=torch.float64))
                    eps = torch.randn(x0[i].shape, generator=g).to(x0.device)
                    cols = given[i]
                    x_t[i][:, cols] = add_noise(x0[i][:, cols], eps[:, cols], torch.tensor(frac)).to(x_t.dtype)
                    if self.context_timestep:
                        given_t[i, cols] = int(sigma_to_timestep(torch.tensor([frac]))[0])
        frame_sigma = sigma.to(x0.device, torch.float64)[:, None].expand(b, f).clone()
        if self.rolling > 0:
            for i, g in enumerate(rng):
                ladder = self.ladder(g, int((~given[i]).sum())) if names[i] == "continue" else None
                if ladder is not None:
                    cols = ~given[i]
                    frame_sigma[i, cols] = ladder.to(x0.device)
                    lv = ladder.to(x0.device, x0.dtype)[None, :, None, None]        # [1, m, 1, 1]
                    x_t[i][:, cols] = ((1 - lv) * x0[i][:, cols] + lv * noise[i][:, cols].to(x0)).to(x_t.dtype)
        per_frame = (h // self.patch[1]) * (w // self.patch[2])
        frame_t = torch.where(given, given_t, sigma_to_timestep(frame_sigma))
        t = frame_t.repeat_interleave(per_frame, dim=1)
        pred = model(x_t, t, batch.context, **batch.cond).float()
        if self.focus == 0:
            err = (pred - (noise - x0)).pow(2) * keep
            per_sample = err.flatten(1).sum(1) / (keep.flatten(1).sum(1) * x0[0, :, 0].numel())
            return per_sample.mean(), {}
        weight = self.weights(x0) * keep                              # [B, 1, F, H, W]
        err = (pred - (noise - x0)).pow(2) * weight
        per_sample = err.flatten(1).sum(1) / (weight.flatten(1).sum(1) * x0.shape[1])
        return per_sample.mean(), {}

    def ladder(self, g: torch.Generator, m: int) -> Optional[torch.Tensor]:
        """The m frames' noise levels (float64, oldest first) when this sample is drawn rolling, else None (draws
        the choice, then q, then whether and where the ramp caps it, from ``g``)."""
        if float(torch.rand(1, generator=g, dtype=torch.float64)) >= self.rolling or m < 1:
            return None
        q = float(torch.rand(1, generator=g, dtype=torch.float64))
        p = (m - 1 - torch.arange(m, dtype=torch.float64) + q) / m
        if float(torch.rand(1, generator=g, dtype=torch.float64)) < self.ramp:
            p = p.clamp(max=float(torch.rand(1, generator=g, dtype=torch.float64)))
        u, s = 1 - p, self.rolling_shift
        return s * u / (1 + (s - 1) * u)

    def weights(self, x0: torch.Tensor) -> torch.Tensor:
        """[B, 1, F, H, W]: 1 + focus * min(1, d / focus_scale), d a position's RMS distance over channels from
        its frame's per-channel median (the background)."""
        background = x0.flatten(3).median(dim=3).values[..., None, None]
        d = (x0 - background).pow(2).mean(1, keepdim=True).sqrt()
        return 1 + self.focus * (d / self.focus_scale).clamp(max=1)

def _factory(config, **options):
    if "continue" in options:
        options["continue_"] = options.pop("continue")
    return CleanFrames(config.timesteps, **options)


register_objective("clean_frames", _factory)
