"""`openwan serve` jobs the OpenAI way: /v1/videos submit, status, content, list, cancel, delete (tiny models)."""
import json
import threading

import numpy as np
import pytest
from serve_helpers import PROMPT, Running, call, jcall, multipart, png_bytes, wait_done, wait_for

from openwan.pipelines import load_pipeline
from openwan.pipelines.job import duration_text
from openwan.testing import make_tiny_checkpoint
from openwan.video import read_video


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "t2v", "tiny-t2v")


def tiny(ckpt):
    return load_pipeline(ckpt, variant="tiny-t2v", progress=False)


@pytest.fixture()
def server(ckpt, tmp_path):
    r = Running(tiny(ckpt), tmp_path / "out")
    yield r
    r.close()


def test_submit_poll_fetch_list_and_delete(server, tmp_path):
    base = server.base
    s, v = jcall(base + "/v1/videos", {"prompt": PROMPT, "seed": 5, "sample_steps": 3, "size": "32x32",
                                       "seconds": "0.3"})
    assert s == 200 and v["object"] == "video" and v["status"] == "queued" and v["progress"] == 0, v
    assert v["id"].startswith("video_") and isinstance(v["created_at"], int)
    assert v["request"]["frame_num"] == 5                           # 0.3 s at 16 fps -> 5 frames (4n+1)
    done = wait_done(base, v["id"])
    assert done["status"] == "completed" and done["progress"] == 100 and done["error"] is None, done
    assert done["settings"]["seed"] == 5 and done["settings"]["size"] == "32*32" and done["size"] == "32x32"
    assert done["url"] == f"/v1/videos/{v['id']}/content" and done["attempts"] == 1
    s, data, h = call(base + done["url"])
    assert s == 200 and h["Content-Type"] == "video/mp4" and data[4:8] == b"ftyp"
    f = tmp_path / "v.mp4"
    f.write_bytes(data)
    frames = read_video(f)[0]
    assert frames.shape[:3] == (5, 32, 32)
    # the same request through the pipeline directly gives the same frames
    direct = server.srv.service.pipe(PROMPT, seed=5, sample_steps=3, size="32*32", frame_num=5,
                                     output_path=tmp_path / "d.mp4")
    assert np.array_equal(frames, read_video(direct.path)[0])
    # a byte range, as <video> asks
    s, part, h = call(base + done["url"], headers={"Range": "bytes=0-99"})
    assert s == 206 and part == data[:100] and h["Content-Range"] == f"bytes 0-99/{len(data)}"

    # list, paged (newest first)
    ids = [v["id"]] + [jcall(base + "/v1/videos", {"prompt": f"{PROMPT} {i}", "sample_steps": 1,
                                                  "size": "32x32", "frame_num": 1})[1]["id"] for i in range(3)]
    for i in ids:
        wait_done(base, i)
    s, page = jcall(base + "/v1/videos?limit=2")
    assert s == 200 and page["object"] == "list" and [x["id"] for x in page["data"]] == ids[::-1][:2]
    assert page["has_more"] and page["last_id"] == ids[2]
    s, page2 = jcall(base + f"/v1/videos?limit=2&after={page['last_id']}")
    assert [x["id"] for x in page2["data"]] == ids[1::-1] and not page2["has_more"]
    s, _, h = call(base + f"/v1/videos/{ids[1]}/content")
    assert s == 200 and h["Content-Type"] == "image/png"                # one frame: a PNG

    # delete a finished job: its files go
    out = tmp_path / "out"
    assert (out / f"{v['id']}.mp4").exists()
    s, d = jcall(base + f"/v1/videos/{v['id']}", method="DELETE")
    assert s == 200 and d == {"id": v["id"], "object": "video.deleted", "deleted": True}
    assert not list(out.glob(f"{v['id']}*")) and jcall(base + f"/v1/videos/{v['id']}")[0] == 404
    assert call(base + f"/v1/videos/{v['id']}/content")[0] == 404


def test_eta_seconds_is_the_time_left_at_the_rate_so_far():
    from openwan.serve.service import eta_seconds
    job = {"status": "in_progress", "started_at": 1000.0, "progress": 25}
    assert eta_seconds(job, 1030.0) == 90                               # 25% in 30 s: 75% in 90 s more
    assert eta_seconds(dict(job, progress=0), 1030.0) is None           # before its first step
    assert eta_seconds(dict(job, status="completed", progress=100), 1030.0) is None
    assert eta_seconds(dict(job, status="queued", started_at=None, progress=0), 1030.0) is None
    assert eta_seconds(job, 990.0) == 0                                 # a clock set back: never negative


def test_cancel_a_running_and_a_queued_job(server):
    base = server.base
    long = {"prompt": PROMPT, "sample_steps": 1000, "size": "32x32", "frame_num": 5}
    a = jcall(base + "/v1/videos", long)[1]
    b = jcall(base + "/v1/videos", long)[1]
    wait_for(lambda: jcall(base + f"/v1/videos/{a['id']}")[1]["progress"] > 0, what="progress")
    running, queued = (jcall(base + f"/v1/videos/{x['id']}")[1] for x in (a, b))
    assert isinstance(running["eta_seconds"], int) and running["eta_seconds"] >= 0, running   # time left to denoise
    assert running["eta_text"] == duration_text(running["eta_seconds"]), running                # as the CLI writes it
    assert queued["eta_seconds"] is None and queued["eta_text"] is None, queued
    s, ca = jcall(base + f"/v1/videos/{a['id']}", method="DELETE")      # stops at the next step
    assert s == 200 and ca["status"] == "cancelled" and ca["deleted"] is False, ca
    assert 0 < ca["progress"] < 100 and ca["error"]["code"] == "cancelled"
    s, cb = jcall(base + f"/v1/videos/{b['id']}", method="DELETE")
    assert cb["status"] in ("cancelled",), cb                           # queued or just started: cancelled
    assert call(base + f"/v1/videos/{a['id']}/content")[0] == 409
    assert not list(server.srv.service.folder.glob("video_*.mp4"))     # nothing half-written
    # a new job still runs after the cancels
    c = jcall(base + "/v1/videos", {"prompt": PROMPT, "sample_steps": 2, "size": "32x32", "frame_num": 1})[1]
    assert wait_done(base, c["id"])["status"] == "completed"


def test_a_failing_job_reports_its_error(server):
    base = server.base
    # 48x48 is a multiple of 16 but not a tiny-t2v size: the pipeline refuses it when it runs
    v = jcall(base + "/v1/videos", {"prompt": PROMPT, "size": "48x48", "frame_num": 1})[1]
    done = wait_done(base, v["id"])
    assert done["status"] == "failed" and "48*48" in done["error"]["message"], done
    s, r = jcall(base + "/generate", {"prompt": PROMPT, "size": "48x48", "frame_num": 1})
    assert s == 400 and "48*48" in r["error"]


def test_bounded_queue_answers_429_with_retry_after(ckpt, tmp_path):
    r = Running(tiny(ckpt), tmp_path / "out", max_queue=2)
    try:
        long = {"prompt": PROMPT, "sample_steps": 1000, "size": "32x32", "frame_num": 5}
        first = jcall(r.base + "/v1/videos", long)[1]
        wait_for(lambda: jcall(r.base + f"/v1/videos/{first['id']}")[1]["status"] == "in_progress")
        queued = [jcall(r.base + "/v1/videos", long)[1]["id"] for _ in range(2)]
        s, body, h = call(r.base + "/v1/videos", long)
        assert s == 429 and int(h["Retry-After"]) >= 1 and "queue is full" in json.loads(body)["error"]
        assert len(jcall(r.base + "/v1/videos?limit=100")[1]["data"]) == 3   # the refused one is not stored
        for i in [first["id"], *queued]:
            jcall(r.base + f"/v1/videos/{i}", method="DELETE")
    finally:
        r.close()


def test_two_workers_many_clients_no_job_lost_or_duplicated(ckpt, tmp_path):
    r = Running([tiny(ckpt), tiny(ckpt)], tmp_path / "out")
    try:
        ids, errors = [], []

        def client(k):
            for i in range(4):
                s, v = jcall(r.base + "/v1/videos", {"prompt": f"{PROMPT} {k} {i}", "sample_steps": 1,
                                                     "size": "32x32", "frame_num": 1, "seed": 10 * k + i})
                (ids if s == 200 else errors).append(v)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors and len(ids) == 20 and len({v["id"] for v in ids}) == 20
        done = [wait_done(r.base, v["id"]) for v in ids]
        assert all(d["status"] == "completed" and d["attempts"] == 1 for d in done)
        assert {d["settings"]["seed"] for d in done} == {10 * k + i for k in range(5) for i in range(4)}
        assert {d["worker"] for d in done} <= {"0:cpu", "1:cpu"}
        files = sorted(p.name for p in (tmp_path / "out").glob("video_*.png"))
        assert files == sorted(f"{v['id']}.png" for v in ids)             # one file per job, none twice
        assert r.srv.service.store.counts()["completed"] == 20
    finally:
        r.close()


def test_i2v_takes_the_image_as_a_multipart_upload(tmp_path):
    ck = make_tiny_checkpoint(tmp_path / "i2v", "tiny-i2v")
    r = Running(load_pipeline(ck, variant="tiny-i2v", progress=False), tmp_path / "out")
    try:
        body, ctype = multipart({"prompt": PROMPT, "seconds": "0.3", "size": "64x32", "sample_steps": "2",
                                 "seed": "3"}, {"input_reference": ("cat.png", png_bytes())})
        s, v = jcall(r.base + "/v1/videos", raw=body, headers={"Content-Type": ctype})
        assert s == 200 and v["status"] == "queued", v
        done = wait_done(r.base, v["id"])
        assert done["status"] == "completed" and done["settings"]["seed"] == 3, done
        assert done["request"]["image"].endswith(f"uploads/{v['id']}_input_reference.png")
        assert jcall(r.base + "/health")[1]["video_fields"] == ["extend"]   # from a video's last frame
        # a broken image, a non-number in a number field: 400 naming the field, nothing queued
        for fields, files, msg in [({"prompt": PROMPT}, {"input_reference": ("x.png", b"not a png")},
                                    "'input_reference' is not a readable image"),
                                   ({"prompt": PROMPT, "seed": "abc"}, {}, "'seed' must be an integer")]:
            body, ctype = multipart(fields, files)
            s, e = jcall(r.base + "/v1/videos", raw=body, headers={"Content-Type": ctype})
            assert s == 400 and msg in e["error"], e
        assert len(jcall(r.base + "/v1/videos")[1]["data"]) == 1
        assert len(list((tmp_path / "out" / "uploads").iterdir())) == 1  # the refused uploads were not kept
        s, d = jcall(r.base + f"/v1/videos/{v['id']}", method="DELETE")
        assert d["deleted"] and not list((tmp_path / "out" / "uploads").iterdir())
        # a video to extend instead of the image: its last frame is the picture, its frames the output's first
        from openwan.video import write_video
        src = tmp_path / "clip.mp4"
        write_video(iter([np.full((5, 32, 64, 3), 90, np.uint8)]), src, fps=16)
        body, ctype = multipart({"prompt": PROMPT, "frame_num": "9", "size": "64x32", "sample_steps": "2"},
                                {"extend": ("clip.mp4", src.read_bytes())})
        s, v = jcall(r.base + "/v1/videos", raw=body, headers={"Content-Type": ctype})
        assert s == 200, v
        done = wait_done(r.base, v["id"])
        assert done["status"] == "completed" and done["settings"]["extension"]["kept"] == 5, done
        assert done["settings"]["frame_num"] == 9 and "image" not in done["request"]
    finally:
        r.close()


def test_a_video_to_extend_uploads_with_the_form(server, tmp_path):
    """A multipart "extend" file: kept under uploads/ once PyAV reads it, the job continues it to frame_num frames
    (its frames first, as sent), deleting the job deletes the upload; a file that is not a video is a 400."""
    from openwan.video import write_video
    src = tmp_path / "clip.mp4"
    ramp = np.linspace(0, 255, 64)[None, None, :, None] + 20 * np.arange(9)[:, None, None, None]
    frames = np.broadcast_to(ramp % 256, (9, 32, 64, 3)).astype(np.uint8)    # smooth: the MP4 keeps it closely
    write_video(iter([frames]), src, fps=16)
    body, ctype = multipart({"prompt": PROMPT, "frame_num": "17", "sample_steps": "2", "seed": "3"},
                            {"extend": ("clip.mp4", src.read_bytes())})
    s, v = jcall(server.base + "/v1/videos", raw=body, headers={"Content-Type": ctype})
    assert s == 200, v
    done = wait_done(server.base, v["id"])
    assert done["status"] == "completed", done
    upload = done["request"]["extend"]
    assert upload.endswith(f"uploads/{v['id']}_extend.mp4")
    assert done["settings"]["long_video"]["extend"]["kept"] == 9
    out, _ = read_video(tmp_path / "out" / f"{v['id']}.mp4")
    sent, _ = read_video(src)
    assert out.shape[0] == 17 and np.abs(out[:9].astype(int) - sent.astype(int)).mean() < 8   # its frames, re-encoded
    # (a decoded copy through the tiny random VAE would be noise, tens of levels away)
    assert jcall(server.base + "/health")[1]["video_fields"] == ["extend"]
    body, ctype = multipart({"prompt": PROMPT}, {"extend": ("x.mp4", b"not a video")})
    s, e = jcall(server.base + "/v1/videos", raw=body, headers={"Content-Type": ctype})
    assert s == 400 and "'extend' is not a readable video" in e["error"], e
    s, d = jcall(server.base + f"/v1/videos/{v['id']}", method="DELETE")
    assert d["deleted"] and not list((tmp_path / "out" / "uploads").iterdir())


def test_the_page_is_served(server):
    s, body, h = call(server.base + "/")
    assert s == 200 and h["Content-Type"].startswith("text/html")
    page = body.decode()
    assert "/v1/videos" in page and 'id="prompt"' in page and "<video" not in page.split("<script>")[0]
    assert "http://" not in page and "https://" not in page                 # nothing fetched from elsewhere


def test_a_restart_requeues_the_running_job_and_removes_what_a_kill_left(ckpt, tmp_path):
    """The store as a kill -9 leaves it (a job in_progress, temp files, an orphan upload), then a new server."""
    from openwan.serve.jobs import JobStore
    out = tmp_path / "out"
    store = JobStore(out)
    a = store.add({"prompt": PROMPT, "sample_steps": 2, "size": "32*32", "frame_num": 1})
    b = store.add({"prompt": PROMPT + " b", "sample_steps": 2, "size": "32*32", "frame_num": 1})
    c = store.add({"prompt": PROMPT + " c", "sample_steps": 2, "size": "32*32", "frame_num": 1})
    assert store.claim("old")["id"] == a["id"] and store.claim("old")["id"] == b["id"]
    store.cancel(b["id"])                                            # cancel asked, then the kill
    store.close()
    (out / "uploads").mkdir()
    left = [out / f".{a['id']}.png.x1.png.tmp", out / "uploads" / f".{a['id']}_image.png.x2.png.tmp",
            out / "uploads" / "video_0123456789abcdef01234567_input_reference.png"]
    for p in left:
        p.write_bytes(b"partial")
    r = Running(tiny(ckpt), out)
    try:
        assert r.srv.service.requeued == [a["id"]] and sorted(r.srv.service.removed_temp) == sorted(p.name for p in left)
        assert not any(p.exists() for p in left)
        assert wait_done(r.base, a["id"])["attempts"] == 2 and wait_done(r.base, c["id"])["status"] == "completed"
        assert jcall(r.base + f"/v1/videos/{b['id']}")[1]["status"] == "cancelled"
    finally:
        r.close()


def test_an_upload_over_the_pixel_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    ck = make_tiny_checkpoint(tmp_path / "i2v", "tiny-i2v")
    monkeypatch.setenv("OPENWAN_MAX_IMAGE_PIXELS", str(64 * 32 - 1))  # one pixel under the image we send
    r = Running(load_pipeline(ck, variant="tiny-i2v", progress=False), tmp_path / "out")
    try:
        body, ctype = multipart({"prompt": PROMPT}, {"input_reference": ("big.png", png_bytes(64, 32))})
        s, e = jcall(r.base + "/v1/videos", raw=body, headers={"Content-Type": ctype})
        assert s == 400 and "input_reference is 64x32" in e["error"] and "OPENWAN_MAX_IMAGE_PIXELS" in e["error"], e
        assert not list((tmp_path / "out").glob("uploads/*")) and not jcall(r.base + "/v1/videos")[1]["data"]
    finally:
        r.close()
