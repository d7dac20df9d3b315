"""What the DiT computes from the conditioning alone, computed once per generation and reused at every step.

    cache = ContextCache()                       # one per generation (a Denoiser makes its own)
    for step in steps:
        v = dit(x, t, [ctx, ctx_null], ctx_cache=cache)   # step 0 fills it, later steps reuse it

The text (and CLIP image) context is the same at every denoising step, so everything computed from it alone
is too: the text embedding (``text_embedding``; the image embedding ``img_emb``) and, in every block, the
cross-attention's keys and values (the ``k`` / ``v`` projections and the ``norm_k`` RMSNorm of the text rows;
``k_img`` / ``v_img`` / ``norm_k_img`` of the image rows for i2v/flf2v). With a cache the first call computes
them and later calls reuse the same tensors, so the output is bit-identical to the uncached path.

Keys, so that a reuse is always of the same computation:

* an :class:`Entry` per conditioning, found by the *content* of its inputs (``torch.equal`` with a copy of the
  text contexts and CLIP features): the batched guided pass [cond, uncond], each of the unbatched passes, and the
  long-video windows with their own prompts each get one; a changed input gets a new one (at most
  ``max_entries`` are kept, the least recently used goes first).
* per block, a :func:`weights_signature` of the layers that make the keys and values: the version counter,
  shape, dtype and device of each of their tensors (base weights, LoRA adapters' A/B/D, quantized buffers), the
  module types (a LoRA parametrization attached or merged away changes them) and the adapters' ``scale`` /
  ``strength``. An in-place change (``load_state_dict``, an optimizer step on an unmerged LoRA, ``merge_lora``'s
  restore), ``set_lora_strength``, attaching or removing an adapter, or a move to another device recomputes that
  block's keys and values. Block swap's reloads (fresh copies of the same weights) keep the cache valid.
  Swapping a weight's tensor object for another one of the same version (``param.data = other``) within one
  generation is not detected: the cache lives for one generation, and a new one starts empty.

Inference only: :class:`~openwan.models.dit.WanModel` ignores the cache while gradients are enabled and while
``torch.compile`` traces it. Memory: per entry and block, the keys and values of the context rows
([B, Lc, dim] twice, in the compute dtype; fp32 when the text padding is folded), see
:func:`openwan.plan.dit_activation_bytes`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

__all__ = ["ContextCache", "Entry", "Slot", "weights_signature"]


def _version(t: torch.Tensor) -> int:
    """The tensor's version counter (-1 for an inference tensor, which has none)."""
    return -1 if t.is_inference() else t._version  # (inlined in weights_signature)


def weights_signature(modules: Sequence[nn.Module]) -> tuple:
    """What identifies the weights of ``modules`` for a reuse within one generation (see the module docstring)."""
    sig = []
    add = sig.append
    for root in modules:
        for m in (root.modules() if root._modules else (root,)):    # (a plain layer: no generator)
            add(type(m))
            for tensors in (m._parameters, m._buffers):
                for t in tensors.values():
                    if t is not None:
                        add(-1 if t.is_inference() else t._version)
                        add(t.shape)
                        add(t.dtype)
                        add(t.device)
            if m is not root:        # LoRA adapters (openwan.training.lora): their numeric settings
                add(getattr(m, "scale", None))
                add(getattr(m, "strength", None))
    return tuple(sig)


class Slot:
    """One block's cached keys and values in one :class:`Entry`, with the weights signature they were made with."""

    __slots__ = ("sig", "value", "computed")

    def __init__(self):
        self.sig, self.value, self.computed = None, None, 0

    def get(self, module: nn.Module):
        """The cached value if ``module``'s k/v weights are unchanged (``module.kv_modules()``), else None."""
        sig = weights_signature(module.kv_modules())
        if self.value is not None and sig == self.sig:
            return self.value
        self.sig, self.value = sig, None
        return None

    def put(self, value) -> None:
        self.value = value
        self.computed += 1


class Entry:
    """The cache of one conditioning: its embedded context (``ctx``, ``ctx_bias``) and a :class:`Slot` per block."""

    def __init__(self, inputs: list):
        # what it was made from: copies (matched by content) and the originals with their versions (a fast path:
        # the same unchanged tensor objects match without reading them, no device sync)
        self.inputs = [v.detach().clone() if torch.is_tensor(v) else v for v in inputs]
        self.originals = [(v, _version(v)) if torch.is_tensor(v) else None for v in inputs]
        self.ctx: Optional[torch.Tensor] = None
        self.ctx_bias: Optional[torch.Tensor] = None
        self.slots: dict = {}

    def slot(self, key) -> Slot:
        s = self.slots.get(key)
        if s is None:
            s = self.slots[key] = Slot()
        return s

    def matches(self, inputs: list) -> bool:
        if len(inputs) != len(self.inputs):
            return False
        for copy, orig, new in zip(self.inputs, self.originals, inputs):
            if orig is not None and new is orig[0] and orig[1] >= 0 and _version(new) == orig[1]:
                continue
            if not _same(copy, new):
                return False
        return True


def _same(a, b) -> bool:
    if torch.is_tensor(a) and torch.is_tensor(b):
        return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and bool(torch.equal(a, b))
    return not torch.is_tensor(a) and not torch.is_tensor(b) and a == b


class ContextCache:
    """The per-generation cache (see the module docstring). ``hits`` / ``misses`` count the entry look-ups."""

    def __init__(self, max_entries: int = 8):
        self.max_entries = max_entries
        self.entries: list[Entry] = []
        self.hits = self.misses = 0

    def entry(self, context, clip_fea: Optional[torch.Tensor] = None) -> Entry:
        """The entry of this text context (a [B, L, C] tensor or a list of [L_i, C]) and CLIP features."""
        as_tensor = torch.is_tensor(context)
        inputs = [as_tensor] + ([context] if as_tensor else list(context)) + [clip_fea]
        for i, e in enumerate(self.entries):
            if e.matches(inputs):
                self.hits += 1
                if i:
                    self.entries.insert(0, self.entries.pop(i))
                return e
        self.misses += 1
        e = Entry(inputs)
        self.entries.insert(0, e)
        del self.entries[self.max_entries:]
        return e

    def computed(self) -> int:
        """How many times a block's keys and values were computed (over every entry)."""
        return sum(s.computed for e in self.entries for s in e.slots.values())
