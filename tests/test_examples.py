"""Every script in examples/ runs (as a subprocess, on the demo model or tiny random checkpoints, few steps), and
the README's Python example runs as written.

Each subprocess costs ~9 s of CPU (imports, model load, a few steps); the default suite runs the README example,
t2v, i2v and the server client, the rest (v2v, flf2v, vace, the LoRA walk-through) are marked slow."""
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from openwan.runtime import free_port
from openwan.video import read_video

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "OMP_NUM_THREADS": "1"}   # the demo runs fastest on one thread, and other tests may hold the cores


def run(args, cwd, timeout=300):
    p = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def example(name):
    """The example as a module, to call its main() in-process (argument handling only)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from PIL import Image

    from openwan.testing import make_tiny_checkpoint
    from openwan.video import write_video
    root = tmp_path_factory.mktemp("tiny")
    out = {v: make_tiny_checkpoint(root / v, v) for v in ("tiny-i2v", "tiny-flf2v", "tiny-vace")}
    rng = np.random.default_rng(0)
    out["image"] = root / "img.png"
    Image.fromarray(rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)).save(out["image"])
    out["video"] = write_video(rng.integers(0, 255, (5, 32, 64, 3), dtype=np.uint8), root / "src.mp4", fps=16)
    return out


def test_readme_python_example_runs_as_written(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^Python:\s*```python\n(.*?)```", text, re.S | re.M)
    assert block, "README: no ```python block after 'Python:'"
    code = block.group(1)
    assert 'load_pipeline("demo")' in code
    (tmp_path / "readme.py").write_text(code)
    rc, out, err = run(["readme.py"], tmp_path)
    assert rc == 0, err
    frames, fps = read_video(tmp_path / "circle.mp4")
    assert frames.shape == (33, 128, 128, 3) and fps == 16      # the demo's defaults


def test_text_to_video(tmp_path):
    rc, out, err = run([EXAMPLES / "text_to_video.py", "--steps", "2", "--out", "a.mp4"], tmp_path)
    assert rc == 0, err
    assert read_video(tmp_path / "a.mp4")[0].shape == (33, 128, 128, 3) and "wrote a.mp4" in out


@pytest.mark.slow
def test_video_to_video(tmp_path):
    rc, out, err = run([EXAMPLES / "video_to_video.py", "--steps", "2", "--strength", "0.9", "--out", "b.mp4"],
                       tmp_path)
    assert rc == 0, err
    assert read_video(tmp_path / "b.mp4")[0].shape == (33, 128, 128, 3)   # every source frame kept (src_fps 0)


@pytest.mark.parametrize("name, extra", [
    ("image_to_video", ["--image", "{image}"]),
    pytest.param("first_last_frame", ["--first_frame", "{image}", "--last_frame", "{image}"], marks=pytest.mark.slow),
    pytest.param("vace", ["--src_video", "{video}", "--src_ref_images", "{image}", "--src_fps", "0"],
                 marks=pytest.mark.slow),
])
def test_checkpoint_examples_on_tiny_checkpoints(tiny, tmp_path, name, extra):
    variant = {"image_to_video": "tiny-i2v", "first_last_frame": "tiny-flf2v", "vace": "tiny-vace"}[name]
    args = [EXAMPLES / f"{name}.py", "--ckpt_dir", tiny[variant], "--prompt", "a red circle", "--size", "64*32",
            "--frames", "5", "--steps", "2", "--out", "v.mp4"] + [e.format(**tiny) for e in extra]
    rc, out, err = run(args, tmp_path)
    assert rc == 0, err
    assert read_video(tmp_path / "v.mp4")[0].shape == (5, 32, 64, 3)


@pytest.mark.parametrize("name", ["text_to_video", "video_to_video", "image_to_video", "first_last_frame", "vace",
                                  "train_lora_demo", "server_client"])
def test_help_and_argument_errors(name, capsys, tmp_path):
    main = example(name).main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out
    if name in ("image_to_video", "first_last_frame", "vace"):
        with pytest.raises(SystemExit) as e:
            main(["--prompt", "x"])                          # no --ckpt_dir
        assert e.value.code == 2 and "--ckpt_dir" in capsys.readouterr().err
        args = ["--ckpt_dir", str(tmp_path / "missing"), "--prompt", "x", "--image", "i.png", "--first_frame",
                "a.png", "--last_frame", "b.png"]
        args = [a for a in args if name != "vace" or a not in ("--image", "i.png", "--first_frame", "a.png",
                                                             "--last_frame", "b.png")]
        if name == "image_to_video":
            args = args[:6]
        if name == "first_last_frame":
            args = args[:4] + args[6:]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "not found" in err and str(tmp_path / "missing") in err
    if name == "server_client":
        assert main(["a red circle", "--url", "http://127.0.0.1:9"]) == 2
        assert "cannot reach" in capsys.readouterr().err


def test_server_client(tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "openwan.cli", "serve", "--port", str(port), "--output_dir",
                               str(tmp_path / "served"), "--quiet"], cwd=tmp_path, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.time() < deadline, "server did not start"
                time.sleep(0.5)
        rc, out, err = run([EXAMPLES / "server_client.py", "a red circle moving up", "--url",
                            f"http://127.0.0.1:{port}", "--seed", "3", "--sample_steps", "2", "--out", "c.mp4"],
                           tmp_path)
        assert rc == 0, err
        assert "server: demo" in out and "seed 3" in out
        assert read_video(tmp_path / "c.mp4")[0].shape == (33, 128, 128, 3)
        rc, out, err = run([EXAMPLES / "server_client.py", "a red circle", "--url", f"http://127.0.0.1:{port}",
                            "--frame_num", "6"], tmp_path)
        assert rc == 2 and "HTTP 400" in err and "4n+1" in err
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_train_lora_demo(tmp_path):
    rc, out, err = run([EXAMPLES / "train_lora_demo.py", "--steps", "2", "--clips", "2", "--sample_steps", "2",
                        "--work", "w"], tmp_path, timeout=600)
    assert rc == 0, err
    w = tmp_path / "w"
    assert (w / "train" / "lora.safetensors").is_file() and "trained 2 steps" in out
    before, after = read_video(w / "before.mp4")[0], read_video(w / "after.mp4")[0]
    assert before.shape == after.shape == (33, 128, 128, 3)
    from openwan.checkpoints import read_state_dict
    lora = read_state_dict(w / "train" / "lora.safetensors")
    ups = [v for k, v in lora.items() if k.endswith("lora_B.weight")]
    assert ups and any(v.abs().max() > 0 for v in ups)   # B starts at zero: training moved it


def test_export_to_video_takes_diffusers_style_frames(tmp_path, monkeypatch):
    """openwan.export_to_video(frames, path, fps): lists of PIL images, float [0, 1] or uint8 arrays."""
    from PIL import Image

    import openwan
    from openwan import video
    assert openwan.export_to_video is video.export_to_video
    u8 = np.random.default_rng(0).integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    cases = {"pil": [Image.fromarray(f) for f in u8], "float": u8.astype(np.float32) / 255, "uint8": list(u8)}
    for name, frames in cases.items():
        path = openwan.export_to_video(frames, tmp_path / f"{name}.mp4", fps=8)
        got, fps = read_video(path)
        assert got.shape == (5, 32, 48, 3) and fps == 8
    # what reaches the encoder (H.264 itself is lossy and, threaded, not bit-reproducible): the same uint8 frames,
    # float [0, 1] mapped by round(x * 255)
    seen = {}

    def capture(frames, path, **kw):
        seen[Path(path).stem] = np.concatenate([video._to_numpy_frames(f) for f in frames])
        return Path(path)

    monkeypatch.setattr(video, "write_video", capture)
    for name, frames in cases.items():
        openwan.export_to_video(frames, tmp_path / f"again_{name}.mp4", fps=8)
        assert np.array_equal(seen[f"again_{name}"], u8), name
