"""The scoring entry points: questions or raw requests in, log-likelihoods and predictions out.

``acc`` is the argmax of summed log-likelihoods, ``acc_norm`` the argmax after dividing by the
option's character length (ties: the first option, as ``np.argmax``). Which engine scores a
request: truncated requests always the harness's full rows (:mod:`.fallback`); otherwise, with
``method="shared_prefix"`` and a model the probe accepts (:mod:`.probe`), requests sharing a long
k-shot prefix go through the prefix cache (:mod:`.prefix_cache`) and the rest as packed rows
(:mod:`.shared_prefix`); ``method="naive"`` uses full rows for everything (the reference).
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

from ..log import progress as progress_bar
from ..tasks import Question
from .encode import Item, check_max_length, encode_item, prepare
from .prompts import LETTERS, check_style

METHODS = ("shared_prefix", "naive")


def _check_common(method: str, batch_size: Any) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _argmax(values: Sequence[float]) -> int:
    """First index of the maximum (``np.argmax``'s tie rule)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def score_questions(model: Any, tokenizer: Any, questions: Sequence[Question], *, style: str = "cloze",
                    shots: int = 0, dev: Sequence[Question] = (), subject: str | None = None,
                    contexts: Sequence[str] | None = None, batch_size: int = 8,
                    max_length: int | None = None, progress: bool = True,
                    method: str = "shared_prefix", prefix_cache: bool = True) -> list[dict]:
    """Score multiple-choice questions by log-likelihood, as lm-evaluation-harness does.

    Args:
        model: a causal LM (plain, peft-wrapped or 4-bit), in eval mode.
        tokenizer: its tokenizer (Gemma's must add BOS: ``load_causal_lm`` sets that).
        questions: the questions to score.
        style: ``"cloze"`` (option text as continuation) or ``"letter"`` (" A".." D").
        shots: number of solved dev examples in the prompt (the first ``shots`` of the subject).
        dev: the few-shot pool (``task.dev``).
        subject: description-line subject for all questions; ``None``: each question's ``subject``.
        contexts: one retrieved-context string per question (``""`` for none), or ``None``.
        batch_size: rows per forward pass.
        max_length: model context length; ``None``: the harness's rule (``resolve_max_length``).
        progress: show a progress bar.
        method: ``"shared_prefix"`` (fast) or ``"naive"`` (one full row per option, the harness's way).
        prefix_cache: with ``"shared_prefix"``, compute each subject's k-shot prefix once
            (``False``: every question as one whole packed row; same numbers, for comparisons).

    Returns:
        One dict per question, in input order: ``id, subject, style, shots, answer, pred,
        pred_norm, acc, acc_norm, logliks, is_greedy, n_ctx_tokens, n_retrieved_tokens,
        cont_tokens, truncated, n_truncated_tokens``.

    Raises:
        ValueError: malformed questions, ``contexts`` of the wrong length, too few dev rows, an
            option longer than ``max_length``, or bad settings.
    """
    check_style(style)
    _check_common(method, batch_size)
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
        raise ValueError(f"shots must be an integer >= 0, got {shots!r}")
    questions = list(questions)
    if contexts is not None:
        contexts = list(contexts)
        if len(contexts) != len(questions):
            raise ValueError(f"contexts has {len(contexts)} entries for {len(questions)} questions; "
                             "pass one string per question ('' for none)")
        if any(not isinstance(c, str) for c in contexts):
            raise ValueError("every context must be a string ('' for no retrieved text)")
    max_length = check_max_length(model, tokenizer, max_length)
    items, n_retrieved = prepare(tokenizer, questions, style, shots, dev, subject, contexts, max_length)
    score_items(model, items, method, batch_size, max_length, progress, f"scoring {style} {shots}-shot",
                prefix_cache=prefix_cache)
    rows = []
    for q, it, n_ret in zip(questions, items, n_retrieved):
        norm = [len(LETTERS[j]) if style == "letter" else len(c) for j, c in enumerate(q.choices)]
        pred = _argmax(it.logliks)
        pred_norm = _argmax([ll / n for ll, n in zip(it.logliks, norm)])
        rows.append({
            "id": q.id, "subject": subject if subject is not None else getattr(q, "subject", ""),
            "style": style, "shots": shots, "answer": q.answer,
            "pred": pred, "pred_norm": pred_norm,
            "acc": int(pred == q.answer), "acc_norm": int(pred_norm == q.answer),
            "logliks": it.logliks, "is_greedy": it.greedy,
            "n_ctx_tokens": len(it.ctx_enc), "n_retrieved_tokens": n_ret,
            "cont_tokens": [len(c) for c in it.cont_encs],
            "truncated": bool(it.n_truncated), "n_truncated_tokens": it.n_truncated,
        })
    _warn_truncated(rows, max_length)
    return rows


def score_requests(model: Any, tokenizer: Any, requests: Sequence[tuple[str, Sequence[str]]], *,
                   batch_size: int = 8, max_length: int | None = None, progress: bool = False,
                   method: str = "shared_prefix") -> list[dict]:
    """Log-likelihoods of raw ``(context, [continuation, ...])`` requests, the harness's way.

    The engine under :func:`score_questions`, for prompts built elsewhere (e.g. cloze probes).

    Returns:
        One dict per request: ``logliks, is_greedy, n_ctx_tokens, cont_tokens, truncated,
        n_truncated_tokens``.

    Example:
        >>> score_requests(model, tok, [("Paris is the capital of", [" France", " Spain"])])  # doctest: +SKIP
        [{'logliks': [-1.2, -7.9], 'is_greedy': [True, False], ...}]
    """
    _check_common(method, batch_size)
    max_length = check_max_length(model, tokenizer, max_length)
    items = []
    for i, req in enumerate(requests):
        if not isinstance(req, (tuple, list)) or len(req) != 2:
            raise ValueError(f"requests[{i}] must be a (context, continuations) pair, got {req!r}")
        items.append(encode_item(tokenizer, req[0], req[1], max_length, f"requests[{i}]"))
    score_items(model, items, method, batch_size, max_length, progress, "scoring requests")
    rows = [{"logliks": it.logliks, "is_greedy": it.greedy, "n_ctx_tokens": len(it.ctx_enc),
             "cont_tokens": [len(c) for c in it.cont_encs], "truncated": bool(it.n_truncated),
             "n_truncated_tokens": it.n_truncated} for it in items]
    _warn_truncated(rows, max_length)
    return rows


def _warn_truncated(rows: list[dict], max_length: int) -> None:
    n_trunc = sum(r["truncated"] for r in rows)
    if n_trunc:
        warnings.warn(f"{n_trunc} of {len(rows)} requests exceeded max_length={max_length} and were "
                      "left-truncated as lm-eval does (their rows say truncated=True)", stacklevel=3)


def score_items(model: Any, items: list[Item], method: str, batch_size: int, max_length: int,
                progress: bool = False, desc: str = "scoring", prefix_cache: bool = True) -> None:
    """Fill ``logliks``/``greedy`` of every item (see the module docstring for who scores what).

    ``prefix_cache=False`` scores k-shot requests as whole packed rows (for comparisons)."""
    from .fallback import run_naive
    from .prefix_cache import group_by_prefix, run_prefix_cached
    from .probe import capabilities
    from .shared_prefix import mask_plan, run_shared_prefix

    was_training = getattr(model, "training", False)
    model.eval()
    try:
        caps = capabilities(model) if method == "shared_prefix" and items else None
        fast = [it for it in items if caps is not None and caps.packed and not it.n_truncated]
        fast_ids = {id(it) for it in fast}
        slow = [it for it in items if id(it) not in fast_ids]
        groups: list = []
        if fast and caps is not None and caps.cached and prefix_cache:
            groups, fast = group_by_prefix(fast)
        plan = mask_plan(model)
        with progress_bar(total=len(items), desc=desc, disable=not progress) as pbar:
            if groups:
                run_prefix_cached(model, groups, plan, batch_size, pbar)  # type: ignore[arg-type]
            if fast:
                run_shared_prefix(model, fast, plan, batch_size, pbar)  # type: ignore[arg-type]
            if slow:
                run_naive(model, slow, max_length, batch_size, pbar)
    finally:
        if was_training:
            model.train()
