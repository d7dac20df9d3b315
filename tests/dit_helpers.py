"""Tiny Wan DiTs with random weights and their inputs, for the DiT tests (test_dit.py, test_dit_runtime.py)."""
import torch

from openwan.configs import DiTConfig
from openwan.models.dit import WanModel

TS = (999, 500, 3)


def tiny(model_type="t2v", **kw):
    base = dict(dim=24, ffn_dim=32, num_heads=2, num_layers=2, text_dim=32, model_type=model_type)
    if model_type in ("i2v", "flf2v"):
        base.update(in_dim=36, image_dim=32)
    base.update(kw)
    return DiTConfig(**base)


def randomize(model, seed=0, std=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def rand_model(cfg, seed=0):
    torch.manual_seed(seed)
    return randomize(WanModel(cfg).eval(), seed)


def inputs(cfg, b=1, f=3, h=8, w=8, seed=1, text=7):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 16, f, h, w, generator=g)
    ctx = torch.randn(b, text, cfg.text_dim, generator=g)
    kw = {}
    if cfg.has_image_input:
        kw["y"] = torch.randn(b, cfg.in_dim - 16, f, h, w, generator=g)
        n_img = 2 * b if cfg.model_type == "flf2v" else b
        kw["clip_fea"] = torch.randn(n_img, 257, cfg.image_dim, generator=g)
    if cfg.is_vace:
        kw["vace_context"] = torch.randn(b, cfg.vace_in_dim, f, h, w, generator=g)
        kw["vace_context_scale"] = 0.7
    return x, ctx, kw
