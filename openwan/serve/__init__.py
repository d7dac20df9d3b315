"""`openwan serve`: video jobs over HTTP the OpenAI way, a queue that survives restarts, a web page.

    openwan serve                                   # the embedded demo model on http://127.0.0.1:8000
    openwan serve --ckpt_dir ./Wan2.1-T2V-1.3B --devices cuda:0,cuda:1 --output_dir outputs/serve
    openwan serve --ckpt_dir ./Wan2.1-T2V-14B --quantize int8 --offload_model blocks:10   # a 24 GB card

    curl -s localhost:8000/v1/videos -H 'Content-Type: application/json' \\
         -d '{"prompt": "a red circle moving to the right", "seconds": "2", "size": "64x64", "seed": 1}'
    -> {"id": "video_...", "object": "video", "status": "queued", "progress": 0, ...}
    curl -s localhost:8000/v1/videos/video_...             # status, progress 0-100, settings, error
    curl -s localhost:8000/v1/videos/video_.../content -o video.mp4

Files: ``service`` (store + workers), ``jobs`` (the SQLite queue), ``workers``, ``params`` (request
checks), ``httpd`` (routes and the hardened server), ``page.html`` (the page at ``/``). See docs/serve.md.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from openwan.serve.httpd import Server, make_handler
from openwan.serve.params import RequestError
from openwan.serve.service import FolderInUse, VideoService

__all__ = ["make_server", "main", "RequestError", "VideoService", "Server"]


def make_server(pipe, host: str = "127.0.0.1", port: int = 8000, output_dir="outputs/serve",
                quiet: bool = False, *, max_queue: int = 100, api_key=None, read_timeout: float = 30.0,
                max_connections: int = 64, log=None, worker_class=None) -> Server:
    """An HTTP server over one pipeline or a list (one worker each); call ``serve_forever()``.

    Port 0 picks a free one. ``server_close()`` stops the workers (a running job goes back to the queue).
    """
    pipes = pipe if isinstance(pipe, (list, tuple)) else [pipe]
    service = VideoService(pipes, output_dir, max_queue=max_queue, log=log,
                           **({"worker_class": worker_class} if worker_class else {}))
    try:
        server = Server((host, port), make_handler(service, api_key, read_timeout), service, max_connections)
    except BaseException:
        service.close()
        raise
    server.quiet = quiet
    return server


def _offload_arg(value: str) -> str:
    from openwan.offload import format_offload, parse_offload_spec
    try:
        return format_offload(*parse_offload_spec(value))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _load_options(a, device) -> dict:
    """load_pipeline's memory options for one worker's device: --quantize, --offload_model (auto resolved by
    openwan.plan for that device and the checkpoint's variant at its default size), --t5_cpu."""
    spec, quantize, t5_cpu = a.offload_model, a.quantize, a.t5_cpu
    if spec == "auto":
        from openwan.pipelines.components import checkpoint_variant
        from openwan.plan import resolve_auto
        chosen = resolve_auto(checkpoint_variant(a.ckpt_dir), None, None, device, quantize=quantize)
        spec, quantize, t5_cpu = chosen["offload"], chosen["quantize"], t5_cpu or chosen["t5_cpu"]
        if not a.quiet:
            print(f"openwan serve: --offload_model auto on {device or 'the default device'}: {spec}, quantize "
                  f"{quantize or 'none'}, t5_cpu {t5_cpu}", file=sys.stderr)
    return {"offload": spec, "quantize": quantize, "t5_cpu": t5_cpu, **({"dit": a.dit} if a.dit else {})}


def _port_arg(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port number in 0..65535 (0 picks a free one), got {value!r}")
    return port


def listen_problem(host: str, port: int):
    """Why the server could not listen on host:port (a name that does not resolve, a port in use or not allowed),
    or None: tried with a socket bound and closed at once, as the server would bind it (address reuse on), so the
    error comes before minutes of loading a model rather than after."""
    import socket
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
    except OSError as e:
        return e.strerror or str(e)
    return None


def _listen_error(host: str, port: int, why) -> str:
    return (f"openwan serve: error: cannot listen on {host}:{port}: {why}; choose another --port (0 picks a free "
            f"one) or --host (127.0.0.1: this machine only, 0.0.0.0: every interface)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="openwan serve", description="Serve video generation jobs over HTTP "
                                 "(OpenAI /v1/videos, a durable queue, a web page at /).")
    ap.add_argument("--ckpt_dir", default=None, help="checkpoint directory (default: the embedded demo model)")
    ap.add_argument("--dit", default=None, metavar="PATH", help="DiT weights in place of the checkpoint's (a "
                    "folder or .safetensors of the same architecture: a full fine-tune), as openwan generate --dit")
    ap.add_argument("--task", default=None, help="pipeline task (t2v, t2i, i2v, flf2v, vace, v2v); default: the "
                                                 "checkpoint's own")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                                                       "use --api_key when binding others)")
    ap.add_argument("--port", type=_port_arg, default=8000, help="port to listen on (default 8000; 0 picks a free one)")
    ap.add_argument("--output_dir", default="outputs/serve", help="videos and the job queue (jobs.sqlite3; default outputs/serve)")
    ap.add_argument("--devices", default=None, help="one worker per device, comma-separated: cuda:0,cuda:1 or "
                                                    "cpu,cpu (default: one worker on --device)")
    ap.add_argument("--device", default=None, help="the device of a single worker (default: cuda if available)")
    ap.add_argument("--t5_cpu", action="store_true", help="run the text encoder on the CPU")
    ap.add_argument("--quantize", choices=["none", "int8", "fp8"], default=None,
                    help="weight-only quantized DiT, applied while loading (docs/memory.md; default none)")
    ap.add_argument("--offload_model", type=_offload_arg, default="none", metavar="{none,sequential,blocks[:N],auto}",
                    help="memory plan of every worker's pipeline, as openwan generate's: sequential, blocks[:N] (N "
                         "DiT blocks on the device, the rest streamed; encoders and VAE on it only while they run), "
                         "auto (the cheapest plan that fits the device at the model's default size; "
                         "`openwan plan`), none (default)")
    ap.add_argument("--ulysses_size", type=int, default=None, help="under torchrun: split each video's tokens "
                    "over the N processes, which serve as one worker (docs/serve.md)")
    ap.add_argument("--dit_fsdp", action="store_true", help="under torchrun: shard the DiT's weights over the "
                                                            "processes")
    ap.add_argument("--window_parallel", action="store_true", help="under torchrun: share a long video's windows "
                    "over the processes, each running whole windows (docs/parallel.md)")
    ap.add_argument("--cfg_parallel", action="store_true", help="under torchrun with 2 processes: one runs the "
                    "prompt's pass of guidance, the other the negative prompt's (docs/parallel.md)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: 1 for the demo "
                                                              "model, else torch's)")
    ap.add_argument("--max_queue", type=int, default=100, help="queued jobs before POST answers 429")
    ap.add_argument("--max_connections", type=int, default=64, help="requests served at once (more get 503)")
    ap.add_argument("--read_timeout", type=float, default=30.0, help="seconds a client may take to send a request")
    ap.add_argument("--api_key", default=None, help="require 'Authorization: Bearer KEY' (the page asks for it)")
    ap.add_argument("--quiet", action="store_true", help="no request log")
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    for name in ("max_queue", "max_connections"):
        if getattr(a, name) < 1:
            print(f"openwan serve: error: --{name} must be >= 1", file=sys.stderr)
            return 2
    from openwan import validate
    devices = [d.strip() for d in a.devices.split(",")] if a.devices else [a.device]   # one worker each
    try:
        for d in devices:
            if d is not None:                                    # (None: cuda if there is one, else the CPU)
                validate.device(d, "--devices" if a.devices else "--device")
    except validate.InvalidArgument as e:
        print(f"openwan serve: error: {e}", file=sys.stderr)
        return 2
    if a.dit is not None and not Path(a.dit).exists():
        print(f"openwan serve: error: --dit {a.dit}: not found (a DiT folder or a .safetensors file)", file=sys.stderr)
        return 2
    why = listen_problem(a.host, a.port) if os.environ.get("RANK", "0") == "0" else None   # (followers never bind)
    if why is not None:
        print(_listen_error(a.host, a.port, why), file=sys.stderr)
        return 2
    import torch
    from openwan.pipelines import load_pipeline
    threads = a.threads if a.threads is not None else (1 if a.ckpt_dir in (None, "demo") else None)
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    from openwan.serve.group import GroupWorker, follow, setup_group
    try:
        group = setup_group(a.ulysses_size, a.dit_fsdp, a.window_parallel, a.cfg_parallel)
    except ValueError as e:
        print(f"openwan serve: error: {e}", file=sys.stderr)
        return 2
    if group is not None:
        from openwan.parallel import parallelize
        if a.devices:
            print("openwan serve: error: a torchrun group is one worker: use --devices without torchrun",
                  file=sys.stderr)
            return 2
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
        if a.offload_model != "none":
            print("openwan serve: error: a torchrun group shards or splits the DiT itself: use it without "
                  "--offload_model", file=sys.stderr)
            return 2
        pipe = load_pipeline(a.ckpt_dir or "demo", task=a.task, device=device, progress=False,
                             **_load_options(a, device))
        parallelize(pipe, a.ulysses_size, a.dit_fsdp, a.window_parallel, a.cfg_parallel)
        if group[0] != 0:
            follow(pipe)
            return _end_group()
        pipes = [pipe]
    else:
        try:
            options = [_load_options(a, d) for d in devices]
        except ValueError as e:                                   # auto: even the most frugal plan does not fit
            print(f"openwan serve: error: {e}", file=sys.stderr)
            return 2
        pipes = [load_pipeline(a.ckpt_dir or "demo", task=a.task, device=d, progress=False, **o)
                 for d, o in zip(devices, options)]
    log = None if a.quiet else (lambda msg: print(f"openwan serve: {msg}", file=sys.stderr, flush=True))
    try:
        server = make_server(pipes, a.host, a.port, a.output_dir, quiet=a.quiet, max_queue=a.max_queue,
                             api_key=a.api_key, read_timeout=a.read_timeout, max_connections=a.max_connections,
                             log=log, worker_class=GroupWorker if group else None)
    except (FolderInUse, OSError) as e:              # (OSError: the port taken while the model loaded)
        print(_listen_error(a.host, a.port, e.strerror or e) if not isinstance(e, FolderInUse)
              else f"openwan serve: error: {e}", file=sys.stderr)
        if group:
            from openwan.serve.group import _broadcast
            _broadcast(None)                                         # release the followers
        return 2
    host, port = server.server_address[:2]
    pipe, svc = pipes[0], server.service
    print(f"openwan serve: {pipe.task} ({pipe.variant.name}) on http://{host}:{port}  "
          f"({f'a group of {group[1]} processes as ' if group else ''}{len(pipes)} worker(s): {', '.join(w.label for w in svc.workers)}; page at /, API at /v1/videos); "
          f"outputs in {a.output_dir}" + (f"; {len(svc.requeued)} interrupted job(s) queued again"
                                          if svc.requeued else ""), flush=True)

    def on_term(signum, frame):
        threading.Thread(target=server.stop, daemon=True).start()   # shutdown() must not run in serve_forever's thread
    signal.signal(signal.SIGTERM, on_term)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return _end_group() if group else 0


def _end_group() -> int:
    from openwan.parallel import end_process_group
    end_process_group(wait_for_all=False)
    return 0
