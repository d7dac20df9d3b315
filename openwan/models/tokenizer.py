"""A plain ``tokenizer.json`` tokenizer read with the ``tokenizers`` library, without ``transformers``.

For a folder whose ``tokenizer_config.json`` names the generic ``PreTrainedTokenizerFast`` (the
tiny tokenizer shipped with openwan), transformers' tokenizer is nothing but the ``tokenizer.json``
pipeline (normalizer, pre-tokenizer, model, the post-processor that appends ``</s>``) plus padding
and truncation. :class:`FastTokenizer` runs that pipeline directly (importing ``tokenizers`` costs
milliseconds, ``transformers`` seconds) and answers the calls the text encoder makes, with the ids
and masks transformers gives (tests/test_text_encoder.py compares them). Any other tokenizer class
(e.g. umT5-XXL's ``T5Tokenizer``) is loaded by transformers' ``AutoTokenizer``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

GENERIC_CLASS = "PreTrainedTokenizerFast"


def is_plain_fast_tokenizer(path: Path) -> bool:
    """Whether ``path`` holds a tokenizer.json whose config names the generic fast tokenizer class."""
    cfg = Path(path) / "tokenizer_config.json"
    if not (Path(path) / "tokenizer.json").is_file() or not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("tokenizer_class") == GENERIC_CLASS
    except (OSError, json.JSONDecodeError):
        return False


class FastTokenizer:
    """``tok(texts, add_special_tokens=True, truncation=, max_length=, padding="longest",
    return_tensors="pt")`` -> ``{"input_ids", "attention_mask"}``; ``len(tok)``: the vocabulary size."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer
        path = Path(path)
        cfg = json.loads((path / "tokenizer_config.json").read_text())
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        pad = cfg.get("pad_token", "<pad>")
        self.pad_token = pad if isinstance(pad, str) else pad.get("content", "<pad>")
        self.pad_id = self.tokenizer.token_to_id(self.pad_token)
        if self.pad_id is None:
            raise ValueError(f"the pad token {self.pad_token!r} is not in {path / 'tokenizer.json'}")
        self.padding_side = cfg.get("padding_side", "right")
        self.pad_token_id = self.pad_id
        self.eos_token_id, self.unk_token_id = (self._special_id(cfg, n) for n in ("eos_token", "unk_token"))

    def _special_id(self, cfg: dict, name: str) -> Optional[int]:
        tok = cfg.get(name)
        tok = tok.get("content") if isinstance(tok, dict) else tok
        return None if tok is None else self.tokenizer.token_to_id(tok)

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def __call__(self, texts: Union[str, Sequence[str]], add_special_tokens: bool = True, truncation: bool = False,
                 max_length: Optional[int] = None, padding=False, return_attention_mask: bool = True,
                 return_tensors: Optional[str] = None, verbose: bool = True) -> dict:
        # configured per call as transformers configures the same Rust tokenizer
        tok = self.tokenizer
        if truncation and max_length is not None:
            tok.enable_truncation(max_length)      # counts the special tokens the post-processor adds
        else:
            tok.no_truncation()
        if padding in ("longest", True):
            tok.enable_padding(direction=self.padding_side, pad_id=self.pad_id, pad_token=self.pad_token)
        else:
            tok.no_padding()
        single = isinstance(texts, str)
        encs = tok.encode_batch([texts] if single else list(texts), add_special_tokens=add_special_tokens)
        out = {"input_ids": [e.ids for e in encs]}
        if return_attention_mask:
            out["attention_mask"] = [e.attention_mask for e in encs]
        if single and return_tensors is None:
            out = {k: v[0] for k, v in out.items()}
        if return_tensors == "pt":
            out = {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
        return out
