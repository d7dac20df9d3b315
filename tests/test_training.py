"""Training: the loss, data (captions, buckets, media, latent cache, batching), the trainer
(resume, multi-process, overfitting, accumulation, checkpointing) and the command line."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from openwan.configs import DiTConfig
from openwan.models.dit import WanModel
from openwan.training.data import (BucketBatchSampler, CachedLatentDataset, InMemoryLatentDataset, MediaDataset,
                                   parse_buckets, prepare_media, read_captions, resize_center_crop,
                                   select_bucket, shard_batch)
from openwan.training.loss import (TimestepSampling, draw_noise, flow_matching_loss, sample_seed,
                                   sigma_to_timestep)
from openwan.training.trainer import Trainer, TrainConfig, launch_local, lr_multiplier, main

TINY = dict(dim=24, ffn_dim=32, num_heads=2, num_layers=2, text_dim=32)


def rand_model(seed=0, **kw):
    torch.manual_seed(seed)
    m = WanModel(DiTConfig(**{**TINY, **kw}))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m


def latents(n=6, shape=(16, 1, 4, 4), seed=0, text=5):
    g = torch.Generator().manual_seed(seed)
    return InMemoryLatentDataset([(torch.randn(*shape, generator=g), torch.randn(text + i % 3, 32, generator=g))
                                  for i in range(n)])


def config(out, **kw):
    base = dict(model={"dit": TINY}, steps=6, batch_size=2, checkpoint_every=0, output_dir=str(out), progress=False,
                optimizer={"lr": 1e-3}, save_final=False)
    base.update(kw)
    return base


# =========================================================================== loss

def test_timesteps_match_the_sampler():
    from openwan.sampling import timesteps_from_sigmas, unipc_sigmas
    grid = unipc_sigmas(50, 5.0)[:-1]
    assert torch.equal(sigma_to_timestep(grid), timesteps_from_sigmas(grid))
    assert sigma_to_timestep(torch.tensor([0.0, 0.0009, 0.001, 0.5, 0.9999, 1.0])).tolist() == [0, 0, 1, 500, 999, 999]


def test_flow_matching_loss_by_hand():
    seen = {}

    def stub(x, t, context):
        seen.update(x=x, t=t, context=context)
        return torch.full_like(x, 0.25)

    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 16, 1, 2, 2, generator=g), torch.randn(3, 16, 1, 2, 2, generator=g)
    sigma = torch.tensor([0.1, 0.5, 0.9999], dtype=torch.float64)
    ctx = [torch.zeros(4, 32)] * 3
    loss, per = flow_matching_loss(stub, x0, ctx, noise, sigma)
    s = sigma.float().view(3, 1, 1, 1, 1)
    assert torch.allclose(seen["x"], (1 - s) * x0 + s * noise, atol=1e-7)
    assert seen["t"].tolist() == [100, 500, 999] and seen["t"].dtype == torch.int64
    want = ((0.25 - (noise - x0)) ** 2).flatten(1).mean(1)
    assert torch.allclose(per, want) and torch.allclose(loss, want.mean())
    # list input (different sizes) gives the same per-sample values
    loss2, per2 = flow_matching_loss(lambda x, t, c: [torch.full_like(u, 0.25) for u in x], list(x0), ctx,
                                     list(noise), sigma)
    assert torch.allclose(per2, want)


def test_timestep_distributions():
    n = 20000
    u = TimestepSampling("uniform").sample(n, torch.Generator().manual_seed(0))
    assert abs(u.mean().item() - 0.5) < 0.01 and 0 <= u.min() and u.max() < 1
    sh = TimestepSampling("shift", shift=3.0).sample(n, torch.Generator().manual_seed(0))
    assert torch.allclose(sh, 3 * u / (1 + 2 * u))  # same draws, shifted
    ln = TimestepSampling("logit_normal", mean=1.0, std=0.5).sample(n, torch.Generator().manual_seed(0))
    assert abs(ln.median().item() - 1 / (1 + math.exp(-1.0))) < 0.01
    assert abs(torch.logit(ln).std().item() - 0.5) < 0.01
    with pytest.raises(ValueError, match="logit_normal"):
        TimestepSampling("beta")
    # noise/sigma of a sample depend only on its seed
    a, sa = draw_noise([(16, 1, 2, 2)] * 2, [sample_seed(0, 5, 0), sample_seed(0, 5, 1)], TimestepSampling())
    b, sb = draw_noise([(16, 1, 2, 2)], [sample_seed(0, 5, 1)], TimestepSampling())
    assert torch.equal(a[1], b[0]) and sa[1] == sb[0] and not torch.equal(a[0], a[1])


def test_lr_schedules():
    assert [lr_multiplier(s, "constant", 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = [lr_multiplier(s, "cosine", 2, 12, 0.1) for s in range(13)]
    assert cos[:3] == [0.5, 1.0, 1.0] and abs(cos[7] - 0.55) < 1e-9 and abs(cos[12] - 0.1) < 1e-9
    assert abs(lr_multiplier(6, "linear", 0, 12) - 0.5) < 1e-9


# =========================================================================== data

def test_read_captions_csv_jsonl_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "c.csv").write_text('File,Caption\nsub/a.mp4,"a cat, walking"\n\n/abs/b.png,dog\n')
    s = read_captions(tmp_path / "c.csv")
    assert [(str(x.path), x.caption) for x in s] == [(str(tmp_path / "sub/a.mp4"), "a cat, walking"),
                                                     ("/abs/b.png", "dog")]
    (tmp_path / "c.jsonl").write_text('{"video": "a.mp4", "prompt": "p1"}\n\n{"path": "b.jpg", "text": "p2"}\n')
    assert [x.caption for x in read_captions(tmp_path / "c.jsonl")] == ["p1", "p2"]
    (tmp_path / "bad.jsonl").write_text('{"path": "a.mp4", "caption": "x"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        read_captions(tmp_path / "bad.jsonl")
    (tmp_path / "nocap.csv").write_text("path,label\na.mp4,x\n")
    with pytest.raises(ValueError, match="no caption column"):
        read_captions(tmp_path / "nocap.csv")
    media = tmp_path / "media"
    media.mkdir()
    (media / "x.png").write_bytes(b"")
    (media / "x.txt").write_text("  a red ball \n")
    assert [(p.path.name, p.caption) for p in read_captions(media)] == [("x.png", "a red ball")]


def test_buckets():
    b = parse_buckets([[33, 480, 832], "17x480x832", [1, 480, 832], [33, 832, 480], [1, 512, 512]])
    assert b[1] == (17, 480, 832)
    for bad, msg in (([[32, 480, 832]], "4n\\+1"), ([[33, 480, 830]], "multiples of 16"), ([], "no buckets")):
        with pytest.raises(ValueError, match=msg):
            parse_buckets(bad)
    assert select_bucket(100, 720, 1280, b) == (33, 480, 832)   # landscape, enough frames: the longest
    assert select_bucket(20, 720, 1280, b) == (17, 480, 832)    # fewer frames: the longest that fits
    assert select_bucket(40, 1280, 720, b) == (33, 832, 480)    # portrait
    assert select_bucket(1, 600, 600, b) == (1, 512, 512)       # an image: square bucket
    assert select_bucket(1, 720, 1280, b) == (1, 480, 832)
    assert select_bucket(1, 100, 100, [(5, 16, 16)]) is None


def test_resize_center_crop_keeps_aspect_and_centers():
    # 40x80 frame: left half black, right half white, a 2-pixel red column in the exact middle
    f = np.zeros((1, 40, 80, 3), np.uint8)
    f[:, :, 40:] = 255
    f[:, :, 39:41] = (255, 0, 0)
    x = resize_center_crop(f, 32, 32)   # scale 0.8 -> 32x64, crop columns 16..48
    assert x.shape == (3, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x[:, 0, :, :12], torch.tensor(-1.0))
    assert torch.allclose(x[:, 0, :, -12:], torch.tensor(1.0))
    assert x[0, 0, :, 15:17].mean() > x[1, 0, :, 15:17].mean() + 0.5  # red stays in the middle


def _write_clip(path, frames=9, h=48, w=64, fps=16):
    from openwan.video import write_video
    t = np.arange(frames)[:, None, None, None]
    video = np.broadcast_to((t * 20 % 255).astype(np.uint8), (frames, h, w, 3)).copy()
    write_video(video, path, fps=fps, overwrite=True)
    return path


def test_media_and_corrupt_files_are_skipped_with_a_warning(tmp_path):
    from PIL import Image
    _write_clip(tmp_path / "good.mp4", frames=9)
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x01 not a video" * 50)
    Image.new("RGB", (64, 48), (255, 0, 0)).save(tmp_path / "img.png")
    (tmp_path / "data.csv").write_text("path,caption\ngood.mp4,a clip\nbad.mp4,broken\nimg.png,an image\n")
    ds = MediaDataset(tmp_path / "data.csv", [[5, 32, 48], [1, 32, 48]])
    item = ds[0]
    assert item["video"].shape == (3, 5, 32, 48) and item["bucket"] == (5, 32, 48)
    with pytest.warns(UserWarning, match="bad.mp4"):
        assert ds[1] is None
    img = ds[2]
    assert img["video"].shape == (3, 1, 32, 48)
    assert torch.allclose(img["video"][0], torch.tensor(1.0)) and torch.allclose(img["video"][1], torch.tensor(-1.0))
    # fps resampling: a 32 fps clip at 16 fps uses every other frame
    _write_clip(tmp_path / "fast.mp4", frames=17, fps=32)
    v, b = prepare_media(tmp_path / "fast.mp4", [(9, 32, 48)], target_fps=16)
    v_all, _ = prepare_media(tmp_path / "fast.mp4", [(17, 32, 48)])
    assert b == (9, 32, 48) and torch.allclose(v, v_all[:, ::2], atol=1e-6)


class _Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a):
        self.calls += 1
        return self.fn(*a)


def test_cache_latents_resumable_with_stand_ins(tmp_path):
    from openwan.training.cache import MANIFEST, cache_latents
    for i in range(3):
        _write_clip(tmp_path / f"c{i}.mp4", frames=9 + 4 * i)
    (tmp_path / "bad.mp4").write_bytes(b"garbage" * 100)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"path": p, "caption": c}) + "\n" for p, c in
                                              [("c0.mp4", "zero"), ("bad.mp4", "x"), ("c1.mp4", "one"),
                                               ("c2.mp4", "two")]))
    enc_v = _Counting(lambda v: v[:, :, ::4, ::8, ::8].repeat(1, 6, 1, 1, 1)[:, :16])   # [1,16,T,h,w]
    enc_t = _Counting(lambda ps: [torch.full((len(p), 32), float(len(p))) for p in ps])
    with pytest.warns(UserWarning, match="bad.mp4"):
        s = cache_latents(tmp_path / "d.jsonl", tmp_path / "cache", enc_v, enc_t, [[9, 32, 48], [5, 32, 48]],
                          progress=False)
    assert (s["written"], s["skipped"], len(s["failed"])) == (3, 0, 1) and enc_v.calls == 3
    ds = CachedLatentDataset(tmp_path / "cache")
    assert len(ds) == 3 and ds.bucket(0) == (16, 3, 4, 6)
    assert torch.equal(ds[1]["context"], torch.full((3, 32), 3.0))
    # a second run skips what is done; a changed caption is re-encoded; stale files are not listed
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"path": p, "caption": c}) + "\n" for p, c in
                                              [("c0.mp4", "zero"), ("c1.mp4", "uno"), ("c2.mp4", "two")]))
    s = cache_latents(tmp_path / "d.jsonl", tmp_path / "cache", enc_v, enc_t, [[9, 32, 48], [5, 32, 48]],
                      progress=False)
    assert (s["written"], s["skipped"]) == (1, 2) and enc_v.calls == 4
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 4
    assert len(json.loads((tmp_path / "cache" / MANIFEST).read_text())["files"]) == 3
    assert len(CachedLatentDataset(tmp_path / "cache")) == 3
    assert not list((tmp_path / "cache").glob(".*"))  # no temp files left


def test_cache_latents_with_the_real_tiny_vae_and_text_encoder(tmp_path):
    from openwan.configs import TINY_TEXT_ENCODER, TINY_VAE
    from openwan.models.text_encoder import TINY_TOKENIZER_VOCAB, TextEncoder
    from openwan.models.vae import WanVAE
    from openwan.training.cache import cache_latents
    torch.manual_seed(0)
    vae = WanVAE(TINY_VAE).eval()
    te = TextEncoder(TINY_TEXT_ENCODER.replace(vocab=TINY_TOKENIZER_VOCAB), seed=0, cache_dir=False)
    _write_clip(tmp_path / "a.mp4", frames=5, h=32, w=32)
    (tmp_path / "d.csv").write_text("path,caption\na.mp4,a red ball\n")
    cache_latents(tmp_path / "d.csv", tmp_path / "cache", vae, te, [[5, 16, 16]], progress=False)
    item = CachedLatentDataset(tmp_path / "cache")[0]
    video, _ = prepare_media(tmp_path / "a.mp4", [(5, 16, 16)])
    assert torch.allclose(item["latent"], vae.encode(video[None])[0], atol=1e-6)
    assert item["latent"].shape == (16, 2, 2, 2)
    assert torch.allclose(item["context"], te.encode(["a red ball"])[0], atol=1e-6)


@pytest.mark.parametrize("task", ["i2v", "flf2v"])
def test_cache_latents_image_condition_for_i2v_and_flf2v_training(tmp_path, task):
    """--task i2v / flf2v stores y (mask + latent of the clip's first / last frame with zeros between)
    and clip_fea, built by hand here; an I2V / FLF2V DiT trains on it; mismatched model/cache is a clear error."""
    from openwan.configs import TINY_VARIANTS
    from openwan.models.image_encoder import ImageEncoder
    from openwan.models.text_encoder import TextEncoder
    from openwan.models.vae import WanVAE
    from openwan.training.cache import cache_latents
    var = TINY_VARIANTS[f"tiny-{task}"]
    torch.manual_seed(0)
    vae = WanVAE(var.vae).eval()
    te = TextEncoder(var.text_encoder, seed=0, cache_dir=False)
    ie = ImageEncoder(var.image_encoder, seed=0)
    _write_clip(tmp_path / "a.mp4", frames=9, h=32, w=32)
    (tmp_path / "d.csv").write_text("path,caption\na.mp4,a grey fade\n")
    with pytest.raises(ValueError, match="needs an image encoder"):
        cache_latents(tmp_path / "d.csv", tmp_path / "x", vae, te, [[9, 32, 32]], progress=False, task=task)
    cache_latents(tmp_path / "d.csv", tmp_path / "cache", vae, te, [[9, 32, 32]], progress=False, task=task,
                  image_encoder=ie)
    item = CachedLatentDataset(tmp_path / "cache")[0]
    video, _ = prepare_media(tmp_path / "a.mp4", [(9, 32, 32)])
    cond = torch.zeros_like(video)
    cond[:, 0] = video[:, 0]
    if task == "flf2v":
        cond[:, -1] = video[:, -1]
    mask = torch.zeros(4, 3, 4, 4)
    mask[:, 0] = 1          # latent frame 0 <- pixel frame 0 (repeated 4x)
    if task == "flf2v":
        mask[3, 2] = 1      # channel 3 of latent frame 2 <- pixel frame 8 = 4*2 + 3 - 3
    assert torch.equal(item["y"][:4], mask)
    assert torch.allclose(item["y"][4:], vae.encode(cond[None])[0], atol=1e-6)
    frames = video[:, [0]] if task == "i2v" else video[:, [0, -1]]
    assert torch.allclose(item["clip_fea"], ie.encode(frames.transpose(0, 1)), atol=1e-6)
    assert torch.allclose(item["latent"], vae.encode(video[None])[0], atol=1e-6)

    ds = CachedLatentDataset(tmp_path / "cache")
    torch.manual_seed(0)
    model = WanModel(var.dit)
    summary = Trainer(config(tmp_path / "run", steps=2, batch_size=1), model=model, dataset=ds).train()
    assert summary["step"] == 2 and math.isfinite(summary["loss"]) and summary["loss"] > 0, summary
    with pytest.raises(ValueError, match="image condition"):
        Trainer(config(tmp_path / "run2", steps=1, batch_size=1), dataset=ds)  # the config's t2v DiT
    t2v_cache = tmp_path / "t2v"
    cache_latents(tmp_path / "d.csv", t2v_cache, vae, te, [[9, 32, 32]], progress=False)
    with pytest.raises(ValueError, match=f"--task {task}"):
        Trainer(config(tmp_path / "run3", steps=1, batch_size=1), model=WanModel(var.dit),
                dataset=CachedLatentDataset(t2v_cache))

    # the trainer builds the same cache itself from a checkpoint directory (data.file + data.task)
    from openwan.testing import make_tiny_checkpoint
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", f"tiny-{task}")
    summary = Trainer(config(tmp_path / "run4", steps=1, batch_size=1, model={"path": str(ckpt)},
                             data={"file": str(tmp_path / "d.csv"), "buckets": [[9, 32, 32]], "task": task})).train()
    cached = CachedLatentDataset(tmp_path / "run4" / "latent_cache")
    assert summary["step"] == 1 and set(cached[0]) == {"latent", "context", "y", "clip_fea"}


def test_bucket_batches_deterministic_grouped_and_sharded():
    items = [(torch.zeros(16, 1, 2, 2), torch.zeros(3, 32))] * 7 + [(torch.zeros(16, 1, 2, 4), torch.zeros(3, 32))] * 5
    ds = InMemoryLatentDataset(items)
    s = BucketBatchSampler(ds, 2, seed=3)
    e0, e1 = s.batches(0), s.batches(1)
    assert len(e0) == 3 + 2  # leftovers dropped
    for b in e0:
        assert len(b) == 2 and len({ds.bucket(i) for i in b}) == 1
    flat = [i for b in e0 for i in b]
    assert len(set(flat)) == len(flat)
    assert e0 != e1 and BucketBatchSampler(ds, 2, seed=3).batches(1) == e1
    assert shard_batch([5, 6, 7, 8], 1, 2) == ([7, 8], 2)
    with pytest.raises(ValueError, match="no bucket holds a full global batch"):
        BucketBatchSampler(InMemoryLatentDataset(items[:1]), 2)


# =========================================================================== the trainer

class _InterruptingData(InMemoryLatentDataset):
    """Raises KeyboardInterrupt at the n-th item access (inside a step: the step is abandoned)."""

    def __init__(self, base, n):
        super().__init__(base.items)
        self.n, self.calls = n, 0

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return super().__getitem__(i)


@pytest.mark.parametrize("lora,how", [(False, "sigint"), (True, "mid-step"), (True, "hook")])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, lora, how):
    import os
    import signal
    kw = dict(ema={"decay": 0.9}, schedule={"type": "cosine", "warmup_steps": 2}, validate_every=1,
              timesteps={"distribution": "logit_normal", "shift": 2.0}, grad_accum=2)
    if lora:
        kw["lora"] = {"rank": 2, "alpha": 4, "targets": ["q", "ffn.2"]}
    ds = latents(8)
    Trainer(config(tmp_path / "a", **kw), model=rand_model(), dataset=ds).train()

    def at_step_3(model, step):
        if step == 3:
            if how == "sigint":   # a real Ctrl-C: the trainer finishes the step, saves, raises
                os.kill(os.getpid(), signal.SIGINT)
            elif how == "hook":
                raise KeyboardInterrupt
    # mid-step: 2 samples x 2 micro-batches per step; the 15th access is in step 4's second micro-batch
    data = _InterruptingData(ds, 15) if how == "mid-step" else ds
    with pytest.raises(KeyboardInterrupt):
        Trainer(config(tmp_path / "b", **kw), model=rand_model(), dataset=data, on_validate=at_step_3).train()
    assert [p.name for p in (tmp_path / "b/checkpoints").iterdir()] == ["step-00000003"]
    state = json.loads((tmp_path / "b/checkpoints/step-00000003/state.json").read_text())
    assert (state["epoch"], state["position"]) == (1, 2)  # 4 batches per epoch, 2 per step
    Trainer(config(tmp_path / "b", **kw), model=rand_model(), dataset=ds).train()   # resume: auto
    for f in ("model", "ema"):
        a = load_file(str(tmp_path / f"a/checkpoints/step-00000006/{f}.safetensors"))
        b = load_file(str(tmp_path / f"b/checkpoints/step-00000006/{f}.safetensors"))
        assert set(a) == set(b) and len(a) == (12 if lora else 69)
        assert all(torch.equal(a[k], b[k]) for k in a), f
    # the loss curve continues exactly too
    rows = lambda d: [r[:3] for r in csv.reader(open(tmp_path / d / "loss.csv"))]  # noqa: E731
    assert rows("a") == rows("b") and len(rows("a")) == 7


def test_stop_at_ends_part_way_through_the_schedule(tmp_path):
    """stop_at ends a run at that step with a checkpoint and no final weights; running again with a later (or no)
    stop_at continues on the same schedule, bit-identical to the run that never stopped."""
    kw = dict(schedule={"type": "cosine", "warmup_steps": 1}, ema={"decay": 0.9}, steps=5, save_final=True)
    ds = latents(8)
    Trainer(config(tmp_path / "a", **kw), model=rand_model(), dataset=ds).train()
    summary = Trainer(config(tmp_path / "b", stop_at=2, **kw), model=rand_model(), dataset=ds).train()
    assert summary["step"] == 2 and not (tmp_path / "b/final").exists()
    assert (tmp_path / "b/checkpoints/step-00000002/state.json").is_file()
    Trainer(config(tmp_path / "b", stop_at=4, **kw), model=rand_model(), dataset=ds).train()
    assert not (tmp_path / "b/final").exists()
    Trainer(config(tmp_path / "b", **kw), model=rand_model(), dataset=ds).train()
    for f in ("model", "ema"):
        a = load_file(str(tmp_path / f"a/checkpoints/step-00000005/{f}.safetensors"))
        b = load_file(str(tmp_path / f"b/checkpoints/step-00000005/{f}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), f
    assert (tmp_path / "b/final_ema/config.json").is_file()
    with pytest.raises(ValueError, match="stop_at must be an integer >= 1"):
        Trainer(config(tmp_path / "c", stop_at=0, **kw), model=rand_model(), dataset=ds)


def test_checkpoints_are_pruned_and_complete(tmp_path):
    Trainer(config(tmp_path, steps=5, checkpoint_every=1, keep_checkpoints=2), dataset=latents()).train()
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-00000004", "step-00000005"]
    state = json.loads((root / "step-00000005/state.json").read_text())
    assert (state["step"], state["epoch"], state["position"]) == (5, 1, 2)  # 3 batches per epoch
    assert set(p.name for p in (root / "step-00000005").iterdir()) == {"model.safetensors", "optimizer.pt",
                                                                      "rng.pt", "state.json"}


def _final_weights(out):
    return load_file(str(Path(out) / "checkpoints" / sorted(p.name for p in (Path(out) / "checkpoints").iterdir())[-1]
                         / "model.safetensors"))


# Runs that differ only in the order of float sums (batch vs accumulated micro-batches, one process vs an
# all-reduce) are compared with AdamW's eps raised to 1e-3 (ROUNDING_OPTIMIZER). Adam's step lr * m / (sqrt(v) + eps)
# turns an absolute gradient rounding error dg into a step error of up to ~lr * dg / eps, largest on the elements
# whose gradient is about eps: with the default eps 1e-8 that is ~1e5 * lr * dg, so the result would depend on
# how many gradients happen to be tiny and on how the CPU's vector width rounds them (1e-7 on AVX2, 5e-6 on
# AMX). With eps 1e-3 the step error is at most lr / eps * dg = dg, a few ulps of the per-sample gradients (clipped
# to norm 1, so ulps of 1 at most and mostly far smaller); together with the rounding of the weight update itself
# that stays within a couple of ulps of the largest weight per step. A wrong reduction changes the gradients
# themselves, and the steps by ~lr.
ROUNDING_OPTIMIZER = {"lr": 1e-3, "eps": 1e-3}


def _rounding_bound(weights, steps):
    """Two fp32 roundings of the largest weight per optimizer step, doubled for headroom."""
    largest = max(w.abs().max().item() for w in weights.values())
    return 4 * steps * torch.finfo(torch.float32).eps * largest


def test_grad_accumulation_and_checkpointing_match_the_plain_batch(tmp_path):
    ds = latents(8)
    Trainer(config(tmp_path / "a", steps=3, batch_size=4, optimizer=ROUNDING_OPTIMIZER), model=rand_model(),
            dataset=ds).train()
    Trainer(config(tmp_path / "b", steps=3, batch_size=1, grad_accum=4, gradient_checkpointing=True,
                   optimizer=ROUNDING_OPTIMIZER), model=rand_model(), dataset=ds).train()
    a, b = _final_weights(tmp_path / "a"), _final_weights(tmp_path / "b")
    init = rand_model().state_dict()
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-3  # a real step is ~lr per weight
    # float summation order only (checkpointing alone is exact)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= _rounding_bound(a, 3)


def test_two_processes_match_one_process_with_the_combined_batch(tmp_path):
    """FSDP2 (full fine-tuning and LoRA) and DDP (LoRA) on 2 CPU processes (gloo) vs one process, batch 2x."""
    ckpt = tmp_path / "base"
    rand_model().save_pretrained(ckpt)
    ds = latents(8)
    common = dict(model={"path": str(ckpt)}, steps=3, grad_accum=2, ema={"decay": 0.5},
                  optimizer=ROUNDING_OPTIMIZER)
    lora = {"rank": 2, "targets": ["q", "ffn.0"]}
    runs = {"fsdp": config(tmp_path / "fsdp", batch_size=1, parallel="fsdp", **common),
            "ddp": config(tmp_path / "ddp", batch_size=1, parallel="ddp", lora=lora, **common),
            "fsdp_lora": config(tmp_path / "fsdp_lora", batch_size=1, parallel="fsdp", lora=lora, **common)}
    launch_local(list(runs.values()), 2, dataset=ds, start_method="fork")  # fork: no re-import of torch
    init = rand_model().state_dict()
    for name, lo, single in (("fsdp", None, "one_fsdp"), ("ddp", lora, "one_lora"), ("fsdp_lora", lora, "one_lora")):
        if not (tmp_path / single).exists():
            Trainer(config(tmp_path / single, batch_size=2, lora=lo, **common), dataset=ds).train()
        for f in ("model", "ema"):
            one = load_file(str(tmp_path / f"{single}/checkpoints/step-00000003/{f}.safetensors"))
            two = load_file(str(tmp_path / f"{name}/checkpoints/step-00000003/{f}.safetensors"))
            assert set(one) == set(two) and len(one) == (69 if lo is None else 12)
            diff = max((one[k] - two[k]).abs().max().item() for k in one)
            if lo is None:
                moved = max((one[k] - init[k]).abs().max().item() for k in one)
            else:
                moved = max(one[k].abs().max().item() for k in one if k.endswith(".B"))
            # float summation order only (see _rounding_bound); a wrong gradient reduction moves weights by ~lr
            assert diff <= _rounding_bound(one, 3) and moved > 1e-4, (name, f, diff)
        rows = lambda d: [r[1] for r in csv.reader(open(tmp_path / d / "loss.csv"))][1:]  # noqa: E731
        assert np.allclose(np.array(rows(name), float), np.array(rows(single), float), rtol=1e-5)


def test_overfits_one_tiny_clip(tmp_path):
    """The honest objective (fresh noise and sigma every step) on one clip: the loss falls >10x."""
    g = torch.Generator().manual_seed(0)
    clip = (torch.randn(16, 1, 2, 2, generator=g), torch.randn(4, 32, generator=g))
    t = Trainer(config(tmp_path, model={"dit": dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32,
                                                      text_len=8)},
                       steps=400, batch_size=8, grad_clip=None, optimizer={"lr": 5e-3, "weight_decay": 0.0},
                       schedule={"type": "cosine", "warmup_steps": 10},
                       timesteps={"distribution": "logit_normal", "shift": 3.0}),
                dataset=InMemoryLatentDataset([clip] * 8))
    t.train()
    first, last = np.mean(t.history[:10]), np.mean(t.history[-30:])
    assert first > 1.5 and last < first / 10, (first, last)


def test_yaml_config_command_line_and_final_export(tmp_path):
    import yaml
    from openwan.training.cache import cache_latents
    for i in range(2):
        _write_clip(tmp_path / f"c{i}.mp4", frames=5, h=32, w=32)
    (tmp_path / "d.csv").write_text("path,caption\nc0.mp4,zero\nc1.mp4,one\n")
    cache_latents(tmp_path / "d.csv", tmp_path / "cache", lambda v: v[:, :, ::4, ::8, ::8].repeat(1, 6, 1, 1, 1)[:, :16],
                  lambda ps: [torch.ones(3, 32)] * len(ps), [[5, 32, 32]], progress=False)
    cfg = {"model": {"dit": TINY}, "data": {"cache_dir": str(tmp_path / "cache")}, "steps": 2, "batch_size": 2,
           "output_dir": str(tmp_path / "run"), "progress": False, "lora": {"rank": 2}, "checkpoint_every": 1,
           "lora_formats": ["diffusers", "comfyui", "musubi"]}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(tmp_path / "t.yaml"), "--set", "steps=3", "--set", "optimizer.lr=2e-3"]) == 0
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["optimizer"] == {"lr": 2e-3}
    assert len(list(csv.reader(open(run / "loss.csv")))) == 4
    for f in ("lora.safetensors", "lora_comfyui.safetensors", "lora_musubi.safetensors"):
        assert (run / f).exists()
    # full fine-tuning exports an official-layout directory that loads back
    assert main(["--config", str(tmp_path / "t.yaml"), "--set", "lora=null", "--set",
                 f"output_dir={tmp_path / 'full'}"]) == 0
    m = WanModel.from_pretrained(tmp_path / "full" / "final")
    assert m.config.dim == 24
    # bad configs are one-line errors
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**cfg, "stepz": 3}))
    assert main(["--config", str(tmp_path / "bad.yaml")]) == 2
    with pytest.raises(ValueError, match="unknown optimizer fields"):
        TrainConfig.from_dict({**cfg, "optimizer": {"learning_rate": 1}})


# =========================================================================== injectable objectives

class _CriticObjective:
    """Flow matching plus a second trained part with its own optimizer (the shape of a distillation's
    fake-score model): a linear critic regresses each sample's mean latent to a target drawn from that
    sample's generator; its AdamW steps in after_step; both go into the checkpoint."""

    def __init__(self, config, lr=1e-2):
        from openwan.training.objectives import FlowMatching
        self.fm = FlowMatching(config.timesteps)
        self.lr = lr
        self.steps_seen = []

    def setup(self, ctx):
        torch.manual_seed(123)
        self.critic = torch.nn.Linear(16, 1).to(ctx.device)
        self.opt = torch.optim.AdamW(self.critic.parameters(), lr=self.lr)

    def __call__(self, model, batch, rng):
        loss, _ = self.fm(model, batch, rng)
        target = torch.stack([torch.randn((), generator=g) for g in rng]).to(batch.latent.device)
        critic_loss = (self.critic(batch.latent.mean((2, 3, 4))).squeeze(-1) - target).pow(2).mean()
        critic_loss.backward()  # the critic's own gradients; the DiT's come from `loss`
        return loss, {"critic": critic_loss.detach()}

    def after_step(self, step):
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.steps_seen.append(step)
        return {}

    def state_dict(self):
        return {"critic": self.critic.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        self.critic.load_state_dict(state["critic"])
        self.opt.load_state_dict(state["opt"])


def test_a_custom_objective_with_its_own_optimizer_resumes_bit_exactly(tmp_path):
    from openwan.training.objectives import register_objective
    register_objective("critic_test", _CriticObjective)
    kw = dict(objective={"name": "critic_test", "lr": 0.05}, ema={"decay": 0.9}, grad_accum=2,
              schedule={"type": "cosine", "warmup_steps": 1})
    ds = latents(8)
    full = Trainer(config(tmp_path / "a", **kw), model=rand_model(), dataset=ds)
    assert isinstance(full.objective, _CriticObjective) and full.objective.lr == 0.05  # chosen by the config
    init = {k: v.clone() for k, v in full.objective.critic.state_dict().items()}
    full.train()
    assert full.objective.steps_seen == [1, 2, 3, 4, 5, 6]
    Trainer(config(tmp_path / "b", stop_at=3, **kw), model=rand_model(), dataset=ds).train()
    resumed = Trainer(config(tmp_path / "b", **kw), model=rand_model(), dataset=ds)
    resumed.train()
    assert resumed.objective.steps_seen == [4, 5, 6]
    a = torch.load(tmp_path / "a/checkpoints/step-00000006/objective.pt", weights_only=True)
    b = torch.load(tmp_path / "b/checkpoints/step-00000006/objective.pt", weights_only=True)
    assert not torch.equal(a["critic"]["weight"], init["weight"])  # the critic was trained ...
    for k in a["critic"]:                                          # ... and resumed exactly, with its optimizer
        assert torch.equal(a["critic"][k], b["critic"][k]), k
    for k, s in a["opt"]["state"].items():
        assert all(torch.equal(s[n], b["opt"]["state"][k][n]) for n in s)
    for f in ("model", "ema"):
        x = load_file(str(tmp_path / f"a/checkpoints/step-00000006/{f}.safetensors"))
        y = load_file(str(tmp_path / f"b/checkpoints/step-00000006/{f}.safetensors"))
        assert all(torch.equal(x[k], y[k]) for k in x), f
    # the DiT's own curve is the plain flow-matching one: the critic's draws come after the noise's
    plain = Trainer(config(tmp_path / "c", ema={"decay": 0.9}, grad_accum=2, schedule={"type": "cosine",
                                                                                       "warmup_steps": 1}),
                    model=rand_model(), dataset=ds)
    plain.train()
    assert plain.history == full.history


def test_objective_selection_errors(tmp_path):
    for name, msg in (("nope", "not a known objective"), ("openwan.nothing:f", "cannot import")):
        with pytest.raises(ValueError, match=msg):
            Trainer(config(tmp_path, objective=name), dataset=latents())
    with pytest.raises(ValueError, match="bad options"):
        Trainer(config(tmp_path, objective={"name": "flow_matching", "gamma": 1}), dataset=latents())


# =========================================================================== command-line errors and messages

def _one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_bad_yaml_and_bad_overrides_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\nmodel: {dit: [unclosed\n")
    assert "not valid YAML (line" in _one_line_error(capsys, ["--config", str(bad)])
    bad.write_text("- steps: 3\n- batch_size: 2\n")
    assert "must be a mapping" in _one_line_error(capsys, ["--config", str(bad)])
    good = tmp_path / "good.yaml"
    good.write_text(f"model: {{dit: {json.dumps(TINY)}}}\ndata: {{cache_dir: {tmp_path / 'nocache'}}}\n")
    for override, msg in (("optimizer.lr=fast", "optimizer.lr: expected a number, got 'fast'"),
                          ("steps=2.5", "steps: expected an integer, got 2.5"),
                          ("lora.rank=big", "lora.rank: expected an integer, got 'big'"),
                          ("ema=0.9", "ema: expected a mapping of EMAConfig fields"),
                          ("progress=maybe", "progress: expected true or false"),
                          ("steps.x=1", "steps: expected an integer"),
                          ("model.dit.dim.x=1", "--set model.dit.dim.x: model.dit.dim is not a section"),
                          ("optimizer.learning_rate=1", "unknown optimizer fields ['learning_rate']")):
        assert msg in _one_line_error(capsys, ["--config", str(good), "--set", override]), override
    assert "data.cache_dir" in _one_line_error(capsys, ["--config", str(good)])  # a missing prep step, named


def test_missing_preparation_is_named_and_demo_is_a_model_path(tmp_path, capsys):
    import yaml
    cfg = {"model": {"path": str(tmp_path / "tiny-ckpt")}, "output_dir": str(tmp_path / "run"), "progress": False,
           "data": {"file": str(tmp_path / "captions.csv"), "buckets": [[5, 32, 32]]}, "steps": 1}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    err = _one_line_error(capsys, ["--config", str(tmp_path / "t.yaml")])
    assert "model.path" in err and "make_tiny_checkpoint" in err and "VAE" not in err, err
    err = _one_line_error(capsys, ["--config", str(tmp_path / "t.yaml"), "--set", "model.path=demo"])
    assert "data.file" in err and "captions" in err, err
    # model.path: demo trains the embedded demo model (LoRA, on latents of its shape)
    g = torch.Generator().manual_seed(0)
    ds = InMemoryLatentDataset([(torch.randn(16, 1, 4, 4, generator=g), torch.randn(5, 128, generator=g))] * 2)
    t = Trainer(config(tmp_path / "demo", model={"path": "demo"}, steps=1, lora={"rank": 2}), dataset=ds)
    assert t.module.config.dim == 128 and t.train()["step"] == 1


def test_a_finished_run_says_so_instead_of_loss_none(tmp_path, capsys):
    import yaml
    cfg = {**config(tmp_path / "run", steps=2), "data": {}}
    del cfg["data"]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    cache = tmp_path / "cache"
    from openwan.training.cache import cache_latents
    _write_clip(tmp_path / "c0.mp4", frames=5, h=32, w=32)
    (tmp_path / "d.csv").write_text("path,caption\nc0.mp4,zero\n")
    cache_latents(tmp_path / "d.csv", cache, lambda v: v[:, :, ::4, ::8, ::8].repeat(1, 6, 1, 1, 1)[:, :16],
                  lambda ps: [torch.ones(3, 32)] * len(ps), [[5, 32, 32]], progress=False)
    argv = ["--config", str(tmp_path / "t.yaml"), "--set", f"data.cache_dir={cache}", "--set", "batch_size=1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "done at step 2, last loss " in out and "None" not in out, out
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "None" not in out, out


def _header_scripts(example: Path) -> list:
    """The Python the header comments of an example YAML run: ``python -c "..."`` lines and ``python - <<'PY'``
    blocks, in order."""
    lines = [ln[4:] if ln.startswith("#   ") else None for ln in example.read_text().splitlines()]
    scripts, block = [], None
    for ln in lines:
        if block is not None:
            if ln is None or ln.strip() == "PY":
                scripts.append("\n".join(block))
                block = None
            else:
                block.append(ln)
        elif ln is not None and ln.startswith("python - <<'PY'"):
            block = []
        elif ln is not None and ln.startswith('python -c "'):
            scripts.append(ln[len('python -c "'):ln.rindex('"')])
    return scripts


@pytest.mark.parametrize("name,steps", [("train_tiny", 2), ("train_demo_lora", 1)])
def test_the_example_yamls_run_as_their_headers_say(tmp_path, monkeypatch, name, steps):
    """Each example YAML's preparation (its header), then `openwan train --config` on it (fewer steps), then
    the header's sampling code when it has one, all in a scratch folder (the examples use relative runs/ paths)."""
    example = Path(__file__).resolve().parents[1] / "examples" / f"{name}.yaml"
    scripts = _header_scripts(example)
    assert scripts, "the header has no commands"
    monkeypatch.chdir(tmp_path)
    prep = scripts[0].replace("range(16)", "range(2)") if name == "train_demo_lora" else "\n".join(scripts[:2])
    exec(compile(prep, f"{name} prep", "exec"), {})  # (the demo example's 16 clips cut to 2 for time)
    assert main(["--config", str(example), "--set", f"steps={steps}", "--set", "progress=false",
                 "--set", "batch_size=1"]) == 0
    out = tmp_path / yaml_output_dir(example)
    assert (out / "lora.safetensors").is_file() and (out / "lora_comfyui.safetensors").is_file()
    if name == "train_demo_lora":
        sampling = scripts[1].replace("seed=0,", "seed=0, sample_steps=2,")  # the code runs; not the video's quality
        assert sampling != scripts[1]
        exec(compile(sampling, f"{name} sampling", "exec"), {})
        assert (tmp_path / "runs/demo-lora.mp4").stat().st_size > 0


def yaml_output_dir(example: Path) -> str:
    import yaml
    return yaml.safe_load(example.read_text())["output_dir"]


def test_config_sections_are_typed_and_round_trip():
    from openwan.training.config import EMAConfig, LoRAConfig, OptimizerConfig
    cfg = TrainConfig.from_dict({"model": {"dit": TINY}, "optimizer": {"lr": "1e-4", "betas": ["0.8", 0.9]},
                                 "lora": {"rank": 4, "targets": "q, ffn.0"}, "ema": {}, "steps": 1e3,
                                 "timesteps": {"type": "logit_normal", "shift": 3}, "objective": "flow_matching"})
    assert cfg.optimizer == OptimizerConfig(lr=1e-4, betas=(0.8, 0.9)) and cfg.steps == 1000
    assert cfg.lora == LoRAConfig(rank=4, targets=("q", "ffn.0")) and cfg.ema == EMAConfig()
    assert cfg.timesteps.distribution == "logit_normal" and cfg.timesteps.shift == 3.0
    d = cfg.to_dict()
    assert d["optimizer"] == {"betas": [0.8, 0.9]} and d["ema"] == {} and d["lora"]["targets"] == ["q", "ffn.0"]
    assert TrainConfig.from_dict(d) == cfg  # what config.json / state.json hold reads back to the same config
    assert TrainConfig.from_dict({}).lora is None and TrainConfig.from_dict({}).ema is None


def test_leftovers_of_killed_runs_are_cleaned(tmp_path):
    """A kill while pruning or writing leaves a half-deleted or half-written folder: the next save removes it."""
    from openwan.training.checkpoint import clean_leftovers
    root = tmp_path / "checkpoints"
    Trainer(config(tmp_path, steps=2, checkpoint_every=1, keep_checkpoints=5), dataset=latents()).train()
    half = root / "step-00000001"
    (half / "state.json").unlink()                        # pruning killed after its first file
    (root / ".step-00000009.tmp").mkdir()                 # a save killed before its rename
    (root / ".step-00000000.deleting").mkdir()            # a prune killed after its rename
    assert sorted(p.name for p in clean_leftovers(root)) == [".step-00000000.deleting", ".step-00000009.tmp",
                                                             "step-00000001"]
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002"]


def test_auto_precision_follows_the_cpu_and_the_model_size(tmp_path, monkeypatch):
    """precision auto: bf16 autocast on CUDA and on AMX CPUs for models of >= 50M parameters (1.9x faster a
    training step at the 1.3B width there), fp32 for small models and CPUs without fast bf16."""
    from openwan import runtime
    amx, avx2 = {"amx_tile", "amx_bf16", "avx512_bf16"}, {"avx2"}
    big, small = runtime.BF16_MIN_PARAMS, runtime.BF16_MIN_PARAMS - 1
    assert runtime.training_precision("auto", "cpu", big, amx)[0] == "bf16"
    assert runtime.training_precision("auto", "cpu", small, amx) == (
        "fp32", f"auto: a small model ({small / 1e6:.1f}M parameters: bf16 gains nothing at its GEMM sizes)")
    assert runtime.training_precision("auto", "cpu", big, avx2)[0] == "fp32"
    assert runtime.training_precision("auto", "cuda", 10, avx2)[0] == "bf16"
    assert runtime.training_precision("fp32", "cpu", big, amx) == ("fp32", "as requested")
    assert runtime.training_precision("bf16", "cpu", small, avx2) == ("bf16", "as requested")
    # the Trainer asks with its model's parameter count: a tiny model on a (faked) AMX CPU stays fp32
    monkeypatch.setattr(runtime, "cpu_features", lambda: frozenset(amx))
    tr = Trainer(config(tmp_path / "a", steps=1, batch_size=1), model=rand_model(), dataset=latents(2))
    assert tr.autocast_dtype is None and tr.precision == "fp32" and "small model" in tr.precision_reason
    monkeypatch.setattr(runtime, "BF16_MIN_PARAMS", 10)
    tr = Trainer(config(tmp_path / "b", steps=1, batch_size=1), model=rand_model(), dataset=latents(2))
    assert tr.autocast_dtype == torch.bfloat16 and tr.train()["precision"] == "bf16"
    monkeypatch.setattr(runtime, "cpu_features", lambda: frozenset(avx2))
    with pytest.warns(UserWarning, match="bf16 autocast is slow on a CPU without AMX"):
        Trainer(config(tmp_path / "c", steps=1, batch_size=1, precision="bf16"), model=rand_model(),
                dataset=latents(2))
