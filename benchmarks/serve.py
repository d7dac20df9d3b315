"""Benchmark `openwan serve`: N jobs from C concurrent clients (loopback), queue and run times.

Starts `openwan serve` (the demo model unless --ckpt_dir) in a subprocess on a free loopback port,
then C client threads each submit their share of the jobs to POST /v1/videos (retrying after a 429's
Retry-After) and poll them until they finish. Checks that no accepted job is lost or duplicated and
that every result is a playable video with the requested frame count, then prints p50/p95 of the
queue time (accepted -> a worker starts it), the run time (start -> file written) and the
client-seen latency (POST -> completed seen), plus the throughput.

    python benchmarks/serve.py                                    # 50 jobs, 10 clients, 1 CPU worker
    python benchmarks/serve.py --devices cpu,cpu --threads 1      # two CPU workers
    python benchmarks/serve.py --jobs 200 --clients 20 --devices cuda:0,cuda:1 --ckpt_dir ./Wan2.1-T2V-1.3B
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path


def call(url, body=None, method=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--steps", type=int, default=4, help="sample_steps of every job")
    ap.add_argument("--frames", type=int, default=17, help="frame_num of every job")
    ap.add_argument("--devices", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads of the server")
    ap.add_argument("--ckpt_dir", default=None)
    ap.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    a = ap.parse_args(argv)

    out = Path(tempfile.mkdtemp(prefix="openwan-serve-bench-"))
    cmd = [sys.executable, "-m", "openwan.cli", "serve", "--port", "0", "--quiet", "--output_dir", str(out),
           "--devices", a.devices] + (["--threads", str(a.threads)] if a.threads else []) + \
          (["--ckpt_dir", a.ckpt_dir] if a.ckpt_dir else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        print(f"the server did not start: {line!r}", file=sys.stderr)
        return 1
    base = f"http://127.0.0.1:{m.group(1)}"
    accepted, seen, refused, errors = [], {}, [0], []
    lock = threading.Lock()
    deadline = time.monotonic() + a.timeout

    def client(k: int):
        mine = []
        for i in range(k, a.jobs, a.clients):
            body = {"prompt": f"a red circle moving to the right {i}", "seed": i, "sample_steps": a.steps,
                    "frame_num": a.frames}
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                status, data, h = call(base + "/v1/videos", body)
                if status == 429:
                    with lock:
                        refused[0] += 1
                    time.sleep(float(h.get("Retry-After", 1)))
                    continue
                if status != 200:
                    errors.append(f"POST {status}: {data[:200]!r}")
                    break
                mine.append((json.loads(data)["id"], t0, i))
                break
        with lock:
            accepted.extend(mine)
        left = list(mine)
        while left and time.monotonic() < deadline:
            for job in list(left):
                status, data, _ = call(f"{base}/v1/videos/{job[0]}")
                v = json.loads(data)
                if v["status"] in ("completed", "failed", "cancelled"):
                    with lock:
                        seen[job[0]] = (v, time.monotonic() - job[1], job[2])
                    left.remove(job)
            time.sleep(0.1)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    from openwan.video import read_video
    ids = [j[0] for j in accepted]
    done = [v for v, _, _ in seen.values() if v["status"] == "completed"]
    playable = 0
    for v, _, _ in seen.values():
        if v["status"] == "completed":
            status, data, _ = call(base + v["url"])
            f = out / "check.mp4"
            f.write_bytes(data)
            playable += status == 200 and read_video(f)[0].shape[0] == a.frames
    listed = json.loads(call(base + "/v1/videos?limit=100")[1])
    proc.terminate()
    proc.wait(60)
    files = sorted(out.glob("video_*.mp4"))
    seeds = sorted(v["settings"]["seed"] for v in done)
    q = [v["queue_seconds"] for v in done]
    r = [v["run_seconds"] for v in done]
    lat = [s for v, s, _ in seen.values() if v["status"] == "completed"]
    report = {
        "jobs": a.jobs, "clients": a.clients, "devices": a.devices, "steps": a.steps, "frames": a.frames,
        "accepted": len(ids), "unique_ids": len(set(ids)), "completed": len(done), "playable": playable,
        "lost": a.jobs - len(done),
        "files": len(files), "seeds_each_once": seeds == list(range(a.jobs)), "http_429": refused[0],
        "post_errors": errors[:3], "listed_total": len(listed["data"]) + (100 if listed["has_more"] else 0),
        "queue_s_p50": round(pct(q, 50), 3) if q else None, "queue_s_p95": round(pct(q, 95), 3) if q else None,
        "run_s_p50": round(pct(r, 50), 3) if r else None, "run_s_p95": round(pct(r, 95), 3) if r else None,
        "latency_s_p50": round(pct(lat, 50), 3) if lat else None,
        "latency_s_p95": round(pct(lat, 95), 3) if lat else None,
        "run_s_mean": round(statistics.mean(r), 3) if r else None,
        "wall_s": round(wall, 1), "jobs_per_s": round(len(done) / wall, 3),
    }
    print(json.dumps(report, indent=1))
    ok = len(done) == a.jobs == len(set(ids)) == len(files) == playable and report["seeds_each_once"]
    print("OK: none lost, none duplicated, all playable" if ok else "FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
