"""Training data: captions (csv, jsonl, a folder), buckets, resizing, media with corrupt files skipped, the latent
cache (resumable, real tiny encoders, the image condition of i2v / flf2v, the empty prompt), bucketed, sharded
batches and caption dropout."""
import json
import math

import numpy as np
import pytest
import torch
from bounds import float64_twin, fp32_bound, noise_floor
from training_helpers import config, rand_model, write_clip

from openwan.models.dit import WanModel
from openwan.training.data import (BucketBatchSampler, CachedLatentDataset, InMemoryLatentDataset, MediaDataset,
                                   parse_buckets, prepare_media, read_captions, resize_center_crop,
                                   select_bucket, shard_batch)
from openwan.training.trainer import Trainer


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


def test_media_and_corrupt_files_are_skipped_with_a_warning(tmp_path):
    from PIL import Image
    write_clip(tmp_path / "good.mp4", frames=9)
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
    write_clip(tmp_path / "fast.mp4", frames=17, fps=32)
    v, b = prepare_media(tmp_path / "fast.mp4", [(9, 32, 48)], target_fps=16)
    v_all, _ = prepare_media(tmp_path / "fast.mp4", [(17, 32, 48)])
    # the same frames, resized in a batch of 9 vs 17: an antialiased bilinear 4:3 reduction sums <= 5 taps per axis
    # (2 passes) of pixels 0..255 (2 in [-1, 1] units), then / 127.5 - 1: 12 roundings, 2 ulps each (both sides) of
    # 2: 5.7e-6; the wrong frames differ by 20 levels (0.16)
    assert b == (9, 32, 48) and (v - v_all[:, ::2]).abs().max().item() <= fp32_bound(255 / 127.5, terms=12, ulps=2)


class _Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a):
        self.calls += 1
        return self.fn(*a)


def test_cache_latents_resumable_with_stand_ins(tmp_path):
    from openwan.training.cache import MANIFEST, cache_latents
    for i in range(3):
        write_clip(tmp_path / f"c{i}.mp4", frames=9 + 4 * i)
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
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 4 + 1  # + the empty prompt's features
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
    write_clip(tmp_path / "a.mp4", frames=5, h=32, w=32)
    (tmp_path / "d.csv").write_text("path,caption\na.mp4,a red ball\n")
    cache_latents(tmp_path / "d.csv", tmp_path / "cache", vae, te, [[5, 16, 16]], progress=False)
    item = CachedLatentDataset(tmp_path / "cache")[0]
    video, _ = prepare_media(tmp_path / "a.mp4", [(5, 16, 16)])
    # the cache stores (in fp32) what the same encoders give for the same input in this process: equal bit for bit
    # (the same kernels on the same shapes)
    assert torch.equal(item["latent"], vae.encode(video[None])[0])
    assert item["latent"].shape == (16, 2, 2, 2)
    assert torch.equal(item["context"], te.encode(["a red ball"])[0])


@pytest.mark.parametrize("task", ["i2v", "flf2v"])
def test_cache_latents_image_condition_for_i2v_and_flf2v_training(tmp_path, task):
    """--task i2v / flf2v stores y (mask + latent of the clip's first / last frame with zeros between)
    and clip_fea, built by hand here; an I2V / FLF2V DiT trains on it; mismatched model/cache is a clear error."""
    from openwan.configs import TINY_VARIANTS
    from openwan.models.image_encoder import ImageEncoder
    from openwan.models.text_encoder import TextEncoder
    from openwan.models.vae import WanVAE
    from openwan.pipelines.i2v import image_condition
    from openwan.training.cache import cache_latents
    var = TINY_VARIANTS[f"tiny-{task}"]
    torch.manual_seed(0)
    vae = WanVAE(var.vae).eval()
    te = TextEncoder(var.text_encoder, seed=0, cache_dir=False)
    ie = ImageEncoder(var.image_encoder, seed=0)
    write_clip(tmp_path / "a.mp4", frames=9, h=32, w=32)
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
    # the cache streams the clip to the encoder chunk by chunk, here it is whole: the same arithmetic but for the
    # shapes of the final 1x1 projection (per latent frame vs all at once). Noise floor measured: each fp32 latent
    # against the same path in float64; the two differ by at most about twice that (~8e-7 here); a wrong frame or
    # position is off by ~0.1
    wide = float64_twin(vae)
    f = video.shape[1]
    images = {0: video[:, 0]} if task == "i2v" else {0: video[:, 0], f - 1: video[:, -1]}
    whole = vae.encode(cond[None])[0]
    floor = noise_floor((item["y"][4:], image_condition(wide, images, f, 32, 32)[4:]),
                        (whole, wide.encode(cond[None].double())[0]))
    assert (item["y"][4:] - whole).abs().max().item() <= 2 * floor
    frames = video[:, [0]] if task == "i2v" else video[:, [0, -1]]
    # the same images in another memory layout: as tests/test_image_encoder.py, 2 ulps of the largest feature for each
    # of the tower's ~16 reductions (~1.2e-5); features of another image differ by O(1)
    clip_fea = ie.encode(frames.transpose(0, 1))
    assert (item["clip_fea"] - clip_fea).abs().max().item() <= fp32_bound(clip_fea, terms=16, ulps=2)
    assert torch.equal(item["latent"], vae.encode(video[None])[0])   # as in the test above

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


# =========================================================================== caption dropout

def test_the_cache_holds_the_empty_prompt_apart_from_the_samples(tmp_path):
    from openwan.training.cache import cache_latents
    from openwan.training.data import EMPTY_PROMPT
    write_clip(tmp_path / "a.mp4", frames=5, h=32, w=32)
    (tmp_path / "d.csv").write_text("path,caption\na.mp4,a red ball\n")
    enc_t = lambda ps: [torch.full((len(p) + 1, 32), float(len(p) + 7)) for p in ps]  # noqa: E731
    enc_v = lambda v: v[:, :, ::4, ::8, ::8].repeat(1, 6, 1, 1, 1)[:, :16]  # noqa: E731
    cache_latents(tmp_path / "d.csv", tmp_path / "cache", enc_v, enc_t, [[5, 16, 16]], progress=False)
    ds = CachedLatentDataset(tmp_path / "cache")
    assert len(ds) == 1 and torch.equal(ds.empty_context, torch.full((1, 32), 7.0))  # enc_t([""])
    (tmp_path / "cache" / "manifest.json").unlink()  # without the manifest (globbed) it is no sample either
    assert len(CachedLatentDataset(tmp_path / "cache")) == 1
    (tmp_path / "cache" / EMPTY_PROMPT).unlink()  # a cache from before: None, and training with dropout says so
    assert CachedLatentDataset(tmp_path / "cache").empty_context is None
    cfg = config(tmp_path / "run", batch_size=1, data={"cache_dir": str(tmp_path / "cache"), "caption_dropout": 0.1})
    with pytest.raises(ValueError, match="run `openwan cache-latents` on it again"):
        Trainer(cfg)
    with pytest.raises(ValueError, match=r"data.caption_dropout must be in \[0, 1\)"):
        Trainer(config(tmp_path / "run", data={"cache_dir": str(tmp_path / "cache"), "caption_dropout": 1}))


class _Contexts:
    """An objective that records each sample's context (by step and index) and returns a loss of the model."""

    def __init__(self):
        self.seen = {}

    def __call__(self, model, batch, rng):
        for i, c in zip(batch.index, batch.context):
            self.seen[(batch.step, i)] = c.detach().clone()
        return sum(p.sum() for p in model.parameters()) * 0.0, {}


def _dropout_run(out, ds, p, **kw):
    obj = _Contexts()
    Trainer(config(out, data={"caption_dropout": p}, **kw), model=rand_model(), dataset=ds, objective=obj).train()
    return obj.seen


def test_caption_dropout_swaps_in_the_empty_prompt_for_its_share_of_samples(tmp_path):
    g = torch.Generator().manual_seed(0)
    items = [(torch.randn(16, 1, 4, 4, generator=g), torch.randn(5, 32, generator=g)) for _ in range(8)]
    empty = torch.randn(2, 32, generator=g)
    ds = InMemoryLatentDataset(items, empty_context=empty)
    p, steps, batch = 0.3, 25, 8
    seen = _dropout_run(tmp_path / "a", ds, p, steps=steps, batch_size=batch)
    dropped = {k for k, c in seen.items() if c.shape == empty.shape and torch.equal(c, empty)}
    kept = set(seen) - dropped
    # every other context is one of the samples' own captions, unchanged
    assert all(any(torch.equal(seen[k], c) for _, c in items) for k in kept)
    # the share: binomial(200, 0.3), mean 60, sd 6.5; 5 sd either side
    n = steps * batch
    sd = math.sqrt(n * p * (1 - p))
    assert abs(len(dropped) - n * p) <= 5 * sd and len(seen) == n
    # the same samples are dropped however the step is split (micro-batches), and none at 0
    split = _dropout_run(tmp_path / "b", ds, p, steps=steps, batch_size=batch // 2, grad_accum=2)
    assert {k for k, c in split.items() if c.shape == empty.shape and torch.equal(c, empty)} == dropped
    none = _dropout_run(tmp_path / "c", ds, 0.0, steps=3, batch_size=batch)
    assert not any(c.shape == empty.shape and torch.equal(c, empty) for c in none.values())
    with pytest.raises(ValueError, match="empty prompt"):  # an in-memory set without one
        _dropout_run(tmp_path / "d", InMemoryLatentDataset(items), p, steps=1, batch_size=2)


def test_cache_latents_command_takes_demo_as_the_checkpoint(tmp_path):
    """`openwan cache-latents --ckpt_dir demo` (as a training config's model.path: demo): the demo's VAE and text
    encoder, the same files as with the demo's folder spelled out."""
    from openwan.demo import demo_checkpoint_dir
    from openwan.training.cache import cache_latents_from_checkpoint, main
    write_clip(tmp_path / "a.mp4", frames=5, h=32, w=32)
    (tmp_path / "d.csv").write_text("path,caption\na.mp4,a red circle moving to the right\n")
    assert main(["--data", str(tmp_path / "d.csv"), "--out", str(tmp_path / "named"), "--ckpt_dir", "demo",
                 "--bucket", "5x32x32"]) == 0
    cache_latents_from_checkpoint(tmp_path / "d.csv", tmp_path / "folder", demo_checkpoint_dir(), [[5, 32, 32]],
                                  progress=False)
    a, b = CachedLatentDataset(tmp_path / "named"), CachedLatentDataset(tmp_path / "folder")
    assert torch.equal(a[0]["latent"], b[0]["latent"]) and torch.equal(a.empty_context, b.empty_context)
