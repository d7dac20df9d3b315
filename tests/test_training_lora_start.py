"""Starting a LoRA run from a LoRA file (the config's ``lora.weights``, openwan/training/lora_init.py)."""
import pytest
import torch
from training_helpers import config, latents, rand_model

from openwan.training.trainer import Trainer


def test_a_lora_run_starts_from_a_lora_file(tmp_path):
    """lora.weights: the adapters start as the file's (any format; its alpha rescaled to the run's), train on,
    and what cannot be continued is named."""
    from openwan.checkpoints import CheckpointError
    from openwan.training.lora import load_lora, lora_parameters
    ds = latents(4)
    first = dict(lora={"rank": 2, "alpha": 2, "targets": ["q", "ffn.0"]}, save_final=True, steps=3, batch_size=2)
    Trainer(config(tmp_path / "a", **first), model=rand_model(), dataset=ds).train()
    x = torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    ctx = [torch.randn(5, 32, generator=torch.Generator().manual_seed(2))]
    t = torch.tensor([500])
    ref = rand_model()
    load_lora(ref, tmp_path / "a" / "lora_comfyui.safetensors")
    with torch.no_grad():   # (with gradients on, the DiT takes the low-rank path: the same up to rounding)
        want = ref(x, t, ctx)
    # alpha 4 against the file's 2 (a power of two: the rescaled delta is the same number)
    cont = dict(lora={"rank": 2, "alpha": 4, "targets": ["q", "ffn.0", "o"],
                      "weights": str(tmp_path / "a" / "lora_comfyui.safetensors")}, steps=2, batch_size=2)
    tr = Trainer(config(tmp_path / "b", **cont), model=rand_model(), dataset=ds)
    with torch.no_grad():
        assert torch.equal(tr.module(x, t, ctx), want)   # "o" is not in the file: it starts at zero
    before = [p.detach().clone() for p in lora_parameters(tr.module)]
    tr.train()
    assert any(not torch.equal(a, p) for a, p in zip(before, lora_parameters(tr.module)))
    bad = [({"rank": 4}, "set lora.rank to it"), ({"targets": ["q"]}, "lora.targets leaves out: add 'ffn.0' to")]
    for change, message in bad:
        lora = {**cont["lora"], **change}
        with pytest.raises(CheckpointError, match=message):
            Trainer(config(tmp_path / "c", lora=lora, steps=1, batch_size=2), model=rand_model(), dataset=ds)
    with pytest.raises(FileNotFoundError, match="lora.weights nowhere.safetensors: file not found"):
        Trainer(config(tmp_path / "c", lora={"weights": "nowhere.safetensors"}), model=rand_model(), dataset=ds)
