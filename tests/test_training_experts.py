"""Training one expert of a Wan 2.2 A14B checkpoint (``model.expert``, openwan/training/experts.py): the expert's own
DiT, on its own noise range (the timestep distribution truncated), its LoRA loading as ``high:FILE`` / ``low:FILE``."""
import json
import math

import numpy as np
import pytest
import torch
from training_helpers import config, write_clip

from openwan.training.loss import TimestepSampling
from openwan.training.trainer import Trainer


@pytest.mark.parametrize("kw", [dict(), dict(distribution="logit_normal", mean=0.3, std=1.2, shift=3.0),
                                dict(shift=5.0)])
def test_a_range_truncates_the_distribution(kw):
    """Drawn through the inverse CDF: every draw in [sigma_min, sigma_max), distributed as the whole distribution's
    draws that fall there (empirical CDFs within the DKW bound: P(sup gap > e) <= 2 exp(-2 n e^2) per sample set)."""
    g = torch.Generator().manual_seed(0)
    lo, hi = 0.3, 0.875
    part = TimestepSampling(sigma_min=lo, sigma_max=hi, **kw).sample(40000, g)
    assert part.min() >= lo and part.max() < hi
    whole = TimestepSampling(**kw).sample(400000, g)
    kept = whole[(whole >= lo) & (whole < hi)]
    e = lambda n: math.sqrt(math.log(2 / 1e-6) / (2 * n))  # noqa: E731  (each set's gap, failure odds 1e-6)
    grid = torch.linspace(lo, hi, 50, dtype=torch.float64)
    gap = ((part[:, None] < grid).double().mean(0) - (kept[:, None] < grid).double().mean(0)).abs().max()
    assert gap <= e(len(part)) + e(len(kept))
    # no range: the draws are those of before (the same generator stream, the plain formula)
    a = TimestepSampling(**kw).sample(5, torch.Generator().manual_seed(1))
    b = TimestepSampling(**kw, sigma_min=0.0, sigma_max=1.0).sample(5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="0 <= min < max <= 1"):
        TimestepSampling(sigma_min=0.9, sigma_max=0.9)


@pytest.fixture(scope="module")
def a14b(tmp_path_factory):
    from openwan.testing import make_tiny_wan22_checkpoint
    root = tmp_path_factory.mktemp("a14b")
    for i in range(2):
        write_clip(root / f"c{i}.mp4", frames=5, h=32, w=32)
    (root / "d.csv").write_text("path,caption\nc0.mp4,a square\nc1.mp4,a moving square\n")
    official = make_tiny_wan22_checkpoint(root / "official", "t2v-A14B", "official")
    diffusers = make_tiny_wan22_checkpoint(root / "diffusers", "t2v-A14B", "diffusers")
    index = diffusers / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "boundary_ratio": 0.8}))
    return root, official, diffusers


VALIDATION = {"prompts": ["a moving square"], "seed": 2, "sample_steps": 3, "size": "32*32", "frame_num": 5}


@pytest.mark.parametrize("layout,expert,sub,lo,hi", [("official", "high", "high_noise_model", 0.875, 1.0),
                                                     ("diffusers", "low", "transformer_2", 0.0, 0.8)])
def test_an_expert_trains_on_its_range_and_its_lora_samples_as_high_or_low(a14b, tmp_path, layout, expert, sub, lo,
                                                                           hi):
    from openwan import load_pipeline
    from openwan.models.dit import WanModel
    from openwan.video import read_video
    root, official, diffusers = a14b
    folder = official if layout == "official" else diffusers
    data = {"file": str(root / "d.csv"), "buckets": [[5, 32, 32]], "cache_dir": str(root / f"cache_{layout}")}
    tr = Trainer(config(tmp_path / "run", model={"path": str(folder), "expert": expert}, data=data, steps=2,
                        batch_size=1, optimizer={"lr": 5e-2}, lora={"rank": 2}, save_final=True,
                        validation=VALIDATION))
    assert (tr.cfg.timesteps.sigma_min, tr.cfg.timesteps.sigma_max) == (lo, hi)   # diffusers: its boundary_ratio
    base = WanModel.from_pretrained(folder / sub).state_dict()
    assert all(torch.equal(v, base[k]) for k, v in tr.module.state_dict().items() if k in base)
    seen = []
    draw = tr.objective.draw
    tr.objective.draw = lambda batch, rng: seen.append(draw(batch, rng)[1]) or draw(batch, rng)
    tr.train()
    assert all(lo <= float(s) < hi for s in torch.cat(seen))
    # the end-of-run samples are the checkpoint's with the LoRA on that expert only
    pipe = load_pipeline(str(folder), progress=False, experts="both")
    pipe("a moving square", lora=f"{expert}:{tmp_path / 'run' / 'lora.safetensors'}",
         output_path=tmp_path / "ref.mp4", **{k: VALIDATION[k] for k in ("seed", "sample_steps", "size", "frame_num")})
    written = read_video(tmp_path / "run" / "samples" / "step-00000002" / "00.mp4")[0]
    assert np.array_equal(written, read_video(tmp_path / "ref.mp4")[0])


def test_expert_settings_are_checked_before_any_work(a14b, tmp_path):
    root, official, _ = a14b
    cache = {"cache_dir": str(root / "nowhere")}
    with pytest.raises(ValueError, match="two experts: set model.expert: high or low"):
        Trainer(config(tmp_path / "a", model={"path": str(official)}, data=cache))
    from openwan.testing import make_tiny_checkpoint
    one = make_tiny_checkpoint(tmp_path / "one")
    with pytest.raises(ValueError, match="is no Wan 2.2 A14B folder"):
        Trainer(config(tmp_path / "b", model={"path": str(one), "expert": "high"}, data=cache))
    with pytest.raises(ValueError, match="model.expert must be high or low"):
        Trainer(config(tmp_path / "c", model={"path": str(official), "expert": "middle"}, data=cache))
    with pytest.raises(ValueError, match="lie outside the high-noise expert's range"):
        Trainer(config(tmp_path / "d", model={"path": str(official), "expert": "high"}, data=cache,
                       timesteps={"sigma_max": 0.5}))
