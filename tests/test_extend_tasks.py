"""Extending a video with an image-to-video model (``extend=`` on the i2v and flf2v tasks, Wan 2.1 and Wan 2.2
I2V-A14B): the new frames are the task's own video from the source's last frame (fitted to the task's size), the
output the source's frames then those after the picture; with VACE, its own extension: the source's last frames kept
(mask 0), the new ones generated (openwan.pipelines.extend)."""
import json

import numpy as np
import pytest

from openwan.pipelines import load_pipeline
from openwan.pipelines.extend import fit_frames
from openwan.testing import make_tiny_checkpoint, make_tiny_wan22_checkpoint

FAST = dict(sample_steps=2, seed=5)
PROMPT = "a red ball rolls"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("extend_picture")
    out = {v: make_tiny_checkpoint(root / v, f"tiny-{v}") for v in ("i2v", "flf2v", "vace")}
    out["i2v-A14B"] = make_tiny_wan22_checkpoint(root / "a14b", "i2v-A14B")
    return out


@pytest.fixture(scope="module")
def pipes(ckpts):
    made = {}

    def get(name):
        if name not in made:
            kw = {} if name == "i2v-A14B" else dict(task=name, variant=f"tiny-{name}")    # A14B: from the folder
            made[name] = load_pipeline(ckpts[name], progress=False, **kw)
        return made[name]
    return get


def _source(n=11, h=40, w=48, seed=0):
    """A smooth random video (uint8 [n, h, w, 3]) of another size and aspect than the output's."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, h // 8, w // 8, 3)).astype(np.uint8)
    return base.repeat(8, 1).repeat(8, 2)


@pytest.mark.parametrize("name, frame_num", [("i2v", 17), ("i2v", 25), ("flf2v", 25), ("i2v-A14B", 21)])
def test_the_new_frames_are_the_tasks_video_from_the_sources_last_frame(pipes, name, frame_num):
    """The output's first frames are the source's kept ones fitted to the video size; the rest are exactly the
    task's own call from that fitted last frame (its decode's first frame, the picture, dropped), long or not."""
    pipe, src = pipes(name), _source()
    kw = {"last_frame": src[0]} if name == "flf2v" else {}
    if name == "i2v-A14B":              # no tiny sizes of its own: the published 1280*720's area is too slow here
        kw.update(size="64*32", strict_size=False)
    out = pipe(PROMPT, extend=src, frame_num=frame_num, **kw, **FAST)
    video, st = out.frames[0], out.settings
    w, h = (int(v) for v in st["video_size"].split("*"))
    kept = fit_frames(src[2:], w, h)                        # 11 frames: the last 9 (4m+1) are kept
    picture = kept[-1]
    plain = pipe(PROMPT, **{"first_frame" if name == "flf2v" else "image": picture},
                 frame_num=frame_num - 9 + 1, **kw, **FAST)
    assert video.shape == (frame_num, h, w, 3)
    assert np.array_equal(video[:9], kept)
    assert np.array_equal(video[9:], plain.frames[0][1:])
    assert st["frame_num"] == frame_num and st["extension"] == {"source": None, "source_frames": 11, "kept": 9,
                                                                "dropped": 2, "from_last": 1}
    assert "image" not in st and "first_frame" not in st and "extend" not in st     # in-memory: nothing to record
    assert st.get("long_video") == plain.settings.get("long_video")                # the task's own plan
    assert (st.get("long_video") is not None) == (frame_num - 8 > pipe.defaults().frame_num)


def test_the_picture_is_the_fitted_last_frame_as_given(pipes, monkeypatch):
    """The task's conditioning gets the source's last frame at the video size already (its own resize: the
    identity), so the join is the source's frame. At a size where the fit resizes (a batched resize rounds some
    pixels differently from one frame's: the fit goes frame by frame)."""
    pipe, src = pipes("i2v"), _source()
    seen = []
    condition = type(pipe).condition

    def spy(self, images, frame_num, height, width):
        seen.append((images[0].clone(), frame_num, height, width))
        return condition(self, images, frame_num, height, width)
    monkeypatch.setattr(type(pipe), "condition", spy)
    out = pipe(PROMPT, extend=src, frame_num=17, size="320*192", strict_size=False, **FAST)
    image, frames, h, w = seen[0]
    assert (h, w) != src.shape[1:3]
    assert frames == 9 and image.shape[-2:] == (h, w)
    as_uint8 = ((image.clamp(-1, 1) + 1) / 2 * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(as_uint8, out.frames[0][8])


@pytest.mark.parametrize("name, kw, match", [
    ("i2v", dict(image=np.zeros((32, 32, 3), np.uint8)), "starts the new frames from the source's last frame, its "
                                                         "picture: leave image unset"),
    ("flf2v", dict(first_frame=np.zeros((32, 32, 3), np.uint8), last_frame=np.zeros((32, 32, 3), np.uint8)),
     r"leave first_frame unset \(last_frame, where the extension ends, is taken\)"),
    ("flf2v", {}, "from the source's last frame to last_frame: give last_frame"),
    ("i2v", dict(frame_num=9), "frame_num 9: extending a 9-frame video needs a longer frame_num"),
])
def test_bad_picture_extensions_are_clear_errors(pipes, name, kw, match):
    with pytest.raises(ValueError, match=match):
        pipes(name)(PROMPT, extend=_source(), **dict(dict(frame_num=17), **kw), **FAST)


def test_cli_extends_with_an_i2v_model_and_from_replays_it(ckpts, tmp_path):
    from openwan.cli import main
    from openwan.video import write_video
    src = tmp_path / "clip.mp4"
    write_video(iter([_source(9, 32, 48)]), src, fps=16)
    out = tmp_path / "longer.mp4"
    assert main(["generate", PROMPT, "--task", "tiny-i2v", "--ckpt_dir", str(ckpts["i2v"]),
                 "--extend", str(src), "--frame_num", "17", "--sample_steps", "2", "--seed", "2", "-o", str(out),
                 "--quiet"]) == 0
    rec = json.loads(out.with_suffix(".json").read_text())["openwan"]
    assert rec["extend"] == str(src) and rec["frame_num"] == 17 and rec["extension"]["kept"] == 9
    assert "image" not in rec
    again = tmp_path / "again.mp4"
    assert main(["generate", "--from", str(out.with_suffix(".json")), "-o", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()


@pytest.fixture
def vace9(pipes, monkeypatch):
    """The tiny VACE pipeline with a native length of 9 frames (3 latent frames: the default overlap 2 keeps 5)."""
    pipe = pipes("vace")
    defaults = pipe.defaults()
    monkeypatch.setattr(pipe, "defaults", lambda: defaults.replace(frame_num=9))
    return pipe


@pytest.mark.parametrize("overlap, known", [(None, 5), (1, 1)])
def test_vace_extends_with_the_sources_last_frames_kept(vace9, monkeypatch, overlap, known):
    """VACE's source video is the source's known last frames (fitted) then grey frames, its mask 0 on the known ones
    and 1 after; the output is the source's frames, then exactly the plain VACE call's frames after its known ones."""
    pipe, src = vace9, _source()
    seen = []
    encode = type(pipe).encode_context

    def spy(self, frames, mask, refs=()):
        seen.append((frames.clone(), mask.clone()))
        return encode(self, frames, mask, refs)
    monkeypatch.setattr(type(pipe), "encode_context", spy)
    out = pipe(PROMPT, extend=src, frame_num=25, long_overlap=overlap, **FAST)
    video, st = out.frames[0], out.settings
    w, h = (int(v) for v in st["size"].split("*"))
    kept = fit_frames(src[2:], w, h)
    frames, mask = seen[0]
    assert frames.shape[1] == mask.shape[0] == known + 16
    assert (mask[:known] == 0).all() and (mask[known:] == 1).all()
    as_uint8 = ((frames.clamp(-1, 1) + 1) / 2 * 255).round().byte().permute(1, 2, 3, 0).numpy()
    assert np.array_equal(as_uint8[:known], kept[-known:]) and (as_uint8[known:] == 128).all()
    plain_mask = np.ones((known + 16, h, w), np.float32)
    plain_mask[:known] = 0
    grey = np.full((16, h, w, 3), 128, np.uint8)
    plain = pipe(PROMPT, src_video=np.concatenate([kept[-known:], grey]), src_mask=plain_mask,
                 frame_num=known + 16, long_overlap=overlap, **FAST)
    assert video.shape == (25, h, w, 3) and np.array_equal(video[:9], kept)
    assert np.array_equal(video[9:], plain.frames[0][known:])
    assert st["extension"]["from_last"] == known and st["frame_num"] == 25
    assert not {"src_video", "src_mask", "src_fps"} & set(st)
    assert st["long_video"] == plain.settings["long_video"]


@pytest.mark.parametrize("kw, match", [
    (dict(src_video=np.zeros((5, 32, 64, 3), np.uint8)), "makes its source video and mask from the video to extend"
                                                         r".*leave src_video unset"),
    (dict(src_mask=np.zeros((5, 32, 64), np.float32)), "leave src_mask unset"),
    (dict(long_overlap=3), r"long_overlap \(3\): a VACE extension keeps the source's last 1 to 2 latent frames"),
])
def test_bad_vace_extensions_are_clear_errors(vace9, kw, match):
    with pytest.raises(ValueError, match=match):
        vace9(PROMPT, extend=_source(), frame_num=17, **kw, **FAST)
