"""umT5 encoder network: openwan's own, with transformers' ``UMT5EncoderModel`` module and parameter names.

The text encoder (:mod:`openwan.models.text_encoder`) runs this module so that encoding a prompt does
not import the ``transformers`` package (about 3 s of the demo's start-up on a 2-core CPU: it pulls in
``torch._dynamo`` and sympy). The math is the reference's umT5 encoder, written op for op as
transformers computes it (its SDPA path), so outputs are equal to ``UMT5EncoderModel``'s
(tests/test_text_encoder.py compares them; transformers stays the reference there):

    x = embed(ids)
    per block:  x = x + o(attn(rms1(x)))      attention: no 1/sqrt(d) scaling, a relative-position bias
                                              of ``num_buckets`` buckets up to ``max_dist`` (own table
                                              per layer), padded keys masked
                x = x + wo(gelu_tanh(wi_0(h)) * wi_1(h)),  h = rms2(x)
    out = rms_final(x)

The state dict is transformers' (``shared.weight``, ``encoder.block.N.layer.0.SelfAttention.q.weight``,
..., ``encoder.final_layer_norm.weight``), so every key map, quantizer and block swap that worked on
``UMT5EncoderModel`` works on this module unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from openwan.configs import TextEncoderConfig


@dataclass
class EncoderOutput:
    """What ``UMT5EncoderModel(...)`` returns, reduced to the one field the pipeline reads."""
    last_hidden_state: torch.Tensor


class RMSNorm(nn.Module):
    """T5 layer norm: scale only, no mean subtraction, the variance in fp32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.variance_epsilon)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The tanh GELU written out as transformers' ``gelu_new`` computes it (same rounding)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def relative_bucket(relative_position: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bidirectional T5 bucket of ``key - query``: half the buckets per sign, exact below
    ``num_buckets // 4``, log-spaced up to ``max_distance``, the last bucket beyond."""
    num_buckets //= 2
    buckets = (relative_position > 0).to(torch.long) * num_buckets
    relative_position = torch.abs(relative_position)
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    log_ratio = torch.log(relative_position.float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(is_small, relative_position, large)


def embedding(n: int, dim: int) -> nn.Embedding:
    """An embedding table left uninitialised: ``normal_`` on the meta device (where checkpoints are
    loaded) would import ``torch._dynamo`` and sympy (over a second of start-up)."""
    return nn.Embedding(n, dim, _weight=torch.empty(n, dim))


class SelfAttention(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.num_heads, cfg.dim_attn // cfg.num_heads
        self.num_buckets, self.max_dist = cfg.num_buckets, cfg.max_dist
        self.q = nn.Linear(cfg.dim, cfg.dim_attn, bias=False)
        self.k = nn.Linear(cfg.dim, cfg.dim_attn, bias=False)
        self.v = nn.Linear(cfg.dim, cfg.dim_attn, bias=False)
        self.o = nn.Linear(cfg.dim_attn, cfg.dim, bias=False)
        self.relative_attention_bias = embedding(cfg.num_buckets, cfg.num_heads)

    def position_bias(self, length: int, device) -> torch.Tensor:
        pos = torch.arange(length, dtype=torch.long, device=device)
        bucket = relative_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_dist)
        return self.relative_attention_bias(bucket).permute([2, 0, 1]).unsqueeze(0)   # [1, H, L, L]

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n = x.shape[:2]
        q, k, v = (p(x).view(b, -1, self.n_heads, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v))
        bias = self.position_bias(n, x.device)
        # padded keys get the dtype's lowest value (what transformers adds), real keys the bias
        mask = torch.where(keep, bias, torch.finfo(k.dtype).min).contiguous()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=1.0)
        out = out.transpose(1, 2).contiguous().reshape(b, n, -1).contiguous()
        return self.o(out)


class LayerSelfAttention(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.SelfAttention = SelfAttention(cfg)
        self.layer_norm = RMSNorm(cfg.dim, cfg.eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return x + self.SelfAttention(self.layer_norm(x), keep)


class GatedFFN(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.wi_0 = nn.Linear(cfg.dim, cfg.dim_ffn, bias=False)
        self.wi_1 = nn.Linear(cfg.dim, cfg.dim_ffn, bias=False)
        self.wo = nn.Linear(cfg.dim_ffn, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = gelu_tanh(self.wi_0(x)) * self.wi_1(x)
        if isinstance(self.wo.weight, torch.Tensor) and h.dtype != self.wo.weight.dtype \
                and self.wo.weight.dtype != torch.int8:
            h = h.to(self.wo.weight.dtype)
        return self.wo(h)


class LayerFF(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.DenseReluDense = GatedFFN(cfg)
        self.layer_norm = RMSNorm(cfg.dim, cfg.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


class Block(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.layer = nn.ModuleList([LayerSelfAttention(cfg), LayerFF(cfg)])

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.layer[0](x, keep)
        if x.dtype == torch.float16:   # transformers' fp16 overflow guard, kept for equal outputs
            big = torch.finfo(x.dtype).max
            limit = torch.where(torch.isinf(x).any(), big - 1000, big)
            x = torch.clamp(x, min=-limit, max=limit)
        x = self.layer[1](x)
        if x.dtype == torch.float16:
            big = torch.finfo(x.dtype).max
            limit = torch.where(torch.isinf(x).any(), big - 1000, big)
            x = torch.clamp(x, min=-limit, max=limit)
        return x


class Stack(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.embed_tokens = embedding(cfg.vocab, cfg.dim)
        self.block = nn.ModuleList([Block(cfg) for _ in range(cfg.num_layers)])
        self.final_layer_norm = RMSNorm(cfg.dim, cfg.eps)


class UMT5Encoder(nn.Module):
    """``UMT5Encoder(cfg)(input_ids=, attention_mask=).last_hidden_state``: [B, L, dim].

    Parameters are not initialised (the embeddings are left empty, the norms are ones, the linear
    layers have torch's default init): weights come from a checkpoint, or for a random encoder from
    transformers' ``UMT5EncoderModel`` (what :class:`openwan.models.text_encoder.TextEncoder` does).
    """

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        if cfg.dim_attn % cfg.num_heads:
            raise ValueError(f"text encoder dim_attn {cfg.dim_attn} is not divisible by num_heads {cfg.num_heads}")
        self.config = cfg
        self.shared = embedding(cfg.vocab, cfg.dim)
        self.encoder = Stack(cfg)
        self.encoder.embed_tokens.weight = self.shared.weight   # tied, as in transformers

    def tie(self) -> "UMT5Encoder":
        """Tie the encoder's embedding to ``shared`` again (after ``load_state_dict(assign=True)``)."""
        self.encoder.embed_tokens.weight = self.shared.weight
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        x = self.shared(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keep = attention_mask.to(torch.bool)[:, None, None, :]       # [B, 1, 1, L]: True = a real key
        for block in self.encoder.block:
            x = block(x, keep)
        return EncoderOutput(self.encoder.final_layer_norm(x))
