"""DiT weights published as GGUF (the community's Wan files): read, dequantize per tensor, load.

The ``gguf`` package (PyPI, ``pip install openwan[gguf]``) parses the file and holds the
dequantizers; the tensors are memory-mapped, so reading one does not read the others.

    load_gguf_state_dict(path, dtype)      -> {official key: tensor in dtype}   (whole dict)
    iter_gguf_tensors(path, dtype)         -> (official key, tensor) one at a time
    load_dit_gguf(path, dtype, quantize, build=WanModel) -> a WanModel, tensor by tensor: peak = model + one tensor
    WanModel.from_pretrained("x.gguf")     -> the same (a .gguf file, or a folder holding one)

Types: F32, F16, BF16, Q8_0, Q6_K, Q5_K, Q4_K (the published Wan GGUFs), also Q4_0/Q4_1/Q5_0/Q5_1/
Q2_K/Q3_K; any other type is a CheckpointError naming the type and the tensor.

Packed (default): the file's Q8_0 and K-quant (Q6_K/Q5_K/Q4_K) weights of the Linear layers
openwan.quant targets (the blocks' attention and FFN, the text embedding: ~98 % of the weights) stay
in their blocks in memory and are dequantized per layer in each forward, in torch on the layer's
device: Q8_0 as an int8 :class:`openwan.quant.QuantLinear` with its f16 block scales (one per 32
inputs), K-quants as :class:`openwan.kquant.KQuantLinear` holding the raw super-blocks, so a Q4_K
file keeps ~4.5 bits per weight resident. A GGUF's quantized weights are never re-quantized;
``quantize="int8"``/``"fp8"`` applies to the file's float Linear weights. Every other tensor (and
with ``packed=False`` every tensor) is dequantized at load, one at a time, by the gguf package's numpy
dequantizers, into the compute dtype (or, with ``quantize``, straight into a QuantLinear). Packed and
dequantized-at-load give the same weights bit for bit (same fp32 arithmetic).

Key names: official (``blocks.0.self_attn.q.weight``), optionally under ComfyUI's
``model.diffusion_model.`` prefix, or diffusers names. Tensors stored with fewer dimensions than the
model's (GGUF holds at most 4: the 5-D patch-embedding conv is flattened by converters) are reshaped
to the model's shape when their sizes agree.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

SUPPORTED = ("F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K", "Q4_K",
             "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K")


def _gguf():
    try:
        import gguf  # the PyPI package (this module is openwan.gguf)
    except ImportError:
        raise ImportError("reading .gguf files needs the gguf package: pip install gguf "
                          "(or pip install 'openwan[gguf]')") from None
    return gguf


def _reader(path):
    from openwan.checkpoints import CheckpointError, _check_file
    path = Path(path)
    _check_file(path)
    try:
        return _gguf().GGUFReader(str(path), "r")
    except (ValueError, OSError, KeyError, IndexError) as e:
        raise CheckpointError(f"cannot read {path} as GGUF: {e}. The file is truncated or not a GGUF file; "
                              f"download or copy it again.") from None


def _dequantize(t, path) -> np.ndarray:
    """One ReaderTensor -> float32 numpy array in row-major (torch) shape."""
    from openwan.checkpoints import CheckpointError
    g = _gguf()
    name = t.tensor_type.name
    if name not in SUPPORTED:
        raise CheckpointError(f"{path}: tensor {t.name} has GGUF type {name}, which openwan does not read "
                              f"(supported: {', '.join(SUPPORTED)}); convert the file to one of these "
                              f"(e.g. Q8_0 or Q4_K_M)")
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # ggml lists the fastest dimension first
    if name == "F32":
        a = np.asarray(t.data, dtype=np.float32)
    elif name == "F16":
        a = np.asarray(t.data).view(np.float16).astype(np.float32)
    else:
        a = g.quants.dequantize(np.asarray(t.data), t.tensor_type)
    return a.reshape(shape)


def _official_names(names):
    from openwan.checkpoints import COMFY_PREFIXES, dit_diffusers_to_official, is_diffusers_dit
    prefix = next((p for p in COMFY_PREFIXES if names and all(k.startswith(p) for k in names)), "")
    free = {k[len(prefix):]: k for k in names}
    if is_diffusers_dit(free):
        return dit_diffusers_to_official(free)
    return free


def _packed(path, model, types) -> dict:
    """{official weight key: GGUF type} of the file's quantized weights that stay packed: Q8_0 and the
    K-quants, on the Linear layers openwan.quant targets (the blocks' attention, FFN, text embedding)."""
    from openwan.kquant import TYPES
    from openwan.quant import QuantLinear, _matcher
    hit = _matcher(None)
    out = {}
    for off, name in types.items():
        owner = off[: -len(".weight")]
        if name not in ("Q8_0",) + TYPES or not off.endswith(".weight") or not hit(owner):
            continue
        layer = model.get_submodule(owner)
        if isinstance(layer, (torch.nn.Linear, QuantLinear)) and layer.in_features % (256 if name != "Q8_0" else 32) == 0:
            out[off] = name
    return out


def _packed_layer(t, gtype, layer, device):
    """The file's blocks of one weight as a layer: Q8_0 -> an int8 QuantLinear with its f16 block scales
    (a block: f16 scale d, then 32 int8 values; W = d * q); K-quants -> a KQuantLinear of the raw bytes."""
    from openwan.kquant import KQuantLinear
    from openwan.quant import QuantLinear
    rows, cols = layer.out_features, layer.in_features
    bias = layer.bias is not None
    raw = np.array(np.asarray(t.data, dtype=np.uint8).reshape(rows, -1))       # a copy: resident, not file-mapped
    if gtype != "Q8_0":
        return KQuantLinear(cols, rows, bias, gtype, device=device, blocks=torch.from_numpy(raw).to(device))
    raw = raw.reshape(rows, cols // 32, 34)
    q = QuantLinear(cols, rows, bias, "int8", device="meta")
    d = torch.from_numpy(np.ascontiguousarray(raw[..., :2]).view(np.float16)[..., 0].astype(np.float32))
    qs = torch.from_numpy(np.ascontiguousarray(raw[..., 2:]).view(np.int8).reshape(rows, cols))
    q.qweight, q.weight_scale = qs.to(device), d.to(device)
    return q


def gguf_shapes(path) -> dict[str, tuple]:
    """{official key: shape as stored} from the header only."""
    r = _reader(path)
    m = _official_names([t.name for t in r.tensors])
    by = {t.name: t for t in r.tensors}
    return {o: tuple(int(d) for d in reversed(by[f].shape.tolist())) for o, f in m.items()}


def gguf_types(path) -> dict[str, str]:
    """{official key: GGUF type name} (F32, Q8_0, Q4_K ...)."""
    r = _reader(path)
    m = _official_names([t.name for t in r.tensors])
    by = {t.name: t for t in r.tensors}
    return {o: by[f].tensor_type.name for o, f in m.items()}


def iter_gguf_tensors(path, dtype: Optional[torch.dtype] = None, shapes: Optional[dict] = None,
                      skip=frozenset()) -> Iterator[tuple[str, torch.Tensor]]:
    """(official key, tensor) for every tensor of the file, dequantized one at a time.

    ``shapes`` (official key -> model shape) reshapes flattened tensors back to the model's shape.
    """
    from openwan.checkpoints import CheckpointError
    r = _reader(path)
    m = _official_names([t.name for t in r.tensors])
    by = {t.name: t for t in r.tensors}
    for off, fname in m.items():
        if off in skip:
            continue
        a = _dequantize(by[fname], path)
        t = torch.from_numpy(np.array(a, copy=not a.flags.writeable, order="C"))
        if shapes is not None and off in shapes and tuple(t.shape) != tuple(shapes[off]):
            if t.numel() != int(np.prod(shapes[off])):
                raise CheckpointError(f"{path}: tensor {fname} has shape {tuple(t.shape)}, the model expects "
                                      f"{tuple(shapes[off])}: is this a GGUF of another Wan model?")
            t = t.reshape(shapes[off])
        yield off, (t.to(dtype) if dtype is not None else t)


def load_gguf_state_dict(path, dtype: Optional[torch.dtype] = torch.float32,
                         shapes: Optional[dict] = None) -> dict[str, torch.Tensor]:
    """The whole file as an official-key state dict, every tensor dequantized to ``dtype``."""
    return dict(iter_gguf_tensors(path, dtype, shapes))


@torch.no_grad()
def load_dit_gguf(path, dtype: torch.dtype = torch.float32, quantize: Optional[str] = None,
                  config=None, device=None, include=None, packed: bool = True, *, build):
    """Build a WanModel from a GGUF DiT, tensor by tensor (config inferred from the shapes).

    ``packed`` (default): the file's Q8_0 and K-quant weights of the Linear layers stay in their blocks
    and are dequantized per layer in each forward; ``packed=False`` dequantizes every tensor at load.
    ``quantize`` ("int8"/"fp8") converts the other (float) Linear weights while loading (openwan.quant;
    with ``packed=False`` all of them); None keeps them in ``dtype``.
    """
    from openwan import checkpoints as ck
    from openwan.quant import _set_module, quantize_model_
    stored = gguf_shapes(path)
    if config is None:
        probe = dict(stored)
        pe = probe.get("patch_embedding.weight")
        if pe is not None and len(pe) < 5:  # flattened conv: dim, in_dim, patch (1, 2, 2) as published
            probe["patch_embedding.weight"] = (pe[0], int(np.prod(pe[1:])) // 4, 1, 2, 2)
        config = ck.infer_dit_config(probe)
    with torch.device("meta"):
        model = build(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    fixed = {k: (expected[k] if k in expected and int(np.prod(v)) == int(np.prod(expected[k])) else v)
             for k, v in stored.items()}
    ck.check_keys(expected, fixed, f"the DiT config ({config.model_type}, dim {config.dim}, "
                  f"{config.num_layers} layers)", str(path))
    quantize_model_(model, quantize, include)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    keep = _packed(path, model, gguf_types(path)) if packed else {}
    if keep:
        r = _reader(path)
        by = {t.name: t for t in r.tensors}
        names = _official_names(list(by))
        for k, gtype in keep.items():   # the file's blocks as they are: a layer replaced, nothing dequantized
            owner = k[: -len(".weight")]
            _set_module(model, owner, _packed_layer(by[names[k]], gtype, model.get_submodule(owner), dev))
    for k, t in iter_gguf_tensors(path, dtype, expected, skip=set(keep)):
        model.load_state_dict({k: t.to(dev)}, strict=False, assign=True)
    for m in model.modules():
        if hasattr(m, "compute_dtype") and hasattr(m, "qweight"):
            m.compute_dtype = dtype
    return model.eval().requires_grad_(False)


def find_gguf(path) -> Optional[Path]:
    """The .gguf DiT file at ``path`` (a file, or a directory holding exactly one), else None."""
    from openwan.checkpoints import CheckpointError
    path = Path(path)
    if path.is_file():
        return path if path.suffix == ".gguf" else None
    found = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(found) > 1:
        raise CheckpointError(f"{path} holds several .gguf files ({', '.join(f.name for f in found)}): "
                              f"pass the one to use")
    return found[0] if found else None
