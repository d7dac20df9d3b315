"""A tiny DiT, latents, a trainer config and a short clip on disk, for the training tests (test_training.py,
test_training_data.py)."""
import numpy as np
import torch

from openwan.configs import DiTConfig
from openwan.models.dit import WanModel
from openwan.training.data import InMemoryLatentDataset

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


def write_clip(path, frames=9, h=48, w=64, fps=16):
    from openwan.video import write_video
    t = np.arange(frames)[:, None, None, None]
    video = np.broadcast_to((t * 20 % 255).astype(np.uint8), (frames, h, w, 3)).copy()
    write_video(video, path, fps=fps, overwrite=True)
    return path
