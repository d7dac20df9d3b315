"""Configurations of every published Wan 2.1 and 2.2 variant, plus tiny ones for tests.

Each config is a frozen dataclass. The DiT config's field names are the ones of the
official ``config.json`` so a checkpoint directory's config maps onto it one to one.
A :class:`Variant` bundles the component configs with the sampling defaults of the
reference ``generate.py``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

# Published Wan 2.2 tasks that openwan does not run: model classes of their own beside the DiT here
# (WAN22_REFERENCE.md, section 1). Named so that a user of the official generate.py is told so, not "unknown task".
NOT_IMPLEMENTED = {
    "s2v-14B": "Wan 2.2's speech-to-video model (WanModel_S2V: audio injection, frame packing, a wav2vec audio "
               "encoder)",
    "animate-14B": "Wan 2.2's character animation model (WanAnimateModel: pose and face conditioning, CLIP, a "
                   "relighting LoRA)",
}
NOT_IMPLEMENTED_TYPES = {"s2v": "s2v-14B"}      # a DiT config's model_type -> the task above


def not_implemented(task: str) -> Optional[str]:
    """Why the published task ``task`` is refused (one of :data:`NOT_IMPLEMENTED`), else None."""
    what = NOT_IMPLEMENTED.get(task)
    if what is None:
        return None
    return (f"{task} is {what}, a model class of its own that openwan does not implement; openwan runs Wan 2.1's "
            f"t2v, i2v, flf2v, vace and t2i models and Wan 2.2's t2v-A14B, i2v-A14B and ti2v-5B (the official "
            f"Wan2.2 generate.py runs {task})")


# The reference's default negative prompt (t2v); i2v and flf2v add a prefix.
NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
I2V_NEGATIVE_PREFIX = "镜头晃动，"
FLF2V_NEGATIVE_PREFIX = "镜头切换，"

VAE_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
            0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
VAE_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
           3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


def _nested(v, kind):
    """Tuples and lists, at any depth, as ``kind`` (JSON has lists; frozen configs hold tuples)."""
    return kind(_nested(x, kind) for x in v) if isinstance(v, (tuple, list)) else v


class ConfigMixin:
    """to_dict / from_dict helpers shared by every config dataclass."""

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = _nested(v, list)
        return out

    @classmethod
    def from_dict(cls, d: dict, strict: bool = False):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if strict and unknown:
            raise ValueError(f"{cls.__name__}: unknown config fields {unknown}; known: {sorted(names)}")
        kw = {}
        for k, v in d.items():
            if k in names:
                kw[k] = _nested(v, tuple)
        return cls(**kw)

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)


@dataclass(frozen=True)
class DiTConfig(ConfigMixin):
    """The Wan DiT's constructor arguments, named as in the official config.json."""
    model_type: str = "t2v"            # t2v | i2v | flf2v | ti2v  (vace is t2v + vace_layers)
    patch_size: tuple = (1, 2, 2)
    text_len: int = 512
    in_dim: int = 16
    dim: int = 1536
    ffn_dim: int = 8960
    freq_dim: int = 256
    text_dim: int = 4096
    out_dim: int = 16
    num_heads: int = 12
    num_layers: int = 30
    window_size: tuple = (-1, -1)
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    vace_layers: Optional[tuple] = None
    vace_in_dim: Optional[int] = None
    image_dim: int = 1280              # CLIP feature width (i2v / flf2v); not in config.json
    # CLIP image input (img_emb + image cross-attention): None = Wan 2.1's rule (i2v / flf2v have it);
    # Wan 2.2's i2v-A14B has none (False). Not in the official config.json (read from the keys).
    clip_input: Optional[bool] = None

    def __post_init__(self):
        if self.model_type in NOT_IMPLEMENTED_TYPES:
            raise ValueError(f"model_type {self.model_type!r}: "
                             + not_implemented(NOT_IMPLEMENTED_TYPES[self.model_type]))
        if self.model_type not in ("t2v", "i2v", "flf2v", "vace", "ti2v"):
            raise ValueError(f"model_type must be t2v, i2v, flf2v, ti2v or vace, got {self.model_type!r}")
        if self.clip_input and self.model_type not in ("i2v", "flf2v"):
            raise ValueError(f"clip_input (CLIP image features) needs model_type i2v or flf2v, not {self.model_type}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if (self.dim // self.num_heads) % 2:
            raise ValueError(f"head dim {self.dim // self.num_heads} must be even for RoPE")
        if self.vace_layers is not None and self.vace_in_dim is None:
            object.__setattr__(self, "vace_in_dim", 96)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def is_vace(self) -> bool:
        return self.vace_layers is not None

    @property
    def has_image_input(self) -> bool:
        """CLIP image features go in (img_emb, image cross-attention): Wan 2.1 i2v / flf2v."""
        return self.model_type in ("i2v", "flf2v") if self.clip_input is None else self.clip_input


@dataclass(frozen=True)
class VAEConfig(ConfigMixin):
    """Wan-VAE (3D causal). Wan 2.1: dim 96, z 16, mults 1,2,4,4, 2 res blocks, no attn scales."""
    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple = ()
    temporal_downsample: tuple = (False, True, True)
    mean: tuple = VAE_MEAN
    std: tuple = VAE_STD


@dataclass(frozen=True)
class TextEncoderConfig(ConfigMixin):
    """umT5 encoder, named as the official T5Encoder's constructor."""
    vocab: int = 256384
    dim: int = 4096
    dim_attn: int = 4096
    dim_ffn: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    max_dist: int = 128
    text_len: int = 512
    eps: float = 1e-6


@dataclass(frozen=True)
class ImageEncoderConfig(ConfigMixin):
    """CLIP ViT vision tower (open-clip ViT-H/14 for Wan)."""
    image_size: int = 224
    patch_size: int = 14
    dim: int = 1280
    mlp_ratio: int = 4
    num_heads: int = 16
    num_layers: int = 32
    norm_eps: float = 1e-5


@dataclass(frozen=True)
class SampleDefaults(ConfigMixin):
    """Sampling defaults of the reference generate.py for one variant."""
    steps: int = 50
    shift: float = 5.0
    guide_scale: float = 5.0
    frame_num: int = 81
    solver: str = "unipc"
    sizes: tuple = ("832*480", "480*832")
    size: str = "832*480"
    fps: int = 16
    negative_prompt: str = NEGATIVE_PROMPT
    # Wan 2.2 A14B (two experts): the high-noise expert runs while the solver's timestep t >= boundary * 1000;
    # guide_scales = (low-noise expert's, high-noise expert's), the reference config's order. guide_scale is
    # then the high-noise expert's (the first steps'). One-DiT models: guide_scales with boundary is the default
    # guidance interval (openwan.denoiser.Guidance: the high scale while t >= boundary * 1000).
    boundary: Optional[float] = None
    guide_scales: Optional[tuple] = None
    # One task's own default guidance interval where it differs: ((task, low, high, boundary), ...), e.g. the demo's
    # video-to-video, whose re-noised source needs strong guidance at its high-noise end to take the prompt's colour.
    task_guidance: tuple = ()
    # Few-step (distilled) models: the explicit timestep list they were trained on (high to low); used when a
    # call runs len(timesteps) steps (the default then), see WanPipeline.preset_sigmas.
    timesteps: Optional[tuple] = None
    # The step cache (openwan.caches) a call at the default step count uses when it names none; None: every step
    # computed. The demo's is "plan:0.5" (half the DiT forwards, its benchmark's accuracy unchanged; docs/demo.md).
    step_cache: Optional[str] = None
    # Long video (openwan.long_video), past the native length: the method a call that names none uses (None: the
    # library's, "windows"), and its overlap in latent frames when the call names that method without one (None:
    # half the window).
    long_method: Optional[str] = None
    long_overlap: Optional[int] = None
    long_context_noise: float = 0.0     # with a continuation expert: its carried frames' noise level (long_video)
    long_refine: float = 0.0            # continue: the noise level of the windows pass that redraws the seams (0: none)
    # Prompt extension (openwan.prompt_extend) a call that names none uses: None (off), or "world" (the demo's:
    # prompts rewritten into the world's canonical caption by the world's parser).
    prompt_extend: Optional[str] = None

    @property
    def guidance(self):
        """The default guide scale as a call uses it: the pair ``guide_scales`` when a boundary goes with it (one
        scale per A14B expert, or a one-DiT guidance interval), else ``guide_scale``."""
        return self.guide_scales if self.guide_scales is not None and self.boundary is not None else self.guide_scale

    def for_task(self, task: str) -> "SampleDefaults":
        """These defaults as ``task`` uses them (its entry of ``task_guidance`` applied)."""
        for entry in self.task_guidance:
            if entry[0] == task:
                return dataclasses.replace(self, guide_scales=(float(entry[1]), float(entry[2])),
                                           boundary=float(entry[3]), task_guidance=())
        return self

    def guide_scale_at(self, t: float) -> float:
        """The guidance scale for solver timestep t (per expert for two-expert models)."""
        if self.boundary is None or self.guide_scales is None:
            return self.guide_scale
        return self.guide_scales[1] if t >= self.boundary * 1000 else self.guide_scales[0]


@dataclass(frozen=True)
class Variant:
    """One published (or test / demo) model: its components and sampling defaults."""
    name: str
    task: str                           # t2v | t2i | i2v | flf2v | vace | ti2v
    dit: DiTConfig
    vae: Optional[VAEConfig] = field(default_factory=VAEConfig)   # None: see ti2v-5B below
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image_encoder: Optional[ImageEncoderConfig] = None
    sample: SampleDefaults = field(default_factory=SampleDefaults)
    # file names inside an official checkpoint directory
    files: dict = field(default_factory=dict)

    def replace(self, **kw) -> "Variant":
        return dataclasses.replace(self, **kw)


OFFICIAL_FILES = {
    "t5": "models_t5_umt5-xxl-enc-bf16.pth",
    "tokenizer": "google/umt5-xxl",
    "vae": "Wan2.1_VAE.pth",
    "clip": "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
    "clip_tokenizer": "xlm-roberta-large",
}

DIT_1_3B = DiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
DIT_14B = DiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)

SIZES_14B = ("1280*720", "720*1280", "832*480", "480*832")
SIZES_1_3B = ("832*480", "480*832")

VARIANTS: dict[str, Variant] = {
    "t2v-1.3B": Variant("t2v-1.3B", "t2v", DIT_1_3B,
                        sample=SampleDefaults(sizes=SIZES_1_3B, size="832*480")),
    "t2v-14B": Variant("t2v-14B", "t2v", DIT_14B,
                       sample=SampleDefaults(sizes=SIZES_14B, size="1280*720")),
    "t2i-14B": Variant("t2i-14B", "t2i", DIT_14B,
                       sample=SampleDefaults(frame_num=1, sizes=SIZES_14B + ("1024*1024",), size="1280*720")),
    "i2v-14B-480P": Variant("i2v-14B-480P", "i2v", DIT_14B.replace(model_type="i2v", in_dim=36),
                            image_encoder=ImageEncoderConfig(),
                            sample=SampleDefaults(steps=40, shift=3.0, sizes=SIZES_14B, size="832*480",
                                                  negative_prompt=I2V_NEGATIVE_PREFIX + NEGATIVE_PROMPT)),
    "i2v-14B-720P": Variant("i2v-14B-720P", "i2v", DIT_14B.replace(model_type="i2v", in_dim=36),
                            image_encoder=ImageEncoderConfig(),
                            sample=SampleDefaults(steps=40, shift=5.0, sizes=SIZES_14B, size="1280*720",
                                                  negative_prompt=I2V_NEGATIVE_PREFIX + NEGATIVE_PROMPT)),
    "flf2v-14B": Variant("flf2v-14B", "flf2v", DIT_14B.replace(model_type="flf2v", in_dim=36),
                         image_encoder=ImageEncoderConfig(),
                         sample=SampleDefaults(shift=16.0, sizes=SIZES_14B, size="1280*720",
                                               negative_prompt=FLF2V_NEGATIVE_PREFIX + I2V_NEGATIVE_PREFIX
                                               + NEGATIVE_PROMPT)),
    "vace-1.3B": Variant("vace-1.3B", "vace",
                         DIT_1_3B.replace(vace_layers=tuple(range(0, 30, 2)), vace_in_dim=96),
                         sample=SampleDefaults(shift=16.0, sizes=SIZES_1_3B, size="832*480")),
    "vace-14B": Variant("vace-14B", "vace",
                        DIT_14B.replace(vace_layers=tuple(range(0, 40, 5)), vace_in_dim=96),
                        sample=SampleDefaults(shift=16.0, sizes=SIZES_14B, size="1280*720")),
}
for _v in VARIANTS.values():
    object.__setattr__(_v, "files", dict(OFFICIAL_FILES))

# ---- Wan 2.2 (WAN22_REFERENCE.md sections 1-3) ----
# The A14B models hold two experts of the 14B architecture (high_noise_model/, low_noise_model/), switched
# at boundary x 1000; no CLIP anywhere (i2v-A14B: 36 input channels, no img_emb). TI2V-5B: one DiT on the
# Wan 2.2 VAE (z 48, 16x16x4); its tokens of latent frame 0 get timestep 0 in image-to-video.
# Not yet in get_variant(): the pipelines read them once they run two experts / the 2.2 VAE.
DIT_TI2V_5B = DiTConfig(model_type="ti2v", dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48,
                        out_dim=48)
_FILES22 = {k: v for k, v in OFFICIAL_FILES.items() if not k.startswith("clip")}
FILES_A14B = {**_FILES22, "dit_high": "high_noise_model", "dit_low": "low_noise_model"}
FILES_TI2V = {**_FILES22, "vae": "Wan2.2_VAE.pth"}
SIZES_TI2V = ("1280*704", "704*1280")

WAN22_VARIANTS: dict[str, Variant] = {
    "t2v-A14B": Variant("t2v-A14B", "t2v", DIT_14B, files=FILES_A14B,
                        sample=SampleDefaults(steps=40, shift=12.0, guide_scale=4.0, guide_scales=(3.0, 4.0),
                                              boundary=0.875, sizes=SIZES_14B, size="1280*720")),
    "i2v-A14B": Variant("i2v-A14B", "i2v", DIT_14B.replace(model_type="i2v", in_dim=36, clip_input=False),
                        files=FILES_A14B,
                        sample=SampleDefaults(steps=40, shift=5.0, guide_scale=3.5, guide_scales=(3.5, 3.5),
                                              boundary=0.9, sizes=SIZES_14B, size="1280*720")),
    # vae: the Wan 2.2 VAE's config is openwan.models.vae22.VAE22Config (configs cannot import it: imports flow
    # down); it belongs here as data once vae22 imports it from this file.
    "ti2v-5B": Variant("ti2v-5B", "ti2v", DIT_TI2V_5B, None, files=FILES_TI2V,
                       sample=SampleDefaults(steps=50, shift=5.0, guide_scale=5.0, frame_num=121, fps=24,
                                             sizes=SIZES_TI2V, size="1280*704")),
}

# ---- tiny configs for tests (and the shape of the reference golden vectors) ----
TINY_DIT = DiTConfig(dim=24, ffn_dim=32, num_heads=2, num_layers=2, text_dim=32, text_len=512)
TINY_VAE = VAEConfig(dim=8)
TINY_TEXT_ENCODER = TextEncoderConfig(vocab=100, dim=32, dim_attn=32, dim_ffn=48, num_heads=4, num_layers=2)
TINY_IMAGE_ENCODER = ImageEncoderConfig(image_size=28, patch_size=14, dim=32, num_heads=4, num_layers=3)
# the tiny pipelines pair the tiny umT5 with the shipped tiny tokenizer (1000 tokens)
_TINY_TE = TINY_TEXT_ENCODER.replace(vocab=1000)

TINY_VARIANTS: dict[str, Variant] = {
    "tiny-t2v": Variant("tiny-t2v", "t2v", TINY_DIT, TINY_VAE, _TINY_TE,
                        sample=SampleDefaults(steps=4, frame_num=5, sizes=("64*32", "32*32"), size="64*32")),
    "tiny-i2v": Variant("tiny-i2v", "i2v", TINY_DIT.replace(model_type="i2v", in_dim=36, image_dim=32),
                        TINY_VAE, _TINY_TE, TINY_IMAGE_ENCODER,
                        sample=SampleDefaults(steps=4, frame_num=5, shift=3.0, sizes=("64*32", "32*32"),
                                              size="64*32")),
    # flf2v's emb_pos covers 2 x 257 CLIP tokens: its tiny CLIP keeps the 224-pixel input (16x16 patches + cls)
    "tiny-flf2v": Variant("tiny-flf2v", "flf2v", TINY_DIT.replace(model_type="flf2v", in_dim=36, image_dim=32),
                          TINY_VAE, _TINY_TE, TINY_IMAGE_ENCODER.replace(image_size=224),
                          sample=SampleDefaults(steps=4, frame_num=5, shift=16.0, sizes=("64*32", "32*32"),
                                                size="64*32")),
    "tiny-vace": Variant("tiny-vace", "vace", TINY_DIT.replace(vace_layers=(0, 1), vace_in_dim=96),
                         TINY_VAE, _TINY_TE,
                         sample=SampleDefaults(steps=4, frame_num=5, shift=16.0, sizes=("64*32", "32*32"),
                                               size="64*32")),
}


# ---- the embedded demo model (openwan.demo ships its weights; openwan/demo/train.py keeps them in sync) ----
DEMO_TEXT_ENCODER = TextEncoderConfig(vocab=1000, dim=128, dim_attn=128, dim_ffn=256, num_heads=4, num_layers=2,
                                      text_len=32)
# v1, the first demo (text-to-video, 64x64, 17 frames at 8 fps); the recipe still builds it first. The latent
# normalization (mean, std per channel) was measured on the world by openwan/demo/train.py.
DEMO_V1_VAE = VAEConfig(dim=8, z_dim=16, dim_mult=(1, 2, 4, 8), num_res_blocks=1, attn_scales=(),
                        temporal_downsample=(False, True, True),
                        mean=(-0.1094, 0.1125, -0.3659, -0.2712, -0.013, -0.2894, 0.2902, -0.2672,
                              -0.0064, 0.1434, -0.1982, -0.4761, 0.3349, -0.1938, -0.3018, 0.095),
                        std=(0.8874, 1.0143, 1.0944, 0.9364, 0.6674, 0.4543, 0.8954, 1.198,
                             0.9253, 0.9718, 0.9995, 1.1265, 1.1449, 1.0283, 0.761, 0.5871))
DEMO_V1_DIT = DiTConfig(model_type="t2v", patch_size=(1, 1, 1), text_len=32, in_dim=16, dim=128, ffn_dim=512,
                        freq_dim=256, text_dim=128, out_dim=16, num_heads=4, num_layers=6)
DEMO_V1_SAMPLE = SampleDefaults(steps=30, shift=3.0, guide_scale=5.0, frame_num=17, solver="unipc",
                                sizes=("64*64",), size="64*64", fps=8, negative_prompt="")
DEMO_V1_VARIANT = Variant("demo", "t2v", DEMO_V1_DIT, DEMO_V1_VAE, DEMO_TEXT_ENCODER, sample=DEMO_V1_SAMPLE)
# v2, the shipped demo (issue 22; the recipe in docs/demo.md): one TI2V-style model (clean frames at timestep 0,
# openwan.training.clean_frames) for text-, image-, first-last-frame-to-video and long-video continuation,
# 128x128, 33 frames at 16 fps, grown from v1's DiT to patch (1, 2, 2) (8 x 8 tokens per latent frame, as
# before), trained on one- and two-object scenes and finished on one-object ones (it draws one object per video).
# The VAE is v1's, its latent statistics measured at the new size.
DEMO_V2_DIT = DEMO_V1_DIT.replace(model_type="ti2v", patch_size=(1, 2, 2))
DEMO_V2_VAE = DEMO_V1_VAE.replace(
    mean=(-0.1813, 0.1483, -0.4712, -0.3175, -0.0213, -0.3524, 0.398, -0.3125,
          0.0202, 0.0223, -0.184, -0.5971, 0.4451, -0.1486, -0.275, 0.1631),
    std=(0.7272, 0.8609, 0.9924, 1.0686, 0.5956, 0.428, 0.6818, 1.1729,
         0.6121, 0.8335, 0.9672, 1.0678, 1.111, 0.9732, 0.6856, 0.5274))
# Guidance 2 (v1: 5): at 5 the text-to-video circles come out lopsided (15 of 24 drawn as circles, 2 seeds); at
# 2, 24 of 24 with the motions unchanged (docs/demo.md, "Shipping v2"; benchmarks/demo_guidance.py). Video-to-video
# guides its high-noise steps (t >= 500) at 7 so the re-noised source takes the prompt's colour (at 2: a third
# did; docs/demo.md, "Video-to-video's guidance interval").
DEMO_V2_SAMPLE = DEMO_V1_SAMPLE.replace(frame_num=33, sizes=("128*128",), size="128*128", fps=16, guide_scale=2.0,
                                        task_guidance=(("v2v", 2.0, 7.0, 0.5),), step_cache="plan:0.5",
                                        long_method="continue", long_overlap=2, long_refine=0.85,
                                        prompt_extend="world")
DEMO_V2_VARIANT = Variant("demo", "ti2v", DEMO_V2_DIT, DEMO_V2_VAE, DEMO_TEXT_ENCODER, sample=DEMO_V2_SAMPLE)
# The embedded default ("demo", openwan/demo/assets/demo_checkpoint): v2.
DEMO_DIT, DEMO_VAE, DEMO_SAMPLE, DEMO_VARIANT = DEMO_V2_DIT, DEMO_V2_VAE, DEMO_V2_SAMPLE, DEMO_V2_VARIANT
# The demo (v2) distilled (openwan distill, docs/distill.md) into a 4-step guidance-free text-to-video student:
# Euler on LightX2V's [1000, 750, 500, 250] shifted by the demo's shift 3 (= the 4-step shift-3 Euler grid,
# 1000 -> 999). Its DiT and VAE configs are the demo's; only its DiT weights are its own.
DEMO_4STEP_SAMPLE = DEMO_V2_SAMPLE.replace(steps=4, shift=3.0, guide_scale=1.0, solver="euler",
                                           timesteps=(999, 900, 750, 500), task_guidance=(), step_cache=None)
DEMO_4STEP_VARIANT = Variant("demo-4step", "ti2v", DEMO_V2_DIT, DEMO_V2_VAE, DEMO_TEXT_ENCODER,
                             sample=DEMO_4STEP_SAMPLE)


def get_variant(name: str) -> Variant:
    """Look a variant up by name (published, tiny or demo), with a clear error."""
    table = {**VARIANTS, **TINY_VARIANTS, "demo": DEMO_VARIANT, "demo-4step": DEMO_4STEP_VARIANT}
    if name in table:
        return table[name]
    if not_implemented(name):
        raise ValueError(not_implemented(name))
    known = ", ".join(sorted(table))
    raise ValueError(f"unknown variant/task {name!r}; choose one of: {known}")
