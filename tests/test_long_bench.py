"""`openwan bench long`: the drift metrics on synthetic videos with known answers, and a short real run."""
import json

import numpy as np
import pytest

from openwan.demo import detect
from openwan.demo import long_bench as lb
from openwan.demo.world import BACKGROUND, COLORS

SPANS_49 = [[0, 5], [4, 9], [8, 13]]          # the demo's plan for 49 frames: 13 latent frames, window 5, overlap 1
# Centroids are sums of pixel centres over the area (~100 px, coordinates < 64) in float64: exact to far below
# 1e-9 px (64 * 100 values summed at fp64 eps 2.2e-16 round to ~1e-12).
TOL = 1e-9


def square_video(xs, frames=None, color=COLORS["red"], side=10, y=20, size=64):
    """uint8 [F, size, size, 3]: a flat square of ``side`` pixels with its left edge at xs[i] in frame i."""
    n = len(xs) if frames is None else frames
    v = np.empty((n, size, size, 3), np.uint8)
    v[:] = BACKGROUND
    for i, x in enumerate(xs):
        c = color(i) if callable(color) else color
        v[i, y:y + side, x:x + side] = c
    return v


def test_plan_frames_cover_the_video_and_put_seams_on_the_shared_latents():
    windows, seams = lb.plan_frames(SPANS_49, 49)
    assert windows == [(0, 17), (13, 33), (29, 49)]          # latent 4 = frames 13..16, latent 8 = 29..32
    assert seams == [(13, 21), (29, 37)]                      # shared latent + the next one
    covered = set()
    for a, b in windows:
        covered |= set(range(a, b))
    assert covered == set(range(49))
    assert lb.pixel_frames(0, 1, 17) == (0, 1) and lb.pixel_frames(1, 5, 17) == (1, 17)


def test_a_square_moving_one_pixel_a_frame():
    v = square_video([5 + i for i in range(49)])
    tr = detect.track(v)
    assert tr["found"].all() and np.all(tr["area"] == 100)
    assert np.allclose(np.diff(tr["cx"]), 1.0, rtol=0, atol=TOL) and np.all(tr["cx"][0] == 10.0)
    m = lb.video_metrics(tr, SPANS_49)
    assert m["found"] == 1.0
    for w in m["windows"]:
        assert abs(w["speed"] - 1.0) <= TOL and w["velocity"] == [1.0, 0.0]
        assert w["rgb"] == [float(c) for c in COLORS["red"]] and w["color"] == "red"
    assert m["color_drift"] == 0.0 and m["color_kept"] and m["size_ratio"] == 1.0
    assert m["seam_jumps"] == [1.0, 1.0] and m["within_max"] == 1.0 and m["seam_over_within"] == 1.0
    assert m["speed_ratio"] == 1.0 and m["axis"] == "x" and m["reversals"] == 0
    assert lb.meets(m) == {"found": True, "color": True, "size": True, "seams": True, "speed": True}


def test_an_injected_jump_is_found_at_its_seam():
    xs = [5 + i + (8 if i >= 33 else 0) for i in range(49)]   # frame 32 -> 33 jumps 9 px: seam 1 (frames 29-36)
    m = lb.video_metrics(detect.track(square_video(xs)), SPANS_49)
    assert m["seam_jumps"] == [1.0, 9.0] and m["within_max"] == 1.0 and m["seam_over_within"] == 9.0
    assert not lb.meets(m)["seams"]
    xs = [5 + i + (8 if i >= 24 else 0) for i in range(49)]   # frame 23 -> 24: inside window 1, no seam
    m = lb.video_metrics(detect.track(square_video(xs)), SPANS_49)
    assert m["seam_jumps"] == [1.0, 1.0] and m["within_max"] == 9.0 and lb.meets(m)["seams"]


def test_a_bouncing_square_reverses_where_it_turns():
    xs = [5 + (i if i <= 20 else 40 - i if i <= 40 else i - 40) for i in range(49)]   # turns at frames 20, 40
    m = lb.video_metrics(detect.track(square_video(xs)), SPANS_49)
    assert m["reversal_frames"] == [20, 40] and m["reversals"] == 2
    assert all(abs(w["speed"] - 1.0) <= TOL for w in m["windows"])
    assert m["windows"][0]["velocity"] == [1.0, 0.0]           # frames 0..16: all to the right
    assert m["reversal_interval"] == 20.0 and m["largest_gap"] == 20.0     # 0->20, 20->40, 40->48
    assert lb.meets(m, "bounce_lr")["bouncing"] and not lb.meets(m, "bounce_ud")["bouncing"]   # wrong axis
    assert "bouncing" not in lb.meets(m, "right")
    # jitter smaller than the swing (10% of 64 px) is not a reversal
    assert lb.reversals(np.array([0.0, 3, 0, 3, 0, 3, 0]), 6.4) == []
    assert lb.reversals(np.array([0.0, np.nan, 10, 2, np.nan, 12]), 6.4) == [2, 3]


def test_color_and_size_drift_and_lost_frames():
    red, dim = np.array(COLORS["red"]), np.array(COLORS["red"]) - (30, 0, 0)      # 30 levels darker red
    v = square_video([20] * 49, color=lambda i: dim if i >= 29 else red)
    v[29:, 20:30, 30:35] = dim                                  # the last window's square is 10 x 15: 1.5x area
    v[5] = BACKGROUND                                           # one frame without the object
    tr = detect.track(v)
    m = lb.video_metrics(tr, SPANS_49)
    assert not tr["found"][5] and np.isnan(tr["cx"][5]) and m["found"] == 48 / 49
    assert m["color_drift"] == 30.0 and m["color_first"] == m["color_last"] == "red" and m["color_kept"]
    assert m["size_ratio"] == 1.5 and not lb.meets(m)["size"] and lb.meets(m)["color"]


def test_an_object_lost_in_the_last_window_fails_found_and_color():
    v = square_video([20] * 49)
    v[29:] = BACKGROUND                                         # gone from frame 29 on: the whole last window
    m = lb.video_metrics(detect.track(v), SPANS_49)
    assert m["found"] == 29 / 49 and m["windows"][-1]["color"] is None and not m["color_kept"]
    assert np.isnan(m["color_drift"]) and np.isnan(m["size_ratio"])
    assert lb.meets(m) == {"found": False, "color": False, "size": False, "seams": True, "speed": False}
    rec = {"method": "windows", "seconds": 1.0, "metrics": m, "meets": lb.meets(m)}
    s = lb.summarize([rec, dict(rec, metrics=dict(m, color_drift=5.0))])["windows"]
    assert s["color_drift_worst"] == 5.0 and s["found_worst"] == round(29 / 49, 4) and s["meets"]["found"] == 0


def test_short_run_through_the_pipeline_and_the_cli(tmp_path, capsys):
    from openwan.cli import main
    from openwan.demo.bench import list_benchmarks
    out = tmp_path / "long.json"
    assert main(["bench", "long", "--frames", "65", "--steps", "2", "--seeds", "1", "--quiet", "--overlap", "1",
                 "--prompts", "a red circle moving to the right", "--json", str(out), "--per_window"]) == 0
    text = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert [v["method"] for v in r["videos"]] == ["windows", "continue", "none"]
    for v in r["videos"]:
        m = v["metrics"]
        assert v["spans"] == [[0, 9], [8, 17]] and m["frames"] == 65 and len(m["windows"]) == 2   # native 9 latent
        assert 0.0 <= m["found"] <= 1.0 and len(m["seam_jumps"]) == 1
        if m["found"] > 0.5:
            assert m["color_drift"] >= 0 and m["size_ratio"] > 0 and m["within_max"] >= 0
    assert set(r["summary"]) == {"windows", "continue", "none"}
    assert "seam/within" in text and "windows" in text
    for method, s in r["summary"].items():              # each method's line ends with its total of targets met
        assert f"; {sum(s['meets'].values())} of {sum(s['judged'].values())} targets" in text
    assert r["settings"]["long_expert"] == "default" and r["settings"]["first_seed"] == 0
    assert "openwan bench long" in list_benchmarks()
    # a video of the native length has no windows to measure: refused, with a length to use
    assert main(["bench", "long", "--frames", "33", "--seeds", "1", "--quiet"]) == 2
    assert "--frames 33 is not past the model's native 33 frames" in capsys.readouterr().err


def test_the_report_names_each_videos_missed_targets():
    rec = [{"method": "continue", "prompt": "a purple circle circling", "seed": 1,
            "meets": {"found": True, "size": False, "speed": False}},
           {"method": "continue", "prompt": "a red circle moving to the right", "seed": 0, "meets": {"found": True}}]
    text = lb.format_report({}, {}, rec)
    assert text.endswith("targets missed:\n  continue  'a purple circle circling' seed 1: size, speed")
    assert "targets missed" not in lb.format_report({}, {}, rec[1:])


def test_the_distilled_student_runs_at_its_own_steps(tmp_path):
    out = tmp_path / "s.json"
    assert lb.main(["--model", "demo-4step", "--frames", "49", "--seeds", "1", "--quiet", "--methods", "continue",
                    "--prompts", "a red circle moving to the right", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r["settings"]["checkpoint"], r["settings"]["steps"]) == ("demo-4step", 4)
    assert r["videos"][0]["metrics"]["frames"] == 49


def test_negative_prompt_guidance_and_solver_reach_every_video(tmp_path, monkeypatch):
    seen, real = [], lb.run_long_benchmark

    def run(pipe, prompts, seeds, methods, frames, **kw):
        seen.append({k: kw.get(k) for k in ("negative_prompt", "guide_scale", "sample_solver")})
        return real(pipe, prompts, seeds, methods, frames, **kw)
    monkeypatch.setattr(lb, "run_long_benchmark", run)
    out = tmp_path / "n.json"
    assert lb.main(["--frames", "49", "--steps", "2", "--seeds", "1", "--quiet", "--methods", "continue",
                    "--prompts", "a purple circle circling", "--negative_prompt", "a purple circle shrinking",
                    "--guide_scale", "3", "--solver", "euler", "--json", str(out)]) == 0
    assert seen == [{"negative_prompt": "a purple circle shrinking", "guide_scale": 3.0, "sample_solver": "euler"}]
    r = json.loads(out.read_text())
    assert (r["settings"]["negative_prompt"], r["settings"]["guide_scale"]) == ("a purple circle shrinking", 3.0)
    assert r["settings"]["solver"] == "euler"
    assert r["videos"][0]["metrics"]["frames"] == 49


def test_extending_the_worlds_clip_both_ways(tmp_path):
    """--extend: the world's own clip of the prompt (the native length) is the first window of every method's videos,
    exactly; openwan's extension, the i2v chain and the long video from the last frame are measured at their own
    seams."""
    from openwan.demo.long_bench import world_source
    out = tmp_path / "e.json"
    assert lb.main(["--extend", "--frames", "65", "--steps", "2", "--seeds", "1", "--quiet", "--long_refine", "0",
                    "--prompts", "a red square bouncing left and right", "--json", str(out),
                    "--out", str(tmp_path / "v")]) == 0
    r = json.loads(out.read_text())
    assert [v["method"] for v in r["videos"]] == ["extend", "i2v-chain", "last-frame"] and r["settings"]["extend"]
    ext, chain, last = r["videos"]
    assert ext["spans"] == [[0, 9], [7, 16], [8, 17]] and chain["spans"] == last["spans"] == [[0, 9], [8, 17]]
    source = world_source("a red square bouncing left and right", 0, 33, 128)
    from openwan.video import read_video
    for v in r["videos"]:
        assert v["metrics"]["frames"] == 65 and v["motion"] == "bounce_lr" and "bouncing" in v["meets"]
        frames, _ = read_video(v["video"])
        assert frames.shape[0] == 65
    from openwan.demo import detect
    first = r["videos"][0]["metrics"]["windows"][0]       # measured on the source's frames as rendered
    track = detect.track(source)
    assert first["frames"] == [0, 33] and first["found"] == float(track["found"].mean())


def test_video_to_video_of_the_worlds_long_clip(tmp_path):
    """--v2v: the world's own long clip (at its native clip's pace) re-rendered by each long-video method of v2v,
    measured at each call's own windows; continue+pass runs the refinement pass (v2v's default), continue does not."""
    out = tmp_path / "v.json"
    assert lb.main(["--v2v", "--frames", "65", "--steps", "2", "--seeds", "1", "--quiet",
                    "--prompts", "a red square bouncing left and right", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [v["method"] for v in r["videos"]] == ["continue", "continue+pass", "windows"] and r["settings"]["v2v"]
    cont, passed, win = r["videos"]
    assert cont["spans"] == passed["spans"] == [[0, 9], [7, 16], [8, 17]] and win["spans"] == [[0, 9], [4, 13], [8, 17]]
    assert all(v["metrics"]["frames"] == 65 and "bouncing" in v["meets"] for v in r["videos"])
    assert passed["metrics"]["windows"] != cont["metrics"]["windows"]       # the pass redrew the video
    from openwan.demo.long_bench import world_source
    src = world_source("a red square bouncing left and right", 0, 65, 128, 33)
    assert src.shape == (65, 128, 128, 3)
    with pytest.raises(ValueError, match="with --v2v the methods are continue, continue\\+pass, windows"):
        lb.main(["--v2v", "--methods", "extend"])


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        lb.main(["--seeds", "0"])
    with pytest.raises(ValueError, match="--ckpt_dir measures a demo checkpoint folder"):
        lb.main(["--model", "demo-4step", "--ckpt_dir", "somewhere"])
    with pytest.raises(ValueError, match="--first_seed must be >= 0"):
        lb.main(["--first_seed", "-1"])
    with pytest.raises(ValueError, match="with --extend the methods are extend, i2v-chain"):
        lb.main(["--extend", "--methods", "windows"])
    with pytest.raises(ValueError, match="i2v-chain extends by clips of 32 new frames: give --frames 65"):
        lb.main(["--extend", "--methods", "i2v-chain", "--frames", "61", "--steps", "1", "--seeds", "1", "--quiet",
                 "--prompts", "a red square bouncing left and right"])


def test_a_world_bounce_keeps_bouncing_and_one_that_stops_does_not():
    from openwan.demo import world
    from openwan.long_video import plan_windows
    spans = [list(sp) for sp in plan_windows(41, 5, 3).spans]               # 161 frames, the default plan
    clip = world.make_clip(3, attributes=[("red", "square", "bounce_lr")])
    v = world.render_clip(clip, frames=161, native_frames=17)
    m = lb.video_metrics(detect.track(v), spans)
    half = 8 * clip.objects[0].period                                          # frames per edge-to-edge run
    assert m["axis"] == "x" and abs(m["reversal_interval"] - half) <= 1.0
    assert m["reversals"] >= 160 // half - 1 and m["largest_gap"] <= half + 1
    assert abs(m["speed_ratio"] - 1.0) < 0.1 and all(lb.meets(m, "bounce_lr").values())
    still = v.copy()
    still[60:] = v[60]                                                         # stops at frame 60
    m2 = lb.video_metrics(detect.track(still), spans)
    assert m2["largest_gap"] >= 100 and not lb.meets(m2, "bounce_lr")["bouncing"]
    recs = [{"method": "windows", "seconds": 1.0, "metrics": x, "meets": lb.meets(x, mo)}
            for x, mo in ((m, "bounce_lr"), (m2, "bounce_lr"), (m, "right"))]
    s = lb.summarize(recs)["windows"]
    assert s["meets"]["bouncing"] == 1 and s["judged"]["bouncing"] == 2 and s["judged"]["found"] == 3
    assert lb.reversal_gaps([10], 50) == (pytest.approx(float("nan"), nan_ok=True), 39.0)


def test_reword_looping_replaces_only_the_bounces_phrases_with_ones_sharing_no_direction_word():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "reword_looping.py"
    spec = importlib.util.spec_from_file_location("reword_looping", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    caps = ["a red square bouncing left and right", "a video of a red box bouncing between the left and right edges"]
    out = mod.reword(caps, "bounce_lr", rng)
    for old, new in zip(caps, out):
        assert new != old and new.startswith(old.split(" bouncing")[0])
        assert not {"left", "right", "up", "down"} & set(new.split())
        assert any(new.endswith(p) for p in mod.REWORDED["bounce_lr"])
    ud = mod.reword(["a green circle bobbing up and down on a dark background"], "bounce_ud", rng)[0]
    assert ud.endswith("on a dark background") and not {"up", "down"} & set(ud.split())
    for caps, motion in ((["a red circle moving to the right"], "right"), (["a purple circle circling"], "circling")):
        assert mod.reword(caps, motion, rng) == caps
    with pytest.raises(ValueError, match="no bounce_lr phrase"):
        mod.reword(["a red square moving to the right"], "bounce_lr", rng)
