"""The serving service: the job store, the workers and what the HTTP layer asks of them.

``VideoService(pipes, folder)`` locks the folder (one server per folder), puts jobs a killed server
was running back in the queue, removes the temp files such a kill left, and starts one worker per
pipeline. The HTTP handler only parses and answers; everything stateful is here.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Optional

from openwan import validate
from openwan.serve.jobs import FINISHED, JobStore, new_id
from openwan.serve.params import RequestError, check_request, parameter_kinds
from openwan.serve.workers import Worker


def eta_seconds(j: dict, now: float) -> Optional[int]:
    """A running job's seconds left to denoise, from its progress so far at its rate since it started (a long
    video's progress counts its work: docs/long_video.md, "Progress"); None before its first step and when it is not
    running. The decode and write after the last step are not counted; a job that goes on from an earlier attempt's
    kept work is estimated low at first (its progress starts where the kept work ends)."""
    p = j["progress"]
    if j["status"] != "in_progress" or not j["started_at"] or not 0 < p < 100:
        return None
    return int(round(max(0.0, now - j["started_at"]) * (100 - p) / p))


IMAGE_FIELDS = ("image", "first_frame", "last_frame")     # uploadable in a multipart form
VIDEO_FIELDS = ("extend", "src_video")                     # ... as video files (a video to extend, a source)


class FolderInUse(RuntimeError):
    """Another server holds the output folder."""


class ServiceStopping(Exception):
    """The server stops: the job stays queued and runs after a restart."""


def _lock_folder(folder: Path):
    f = open(folder / ".serve.lock", "a+")
    try:
        import fcntl
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # pragma: no cover - not POSIX: no cross-process guard
        pass
    except OSError:
        f.close()
        raise FolderInUse(f"another openwan serve uses {folder}; stop it or give another --output_dir") from None
    return f


class VideoService:
    def __init__(self, pipes, folder, max_queue: int = 100, names=None, log=None, worker_class=Worker):
        self.pipes = list(pipes)
        self.pipe = self.pipes[0]
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_folder(self.folder)
        self.log = log or (lambda msg: None)
        self.store = JobStore(self.folder, max_queue=max_queue)
        self.requeued = self.store.recover()
        self.removed_temp = self._clean_temp()
        self.kinds = parameter_kinds(self.pipe)
        self.fps = self.pipe.variant.sample.fps
        self.stopping = False
        names = names or [f"{i}:{getattr(p, 'device', 'cpu')}" for i, p in enumerate(self.pipes)]
        self.workers = [worker_class(n, p, self.store, self.folder, log=self.log) for n, p in zip(names, self.pipes)]
        for w in self.workers:
            w.start()

    def _clean_temp(self) -> list[str]:
        """Temp files of writes a kill interrupted (atomic_write's ``.<name>.*.tmp``)."""
        gone = []
        for d in (self.folder, self.folder / "uploads"):
            for p in d.glob(".video_*.tmp") if d.is_dir() else []:
                p.unlink(missing_ok=True)
                gone.append(p.name)
        # uploads saved for a request the kill stopped before its job was stored
        for p in (self.folder / "uploads").glob("video_*_*.*") if (self.folder / "uploads").is_dir() else []:
            if self.store.get(p.name[:30]) is None:
                p.unlink(missing_ok=True)
                gone.append(p.name)
        return gone

    def close(self) -> None:
        """Stop the workers (a running job stops at its next step and goes back to the queue)."""
        self.stopping = True
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.join(timeout=600)
        with self.store.changed:
            self.store.changed.notify_all()
        self.store.close()
        self._lock_file.close()

    # ------------------------------------------------------------------ information
    def health(self) -> dict:
        d = self.pipe.defaults()
        guide = list(d.guidance) if isinstance(d.guidance, tuple) else d.guidance   # per A14B expert, or an interval
        return {"status": "stopping" if self.stopping else "ok", "task": self.pipe.task,
                "variant": self.pipe.variant.name, "checkpoint": str(self.pipe.c.source),
                "busy": any(w.current for w in self.workers), "generated": self.store.counts()["completed"],
                "queue": self.store.counts(), "max_queue": self.store.max_queue,
                "workers": [{"name": w.label, "job": w.current} for w in self.workers],
                "parameters": sorted(self.kinds), "sizes": list(d.sizes), "fps": self.fps,
                "defaults": {"size": d.size, "frame_num": d.frame_num, "sample_steps": d.steps,
                             "guide_scale": guide, "sample_shift": d.shift, "sample_solver": d.solver,
                             **({"guide_boundary": d.boundary} if isinstance(guide, list) else {})},
                "image_fields": [f for f in IMAGE_FIELDS if f in self.kinds],
                "video_fields": self.video_fields()}

    def video(self, j: dict) -> dict:
        """A job as the OpenAI video object (plus ``settings``, ``request``, timings)."""
        req, st = j["request"], j["settings"] or {}
        size = st.get("size") or req.get("size") or self.pipe.variant.sample.size
        frames = st.get("frame_num") or req.get("frame_num") or self.pipe.variant.sample.frame_num
        err = None
        if j["status"] in ("failed", "cancelled"):
            err = {"code": j["status"], "message": j["error"] or j["status"]}
        from openwan.pipelines.job import duration_text
        eta = eta_seconds(j, time.time())
        return {"id": j["id"], "object": "video", "status": j["status"], "progress": j["progress"],
                "created_at": int(j["created_at"]),
                "completed_at": int(j["completed_at"]) if j["completed_at"] else None,
                "model": self.pipe.variant.name, "prompt": req.get("prompt"),
                "seconds": f"{frames / self.fps:g}", "size": str(size).replace("*", "x"), "error": err,
                "settings": st or None, "request": req, "attempts": j["attempts"], "worker": j["worker"],
                "queue_seconds": round(j["started_at"] - j["created_at"], 3) if j["started_at"] else None,
                "run_seconds": (round(j["completed_at"] - j["started_at"], 3)
                                if j["completed_at"] and j["started_at"] else None),
                "eta_seconds": eta, "eta_text": None if eta is None else duration_text(eta),
                "url": f"/v1/videos/{j['id']}/content" if j["status"] == "completed" else None}

    def retry_after(self) -> int:
        """Seconds until a queue slot is likely free (for 429's Retry-After)."""
        mean = self.store.mean_run_seconds() or 10.0
        return max(1, int(mean * max(1, self.store.counts()["queued"]) / max(1, len(self.workers)) / 4 + 0.5))

    # ------------------------------------------------------------------ jobs
    def submit(self, req, uploads: Optional[dict] = None) -> dict:
        """Validate and queue; ``uploads`` = {field: (filename, bytes)} from a multipart form."""
        if self.stopping:
            raise ServiceStopping()
        job_id = new_id()
        req = dict(req) if isinstance(req, dict) else req
        saved = []
        try:
            for field, (_, data) in (uploads or {}).items():
                videos = self.video_fields()
                if field not in ("input_reference", *IMAGE_FIELDS, *videos) or (field != "input_reference" and
                                                                                  field not in self.kinds):
                    raise RequestError(f"unexpected file field {field!r}; this {self.pipe.task} server takes "
                                       f"uploaded images as {[f for f in IMAGE_FIELDS if f in self.kinds] or 'none'}"
                                       f"{' (or input_reference)' if 'image' in self.kinds else ''} and videos as "
                                       f"{videos or 'none'}")
                if isinstance(req, dict):
                    save = self._save_video if field in VIDEO_FIELDS else self._save_image
                    path = save(job_id, field, data)
                    saved.append(path)
                    req[field] = str(path)
            kw = check_request(req, self.kinds, fps=self.fps, sizes=self.pipe.variant.sample.sizes)
            try:   # ranges and resource limits: the checks the CLI and the Python API make
                validate.for_pipeline(self.pipe, {**kw, "return_frames": False})
                self._check_now(kw)
            except ValueError as e:           # (InvalidArgument, LongVideoError, the size rule: all ValueErrors)
                raise RequestError(str(e)) from None
            return self.store.add(kw, job_id=job_id)
        except BaseException:
            for p in saved:
                p.unlink(missing_ok=True)
            raise

    def _check_now(self, kw: dict) -> None:
        """What the pipeline refuses before any work and can be told at submission rather than when the job's turn
        comes (it checks again then): a server-side input file that is not there, a given size's multiples, and a
        long video's plan (method, overlap, prompt schedule) where frame_num sets the length (no source video: its
        own length would)."""
        from openwan.long_video import plan_long_video
        from openwan.pipelines.job import check_size
        from openwan.serve.params import FILE_FIELDS, field_paths
        pipe = self.pipe
        for field in sorted(FILE_FIELDS & set(kw)):          # a server-side path (an upload was saved already)
            for path in field_paths(field, kw[field]):
                if not Path(path).is_file():
                    raise ValueError(f"'{field}': no such file on the server: {path} (give a path the server "
                                     f"can read, or upload the file in a multipart form)")
        if kw.get("size") is not None:
            w, h = (int(v) for v in kw["size"].split("*"))
            check_size(w, h, pipe.variant, False, vae=pipe.vae)
        if not any(kw.get(k) is not None for k in ("src_video", "extend")) and isinstance(kw.get("prompt"), str):
            native = pipe.defaults().frame_num
            method, overlap = pipe.long_video_defaults(kw.get("long_method"), kw.get("long_overlap"))
            plan_long_video(kw.get("frame_num") or native, native, method, overlap, kw["prompt"],
                            pipe.vae.temporal_ratio)

    def _save_image(self, job_id: str, field: str, data: bytes) -> Path:
        import io
        from PIL import Image
        from openwan.fileio import atomic_write
        try:
            with Image.open(io.BytesIO(data)) as im:
                try:                                                 # from the header, before decoding
                    validate.image_size(*im.size, what=field)
                except validate.InvalidArgument as e:
                    raise RequestError(str(e)) from None
                im.load()
                img = im.convert("RGB")
        except RequestError:
            raise
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds for bad data
            raise RequestError(f"{field!r} is not a readable image ({type(e).__name__}); upload a PNG or JPEG") \
                from None
        path = self.folder / "uploads" / f"{job_id}_{field}.png"
        return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))

    def video_fields(self) -> list:
        """The video arguments this server's task takes (uploadable): ``extend`` on a text-, image-to-video or VACE
        task, ``src_video`` on video-to-video and VACE."""
        from openwan.pipelines.extend import EXTEND_TASKS
        return [f for f in VIDEO_FIELDS if f in self.kinds and (f != "extend" or self.pipe.task in EXTEND_TASKS)]

    def _save_video(self, job_id: str, field: str, data: bytes) -> Path:
        """An uploaded video, kept as sent once PyAV reads a video stream of an allowed frame size from it."""
        import io

        import av
        from openwan.fileio import atomic_write
        try:
            with av.open(io.BytesIO(data)) as container:
                if not container.streams.video:
                    raise ValueError("it has no video stream")
                stream = container.streams.video[0]
                try:
                    validate.image_size(stream.width, stream.height, what=field)
                except validate.InvalidArgument as e:
                    raise RequestError(str(e)) from None
                next(container.decode(stream))                       # at least one frame decodes
        except RequestError:
            raise
        except Exception as e:  # noqa: BLE001 - PyAV raises many kinds for bad data
            raise RequestError(f"{field!r} is not a readable video ({type(e).__name__}); upload an MP4 (or another "
                               f"format FFmpeg reads)") from None
        path = self.folder / "uploads" / f"{job_id}_{field}.mp4"
        return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))

    def get(self, job_id: str) -> Optional[dict]:
        return self.store.get(job_id) if valid_id(job_id) else None

    def delete(self, job_id: str, wait: float = 30.0) -> Optional[dict]:
        """Cancel (queued/running: the running one stops at its next step) or delete a finished job."""
        j = self.get(job_id)
        if j is None:
            return None
        if j["status"] not in FINISHED:
            self.store.cancel(job_id)
            j = self.store.wait(job_id, wait)
            return {**self.video(j), "deleted": False}
        self.store.delete(job_id)
        for p in self._files(j):
            p.unlink(missing_ok=True)
        return {"id": job_id, "object": "video.deleted", "deleted": True}

    def _files(self, j: dict) -> list[Path]:
        from openwan.pipelines.resume import resume_path, steps_path
        files = [self.folder / f"{j['id']}{ext}" for ext in (".mp4", ".png", ".json")]
        return files + [resume_path(files[0]), steps_path(files[0])] + list((self.folder / "uploads").glob(f"{j['id']}_*.*"))

    def content(self, job_id: str) -> Optional[Path]:
        j = self.get(job_id)
        if j is None or j["status"] != "completed" or not j["path"]:
            return None
        p = Path(j["path"])
        return p if p.is_file() else None

    def generate(self, req) -> dict:
        """The synchronous POST /generate: queue, wait, answer {path, url, settings, seconds}."""
        t0 = time.perf_counter()
        j = self.submit(req)
        while True:
            j = self.store.wait(j["id"], 1.0)
            if j["status"] in FINISHED:
                break
            if self.stopping:
                raise ServiceStopping(j["id"])
        if j["status"] != "completed":
            raise RequestError(j["error"] or j["status"]) if _client_error(j["error"]) else \
                RuntimeError(j["error"] or j["status"])
        name = Path(j["path"]).name
        # seconds: from the request's arrival to the file, queue time included
        return {"id": j["id"], "path": j["path"], "url": f"/outputs/{name}", "settings": j["settings"],
                "seconds": round(time.perf_counter() - t0, 3),
                "queue_seconds": round(j["started_at"] - j["created_at"], 3)}

    def output_file(self, name: str) -> Optional[Path]:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+\.(mp4|png|json)", name) or name.startswith("."):
            return None
        p = self.folder / name
        return p if p.is_file() else None


def valid_id(job_id: str) -> bool:
    return bool(re.fullmatch(r"video_[0-9a-f]{24}", job_id or ""))


def _client_error(msg: Optional[str]) -> bool:
    # errors the pipeline raised about the request itself (ValueError and friends) vs crashes
    return bool(msg) and not re.match(r"[A-Z][A-Za-z]*(Error|Exception): ", msg)
