"""`openwan serve` (the demo model, in a subprocess) killed with -9 or stopped with SIGTERM loses nothing."""
import os
import re
import signal
import sqlite3
import threading

import pytest
from serve_helpers import PROMPT, Running, call, jcall, spawn, wait_done, wait_for

from openwan.video import read_video


def db_rows(out):
    with sqlite3.connect(out / "jobs.sqlite3") as db:
        return {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, status, attempts FROM jobs")}


class Subprocess:
    """The restarted server as `openwan serve` in a subprocess (SIGTERM through the real signal)."""

    def __init__(self, out):
        self.proc, self.base, line = spawn(out)
        m = re.search(r"(\d+) interrupted job\(s\) queued again", line)
        self.requeued = int(m.group(1)) if m else 0

    def term(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


class InProcess:
    """The restarted server in this process (no second interpreter start: the default suite stays fast);
    ``term`` does what the SIGTERM handler does (test_serve.py checks the signal wiring)."""

    def __init__(self, out):
        from openwan.pipelines import load_pipeline
        self.r = Running(load_pipeline("demo", progress=False), out)
        self.base, self.requeued, self.closed = self.r.base, len(self.r.srv.service.requeued), False

    def term(self):
        threading.Thread(target=self.r.srv.stop, daemon=True).start()
        self.r.thread.join(60)
        self.r.srv.server_close()
        self.closed = True

    def close(self):
        if not self.closed:
            self.r.close()


def kill9_and_restart(tmp_path, n_jobs, steps, then=None, restart=Subprocess):
    out = tmp_path / "out"
    proc, base, _ = spawn(out)
    try:
        ids = [jcall(base + "/v1/videos", {"prompt": f"{PROMPT} {i}", "sample_steps": steps, "frame_num": 5,
                                           "seed": i})[1]["id"] for i in range(n_jobs)]
        progress = set()

        def first_done_next_running():
            jobs = jcall(base + "/v1/videos?limit=100")[1]["data"]
            progress.update(j["progress"] for j in jobs if j["status"] == "in_progress")
            st = [j["status"] for j in jobs]
            return "completed" in st and any(j["status"] == "in_progress" and j["progress"] > 0 for j in jobs)
        wait_for(first_done_next_running, 120, every=0.02, what="one job completed and the next running")
    finally:
        proc.kill()                                                  # SIGKILL: no cleanup of any kind
        proc.wait(30)
    at_kill = db_rows(out)
    running = [i for i, (s, _) in at_kill.items() if s == "in_progress"]
    assert len(running) == 1 and sum(s == "completed" for s, _ in at_kill.values()) >= 1, at_kill
    assert set(at_kill) == set(ids)                                  # every accepted job was stored

    server = restart(out)
    base = server.base
    try:
        assert server.requeued == 1
        for i in ids:
            v = wait_done(base, i, timeout=240)
            assert v["status"] == "completed", v
            assert v["attempts"] == (2 if i == running[0] else 1), v  # the interrupted one ran again
            status, data, h = call(base + v["url"])
            f = tmp_path / f"{i}.mp4"
            f.write_bytes(data)
            frames = read_video(f)[0]
            assert status == 200 and frames.shape == (5, 128, 128, 3), frames.shape
        assert any(0 < p < 100 for p in progress), progress          # progress was reported while running
        assert sorted(p.name for p in out.glob("*.mp4")) == sorted(f"{i}.mp4" for i in ids)
        assert not list(out.glob(".*.tmp"))                          # no temp file left by the kill
        if then is not None:
            then(server, out)
    finally:
        server.close()
    return out


def sigterm_during_a_request(server, out):
    """SIGTERM while a synchronous /generate runs: the client gets a JSON 503, the process exits 0,
    the job stays queued (nothing half-written) and would run after the next start."""
    reply = {}
    base = server.base
    t = threading.Thread(target=lambda: reply.update(r=jcall(base + "/generate", {
        "prompt": PROMPT, "sample_steps": 1000, "frame_num": 5}, timeout=120)))
    t.start()
    wait_for(lambda: any(j["status"] == "in_progress" and j["progress"] > 0
                         for j in jcall(base + "/v1/videos")[1]["data"]), 120, what="the job to run")
    server.term()
    t.join(60)
    status, body = reply["r"]
    assert status == 503 and "stays queued" in body["error"], body
    queued = [i for i, (s, _) in db_rows(out).items() if s == "queued"]
    assert len(queued) == 1 and not list(out.glob(f"{queued[0]}*")) and not list(out.glob(".*.tmp"))


def test_kill9_restart_finishes_every_job_and_sigterm_fails_cleanly(tmp_path):
    kill9_and_restart(tmp_path, n_jobs=3, steps=4, then=sigterm_during_a_request, restart=InProcess)


@pytest.mark.slow
def test_six_jobs_survive_kill9(tmp_path):
    """The issue's target: 6 jobs, kill -9 once the first completes, restart: all 6 complete, playable."""
    kill9_and_restart(tmp_path, n_jobs=6, steps=10, then=sigterm_during_a_request)


@pytest.mark.slow
def test_cli_serve_refuses_a_busy_folder(tmp_path):
    """A second `openwan serve` on the folder of a running one exits 2 with the reason (no shared queue)."""
    import subprocess
    import sys
    proc, base, _ = spawn(tmp_path / "out")
    try:
        r = subprocess.run([sys.executable, "-m", "openwan.cli", "serve", "--port", "0", "--output_dir",
                            str(tmp_path / "out")], capture_output=True, text=True, timeout=240,
                           env={**os.environ})
        assert r.returncode == 2 and "another openwan serve uses" in r.stderr, r.stderr
    finally:
        proc.kill()
        proc.wait(30)
