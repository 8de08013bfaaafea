"""Recall@K: whether each question's source documents are among its top-K retrieved passages."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["recall_at_k"]


def recall_at_k(retrieved_doc_ids: Sequence[Sequence[str]], gold_doc_ids: Sequence[Sequence[str]],
                k_max: int) -> list[dict[str, Any]]:
    """Hit rate and recall of the source documents among the top-K retrieved, K = 1..k_max.

    Only questions with at least one source document count (``n``). hit_rate: share of questions
    with any source document in the top K; recall: mean share of each question's source
    documents found in the top K (equal to hit_rate when every question has one source).

    Example:
        >>> recall_at_k([["a", "b"]], [["b"]], 2)
        [{'k': 1, 'recall': 0.0, 'hit_rate': 0.0, 'n': 1}, {'k': 2, 'recall': 1.0, 'hit_rate': 1.0, 'n': 1}]
    """
    pairs = [(list(r), set(g)) for r, g in zip(retrieved_doc_ids, gold_doc_ids) if g]
    rows = []
    for k in range(1, k_max + 1):
        if not pairs:
            break
        hits, rec = 0, 0.0
        for got, gold in pairs:
            found = gold & set(got[:k])
            hits += bool(found)
            rec += len(found) / len(gold)
        rows.append({"k": k, "recall": rec / len(pairs), "hit_rate": hits / len(pairs), "n": len(pairs)})
    return rows
