"""The inputs every pipeline reads: pictures and videos given as files, arrays, tensors or frame lists, turned into
RGB uint8 arrays and fitted to a size, and the image-to-video size rule. A leaf of the pipelines package (it imports
none of them), so the call options (openwan.pipelines.call_options: a video to extend) read inputs and size an
image-to-video extension's picture without an import cycle; the task modules (i2v, v2v) re-export these names where
they were first defined.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

ImageLike = Union[str, os.PathLike, np.ndarray, torch.Tensor, "PIL.Image.Image"]  # noqa: F821
VideoLike = Union[str, os.PathLike, np.ndarray, torch.Tensor, list]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def _array_to_rgb(a: np.ndarray, what: str) -> np.ndarray:
    """uint8/uint16 [H, W], [H, W, 1|3|4] -> RGB uint8 [H, W, 3] (alpha composited on white)."""
    if a.dtype == np.bool_ or not (a.dtype == np.uint8 or a.dtype == np.uint16):
        raise ValueError(f"{what}: an image array must be uint8 (0..255) or uint16, got {a.dtype}; convert float "
                         f"images in [0, 1] with (x * 255).round().astype(np.uint8)")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"{what}: an image array must be [H, W, 3] (RGB, channels last), [H, W, 4] (RGBA) or "
                         f"[H, W] (grayscale), got shape {tuple(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{what}: the image is empty (shape {tuple(a.shape)})")
    x = a.astype(np.float64)
    if a.dtype == np.uint16:
        x = x / 257.0                                 # 0..65535 -> 0..255
    if a.shape[-1] == 4:                              # alpha over white, as read_image does
        alpha = x[..., 3:] / 255.0
        x = x[..., :3] * alpha + 255.0 * (1 - alpha)
    if a.dtype == np.uint8 and a.shape[-1] == 3:
        return np.ascontiguousarray(a)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def load_image(image: ImageLike, what: str = "image") -> np.ndarray:
    """Any image input -> RGB uint8 [H, W, 3].

    Accepts a file path (read with :func:`openwan.video.read_image`: EXIF rotation, alpha on white,
    grayscale and 16-bit converted), a PIL image (same conversions), or a uint8/uint16 array or
    tensor [H, W, 3], [H, W, 4] or [H, W]. A missing file raises FileNotFoundError, a corrupt one or
    a wrong array ValueError; both messages name ``what`` (e.g. "first_frame").
    """
    from openwan.video import to_rgb_array, read_image
    if image is None:
        raise ValueError(f"{what} is required (a file path, a PIL image or a uint8 [H, W, 3] array)")
    if _is_path(image):
        if str(image).strip() == "":
            raise ValueError(f"{what}: empty path")
        try:
            return read_image(image)
        except FileNotFoundError:
            raise FileNotFoundError(f"{what}: no such file: {image}") from None
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
    try:
        from PIL import Image, ImageOps
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"{what}: the image is empty ({image.width}x{image.height})")
        return to_rgb_array(ImageOps.exif_transpose(image) or image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, what)
    raise ValueError(f"{what} must be a file path, a PIL image or a uint8 [H, W, 3] array, got "
                     f"{type(image).__name__}")


def image_to_tensor(img: np.ndarray, device=None) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1] ((x/255 - 0.5) / 0.5, as the reference)."""
    t = torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1).float()
    return t.div(255.0).sub(0.5).div(0.5)


def fit_cover(x: torch.Tensor, height: int, width: int, mode: str = "bicubic") -> torch.Tensor:
    """Aspect-preserving resize so ``x`` covers height x width, then a centre crop to exactly that.

    ``x``: [C, H, W] or [N, C, H, W]. Smooth modes (bicubic, bilinear) antialias when shrinking and the
    result is clamped to the input's range, so [-1, 1] images stay in [-1, 1]; use
    ``mode="nearest-exact"`` for masks. An input already of the target size is returned unchanged.
    """
    single = x.ndim == 3
    xb = x[None] if single else x
    h0, w0 = xb.shape[-2:]
    if (h0, w0) == (height, width):
        return x
    scale = max(height / h0, width / w0)
    nh, nw = max(height, round(h0 * scale)), max(width, round(w0 * scale))
    if mode in ("bicubic", "bilinear"):
        lo, hi = xb.min(), xb.max()
        y = F.interpolate(xb.float(), size=(nh, nw), mode=mode, align_corners=False, antialias=True)
        y = y.clamp(lo, hi)
    else:
        y = F.interpolate(xb.float(), size=(nh, nw), mode=mode)
    top, left = (nh - height) // 2, (nw - width) // 2
    y = y[..., top:top + height, left:left + width].to(x.dtype)
    return y[0] if single else y


def source_name(x) -> Optional[str]:
    """What to record in the settings for an input: its path, or None for in-memory data."""
    return str(x) if _is_path(x) else None


def load_video(video: VideoLike, what: str = "src_video", allow_image: bool = False,
               target_fps: Optional[float] = None) -> np.ndarray:
    """A video input -> RGB uint8 [F, H, W, 3].

    Accepts a video file path (any format PyAV reads), a uint8 array/tensor [F, H, W, 3], or a list
    of frames (paths, PIL images or [H, W, 3] arrays). With ``allow_image`` a still-image path or a
    single [H, W, 3] frame is a one-frame video. A video file whose frame rate differs from
    ``target_fps`` (when given) is resampled to it by nearest-frame selection
    (:func:`openwan.video.frame_indices`); arrays and frame lists carry no rate and are used as they
    are. Errors (ValueError; FileNotFoundError for a missing file) name ``what``.
    """
    from openwan.video import frame_indices, read_video
    if video is None:
        raise ValueError(f"{what} is required (a video file path or a uint8 [F, H, W, 3] array)")
    if _is_path(video):
        if str(video).strip() == "":
            raise ValueError(f"{what}: empty path")
        if Path(video).suffix.lower() in IMAGE_SUFFIXES:
            if not allow_image:
                raise ValueError(f"{what}: {video} is an image; give a video file (or a list of frames)")
            return load_image(video, what)[None]
        with reading(what, video):
            frames, fps = read_video(video)
        if target_fps and fps and abs(fps - target_fps) > 1e-3 * target_fps:
            frames = frames[frame_indices(len(frames), fps, target_fps)]
        return frames
    if isinstance(video, (list, tuple)):
        if not video:
            raise ValueError(f"{what}: the list of frames is empty")
        frames = [load_image(f, f"{what} frame {i}") for i, f in enumerate(video)]
        if any(f.shape != frames[0].shape for f in frames):
            sizes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})
            raise ValueError(f"{what}: all frames must have the same size, got {', '.join(sizes)}")
        return np.stack(frames)
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    if isinstance(video, np.ndarray):
        if video.ndim == 3 and allow_image:
            return load_image(video, what)[None]
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"{what}: a video array must be uint8 [F, H, W, 3] (RGB, channels last), got shape "
                             f"{tuple(video.shape)}")
        if video.dtype != np.uint8:
            raise ValueError(f"{what}: a video array must be uint8 (0..255), got {video.dtype}")
        if video.shape[0] == 0:
            raise ValueError(f"{what}: the video has no frames")
        if video.shape[1] == 0 or video.shape[2] == 0:
            raise ValueError(f"{what}: the video frames are empty (shape {tuple(video.shape)})")
        return np.ascontiguousarray(video)
    raise ValueError(f"{what} must be a video file path, a uint8 [F, H, W, 3] array or a list of frames, got "
                     f"{type(video).__name__}")


@contextmanager
def reading(what: str, path):
    """A file input's read errors as ``what``'s: a missing file FileNotFoundError, any other ValueError, both named."""
    try:
        yield
    except FileNotFoundError:
        raise FileNotFoundError(f"{what}: no such file: {path}") from None
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


def video_to_tensor(frames: np.ndarray, device=None) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float32 [3, F, H, W] in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(3, 0, 1, 2).float()
    return t.div(255.0).sub(0.5).div(0.5)


def fit_video(video: torch.Tensor, height: int, width: int, mode: str = "bicubic") -> torch.Tensor:
    """[C, F, H, W] -> [C, F, height, width] by :func:`fit_cover` on every frame (aspect kept, centre crop)."""
    return fit_cover(video.transpose(0, 1), height, width, mode=mode).transpose(0, 1)


def encode_fitted(pipe, frames: np.ndarray, width: int, height: int) -> torch.Tensor:
    """The latents [C, T, h, w] (on ``pipe``'s device) of uint8 ``frames`` [F, H, W, 3] fitted to width x height by
    ``pipe``'s VAE (resident while it runs)."""
    with torch.inference_mode(), pipe.resident(pipe.vae) as vae:
        video = fit_video(video_to_tensor(frames, vae.device), height, width)
        return vae.encode(video[None].to(vae.dtype))[0].float().to(pipe.device)


def i2v_size(image_h: int, image_w: int, area: int, stride: int = 8, patch: int = 2) -> tuple[int, int]:
    """Output (height, width) for an image of image_h x image_w at ``area`` pixels.

    latent h = round(sqrt(area * image_h / image_w)) // stride // patch * patch (likewise w with the
    inverse ratio); pixels = latent * stride, so both sides are multiples of stride * patch = 16.

    The reference code floors sqrt(...) instead of rounding it. Mathematically the two agree except
    within half a pixel below a multiple of 16, but in float arithmetic the floor loses a whole
    block exactly when the image already has the target aspect: an 832x480 image at area 832*480
    gives sqrt(...) = 479.99999999999994 and the reference makes a 832x464 video. Rounding first
    (as diffusers' Wan I2V example does) gives 832x480.
    """
    ratio = image_h / image_w
    lat_h = round(math.sqrt(area * ratio)) // stride // patch * patch
    lat_w = round(math.sqrt(area / ratio)) // stride // patch * patch
    if lat_h < patch or lat_w < patch:
        raise ValueError(f"an image of {image_w}x{image_h} (aspect {image_w / image_h:.3g}) is too elongated for "
                         f"an area of {area} pixels: the video would be {lat_w * stride}x{lat_h * stride}; "
                         f"crop the image or choose a larger size")
    return lat_h * stride, lat_w * stride
