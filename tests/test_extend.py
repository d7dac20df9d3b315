"""Extending a video (``extend=``, ``--extend``): the source encoded once, its last latent frames carried into the
first continued window, its frames written as given (openwan.pipelines.extend)."""
import json

import numpy as np
import pytest
import torch

from openwan.pipelines import load_pipeline
from openwan.pipelines.base import source_then_decoded

FAST = dict(sample_steps=3, seed=4)
PROMPT = "a red circle moving to the right"


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("demo", progress=False)


@pytest.fixture(scope="module")
def source(pipe):
    """A 33-frame demo video (the demo's native length) as uint8 frames."""
    return pipe(PROMPT, sample_steps=3, seed=1).frames[0]


def _encoded(pipe, frames):
    from openwan.pipelines.v2v import video_to_tensor
    with torch.inference_mode():
        return pipe.vae.encode(video_to_tensor(frames)[None].to(pipe.vae.dtype))[0].float()


def test_the_output_starts_with_the_source_and_carries_its_latents(pipe, source, monkeypatch):
    """frame_num frames in all, the first 33 the source's own pixels; the whole latent's first 9 frames are the
    source's encoding exactly (the carried ones re-imposed to the end, through the refinement pass too); every
    window is a continued one: the first carries the source's last 2 latent frames, all run the expert."""
    windows = []
    run = type(pipe).run

    def spy(self, job, *a, **kw):
        out = run(self, job, *a, **kw)
        if job.long is None:
            windows.append((job, out.clone()))
        return out
    monkeypatch.setattr(type(pipe), "run", spy)
    out = pipe(PROMPT, extend=source, frame_num=65, output_type="latent", **FAST)
    z = _encoded(pipe, source)
    assert z.shape[1] == 9 and out.latents.shape[1] == 17
    assert torch.equal(out.latents[:, :9].float(), z)
    long = out.settings["long_video"]
    assert long["method"] == "continue" and long["carried"] == 2 and long["expert"] and long["refine"] == 0.85
    assert long["extend"] == {"source": None, "source_frames": 33, "kept": 33, "latent_frames": 9, "windows_from": 7}
    assert long["latent_frames"] == 10 and long["windows"] == len(windows) == 2
    first = windows[0][0]
    assert first.dit is pipe.c.dit_continue and all(j.dit is pipe.c.dit_continue for j, _ in windows)
    assert torch.equal(first.cond.first_frame.float(), z[:, 7:9])      # clean, timestep 0 (TI2V's way)
    assert torch.equal(windows[0][1][:, :2].float(), z[:, 7:9])
    video = pipe(PROMPT, extend=source, frame_num=65, **FAST).frames[0]
    assert video.shape == (65, 128, 128, 3) and np.array_equal(video[:33], source)
    assert "extend" not in out.settings                      # in-memory frames: no path to record


def test_a_source_not_4n_plus_1_keeps_its_last_frames_and_the_default_adds_one_native_length(pipe, source):
    longer = np.concatenate([source[:2], source])            # 35 frames: the last 33 are kept
    out = pipe(PROMPT, extend=longer, long_refine=0, **FAST)
    video = out.frames[0]
    assert video.shape[0] == 33 + 32 and np.array_equal(video[:33], source)
    assert out.settings["frame_num"] == 65
    assert out.settings["long_video"]["extend"]["dropped"] == 2
    assert "refine" not in out.settings["long_video"]


def test_a_prompt_schedule_spreads_over_the_new_windows(pipe, source, monkeypatch):
    seen = []
    run = type(pipe).run

    def spy(self, job, *a, **kw):
        if job.long is None:
            seen.append(job.cond.context)
        return run(self, job, *a, **kw)
    monkeypatch.setattr(type(pipe), "run", spy)
    out = pipe(f"{PROMPT} | a red circle moving up", extend=source, frame_num=97, long_refine=0,
               output_type="latent", **FAST)
    assert out.settings["long_video"]["prompts"] == [PROMPT, PROMPT, "a red circle moving up"] and len(seen) == 3
    right, up = pipe.encode_prompts([PROMPT, "a red circle moving up"])
    assert torch.equal(seen[0], right) and torch.equal(seen[-1], up)


def test_the_main_dit_without_expert_and_the_other_models_reimpose(tmp_path):
    """A text-to-video model without the TI2V way: the carried frames re-imposed at every step (inpainting), so
    they end exactly the source's latents."""
    from openwan.testing import make_tiny_checkpoint
    t2v = load_pipeline(make_tiny_checkpoint(tmp_path / "t"), variant="tiny-t2v", progress=False)
    frames = np.random.default_rng(0).integers(0, 256, (9, 32, 64, 3), dtype=np.uint8)
    out = t2v("a cat", extend=frames, frame_num=17, output_type="latent", **FAST)
    z = _encoded(t2v, frames[4:])                             # its tail: the native 5 frames
    assert out.latents.shape[1] == 2 + 2 and torch.equal(out.latents[:, :2].float(), z)
    assert out.settings["long_video"]["carried"] == 1 and "expert" not in out.settings["long_video"]
    video = t2v("a cat", extend=frames, frame_num=17, **FAST).frames[0]
    assert video.shape == (17, 32, 64, 3) and np.array_equal(video[:9], frames)


@pytest.mark.parametrize("kw, match", [
    (dict(frame_num=33), "frame_num 33: extending a 33-frame video needs a longer frame_num"),
    (dict(frame_num=65, long_method="windows"), "long_method='windows' does not take a source"),
    (dict(frame_num=65, long_overlap=9), r"long_overlap \(9\): an extension carries 1 to 8"),
    (dict(frame_num=65, long_overlap=0), r"long_overlap \(0\)"),
    (dict(frame_num=65, long_expert="yes"), "long_expert must be True or False"),
    (dict(frame_num=65, long_refine=1.5), "long_refine must be a number in"),
    (dict(frame_num=63), "frame_num must be of the form 4n"),
])
def test_bad_extension_settings_are_clear_errors(pipe, source, kw, match):
    with pytest.raises(ValueError, match=match):
        pipe(PROMPT, extend=source, **dict(FAST, **kw))


def test_an_extension_with_a_picture_or_of_a_missing_file_is_refused(pipe, source, tmp_path):
    with pytest.raises(ValueError, match="does not combine with a picture"):
        pipe(PROMPT, extend=source, image=source[0], frame_num=65, **FAST)
    with pytest.raises(FileNotFoundError, match="extend: no such file"):
        pipe(PROMPT, extend=str(tmp_path / "missing.mp4"), frame_num=65, **FAST)
    with pytest.raises(ValueError, match="extend: a video array must be uint8"):
        pipe(PROMPT, extend=source.astype(np.float32), frame_num=65, **FAST)
    with pytest.raises(ValueError, match="does not combine with a prompt of two objects drawn as a composed scene"):
        pipe("a red circle and a blue square moving up", extend=source, frame_num=65, **FAST)
    v2v = load_pipeline("demo", task="v2v", progress=False)
    with pytest.raises(ValueError, match="the v2v task does not take it.*--extend and --src_video exclude each other"):
        v2v(PROMPT, src_video=source, extend=source, **FAST)


def test_the_source_then_the_decoded_frames_after_its_part():
    decoded = [np.full((1, 2, 2, 3), 9, np.uint8), np.full((4, 2, 2, 3), 9, np.uint8),
               np.arange(4, dtype=np.uint8)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3)]
    source = [np.full((3, 2, 2, 3), 1, np.uint8), np.full((4, 2, 2, 3), 2, np.uint8)]
    out = np.concatenate(list(source_then_decoded(iter(decoded), iter(source), 7)))
    assert out.shape[0] == 9 and (out[:3] == 1).all() and (out[3:7] == 2).all()
    assert (out[7:, 0, 0, 0] == [2, 3]).all()                # the decoded frames after the first 7


def test_a_long_source_is_encoded_by_its_tail_only(pipe, source, monkeypatch):
    """Past one native length only the source's last 33 frames are encoded (bounded work and memory); the output is
    the source's 65 frames exactly, then the new ones; the latents start at the tail; the same as extending the
    tail alone, after the frames before it."""
    longer = np.concatenate([source[::-1][:32], source])              # 65 frames: the tail is `source`
    encoded = []
    encode = type(pipe.vae).encode

    def spy(self, x, *a, **kw):
        encoded.append(tuple(x.shape))
        return encode(self, x, *a, **kw)
    monkeypatch.setattr(type(pipe.vae), "encode", spy)
    out = pipe(PROMPT, extend=longer, frame_num=97, **FAST)
    assert [s[2] for s in encoded] == [33]
    video = out.frames[0]
    assert video.shape[0] == 97 and np.array_equal(video[:65], longer)
    assert out.settings["long_video"]["extend"] == {"source": None, "source_frames": 65, "kept": 65,
                                                    "latent_frames": 9, "windows_from": 7}
    lat = pipe(PROMPT, extend=longer, frame_num=97, output_type="latent", **FAST).latents
    assert lat.shape[1] == 9 + 8 and torch.equal(lat[:, :9].float(), _encoded(pipe, source))


def test_a_file_is_read_in_chunks_as_its_frames_would_be(pipe, source, tmp_path):
    """A file source (resampled to the model's rate while read a chunk at a time, never whole) gives the video its
    frames read whole and resampled give."""
    from openwan.pipelines.extend import read_source
    from openwan.video import frame_indices, read_video, write_video
    clip = tmp_path / "clip30.mp4"
    write_video(iter([np.concatenate([source, source[::-1]])]), clip, fps=30)      # 66 frames at 30 fps
    frames, fps = read_video(clip)
    same = frames[frame_indices(len(frames), fps, pipe.variant.sample.fps)]
    ext = read_source(str(clip), pipe.variant.sample.fps, 33)
    assert ext.source is None and ext.frames == len(same) and ext.tail.shape[0] == 33
    kept = 1 + 4 * ((len(same) - 1) // 4)
    assert np.array_equal(ext.tail, same[len(same) - 33:]) and ext.dropped == len(same) - kept
    assert np.array_equal(np.concatenate(list(ext.chunks(chunk=5))), same[len(same) - kept:])
    a = pipe(PROMPT, extend=str(clip), frame_num=kept + 16, long_refine=0, **FAST).frames[0]
    b = pipe(PROMPT, extend=same, frame_num=kept + 16, long_refine=0, **FAST).frames[0]
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="is an image; give a video file"):
        pipe(PROMPT, extend=str(tmp_path / "x.png"), frame_num=65, **FAST)


@pytest.mark.parametrize("n, fps, target", [(37, 16, None), (37, 30, 16), (50, 24, 16), (10, 8, 16), (61, 25, 12),
                                             (10, 8, 20), (33, 16, 16)])      # (10, 8, 20): the last frame's rule
def test_iter_video_gives_read_videos_frames_resampled(tmp_path, n, fps, target):
    """The chunked reader's frames are read_video's, resampled by frame_indices (down, up, the same rate, none)."""
    from openwan.video import frame_indices, iter_video, read_video, write_video
    frames = np.random.default_rng(n).integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)
    path = write_video(iter([frames]), tmp_path / "v.mp4", fps=fps)
    whole, rate = read_video(path)
    chunks = list(iter_video(path, target, chunk=5))
    assert all(len(c) <= 5 for c in chunks)
    assert np.array_equal(np.concatenate(chunks), whole[frame_indices(len(whole), rate, target)])


def test_cli_extends_a_file_and_from_replays_it(tmp_path, source):
    from openwan.cli import main
    from openwan.video import write_video
    src = tmp_path / "clip.mp4"
    write_video(iter([source]), src, fps=16)
    out = tmp_path / "longer.mp4"
    assert main(["generate", PROMPT, "--extend", str(src), "--frame_num", "49", "--sample_steps", "3", "--seed", "2",
                 "--long_refine", "0", "-o", str(out), "--quiet"]) == 0
    rec = json.loads(out.with_suffix(".json").read_text())["openwan"]
    assert rec["extend"] == str(src) and rec["frame_num"] == 49 and rec["long_video"]["extend"]["kept"] == 33
    again = tmp_path / "again.mp4"
    assert main(["generate", "--from", str(out.with_suffix(".json")), "-o", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()
    assert src.exists()                                     # the source is read, never touched


def test_cli_extends_an_openwan_video_with_its_own_prompt(tmp_path, source, capsys):
    """--extend without a prompt takes the one the video's openwan record holds; a video without one is a clear
    error (exit 2, nothing written)."""
    from openwan.cli import main
    from openwan.video import write_video
    first = tmp_path / "first.mp4"
    assert main(["generate", "a blue square moving up", "--sample_steps", "2", "--seed", "1", "-o", str(first),
                 "--quiet"]) == 0
    first.with_suffix(".json").unlink()                     # the mp4's own metadata holds the record too
    longer = tmp_path / "longer.mp4"
    assert main(["generate", "--extend", str(first), "--frame_num", "49", "--sample_steps", "2", "--long_refine", "0",
                 "-o", str(longer)]) == 0
    assert "prompt from" in capsys.readouterr().out
    rec = json.loads(longer.with_suffix(".json").read_text())["openwan"]
    assert rec["prompt"] == "a blue square moving up" and rec["extend"] == str(first)
    bare = tmp_path / "bare.mp4"
    write_video(iter([source[:9]]), bare, fps=16)
    assert main(["generate", "--extend", str(bare), "-o", str(tmp_path / "x.mp4"), "--quiet"]) == 2
    assert f"no prompt: {bare} holds no openwan record" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_the_server_takes_extend_as_a_path(pipe):
    from openwan.serve.params import check_request, parameter_kinds
    kinds = parameter_kinds(pipe)
    assert kinds["extend"] == "file"
    assert check_request({"prompt": PROMPT, "extend": "/data/clip.mp4", "frame_num": 65}, kinds, fps=16) == \
        {"prompt": PROMPT, "extend": "/data/clip.mp4", "frame_num": 65}
    from openwan.serve.params import RequestError
    with pytest.raises(RequestError, match="'extend' must be a path on the server"):
        check_request({"prompt": PROMPT, "extend": 3}, kinds, fps=16)
