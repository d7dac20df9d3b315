"""The pieces of the Wan DiT (openwan.models.dit reads them top to bottom): linear layers that load any
stored dtype (WanLinear), norms, the sinusoid, 3D RoPE, self/cross attention, the feed-forward, the
transformer block (and VACE's), the head and the CLIP image embedding. Key names are the official ones.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from openwan.configs import DiTConfig
from openwan.models.attention import attention
from openwan.runtime import bf16_matmul_in_fp32

# ----------------------------------------------------------------------------- small pieces

def as_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t.to(dtype)`` (the same tensor when it has that dtype already), without the call when it is a no-op: the
    tiny models' forward is mostly per-op overhead, and most casts in the fp32 path are no-ops."""
    return t if t.dtype == dtype else t.to(dtype)


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:    # a device type autocast does not know (meta): it never autocasts there
        return False


class WanLinear(nn.Linear):
    """A Linear layer that carries its compute dtype: its weight's (``fp32=False``: bf16 weights give a
    bf16 matmul, as under the reference's autocast) or fp32 whatever the storage (``fp32=True``: the
    reference's fp32 islands, autocast or not). Same parameters and state-dict keys as ``nn.Linear``.

    A quantized subclass dequantizes in its own ``forward``. A weight parametrization that offers
    ``linear(x, weight, bias)`` (LoRA, openwan.training.lora) computes the layer in factored form
    while gradients are on, so training never materializes the adapted weight.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, fp32: bool = False,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.fp32 = fp32

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.float32 if self.fp32 else self.weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp32:
            b = None if self.bias is None else as_dtype(self.bias, torch.float32)
            x, w = as_dtype(x, torch.float32), as_dtype(self.weight, torch.float32)
            if not torch.compiler.is_compiling() and not _autocast_on(x.device.type):
                return F.linear(x, w, b)            # (entering the autocast context costs more than the check)
            with torch.autocast(x.device.type, enabled=False):
                return F.linear(x, w, b)
        if torch.is_grad_enabled():
            plist = getattr(self, "parametrizations", None)
            if plist is not None and "weight" in plist and len(plist.weight) == 1 \
                    and hasattr(plist.weight[0], "linear"):
                w = plist.weight.original
                return plist.weight[0].linear(x.to(w.dtype), w, self.bias)
        w = self.weight
        if w.dtype == torch.bfloat16 and not torch.is_grad_enabled() and not torch.compiler.is_compiling() \
                and bf16_matmul_in_fp32(w.device):
            # a bf16 GEMM as fp32 one (exact bf16 products, fp32 sums, output rounded to bf16): faster
            # on CPUs without bf16 matrix units (openwan.runtime.bf16_matmul_in_fp32)
            b = None if self.bias is None else self.bias.float()
            return F.linear(x.to(w.dtype).float(), w.float(), b).to(w.dtype)
        return F.linear(as_dtype(x, w.dtype), w, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", fp32=True" if self.fp32 else "")


_FREQS: dict = {}   # (half, dtype, device) -> the sinusoid's frequencies (a constant: made once)


def _freqs(half: int, dtype: torch.dtype, device) -> torch.Tensor:
    return torch.exp(-math.log(10000.0) * torch.arange(half, dtype=dtype, device=device) / half)


def sinusoid(t: torch.Tensor, dim: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """cat[cos(t w), sin(t w)] with w_i = 10000^(-i/half), i < half (cos first)."""
    half = dim // 2
    if torch.compiler.is_compiling():
        w = _freqs(half, dtype, t.device)
    else:
        key = (half, dtype, t.device)
        w = _FREQS.get(key)
        if w is None:
            with torch.inference_mode(False):   # a plain tensor, usable by autograd later
                w = _freqs(half, dtype, t.device)
            if len(_FREQS) < 16:
                _FREQS[key] = w
    angle = torch.outer(t.to(dtype), w)
    return torch.cat([torch.cos(angle), torch.sin(angle)], dim=1)


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 (weight key: ``weight``)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        w = self.weight
        if x.dtype == w.dtype == torch.float32 and x.device.type == "cpu" and not torch.is_grad_enabled() \
                and not torch.compiler.is_compiling():
            # fp32 on the CPU: torch's rms_norm computes these same ops in this order (one call instead of six;
            # bit for bit, tested: tests/test_fast_paths.py)
            return F.rms_norm(x, (x.shape[-1],), w, self.eps)
        xf = as_dtype(x, torch.float32)
        y = as_dtype(xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps), x.dtype)
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return y * as_dtype(self.weight, x.dtype)
        return y.mul_(as_dtype(self.weight, x.dtype))   # y is this call's own temporary: scaled in place


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in fp32, returning fp32 (the residual stream's dtype)."""

    def forward(self, x):
        w = None if self.weight is None else as_dtype(self.weight, torch.float32)
        b = None if self.bias is None else as_dtype(self.bias, torch.float32)
        return F.layer_norm(as_dtype(x, torch.float32), self.normalized_shape, w, b, self.eps)


def _normal(*shape: int, div: float) -> torch.Tensor:
    """torch.randn(shape) / div (the same numbers), but nothing drawn on the meta device: a model built there
    to be loaded would otherwise pull in torch's meta kernels for randn (sympy and torch._dynamo: ~1.3 s and
    70 MB at start-up)."""
    t = torch.empty(*shape)
    return t if t.is_meta else t.normal_().div_(div)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift, in one pass over x (scale and shift are per sample or per token)."""
    return torch.addcmul(shift, x, 1 + scale)


# ----------------------------------------------------------------------------- 3D RoPE

def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Real dims given to the (frame, height, width) axes: d - 4*(d//6), 2*(d//6), 2*(d//6)."""
    s = head_dim // 6
    return head_dim - 4 * s, 2 * s, 2 * s


def rope_angles(grid: Sequence[int], head_dim: int, theta: float = 10000.0,
                device=None, riflex: Optional[tuple] = None) -> torch.Tensor:
    """Angles [f*h*w, head_dim/2] (float64) for a token grid, frame slowest (f, h, w row-major).

    ``riflex`` = (k, frames): RIFLEx (Zhao et al. 2025, "A free lunch for length extrapolation in video diffusion
    transformers"): the frame axis's k-th frequency (1-based), the one whose period the model learned as a clip's
    length, lowered to 0.9 x 2 pi / frames, so that one call over ``frames`` latent frames stays within one
    period of it (no repetition) while every other frequency is as trained."""
    f, h, w = grid
    out = []
    for i, (n, a) in enumerate(zip((f, h, w), rope_axis_dims(head_dim))):
        freqs = 1.0 / torch.pow(theta, torch.arange(0, a, 2, dtype=torch.float64, device=device) / a)
        if i == 0 and riflex is not None:
            k, frames = riflex
            freqs[k - 1] = 0.9 * 2 * math.pi / frames
        out.append(torch.outer(torch.arange(n, dtype=torch.float64, device=device), freqs))
    af, ah, aw = out
    angles = torch.cat([af[:, None, None, :].expand(f, h, w, -1),
                        ah[None, :, None, :].expand(f, h, w, -1),
                        aw[None, None, :, :].expand(f, h, w, -1)], dim=-1)
    return angles.reshape(f * h * w, -1)


def riflex_index(head_dim: int, native_frames: int, theta: float = 10000.0) -> int:
    """RIFLEx's frequency (1-based, on the frame axis) for a model trained on clips of ``native_frames`` latent
    frames: the first whose period exceeds twice that length, where a one-call video starts to repeat (Wan 2.1 /
    2.2: 6, the index the Wan ports use, period 51 latent frames against their 21; the embedded demo: 2, period 29
    against its 9)."""
    a = rope_axis_dims(head_dim)[0]
    periods = [2 * math.pi * theta ** (j / a) for j in range(0, a, 2)]
    for k, period in enumerate(periods, start=1):
        if period > 2 * native_frames:
            return k
    return len(periods)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (x[2j], x[2j+1]) of x [B, L, N, D] by the angles.

    cos/sin: [B, L, 1, D/2] in the compute dtype; positions past a sample's length carry angle 0
    (cos 1, sin 0), so padding tokens pass through unrotated.
    """
    xr = as_dtype(x, cos.dtype).unflatten(-1, (-1, 2))
    x0, x1 = xr[..., 0], xr[..., 1]
    if (torch.is_grad_enabled() and x.requires_grad) or torch.compiler.is_compiling():
        # training, or traced by torch.compile (which fuses it): the plain form (the same values)
        # (addcmul, as below: the same kernels, so the same values bit for bit)
        return torch.stack([torch.addcmul(x0 * cos, x1, sin, value=-1), torch.addcmul(x0 * sin, x1, cos)],
                           dim=-1).flatten(-2).to(x.dtype)
    out = torch.empty_like(xr)  # eager inference, written in place: fewer full-size temporaries
    o0, o1 = out[..., 0], out[..., 1]
    torch.mul(x0, cos, out=o0).addcmul_(x1, sin, value=-1)   # x0 cos - x1 sin
    torch.mul(x0, sin, out=o1).addcmul_(x1, cos)             # x0 sin + x1 cos
    return as_dtype(out.flatten(-2), x.dtype)


# ----------------------------------------------------------------------------- attention layers

class SelfAttention(nn.Module):
    """Self-attention over the video tokens (q/k RMSNorm, 3D RoPE).

    ``attn_fn(q, k, v, k_lens)`` is a slot: ``None`` is :func:`openwan.models.attention.attention`;
    sequence parallel puts its all-to-all attention there (and ``sp``), sparse or quantized
    attention can go there too.
    """

    is_self_attention = True  # the layers whose attn_fn sees the whole (sequence-parallel) token sequence

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.q = WanLinear(dim, dim)
        self.k = WanLinear(dim, dim)
        self.v = WanLinear(dim, dim)
        self.o = WanLinear(dim, dim)
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.attn_fn: Optional[Callable] = None
        self.sp = None  # set with attn_fn by openwan.parallel (x holds this process's tokens)

    def forward(self, x, seq_lens, rope):
        n = self.num_heads
        q = self.norm_q(self.q(x)).unflatten(-1, (n, -1))
        k = self.norm_k(self.k(x)).unflatten(-1, (n, -1))
        v = self.v(x).unflatten(-1, (n, -1))
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = (self.attn_fn or attention)(q, k, v, seq_lens)
        return self.o(y.flatten(2))


class CrossAttention(SelfAttention):
    """Text cross-attention (the same projections as self-attention, no RoPE); with ``image=True``
    (i2v/flf2v) a second attention over image tokens.

    In the image case the context is [image tokens, text tokens] and the two attention outputs
    are summed before the output projection. ``ctx_bias`` [B, 1, 1, Lt] (from :meth:`WanModel._context`):
    log-multiplicities of the text tokens when the zero padding rows are folded into a few (None: the
    text holds all ``text_len`` rows); with it the text attention runs in fp32.
    """

    is_self_attention = False  # the context is not split over processes: plain attention

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6,
                 image: bool = False, text_len: int = 512):
        super().__init__(dim, num_heads, qk_norm, eps)
        self.text_len = text_len
        self.image = image
        if image:
            self.k_img = WanLinear(dim, dim)
            self.v_img = WanLinear(dim, dim)
            self.norm_k_img = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def kv_modules(self) -> tuple:
        """The layers that make the keys and values from the context (their weights key the cached ones)."""
        if self.image:
            return self.k, self.v, self.norm_k, self.k_img, self.v_img, self.norm_k_img
        return self.k, self.v, self.norm_k

    def kv(self, context, ctx_bias=None) -> tuple:
        """Keys and values of the context: (k, v) of the text rows [B, Lt, N, D] (fp32 when ``ctx_bias`` is
        given) and (k_img, v_img) of the image rows (None without image input). They depend on the context
        alone, so a generation computes them once (openwan.models.context_cache)."""
        n = self.num_heads
        ki = vi = img = None
        if self.image:
            lt = self.text_len if ctx_bias is None else ctx_bias.shape[-1]
            img, context = context[:, :-lt], context[:, -lt:]
        k = self.norm_k(self.k(context)).unflatten(-1, (n, -1))
        v = self.v(context).unflatten(-1, (n, -1))
        if ctx_bias is not None:    # fp32 logits: the bias must not be rounded to bf16
            k, v = k.float(), v.float()
        if img is not None:
            ki = self.norm_k_img(self.k_img(img)).unflatten(-1, (n, -1))
            vi = self.v_img(img).unflatten(-1, (n, -1))
        return k, v, ki, vi

    def forward(self, x, context, ctx_bias=None, kv_slot=None):
        """``kv_slot``: this block's :class:`~openwan.models.context_cache.Slot` (inference): its keys and values
        when the weights are unchanged, else computed and kept there."""
        n = self.num_heads
        q = self.norm_q(self.q(x)).unflatten(-1, (n, -1))
        kv = None if kv_slot is None else kv_slot.get(self)
        if kv is None:
            kv = self.kv(context, ctx_bias)
            if kv_slot is not None:
                kv_slot.put(kv)
        k, v, ki, vi = kv
        y = attention(q, k, v) if ctx_bias is None else attention(q.float(), k, v, bias=ctx_bias).to(q.dtype)
        if self.image:
            y = y + attention(q, ki, vi)
        return self.o(y.flatten(2))


class FeedForward(nn.Sequential):
    """Linear, GELU(tanh), Linear. Long sequences run in token chunks, so the ffn_dim-wide
    intermediate (the largest activation of the model) never exists for the whole sequence."""

    chunk_tokens = 2048

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__(WanLinear(dim, ffn_dim), nn.GELU(approximate="tanh"), WanLinear(ffn_dim, dim))

    def _ffn(self, x):
        h = self[0](x)
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or not isinstance(self[1], nn.GELU):
            return self[2](self[1](h))
        return self[2](torch.ops.aten.gelu_(h, approximate=self[1].approximate))  # in place: one ffn_dim-wide buffer

    def forward(self, x):
        n = self.chunk_tokens
        if not n or x.shape[1] <= n or torch.is_grad_enabled():
            return self._ffn(x)
        return torch.cat([self._ffn(c) for c in x.split(n, dim=1)], dim=1)


# ----------------------------------------------------------------------------- the block

class TokenRows:
    """A per-token tensor [B, L, *rest] kept as its distinct rows: ``rows`` [U, *rest] and each token's row, ``index``
    [B, L] (long). Per-token timesteps take a few values (Wan 2.2 TI2V: 0 on the given frames, t on the rest), so
    the per-token modulation e0 [B, L, 6, dim] (six times the residual stream, fp32) is U rows; a block makes each
    [B, L, dim] it needs where it uses it (:func:`token_mod`). Inference only: training keeps the full tensor."""
    __slots__ = ("rows", "index")

    def __init__(self, rows: torch.Tensor, index: torch.Tensor):
        self.rows, self.index = rows, index

    @property
    def shape(self) -> tuple:
        return (*self.index.shape, *self.rows.shape[1:])

    def full(self) -> torch.Tensor:
        return self.rows[self.index]                                  # [B, L, *rest]

    def split(self, sp) -> "TokenRows":
        """This process's tokens under sequence parallel (padding tokens take row 0; they are dropped)."""
        return TokenRows(self.rows, sp.split(self.index))


def token_mod(m: torch.Tensor, e0, i: int) -> torch.Tensor:
    """Modulation component ``i`` [B, 1 or L, dim]: the table's ``m[:, i]`` ([1, K, dim]) plus e0's ([B, 1 or L, K,
    dim], or :class:`TokenRows` of [U, K, dim]: the same sums, made on the U rows, then one per token)."""
    if isinstance(e0, TokenRows):
        return (m[0, i] + e0.rows[:, i])[e0.index]
    return m[:, None, i] + e0[:, :, i]


class WanBlock(nn.Module):
    """One DiT block: modulated self-attention, text (+image) cross-attention, modulated FFN."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        dim = cfg.dim
        self.norm1 = LayerNorm32(dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.norm3 = LayerNorm32(dim, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps,
                                         image=cfg.has_image_input, text_len=cfg.text_len)
        self.norm2 = LayerNorm32(dim, cfg.eps, elementwise_affine=False)
        self.ffn = FeedForward(dim, cfg.ffn_dim)
        self.modulation = nn.Parameter(_normal(1, 6, dim, div=dim ** 0.5))

    def forward(self, x, e0, context, seq_lens, rope, ctx_bias=None, kv_slot=None):
        # modulation [1, 6, dim] + e0 [B, 1 or L, 6, dim] -> six [B, 1 or L, dim] (shift1, scale1, gate1,
        # shift2, scale2, gate2). One per sample: all six in one add. Per token at inference: each made where it
        # is used, so two [B, L, dim] live at a time, not six (the same sums either way); in training backward
        # needs all six anyway, and e0[:, :, i]'s backward would fill a zero e0-sized gradient per use
        m = as_dtype(self.modulation, torch.float32)
        if isinstance(e0, TokenRows) and torch.is_grad_enabled():
            e0 = e0.full()
        if e0.shape[1] == 1 or torch.is_grad_enabled():  # training keeps all six for backward anyway
            six = (m[:, None] + e0).unbind(2)

            def mod(i):
                return six[i]
        else:
            def mod(i):
                return token_mod(m, e0, i)

        y = self.self_attn(modulate(self.norm1(x), mod(0), mod(1)), seq_lens, rope)
        x = torch.addcmul(x, as_dtype(y, torch.float32), mod(2))          # x + y * gate1, one pass
        x = x + as_dtype(self.cross_attn(as_dtype(self.norm3(x), torch.float32), context, ctx_bias, kv_slot),
                         torch.float32)
        y = self.ffn(modulate(self.norm2(x), mod(3), mod(4)))
        return torch.addcmul(x, as_dtype(y, torch.float32), mod(5))       # x + y * gate2


class VaceBlock(WanBlock):
    """A VACE block: a DiT block over the control stream c, with in/out projections.

    The first VACE block adds ``before_proj(c)`` to the main stream's patch tokens; every VACE
    block emits a hint ``after_proj(c)`` that is added to the output of one main block.
    """

    def __init__(self, cfg: DiTConfig, index: int):
        super().__init__(cfg)
        if index == 0:
            self.before_proj = WanLinear(cfg.dim, cfg.dim, fp32=True)
        self.after_proj = WanLinear(cfg.dim, cfg.dim, fp32=True)

    def forward(self, c, x, e0, context, seq_lens, rope, ctx_bias=None, kv_slot=None):
        if hasattr(self, "before_proj"):
            c = self.before_proj(c) + x
        c = super().forward(c, e0, context, seq_lens, rope, ctx_bias, kv_slot)
        return c, self.after_proj(c)


class Head(nn.Module):
    def __init__(self, dim: int, out_dim: int, patch_size, eps: float):
        super().__init__()
        self.norm = LayerNorm32(dim, eps, elementwise_affine=False)
        self.head = WanLinear(dim, math.prod(patch_size) * out_dim, fp32=True)
        self.modulation = nn.Parameter(_normal(1, 2, dim, div=dim ** 0.5))

    def forward(self, x, e):
        m = as_dtype(self.modulation, torch.float32)
        if isinstance(e, TokenRows):                                # per token, as distinct rows [U, dim]
            shift, scale = ((m[0, i] + e.rows)[e.index] for i in (0, 1))
        else:
            shift, scale = (m[:, None] + e[:, :, None]).unbind(2)  # [B, 1 or L, dim] each
        return self.head(modulate(self.norm(x), shift, scale))


class ImageEmbedding(nn.Module):
    """CLIP features -> DiT width: LayerNorm, Linear, GELU, Linear, LayerNorm (keys img_emb.proj.{0,1,3,4}).

    flf2v adds a learned position embedding ``emb_pos`` over the two images' 2x257 tokens.
    """

    def __init__(self, in_dim: int, dim: int, flf_tokens: Optional[int] = None):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), WanLinear(in_dim, in_dim, fp32=True), nn.GELU(),
                                  WanLinear(in_dim, dim, fp32=True), nn.LayerNorm(dim))
        if flf_tokens:
            self.emb_pos = nn.Parameter(torch.zeros(1, flf_tokens, in_dim))

    def forward(self, clip_fea):
        x = clip_fea.float()
        if hasattr(self, "emb_pos"):
            b = x.shape[0] * x.shape[1] // self.emb_pos.shape[1]
            x = x.reshape(b, self.emb_pos.shape[1], -1) + self.emb_pos.float()
        p = self.proj
        x = F.layer_norm(x, p[0].normalized_shape, p[0].weight.float(), p[0].bias.float(), p[0].eps)
        x = p[3](p[2](p[1](x)))
        return F.layer_norm(x, p[4].normalized_shape, p[4].weight.float(), p[4].bias.float(), p[4].eps)
