"""Workers: one thread per device, each with its own loaded pipeline, taking jobs from the store.

A worker claims the oldest queued job, runs the pipeline with a step callback that reports
progress (0-99 while denoising, 100 when the file is written) and raises to stop the job at the
next step when it is cancelled or the server stops. The output goes to ``<folder>/<id>.mp4`` (or
.png), written atomically by the pipeline; a job interrupted by a kill is re-run from the start.
"""
from __future__ import annotations

import threading
import traceback
from pathlib import Path

from openwan.serve.jobs import JobStore


class Cancelled(Exception):
    """Raised from the step callback: the client cancelled the job."""


class Stopping(Exception):
    """Raised from the step callback: the server stops; the job goes back to the queue."""


def output_ext(pipe, request: dict) -> str:
    return ".png" if request.get("frame_num") == 1 or pipe.task == "t2i" else ".mp4"


class Worker(threading.Thread):
    """Runs jobs of ``store`` on ``pipe`` until ``stop()``."""

    def __init__(self, name: str, pipe, store: JobStore, folder, log=None):
        super().__init__(name=f"openwan-worker-{name}", daemon=True)
        self.label, self.pipe, self.store, self.folder = name, pipe, store, Path(folder)
        self.stopping = threading.Event()
        self.current = None
        self.log = log or (lambda msg: None)
        pipe.progress = False                                        # no tqdm bars in a server

    def stop(self) -> None:
        self.stopping.set()
        with self.store.changed:
            self.store.changed.notify_all()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                job = self.store.claim(self.label)
            except Exception as e:  # noqa: BLE001 - e.g. the store was closed under us at shutdown
                self.log(f"worker {self.label}: cannot claim a job: {e}")
                return
            if job is None:
                self.idle()
                continue
            self.current = job["id"]
            try:
                self.run_job(job)
            finally:
                self.current = None

    # hooks (a torchrun group's worker mirrors them to its other processes: see group.py)
    def idle(self) -> None:
        with self.store.changed:
            self.store.changed.wait(1.0)

    def prepare(self, job_id: str, kw: dict) -> dict:
        return kw

    def step_flag(self, job_id: str) -> None:
        """Raise Stopping / Cancelled to leave the denoising loop at this step."""
        if self.stopping.is_set():
            raise Stopping()
        if self.store.cancelled(job_id):
            raise Cancelled()

    def run_job(self, job: dict) -> None:
        import torch
        job_id, kw = job["id"], dict(job["request"])
        kw = self.prepare(job_id, kw)
        prompt = kw.pop("prompt")
        steps = kw.get("sample_steps") or self.pipe.variant.sample.steps
        path = self.folder / f"{job_id}{output_ext(self.pipe, kw)}"
        last = [-1]

        def on_step(i, t, x):
            self.step_flag(job_id)
            p = min(99, int(100 * (i + 1) / max(steps, 1)))
            if p != last[0]:
                last[0] = p
                self.store.set_progress(job_id, p)

        try:
            with torch.inference_mode():
                # overwrite: the path is this job's own; an attempt killed after its rename left it
                result = self.pipe(prompt, output_path=path, overwrite=True, return_frames=False,
                                   callback=on_step, **kw)
        except Stopping:
            self.store.requeue(job_id)
            self.log(f"{job_id}: back in the queue (server stopping)")
        except Cancelled:
            self.store.fail(job_id, "cancelled by request", status="cancelled")
            self.log(f"{job_id}: cancelled")
            forget_progress(path)
        except (ValueError, TypeError, FileNotFoundError) as e:
            self.store.fail(job_id, str(e))
            self.log(f"{job_id}: failed: {e}")
            forget_progress(path)
        except Exception as e:  # noqa: BLE001 - one bad job must not end the worker
            self.store.fail(job_id, f"{type(e).__name__}: {e}")
            self.log(f"{job_id}: failed:\n{traceback.format_exc()}")
            forget_progress(path)
        else:
            self.store.complete(job_id, str(result.path), result.settings)
            self.log(f"{job_id}: completed -> {result.path}")


def forget_progress(path) -> None:
    """A job that will not run again: its long video's finished windows (kept for a requeued run to go on from,
    openwan.pipelines.resume) are removed."""
    from openwan.pipelines.resume import forget
    forget(path)
