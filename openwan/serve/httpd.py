"""The HTTP layer: routes, body parsing (JSON and multipart), limits and the hardened server.

Limits: bodies over ``max_body`` bytes are 413, a missing/negative/non-number Content-Length is
400, every socket operation times out after ``read_timeout`` seconds and a whole body must arrive
within it, at most ``max_connections`` requests are served at once (more get 503 at once), and
with ``api_key`` every route except the page needs ``Authorization: Bearer <key>``.
"""
from __future__ import annotations

import hmac
import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from openwan.serve.jobs import QueueFull
from openwan.serve.params import RequestError
from openwan.serve.service import ServiceStopping, VideoService

MAX_BODY = 1 << 20                       # JSON bodies
MAX_UPLOAD = 32 << 20                    # multipart bodies (the i2v image)
ROUTES = "GET /, GET /health, POST /v1/videos, GET /v1/videos[/{id}[/content]], DELETE /v1/videos/{id}, " \
         "POST /generate, GET /outputs/<name>"


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers=None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def _finite(obj):
    """JSON has no NaN/Infinity: such floats become null (replies are always valid JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def page_html() -> bytes:
    return resources.files("openwan.serve").joinpath("page.html").read_bytes()


def parse_multipart(ctype: str, body: bytes, kinds: dict) -> tuple[dict, dict]:
    """multipart/form-data -> (fields converted to their kinds, {file field: (filename, bytes)})."""
    from email.parser import BytesParser
    from email.policy import HTTP
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        raise RequestError("the multipart body could not be parsed (check its boundary)")
    fields, files = {}, {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise RequestError("a multipart part has no name")
        data = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            if data:                                                 # an empty file input: no file
                files[name] = (part.get_filename(), data)
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(f"form field {name!r} is not UTF-8 text") from None
        fields[name] = _form_value(name, text, kinds.get(name))
    return fields, files


def _form_value(name: str, text: str, kind):
    """A form field's text as the type its argument takes (forms only carry strings)."""
    if text == "":
        return None                                                  # an empty input: the default
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() not in ("true", "false", "1", "0", "on", "off"):
                raise ValueError
            return text.lower() in ("true", "1", "on")
        if kind == "any":
            return json.loads(text)
    except ValueError:
        raise RequestError(f"form field {name!r} must be {'an integer' if kind == 'int' else 'a number' if kind == 'float' else 'true or false' if kind == 'bool' else 'JSON'}, "
                           f"got {text!r:.40}") from None
    return text


def make_handler(service: VideoService, api_key=None, read_timeout: float = 30.0):
    class Handler(BaseHTTPRequestHandler):
        server_version = "openwan"
        timeout = read_timeout                                       # every socket read/write

        def log_message(self, fmt, *args):
            if not getattr(self.server, "quiet", False):
                super().log_message(fmt, *args)

        # -------------------------------------------------------------- replies
        def _send(self, status: int, body: bytes, ctype: str, headers=None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj, headers=None) -> None:
            body = json.dumps(_finite(obj), allow_nan=False).encode("utf-8")
            self._send(status, body, "application/json", headers)

        def _file(self, path) -> None:
            ctype = {".mp4": "video/mp4", ".png": "image/png", ".json": "application/json"}.get(
                path.suffix, "application/octet-stream")
            data = path.read_bytes()
            rng = self.headers.get("Range", "")
            if rng.startswith("bytes=") and "," not in rng:           # what <video> asks for
                a, _, b = rng[6:].partition("-")
                try:
                    start = int(a) if a else max(0, len(data) - int(b))
                    end = min(int(b), len(data) - 1) if a and b else len(data) - 1
                except ValueError:
                    start, end = -1, -1
                if 0 <= start <= end:
                    return self._send(206, data[start:end + 1], ctype, {
                        "Content-Range": f"bytes {start}-{end}/{len(data)}", "Accept-Ranges": "bytes"})
                return self._send(416, b"", ctype, {"Content-Range": f"bytes */{len(data)}"})
            self._send(200, data, ctype, {"Accept-Ranges": "bytes"})

        def _dispatch(self, fn) -> None:
            try:
                fn()
            except HTTPError as e:
                self._json(e.status, {"error": str(e)}, e.headers)
            except RequestError as e:
                self._json(400, {"error": str(e)})
            except QueueFull:
                wait = service.retry_after()
                self._json(429, {"error": f"the queue is full ({service.store.max_queue} jobs); retry in about "
                                          f"{wait} s"}, {"Retry-After": wait})
            except ServiceStopping as e:
                job = f"; job {e.args[0]} stays queued and runs after the restart" if e.args else ""
                self._json(503, {"error": f"the server is stopping{job}"}, {"Retry-After": 5})
            except (socket.timeout, ConnectionError, BrokenPipeError):
                self.close_connection = True
            except Exception as e:  # noqa: BLE001 - the server must answer, not die
                self._json(500, {"error": f"{type(e).__name__}: {e}"})

        def _authorized(self) -> None:
            if api_key is None:
                return
            got = self.headers.get("Authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {api_key}".encode()):
                raise HTTPError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                {"WWW-Authenticate": "Bearer"})

        def _body(self, limit: int) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                raise HTTPError(411, "chunked bodies are not accepted; send a Content-Length")
            raw = self.headers.get("Content-Length")
            if raw is None:
                raise HTTPError(411, "a Content-Length header is required")
            if not raw.strip().isdigit():
                raise HTTPError(400, f"Content-Length {raw!r:.40} is not a non-negative integer")
            n = int(raw)
            if n > limit:
                raise HTTPError(413, f"request body of {n} bytes is over the limit of {limit}")
            chunks, got, deadline = [], 0, time.monotonic() + read_timeout
            while got < n:                                           # slow clients get read_timeout in all
                if time.monotonic() > deadline:
                    raise HTTPError(408, f"the body did not arrive within {read_timeout:g} s")
                try:
                    c = self.rfile.read1(min(65536, n - got))
                except socket.timeout:
                    raise HTTPError(408, f"the body did not arrive within {read_timeout:g} s") from None
                if not c:
                    raise HTTPError(400, f"the body ended after {got} of {n} bytes")
                chunks.append(c)
                got += len(c)
            return b"".join(chunks)

        def _request(self) -> tuple[object, dict]:
            ctype = self.headers.get("Content-Type", "")
            if ctype.lower().startswith("multipart/form-data"):
                return parse_multipart(ctype, self._body(MAX_UPLOAD), service.kinds)
            body = self._body(MAX_BODY)
            try:
                return json.loads(body.decode("utf-8") or "null", parse_constant=_no_constant), {}
            except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as e:
                raise RequestError(f"the body is not JSON ({e}); send e.g. "
                                   f"{{\"prompt\": \"a red circle moving to the right\"}}") from None

        def _route(self):
            url = urlsplit(self.path)
            return url.path.rstrip("/") or "/", parse_qs(url.query)

        # -------------------------------------------------------------- methods
        def do_GET(self):
            self._dispatch(self._get)

        do_HEAD = do_GET

        def _get(self):
            path, query = self._route()
            if path in ("/", "/index.html"):
                return self._send(200, page_html(), "text/html; charset=utf-8", {"Cache-Control": "no-cache"})
            self._authorized()
            if path == "/health":
                return self._json(200, service.health())
            if path == "/v1/videos":
                return self._json(200, self._list(query))
            if path.startswith("/v1/videos/"):
                parts = path.split("/")[3:]
                if len(parts) == 2 and parts[1] == "content":
                    j = self._job(parts[0])
                    f = service.content(parts[0])
                    if f is None:
                        raise HTTPError(409, f"video {parts[0]} is {j['status']}; its content exists once completed")
                    return self._file(f)
                if len(parts) == 1:
                    return self._json(200, service.video(self._job(parts[0])))
            if path.startswith("/outputs/"):
                f = service.output_file(path[len("/outputs/"):])
                if f is None:
                    raise HTTPError(404, f"no such output: {path}")
                return self._file(f)
            raise HTTPError(404, f"unknown path {path}; routes: {ROUTES}")

        def _job(self, job_id: str) -> dict:
            j = service.get(job_id)
            if j is None:
                raise HTTPError(404, f"no video {job_id!r:.60}")
            return j

        def _list(self, query) -> dict:
            try:
                limit = int(query.get("limit", ["20"])[0])
            except ValueError:
                raise RequestError("'limit' must be an integer in [1, 100]") from None
            order = query.get("order", ["desc"])[0]
            if not 1 <= limit <= 100 or order not in ("asc", "desc"):
                raise RequestError("'limit' must be in [1, 100] and 'order' asc or desc")
            try:
                jobs, more = service.store.list(query.get("after", [None])[0], limit, order)
            except KeyError:
                raise RequestError("'after' names no video") from None
            data = [service.video(j) for j in jobs]
            return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None, "has_more": more}

        def do_POST(self):
            self._dispatch(self._post)

        def _post(self):
            path, _ = self._route()
            if path not in ("/v1/videos", "/generate"):
                raise HTTPError(404, f"unknown path {path}; routes: {ROUTES}")
            self._authorized()
            req, files = self._request()
            if path == "/generate":
                if files:
                    raise RequestError("POST /generate takes JSON; upload images with POST /v1/videos")
                return self._json(200, service.generate(req))
            return self._json(200, service.video(service.submit(req, files)))

        def do_DELETE(self):
            self._dispatch(self._delete)

        def _delete(self):
            path, _ = self._route()
            if not path.startswith("/v1/videos/") or path.count("/") != 3:
                raise HTTPError(404, f"unknown path {path}; DELETE /v1/videos/{{id}}")
            self._authorized()
            self._job(path.split("/")[3])
            return self._json(200, service.delete(path.split("/")[3]))

    return Handler


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a bound on concurrent connections; ``server_close`` stops the service."""

    daemon_threads = False               # server_close() waits for the requests in flight
    quiet = False

    def __init__(self, addr, handler, service: VideoService, max_connections: int = 64):
        self.service = service
        self.slots = threading.BoundedSemaphore(max_connections)
        self.bound = False
        super().__init__(addr, handler)   # a failed bind closes the socket and raises: the caller closes the service
        self.bound = True

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            body = b'{"error": "too many connections; retry shortly"}'
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Retry-After: 1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def stop(self) -> None:
        """Graceful stop (e.g. on SIGTERM): refuse new jobs, wake waiting requests, end serve_forever."""
        self.service.stopping = True
        with self.service.store.changed:
            self.service.store.changed.notify_all()
        for w in self.service.workers:
            w.stop()
        self.shutdown()

    def server_close(self):
        if not self.bound:
            return super().server_close()
        self.service.stopping = True
        with self.service.store.changed:
            self.service.store.changed.notify_all()
        super().server_close()           # joins the request threads (each answers or fails cleanly)
        self.service.close()
