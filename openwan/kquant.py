"""GGUF K-quant weights (Q6_K, Q5_K, Q4_K) kept packed in memory, dequantized per layer in each forward.

    layer = KQuantLinear(in_f, out_f, bias=True, gtype="Q4_K", blocks=raw)   # raw: uint8 [out, in/256 * 144]
    y = layer(x)                      # dequantize (torch, vectorized, on the layer's device), then F.linear

A K-quant super-block holds 256 weights of one row (ggml's layout, the published Wan GGUFs):

    Q4_K  144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales sc_j and mins m_j (8 sub-blocks of 32),
          128 bytes of 4-bit q;          w = (d * sc_j) * q - (dmin * m_j)            4.5 bits / weight
    Q5_K  176 bytes: as Q4_K + 32 bytes holding each weight's 5th bit (q in 0..31)     5.5 bits / weight
    Q6_K  210 bytes: 128 bytes low 4 bits, 64 bytes high 2 bits, 16 int8 scales (one per 16 weights),
          f16 d;                         w = (d * sc_j) * (q - 32)                     6.5625 bits / weight

The arithmetic is the ``gguf`` package's (its numpy dequantizers, run at load by openwan.gguf when
``packed=False``) done step for step in fp32 torch ops: the same fp32 products and differences, so a
packed layer's weight equals the dequantized-at-load one bit for bit (tests/test_gguf.py), then is
cast to the compute dtype. The dequantized weight exists for one layer at a time, like
:class:`openwan.quant.QuantLinear`, which this subclasses: LoRA adapters (``openwan.quant.load_lora``)
stay unmerged on top, and block swapping moves the packed buffer with its block.

``state_dict()`` gives a packed layer's official ``weight`` as the dequantized float weight (the
compute dtype), so saving such a model writes a float checkpoint; load_state_dict takes the packed
bytes (uint8 of the layer's packed shape) only.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from openwan.quant import QuantLinear

QK_K = 256
BLOCK_BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
TYPES = tuple(BLOCK_BYTES)


def _f16(b: torch.Tensor) -> torch.Tensor:
    """uint8 [n, 2] (little-endian f16) -> float32 [n]."""
    return b.contiguous().view(torch.float16).float().reshape(-1)


def _bits(b: torch.Tensor, shifts, mask: int) -> torch.Tensor:
    """b [n, c, w] uint8 -> [n, c, len(shifts), w]: (b >> s) & mask for each shift s."""
    s = torch.tensor(shifts, dtype=torch.uint8, device=b.device).reshape(1, 1, -1, 1)
    return (b.unsqueeze(2) >> s) & mask


def _scale_min(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K's 12 scale bytes [n, 12] -> 6-bit (sc [n, 8], m [n, 8]): bytes 0-3 hold sc_0..3 (and the
    top 2 bits of sc_4..7), 4-7 m_0..3 (top bits of m_4..7), 8-11 the low 4 bits of sc_4..7 and m_4..7."""
    s = scales.reshape(-1, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mn


def _q4_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, m = _scale_min(b[:, 4:16])
    dd = (d[:, None] * sc.float()).reshape(n, 8, 1)
    dm = (dmin[:, None] * m.float()).reshape(n, 8, 1)
    q = _bits(b[:, 16:144].reshape(n, 4, 32), (0, 4), 0x0F).reshape(n, 8, 32).float()  # low nibbles first
    return (dd * q - dm).reshape(n, QK_K)


def _q5_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, m = _scale_min(b[:, 4:16])
    dd = (d[:, None] * sc.float()).reshape(n, 8, 1)
    dm = (dmin[:, None] * m.float()).reshape(n, 8, 1)
    qh = _bits(b[:, 16:48].reshape(n, 1, 32), tuple(range(8)), 0x01).reshape(n, 8, 32)  # bit j: sub-block j
    ql = _bits(b[:, 48:176].reshape(n, 4, 32), (0, 4), 0x0F).reshape(n, 8, 32)
    q = (ql | (qh << 4)).float()
    return (dd * q - dm).reshape(n, QK_K)


def _q6_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    ql = _bits(b[:, 0:128].reshape(n, 2, 64), (0, 4), 0x0F).reshape(n, 8, 32)
    qh = _bits(b[:, 128:192].reshape(n, 2, 32), (0, 2, 4, 6), 0x03).reshape(n, 8, 32)
    sc = b[:, 192:208].contiguous().view(torch.int8).float()
    d = _f16(b[:, 208:210])
    dd = (d[:, None] * sc).reshape(n, 16, 1)
    q = ((ql | (qh << 4)).view(torch.int8) - 32).reshape(n, 16, 16).float()
    return (dd * q).reshape(n, QK_K)


_DEQUANT = {"Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}


def check_type(gtype: str) -> str:
    if gtype not in BLOCK_BYTES:
        raise ValueError(f"unknown K-quant type {gtype!r}: choose one of {', '.join(TYPES)}")
    return gtype


def dequantize(blocks: torch.Tensor, gtype: str, shape) -> torch.Tensor:
    """Packed K-quant bytes (uint8, any shape holding whole super-blocks) -> float32 tensor of ``shape``."""
    nb = BLOCK_BYTES[check_type(gtype)]
    if blocks.dtype != torch.uint8 or blocks.numel() % nb:
        raise ValueError(f"{gtype} data must be uint8 bytes in whole {nb}-byte blocks, got {blocks.dtype} "
                         f"with {blocks.numel()} values")
    return _DEQUANT[gtype](blocks.reshape(-1, nb)).reshape(shape)


class KQuantLinear(QuantLinear):
    """A Linear whose weight stays in its GGUF K-quant blocks (buffer ``qweight``: uint8 [out, in/256 * bytes]).

    ``kind`` is the GGUF type ("Q4_K", "Q5_K", "Q6_K"); ``in_features`` must be a multiple of 256.
    Forward, ``weight`` and LoRA adapters behave as :class:`openwan.quant.QuantLinear`'s.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, gtype: str,
                 compute_dtype: torch.dtype = torch.float32, device=None, blocks: Optional[torch.Tensor] = None):
        nn.Module.__init__(self)
        self.kind = check_type(gtype)
        if in_features % QK_K:
            raise ValueError(f"a {gtype} layer needs in_features divisible by {QK_K}, got {in_features}")
        self.in_features, self.out_features = in_features, out_features
        self.compute_dtype = compute_dtype
        shape = (out_features, in_features // QK_K * BLOCK_BYTES[gtype])
        if blocks is None:
            blocks = torch.zeros(shape, dtype=torch.uint8, device=device)
        elif blocks.dtype != torch.uint8 or blocks.numel() != shape[0] * shape[1]:
            raise ValueError(f"{gtype} blocks for a {in_features}->{out_features} layer must be {shape[0] * shape[1]} "
                             f"uint8 bytes, got {blocks.numel()} {blocks.dtype}")
        self.register_buffer("qweight", blocks.reshape(shape).to(device) if device is not None else blocks.reshape(shape))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=compute_dtype, device=device),
                                 requires_grad=False) if bias else None
        self.adapters = nn.ModuleDict()
        self.bias_adapters = nn.ModuleDict()

    def set_weight(self, w: torch.Tensor) -> None:
        raise NotImplementedError(f"a {self.kind} layer holds GGUF blocks as read from the file; openwan does not "
                                  f"encode K-quants (quantize float weights with openwan.quant: int8 / fp8)")

    def dequantized(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        w = dequantize(self.qweight, self.kind, (self.out_features, self.in_features))
        return w.to(dtype or self.compute_dtype)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.dequantized()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        w = state_dict.get(prefix + "weight")
        if w is None:
            if strict:
                missing_keys.append(prefix + "weight")
        elif w.dtype == torch.uint8 and w.numel() == self.qweight.numel():
            self.qweight = w.reshape(self.qweight.shape)
        else:
            error_msgs.append(f"{prefix}weight: a {self.kind} layer loads its packed GGUF bytes only, got "
                              f"{w.dtype} {tuple(w.shape)}; load the float checkpoint without the GGUF file")
        self._load_bias(state_dict, prefix, strict, missing_keys)
