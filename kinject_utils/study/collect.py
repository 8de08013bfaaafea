"""``05_scores.csv``, ``05_per_question.jsonl`` and ``05_costs.csv``, rebuilt from the score cache.

The files are rebuilt from the cached cells at the end of every run, so they are always complete
and consistent with each other. Each cell's primary metric follows its scoring style
(:func:`~kinject_utils.study.paper.metric_for`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

from .. import layout
from ..io import read_jsonl, write_csv, write_jsonl
from .costs import write_costs
from .grid import ScoreSpec
from .paper import metric_for

__all__ = ["SCORE_COLUMNS", "PER_QUESTION_KEYS", "collect_scores"]

SCORE_COLUMNS = ["model", "task", "subject", "method", "variant", "n_paraphrases", "budget", "shots", "k",
                 "style", "metric", "score", "score_lo", "score_hi", "acc", "acc_norm", "n",
                 "n_truncated", "seconds"]
PER_QUESTION_KEYS = ("model", "task", "method", "shots", "k", "variant", "budget", "style", "id", "acc", "acc_norm",
                     "subject")


def collect_scores(specs: Iterable[ScoreSpec], results_dir: str | Path, seed: int = 0) -> Path:
    """Aggregate cached per-question rows into ``05_scores.csv`` (overall and per MMLU subject).

    Also writes ``05_per_question.jsonl`` (for the paired tests) and ``05_costs.csv``.

    Returns:
        The path of ``05_scores.csv``.
    """
    from ..scoring import bootstrap_ci

    results_dir = Path(results_dir)
    cache = layout.score_cache_dir(results_dir)
    out_rows, per_q, cells = [], [], []
    for spec in specs:
        path = cache / f"{spec.key()}.jsonl"
        if not path.exists():
            continue
        cached = list(read_jsonl(path))
        cells.append((spec, cached))
        rows = [{**r, **dataclasses.asdict(spec)} for r in cached]
        per_q.extend(rows)
        metric = metric_for(spec.style)
        groups = {"all": rows}
        subjects = sorted({r.get("subject", "") for r in rows} - {""})
        if len(subjects) > 1:
            groups.update({s: [r for r in rows if r.get("subject") == s] for s in subjects})
        for subject, grp in groups.items():
            vals = [float(r[metric]) for r in grp]
            lo, hi = bootstrap_ci(vals, seed=seed)
            out_rows.append({
                "model": spec.model, "task": spec.task, "subject": subject, "method": spec.method,
                "variant": spec.variant, "n_paraphrases": spec.n_paraphrases, "budget": spec.budget,
                "shots": spec.shots, "k": spec.k, "style": spec.style, "metric": metric,
                "score": round(sum(vals) / len(vals), 6), "score_lo": round(lo, 6), "score_hi": round(hi, 6),
                "acc": round(sum(float(r["acc"]) for r in grp) / len(grp), 6),
                "acc_norm": round(sum(float(r["acc_norm"]) for r in grp) / len(grp), 6),
                "n": len(grp), "n_truncated": sum(bool(r.get("truncated")) for r in grp),
                "seconds": round(float(grp[0].get("seconds", 0.0)), 2) if subject == "all" else "",
            })
    path = write_csv(out_rows, layout.scores_csv(results_dir), columns=SCORE_COLUMNS)
    write_jsonl(layout.per_question_jsonl(results_dir),
                [{k: r[k] for k in PER_QUESTION_KEYS if k in r} for r in per_q])
    write_costs(cells, results_dir)
    return path
