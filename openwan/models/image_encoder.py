"""The image encoder of image-to-video: the vision tower of open-clip XLM-RoBERTa-large ViT-H/14.

Wan 2.1's I2V and FLF2V models condition on CLIP features of the first (and last) frame. Top to bottom::

    image in [-1, 1] --bicubic resize to 224 (align_corners False)--> *0.5 + 0.5 --CLIP mean/std-->
    pixels --patch conv 14x14 (no bias) + class token + positions--> pre-norm (LayerNorm)
           --blocks 0 .. 30 of 32 (pre-norm attention + exact-GELU MLP)--> features [N, 257, 1280]

The features are the output of the penultimate block, with no post-norm and no projection; only
those 31 blocks run. The transformer is transformers' ``CLIPVisionModel`` (its ``pre_layrnorm`` is
open-clip's ``ln_pre`` / the reference's ``pre_norm``). This module adds:

* :func:`official_to_hf` / :func:`hf_to_official`: the key map between the official
  ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (``visual.*``; the fused ``to_qkv``
  is split into q/k/v, the ``head`` matrix becomes ``visual_projection``) and transformers' names
  (``vision_model.*`` as in a ``CLIPVisionModelWithProjection`` file, e.g. diffusers' ``image_encoder/``);
* :meth:`ImageEncoder.from_pretrained` for the official file or directory, a diffusers
  ``image_encoder/`` folder or a diffusers root; the text tower of the official file is ignored;
* :meth:`ImageEncoder.preprocess` and :meth:`ImageEncoder.encode`.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from openwan.checkpoints import (CheckpointError, atomic_write, check_keys, read_safetensors,
                                 read_state_dict, safetensors_files, save_sharded, strip_prefix, write_json)
from openwan.configs import OFFICIAL_FILES, ImageEncoderConfig

OFFICIAL_CLIP_FILE = OFFICIAL_FILES["clip"]  # models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth
CONFIG_FILE = "clip_config.json"             # written beside the .pth for non-default configs
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIT_H_PROJECTION_DIM = 1024                  # open-clip ViT-H/14's ``head``: 1280 -> 1024

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

ImageInput = Union[torch.Tensor, "PILImage", Sequence[Union[torch.Tensor, "PILImage"]]]


# ----------------------------------------------------------------------------- config

def to_hf_config(cfg: ImageEncoderConfig, projection_dim: Optional[int] = None):
    """ImageEncoderConfig -> transformers CLIPVisionConfig (exact GELU, LayerNorm eps from the config)."""
    from transformers import CLIPVisionConfig
    if cfg.dim % cfg.num_heads:
        raise ValueError(f"image encoder dim {cfg.dim} is not divisible by num_heads {cfg.num_heads}")
    if cfg.image_size % cfg.patch_size:
        raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
    hf = CLIPVisionConfig(
        hidden_size=cfg.dim, intermediate_size=cfg.dim * cfg.mlp_ratio, num_attention_heads=cfg.num_heads,
        num_hidden_layers=cfg.num_layers, image_size=cfg.image_size, patch_size=cfg.patch_size,
        num_channels=3, hidden_act="gelu", layer_norm_eps=cfg.norm_eps, attention_dropout=0.0,
        projection_dim=projection_dim or VIT_H_PROJECTION_DIM)
    hf.architectures = ["CLIPVisionModelWithProjection" if projection_dim else "CLIPVisionModel"]
    return hf


def from_hf_config(d: dict) -> tuple[ImageEncoderConfig, Optional[int]]:
    """A CLIPVisionConfig dict (config.json) -> (ImageEncoderConfig, projection_dim or None)."""
    if "vision_config" in d:  # a full CLIPConfig
        d = d["vision_config"]
    act = d.get("hidden_act", "quick_gelu")
    if act != "gelu":
        raise CheckpointError(f"image encoder config.json has hidden_act={act!r}; Wan's ViT-H/14 uses exact 'gelu'")
    try:
        dim, ffn = d["hidden_size"], d["intermediate_size"]
        if ffn % dim:
            raise CheckpointError(f"image encoder intermediate_size {ffn} is not a multiple of hidden_size {dim}")
        cfg = ImageEncoderConfig(image_size=d["image_size"], patch_size=d["patch_size"], dim=dim,
                                 mlp_ratio=ffn // dim, num_heads=d["num_attention_heads"],
                                 num_layers=d["num_hidden_layers"], norm_eps=d.get("layer_norm_eps", 1e-5))
    except KeyError as e:
        raise CheckpointError(f"image encoder config.json lacks the field {e}") from None
    has_proj = "CLIPVisionModelWithProjection" in (d.get("architectures") or [])
    return cfg, (d.get("projection_dim") if has_proj else None)


def infer_config(official_sd: dict, base: Optional[ImageEncoderConfig] = None) -> ImageEncoderConfig:
    """Sizes from the shapes of official ``visual.*`` tensors. The head count is not in the shapes
    (q, k and v are fused): it comes from ``base`` when its width matches, else 16 for width 1280
    (ViT-H/14) and width/64 otherwise (open-clip's head width)."""
    try:
        dim, _, patch, _ = official_sd["visual.patch_embedding.weight"].shape
        n_pos = official_sd["visual.pos_embedding"].shape[1]
        ffn = official_sd["visual.transformer.0.mlp.0.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"official CLIP weights lack {e}; is this {OFFICIAL_CLIP_FILE}?") from None
    grid = math.isqrt(n_pos - 1)
    if grid * grid != n_pos - 1:
        raise CheckpointError(f"CLIP pos_embedding has {n_pos} positions: not 1 + a square grid")
    layers = {int(m.group(1)) for k in official_sd if (m := re.match(r"visual\.transformer\.(\d+)\.", k))}
    base = base or ImageEncoderConfig()
    heads = base.num_heads if base.dim == dim else (16 if dim == 1280 else max(1, dim // 64))
    return base.replace(image_size=int(grid * patch), patch_size=int(patch), dim=int(dim),
                        mlp_ratio=int(ffn // dim), num_heads=int(heads), num_layers=max(layers) + 1)


# ----------------------------------------------------------------------------- key map

_TOP = {  # official -> transformers (CLIPVisionModelWithProjection file names)
    "visual.patch_embedding.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.cls_embedding": "vision_model.embeddings.class_embedding",           # [1,1,D] -> [D]
    "visual.pos_embedding": "vision_model.embeddings.position_embedding.weight",  # [1,L,D] -> [L,D]
    "visual.pre_norm.weight": "vision_model.pre_layrnorm.weight",
    "visual.pre_norm.bias": "vision_model.pre_layrnorm.bias",
    "visual.post_norm.weight": "vision_model.post_layernorm.weight",
    "visual.post_norm.bias": "vision_model.post_layernorm.bias",
    "visual.head": "visual_projection.weight",                                   # x @ head -> Linear: head.T
}
_TOP_INV = {v: k for k, v in _TOP.items()}
_BLOCK = {  # official block-relative -> transformers block-relative (to_qkv handled apart)
    "norm1": "layer_norm1", "attn.proj": "self_attn.out_proj", "norm2": "layer_norm2",
    "mlp.0": "mlp.fc1", "mlp.2": "mlp.fc2",
}
_BLOCK_INV = {v: k for k, v in _BLOCK.items()}


def official_to_hf(sd: dict) -> dict:
    """Official ``visual.*`` keys -> transformers CLIP vision keys (``vision_model.*``,
    ``visual_projection.weight``). Keys outside ``visual.`` (the text tower) must be filtered first."""
    out, unknown = {}, []
    for k, v in sd.items():
        if k in _TOP:
            name = _TOP[k]
            if k == "visual.cls_embedding":
                v = v.reshape(-1)
            elif k == "visual.pos_embedding":
                v = v.reshape(v.shape[-2], v.shape[-1])
            elif k == "visual.head":
                v = v.t()
            out[name] = v
            continue
        m = re.fullmatch(r"visual\.transformer\.(\d+)\.(.+)\.(weight|bias)", k)
        if not m:
            unknown.append(k)
            continue
        i, mod, kind = m.groups()
        pre = f"vision_model.encoder.layers.{i}."
        if mod == "attn.to_qkv":
            for part, name in zip(v.chunk(3, dim=0), ("q_proj", "k_proj", "v_proj")):
                out[f"{pre}self_attn.{name}.{kind}"] = part
        elif mod in _BLOCK:
            out[f"{pre}{_BLOCK[mod]}.{kind}"] = v
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(f"unknown keys in official CLIP visual weights: {sorted(unknown)[:8]} "
                              f"({len(unknown)} in all)")
    return out


def hf_to_official(sd: dict) -> dict:
    """transformers CLIP vision keys -> official ``visual.*`` keys (q/k/v fused back into to_qkv)."""
    out, unknown, qkv = {}, [], {}
    for k, v in sd.items():
        if k in _TOP_INV:
            name = _TOP_INV[k]
            if name == "visual.cls_embedding":
                v = v.reshape(1, 1, -1)
            elif name == "visual.pos_embedding":
                v = v.unsqueeze(0)
            elif name == "visual.head":
                v = v.t()
            out[name] = v.contiguous()
            continue
        m = re.fullmatch(r"vision_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", k)
        if not m:
            if k != "vision_model.embeddings.position_ids":
                unknown.append(k)
            continue
        i, mod, kind = m.groups()
        if mod in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            qkv.setdefault((i, kind), {})[mod[-6]] = v
        elif mod in _BLOCK_INV:
            out[f"visual.transformer.{i}.{_BLOCK_INV[mod]}.{kind}"] = v
        else:
            unknown.append(k)
    for (i, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"layer {i}: {kind} of q/k/v incomplete (have {sorted(parts)})")
        out[f"visual.transformer.{i}.attn.to_qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    if unknown:
        raise CheckpointError(f"unknown keys in a transformers CLIP vision state dict: {sorted(unknown)[:8]} "
                              f"({len(unknown)} in all)")
    return out


# ----------------------------------------------------------------------------- the encoder

class ImageEncoder:
    """CLIP ViT vision tower: images in [-1, 1] -> penultimate-block features ``[N, 1+grid^2, dim]``.

    ``ImageEncoder(config)`` builds a randomly initialised tower (tests, demo); ``projection_dim``
    adds the (unused by Wan, kept for faithful round trips) projection head. ``dtype`` defaults to
    float32 on CPU and float16 elsewhere (the reference's precision).
    """

    def __init__(self, config: ImageEncoderConfig, dtype: Optional[torch.dtype] = None,
                 device: Union[str, torch.device, None] = None, projection_dim: Optional[int] = None,
                 seed: Optional[int] = None, *, _model=None, _projection=None):
        from transformers import CLIPVisionModel
        self.config = config
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype or (torch.float32 if self.device.type == "cpu" else torch.float16)
        if _model is None:
            if seed is not None:
                torch.manual_seed(seed)
            _model = CLIPVisionModel(to_hf_config(config))
            if projection_dim:
                _projection = torch.nn.Linear(config.dim, projection_dim, bias=False)
        self.model = _model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.projection = _projection
        if self.projection is not None:
            self.projection = self.projection.to(device=self.device, dtype=self.dtype).requires_grad_(False)
        # transformers 5 flattened CLIPVisionModel; 4.x keeps the tower in .vision_model
        self.tower = getattr(self.model, "vision_model", self.model)
        self._layer_takes_causal_mask = "causal_attention_mask" in inspect.signature(
            self.tower.encoder.layers[0].forward).parameters

    @property
    def projection_dim(self) -> Optional[int]:
        return None if self.projection is None else self.projection.out_features

    # ---------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], dtype: Optional[torch.dtype] = None,
                        device: Union[str, torch.device, None] = None,
                        config: Optional[ImageEncoderConfig] = None) -> "ImageEncoder":
        """Load published weights. ``path`` is the official
        ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (only ``visual.*`` is read), an
        official checkpoint directory holding it, a diffusers ``image_encoder/`` folder
        (CLIPVisionModel(WithProjection): config.json + safetensors), or a diffusers root.

        For the official file the sizes come from the shapes; the head count, which they do not
        reveal, from ``config=``, else ``clip_config.json`` beside the file, else 16 for ViT-H.
        """
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"image encoder checkpoint not found: {path}")
        if path.is_dir():
            if (path / OFFICIAL_CLIP_FILE).is_file():
                path = path / OFFICIAL_CLIP_FILE
            elif (path / "image_encoder").is_dir() and not (path / "config.json").is_file():
                path = path / "image_encoder"
            elif not (path / "config.json").is_file():
                raise CheckpointError(
                    f"{path} holds no image encoder: expected {OFFICIAL_CLIP_FILE} (official checkpoint dir), "
                    f"config.json + *.safetensors (an image_encoder/ folder) or an image_encoder/ subfolder "
                    f"(diffusers root)")

        if path.is_dir():
            hf_cfg = _read_json(path / "config.json")
            if hf_cfg.get("model_type") not in ("clip_vision_model", "clip"):
                raise CheckpointError(
                    f"{path / 'config.json'} is not a CLIP vision model's (model_type "
                    f"{hf_cfg.get('model_type')!r}); point at the folder holding {OFFICIAL_CLIP_FILE}, an "
                    f"image_encoder/ folder or a diffusers root")
            cfg, proj = from_hf_config(hf_cfg)
            cfg = config or cfg
            sd = {}
            for f in safetensors_files(path, prefix="model"):
                sd.update(read_safetensors(f))
            if not any(k.startswith("vision_model.") for k in sd):  # transformers-5 CLIPVisionModel save
                sd = {("vision_model." + k if k != "visual_projection.weight" else k): v for k, v in sd.items()}
            if proj is None:
                sd.pop("visual_projection.weight", None)
            layout = "hf"
        else:
            raw = read_state_dict(path)
            raw = strip_prefix(raw, ("module.", "model."))
            visual = {k: v for k, v in raw.items() if k.startswith("visual.")}
            if not visual:
                raise CheckpointError(f"{path} has no 'visual.*' tensors: not an official CLIP checkpoint "
                                      f"({OFFICIAL_CLIP_FILE})")
            if config is None:
                base = None
                if (path.parent / CONFIG_FILE).is_file():
                    base = ImageEncoderConfig.from_dict(_read_json(path.parent / CONFIG_FILE))
                config = infer_config(visual, base)
            cfg = config
            sd, layout = visual, "official"
            proj = visual["visual.head"].shape[-1] if "visual.head" in visual else None
        model, projection = build_and_load(cfg, sd, proj, source=str(path), layout=layout)
        return cls(cfg, dtype=dtype, device=device, _model=model, _projection=projection)

    # ---------------------------------------------------------------- saving

    def state_dict(self, layout: str = "official") -> dict:
        """Weights as ``official`` (``visual.*``) or ``hf`` (``vision_model.*``) keys."""
        sd = {f"vision_model.{k}": v for k, v in self.tower.state_dict().items()
              if not k.endswith("position_ids")}
        if self.projection is not None:
            sd["visual_projection.weight"] = self.projection.weight
        return hf_to_official(sd) if layout == "official" else sd

    def save_pretrained(self, path: Union[str, os.PathLike], layout: str = "official",
                        dtype: Optional[torch.dtype] = None) -> Path:
        """``official``: ``<path>/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` holding the
        ``visual.*`` tensors (+ ``clip_config.json`` when the config is not ViT-H/14's).
        ``diffusers``: ``<path>/image_encoder/`` (config.json + model.safetensors, the key names of
        a transformers CLIPVisionModel(WithProjection) file). Written atomically."""
        path = Path(path)
        if layout not in ("official", "diffusers"):
            raise ValueError(f"layout must be 'official' or 'diffusers', got {layout!r}")
        sd = self.state_dict("official" if layout == "official" else "hf")
        sd = {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in sd.items()}
        if layout == "official":
            path.mkdir(parents=True, exist_ok=True)
            atomic_write(path / OFFICIAL_CLIP_FILE, lambda tmp: torch.save(sd, tmp))
            if self.config != ImageEncoderConfig():
                write_json(self.config.to_dict(), path / CONFIG_FILE)
        else:
            out = path / "image_encoder"
            save_sharded(sd, out, prefix="model")
            hf = to_hf_config(self.config, self.projection_dim).to_dict()
            hf["torch_dtype"] = str(dtype or self.dtype).replace("torch.", "")
            write_json(hf, out / "config.json")
        return path

    # ---------------------------------------------------------------- encoding

    def preprocess(self, images: ImageInput) -> torch.Tensor:
        """Images in [-1, 1] (tensor [N,3,H,W] or [3,H,W], PIL image(s), or a list of [3,H,W]) ->
        normalized pixels [N, 3, S, S] in float32: bicubic resize to S = image_size (align_corners
        False, no antialias), then x*0.5+0.5, then (x - CLIP mean) / CLIP std."""
        s = self.config.image_size
        batch = []
        for img in _as_list(images):
            if img.ndim != 3 or img.shape[0] != 3:
                raise ValueError(f"an image must be [3, H, W] (RGB, channels first), got shape {tuple(img.shape)}")
            img = img.to(self.device, torch.float32)
            lo, hi = img.min().item(), img.max().item()
            if lo < -1.01 or hi > 1.01:
                raise ValueError(f"image values must lie in [-1, 1], got [{lo:.3g}, {hi:.3g}]; "
                                 f"convert uint8 images with x / 127.5 - 1")
            batch.append(F.interpolate(img[None], size=(s, s), mode="bicubic", align_corners=False))
        x = torch.cat(batch).mul(0.5).add(0.5)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalized pixels [N,3,S,S] -> output of blocks 0..num_layers-2 (no post-norm): [N, 1+g^2, dim]."""
        h = self.tower.embeddings(pixels.to(self.device, self.dtype))
        h = self.tower.pre_layrnorm(h)
        for layer in self.tower.encoder.layers[: self.config.num_layers - 1]:
            out = layer(h, None, None) if self._layer_takes_causal_mask else layer(h, None)
            h = out[0] if isinstance(out, tuple) else out
        return h

    def encode(self, images: ImageInput, device: Union[str, torch.device, None] = None) -> torch.Tensor:
        """Images in [-1, 1] -> CLIP features [N, 257, 1280] (ViT-H/14) in the encoder's dtype."""
        feats = self.features(self.preprocess(images))
        return feats if device is None else feats.to(device)

    __call__ = encode

    def to(self, device=None, dtype=None) -> "ImageEncoder":
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        self.model.to(device=self.device, dtype=self.dtype)
        if self.projection is not None:
            self.projection.to(device=self.device, dtype=self.dtype)
        return self


# ----------------------------------------------------------------------------- helpers

def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None


def _as_list(images: ImageInput) -> list[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            return [images]
        if images.ndim == 4:
            return list(images)
        raise ValueError(f"images must be [N, 3, H, W] or [3, H, W], got shape {tuple(images.shape)}")
    if not isinstance(images, (list, tuple)):
        images = [images]
    if not images:
        raise ValueError("no images given")
    out = []
    for im in images:
        if isinstance(im, torch.Tensor):
            out.append(im)
            continue
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover
            Image = None
        if Image is not None and isinstance(im, Image.Image):
            import numpy as np
            a = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32).copy())
            out.append(a.permute(2, 0, 1) / 127.5 - 1.0)
        else:
            raise ValueError(f"an image must be a torch.Tensor in [-1, 1] or a PIL image, got {type(im).__name__}")
    return out


def build_and_load(cfg: ImageEncoderConfig, sd: dict, projection_dim: Optional[int], source: str,
                   layout: str = "hf"):
    """Build the tower (and projection) on the meta device and assign the checkpoint's tensors.

    ``sd`` is in ``layout`` ("hf": ``vision_model.*``, or "official": ``visual.*``); key problems are
    reported in that layout's names.
    """
    from transformers import CLIPVisionModel
    with torch.device("meta"):
        model = CLIPVisionModel(to_hf_config(cfg))
        projection = torch.nn.Linear(cfg.dim, projection_dim, bias=False) if projection_dim else None
    tower = getattr(model, "vision_model", model)
    expected = {f"vision_model.{k}": v for k, v in tower.state_dict().items() if not k.endswith("position_ids")}
    if projection is not None:
        expected["visual_projection.weight"] = projection.weight
    if layout == "official":
        expected = hf_to_official(expected)
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    check_keys({k: tuple(v.shape) for k, v in expected.items()}, {k: tuple(v.shape) for k, v in sd.items()},
               "the CLIP vision tower", source,
               hint="pass config= (an ImageEncoderConfig) if the checkpoint's sizes differ from the expected ones")
    hf_sd = official_to_hf(sd) if layout == "official" else sd
    tower.load_state_dict({k[len("vision_model."):]: v for k, v in hf_sd.items() if k.startswith("vision_model.")},
                          strict=False, assign=True)
    emb = tower.embeddings
    emb.position_ids = torch.arange(emb.num_positions).expand(1, -1)  # non-persistent buffer
    if projection is not None:
        projection.load_state_dict({"weight": hf_sd["visual_projection.weight"]}, assign=True)
    left = [n for n, t in list(tower.named_parameters()) + list(tower.named_buffers()) if t.device.type == "meta"]
    if left:
        raise CheckpointError(f"{source}: tensors left unloaded: {left[:8]}")
    return model, projection
