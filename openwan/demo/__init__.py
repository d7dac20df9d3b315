"""The embedded default: a small Wan model trained by openwan on a procedural video world.

The same classes and pipeline as the published models; only the config differs. The weights ship
inside the package (``openwan/demo/assets/demo_checkpoint``, official layout, half precision), so
``openwan generate "a red circle moving to the right"`` works on a fresh CPU machine.
"""
from __future__ import annotations

from pathlib import Path

from openwan.configs import DiTConfig, SampleDefaults, TextEncoderConfig, VAEConfig, Variant

DEMO_DIR = Path(__file__).resolve().parent / "assets" / "demo_checkpoint"

# Architecture of the demo model (kept in sync with the shipped files by openwan/demo/train.py).
DEMO_TEXT_ENCODER = TextEncoderConfig(vocab=1000, dim=128, dim_attn=128, dim_ffn=256, num_heads=4, num_layers=2,
                                      text_len=32)
# The latent normalization (mean, std per channel) was measured on the world by openwan/demo/train.py.
DEMO_VAE = VAEConfig(dim=8, z_dim=16, dim_mult=(1, 2, 4, 8), num_res_blocks=1, attn_scales=(),
                     temporal_downsample=(False, True, True),
                     mean=(-0.1094, 0.1125, -0.3659, -0.2712, -0.013, -0.2894, 0.2902, -0.2672,
                           -0.0064, 0.1434, -0.1982, -0.4761, 0.3349, -0.1938, -0.3018, 0.095),
                     std=(0.8874, 1.0143, 1.0944, 0.9364, 0.6674, 0.4543, 0.8954, 1.198,
                          0.9253, 0.9718, 0.9995, 1.1265, 1.1449, 1.0283, 0.761, 0.5871))
DEMO_DIT = DiTConfig(model_type="t2v", patch_size=(1, 1, 1), text_len=32, in_dim=16, dim=128, ffn_dim=512,
                     freq_dim=256, text_dim=128,
                     out_dim=16, num_heads=4, num_layers=6)
DEMO_SAMPLE = SampleDefaults(steps=30, shift=3.0, guide_scale=5.0, frame_num=17, solver="unipc",
                             sizes=("64*64",), size="64*64", fps=8, negative_prompt="")


def demo_variant() -> Variant:
    return Variant("demo", "t2v", DEMO_DIT, DEMO_VAE, DEMO_TEXT_ENCODER, sample=DEMO_SAMPLE)


def demo_checkpoint_dir() -> Path:
    """The shipped demo checkpoint, with a clear error if this install lacks it."""
    if not (DEMO_DIR / "config.json").exists():
        raise FileNotFoundError(
            f"the embedded demo model is missing from {DEMO_DIR}. Rebuild it with `python -m openwan.demo.train` "
            f"or pass --ckpt_dir with a downloaded Wan 2.1 checkpoint.")
    return DEMO_DIR
