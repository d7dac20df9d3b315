"""`openwan serve`: the HTTP server over a loaded pipeline (tiny random checkpoint)."""
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from openwan.pipelines import load_pipeline
from openwan.serve import make_server
from openwan.testing import make_tiny_checkpoint
from openwan.video import read_video

PROMPT = "a red circle moving to the right"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    pipe = load_pipeline(make_tiny_checkpoint(tmp / "ck", "tiny-t2v"), variant="tiny-t2v", progress=False)
    srv = make_server(pipe, port=0, output_dir=tmp / "out", quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", pipe, tmp / "out"
    srv.shutdown()
    srv.server_close()


def call(url, body=None, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=120) as r:
            return r.status, r.read(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type")


def test_health_generate_and_fetch(server, tmp_path):
    base, pipe, out = server
    status, body, _ = call(base + "/health")
    h = json.loads(body)
    assert status == 200 and h["task"] == "t2v" and h["variant"] == "tiny-t2v" and not h["busy"]
    assert {"prompt", "seed", "size", "frame_num", "sample_steps"} <= set(h["parameters"])
    assert "output_path" not in h["parameters"]

    req = {"prompt": PROMPT, "seed": 3, "sample_steps": 3, "frame_num": 5}
    status, body, ctype = call(base + "/generate", req)
    r = json.loads(body)
    assert status == 200 and ctype == "application/json", r
    assert r["settings"]["seed"] == 3 and r["settings"]["sample_steps"] == 3 and r["url"].startswith("/outputs/")
    status, video, ctype = call(base + r["url"])
    assert status == 200 and ctype == "video/mp4" and video == open(r["path"], "rb").read()
    # the same request through the pipeline directly gives the same frames
    direct = pipe(PROMPT, seed=3, sample_steps=3, frame_num=5, output_path=tmp_path / "d.mp4")
    assert np.array_equal(read_video(r["path"])[0], read_video(direct.path)[0])
    # a second identical request gets its own file: nothing is overwritten
    r2 = json.loads(call(base + "/generate", req)[1])
    assert r2["path"] != r["path"] and len(list(out.glob("*.mp4"))) == 2
    assert json.loads(call(base + "/health")[1])["generated"] == 2


@pytest.mark.parametrize("raw, body, code, msg", [
    (b"{not json", None, 400, "not JSON"),
    (None, ["a list"], 400, "JSON object"),
    (None, {"seed": 1}, 400, "\"prompt\""),
    (None, {"prompt": PROMPT, "stepz": 3}, 400, "unknown field(s) ['stepz']"),
    (None, {"prompt": PROMPT, "frame_num": 6}, 400, "4n+1"),
    (None, {"prompt": PROMPT, "output_path": "/etc/x.mp4"}, 400, "unknown field(s) ['output_path']"),
])
def test_bad_requests_are_400_with_the_reason(server, raw, body, code, msg):
    base, _, out = server
    before = set(out.iterdir()) if out.exists() else set()
    status, resp, ctype = call(base + "/generate", body, raw)
    assert status == code and ctype == "application/json"
    assert msg in json.loads(resp)["error"]
    assert set(out.iterdir()) == before                              # nothing written


def test_a_prompt_schedule_as_a_list(server):
    """A long video's prompt schedule as a JSON list, one prompt per part: the pipeline's "A | B", recorded so."""
    base, pipe, _ = server
    req = {"prompt": [PROMPT, "a blue square moving up"], "seed": 3, "sample_steps": 2, "frame_num": 13}
    status, body, _ = call(base + "/generate", req)
    r = json.loads(body)
    assert status == 200, r
    assert r["settings"]["prompt"] == PROMPT + " | a blue square moving up"
    assert r["settings"]["long_video"]["prompts"][0] == PROMPT
    assert r["settings"]["long_video"]["prompts"][-1] == "a blue square moving up"
    for bad, msg in (([], "the prompt is an empty list"), ([PROMPT, " "], "part 1 is ' '"),
                     ([PROMPT, 3], "part 1 is 3"), (["a | b"], "holds a '|'")):
        status, body, _ = call(base + "/generate", dict(req, prompt=bad))
        assert status == 400 and msg in json.loads(body)["error"], body
    status, body, _ = call(base + "/generate", dict(req, frame_num=5))       # one window: no schedule
    assert status == 400 and "A list of prompts is no batch" in json.loads(body)["error"], body


def test_paths_outside_the_output_folder_are_not_served(server):
    base, _, _ = server
    for path in ("/outputs/../ck/config.json", "/outputs/.hidden", "/outputs/nothing.mp4", "/nowhere"):
        status, body, _ = call(base + path)
        assert status == 404 and "error" in json.loads(body), path


def test_cli_serve_starts_with_the_demo_model(tmp_path):
    import re
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "openwan.cli", "serve", "--port", "0", "--quiet",
                             "--output_dir", str(tmp_path / "o")], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert m and "ti2v (demo)" in line, line
        h = json.loads(call(f"http://127.0.0.1:{m.group(1)}/health")[1])
        assert h["variant"] == "demo" and h["checkpoint"].endswith("demo_checkpoint")
        proc.terminate()                           # SIGTERM: a clean stop (the handler ends serve_forever)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
