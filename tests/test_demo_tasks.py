"""Every task on the embedded default, a TI2V-style model (v2, issue 22): mostly on a tiny random stand-in.

The stand-in (openwan.testing.make_tiny_demo_v2_checkpoint) has DEMO_V2's shape: a ti2v DiT of 16 channels with
patch (1, 2, 2) on the demo's VAE and text encoder, installed as "demo" (openwan.testing.use_demo). Checked: the
routing (t2v / i2v / flf2v in the TI2V pipeline, v2v, VACE refused), the clean frames at both ends (latents,
per-token timesteps, long videos), pictures of another size, the CLI, the server's fields, the benchmark's tasks
and prompt sets. On the shipped model itself: pictures with no checkpoint given (a few steps), and that the
text-to-video student demo-4step refuses pictures with a message that says why.
"""
import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from openwan.cli import main as cli
from openwan.demo.bench_sets import PARAPHRASE_SETS
from openwan.testing import make_tiny_demo_v2_checkpoint, use_demo

PROMPT = "a red circle moving to the right"
SIZE = 64


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return make_tiny_demo_v2_checkpoint(tmp_path_factory.mktemp("demo_v2") / "ckpt", size=SIZE, frame_num=9,
                                        steps=4)


@pytest.fixture
def demo(standin, monkeypatch):
    path, variant = standin
    use_demo(monkeypatch, path, variant)
    return path, variant


@pytest.fixture(scope="module")
def pipe(standin):
    from openwan.pipelines import load_pipeline
    path, variant = standin
    return load_pipeline(path, variant=variant, progress=False)


def clip_frames(attrs=(("red", "circle", "right"),), frames=9, size=SIZE, seed=0):
    from openwan.demo import world
    return world.render_clip(world.sample_clip(np.random.default_rng(seed), attributes=attrs), size=size,
                             frames=frames)


def encode(pipe, picture):
    from openwan.pipelines.ti2v import crop_to
    with torch.inference_mode():
        return pipe.vae.encode(crop_to(picture, SIZE, SIZE)[None, :, None])[0].float()


def spy(pipe, calls):
    dit, orig = pipe.dit, pipe.dit.forward

    def forward(x, t, ctx, **kw):
        calls.append((x.detach().clone(), t.detach().clone()))
        return orig(x, t, ctx, **kw)
    dit.forward = forward
    return lambda: delattr(dit, "forward")


# --------------------------------------------------------------------------- routing and the Python API

def test_load_pipeline_demo_routes_every_picture_task_to_ti2v(demo):
    from openwan.pipelines import load_pipeline
    from openwan.pipelines.ti2v import TextImageToVideo
    from openwan.pipelines.v2v import VideoToVideo
    for task in (None, "t2v", "i2v", "flf2v", "ti2v"):
        p = load_pipeline("demo", task=task, progress=False)
        assert isinstance(p, TextImageToVideo) and p.variant.name == "demo", task
    assert isinstance(load_pipeline("demo", task="v2v", progress=False), VideoToVideo)


def test_vace_on_the_demo_names_the_problem_and_what_to_use(demo):
    from openwan.pipelines import load_pipeline
    with pytest.raises(ValueError) as e:
        load_pipeline("demo", task="vace", progress=False)
    msg = str(e.value)
    assert "VACE layers" in msg and "embedded demo" in msg and "vace-1.3B" in msg and "--src_video" in msg


def test_route_inputs():
    from openwan.pipelines.routing import pipeline_task, route_inputs
    assert pipeline_task("i2v", "ti2v") == pipeline_task("flf2v", "ti2v") == pipeline_task("t2v", "ti2v") == "ti2v"
    assert pipeline_task("i2v", "i2v") == "i2v" and pipeline_task("v2v", "ti2v") == "v2v"
    assert route_inputs("ti2v", "demo", ["image"]) is None
    assert route_inputs("ti2v", "demo", ["first_frame", "last_frame"]) is None
    assert route_inputs("ti2v", "demo", ["src_video"]) == route_inputs("t2v", "t2v-1.3B", ["src_video"]) == "v2v"
    assert route_inputs("vace", "vace-1.3B", ["src_video", "src_mask"]) is None
    assert route_inputs("ti2v", "demo", ["src_video", "src_mask"]) == "v2v"          # masked video-to-video
    assert route_inputs("t2v", "t2v-1.3B", ["src_video", "src_mask"]) == "v2v"
    with pytest.raises(ValueError, match="VACE layers"):
        route_inputs("ti2v", "demo", ["src_video", "src_ref_images"])
    with pytest.raises(ValueError, match="VACE layers"):
        route_inputs("i2v", "i2v-14B-480P", ["src_video", "src_mask"])
    with pytest.raises(ValueError, match="give the video too"):
        route_inputs("ti2v", "demo", ["src_mask"])
    with pytest.raises(ValueError, match="exclude each other"):
        route_inputs("ti2v", "demo", ["src_video", "image"])
    with pytest.raises(ValueError, match="text-to-video only"):
        route_inputs("t2v", "demo", ["image"])
    with pytest.raises(ValueError, match="does not take --first_frame"):
        route_inputs("t2v", "t2v-1.3B", ["first_frame"])


def test_latent_mask_is_the_vaes_grouping_of_the_pixels():
    from openwan.pipelines.v2v import latent_mask
    m = np.zeros((9, 32, 32, 3), np.uint8)
    m[3, 2, 9] = 255                          # one pixel: frame 3 (latent frame 1), block row 0, block column 1
    m[0, 31, 0] = 255                         # frame 0 alone is latent frame 0: block (3, 0)
    got = latent_mask(m, 32, 32, temporal=4, spatial=8)
    want = torch.zeros(1, 3, 4, 4)
    want[0, 1, 0, 1] = want[0, 0, 3, 0] = 1
    assert torch.equal(got, want)
    m[:] = 100                                # grey below the threshold: keep everything
    assert latent_mask(m, 32, 32, 4, 8).sum() == 0


@pytest.fixture(scope="module")
def v2v(standin):
    from openwan.pipelines import load_pipeline
    path, variant = standin
    return load_pipeline(path, variant=variant, task="v2v", progress=False)


def test_masked_video_to_video_keeps_the_unmasked_latents_exactly(v2v):
    """Outside the mask the result is the source's latents exactly (re-imposed at each step's noise level, the
    last at 0); inside it is generated; an all-black mask keeps the whole source; bad masks are named."""
    src = clip_frames(attrs=(("blue", "circle", "right"),))
    with torch.inference_mode():
        from openwan.pipelines.v2v import fit_video, video_to_tensor
        z = v2v.vae.encode(fit_video(video_to_tensor(src), SIZE, SIZE)[None])[0].float()
    mask = np.zeros_like(src)
    mask[:, :, SIZE // 2:] = 255                                      # the right half
    out = v2v(PROMPT, src_video=src, src_mask=mask, seed=2, output_type="latent")
    keep = slice(None), slice(None), slice(None), slice(None, z.shape[-1] // 2)
    gen = slice(None), slice(None), slice(None), slice(z.shape[-1] // 2, None)
    assert torch.equal(out.latents[keep], z[keep]) and not torch.allclose(out.latents[gen], z[gen], atol=1e-2)
    assert out.settings["strength"] == 1.0 and out.settings["mask_share"] == 0.5
    none = v2v(PROMPT, src_video=src, src_mask=np.zeros_like(src), seed=2, output_type="latent")
    assert torch.equal(none.latents, z)
    # past the native length: the windows method by default (one trajectory over the whole source), kept exactly
    long_src = clip_frames(attrs=(("blue", "circle", "right"),), frames=17)
    long = v2v(PROMPT, src_video=long_src, src_mask=np.zeros_like(long_src), seed=2, output_type="latent")
    assert long.settings["long_video"]["method"] == "windows" and long.latents.shape[1] == 5
    with torch.inference_mode():
        z_long = v2v.vae.encode(fit_video(video_to_tensor(long_src), SIZE, SIZE)[None])[0].float()
    assert torch.equal(long.latents, z_long)
    # the continue method carries the mask window by window (openwan.long_video.KeepLatents.window): kept exactly
    half = np.zeros_like(long_src)
    half[:, :, SIZE // 2:] = 255
    cont = v2v(PROMPT, src_video=long_src, src_mask=half, long_method="continue", seed=2, output_type="latent")
    assert cont.settings["long_video"]["method"] == "continue" and cont.latents.shape[1] == 5
    assert torch.equal(cont.latents[keep], z_long[keep])
    assert not torch.allclose(cont.latents[gen], z_long[gen], atol=1e-2)
    with pytest.raises(ValueError, match="frame size"):
        v2v(PROMPT, src_video=src, src_mask=mask[:, :, :40], seed=2, output_type="latent")
    with pytest.raises(ValueError, match="one mask frame per"):
        v2v(PROMPT, src_video=src, src_mask=mask[:3], seed=2, output_type="latent")


def test_text_to_video(pipe):
    out = pipe(PROMPT, seed=1)
    assert out.frames.shape == (1, 9, SIZE, SIZE, 3) and out.settings["task"] == "ti2v"


def test_image_to_video_keeps_the_picture_latent_with_timestep_0(pipe):
    pic = clip_frames()[0]
    z = encode(pipe, pic)
    calls = []
    undo = spy(pipe, calls)
    try:
        out = pipe(PROMPT, image=pic, seed=1, output_type="latent")
    finally:
        undo()
    assert torch.equal(out.latents[:, :1], z)
    per_frame = (SIZE // 8 // 2) ** 2                               # 4 x 4 tokens per latent frame
    for x, t in calls:                                               # CFG batched: [2, L]
        assert (t[:, :per_frame] == 0).all() and (t[:, per_frame:] > 0).all()
        assert torch.equal(x[0, :, :1], z)


def test_first_last_frame_clean_at_both_ends(pipe):
    """Frame 0 := the first picture's latent, the last latent frame := still_latent of the last picture, both
    before the loop and after every step, timestep 0 on both; the frames between are made."""
    from openwan.pipelines.ti2v import crop_to, still_latent
    video = clip_frames()
    first, last = video[0], video[-1]
    z0 = encode(pipe, first)
    with torch.inference_mode():
        zl = still_latent(pipe.vae, crop_to(last, SIZE, SIZE)[None])[0].float()
    calls = []
    undo = spy(pipe, calls)
    try:
        out = pipe(PROMPT, first_frame=first, last_frame=last, seed=1, output_type="latent")
    finally:
        undo()
    lat = out.latents
    assert lat.shape[1] == 3 and torch.equal(lat[:, :1], z0) and torch.equal(lat[:, -1:], zl)
    per_frame = 16
    assert len(calls) == 4
    for x, t in calls:
        assert (t[:, :per_frame] == 0).all() and (t[:, -per_frame:] == 0).all()
        assert (t[:, per_frame:-per_frame] > 0).all()
        assert torch.equal(x[0, :, :1], z0) and torch.equal(x[0, :, -1:], zl)
    assert "last_frame" not in out.settings and out.settings["video_size"] == f"{SIZE}*{SIZE}"   # arrays: no path


def test_still_latent_is_the_recipes():
    """The pipeline's still_latent is the one the demo recipe trains on (one function, not two copies)."""
    from openwan.demo.latents import still_latent as recipe
    from openwan.pipelines.ti2v import still_latent
    assert recipe is still_latent


def test_pictures_of_another_size_are_fitted_to_the_demo_size(pipe, tmp_path):
    from openwan.pipelines.ti2v import crop_to
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 255, (50, 120, 3), dtype=np.uint8)
    tall = rng.integers(0, 255, (90, 40, 3), dtype=np.uint8)
    out = pipe(PROMPT, first_frame=wide, last_frame=tall, seed=2, output_type="latent")
    assert out.settings["video_size"] == f"{SIZE}*{SIZE}" and out.latents.shape[2:] == (8, 8)
    with torch.inference_mode():
        z = pipe.vae.encode(crop_to(wide, SIZE, SIZE)[None, :, None])[0].float()
    assert torch.equal(out.latents[:, :1], z)
    assert pipe(PROMPT, image=tall, seed=2).frames.shape == (1, 9, SIZE, SIZE, 3)
    with pytest.raises(ValueError, match="not supported"):           # the one size, as for text-to-video
        pipe(PROMPT, image=tall, size="32*32")


def test_picture_arguments_checked(pipe):
    pic = clip_frames()[0]
    with pytest.raises(ValueError, match="pass one of them"):
        pipe(PROMPT, image=pic, first_frame=pic)
    with pytest.raises(ValueError, match="last_frame goes with first_frame"):
        pipe(PROMPT, last_frame=pic)
    with pytest.raises(ValueError, match="at least 2 latent frames"):
        pipe(PROMPT, first_frame=pic, last_frame=pic, frame_num=1)


@pytest.mark.parametrize("method,refine", [("windows", 0), ("continue", 0), ("continue", 0.7)])
def test_first_last_frame_past_the_native_length(pipe, method, refine):
    """17 frames = 5 latent frames over windows of 3: the first picture conditions the first window, the last
    picture the last window (timestep 0 on its last frame's tokens there only); the ends are exact, also through
    the refinement pass of ``continue``."""
    from openwan.pipelines.ti2v import crop_to, still_latent
    video = clip_frames(frames=17)
    z0 = encode(pipe, video[0])
    with torch.inference_mode():
        zl = still_latent(pipe.vae, crop_to(video[-1], SIZE, SIZE)[None])[0].float()
    calls = []
    undo = spy(pipe, calls)
    try:
        out = pipe(PROMPT, first_frame=video[0], last_frame=video[-1], frame_num=17, long_method=method, seed=1,
                   output_type="latent", long_refine=refine)
    finally:
        undo()
    lat = out.latents
    assert lat.shape[1] == 5 and torch.equal(lat[:, :1], z0) and torch.equal(lat[:, -1:], zl)
    windows = out.settings["long_video"]["windows"]
    assert windows >= 2 and out.settings["long_video"].get("refine") == (refine or None)
    tail = (len(calls) - 4 * windows) // 3      # the refinement pass: its 3 windows (of 3 sharing 2) x its steps
    assert len(calls) == 4 * windows + 3 * tail and (tail > 0) == bool(refine)
    # the last window, 4 steps (and the pass's last window, its steps)
    assert sum(t.dim() == 2 and bool((t[:, -16:] == 0).all()) for _, t in calls) == 4 + tail


def test_v2v_on_a_ti2v_dit(demo):
    from openwan.pipelines import load_pipeline
    p = load_pipeline("demo", task="v2v", progress=False)
    src = clip_frames(attrs=(("blue", "circle", "right"),))
    out = p(PROMPT, src_video=src, strength=0.8, seed=0)
    assert out.frames.shape == (1, 9, SIZE, SIZE, 3) and out.settings["steps_run"] >= 1
    assert out.settings["task"] == "v2v"
    # the demo's v2v default: a guidance interval (7 at t >= 500, 2 below); text-to-video keeps guidance 2
    assert out.settings["guide_scale"] == (2.0, 7.0) and out.settings["guide_boundary"] == 0.5
    assert load_pipeline("demo", progress=False).defaults().guide_scales is None


def test_server_takes_the_picture_fields(pipe):
    from openwan.serve.params import parameter_kinds
    kinds = parameter_kinds(pipe)
    assert kinds["image"] == kinds["first_frame"] == kinds["last_frame"] == "file"


# --------------------------------------------------------------------------- the command line

def save_png(arr, path):
    Image.fromarray(arr).save(path)
    return path


def test_cli_every_task_on_the_demo(demo, tmp_path, capsys):
    from openwan.video import read_video, write_video
    video = clip_frames()
    first = save_png(np.ascontiguousarray(video[0][:, 8:]), tmp_path / "first.png")   # 64 x 56: fitted
    last = save_png(video[-1], tmp_path / "last.png")
    src = write_video(clip_frames(attrs=(("blue", "circle", "right"),)), tmp_path / "src.mp4", fps=16)
    runs = {"t2v": [], "i2v": ["--image", str(first)], "flf2v": ["--first_frame", str(first), "--last_frame",
                                                                  str(last)],
            "v2v": ["--src_video", str(src), "--strength", "0.8"]}
    for name, args in runs.items():
        out = tmp_path / f"{name}.mp4"
        rc = cli(["generate", PROMPT, *args, "--base_seed", "1", "--save_file", str(out), "--quiet"])
        assert rc == 0, (name, capsys.readouterr().err)
        frames, _ = read_video(out)
        assert frames.shape == (9, SIZE, SIZE, 3), name
        meta = json.loads(out.with_suffix(".json").read_text())["openwan"]
        assert meta["task"] == ("v2v" if name == "v2v" else "ti2v") and meta["variant"] == "demo"
    meta = json.loads((tmp_path / "flf2v.json").read_text())["openwan"]
    assert meta["first_frame"] == str(first) and meta["last_frame"] == str(last)
    again = tmp_path / "again.mp4"                                   # --from reproduces first-last-frame
    assert cli(["generate", "--from", str(tmp_path / "flf2v.json"), "--save_file", str(again), "--quiet"]) == 0
    assert np.array_equal(read_video(again)[0], read_video(tmp_path / "flf2v.mp4")[0])
    capsys.readouterr()
    rc = cli(["generate", PROMPT, "--src_video", str(src), "--src_ref_images", str(first), "--quiet",
              "--save_file", str(tmp_path / "vace.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and "VACE layers" in err and "vace-1.3B" in err and "--src_mask" in err and "Traceback" not in err
    assert not (tmp_path / "vace.mp4").exists()
    mask = np.zeros((SIZE, SIZE, 3), np.uint8)
    mask[:, SIZE // 2:] = 255                                          # generate the right half, keep the left
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert cli(["generate", PROMPT, "--src_video", str(src), "--src_mask", str(tmp_path / "mask.png"), "--quiet",
                "--save_file", str(tmp_path / "masked.mp4")]) == 0
    meta = json.loads((tmp_path / "masked.json").read_text())["openwan"]
    assert meta["task"] == "v2v" and meta["src_mask"] == str(tmp_path / "mask.png") and meta["strength"] == 1.0
    assert meta["mask_share"] == 0.5


def test_cli_shipped_demo_takes_pictures_with_no_checkpoint(tmp_path, capsys):
    """The shipped default (v2) with no --ckpt_dir: --image and --first_frame/--last_frame give its 33 frames at
    128x128 (pictures of another size fitted), recorded as the TI2V task (2 steps: the routing, not the quality)."""
    from openwan.video import read_video
    video = clip_frames(size=128, frames=33)
    first = save_png(np.ascontiguousarray(video[0][:, 16:]), tmp_path / "first.png")     # 128 x 112: fitted
    last = save_png(video[-1], tmp_path / "last.png")
    for name, args in {"i2v": ["--image", str(first)],
                       "flf2v": ["--first_frame", str(first), "--last_frame", str(last)]}.items():
        out = tmp_path / f"{name}.mp4"
        rc = cli(["generate", PROMPT, *args, "--sample_steps", "2", "--save_file", str(out), "--quiet"])
        assert rc == 0, (name, capsys.readouterr().err)
        assert read_video(out)[0].shape == (33, 128, 128, 3), name
        meta = json.loads(out.with_suffix(".json").read_text())["openwan"]
        assert meta["task"] == "ti2v" and meta["variant"] == "demo" and meta["sample_steps"] == 2


def test_cli_the_student_takes_pictures_and_a_t2v_demo_refuses_them(tmp_path, capsys):
    """demo-4step (distilled from v2, a TI2V-style DiT) animates a picture like its teacher; a text-to-video demo
    model (v1) refuses one before loading, naming what to use."""
    from openwan.pipelines.routing import route_inputs
    from openwan.video import read_video
    pic = clip_frames(size=128, frames=5)[0]
    path = save_png(pic, tmp_path / "p.png")
    out = tmp_path / "x.mp4"
    assert cli(["generate", PROMPT, "--task", "demo-4step", "--image", str(path), "--save_file", str(out),
                "--quiet"]) == 0, capsys.readouterr().err
    meta = json.loads(out.with_suffix(".json").read_text())["openwan"]
    assert meta["variant"] == "demo-4step" and meta["task"] == "ti2v" and meta["sample_timesteps"] == [999, 900, 750, 500]
    frame0 = read_video(out)[0][0].astype(np.float64)
    mse = np.mean((frame0 - pic.astype(np.float64)) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) >= 25            # frame 0 is the picture, through the VAE
    with pytest.raises(ValueError, match="text-to-video only") as e:
        route_inputs("t2v", "demo", ["image"])
    assert "TI2V" in str(e.value)


# --------------------------------------------------------------------------- the benchmark

class WorldPipe:
    """A stand-in pipeline that draws what it is asked, exactly: the benchmark's own clip of the prompt's case
    (so i2v/flf2v pictures match, v2v keeps the source's placement in the prompt's colours)."""

    def __init__(self, task, cases, size=SIZE, frames=9):
        from openwan.configs import DEMO_V2_SAMPLE
        self.task, self.cases = task, {c.prompt: (i, c) for i, c in enumerate(cases)}
        self.sample = DEMO_V2_SAMPLE.replace(frame_num=frames, size=f"{size}*{size}", sizes=(f"{size}*{size}",))
        self.inputs = []
        self.vae = type("VAEShape", (), {"temporal_ratio": 4, "spatial_ratio": 8})()     # what masked v2v needs

    def defaults(self):
        return self.sample

    def __call__(self, prompt, seed=0, output_path=None, overwrite=False, **kw):
        from openwan.demo import world
        from openwan.demo.bench_tasks import source_clip
        from openwan.pipelines.base import GenerationOutput
        self.inputs.append(sorted(k for k in kw if k in ("image", "first_frame", "last_frame", "src_video",
                                                         "src_mask")))
        i, case = self.cases[prompt]
        video = world.render_clip(source_clip(case, i, seed), size=SIZE, frames=self.sample.frame_num)
        return GenerationOutput(video[None], {"stats": {"dit_forwards": 1}})


@pytest.mark.parametrize("task", ["t2v", "i2v", "flf2v", "v2v", "vace"])
def test_bench_tasks_grade_a_perfect_model_perfect(task):
    from openwan.demo import bench_sets, bench_tasks
    from openwan.demo.bench import summarize_all
    cases = [c for name in bench_sets.SETS for c in bench_sets.cases([name])[:2]]
    fake = WorldPipe(task, cases)
    records = bench_tasks.run_cases(fake, task, cases, seeds=(0,), progress=False)
    assert fake.inputs[0] == {"t2v": [], "i2v": ["image"], "flf2v": ["first_frame", "last_frame"],
                              "v2v": ["src_video"], "vace": ["src_mask", "src_video"]}[task]
    s = summarize_all(records)
    for key in ("total",):
        assert s[key]["accuracy"]["all"] == 1.0 and s["paraphrase"][key]["accuracy"]["all"] == 1.0
        assert s["paraphrase2"][key]["accuracy"]["all"] == 1.0 and s["paraphrase3"][key]["accuracy"]["all"] == 1.0
        assert s["two_objects"][key]["accuracy"]["all"] == 1.0 and s["two_objects"][key]["scenes_all"] == 1.0
        assert s["two_objects"][key]["scenes_found"] == 1.0
    fid = s.get("fidelity", {})
    if task in ("i2v", "flf2v"):
        assert fid["psnr_first"]["min"] == float("inf")
    if task == "flf2v":
        assert fid["psnr_last"]["min"] == float("inf")
    if task == "vace":                                               # the object changed inside its mask only
        assert fid["psnr_kept"]["min"] == float("inf") and fid["v2v"]["strength"] == 1.0
    if task in ("v2v", "vace"):                                      # colour changed to the prompt's, path kept
        assert fid["v2v"]["track_error_mean"] < 0.01 and fid["v2v"]["kept_source_color"] == 0.0   # < 1 px of 64
        assert all(r["source_colors"][0] != r["expected"]["color"] for r in records if "expected" in r)
    met = bench_tasks.task_targets(s)
    assert all(met.values()) and ("psnr_first" in met) == (task in ("i2v", "flf2v"))


def test_a_prompt_the_call_refuses_is_a_wrong_video_not_the_end_of_the_run():
    from openwan.demo import bench_sets, bench_tasks
    from openwan.demo.bench import format_report, summarize_all
    cases = bench_sets.cases(["paraphrase"])[:2] + bench_sets.two_object_cases()[:1]
    cases[0] = cases[0]._replace(prompt="a red square | heading left")
    fake = WorldPipe("t2v", cases)
    calls = fake.__call__

    def pipe(prompt, **kw):
        if "|" in prompt:
            raise ValueError("a prompt schedule ('|') needs a video longer than the model's 9 frames")
        return calls(prompt, **kw)
    pipe.defaults = fake.defaults
    records = bench_tasks.run_cases(pipe, "t2v", cases, seeds=(0, 1), progress=False)
    assert len(records) == 6 and [r.get("refused") is not None for r in records] == [True, True] + [False] * 4
    assert records[0]["correct"] == {"color": False, "shape": False, "motion": False, "all": False}
    assert records[2]["correct"]["all"] and records[4]["correct"]["all"]
    s = summarize_all(records)
    assert s["paraphrase"]["total"]["accuracy"]["all"] == 0.5 and s["refused"]["videos"] == 2
    assert "refused: 2 videos, counted wrong" in format_report(s, {})
    two = bench_tasks.refused(cases[2], cases[2].prompt, 0, "no")
    assert two["correct"]["all"] is False and len(two["objects"]) == 2


def test_object_mask_covers_the_object_and_keeps_the_rest():
    from openwan.demo import bench_sets, bench_tasks, world
    case = bench_sets.cases(["single"])[0]
    clip = bench_tasks.source_clip(case, 0, 0)
    video = world.render_clip(clip, size=(64, 64), frames=9)
    mask = bench_tasks.object_mask(video, clip.background)
    bg = np.asarray(clip.background).round()
    obj = np.abs(video.astype(np.int16) - bg).max(-1) > 0
    assert obj.any() and (mask[..., 0][obj] == 255).all()             # every object pixel is to be generated
    assert 0 < (mask[..., 0] == 255).mean() < 0.5                      # a box around it, not the frame
    assert (mask[..., 0] == 0).any(axis=(1, 2)).all()
    gen = bench_tasks.regenerated_pixels(mask, type("P", (), {"vae": type("V", (), {"temporal_ratio": 4,
                                                                                    "spatial_ratio": 8})()})())
    assert gen.shape == mask.shape[:3] and gen[mask[..., 0] == 255].all()          # the cells cover the mask
    assert gen.mean() <= 0.75 and (gen[1:5] == gen[1]).all()      # latent frame 1 = frames 1-4: one set of cells


def test_bench_cli_tasks_on_the_standin(demo, tmp_path):
    from openwan.demo.bench import main
    for task in ("i2v", "flf2v", "v2v", "vace"):
        out = tmp_path / f"{task}.json"
        assert main(["--task", task, "--limit", "1", "--seeds", "1", "--prompts", "single,two_objects",
                     "--json", str(out), "--quiet"]) == 0
        r = json.loads(out.read_text())
        assert r["settings"]["task"] == task and r["settings"]["prompts"] == ["single", "two_objects"]
        assert len(r["videos"]) == 4 and {"seen", "heldout", "two_objects", "fidelity"} <= set(r["summary"])
        assert "two_objects" in r["meets_targets"] and r["task_targets"]["two_objects"] == 0.85
    assert "psnr_last" in json.loads((tmp_path / "flf2v.json").read_text())["summary"]["fidelity"]
    out = tmp_path / "fresh.json"                                    # --first_seed: fresh seeds
    assert main(["--limit", "1", "--seeds", "2", "--first_seed", "5", "--json", str(out), "--quiet"]) == 0
    r = json.loads(out.read_text())
    assert [v["seed"] for v in r["videos"]] == [5, 6, 5, 6] and r["settings"]["first_seed"] == 5


def test_bench_i2v_on_a_text_to_video_model_says_why(tmp_path):
    from openwan.demo.bench import main
    from openwan.testing import make_tiny_checkpoint
    t2v = make_tiny_checkpoint(tmp_path / "t2v", "tiny-t2v")
    with pytest.raises(ValueError, match="text-to-video model"):
        main(["--ckpt_dir", str(t2v), "--task", "i2v", "--limit", "1", "--seeds", "1", "--quiet"])


def test_bench_task_demo_4step_still_names_the_model():
    from types import SimpleNamespace as NS

    from openwan.demo.bench import _model_and_task
    assert _model_and_task(NS(task="demo-4step", model=None)) == ("demo-4step", "t2v")
    assert _model_and_task(NS(task=None, model=None)) == ("demo", "t2v")
    assert _model_and_task(NS(task="v2v", model="demo-4step")) == ("demo-4step", "v2v")
    with pytest.raises(ValueError, match="contradicts"):
        _model_and_task(NS(task="demo", model="demo-4step"))


# --------------------------------------------------------------------------- prompt sets and detection

def _all_captions(attrs):
    """Every caption the world's templates (the wide style's too) can write for one object of these attributes."""
    from openwan.demo import world
    shapes = (attrs.shape,) + world.SHAPE_SYNONYMS.get(attrs.shape, ())
    colors = (attrs.color,) + world.COLOR_SYNONYMS.get(attrs.color, ())
    sizes = ("",) + tuple(w for ws in world.SIZE_WORDS.values() for w in ws)
    return {t.format(color=c, shape=s, motion=m, size=z)
            for t, c, s, m, z in itertools.product(world.caption_templates(wide=True), colors, shapes,
                                                   world.caption_phrases(attrs.motion, wide=True), sizes)}


@pytest.mark.parametrize("name", PARAPHRASE_SETS)
def test_paraphrases_are_never_training_captions(name):
    from openwan.demo import bench_sets, world
    cases = bench_sets.cases([name])
    assert {c.split for c in cases} == {"seen", "heldout"} and len({c.prompt for c in cases}) == len(cases)
    phrases = [p for m in world.MOTIONS for p in world.caption_phrases(m, wide=True)]
    for c in cases:
        assert c.prompt not in _all_captions(c.objects[0]), c.prompt
        assert not [p for p in phrases if p in c.prompt.lower()], c.prompt
    assert {a for c in cases for a in (c.objects[0].color,)} == set(world.COLOR_NAMES)
    assert all(a.shape in world.SHAPES and a.motion in world.MOTIONS for c in cases for a in c.objects)


def test_paraphrase_sets_file_is_well_formed():
    """Each set of assets/paraphrase_sets.json says how it was written; its names are in order, prompts unique."""
    import json

    from openwan.demo import bench_sets
    sets = json.loads(bench_sets._PARAPHRASE_FILE.read_text(encoding="utf-8"))
    assert list(sets) == ["paraphrase"] + [f"paraphrase{k}" for k in range(2, len(sets) + 1)]
    assert PARAPHRASE_SETS == tuple(sets)
    for name, entry in sets.items():
        assert set(entry) == {"about", "prompts"} and f"({name})" in entry["about"], name
        assert all(len(p) == 4 and all(isinstance(x, str) and x for x in p) for p in entry["prompts"]), name
    prompts = [p[3] for entry in sets.values() for p in entry["prompts"]]
    assert len(set(prompts)) == len(prompts)


def test_two_object_scenes_parse_and_split():
    from openwan.demo import bench_sets, world
    cases = bench_sets.two_object_cases()
    assert cases[0].prompt == "a red circle moving to the left and a blue square moving to the right"
    for c in cases:
        assert world.parse_objects(c.prompt) == list(c.objects) and c.objects[0].color != c.objects[1].color
        assert c.split == ("heldout" if set(c.objects) & world.HELD_OUT else "seen")
    assert {c.split for c in cases} == {"seen", "heldout"}


def test_two_objects_detected_per_object_on_the_world():
    """The detector finds both objects of every benchmark scene rendered by the world (its ground truth)."""
    from openwan.demo import bench_sets, bench_tasks, detect
    cases = bench_sets.two_object_cases()
    for i, case in enumerate(cases):                     # the first demo's size, and a few at the next one's
        for size, frames in ((64, 17),) + (((128, 33),) if i < 3 else ()):
            video = clip_frames(attrs=case.objects, frames=frames, size=size, seed=i)
            scores = detect.score_scene(detect.detect_objects(video, n_objects=2), case.objects)
            assert all(s["all"] for s in scores), (case.prompt, size)
            assert bench_tasks.grade(video, case)["correct"]["all"]


def test_match_objects_grades_shape_and_motion_when_a_colour_is_wrong():
    from openwan.demo import detect
    from openwan.demo.world import Attributes
    red_circle, blue_square = Attributes("red", "circle", "left"), Attributes("blue", "square", "right")
    seen = [{"color": "blue", "shape": "square", "motion": "right"},
            {"color": "purple", "shape": "circle", "motion": "left"}]          # red drawn purple
    by_color = detect.score_objects(seen, [red_circle, blue_square])
    best = detect.score_scene(seen, [red_circle, blue_square])
    assert by_color[0] == {"color": False, "shape": False, "motion": False, "all": False}
    assert best[0] == {"color": False, "shape": True, "motion": True, "all": False} and best[1]["all"]
    assert detect.score_scene(seen[:1], [red_circle, blue_square])[0]["all"] is False   # one object drawn


def test_bench_ckpt_dir_of_a_ti2v_export_takes_the_v2_defaults(standin, tmp_path):
    """`openwan bench demo --ckpt_dir EXPORT` of a TI2V-style model (a candidate, or the shipped folder):
    DEMO_V2_VARIANT's defaults (a v1 folder: DEMO_V1_VARIANT's, tests/test_demo.py)."""
    from openwan.configs import DEMO_V2_VARIANT, DEMO_VARIANT
    from openwan.demo import DEMO_DIR
    from openwan.demo.bench import _ckpt_variant
    assert _ckpt_variant(standin[0]) is DEMO_V2_VARIANT
    assert _ckpt_variant(DEMO_DIR) is DEMO_V2_VARIANT is DEMO_VARIANT
    assert _ckpt_variant(tmp_path) == "demo"                         # not a checkpoint: load_pipeline says why


def test_paraphrase_summary_splits_classic_and_looping_motions():
    from openwan.demo.bench import summarize_all
    from openwan.demo.bench_tasks import format_extra

    def rec(motion, right):
        ok = {"color": True, "shape": True, "motion": right}
        return {"set": "paraphrase4", "split": "seen", "seconds": 1.0, "expected": {"color": "red", "shape": "circle",
                "motion": motion}, "detected": {}, "correct": {**ok, "all": all(ok.values())}}
    s = summarize_all([rec("left", True), rec("up", False), rec("circling", False)])["paraphrase4"]
    assert s["classic"]["videos"] == 2 and s["classic"]["accuracy"]["motion"] == 0.5
    assert s["looping"]["videos"] == 1 and s["looping"]["accuracy"]["motion"] == 0.0
    assert any(line.startswith("classic ") for line in format_extra({"paraphrase4": s}))
    only_classic = summarize_all([rec("left", True)])["paraphrase4"]
    assert "classic" not in only_classic and "looping" not in only_classic
