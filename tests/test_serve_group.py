"""`openwan serve` from a torchrun group (2 CPU processes on gloo: --ulysses_size 2, --window_parallel or
--cfg_parallel) serving as one worker."""
import re
import signal
import subprocess
import sys
import threading

import pytest
from serve_helpers import PROMPT, call, jcall, wait_done, wait_for

from openwan.configs import DEMO_VARIANT
from openwan.runtime import free_port
from openwan.video import read_video


@pytest.mark.slow
@pytest.mark.parametrize("split", [["--ulysses_size", "2"], ["--window_parallel"], ["--cfg_parallel"]])
def test_a_torchrun_group_serves_cancels_and_stops(tmp_path, split):
    master = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_addr", "127.0.0.1", "--master_port", str(master), "-m", "openwan.cli", "serve",
                             "--port", "0", "--quiet", *split, "--output_dir", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        box = {}
        reader = threading.Thread(target=lambda: box.update(line=proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(240)
        m = re.search(r"http://127\.0\.0\.1:(\d+)", box.get("line", ""))
        assert m and "a group of 2 processes" in box["line"], box
        base = f"http://127.0.0.1:{m.group(1)}"
        # a running job cancelled at a step: every process leaves the loop together ...
        long = jcall(base + "/v1/videos", {"prompt": PROMPT, "sample_steps": 1000, "frame_num": 5})[1]
        wait_for(lambda: jcall(base + f"/v1/videos/{long['id']}")[1]["progress"] > 0, 120, what="progress")
        assert jcall(base + f"/v1/videos/{long['id']}", method="DELETE")[1]["status"] == "cancelled"
        # ... so the next jobs still run in step
        ids = [jcall(base + "/v1/videos", {"prompt": PROMPT, "sample_steps": 3, "frame_num": 5})[1]["id"]
               for _ in range(2)]
        ids.append(jcall(base + "/v1/videos", {"prompt": PROMPT, "sample_steps": 2, "frame_num": 49,
                                               "long_method": "windows"})[1]["id"])      # windows to share
        for i, frames in zip(ids, (5, 5, 49)):
            v = wait_done(base, i, 240)
            assert v["status"] == "completed", v
            status, data, _ = call(base + v["url"])
            (tmp_path / "v.mp4").write_bytes(data)
            w, h = (int(v) for v in DEMO_VARIANT.sample.size.split("*"))      # the embedded demo's size
            assert read_video(tmp_path / "v.mp4")[0].shape == (frames, h, w, 3)
        proc.send_signal(signal.SIGTERM)                              # torchrun passes it on; all processes end
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
