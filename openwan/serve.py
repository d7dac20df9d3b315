"""`openwan serve`: keep a pipeline loaded and generate over HTTP (standard library only).

    openwan serve                                   # the embedded demo model on http://127.0.0.1:8000
    openwan serve --ckpt_dir ./Wan2.1-T2V-1.3B --port 8080 --output_dir outputs/serve

    curl -s localhost:8000/generate -d '{"prompt": "a red circle moving to the right", "seed": 1}'
    -> {"path": "outputs/serve/t2v_a_red_circle_moving_to_the_right_<time>.mp4",
        "url": "/outputs/t2v_a_red_circle_moving_to_the_right_<time>.mp4", "settings": {...}, "seconds": 2.1}
    curl -s localhost:8000/outputs/t2v_a_red_circle_moving_to_the_right_<time>.mp4 -o video.mp4

Endpoints:

* ``GET /health``: ``{"status": "ok", "task", "variant", "checkpoint", "busy", "parameters": [...]}``
* ``POST /generate``: a JSON object with ``prompt`` and any argument the pipeline's ``__call__``
  takes (``negative_prompt``, ``size``, ``frame_num``, ``sample_steps``, ``sample_shift``,
  ``guide_scale``, ``sample_solver``, ``seed``; for other tasks ``image``, ``src_video`` ... as paths
  on the server). The video (or PNG for one frame) is written atomically into the output folder;
  the reply gives its path, its URL and the settings (also stored in the file and a .json beside it).
* ``GET /outputs/<name>``: a file of the output folder.

Bad requests (not JSON, unknown fields, a wrong value) get status 400 and ``{"error": "..."}`` naming
the problem; one generation runs at a time (others wait their turn). The server binds 127.0.0.1 by
default: anything that can reach it can make it read files it names and use its compute.
"""
from __future__ import annotations

import argparse
import inspect
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

# Arguments the server sets itself (clients cannot).
RESERVED = {"output_path", "overwrite", "return_frames", "callback", "output_type"}
MAX_BODY = 1 << 20


class RequestError(ValueError):
    """A client error: answered with status 400."""


class GenerationService:
    """The pipeline, its output folder and a lock: ``generate(request dict) -> reply dict``."""

    def __init__(self, pipe, output_dir, progress: bool = False):
        self.pipe = pipe
        self.out = Path(output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.busy = False
        self.count = 0
        params = inspect.signature(pipe.__call__).parameters
        self.params = [p for p in params if p not in RESERVED and p != "self"]
        pipe.progress = progress

    def health(self) -> dict:
        return {"status": "ok", "task": self.pipe.task, "variant": self.pipe.variant.name,
                "checkpoint": str(self.pipe.c.source), "busy": self.busy, "generated": self.count,
                "parameters": self.params}

    def check(self, req) -> dict:
        if not isinstance(req, dict):
            raise RequestError("the body must be a JSON object, e.g. {\"prompt\": \"a red circle moving to the right\"}")
        unknown = sorted(set(req) - set(self.params))
        if unknown:
            raise RequestError(f"unknown field(s) {unknown}; this {self.pipe.task} server takes {self.params}")
        if not isinstance(req.get("prompt"), str) or not req["prompt"].strip():
            raise RequestError("\"prompt\" (a non-empty string) is required")
        return req

    def _name(self, req) -> Path:
        from openwan.cli import _slug
        slug = _slug(req["prompt"])
        ext = ".png" if req.get("frame_num") == 1 or self.pipe.task == "t2i" else ".mp4"
        stamp = time.strftime("%Y%m%d_%H%M%S")
        for i in range(1000):
            p = self.out / f"{self.pipe.task}_{slug}_{stamp}{'' if not i else f'_{i}'}{ext}"
            if not p.exists():
                return p
        raise RuntimeError("no free output name")  # pragma: no cover

    def generate(self, req) -> dict:
        import torch
        req = self.check(req)
        with self.lock:
            self.busy = True
            try:
                path = self._name(req)
                t0 = time.perf_counter()
                kw = dict(req)
                prompt = kw.pop("prompt")
                with torch.inference_mode():
                    result = self.pipe(prompt, output_path=path, return_frames=False, **kw)
                self.count += 1
                return {"path": str(result.path), "url": f"/outputs/{Path(result.path).name}",
                        "settings": result.settings, "seconds": round(time.perf_counter() - t0, 3)}
            except (ValueError, TypeError, FileNotFoundError) as e:
                raise RequestError(str(e)) from None
            finally:
                self.busy = False

    def output_file(self, name: str) -> Optional[Path]:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
            return None
        p = self.out / name
        return p if p.is_file() else None


def make_handler(service: GenerationService):
    class Handler(BaseHTTPRequestHandler):
        server_version = "openwan"

        def log_message(self, fmt, *args):  # one line per request on stderr, like the stdlib, but terse
            if not getattr(self.server, "quiet", False):
                super().log_message(fmt, *args)

        def _json(self, status: int, obj: dict) -> None:
            body = json.dumps(obj).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path in ("/", "/health"):
                return self._json(200, service.health())
            if self.path.startswith("/outputs/"):
                f = service.output_file(self.path[len("/outputs/"):])
                if f is None:
                    return self._json(404, {"error": f"no such output: {self.path}"})
                data = f.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", {".mp4": "video/mp4", ".png": "image/png",
                                                  ".json": "application/json"}.get(f.suffix, "application/octet-stream"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return None
            return self._json(404, {"error": f"unknown path {self.path}; use GET /health, POST /generate, "
                                             f"GET /outputs/<name>"})

        def do_POST(self):
            if self.path != "/generate":
                return self._json(404, {"error": f"unknown path {self.path}; POST /generate"})
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                return self._json(413, {"error": f"request body of {n} bytes is over {MAX_BODY}"})
            try:
                req = json.loads(self.rfile.read(n).decode("utf-8") or "null")
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                return self._json(400, {"error": f"the body is not JSON ({e}); send e.g. "
                                                 f"{{\"prompt\": \"a red circle moving to the right\"}}"})
            try:
                return self._json(200, service.generate(req))
            except RequestError as e:
                return self._json(400, {"error": str(e)})
            except Exception as e:  # noqa: BLE001 - the server must answer, not die
                return self._json(500, {"error": f"{type(e).__name__}: {e}"})

    return Handler


def make_server(pipe, host: str = "127.0.0.1", port: int = 8000, output_dir="outputs/serve",
                quiet: bool = False) -> ThreadingHTTPServer:
    """An HTTP server over ``pipe`` (call ``serve_forever()``; port 0 picks a free one)."""
    server = ThreadingHTTPServer((host, port), make_handler(GenerationService(pipe, output_dir)))
    server.quiet = quiet
    return server


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="openwan serve", description="Keep a pipeline loaded and generate over HTTP.")
    ap.add_argument("--ckpt_dir", default=None, help="checkpoint directory (default: the embedded demo model)")
    ap.add_argument("--task", default=None, help="pipeline task (t2v, t2i, i2v, flf2v, vace, v2v); default: the "
                                                 "checkpoint's own")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--output_dir", default="outputs/serve")
    ap.add_argument("--device", default=None)
    ap.add_argument("--t5_cpu", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no request log")
    a = ap.parse_args(argv)
    from openwan.pipelines import load_pipeline
    pipe = load_pipeline(a.ckpt_dir or "demo", task=a.task, device=a.device, t5_cpu=a.t5_cpu, progress=False)
    server = make_server(pipe, a.host, a.port, a.output_dir, quiet=a.quiet)
    host, port = server.server_address[:2]
    print(f"openwan serve: {pipe.task} ({pipe.variant.name}) on http://{host}:{port}  "
          f"(POST /generate, GET /health); outputs in {a.output_dir}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
