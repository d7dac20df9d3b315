"""Scenes composed of objects drawn one at a time (openwan.pipelines.compose): finding each object's latent tokens,
laying the objects out apart, merging the latents, and the demo pipeline's composed calls."""
import json

import numpy as np
import pytest
import torch

from openwan.pipelines import compose as C

BG = np.array([32, 32, 32], np.uint8)
TWO = "a red circle moving left and a blue square moving right"
ONE = "a red circle moving left"
KW = dict(sample_steps=2, seed=4, output_type="latent")


def _video(frames=9, size=32):
    return np.broadcast_to(BG, (frames, size, size, 3)).copy()


def test_object_tokens_are_the_cells_of_pixels_that_stand_out_from_the_background():
    v = _video()
    v[0, 8:16, 16:24] = (200, 40, 40)        # frame 0 (latent frame 0 alone): cell (1, 2)
    v[6, 7:9, 0:2] = (40, 200, 40)           # frame 6 (latent frame 2 = frames 5-8): straddles cells (0, 0), (1, 0)
    v[3, 20:30, 20:30] = BG + 20             # too faint to be an object (contrast < CONTRAST)
    m = C.object_tokens(v, temporal_ratio=4, spatial_ratio=8)
    assert m.shape == (3, 4, 4) and m.dtype == torch.bool
    want = torch.zeros(3, 4, 4, dtype=torch.bool)
    want[0, 1, 2] = want[2, 0, 0] = want[2, 1, 0] = True
    assert torch.equal(m, want)
    assert torch.equal(C.object_tokens(v[:1], 4, 8), want[:1])          # one frame (a picture): one latent frame
    v = _video() + 100                       # another background color: read from each frame, not assumed
    v[4, 24:32, 24:32] = (255, 255, 255)
    want = torch.zeros(3, 4, 4, dtype=torch.bool)
    want[1, 3, 3] = True
    assert torch.equal(C.object_tokens(v, 4, 8), want)


def _box(f=2, size=8, rows=(2, 4), cols=(2, 4)):
    m = torch.zeros(f, size, size, dtype=torch.bool)
    m[:, rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


def test_placement_takes_the_nearest_place_a_gap_away_inside_the_frame():
    occupied, mask = _box(), _box()
    assert C.placement(torch.zeros_like(occupied), mask) == (0, 0)          # nothing placed yet: stays
    dy, dx = C.placement(occupied, mask)
    # rows/cols 1-4 are blocked (the object and its gap); a move of 3 clears them; left and up leave the frame
    assert (dy, dx) == (0, 3)
    moved = torch.roll(mask, (dy, dx), dims=(1, 2))
    assert moved.sum() == mask.sum() and not (moved & C._grow(occupied, C.GAP)).any()
    # an object moving across the frame in time is checked frame by frame: here it may stay in its rows
    sweep = torch.zeros(2, 8, 8, dtype=torch.bool)
    sweep[0, 2:4, 2:4] = sweep[1, 2:4, 5:7] = True
    late = torch.zeros(2, 8, 8, dtype=torch.bool)
    late[1, 2:4, 2:4] = True                                   # where the other was, one latent frame later
    assert C.placement(sweep, late) == (0, 0)
    # nowhere free: the least overlapping move
    full = torch.ones(2, 8, 8, dtype=torch.bool)
    full[:, 6:, 6:] = False
    dy, dx = C.placement(full, _box(size=8, rows=(0, 1), cols=(0, 1)))
    assert (dy, dx) == (7, 7)


def test_compose_takes_each_later_object_from_its_moved_latent():
    m0, m1 = _box(), _box()
    z0 = torch.zeros(2, 2, 8, 8)
    z0[:, m0] = 5.0
    z1 = torch.full((2, 2, 8, 8), 0.25)                  # its own background, a little off
    z1[:, m1] = 7.0
    z1[:, :, 2:4, 4] = 3.0                               # its edge, in the token right of it
    out, moves = C.compose([z0, z1], [m0, m1])
    assert moves == [(0, 0), (0, 3)]
    assert (out[:, m0] == 5.0).all() and (out[:, :, 2:4, 5:7] == 7.0).all()
    assert (out[:, :, 2:4, 7] == 3.0).all()              # the edge stands out from its background: taken
    moved = torch.roll(m1, (0, 3), dims=(1, 2))
    rest = ~(m0 | moved)
    rest[:, 2:4, 7] = False
    assert (out[:, rest] == 0.0).all()                   # elsewhere the first run's (its background: 0, not 0.25)
    assert torch.equal(C.compose([z0], [m0])[0], z0)


def test_where_no_place_is_free_the_earlier_object_stays_in_front():
    m0 = torch.ones(1, 4, 4, dtype=torch.bool)
    m0[:, 3, 3] = False
    m1 = torch.zeros(1, 4, 4, dtype=torch.bool)
    m1[:, 0:2, 0:2] = True
    z0, z1 = torch.where(m0, 5.0, 0.0)[None], torch.where(m1, 7.0, 0.0)[None]
    out, moves = C.compose([z0, z1], [m0, m1])
    assert moves == [(0, 0), (2, 2)]                     # the least overlapping move: one token lands free
    assert (out[0, m0] == 5.0).all() and out[0, 0, 3, 3] == 7.0


def test_compose_frames_moves_later_objects_and_keeps_earlier_ones_in_front():
    a, b = _video(frames=2, size=16), _video(frames=2, size=16)
    a[:, 0:4, 0:4] = (250, 30, 30)                     # the first object, top left
    a[:, 4, 0:4] = (60, 36, 36)                         # its faint edge (under CONTRAST from the background)
    b[:, 0:4, 0:4] = (30, 30, 250)                      # the second, drawn at the same place ...
    out = C.compose_frames([a, b], [(0, 0), (1, 1)], spatial_ratio=8)      # ... and moved by a token each way
    assert (out[:, 0:4, 0:4] == (250, 30, 30)).all() and (out[:, 4, 0:4] == (60, 36, 36)).all()
    assert (out[:, 8:12, 8:12] == (30, 30, 250)).all()
    rest = np.ones((16, 16), bool)
    rest[0:5, 0:4] = rest[8:12, 8:12] = False
    assert (out[:, rest] == BG).all()
    over = C.compose_frames([a, b], [(0, 0), (0, 0)], spatial_ratio=8)      # overlapping: the first in front
    assert (over[:, 0:4, 0:4] == (250, 30, 30)).all()
    c = _video(frames=2, size=16)
    c[:, 4, 0:4] = (40, 40, 250)                        # a later object over the first's faint edge: it stands out more
    assert (C.compose_frames([a, c], [(0, 0), (0, 0)], 8)[:, 4, 0:4] == (40, 40, 250)).all()


def test_part_seeds():
    assert C.part_seed(7, 0) == 7
    seeds = {C.part_seed(s, k) for s in (0, 7, 2**31 - 1) for k in (1, 2)}
    assert len(seeds) == 6 and all(0 <= s < 2**31 for s in seeds) and C.part_seed(7, 1) == C.part_seed(7, 1)


# ------------------------------------------------------------------ the demo's composed calls (tiny stand-in)

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from openwan.pipelines import load_pipeline
    from openwan.testing import make_tiny_demo_v2_checkpoint
    path, variant = make_tiny_demo_v2_checkpoint(tmp_path_factory.mktemp("compose"), size=32, frame_num=5, steps=2)
    return path, variant, load_pipeline(path, variant=variant, progress=False)


def test_a_two_object_prompt_is_each_object_drawn_alone_then_merged(tiny):
    from openwan.demo.world_captions import object_phrases
    _, _, pipe = tiny
    out = pipe(TWO, **KW)
    rec = out.settings
    assert rec["two_objects"] == "compose" and object_phrases(TWO) == ["a red circle moving left",
                                                                      "a blue square moving right"]
    # (the prompt as the model reads it: extended into the world's wording)
    assert rec["prompt"] == "a red circle moving to the left and a blue square moving to the right"
    assert [p["prompt"] for p in rec["composed"]] == object_phrases(rec["prompt"])
    assert [p["seed"] for p in rec["composed"]] == [4, C.part_seed(4, 1)]
    # each part is exactly the one-object call of its phrase and seed; the merge is compose() of them
    parts = [pipe(p["prompt"], **dict(KW, seed=p["seed"])).latents for p in rec["composed"]]
    vae = pipe.vae
    masks = [C.object_tokens(np.concatenate(list(pipe.decode_frames(z))), vae.temporal_ratio, vae.spatial_ratio)
             for z in parts]
    merged, moves = C.compose(parts, masks)
    assert torch.equal(out.latents, merged)
    assert [tuple(p["moved_tokens"]) for p in rec["composed"]] == moves
    # the video: the parts' decoded frames merged in pixels, not the merged latent decoded
    video = pipe(TWO, **dict(KW, output_type="uint8")).frames[0]
    decoded = [np.concatenate(list(pipe.decode_frames(z))) for z in parts]
    assert np.array_equal(video, C.compose_frames(decoded, moves, vae.spatial_ratio))
    assert rec["stats"]["dit_forwards"] == 2 * pipe(ONE, **KW).settings["stats"]["dit_forwards"]
    assert isinstance(rec["composed"][1]["apart"], bool) and "apart" not in rec["composed"][0]
    # a callback counts the call's steps over both parts, each part its share (a server's progress ends with the call)
    seen = []
    pipe(TWO, callback=lambda i, t, x: seen.append(i), **KW)
    assert seen == [0, 0, 1, 1] and KW["sample_steps"] == 2


def test_object_phrases_are_the_prompt_s_own_words():
    from openwan.demo.world_captions import object_phrases
    assert object_phrases("A red circle bouncing left and right and a blue square bouncing up and down") == [
        "a red circle bouncing left and right", "a blue square bouncing up and down"]     # held whole, not tokens
    assert object_phrases("a white box ascending toward the top edge, and a red ball heading west") == [
        "a white box ascending toward the top edge", "a red ball heading west"]            # not the parser's words
    assert object_phrases("the object moving to the right") == [] and object_phrases(None) == []


def test_past_the_native_length_each_object_is_its_own_long_video(tiny):
    _, _, pipe = tiny
    kw = dict(KW, frame_num=13, long_overlap=1)                  # 4 latent frames, windows of 2: 3 windows
    out = pipe(TWO, **kw)
    rec = out.settings
    assert rec["long_video"]["windows"] == 3 and len(rec["composed"]) == 2
    parts = [pipe(p["prompt"], **dict(kw, seed=p["seed"])) for p in rec["composed"]]
    assert all(p.settings["long_video"] == rec["long_video"] for p in parts)
    vae = pipe.vae
    masks = [C.object_tokens(np.concatenate(list(pipe.decode_frames(p.latents))), vae.temporal_ratio,
                             vae.spatial_ratio) for p in parts]
    assert torch.equal(out.latents, C.compose([p.latents for p in parts], masks)[0])
    assert rec["stats"]["dit_forwards"] == sum(p.settings["stats"]["dit_forwards"] for p in parts)


def test_a_two_object_picture_is_split_into_one_picture_per_object():
    from openwan.demo import detect, world
    clip = world.sample_clip(np.random.default_rng(5), attributes=[("red", "circle", "left"),
                                                                   ("blue", "square", "right")])
    pic = world.render_clip(clip, size=128, frames=1)[0]
    red, blue = detect.object_pictures(pic, ["red", "blue"])
    for one, (color, shape) in ((red, ("red", "circle")), (blue, ("blue", "square"))):
        found = detect.detect_objects(np.repeat(one[None], 5, axis=0), n_objects=2)
        assert [(d["color"], d["shape"]) for d in found] == [(color, shape)]
    changed = [(p != pic).any(axis=-1) for p in (red, blue)]
    assert changed[0].any() and changed[1].any() and not (changed[0] & changed[1]).any()
    assert detect.object_pictures(pic, ["red", "red"]) is None and detect.object_pictures(pic, ["red", "green"]) is None


def test_image_to_video_of_two_objects_is_each_object_from_its_own_picture(tiny):
    from openwan.demo import detect, world
    _, _, pipe = tiny
    clip = world.sample_clip(np.random.default_rng(5), attributes=[("red", "circle", "left"),
                                                                   ("blue", "square", "right")])
    pic = world.render_clip(clip, size=32, frames=1)[0]
    out = pipe(TWO, image=pic, **KW)
    rec = out.settings
    assert rec["two_objects"] == "compose" and all(p["moved_tokens"] == [0, 0] for p in rec["composed"])
    pictures = detect.object_pictures(pic, ["red", "blue"])
    parts = [pipe(p["prompt"], image=q, **dict(KW, seed=p["seed"])).latents
             for p, q in zip(rec["composed"], pictures)]
    vae = pipe.vae
    masks = [C.object_tokens(np.concatenate(list(pipe.decode_frames(z))), vae.temporal_ratio, vae.spatial_ratio)
             for z in parts]
    merged, moves = C.compose(parts, masks, move=False)
    assert torch.equal(out.latents, merged) and moves == [(0, 0), (0, 0)]
    # first-last-frame: both pictures split, each object from its own pair
    last = world.render_clip(clip, size=32, frames=5)[-1]
    out = pipe(TWO, first_frame=pic, last_frame=last, **KW)
    lasts = detect.object_pictures(last, ["red", "blue"])
    parts = [pipe(p["prompt"], first_frame=q, last_frame=r, **dict(KW, seed=p["seed"])).latents
             for p, q, r in zip(out.settings["composed"], pictures, lasts)]
    masks = [C.object_tokens(np.concatenate(list(pipe.decode_frames(z))), vae.temporal_ratio, vae.spatial_ratio)
             for z in parts]
    assert torch.equal(out.latents, C.compose(parts, masks, move=False)[0])


def test_a_picture_of_two_objects_is_composed_too(tiny, tmp_path):
    _, _, pipe = tiny
    out = pipe(TWO, sample_steps=2, seed=4, frame_num=1, output_path=tmp_path / "two.png")
    assert out.path.exists() and out.frames[0].shape == (1, 32, 32, 3) and len(out.settings["composed"]) == 2


def test_which_calls_are_composed(tiny):
    from openwan.demo import world
    _, _, pipe = tiny
    assert pipe.composes_scenes() and pipe.scene_objects() == 4
    assert pipe.prepare(ONE, **KW).parts is None
    assert len(pipe.prepare("a red circle and a blue square and a green triangle", **KW).parts) == 3
    five = "a red circle, a blue square, a green triangle, a white circle and a cyan square"
    assert pipe.prepare(five, **KW).parts is None                       # more than COMPOSED_OBJECTS: one run
    pic = world.render_clip(world.make_clip(3, n_objects=2), size=32, frames=1)[0]      # purple and red objects
    assert pipe.prepare(TWO, image=pic, **KW).parts is None                 # no blue object in the picture to split
    assert pipe.prepare(TWO, first_frame=pic, last_frame=pic, **KW).parts is None     # (no blue object either)
    assert pipe.prepare(f"{ONE} | {ONE}", frame_num=9, long_overlap=1, **KW).parts is None    # a prompt schedule
    job = pipe.prepare(TWO, **KW)
    assert len(job.parts) == 2 and all(p.dit is None for p in job.parts)   # the main DiT draws each object
    with pytest.raises(ValueError, match="two_objects must be one of"):
        pipe(TWO, two_objects="both", **KW)


def test_two_objects_on_a_model_that_does_not_compose_is_refused(tmp_path):
    from openwan.pipelines import load_pipeline
    from openwan.testing import make_tiny_checkpoint
    pipe = load_pipeline(make_tiny_checkpoint(tmp_path / "t"), variant="tiny-t2v", progress=False)
    assert not pipe.composes_scenes()
    with pytest.raises(ValueError, match="two_objects chooses how the embedded demo"):
        pipe(TWO, two_objects="compose", size="32*32", frame_num=5, **KW)


def test_the_cli_records_and_replays_the_method(tiny, tmp_path, monkeypatch):
    from openwan.cli import main
    from openwan.testing import use_demo
    from openwan.video import read_video
    path, variant, _ = tiny
    use_demo(monkeypatch, path, variant)
    monkeypatch.chdir(tmp_path)
    common = ["--sample_steps", "2", "--base_seed", "4", "--size", "32*32", "--quiet"]
    assert main(["generate", TWO, *common, "-o", "c.mp4"]) == 0
    rec = json.loads((tmp_path / "c.json").read_text())["openwan"]
    assert rec["two_objects"] == "compose" and len(rec["composed"]) == 2
    assert main(["generate", "--from", "c.json", "-o", "again.mp4", "--quiet"]) == 0
    assert (read_video(tmp_path / "again.mp4")[0] == read_video(tmp_path / "c.mp4")[0]).all()
    # a record of the one-run way (written before composed scenes: no "two_objects") replays as it was drawn
    del rec["two_objects"], rec["composed"]
    (tmp_path / "old.json").write_text(json.dumps({"openwan": rec}))
    assert main(["generate", "--from", "old.json", "-o", "old.mp4", "--quiet"]) == 2       # this folder: no expert
    assert main(["generate", TWO, *common, "--two_objects", "expert", "-o", "e.mp4"]) == 2


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_shipped_demo_draws_both_objects_of_a_two_object_prompt():
    import openwan
    from openwan.demo.bench_sets import two_object_cases
    from openwan.demo.bench_tasks import grade
    case = two_object_cases()[0]
    pipe = openwan.load_pipeline("demo", progress=False)
    out = pipe(case.prompt, seed=0)
    g = grade(out.frames[0], case)
    assert [o["correct"]["all"] for o in g["objects"]] == [True, True], g
    assert out.settings["two_objects"] == "compose"
