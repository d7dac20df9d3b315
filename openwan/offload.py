"""Block swap: keep N transformer blocks on the device, stream the others in from CPU memory.

    enable_block_swap(dit, resident=2, device="cuda")       # blocks 0..1 stay, 2..29 stream
    dit(x, t, ctx)                                          # identical output, bounded device memory
    disable_block_swap(dit)

Every block past the first ``resident`` keeps its weights in CPU memory (pinned on CUDA, so copies
are asynchronous). A forward pre-hook brings the block's tensors to the device just before it runs,
a forward hook drops them right after (the device copy is freed; the CPU copy is the one kept, so
nothing is copied back: inference does not change weights). With ``prefetch`` (default on CUDA) the
pre-hook of block i also starts copying the next streamed block on a side CUDA stream, which the
compute stream waits for (an event) only when that block starts: the copy overlaps block i's compute.

Device memory for the blocks: at most ``resident`` + 1 blocks. Without prefetch the first N blocks
stay and the running one is the +1; with prefetch the first N-1 stay and the running block and the
incoming next one take the other two slots (N = 0 turns prefetch off). The rest of the model
(embeddings, head) stays on the device. While a block is out its tensors are meta tensors, so a block
that ran without being brought in would fail loudly instead of silently computing on the CPU.

Works for any module with a list of blocks (``blocks=``): the DiT (``dit.blocks``, and
``dit.vace_blocks``), transformers' umT5 encoder (``model.encoder.block``). Quantized layers
(:mod:`openwan.quant`) and LoRA parametrizations move with their block (all parameters and buffers
of every submodule). :class:`BlockSwap` counts what is on the device (``peak_blocks``,
``peak_bytes``): on a CPU the same mechanism runs (device "cpu") and the counts are what the tests
check; on CUDA ``torch.cuda.max_memory_allocated`` measures the same bound.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

_ATTR = "_openwan_block_swap"


def _slots(module: nn.Module):
    """(owner module, "_parameters" | "_buffers", name) for every tensor of the module tree."""
    out = []
    for m in module.modules():
        for kind in ("_parameters", "_buffers"):
            for name, t in getattr(m, kind).items():
                if t is not None:
                    out.append((m, kind, name))
    return out


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class CudaStreams:
    """The CUDA calls of the prefetch, in one place: a side stream that copies a block's tensors (an event
    marks the end of the copy), and the compute stream's wait for that event before the block runs (the
    copied tensors then belong to the compute stream: ``record_stream``, so the allocator does not reuse
    their memory early). Used only when CUDA is available; the CPU tests run these same methods with
    the ``torch.cuda`` calls faked (tests/test_offload.py)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.side = torch.cuda.Stream(self.device)

    def copy(self, tensors, device) -> tuple:
        """Start copying ``tensors`` to ``device`` on the side stream -> (device tensors, event)."""
        with torch.cuda.stream(self.side):
            ts = [t.to(device, non_blocking=True) for t in tensors]
            ev = torch.cuda.Event()
            ev.record(self.side)
        return ts, ev

    def wait(self, ev, tensors) -> None:
        """The compute stream waits for the copy, then owns the tensors."""
        cur = torch.cuda.current_stream(self.device)
        cur.wait_event(ev)
        for t in tensors:
            t.record_stream(cur)


class BlockSwap:
    """The swap state of one module: hooks, CPU copies, what is on the device, peaks.

    ``streams``: the prefetch's stream calls (default: :class:`CudaStreams` when prefetching to a CUDA
    device with CUDA available; None copies on the current stream)."""

    def __init__(self, blocks: Sequence[nn.Module], resident: int, device, prefetch: Optional[bool] = None,
                 pin: Optional[bool] = None, streams=None):
        self.device = torch.device(device)
        cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self.prefetch = cuda if prefetch is None else bool(prefetch)
        pin = cuda if pin is None else pin
        self.blocks = list(blocks)
        if not 0 <= resident <= len(self.blocks):
            raise ValueError(f"resident must be between 0 and the number of blocks ({len(self.blocks)}), "
                             f"got {resident}")
        self.resident = resident
        if self.prefetch and resident == 0:
            self.prefetch = False   # no slot for the incoming block: load each block when it starts
        # with prefetch one of the N slots holds the incoming block: N-1 blocks stay, N+1 at most on the device
        self.permanent = resident - 1 if self.prefetch else resident
        self.streamed = list(range(self.permanent, len(self.blocks)))
        self.home, self.slots, self.size = {}, {}, {}
        for i, b in enumerate(self.blocks):
            if i < self.permanent:
                b.to(self.device)
                continue
            slots = _slots(b)
            home = []
            for m, kind, name in slots:
                t = getattr(m, kind)[name].detach()
                t = t.to("cpu")
                if pin and not t.is_pinned():
                    t = t.pin_memory()
                home.append(t)
            self.slots[i], self.home[i] = slots, home
            self.size[i] = sum(_nbytes(t) for t in home)
            self._set(i, [torch.empty_like(t, device="meta") for t in home])
        self.block_bytes = max(self.size.values(), default=0)
        self.on_device: set[int] = set()
        self.peak_blocks = self.permanent
        self.peak_bytes = 0
        self.loads = 0
        if streams is None and cuda and self.prefetch:
            streams = CudaStreams(self.device)
        self.streams = streams if self.prefetch else None
        self._events: dict[int, object] = {}
        self._handles = []
        for i in self.streamed:
            b = self.blocks[i]
            self._handles.append(b.register_forward_pre_hook(self._make_pre(i)))
            self._handles.append(b.register_forward_hook(self._make_post(i)))

    # ------------------------------------------------------------------ moves
    def _set(self, i: int, tensors) -> None:
        for (m, kind, name), t in zip(self.slots[i], tensors):
            if kind == "_parameters":
                getattr(m, kind)[name] = nn.Parameter(t, requires_grad=False)
            else:
                getattr(m, kind)[name] = t

    def _load(self, i: int, side: bool = False) -> None:
        if i in self.on_device:
            return
        if side and self.streams is not None:
            ts, ev = self.streams.copy(self.home[i], self.device)
            self._events[i] = (ev, ts)
        else:
            ts = [t.to(self.device, non_blocking=True) for t in self.home[i]]
        self._set(i, ts)
        self.on_device.add(i)
        self.loads += 1
        self.peak_blocks = max(self.peak_blocks, self.permanent + len(self.on_device))
        self.peak_bytes = max(self.peak_bytes, sum(self.size[j] for j in self.on_device))

    def _unload(self, i: int) -> None:
        if i not in self.on_device:
            return
        self._set(i, [torch.empty_like(t, device="meta") for t in self.home[i]])
        self.on_device.discard(i)

    def _next_streamed(self, i: int) -> Optional[int]:
        k = self.streamed.index(i)
        return self.streamed[k + 1] if k + 1 < len(self.streamed) else None

    def _make_pre(self, i: int):
        def pre(module, args):
            self._load(i)
            if i in self._events:  # prefetched on the side stream: wait for the copy, then own the memory
                ev, ts = self._events.pop(i)
                self.streams.wait(ev, ts)
            if self.prefetch:
                j = self._next_streamed(i)
                if j is not None:
                    self._load(j, side=True)
        return pre

    def _make_post(self, i: int):
        def post(module, args, output):
            self._unload(i)
        return post

    # ------------------------------------------------------------------ teardown
    def remove(self, device=None) -> None:
        """Remove the hooks; every streamed block gets its tensors back on ``device`` (default: CPU copies)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        for i in self.streamed:
            self.on_device.discard(i)
            self._events.pop(i, None)
            self._set(i, [t if device is None else t.to(device) for t in self.home[i]])


def enable_block_swap(model: nn.Module, resident: int, device=None, blocks: Optional[Sequence[nn.Module]] = None,
                      prefetch: Optional[bool] = None, pin: Optional[bool] = None, streams=None) -> BlockSwap:
    """Keep ``resident`` of the model's blocks on ``device``; stream the rest in per forward.

    ``blocks`` defaults to ``model.blocks``; everything of the model outside the streamed blocks is
    moved to ``device``. ``prefetch`` (default: on for CUDA) copies the next block on a side stream.
    Returns the :class:`BlockSwap` (counters ``peak_blocks``, ``peak_bytes``, ``loads``).
    """
    if getattr(model, _ATTR, None) is not None:
        raise RuntimeError("block swap is already enabled on this model: disable_block_swap(model) first")
    if blocks is None:
        if not hasattr(model, "blocks"):
            raise ValueError(f"{type(model).__name__} has no .blocks: pass blocks= (the ModuleList to stream)")
        blocks = model.blocks
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("block swap to a CUDA device needs a CUDA build of torch and a GPU")
    inside = {id(x) for b in list(blocks)[resident:] for x in b.modules()}
    for m in model.modules():   # the rest of the model goes to the device
        if id(m) in inside:
            continue
        for kind in ("_parameters", "_buffers"):
            for name, t in getattr(m, kind).items():
                if t is not None and t.device != device:
                    moved = t.detach().to(device)
                    getattr(m, kind)[name] = nn.Parameter(moved, requires_grad=t.requires_grad) \
                        if kind == "_parameters" else moved
    swap = BlockSwap(blocks, resident, device, prefetch, pin, streams)
    setattr(model, _ATTR, swap)
    return swap


def disable_block_swap(model: nn.Module, device=None) -> None:
    """Undo :func:`enable_block_swap`; streamed blocks return to ``device`` (default: their CPU copies)."""
    swap = getattr(model, _ATTR, None)
    if swap is None:
        return
    swap.remove(device)
    setattr(model, _ATTR, None)


def block_swap_of(model: nn.Module) -> Optional[BlockSwap]:
    return getattr(model, _ATTR, None)


MODES = ("none", "sequential", "auto", "blocks")
DEFAULT_RESIDENT = 2


def parse_offload_spec(spec) -> tuple[str, Optional[int]]:
    """An ``--offload_model`` / ``offload=`` value -> (mode, N), checked for its form only (the block
    count is known once the model is loaded: :func:`resident_blocks` checks N against it).

    none / False, sequential / True (the reference's values), auto, blocks (N = None: the default, 2
    resident), blocks:N (N >= 0). Anything else is a ValueError naming the accepted forms.
    """
    s = str("none" if spec is None else spec).strip().lower()
    s = {"false": "none", "true": "sequential"}.get(s, s)
    if s in MODES:
        return s, None
    head, _, n = s.partition(":")
    if head == "blocks" and n.isdigit():
        return "blocks", int(n)
    raise ValueError(f"offload {spec!r}: choose none, sequential (True/False: the reference's), auto, blocks "
                     f"or blocks:N (N >= 0 blocks kept on the device)")


def format_offload(mode: str, n: Optional[int] = None) -> str:
    return f"blocks:{n}" if mode == "blocks" and n is not None else mode


def resident_blocks(spec, num_blocks: int) -> Optional[int]:
    """N for a ``blocks[:N]`` value (checked against the model's ``num_blocks``); None for the other modes."""
    mode, n = parse_offload_spec(spec)
    if mode != "blocks":
        return None
    if n is None:
        return min(DEFAULT_RESIDENT, num_blocks)
    if n > num_blocks:
        raise ValueError(f"offload {spec!r}: N must be an integer from 0 to {num_blocks} (the model's blocks)")
    return n


def parse_offload(spec: str, num_blocks: int) -> Optional[int]:
    """``--offload_model`` values: "blocks" (2 resident), "blocks:N" -> N; "none"/"sequential"/"auto" -> None
    ("auto" is resolved by :func:`openwan.plan.plan`). The same parser as the CLI's and load_pipeline's."""
    return resident_blocks(spec, num_blocks)
