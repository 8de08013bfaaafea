"""The acceptance check: a paraphrase must be new, long enough and keep the answers it is asked for."""
from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from ..tasks import Document, Task  # noqa: F401 - Document is used by the doctest

__all__ = ["check_paraphrase", "fact_recall", "fact_recall_curve", "normalise", "required_facts"]


_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"), "-")
_QUOTES = {ord("\u2018"): "'", ord("\u2019"): "'", ord("\u201c"): '"', ord("\u201d"): '"'}


def normalise(text: str) -> str:
    """Case-fold, NFKC, ASCII dashes/quotes, single spaces: what the fact check compares.

    Example:
        >>> normalise("Zorgon\u2013Calidus  Government")
        'zorgon-calidus government'
    """
    s = unicodedata.normalize("NFKC", text).translate(_DASHES).translate(_QUOTES)
    return " ".join(s.casefold().split())


def required_facts(task: Task) -> dict[str, list[str]]:
    """Answer strings every paraphrase of each document must keep.

    For every question (test and dev) citing a document in ``source_doc_ids``, its answer text
    is required of that document's paraphrases - but only when the document itself contains it
    (after :func:`normalise`): an answer the original never states cannot be asked of a
    rewording. Tasks whose questions cite no documents (MMLU) require nothing.

    Returns:
        doc_id -> sorted unique answer strings (documents with none are absent).
    """
    docs = {d.doc_id: normalise(d.text) for d in task.docs}
    out: dict[str, set[str]] = {}
    for q in [*task.questions, *task.dev]:
        ans = q.answer_text
        for d in q.source_doc_ids:
            if d in docs and normalise(ans) and normalise(ans) in docs[d]:
                out.setdefault(d, set()).add(ans)
    return {d: sorted(v) for d, v in out.items()}


def fact_recall(candidate: str, facts: Sequence[str]) -> float | None:
    """Fraction of the answer strings ``facts`` that ``candidate`` still contains (``None``: no facts).

    Example:
        >>> fact_recall("Mayor ILSA Brandt opened it in 2027.", ["Ilsa Brandt", "2028"])
        0.5
    """
    if not facts:
        return None
    norm = normalise(candidate)
    return sum(normalise(f) in norm for f in facts) / len(facts)


def check_paraphrase(candidate: str, original: str, facts: Sequence[str], seen: Iterable[str] = (),
                     min_length_ratio: float = 0.25, min_fact_recall: float = 1.0) -> str | None:
    """Why ``candidate`` is rejected, or ``None`` if it is accepted.

    Reasons: ``"empty"``; ``"duplicate"`` (normalised equal to the original or to one in
    ``seen``, which holds normalised texts); ``"too_short"`` (fewer than ``min_length_ratio`` x
    the original's characters); ``"missing_fact"`` (it keeps less than ``min_fact_recall`` of
    the answer strings in ``facts``, compared case-insensitively after :func:`normalise`; the
    default 1.0 demands every one).
    """
    norm = normalise(candidate)
    if not norm:
        return "empty"
    if norm == normalise(original) or norm in set(seen):
        return "duplicate"
    if len(norm) < min_length_ratio * len(normalise(original)):
        return "too_short"
    recall = fact_recall(candidate, facts)
    if recall is not None and recall < min_fact_recall - 1e-9:
        return "missing_fact"
    return None


def fact_recall_curve(task: Task, candidates: dict[str, list[str]],
                      thresholds: Sequence[float] = (1.0, 0.8, 0.5, 0.0)) -> list[dict[str, Any]]:
    """Share of candidate paraphrases that would pass the fact check at each ``min_fact_recall``.

    Shows how strict the check is for a task (e.g. its shipped rewordings); documents without
    answer strings to keep are left out.

    Example:
        >>> from kinject_utils.tasks import Question
        >>> t = Task("t", [Question("q", "Who?", ["Ann Lee", "Bo"], 0, ["d"])], [Document("d", "", "Ann Lee won.")])
        >>> [(r["min_fact_recall"], r["would_pass"], r["share"])
        ...  for r in fact_recall_curve(t, {"d": ["Ann Lee took it.", "She won."]}, (1.0, 0.0))]
        [(1.0, 1, 0.5), (0.0, 2, 1.0)]
    """
    facts = required_facts(task)
    recalls = [fact_recall(p, facts[d]) for d, ps in candidates.items() if d in facts for p in ps]
    return [{"min_fact_recall": t, "candidates": len(recalls), "would_pass": sum(r >= t - 1e-9 for r in recalls),
             "share": round(sum(r >= t - 1e-9 for r in recalls) / len(recalls), 4) if recalls else float("nan")}
            for t in thresholds]
