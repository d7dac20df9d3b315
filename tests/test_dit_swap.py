"""DiT weights in place of a checkpoint's (``load_pipeline(..., dit=PATH)``, ``openwan generate --dit PATH``): a full
fine-tune samples with the rest of its base checkpoint, checked against the architecture, recorded and replayed."""
import json

import pytest
import torch

from openwan import load_pipeline
from openwan.testing import make_tiny_checkpoint, make_tiny_wan22_checkpoint

KW = dict(size="32*32", frame_num=5, sample_steps=3, seed=1, output_type="latent")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A tiny checkpoint and "fine-tuned" DiT weights of it (its DiT perturbed), as a folder and as one file."""
    from openwan.checkpoints import save_safetensors
    root = tmp_path_factory.mktemp("swap")
    ckpt = make_tiny_checkpoint(root / "base")
    dit = load_pipeline(str(ckpt), progress=False).dit
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    dit.save_pretrained(root / "final")
    save_safetensors({k: v.contiguous() for k, v in dit.state_dict().items()}, root / "final.safetensors")
    return ckpt, root, {k: v.clone() for k, v in dit.state_dict().items()}


@pytest.mark.parametrize("form", ["final", "final.safetensors"])
def test_the_swapped_dit_samples_with_the_checkpoints_other_models(tuned, form):
    ckpt, root, weights = tuned
    pipe = load_pipeline(str(ckpt), progress=False, dit=str(root / form))
    assert all(torch.equal(v, weights[k]) for k, v in pipe.dit.state_dict().items())
    by_hand = load_pipeline(str(ckpt), progress=False)
    base = by_hand("a red ball", **KW).latents
    by_hand.dit.load_state_dict(weights)
    out = pipe("a red ball", **KW)
    assert torch.equal(out.latents, by_hand("a red ball", **KW).latents)
    assert (out.latents - base).abs().max() > 1e-3 and out.settings["dit"] == str(root / form)


def test_cli_records_and_replays_the_dit(tuned, tmp_path, capsys):
    from openwan.cli import main
    ckpt, root, _ = tuned
    out = tmp_path / "v.mp4"
    common = ["--size", "32*32", "--frame_num", "5", "--sample_steps", "3", "--quiet"]
    assert main(["generate", "a red ball", "--ckpt_dir", str(ckpt), "--dit", str(root / "final"), "--seed", "2",
                 "-o", str(out), *common]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["openwan"]["dit"] == str(root / "final")
    again = tmp_path / "again.mp4"
    assert main(["generate", "--from", str(out.with_suffix(".json")), "-o", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()
    capsys.readouterr()
    assert main(["generate", "x", "--ckpt_dir", str(ckpt), "--dit", str(tmp_path / "nowhere"), *common]) == 2
    assert f"--dit {tmp_path / 'nowhere'}: not found" in capsys.readouterr().err


def test_another_architecture_and_two_experts_are_refused(tuned, tmp_path):
    from openwan.checkpoints import CheckpointError
    ckpt, root, _ = tuned
    other = make_tiny_checkpoint(tmp_path / "vace", variant="tiny-vace")
    with pytest.raises(CheckpointError, match="not a DiT of .*'s architecture"):
        load_pipeline(str(ckpt), progress=False, dit=str(other))
    a14b = make_tiny_wan22_checkpoint(tmp_path / "a14b", "t2v-A14B", "official")
    with pytest.raises(ValueError, match="holds Wan 2.2 A14B's two experts"):
        load_pipeline(str(a14b), progress=False, dit=str(root / "final"))


def test_a_built_dit_is_used_as_it_is_and_the_checkpoints_is_never_read(tuned, monkeypatch):
    """dit=<a WanModel> (diffusers' transformer=model): that very module samples, its dtype untouched, and the
    checkpoint's DiT is read only on the meta device (its config, to check the architecture); another one is
    refused with the fields that differ."""
    from openwan.checkpoints import CheckpointError
    from openwan.models.dit import WanModel
    ckpt, root, weights = tuned
    model = WanModel.from_pretrained(root / "final")
    plain = WanModel.from_pretrained.__func__
    devices = []

    def spy(cls, path, *a, device=None, **k):
        devices.append((str(path), str(device)))
        return plain(cls, path, *a, device=device, **k)
    monkeypatch.setattr(WanModel, "from_pretrained", classmethod(spy))
    pipe = load_pipeline(str(ckpt), progress=False, dit=model)
    assert pipe.dit is model and devices and all(d == "meta" for _, d in devices)
    monkeypatch.undo()
    by_path = load_pipeline(str(ckpt), progress=False, dit=str(root / "final"))
    out = pipe("a red ball", **KW)
    assert torch.equal(out.latents, by_path("a red ball", **KW).latents) and "dit" not in out.settings
    other = WanModel(model.config.replace(num_layers=model.config.num_layers + 1))
    with pytest.raises(CheckpointError, match=r"dit: the given model is not a DiT of .*num_layers 2 vs 3"):
        load_pipeline(str(ckpt), progress=False, dit=other)


def test_serve_loads_its_workers_with_the_dit(tuned, tmp_path, capsys):
    from openwan.serve import _load_options, build_parser, main
    ckpt, root, _ = tuned
    a = build_parser().parse_args(["--ckpt_dir", str(ckpt), "--dit", str(root / "final")])
    options = _load_options(a, None)
    assert options["dit"] == str(root / "final")
    pipe = load_pipeline(str(ckpt), progress=False, **options)      # what each worker loads
    assert pipe.settings()["dit"] == str(root / "final")
    assert main(["--ckpt_dir", str(ckpt), "--dit", str(tmp_path / "nowhere"), "--port", "0",
                 "--output_dir", str(tmp_path / "out")]) == 2
    assert f"--dit {tmp_path / 'nowhere'}: not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()                           # refused before loading
