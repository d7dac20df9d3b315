"""The page at `/` in a real headless Chromium: type a prompt, submit, watch the video play, delete it.

Drives Chromium through chromedriver's WebDriver HTTP protocol with the standard library (no
selenium needed). Skipped where Debian's `chromium` and `chromium-driver` are not installed
(`apt-get install chromium chromium-driver`; .ci/run tries to install them). With
OPENWAN_SCREENSHOT=path the page is also saved there (docs/img/serve.png is made that way).
"""
import base64
import json
import os
import shutil
import subprocess
import urllib.request

import pytest
from serve_helpers import PROMPT, Running, jcall, wait_for

from openwan.runtime import free_port

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="no headless browser: install Debian's chromium and chromium-driver (apt-get install chromium "
           "chromium-driver) to run the page test")


class WebDriver:
    """The few WebDriver commands the test needs, over HTTP to chromedriver."""

    def __init__(self, tmp_path):
        port = free_port()
        self.proc = subprocess.Popen([DRIVER, f"--port={port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        wait_for(self._ready, 30, 0.1, "chromedriver")
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio",
                "--window-size=1000,620", "--autoplay-policy=no-user-gesture-required",
                f"--user-data-dir={tmp_path / 'chromium'}"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}}}
        self.session = self._cmd("POST", "/session", caps)["sessionId"]

    def _ready(self):
        try:
            return self._cmd("GET", "/status")["ready"]
        except OSError:
            return False

    def _cmd(self, method, path, body=None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())["value"]

    def cmd(self, method, path, body=None):
        return self._cmd(method, f"/session/{self.session}{path}", body)

    def get(self, url):
        self.cmd("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        el = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(el.values()))

    def type(self, css, text):
        self.cmd("POST", f"/element/{self.find(css)}/clear", {})
        self.cmd("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css):
        self.cmd("POST", f"/element/{self.find(css)}/click", {})

    def screenshot(self) -> bytes:
        return base64.b64decode(self.cmd("GET", "/screenshot"))

    def quit(self):
        try:
            self.cmd("DELETE", "")
        finally:
            self.proc.kill()
            self.proc.wait(30)


def submit_extension(wd, video, frame_num: int, steps: int) -> None:
    """Fill the page's form with the prompt, a length, steps and ``video`` in its "Video to extend" input; submit."""
    wd.type("#prompt", PROMPT)
    wd.type("#frame_num", str(frame_num))
    wd.type("#sample_steps", str(steps))
    wd.cmd("POST", f"/element/{wd.find('#extend')}/value", {"text": str(video)})
    wd.click("#submit")


PLAYING = """const v = document.querySelectorAll('video');
return [...v].map(x => [x.currentTime > 0 && !x.paused && x.readyState >= 2, x.videoWidth]);"""


def test_the_page_submits_a_prompt_and_plays_the_video(tmp_path):
    from openwan.pipelines import load_pipeline
    srv = Running(load_pipeline("demo", progress=False), tmp_path / "out")
    wd = WebDriver(tmp_path)
    try:
        wd.get(srv.base + "/")
        wait_for(lambda: "demo" in wd.js("return document.getElementById('info').textContent"), 60,
                 what="the page to read /health")
        prompts = [PROMPT, "a blue square moving down"]
        for p in prompts:
            wd.type("#prompt", p)
            wd.type("#sample_steps", "6")
            wd.click("#submit")
        # the queue shows both jobs, with live status; then both videos play in the page
        wait_for(lambda: len(wd.js("return document.querySelectorAll('.job')")) == 2, 30, what="two job cards")
        plays = wait_for(lambda: (lambda p: p if len(p) == 2 and all(ok for ok, _ in p) else None)(wd.js(PLAYING)),
                         180, 0.2, "both videos to play")
        assert [w for _, w in plays] == [128, 128]                       # the demo's size
        jobs = jcall(srv.base + "/v1/videos")[1]["data"]
        assert [j["prompt"] for j in jobs] == prompts[::-1] and all(j["status"] == "completed" for j in jobs)
        assert all(j["settings"]["sample_steps"] == 6 for j in jobs)
        text = wd.js("return document.getElementById('jobs').textContent")
        assert "completed" in text and "sample_steps: 6" in text and PROMPT in text
        shot = wd.screenshot()
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("OPENWAN_SCREENSHOT"):
            with open(os.environ["OPENWAN_SCREENSHOT"], "wb") as f:
                f.write(shot)
        # Delete from the page: the newest card's button removes the job and its file
        wd.click(".job .cancel")
        wait_for(lambda: len(jcall(srv.base + "/v1/videos")[1]["data"]) == 1, 30, what="the delete")
        wait_for(lambda: len(wd.js("return document.querySelectorAll('.job')")) == 1, 30, what="the card to go")
        assert len(list((tmp_path / "out").glob("video_*.mp4"))) == 1
        # a video to extend, chosen in the page's file input (the remaining video): the job continues it
        src = next((tmp_path / "out").glob("video_*.mp4"))
        submit_extension(wd, src, frame_num=49, steps=3)
        done = wait_for(lambda: next((j for j in jcall(srv.base + "/v1/videos")[1]["data"]
                                      if j["status"] == "completed" and (j["settings"] or {}).get("long_video")),
                                     None), 120, 0.2, "the extension to complete")
        assert done["settings"]["frame_num"] == 49 and done["settings"]["long_video"]["extend"]["kept"] == 33
    finally:
        wd.quit()
        srv.close()


@pytest.mark.parametrize("task, field", [("i2v", "image"), ("vace", "src_video")])
def test_an_i2v_or_vace_page_extends_a_video_alone(tmp_path, task, field):
    """On an image-to-video or VACE server the picture / source video is not required where a video to extend can
    be given: the page submits the video alone and the job continues it."""
    import numpy as np

    from openwan.pipelines import load_pipeline
    from openwan.testing import make_tiny_checkpoint
    from openwan.video import write_video
    ck = make_tiny_checkpoint(tmp_path / task, f"tiny-{task}")
    srv = Running(load_pipeline(ck, variant=f"tiny-{task}", progress=False), tmp_path / "out")
    src = write_video(iter([np.full((5, 32, 64, 3), 90, np.uint8)]), tmp_path / "clip.mp4", fps=16)
    wd = WebDriver(tmp_path)
    try:
        wd.get(srv.base + "/")
        wait_for(lambda: task in wd.js("return document.getElementById('info').textContent"), 60,
                 what="the page to read /health")
        assert wd.js(f"return [document.getElementById('{field}').required, "
                     f"document.getElementById('extend').required]") == [False, False]
        box = wd.js("return document.getElementById('imagebox').textContent")
        assert ("or a video to extend" if task == "i2v" else "Source video (optional)") in box
        submit_extension(wd, src, frame_num=9, steps=2)
        done = wait_for(lambda: next((j for j in jcall(srv.base + "/v1/videos")[1]["data"]
                                      if j["status"] in ("completed", "failed")), None), 120, 0.2, "the job to end")
        assert done["status"] == "completed" and done["settings"]["extension"]["kept"] == 5, done
    finally:
        wd.quit()
        srv.close()
