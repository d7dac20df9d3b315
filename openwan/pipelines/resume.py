"""A long video that stops part way goes on from where it stopped: the ``continue`` method's finished windows (and
then its refinement pass's result) are kept beside the output, in ``.<name>.resume.pt``, after each one; a run of the
same call (the same settings, noise, prompt features and weights: :func:`fingerprint`) with the same output path
starts after the last one kept, and the file is removed once the output is written. Window k depends only on the
call and the windows before it, so the video is the one an uninterrupted run makes, bit for bit (its record too: the
skipped windows' DiT forward counts are kept in the file).

    .clip.mp4.resume.pt = {"key": fingerprint, "windows": n done, "refined": bool, "latent": [C, T, h, w], "stats"}
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import torch

VERSION = 1
DECODE_ONLY = ("stats", "tile", "fps")     # settings the latent does not depend on (a rerun may change them)


def resume_path(output_path) -> Path:
    """Where a run writing ``output_path`` keeps its finished windows."""
    p = Path(output_path)
    return p.with_name(f".{p.name}.resume.pt")


def _update(h, t: Optional[torch.Tensor], limit: Optional[int] = None) -> None:
    if t is None:
        h.update(b"-")
        return
    flat = t.detach().reshape(-1)
    flat = flat if limit is None else flat[:limit]
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())


def fingerprint(pipe, job) -> str:
    """What the windows depend on: the call's settings (but for :data:`DECODE_ONLY`), its starting noise, the prompt's features, an
    extended video's source latents, and a sample of every DiT's weights (the first 4096 values of its first and
    last parameters: a changed checkpoint at the same path)."""
    h = hashlib.sha256(str(VERSION).encode())
    settings = {k: v for k, v in job.settings.items() if k not in DECODE_ONLY}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    _update(h, job.start)
    _update(h, job.cond.context)
    _update(h, None if job.given is None else job.given.latents)
    for dit in (pipe.dit, getattr(pipe.c, "dit_continue", None)):
        params = [] if dit is None else list(dit.parameters())
        for p in (params[:1] + params[-1:]):
            _update(h, p, 4096)
    return h.hexdigest()


def _distributed() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Progress:
    """The finished windows of one call, kept at ``path`` under ``key``."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key

    @classmethod
    def of(cls, pipe, job) -> Optional["Progress"]:
        """The call's progress file, where it writes an output (None otherwise, and under torchrun: there only the
        first process writes, and every process must run the same windows)."""
        if job.output_path is None or _distributed():
            return None
        return cls(resume_path(job.output_path), fingerprint(pipe, job))

    def load(self, like: torch.Tensor) -> dict:
        """What an earlier run of this call kept: ``windows`` (done), ``latent`` (their latent frames, on ``like``'s
        device and dtype), ``refined``, ``stats``; ``{"windows": 0}`` where there is nothing of this call's (no file,
        another call's, unreadable)."""
        if not self.path.is_file():
            return {"windows": 0}
        try:
            d = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged file is started over, never an error
            return {"windows": 0}
        ok = (isinstance(d, dict) and d.get("key") == self.key and isinstance(d.get("latent"), torch.Tensor)
              and d["latent"].shape[0] == like.shape[0] and d["latent"].shape[2:] == like.shape[2:]
              and d["latent"].shape[1] <= like.shape[1] and isinstance(d.get("windows"), int))
        if not ok:
            return {"windows": 0}
        return {"windows": d["windows"], "latent": d["latent"].to(like.device, like.dtype),
                "refined": bool(d.get("refined")), "stats": dict(d.get("stats") or {})}

    def save(self, windows: int, latent: torch.Tensor, stats: dict, refined: bool = False) -> None:
        """Keep ``windows`` finished windows (``latent``: the latent frames they made), written atomically."""
        from openwan.fileio import atomic_write
        obj = {"version": VERSION, "key": self.key, "windows": windows, "refined": refined,
               "latent": latent.detach().float().cpu().clone(), "stats": dict(stats)}
        atomic_write(self.path, lambda tmp: torch.save(obj, tmp), overwrite=True)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
