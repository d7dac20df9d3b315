"""`openwan convert ... --lora FILE[:STRENGTH]`: LoRA files merged into the written DiT, so the converted folder
samples exactly what the source does with --lora (Wan 2.1 and the Wan 2.2 A14B experts, one or both)."""
import pytest
import torch

from openwan.convert import convert
from openwan.testing import make_tiny_checkpoint, make_tiny_wan22_checkpoint

KW = dict(size="32*32", frame_num=5, sample_steps=3, seed=1, output_type="latent")


def _lora_file(model, path, seed):
    """A LoRA on ``model``'s attention and FFN with random A and B (B is zero at a fresh start: nothing to see)."""
    from openwan.training.lora import add_lora, remove_lora, save_lora
    params = add_lora(model, rank=2, alpha=2, targets=["q", "v", "ffn.0"], seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params[1::2]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    save_lora(model, path)
    remove_lora(model)
    return path


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_merged_folder_samples_as_the_source_with_the_lora(tmp_path, capsys):
    import openwan
    from openwan.cli import main
    src = make_tiny_checkpoint(tmp_path / "src")
    pipe = openwan.load_pipeline(str(src), progress=False)
    lora = _lora_file(pipe.dit, tmp_path / "style.safetensors", seed=3)
    base = pipe("a red ball", **KW).latents
    with_lora = pipe("a red ball", lora=f"{lora}:0.7", **KW).latents
    assert (with_lora - base).abs().max() > 1e-3           # the LoRA changes the output
    assert main(["convert", str(src), str(tmp_path / "merged"), "--to", "diffusers", "--lora", f"{lora}:0.7"]) == 0
    assert "1 LoRA file(s) merged" in capsys.readouterr().out
    merged = openwan.load_pipeline(str(tmp_path / "merged"), progress=False)
    from openwan.training.lora import adapter_names
    assert not adapter_names(merged.dit)                    # plain weights: nothing applied on the fly
    # W + 0.7 delta computed as the on-the-fly path does: the same latent, bit for bit
    assert torch.equal(merged("a red ball", **KW).latents, with_lora)


def test_a14b_experts_take_their_own_loras(tmp_path):
    from openwan.pipelines.components import load_components
    src = make_tiny_wan22_checkpoint(tmp_path / "src", "t2v-A14B", "official")
    c = load_components(src, device="cpu")
    lora = _lora_file(c.dit, tmp_path / "high.safetensors", seed=5)
    out = convert(src, tmp_path / "merged", to="official", lora=[f"high:{lora}"])
    m = load_components(out, device="cpu")
    high, low = _weights(m.dit), _weights(m.dit_low)
    before_high, before_low = _weights(c.dit), _weights(c.dit_low)
    changed = [k for k in high if not torch.equal(high[k], before_high[k])]
    assert changed and all(k.endswith("weight") and (".q." in k or ".v." in k or ".ffn.0." in k) for k in changed)
    assert all(torch.equal(low[k], before_low[k]) for k in low)   # "high:" leaves the low-noise expert alone


def test_lora_errors_come_before_any_loading(tmp_path, capsys):
    from openwan.cli import main
    with pytest.raises(FileNotFoundError, match="missing.safetensors: file not found"):
        convert("demo", tmp_path / "x", to="official", lora="missing.safetensors")
    assert not (tmp_path / "x").exists()
    assert main(["convert", "demo", str(tmp_path / "q.safetensors"), "--to", "official", "--quantize", "int8",
                 "--lora", "a.safetensors"]) == 2
    assert "merge first" in capsys.readouterr().err
