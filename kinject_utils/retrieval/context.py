"""Prompt assembly for RAG: q~ = b_q || q, the top-K passages within a token budget.

    build_context   top-K passages -> context string that fits a token budget (cuts reported)
    load_contexts   notebook 05: the context string per question for top-k
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import layout
from ..io import read_json, read_jsonl
from ..log import get_logger
from ..tasks import Task, load_task
from .files import MANIFEST, PASSAGES, RETRIEVED, has_retrieval, kb_hash, retrieval_dir

__all__ = ["SEPARATOR", "ContextResult", "build_context", "load_contexts"]

SEPARATOR = "\n\n"  # between passages, and after the last one so the question starts on its own line
log = get_logger("retrieval")


@dataclasses.dataclass(frozen=True)
class ContextResult:
    """A context string b_q ready to prepend to the question.

    Attributes:
        text: passages joined by ``SEPARATOR`` and ending with it ("" when nothing fits or k=0).
        n_tokens: tokens in ``text`` (no special tokens), <= the budget.
        n_passages_used: passages kept, a cut one included.
        truncated: True when a passage was cut or dropped to fit.
        n_passages_given: passages offered.
        n_tokens_untruncated: tokens the full context would have taken.
        passage_cut: True when the last passage kept was cut short.
    """

    text: str
    n_tokens: int
    n_passages_used: int
    truncated: bool
    n_passages_given: int = 0
    n_tokens_untruncated: int = 0
    passage_cut: bool = False


def _count(tokenizer: Any, text: str) -> int:
    if not text:
        return 0
    try:
        return len(tokenizer.encode(text, add_special_tokens=False))
    except TypeError:  # a tokenizer without the keyword
        return len(tokenizer.encode(text))


def _cut(tokenizer: Any, text: str, n: int) -> str:
    """The longest prefix of ``text`` that is about ``n`` tokens, cut in the original string."""
    if n <= 0:
        return ""
    try:  # fast (Rust) tokenizers give character offsets: cut the original text, lossless
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        return text if n >= len(offsets) else text[:offsets[n - 1][1]]
    except (TypeError, KeyError, NotImplementedError, ValueError):
        ids = tokenizer.encode(text, add_special_tokens=False)
        return text if n >= len(ids) else tokenizer.decode(ids[:n])


def _join(parts: Sequence[str]) -> str:
    return SEPARATOR.join(parts) + SEPARATOR if parts else ""


def build_context(passages: Sequence[str], tokenizer: Any, max_tokens: int) -> ContextResult:
    """Join the top-K passages (best first) into a context that fits ``max_tokens`` tokens.

    Format: ``p1 + "\\n\\n" + p2 + ... + pK + "\\n\\n"``, so the question follows on its own line
    (q~ = b_q || q). When the whole does not fit, the lowest-ranked text goes first: passages
    are kept whole in rank order, the first one that does not fit is cut at a token boundary
    (the longest prefix that fits) and the rest are dropped. Tokens are counted without special
    tokens; a tokenizer may merge the last separator with the question's first token, so leave a
    token or two of margin in ``max_tokens``.

    Args:
        passages: passage texts, best first.
        tokenizer: a Hugging Face tokenizer (or any object with ``encode``/``decode``).
        max_tokens: the token budget for the context alone (>= 0).

    Example:
        >>> class WS:  # a whitespace tokenizer, for the example
        ...     def encode(self, t, add_special_tokens=False): return t.split(" ")
        ...     def decode(self, ids): return " ".join(ids)
        >>> build_context(["a b c", "d e f"], WS(), 100).text
        'a b c\\n\\nd e f\\n\\n'
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise ValueError(f"max_tokens must be an integer >= 0, got {max_tokens!r}")
    passages = [p.strip() for p in passages if p and p.strip()]
    full = _join(passages)
    n_full = _count(tokenizer, full)
    if n_full <= max_tokens:
        return ContextResult(full, n_full, len(passages), False, len(passages), n_full)
    used: list[str] = []
    for p in passages:
        if _count(tokenizer, _join(used + [p])) <= max_tokens:
            used.append(p)
            continue
        # binary search for the longest token prefix of p that still fits with the separators
        lo, hi = 0, _count(tokenizer, p)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _count(tokenizer, _join(used + [_cut(tokenizer, p, mid)])) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        part = _cut(tokenizer, p, lo).strip()
        if part:
            used.append(part)
        text = _join(used)
        return ContextResult(text, _count(tokenizer, text), len(used), True, len(passages), n_full, bool(part))
    raise AssertionError("unreachable: the full context did not fit, so some passage cannot")


def load_contexts(results_dir: str | Path, task: Task | str, k: int, tokenizer: Any,
                  max_tokens: int) -> tuple[list[str], dict[str, Any]]:
    """Context strings for top-``k`` retrieval, one per question in ``task.questions`` order.

    Reads what notebook 04 wrote for ``task`` (a :class:`Task`, or a task name whose folder under
    ``01_tasks/`` is loaded) and assembles each context with :func:`build_context`. Truncation is
    counted in the returned stats and logged.

    Returns:
        (contexts, stats) with stats keys: task, k, max_tokens, n_questions, n_truncated,
        n_passages_cut, n_passages_dropped (whole passages left out), mean_tokens,
        max_tokens_used.

    Raises:
        FileNotFoundError: notebook 04 has not written results for this task.
        ValueError: ``k`` exceeds the K_MAX notebook 04 ran with, or the task changed since.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}")
    if isinstance(task, str):
        task = load_task(layout.task_dir(results_dir, task))
    d = retrieval_dir(results_dir, task.name)
    if not has_retrieval(results_dir, task.name):
        raise FileNotFoundError(f"no retrieval results for task {task.name!r} in {d}; run notebook 04 "
                                "(a task without a knowledge base, such as MMLU offline, has none)")
    man = read_json(d / MANIFEST) if (d / MANIFEST).exists() else {}
    if man and man.get("kb_hash") != kb_hash(task.docs):
        raise ValueError(f"{d} was built from a different knowledge base than task {task.name!r} "
                         "has now; re-run notebook 04")
    if k > int(man.get("k_max", k)):
        raise ValueError(f"k={k} but notebook 04 retrieved only the top {man['k_max']} for "
                         f"{task.name!r}; re-run notebook 04 with K_MAX >= {k}")
    text_of = {r["passage_id"]: r["text"] for r in read_jsonl(d / PASSAGES)}
    got = {r["id"]: r["passage_ids"] for r in read_jsonl(d / RETRIEVED)}
    missing = [q.id for q in task.questions if q.id not in got]
    if missing:
        raise ValueError(f"{d / RETRIEVED} has no row for question(s) {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}; the task changed since notebook 04 ran: re-run it")
    contexts, n_trunc, n_cut, n_drop, toks = [], 0, 0, 0, []
    for q in task.questions:
        res = build_context([text_of[p] for p in got[q.id][:k]], tokenizer, max_tokens)
        contexts.append(res.text)
        toks.append(res.n_tokens)
        if res.truncated:
            n_trunc += 1
            n_cut += res.passage_cut
            n_drop += res.n_passages_given - res.n_passages_used
    stats = {"task": task.name, "k": k, "max_tokens": max_tokens, "n_questions": len(contexts),
             "n_truncated": n_trunc, "n_passages_cut": n_cut, "n_passages_dropped": n_drop,
             "mean_tokens": float(np.mean(toks)) if toks else 0.0, "max_tokens_used": max(toks, default=0)}
    if n_trunc:
        log.warning(f"{task.name}, k={k}: {n_trunc}/{len(contexts)} contexts truncated to fit "
                    f"{max_tokens} tokens ({n_cut} passages cut, {n_drop} dropped)")
    return contexts, stats
