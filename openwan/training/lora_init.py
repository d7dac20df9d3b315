"""Start a LoRA run from an existing LoRA file (the config's ``lora.weights``): continue training it, or fine-tune
on top of a published one.

    add_lora(model, rank, alpha, targets)    -> trainable adapters "default" (A random, B zero)
    init_lora_from(model, file)              -> each adapted layer of the file: A = its A, B = its B x (file's
                                                alpha / the run's alpha), so the delta is the file's; the layers
                                                the file does not adapt keep their fresh start (B zero)

The file is read by :func:`openwan.training.lora.parse_lora` (every format ``load_lora`` reads). What cannot be
continued is an error that names it: a layer the file adapts that ``lora.targets`` leaves out, another rank, a
full delta (``diff``: not a low-rank pair).
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
import torch.nn as nn


def init_lora_from(model: nn.Module, path: Union[str, Path], name: str = "default") -> int:
    """Copy the LoRA file's pairs into the trainable adapter ``name`` (see the module docstring); returns the
    number of layers set."""
    from openwan.checkpoints import CheckpointError, read_state_dict
    from openwan.training.lora import LowRank, _key, _param_lora, parse_lora
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"lora.weights {path}: file not found")
    entries = parse_lora(model, read_state_dict(path), f"lora.weights {path}")
    modules = dict(model.named_modules())
    adapters = {}
    for (off, pname), e in entries.items():
        if "diff" in e:
            raise CheckpointError(f"lora.weights {path}: {off}.{pname} has a full delta (diff), which a LoRA run "
                                  f"cannot continue; only low-rank pairs can")
        p = _param_lora(modules[off], pname, create=False)
        ad = p.adapters[_key(name)] if p is not None and _key(name) in p.adapters else None
        if not isinstance(ad, LowRank):
            parts = off.split(".")
            target = ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]      # ffn.0, q, ...
            raise CheckpointError(f"lora.weights {path} adapts {off}, which lora.targets leaves out: add "
                                  f"{target!r} to lora.targets")
        if e["down"].shape[0] != ad.rank:
            raise CheckpointError(f"lora.weights {path} has rank {e['down'].shape[0]} ({off}); set lora.rank to it "
                                  f"(the run's is {ad.rank})")
        adapters[off] = (ad, e)
    with torch.no_grad():
        for off, (ad, e) in adapters.items():
            rank = e["down"].shape[0]
            file_scale = float(e["alpha"]) / rank if "alpha" in e else 1.0
            ad.A.copy_(e["down"].reshape(ad.A.shape).to(ad.A.dtype))
            ad.B.copy_((e["up"].flatten(1).double() * (file_scale / ad.scale)).to(ad.B.dtype))
    return len(adapters)
