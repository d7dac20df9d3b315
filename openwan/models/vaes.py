"""The right VAE for a checkpoint: Wan 2.1 (:class:`~openwan.models.vae.WanVAE`) or Wan 2.2
(:class:`~openwan.models.vae22.WanVAE22`), picked from the files, never guessed.

    from openwan.models.vaes import load_vae, vae_class
    vae = load_vae(path, dtype=None, device=None)      # a VideoVAE (openwan.models.vae_protocol)

``path`` may be a weights file, an official checkpoint folder (``Wan2.1_VAE.pth`` or ``Wan2.2_VAE.pth``),
a diffusers ``vae/`` folder or a diffusers root with ``vae/``. The version comes from the file name, the
diffusers config (``is_residual``) and the key names, which must agree; a folder with both official files,
a name contradicting the keys, or weights that are neither layout are errors naming what is wrong.
"""
from __future__ import annotations

import os
from typing import Optional, Union

import torch

from openwan.models.vae import WanVAE
from openwan.models.vae22 import WanVAE22
from openwan.models.vae_io import detect_version, read_checkpoint

VAE_CLASSES = {"2.1": WanVAE, "2.2": WanVAE22}


def vae_class(path: Union[str, os.PathLike]) -> type:
    """WanVAE or WanVAE22, from the files at ``path`` (CheckpointError if they do not say which)."""
    return VAE_CLASSES[detect_version(path)]


def load_vae(path: Union[str, os.PathLike], dtype: Optional[torch.dtype] = None,
             device: Optional[Union[str, torch.device]] = None, config=None):
    """Load the VAE at ``path`` with the class its files call for (``config`` as in ``from_pretrained``)."""
    ck = read_checkpoint(path)                       # read once: the class is picked from what it holds
    return VAE_CLASSES[detect_version(ck)].from_pretrained(ck, dtype=dtype, device=device, config=config)
