"""Encode a captioned dataset once: VAE latents + text features on disk, one file per sample.

    captions (CSV / JSONL / folder)  --read_captions-->  samples
    sample --prepare_media--> video [3, F, H, W] in its bucket  --encode_video-->  latent [16, T, h, w]
    caption                                                     --encode_text-->   context [L, D]
    -> <out_dir>/<name>-<hash>.safetensors  {latent, context}  (metadata: path, caption, bucket)
    -> <out_dir>/manifest.json            (the files of this run, read by CachedLatentDataset)
    ""                                                          --encode_text-->   <out_dir>/empty_prompt.safetensors
                                          (the empty prompt's features: what training's caption dropout puts
                                          in place of a caption, for classifier-free guidance)

Each file is written atomically (temp file + rename). The file name hashes (path, caption, bucket
list, fps, task), so re-running skips the samples already done (resumable) and a changed caption is
re-encoded. Unreadable media files are skipped with a warning and listed in the manifest.

``task="i2v"`` / ``"flf2v"`` adds what the image-conditioned DiTs take, built from the clip's own
first (and last) frame exactly as the I2V / FLF2V pipelines build it from the user's image(s):
``y`` [20, T, h, w] (frame mask + VAE latent of the frame(s) with zeros elsewhere) and
``clip_fea`` [1 or 2, 257, 1280] (CLIP features of the frame(s)).

``task="vace"`` adds ``vace_context`` [96, T, h, w], built by the VACE pipeline's own function
(:func:`openwan.pipelines.vace.vace_context`) from the sample's ``control`` video and ``mask`` (columns of the
captions file), each fitted to the clip's bucket exactly as the clip is: a control alone is the signal to follow
(mask all ones); a mask alone makes the clip its own source (inpainting, outpainting, extension: the white pixels
are generated, the rest given); neither is text-to-video through VACE (no source, mask all ones).

``encode_video`` / ``encode_text`` may be any callables (``video [1,3,F,H,W] -> latent`` and
``list[str] -> list[Tensor [L, D]]``), or the real :class:`~openwan.models.vae.WanVAE` /
:class:`~openwan.models.text_encoder.TextEncoder` objects (their ``encode`` is used).

Command line: ``openwan cache-latents --data captions.csv --out cache/ --ckpt_dir Wan2.1-T2V-1.3B
--bucket 33x480x832 --bucket 1x480x832`` (see ``--help``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch

from openwan.training.data import EMPTY_PROMPT, Sample, parse_buckets, prepare_clip, read_captions

MANIFEST = "manifest.json"


def _as_video_encoder(vae) -> Callable[[torch.Tensor], torch.Tensor]:
    if hasattr(vae, "encode"):
        def enc(video):
            p = next(vae.parameters(), None) if hasattr(vae, "parameters") else None
            if p is not None:
                video = video.to(device=p.device, dtype=p.dtype)
            return vae.encode(video)
        return enc
    if callable(vae):
        return vae
    raise TypeError(f"vae must be a WanVAE or a callable video -> latent, got {type(vae).__name__}")


def _as_text_encoder(text_encoder) -> Callable[[list], list]:
    if hasattr(text_encoder, "encode"):
        return text_encoder.encode
    if callable(text_encoder):
        return text_encoder
    raise TypeError(f"text_encoder must be a TextEncoder or a callable list[str] -> list[Tensor], "
                    f"got {type(text_encoder).__name__}")


TASKS = ("t2v", "i2v", "flf2v", "vace")
IMAGE_TASKS = ("i2v", "flf2v")          # the tasks whose cache holds an image condition (CLIP features too)


def sample_name(sample: Sample, buckets: Sequence, target_fps: Optional[float], task: str = "t2v") -> str:
    """A stable file name for a sample: readable stem + hash of everything that changes its content."""
    parts = [str(Path(sample.path).resolve()), sample.caption, [list(b) for b in buckets], target_fps]
    if task == "vace":
        parts += [None if p is None else str(Path(p).resolve()) for p in (sample.control, sample.mask)]
    key = json.dumps(parts if task == "t2v" else parts + [task])
    h = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(sample.path).stem)[:40] or "sample"
    return f"{stem}-{h}.safetensors"


def _image_conditioner(task: str, vae, image_encoder) -> Optional[Callable[[torch.Tensor], dict]]:
    """video [3, F, H, W] -> {"y", "clip_fea"} for i2v / flf2v (None for t2v and vace)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if task not in IMAGE_TASKS:
        return None
    if not (hasattr(vae, "encode") and hasattr(vae, "temporal_ratio")):
        raise TypeError(f"task {task!r} builds the image condition with the VAE: give a WanVAE, not a callable")
    if image_encoder is None:
        raise ValueError(f"task {task!r} needs an image encoder (CLIP) for clip_fea: pass image_encoder= "
                         f"(openwan.models.image_encoder.ImageEncoder), or on the command line a --ckpt_dir "
                         f"that holds it or --image_encoder")
    from openwan.pipelines.i2v import image_condition

    def condition(video):
        f, h, w = video.shape[1:]
        images = {0: video[:, 0]} if task == "i2v" else {0: video[:, 0], f - 1: video[:, -1]}
        y = image_condition(vae, images, f, h, w)
        clip_fea = image_encoder.encode(torch.stack(list(images.values())))
        return {"y": y, "clip_fea": clip_fea}

    return condition


def _vace_conditioner(vae, target_fps):
    """(sample, video [3, F, H, W], bucket, clip size) -> {"vace_context"}: the sample's control and mask fitted to
    its clip (:func:`openwan.training.data.prepare_aligned`), encoded as the VACE pipeline encodes them."""
    if not (hasattr(vae, "encode") and hasattr(vae, "spatial_ratio")):
        raise TypeError("task 'vace' builds the VACE context with the VAE: give a WanVAE, not a callable")
    from openwan.pipelines.vace import vace_context
    from openwan.training.data import prepare_aligned

    def condition(sample, video, bucket, size):
        frames = video if sample.mask is not None else torch.zeros_like(video)     # a mask alone: the clip's own
        if sample.control is not None:
            frames = prepare_aligned(sample.control, size, bucket, target_fps, "control")
        mask = (prepare_aligned(sample.mask, size, bucket, target_fps, "mask", mask=True) if sample.mask is not None
                else torch.ones(video.shape[1:]))
        return {"vace_context": vace_context(vae, frames, mask)}

    return condition


def cache_latents(data_file: Union[str, Path, Sequence[Sample]], out_dir: Union[str, Path], vae, text_encoder,
                  buckets, *, target_fps: Optional[float] = None, dtype: torch.dtype = torch.float32,
                  progress: bool = True, task: str = "t2v", image_encoder=None) -> dict:
    """Encode every sample of ``data_file`` into ``out_dir`` (skipping those already there).

    ``task`` "i2v" / "flf2v" also stores ``y`` and ``clip_fea`` (needs a WanVAE and ``image_encoder``); "vace"
    ``vace_context`` from each sample's ``control`` and ``mask`` (needs a WanVAE; a sample whose control or mask
    cannot line up with its clip is skipped with a warning that says why, like an unreadable file).
    Returns a summary: ``{"written": n, "skipped": n (already cached), "failed": [paths], "files": [...]}``.
    """
    from openwan.checkpoints import save_safetensors, write_json
    samples = read_captions(data_file) if isinstance(data_file, (str, Path)) else list(data_file)
    buckets = parse_buckets(buckets)
    encode_video = _as_video_encoder(vae)
    encode_text = _as_text_encoder(text_encoder)
    image_cond = _image_conditioner(task, vae, image_encoder)
    vace_cond = _vace_conditioner(vae, target_fps) if task == "vace" else None
    if task != "vace" and any(s.control is not None or s.mask is not None for s in samples):
        raise ValueError(f"the captions give control videos or masks, which only VACE training reads: cache with "
                         f"task 'vace' (--task vace), or remove those columns for task {task!r}")
    if task == "flf2v" and any(b[0] == 1 for b in buckets):
        raise ValueError("flf2v samples need a first and a last frame: use buckets of 5 or more frames")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    written, skipped, failed, files = 0, 0, [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(samples), desc="cache-latents", unit="sample")
    for s in samples:
        name = sample_name(s, buckets, target_fps, task)
        target = out_dir / name
        if target.exists():
            skipped += 1
            files.append(name)
        else:
            prepared = prepare_clip(s.path, buckets, target_fps)
            extra = {}
            if prepared is not None and vace_cond is not None:
                try:
                    with torch.no_grad():
                        extra = vace_cond(s, *prepared)
                except ValueError as e:
                    warnings.warn(f"skipping {s.path}: {e}", stacklevel=2)
                    prepared = None
            if prepared is None:
                failed.append(str(s.path))
            else:
                video, bucket, _ = prepared
                with torch.no_grad():
                    latent = encode_video(video[None])
                    latent = latent[0] if latent.ndim == 5 else latent
                    context = encode_text([s.caption])[0]
                    tensors = {"latent": latent, "context": context, **extra}
                    if image_cond is not None:
                        tensors.update(image_cond(video))
                meta = {"path": str(s.path), "caption": s.caption, "bucket": json.dumps(list(bucket)), "task": task}
                save_safetensors({k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}, target,
                                 metadata=meta)
                written += 1
                files.append(name)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(done=written + skipped, failed=len(failed))
    if bar is not None:
        bar.close()
    if not (out_dir / EMPTY_PROMPT).exists():
        with torch.no_grad():
            empty = encode_text([""])[0]
        save_safetensors({"context": empty.detach().to("cpu", dtype).contiguous()}, out_dir / EMPTY_PROMPT,
                         metadata={"caption": ""})
    if failed:
        warnings.warn(f"cache-latents: {len(failed)} unreadable/unfit file(s) skipped: {failed[:5]}"
                      + (" ..." if len(failed) > 5 else ""), stacklevel=2)
    write_json({"files": files, "failed": failed, "buckets": [list(b) for b in buckets], "target_fps": target_fps,
                "task": task, "source": str(data_file) if isinstance(data_file, (str, Path)) else None}, out_dir / MANIFEST)
    return {"written": written, "skipped": skipped, "failed": failed, "files": files}


def cache_latents_from_checkpoint(data_file, out_dir, ckpt_dir: Union[str, Path, None] = None, buckets=None, *,
                                  vae_path=None, text_encoder_path=None, image_encoder_path=None, device=None,
                                  target_fps=None, dtype: torch.dtype = torch.float32, progress: bool = True,
                                  task: str = "t2v") -> dict:
    """:func:`cache_latents` with the VAE and text encoder (and for i2v / flf2v the CLIP image
    encoder) loaded from a checkpoint directory (official or diffusers layout), or from their own paths."""
    from openwan.models.text_encoder import TextEncoder
    from openwan.models.vae import WanVAE
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if ckpt_dir is None and (vae_path is None or text_encoder_path is None):
        raise ValueError("give ckpt_dir, or both vae_path and text_encoder_path")
    if task in IMAGE_TASKS and ckpt_dir is None and image_encoder_path is None:
        raise ValueError(f"task {task!r} needs the CLIP image encoder: give ckpt_dir or image_encoder_path")
    if ckpt_dir is not None and str(ckpt_dir) == "demo":   # the embedded demo model, as model.path: demo
        from openwan.demo import demo_checkpoint_dir
        ckpt_dir = demo_checkpoint_dir()
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vae = WanVAE.from_pretrained(vae_path or ckpt_dir, device=dev)
    te = TextEncoder.from_pretrained(text_encoder_path or ckpt_dir, device=dev)
    ie = None
    if task in IMAGE_TASKS:
        from openwan.models.image_encoder import ImageEncoder
        ie = ImageEncoder.from_pretrained(image_encoder_path or ckpt_dir, device=dev)
    return cache_latents(data_file, out_dir, vae, te, buckets, target_fps=target_fps, dtype=dtype, progress=progress,
                         task=task, image_encoder=ie)


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="openwan cache-latents",
                                 description="Encode captioned videos/images to VAE latents + text features "
                                             "once, for training (resumable: done samples are skipped).")
    ap.add_argument("--data", required=True, help="captions .csv / .jsonl / .json, or a folder of media + .txt")
    ap.add_argument("--out", required=True, help="output folder for the cached samples")
    ap.add_argument("--ckpt_dir", default=None, help="checkpoint directory holding the VAE and text encoder (or "
                                                     "'demo': the embedded demo model's)")
    ap.add_argument("--vae", default=None, help="VAE weights (overrides --ckpt_dir)")
    ap.add_argument("--text_encoder", default=None, help="text encoder weights (overrides --ckpt_dir)")
    ap.add_argument("--task", choices=TASKS, default="t2v",
                    help="i2v / flf2v also store the image condition (y, clip_fea) from each clip's first "
                         "(and last) frame, for training the I2V / FLF2V models; vace the VACE context from "
                         "each sample's control video and mask (the captions' control / mask columns)")
    ap.add_argument("--image_encoder", default=None, help="CLIP image encoder weights (i2v/flf2v; overrides "
                                                          "--ckpt_dir)")
    ap.add_argument("--bucket", action="append", required=True,
                    help="FRAMESxHEIGHTxWIDTH, repeatable (frames 4n+1, sizes multiples of 16), e.g. 33x480x832")
    ap.add_argument("--fps", type=float, default=None, help="resample videos to this frame rate (Wan: 16)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="storage dtype of the cache")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    from openwan.checkpoints import CheckpointError
    try:
        summary = cache_latents_from_checkpoint(
            a.data, a.out, a.ckpt_dir, a.bucket, vae_path=a.vae, text_encoder_path=a.text_encoder,
            image_encoder_path=a.image_encoder, device=a.device, target_fps=a.fps,
            dtype=torch.bfloat16 if a.dtype == "bf16" else torch.float32, progress=not a.quiet, task=a.task)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}")
        return 2
    print(f"cached {summary['written']} new, {summary['skipped']} already done, {len(summary['failed'])} skipped "
          f"(unreadable) -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
