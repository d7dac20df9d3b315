"""LoRA for the Wan DiT: train it, save it, load the community formats, stack, merge and unmerge.

    W  ->  W + sum_i strength_i * (alpha_i / r_i) * B_i @ A_i          (A_i [r, in], B_i [out, r])

How it attaches: the DiT's linear layers (``openwan.models.dit_layers.WanLinear``) read
``layer.weight`` in their forward, so LoRA is a *parametrization* of the weight
(``torch.nn.utils.parametrize``): reading ``layer.weight`` returns W plus the adapters' deltas,
gradients flow to A and B, and the base W stays untouched (and frozen). Several adapters can sit
on one layer (stacking); full deltas (``.diff`` / ``.diff_b`` / ``.diff_m`` keys of the LightX2V, CausVid
and Self-Forcing files) use the same mechanism on a weight (Linear or norm), a bias or a ``modulation``
table. Layers are found by ``isinstance(module, nn.Linear)``, so Linear subclasses work the same.

File formats (``save_lora(format=...)`` writes the first three; ``load_lora`` reads all):

* ``diffusers`` (PEFT): ``transformer.<diffusers module>.lora_A.weight`` / ``lora_B.weight``; no
  alpha (the scale alpha/r is folded into lora_B so any loader gets the same delta). Loads with
  diffusers' ``WanPipeline.load_lora_weights`` / ``WanTransformer3DModel.load_lora_adapter``.
* ``comfyui`` (official names): ``diffusion_model.<official module>.lora_down.weight`` /
  ``lora_up.weight`` / ``alpha``. Loads in ComfyUI and in diffusers (its Wan converter).
* ``musubi`` (kohya style): ``lora_unet_<official module with _>.lora_down.weight`` / ``lora_up.weight``
  / ``alpha``.
* also read: ``diffusion_model.*`` with ``lora_A``/``lora_B``; ``model.diffusion_model.*``;
  ``base_model.model.*`` (PEFT); ``lora_transformer_*`` (kohya names over diffusers modules);
  full deltas ``.diff`` (weights, norms included), ``.diff_b`` / ``lora_B.bias`` (biases), ``.diff_m``
  (``blocks.N.diff_m`` / ``head.diff_m``: the modulation tables), ``<module>.<parameter>.diff``. Keys
  that match no parameter raise a CheckpointError listing them (``strict=False``: a warning listing
  them); none is dropped silently.

Merging (:func:`merge_lora`) writes W + delta into the weight (computed exactly as the dynamic
path computes it, so merged and unmerged outputs are identical) and keeps the original tensor, so
:func:`unmerge_lora` restores it bit for bit.
"""
from __future__ import annotations

import fnmatch
import json
import math
import re
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

DEFAULT_TARGETS = ("q", "k", "v", "o", "ffn.0", "ffn.2")
FORMATS = ("diffusers", "comfyui", "musubi")
_MERGED_ATTR = "_openwan_lora_merged"


# ============================================================================ the parametrization

class LowRank(nn.Module):
    """One adapter on one weight: delta = strength * scale * B @ A (reshaped to the weight's shape)."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor, scale: float = 1.0, strength: float = 1.0,
                 trainable: bool = False):
        super().__init__()
        self.A = nn.Parameter(A, requires_grad=trainable)
        self.B = nn.Parameter(B, requires_grad=trainable)
        self.scale = float(scale)
        self.strength = float(strength)

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def delta(self, shape) -> torch.Tensor:
        d = self.B.float().flatten(1) @ self.A.float().flatten(1)
        return (d * (self.scale * self.strength)).reshape(shape)

    def apply(self, x: torch.Tensor, shape) -> torch.Tensor:
        """delta @ x for a Linear, as strength * scale * B (A x): rank-r intermediates only."""
        h = F.linear(F.linear(x.to(self.A.dtype), self.A), self.B)
        return (h * (self.scale * self.strength)).to(x.dtype)


class FullDelta(nn.Module):
    """A full-size additive delta (``.diff`` / ``.diff_b`` keys): delta = strength * D."""

    def __init__(self, D: torch.Tensor, strength: float = 1.0):
        super().__init__()
        self.register_buffer("D", D)
        self.strength = float(strength)

    def delta(self, shape) -> torch.Tensor:
        return (self.D.float() * self.strength).reshape(shape)

    def apply(self, x: torch.Tensor, shape) -> torch.Tensor:
        return F.linear(x, self.delta(shape).to(x.dtype))


class LoRAParametrization(nn.Module):
    """weight -> weight + sum of the adapters' deltas (computed in fp32, cast back to weight's dtype)."""

    def __init__(self):
        super().__init__()
        self.adapters = nn.ModuleDict()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not len(self.adapters):
            return w
        d = None
        for a in self.adapters.values():
            d = a.delta(w.shape) if d is None else d + a.delta(w.shape)
        if w.dtype == torch.float32:
            return w + d
        return (w.float() + d).to(w.dtype)

    def linear(self, x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """``F.linear(x, self(w), bias)`` without building the adapted weight: W x + sum_i delta_i x.

        The DiT's ``linear`` takes this path while gradients are on (training). Autograd then keeps x
        and the rank-r activations A x instead of a full copy of W + delta per layer, and the
        adapters' backward costs O(tokens (in + out) r) instead of a full-size weight gradient. With
        gradients off (inference) the DiT reads ``layer.weight`` (the merged weight), which is cheaper
        for many tokens and gives exactly :func:`merge_lora`'s outputs; the two paths differ by fp
        rounding only (tested).
        """
        y = F.linear(x, w, bias)
        for a in self.adapters.values():
            y = y + a.apply(x, w.shape)
        return y


def _param_lora(module: nn.Module, pname: str, create: bool) -> Optional[LoRAParametrization]:
    if parametrize.is_parametrized(module, pname):
        for p in module.parametrizations[pname]:
            if isinstance(p, LoRAParametrization):
                return p
        raise ValueError(f"{type(module).__name__}.{pname} already has another parametrization")
    if not create:
        return None
    p = LoRAParametrization()
    parametrize.register_parametrization(module, pname, p, unsafe=True)
    return p


def _iter_lora(model: nn.Module):
    """(module name, module, param name, LoRAParametrization) for every LoRA'd parameter."""
    for name, m in model.named_modules():
        if not hasattr(m, "parametrizations"):
            continue
        for pname in list(m.parametrizations.keys()):
            for p in m.parametrizations[pname]:
                if isinstance(p, LoRAParametrization):
                    yield name, m, pname, p


def _key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _check_not_merged(model):
    if getattr(model, _MERGED_ATTR, None):
        raise RuntimeError("the LoRA adapters are merged into the weights: call unmerge_lora(model) first")


# ============================================================================ targets / training

def _clean_name(name: str) -> str:
    """A module name without parametrization parts (stable across LoRA attach/detach)."""
    return re.sub(r"\.parametrizations\.[^.]+\.original$", "", name)


def find_targets(model: nn.Module, targets: Union[str, Sequence[str]] = DEFAULT_TARGETS) -> list[str]:
    """Names of the Linear layers matching ``targets``.

    A pattern matches a module name when it equals the name, is a suffix of it after a dot
    (``q`` matches ``blocks.3.self_attn.q`` and ``blocks.3.cross_attn.q``; ``self_attn.q`` only the
    first; ``ffn.0`` the FFN's first Linear), matches it as a glob (``blocks.1*.ffn.*``), or, with a
    ``re:`` prefix, as a regular expression (``re:blocks\\.(0|1)\\..*``).
    """
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    if not targets:
        raise ValueError("no LoRA target patterns given")
    names = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.Linear) or ".parametrizations." in name:
            continue
        for pat in targets:
            if pat.startswith("re:"):
                hit = re.fullmatch(pat[3:], name) is not None
            elif any(c in pat for c in "*?["):
                hit = fnmatch.fnmatchcase(name, pat)
            else:
                hit = name == pat or name.endswith("." + pat)
            if hit:
                names.append(name)
                break
    if not names:
        raise ValueError(f"LoRA targets {list(targets)} match no Linear layer of the model "
                         f"(names look like blocks.0.self_attn.q, blocks.0.ffn.0)")
    return names


def add_lora(model: nn.Module, rank: int = 16, alpha: Optional[float] = None,
             targets: Union[str, Sequence[str]] = DEFAULT_TARGETS, name: str = "default",
             seed: int = 0, dtype: torch.dtype = torch.float32) -> list[nn.Parameter]:
    """Attach a trainable adapter to every targeted Linear; returns its parameters (A, B pairs).

    A starts like PEFT's (uniform in +-1/sqrt(in_features), from a generator seeded by ``seed``),
    B at zero, so the model's output is unchanged at step 0. ``alpha`` defaults to ``rank``
    (scale 1). The base weights are not frozen here (the trainer does it).
    """
    _check_not_merged(model)
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    alpha = float(rank if alpha is None else alpha)
    g = torch.Generator().manual_seed(int(seed))
    params = []
    modules = dict(model.named_modules())
    for n in find_targets(model, targets):
        layer = modules[n]
        w = layer.weight
        out_f, in_f = w.shape
        bound = 1.0 / math.sqrt(in_f)
        A = (torch.rand(rank, in_f, generator=g, dtype=torch.float64) * 2 - 1) * bound
        B = torch.zeros(out_f, rank, dtype=torch.float64)
        p = _param_lora(layer, "weight", create=True)
        if _key(name) in p.adapters:
            raise ValueError(f"adapter {name!r} already exists on {n}")
        ad = LowRank(A.to(dtype=dtype, device=w.device), B.to(dtype=dtype, device=w.device),
                     scale=alpha / rank, trainable=True)
        p.adapters[_key(name)] = ad
        params += [ad.A, ad.B]
    return params


def lora_parameters(model: nn.Module, name: Optional[str] = None) -> list[nn.Parameter]:
    out = []
    for _, _, _, p in _iter_lora(model):
        for k, a in p.adapters.items():
            if isinstance(a, LowRank) and (name is None or k == _key(name)):
                out += [a.A, a.B]
    return out


def adapter_names(model: nn.Module) -> list[str]:
    seen = []
    for _, _, _, p in _iter_lora(model):
        for k in p.adapters:
            if k not in seen:
                seen.append(k)
    return seen


def set_lora_strength(model: nn.Module, name: str, strength: float) -> None:
    _check_not_merged(model)
    found = False
    for _, _, _, p in _iter_lora(model):
        for k in (_key(name), _key(name) + "_diff"):  # a full delta beside a low-rank pair is "<name>_diff"
            if k in p.adapters:
                p.adapters[k].strength = float(strength)
                found = True
    if not found:
        raise ValueError(f"no LoRA adapter named {name!r} (have: {adapter_names(model)})")


# ============================================================================ saving

def _full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP2 shard) gathered to a full tensor; a plain tensor as is."""
    if hasattr(t, "full_tensor"):
        return t.full_tensor()
    return t


def _official_to_diffusers_module(name: str) -> str:
    from openwan.checkpoints import dit_official_to_diffusers
    return next(iter(dit_official_to_diffusers({name + ".weight": None})))[: -len(".weight")]


def _diffusers_to_official_module(name: str) -> str:
    from openwan.checkpoints import dit_diffusers_to_official
    return next(iter(dit_diffusers_to_official({name + ".weight": None})))[: -len(".weight")]


def lora_state_dict(model: nn.Module, name: Optional[str] = None, format: str = "diffusers",
                    dtype: Optional[torch.dtype] = None) -> dict[str, torch.Tensor]:
    """The low-rank adapter ``name`` (default: the only / the trainable one) as a state dict in ``format``.

    Under FSDP2 every process must call it (shards are gathered).
    """
    if format not in FORMATS:
        raise ValueError(f"LoRA format must be one of {FORMATS}, got {format!r}")
    names = adapter_names(model)
    if name is None:
        trainable = [n for n in names if any(a.A.requires_grad for _, _, _, p in _iter_lora(model)
                                             for k, a in p.adapters.items() if k == n and isinstance(a, LowRank))]
        cands = trainable or names
        if len(cands) != 1:
            raise ValueError(f"say which adapter to save (name=...); the model has {names}")
        name = cands[0]
    key = _key(name)
    out = {}
    for mname, _, pname, p in _iter_lora(model):
        a = p.adapters[key] if key in p.adapters else None
        if a is None:
            continue
        if not isinstance(a, LowRank) or pname != "weight":
            raise ValueError(f"adapter {name!r} on {mname}.{pname} is not a low-rank weight adapter; it cannot be saved")
        A = _full(a.A.detach()).float().cpu()
        B = _full(a.B.detach()).float().cpu()
        alpha = a.scale * a.rank
        if format == "diffusers":
            base = "transformer." + _official_to_diffusers_module(mname)
            out[f"{base}.lora_A.weight"] = A
            out[f"{base}.lora_B.weight"] = B * (a.scale * a.strength)
        else:
            base = ("diffusion_model." + mname) if format == "comfyui" else ("lora_unet_" + mname.replace(".", "_"))
            out[f"{base}.lora_down.weight"] = A
            out[f"{base}.lora_up.weight"] = B * a.strength
            out[f"{base}.alpha"] = torch.tensor(float(alpha))
    if not out:
        raise ValueError(f"no adapter named {name!r} on the model")
    if dtype is not None:
        out = {k: (v if k.endswith(".alpha") else v.to(dtype)) for k, v in out.items()}
    return out


def save_lora(model: nn.Module, path: Union[str, Path], format: str = "diffusers", name: Optional[str] = None,
              dtype: Optional[torch.dtype] = None, metadata: Optional[dict] = None) -> Optional[Path]:
    """Write adapter ``name`` to a .safetensors file (atomically) in ``format`` (diffusers | comfyui | musubi).

    Under torch.distributed every process must call it; process 0 writes.
    """
    from openwan.checkpoints import save_safetensors
    sd = lora_state_dict(model, name, format, dtype)
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return None
    meta = {"format": "pt", "openwan_lora_format": format}
    ranks = sorted({v.shape[0] for k, v in sd.items() if k.endswith(("lora_A.weight", "lora_down.weight"))})
    meta["openwan_lora_rank"] = json.dumps(ranks)
    if metadata:
        meta.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    return save_safetensors(sd, Path(path), metadata=meta)


# ============================================================================ loading

_SUFFIXES = [  # (key suffix, role), longest first
    (".lora_A.default.weight", "down"), (".lora_B.default.weight", "up"),
    (".lora_down.weight", "down"), (".lora_up.weight", "up"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora_B.bias", "diff_b"), (".diff_b", "diff_b"), (".diff_m", "diff_m"), (".diff", "diff"),
    (".alpha", "alpha"),
]
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.",
             "lora_unet_", "lora_transformer_", "unet.")
# the parameter each role changes: low-rank pairs and ``diff`` the weight, ``diff_b`` the bias,
# ``diff_m`` the modulation table of a block or of the head (LightX2V / CausVid / Self-Forcing files)
_ROLE_PARAM = {"down": "weight", "up": "weight", "alpha": "weight", "diff": "weight", "diff_b": "bias",
               "diff_m": "modulation"}


def _split(key: str) -> tuple[str, Optional[str]]:
    for suf, role in _SUFFIXES:
        if key.endswith(suf):
            return key[: -len(suf)], role
    return key, None


def _module_resolver(model: nn.Module):
    """A function: a module name in any naming (official, diffusers, underscored) -> official name or None."""
    official = set()
    for name, m in model.named_modules():
        if ".parametrizations" in name or not name:
            continue
        if any(isinstance(v, nn.Parameter) for v in m._parameters.values()) or hasattr(m, "parametrizations"):
            official.add(name)
    under = {n.replace(".", "_"): n for n in official}
    diff_under = {}
    for n in official:
        try:
            diff_under[_official_to_diffusers_module(n).replace(".", "_")] = n
        except Exception:  # noqa: BLE001 - names outside the key map
            pass

    def resolve(name: str) -> Optional[str]:
        if name in official:
            return name
        try:
            o = _diffusers_to_official_module(name)
        except Exception:  # noqa: BLE001
            o = None
        if o in official:
            return o
        return under.get(name) or diff_under.get(name)

    return resolve


def _param_names(module: nn.Module) -> set:
    names = set(module._parameters)
    if hasattr(module, "parametrizations"):
        names |= set(module.parametrizations.keys())
    return names


def parse_lora(model: nn.Module, sd: dict[str, torch.Tensor], source: str = "LoRA", strict: bool = True
               ) -> dict[tuple[str, str], dict]:
    """A LoRA state dict in any supported format -> {(official module name, parameter name): {role: tensor}}
    with roles down, up, alpha (a low-rank pair on the weight) and diff (a full delta of that parameter).

    Every key is read: ``lora_down``/``lora_up``/``lora_A``/``lora_B`` (+ ``alpha``) pairs, and the full deltas
    ``diff`` (a weight, e.g. a norm's), ``diff_b`` (a bias) and ``diff_m`` (a block's or the head's
    ``modulation``); ``<module>.<parameter>.diff`` names any other parameter. Keys that match no parameter
    of the model raise a CheckpointError listing them (``strict=False``: a warning listing them, and the
    rest is loaded). Incomplete pairs and shapes that do not fit are errors either way.
    """
    from openwan.checkpoints import CheckpointError
    resolve = _module_resolver(model)
    modules = dict(model.named_modules())
    entries: dict[tuple[str, str], dict] = {}
    unmatched, unsupported = [], []
    for key, v in sd.items():
        if "dora_scale" in key:
            unsupported.append(key)
            continue
        k = key
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
                break
        mod, role = _split(k)
        target = None
        if role is not None:
            off = resolve(mod)
            pname = _ROLE_PARAM[role]
            if off is None and role == "diff" and "." in mod:  # <module>.<parameter>.diff (ComfyUI's generic keys)
                parent, _, pname = mod.rpartition(".")
                off = resolve(parent)
            if off is not None and pname in _param_names(modules[off]):
                target = (off, pname)
        if target is None:
            unmatched.append(key)
            continue
        e = entries.setdefault(target, {})
        r = "diff" if role in ("diff_b", "diff_m") else role
        if r in e:
            raise CheckpointError(f"{source}: two keys give the {role} of {target[0]}.{target[1]} (e.g. {key})")
        e[r] = v
    if unsupported:
        raise CheckpointError(f"{source}: DoRA keys are not supported: {unsupported[:5]}")
    if unmatched:
        width = getattr(getattr(model, "config", None), "dim", "?")
        shown = ", ".join(sorted(unmatched)[:12]) + (f", ... ({len(unmatched)} in all)" if len(unmatched) > 12 else "")
        msg = (f"{source}: {len(unmatched)} key(s) match no layer of this model: {shown}. "
               f"Is this a LoRA for another model (Wan 2.1 {width}-wide DiT expected), or in an unknown format?")
        if strict:
            raise CheckpointError(msg)
        warnings.warn(msg + " They are NOT applied.", stacklevel=3)
    for (off, pname), e in entries.items():
        where = off if pname == "weight" else f"{off}.{pname}"
        if ("down" in e) != ("up" in e):
            raise CheckpointError(f"{source}: {where} has a LoRA {'down/A' if 'down' in e else 'up/B'} matrix "
                                  f"but not its {'up/B' if 'down' in e else 'down/A'} partner")
        if "alpha" in e and "down" not in e:
            raise CheckpointError(f"{source}: {where} has an alpha but no LoRA matrices")
        w = getattr(modules[off], pname)
        if "down" in e:
            A, B = e["down"], e["up"]
            if (w.ndim < 2 or A.shape[0] != B.shape[1] or B.shape[0] != w.shape[0]
                    or A.flatten(1).shape[1] != w[0].numel()):
                raise CheckpointError(f"{source}: {where}: LoRA shapes A {tuple(A.shape)}, B {tuple(B.shape)} do "
                                      f"not fit the weight {tuple(w.shape)}")
        if "diff" in e and e["diff"].numel() != w.numel():
            raise CheckpointError(f"{source}: the delta of {off}.{pname} has {e['diff'].numel()} values, "
                                  f"the parameter {w.numel()} {tuple(w.shape)}")
    return entries


def load_lora(model: nn.Module, path_or_sd: Union[str, Path, dict], strength: float = 1.0,
              name: Optional[str] = None, strict: bool = True) -> str:
    """Attach a LoRA file (or state dict) of any supported format as adapter ``name``; returns the name.

    The adapter is applied on the fly (``merge_lora`` bakes it in). Loading several adapters stacks
    them (their deltas add). ``strength`` multiplies this adapter's deltas (low-rank and full).
    Keys that match no parameter are an error listing them (``strict=False``: a warning, see
    :func:`parse_lora`).
    """
    _check_not_merged(model)
    if isinstance(path_or_sd, (str, Path)):
        from openwan.checkpoints import read_state_dict
        sd = read_state_dict(Path(path_or_sd))
        source = str(path_or_sd)
        default_name = Path(path_or_sd).stem
    else:
        sd = dict(path_or_sd)
        source = "LoRA state dict"
        default_name = "lora"
    if not sd:
        from openwan.checkpoints import CheckpointError
        raise CheckpointError(f"{source}: empty LoRA")
    entries = parse_lora(model, sd, source, strict=strict)
    existing = set(adapter_names(model))
    key = _key(name or default_name)
    if name is None:
        base, i = key, 1
        while key in existing:
            i += 1
            key = f"{base}_{i}"
    elif key in existing:
        raise ValueError(f"an adapter named {name!r} is already loaded (pick another name or remove_lora first)")
    modules = dict(model.named_modules())
    for (off, pname), e in entries.items():
        layer = modules[off]
        w = getattr(layer, pname)
        dev = torch.device("cpu") if w.is_meta else w.device   # a released weight (openwan.release): CPU
        if "down" in e:
            A, B = e["down"], e["up"]
            alpha = float(e["alpha"]) if "alpha" in e else float(A.shape[0])
            ad = LowRank(A.to(dev), B.to(dev), scale=alpha / A.shape[0], strength=strength)
            _param_lora(layer, pname, create=True).adapters[key] = ad
        if "diff" in e:
            # beside a low-rank pair on the same weight, the full delta is a second adapter of this name
            slot = key + "_diff" if "down" in e else key
            _param_lora(layer, pname, create=True).adapters[slot] = \
                FullDelta(e["diff"].to(dev).reshape(w.shape), strength)
    return key


def remove_lora(model: nn.Module, name: Optional[str] = None) -> None:
    """Detach adapter ``name`` (all when None), restoring the base weights exactly."""
    if getattr(model, _MERGED_ATTR, None):
        unmerge_lora(model)
    for _, m, pname, p in list(_iter_lora(model)):
        if name is None:
            keys = list(p.adapters.keys())
        else:
            keys = [k for k in p.adapters.keys() if k in (_key(name), _key(name) + "_diff")]
        for k in keys:
            del p.adapters[k]
        if not len(p.adapters):
            parametrize.remove_parametrizations(m, pname, leave_parametrized=False)


# ============================================================================ merge / unmerge

@torch.no_grad()
def merge_lora(model: nn.Module, keep_original: bool = True) -> int:
    """Bake every attached adapter into its weight (plain tensors again, no per-forward cost).

    The merged weight is computed exactly as the on-the-fly path computes it, so outputs are
    identical. With ``keep_original`` the base tensors are kept (memory: one extra copy of the
    adapted weights) and :func:`unmerge_lora` restores them bit for bit; without it, unmerge
    subtracts the deltas (exact up to float rounding). Returns the number of merged parameters.
    """
    _check_not_merged(model)
    record = []
    for _, m, pname, p in list(_iter_lora(model)):
        merged = getattr(m, pname).detach().clone()
        parametrize.remove_parametrizations(m, pname, leave_parametrized=False)
        param = getattr(m, pname)
        original = param.data
        param.data = merged
        record.append((m, pname, original if keep_original else None, p))
    setattr(model, _MERGED_ATTR, record)
    return len(record)


@torch.no_grad()
def unmerge_lora(model: nn.Module) -> int:
    """Undo :func:`merge_lora`: restore the base weights and re-attach the adapters on the fly."""
    record = getattr(model, _MERGED_ATTR, None)
    if not record:
        raise RuntimeError("no merged LoRA to unmerge (merge_lora was not called)")
    for m, pname, original, p in record:
        param = getattr(m, pname)
        if original is None:
            w = param.data
            d = None
            for a in p.adapters.values():
                d = a.delta(w.shape) if d is None else d + a.delta(w.shape)
            original = (w.float() - d).to(w.dtype)
        param.data = original
        parametrize.register_parametrization(m, pname, p, unsafe=True)
    setattr(model, _MERGED_ATTR, None)
    return len(record)


def lora_summary(model: nn.Module) -> dict:
    """{adapter name: {"layers": n, "rank": r or None, "strength": s}} of the attached adapters."""
    out: dict = {}
    for _, _, _, p in _iter_lora(model):
        for k, a in p.adapters.items():
            e = out.setdefault(k, {"layers": 0, "rank": None, "strength": a.strength})
            e["layers"] += 1
            if isinstance(a, LowRank):
                e["rank"] = a.rank
    return out

