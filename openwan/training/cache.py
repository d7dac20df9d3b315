"""Encode a captioned dataset once: VAE latents + text features on disk, one file per sample.

    captions (CSV / JSONL / folder)  --read_captions-->  samples
    sample --prepare_media--> video [3, F, H, W] in its bucket  --encode_video-->  latent [16, T, h, w]
    caption                                                     --encode_text-->   context [L, D]
    -> <out_dir>/<name>-<hash>.safetensors  {latent, context}  (metadata: path, caption, bucket)
    -> <out_dir>/manifest.json            (the files of this run, read by CachedLatentDataset)

Each file is written atomically (temp file + rename). The file name hashes (path, caption, bucket
list, fps), so re-running skips the samples already done (resumable) and a changed caption is
re-encoded. Unreadable media files are skipped with a warning and listed in the manifest.

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

from openwan.training.data import Sample, parse_buckets, prepare_media, read_captions

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


def sample_name(sample: Sample, buckets: Sequence, target_fps: Optional[float]) -> str:
    """A stable file name for a sample: readable stem + hash of everything that changes its content."""
    key = json.dumps([str(Path(sample.path).resolve()), sample.caption, [list(b) for b in buckets], target_fps])
    h = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(sample.path).stem)[:40] or "sample"
    return f"{stem}-{h}.safetensors"


def cache_latents(data_file: Union[str, Path, Sequence[Sample]], out_dir: Union[str, Path], vae, text_encoder,
                  buckets, *, target_fps: Optional[float] = None, dtype: torch.dtype = torch.float32,
                  progress: bool = True) -> dict:
    """Encode every sample of ``data_file`` into ``out_dir`` (skipping those already there).

    Returns a summary: ``{"written": n, "skipped": n (already cached), "failed": [paths], "files": [...]}``.
    """
    from openwan.checkpoints import save_safetensors, write_json
    samples = read_captions(data_file) if isinstance(data_file, (str, Path)) else list(data_file)
    buckets = parse_buckets(buckets)
    encode_video = _as_video_encoder(vae)
    encode_text = _as_text_encoder(text_encoder)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    written, skipped, failed, files = 0, 0, [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(samples), desc="cache-latents", unit="sample")
    for s in samples:
        name = sample_name(s, buckets, target_fps)
        target = out_dir / name
        if target.exists():
            skipped += 1
            files.append(name)
        else:
            prepared = prepare_media(s.path, buckets, target_fps)
            if prepared is None:
                failed.append(str(s.path))
            else:
                video, bucket = prepared
                with torch.no_grad():
                    latent = encode_video(video[None])
                    latent = latent[0] if latent.ndim == 5 else latent
                    context = encode_text([s.caption])[0]
                meta = {"path": str(s.path), "caption": s.caption, "bucket": json.dumps(list(bucket))}
                save_safetensors({"latent": latent.detach().to("cpu", dtype),
                                  "context": context.detach().to("cpu", dtype)}, target, metadata=meta)
                written += 1
                files.append(name)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(done=written + skipped, failed=len(failed))
    if bar is not None:
        bar.close()
    if failed:
        warnings.warn(f"cache-latents: {len(failed)} unreadable/unfit file(s) skipped: {failed[:5]}"
                      + (" ..." if len(failed) > 5 else ""), stacklevel=2)
    write_json({"files": files, "failed": failed, "buckets": [list(b) for b in buckets], "target_fps": target_fps,
                "source": str(data_file) if isinstance(data_file, (str, Path)) else None}, out_dir / MANIFEST)
    return {"written": written, "skipped": skipped, "failed": failed, "files": files}


def cache_latents_from_checkpoint(data_file, out_dir, ckpt_dir: Union[str, Path, None] = None, buckets=None, *,
                                  vae_path=None, text_encoder_path=None, device=None, target_fps=None,
                                  dtype: torch.dtype = torch.float32, progress: bool = True) -> dict:
    """:func:`cache_latents` with the VAE and text encoder loaded from a checkpoint directory
    (official or diffusers layout), or from their own paths."""
    from openwan.models.text_encoder import TextEncoder
    from openwan.models.vae import WanVAE
    if ckpt_dir is None and (vae_path is None or text_encoder_path is None):
        raise ValueError("give ckpt_dir, or both vae_path and text_encoder_path")
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vae = WanVAE.from_pretrained(vae_path or ckpt_dir, device=dev)
    te = TextEncoder.from_pretrained(text_encoder_path or ckpt_dir, device=dev)
    return cache_latents(data_file, out_dir, vae, te, buckets, target_fps=target_fps, dtype=dtype, progress=progress)


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="openwan cache-latents",
                                 description="Encode captioned videos/images to VAE latents + text features "
                                             "once, for training (resumable: done samples are skipped).")
    ap.add_argument("--data", required=True, help="captions .csv / .jsonl / .json, or a folder of media + .txt")
    ap.add_argument("--out", required=True, help="output folder for the cached samples")
    ap.add_argument("--ckpt_dir", default=None, help="checkpoint directory holding the VAE and text encoder")
    ap.add_argument("--vae", default=None, help="VAE weights (overrides --ckpt_dir)")
    ap.add_argument("--text_encoder", default=None, help="text encoder weights (overrides --ckpt_dir)")
    ap.add_argument("--bucket", action="append", required=True,
                    help="FRAMESxHEIGHTxWIDTH, repeatable (frames 4n+1, sizes multiples of 16), e.g. 33x480x832")
    ap.add_argument("--fps", type=float, default=None, help="resample videos to this frame rate (Wan: 16)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="storage dtype of the cache")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    try:
        summary = cache_latents_from_checkpoint(
            a.data, a.out, a.ckpt_dir, a.bucket, vae_path=a.vae, text_encoder_path=a.text_encoder,
            device=a.device, target_fps=a.fps, dtype=torch.bfloat16 if a.dtype == "bf16" else torch.float32,
            progress=not a.quiet)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}")
        return 2
    print(f"cached {summary['written']} new, {summary['skipped']} already done, {len(summary['failed'])} skipped "
          f"(unreadable) -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
