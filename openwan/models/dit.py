"""The Wan 2.1 / 2.2 diffusion transformer (DiT), read top to bottom like the paper's Figure.

    video latent x [B, C, F, H, W]  --patch_embedding (Conv3d, stride (1,2,2))-->  tokens [B, L, dim]
    timestep t [B] (or [B, L]: one per token, Wan 2.2 TI2V)  --sinusoid(256, float64)--> time_embedding
        --> e [B, 1 or L, dim] --> time_projection --> e0 [B, 1 or L, 6, dim]   (per token at inference:
        kept as one row per distinct timestep, taken per token where a block uses it: TokenRows)
    text  [B, <=512, 4096] --zero-pad to 512--> text_embedding --> context [B, 512, dim]
    (2.1 i2v / flf2v) CLIP features [B, 257 or 514, 1280] --img_emb--> prepended to the context
    N x block:  x += gate1 * self_attn(mod(norm1(x), shift1, scale1))      (q/k RMSNorm, 3D RoPE)
                x += cross_attn(norm3(x), context)                         (text, + image for 2.1 i2v)
                x += gate2 * ffn(mod(norm2(x), shift2, scale2))
    (vace) hints from the VACE blocks are added after the listed main blocks
    head: mod(norm(x), e) --> Linear --> unpatchify --> [B, out_dim, F, H, W]

The pieces (linear layers, norms, RoPE, attention, blocks, head) are in :mod:`openwan.models.dit_layers`.

``forward`` = ``run_head(run_blocks(embed(...)))``: :meth:`WanModel.embed` returns a :class:`State`
(tokens, e, e0, context, RoPE, lengths, grids), so a step cache can compare ``e0`` and reuse the
blocks' residual, and a wrapper can call the three parts on its own.

State-dict keys and shapes are exactly the official ones, so an official checkpoint loads with
``strict=True``. Numerics follow the reference: the sinusoid and RoPE angles in float64, norms, modulation,
the residual stream, time embedding and head in fp32 (``WanLinear(fp32=True)``); when the weights
are bf16 the other linear layers (and attention) run in bf16, as under the reference's autocast.

Sequence parallel inference (``openwan.parallel``) splits the tokens over processes: it sets
``self.sp`` on the model (an object with ``split(x)`` / ``gather(x, n)``) and the attention function
``attn_fn`` of the self-attention layers; this file imports nothing from ``openwan.parallel``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from openwan.checkpoints import load_dit, save_dit
from openwan.configs import DiTConfig
from openwan.models.context_cache import ContextCache, Entry
from openwan.models.dit_layers import (  # noqa: F401  (the pieces, importable from here as before)
    CrossAttention, FeedForward, Head, ImageEmbedding, LayerNorm32, RMSNorm, SelfAttention, TokenRows, VaceBlock,
    WanBlock, WanLinear, apply_rope, as_dtype, modulate, riflex_index, rope_angles, rope_axis_dims, sinusoid)

TensorOrList = Union[torch.Tensor, Sequence[torch.Tensor]]


# ----------------------------------------------------------------------------- the model

@dataclass
class State:
    """What flows between :meth:`WanModel.embed`, :meth:`WanModel.run_blocks` and :meth:`WanModel.run_head`.

    Under sequence parallel, token tensors hold this process's slice (L/P tokens, padded).
    """
    x: torch.Tensor                      # tokens [B, L, dim], fp32 residual stream
    e: torch.Tensor                      # time embedding [B, 1 or L, dim] (head modulation); TokenRows per token
    e0: torch.Tensor                     # time projection [B, 1 or L, 6, dim] (block modulation); TokenRows per token
    ctx: torch.Tensor                    # (image +) text context [B, Lc, dim], text rows folded (see _context)
    rope: tuple                          # (cos, sin) [B, L, 1, head_dim/2]
    seq_lens: Optional[torch.Tensor]     # [B] real tokens per sample (keys past them are masked); None: no padding
    grids: list                          # per sample (f, h, w) token grid
    n: int                               # tokens per sample before sequence-parallel padding (longest sample)
    hints: Optional[list] = None         # VACE: one [B, L, dim] hint per VACE block
    ctx_bias: Optional[torch.Tensor] = None  # [B, 1, 1, Lt] log-multiplicity of the text rows; None: not folded
    vace_context_scale: float = 1.0
    as_list: bool = False                # the input x was a list: return a list
    kv: Optional[Entry] = None           # inference: the context cache entry (per-block cross-attention k/v)

    def with_x(self, x: torch.Tensor) -> "State":
        """A copy with other tokens (``dataclasses.replace(self, x=x)``, without its per-call field inspection)."""
        new = object.__new__(State)
        new.__dict__.update(self.__dict__)
        new.x = x
        return new


def distinct_rows(t: torch.Tensor, *per_token: torch.Tensor) -> tuple:
    """Per-token embeddings ([B*L, ...] rows, computed one per token as the reference does) kept as
    :class:`TokenRows`: the row of each distinct timestep's first token, and every token's row. A timestep takes
    one or two values (Wan 2.2 TI2V: 0 on the given frames), so the blocks' e0 is a few rows instead of
    [B, L, 6, dim]; the rows are the computed ones, so every token's values are exactly as before."""
    _, index = torch.unique(t, return_inverse=True)                        # [B, L] -> row of its value
    flat = index.flatten()
    order = torch.arange(flat.numel(), device=flat.device)
    first = torch.full((int(flat.max()) + 1,), flat.numel(), dtype=torch.long, device=flat.device)
    first = first.scatter_reduce(0, flat, order, reduce="amin")           # each value's first token
    return tuple(TokenRows(v[first], index) for v in per_token)


class WanModel(nn.Module):
    """The Wan 2.1 DiT for every variant (t2v, i2v, flf2v, vace), official key layout."""

    accepts_ctx_cache = True   # forward / embed take ctx_cache= (openwan.models.context_cache; Denoiser passes one)

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = cfg = config
        dim = cfg.dim
        self.patch_size = tuple(cfg.patch_size)
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.text_embedding = nn.Sequential(WanLinear(cfg.text_dim, dim), nn.GELU(approximate="tanh"),
                                            WanLinear(dim, dim))
        self.time_embedding = nn.Sequential(WanLinear(cfg.freq_dim, dim, fp32=True), nn.SiLU(),
                                            WanLinear(dim, dim, fp32=True))
        self.time_projection = nn.Sequential(nn.SiLU(), WanLinear(dim, dim * 6, fp32=True))
        self.blocks = nn.ModuleList([WanBlock(cfg) for _ in range(cfg.num_layers)])
        self.head = Head(dim, cfg.out_dim, self.patch_size, cfg.eps)
        if cfg.has_image_input:
            self.img_emb = ImageEmbedding(cfg.image_dim, dim, 514 if cfg.model_type == "flf2v" else None)
        if cfg.is_vace:
            bad = [i for i in cfg.vace_layers if not 0 <= i < cfg.num_layers]
            if bad:
                raise ValueError(f"vace_layers {bad} out of range for num_layers={cfg.num_layers}")
            self.vace_patch_embedding = nn.Conv3d(cfg.vace_in_dim, dim, kernel_size=self.patch_size,
                                                  stride=self.patch_size)
            self.vace_blocks = nn.ModuleList([VaceBlock(cfg, j) for j in range(len(cfg.vace_layers))])
            self._hint_of_block = {b: j for j, b in enumerate(cfg.vace_layers)}
        # Numerics switches. The sinusoid is float64 as in the reference (diffusers: fp32). RoPE: the angles
        # and their cos/sin are computed in float64 and stored correctly rounded in rope_dtype, the rotation
        # runs in it; the reference rotates in float64 (complex128), which costs ~4% of a forward for a
        # difference at fp32 rounding (rope_dtype = torch.float64 restores it).
        self.sinusoid_dtype = torch.float64
        self.rope_dtype = torch.float32
        self.sp = None  # openwan.parallel.enable_sequence_parallel: tokens split over processes
        self.gradient_checkpointing = False
        self._rope_cache: dict = {}  # (grid, head_dim, device, dtype) -> (cos, sin)

    # --------------------------------------------------------------- inputs to tokens

    def _embed(self, conv: nn.Conv3d, xs: TensorOrList):
        """Patch-embed each sample, flatten to tokens, pad to the longest: ([B, L, dim], lens (ints), grids)."""
        toks, grids = [], []
        # a batch expanded from one sample (stride 0: batched CFG's [x, x]) is embedded once
        same = torch.is_tensor(xs) and len(xs) > 1 and xs.stride(0) == 0
        for i in range(1 if same else len(xs)):  # one sample per call: the same numerics for a batch and a list
            xi = xs[i:i + 1] if torch.is_tensor(xs) else xs[i][None]    # [1, C, F, H, W]
            u = F.conv3d(as_dtype(xi, conv.weight.dtype), conv.weight, conv.bias, stride=conv.stride)
            grids.append(tuple(u.shape[2:]))
            toks.append(as_dtype(u.flatten(2).transpose(1, 2)[0], torch.float32))
        if same:
            toks, grids = toks * len(xs), grids * len(xs)
        lens = [t.shape[0] for t in toks]
        n = max(lens)
        x = torch.stack([t if t.shape[0] == n else F.pad(t, (0, 0, 0, n - t.shape[0])) for t in toks])
        return x, lens, grids

    def _rope_table(self, grid, device, riflex=None):
        """cos, sin [f*h*w, 1, head_dim/2] for one token grid: computed in float64 once, then cached."""
        if torch.compiler.is_compiling():
            return self._make_rope_table(grid, device, riflex)
        key = (tuple(grid), self.config.head_dim, str(device), self.rope_dtype, riflex)
        table = self._rope_cache.get(key)
        if table is None:
            with torch.inference_mode(False):   # plain tensors: a table made while sampling serves training too
                table = self._make_rope_table(grid, device, riflex)
            if len(self._rope_cache) >= 8:      # a server sees few sizes; bound it anyway
                self._rope_cache.pop(next(iter(self._rope_cache)))
            self._rope_cache[key] = table
        return table

    def _make_rope_table(self, grid, device, riflex=None):
        ang = rope_angles(grid, self.config.head_dim, device=device, riflex=riflex)[:, None, :]
        return ang.cos().to(self.rope_dtype), ang.sin().to(self.rope_dtype)

    def _rope(self, grids, n, device, riflex=None):
        """cos/sin [B, n, 1, head_dim/2]; zero angle (cos 1, sin 0: identity) on padding tokens."""
        if all(g == grids[0] for g in grids) and math.prod(grids[0]) == n:
            cos, sin = self._rope_table(grids[0], device, riflex)
            return cos.expand(len(grids), *cos.shape), sin.expand(len(grids), *sin.shape)
        tables = [self._rope_table(g, device, riflex) for g in grids]
        pad = [(0, 0, 0, 0, 0, n - c.shape[0]) for c, _ in tables]
        return (torch.stack([F.pad(c, p, value=1.0) for (c, _), p in zip(tables, pad)]),
                torch.stack([F.pad(s, p) for (_, s), p in zip(tables, pad)]))

    def _context(self, context: TensorOrList) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Text features zero-padded to text_len, through text_embedding: (context [B, Lt, dim], bias).

        The reference pads every prompt with zero rows to text_len (512) tokens and attends over all of
        them. The padding rows are identical (the embedding of zeros, so identical keys and values), and
        m identical keys weigh in a softmax as one key with m added to its weight: log(m) added to its
        logit. So the rows are padded only to ``Lt = min(longest + 1, text_len)`` and ``bias`` [B, 1, 1, Lt]
        gives each sample's zero rows log(its padding count / its zero rows): the same attention, up to
        float rounding, with a fraction of the keys (a 64-token prompt: 65 instead of 512). ``bias`` is
        None when nothing is folded (Lt = text_len).
        """
        L = self.config.text_len
        lens = [context.shape[1]] * context.shape[0] if torch.is_tensor(context) else [c.shape[0] for c in context]
        if max(lens) > L:
            raise ValueError(f"text context has {max(lens)} tokens, more than text_len={L}")
        rows = min(max(lens) + 1, L)
        if torch.is_tensor(context):
            c = F.pad(context.float(), (0, 0, 0, rows - context.shape[1]))
        else:
            c = torch.stack([F.pad(c.float(), (0, 0, 0, rows - c.shape[0])) for c in context])
        te = self.text_embedding
        ctx = te[2](te[1](te[0](c))).float()
        if rows == L:
            return ctx, None
        bias = torch.zeros(len(lens), 1, 1, rows, device=ctx.device)
        for i, n in enumerate(lens):    # sample i: n real rows, rows - n zero rows standing for L - n
            if n < rows:
                bias[i, ..., n:] = math.log((L - n) / (rows - n))
        return ctx, bias

    def _check_inputs(self, xs, clip_fea, y, vace_context):
        cfg = self.config
        def channels(v):    # a sample: [C, F, H, W] (a batch tensor: no per-sample view needed)
            return v.shape[1] if torch.is_tensor(v) else v[0].shape[0]
        c_in = channels(xs) + (channels(y) if y is not None else 0)
        if c_in != cfg.in_dim:
            raise ValueError(f"the DiT expects {cfg.in_dim} input channels (x{' + y' if y is not None else ''}), "
                             f"got {c_in}" + (" (i2v/flf2v need y: mask 4 + image latent 16 channels)"
                                              if cfg.has_image_input and y is None else ""))
        if cfg.has_image_input and clip_fea is None:
            raise ValueError(f"a {cfg.model_type} model needs clip_fea (CLIP image features)")
        if cfg.is_vace and vace_context is None:
            raise ValueError("a VACE model needs vace_context (96-channel control latent)")
        pf, ph, pw = self.patch_size
        for size in ([tuple(xs.shape[2:])] if torch.is_tensor(xs) else [tuple(u.shape[1:]) for u in xs]):
            if size[0] % pf or size[1] % ph or size[2] % pw:
                raise ValueError(f"latent size {size} is not divisible by the patch {self.patch_size}")

    # --------------------------------------------------------------- forward

    def forward(self, x: TensorOrList, t: torch.Tensor, context: TensorOrList, *,
                clip_fea: Optional[torch.Tensor] = None, y: Optional[TensorOrList] = None,
                vace_context: Optional[TensorOrList] = None, vace_context_scale: float = 1.0,
                ctx_cache: Optional[ContextCache] = None, riflex: Optional[tuple] = None):
        """Predict the flow v for latents x at integer timesteps t.

        x: [B, C, F, H, W] or a list of [C, F_i, H_i, W_i]; t: [B] (or a scalar), or [B, L] with one
        timestep per token (L = tokens of the longest sample after patchify; Wan 2.2 TI2V: 0 on frame 0);
        context: [B, L, text_dim] or a list of [L_i, text_dim] (zero-padded to text_len here);
        clip_fea: [B, 257, image_dim] (flf2v: [2B, 257, image_dim] or [B, 514, image_dim]);
        y: [B, C_y, F, H, W] concatenated to x on channels (i2v/flf2v mask + image latent);
        vace_context: [B, 96, F, H, W] for VACE. Returns [B, out_dim, F, H, W] (a list for list input).
        ctx_cache: a :class:`~openwan.models.context_cache.ContextCache` kept over the steps of one generation:
        the context's embedding and the blocks' cross-attention keys/values are computed once (inference
        only; the output is bit-identical).
        riflex: (k, latent frames) for one call over more latent frames than the model was trained on: the RoPE's
        frame-axis frequency k lowered so the whole length stays within one period of it (dit_layers.rope_angles).
        """
        s = self.embed(x, t, context, clip_fea=clip_fea, y=y,  # s.x [B, L, dim], s.e0 [B, 1 or L, 6, dim]
                       vace_context=vace_context, vace_context_scale=vace_context_scale, ctx_cache=ctx_cache,
                       riflex=riflex)
        s = self.run_blocks(s)                                 # s.x [B, L, dim] after every block (+ VACE hints)
        return self.run_head(s)                                # [B, out_dim, F, H, W] (a list for list input)

    def embed(self, x: TensorOrList, t: torch.Tensor, context: TensorOrList, *,
              clip_fea: Optional[torch.Tensor] = None, y: Optional[TensorOrList] = None,
              vace_context: Optional[TensorOrList] = None, vace_context_scale: float = 1.0,
              ctx_cache: Optional[ContextCache] = None, riflex: Optional[tuple] = None) -> "State":
        """Inputs to a :class:`State`: tokens, time embeddings, text (+image) context, RoPE, hints."""
        as_list = not torch.is_tensor(x)
        if as_list:
            x, y = list(x), (None if y is None else list(y))
        elif y is not None and not torch.is_tensor(y):
            y = torch.stack(list(y))
        self._check_inputs(x, clip_fea, y, vace_context)
        if y is not None and as_list:
            x = [torch.cat([u, v.to(u.dtype)]) for u, v in zip(x, y)]      # B x [C_x + C_y, F, H, W]
        elif y is not None:
            x = torch.cat([x, y.to(x.dtype)], dim=1)                       # [B, C_x + C_y, F, H, W]
        b = len(x)
        device = x.device if torch.is_tensor(x) else x[0].device

        tokens, lens, grids = self._embed(self.patch_embedding, x)         # [B, L, dim], B ints, B x (f, h, w)
        n = tokens.shape[1]
        rope = self._rope(grids, n, device, None if riflex is None else tuple(riflex))   # [B, L, 1, head_dim/2]
        padded = n * b != sum(lens) or (self.sp is not None and n % self.sp.world != 0)
        seq_lens = torch.tensor(lens, dtype=torch.long, device=device) if padded else None   # [B] or None
        if self.sp is not None:  # sequence parallel: keep this process's slice of the tokens
            tokens = self.sp.split(tokens)                                 # [B, L/P, dim]
            rope = tuple(self.sp.split(r) for r in rope)                   # [B, L/P, 1, head_dim/2]

        t = self._timesteps(t, b, n, device)                               # [B, 1] or [B, L] (one per token)
        te = self.time_embedding
        f = sinusoid(t.flatten(), self.config.freq_dim, self.sinusoid_dtype)  # [B*Lt, freq_dim] (Lt = 1 or L)
        e = te[2](F.silu(te[0](f)))                                        # [B*Lt, dim]
        e0 = self.time_projection[1](F.silu(e))                            # [B*Lt, 6*dim]
        if t.shape[1] > 1 and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            e, e0 = distinct_rows(t, e, e0.unflatten(-1, (6, -1)))         # TokenRows [B, L, dim], [B, L, 6, dim]
        else:
            e = e.unflatten(0, t.shape)                                    # [B, Lt, dim]
            e0 = e0.unflatten(0, t.shape).unflatten(-1, (6, -1))           # [B, Lt, 6, dim]
        if self.sp is not None and e0.shape[1] > 1:  # per-token modulation travels with its tokens
            e, e0 = (v.split(self.sp) if isinstance(v, TokenRows) else self.sp.split(v) for v in (e, e0))

        entry = None   # the context cache: inference only, not traced by torch.compile
        if ctx_cache is not None and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            entry = ctx_cache.entry(context, clip_fea if self.config.has_image_input else None)
        if entry is not None and entry.ctx is not None:
            ctx, ctx_bias = entry.ctx, entry.ctx_bias
        else:
            ctx, ctx_bias = self._context(context)                         # [B, Lt, dim], [B, 1, 1, Lt] or None
            if self.config.has_image_input:
                ctx = torch.cat([self.img_emb(clip_fea), ctx], dim=1)      # [B, 257 (514) + Lt, dim]
            if entry is not None:
                entry.ctx, entry.ctx_bias = ctx, ctx_bias

        s = State(tokens, e, e0, ctx, rope, seq_lens, grids, n, ctx_bias=ctx_bias, as_list=as_list,
                  vace_context_scale=vace_context_scale, kv=entry)
        if self.config.is_vace:
            s.hints = self._vace_hints(vace_context, s)                    # per VACE block [B, L, dim]
        return s

    def _timesteps(self, t, b: int, n: int, device) -> torch.Tensor:
        """t as [B, 1] (one timestep per sample) or [B, n] (one per token).

        Accepted: a scalar, [B] (or [1], broadcast), [B, L] with L >= n (positions past the longest
        sample are padding and ignored, as the reference's padded seq_len). A [B, L] whose rows are
        each constant takes the one-per-sample path: the same result as [B], bit for bit.
        """
        t = torch.as_tensor(t, device=device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.ndim == 1 and t.shape[0] in (1, b):
            return t[:, None]
        if t.ndim == 2 and t.shape[0] in (1, b) and t.shape[1] >= n:
            t = t[:, :n]
            if not torch.compiler.is_compiling() and bool((t == t[:, :1]).all()):
                return t[:, :1]
            return t
        raise ValueError(f"timesteps t must be a scalar, [B] or [B, L] with B = {b} samples and L >= {n} tokens "
                         f"(latent frames x (height/{self.patch_size[1]}) x (width/{self.patch_size[2]})); "
                         f"got shape {tuple(t.shape)}")

    def run_blocks(self, s: "State", start: int = 0, stop: Optional[int] = None) -> "State":
        """The transformer blocks ``start:stop`` (default all) on ``s.x`` (VACE hints added after their
        blocks); returns a new State. A step cache runs block 0 alone, then the rest (or not)."""
        x, kv = s.x, s.kv
        for i in range(start, len(self.blocks) if stop is None else stop):
            x = self._run(self.blocks[i], x, s.e0, s.ctx, s.seq_lens, s.rope, s.ctx_bias,
                          None if kv is None else kv.slot(i))
            if s.hints is not None and i in self._hint_of_block:
                x = x + s.hints[self._hint_of_block[i]] * s.vace_context_scale
        return s.with_x(x)

    def run_head(self, s: "State"):
        """Head modulation and projection, gather under sequence parallel, unpatchify to video latents."""
        x = self.head(s.x, s.e)                                            # [B, L, pt*ph*pw*out_dim]
        if self.sp is not None:
            x = self.sp.gather(x, s.n)                                     # [B, L, ...] on every process
        if s.as_list:
            return [self._unpatchify(x[i], g) for i, g in enumerate(s.grids)]   # B x [out_dim, F_i, H_i, W_i]
        return self._unpatchify(x, s.grids[0])                             # [B, out_dim, F, H, W]

    def _run(self, block, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def _vace_hints(self, vace_context, s: "State"):
        c, _, _ = self._embed(self.vace_patch_embedding,
                              vace_context if torch.is_tensor(vace_context) else list(vace_context))
        if c.shape[1] != s.n:
            raise ValueError("vace_context must have the same frames/height/width as x")
        if self.sp is not None:
            c = self.sp.split(c)
        x, e0, ctx, seq_lens, rope, bias = s.x, s.e0, s.ctx, s.seq_lens, s.rope, s.ctx_bias
        hints = []
        for j, block in enumerate(self.vace_blocks):
            if self.gradient_checkpointing and torch.is_grad_enabled():
                c, h = torch.utils.checkpoint.checkpoint(block, c, x, e0, ctx, seq_lens, rope, bias,
                                                         use_reentrant=False)
            else:
                c, h = block(c, x, e0, ctx, seq_lens, rope, bias, None if s.kv is None else s.kv.slot(("vace", j)))
            hints.append(h)
        return hints

    def _unpatchify(self, u: torch.Tensor, grid) -> torch.Tensor:
        """Tokens [(B,) L, pt*ph*pw*c] (c fastest) -> video [(B,) c, F*pt, H*ph, W*pw]."""
        f, h, w = grid
        pt, ph, pw = self.patch_size
        c = self.config.out_dim
        lead = u.shape[:-2]                                                # () or (B,)
        u = u[..., : f * h * w, :].reshape(*lead, f, h, w, pt, ph, pw, c)
        k = len(lead)
        u = u.permute(*range(k), k + 6, k, k + 3, k + 1, k + 4, k + 2, k + 5)
        return u.reshape(*lead, c, f * pt, h * ph, w * pw)

    # --------------------------------------------------------------- precision / loading

    def to_precision(self, dtype: torch.dtype) -> "WanModel":
        """Store weights in dtype (bf16/fp16 for CUDA); the fp32 islands still compute in fp32."""
        return self.to(dtype)

    @classmethod
    def from_pretrained(cls, path, dtype: Optional[torch.dtype] = None, device=None,
                        config: Optional[DiTConfig] = None, hook: Optional[Callable] = None,
                        quantize: Optional[str] = None) -> "WanModel":
        """Load official-layout dirs, diffusers dirs (``transformer/``), one .safetensors file, a GGUF DiT
        (a .gguf file, or a folder holding one: openwan.gguf, its quantized blocks kept packed) or a file
        written by ``openwan.quant.save_quantized``.

        ``quantize`` ("int8" / "fp8"): weight-only quantized Linear layers, quantized as they are read
        (openwan.quant). ``hook(name, tensor)`` (official key names) may replace each tensor as it is read,
        shard by shard (see ``load_dit``).
        """
        from openwan.gguf import find_gguf
        g = find_gguf(path)
        if g is not None:
            from openwan.gguf import load_dit_gguf
            return load_dit_gguf(g, dtype or torch.float32, quantize, config=config, device=device, build=cls)
        from openwan.quant import is_quantized_checkpoint, load_dit_quantized
        if quantize not in (None, "none") or is_quantized_checkpoint(path):
            return load_dit_quantized(path, None if quantize == "none" else quantize, dtype=dtype, device=device,
                                      config=config, build=cls)
        return load_dit(path, build=cls, dtype=dtype, device=device, config=config, hook=hook)

    def save_pretrained(self, path, layout: str = "official", max_shard_bytes: int = 5 * 2**30):
        return save_dit(self, path, layout=layout, max_shard_bytes=max_shard_bytes)


def init_weights(model: WanModel) -> WanModel:
    """The reference's initialisation (xavier linears, zero head, normal embeddings)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.xavier_uniform_(model.patch_embedding.weight.flatten(1))
    for m in list(model.text_embedding) + list(model.time_embedding):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
    nn.init.zeros_(model.head.head.weight)
    return model
