"""Tokenisation exactly as lm-evaluation-harness's ``HFLM`` does it, and the encoded requests.

``HFLM._encode_pair``: trailing whitespace of the context moves to the continuation; the context
is encoded with the tokenizer's default special tokens (none if it already starts with the BOS
text); the continuation is the tail of the encoding of context+continuation after the context's
length. Inputs longer than ``max_length + 1`` lose tokens from the left (counted per request).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from ..tasks import Question
from .prompts import build_request, check_question, fewshot_pool, fewshot_prefix

_DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer give a length
_TOKENIZER_INFINITY = 1000000000000000019884624838656


def _prefix_token_id(tokenizer: Any) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def _encode_many(tokenizer: Any, strings: list[str]) -> list[list[int]]:
    """``HFLM.tok_encode`` for many strings: default special tokens, none if the string already
    starts with the BOS text."""
    pid = _prefix_token_id(tokenizer)
    bos_str = tokenizer.decode(pid) if pid is not None else None
    out: list[list[int] | None] = [None] * len(strings)
    has_bos = [bool(bos_str) and s.startswith(bos_str) for s in strings]
    plain = [i for i, h in enumerate(has_bos) if not h]
    bare = [i for i, h in enumerate(has_bos) if h]
    for idx, special in ((plain, True), (bare, False)):
        if idx:
            enc = tokenizer([strings[i] for i in idx], add_special_tokens=special)["input_ids"]
            for i, e in zip(idx, enc):
                out[i] = list(e)
    return out  # type: ignore[return-value]


def encode_pair(tokenizer: Any, context: str, continuations: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """Token ids of a context and its continuations, as ``HFLM._encode_pair`` makes them.

    Trailing whitespace of ``context`` moves to the front of every continuation; the context is
    encoded alone; each continuation is what the encoding of context+continuation holds after the
    context's length (so a token that merges across the boundary stays with the continuation).

    Raises:
        ValueError: empty context or a continuation that encodes to no tokens.
    """
    if not isinstance(context, str) or not context:
        raise ValueError("context is empty; every request needs a non-empty context")
    n_spaces = len(context) - len(context.rstrip())
    ws, ctx = (context[-n_spaces:], context[:-n_spaces]) if n_spaces else ("", context)
    if not ctx:
        raise ValueError("context is only whitespace; every request needs a non-empty context")
    encs = _encode_many(tokenizer, [ctx] + [ctx + ws + c for c in continuations])
    ctx_enc, conts = encs[0], []
    for c, whole in zip(continuations, encs[1:]):
        cont = whole[len(ctx_enc):]
        if not cont:
            raise ValueError(f"continuation {c!r} encodes to no tokens after the context; "
                             "an option must contain text")
        conts.append(cont)
    return ctx_enc, conts


def resolve_max_length(model: Any, tokenizer: Any = None) -> int:
    """The harness's max length: ``n_positions``/``max_position_embeddings``/``n_ctx`` of the
    (text) config, else the tokenizer's ``model_max_length``, else 2048."""
    config = getattr(model, "config", None)
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    mml = getattr(tokenizer, "model_max_length", None)
    if mml is not None and mml != _TOKENIZER_INFINITY:
        return int(mml)
    return _DEFAULT_MAX_LENGTH


def check_max_length(model: Any, tokenizer: Any, max_length: int | None) -> int:
    max_length = int(max_length) if max_length is not None else resolve_max_length(model, tokenizer)
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    return max_length


@dataclasses.dataclass
class Item:
    """One encoded request (a context and its continuations) and, after scoring, its results.

    ``prefix_key`` names the question-independent start of the context (description and shots);
    requests with the same key are candidates for the k-shot prefix cache.
    """

    context: str
    continuations: list[str]
    ctx_enc: list[int]
    cont_encs: list[list[int]]
    n_truncated: int
    prefix_key: str = ""
    logliks: list[float] = dataclasses.field(default_factory=list)
    greedy: list[bool] = dataclasses.field(default_factory=list)


def encode_item(tokenizer: Any, context: str, continuations: Sequence[str], max_length: int,
                what: str) -> Item:
    if not isinstance(continuations, (list, tuple)) or len(continuations) < 1:
        raise ValueError(f"{what}: needs a list of continuations, got {continuations!r}")
    if any(not isinstance(c, str) or not c for c in continuations):
        raise ValueError(f"{what}: every continuation must be a non-empty string, got {continuations!r}")
    try:
        ctx_enc, cont_encs = encode_pair(tokenizer, context, continuations)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    for c, ce in zip(continuations, cont_encs):
        if len(ce) > max_length:
            words = c.split()
            shown = " ".join(words[:6]) + (f" ... ({len(words)} words)" if len(words) > 6 else "")
            raise ValueError(
                f"{what}: answer option {shown!r} is {len(ce)} tokens, longer than the scorer's max_length="
                f"{max_length} (the model's context length, lm-eval's rule; score_questions(max_length=...) "
                "sets it), so it cannot be scored. Fix: shorten that option in the task's questions file "
                "(options are scored whole; a few words score best), or score with a model whose context "
                "is longer.")
    over = max(len(ctx_enc) + len(ce) - (max_length + 1) for ce in cont_encs)
    return Item(context, list(continuations), ctx_enc, cont_encs, max(over, 0))


def prepare(tokenizer: Any, questions: Sequence[Question], style: str, shots: int,
            dev: Sequence[Question], subject: str | None, contexts: Sequence[str] | None,
            max_length: int) -> tuple[list[Item], list[int]]:
    """Encoded requests for the questions, and the tokens each retrieved context added."""
    items, n_retrieved = [], []
    for i, q in enumerate(questions):
        check_question(q, f" (questions[{i}])")
        subj = subject if subject is not None else getattr(q, "subject", "")
        fs: list[Question] = []
        if shots:
            pool = fewshot_pool(dev, subj)
            if len(pool) < shots:
                raise ValueError(f"question {q.id}: {shots}-shot needs {shots} dev rows for subject "
                                 f"{subj!r}, found {len(pool)}; pass dev=task.dev or use shots=0")
            fs = pool[:shots]
        ctx_text = contexts[i] if contexts is not None else ""
        context, conts = build_request(q, style=style, subject=subj, fewshot=fs, context=ctx_text)
        item = encode_item(tokenizer, context, conts, max_length, f"question {q.id}")
        item.prefix_key = fewshot_prefix(style, subj, fs)
        n_ret = 0
        if ctx_text.strip():
            bare, _ = build_request(q, style=style, subject=subj, fewshot=fs, context="")
            n_ret = len(item.ctx_enc) - len(encode_pair(tokenizer, bare, conts[:1])[0])
        items.append(item)
        n_retrieved.append(n_ret)
    return items, n_retrieved
