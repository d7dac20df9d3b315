"""The procedural demo world (openwan.demo.world) and its detector (openwan.demo.detect)."""
import itertools
import math

import numpy as np
import pytest
import torch

from openwan.demo import detect as D
from openwan.demo import world as W

# ------------------------------------------------------------------------------------------------ helpers

def gaussian_blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of uint8 [F, H, W, 3] over H and W (edges replicated)."""
    r = int(math.ceil(3 * sigma))
    k = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2)).astype(np.float32)
    k /= k.sum()
    a = frames.astype(np.float32)
    p = np.pad(a, ((0, 0), (r, r), (0, 0), (0, 0)), mode="edge")
    a = sum(k[i] * p[:, i:i + a.shape[1]] for i in range(2 * r + 1))
    p = np.pad(a, ((0, 0), (0, 0), (r, r), (0, 0)), mode="edge")
    a = sum(k[i] * p[:, :, i:i + a.shape[2]] for i in range(2 * r + 1))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def add_noise(frames: np.ndarray, std: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(frames + rng.normal(0.0, std, frames.shape)), 0, 255).astype(np.uint8)


def accuracy(pairs) -> dict:
    """Per-attribute accuracy of detect() over (attributes, frames) pairs, plus the failures."""
    hits = {"color": 0, "shape": 0, "motion": 0}
    failures = []
    for attrs, frames in pairs:
        det = D.detect(frames)
        s = D.score(det, attrs)
        for k in hits:
            hits[k] += s[k]
        if not s["all"]:
            failures.append((attrs, (det["color"], det["shape"], det["motion"])))
    return {k: v / len(pairs) for k, v in hits.items()}, failures


@pytest.fixture(scope="module")
def every_combo():
    """One clip of every (color, shape, motion) combination, 64x64x17; looping motions over 33 frames at their
    own speed (a 17-frame bounce whose reversal falls in its first or last frames looks like a one-way move:
    test_detector_on_17_frame_bounces)."""
    out = []
    for i, attrs in enumerate(W.ALL_COMBOS):
        clip = W.make_clip(10_000 + i, attributes=[attrs])
        looping = attrs.motion in W.LOOPING_MOTIONS
        out.append((attrs, W.render_clip(clip, size=64, frames=33 if looping else 17,
                                         native_frames=17 if looping else None)))
    return out


# ------------------------------------------------------------------------------------------------ world

def test_vocabulary_is_distinct_and_large_enough():
    assert len(W.COLORS) >= 6 and set(W.SHAPES) >= {"circle", "square", "triangle"}
    assert set(W.MOTIONS) >= {"left", "right", "up", "down", "still", "growing", "shrinking"}
    # Palette colors are far from each other and from the background (RGB distance).
    names = list(W.COLORS)
    rgb = {n: np.array(W.COLORS[n], float) for n in names}
    for a, b in itertools.combinations(names, 2):
        assert np.linalg.norm(rgb[a] - rgb[b]) > 120, (a, b)
    for n in names:
        assert np.linalg.norm(rgb[n] - np.array(W.BACKGROUND)) > 150, n
        assert D.classify_color(W.COLORS[n]) == n


def test_same_seed_same_clip_and_different_seeds_differ():
    a, b = W.make_clip(7), W.make_clip(7)
    assert a == b
    va, vb = W.render_clip(a), W.render_clip(b)
    assert va.dtype == np.uint8 and va.shape == (17, 64, 64, 3)
    np.testing.assert_array_equal(va, vb)
    v2, c2 = W.generate(7)
    assert c2 == a
    np.testing.assert_array_equal(v2, va)
    others = {W.make_clip(s) for s in range(20)}
    assert len(others) == 20


def test_render_matches_geometry():
    clip = W.Clip((W.WorldObject("red", "circle", "still", 0.5, 0.5, 0.25, 0.5, 0.5, 0.25),), "a red circle")
    v = W.render_clip(clip, size=64, frames=3).astype(int)
    np.testing.assert_array_equal(v[0, 32, 32], W.COLORS["red"])          # center: pure object color
    np.testing.assert_array_equal(v[0, 0, 0], W.BACKGROUND)               # corner: background
    coverage = (v[0, ..., 0] - 32) / (230 - 32)                            # anti-aliased coverage from red
    assert abs(coverage.sum() - math.pi * 16 ** 2) < 2.0                  # area of a disk of radius 16 px
    assert ((coverage > 0.05) & (coverage < 0.95)).sum() > 50             # edges are anti-aliased
    # A square of r = 0.25 covers exactly 32 x 32 pixels; a triangle half its bounding box.
    sq = W.render_clip(W.Clip((W.WorldObject("white", "square", "still", .5, .5, .25, .5, .5, .25),), ""), 64, 1)
    assert (sq[0, ..., 0] > 200).sum() == 32 * 32
    tri = W.render_clip(W.Clip((W.WorldObject("white", "triangle", "still", .5, .5, .25, .5, .5, .25),), ""),
                        64, 1).astype(float)
    assert abs(((tri[0, ..., 0] - 32) / 203).sum() - 0.5 * 32 * 32) < 2.0
    # Frame k shows t = k / (F - 1): a right-moving object's centroid goes from x0 to x1.
    obj = W.WorldObject("white", "circle", "right", 0.3, 0.5, 0.1, 0.7, 0.5, 0.1)
    v = W.render_clip(W.Clip((obj,), ""), size=100, frames=5).astype(float)[..., 0] - 32
    cx = (v * (np.arange(100) + 0.5)).sum(axis=(1, 2)) / v.sum(axis=(1, 2)) / 100
    np.testing.assert_allclose(cx, [0.3, 0.4, 0.5, 0.6, 0.7], atol=2e-3)


def test_sampled_motions_are_large_and_stay_in_frame():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 9)
    for _ in range(300):
        clip = W.sample_clip(rng, split="all", n_objects=int(rng.integers(1, 3)))
        for o in clip.objects:
            cx, cy = o.center(t)
            r = o.radius(t)
            assert np.all(cx - r >= W.MARGIN - 1e-9) and np.all(cx + r <= 1 - W.MARGIN + 1e-9)
            assert np.all(cy - r >= W.MARGIN - 1e-9) and np.all(cy + r <= 1 - W.MARGIN + 1e-9)
            if o.motion in W.LOOPING_MOTIONS:           # test_looping_motions_go_on_for_any_length
                continue
            dx, dy, ratio = o.x1 - o.x0, o.y1 - o.y0, o.r1 / o.r0
            expected = {"left": (-1, 0, 1), "right": (1, 0, 1), "up": (0, -1, 1), "down": (0, 1, 1),
                        "still": (0, 0, 1), "growing": (0, 0, 2), "shrinking": (0, 0, 0.5)}[o.motion]
            if expected[0] or expected[1]:
                dist = dx * expected[0] + dy * expected[1]
                assert 0.35 - 1e-9 <= dist <= 0.45 + 1e-9 and abs(dx * expected[1]) + abs(dy * expected[0]) == 0
            else:
                assert dx == 0 and dy == 0
            if expected[2] == 2:
                assert 2.2 - 1e-9 <= ratio <= 2.6 + 1e-9
            elif expected[2] == 0.5:
                assert 2.2 - 1e-9 <= 1 / ratio <= 2.6 + 1e-9
            else:
                assert ratio == 1
        if len(clip.objects) == 2:
            assert clip.objects[0].color != clip.objects[1].color
            assert not W._overlap(clip.objects[0], clip.objects[1], gap=0.0)


def test_held_out_split():
    # The documented rule, and its consequences: ~14% held out, every pair of attributes still trained.
    rule = {a for a in W.ALL_COMBOS if (W.COLOR_NAMES.index(a.color) + 2 * W.SHAPES.index(a.shape)
                                        + 3 * W.MOTIONS.index(a.motion)) % 7 == 0}
    assert W.HELD_OUT == rule and len(W.HELD_OUT) == 30
    assert sum(a.motion in W.CLASSIC_MOTIONS for a in W.HELD_OUT) == 21     # the classic world's 21, unchanged
    assert 0.10 <= len(W.HELD_OUT) / len(W.ALL_COMBOS) <= 0.15
    train = set(W.TRAIN_COMBOS)
    for i, j in itertools.combinations(range(3), 2):
        pairs_all = {(a[i], a[j]) for a in W.ALL_COMBOS}
        assert {(a[i], a[j]) for a in train} == pairs_all
    rng = np.random.default_rng(1)
    seen_train = set()
    for _ in range(1500):
        clip = W.sample_clip(rng, split="train", n_objects=int(rng.integers(1, 3)))
        assert not set(clip.attributes) & W.HELD_OUT, clip
        seen_train.update(clip.attributes)
    assert seen_train == train                         # ... and it does draw every training combination
    for _ in range(300):
        assert W.sample_clip(rng, split="heldout").attributes[0] in W.HELD_OUT
    ds = W.WorldDataset(100, seed=3, split="train", n_objects=2)
    assert not any(set(ds.clip(i).attributes) & W.HELD_OUT for i in range(len(ds)))


def test_parse_prompt_roundtrips_every_template():
    # Every template x motion phrase x shape word, with the colors and size words cycled through.
    n = 0
    cases = itertools.product(W.CAPTION_TEMPLATES, [(m, p) for m in W.MOTIONS for p in W.MOTION_PHRASES[m]],
                              [(s, w) for s in W.SHAPES for w in (s,) + W.SHAPE_SYNONYMS[s]])
    for i, (template, (motion, phrase), (shape, shape_word)) in enumerate(cases):
        attrs = W.Attributes(W.COLOR_NAMES[i % len(W.COLOR_NAMES)], shape, motion)
        size = ("", "small ", "big ", "large ")[i % 4]
        text = template.format(color=attrs.color, shape=shape_word, motion=phrase, size=size)
        assert W.parse_prompt(text) == attrs, text
        assert W.parse_prompt(text.upper()) == attrs, text
        n += 1
    assert n > 1000
    assert W.parse_prompt(W.prompt_for(("purple", "square", "up"))) == ("purple", "square", "up")
    assert W.parse_prompt("a magenta disc rising") == ("purple", "circle", "up")
    for bad in ("a dog running on the beach", "a red circle", "a circle moving up", "red moving left",
                "a red circle moving up and left", "a red and blue circle growing", "", None):
        assert W.parse_prompt(bad) is None, bad


def test_captions_vary_and_parse_back():
    rng = np.random.default_rng(2)
    fixed = {W.sample_clip(rng, attributes=[("red", "circle", "right")]).caption for _ in range(300)}
    assert len(fixed) >= 20
    assert "a red circle moving to the right" in fixed and "red circle sliding right" in fixed
    for _ in range(500):
        clip = W.sample_clip(rng, split="all", n_objects=int(rng.integers(1, 3)))
        if len(clip.objects) == 1:
            assert W.parse_prompt(clip.caption) == clip.attributes[0], clip.caption
        else:
            assert W.parse_prompt(clip.caption) is None, clip.caption
        assert W.parse_objects(clip.caption) == list(clip.attributes), clip.caption
    growing = {W.sample_clip(rng, attributes=[("red", "circle", "growing")]).caption for _ in range(300)}
    assert "a small red circle growing" in growing
    assert not any("big" in c.split() or "large" in c.split() for c in growing)   # size words are truthful


def test_benchmark_prompts():
    bench = W.benchmark_prompts()
    seen = [b for b in bench if b.split == "seen"]
    held = [b for b in bench if b.split == "heldout"]
    assert len(seen) == 24 and len(held) == 12 and len(bench) == 36
    assert len({b.prompt for b in bench}) == 36
    assert all(b.attributes not in W.HELD_OUT for b in seen)
    assert all(b.attributes in W.HELD_OUT for b in held)
    assert all(W.parse_prompt(b.prompt) == b.attributes for b in bench)
    for group in (seen, held):
        for i, vocab in enumerate((W.COLOR_NAMES, W.SHAPES, W.CLASSIC_MOTIONS)):
            assert {b.attributes[i] for b in group} == set(vocab)
    assert bench[0].prompt == "a red square moving to the left"
    assert bench == W.benchmark_prompts()


def test_dataset_and_tensor_layout():
    ds = W.WorldDataset(6, seed=5, size=32, frames=9, split="all")
    assert len(ds) == 6
    items = list(ds)
    x, cap = items[3]
    assert x.dtype == torch.float32 and x.shape == (3, 9, 32, 32)
    assert x.min() >= -1 and x.max() <= 1 and isinstance(cap, str) and cap
    x2, cap2 = ds[3]
    assert torch.equal(x, x2) and cap == cap2                        # item i does not depend on access order
    assert torch.equal(W.WorldDataset(6, seed=5, size=32, frames=9, split="all")[3][0], x)
    assert not torch.equal(W.WorldDataset(6, seed=6, size=32, frames=9, split="all")[3][0], x)
    frames = W.render_clip(ds.clip(3), size=32, frames=9)
    np.testing.assert_array_equal(W.from_tensor(x), frames)           # exact uint8 round trip
    assert float(x[0, 0, 0, 0]) == pytest.approx(32 / 127.5 - 1)      # background red channel
    with pytest.raises(IndexError):
        ds[6]
    non_square = W.render_clip(ds.clip(0), size=(24, 40), frames=5)
    assert non_square.shape == (5, 24, 40, 3)


def test_bad_input_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="color"):
        W.sample_clip(rng, attributes=[("pink", "circle", "up")])
    with pytest.raises(ValueError, match="split"):
        W.sample_clip(rng, split="test")
    with pytest.raises(ValueError, match="size"):
        W.render_clip(W.make_clip(0), size="big")
    with pytest.raises(ValueError, match="uint8"):
        D.detect(np.zeros((4, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="3, F, H, W"):
        D.detect(np.zeros((4, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="background"):
        D.detect(W.render_clip(W.make_clip(0)), background=(1, 2))


# ------------------------------------------------------------------------------------------------ detector

def test_shape_features_match_exact_values_and_are_blur_invariant():
    def coverage(shape):
        obj = W.WorldObject("white", shape, "still", 0.5, 0.5, 0.25, 0.5, 0.5, 0.25)
        v = W.render_clip(W.Clip((obj,), ""), size=128, frames=1, supersample=8)
        return v[..., 0].astype(np.float64) - 32                      # [1, H, W], linear in coverage

    exact = {"circle": (0.0, 1 / 3), "square": (0.0, 0.0), "triangle": (-0.9989, None)}
    for shape, (g_true, r_true) in exact.items():
        c = coverage(shape)
        blurred = gaussian_blur(np.repeat(c[..., None] + 32, 3, axis=-1).astype(np.uint8), 3.0)[..., 0] - 32.0
        for img in (c[0], blurred[0]):
            g, r = D.shape_features(img)
            assert abs(g - g_true) < 0.03, (shape, g)
            if r_true is not None:
                assert abs(r - r_true) < 0.03, (shape, r)
    # Apex down flips the sign of gamma.
    g, _ = D.shape_features(coverage("triangle")[0][::-1])
    assert abs(g - 0.9989) < 0.03


def test_detector_on_clean_clips(every_combo):
    acc, failures = accuracy(every_combo)
    assert min(acc.values()) >= 0.98, (acc, failures)


def half(every_combo, parity):
    """Every other combination, alternating within each (color, shape) row (motion is the innermost of
    ALL_COMBOS), so each half holds every color, shape and motion; the two halves hold every combination once."""
    n = len(W.MOTIONS)
    return [(i, c) for i, c in enumerate(every_combo) if (i + i // n) % 2 == parity]


def test_detector_on_blurred_clips(every_combo):
    # One half here, the other in the noisy test.
    acc, failures = accuracy([(a, gaussian_blur(v, 1.5)) for _, (a, v) in half(every_combo, 1)])
    assert min(acc.values()) >= 0.90, (acc, failures)


def test_detector_on_noisy_blurred_clips(every_combo):
    pairs = [(a, add_noise(gaussian_blur(v, 1.5), 12.0, i)) for i, (a, v) in half(every_combo, 0)]
    acc, failures = accuracy(pairs)
    assert min(acc.values()) >= 0.90, (acc, failures)


def test_detector_other_layouts():
    # Float [3, F, H, W] input, other sizes and frame counts, off-color and low-contrast objects.
    clip = W.make_clip(11, attributes=[("cyan", "triangle", "down")])
    x = W.clip_tensor(clip, size=64, frames=17)
    assert D.detect(x)["motion"] == "down" and D.detect(x) == D.detect(W.render_clip(clip))
    for size, frames in (((48, 80), 9), (128, 17), (64, 5)):
        v = W.render_clip(clip, size=size, frames=frames)
        det = D.detect(v)
        assert (det["color"], det["shape"], det["motion"]) == ("cyan", "triangle", "down"), (size, frames, det)
    # Half the contrast and a 15 degree hue error: still cyan triangle moving down.
    v = W.render_clip(clip).astype(float)
    dim = 32 + 0.5 * (v - 32)
    dim = dim[..., [0, 1, 2]] * [1.0, 1.0, 0.85]
    det = D.detect(np.clip(np.rint(dim), 0, 255).astype(np.uint8))
    assert (det["color"], det["shape"], det["motion"]) == ("cyan", "triangle", "down"), det


def test_detector_finds_nothing_in_an_empty_video():
    blank = np.full((17, 64, 64, 3), 32, np.uint8)
    for v in (blank, add_noise(blank, 8.0, 0)):
        det = D.detect(v)
        assert det["found"] is False and det["color"] is None
        assert D.score(det, ("red", "circle", "up")) == {"color": False, "shape": False, "motion": False,
                                                         "all": False}
    assert D.detect_objects(blank) == []


def test_detect_two_objects():
    hits = total = 0
    for seed in range(24):
        clip = W.make_clip(seed, split="all", n_objects=2)
        v = W.render_clip(clip)
        if seed % 2:
            v = add_noise(gaussian_blur(v, 1.0), 8.0, seed)
        scores = D.score_objects(D.detect_objects(v, n_objects=2), clip.attributes)
        hits += sum(s["all"] for s in scores)
        total += len(scores)
    assert hits / total >= 0.95, hits / total


def test_score_accepts_every_expected_form():
    det = {"color": "red", "shape": "circle", "motion": "up"}
    full = {"color": True, "shape": True, "motion": True, "all": True}
    assert D.score(det, W.Attributes("red", "circle", "up")) == full
    assert D.score(det, ("red", "circle", "up")) == full
    assert D.score(det, {"color": "red", "shape": "circle", "motion": "up"}) == full
    assert D.score(det, W.BenchmarkPrompt("p", W.Attributes("red", "circle", "up"), "seen")) == full
    assert D.score(det, ("red", "square", "up")) == {"color": True, "shape": False, "motion": True, "all": False}


# ----------------------------------------------------------------------------- prompts outside the world

def test_understand_every_caption_and_benchmark_prompt():
    for seed in range(300):
        clip = W.make_clip(seed, split="all")
        obj = clip.objects[0]
        assert W.understand(clip.caption) == ((obj.color, obj.shape, obj.motion), []), clip.caption
    for b in W.benchmark_prompts():
        assert W.understand(b.prompt) == (b.attributes, [])
        assert W.outside_world_warning(b.prompt) is None


@pytest.mark.parametrize("prompt, attrs, problems", [
    ("a cat on the grass", (None, None, None), ["nothing it knows"]),
    ("an orange star", (None, None, None), ["unknown color 'orange'", "unknown shape 'star'", "no motion"]),
    ("a red star falling", ("red", None, "down"), ["unknown shape 'star'"]),
    ("a red circle", ("red", "circle", None), ["no motion"]),
    ("a red and blue circle moving left", (None, "circle", "left"), ["2 colors for one object (red, blue)"]),
    ("a red circle moving up and a blue square shrinking", ("red", "circle", "up"),
     ["2 objects named; the demo draws one object per video"]),
])
def test_understand_names_what_is_outside(prompt, attrs, problems):
    """For a model that draws one object per video (v1, and today v2 and its student demo-4step)."""
    assert W.understand(prompt, objects=1) == (attrs, problems)
    line = W.outside_world_warning(prompt, objects=1)
    assert "\n" not in line and repr(prompt) in line and all(p in line for p in problems)
    got = [f"{k} {v}" for k, v in zip(("color", "shape", "motion"), attrs) if v]
    assert f"(understood: {', '.join(got) or 'nothing'})" in line


def test_two_object_prompts_follow_what_the_shipped_demo_draws():
    """A model that draws two objects (objects=2: the TI2V-style recipe's two-object scenes) takes a prompt of the
    world's two-object form without a warning; three objects still warn, and so does what is unknown in the
    second object. The shipped weights draw one object (V2_SCENE_OBJECTS), as v1 does and the v2 student
    (demo-4step) does: for them two objects warn."""
    from openwan.configs import DEMO_4STEP_VARIANT, DEMO_V1_VARIANT, DEMO_V2_VARIANT
    from openwan.demo.bench_sets import two_object_cases
    from openwan.demo.world_captions import V2_SCENE_OBJECTS, scene_objects
    assert scene_objects() == scene_objects(DEMO_V2_VARIANT) == V2_SCENE_OBJECTS
    assert scene_objects(DEMO_V1_VARIANT) == 1 and scene_objects(DEMO_4STEP_VARIANT) == V2_SCENE_OBJECTS
    prompts = ["a red circle moving left and a blue square moving right"] + [c.prompt for c in two_object_cases()]
    prompts += [W.make_clip(seed, n_objects=2).caption for seed in range(50)]
    for prompt in prompts:
        assert W.outside_world_warning(prompt, objects=2) is None, prompt
        assert "2 objects named; the demo draws one object per video" in W.outside_world_warning(prompt, objects=1)
        assert (W.outside_world_warning(prompt) is None) == (V2_SCENE_OBJECTS == 2)
    three = "a red circle moving left and a blue square moving right and a green triangle growing"
    assert W.understand(three, objects=2) == (("red", "circle", "left"),
                                              ["3 objects named; the demo draws at most 2 objects per video"])
    assert W.understand("a red circle moving up and an orange star falling", objects=2) == (
        ("red", "circle", "up"), ["object 2: unknown color 'orange'", "object 2: unknown shape 'star'"])
    assert "one or two objects" in W.outside_world_warning(three, objects=2)


def test_the_demo_pipelines_compose_two_objects_without_a_warning(caplog):
    """The shipped demo and its 4-step student both draw a prompt of two objects (up to COMPOSED_OBJECTS) as a
    composed scene (each object its own run of the main DiT: openwan.pipelines.compose), so neither warns; more
    objects than that still warn."""
    from openwan.pipelines import load_pipeline
    from openwan.pipelines.ti2v import COMPOSED_OBJECTS
    prompt = "a red circle moving left and a blue square moving right (test_two_object_warning)"
    more = " and a green triangle growing and a white circle shrinking and a cyan square moving up"
    pipes = {name: load_pipeline(name, progress=False) for name in ("demo", "demo-4step")}
    for name, pipe in pipes.items():
        assert pipe.scene_objects() == COMPOSED_OBJECTS == 4
        with caplog.at_level("WARNING", logger="openwan.demo"):
            caplog.clear()
            job = pipe.prepare(prompt, seed=0, sample_steps=1, output_type="latent")
            three = pipe.prepare(prompt.replace("right", "right and a green triangle growing"), seed=0, sample_steps=1)
            assert not [r for r in caplog.records if r.name == "openwan.demo"]
            assert job.dit is None and len(job.parts) == 2 and len(three.parts) == 3
            five = prompt.replace("right", f"right{more} ({name})")          # (warned once each)
            assert pipe.prepare(five, seed=0, sample_steps=1).parts is None
        lines = [r.getMessage() for r in caplog.records if r.name == "openwan.demo"]
        assert len(lines) == 1 and "5 objects named; the demo draws at most 4 objects" in lines[0], lines
        assert "one to 4 objects" in lines[0]


def test_warn_outside_world_once_per_prompt(caplog):
    prompt = "a green hexagon spinning (test_warn_once)"
    with caplog.at_level("WARNING", logger="openwan.demo"):
        assert W.warn_outside_world(prompt) is not None
        assert W.warn_outside_world(prompt) is None
        assert W.warn_outside_world("a red circle moving up") is None
    assert len(caplog.records) == 1 and "unknown shape 'hexagon'" in caplog.records[0].getMessage()


def test_demo_pipeline_warns_once_for_a_prompt_outside_its_world(caplog):
    from openwan.pipelines import load_pipeline
    pipe = load_pipeline("demo", progress=False)
    prompt = "a cat on the grass (test_demo_pipeline_warns)"
    with caplog.at_level("WARNING", logger="openwan.demo"):
        for _ in range(2):
            pipe(prompt, seed=0, sample_steps=1, output_type="latent")
    lines = [r.getMessage() for r in caplog.records if r.name == "openwan.demo"]
    assert len(lines) == 1 and "nothing it knows" in lines[0]
