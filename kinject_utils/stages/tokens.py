"""Tokenizers for plans: a model's own where it is already on this machine, else a stated estimate.

A plan loads no weights and downloads nothing. A model's tokenizer is used when its files are here
(an embedded model already converted, a local folder, a hub model in the hub cache); otherwise the
embedded SmolLM2 tokenizer stands in (a 7B 32k-vocabulary tokenizer gives somewhat more tokens than
SmolLM2's 49k one), else words x 1.3. Each plan line says which was used.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

__all__ = ["TokenCounter", "model_tokenizer"]

_STAND_IN = "smollm2-135m"


@lru_cache(maxsize=None)
def model_tokenizer(model: str) -> tuple[Any, str]:
    """(tokenizer or ``None``, how counted) for ``model``, without converting, loading weights or downloading."""
    from transformers import AutoTokenizer

    from ..io import resolve_path
    from ..models import converted_model_dir, get_spec, resolve_model_dir

    spec = get_spec(model)
    try:
        if spec is None:  # a local folder, else a hub id (read from the hub cache only)
            where, revision = (str(resolve_path(model)) if resolve_path(model).exists() else model), None
        elif spec.source == "hub":
            where, revision = spec.hub_id, spec.revision or None
        elif spec.source == "gguf" and not (converted_model_dir(model) / "config.json").exists():
            raise FileNotFoundError(model)  # embedded but not converted yet: converting is notebook work
        else:
            where, revision = resolve_model_dir(model), None
        tok = AutoTokenizer.from_pretrained(where, revision=revision, local_files_only=True)
        return tok, f"{model}'s own tokenizer"
    except Exception:  # noqa: BLE001 - any failure falls back to the stated estimate
        pass
    if model != _STAND_IN:
        tok, _ = model_tokenizer(_STAND_IN)
        if tok is not None:
            return tok, f"the SmolLM2 tokenizer standing in for {model}'s (not on this machine)"
    return None, "words x 1.3 (no tokenizer on this machine yet)"


class TokenCounter:
    """Counts tokens of texts with :func:`model_tokenizer`'s tokenizer for ``model`` (or its stand-in)."""

    def __init__(self, model: str = _STAND_IN) -> None:
        self.tok, self.how = model_tokenizer(model)

    def __call__(self, texts: list[str]) -> int:
        if self.tok is None:
            return int(sum(len(t.split()) for t in texts) * 1.3)
        return sum(len(ids) for ids in self.tok(list(texts), add_special_tokens=False)["input_ids"])
