"""The demo world's looping motions (bouncing, circling: openwan.demo.world), which go on for any length, and the
detector on them (openwan.demo.detect); the rest of the world is tests/test_demo_world.py."""
import dataclasses
import itertools

import numpy as np
import pytest

from openwan.demo import detect as D
from openwan.demo import world as W


def test_classic_motions_draw_the_clips_of_the_classic_world():
    # Seeds 0-3 of the world before the looping motions were added (values printed by that version of
    # make_clip): restricted to CLASSIC_MOTIONS, a seed still gives the same clip (the shipped model's recipe).
    before = {0: (("purple", "triangle", "shrinking"), 0.21678798738866653, 0.6835097545485008,
                  "a large purple triangle contracting"),
              1: (("cyan", "circle", "growing"), 0.7324425690588428, 0.4025110116821895,
                  "a small cyan circle growing larger"),
              2: (("purple", "triangle", "down"), 0.5664848737217365, 0.18930368438648731,
                  "purple triangle sliding down"),
              3: (("purple", "triangle", "left"), 0.7349021817260697, 0.2274238017895472,
                  "a purple triangle sliding left")}
    for seed, (attrs, x0, y0, caption) in before.items():
        clip = W.make_clip(seed, motions=W.CLASSIC_MOTIONS)
        o = clip.objects[0]
        assert (tuple(o.attributes), o.x0, o.y0, clip.caption) == (attrs, x0, y0, caption)
    ds = W.WorldDataset(200, seed=2, motions=W.LOOPING_MOTIONS, n_objects=2)
    assert {ds.clip(i).objects[0].motion for i in range(len(ds))} == set(W.LOOPING_MOTIONS)
    with pytest.raises(ValueError, match="unknown motion 'hopping'"):
        W.make_clip(0, motions=("hopping",))


def test_looping_motions_go_on_for_any_length():
    t = np.arange(0, 10 * 16 + 1) / 16                  # 161 frames at the clip's own speed (t in clip lengths)
    rng = np.random.default_rng(4)
    first_turns = []
    for _ in range(200):
        motion = W.LOOPING_MOTIONS[int(rng.integers(3))]
        o = W.sample_clip(rng, split="all", attributes=[("red", "square", motion)]).objects[0]
        cx, cy = o.center(t)
        r = o.radius(t)
        assert np.all(r == o.r0)
        assert np.all(cx - r >= W.MARGIN - 1e-9) and np.all(cx + r <= 1 - W.MARGIN + 1e-9)
        assert np.all(cy - r >= W.MARGIN - 1e-9) and np.all(cy + r <= 1 - W.MARGIN + 1e-9)
        if motion == "circling":
            assert W.CIRCLE_PERIOD[0] <= o.period <= W.CIRCLE_PERIOD[1]
            # on its circle, turning clockwise on screen (y down: heading angle increasing) at a steady rate
            np.testing.assert_allclose(np.hypot(cx - o.x0, cy - o.y0), o.orbit, rtol=0, atol=1e-12)
            ang = np.unwrap(np.arctan2(cy - o.y0, cx - o.x0))
            np.testing.assert_allclose(np.diff(ang), 2 * np.pi / o.period / 16, rtol=1e-9)
            continue
        along, across = (cx, cy) if motion == "bounce_lr" else (cy, cx)
        assert np.all(across == across[0])
        lo, hi = o.r0 + W.MARGIN, 1 - o.r0 - W.MARGIN            # edge to edge
        assert along.min() >= lo - 1e-12 and along.max() <= hi + 1e-12
        ends = np.array([o.x0, o.x1] if motion == "bounce_lr" else [o.y0, o.y1])
        np.testing.assert_allclose(ends, [lo, hi], rtol=0, atol=1e-12)
        # constant speed (span per half period), reversals every half period, in every 17-frame clip
        speed = (hi - lo) / (o.period / 2)
        v = np.diff(along) * 16
        assert np.all((np.abs(np.abs(v) - speed) <= 1e-9 * speed) | (np.abs(v) < speed))   # < at the turns only
        turns = np.flatnonzero(np.sign(v[1:]) != np.sign(v[:-1])) + 1
        assert np.all(np.abs(np.diff(turns) - 8 * o.period) <= 1.0)
        assert W.BOUNCE_HALF_PERIOD[0] <= o.period / 2 <= W.BOUNCE_HALF_PERIOD[1] <= 1.0
        assert all(np.any((turns >= k) & (turns <= k + 16)) for k in range(0, 145, 16))
        first_turns.append(turns[0] / 16)
    # random phases: the first reversal falls anywhere in the first clip, near its start and near its end too
    assert min(first_turns) < 0.1 and max(first_turns) > 0.8


def test_render_at_the_native_speed_continues_the_clip():
    clip = W.make_clip(5, attributes=[("yellow", "circle", "bounce_ud")])
    long = W.render_clip(clip, frames=49, native_frames=17)
    assert long.shape == (49, 64, 64, 3)
    assert np.array_equal(long[:17], W.render_clip(clip, frames=17))       # t = k / 16 either way
    later = W.Clip((dataclasses.replace(clip.objects[0], phase=clip.objects[0].phase + 32 / 16 / clip.objects[0].period),),
                   "")
    assert np.array_equal(long[32:49], W.render_clip(later, frames=17))   # the same path, 32 frames on
    with pytest.raises(ValueError, match="native_frames must be >= 2"):
        W.render_clip(clip, frames=5, native_frames=1)


@pytest.mark.parametrize("prompt,attrs", [
    ("a red circle bouncing left and right", ("red", "circle", "bounce_lr")),
    ("Blue box going back and forth", ("blue", "square", "bounce_lr")),
    ("a green triangle bouncing up and down", ("green", "triangle", "bounce_ud")),
    ("a white ball bouncing between the top and bottom", ("white", "circle", "bounce_ud")),
    ("a purple square moving in a circle", ("purple", "square", "circling")),
    ("the cyan dot going round and round", ("cyan", "circle", "circling")),
    ("a yellow triangle circling clockwise", ("yellow", "triangle", "circling")),
])
def test_looping_prompts_parse(prompt, attrs):
    assert W.parse_prompt(prompt) == attrs
    assert W.understand(prompt) == (attrs, [])
    assert W.parse_objects(prompt + " and a red square moving up") == [attrs, ("red", "square", "up")]


def test_detector_on_long_looping_videos():
    # 161 frames at the clip's own speed: the path-level features see the looping motion over any length.
    for i, motion in enumerate(W.LOOPING_MOTIONS):
        clip = W.make_clip(40 + i, attributes=[("green", "square", motion)])
        det = D.detect(W.render_clip(clip, frames=161, native_frames=17))
        assert det["motion"] == motion, (motion, det["measurements"]["path"])
    # a path turning counter-clockwise is not "circling" (the world circles clockwise)
    o = W.make_clip(44, attributes=[("green", "square", "circling")]).objects[0]
    v = W.render_clip(W.Clip((o,), ""), frames=33, native_frames=17)[::-1]
    assert D.detect(v)["motion"] != "circling" and D.path_features(*_track_xy(v))["turn"] < -np.pi


def _track_xy(frames):
    tr = D.track(frames)
    return tr["cx"] / 64, tr["cy"] / 64


def test_path_features_exact_paths():
    t = np.linspace(0, 1, 17)
    f = D.path_features(0.2 + 0.4 * t, np.full(17, 0.5))               # straight: range 0.4, no way back
    assert abs(f["range"][0] - 0.4) < 1e-12 and abs(f["back"][0]) < 1e-12 and f["range"][1] == 0
    assert abs(f["turn"]) < 1e-12 and D.looping_motion(f) is None
    x = 0.2 + 0.4 * (1 - np.abs(2 * t - 1))                             # out and back, 0.05 a frame
    f = D.path_features(x, np.full(17, 0.5))
    # the running median of 3 cuts the one-frame peak: range = back = 0.4 - 0.05
    assert abs(f["back"][0] - 0.35) < 1e-12 and abs(f["range"][0] - 0.35) < 1e-12
    assert D.looping_motion(f) == "bounce_lr"
    f = D.path_features(np.full(17, 0.5), x)
    assert D.looping_motion(f) == "bounce_ud"
    a = 2 * np.pi * 0.6 * t                                             # 0.6 turn clockwise on screen
    f = D.path_features(0.5 + 0.25 * np.cos(a), 0.5 + 0.25 * np.sin(a))
    assert abs(f["turn"] - 2 * np.pi * 0.6) < 0.5 and D.looping_motion(f) == "circling"


def test_detector_on_17_frame_bounces():
    # A native-length clip shows a bounce when its reversal falls at frames 3-13; the detector says so.
    for i, motion in enumerate(("bounce_lr", "bounce_ud") * 5):
        o = W.make_clip(60 + i, attributes=[("blue", "circle", motion)]).objects[0]
        turn = 3 + i                                                   # frame of the far-end reversal
        phase = 0.5 - turn / 16 / o.period                             # at phase 0.5 it is at the far end
        frames = W.render_clip(W.Clip((dataclasses.replace(o, phase=phase),), ""), frames=17)
        det = D.detect(frames)
        assert det["motion"] == motion, (turn, det["measurements"]["path"])


def test_wide_captions_parse_back_and_cover_the_parsers_words():
    """The wide caption style (the recipe's --stage recaption): every caption it can write for a classic motion
    parses back to its attributes, it uses every word the parser accepts for those motions and every color and
    shape synonym, and the classic style draws from the rng exactly as before (clips stay functions of seeds)."""
    import re
    from openwan.demo.world_captions import _MOTION_WORDS
    n = 0
    for motion in W.CLASSIC_MOTIONS:
        phrases = W.caption_phrases(motion, wide=True)
        assert set(W.MOTION_PHRASES[motion]) < set(phrases)
        words = " | ".join(phrases)
        assert [w for w in _MOTION_WORDS[motion] if not re.search(rf"\b{re.escape(w)}\b", words)] == [], motion
        for i, (template, phrase) in enumerate(itertools.product(W.caption_templates(wide=True), phrases)):
            color = W.COLOR_NAMES[(i + n) % len(W.COLOR_NAMES)]
            shape = W.SHAPES[i % len(W.SHAPES)]
            for cw in (color,) + W.COLOR_SYNONYMS.get(color, ()):
                for sw in (shape,) + W.SHAPE_SYNONYMS[shape]:
                    text = template.format(color=cw, shape=sw, motion=phrase, size="")
                    assert W.parse_prompt(text) == (color, shape, motion), text
                    n += 1
    assert n > 1000
    rng = np.random.default_rng(0)
    drawn = {W.make_caption([W.Attributes("purple", "circle", "up")], rng, wide=True) for _ in range(2000)}
    assert {"magenta", "violet", "disc", "dot", "ball"} <= {w for c in drawn for w in c.split()}
    assert any(c.startswith("there is a") for c in drawn) and "a purple circle moving up" in drawn
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    obj = W.sample_clip(np.random.default_rng(1), attributes=[("cyan", "square", "left")]).objects[0]
    assert [W.make_caption([obj], a) for _ in range(50)] == [W.describe(obj, b) for _ in range(50)]


def test_paced_clips_keep_their_path_at_a_pace_of_their_own():
    """latents.paced: a looping object's period divided by one factor in [1/s, s] (log-uniform: both ends reached),
    its path otherwise the same (the same frames at the scaled times); a classic object untouched; a bad spread is
    a clear error."""
    from openwan.demo.latents import encode_latents, paced
    rng, spread, factors = np.random.default_rng(3), 1.6, []
    for i in range(300):
        motion = W.MOTIONS[i % len(W.MOTIONS)]
        clip = W.sample_clip(np.random.default_rng([9, i]), split="train", attributes=[("red", "square", motion)])
        out = paced(clip, rng, spread)
        o, p = clip.objects[0], out.objects[0]
        assert out.caption == clip.caption
        if motion not in W.LOOPING_MOTIONS:
            assert p == o
            continue
        f = o.period / p.period
        assert 1 / spread - 1e-12 <= f <= spread + 1e-12
        factors.append(f)
        t = np.linspace(0, 3, 49)
        np.testing.assert_allclose(np.stack(p.center(t)), np.stack(o.center(t * f)), rtol=0, atol=1e-12)
        assert dataclasses.replace(p, period=o.period) == o
    logs = np.log(factors) / np.log(spread)                 # uniform in [-1, 1]
    assert logs.min() < -0.8 and logs.max() > 0.8 and abs(logs.mean()) < 0.2
    with pytest.raises(ValueError, match="pace_spread must be >= 1"):
        encode_latents(None, pace_spread=0.5)
