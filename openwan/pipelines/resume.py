"""A generation that stops part way goes on from where it stopped. Writing an output, a run keeps its progress beside
it, in ``.<name>.resume.pt``: a ``continue`` long video its finished windows (and then its refinement pass's result),
after each one, and the steps of the one in progress; any other run (one window, or the ``windows`` method's whole
latent) its solve after a step, at most every :func:`step_interval` seconds (the sample and the solver's state). A run
of the same call (the same settings, noise, prompt features and weight files: :func:`fingerprint`) with the same
output path starts after what was kept, and the file is removed once the output is written. What comes after depends
only on the call and what was kept, so the video is the one an uninterrupted run makes, bit for bit (its record too:
the skipped DiT forward counts are kept in the file). A run with a step cache keeps its solve from before a step whose
DiT calls all ran (not reused): a fresh cache makes that step anew too, and holds what the first one held after it
(with what EasyCache's computed step reads, ``restartable`` / ``resume_state`` on the caches: openwan.caches), so it
goes on exactly.

    .clip.mp4.resume.pt = {"key": fingerprint, "windows": n done, "refined": bool, "latent": [C, T, h, w], "stats"}
                        | {"key": fingerprint, "step": i done, "x": sample, "solver": its state, "stats", "cache"}

A ``continue`` video keeps the steps of the window (or the pass) after its finished ones in a second file,
``.clip.mp4.resume.steps.pt`` = {"key", "windows": which window, "partial": the second form} (:class:`Partial`), so
a step's write is one window's solve, not the whole video made so far. A ``rolling`` video keeps its stages the same
way (openwan.pipelines.rolling.Kept: its finished frames in the first file, the ladder's state or a solve's steps
in the second).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch

VERSION = 1
_UNWRITABLE: set = set()                   # progress files a write failed on (warned once)
DECODE_ONLY = ("stats", "tile", "fps")     # settings the latent does not depend on (a rerun may change them)


def resume_path(output_path) -> Path:
    """Where a run writing ``output_path`` keeps its progress."""
    p = Path(output_path)
    return p.with_name(f".{p.name}.resume.pt")


def steps_path(output_path) -> Path:
    """Where a ``continue`` long video writing ``output_path`` keeps the steps of the window in progress
    (:class:`Partial`): beside its progress file."""
    return steps_beside(resume_path(output_path))


def steps_beside(progress: Path) -> Path:
    """The steps file that goes with the progress file ``progress`` (``NAME.pt`` -> ``NAME.steps.pt``)."""
    return progress.with_name(progress.name[:-len(".pt")] + ".steps.pt")


def forget(output_path) -> None:
    """Remove what a run writing ``output_path`` kept (its written output, or a job that will not run again)."""
    for p in (resume_path(output_path), steps_path(output_path)):
        p.unlink(missing_ok=True)


def _update(h, t: Optional[torch.Tensor]) -> None:
    if t is None:
        h.update(b"-")
        return
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    h.update(t.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes())


WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".gguf")


def _weight_files(settings: dict) -> list:
    """(path, size, mtime) of the weight files the call read: its checkpoint's (a folder, or one file) and its
    LoRAs'. Their stamps, not their values: an expert released to its file or offloaded reads the same."""
    paths = [settings.get("checkpoint"), settings.get("dit")] + [d.get("path") for d in settings.get("lora") or []
                                                                 if isinstance(d, dict)]
    out = []
    for p in (Path(str(p)) for p in paths if p):
        files = sorted(f for f in p.rglob("*") if f.suffix in WEIGHT_SUFFIXES
                       and not f.name.endswith(".resume.pt")) if p.is_dir() else [p]    # (outputs written there)
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            out.append((str(f), st.st_size, st.st_mtime_ns))
    return out


def fingerprint(pipe, job) -> str:
    """What the run depends on: the call's settings (but for :data:`DECODE_ONLY`), its starting noise, the prompt's
    features, an extended video's source latents, and the stamps of the weight files read (a changed checkpoint at
    the same path)."""
    h = hashlib.sha256(str(VERSION).encode())
    settings = {k: v for k, v in job.settings.items() if k not in DECODE_ONLY}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    _update(h, job.start)
    _update(h, job.cond.context)
    _update(h, None if job.given is None else job.given.latents)
    h.update(json.dumps(_weight_files(job.settings)).encode())
    return h.hexdigest()


def _distributed() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Progress:
    """The progress of one call (a long video's finished windows, or a solve's last kept step), kept at ``path``
    under ``key``."""

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
        d = self._read()
        ok = (d is not None and isinstance(d.get("latent"), torch.Tensor)
              and d["latent"].shape[0] == like.shape[0] and d["latent"].shape[2:] == like.shape[2:]
              and d["latent"].shape[1] <= like.shape[1] and isinstance(d.get("windows"), int))
        if not ok:
            return {"windows": 0}
        return {"windows": d["windows"], "latent": d["latent"].to(like.device, like.dtype),
                "refined": bool(d.get("refined")), "stats": dict(d.get("stats") or {})}

    def save(self, windows: int, latent: torch.Tensor, stats: dict, refined: bool = False) -> None:
        """Keep ``windows`` finished windows (``latent``: the latent frames they made)."""
        self._write({"windows": windows, "refined": refined, "latent": latent.detach().float().cpu().clone(),
                     "stats": dict(stats)})

    def _read(self) -> Optional[dict]:
        """The file's content where it is this call's (None: no file, another call's, unreadable)."""
        if not self.path.is_file():
            return None
        try:
            d = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged file is started over, never an error
            return None
        return d if isinstance(d, dict) and d.get("key") == self.key else None

    def _write(self, content: dict) -> None:
        """``content`` under this call's key, written atomically (temp file, then rename). Best effort: a write that
        fails (a full disk) leaves the last one in place and the run goes on, with a warning (once per file)."""
        from openwan.fileio import atomic_write
        obj = {"version": VERSION, "key": self.key, **content}
        try:
            atomic_write(self.path, lambda tmp: torch.save(obj, tmp), overwrite=True)
        except (OSError, RuntimeError) as e:        # (torch.save reports a failed write as a RuntimeError)
            if self.path not in _UNWRITABLE:
                _UNWRITABLE.add(self.path)
                warnings.warn(f"could not keep this run's progress in {self.path} ({e}); the run goes on, but if it "
                              f"stops it will start over (or from the progress kept before)", stacklevel=2)

    # ------------------------------------------------------------------ a solve's steps
    def load_steps(self, like: torch.Tensor, cached: bool = False) -> Optional[tuple]:
        """``(steps done, sample, solver state, stats, step cache state)`` an earlier run of this call kept, or None;
        ``cached``: the run has a step cache (whose state the file must hold)."""
        d = self._read()
        if not (d is not None and isinstance(d.get("step"), int)
                and isinstance(d.get("x"), torch.Tensor) and d["x"].shape == like.shape
                and isinstance(d.get("solver"), dict) and (not cached or isinstance(d.get("cache"), dict))):
            return None
        return (d["step"], d["x"].to(like.device, like.dtype), d["solver"], dict(d.get("stats") or {}),
                d.get("cache"))

    def keeper(self, stats: Callable[[], dict], cache=None) -> Callable:
        """``keep(i, x, stepper)`` for :func:`openwan.sampling.run`: the solve after step i, written when
        :func:`step_interval` seconds have passed since the last write (or the run began); ``stats()`` the run's
        deterministic counts so far. With a step cache (``cache``: the wrapper) the solve as it was before the step
        just made, once that step turns out :meth:`restartable <openwan.caches.BlockCache.restartable>` (the
        snapshot taken only when a write is due)."""
        every = step_interval()
        last = [time.monotonic()]
        before = [None]                 # with a step cache: the snapshot of the solve before the last step

        def snapshot(i, x, stepper) -> dict:
            return {"step": i, "x": x.detach().cpu().clone(), "solver": stepper.state(), "stats": dict(stats()),
                    "cache": None if cache is None else cache.resume_state()}

        def write(content: dict) -> None:
            self._write(content)
            last[0] = time.monotonic()

        def keep(i, x, stepper):
            if i == stepper.num_steps:
                return
            if cache is None:
                if time.monotonic() - last[0] >= every:
                    write(snapshot(i, x, stepper))
                return
            if before[0] is not None and cache.restartable():
                write(before[0])
            before[0] = snapshot(i, x, stepper) if time.monotonic() - last[0] >= every else None
        return keep


class Partial(Progress):
    """One run inside a ``continue`` long video (window ``windows``, or the refinement pass once every window is done):
    its solve's steps kept beside the call's file of finished windows, in a file of their own (:func:`steps_path`),
    so a stop inside a window loses only the steps since the last kept one, and a step's write is the size of one
    window's solve, whatever the length of the video made so far (the finished windows are written once each)."""

    def __init__(self, whole: Progress, windows):
        super().__init__(steps_beside(Path(whole.path)), whole.key)
        self.windows = windows          # which run: a window's index, or a name (a rolling video's "ladder")

    def keep(self, content: dict) -> None:
        """Keep ``content`` as this run's steps: a run's own state where it is not one solve's (the rolling ladder's:
        openwan.pipelines.rolling)."""
        self._write(content)

    def kept(self) -> Optional[dict]:
        """What :meth:`keep` kept for this run of this call (None: nothing, another run's or call's, unreadable)."""
        return self._read()

    def _read(self) -> Optional[dict]:
        d = super()._read()
        if d is None or d.get("windows") != self.windows or not isinstance(d.get("partial"), dict):
            return None
        return d["partial"]

    def _write(self, content: dict) -> None:
        super()._write({"windows": self.windows, "partial": content})


def step_interval() -> float:
    """Seconds between two writes of a solve's progress: ``OPENWAN_RESUME_EVERY`` (default 30; 0: after every
    step). A step costs more than a write at the published sizes; the interval bounds the writes where it does not."""
    value = os.environ.get("OPENWAN_RESUME_EVERY", "30")
    try:
        every = float(value)
    except ValueError:
        raise ValueError(f"OPENWAN_RESUME_EVERY must be a number of seconds (0: every step), got {value!r}") from None
    if not every >= 0:
        raise ValueError(f"OPENWAN_RESUME_EVERY must be >= 0 seconds, got {value!r}")
    return every
