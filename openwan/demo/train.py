"""The recipe of the embedded demo model: train it from scratch on the procedural world, then ship it.

    python -m openwan.demo.train --stage all --export_dir runs/demo/export   # v1: vae -> latents -> dit -> export
    python -m openwan.demo.train --stage vae            # 1. the video autoencoder (own small loop)
    python -m openwan.demo.train --stage latents        # 2. encode world clips + captions once
    python -m openwan.demo.train --stage dit            # 3. the DiT, with openwan.training's Trainer
    python -m openwan.demo.train --stage export         # 4. half-precision checkpoint (v2's into the package)

Without options the stages build v1, the first demo (``DEMO_V1_*``: text-to-video, 64 px, 17 frames); v2, the
shipped TI2V-style model, is built from it (its VAE re-measured, its DiT grown: ``--grow_from``) with the
options in docs/demo.md ("The recipe").

Every stage reads and writes ``--work_dir`` (default ``runs/demo``), checkpoints as it goes and picks up
where it stopped when run again, so a run can be interrupted at any time.

1. **VAE** -- :class:`~openwan.models.vae.WanVAE` with :data:`openwan.configs.DEMO_V1_VAE`'s architecture, trained
   for reconstruction on world clips (``split="train"``: the held-out combinations are never shown to any
   component), in two phases. It starts "inflated" (:func:`inflate_init_`): a per-frame image autoencoder
   (causal convs see only the current frame, temporal resamplers pick / repeat frames), so phase 1 trains on
   1-frame clips, which is 10x cheaper per step and is where the slow part happens (a small autoencoder
   first settles on the flat background and needs ~600 steps to start drawing the small objects); phase 2
   trains on 9- then 17-frame clips and learns the temporal taps. Loss: (L1 + L2) over pixels, weighted
   11x on the object (the background is most of every frame), plus a tiny penalty on the latent's
   magnitude. ``WanVAE.encode`` returns the posterior mean only, so the log-variance half of ``conv1`` is
   unused; the decoder sees the latent plus a little noise (5% of its std). (Sampling from a learned
   posterior instead collapses here: at initialisation its noise drowns the mean and the decoder settles on
   the background.) Forward and backward run through the exact chunked (causal, cached) passes that
   :meth:`WanVAE.encode` / :meth:`WanVAE.decode` use at inference. At the end, the per-channel mean and std
   of the latents (mu) over world clips become the config's ``mean`` / ``std``, as for the published VAE.
2. **Latents** -- ``--n_clips`` training clips are rendered and encoded once; each gets ``--captions``
   paraphrased captions (:func:`openwan.demo.world.make_caption`), encoded by the frozen text encoder: a
   randomly initialised tiny umT5 (seeded, :data:`openwan.demo.DEMO_TEXT_ENCODER`) with the shipped tiny
   tokenizer; the DiT learns to read its features. A fraction ``--caption_dropout`` of the items carries
   the empty prompt instead (classifier-free guidance; the demo's negative prompt is "").
3. **DiT** -- :class:`~openwan.models.dit.WanModel` with :data:`openwan.configs.DEMO_V1_DIT`'s config (v2:
   ``DEMO_V2_DIT``, grown from v1's weights; an expert may be made deeper than the DiT it starts from:
   ``--dit_layers 12 --deepen_from WEIGHTS``, :mod:`openwan.demo.grow`), trained
   from scratch by :class:`openwan.training.trainer.Trainer` (flow matching, AdamW, cosine schedule,
   EMA) on an :class:`~openwan.training.data.InMemoryLatentDataset`.
4. **Export** -- DiT, VAE and text encoder in the official checkpoint layout, half precision, with the
   variant (``openwan.json``), into ``openwan/demo/assets/demo_checkpoint`` (the shipped model's, v2, only) or
   ``--export_dir``; the loaders upcast to fp32 on the CPU.

The numbers of the shipped run are in docs/demo.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from openwan.configs import DiTConfig
from openwan.demo import DEMO_DIR, DEMO_DIT, DEMO_V1_DIT, DEMO_V1_SAMPLE, DEMO_V1_VAE
from openwan.demo.export import export, trained_dit_weights  # noqa: F401  (stage 4)
from openwan.demo.grow import deepen, deepened_init, grow_patch, grown_init  # noqa: F401  (a DiT grown from another)
from openwan.demo.latents import (  # noqa: F401
    SUBSETS,
    TEXT_ENCODER_SEED,
    WINDOWS_KEPT,
    _atomic_torch_save,
    adopt_vae,
    build_dataset,
    caption_variants,
    encode_latents,
    load_trained_vae,
    log,
    make_text_encoder,
    round_to_half_,
)

STAGES = ("vae", "latents", "dit", "export")
# The first stages build v1 (DEMO_V1_*: 64 px, 17 frames; --stage all); v2, the shipped model, is grown from it
# with the options in docs/demo.md ("The recipe").
DEMO_FRAMES = DEMO_V1_SAMPLE.frame_num  # 17
DEMO_SIZE = 64


# ============================================================================ data

def world_motions(name: str) -> tuple:
    """The motions of a ``--motions`` value: "classic" (the seven the shipped VAE and the first DiT run were
    trained on; the default, so the recipe's first commands draw the same clips as when they were run),
    "looping" (bounces and circling), "all", or a comma-separated list."""
    from openwan.demo import world
    named = {"classic": world.CLASSIC_MOTIONS, "looping": world.LOOPING_MOTIONS, "all": world.MOTIONS}
    out = named.get(name) or tuple(m.strip() for m in name.split(",") if m.strip())
    bad = [m for m in out if m not in world.MOTIONS]
    if bad or not out:
        raise ValueError(f"--motions {name!r}: use classic, looping, all or a comma-separated list of "
                         f"{list(world.MOTIONS)}" + (f" (unknown: {bad})" if bad else ""))
    return out


def world_batch(rng: np.random.Generator, n: int, frames: int, size: int = DEMO_SIZE, split: str = "train",
                two_object_prob: float = 0.0, motions=None) -> torch.Tensor:
    """n random world clips as one float batch [n, 3, frames, size, size] in [-1, 1]."""
    from openwan.demo import world
    motions = world.CLASSIC_MOTIONS if motions is None else motions
    clips = []
    for _ in range(n):
        k = 2 if rng.random() < two_object_prob else 1
        clip = world.sample_clip(rng, split=split, n_objects=k, motions=motions)
        clips.append(world.clip_tensor(clip, size=size, frames=frames))
    return torch.stack(clips)


# ============================================================================ differentiable VAE passes

def vae_posterior(vae, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw (un-normalized) posterior mean and log-variance [B, z, T, h, w] of a video [B, 3, F, H, W].

    The same chunked causal pass as ``WanVAE.encode`` (frame 0 alone, then 4 frames per chunk, with the
    feature cache), but with gradients."""
    from openwan.models.vae import FeatureCache
    cache = FeatureCache()
    n = 1 + (video.shape[2] - 1) // vae.temporal_ratio
    chunks = [vae.encoder(video[:, :, vae._chunk_frames(i)], cache) for i in range(n)]
    stats = vae.conv1(torch.cat(chunks, dim=2))
    return stats[:, :vae.z_dim], stats[:, vae.z_dim:]


def vae_reconstruct(vae, z: torch.Tensor) -> torch.Tensor:
    """Decode a raw latent [B, z, T, h, w] to pixels [B, 3, F, H, W] (unclamped), one latent frame at a time
    with the feature cache, as ``WanVAE.decode`` does, but with gradients."""
    from openwan.models.vae import FeatureCache
    x = vae.conv2(z)
    cache = FeatureCache()
    return torch.cat([vae.decoder(x[:, :, i:i + 1], cache) for i in range(x.shape[2])], dim=2)


def object_weight(video: torch.Tensor, background=(32, 32, 32), boost: float = 4.0) -> torch.Tensor:
    """Per-pixel loss weight [B, 1, F, H, W]: 1 on the background, 1 + boost where the frame shows an object
    (any pixel more than ~4 levels from the background color)."""
    bg = torch.tensor(background, dtype=video.dtype, device=video.device).view(1, 3, 1, 1, 1) / 127.5 - 1.0
    fg = ((video - bg).abs().amax(dim=1, keepdim=True) > 0.03).to(video.dtype)
    return 1.0 + boost * fg


# ============================================================================ stage 1: VAE

def inflate_init_(vae) -> None:
    """Start the VAE as a per-frame image autoencoder ("inflation"): every causal 3x3x3 conv sees only the
    current frame (its taps on the two previous frames are zeroed), the temporal downsamplers pick every
    other frame and the temporal upsamplers repeat frames (identity on the newest tap). Image pre-training
    (1-frame clips) then trains exactly the weights a video uses, and video training learns the temporal
    taps from there. The decoder's output bias starts at the world's background level."""
    from openwan.models.vae import CausalConv3d, Resample
    with torch.no_grad():
        for m in vae.modules():
            if isinstance(m, Resample) and hasattr(m, "time_conv"):
                w = m.time_conv.weight                      # [C_out, C_in, 3, 1, 1]
                w.zero_()
                eye = torch.eye(w.shape[1])
                w[:, :, -1, 0, 0] = eye.repeat(w.shape[0] // w.shape[1], 1)
                m.time_conv.bias.zero_()
        for m in vae.modules():
            if isinstance(m, CausalConv3d) and m.kernel_size[0] > 1 and m.causal_padding[4] > 0:
                m.weight[:, :, :-1].zero_()
        vae.decoder.head[-1].bias.fill_(32 / 127.5 - 1.0)


def train_vae(work_dir: Path, image_steps: int = 1000, image_batch: int = 8, steps: int = 200, batch: int = 4,
              frames: int = 9, image_lr: float = 1e-3, lr: float = 5e-4, latent_penalty: float = 1e-4,
              noise: float = 0.05, boost: float = 10.0, seed: int = 0, save_every: int = 25,
              stats_clips: int = 128, init: Optional[Path] = None) -> Path:
    """Train the demo VAE (resumable); returns the folder of the finished VAE (``work_dir/vae``).

    Phase 1 (``image_steps``): 1-frame clips, batch ``image_batch``, constant ``image_lr`` after a warmup.
    Phase 2 (``steps``): ``frames``-frame clips, batch ``batch``, ``lr`` with warmup and cosine decay.
    Loss: (L1 + L2) of the pixels, weighted 1 + ``boost`` on the object, + ``latent_penalty`` mean(mu^2);
    the decoder sees mu + ``noise`` x std(mu) x N(0, 1). ``init``: start from a trained VAE folder instead of
    the inflated random init (fine-tuning; pass ``image_steps=0`` to skip phase 1)."""
    from openwan.models.vae import WanVAE
    from openwan.training.trainer import lr_multiplier
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt = work_dir / "vae_train.pt"
    torch.manual_seed(seed)
    vae = WanVAE(DEMO_V1_VAE).train()
    if init is not None:
        vae.load_state_dict(WanVAE.from_pretrained(init).state_dict())
        log(f"vae: starting from {init}")
    else:
        inflate_init_(vae)
    opt = torch.optim.AdamW(vae.parameters(), lr=image_lr, weight_decay=0.0, betas=(0.9, 0.99))
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        log(f"vae: resumed at step {step}")
    total = image_steps + steps
    t0 = time.perf_counter()
    start = step
    while step < total:
        image = step < image_steps
        rng = np.random.default_rng([seed, 1, step])        # batch of a step: a function of the step
        video = world_batch(rng, image_batch if image else batch, 1 if image else frames)
        g = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
        for grp in opt.param_groups:    # warmup of 20 steps, then constant (phase 1) / cosine to 5% (phase 2)
            grp["lr"] = (image_lr * lr_multiplier(step, "constant", warmup=20) if image
                         else lr * lr_multiplier(step - image_steps, "cosine", 20, steps, min_ratio=0.05))
        mu, _ = vae_posterior(vae, video)
        z = mu + noise * mu.detach().std() * torch.randn(mu.shape, generator=g)
        rec = vae_reconstruct(vae, z)
        w = object_weight(video, boost=boost)
        err = rec - video
        rec_loss = ((err.abs() + err.pow(2)) * w).mean() / w.mean()
        norm = mu.pow(2).mean()
        loss = rec_loss + latent_penalty * norm
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 10 == 0 or step == total:
            el = time.perf_counter() - t0
            with torch.no_grad():
                e = err.detach().abs().mean(1, keepdim=True)
                fg = w > 1
                fg_err, bg_err = e[fg].mean().item(), e[~fg].mean().item()
            log(f"vae {'image' if image else 'video'} step {step}/{total} loss {loss.item():.4f} "
                f"object err {fg_err:.3f} background err {bg_err:.3f} mu^2 {norm.item():.3f} gn {gn:.3f} "
                f"{el / (step - start):.2f}s/step")
        if step % save_every == 0 or step == total:
            _atomic_torch_save({"model": vae.state_dict(), "optimizer": opt.state_dict(), "step": step}, ckpt)
    return finish_vae(work_dir, vae.eval(), stats_clips=stats_clips, seed=seed)


@torch.no_grad()
def latent_stats(vae, n_clips: int = 256, seed: int = 0, batch: int = 8, size: Optional[int] = None,
                 frames: Optional[int] = None) -> tuple[tuple, tuple]:
    """Per-channel mean and std of the raw latents (mu) of ``n_clips`` world clips (default: at the first
    recipe's 64 px x 17 frames)."""
    size, frames = size or DEMO_SIZE, frames or DEMO_FRAMES
    rng = np.random.default_rng([seed, 2])
    s1 = torch.zeros(vae.z_dim, dtype=torch.float64)
    s2 = torch.zeros(vae.z_dim, dtype=torch.float64)
    count = 0
    for i in range(0, n_clips, batch):
        mu, _ = vae_posterior(vae, world_batch(rng, min(batch, n_clips - i), frames, size=size))
        mu = mu.double().transpose(0, 1).reshape(vae.z_dim, -1)
        s1 += mu.sum(1)
        s2 += (mu * mu).sum(1)
        count += mu.shape[1]
    mean = s1 / count
    std = (s2 / count - mean * mean).clamp_min(1e-8).sqrt()
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def finish_vae(work_dir: Path, vae, stats_clips: int = 128, seed: int = 0) -> Path:
    """Measure the latent statistics, put them in the config and save the VAE (fp32) in ``work_dir/vae``."""
    from openwan.models.vae import WanVAE
    mean, std = latent_stats(vae, stats_clips, seed)
    log(f"vae latent mean {mean}")
    log(f"vae latent std  {std}")
    final = WanVAE(DEMO_V1_VAE.replace(mean=mean, std=std))
    final.load_state_dict(vae.state_dict())
    out = work_dir / "vae"
    final.save_pretrained(out)
    log(f"vae: saved {out}")
    return out


@torch.no_grad()
def eval_vae(vae, n_clips: int = 48, seed: int = 7, split: str = "all", size: int = DEMO_SIZE,
             frames: int = DEMO_FRAMES) -> dict:
    """Detector accuracy and PSNR of VAE reconstructions (encode -> decode) of world clips."""
    from openwan.demo import detect, world
    rng = np.random.default_rng([seed, 3])
    hits = {"color": 0, "shape": 0, "motion": 0, "all": 0}
    truth_hits = dict(hits)
    psnr = []
    for _ in range(n_clips):
        clip = world.sample_clip(rng, split=split)
        video = world.render_clip(clip, size=size, frames=frames)
        rec = vae.decode(vae.encode(world.to_tensor(video)[None]))[0]
        rec_frames = world.from_tensor(rec)
        mse = np.mean((rec_frames.astype(np.float64) - video.astype(np.float64)) ** 2)
        psnr.append(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))
        s = detect.score(detect.detect(rec_frames), clip.objects[0].attributes)
        t = detect.score(detect.detect(video), clip.objects[0].attributes)
        for k in hits:
            hits[k] += int(s[k])
            truth_hits[k] += int(t[k])
    return {"n": n_clips, "psnr": float(np.mean(psnr)),
            "accuracy": {k: v / n_clips for k, v in hits.items()},
            "accuracy_on_originals": {k: v / n_clips for k, v in truth_hits.items()}}


# ============================================================================ stage 2: latents


# ============================================================================ stage 3: DiT

def make_validator(work_dir: Path, size: int = DEMO_SIZE, frames: int = DEMO_FRAMES, prompts_per_split: int = 4,
                   steps: int = 12):
    """A Trainer ``on_validate`` hook: generate the first ``prompts_per_split`` seen and held-out benchmark
    prompts with the model being trained (few sampling steps) and log the detector's accuracy. The size and
    length are the latents' (``size``, ``frames``); a clean-frames model runs through the TI2V pipeline."""
    from openwan.demo import demo_variant, world
    from openwan.demo.bench import run_benchmark, summarize
    from openwan.pipelines.base import Components
    from openwan.pipelines.t2v import TextToVideo
    from openwan.pipelines.ti2v import TextImageToVideo
    vae = load_trained_vae(work_dir)
    te = make_text_encoder()
    bench = world.benchmark_prompts()
    prompts = [p for p in bench if p.split == "seen"][:prompts_per_split]
    prompts += [p for p in bench if p.split == "heldout"][:prompts_per_split]
    sample = DEMO_V1_SAMPLE.replace(size=f"{size}*{size}", sizes=(f"{size}*{size}",), frame_num=frames,
                                    fps=round(DEMO_V1_SAMPLE.fps * (frames - 1) / (DEMO_FRAMES - 1)))

    def validate(model, step):
        variant = dataclasses.replace(demo_variant(), task="ti2v" if model.config.model_type == "ti2v" else "t2v",
                                      dit=model.config, sample=sample)
        cls = TextImageToVideo if variant.task == "ti2v" else TextToVideo
        pipe = cls(Components(model, vae, te, variant=variant), progress=False)
        t0 = time.perf_counter()
        s = summarize(run_benchmark(pipe, prompts, seeds=(0,), progress=False, sample_steps=steps))
        acc = {k: {a: round(v, 2) for a, v in s[k]["accuracy"].items() if a != "attribute_mean"}
               for k in ("seen", "heldout")}
        log(f"dit validate step {step}: {acc} ({time.perf_counter() - t0:.0f}s)")
    return validate


def train_dit(work_dir: Path, steps: int = 2000, batch: int = 32, lr: float = 5e-4, caption_dropout: float = 0.1,
              ema: Optional[float] = 0.998, seed: int = 0, checkpoint_every: int = 100,
              timestep_shift: float = 1.0, weight_decay: float = 0.01, validate_every: int = 250,
              dit_config: Optional[DiTConfig] = None, init: Optional[Path] = None,
              stop_at: Optional[int] = None, objective: Optional[dict] = None, subset: str = "all",
              windows_kept: str = "all", reference: Optional[str] = None) -> Path:
    """Train the DiT with openwan's Trainer (resumable: the Trainer picks up its newest checkpoint).
    ``dit_config`` (default ``DEMO_V1_DIT``; v2's is ``DEMO_V2_DIT``) lets experiments try other sizes; export
    takes DEMO_V1_DIT or DEMO_V2_DIT.
    ``init``: start from these DiT weights (a folder or .safetensors) instead of a random init.
    ``stop_at``: end this run at that step (a checkpoint) while the schedule still runs over ``steps``.
    ``objective``: the Trainer's objective config (default flow matching; ``{"name": "clean_frames", ...}``
    trains text-, image-, first-last-frame-to-video and continuation in one model)."""
    from openwan.training.trainer import Trainer
    latents_file = work_dir / "latents.pt"
    if not latents_file.exists():
        raise FileNotFoundError(f"{latents_file} not found: run `python -m openwan.demo.train --stage latents` first")
    dataset, data = build_dataset(latents_file, caption_dropout, seed, subset, windows_kept, reference)
    log(f"dit: {len(dataset)} training items")
    dit_cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in (dit_config or DEMO_V1_DIT).to_dict().items()}
    config = {
        "model": {"dit": dit_cfg, "dtype": "fp32", **({"path": str(init)} if init else {})},
        "optimizer": {"lr": lr, "betas": [0.9, 0.99], "weight_decay": weight_decay},
        "schedule": {"type": "cosine", "warmup_steps": min(100, steps // 10), "min_lr_ratio": 0.1},
        "timesteps": {"distribution": "uniform", "shift": timestep_shift},
        "ema": {"decay": ema} if ema else None,
        "steps": steps, "stop_at": stop_at, "batch_size": batch, "grad_clip": 1.0, "precision": "fp32",
        "checkpoint_every": checkpoint_every, "keep_checkpoints": 2,
        "output_dir": str(work_dir / "dit"), "seed": seed, "resume": "auto", "progress": False,
        "validate_every": validate_every, **({"objective": objective} if objective else {}),
    }
    on_validate = (make_validator(work_dir, data.get("size", DEMO_SIZE), data.get("frames", DEMO_FRAMES))
                   if validate_every else None)
    del data
    trainer = Trainer(config, dataset=dataset, device="cpu", on_validate=on_validate)
    summary = trainer.train()
    log(f"dit: {summary}")
    return work_dir / "dit"


# ============================================================================ stage 4: export: openwan/demo/export.py

# ============================================================================ CLI

def _dit_overrides(a) -> DiTConfig:
    """DEMO_V1_DIT with the --dit_* overrides applied (width and FFN scale together, FFN = 4 x width); v2's DiT is
    ``--dit_patch 1,2,2 --dit_type ti2v``."""
    changes = {}
    if a.dit_dim:
        changes.update(dim=a.dit_dim, ffn_dim=4 * a.dit_dim)
    if a.dit_layers:
        changes["num_layers"] = a.dit_layers
    if a.dit_heads:
        changes["num_heads"] = a.dit_heads
    if a.dit_patch:
        changes["patch_size"] = tuple(int(v) for v in a.dit_patch.split(","))
    if a.dit_type:
        changes["model_type"] = a.dit_type
    return dataclasses.replace(DEMO_V1_DIT, **changes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m openwan.demo.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", choices=STAGES + ("all", "eval-vae", "merge-latents", "recaption"), default="all",
                    help="a stage, all of them in order, eval-vae, merge-latents (--merge FILE FILE...) or "
                         "recaption (--recaption FILE: its clips with new wide-style captions)")
    ap.add_argument("--work_dir", default="runs/demo")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    g = ap.add_argument_group("vae")
    g.add_argument("--vae_image_steps", type=int, default=1000, help="phase 1: steps on 1-frame clips")
    g.add_argument("--vae_image_batch", type=int, default=8)
    g.add_argument("--vae_image_lr", type=float, default=1e-3)
    g.add_argument("--vae_steps", type=int, default=200, help="phase 2: steps on --vae_frames-frame clips")
    g.add_argument("--vae_batch", type=int, default=4)
    g.add_argument("--vae_frames", type=int, default=9)
    g.add_argument("--vae_lr", type=float, default=5e-4)
    g.add_argument("--vae_stats_clips", type=int, default=128, help="clips for the latent mean/std")
    g.add_argument("--init_vae", help="fine-tune this trained VAE folder (use with --vae_image_steps 0); with "
                                      "--stage latents: encode with this VAE (a checkpoint folder) instead")
    g.add_argument("--vae_latent_penalty", type=float, default=1e-4, help="weight of mean(mu^2)")
    g.add_argument("--vae_noise", type=float, default=0.05,
                   help="std of the noise added to the latent before decoding, relative to the latent's std")
    g = ap.add_argument_group("latents")
    g.add_argument("--n_clips", type=int, default=4000)
    g.add_argument("--captions", type=int, default=3, help="captions per clip")
    g.add_argument("--motions", default="classic",
                   help="the world's motions to encode: classic (default, the seven of the first run), looping, "
                        "all, or a comma-separated list")
    g.add_argument("--pace_spread", type=float, default=1.0,
                   help="each looping clip at the world's pace times a factor log-uniform in [1/S, S] (a model that "
                        "reads the pace from its given frames; 1: the world's own)")
    g.add_argument("--looping_share", type=float,
                   help="instead of --motions: draw this fraction of the clips from the looping motions, the rest "
                        "from the classic ones")
    g.add_argument("--size", type=int, default=DEMO_SIZE, help="clip size in pixels (square)")
    g.add_argument("--frames", type=int, default=DEMO_FRAMES, help="clip length in frames (native length)")
    g.add_argument("--extend", type=int, default=0,
                   help="render looping clips this many frames longer (a multiple of 4): a second, mid-motion window")
    g.add_argument("--extend_classic", action="store_true",
                   help="with --extend: classic clips too, their path spread over the longer clip (a mid-motion "
                        "window of every clip, for a continuation expert)")
    g.add_argument("--still", action="store_true", help="also encode each clip's last frame as a still (flf2v)")
    g.add_argument("--ref", type=int, default=0, metavar="K",
                   help="also encode a reference picture of each clip's object and K reference captions (a "
                        "reference expert's data: --dit_reference)")
    g.add_argument("--two_object_prob", type=float, default=0.0, help="fraction of clips with two objects")
    g.add_argument("--two_object_order", choices=("any", "reading"), default="any",
                   help="reading: captions name a two-object clip's left (or top) object first (the two-object "
                        "expert's data)")
    g.add_argument("--merge", nargs="+", metavar="FILE",
                   help="with --stage merge-latents: these latents files, merged into WORK_DIR/latents.pt")
    g.add_argument("--recaption", metavar="FILE",
                   help="with --stage recaption: this latents file's clips, --captions new captions each in the wide "
                        "caption style (every word the world's parser knows), into WORK_DIR/latents.pt")
    g.add_argument("--restat", type=int, default=0,
                   help="with --init_vae: measure the latent mean/std anew on this many clips at --size/--frames")
    g = ap.add_argument_group("dit")
    g.add_argument("--dit_steps", type=int, default=2000)
    g.add_argument("--dit_batch", type=int, default=32)
    g.add_argument("--dit_lr", type=float, default=5e-4)
    g.add_argument("--caption_dropout", type=float, default=0.1)
    g.add_argument("--ema", type=float, default=0.998)
    g.add_argument("--init_dit", help="start the DiT from these weights (folder or .safetensors)")
    g.add_argument("--dit_dim", type=int, help="override DEMO_V1_DIT's width (experiments)")
    g.add_argument("--dit_layers", type=int, help="override DEMO_V1_DIT's depth (experiments)")
    g.add_argument("--dit_heads", type=int, help="override DEMO_V1_DIT's head count (experiments)")
    g.add_argument("--dit_patch", help="override DEMO_V1_DIT's patch size, e.g. 1,1,1 (experiments)")
    g.add_argument("--dit_type", choices=("t2v", "ti2v"), help="override DEMO_V1_DIT's model type (ti2v: per-token "
                                                             "timesteps, for --objective clean_frames)")
    g.add_argument("--grow_from", help="start the DiT from these weights grown to --dit_patch (grow_patch)")
    g.add_argument("--deepen_from", help="start the DiT from these weights of fewer blocks, each followed by copies "
                   "whose outputs start at zero, up to --dit_layers (grow.deepen: the same function to start with)")
    g.add_argument("--objective", choices=("flow_matching", "clean_frames"), default="flow_matching",
                   help="clean_frames: t2v, i2v, flf2v and continuation in one model (openwan.training.clean_frames)")
    g.add_argument("--clean_shares", default="0.4,0.3,0.1,0.2",
                   help="clean_frames: shares of t2v,i2v,flf2v,continue")
    g.add_argument("--dit_subset", choices=SUBSETS, default="all",
                   help="train on these clips only (one-object-classic: one object, a classic motion; "
                        "classic: one or two objects, classic motions; one-object: one object, any motion; "
                        "one-object-looping: one object, a looping motion)")
    g.add_argument("--dit_windows", choices=WINDOWS_KEPT, default="all",
                   help="mid: train only on the windows that start mid-motion (--extend; a continuation expert, "
                        "with --clean_shares 0,0,0,1)")
    g.add_argument("--dit_reference", choices=("both", "look-free"),
                   help="train on the reference picture's latent then the clip (a reference expert, with "
                        "--clean_shares 0,1,0,0; latents made with --ref), with the clip's captions and its reference "
                        "captions (both) or the reference captions only (look-free)")
    g.add_argument("--context_noise", type=float, default=0.0,
                   help="clean_frames, continuation: move the given frames toward noise by up to this fraction "
                        "(timestep still 0 on them), as a long video's carried frames are the model's own output")
    g.add_argument("--context_timestep", action="store_true",
                   help="clean_frames, with --context_noise: the given frames' tokens see their noise level as "
                        "timestep (not 0): a continuation expert for long_context_noise (Diffusion Forcing)")
    g.add_argument("--rolling", type=float, default=0.0,
                   help="clean_frames, continuation: this share of the continuation samples with their frames on "
                        "the noise ladder of a rolling long video (long_method='rolling'; the ladder on the "
                        "--timestep_shift grid)")
    g.add_argument("--clean_focus", type=float, default=0.0,
                   help="clean_frames: weight the loss by up to 1+F on the latent positions away from the background")
    g.add_argument("--dit_stop_at", type=int, help="stop at this step (checkpoint; resumable), the learning-rate "
                                                   "schedule still spanning --dit_steps")
    g.add_argument("--dit_validate_every", type=int, default=250,
                   help="steps between validation benchmarks (8 prompts, 12 sampling steps; 0 = none)")
    g.add_argument("--timestep_shift", type=float, default=1.0,
                   help="shift of the training noise levels (uniform sigma, then shifted; 1 = none)")
    g = ap.add_argument_group("export")
    g.add_argument("--export_dir", default=str(DEMO_DIR),
                   help="default: the package (only the shipped model's DiT, DEMO_DIT: v2); v1 or a candidate: a "
                        "folder of its own")
    g.add_argument("--dit_weights", help="ship these DiT weights (e.g. a checkpoint's ema.safetensors, or a final "
                                         "folder) instead of the run's newest")
    g.add_argument("--continuation_weights", help="also write these DiT weights (the DiT fine-tuned on continuing "
                   "videos, e.g. --clean_shares 0,0,0,1) as the folder's continuation expert (continuation_model/)")
    g.add_argument("--reference_weights", help="also write these DiT weights (trained with --dit_reference) as the "
                   "folder's reference expert (reference_model/)")
    g.add_argument("--two_object_weights", help="also write these DiT weights (fine-tuned on two-object scenes) as "
                   "the folder's two-object expert (two_object_model/)")
    g.add_argument("--rolling_weights", help="also write these DiT weights (fine-tuned with --rolling) as the "
                   "folder's rolling expert (rolling_model/), run on the ladder of long_method='rolling'")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    work = Path(a.work_dir)
    stages = STAGES if a.stage == "all" else (a.stage,)
    if "dit" in stages and "export" in stages and Path(a.export_dir).resolve() == DEMO_DIR.resolve() \
            and _dit_overrides(a) != DEMO_DIT:    # refused now, not after hours of training
        raise ValueError(f"--stage all trains a {_dit_overrides(a).model_type} DiT of patch {_dit_overrides(a).patch_size}, "
                         f"which the package does not ship (DEMO_DIT: v2): pass --export_dir FOLDER (e.g. "
                         f"runs/demo/export)")
    for stage in stages:
        t0 = time.perf_counter()
        if stage == "vae":
            train_vae(work, image_steps=a.vae_image_steps, image_batch=a.vae_image_batch, steps=a.vae_steps,
                      batch=a.vae_batch, frames=a.vae_frames, image_lr=a.vae_image_lr, lr=a.vae_lr,
                      latent_penalty=a.vae_latent_penalty, noise=a.vae_noise, seed=a.seed,
                      stats_clips=a.vae_stats_clips, init=Path(a.init_vae) if a.init_vae else None)
        elif stage == "eval-vae":
            print(json.dumps(eval_vae(load_trained_vae(work), size=a.size, frames=a.frames), indent=2))
        elif stage == "latents":
            if a.init_vae:          # reuse a trained VAE (e.g. the shipped one) instead of the vae stage's
                stats = (lambda vae: latent_stats(vae, a.restat, size=a.size, frames=a.frames)) if a.restat else None
                adopt_vae(work, Path(a.init_vae), stats=stats)
            encode_latents(work, n_clips=a.n_clips, captions=a.captions, seed=a.seed,
                           motions=world_motions(a.motions), looping_share=a.looping_share, size=a.size,
                           pace_spread=a.pace_spread, frames=a.frames, extend=a.extend, still=a.still,
                           two_object_prob=a.two_object_prob, extend_classic=a.extend_classic, ref=a.ref,
                           two_object_order=a.two_object_order)
        elif stage == "merge-latents":
            if not a.merge:
                raise ValueError("--stage merge-latents needs --merge FILE FILE ... (latents files to merge)")
            from openwan.demo.latents import merge_latents
            work.mkdir(parents=True, exist_ok=True)
            merge_latents(a.merge, work / "latents.pt")
        elif stage == "recaption":
            if not a.recaption:
                raise ValueError("--stage recaption needs --recaption FILE (the latents file to recaption)")
            from openwan.demo.latents import recaption_latents
            recaption_latents(Path(a.recaption), work / "latents.pt", captions=a.captions, seed=a.seed)
        elif stage == "dit":
            cfg = _dit_overrides(a)
            init = Path(a.init_dit) if a.init_dit else None
            if sum(bool(v) for v in (a.init_dit, a.grow_from, a.deepen_from)) > 1:
                raise ValueError("--init_dit, --grow_from and --deepen_from each give the DiT's start: pass one")
            if a.grow_from:
                init = grown_init(work, Path(a.grow_from), cfg)
            if a.deepen_from:
                init = deepened_init(work, Path(a.deepen_from), cfg)
            objective = None
            if a.objective == "clean_frames":
                shares = [float(v) for v in a.clean_shares.split(",")]
                if len(shares) != 4:
                    raise ValueError(f"--clean_shares needs 4 numbers (t2v,i2v,flf2v,continue), got {a.clean_shares}")
                options = dict(zip(("t2v", "i2v", "flf2v", "continue"), shares))
                if a.clean_focus:
                    options["focus"] = a.clean_focus
                if a.context_noise:
                    options["context_noise"] = a.context_noise
                if a.context_timestep:
                    options["context_timestep"] = True
                if a.rolling:
                    options.update(rolling=a.rolling, rolling_shift=a.timestep_shift)
                objective = {"name": "clean_frames", "options": options}
            train_dit(work, steps=a.dit_steps, batch=a.dit_batch, lr=a.dit_lr, caption_dropout=a.caption_dropout,
                      ema=a.ema or None, seed=a.seed, timestep_shift=a.timestep_shift, dit_config=cfg, init=init,
                      stop_at=a.dit_stop_at, validate_every=a.dit_validate_every, objective=objective,
                      subset=a.dit_subset, windows_kept=a.dit_windows, reference=a.dit_reference)
        elif stage == "export":
            export(work, Path(a.export_dir), dit_path=Path(a.dit_weights) if a.dit_weights else None,
                   continuation=Path(a.continuation_weights) if a.continuation_weights else None,
                   reference=Path(a.reference_weights) if a.reference_weights else None,
                   two_objects=Path(a.two_object_weights) if a.two_object_weights else None,
                   rolling=Path(a.rolling_weights) if a.rolling_weights else None)
        log(f"stage {stage} took {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    from openwan.checkpoints import CheckpointError
    try:
        sys.exit(main())
    except (CheckpointError, FileNotFoundError, ValueError) as e:   # bad settings or inputs: the message says
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
