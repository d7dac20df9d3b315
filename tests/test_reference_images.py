"""VACE's reference images on a TI2V-style model with a reference expert (``reference_model/``,
Components.dit_reference; openwan.pipelines.ti2v): the picture's latent stands clean before the video's latent
frames (timestep 0 on its tokens), the expert runs instead of the main DiT, and the frame is dropped before
decoding. Tiny random stand-in of the embedded demo (openwan.testing.make_tiny_demo_v2_checkpoint, 32 x 32, 5
frames native); the world's reference pictures and captions; the recipe's data; the benchmark's r2v task."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from openwan.pipelines import load_pipeline
from openwan.pipelines.components import REFERENCE_DIR
from openwan.testing import make_tiny_demo_with_expert

KW = dict(sample_steps=2, seed=4, output_type="latent")
PROMPT = "the object moving to the right"
VARIANT = None


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(plain folder, the same folder with a reference expert of other weights)."""
    global VARIANT
    plain, with_ref, VARIANT = make_tiny_demo_with_expert(tmp_path_factory.mktemp("ref"), REFERENCE_DIR)
    return plain, with_ref


def _load(folder, **defaults):
    variant = VARIANT if not defaults else dataclasses.replace(VARIANT, sample=VARIANT.sample.replace(**defaults))
    return load_pipeline(folder, variant=variant, progress=False)


def _picture(seed=0, size=32):
    from openwan.demo import world
    obj = world.Attributes("red", "square", "still")
    return world.reference_picture(obj, np.random.default_rng(seed), size=size)


def _calls(module):
    seen = []
    return seen, module.register_forward_pre_hook(lambda m, args: seen.append((args[0].clone(), args[1].clone())))


def test_a_reference_call_is_image_to_video_on_the_expert_one_latent_frame_longer(folders):
    """The reference's latent is latent frame 0 of a video one latent frame longer, exactly image-to-video of the
    picture run on the expert; that frame is dropped from the output."""
    _, with_ref = folders
    pipe = _load(with_ref, frame_num=9)            # native 9 frames: the 3-latent-frame i2v call is not long
    pic = _picture()
    out = pipe(PROMPT, src_ref_images=[pic], frame_num=5, **KW)
    assert out.latents.shape[1] == 2                                         # (5 - 1) / 4 + 1: the reference dropped
    job = pipe.prepare(PROMPT, image=pic, frame_num=9, **KW)
    job.dit = pipe.c.dit_reference
    i2v = pipe.run(job)
    assert torch.equal(out.latents, i2v[:, 1:])
    assert out.settings["frame_num"] == 5


def test_the_expert_runs_with_the_reference_clean_at_timestep_0(folders):
    _, with_ref = folders
    pipe = _load(with_ref)
    pic = _picture()
    main_seen, h1 = _calls(pipe.dit)
    ref_seen, h2 = _calls(pipe.c.dit_reference)
    try:
        pipe(PROMPT, src_ref_images=[pic], **KW)
    finally:
        h1.remove()
        h2.remove()
    assert not main_seen and ref_seen
    from openwan.pipelines.ti2v import crop_to
    z = pipe.vae.encode(crop_to(pic, 32, 32)[None, :, None])[0].float()     # [C, 1, h, w]
    per_frame = (z.shape[2] // 2) * (z.shape[3] // 2)                          # patch (1, 2, 2)
    for x, t in ref_seen:
        assert x.shape[2] == 3                                                 # 1 reference + 2 video latent frames
        assert torch.equal(x[:, :, :1].float(), z[None].expand(x.shape[0], -1, -1, -1, -1))
        assert (t[:, :per_frame] == 0).all() and (t[:, per_frame:] > 0).all()
    # without a reference the same folder runs the main DiT only
    main_seen, h1 = _calls(pipe.dit)
    ref_seen, h2 = _calls(pipe.c.dit_reference)
    try:
        pipe("a red square staying still", **KW)
    finally:
        h1.remove()
        h2.remove()
    assert main_seen and not ref_seen


def test_bad_reference_requests_are_named(folders):
    plain, with_ref = folders
    pic = _picture()
    with pytest.raises(ValueError, match="no reference expert"):
        _load(plain)(PROMPT, src_ref_images=[pic], **KW)
    pipe = _load(with_ref)
    with pytest.raises(ValueError, match="exclude each other"):
        pipe(PROMPT, src_ref_images=[pic], image=pic, **KW)
    with pytest.raises(ValueError, match="trained on one reference picture"):
        pipe(PROMPT, src_ref_images=[pic, pic], **KW)
    with pytest.raises(ValueError, match="native length"):
        pipe(PROMPT, src_ref_images=[pic], frame_num=9, **KW)


def test_routing_sends_references_to_the_expert_only_where_there_is_one(folders):
    from openwan.pipelines.routing import has_reference_expert, route_inputs
    plain, with_ref = folders
    assert has_reference_expert(with_ref) and not has_reference_expert(plain)
    assert route_inputs("ti2v", "demo", ["src_ref_images"], references=True) is None
    with pytest.raises(ValueError, match="VACE layers"):
        route_inputs("ti2v", "demo", ["src_ref_images"], references=False)
    with pytest.raises(ValueError, match="give --src_mask too"):
        route_inputs("ti2v", "demo", ["src_ref_images", "src_video"], references=True)
    assert route_inputs("ti2v", "demo", ["src_ref_images", "src_video", "src_mask"], references=True) == "v2v"
    with pytest.raises(ValueError, match="does not combine with --image"):
        route_inputs("ti2v", "demo", ["src_ref_images", "image"], references=True)
    with pytest.raises(ValueError, match="VACE layers"):
        route_inputs("ti2v", "demo", ["src_ref_images", "src_video", "src_mask"], references=False)
    with pytest.raises(ValueError, match="VACE layers"):
        route_inputs("t2v", "t2v-1.3B", ["src_ref_images"], references=True)
    with pytest.raises(ValueError, match="reference expert"):          # the context scale: what it has instead
        route_inputs("ti2v", "demo", ["context_scale"], references=True)


# ------------------------------------------------------------------ with a source video and a mask (VACE inpainting)

def _source_and_mask(frames=5, size=32):
    from openwan.demo import world
    clip = world.make_clip(11, attributes=[("blue", "circle", "right")])
    video = world.render_clip(clip, size=size, frames=frames)
    mask = np.zeros_like(video)
    mask[:, 8:24, 4:28] = 255                      # the region the picture's object goes into
    return video, mask


def _v2v(folder):
    from openwan.pipelines.v2v import VideoToVideo
    from openwan.pipelines.components import load_components
    return VideoToVideo(load_components(folder, variant=VARIANT), progress=False)


def test_a_reference_in_a_masked_video_runs_the_expert_and_keeps_the_rest(folders):
    """src_ref_images + src_video + src_mask: the picture's latent stands clean before the video's latent frames
    (timestep 0 on its tokens), the expert runs, the kept cells end exactly the source's, the frame is dropped."""
    from openwan.pipelines.ti2v import crop_to
    from openwan.pipelines.v2v import latent_mask, video_to_tensor
    _, with_ref = folders
    pipe = _v2v(with_ref)
    video, mask = _source_and_mask()
    pic = _picture()
    main_seen, h1 = _calls(pipe.dit)
    ref_seen, h2 = _calls(pipe.c.dit_reference)
    try:
        out = pipe(PROMPT, src_video=video, src_mask=mask, src_ref_images=[pic], **KW)
    finally:
        h1.remove()
        h2.remove()
    assert not main_seen and ref_seen
    assert out.settings["prompt"] == "a red square moving to the right"      # the extension read the picture
    z = pipe.vae.encode(crop_to(pic, 32, 32)[None, :, None])[0].float()
    x0 = pipe.vae.encode(video_to_tensor(video)[None])[0].float()
    per_frame = (z.shape[2] // 2) * (z.shape[3] // 2)
    for x, t in ref_seen:
        assert x.shape[2] == 1 + x0.shape[1]
        assert torch.equal(x[:, :, :1].float(), z[None].expand(x.shape[0], -1, -1, -1, -1))
        assert (t[:, :per_frame] == 0).all() and (t[:, per_frame:] > 0).all()
    assert out.latents.shape == x0.shape                                       # the reference frame dropped
    m = latent_mask(mask, 32, 32, 4, pipe.vae.spatial_ratio)
    assert 0 < float(m.mean()) < 1
    kept = (m == 0).expand_as(x0)
    assert torch.equal(out.latents[kept], x0[kept])                           # the rest: the source's, exactly
    assert not torch.equal(out.latents[~kept], x0[~kept])
    # without the picture the same call is masked v2v on the main DiT
    main_seen, h1 = _calls(pipe.dit)
    try:
        pipe(PROMPT, src_video=video, src_mask=mask, **KW)
    finally:
        h1.remove()
    assert main_seen and all(x.shape[2] == x0.shape[1] for x, _ in main_seen)


def test_a_reference_in_a_video_is_refused_clearly(folders):
    plain, with_ref = folders
    video, mask = _source_and_mask()
    pic = _picture()
    with pytest.raises(ValueError, match="give src_mask too"):
        _v2v(with_ref)(PROMPT, src_video=video, src_ref_images=[pic], **KW)
    with pytest.raises(ValueError, match="no reference expert"):
        _v2v(plain)(PROMPT, src_video=video, src_mask=mask, src_ref_images=[pic], **KW)
    with pytest.raises(ValueError, match="trained on one reference picture"):
        _v2v(with_ref)(PROMPT, src_video=video, src_mask=mask, src_ref_images=[pic, pic], **KW)
    long_video, long_mask = _source_and_mask(frames=9)
    with pytest.raises(ValueError, match="native length"):
        _v2v(with_ref)(PROMPT, src_video=long_video, src_mask=long_mask, src_ref_images=[pic], **KW)


def test_the_cli_takes_a_reference_picture_and_replays_it(folders, tmp_path, monkeypatch):
    from PIL import Image

    from openwan.cli import main
    from openwan.testing import use_demo
    from openwan.video import read_video
    plain, with_ref = folders
    monkeypatch.chdir(tmp_path)
    Image.fromarray(_picture()).save(tmp_path / "ref.png")
    common = ["--sample_steps", "2", "--base_seed", "4", "--size", "32*32", "--quiet"]
    use_demo(monkeypatch, plain, VARIANT)                 # no expert: refused before anything loads
    assert main(["generate", PROMPT, *common, "--src_ref_images", "ref.png", "-o", "no.mp4"]) == 2
    assert not (tmp_path / "no.mp4").exists()
    use_demo(monkeypatch, with_ref, VARIANT)
    assert main(["generate", PROMPT, *common, "--src_ref_images", "ref.png", "-o", "a.mp4"]) == 0
    rec = json.loads((tmp_path / "a.json").read_text())["openwan"]
    assert rec["src_ref_images"] == "ref.png" and rec["frame_num"] == 5
    assert main(["generate", "--from", "a.json", "-o", "b.mp4", "--quiet"]) == 0
    a, b = read_video(tmp_path / "a.mp4")[0], read_video(tmp_path / "b.mp4")[0]
    assert a.shape[0] == 5 and (a == b).all()
    # with a source video and a mask: masked video-to-video with the picture, recorded and replayed
    video, mask = _source_and_mask()
    from openwan.video import write_video
    write_video(video, tmp_path / "src.mp4", fps=16)
    Image.fromarray(mask[0]).save(tmp_path / "mask.png")
    masked = ["--src_video", "src.mp4", "--src_mask", "mask.png", "--src_ref_images", "ref.png"]
    assert main(["generate", PROMPT, *common, *masked[:2], "--src_ref_images", "ref.png", "-o", "n.mp4"]) == 2
    assert main(["generate", PROMPT, *common, *masked, "-o", "m.mp4"]) == 0
    rec = json.loads((tmp_path / "m.json").read_text())["openwan"]
    assert (rec["task"], rec["src_ref_images"], rec["src_mask"]) == ("v2v", "ref.png", "mask.png")
    assert main(["generate", "--from", "m.json", "-o", "m2.mp4", "--quiet"]) == 0
    a, b = read_video(tmp_path / "m.mp4")[0], read_video(tmp_path / "m2.mp4")[0]
    assert a.shape[0] == 5 and (a == b).all()


def test_convert_keeps_the_reference_expert(folders, tmp_path):
    from openwan.convert import write_components
    from openwan.pipelines.components import load_components
    _, with_ref = folders
    c = load_components(with_ref, variant=VARIANT)
    out = write_components(c, tmp_path / "diffusers", "diffusers")
    back = load_components(out, variant=VARIANT)
    assert back.dit_reference is not None
    for (k, v), (k2, v2) in zip(c.dit_reference.state_dict().items(), back.dit_reference.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_the_server_takes_a_reference_picture(folders):
    from openwan.serve.params import parameter_kinds
    _, with_ref = folders
    assert parameter_kinds(_load(with_ref))["src_ref_images"] == "file"
    assert parameter_kinds(_v2v(with_ref))["src_ref_images"] == "file"     # (with src_video and src_mask)


# ------------------------------------------------------------------ the world's reference pictures and captions

def test_a_reference_picture_shows_the_object_anywhere():
    from openwan.demo import detect, world
    for color, shape in (("red", "square"), ("blue", "circle"), ("white", "triangle")):
        obj = world.Attributes(color, shape, "right")
        centers = []
        for seed in range(3):
            pic = world.reference_picture(obj, np.random.default_rng(seed), size=64)
            det = detect.detect(np.repeat(pic[None], 5, axis=0))
            assert (det["color"], det["shape"], det["motion"]) == (color, shape, "still")
            centers.append(tuple(np.round(det["measurements"]["centroid_start"], 3)))
        assert len(set(centers)) == 3                     # a place of its own per draw


def test_a_reference_prompt_without_a_look_draws_no_warning():
    from openwan.demo.world_captions import outside_world_warning
    assert "no color" in outside_world_warning("the object moving to the right", 2)
    assert outside_world_warning("the object moving to the right", 2, look_given=True) is None
    assert "no motion" in outside_world_warning("the object", 2, look_given=True)
    assert "unknown shape 'star'" in outside_world_warning("a star moving up", 2, look_given=True)


def test_reference_captions_name_the_motion_not_the_look():
    from openwan.demo import world
    rng = np.random.default_rng(0)
    for motion in world.MOTIONS:
        for _ in range(5):
            cap = world.reference_caption(motion, rng)
            assert any(cap.startswith(s + " ") for s in world.REFERENCE_SUBJECTS)
            assert cap.split(" ", 2)[-1] in world.MOTION_PHRASES[motion] or \
                any(cap.endswith(p) for p in world.MOTION_PHRASES[motion])
            assert not any(c in cap.split() for c in world.COLOR_NAMES)
            assert not any(s in cap.split() for s in world.SHAPES)
    assert world.reference_prompt("right") == "the object moving to the right"


# ------------------------------------------------------------------ the recipe's data

def test_latents_with_references_and_a_reference_dataset(tmp_path):
    from openwan.configs import DEMO_VAE
    from openwan.demo import world
    from openwan.demo.latents import encode_latents
    from openwan.demo.train import build_dataset
    from openwan.models.vae import WanVAE
    from openwan.testing import randomize_
    vae = randomize_(WanVAE(DEMO_VAE), 1, std=0.05).eval()
    vae.save_pretrained(tmp_path / "vae")
    path = encode_latents(tmp_path, n_clips=3, captions=2, seed=5, size=32, frames=5, ref=2, batch=2)
    data = torch.load(path, weights_only=False)
    assert data["ref"].shape == (3, 16, 1, 4, 4) and [len(c) for c in data["ref_captions"]] == [2, 2, 2]
    # clip 2's reference: its object's picture drawn from [seed, 6, 2], encoded alone by the (fp16-rounded) VAE
    clip_rng = np.random.default_rng([5, 4, 2])
    clip_rng.random()                                                  # (the two-object draw)
    clip = world.sample_clip(clip_rng, split="train", motions=world.CLASSIC_MOTIONS)
    rng = np.random.default_rng([5, 6, 2])
    pic = world.reference_picture(clip.objects[0], rng, size=32)
    from openwan.demo.latents import load_trained_vae
    z = load_trained_vae(tmp_path).encode(world.to_tensor(pic[None])[None])[0]
    # (clip 2 is alone in its encoder batch, as here: the same computation; a bound of fp32 rounding at the
    # latent's scale all the same, should the batch's layout differ)
    assert (data["ref"][2] - z).abs().max() <= 64 * torch.finfo(torch.float32).eps * float(z.abs().max())
    assert data["ref_captions"][2] == [world.reference_caption(clip.objects[0].motion, rng) for _ in range(2)]
    for caps in data["captions"] + data["ref_captions"]:
        assert all(c in data["text"] for c in caps)
    ds, _ = build_dataset(path, caption_dropout=0.0, reference="both")
    assert len(ds) == 3 * 4                                            # 2 captions + 2 reference captions per clip
    item = ds[0]
    assert item["latent"].shape[1] == 1 + data["latents"].shape[2]
    assert torch.equal(item["latent"][:, :1], data["ref"][0]) and torch.equal(item["latent"][:, 1:], data["latents"][0])
    free, _ = build_dataset(path, caption_dropout=0.0, reference="look-free")
    assert len(free) == 3 * 2 and torch.equal(free[1]["context"], data["text"][data["ref_captions"][0][1]])
    plain, _ = build_dataset(path, caption_dropout=0.0)
    assert len(plain) == 3 * 2 and plain[0]["latent"].shape[1] == data["latents"].shape[2]


def test_a_reference_dataset_needs_reference_latents(tmp_path):
    from openwan.demo.train import build_dataset
    torch.save({"latents": torch.zeros(1, 16, 2, 4, 4), "captions": [["a"]], "attributes": [[("red", "square",
                "left")]], "text": {"a": torch.zeros(2, 4), "": torch.zeros(2, 4)}, "frames": 5}, tmp_path / "l.pt")
    with pytest.raises(ValueError, match="--ref"):
        build_dataset(tmp_path / "l.pt", reference="both")


# ------------------------------------------------------------------ the benchmark's r2v task

@pytest.mark.parametrize("task", ["r2v", "swap"])
def test_bench_reference_tasks_grade_the_picture_s_look_and_the_prompt_s_motion(task, folders, tmp_path, monkeypatch):
    from openwan.demo.bench import main
    from openwan.testing import use_demo
    plain, with_ref = folders
    use_demo(monkeypatch, with_ref, VARIANT)
    out = tmp_path / "r.json"
    assert main(["--task", task, "--limit", "1", "--seeds", "1", "--sample_steps", "2", "--quiet",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    recs = res["videos"]
    assert len(recs) == 2 and {r["split"] for r in recs} == {"seen", "heldout"}
    from openwan.demo import world
    for r in recs:
        assert r["task"] == task and r["prompt"] == world.reference_prompt(r["expected"]["motion"])
        assert r["case"] != r["prompt"] and ("psnr_kept" in r) == (task == "swap")
    use_demo(monkeypatch, plain, VARIANT)
    with pytest.raises(ValueError, match="reference expert"):
        main(["--task", task, "--limit", "1", "--seeds", "1", "--quiet"])
    use_demo(monkeypatch, with_ref, VARIANT)
    with pytest.raises(ValueError, match="--prompts single"):
        main(["--task", task, "--prompts", "two_objects", "--limit", "1", "--seeds", "1", "--quiet"])

# ------------------------------------------------------------------ the prompt extension looks at the picture

def test_the_world_extender_takes_the_look_from_the_picture():
    from openwan import prompt_extend
    from openwan.demo import world
    pic = world.reference_picture(world.Attributes("purple", "triangle", "up"), np.random.default_rng(1), 128)
    look = prompt_extend.picture_look(pic)
    assert look == ("purple", "triangle")
    assert prompt_extend.extend("the object moving to the right", "world", look) == \
        "a purple triangle moving to the right"
    assert prompt_extend.extend("the blue one going up", "world", look) == "a blue triangle moving up"
    assert prompt_extend.extend("a white circle sinking", "world", look) == "a white circle moving down"  # as said
    for unread in ("the object", "a star moving up", "the object moving to the right"):
        assert prompt_extend.extend(unread, "world", None if unread.endswith("right") else look) == unread
    assert prompt_extend.picture_look(np.full((64, 64, 3), 32, np.uint8)) is None          # nothing in it


def test_a_reference_call_extends_its_prompt_from_the_picture(folders):
    _, with_ref = folders
    pipe = _load(with_ref)
    pic = _picture(size=64)                       # a red square (fitted to the model's 32 x 32)
    out = pipe(PROMPT, src_ref_images=[pic], **KW)
    assert out.settings["prompt"] == "a red square moving to the right"
    assert out.settings["prompt_extend"] == {"method": "world", "original": PROMPT}
    off = pipe(PROMPT, src_ref_images=[pic], prompt_extend="off", **KW)
    assert off.settings["prompt"] == PROMPT and off.settings["prompt_extend"] == "off"
    assert not torch.equal(out.latents, off.latents)
    i2v = pipe(PROMPT, image=pic, **KW)                                  # the first frame shows it too
    assert i2v.settings["prompt"] == "a red square moving to the right"


class _RefWorld:
    """A stand-in pipeline for the r2v grading: renders a world clip of the look its reference picture shows
    (``honest``) or of a fixed look, doing the motion its prompt says."""

    def __init__(self, honest: bool):
        from openwan.configs import DEMO_V2_VARIANT
        self.honest, self.sample = honest, DEMO_V2_VARIANT.sample.replace(size="64*64", frame_num=17)

    def defaults(self):
        return self.sample

    def __call__(self, prompt, seed=0, output_path=None, overwrite=False, src_ref_images=None, **kw):
        from openwan import prompt_extend
        from openwan.demo import world
        from openwan.demo.world_captions import understand
        from openwan.pipelines.base import GenerationOutput
        color, shape = prompt_extend.picture_look(src_ref_images[0]) if self.honest else ("white", "square")
        motion = understand(prompt, 1)[0].motion
        clip = world.sample_clip(np.random.default_rng(seed), attributes=[(color, shape, motion)])
        return GenerationOutput(world.render_clip(clip, size=64, frames=17)[None], {"stats": {"dit_forwards": 1}})


def test_bench_r2v_grades_the_look_against_the_picture():
    from openwan.demo import bench_sets, bench_tasks
    from openwan.demo.bench import summarize_all
    cases = bench_sets.cases(["single"])
    honest = summarize_all(bench_tasks.run_cases(_RefWorld(True), "r2v", cases, seeds=(0,), progress=False))
    assert honest["total"]["accuracy"]["all"] == 1.0
    fixed = summarize_all(bench_tasks.run_cases(_RefWorld(False), "r2v", cases, seeds=(0,), progress=False))
    acc = fixed["total"]["accuracy"]
    assert acc["motion"] == 1.0 and acc["color"] < 0.3 and acc["shape"] < 0.5


class _SwapWorld(_RefWorld):
    """swap's stand-ins: ``honest`` draws the picture's look doing the prompt's motion; otherwise the source video
    comes back unchanged (a model that ignores the picture)."""

    def __call__(self, prompt, seed=0, output_path=None, overwrite=False, src_ref_images=None, src_video=None,
                 src_mask=None, **kw):
        from openwan.pipelines.base import GenerationOutput
        assert src_video is not None and src_mask is not None and src_ref_images is not None
        if self.honest:
            return super().__call__(prompt, seed, src_ref_images=src_ref_images)
        return GenerationOutput(np.asarray(src_video)[None], {"stats": {"dit_forwards": 1}})

    @property
    def vae(self):
        from types import SimpleNamespace
        return SimpleNamespace(temporal_ratio=4, spatial_ratio=8)


def test_bench_swap_grades_the_picture_s_look_in_the_source_s_motion():
    from openwan.demo import bench_sets, bench_tasks
    from openwan.demo.bench import summarize_all
    cases = bench_sets.cases(["single"])[::4]
    honest = summarize_all(bench_tasks.run_cases(_SwapWorld(True), "swap", cases, seeds=(0,), progress=False))
    assert honest["total"]["accuracy"]["all"] == 1.0
    recs = bench_tasks.run_cases(_SwapWorld(False), "swap", cases, seeds=(0,), progress=False)
    acc = summarize_all(recs)["total"]["accuracy"]
    # the source is the case's motion in another colour and another shape: none of the look is the picture's
    assert acc["motion"] == 1.0 and acc["color"] == 0.0 and acc["shape"] == 0.0
    assert all(r["psnr_kept"] == float("inf") and r["track_error"] == 0.0 for r in recs)


def test_the_shipped_demo_takes_a_reference_picture_with_no_checkpoint(tmp_path):
    """The shipped default has its reference expert: --src_ref_images with no --ckpt_dir gives its 33 frames at
    128x128, the prompt extended from the picture (2 steps: the routing, not the quality)."""
    from PIL import Image

    from openwan.cli import main
    from openwan.demo import world
    from openwan.video import read_video
    pic = world.reference_picture(world.Attributes("cyan", "triangle", "up"), np.random.default_rng(5), 96)
    Image.fromarray(pic).save(tmp_path / "ref.png")                       # 96 x 96: fitted to 128
    out = tmp_path / "r.mp4"
    assert main(["generate", PROMPT, "--src_ref_images", str(tmp_path / "ref.png"), "--sample_steps", "2",
                 "--save_file", str(out), "--quiet"]) == 0
    assert read_video(out)[0].shape == (33, 128, 128, 3)
    meta = json.loads(out.with_suffix(".json").read_text())["openwan"]
    assert meta["variant"] == "demo" and meta["src_ref_images"].endswith("ref.png")
    assert meta["prompt"] == "a cyan triangle moving to the right" and meta["prompt_extend"]["original"] == PROMPT


def test_the_picture_is_read_only_when_the_prompt_needs_it():
    from openwan import prompt_extend
    reads = []

    def look():
        reads.append(1)
        return ("red", "square")
    assert prompt_extend.extend("a blue circle moving up", "world", look) == "a blue circle moving up"
    assert prompt_extend.extend("a star moving up", "world", look) == "a star moving up"
    assert not reads                                     # readable whole, or outside the world: not looked at
    assert prompt_extend.extend("the object moving up | the object sinking", "world", look) == \
        "a red square moving up | a red square moving down"
    assert len(reads) == 1                               # once for every part


def test_a_word_outside_the_world_is_kept_in_the_canonical_caption():
    from openwan import prompt_extend
    assert prompt_extend.extend("a silver ball ping-ponging between the left and right walls", "world") == \
        "a silver circle bouncing left and right"
    assert prompt_extend.extend("a red star heading west", "world") == "a red star moving to the left"
    assert prompt_extend.extend("a silver star drifting west", "world") == "a silver star moving to the left"
    assert prompt_extend.extend("an indigo ball heading west", "world") == "an indigo circle moving to the left"
    # no color the rules read: none (the model picks one), unless the learned reader is sure of one
    assert prompt_extend.extend("a plum-coloured box heading west", "world", reader=False) == \
        "a square moving to the left"
    # its color and shape read but not one motion: those two, so the model gets them right
    assert prompt_extend.extend("a red circle doing something odd", "world") == "a red circle"
    assert prompt_extend.extend("a red circle moving left and up", "world", reader=False) == "a red circle"
    assert prompt_extend.extend("a red circle moving left and up", "world") in (     # the reader's pick of the two
        "a red circle", "a red circle moving to the left", "a red circle moving up")
    for unread in ("an orange hexagon spinning",                       # no motion, nothing of the world: as it is
                   "the object moving right",                          # no shape, and no picture to see one
                   "a pink orange star moving left"):                  # two colors outside the world for one
        assert prompt_extend.extend(unread, "world") == unread
    assert prompt_extend.extend("a green tile moving right", "world", reader=False) == \
        "a green tile moving right"                                     # a shape the rules cannot tell is one ...
    assert prompt_extend.extend("a green tile moving right", "world") == \
        "a green square moving to the right"                            # ... the learned reader can (a tile)
