"""Two-object scenes on the embedded default: captions in reading order (the two-object expert's data)."""
import numpy as np
import pytest
import torch

from openwan.demo import world


def _obj(color, x, y, motion="still"):
    return world.WorldObject(color, "circle", motion, x, y, 0.12, x, y, 0.12)


def test_reading_order_names_the_left_or_top_object_first():
    left, right = _obj("red", 0.25, 0.6), _obj("blue", 0.7, 0.4)      # farther apart in x: left first
    assert world.reading_order((right, left)) == (left, right)
    assert world.reading_order((left, right)) == (left, right)
    top, bottom = _obj("green", 0.45, 0.2), _obj("cyan", 0.55, 0.8)    # farther apart in y: top first
    assert world.reading_order((bottom, top)) == (top, bottom)
    assert world.reading_order((top, bottom)) == (top, bottom)
    # frame 0's centers, not the path's end: a pair that swaps sides as it moves keeps its frame-0 order
    a = world.WorldObject("red", "square", "right", 0.2, 0.5, 0.12, 0.65, 0.5, 0.12)
    b = world.WorldObject("blue", "square", "left", 0.5, 0.35, 0.12, 0.05, 0.35, 0.12)
    assert world.reading_order((b, a)) == (a, b)
    assert world.reading_order((left,)) == (left,)


def test_latents_in_reading_order_change_only_the_captions(tmp_path):
    from openwan.configs import DEMO_VAE
    from openwan.demo.latents import encode_latents
    from openwan.models.vae import WanVAE
    from openwan.testing import randomize_
    vae = randomize_(WanVAE(DEMO_VAE), 1, std=0.05).eval()
    for name in ("any", "reading"):
        vae.save_pretrained(tmp_path / name / "vae")
        encode_latents(tmp_path / name, n_clips=6, captions=3, seed=7, size=32, frames=5, batch=3,
                       two_object_prob=1.0, two_object_order=name)
    free = torch.load(tmp_path / "any" / "latents.pt", weights_only=False)
    ordered = torch.load(tmp_path / "reading" / "latents.pt", weights_only=False)
    assert torch.equal(free["latents"], ordered["latents"])
    swapped = 0
    for i, (caps, attrs) in enumerate(zip(ordered["captions"], ordered["attributes"])):
        rng = np.random.default_rng([7, 4, i])
        rng.random()                                                   # (the two-object draw)
        clip = world.sample_clip(rng, split="train", n_objects=2, motions=world.CLASSIC_MOTIONS)
        first, second = world.reading_order(clip.objects)
        assert [world.Attributes(*a) for a in attrs] == [first.attributes, second.attributes]
        assert len(caps) == 3 and all(world.parse_objects(c) == [first.attributes, second.attributes] for c in caps)
        swapped += first is not clip.objects[0]
        assert sorted(map(tuple, attrs)) == sorted(map(tuple, free["attributes"][i]))
    assert 0 < swapped < 6            # the draw's order was not already the reading order (seed 7: some of each)
    with pytest.raises(ValueError, match="two_object_order"):
        encode_latents(tmp_path / "any", n_clips=1, two_object_order="left")


# ------------------------------------------------------------------ the two-object expert (two_object_model/)

TWO = "a red circle moving left and a blue square moving right"
ONE = "a red circle moving left"
KW = dict(sample_steps=2, seed=4, output_type="latent")


@pytest.fixture(scope="module")
def with_expert(tmp_path_factory):
    from openwan.pipelines.components import TWO_OBJECT_DIR
    from openwan.testing import make_tiny_demo_with_expert
    plain, folder, variant = make_tiny_demo_with_expert(tmp_path_factory.mktemp("two"), TWO_OBJECT_DIR)
    return plain, folder, variant


def _which(pipe, prompt, **kw):
    """(main DiT calls, expert calls) of one call."""
    seen = {"main": 0, "expert": 0}
    hooks = [pipe.dit.register_forward_pre_hook(lambda m, a: seen.__setitem__("main", seen["main"] + 1)),
             pipe.c.dit_two_objects.register_forward_pre_hook(
                 lambda m, a: seen.__setitem__("expert", seen["expert"] + 1))]
    try:
        out = pipe(prompt, **dict(KW, **kw))
    finally:
        for h in hooks:
            h.remove()
    return seen["main"], seen["expert"], out


def test_prompts_naming_two_objects_run_the_expert_when_asked_and_for_pictures(with_expert, caplog):
    from openwan.pipelines import load_pipeline
    plain, folder, variant = with_expert
    pipe = load_pipeline(folder, variant=variant, progress=False)
    assert pipe.c.dit_two_objects is not None and pipe.scene_objects() == 4
    main, expert, out = _which(pipe, TWO, two_objects="expert")
    assert main == 0 and expert > 0 and out.settings["two_objects"] == "expert"
    main, expert, one = _which(pipe, ONE, two_objects="expert")
    assert main > 0 and expert == 0 and "two_objects" not in one.settings
    # text-to-video of two objects is composed by default (tests/test_compose.py): the main DiT, once per object
    main, expert, composed = _which(pipe, TWO)
    assert expert == 0 and main == 2 * _which(pipe, ONE)[0] and composed.settings["two_objects"] == "compose"
    # the expert's video is the main DiT's call with the expert's weights: same noise, same steps
    job = pipe.prepare(TWO, two_objects="expert", **KW)
    assert job.dit is pipe.c.dit_two_objects and job.parts is None
    job.dit = None
    assert not torch.equal(pipe.run(job), out.latents)
    job.dit = pipe.c.dit_two_objects
    assert torch.equal(pipe.run(job), out.latents)
    # image-to-video of a two-object prompt runs the expert; first-last-frame and image-to-video past the native
    # length stay on the main DiT, and say so (long text-to-video is composed: tests/test_compose.py)
    pic = world.render_clip(world.make_clip(3, n_objects=2), size=32, frames=1)[0]
    assert _which(pipe, TWO, image=pic)[:2][0] == 0
    with caplog.at_level("WARNING", logger="openwan.demo"):
        main, expert, _ = _which(pipe, TWO, first_frame=pic, last_frame=pic)
        assert expert == 0 and main > 0
        main, expert, _ = _which(pipe, TWO, first_frame=pic, last_frame=pic, seed=5)
        assert expert == 0 and main > 0
        main, expert, _ = _which(pipe, TWO.replace("left", "up"), image=pic, frame_num=9, long_overlap=1)
        assert expert == 0 and main > 0
    lines = [r.getMessage() for r in caplog.records if "two objects named" in r.getMessage()]
    assert len(lines) == 2 and "runs the main DiT" in lines[0]      # once per prompt, not once per call
    # a folder without the expert composes two-object prompts too; asking for its expert is an error
    bare = load_pipeline(plain, variant=variant, progress=False)
    assert bare.c.dit_two_objects is None and bare.scene_objects() == 4
    assert bare.prepare(TWO, **KW).parts is not None
    with pytest.raises(ValueError, match="no two-object expert"):
        bare(TWO, two_objects="expert", **KW)


def test_objects_named_counts_the_parts_that_name_a_shape():
    assert world.objects_named(TWO) == 2 and world.objects_named(ONE) == 1
    assert world.objects_named("a red circle moving up, and an orange star falling") == 2
    assert world.objects_named("a red circle and a blue square and a green triangle") == 3
    assert world.objects_named("the object moving to the right") == 0 and world.objects_named(None) == 0


def test_convert_keeps_the_expert(with_expert, tmp_path):
    from openwan.convert import write_components
    from openwan.pipelines.components import TWO_OBJECT_DIR, load_components
    _, folder, variant = with_expert
    c = load_components(folder, variant=variant)
    for layout in ("official", "diffusers"):
        out = write_components(c, tmp_path / layout, layout)
        assert (out / TWO_OBJECT_DIR).is_dir()
        back = load_components(out, variant=variant)
        a, b = c.dit_two_objects.state_dict(), back.dit_two_objects.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_two_object_summary_counts_scenes_with_both_objects_found():
    from openwan.demo.bench_tasks import summarize_objects

    def rec(split, found, right):
        objs = [{"found": f, "correct": {"color": r, "shape": r, "motion": r, "all": r}} for f, r in zip(found, right)]
        return {"split": split, "objects": objs, "correct": {"all": all(right)}}
    s = summarize_objects([rec("seen", (True, True), (True, False)), rec("seen", (True, False), (True, False)),
                           rec("heldout", (True, True), (True, True))])
    assert s["seen"]["scenes_found"] == 0.5 and s["heldout"]["scenes_found"] == 1.0
    assert abs(s["total"]["scenes_found"] - 2 / 3) < 1e-12 and abs(s["total"]["scenes_all"] - 1 / 3) < 1e-12
    assert s["seen"]["accuracy"]["color"] == 0.5


def test_a_deepened_expert_draws_what_it_was_grown_from_and_loads_beside_a_shallower_main_dit(with_expert, tmp_path):
    import shutil

    from openwan.checkpoints import CheckpointError
    from openwan.demo.grow import BLOCK_OUTPUTS, block_count, deepen, deepened_init
    from openwan.models.dit import WanModel
    from openwan.pipelines import load_pipeline
    from openwan.pipelines.components import TWO_OBJECT_DIR
    _, folder, variant = with_expert
    shallow = WanModel.from_pretrained(folder / TWO_OBJECT_DIR, dtype=torch.float32)
    layers = shallow.config.num_layers
    state = deepen(shallow.state_dict(), 3 * layers)
    assert block_count(state) == 3 * layers
    # block i becomes blocks 3i (itself) and 3i+1, 3i+2 (copies whose output projections are zero)
    for key, v in shallow.state_dict().items():
        if key.startswith("blocks.0."):
            rest = key[len("blocks.0."):]
            assert torch.equal(state[f"blocks.0.{rest}"], v)
            zero = any(rest.startswith(p + ".") for p in BLOCK_OUTPUTS)
            assert torch.equal(state[f"blocks.2.{rest}"], torch.zeros_like(v) if zero else v)
    for depth, source in ((layers, shallow.state_dict()), (3 * layers, deepen(shallow.state_dict(), 2 * layers))):
        with pytest.raises(ValueError, match="larger multiple"):
            deepen(source, depth)
    # through the training stage's helper, then as the checkpoint's expert: the same video, bit for bit
    init = deepened_init(tmp_path / "work", folder / TWO_OBJECT_DIR,
                         shallow.config.replace(num_layers=2 * layers))
    deep = tmp_path / "deep"
    shutil.copytree(folder, deep)
    shutil.rmtree(deep / TWO_OBJECT_DIR)
    shutil.copytree(init, deep / TWO_OBJECT_DIR)
    pipe = load_pipeline(folder, variant=variant, progress=False)
    deeper = load_pipeline(deep, variant=variant, progress=False)
    assert deeper.c.dit_two_objects.config.num_layers == 2 * layers == 2 * deeper.dit.config.num_layers
    assert torch.equal(deeper(TWO, **KW).latents, pipe(TWO, **KW).latents)
    # an expert that takes other inputs than the main DiT is refused, naming what differs
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    shutil.rmtree(other / TWO_OBJECT_DIR)
    WanModel(shallow.config.replace(text_dim=2 * shallow.config.text_dim)).save_pretrained(other / TWO_OBJECT_DIR)
    with pytest.raises(CheckpointError, match="text_dim .* vs .*depth and width only"):
        load_pipeline(other, variant=variant, progress=False)
