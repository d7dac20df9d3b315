"""Long-video building blocks: window plans, blend weights, prompt schedules, re-imposed known frames."""
import pytest
import torch

from openwan import long_video as lv


@pytest.mark.parametrize("total,length,overlap", [(21, 21, 5), (5, 21, 5), (41, 21, 5), (50, 21, 4), (22, 21, 0),
                                                  (100, 5, 2), (7, 5, 1)])
def test_windows_cover_every_frame_with_weights_summing_to_one(total, length, overlap):
    plan = lv.plan_windows(total, length, overlap)
    assert plan.spans[0][0] == 0 and plan.spans[-1][1] == total
    for (s0, e0), (s1, e1) in zip(plan.spans, plan.spans[1:]):
        assert s0 < s1 and e1 - s1 == e0 - s0 == min(length, total)
        assert e0 - s1 >= overlap                           # neighbours share at least `overlap` frames
    w = lv.blend_weights(plan)
    assert w.shape == (len(plan.spans), total)
    # exact to float32 rounding of a float64 normalisation: one ulp of 1 per frame
    assert (w.sum(0) - 1).abs().max() <= torch.finfo(torch.float32).eps
    for i, (s, e) in enumerate(plan.spans):                 # zero outside a window, positive inside
        assert torch.all(w[i, :s] == 0) and torch.all(w[i, e:] == 0) and torch.all(w[i, s:e] > 0)


def test_overlap_weights_ramp_linearly():
    plan = lv.plan_windows(9, 5, 1)                          # spans (0,5), (4,9): frame 4 shared
    assert plan.spans == ((0, 5), (4, 9))
    w = lv.blend_weights(plan)
    assert torch.allclose(w[:, 4], torch.tensor([0.5, 0.5]))
    plan = lv.plan_windows(8, 5, 2)                          # (0,5), (3,8): frames 3, 4 shared
    w = lv.blend_weights(plan)
    assert torch.allclose(w[0, 3:5], torch.tensor([2 / 3, 1 / 3])) and torch.allclose(w[1, 3:5],
                                                                                       torch.tensor([1 / 3, 2 / 3]))


def test_one_window_is_the_whole_video():
    plan = lv.plan_windows(21, 21, 5)
    assert plan.spans == ((0, 21),) and torch.equal(lv.blend_weights(plan), torch.ones(1, 21))
    x = torch.randn(4, 21, 2, 2)
    calls = []
    v = lv.windowed_velocity(lambda i, xi: calls.append(i) or xi * 2, x, plan)
    assert calls == [0] and torch.equal(v, x * 2)


def test_windowed_velocity_blends_window_predictions():
    plan = lv.plan_windows(9, 5, 1)
    x = torch.randn(2, 9, 3, 3)
    v = lv.windowed_velocity(lambda i, xi: torch.full_like(xi, float(i + 1)), x, plan)
    assert torch.all(v[:, :4] == 1) and torch.all(v[:, 5:] == 2) and torch.allclose(v[:, 4], torch.tensor(1.5))
    # a window-independent model gives back its own output: blending is a partition of unity
    v = lv.windowed_velocity(lambda i, xi: torch.sin(xi), x, lv.plan_windows(9, 4, 2))
    assert (v - torch.sin(x)).abs().max() <= 4 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("total,length,overlap,match", [(10, 5, 5, "overlap \\(5\\) must be smaller"),
                                                         (10, 5, -1, "overlap must be an integer >= 0"),
                                                         (10, 0, 0, "window must be a positive"),
                                                         (0, 5, 1, "total must be a positive")])
def test_bad_window_settings_are_clear_errors(total, length, overlap, match):
    with pytest.raises(lv.LongVideoError, match=match):
        lv.plan_windows(total, length, overlap)


def test_prompt_schedules_map_to_windows():
    assert lv.split_prompts("a red circle", 3) == ["a red circle"] * 3
    assert lv.split_prompts("a | b", 4) == ["a", "a", "b", "b"]
    assert lv.split_prompts(["a", "b", "c"], 3) == ["a", "b", "c"]
    assert lv.split_prompts("a|b|c", 5) == ["a", "a", "b", "b", "c"]
    with pytest.raises(lv.LongVideoError, match="empty prompt segment"):
        lv.split_prompts("a | ", 2)
    with pytest.raises(lv.LongVideoError, match="3 prompt segments for 2 window"):
        lv.split_prompts("a|b|c", 2)


def test_reimpose_replaces_exactly_the_known_frames_at_the_noise_level():
    g = torch.Generator().manual_seed(0)
    x, known, noise = (torch.randn(4, 6, 2, 2, generator=g) for _ in range(3))
    out = lv.reimpose(x, known, noise, 0.25, 2)
    assert torch.equal(out[:, 2:], x[:, 2:])
    assert torch.equal(out[:, :2], 0.75 * known[:, :2] + 0.25 * noise[:, :2])
    assert torch.equal(lv.reimpose(x, known, noise, 0.0, 2)[:, :2], known[:, :2])  # clean at the end
    assert torch.equal(lv.reimpose(x, known, noise, 0.5, 0), x)
    assert lv.latent_frames(81) == 21 and lv.latent_frames(161) == 41 and lv.latent_frames(17) == 5


def test_keep_latents_windows_and_composes_with_the_continued_frames():
    """KeepLatents (masked v2v's per-step conditioning) sliced to a window is the same rule on those frames; the
    continue method runs it before its own shared-frame rule, which wins on the shared frames; a task's
    per-step rule that cannot be windowed is refused by name."""
    from types import SimpleNamespace
    from openwan.pipelines.long import compose_steps, run_continued
    g = torch.Generator().manual_seed(0)
    known, noise, x = (torch.randn(2, 6, 3, 3, generator=g) for _ in range(3))
    mask = (torch.rand(1, 6, 3, 3, generator=g) > 0.5).float()
    keep = lv.KeepLatents(known, mask, noise)
    step = SimpleNamespace(sigma_next=0.25)
    full = keep(step, x)
    assert torch.equal(full[mask.expand_as(x) == 1], x[mask.expand_as(x) == 1])
    assert torch.equal(full[mask.expand_as(x) == 0], (0.75 * known + 0.25 * noise)[mask.expand_as(x) == 0])
    assert torch.equal(keep.window(2, 5)(step, x[:, 2:5]), full[:, 2:5])
    marker = torch.full_like(x[:, 2:5], 7.0)
    both = compose_steps(keep.window(2, 5), lambda st, y, x0: torch.cat([marker[:, :1], y[:, 1:]], 1))
    got = both(step, x[:, 2:5], None)
    assert torch.equal(got[:, :1], marker[:, :1]) and torch.equal(got[:, 1:], full[:, 3:5])
    assert compose_steps(keep, None) is keep
    job = SimpleNamespace(long=SimpleNamespace(plan=SimpleNamespace(spans=[(0, 3), (2, 5)])), start=x,
                          post_step=lambda st, y, x0: y)
    with pytest.raises(ValueError, match="use long_method='windows'"):
        run_continued(SimpleNamespace(), job)
