"""Shared by the server tests: loopback HTTP calls, bounded waits, multipart bodies, servers."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

PROMPT = "a red circle moving to the right"


def call(url, body=None, raw=None, method=None, headers=None, timeout=120):
    """(status, body bytes, headers) of one request; JSON-encodes ``body``."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    h = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=data, method=method, headers={**h, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def jcall(url, body=None, **kw):
    status, data, _ = call(url, body, **kw)
    return status, json.loads(data)


def wait_for(fn, timeout=120.0, every=0.05, what="condition"):
    """Poll ``fn()`` until it returns something truthy; fail after ``timeout`` seconds (bounded loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_done(base, job_id, timeout=120.0, headers=None):
    def done():
        s, v = jcall(f"{base}/v1/videos/{job_id}", headers=headers)
        return v if v["status"] in ("completed", "failed", "cancelled") else None
    return wait_for(done, timeout, what=f"{job_id} to finish")


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data form; files: {name: (filename, bytes)}."""
    b = uuid.uuid4().hex
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f"--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode())
    for k, (fn, data) in files.items():
        out.write(f"--{b}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{fn}\"\r\n"
                  f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    out.write(f"--{b}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={b}"


def png_bytes(w=64, h=32, color=(200, 30, 30)) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


class Running:
    """An in-process server on a free loopback port, stopped by ``close()``."""

    def __init__(self, pipes, out, **kw):
        from openwan.serve import make_server
        self.srv = make_server(pipes, port=0, output_dir=out, quiet=True, **kw)
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.srv.server_address[1]}"
        self.port = self.srv.server_address[1]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def spawn(out, *args, env=None, timeout=240.0):
    """`openwan serve` (the demo model) in a subprocess; (process, base URL) once it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "openwan.cli", "serve", "--port", "0", "--quiet",
                             "--output_dir", str(out), *args], stdout=subprocess.PIPE, text=True, env=env)
    box = {}
    reader = threading.Thread(target=lambda: box.update(line=proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    m = re.search(r"http://127\.0\.0\.1:(\d+)", box.get("line", ""))
    if not m:
        proc.kill()
        raise AssertionError(f"the server did not start: {box.get('line')!r}")
    return proc, f"http://127.0.0.1:{m.group(1)}", box["line"]
