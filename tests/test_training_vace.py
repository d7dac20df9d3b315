"""VACE training (data.task / `openwan cache-latents --task vace`): the cache holds the VACE context the pipeline's
own function builds from each sample's control video and mask, fitted to the clip exactly as the clip is; the
trainer feeds it to the DiT; what cannot line up is named."""
import csv

import numpy as np
import pytest
import torch
from training_helpers import config

from openwan.training.trainer import Trainer

BUCKET = [5, 32, 32]


def _video(path, frames=5, h=32, w=32, seed=0):
    from openwan.video import write_video
    rng = np.random.default_rng(seed)
    write_video(rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8), path, fps=16, overwrite=True)
    return path


def _mask_image(path, h=32, w=32):
    from PIL import Image
    m = np.zeros((h, w, 3), np.uint8)
    m[:, w // 2:] = 255                                   # the right half is generated
    Image.fromarray(m).save(path)
    return path


def _captions(root, rows):
    with open(root / "d.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "caption", "control", "mask"])
        w.writerows(rows)
    return root / "d.csv"


@pytest.fixture(scope="module")
def vace_data(tmp_path_factory):
    from openwan.testing import make_tiny_checkpoint
    root = tmp_path_factory.mktemp("vace_train")
    ckpt = make_tiny_checkpoint(root / "ckpt", variant="tiny-vace")
    for i in range(3):
        _video(root / f"c{i}.mp4", seed=i)
    _video(root / "k0.mp4", h=64, w=64, seed=10)          # a control at twice the size: resized as the clip is
    _mask_image(root / "m1.png")
    rows = [["c0.mp4", "a square", "k0.mp4", ""],          # control only: the signal to follow
            ["c1.mp4", "a circle", "", "m1.png"],          # mask only: the clip is its own source (inpainting)
            ["c2.mp4", "a triangle", "", ""]]              # neither: text-to-video through VACE
    return ckpt, root, _captions(root, rows)


def _cached(out):
    from openwan.training.data import CachedLatentDataset
    ds = CachedLatentDataset(out)
    return {item_path(ds, i): ds[i] for i in range(len(ds))}


def item_path(ds, i):
    from safetensors import safe_open
    with safe_open(str(ds.files[i]), "pt") as fh:
        return fh.metadata()["path"].rsplit("/", 1)[-1]


def test_the_cache_holds_the_pipelines_vace_context_of_each_samples_control_and_mask(vace_data, tmp_path):
    from openwan.models.vae import WanVAE
    from openwan.pipelines.vace import vace_context
    from openwan.training.cache import cache_latents_from_checkpoint
    from openwan.training.data import load_media, read_captions, resize_center_crop
    ckpt, root, captions = vace_data
    samples = read_captions(captions)
    assert samples[0].control == root / "k0.mp4" and samples[0].mask is None
    assert samples[1].control is None and samples[1].mask == root / "m1.png" and samples[2].control is None
    summary = cache_latents_from_checkpoint(captions, tmp_path / "cache", ckpt, [BUCKET], task="vace", progress=False)
    assert summary["written"] == 3 and not summary["failed"]
    items = _cached(tmp_path / "cache")
    vae = WanVAE.from_pretrained(ckpt)
    clip = lambda name: resize_center_crop(load_media(root / name)[0], 32, 32)   # noqa: E731
    right = torch.zeros(5, 32, 32)
    right[:, :, 16:] = 1.0
    want = {"c0.mp4": vace_context(vae, clip("k0.mp4"), torch.ones(5, 32, 32)),
            "c1.mp4": vace_context(vae, clip("c1.mp4"), right),
            "c2.mp4": vace_context(vae, torch.zeros(3, 5, 32, 32), torch.ones(5, 32, 32))}
    for name, item in items.items():
        assert item["vace_context"].shape == (96, 2, 4, 4) and item["latent"].shape == (16, 2, 4, 4)
        assert torch.equal(item["vace_context"], want[name]), name
    # the three modes differ where they should: the inactive half is empty without a mask's kept pixels
    assert not torch.equal(want["c0.mp4"], want["c2.mp4"]) and not torch.equal(want["c1.mp4"], want["c2.mp4"])
    again = cache_latents_from_checkpoint(captions, tmp_path / "cache", ckpt, [BUCKET], task="vace", progress=False)
    assert again["skipped"] == 3                                      # resumable, as every task
    _video(root / "k0b.mp4", h=64, w=64, seed=11)
    moved = _captions(tmp_path, [[str(root / "c0.mp4"), "a square", str(root / "k0b.mp4"), ""]])
    assert cache_latents_from_checkpoint(moved, tmp_path / "cache", ckpt, [BUCKET], task="vace",
                                         progress=False)["written"] == 1          # another control: encoded anew


def test_what_cannot_line_up_is_skipped_and_named(vace_data, tmp_path):
    from openwan.training.cache import cache_latents_from_checkpoint
    ckpt, root, _ = vace_data
    _video(tmp_path / "wide.mp4", h=32, w=64)
    _video(tmp_path / "short.mp4", frames=3)
    bad = _captions(tmp_path, [[str(root / "c0.mp4"), "a", "wide.mp4", ""], [str(root / "c1.mp4"), "b", "short.mp4",
                                                                              ""]])
    with pytest.warns(UserWarning) as caught:
        s = cache_latents_from_checkpoint(bad, tmp_path / "cache", ckpt, [BUCKET], task="vace", progress=False)
    assert s["written"] == 0 and len(s["failed"]) == 2
    said = " ".join(str(w.message) for w in caught)
    assert "wide.mp4 is 64x32 but its clip is 32x32: give it the clip's aspect ratio" in said
    assert "short.mp4 has 3 frame(s)" in said
    with pytest.raises(ValueError, match="only VACE training reads: cache with task 'vace'"):
        cache_latents_from_checkpoint(bad, tmp_path / "t2v", ckpt, [BUCKET], task="t2v", progress=False)


def _cfg(root, ckpt, captions, out, task="vace", steps=4):
    data = {"file": str(captions), "buckets": [BUCKET], "cache_dir": str(root / f"cache_{task}"), "task": task}
    return config(out, model={"path": str(ckpt)}, data=data, steps=steps, batch_size=1, optimizer={"lr": 5e-2},
                  lora={"rank": 2}, save_final=True)


def test_a_vace_lora_trains_on_the_context_and_samples_with_the_pipeline(vace_data, tmp_path):
    from openwan import load_pipeline
    from openwan.training.data import CachedLatentDataset, InMemoryLatentDataset
    from openwan.training.lora import load_lora
    ckpt, root, captions = vace_data
    summary = Trainer(_cfg(root, ckpt, captions, tmp_path / "run")).train()
    assert summary["step"] == 4
    # the context reaches the DiT: the same run with every sample's context zeroed trains on other losses
    ds = CachedLatentDataset(root / "cache_vace")
    zeroed = InMemoryLatentDataset([{**ds[i], "vace_context": torch.zeros_like(ds[i]["vace_context"])}
                                    for i in range(len(ds))])
    rows = lambda d: [r.split(",")[:2] for r in (tmp_path / d / "loss.csv").read_text().splitlines()]  # noqa: E731
    Trainer(_cfg(root, ckpt, captions, tmp_path / "zero"), dataset=zeroed).train()
    again = InMemoryLatentDataset([ds[i] for i in range(len(ds))])
    Trainer(_cfg(root, ckpt, captions, tmp_path / "again"), dataset=again).train()
    assert rows("again") == rows("run") and rows("zero")[1:] != rows("run")[1:]
    # the LoRA (its VACE blocks' layers too) loads into the VACE pipeline and changes what it draws
    from safetensors import safe_open
    with safe_open(str(tmp_path / "run" / "lora.safetensors"), "pt") as fh:
        assert any("vace_blocks" in k for k in fh.keys())
    pipe = load_pipeline(str(ckpt), progress=False)
    kw = dict(src_video=str(root / "k0.mp4"), size="32*32", frame_num=5, sample_steps=2, seed=0, output_type="latent")
    base = pipe("a square", **kw).latents
    load_lora(pipe.dit, tmp_path / "run" / "lora.safetensors")
    assert (pipe("a square", **kw).latents - base).abs().max() > 1e-4


def test_the_model_and_the_cache_must_agree_on_vace(vace_data, tmp_path):
    from openwan.testing import make_tiny_checkpoint
    ckpt, root, captions = vace_data
    t2v = make_tiny_checkpoint(tmp_path / "t2v")
    Trainer(_cfg(root, ckpt, captions, tmp_path / "fill", steps=1))         # the vace cache, built here
    with pytest.raises(ValueError, match="carry a VACE context .* without VACE blocks"):
        Trainer(_cfg(root, t2v, captions, tmp_path / "a"))
    plain = _captions(tmp_path, [[str(root / f"c{i}.mp4"), "x", "", ""] for i in range(2)])
    with pytest.raises(ValueError, match="no VACE context: cache them with `openwan cache-latents --task vace`"):
        Trainer(_cfg(tmp_path, ckpt, plain, tmp_path / "b", task="t2v"))
