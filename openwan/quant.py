"""Weight-only quantized Linear layers (int8, fp8 e4m3) for the DiT, applied while loading.

    W [out, in]  ->  q [out, in] (int8 or float8_e4m3fn) and s [out] (fp32), W ~= q * s[:, None]
    int8: s = max|W_row| / 127, q = round(W / s) in [-127, 127]       (symmetric, per output channel)
    fp8:  s = max|W_row| / 448, q = float8_e4m3fn(W / s)               (e4m3's largest value is 448)

:class:`QuantLinear` stores q and s and computes in the compute dtype (the dtype the float layer's
weight had, bf16 for a bf16 model): ``F.linear(x, (q.to(cd) * s.to(cd)[:, None]), b)``. The cast of q
is exact (int8 values and e4m3 values are exact in bf16/fp16/fp32), so the only error is the rounding
of W to q. The dequantized weight exists for one layer at a time.

Which layers (``DEFAULT_INCLUDE``): every Linear the reference runs in the low-precision compute
dtype: the blocks' (and VACE blocks') attention projections q/k/v/o (k_img/v_img) and FFN, and the
text embedding. Kept in float: the fp32 islands (time embedding and projection, head, image
embedding, VACE before/after projections), the patch-embedding convs, norms and modulation vectors
(small, and the reference computes them in fp32). For the 1.3B model that is 98 % of the weights.

Why not torchao: torchao 0.18 installs here (28 MB, no dependencies) and its Int8WeightOnlyConfig
works on CPU at the same speed as this layer, but its weights are tensor subclasses (not writable by
safetensors without unwrapping, opaque to LoRA's weight parametrization and to block swapping's
storage moves) and its compiled extensions are built per torch release (two failed to load with
torch 2.13). This layer is plain int8/fp8 tensors and ~150 lines.

Loading shard by shard (``WanModel.from_pretrained(path, quantize="int8")``): build the model on the meta device, call :func:`quantize_model_` there
(modules swapped, nothing allocated), then ``load_state_dict(part, assign=True)`` per shard: a
QuantLinear given a float ``weight`` quantizes it as it arrives, so the float model never exists.
:func:`load_dit_quantized` does exactly this (reading each weight row block by row block).

File layout (:func:`save_quantized`): one safetensors file with the official keys; a quantized
layer's ``<name>.weight`` is int8 or F8_E4M3 [out, in] and ``<name>.weight_scale`` is F32 [out]
(or [out, in/32]: one scale per block of 32 inputs, for GGUF Q8_0 weights kept as they are);
metadata ``openwan_config`` (official config.json) and ``openwan_quant`` (json: kind, layer names).

LoRA stays unmerged on a quantized layer: :func:`load_lora` attaches the adapters of any format
openwan reads (openwan.training.lora) to ``QuantLinear.adapters``, which forward adds as
``strength * scale * B (A x)``; float layers get the usual parametrization.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

KINDS = ("int8", "fp8")
QMAX = {"int8": 127.0, "fp8": 448.0}
QDTYPE = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}
DEFAULT_INCLUDE = (r"(vace_)?blocks\.\d+\.(self_attn|cross_attn)\.(q|k|v|o|k_img|v_img)",
                   r"(vace_)?blocks\.\d+\.ffn\.(0|2)",
                   r"text_embedding\.(0|2)")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown quantization {kind!r}: choose one of {', '.join(KINDS)} (or none)")
    return kind


@torch.no_grad()
def quantize_tensor(w: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A float weight [out, ...] -> (q [out, ...] int8/float8_e4m3fn, scale [out] fp32), W ~= q * scale."""
    check_kind(kind)
    if not w.is_floating_point() or w.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        raise ValueError(f"quantize_tensor needs a float weight in bf16/fp16/fp32, got {w.dtype}")
    wf = w.float().flatten(1)
    amax = wf.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / QMAX[kind], torch.ones_like(amax))
    x = wf / scale[:, None]
    if kind == "int8":
        q = x.round_().clamp_(-127, 127).to(torch.int8)
    else:
        q = x.clamp_(-448, 448).to(torch.float8_e4m3fn)
    return q.reshape(w.shape), scale


def dequantize_tensor(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """q * scale: ``scale`` [out] (per output channel) or [out, G] (one scale per group of in/G inputs,
    as GGUF's Q8_0 blocks of 32)."""
    if scale.dim() == 2 and scale.shape[1] > 1:
        out, g = scale.shape
        return (q.reshape(out, g, -1).to(dtype) * scale.to(dtype)[..., None]).reshape(q.shape)
    return q.to(dtype) * scale.to(dtype).reshape(-1, *([1] * (q.dim() - 1)))


class QuantLinear(nn.Module):
    """A weight-only quantized Linear: buffers ``qweight`` and ``weight_scale``, float ``bias``.

    ``forward`` computes in ``compute_dtype``; ``weight`` (a property) is the dequantized weight, so
    code that reads ``layer.weight`` (shape checks, ``F.linear(x, layer.weight)``) keeps working.
    ``adapters`` holds unmerged LoRA adapters (objects with ``apply(x, shape)``); ``bias_adapters``
    full bias deltas.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, kind: str,
                 compute_dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.kind = check_kind(kind)
        self.compute_dtype = compute_dtype
        self.register_buffer("qweight", torch.empty(out_features, in_features, dtype=QDTYPE[kind], device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=compute_dtype, device=device),
                                 requires_grad=False) if bias else None
        self.adapters = nn.ModuleDict()
        self.bias_adapters = nn.ModuleDict()

    @classmethod
    def from_linear(cls, layer: nn.Linear, kind: str) -> "QuantLinear":
        w = layer.weight
        cd = getattr(layer, "compute_dtype", None) or w.dtype
        q = cls(layer.in_features, layer.out_features, layer.bias is not None, kind, cd, device=w.device)
        if w.device.type != "meta":
            q.set_weight(w.detach())
            if layer.bias is not None:
                q.bias = nn.Parameter(layer.bias.detach(), requires_grad=False)
        elif layer.bias is not None:
            q.bias = nn.Parameter(torch.empty_like(layer.bias, dtype=layer.bias.dtype), requires_grad=False)
        return q

    def set_weight(self, w: torch.Tensor) -> None:
        """Quantize a float weight [out, in] into this layer (replacing the buffers)."""
        if tuple(w.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight {tuple(w.shape)} does not fit a {self.in_features}->{self.out_features} layer")
        q, s = quantize_tensor(w, self.kind)
        self.qweight, self.weight_scale = q, s

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight in the compute dtype, LoRA deltas added (for code that reads
        ``layer.weight`` instead of calling the layer, as ``F.linear(x, layer.weight, layer.bias)``)."""
        w = self.dequantized(torch.float32 if len(self.adapters) else None)
        if len(self.adapters):
            shape = (self.out_features, self.in_features)
            w = (w + sum(a.delta(shape) for a in self.adapters.values())).to(self.compute_dtype)
        return w

    def dequantized(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return dequantize_tensor(self.qweight, self.weight_scale, dtype or self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cd = self.compute_dtype
        xc = x.to(cd)
        bias = None if self.bias is None else self.bias.to(cd)
        if len(self.bias_adapters):
            bias = (bias.float() + sum(a.delta(bias.shape) for a in self.bias_adapters.values())).to(cd)
        y = F.linear(xc, self.dequantized(cd), bias)
        for a in self.adapters.values():
            y = y + a.apply(xc, (self.out_features, self.in_features)).to(cd)
        return y

    # --- state dict: official key ``weight`` holds q; ``weight_scale`` beside it
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.qweight if keep_vars else self.qweight.detach()
        destination[prefix + "weight_scale"] = self.weight_scale if keep_vars else self.weight_scale.detach()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        w = state_dict.get(prefix + "weight")
        s = state_dict.get(prefix + "weight_scale", state_dict.get(prefix + "scale_weight"))
        if w is None:
            if strict:
                missing_keys.append(prefix + "weight")
        elif w.dtype == QDTYPE[self.kind]:  # already quantized (ours, or fp8 files with/without a scale)
            if s is None:
                s = torch.ones(())
            self.qweight = w.to(self.qweight.device) if self.qweight.device.type != "meta" else w
            s = s.float()
            s = s if s.dim() == 2 and s.shape[0] == self.out_features else s.reshape(-1).expand(self.out_features)
            self.weight_scale = s.clone().to(self.qweight.device)
        elif w.is_floating_point() and w.dtype not in (torch.float8_e4m3fn, torch.float8_e5m2):
            if s is not None:  # a float weight that carries a scale: W = w * s
                w = w.float() * s.float().reshape(-1, *([1] * (w.dim() - 1)))
            dev = self.qweight.device if self.qweight.device.type != "meta" else w.device
            self.set_weight(w.to(dev))
        else:
            error_msgs.append(f"{prefix}weight is {w.dtype} but the layer is quantized as {self.kind}; "
                              f"load this file with quantize={'int8' if w.dtype == torch.int8 else 'fp8'} "
                              f"or without quantization")
        self._load_bias(state_dict, prefix, strict, missing_keys)

    def _load_bias(self, state_dict, prefix, strict, missing_keys) -> None:
        b = state_dict.get(prefix + "bias")
        if self.bias is not None:
            if b is not None:
                self.bias = nn.Parameter(b, requires_grad=False)
            elif strict:
                missing_keys.append(prefix + "bias")

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, kind={self.kind}, "
                f"compute_dtype={self.compute_dtype}, bias={self.bias is not None}")


# ============================================================================ model conversion

def _matcher(include: Union[str, Sequence[str], None]):
    pats = DEFAULT_INCLUDE if include is None else ([include] if isinstance(include, str) else list(include))
    rx = [re.compile(p) for p in pats]
    return lambda name: any(r.fullmatch(name) for r in rx)


def quantizable_names(model: nn.Module, include=None) -> list[str]:
    """Names of the nn.Linear modules (subclasses included) that :func:`quantize_model_` converts."""
    hit = _matcher(include)
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and hit(n)]


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


@torch.no_grad()
def quantize_model_(model: nn.Module, kind: str, include=None) -> nn.Module:
    """Replace the model's targeted nn.Linear layers by :class:`QuantLinear` in place; returns the model.

    ``include``: regular expressions over module names (full match); default :data:`DEFAULT_INCLUDE`.
    On a meta-device model nothing is allocated; weights loaded later are quantized as they arrive.
    ``kind`` "none" (or None) leaves the model as it is.
    """
    if kind in (None, "none"):
        return model
    check_kind(kind)
    names = quantizable_names(model, include)
    if not names:
        raise ValueError("quantize_model_: no Linear layer matches the include patterns "
                         f"{list(include or DEFAULT_INCLUDE)}")
    for name in names:
        layer = model.get_submodule(name)
        if hasattr(layer, "parametrizations"):
            raise ValueError(f"{name} carries a LoRA parametrization: quantize the base model first, then "
                             f"attach LoRA with openwan.quant.load_lora (it stays unmerged)")
        _set_module(model, name, QuantLinear.from_linear(layer, kind))
    model._openwan_quant = {"kind": kind, "layers": names}
    return model


def load_hook(kind: str, include=None):
    """A ``hook(name, tensor)`` for ``checkpoints.load_dit(..., hook=)`` / ``WanModel.from_pretrained(hook=)``:
    the float weight of every targeted Linear comes back as a :class:`QuantLinear` (quantized at once,
    computing in the tensor's dtype), which replaces the layer; every other tensor passes unchanged.
    The layer's bias is then loaded into the new module by name (all Wan Linear layers have one)."""
    if kind in (None, "none"):
        return None
    check_kind(kind)
    hit = _matcher(include)

    def hook(name: str, t: torch.Tensor):
        owner, _, leaf = name.rpartition(".")
        if leaf != "weight" or t.dim() != 2 or not t.is_floating_point() or not hit(owner):
            return t
        q = QuantLinear(t.shape[1], t.shape[0], True, kind, t.dtype, device="meta")
        q.set_weight(t)
        return q
    return hook


def quant_info(model: nn.Module) -> Optional[dict]:
    """{"kind", "layers"} of a quantized model, None for a float one."""
    layers = [n for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    if not layers:
        return None
    kinds = {model.get_submodule(n).kind for n in layers}
    return {"kind": kinds.pop() if len(kinds) == 1 else sorted(kinds), "layers": layers}


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (quantized ones at their storage size)."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


# ============================================================================ load / save

def _read_shapes(files):
    from safetensors import SafetensorError, safe_open
    from openwan.checkpoints import CheckpointError, _check_file
    shapes, dtypes, meta = {}, {}, {}
    for f in files:
        _check_file(f)
        try:
            with safe_open(str(f), "pt") as fh:
                meta.update(fh.metadata() or {})
                for k in fh.keys():
                    sl = fh.get_slice(k)
                    shapes[k] = tuple(sl.get_shape())
                    dtypes[k] = sl.get_dtype()
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"cannot read {f}: {e}. The file is truncated or not safetensors; "
                                  f"download or copy it again.") from None
    return shapes, dtypes, meta


@torch.no_grad()
def load_dit_quantized(path, quantize: Optional[str] = "int8", dtype: Optional[torch.dtype] = None,
                       device=None, config=None, include=None, rows_per_read: Optional[int] = None,
                       build=None):
    """Load a DiT (official/diffusers safetensors, or a file written by :func:`save_quantized`) with its
    Linear layers quantized as they are read: the float model is never materialised.

    Float weights of quantized layers are read ``rows_per_read`` rows at a time (default: 4 MB of fp32
    per read), so the transient is a few MB whatever the layer's size. ``dtype`` is the compute and
    storage dtype of the float parts (default: the file's). A file written by :func:`save_quantized`
    reloads with its own kind and layers (``quantize`` may be None then).
    """
    from safetensors import safe_open
    from openwan import checkpoints as ck
    path = Path(path)
    files, layout, cfg_json = ck._dit_source(path)
    shapes, dtypes, meta = _read_shapes(files)
    saved = _meta_json(meta, "openwan_quant", path)
    if saved is not None:
        if quantize not in (None, "none", saved["kind"]):
            raise ValueError(f"{path} holds {saved['kind']} weights; load it with quantize={saved['kind']!r} "
                             f"(or None), or convert the float checkpoint to {quantize}")
        quantize, include = saved["kind"], [re.escape(n) for n in saved["layers"]]
    if cfg_json is None and meta.get("openwan_config"):
        cfg_json = _meta_json(meta, "openwan_config", path)
    prefix = next((p for p in ck.COMFY_PREFIXES if shapes and all(k.startswith(p) for k in shapes)), "")
    free = {k[len(prefix):]: v for k, v in shapes.items()}
    diffusers = layout == "diffusers" or (layout is None and ck.is_diffusers_dit(free))
    to_official = ck.dit_diffusers_to_official if diffusers else (lambda d: d)
    official = to_official({k: k for k in free})  # official key -> key in the file (minus the prefix)
    off_shapes = {o: free[f] for o, f in official.items() if not o.endswith(("weight_scale", "scale_weight"))}
    if config is None:
        if cfg_json is None:
            config = ck.infer_dit_config(off_shapes)
        elif diffusers:
            config = ck.dit_config_from_diffusers_json(cfg_json)
        else:
            config = ck.dit_config_from_official_json(cfg_json)
    if build is None:
        raise TypeError("load_dit_quantized needs build= (the model class, e.g. WanModel); or load with "
                        "WanModel.from_pretrained(path, quantize=...)")
    with torch.device("meta"):
        model = build(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ck.check_keys(expected, off_shapes, f"the DiT config ({config.model_type}, dim {config.dim}, "
                  f"{config.num_layers} layers)", str(path))
    quantize_model_(model, quantize, include)
    qnames = {n + ".weight" for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    where = {}
    for f in files:
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                where[k] = f
    dev = torch.device(device) if device is not None else torch.device("cpu")

    def get(key):
        with safe_open(str(where[key]), "pt", device="cpu") as fh:
            return fh.get_tensor(key)

    for off, fk in official.items():
        key = prefix + fk
        if off.endswith((".weight_scale", ".scale_weight")):
            continue  # taken with its weight
        if off in qnames and dtypes[key] in ("F32", "F16", "BF16"):  # float weight: quantize rows as read
            _load_rows(model.get_submodule(off[: -len(".weight")]), _row_reader(where[key], key), shapes[key],
                       rows_per_read, dev)
            continue
        sd = {off: get(key)}
        if off in qnames:  # a quantized weight (ours, or an fp8 file) with its scale if any
            for sk in ("weight_scale", "scale_weight"):
                if key[: -len("weight")] + sk in where:
                    sd[off[: -len("weight")] + sk] = get(key[: -len("weight")] + sk)
        elif dtype is not None and sd[off].is_floating_point():
            sd[off] = sd[off].to(dtype)
        model.load_state_dict({k: v.to(dev) for k, v in sd.items()}, strict=False, assign=True)
    for m in model.modules():  # compute in the float parts' dtype (the file's, or dtype)
        if isinstance(m, QuantLinear):
            m.compute_dtype = dtype or (m.bias.dtype if m.bias is not None else torch.float32)
            if m.bias is not None:
                m.bias = nn.Parameter(m.bias.to(m.compute_dtype), requires_grad=False)
    return model.eval().requires_grad_(False)


def _meta_json(meta: dict, key: str, path):
    """A JSON object from the safetensors metadata, or a CheckpointError naming the file."""
    from openwan.checkpoints import CheckpointError
    if not meta.get(key):
        return None
    try:
        v = json.loads(meta[key])
    except (ValueError, RecursionError):
        v = None
    ok = isinstance(v, dict) and (key != "openwan_quant"
                                  or (v.get("kind") in KINDS and isinstance(v.get("layers"), list)))
    if not ok:
        raise CheckpointError(f"{path}: the metadata {key} is not valid (expected a JSON object"
                              f"{' with kind int8/fp8 and a list of layers' if key == 'openwan_quant' else ''}); "
                              f"write the file again with openwan.quant.save_quantized")
    return v


def _row_reader(file, key):
    """read(a, b) -> rows a:b of a tensor, the file mapped only for the read (its pages leave RSS after)."""
    from safetensors import safe_open

    def read(a, b):
        with safe_open(str(file), "pt", device="cpu") as fh:
            return fh.get_slice(key)[a:b]
    return read


def _load_rows(layer: QuantLinear, read, shape, rows: Optional[int], device) -> None:
    """Quantize a float weight given by ``read(a, b)`` (rows a:b), ``rows`` output channels at a time."""
    out = shape[0]
    rows = rows or max(1, (4 << 20) // (4 * max(1, math.prod(shape[1:]))))
    q = torch.empty(shape, dtype=QDTYPE[layer.kind], device=device)
    s = torch.empty(out, dtype=torch.float32, device=device)
    for a in range(0, out, rows):
        qa, sa = quantize_tensor(read(a, a + rows).to(device), layer.kind)
        q[a:a + rows], s[a:a + rows] = qa, sa
    layer.qweight, layer.weight_scale = q, s


def is_quantized_checkpoint(path) -> bool:
    """Whether ``path`` (file or directory) was written by :func:`save_quantized`."""
    from openwan import checkpoints as ck
    try:
        files, _, _ = ck._dit_source(Path(path))
        return bool(_read_shapes(files)[2].get("openwan_quant"))
    except ck.CheckpointError:
        return False


def save_quantized(model: nn.Module, path) -> Path:
    """Write a quantized DiT as one safetensors file (layout in the module docstring); returns the path."""
    from openwan.checkpoints import dit_config_to_official_json, save_safetensors
    info = quant_info(model)
    if info is None:
        raise ValueError("save_quantized: the model has no quantized layer (call quantize_model_ first)")
    if any(k not in KINDS for k in ([info["kind"]] if isinstance(info["kind"], str) else info["kind"])):
        raise ValueError(f"save_quantized: the model holds GGUF {info['kind']} layers, which openwan keeps as read "
                         f"from the .gguf file and does not write; load the GGUF file itself (or save the float "
                         f"state_dict, which holds their dequantized weights)")
    meta = {"format": "pt", "openwan_quant": json.dumps(info)}
    if hasattr(model, "config"):
        meta["openwan_config"] = json.dumps(dit_config_to_official_json(model.config))
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / "diffusion_pytorch_model.safetensors"
    sd = {k: v for k, v in model.state_dict().items()}
    return save_safetensors(sd, path, metadata=meta)


# ============================================================================ LoRA on quantized layers

def load_lora(model: nn.Module, path_or_sd, strength: float = 1.0, name: Optional[str] = None) -> str:
    """Attach a LoRA (any format openwan.training.lora reads) to a model with quantized layers.

    Adapters on :class:`QuantLinear` layers stay unmerged (added in forward); the keys of float layers
    go to ``openwan.training.lora.load_lora`` (the usual parametrization). Returns the adapter name.
    """
    from openwan.checkpoints import CheckpointError, read_state_dict
    from openwan.training import lora as L
    if isinstance(path_or_sd, (str, Path)):
        sd, source, default = read_state_dict(Path(path_or_sd)), str(path_or_sd), Path(path_or_sd).stem
    else:
        sd, source, default = dict(path_or_sd), "LoRA state dict", "lora"
    key = L._key(name or default)
    resolve = L._module_resolver(model)
    modules = dict(model.named_modules())
    entries: dict[str, dict] = {}
    rest = {}
    for k, v in sd.items():   # keys of quantized layers here, the others to the float path
        kk = next((k[len(p):] for p in L._PREFIXES if k.startswith(p)), k)
        mod, role = L._split(kk)
        off = resolve(mod) if role in ("down", "up", "alpha", "diff", "diff_b") else None
        if off is not None and isinstance(modules[off], QuantLinear):
            if role in entries.setdefault(off, {}):
                raise CheckpointError(f"{source}: two keys give the {role} of {off} (e.g. {k})")
            entries[off][role] = v
        else:
            rest[k] = v
    for off, e in entries.items():
        layer = modules[off]
        if ("down" in e) != ("up" in e) or ("alpha" in e and "down" not in e):
            raise CheckpointError(f"{source}: {off} has an incomplete LoRA pair ({', '.join(sorted(e))})")
        if "down" in e:
            A, B = e["down"], e["up"]
            if (A.shape[0] != B.shape[1] or B.shape[0] != layer.out_features
                    or A.flatten(1).shape[1] != layer.in_features):
                raise CheckpointError(f"{source}: {off}: LoRA shapes A {tuple(A.shape)}, B {tuple(B.shape)} do not fit "
                                      f"the weight ({layer.out_features}, {layer.in_features})")
        if "diff" in e and e["diff"].numel() != layer.out_features * layer.in_features:
            raise CheckpointError(f"{source}: the delta of {off}.weight has {e['diff'].numel()} values")
        if "diff_b" in e and (layer.bias is None or e["diff_b"].numel() != layer.out_features):
            raise CheckpointError(f"{source}: {off} has a bias delta that does not fit its bias")
        if key in layer.adapters:
            raise ValueError(f"an adapter named {key!r} is already on {off} (pick another name or remove_lora first)")
    for off, e in entries.items():
        layer = modules[off]
        dev = layer.qweight.device
        if "down" in e:
            A, B = e["down"], e["up"]
            alpha = float(e["alpha"]) if "alpha" in e else float(A.shape[0])
            layer.adapters[key] = L.LowRank(A.to(dev), B.to(dev), scale=alpha / A.shape[0], strength=strength)
        if "diff" in e:
            layer.adapters[key + "_diff"] = L.FullDelta(e["diff"].to(dev).reshape(layer.out_features, -1), strength)
        if "diff_b" in e:
            layer.bias_adapters[key] = L.FullDelta(e["diff_b"].to(dev).reshape(-1), strength)
    if rest:
        L.load_lora(model, rest, strength=strength, name=key)
    elif not entries:
        raise CheckpointError(f"{source}: empty LoRA")
    return key


def remove_lora(model: nn.Module, name: Optional[str] = None) -> None:
    """Detach adapter ``name`` (all when None) from quantized and float layers."""
    from openwan.training import lora as L
    for m in model.modules():
        if isinstance(m, QuantLinear):
            for d in (m.adapters, m.bias_adapters):
                for k in list(d.keys()):
                    if name is None or k in (L._key(name), L._key(name) + "_diff"):
                        del d[k]
    if any(True for _ in L._iter_lora(model)):
        L.remove_lora(model, name)


def convert_checkpoint(src, dst, quantize: str = "int8", dtype: Optional[torch.dtype] = torch.bfloat16, *,
                       build) -> Path:
    """``openwan convert --quantize int8``: a float DiT checkpoint -> a quantized safetensors file
    (``build``: the model class, WanModel)."""
    return save_quantized(load_dit_quantized(src, check_kind(quantize), dtype=dtype, build=build), dst)
