"""Merging demo latents files (python -m openwan.demo.train --stage merge-latents --merge A B)."""
import pytest
import torch

from openwan.demo.latents import merge_latents


def _latents_file(path, n, first, still=True, size=128, length=9, text_scale=1.0):
    caps = [[f"clip {first + i} a", f"clip {first + i} b"] for i in range(n)]
    data = {"latents": [torch.full((4, length + (i % 2) * 4, 2, 2), float(first + i)) for i in range(n)],
            "captions": caps, "attributes": [[("red", "circle", "left")] for _ in range(n)],
            "text": {c: torch.full((3, 8), text_scale * len(c)) for c in [""] + [c for cs in caps for c in cs]},
            "vae_config": {"dim": 8, "mean": [0.1], "std": [0.9]}, "size": size, "frames": 33, "extend": 16}
    if still:
        data["last_still"] = torch.arange(first, first + n, dtype=torch.float32).view(n, 1, 1, 1, 1).expand(
            n, 4, 1, 2, 2).clone()
    torch.save(data, path)
    return data


def test_merge_keeps_every_clip_in_order(tmp_path):
    a = _latents_file(tmp_path / "a.pt", 3, 0)
    b = _latents_file(tmp_path / "b.pt", 2, 3)
    b["extend"] = 0
    torch.save(b, tmp_path / "b.pt")
    merge_latents([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "m.pt")
    m = torch.load(tmp_path / "m.pt", weights_only=False)
    assert [float(z[0, 0, 0, 0]) for z in m["latents"]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [tuple(z.shape) for z in m["latents"]] == [tuple(z.shape) for z in a["latents"] + b["latents"]]
    assert m["captions"] == a["captions"] + b["captions"] and len(m["attributes"]) == 5
    assert m["text"].keys() == a["text"].keys() | b["text"].keys()
    assert all(torch.equal(m["text"][c], f) for c, f in a["text"].items())   # the first file's features
    assert m["last_still"][:, 0, 0, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert (m["size"], m["frames"], m["extend"], m["vae_config"]) == (128, 33, 16, a["vae_config"])


def test_merge_takes_features_rounded_in_another_batch(tmp_path):
    """The same encoder run on another batch of captions rounds a few ulps differently: that merges; another
    encoder (features off at their own scale) does not."""
    eps = torch.finfo(torch.float32).eps
    _latents_file(tmp_path / "a.pt", 2, 0)
    _latents_file(tmp_path / "ulps.pt", 2, 0, text_scale=1 + 8 * eps)
    _latents_file(tmp_path / "other.pt", 2, 0, text_scale=1 + 1e-3)
    merge_latents([tmp_path / "a.pt", tmp_path / "ulps.pt"], tmp_path / "m.pt")
    with pytest.raises(ValueError, match="text encoder"):
        merge_latents([tmp_path / "a.pt", tmp_path / "other.pt"], tmp_path / "m.pt")


def test_merge_refuses_what_does_not_fit(tmp_path):
    _latents_file(tmp_path / "a.pt", 2, 0)
    _latents_file(tmp_path / "size.pt", 2, 2, size=64)
    _latents_file(tmp_path / "nostill.pt", 2, 2, still=False)
    _latents_file(tmp_path / "text.pt", 2, 0, text_scale=2.0)
    with pytest.raises(ValueError, match="another size"):
        merge_latents([tmp_path / "a.pt", tmp_path / "size.pt"], tmp_path / "m.pt")
    with pytest.raises(ValueError, match="--still"):
        merge_latents([tmp_path / "a.pt", tmp_path / "nostill.pt"], tmp_path / "m.pt")
    with pytest.raises(ValueError, match="text encoder"):
        merge_latents([tmp_path / "a.pt", tmp_path / "text.pt"], tmp_path / "m.pt")
    with pytest.raises(ValueError, match="overwrite"):
        merge_latents([tmp_path / "a.pt", tmp_path / "size.pt"], tmp_path / "a.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        merge_latents([tmp_path / "a.pt", tmp_path / "missing.pt"], tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_merge_stage_of_the_recipe(tmp_path, capsys):
    from openwan.demo.train import main
    _latents_file(tmp_path / "a.pt", 2, 0)
    _latents_file(tmp_path / "b.pt", 1, 2)
    work = tmp_path / "work"
    assert main(["--stage", "merge-latents", "--work_dir", str(work), "--merge", str(tmp_path / "a.pt"),
                 str(tmp_path / "b.pt")]) == 0
    assert len(torch.load(work / "latents.pt", weights_only=False)["latents"]) == 3
    with pytest.raises(ValueError, match="--merge FILE"):
        main(["--stage", "merge-latents", "--work_dir", str(work)])


def test_recaption_writes_wide_captions_of_each_clips_attributes(tmp_path):
    from openwan.demo import world
    from openwan.demo.latents import _same_features, make_text_encoder, recaption_latents
    src = _latents_file(tmp_path / "a.pt", 3, 0)
    src["attributes"][1] = [("blue", "square", "up"), ("green", "triangle", "still")]
    torch.save(src, tmp_path / "a.pt")
    recaption_latents(tmp_path / "a.pt", tmp_path / "r.pt", captions=4, seed=3)
    r = torch.load(tmp_path / "r.pt", weights_only=False)
    for key in ("latents", "attributes", "last_still", "vae_config", "size", "frames", "extend"):
        assert str(r[key]) == str(src[key]), key                      # the clips untouched
    for caps, attrs in zip(r["captions"], r["attributes"]):
        assert len(caps) == len(set(caps)) == 4
        assert all(world.parse_objects(c) == [world.Attributes(*a) for a in attrs] for c in caps), caps
    assert r["text"].keys() == {""} | {c for caps in r["captions"] for c in caps}
    te = make_text_encoder()
    c = r["captions"][0][0]
    # the demo's frozen encoder's features, up to the rounding another batch's padding gives (merge's criterion)
    assert _same_features(r["text"][c], te.encode([c])[0].float())
    recaption_latents(tmp_path / "a.pt", tmp_path / "r2.pt", captions=4, seed=3)
    assert torch.load(tmp_path / "r2.pt", weights_only=False)["captions"] == r["captions"]   # a function of seed
    with pytest.raises(ValueError, match="overwrite"):
        recaption_latents(tmp_path / "a.pt", tmp_path / "a.pt")
    with pytest.raises(FileNotFoundError):
        recaption_latents(tmp_path / "missing.pt", tmp_path / "x.pt")
