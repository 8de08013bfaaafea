"""What fine-tuning learned: memorisation of the trained text beside accuracy on the questions.

Notebook 03 measures, per adapter, the loss on the knowledge base (and on the paraphrases it
trained on) before and after training (``03_memorisation.csv``); notebook 05 scores the same adapter
on the questions. Side by side they answer the question a weak FT result raises: did the adapter
not learn the text (loss barely fell), or did it learn the wording without being able to use the
facts when asked in another form (loss fell far, accuracy stayed near the base model's)?

    table = memorisation_vs_accuracy(memo, scores)
"""
from __future__ import annotations

from typing import Any

__all__ = ["LEARNED_COLUMNS", "memorisation_vs_accuracy"]

LEARNED_COLUMNS = ["model", "task", "variant", "n_paraphrases", "budget", "kb_loss_before", "kb_loss_after",
                   "par_loss_after", "acc", "acc_lo", "acc_hi", "base_acc"]


def memorisation_vs_accuracy(memo: Any, scores: Any) -> Any:
    """One row per adapter: knowledge-base loss before -> after, paraphrase loss after, question accuracy.

    Args:
        memo: ``03_memorisation.csv`` as a DataFrame (``split`` is ``kb`` or ``paraphrases``).
        scores: ``05_scores.csv`` as a DataFrame; the adapter's 0-shot, no-RAG row gives its accuracy
            (``score`` with its interval), the base model's row on the same task ``base_acc``.

    Returns:
        A DataFrame with :data:`LEARNED_COLUMNS`, ordered by model, task, budget and paraphrases;
        empty when either input is missing.
    """
    import pandas as pd

    if memo is None or scores is None or not len(memo) or not len(scores):
        return pd.DataFrame(columns=LEARNED_COLUMNS)
    sc = scores[(scores["shots"] == 0) & (scores["k"] == 0) & (scores["subject"] == "all")]
    base = {(r.model, r.task): r.score for r in sc[sc["method"] == "base"].itertuples()}
    tuned = sc[sc["variant"].fillna("").astype(str) != ""].drop_duplicates(["model", "task", "variant"])
    rows = []
    for (model, task, variant), g in memo.groupby(["model", "task", "variant"], sort=False):
        kb = g[g["split"] == "kb"]
        par = g[g["split"] == "paraphrases"]
        hit = tuned[(tuned["model"] == model) & (tuned["task"] == task) & (tuned["variant"] == variant)]
        if hit.empty or kb.empty:
            continue
        h = hit.iloc[0]
        budget = "steps" if str(variant).endswith("-fixed") else "epochs"
        rows.append({"model": model, "task": task, "variant": variant, "n_paraphrases": int(g["n_paraphrases"].iloc[0]),
                     "budget": budget, "kb_loss_before": float(kb["loss_before"].iloc[0]),
                     "kb_loss_after": float(kb["loss_after"].iloc[0]),
                     "par_loss_after": float(par["loss_after"].iloc[0]) if len(par) else float("nan"),
                     "acc": float(h["score"]), "acc_lo": float(h["score_lo"]), "acc_hi": float(h["score_hi"]),
                     "base_acc": float(base.get((model, task), float("nan")))})
    out = pd.DataFrame(rows, columns=LEARNED_COLUMNS)
    return out.sort_values(["model", "task", "budget", "n_paraphrases"], kind="stable").reset_index(drop=True)
