"""A checkpoint's continuation expert (``continuation_model/``, Components.dit_continue): a DiT of the same
architecture fine-tuned on continuing videos, run on the windows after the first of the ``continue`` long-video
method; the first window and every native-length call run the main DiT, so they are unchanged. Tiny random
stand-in of the embedded demo (openwan.testing.make_tiny_demo_v2_checkpoint): 5 frames native, 2 latent frames."""
import json
import shutil

import pytest
import torch

from openwan.pipelines import load_pipeline
from openwan.pipelines.components import CONTINUATION_DIR
from openwan.testing import make_tiny_demo_with_expert

KW = dict(sample_steps=2, seed=4, output_type="latent", long_refine=0)     # the windows as made (no refinement pass)
VARIANT = None          # the stand-in's variant (5 frames native), set by the fixture
PROMPT = "a red circle moving to the right"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(plain folder, the same folder with a continuation expert of other weights)."""
    global VARIANT
    plain, with_expert, VARIANT = make_tiny_demo_with_expert(tmp_path_factory.mktemp("expert"))
    return plain, with_expert


def _load(folder):
    return load_pipeline(folder, variant=VARIANT, progress=False)


def _count_calls(module, calls: list, name: str):
    return module.register_forward_pre_hook(lambda m, args: calls.append(name))


def test_the_expert_loads_beside_the_main_dit(folders):
    plain, with_expert = folders
    assert _load(plain).c.dit_continue is None
    pipe = _load(with_expert)
    expert = pipe.c.dit_continue
    assert expert is not None and expert is not pipe.dit and expert.config == pipe.dit.config
    assert any(not torch.equal(a, b) for a, b in zip(expert.state_dict().values(), pipe.dit.state_dict().values()))


def test_later_windows_run_the_expert_the_first_the_main_dit(folders):
    plain, with_expert = folders
    pipe = _load(with_expert)
    calls = []
    handles = [_count_calls(pipe.dit, calls, "main"), _count_calls(pipe.c.dit_continue, calls, "expert")]
    try:
        out = pipe(PROMPT, frame_num=17, long_method="continue", long_overlap=1, **KW)
    finally:
        for h in handles:
            h.remove()
    lv = out.settings["long_video"]
    assert lv["expert"] is True and lv["windows"] == 4               # 5 latent frames, windows of 2 sharing 1
    assert calls == ["main"] * 2 + ["expert"] * 2 * 3                # 2 steps (batched CFG) per window
    ref = _load(plain)(PROMPT, frame_num=17, long_method="continue", long_overlap=1, **KW)
    assert "expert" not in ref.settings["long_video"]
    assert torch.equal(out.latents[:, :2], ref.latents[:, :2])        # window 0: the main DiT's, bit for bit
    assert not torch.equal(out.latents[:, 2:], ref.latents[:, 2:])    # the later windows: the expert's
    off = pipe(PROMPT, frame_num=17, long_method="continue", long_overlap=1, long_expert=False, **KW)
    assert torch.equal(off.latents, ref.latents) and "expert" not in off.settings["long_video"]


@pytest.mark.parametrize("extra", [{}, {"long_method": "windows", "frame_num": 17}])
def test_native_length_and_windows_never_run_the_expert(folders, extra):
    plain, with_expert = folders
    pipe = _load(with_expert)
    calls = []
    h = _count_calls(pipe.c.dit_continue, calls, "expert")
    try:
        out = pipe(PROMPT, **extra, **KW)
    finally:
        h.remove()
    assert calls == []
    assert torch.equal(out.latents, _load(plain)(PROMPT, **extra, **KW).latents)


def test_bad_long_expert_settings_are_named(folders):
    plain, with_expert = folders
    with pytest.raises(ValueError, match="no continuation expert"):
        _load(plain)(PROMPT, frame_num=17, long_method="continue", long_overlap=1, long_expert=True, **KW)
    with pytest.raises(ValueError, match="long_method='continue'"):
        _load(with_expert)(PROMPT, frame_num=17, long_method="windows", long_expert=True, **KW)
    with pytest.raises(ValueError, match="True or False"):
        _load(with_expert)(PROMPT, frame_num=17, long_overlap=1, long_expert="yes", **KW)


def test_an_expert_taking_other_inputs_is_refused_and_one_of_another_depth_loads(folders, tmp_path):
    from openwan.checkpoints import CheckpointError
    from openwan.models.dit import WanModel
    plain, _ = folders
    bad = tmp_path / "bad"
    shutil.copytree(plain, bad)
    dit = WanModel.from_pretrained(plain, dtype=torch.float32)
    WanModel(dit.config.replace(text_dim=2 * dit.config.text_dim)).save_pretrained(bad / CONTINUATION_DIR)
    with pytest.raises(CheckpointError, match="continuation expert's DiT takes other inputs .*text_dim"):
        _load(bad)
    # another depth is the expert's own (openwan.demo.grow.deepen); the rest of its config is the main DiT's
    shutil.rmtree(bad / CONTINUATION_DIR)
    WanModel(dit.config.replace(num_layers=dit.config.num_layers + 1)).save_pretrained(bad / CONTINUATION_DIR)
    assert _load(bad).c.dit_continue.config == dit.config.replace(num_layers=dit.config.num_layers + 1)


def test_the_cli_records_and_replays_the_expert(folders, tmp_path, monkeypatch):
    from openwan.cli import main
    plain, with_expert = folders
    from openwan.testing import use_demo
    use_demo(monkeypatch, with_expert, VARIANT)      # the embedded default, as a user runs it
    monkeypatch.chdir(tmp_path)
    common = ["--sample_steps", "2", "--base_seed", "4", "--frame_num", "17",
              "--long_overlap", "1", "--size", "32*32", "--quiet"]
    assert main(["generate", PROMPT, *common, "-o", "on.mp4"]) == 0
    assert main(["generate", PROMPT, *common, "--long_expert", "off", "-o", "off.mp4"]) == 0
    on = json.loads((tmp_path / "on.json").read_text())["openwan"]
    off = json.loads((tmp_path / "off.json").read_text())["openwan"]
    assert on["long_video"]["expert"] is True and "expert" not in off["long_video"]
    assert main(["generate", "--from", "off.json", "-o", "again.mp4", "--quiet"]) == 0      # replays without the expert
    again = json.loads((tmp_path / "again.json").read_text())["openwan"]
    assert "expert" not in again["long_video"]
    from openwan.video import read_video
    assert (read_video(tmp_path / "again.mp4")[0] == read_video(tmp_path / "off.mp4")[0]).all()
    assert not (read_video(tmp_path / "on.mp4")[0] == read_video(tmp_path / "off.mp4")[0]).all()


def test_two_experts_and_a_continuation_expert_are_refused(tmp_path):
    """Wan 2.2 A14B's folder with a continuation_model/: refused when loading, with the fix."""
    from openwan.checkpoints import CheckpointError
    from openwan.models.dit import WanModel
    from openwan.testing import make_tiny_wan22_checkpoint
    folder = make_tiny_wan22_checkpoint(tmp_path / "a14b", "t2v-A14B")
    dit = WanModel.from_pretrained(folder / "high_noise_model", dtype=torch.float32)
    dit.save_pretrained(folder / CONTINUATION_DIR)
    with pytest.raises(CheckpointError, match="does not combine"):
        load_pipeline(folder, progress=False)
