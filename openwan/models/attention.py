"""One attention function for every model: torch SDPA by default, flash-attn on CUDA when installed.

Inputs are laid out [B, L, heads, head_dim] (the reference's layout). ``k_lens`` masks the keys
beyond each sample's real length (padding); ``None`` means every key is real. Callers pass ``None``
when nothing is padded (the DiT knows it from the token counts on the host): looking at ``k_lens``
here would need a device-to-host sync (and break a ``torch.compile`` graph).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F

from openwan.runtime import bf16_matmul_in_fp32

try:  # optional, GPU only
    from flash_attn import flash_attn_varlen_func as _flash_varlen  # type: ignore
except Exception:  # noqa: BLE001 - any import failure means "not available"
    _flash_varlen = None

BACKEND = os.environ.get("OPENWAN_ATTENTION", "auto")  # auto | sdpa | flash


def _use_flash(q: torch.Tensor) -> bool:
    if _flash_varlen is None or not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        return False
    return BACKEND in ("auto", "flash")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              k_lens: Optional[torch.Tensor] = None, scale: Optional[float] = None,
              bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v with padded keys masked. q: [B, Lq, N, D], k/v: [B, Lk, N, D].

    ``bias``: an additive per-key term [B, 1, 1, Lk] (log-multiplicities of folded duplicate keys, see
    ``WanModel._context``); not with ``k_lens``. Returns [B, Lq, N, D] in q's dtype.
    """
    lk = k.shape[1]
    if q.dtype == torch.bfloat16 and not torch.is_grad_enabled() and not torch.compiler.is_compiling() \
            and bf16_matmul_in_fp32(q.device):   # see openwan.runtime.bf16_matmul_in_fp32
        return attention(q.float(), k.float(), v.float(), k_lens, scale, bias).to(q.dtype)
    if bias is not None:
        if k_lens is not None:
            raise ValueError("attention takes k_lens or bias, not both")
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=bias.to(q.dtype), scale=scale)
        return out.transpose(1, 2)
    if _use_flash(q):
        return _flash(q, k, v, k_lens, scale)
    mask = None
    if k_lens is not None:
        mask = (torch.arange(lk, device=q.device)[None, :] < k_lens.to(q.device)[:, None])
        mask = mask[:, None, None, :]  # [B, 1, 1, Lk]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask, scale=scale)
    return out.transpose(1, 2)


def _flash(q, k, v, k_lens, scale):  # pragma: no cover - needs CUDA + flash-attn
    b, lq, n, d = q.shape
    lk = k.shape[1]
    q_lens = torch.full((b,), lq, dtype=torch.int32, device=q.device)
    if k_lens is None:
        k_lens = torch.full((b,), lk, dtype=torch.int32, device=q.device)
    k_lens = k_lens.to(device=q.device, dtype=torch.int32)
    kk = torch.cat([k[i, :k_lens[i]] for i in range(b)])
    vv = torch.cat([v[i, :k_lens[i]] for i in range(b)])
    cu_q = F.pad(q_lens.cumsum(0, dtype=torch.int32), (1, 0))
    cu_k = F.pad(k_lens.cumsum(0, dtype=torch.int32), (1, 0))
    out = _flash_varlen(q.reshape(b * lq, n, d), kk, vv, cu_q, cu_k, lq, int(k_lens.max()),
                        softmax_scale=scale)
    return out.view(b, lq, n, d)
