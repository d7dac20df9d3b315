"""`openwan serve` against hostile clients: bad headers, slow clients, too many connections, bad values."""
import json
import socket
import time

import pytest
from serve_helpers import PROMPT, Running, call, jcall, wait_for

from openwan.pipelines import load_pipeline
from openwan.serve import build_parser
from openwan.serve.httpd import _finite
from openwan.serve.service import FolderInUse
from openwan.testing import make_tiny_checkpoint


def strict_json(data: bytes):
    """JSON as the spec has it: NaN/Infinity are not JSON."""
    def no(name):
        raise AssertionError(f"reply holds {name}: not valid JSON")
    return json.loads(data, parse_constant=no)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("harden")
    pipe = load_pipeline(make_tiny_checkpoint(tmp / "ck", "tiny-t2v"), variant="tiny-t2v", progress=False)
    r = Running(pipe, tmp / "out", read_timeout=1.0, max_connections=3, api_key=None)
    yield r
    r.close()


def raw(port, data: bytes, timeout=10.0) -> bytes:
    """Send raw bytes on a fresh connection; what comes back until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            c = s.recv(65536)
            if not c:
                return out
            out += c


def status_and_json(reply: bytes):
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), strict_json(body)


@pytest.mark.parametrize("header, code, msg", [
    (b"Content-Length: -1\r\n", 400, "not a non-negative integer"),
    (b"Content-Length: abc\r\n", 400, "not a non-negative integer"),
    (b"Content-Length: 1e3\r\n", 400, "not a non-negative integer"),
    (b"", 411, "Content-Length header is required"),
    (b"Transfer-Encoding: chunked\r\n", 411, "chunked"),
    (b"Content-Length: 99999999999\r\n", 413, "over the limit"),
])
def test_bad_content_length_is_refused_before_reading(server, header, code, msg):
    for path in (b"/v1/videos", b"/generate"):
        reply = raw(server.port, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n{}")
        status, body = status_and_json(reply)
        assert status == code and msg in body["error"], (path, body)
    assert not jcall(server.base + "/v1/videos")[1]["data"]


def test_a_slow_client_is_timed_out(server):
    t0 = time.monotonic()
    # headers that never end: the connection is closed after the 1 s read timeout
    assert raw(server.port, b"POST /v1/videos HTTP/1.1\r\nHost: x\r\n") == b""
    # a body that stops arriving: 408 with the reason
    status, body = status_and_json(raw(server.port, b"POST /v1/videos HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"pr"))
    assert status == 408 and "did not arrive" in body["error"]
    # both within a few read timeouts, not forever (10 s: 1 s timeout x 2 requests + generous scheduling slack)
    assert time.monotonic() - t0 < 10


def test_connections_are_bounded(tmp_path):
    # its own server: a long read timeout, so the idle connections hold their slots however slow this machine is
    pipe = load_pipeline(make_tiny_checkpoint(tmp_path / "ck", "tiny-t2v"), variant="tiny-t2v", progress=False)
    r = Running(pipe, tmp_path / "out", read_timeout=60.0, max_connections=3)
    try:
        idle = [socket.create_connection(("127.0.0.1", r.port), timeout=10) for _ in range(3)]
        try:
            status, body = status_and_json(raw(r.port, b"GET /health HTTP/1.1\r\n\r\n"))
            assert status == 503 and "too many connections" in body["error"]
        finally:
            for s in idle:
                s.close()
        # the slots come back as soon as those connections end
        wait_for(lambda: call(r.base + "/health")[0] == 200, 30, 0.1, "a free slot")
    finally:
        r.close()


@pytest.mark.parametrize("body, field, msg", [
    ('{"prompt": "p", "seed": true}', "seed", "must be an integer"),
    ('{"prompt": "p", "seed": "abc"}', "seed", "must be an integer"),
    ('{"prompt": "p", "seed": 1.5}', "seed", "must be an integer"),
    ('{"prompt": "p", "seed": -5}', "seed", "out of range"),
    ('{"prompt": "p", "size": [64, 64]}', "size", "must be a string"),
    ('{"prompt": "p", "size": "big"}', "size", "not of the form"),
    ('{"prompt": "p", "size": "20000x16", "strict_size": false}', "size", "must be in [16, 4096]"),
    ('{"prompt": "p", "sample_steps": 0}', "sample_steps", "must be >= 1"),
    ('{"prompt": "p", "sample_steps": 1000000000}', "sample_steps", "more than the limit of 1000 steps"),
    ('{"prompt": "p", "frame_num": 100001}', "frame_num", "more than the limit of 1001 frames"),
    ('{"prompt": "p", "size": "4096x4096", "frame_num": 1001, "strict_size": false}', "size", "DiT tokens"),
    ('{"prompt": "p", "frame_num": 6}', "frame_num", "4n+1"),
    ('{"prompt": "p", "guide_scale": NaN}', None, "not JSON"),
    ('{"prompt": "p", "guide_scale": 1e999}', "guide_scale", "must be finite"),
    ('{"prompt": "p", "guide_scale": "5"}', "guide_scale", "must be a number"),
    ('{"prompt": "p", "guide_scale": [1, 2, 3]}', "guide_scale", "a pair"),
    ('{"prompt": "p", "guide_scale": [1, 5]}', "guide_scale", "needs guide_boundary"),
    ('{"prompt": "p", "guide_scale": [1, 5], "guide_boundary": 1.5}', "guide_boundary", "a number in (0, 1)"),
    ('{"prompt": "p", "cfg_batch": "yes"}', "cfg_batch", "true or false"),
    ('{"prompt": 5}', "prompt", "must be a string"),
    ('{"prompt": "  "}', "prompt", "is required"),
    ('{"prompt": "p", "seconds": "abc"}', "seconds", "must be a number"),
    ('{"prompt": "p", "seconds": 1, "frame_num": 5}', "seconds", "not both"),
    ('{"prompt": "p", "sample_solver": 3}', "sample_solver", "must be a string"),
    ('{"prompt": "p", "input_reference": "x.png"}', "input_reference", "unknown field"),   # t2v takes no image
    # what the pipeline refuses before any work is refused at submission too, not when the job's turn comes
    ('{"prompt": "p", "size": "100x100", "strict_size": false}', "size", "multiples of 16"),
    ('{"prompt": "p", "frame_num": 21, "long_overlap": 0}', "long_overlap", "at least 1 latent frame"),
    ('{"prompt": "p", "frame_num": 21, "long_overlap": 9}', "overlap", "must be smaller than the window"),
    ('{"prompt": "a red circle | a blue square"}', "prompt schedule", "needs a video longer"),
    ('{"prompt": "p", "extend": "/no/such/clip.mp4", "frame_num": 21}', "extend", "no such file on the server"),
    ('[' * 100000, None, "not JSON"),
])
def test_every_value_is_type_checked(server, body, field, msg):
    for path in ("/v1/videos", "/generate"):
        status, data, h = call(server.base + path, raw=body.encode(), headers={"Content-Type": "application/json"})
        err = strict_json(data)["error"]
        assert status == 400 and h["Content-Type"] == "application/json" and msg in err, err
        assert field is None or field in err
    assert not jcall(server.base + "/v1/videos")[1]["data"]                 # nothing queued


def test_routes_and_ids_are_checked(server):
    for method, path, code in [("GET", "/nowhere", 404), ("GET", "/v1/videos/video_nope", 404),
                               ("GET", "/v1/videos/../../etc/passwd", 404), ("DELETE", "/v1/videos/x", 404),
                               ("POST", "/v1/elsewhere", 404), ("GET", "/outputs/jobs.sqlite3", 404),
                               ("GET", "/v1/videos?limit=0", 400), ("GET", "/v1/videos?limit=x", 400),
                               ("GET", "/v1/videos?after=video_nope", 400)]:
        status, data, _ = call(server.base + path, method=method, raw=b"{}" if method == "POST" else None)
        assert status == code and "error" in strict_json(data), (method, path)


def test_replies_never_hold_nan():
    assert json.dumps(_finite({"a": [float("nan"), 1.0, {"b": float("inf")}]}), allow_nan=False) == \
        '{"a": [null, 1.0, {"b": null}]}'


def test_api_key_and_default_host(tmp_path):
    assert build_parser().parse_args([]).host == "127.0.0.1"
    ck = make_tiny_checkpoint(tmp_path / "ck", "tiny-t2v")
    r = Running(load_pipeline(ck, variant="tiny-t2v", progress=False), tmp_path / "out", api_key="s3cret")
    try:
        assert r.srv.server_address[0] == "127.0.0.1"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            for method, path in [("GET", "/health"), ("GET", "/v1/videos"), ("POST", "/v1/videos"),
                                 ("POST", "/generate"), ("DELETE", "/v1/videos/video_0")]:
                body = {"prompt": PROMPT} if method == "POST" else None
                status, data, h = call(r.base + path, body, method=method, headers=headers)
                assert status == 401 and h["WWW-Authenticate"] == "Bearer", (path, headers)
        assert not r.srv.service.store.counts()["queued"]
        ok = {"Authorization": "Bearer s3cret"}
        assert call(r.base + "/health", headers=ok)[0] == 200
        assert call(r.base + "/")[0] == 200                                  # the page itself holds no data
        # a second server on the same folder is refused (one queue, one owner)
        with pytest.raises(FolderInUse, match="another openwan serve"):
            Running(load_pipeline(ck, variant="tiny-t2v", progress=False), tmp_path / "out")
    finally:
        r.close()


def test_fields_come_from_the_pipeline_signature():
    import openwan.pipelines as P
    from openwan.serve.params import RequestError, check_request, parameter_kinds
    t2i = parameter_kinds(object.__new__(P.TextToImage))              # **kw: the parent's arguments, no frame_num
    assert t2i["seed"] == "int" and t2i["size"] == "size" and "frame_num" not in t2i
    assert not {"generator", "return_dict", "num_videos_per_prompt", "callback"} & set(t2i)   # the Python call's own
    with pytest.raises(RequestError, match="unknown field"):
        check_request({"prompt": "p", "seconds": 2}, t2i, fps=16)
    flf = parameter_kinds(object.__new__(P.FirstLastFrameToVideo))
    assert flf["first_frame"] == flf["last_frame"] == "file" and flf["seed"] == "int"
    i2v = parameter_kinds(object.__new__(P.ImageToVideo))
    assert check_request({"prompt": "p", "input_reference": "/x.png", "seconds": "1"}, i2v, fps=16) == \
        {"prompt": "p", "image": "/x.png", "frame_num": 17}
    # a guidance interval: a pair of scales and its boundary
    assert i2v["guide_scale"] == "scale" and i2v["guide_boundary"] == "float"
    assert check_request({"prompt": "p", "guide_scale": [1, 5.5], "guide_boundary": 0.9}, i2v, fps=16) == \
        {"prompt": "p", "guide_scale": (1, 5.5), "guide_boundary": 0.9}
    # the continuation expert switch of a long video: a boolean, nothing else
    assert i2v["long_expert"] == "bool"
    assert check_request({"prompt": "p", "long_expert": False}, i2v, fps=16) == {"prompt": "p", "long_expert": False}
    with pytest.raises(RequestError, match="long_expert"):
        check_request({"prompt": "p", "long_expert": "off"}, i2v, fps=16)
    # the long-video method by name, its overlap in latent frames (the pipeline checks their values)
    assert (i2v["long_method"], i2v["long_overlap"]) == ("str", "int")
    assert check_request({"prompt": "p", "long_method": "continue", "long_overlap": 2}, i2v, fps=16) == \
        {"prompt": "p", "long_method": "continue", "long_overlap": 2}
    with pytest.raises(RequestError, match="long_overlap"):
        check_request({"prompt": "p", "long_overlap": "2"}, i2v, fps=16)
    # the refinement pass's noise level: a number (the pipeline checks its range)
    assert i2v["long_refine"] == "float"
    assert check_request({"prompt": "p", "long_refine": 0.5}, i2v, fps=16) == {"prompt": "p", "long_refine": 0.5}
    with pytest.raises(RequestError, match="long_refine"):
        check_request({"prompt": "p", "long_refine": "high"}, i2v, fps=16)


def test_a_port_that_cannot_be_listened_on_is_a_clear_error(tmp_path, capsys):
    """A port out of range, in use, or a host that does not resolve: one line that says so and what to change,
    before any model is loaded; make_server raises the socket's error (no secondary error from its cleanup) and
    leaves the output folder free for the next server."""
    from openwan.serve import main, make_server
    for bad in ("-1", "65536", "http"):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(["--port", bad])
        assert e.value.code == 2
        assert "a port number in 0..65535" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["--port", str(port), "--output_dir", str(tmp_path / "cli")]) == 2
        err = capsys.readouterr().err
        assert f"cannot listen on 127.0.0.1:{port}" in err and "choose another --port" in err
        assert "Traceback" not in err and not (tmp_path / "cli").exists()        # refused before loading
        pipe = load_pipeline(make_tiny_checkpoint(tmp_path / "ck", "tiny-t2v"), variant="tiny-t2v", progress=False)
        with pytest.raises(OSError) as e:
            make_server(pipe, "127.0.0.1", port, tmp_path / "out", quiet=True)
        assert e.value.errno is not None                            # the bind's own error
    assert main(["--host", "no-such-host.invalid", "--port", "0", "--output_dir", str(tmp_path / "cli")]) == 2
    assert "cannot listen on no-such-host.invalid:0" in capsys.readouterr().err
    server = make_server(pipe, "127.0.0.1", 0, tmp_path / "out", quiet=True)     # the folder's lock was let go
    server.server_close()
