"""Videos sampled during training (the config's ``validation`` section, openwan/training/validation.py): they are
the trained model's, written where the docs say, and leave the training itself unchanged."""
import csv

import numpy as np
import pytest
from training_helpers import config, write_clip

from openwan.training.trainer import Trainer


@pytest.fixture(scope="module")
def ckpt_and_data(tmp_path_factory):
    from openwan.testing import make_tiny_checkpoint
    root = tmp_path_factory.mktemp("val")
    ckpt = make_tiny_checkpoint(root / "ckpt")
    for i in range(2):
        write_clip(root / f"c{i}.mp4", frames=5, h=32, w=32)
    (root / "d.csv").write_text("path,caption\nc0.mp4,a square\nc1.mp4,a moving square\n")
    return ckpt, root


def _cfg(root, ckpt, out, steps=4, **kw):
    data = {"file": str(root / "d.csv"), "buckets": [[5, 32, 32]], "cache_dir": str(root / "cache")}
    return config(out, model={"path": str(ckpt)}, data=data, steps=steps, batch_size=1,
                  optimizer={"lr": 5e-2}, lora={"rank": 2}, save_final=True, **kw)


VALIDATION = {"prompts": ["a square", "a moving square"], "seed": 3, "sample_steps": 2, "size": "32*32",
              "frame_num": 5}


def test_samples_are_the_trained_models_and_leave_training_unchanged(ckpt_and_data, tmp_path):
    from openwan import load_pipeline
    from openwan.training.lora import load_lora
    from openwan.video import read_video
    ckpt, root = ckpt_and_data
    Trainer(_cfg(root, ckpt, tmp_path / "plain")).train()
    Trainer(_cfg(root, ckpt, tmp_path / "val", validate_every=2, validation=VALIDATION)).train()
    rows = lambda d: list(csv.reader(open(tmp_path / d / "loss.csv")))  # noqa: E731
    # sampling draws from its own seeded generator: the run's losses are the same, bit for bit
    assert [r[:2] for r in rows("val")] == [r[:2] for r in rows("plain")]
    for step in (2, 4):
        folder = tmp_path / "val" / "samples" / f"step-{step:08d}"
        assert sorted(p.name for p in folder.iterdir()) == ["00.json", "00.mp4", "01.json", "01.mp4"]
    # the last samples are those of the exported LoRA on the checkpoint (same seed and settings), and differ from
    # the checkpoint without it: the trained model sampled them
    pipe = load_pipeline(str(ckpt), progress=False)
    kw = {k: VALIDATION[k] for k in ("seed", "sample_steps", "size", "frame_num")}
    base = pipe("a moving square", **kw).frames
    load_lora(pipe.dit, tmp_path / "val" / "lora.safetensors")
    tuned = pipe("a moving square", **kw).frames
    written, _ = read_video(tmp_path / "val" / "samples" / "step-00000004" / "01.mp4")
    assert np.abs(tuned.astype(int) - base.astype(int)).max() > 10
    ref = tmp_path / "ref.mp4"
    pipe("a moving square", output_path=ref, **kw)  # the same encoder: the same file when the frames are equal
    assert np.array_equal(written, read_video(ref)[0])


def test_a_failed_sample_warns_and_training_goes_on(ckpt_and_data, tmp_path, monkeypatch):
    from openwan.pipelines.base import WanPipeline
    ckpt, root = ckpt_and_data
    tr = Trainer(_cfg(root, ckpt, tmp_path / "run", validation=VALIDATION))

    def out_of_memory(self, *a, **k):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(WanPipeline, "generate", out_of_memory)
    with pytest.warns(UserWarning) as caught:
        summary = tr.train()
    assert [str(w.message) for w in caught] == [f"validation at step 4, prompt {i}: RuntimeError: out of memory; "
                                                f"training goes on" for i in (1, 2)]
    assert summary["step"] == 4 and (tmp_path / "run" / "lora.safetensors").is_file()


def test_validate_every_zero_samples_at_the_end_only_and_bad_settings_are_named(ckpt_and_data, tmp_path):
    ckpt, root = ckpt_and_data
    Trainer(_cfg(root, ckpt, tmp_path / "end", validation={**VALIDATION, "prompts": ["a square"]})).train()
    assert [p.name for p in (tmp_path / "end" / "samples").iterdir()] == ["step-00000004"]
    with pytest.raises(ValueError, match="validation.prompts: give one or more prompts"):
        Trainer(_cfg(root, ckpt, tmp_path / "x", validation={"prompts": []}))
    with pytest.raises(ValueError, match="validation.prompts: expected a list"):   # not split at its commas
        Trainer(_cfg(root, ckpt, tmp_path / "x", validation={"prompts": "a square, moving"}))
    with pytest.raises(ValueError, match=r"validation prompt 1 \('a square'\): size 100\*100: width and height"):
        Trainer(_cfg(root, ckpt, tmp_path / "x", validation={**VALIDATION, "size": "100*100"}))   # at the start
    with pytest.raises(ValueError, match="need a checkpoint folder"):  # a random-init model has no VAE to sample
        Trainer(config(tmp_path / "y", data={"cache_dir": str(root / "cache")}, batch_size=1,
                       validation=VALIDATION))


def test_a_model_of_another_architecture_is_named_before_training(ckpt_and_data, tmp_path):
    """The model being trained must be the checkpoint's architecture (its VAE and text encoder sample it): another
    depth is refused at the start with the fields that differ."""
    from openwan.models.dit import WanModel
    ckpt, root = ckpt_and_data
    other = WanModel.from_pretrained(ckpt)
    other = WanModel(other.config.replace(num_layers=other.config.num_layers + 1))
    with pytest.raises(ValueError, match=r"validation: the model being trained is not the architecture of .* "
                                         r"\(the checkpoint's vs the model's: num_layers 2 vs 3\)"):
        Trainer(_cfg(root, ckpt, tmp_path / "x", validation=VALIDATION), model=other)


def test_the_checkpoints_dit_is_not_loaded_a_second_time(ckpt_and_data, tmp_path, monkeypatch):
    """The validation pipeline is built around the model being trained: of the checkpoint's DiT it reads the config
    (on the meta device), not a second copy of the weights (a 14B model's 28 GB)."""
    from openwan.models.dit import WanModel
    ckpt, root = ckpt_and_data
    plain = WanModel.from_pretrained.__func__
    loads = []

    def spy(cls, path, *a, device=None, **k):
        loads.append(str(device))
        return plain(cls, path, *a, device=device, **k)
    monkeypatch.setattr(WanModel, "from_pretrained", classmethod(spy))
    Trainer(_cfg(root, ckpt, tmp_path / "plain"))
    without = list(loads)
    loads.clear()
    tr = Trainer(_cfg(root, ckpt, tmp_path / "val", validation=VALIDATION))
    assert without.count("meta") < len(without) and tr.on_validate is not None
    assert [d for d in loads if d != "meta"] == [d for d in without if d != "meta"]    # the trainer's own load only


@pytest.mark.slow
def test_two_processes_sample_their_model_under_ddp_and_fsdp(ckpt_and_data, tmp_path):
    """Every process runs the sampler (FSDP2's forward gathers the shards from all), process 0 writes: the last
    step's videos are those of the run's exported LoRA on the checkpoint."""
    from openwan import load_pipeline
    from openwan.training.lora import load_lora
    from openwan.training.trainer import launch_local
    from openwan.video import read_video
    ckpt, root = ckpt_and_data
    Trainer(_cfg(root, ckpt, tmp_path / "cache_run", steps=1)).train()   # the cache, built once here
    runs = {par: config(tmp_path / par, model={"path": str(ckpt)}, data={"cache_dir": str(root / "cache")},
                        steps=2, batch_size=1, optimizer={"lr": 5e-2}, lora={"rank": 2}, parallel=par,
                        save_final=True, validate_every=1, validation=VALIDATION) for par in ("ddp", "fsdp")}
    launch_local(list(runs.values()), 2, start_method="fork")
    kw = {k: VALIDATION[k] for k in ("seed", "sample_steps", "size", "frame_num")}
    for par in runs:
        assert (tmp_path / par / "samples" / "step-00000001" / "00.mp4").is_file()
        pipe = load_pipeline(str(ckpt), progress=False)
        load_lora(pipe.dit, tmp_path / par / "lora.safetensors")
        pipe("a moving square", output_path=tmp_path / f"{par}.mp4", **kw)
        written, _ = read_video(tmp_path / par / "samples" / "step-00000002" / "01.mp4")
        assert np.array_equal(written, read_video(tmp_path / f"{par}.mp4")[0]), par

