"""Release a model's checkpoint weights and reload them from the file: the CPU's active-expert plan.

On a GPU the idle Wan 2.2 expert waits in CPU memory; on a CPU that *is* the device memory, so keeping
it there saves nothing. Instead the idle expert's weights are released (its parameters become meta
tensors: no memory) and read again from its safetensors file when it is next needed:

    w = FileWeights(expert, "Wan2.2-T2V-A14B/low_noise_model")   # what came from the file, by official name
    w.release()                                                  # parameters -> meta (memory freed)
    w.restore()                                                  # read back, shard by shard

Only the parameters the file holds (by name, from its headers) are released, found at each call (a
LoRA's parametrization keeps the original weight under ``parametrizations.weight.original``: that is the
file's ``weight``); adapters and anything else the model gained stay. A model whose weights no longer
equal the file (merged LoRA) is not released. A restore reads one shard at a time; each weight gets the
dtype it had. safetensors maps the file, so a weight of the file's dtype is a view of its pages: the
restore maps them again (milliseconds) and the next forward pages them in (from the page cache, or the
disk); a weight of another dtype is cast again.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Union

import torch
import torch.nn as nn

_PARAMETRIZED = re.compile(r"\.parametrizations\.([^.]+)\.original$")


def _slots(model: nn.Module) -> dict:
    """{official name: (owner module, attribute)} for every parameter of the model."""
    out = {}
    for mname, m in model.named_modules():
        for pname, p in m._parameters.items():
            if p is not None:
                name = f"{mname}.{pname}" if mname else pname
                out[_PARAMETRIZED.sub(r".\1", name)] = (m, pname)
    return out


class FileWeights:
    """The weights of ``model`` that its checkpoint ``source`` (a DiT folder or file, either layout) holds."""

    def __init__(self, model: nn.Module, source: Union[str, Path]):
        from openwan.checkpoints import dit_keys
        self.model = model
        self.source = Path(source)
        self.keys = dit_keys(self.source)
        self.released = any(p.is_meta for p in model.parameters())
        self.reloads = 0
        self.reload_seconds = 0.0

    def can_release(self) -> bool:
        """False when the weights differ from the file (a LoRA merged into them)."""
        return not getattr(self.model, "_openwan_lora_merged", None)

    def release(self) -> bool:
        """Free the file's weights (meta tensors of the same shape and dtype); False if kept."""
        if self.released:
            return True
        if not self.can_release():
            return False
        with torch.no_grad():
            for name, (m, pname) in _slots(self.model).items():
                p = m._parameters[pname]
                if name in self.keys and not p.is_meta:
                    m._parameters[pname] = nn.Parameter(torch.empty_like(p, device="meta"),
                                                        requires_grad=p.requires_grad)
        self.released = True
        return True

    def restore(self, device=None) -> None:
        """Read the released weights back from the file (onto ``device``, default the CPU)."""
        if not self.released:
            return
        from openwan.checkpoints import CheckpointError, read_dit_shards
        t0 = time.perf_counter()
        slots = _slots(self.model)
        with torch.no_grad():
            for part in read_dit_shards(self.source):
                for name, t in part.items():
                    slot = slots.get(name)
                    if slot is None:
                        continue
                    m, pname = slot
                    old = m._parameters[pname]
                    if old.is_meta:
                        if tuple(old.shape) != tuple(t.shape):
                            raise CheckpointError(f"{self.source}: {name} has shape {tuple(t.shape)} now, "
                                                  f"{tuple(old.shape)} when loaded; the file changed")
                        m._parameters[pname] = nn.Parameter(t.to(device=device, dtype=old.dtype),
                                                            requires_grad=old.requires_grad)
        left = [n for n, (m, pname) in slots.items() if m._parameters[pname].is_meta]
        if left:
            raise CheckpointError(f"{self.source}: no weights for {left[:3]} when reloading the released expert "
                                  f"(the file changed since it was loaded)")
        self.released = False
        self.reloads += 1
        self.reload_seconds += time.perf_counter() - t0


__all__ = ["FileWeights"]
