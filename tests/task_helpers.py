"""Tiny task checkpoints (i2v, flf2v, vace, t2v), pictures and videos, and diffusers' UniPC on the reference grid,
for the task pipeline tests (test_tasks.py, test_tasks_vace_v2v.py)."""
import numpy as np
import torch
from PIL import Image

from openwan import sampling
from openwan.configs import TINY_IMAGE_ENCODER
from openwan.models.image_encoder import ImageEncoder
from openwan.pipelines import load_pipeline
from openwan.testing import make_tiny_checkpoint

PROMPT, NEG = "a red ball rolls", "blurry"


def make_ckpts(root) -> dict:
    """Every tiny checkpoint the task tests load, by name."""
    out = {v: make_tiny_checkpoint(root / v, f"tiny-{v}") for v in ("i2v", "flf2v", "vace", "t2v")}
    # tiny-flf2v's DiT has the published emb_pos of 2 x 257 tokens and its tiny CLIP takes 224-pixel
    # images (257 tokens); a 28-pixel CLIP (5 tokens per image) cannot feed it: kept for the error test.
    out["flf2v-5tok"] = make_tiny_checkpoint(root / "flf2v-5tok", "tiny-flf2v")
    ImageEncoder(TINY_IMAGE_ENCODER, seed=3).save_pretrained(out["flf2v-5tok"])
    for v in ("i2v", "vace"):
        out[f"{v}-diffusers"] = make_tiny_checkpoint(root / f"{v}-diffusers", f"tiny-{v}", layout="diffusers")
    return out


def pipe_getter(ckpts: dict):
    """get(name, task=None): the pipeline of checkpoint ``name``, loaded once (for a module-scoped fixture)."""
    cache = {}

    def get(name, task=None):
        key = (name, task)
        if key not in cache:
            variant = "tiny-" + name.split("-")[0]
            cache[key] = load_pipeline(ckpts[name], task=task, variant=variant, progress=False)
        return cache[key]
    return get


def smooth_image(h, w, seed=0, channels=3):
    """A smooth colour ramp with mild noise (resizes then change it only a little)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    base = np.stack([xx, yy, (xx + yy) / 2], -1)[..., :channels] * 200 + 25
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def random_video(f, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (f, h, w, 3), dtype=np.uint8)


def save_png(arr, path):
    Image.fromarray(arr).save(path)
    return path


def unipc_reference_grid(scheduler):
    """diffusers' UniPC on the reference grid: set_timesteps(n) -> sigmas = linspace(0.999, 0, n+1)[:-1]
    (shifted by the scheduler). test_sampling shows its grid and timesteps then equal ours exactly."""
    orig = scheduler.set_timesteps
    scheduler.set_timesteps = lambda n=None, device=None, **kw: orig(
        sigmas=np.linspace(sampling._UNIPC_SIGMA_MAX, 0.0, n + 1)[:-1], device=device)
    return scheduler


def diffusers_scheduler(shift):
    from diffusers import UniPCMultistepScheduler
    return unipc_reference_grid(UniPCMultistepScheduler(
        num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
        solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True, final_sigmas_type="zero"))


def fp32_numerics(pipe):
    """diffusers builds the timestep sinusoid and RoPE in fp32 (the reference: fp64; test_dit measures what that
    changes per forward); switch ours to fp32 so only float rounding remains."""
    pipe.dit.sinusoid_dtype = pipe.dit.rope_dtype = torch.float32
    return pipe


class LargestVelocity:
    """``with LargestVelocity(pipe) as v:`` the largest |v| the pipeline's DiT returns inside the block
    (``v.value``), for :func:`bounds.guided_run_bound`."""

    def __init__(self, pipe):
        self.dit, self.value = pipe.dit, 0.0

    def __enter__(self):
        orig = self.dit.forward

        def spy(*a, **k):
            out = orig(*a, **k)
            for o in out if isinstance(out, (list, tuple)) else [out]:
                self.value = max(self.value, o.abs().max().item())
            return out
        self.dit.forward = spy
        return self

    def __exit__(self, *exc):
        del self.dit.forward



def last_latent(store):
    def cb(i, t, x):
        store["latent"] = x.clone()
    return cb
