"""Tiny random checkpoints in the published layouts, for tests, examples and smoke runs."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from openwan.configs import get_variant


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Give every parameter (the zero-initialised ones too) random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if name.endswith(("gamma", "norm.weight", "norm_q.weight", "norm_k.weight")) else 0.0
            p.copy_(base + torch.randn(p.shape, generator=g) * std)
    return module


def make_tiny_checkpoint(path: Union[str, Path], variant: str = "tiny-t2v", layout: str = "official",
                         seed: int = 0) -> Path:
    """Write a tiny random checkpoint of ``variant`` (a tiny-* config) in the official or diffusers layout."""
    from openwan.models.dit import WanModel
    from openwan.models.text_encoder import TINY_TOKENIZER_DIR, TextEncoder
    from openwan.models.vae import WanVAE
    v = get_variant(variant)
    path = Path(path)
    torch.manual_seed(seed)
    dit = randomize_(WanModel(v.dit), seed)
    vae = randomize_(WanVAE(v.vae), seed + 1, std=0.05)
    te = TextEncoder(v.text_encoder, TINY_TOKENIZER_DIR, seed=seed + 2, cache_dir=False)
    if layout == "official":
        dit.save_pretrained(path)
        vae.save_pretrained(path)
        te.save_pretrained(path)
    else:
        dit.save_pretrained(path / "transformer", layout="diffusers")
        vae.save_pretrained(path / "vae", layout="diffusers")
        te.save_pretrained(path, layout="diffusers")
    if v.image_encoder is not None:
        from openwan.models.image_encoder import ImageEncoder
        ImageEncoder(v.image_encoder, seed=seed + 3).save_pretrained(path, layout=layout)
    return path
