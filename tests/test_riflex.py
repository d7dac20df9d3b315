"""RIFLEx (``long_riflex``, ``--long_riflex``): one DiT call past the native length with the RoPE's intrinsic frame
frequency lowered to stay within one period over the whole video; every other angle as trained."""
import json
import math

import numpy as np
import pytest
import torch
from dit_helpers import inputs, rand_model, tiny

from openwan.models.dit_layers import riflex_index, rope_angles, rope_axis_dims

KW = dict(frame_num=65, sample_steps=2, seed=0, output_type="latent", long_method="none")


def test_only_the_frame_axis_kth_frequency_changes():
    grid, head_dim = (17, 2, 3), 32
    plain = rope_angles(grid, head_dim)
    r = rope_angles(grid, head_dim, riflex=(2, 17))
    a = rope_axis_dims(head_dim)[0] // 2                     # the frame axis's frequencies come first
    changed = (plain != r).any(0).nonzero().flatten().tolist()
    assert changed == [1]                                     # k = 2 (1-based): column 1 of the frame axis only
    frame = torch.arange(17, dtype=torch.float64).repeat_interleave(6)    # each frame's 2 x 3 tokens
    assert torch.equal(r[:, 1], frame * (0.9 * 2 * math.pi / 17))
    assert a == 6 and torch.equal(r[:, [0, *range(2, r.shape[1])]], plain[:, [0, *range(2, r.shape[1])]])
    # the whole video within 90% of that frequency's period: no position repeats another's angle
    assert r[:, 1].max() < 0.9 * 2 * math.pi


def test_the_models_frequency_is_the_first_period_past_twice_its_clips():
    assert riflex_index(128, 21) == 6           # Wan 2.1 / 2.2 (head dim 128, 21 latent frames): the ports' k
    assert riflex_index(32, 9) == 2             # the embedded demo (head dim 32, 9 latent frames)
    a = rope_axis_dims(128)[0]
    periods = [2 * math.pi * 10000 ** (j / a) for j in range(0, a, 2)]
    assert periods[4] < 42 < periods[5]


def test_the_dit_takes_it_per_call_and_forgets_it_after():
    cfg = tiny("t2v")
    m = rand_model(cfg)
    x, ctx, _ = inputs(cfg, f=5)
    t = torch.tensor([500])
    with torch.no_grad():
        plain = m(x, t, ctx)
        r = m(x, t, ctx, riflex=(2, 5))
        again = m(x, t, ctx)
    assert torch.equal(plain, again) and (plain - r).abs().max() > 1e-4
    s = m.embed(x, t, ctx, riflex=(2, 5))
    ang = rope_angles((5, 4, 4), cfg.head_dim, riflex=(2, 5))
    assert torch.equal(s.rope[0][0, :, 0], ang.cos().float()) and torch.equal(s.rope[1][0, :, 0], ang.sin().float())


@pytest.fixture(scope="module")
def demo():
    from openwan import load_pipeline
    return load_pipeline("demo", progress=False)


def test_one_call_with_riflex_is_recorded_and_every_dit_call_gets_it(demo, monkeypatch):
    seen = []
    forward = type(demo.dit).forward

    def spy(self, *a, **k):
        seen.append(k.get("riflex"))
        return forward(self, *a, **k)
    monkeypatch.setattr(type(demo.dit), "forward", spy)
    out = demo("a red circle moving to the right", long_riflex=True, **KW)
    assert out.settings["long_video"] == {"method": "none", "latent_frames": 17, "window": 9, "riflex": 2}
    assert seen and set(seen) == {(2, 17)}
    seen.clear()
    plain = demo("a red circle moving to the right", **KW)
    assert set(seen) == {None} and "riflex" not in plain.settings["long_video"]
    assert (plain.latents - out.latents).abs().max() > 1e-3
    assert torch.equal(demo("a red circle moving to the right", long_riflex=2, **KW).latents, out.latents)


def test_where_it_does_not_apply_it_says_so(demo):
    p = "a red circle moving to the right"
    with pytest.raises(ValueError, match="long_riflex changes the DiT's RoPE for one call .* the 'continue' method"):
        demo(p, frame_num=65, sample_steps=1, output_type="latent", long_riflex=True)
    with pytest.raises(ValueError, match="long_riflex=9: the DiT's frame axis has 6 RoPE frequencies"):
        demo(p, long_riflex=9, **KW)
    with pytest.raises(ValueError, match="long_riflex must be True"):
        demo(p, long_riflex="yes", **KW)
    with pytest.raises(ValueError, match="long_riflex is for one DiT call over a whole video .* extend continues"):
        demo(p, extend=np.zeros((33, 128, 128, 3), np.uint8), frame_num=65, sample_steps=1, output_type="latent",
             long_riflex=True)
    with pytest.warns(UserWarning, match="long_riflex had no effect: 33 frames fit the model's native length"):
        demo(p, frame_num=33, sample_steps=1, output_type="latent", long_riflex=True)


def test_the_cli_records_and_replays_it(tmp_path, capsys):
    from openwan.cli import main
    from openwan.video import read_video
    out = tmp_path / "a.mp4"
    args = ["generate", "a red circle moving to the right", "--frame_num", "49", "--sample_steps", "2",
            "--long_method", "none", "--long_riflex", "--quiet"]
    assert main(args + ["-o", str(out)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())["openwan"]
    assert record["long_video"]["riflex"] == 2
    assert main(["generate", "--from", str(out.with_suffix(".json")), "-o", str(tmp_path / "b.mp4"), "--quiet"]) == 0
    assert (read_video(out)[0] == read_video(tmp_path / "b.mp4")[0]).all()
    assert json.loads((tmp_path / "b.json").read_text())["openwan"]["long_video"]["riflex"] == 2
    with pytest.raises(SystemExit):
        main(args[:-2] + ["--long_riflex", "fast", "-o", str(tmp_path / "c.mp4")])
    assert "expected a frequency index (1, 2, ...), auto or off, got 'fast'" in capsys.readouterr().err
