"""A local instruct model as a paraphrase backend (device and dtype from kinject_utils.device)."""
from __future__ import annotations

import math
from typing import Any

from ..device import resolve
from .base import ChatBackend

__all__ = ["LocalChatBackend"]


class LocalChatBackend(ChatBackend):
    """A local instruct model through its chat template (SmolLM2 replies to nothing else).

    The model loads on first use with :func:`kinject_utils.models.load_causal_lm`. With
    ``temperature > 0`` it samples (``torch.manual_seed(seed)`` first, so a seed gives the same
    text every time on the same machine); with ``temperature == 0`` it decodes greedily (and
    retries with other seeds give the same reply, so keep a temperature for retries to help).

    The generation budget is ``min(max_new_tokens, ceil(length_ratio x doc tokens) x n + 48)``:
    enough for ``n`` paraphrases of similar length plus JSON punctuation, never more than the
    cap. SmolLM2-135M (bf16, one torch thread) wrote ~24 tokens/s here: ~6 s per request on a
    fictional news story, ~23 s on a ~450-token encyclopedia entry. On an oversubscribed CPU
    (other processes busy) two torch threads were ~50x slower than one
    (``torch.set_num_threads(1)`` or ``OMP_NUM_THREADS=1`` helps there).

    Args:
        model_name: registry name, local folder or hub id of an instruct (chat) model.
        dtype: ``auto`` (by the machine, see :mod:`kinject_utils.device`), ``bfloat16`` or ``float32``.
        device: ``cpu``, ``cuda`` or ``auto`` (resolved by :func:`kinject_utils.device.resolve`).
        max_new_tokens: hard cap on generated tokens per request.
        temperature: sampling temperature; 0 = greedy.
        top_p: nucleus sampling mass.
        length_ratio: expected paraphrase length relative to the document, in tokens.
    """

    name = "local"
    default_per_call = 1  # small models manage one paraphrase per reply at best

    def __init__(self, model_name: str = "smollm2-135m", *, dtype: str = "auto", device: str = "auto",
                 max_new_tokens: int = 512, temperature: float = 0.7, top_p: float = 0.9,
                 length_ratio: float = 1.5) -> None:
        super().__init__()
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        from ..models import get_spec

        spec = get_spec(model_name)
        if spec is not None and (spec.kind != "lm" or not spec.instruct):
            raise ValueError(f"'{model_name}' is not an instruct (chat) model, so it cannot follow the "
                             "paraphrase prompt. Use 'smollm2-135m' (embedded) or an instruct model's "
                             "folder or hub id.")
        self.model = model_name
        self.device, self.dtype = resolve(device, dtype)
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.length_ratio = length_ratio
        self._lm: Any = None
        self._tok: Any = None

    def __repr__(self) -> str:
        return (f"LocalChatBackend(model_name={self.model!r}, dtype={self.dtype!r}, device={self.device!r}, "
                f"max_new_tokens={self.max_new_tokens}, temperature={self.temperature}, top_p={self.top_p})")

    def cache_identity(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "length_ratio": self.length_ratio}

    def _load(self) -> None:
        if self._lm is not None:
            return
        from ..models import load_causal_lm

        self._lm, self._tok = load_causal_lm(self.model, dtype=self.dtype, device=self.device)
        if not getattr(self._tok, "chat_template", None):
            raise ValueError(f"'{self.model}' has no chat template, so it is not an instruct model; "
                             "use 'smollm2-135m' or another instruct model.")

    def max_tokens_for(self, text: str, n: int) -> int:
        self._load()
        n_doc = len(self._tok(text, add_special_tokens=False)["input_ids"])
        return int(min(self.max_new_tokens, math.ceil(self.length_ratio * n_doc) * n + 48))

    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> Any:
        """Token ids of ``messages`` through the chat template, ending with the assistant turn."""
        self._load()
        return self._tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                             return_dict=True)

    def complete(self, messages: list[dict[str, str]], seed: int, max_tokens: int | None = None) -> str:
        import torch

        enc = self.chat_prompt_ids(messages)
        dev = next(self._lm.parameters()).device
        enc = {k: v.to(dev) for k, v in enc.items()}
        sample = self.temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": int(max_tokens or self.max_new_tokens), "do_sample": sample,
                                  "pad_token_id": self._tok.pad_token_id}
        if sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        torch.manual_seed(int(seed))
        self.counters["requests"] += 1
        with torch.no_grad():
            out = self._lm.generate(**enc, **kwargs)
        return self._tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

