"""Video / image files: round trips, metadata, atomic writes, conversions, clear errors."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from openwan.video import (
    OutputPathError, export_to_video, read_image, read_image_metadata, read_video, read_video_metadata,
    sidecar_path, to_uint8, write_image, write_video,
)

META = {"prompt": "一只猫在草地上奔跑, a cat", "seed": 42, "settings": {"steps": 50, "shift": 5.0}}


def smooth_clip(frames=9, height=32, width=48):
    """A slowly varying colour pattern that H.264 reproduces closely."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    r = 128 + 90 * np.sin(x / 12 + t / 4)
    g = 128 + 90 * np.cos(y / 10)
    b = 40 + 3 * x + 2 * t
    return np.stack([r, g, b], -1).round().astype(np.uint8)


def listing(d):
    return sorted(os.listdir(d))


# ----------------------------------------------------------------------------- to_uint8

def test_to_uint8_reference_rule():
    vals = torch.tensor([-3.0, -1.0, 0.0, 0.5, 0.999, 1.0, 2.0])
    video = torch.zeros(3, 1, 1, 7)
    video[0, 0, 0] = vals
    video[1] = -1.0
    video[2] = 1.0
    out = to_uint8(video)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 7, 3)
    # clamp, (x + 1) / 2 * 255, truncated: 0 -> 127.5 -> 127, 0.5 -> 191.25 -> 191, 0.999 -> 254.87 -> 254
    assert out[0, 0, :, 0].tolist() == [0, 0, 127, 191, 254, 255, 255]
    assert (out[..., 1] == 0).all() and (out[..., 2] == 255).all()   # channels go last, in order
    batch = to_uint8(torch.zeros(2, 3, 5, 4, 6))
    assert batch.shape == (2, 5, 4, 6, 3) and (batch == 127).all()
    with pytest.raises(ValueError, match=r"\[3, F, H, W\]"):
        to_uint8(torch.zeros(4, 5, 4, 6))


# ----------------------------------------------------------------------------- mp4

def test_video_roundtrip_with_metadata(tmp_path):
    clip = smooth_clip()
    path = write_video(clip, tmp_path / "out" / "clip.mp4", fps=16, metadata=META)
    assert listing(tmp_path / "out") == ["clip.json", "clip.mp4"]          # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask                 # not mkstemp's 0600
    frames, fps = read_video(path)
    assert frames.shape == clip.shape and frames.dtype == np.uint8
    assert fps == 16
    diff = np.abs(frames.astype(int) - clip.astype(int))
    # yuv420p halves chroma resolution: ~2.5 levels mean error here; a frame-order mix-up gives ~27
    assert diff.mean() < 4.0 and diff.max() < 24, (diff.mean(), diff.max())
    assert np.abs(frames.astype(int) - clip[::-1].astype(int)).mean() > 15
    assert read_video_metadata(path) == META                                  # from the mp4 comment tag
    assert json.loads(sidecar_path(path).read_text(encoding="utf-8")) == META
    sidecar_path(path).unlink()
    assert read_video_metadata(path) == META                                  # still in the container


def test_video_odd_size_is_padded(tmp_path):
    clip = smooth_clip(frames=5, height=33, width=47)
    frames, fps = read_video(write_video(clip, tmp_path / "odd.mp4", fps=24))
    assert frames.shape == (5, 34, 48, 3) and fps == 24
    assert np.abs(frames[:, :33, :47].astype(int) - clip).mean() < 4.0
    assert np.abs(frames[:, 33, :47].astype(int) - clip[:, 32]).mean() < 4   # replicated last row


def test_video_streaming_from_iterator(tmp_path):
    clip = smooth_clip(frames=13)
    consumed = []

    def chunks():                    # a decoder yielding 1 frame, then chunks of 4 (like the VAE)
        yield torch.from_numpy(clip[0])
        consumed.append(1)
        for i in range(1, 13, 4):
            yield torch.from_numpy(clip[i:i + 4])
            consumed.append(i + 4)

    path = write_video(chunks(), tmp_path / "stream.mp4", metadata={"seed": 1})
    assert consumed == [1, 5, 9, 13]
    frames, _ = read_video(path)
    assert frames.shape == clip.shape
    assert np.abs(frames.astype(int) - clip).mean() < 4.0


def test_video_failure_leaves_nothing(tmp_path):
    clip = smooth_clip(frames=4)

    def broken():
        yield clip[:2]
        raise RuntimeError("decoder crashed")

    with pytest.raises(RuntimeError, match="decoder crashed"):
        write_video(broken(), tmp_path / "a.mp4", metadata=META)
    with pytest.raises(ValueError, match="same height and width"):
        write_video(iter([clip[:2], clip[:2, :16]]), tmp_path / "b.mp4", metadata=META)
    with pytest.raises(ValueError, match="no frames"):
        write_video(iter([]), tmp_path / "c.mp4")
    with pytest.raises(ValueError, match="to_uint8"):
        write_video(clip.astype(np.float32) / 255, tmp_path / "d.mp4")
    with pytest.raises(ValueError, match="uint8"):
        write_video(clip[..., :2], tmp_path / "e.mp4")
    assert listing(tmp_path) == []


def test_video_refuses_to_overwrite(tmp_path):
    clip = smooth_clip(frames=3)
    path = write_video(clip, tmp_path / "v.mp4", metadata=META)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_video(clip[::-1].copy(), path)
    assert path.read_bytes() == before
    write_video(clip[:2], path, overwrite=True)             # replaced, without metadata this time
    assert read_video(path)[0].shape[0] == 2
    assert not sidecar_path(path).exists()                  # the stale .json went with the old video
    assert read_video_metadata(path) == {}
    assert listing(tmp_path) == ["v.mp4"]


def _chunks(clip, n=4):
    for i in range(0, len(clip), n):
        yield clip[i:i + n].copy()                          # fresh buffers, as a streaming decode gives


def moving_circle(frames=17, size=64, noise=8.0):
    """A red disc crossing a grey field with sensor-like noise: content on which x264's MB-tree rate
    control gave 3-8 different files in 12 encodes of the same frames (measured before the fix)."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(size), np.arange(size), indexing="ij")
    clip = np.empty((frames, size, size, 3))
    clip[:] = (200, 200, 190)
    clip[((x - (12 + 2.5 * t)) ** 2 + (y - 32) ** 2) < 100] = (210, 30, 30)
    clip += np.random.default_rng(0).normal(0, noise, clip.shape)
    return np.clip(clip, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("pix_fmt, crf", [(None, None), ("yuv444p", 18), ("yuv420p", 18)])
def test_encode_is_repeatable(tmp_path, pix_fmt, crf):
    """The same frames, streamed in chunks, give the same bytes every time."""
    clip = moving_circle()
    files = [write_video(_chunks(clip), tmp_path / f"v{i}.mp4", fps=8, crf=crf, pix_fmt=pix_fmt).read_bytes()
             for i in range(12)]
    assert all(f == files[0] for f in files)


def test_small_video_is_near_lossless(tmp_path):
    """Frames up to 256x256 are stored as yuv444p at crf 0 (lossless in YUV), so the only error is the
    8-bit RGB -> YCbCr -> RGB rounding: half a step of Y (255/219) plus half a step of the chroma
    (255/224) times the largest chroma coefficient (1.772 for B), and the final rounding:
    0.58 + 1.01 + 0.5 = 2.1 levels; swscale's fixed-point tables may add one."""
    clip = np.random.default_rng(1).integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)
    path = write_video(clip, tmp_path / "v.mp4")
    frames, _ = read_video(path)
    assert np.abs(frames.astype(int) - clip).max() <= 3
    big = write_video(np.repeat(np.repeat(clip[:2], 5, 1), 5, 2), tmp_path / "big.mp4")   # 320x320: yuv420p
    import av
    with av.open(str(big)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_sidecar_collisions_are_refused(tmp_path):
    clip = smooth_clip(frames=2)
    with pytest.raises(ValueError, match="collides with the settings file"):
        write_video(clip, tmp_path / "clip.json", metadata=META)
    (tmp_path / "notes.json").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.json already exists"):
        write_video(clip, tmp_path / "notes.mp4", metadata=META)
    with pytest.raises(FileExistsError, match="notes.json already exists"):
        write_image(clip[0], tmp_path / "notes.png", metadata=META)
    assert listing(tmp_path) == ["notes.json"] and (tmp_path / "notes.json").read_text() == "mine"
    write_video(clip, tmp_path / "notes.mp4", metadata=META, overwrite=True)     # both replaced together
    assert read_video_metadata(tmp_path / "notes.mp4") == META
    assert json.loads((tmp_path / "notes.json").read_text()) == META


def test_video_unwritable_output(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputPathError, match="not a directory"):
        write_video(smooth_clip(frames=2), tmp_path / "afile" / "sub" / "v.mp4")
    with pytest.raises(OutputPathError, match="is a directory"):
        write_video(smooth_clip(frames=2), tmp_path, overwrite=True)
    if os.geteuid() != 0:                                   # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(OutputPathError, match="not writable"):
                write_video(smooth_clip(frames=2), ro / "v.mp4")
        finally:
            ro.chmod(0o700)


def test_video_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="fps"):
        write_video(smooth_clip(frames=2), tmp_path / "a.mp4", fps=0)
    with pytest.raises(ValueError, match="crf"):
        write_video(smooth_clip(frames=2), tmp_path / "a.mp4", crf=80)
    with pytest.raises(ValueError, match="metadata"):
        write_video(smooth_clip(frames=2), tmp_path / "a.mp4", metadata=["not", "a", "dict"])
    assert listing(tmp_path) == []


def test_export_to_video_like_diffusers(tmp_path):
    clip = smooth_clip(frames=5)
    pil = [Image.fromarray(f) for f in clip]
    path = export_to_video(pil, tmp_path / "pil.mp4", fps=8)
    assert isinstance(path, str)
    frames, fps = read_video(path)
    assert frames.shape == clip.shape and fps == 8
    floats = [f.astype(np.float32) / 255 for f in clip]      # diffusers-style frames in [0, 1]
    frames2, _ = read_video(export_to_video(floats, tmp_path / "float.mp4"))
    assert np.abs(frames2.astype(int) - clip).mean() < 4.0
    tmp = export_to_video(pil)                               # no path: a temporary file
    try:
        assert read_video(tmp)[0].shape == clip.shape
    finally:
        os.unlink(tmp)


def test_read_video_errors(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(ValueError, match="bad.mp4"):
        read_video(bad)
    with pytest.raises(ValueError, match="bad.mp4"):
        read_video_metadata(bad)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    good = write_video(smooth_clip(frames=3), tmp_path / "good.mp4")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.mp4"):
        read_video(truncated)


# ----------------------------------------------------------------------------- images

def test_png_roundtrip_with_metadata(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    path = write_image(torch.from_numpy(img), tmp_path / "img" / "frame.png", metadata=META)
    assert listing(tmp_path / "img") == ["frame.json", "frame.png"]
    out = read_image(path)
    assert out.dtype == np.uint8 and np.array_equal(out, img)                # PNG is lossless
    assert read_image_metadata(path) == META
    with Image.open(path) as im:
        assert json.loads(im.info["comment"]) == META                       # the PNG text chunk itself
    assert json.loads(sidecar_path(path).read_text(encoding="utf-8")) == META
    with pytest.raises(FileExistsError):
        write_image(img, path)
    write_image(img[None], path, overwrite=True)                            # [1, H, W, 3] is fine too
    assert read_image_metadata(path) == {}
    with pytest.raises(ValueError, match="one frame"):
        write_image(np.zeros((2, 4, 4, 3), np.uint8), tmp_path / "two.png")


def test_read_image_conversions(tmp_path):
    def save(arr, name):
        p = tmp_path / name
        Image.fromarray(arr).save(p)
        return p

    rgba = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], np.uint8)
    out = read_image(save(rgba, "rgba.png"))
    assert out.shape == (1, 3, 3)
    assert out[0, 0].tolist() == [255, 255, 255]             # fully transparent -> white
    assert out[0, 1].tolist() == [0, 0, 255]                 # opaque unchanged
    assert all(abs(v - 127) <= 1 for v in out[0, 2])         # half-transparent black on white

    la = Image.fromarray(np.array([[0, 200]], np.uint8), "L").convert("LA")
    la.putalpha(Image.fromarray(np.array([[255, 0]], np.uint8), "L"))
    la.save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png").tolist() == [[[0, 0, 0], [255, 255, 255]]]

    assert read_image(save(np.array([[0, 200]], np.uint8), "gray.png")).tolist() == \
        [[[0, 0, 0], [200, 200, 200]]]

    g16 = save(np.array([[0, 65535, 257 * 100, 32896]], np.uint16), "g16.png")
    with Image.open(g16) as im:
        assert im.mode.startswith("I")
    assert read_image(g16)[0, :, 0].tolist() == [0, 255, 100, 128]          # scaled, not clipped
    dark16 = save(np.array([[0, 200, 514]], np.uint16), "dark16.png")       # a dark 16-bit image stays dark
    assert read_image(dark16)[0, :, 0].tolist() == [0, 1, 2]

    pal = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    pal.putpalette([10, 20, 30, 40, 50, 60])
    pal.save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").tolist() == [[[10, 20, 30], [40, 50, 60]]]
    pal.save(tmp_path / "pal_t.png", transparency=0)
    assert read_image(tmp_path / "pal_t.png").tolist() == [[[255, 255, 255], [40, 50, 60]]]

    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 255))
    cmyk.save(tmp_path / "cmyk.jpg")
    assert read_image(tmp_path / "cmyk.jpg").max() < 10                      # black

    tall = Image.fromarray(np.zeros((1, 3, 3), np.uint8))                    # 3 wide, 1 high
    exif = Image.Exif()
    exif[0x0112] = 6                                                         # orientation: rotate 90
    tall.save(tmp_path / "rot.jpg", exif=exif)
    assert read_image(tmp_path / "rot.jpg").shape == (3, 1, 3)


def test_read_image_errors(tmp_path):
    good = write_image(np.full((16, 16, 3), 9, np.uint8), tmp_path / "good.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ValueError, match="truncated.png"):
        read_image(truncated)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="garbage.jpg"):
        read_image(garbage)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="directory"):
        read_image(tmp_path)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_process_writes_and_reads_videos_after_its_parent_did(tmp_path):
    """PyAV 17+ converts pixel formats on a pool of threads that its conversion context keeps between frames; a
    child forked after the parent converted once inherited the context without the threads and waited for them for
    ever (PyAV 18.1.1; launch_local(start_method="fork") after a training run hung so). openwan asks for one thread."""
    from serve_helpers import wait_for
    clip = smooth_clip(frames=3)
    read_video(write_video(clip, tmp_path / "parent.mp4"))
    pid = os.fork()
    if pid == 0:                                        # the child: exit 0 once it has written and read one
        code = 1
        try:
            code = int(not np.array_equal(read_video(write_video(clip, tmp_path / "child.mp4"))[0],
                                          read_video(tmp_path / "parent.mp4")[0]))
        finally:
            os._exit(code)

    def finished():
        done, status = os.waitpid(pid, os.WNOHANG)
        return (status,) if done else None

    try:                                                # the child needs well under a second; a hang never ends
        (status,) = wait_for(finished, 60, what="a process forked after a video was written to write its own "
                                                "(it hangs on PyAV's conversion threads)")
    except AssertionError:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child's video differs or it failed"
