"""The text encoder: umT5-XXL, encoder half only (Wan 2.1 paper, section 3: "umT5 ... encodes the text").

Pipeline of one prompt, top to bottom::

    prompt --clean--> text --tokenize (max 512, EOS appended)--> ids, mask
           --umT5 encoder (24 layers, own relative bias per layer)--> hidden [L, 4096]
           --keep the L real tokens (EOS included)--> context for the DiT's cross-attention

The transformer is :class:`openwan.models.umt5.UMT5Encoder`, openwan's own copy of transformers'
``UMT5EncoderModel`` (same parameter names, outputs tested equal; the same math as the reference: no
1/sqrt(d) attention scaling, a bidirectional relative-position bias of 32 buckets up to distance 128
in every layer, gated tanh-GELU feed-forward ``fc2(fc1(x) * gelu_tanh(gate(x)))``, RMS norm in fp32),
so that encoding does not import ``transformers``; the tokenizer is transformers' ``AutoTokenizer``,
except a plain ``tokenizer.json`` one (the shipped tiny tokenizer), read by ``tokenizers`` directly.
This module adds what the published checkpoints and the pipeline need around it:

* :func:`official_to_hf` / :func:`hf_to_official`: the key map between the official
  ``models_t5_umt5-xxl-enc-bf16.pth`` and transformers' names (a pure rename, no tensor changes);
* :meth:`TextEncoder.from_pretrained`: official file or checkpoint directory, a transformers /
  diffusers ``text_encoder/`` folder, or a diffusers root; built on the meta device and loaded with
  ``assign`` so an 11 GB file is never held twice;
* prompt cleaning, tokenization with a truncation warning, an on-disk cache of embeddings,
  ``release()`` to free the weights once the prompts are encoded;
* :data:`TINY_TOKENIZER_DIR`: a 1000-piece tokenizer shipped with the package for tests and the demo.
"""
from __future__ import annotations

import gc
import hashlib
import html
import json
import logging
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from openwan.checkpoints import (CheckpointError, atomic_write, check_keys, read_safetensors,
                                 read_state_dict, save_safetensors, save_sharded, safetensors_files,
                                 strip_prefix, write_json)
from openwan.configs import OFFICIAL_FILES, TextEncoderConfig
from openwan.models.umt5 import UMT5Encoder

logger = logging.getLogger(__name__)

#: Folder of the tiny tokenizer shipped with the package (T5 ids: <pad>=0, </s>=1, <unk>=2).
TINY_TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "assets" / "tiny_tokenizer"
#: Its vocabulary size: a text encoder used with it needs ``vocab >= TINY_TOKENIZER_VOCAB``.
TINY_TOKENIZER_VOCAB = 1000

OFFICIAL_T5_FILE = OFFICIAL_FILES["t5"]              # models_t5_umt5-xxl-enc-bf16.pth
OFFICIAL_TOKENIZER_DIR = OFFICIAL_FILES["tokenizer"]  # google/umt5-xxl
CONFIG_FILE = "t5_config.json"                       # written beside the .pth for non-default configs
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
CACHE_ENV = "OPENWAN_CACHE"

# ----------------------------------------------------------------------------- prompt cleaning


_PLAIN = re.compile(r"[\x20-\x25\x27-\x7e]*")   # printable ASCII except "&" (HTML entities)


def clean_prompt(text: str) -> str:
    """The reference's cleaning: ftfy.fix_text, html.unescape twice, strip, collapse whitespace."""
    if not isinstance(text, str):
        raise ValueError(f"a prompt must be a string, got {type(text).__name__}")
    if not _PLAIN.fullmatch(text):   # ftfy leaves printable ASCII without "&" as it is (and costs ~50 ms to import)
        import ftfy
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


# ----------------------------------------------------------------------------- config

def to_hf_config(cfg: TextEncoderConfig):
    """TextEncoderConfig -> transformers UMT5Config (encoder only, umT5 conventions)."""
    from transformers import UMT5Config
    if cfg.dim_attn % cfg.num_heads:
        raise ValueError(f"text encoder dim_attn {cfg.dim_attn} is not divisible by num_heads {cfg.num_heads}")
    hf = UMT5Config(
        vocab_size=cfg.vocab, d_model=cfg.dim, d_kv=cfg.dim_attn // cfg.num_heads, d_ff=cfg.dim_ffn,
        num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        relative_attention_num_buckets=cfg.num_buckets, relative_attention_max_distance=cfg.max_dist,
        layer_norm_epsilon=cfg.eps, feed_forward_proj="gated-gelu", dropout_rate=0.0,
        is_encoder_decoder=False, use_cache=False,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    hf.architectures = ["UMT5EncoderModel"]
    return hf


def from_hf_config(hf, text_len: int = 512) -> TextEncoderConfig:
    """transformers (U)MT5 config (object or dict) -> TextEncoderConfig."""
    d = hf if isinstance(hf, dict) else hf.to_dict()
    proj = d.get("feed_forward_proj", "gated-gelu")
    if proj != "gated-gelu":
        raise CheckpointError(f"text encoder config has feed_forward_proj={proj!r}; Wan's umT5 needs 'gated-gelu'")
    try:
        return TextEncoderConfig(
            vocab=d["vocab_size"], dim=d["d_model"], dim_attn=d["d_kv"] * d["num_heads"], dim_ffn=d["d_ff"],
            num_heads=d["num_heads"], num_layers=d["num_layers"],
            num_buckets=d.get("relative_attention_num_buckets", 32),
            max_dist=d.get("relative_attention_max_distance", 128),
            text_len=text_len, eps=d.get("layer_norm_epsilon", 1e-6))
    except KeyError as e:
        raise CheckpointError(f"text encoder config.json lacks the field {e}") from None


def infer_config(official_sd: dict, base: TextEncoderConfig = TextEncoderConfig()) -> TextEncoderConfig:
    """Read every size the shapes of an official state dict reveal (the bias table gives the heads).

    max_dist, eps and text_len are not in the shapes: they come from ``base``.
    """
    try:
        vocab, dim = official_sd["token_embedding.weight"].shape
        dim_attn = official_sd["blocks.0.attn.q.weight"].shape[0]
        dim_ffn = official_sd["blocks.0.ffn.fc1.weight"].shape[0]
        num_buckets, num_heads = official_sd["blocks.0.pos_embedding.embedding.weight"].shape
    except KeyError as e:
        raise CheckpointError(f"official text encoder weights lack {e}; is this models_t5_umt5-xxl-enc-bf16.pth?") \
            from None
    layers = {int(m.group(1)) for k in official_sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    return base.replace(vocab=int(vocab), dim=int(dim), dim_attn=int(dim_attn), dim_ffn=int(dim_ffn),
                        num_heads=int(num_heads), num_layers=max(layers) + 1, num_buckets=int(num_buckets))


# ----------------------------------------------------------------------------- key map

# official block-relative name -> transformers block-relative name
_BLOCK_MAP = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",   # gelu_tanh(gate(x)) ...
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",      # ... * fc1(x)
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_BLOCK_MAP_INV = {v: k for k, v in _BLOCK_MAP.items()}
_TOP_MAP = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}
_TOP_MAP_INV = {v: k for k, v in _TOP_MAP.items()}
_TOP_MAP_INV["encoder.embed_tokens.weight"] = "token_embedding.weight"  # tied copy of shared.weight


def official_to_hf(sd: dict) -> dict:
    """Official umT5 encoder keys -> transformers ``UMT5EncoderModel`` keys (same tensors).

    The embedding goes to ``shared.weight`` only; the loader ties ``encoder.embed_tokens`` to it.
    Unknown keys raise a CheckpointError listing them.
    """
    out, unknown = {}, []
    for k, v in sd.items():
        if k in _TOP_MAP:
            out[_TOP_MAP[k]] = v
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", k)
        if m and m.group(2) in _BLOCK_MAP:
            out[f"encoder.block.{m.group(1)}.{_BLOCK_MAP[m.group(2)]}"] = v
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(f"unknown keys in an official umT5 state dict: {sorted(unknown)[:8]} "
                              f"({len(unknown)} in all)")
    return out


def hf_to_official(sd: dict) -> dict:
    """transformers ``UMT5EncoderModel`` keys -> official keys (inverse of :func:`official_to_hf`)."""
    out, unknown = {}, []
    for k, v in sd.items():
        if k in _TOP_MAP_INV:
            name = _TOP_MAP_INV[k]
            if name not in out or k == "shared.weight":
                out[name] = v
            continue
        m = re.fullmatch(r"encoder\.block\.(\d+)\.(.+)", k)
        if m and m.group(2) in _BLOCK_MAP_INV:
            out[f"blocks.{m.group(1)}.{_BLOCK_MAP_INV[m.group(2)]}"] = v
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(f"unknown keys in a transformers UMT5 encoder state dict: {sorted(unknown)[:8]} "
                              f"({len(unknown)} in all)")
    return out


def _is_official(sd: dict) -> bool:
    return "token_embedding.weight" in sd or any(k.startswith("blocks.") for k in sd)


# ----------------------------------------------------------------------------- tokenizer

def load_tokenizer(path: Union[str, os.PathLike]):
    """AutoTokenizer from a local folder (never the hub), with a clear error when it is missing."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"tokenizer folder not found: {path}. It must hold tokenizer.json (or spiece.model) and "
            f"tokenizer_config.json: for the official checkpoint that is <checkpoint dir>/{OFFICIAL_TOKENIZER_DIR}, "
            f"for diffusers the tokenizer/ folder; or pass tokenizer_path=.")
    if not any((path / f).is_file() for f in ("tokenizer.json", "spiece.model")):
        raise CheckpointError(f"no tokenizer.json or spiece.model in {path}: the tokenizer files are missing "
                              f"(copy google/umt5-xxl's tokenizer files there, or pass tokenizer_path=)")
    from openwan.models.tokenizer import FastTokenizer, is_plain_fast_tokenizer
    if is_plain_fast_tokenizer(path):
        return FastTokenizer(path)
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many types here
        raise CheckpointError(f"cannot load the tokenizer in {path}: {str(e).splitlines()[0]}") from None


def _files_fingerprint(files: Sequence[Path], extra: str = "") -> str:
    """Cheap identity of weight/tokenizer files: size, mtime and the first and last MiB of each."""
    h = hashlib.sha256(extra.encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(2**20))
            if st.st_size > 2**20:
                fh.seek(max(st.st_size - 2**20, 2**20))
                h.update(fh.read())
    return h.hexdigest()


def _tensor_fingerprint(sd: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach()
        h.update(f"{k}|{tuple(t.shape)}|{t.dtype}".encode())
        if t.device.type != "meta":
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def default_cache_dir() -> Optional[Path]:
    """The cache folder OPENWAN_CACHE asks for: unset/0/false = off; 1/true/yes = ~/.cache/openwan/text;
    any other value = that folder (+ /text)."""
    v = os.environ.get(CACHE_ENV, "").strip()
    if v.lower() in ("", "0", "false", "no", "off"):
        return None
    if v.lower() in ("1", "true", "yes", "on"):
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "openwan"
    else:
        root = Path(v).expanduser()
    return root / "text"


# ----------------------------------------------------------------------------- the encoder

class TextEncoder:
    """umT5 encoder + tokenizer + cleaning + cache: prompts in, per-prompt token embeddings out.

    ``TextEncoder(config, tokenizer_path)`` builds a randomly initialised encoder (tests, demo);
    :meth:`from_pretrained` loads published weights. ``encode`` returns one ``[L_i, dim]`` tensor per
    prompt, real tokens only (the EOS included, the padding dropped), as the reference does.

    ``dtype`` defaults to float32 on CPU (bf16 matmuls are very slow there; note the XXL encoder then
    needs ~23 GB) and bfloat16 elsewhere (the published precision).
    """

    def __init__(self, config: TextEncoderConfig, tokenizer_path: Union[str, os.PathLike, None] = None,
                 dtype: Optional[torch.dtype] = None, device: Union[str, torch.device, None] = None,
                 cache_dir: Union[str, os.PathLike, None, bool] = None, *, _model=None,
                 _fingerprint: Optional[str] = None, seed: Optional[int] = None):
        self.config = config
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype or (torch.float32 if self.device.type == "cpu" else torch.bfloat16)
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path is not None else TINY_TOKENIZER_DIR
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        if _model is None:
            # transformers' initialisation is the reference for a random encoder (the demo's frozen
            # text encoder is a seeded random one): build it there, run it here
            from transformers import UMT5EncoderModel
            if seed is not None:
                torch.manual_seed(seed)
            hf = UMT5EncoderModel(to_hf_config(config))
            _model = UMT5Encoder(config)
            _model.load_state_dict(hf.state_dict(), strict=True)
            del hf
        self.model = _model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self._fingerprint = _fingerprint
        self._tok_fingerprint: Optional[str] = None
        if cache_dir is False:
            self.cache_dir = None
        else:
            self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()

    # ---------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], tokenizer_path: Union[str, os.PathLike, None] = None,
                        dtype: Optional[torch.dtype] = None, device: Union[str, torch.device, None] = None,
                        config: Optional[TextEncoderConfig] = None,
                        cache_dir: Union[str, os.PathLike, None, bool] = None) -> "TextEncoder":
        """Load published weights. ``path`` is one of:

        * the official ``models_t5_umt5-xxl-enc-bf16.pth`` (tokenizer: ``<its dir>/google/umt5-xxl``);
        * an official checkpoint directory holding that file;
        * a transformers/diffusers ``text_encoder/`` folder (config.json + safetensors; tokenizer: the
          sibling ``tokenizer/`` folder, or the folder itself when it holds tokenizer files);
        * a diffusers root (``text_encoder/`` and ``tokenizer/`` subfolders).

        For official files the config is read from the tensor shapes (``config=`` overrides, and a
        ``t5_config.json`` beside the file, written by :meth:`save_pretrained`, supplies the rest).
        """
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"text encoder checkpoint not found: {path}")
        if path.is_dir():
            if (path / OFFICIAL_T5_FILE).is_file():
                path = path / OFFICIAL_T5_FILE
            elif (path / "text_encoder").is_dir() and not (path / "config.json").is_file():
                if tokenizer_path is None and (path / "tokenizer").is_dir():
                    tokenizer_path = path / "tokenizer"
                path = path / "text_encoder"
            elif not (path / "config.json").is_file():
                raise CheckpointError(
                    f"{path} holds no text encoder: expected {OFFICIAL_T5_FILE} (official checkpoint dir), "
                    f"config.json + *.safetensors (a text_encoder/ folder) or a text_encoder/ subfolder "
                    f"(diffusers root)")

        if path.is_dir():  # transformers / diffusers layout
            hf_cfg = _read_json(path / "config.json")
            if hf_cfg.get("model_type") not in ("umt5", "t5", "mt5"):
                raise CheckpointError(
                    f"{path / 'config.json'} is not a text encoder's (model_type {hf_cfg.get('model_type')!r}, "
                    f"expected 'umt5'); point at the folder holding {OFFICIAL_T5_FILE}, a text_encoder/ folder "
                    f"or a diffusers root")
            cfg = config or from_hf_config(hf_cfg)
            files = safetensors_files(path, prefix="model")
            sd = {}
            for f in files:
                sd.update(read_safetensors(f))
            sd = strip_prefix(sd, ("text_encoder.",))
            layout = "official" if _is_official(sd) else "hf"
            if tokenizer_path is None:
                if (path.parent / "tokenizer").is_dir():
                    tokenizer_path = path.parent / "tokenizer"
                elif any((path / f).is_file() for f in TOKENIZER_FILES):
                    tokenizer_path = path
                else:
                    tokenizer_path = path.parent / "tokenizer"  # load_tokenizer names it in its error
            fingerprint = _files_fingerprint(files, json.dumps(cfg.to_dict(), sort_keys=True))
        else:  # one file: official .pth (or a lone safetensors in either layout)
            raw = read_state_dict(path)
            raw = strip_prefix(raw, ("model.", "module.", "text_encoder."))
            if _is_official(raw):
                if config is None:
                    base = TextEncoderConfig()
                    if (path.parent / CONFIG_FILE).is_file():
                        base = TextEncoderConfig.from_dict(_read_json(path.parent / CONFIG_FILE))
                    config = infer_config(raw, base)
                layout = "official"
            else:
                layout = "hf"
                if config is None:
                    if not (path.parent / "config.json").is_file():
                        raise CheckpointError(f"{path} holds transformers-layout weights but no config.json is "
                                              f"beside it; pass config=")
                    config = from_hf_config(_read_json(path.parent / "config.json"))
            sd = raw
            cfg = config
            if tokenizer_path is None:
                tokenizer_path = path.parent / OFFICIAL_TOKENIZER_DIR
            fingerprint = _files_fingerprint([path], json.dumps(cfg.to_dict(), sort_keys=True))
        model = build_and_load(cfg, sd, source=str(path), layout=layout)
        return cls(cfg, tokenizer_path, dtype=dtype, device=device, cache_dir=cache_dir, _model=model,
                   _fingerprint=fingerprint)

    # ---------------------------------------------------------------- saving

    def state_dict(self, layout: str = "official") -> dict:
        self._check_alive()
        sd = {k: v for k, v in self.model.state_dict().items() if k != "encoder.embed_tokens.weight"}
        return hf_to_official(sd) if layout == "official" else sd

    def save_pretrained(self, path: Union[str, os.PathLike], layout: str = "official",
                        dtype: Optional[torch.dtype] = None) -> Path:
        """Write the encoder and its tokenizer.

        ``official``: ``<path>/models_t5_umt5-xxl-enc-bf16.pth`` (a plain tensor dict) +
        ``t5_config.json`` when the config is not umT5-XXL's + the tokenizer in ``google/umt5-xxl/``.
        ``diffusers``: ``<path>/text_encoder/`` (config.json + model*.safetensors) + ``<path>/tokenizer/``.
        Every file is written atomically.
        """
        path = Path(path)
        if layout not in ("official", "diffusers"):
            raise ValueError(f"layout must be 'official' or 'diffusers', got {layout!r}")
        sd = self.state_dict("official" if layout == "official" else "hf")
        sd = {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in sd.items()}
        if layout == "official":
            path.mkdir(parents=True, exist_ok=True)
            atomic_write(path / OFFICIAL_T5_FILE, lambda tmp: torch.save(sd, tmp))
            if self.config != TextEncoderConfig():
                write_json(self.config.to_dict(), path / CONFIG_FILE)
            _copy_tokenizer(self.tokenizer_path, path / OFFICIAL_TOKENIZER_DIR)
        else:
            out = path / "text_encoder"
            save_sharded(sd, out, prefix="model")
            hf = to_hf_config(self.config).to_dict()
            hf["torch_dtype"] = str(dtype or self.dtype).replace("torch.", "")
            write_json(hf, out / "config.json")
            _copy_tokenizer(self.tokenizer_path, path / "tokenizer")
        return path

    # ---------------------------------------------------------------- encoding

    def tokenize(self, prompts: Sequence[str]):
        """Clean, tokenize (EOS appended, truncated to text_len, padded to the longest): ids, mask.

        A prompt longer than text_len tokens warns how many tokens were dropped.
        """
        texts = [clean_prompt(p) for p in prompts]
        n = self.config.text_len
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True, truncation=False,
                                                      verbose=False)["input_ids"]]
        for p, length in zip(texts, lengths):
            if length > n:
                warnings.warn(f"prompt is {length} tokens long; the text encoder keeps {n}: the last "
                              f"{length - n} tokens are dropped (prompt starts {p[:60]!r})", stacklevel=3)
        # The reference pads to text_len; padding to the longest prompt gives the same real-token
        # outputs (padded keys are masked) at a fraction of the cost.
        enc = self.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=n, padding="longest",
                             return_attention_mask=True, return_tensors="pt")
        ids = enc["input_ids"]
        if ids.numel() and int(ids.max()) >= self.config.vocab:
            raise ValueError(f"the tokenizer in {self.tokenizer_path} produced token id {int(ids.max())} but the text "
                             f"encoder's vocabulary has {self.config.vocab} entries: the tokenizer ({len(self.tokenizer)} "
                             f"tokens) does not belong to this encoder; use a config with vocab >= {len(self.tokenizer)}")
        return ids, enc["attention_mask"]

    @torch.no_grad()
    def encode(self, prompts: Union[str, Sequence[str]],
               device: Union[str, torch.device, None] = None) -> list[torch.Tensor]:
        """Prompts -> one ``[L_i, dim]`` tensor per prompt (real tokens only), in the encoder's dtype.

        ``device``: where the results go (default: the encoder's device). With a cache dir, each
        (model, tokenizer, cleaned prompt, dtype) is encoded once and then read back from disk.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            return []
        out_device = torch.device(device) if device is not None else self.device
        results: list[Optional[torch.Tensor]] = [None] * len(prompts)
        keys = [self._cache_key(p) for p in prompts] if self.cache_dir is not None else [None] * len(prompts)
        todo = []
        for i, key in enumerate(keys):
            hit = self._cache_read(key) if key else None
            if hit is not None:
                results[i] = hit
            else:
                todo.append(i)
        if todo:
            self._check_alive()
            ids, mask = self.tokenize([prompts[i] for i in todo])
            ids, mask = ids.to(self.device), mask.to(self.device)
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            lens = mask.sum(dim=1).tolist()
            for j, i in enumerate(todo):
                results[i] = hidden[j, :lens[j]].clone()
                if keys[i]:
                    self._cache_write(keys[i], results[i], prompts[i])
        return [r.to(out_device) for r in results]

    __call__ = encode

    # ---------------------------------------------------------------- memory

    def release(self) -> None:
        """Free the weights (the prompts already encoded stay usable through the cache)."""
        if self.model is not None:
            self.model.to("meta")
            self.model = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @property
    def released(self) -> bool:
        return self.model is None

    def to(self, device=None, dtype=None) -> "TextEncoder":
        self._check_alive()
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        self.model.to(device=self.device, dtype=self.dtype)
        return self

    def _check_alive(self) -> None:
        if self.model is None:
            raise RuntimeError("this TextEncoder was released; load it again with TextEncoder.from_pretrained "
                               "(prompts encoded before release() are still served from the cache)")

    # ---------------------------------------------------------------- cache

    def _cache_key(self, prompt: str) -> str:
        if self._fingerprint is None:
            self._check_alive()
            self._fingerprint = _tensor_fingerprint(self.model.state_dict())
        if self._tok_fingerprint is None:
            files = sorted(f for f in self.tokenizer_path.iterdir() if f.is_file())
            self._tok_fingerprint = _files_fingerprint(files)
        payload = json.dumps([self._fingerprint, self._tok_fingerprint, clean_prompt(prompt), str(self.dtype),
                              self.config.text_len], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.safetensors"

    def _cache_read(self, key: str) -> Optional[torch.Tensor]:
        f = self._cache_path(key)
        if not f.is_file():
            return None
        try:
            t = read_safetensors(f)["hidden"]
        except (CheckpointError, KeyError):
            logger.warning("ignoring a bad text-embedding cache file %s", f)
            return None
        return t.to(self.dtype)

    def _cache_write(self, key: str, hidden: torch.Tensor, prompt: str) -> None:
        try:
            save_safetensors({"hidden": hidden}, self._cache_path(key),
                             metadata={"prompt": clean_prompt(prompt)[:2000], "dtype": str(self.dtype)})
        except OSError as e:  # a read-only or full cache must not break generation
            logger.warning("cannot write the text-embedding cache in %s: %s", self.cache_dir, e)


# ----------------------------------------------------------------------------- helpers

def build_and_load(cfg: TextEncoderConfig, sd: dict, source: str, layout: str = "hf"):
    """Build the umT5 encoder on the meta device and assign the checkpoint's tensors (no copy).

    ``sd`` is in ``layout`` ("hf" or "official"); key problems are reported in that layout's names.
    """
    with torch.device("meta"):
        model = UMT5Encoder(cfg)
    expected = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    hf_sd = dict(sd)
    if layout == "official":
        expected = hf_to_official(expected)
    elif "shared.weight" not in hf_sd and "encoder.embed_tokens.weight" in hf_sd:
        hf_sd["shared.weight"] = hf_sd["encoder.embed_tokens.weight"]
    hf_sd.pop("encoder.embed_tokens.weight", None)
    check_keys({k: tuple(v.shape) for k, v in expected.items()}, {k: tuple(v.shape) for k, v in hf_sd.items()},
               "the umT5 text encoder", source,
               hint="pass config= (a TextEncoderConfig) if the checkpoint's sizes differ from the expected ones")
    if layout == "official":
        hf_sd = official_to_hf(hf_sd)
    hf_sd["encoder.embed_tokens.weight"] = hf_sd["shared.weight"]
    model.load_state_dict(hf_sd, strict=True, assign=True)
    model.tie()  # tie again after assign
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type == "meta"]
    if left:
        raise CheckpointError(f"{source}: tensors left unloaded: {left[:8]}")
    return model


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None


def _copy_tokenizer(src: Path, dst: Path) -> None:
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            atomic_write(dst / f.name, lambda tmp, f=f: shutil.copyfile(f, tmp))
