"""Sequence parallel inference for the DiT (DeepSpeed-Ulysses style), on torch.distributed.

Each of P processes holds the whole DiT and 1/P of the video tokens:

    tokens [B, L, dim] --pad L to a multiple of P, keep slice rank--> [B, L/P, dim]
    every block: modulation, cross-attention and FFN work on the local tokens as they are;
    self-attention  q, k, v [B, L/P, heads, d] --all_to_all--> [B, L, heads/P, d]   (all tokens, some heads)
                    attention over the full sequence for those heads
                    out [B, L, heads/P, d] --all_to_all--> [B, L/P, heads, d]
    head output [B, L/P, ...] --all_gather--> [B, L, ...] on every process

so every process ends the forward with the same full output, and the sampler runs identically
everywhere (same seed, same noise). Attention is computed per head exactly as on one process, so
outputs match the single-process model to float rounding (tested with 2 CPU processes on gloo).
RoPE angles are sliced with the tokens, so every token keeps its global position; padding tokens
(angle 0) are masked as keys through the samples' real lengths, as in the single-process model.

Usage (the CLI does this under ``torchrun --nproc_per_node N ... --ulysses_size N``)::

    init_process_group()                       # nccl on CUDA (one GPU per process), gloo on CPU
    enable_sequence_parallel(pipe.dit)         # heads must divide by the process count

Inference only: the collectives here are not differentiable (training scales with FSDP2 / DDP,
openwan.training).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F


@dataclass(frozen=True)
class SequenceParallel:
    """The process group the tokens are split over, and this process's place in it."""

    group: Optional[dist.ProcessGroup]
    rank: int
    world: int

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return split_tokens(x, self)

    def gather(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return gather_tokens(x, self, n)


def init_process_group() -> bool:
    """Join the group that torchrun describes (RANK / WORLD_SIZE / MASTER_ADDR ...), if not done yet.

    CUDA: one GPU per process (``LOCAL_RANK``), nccl; CPU: gloo. Returns True when this call created
    the group (the caller should then call :func:`end_process_group` at the end).
    """
    if not dist.is_available() or dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def end_process_group(wait_for_all: bool = True) -> None:
    """Leave the default group at the end of a run: wait until every process gets here (``wait_for_all``; only
    when every process finished its work, or the others wait for ever), then destroy the group.

    On gloo the wait is ``monitored_barrier``, not ``barrier``. Gloo's barrier keeps weak references to the
    collectives its worker threads hold when it is queued, and the last of those references (with the tensors of
    the collective: an ``all_gather``'s outputs the caller has dropped) goes on a worker thread when the barrier
    completes. When that happens after this process began to exit, freeing the tensors asks for the GIL of an
    interpreter that is shutting down and the process aborts ("terminate called without an active exception",
    about 2 runs in 100 of a two-process CLI run on CPU). ``monitored_barrier`` sends and receives on this thread
    and holds nothing of earlier collectives."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait_for_all:
        barrier()
    dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process of the default group gets here: ``monitored_barrier`` on gloo (why:
    :func:`end_process_group`), ``barrier`` on other backends."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier()
        else:
            dist.barrier()


def enable_sequence_parallel(model, group: Optional[dist.ProcessGroup] = None) -> SequenceParallel:
    """Split ``model``'s (a WanModel's) tokens over the processes of ``group`` (default: all)."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("sequence parallel needs torch.distributed: start with torchrun --nproc_per_node N "
                           "and call openwan.parallel.init_process_group() first")
    world = dist.get_world_size(group)
    heads = model.config.num_heads
    if heads % world:
        ok = [n for n in range(1, heads + 1) if heads % n == 0]
        raise ValueError(f"sequence parallel over {world} processes needs the head count ({heads}) to divide by it; "
                         f"use one of {ok} processes")
    sp = SequenceParallel(group, dist.get_rank(group), world)
    set_sequence_parallel(model, sp if world > 1 else None)
    return sp


def set_sequence_parallel(model, sp: Optional[SequenceParallel]) -> None:
    """Attach (or with None detach) ``sp`` to the model (it splits / gathers its tokens with ``sp``)
    and the all-to-all attention to its self-attention layers (their ``attn_fn`` slot).

    The model classes are not imported: a self-attention layer is a module with ``is_self_attention``.
    """
    model.sp = sp
    for m in model.modules():
        if getattr(m, "is_self_attention", False):
            m.sp = sp
            m.attn_fn = None if sp is None else partial(ulysses_attention, sp=sp)


# ----------------------------------------------------------------------------- token split / gather

def split_tokens(x: torch.Tensor, sp: SequenceParallel) -> torch.Tensor:
    """[B, L, ...] -> this process's slice [B, ceil(L/P), ...] of the sequence zero-padded to a multiple of P."""
    n = x.shape[1]
    m = -(-n // sp.world)
    if m * sp.world != n:
        pad = [0, 0] * (x.ndim - 2) + [0, m * sp.world - n]
        x = F.pad(x, pad)
    return x[:, sp.rank * m:(sp.rank + 1) * m]


def gather_tokens(x: torch.Tensor, sp: SequenceParallel, n: int) -> torch.Tensor:
    """Every process's slice [B, m, ...] -> the whole sequence [B, n, ...] on every process."""
    parts = [torch.empty_like(x) for _ in range(sp.world)]
    dist.all_gather(parts, x.contiguous(), group=sp.group)
    return torch.cat(parts, dim=1)[:, :n]


# ----------------------------------------------------------------------------- attention

def _all_to_all(x: torch.Tensor, sp: SequenceParallel, scatter_dim: int, gather_dim: int) -> torch.Tensor:
    """Send chunk j of ``scatter_dim`` to process j; concatenate what arrives along ``gather_dim``
    in process order."""
    send = [c.contiguous() for c in x.chunk(sp.world, dim=scatter_dim)]
    recv = [torch.empty_like(send[0]) for _ in range(sp.world)]
    dist.all_to_all(recv, send, group=sp.group)
    return torch.cat(recv, dim=gather_dim)


def ulysses_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_lens: Optional[torch.Tensor],
                      sp: SequenceParallel) -> torch.Tensor:
    """Self-attention over the whole sequence from local tokens: q/k/v [B, L/P, N, D] -> [B, L/P, N, D]."""
    from openwan.models.attention import attention
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        raise RuntimeError("sequence parallel is for inference (run under torch.no_grad / inference_mode); "
                           "train with FSDP2 or DDP (openwan train)")
    q, k, v = (_all_to_all(t, sp, scatter_dim=2, gather_dim=1) for t in (q, k, v))   # [B, L, N/P, D]
    y = attention(q, k, v, k_lens=k_lens)
    return _all_to_all(y, sp, scatter_dim=1, gather_dim=2)                              # [B, L/P, N, D]
