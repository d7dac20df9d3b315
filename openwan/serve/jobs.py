"""The job queue, durable in one SQLite file (standard library) in the output folder.

A job is accepted only once its row is committed (``synchronous=FULL``), so a server killed with
-9 loses nothing it answered for. ``recover()`` at start puts the job that was running back in the
queue (or marks it cancelled if a cancel was asked), and ``claim()`` hands the oldest queued job to
one worker at a time (``BEGIN IMMEDIATE``: atomic also across processes).

Status: queued -> in_progress -> completed | failed | cancelled (queued -> cancelled too).
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Optional

STATUSES = ("queued", "in_progress", "completed", "failed", "cancelled")
FINISHED = ("completed", "failed", "cancelled")
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    request TEXT NOT NULL,
    settings TEXT,
    error TEXT,
    path TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
"""


class QueueFull(Exception):
    """The queue holds ``max_queue`` jobs: answered 429 with Retry-After."""


class JobStore:
    """Jobs in ``<folder>/jobs.sqlite3``: one connection, used under a lock (threads of one server)."""

    def __init__(self, folder, max_queue: int = 100):
        self.path = Path(folder) / "jobs.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_queue = max_queue
        self.lock = threading.RLock()
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.changed = threading.Condition(self.lock)              # notified on every state change

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _job(row) -> Optional[dict]:
        if row is None:
            return None
        j = dict(row)
        j["request"] = json.loads(j["request"])
        j["settings"] = json.loads(j["settings"]) if j["settings"] else None
        j["cancel"] = bool(j["cancel"])
        return j

    def get(self, job_id: str) -> Optional[dict]:
        with self.lock:
            return self._job(self.db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())

    def list(self, after: Optional[str] = None, limit: int = 20, order: str = "desc") -> tuple[list[dict], bool]:
        """A page of jobs (newest first for desc) after job ``after``; and whether more follow."""
        op, direction = ("<", "DESC") if order == "desc" else (">", "ASC")
        with self.lock:
            where, args = "", []
            if after is not None:
                row = self.db.execute("SELECT seq FROM jobs WHERE id=?", (after,)).fetchone()
                if row is None:
                    raise KeyError(after)
                where, args = f"WHERE seq {op} ?", [row["seq"]]
            rows = self.db.execute(f"SELECT * FROM jobs {where} ORDER BY seq {direction} LIMIT ?",
                                   args + [limit + 1]).fetchall()
        return [self._job(r) for r in rows[:limit]], len(rows) > limit

    def counts(self) -> dict:
        with self.lock:
            rows = self.db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        return {s: 0 for s in STATUSES} | {r["status"]: r["n"] for r in rows}

    def mean_run_seconds(self, last: int = 20) -> Optional[float]:
        with self.lock:
            row = self.db.execute("SELECT AVG(completed_at - started_at) AS s FROM (SELECT * FROM jobs WHERE "
                                  "status='completed' ORDER BY seq DESC LIMIT ?)", (last,)).fetchone()
        return row["s"]

    # ------------------------------------------------------------------ writing
    def _tx(self, sql: str, args=()) -> sqlite3.Cursor:
        with self.lock:
            cur = self.db.execute(sql, args)
            self.changed.notify_all()
            return cur

    def add(self, request: dict, job_id: Optional[str] = None) -> dict:
        """Queue a job (committed before this returns) or raise QueueFull."""
        job_id = job_id or new_id()
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                n = self.db.execute("SELECT COUNT(*) FROM jobs WHERE status='queued'").fetchone()[0]
                if n >= self.max_queue:
                    raise QueueFull(n)
                self.db.execute("INSERT INTO jobs (id, status, request, created_at) VALUES (?, 'queued', ?, ?)",
                                (job_id, json.dumps(request, allow_nan=False), time.time()))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.changed.notify_all()
            return self.get(job_id)

    def claim(self, worker: str) -> Optional[dict]:
        """The oldest queued job, now in_progress for ``worker``; None when the queue is empty."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                row = self.db.execute("SELECT id FROM jobs WHERE status='queued' ORDER BY seq LIMIT 1").fetchone()
                if row is not None:
                    self.db.execute("UPDATE jobs SET status='in_progress', progress=0, started_at=?, worker=?, "
                                    "attempts=attempts+1 WHERE id=?", (time.time(), worker, row["id"]))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.changed.notify_all()
            return None if row is None else self.get(row["id"])

    def set_progress(self, job_id: str, progress: int) -> None:
        self._tx("UPDATE jobs SET progress=? WHERE id=? AND status='in_progress'", (int(progress), job_id))

    def complete(self, job_id: str, path: str, settings: dict) -> None:
        self._tx("UPDATE jobs SET status='completed', progress=100, path=?, settings=?, completed_at=? WHERE id=?",
                 (path, json.dumps(settings, allow_nan=False, default=str), time.time(), job_id))

    def fail(self, job_id: str, error: str, status: str = "failed") -> None:
        self._tx("UPDATE jobs SET status=?, error=?, completed_at=? WHERE id=?",
                 (status, error, time.time(), job_id))

    def requeue(self, job_id: str) -> None:
        """Back to the queue (the server stops while the job runs): it runs again after a restart."""
        self._tx("UPDATE jobs SET status='queued', progress=0, worker=NULL WHERE id=? AND status='in_progress'",
                 (job_id,))

    def cancel(self, job_id: str) -> Optional[str]:
        """Cancel a queued job now or ask a running one to stop; the status after, None if unknown."""
        with self.lock:
            self.db.execute("UPDATE jobs SET status='cancelled', completed_at=?, error='cancelled by request' "
                            "WHERE id=? AND status='queued'", (time.time(), job_id))
            self.db.execute("UPDATE jobs SET cancel=1 WHERE id=? AND status='in_progress'", (job_id,))
            self.changed.notify_all()
            j = self.get(job_id)
            return None if j is None else j["status"]

    def cancelled(self, job_id: str) -> bool:
        with self.lock:
            row = self.db.execute("SELECT cancel FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row is None or bool(row["cancel"])

    def delete(self, job_id: str) -> None:
        self._tx("DELETE FROM jobs WHERE id=?", (job_id,))

    def recover(self) -> list[str]:
        """At start: the jobs a killed server was running go back to the queue (cancel asked: cancelled)."""
        with self.lock:
            rows = self.db.execute("SELECT id FROM jobs WHERE status='in_progress' AND cancel=0").fetchall()
            self.db.execute("UPDATE jobs SET status='cancelled', completed_at=?, error='cancelled by request' "
                            "WHERE status='in_progress' AND cancel=1", (time.time(),))
            self.db.execute("UPDATE jobs SET status='queued', progress=0, worker=NULL WHERE status='in_progress'")
            return [r["id"] for r in rows]

    def wait(self, job_id: str, timeout: float, until=FINISHED) -> Optional[dict]:
        """Block until the job reaches a status in ``until`` (or timeout); the job then."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                j = self.get(job_id)
                left = deadline - time.monotonic()
                if j is None or j["status"] in until or left <= 0:
                    return j
                self.changed.wait(min(left, 1.0))


def new_id() -> str:
    return "video_" + secrets.token_hex(12)
