"""Is the base model at chance on knowledge it cannot have? Base accuracy per question kind.

The fictional tasks hold facts no pretrained model has seen, so the base model (no documents, no
fine-tuning) should score about 1 / (number of options). A score well above that means the options
can be told apart from the question alone, and every method's gain over base is then inflated.
Notebook 01 builds fictional-knowledge options for that (judged option sets); this is where it is
checked on the models actually scored, per probe kind (memorization, semantic, composition) as well
as overall, each with a 95% bootstrap interval.

    table = base_by_kind(per_question, tasks)   # per_question: 05_per_question.jsonl rows
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from .paper import metric_for

__all__ = ["CHANCE_COLUMNS", "base_by_kind"]

CHANCE_COLUMNS = ["model", "task", "kind", "n", "score", "score_lo", "score_hi", "chance", "at_chance"]


def base_by_kind(per_question: Iterable[Mapping[str, Any]], tasks: Mapping[str, Any], method: str = "base",
                 seed: int = 0) -> Any:
    """Accuracy of ``method`` (0-shot, no documents) per task and question kind, beside chance.

    Args:
        per_question: rows of ``05_per_question.jsonl`` (``model``, ``task``, ``method``, ``shots``,
            ``k``, ``style``, ``id``, ``acc``, ``acc_norm``).
        tasks: task name -> loaded :class:`~kinject_utils.tasks.Task`; only tasks whose questions
            carry a ``kind`` (fictional knowledge's probe kinds, fictional news' attributes) appear.
        method: the method to break down (``base`` by default).
        seed: bootstrap seed of the intervals.

    Returns:
        A DataFrame with :data:`CHANCE_COLUMNS`, one row per (model, task, kind) plus ``kind == "all"``;
        ``chance`` is the mean of 1 / options over those questions and ``at_chance`` whether the 95%
        interval contains it. Empty when no row matches.
    """
    import pandas as pd

    from ..scoring import bootstrap_ci

    kinds = {name: {q.id: (q.kind, len(q.choices)) for q in t.questions if q.kind}
             for name, t in tasks.items()}
    groups: dict[tuple[str, str, str], list[tuple[float, int]]] = {}
    for r in per_question:
        if r.get("method") != method or int(r.get("shots", 0)) or int(r.get("k", 0)):
            continue
        hit = kinds.get(r.get("task"), {}).get(r.get("id"))
        if hit is None:
            continue
        value = (float(r[metric_for(r.get("style") or "cloze")]), hit[1])
        for kind in (hit[0], "all"):
            groups.setdefault((r["model"], r["task"], kind), []).append(value)
    rows = []
    for (model, task, kind), vals in groups.items():
        correct = [v for v, _ in vals]
        lo, hi = bootstrap_ci(correct, seed=seed)
        chance = sum(1 / n for _, n in vals) / len(vals)
        rows.append({"model": model, "task": task, "kind": kind, "n": len(vals),
                     "score": sum(correct) / len(correct), "score_lo": lo, "score_hi": hi,
                     "chance": chance, "at_chance": bool(lo <= chance <= hi)})
    out = pd.DataFrame(rows, columns=CHANCE_COLUMNS)
    if not len(out):
        return out
    out["_all"] = out["kind"] == "all"
    out = out.sort_values(["model", "task", "_all", "kind"], kind="stable").drop(columns="_all")
    return out.reset_index(drop=True)
