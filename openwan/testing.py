"""Tiny random checkpoints in the published layouts, for tests, examples and smoke runs."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Union

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


WAN22_KINDS = ("t2v-A14B", "i2v-A14B", "ti2v-5B")


def tiny_wan22_components(kind: str = "t2v-A14B", seed: int = 0, dit=None):
    """Random tiny Wan 2.2 components (:class:`openwan.pipelines.components.Components`): ``kind`` t2v-A14B /
    i2v-A14B (two experts on a tiny 2.1 VAE, boundary 0.875 / 0.9) or ti2v-5B (one DiT on a tiny 2.2 VAE);
    the tiny umT5. ``dit``: a DiTConfig to use instead of the tiny one (e.g. the 1.3B width, for benchmarks)."""
    from openwan.configs import TINY_DIT, TINY_VAE, TINY_VARIANTS, WAN22_VARIANTS
    from openwan.models.dit import WanModel
    from openwan.models.text_encoder import TINY_TOKENIZER_DIR, TextEncoder
    from openwan.pipelines.components import Components
    if kind not in WAN22_KINDS:
        raise ValueError(f"kind must be one of {WAN22_KINDS}, got {kind!r}")
    base = dit or TINY_DIT
    cfg = {"t2v-A14B": base, "i2v-A14B": base.replace(model_type="i2v", in_dim=36, clip_input=False),
           "ti2v-5B": base.replace(model_type="ti2v", in_dim=48, out_dim=48)}[kind]
    torch.manual_seed(seed)
    high = randomize_(WanModel(cfg), seed).eval().requires_grad_(False)
    low = None if kind == "ti2v-5B" else randomize_(WanModel(cfg), seed + 10).eval().requires_grad_(False)
    if kind == "ti2v-5B":
        from openwan.models.vae22 import VAE22Config, WanVAE22
        vae = randomize_(WanVAE22(VAE22Config(dim=4, dec_dim=8)), seed + 1, std=0.05)
    else:
        from openwan.models.vae import WanVAE
        vae = randomize_(WanVAE(TINY_VAE), seed + 1, std=0.05)
    te = TextEncoder(TINY_VARIANTS["tiny-t2v"].text_encoder, TINY_TOKENIZER_DIR, seed=seed + 2, cache_dir=False)
    v = WAN22_VARIANTS[kind]
    v = v.replace(name=f"tiny-{kind}", dit=cfg, text_encoder=te.config, sample=v.sample.replace(sizes=()))
    return Components(high, vae.eval(), te, None, v, f"tiny-{kind}", dit_low=low)


def make_tiny_wan22_checkpoint(path: Union[str, Path], kind: str = "t2v-A14B", layout: str = "official",
                               seed: int = 0, dit=None) -> Path:
    """:func:`tiny_wan22_components` written as a checkpoint folder (official: high_noise_model/ +
    low_noise_model/ or a top-level TI2V DiT with Wan2.2_VAE.pth; diffusers: transformer/ + transformer_2/ with
    boundary_ratio, or expand_timesteps)."""
    from openwan.convert import write_components
    return write_components(tiny_wan22_components(kind, seed, dit), path, layout)


def make_tiny_demo_v2_checkpoint(path: Union[str, Path], seed: int = 0, size: int = 64, frame_num: int = 5,
                                 steps: int = 2):
    """A tiny random stand-in for the embedded demo's TI2V-style model (openwan.configs.DEMO_V2_*), written in the
    official layout: a ti2v DiT of 16 channels with patch (1, 2, 2) (narrower than DEMO_V2_DIT: dim 32, 1 layer)
    on DEMO_VAE's and DEMO_TEXT_ENCODER's architectures, random weights. Returns (folder, variant): the variant is
    DEMO_V2_VARIANT with short defaults (``frame_num`` frames at ``size`` x ``size``, ``steps`` steps, its one
    size) and no default step cache (a few-step stand-in computes every step, so tests count the DiT's calls).
    :func:`use_demo` installs both as the embedded default."""
    from openwan.configs import DEMO_TEXT_ENCODER, DEMO_V2_DIT, DEMO_V2_VARIANT, DEMO_VAE
    from openwan.models.dit import WanModel
    from openwan.models.text_encoder import TINY_TOKENIZER_DIR, TextEncoder
    from openwan.models.vae import WanVAE
    path = Path(path)
    torch.manual_seed(seed)
    randomize_(WanModel(DEMO_V2_DIT.replace(dim=32, ffn_dim=64, num_heads=2, num_layers=1)), seed).save_pretrained(path)
    randomize_(WanVAE(DEMO_VAE), seed + 1, std=0.05).save_pretrained(path)
    TextEncoder(DEMO_TEXT_ENCODER, TINY_TOKENIZER_DIR, seed=seed + 2, cache_dir=False).save_pretrained(path)
    sample = DEMO_V2_VARIANT.sample.replace(steps=steps, frame_num=frame_num, sizes=(f"{size}*{size}",),
                                            size=f"{size}*{size}", step_cache=None)
    return path, DEMO_V2_VARIANT.replace(sample=sample)


def make_tiny_demo_with_expert(root: Union[str, Path], folder: Optional[str] = None):
    """(plain folder, the same folder with an expert of other random weights, variant): the tiny stand-in of
    :func:`make_tiny_demo_v2_checkpoint` (32 x 32, 5 frames native, 2 steps) under ``root``; the expert in
    ``folder`` (default the continuation expert's, ``continuation_model``; ``reference_model`` for a reference
    expert)."""
    import shutil
    from openwan.models.dit import WanModel
    from openwan.pipelines.components import CONTINUATION_DIR
    folder = folder or CONTINUATION_DIR
    root = Path(root)
    plain, variant = make_tiny_demo_v2_checkpoint(root / "plain", size=32, frame_num=5, steps=2)
    with_expert = root / "with_expert"
    shutil.copytree(plain, with_expert)
    dit = WanModel.from_pretrained(plain, dtype=torch.float32)
    randomize_(dit, seed=7).save_pretrained(with_expert / folder)
    return plain, with_expert, variant


@contextmanager
def forwards(*modules, inputs: bool = False):
    """Record the forwards of ``modules`` (DiTs) while the context runs: the list it gives gets one entry a forward,
    its (x, t) inputs cloned where ``inputs``, else 1."""
    seen: list = []

    def hook(module, args):
        seen.append((args[0].clone(), args[1].clone()) if inputs else 1)
    handles = [m.register_forward_pre_hook(hook) for m in modules]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


class Stop(Exception):
    """Raised by :func:`stop_after`'s callback: a run stopped part way (as by Ctrl-C), in a test."""


def stop_after(steps: int):
    """A generation callback that raises :class:`Stop` in the ``steps``-th step reported (the steps before it made)."""
    count = [0]

    def callback(i, t, x):
        count[0] += 1
        if count[0] == steps:
            raise Stop()
    return callback


def fail_decode(pipe, *args, **kwargs) -> None:
    """Run ``pipe(*args, **kwargs)`` with its decode failing (a MemoryError from ``finish``, as a decode out of memory
    raises it, caught here): what a test of a run going on after a failed decode starts from."""
    cls = type(pipe)
    finish = cls.finish

    def failing(self, *a, **kw):
        raise MemoryError("decode")
    cls.finish = failing
    try:
        pipe(*args, **kwargs)
    except MemoryError:
        return
    finally:
        cls.finish = finish
    raise AssertionError("the call did not reach its decode")


def use_demo(monkeypatch, path: Union[str, Path], variant) -> None:
    """Make ``path`` (a checkpoint folder) and ``variant`` the embedded default ("demo") for a test, through
    pytest's ``monkeypatch``: load_pipeline("demo"), the CLI and the benchmark then load it."""
    import openwan.configs
    import openwan.demo
    monkeypatch.setattr(openwan.configs, "DEMO_VARIANT", variant)
    monkeypatch.setattr(openwan.demo, "DEMO_VARIANT", variant)
    monkeypatch.setattr(openwan.demo, "demo_checkpoint_dir", lambda: Path(path))


class PeakLiveTensors:
    """Peak bytes of tensor storage made while the context is active (a ``TorchDispatchMode``).

    Every storage an op creates is counted from its creation until it is freed, so ``peak`` is the
    most activation memory alive at once: deterministic and independent of the allocator, unlike RSS.
    Outputs that share storage with an op's inputs (views, in-place ops) are not new memory, and tensors
    that existed before the context (weights, inputs) are not counted. ``where`` names the op at the peak.
    """

    def __init__(self):
        self.peak = 0
        self.where = None

    def __enter__(self) -> "PeakLiveTensors":
        import weakref

        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten
        live: dict[int, int] = {}
        tracker = self
        current = [0]

        def free(key):
            current[0] -= live.pop(key, 0)

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                inputs = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0]
                          if isinstance(a, torch.Tensor) and a.device.type != "meta"}
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor) and t.device.type != "meta":
                        st = t.untyped_storage()
                        key = st.data_ptr()
                        if key and key not in live and key not in inputs:
                            live[key] = st.nbytes()
                            current[0] += st.nbytes()
                            weakref.finalize(st, free, key)
                if current[0] > tracker.peak:
                    tracker.peak, tracker.where = current[0], str(func)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def q4_k(w):
    """A plain Q4_K encoder (gguf ships only the decoder): per 256 values, 8 sub-blocks of 32 with
    6-bit scale and min indices under f16 super-scales d and dmin; x ~ d*sc_j*q - dmin*m_j, q in 0..15.
    Returns (bytes [rows, n*144], half-step d*sc_j per value). For tests and benchmarks/memory.py."""
    import numpy as np
    x = w.astype(np.float32).reshape(-1, 8, 32)
    lo = np.minimum(x.min(-1), 0)
    # f16 rounds by <= 2^-11 relative: scaling the super-scales up by 2^-9 first keeps m_j and sc_j <= 63
    dmin = np.float16((-lo).max(-1) / 63 * (1 + 2 ** -9)).astype(np.float32)
    dmin = np.maximum(dmin, np.float32(2 ** -24))
    m = np.clip(np.ceil(-lo / dmin[:, None]), 0, 63).astype(np.int32)                # -dmin*m_j <= min_j
    span = x.max(-1) + dmin[:, None] * m
    d = np.float16(span.max(-1) / (15 * 63) * (1 + 2 ** -9)).astype(np.float32)
    d = np.maximum(d, np.float32(2 ** -24))
    sc = np.clip(np.ceil(span / (15 * d[:, None])), 1, 63).astype(np.int32)
    step = d[:, None] * sc
    q = np.clip(np.round((x + (dmin[:, None] * m)[..., None]) / step[..., None]), 0, 15).astype(np.uint8)
    scales = np.zeros((x.shape[0], 12), np.uint8)
    scales[:, 0:4] = (sc[:, :4] & 0x3F) | ((sc[:, 4:] >> 4) << 6)
    scales[:, 4:8] = (m[:, :4] & 0x3F) | ((m[:, 4:] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:] & 0xF) | ((m[:, 4:] & 0xF) << 4)
    qs = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(x.shape[0], 128)  # sub-blocks 2c (low) and 2c+1 (high)
    blocks = np.concatenate([d.astype(np.float16).view(np.uint8).reshape(-1, 2),
                             dmin.astype(np.float16).view(np.uint8).reshape(-1, 2), scales, qs], axis=1)
    return blocks.reshape(w.shape[0], -1), np.repeat(step / 2, 32, axis=-1).reshape(w.shape)
