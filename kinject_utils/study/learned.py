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

__all__ = ["LEARNED_COLUMNS", "LEARNED_SHARE", "baseline_check", "baseline_markdown", "memorisation_vs_accuracy"]

#: FT-reg has learned its text when training removed at least this share of the loss FT-par's training removed
#: from the same text (the knowledge base both trained on): a baseline that has not learned its corpus cannot
#: show whether fine-tuning on the raw text helps (docs/RESULTS.md, "A fair FT-reg")
LEARNED_SHARE = 0.75

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
        budget = str(h["budget"]) if "budget" in h and isinstance(h["budget"], str) and h["budget"] else \
            ("steps" if str(variant).endswith("-fixed") else "epochs")
        rows.append({"model": model, "task": task, "variant": variant, "n_paraphrases": int(g["n_paraphrases"].iloc[0]),
                     "budget": budget, "kb_loss_before": float(kb["loss_before"].iloc[0]),
                     "kb_loss_after": float(kb["loss_after"].iloc[0]),
                     "par_loss_after": float(par["loss_after"].iloc[0]) if len(par) else float("nan"),
                     "acc": float(h["score"]), "acc_lo": float(h["score_lo"]), "acc_hi": float(h["score_hi"]),
                     "base_acc": float(base.get((model, task), float("nan")))})
    out = pd.DataFrame(rows, columns=LEARNED_COLUMNS)
    return out.sort_values(["model", "task", "budget", "n_paraphrases"], kind="stable").reset_index(drop=True)


def baseline_check(memo: Any, share: float = LEARNED_SHARE) -> list[dict]:
    """Is FT-reg trained? Per model and task: the knowledge-base loss before and after training of FT-reg, FT-par
    and the repetition control (where trained), and whether FT-reg removed at least ``share`` of the loss FT-par
    removed (``learned``; ``reg_share`` is the share it removed)."""
    if memo is None or not len(memo):
        return []
    kb = memo[memo["split"] == "kb"]
    out = []
    for (model, task), g in kb.groupby(["model", "task"], sort=True):
        after = dict(zip(g["variant"], g["loss_after"].astype(float)))
        if "ft-reg" not in after or "ft-par" not in after:
            continue
        before = float(g["loss_before"].iloc[0])
        par_drop = before - after["ft-par"]
        reg_share = (before - after["ft-reg"]) / par_drop if par_drop > 0 else float("nan")
        out.append({"model": model, "task": task, "kb_loss_before": before, "ft_reg": after["ft-reg"],
                    "ft_par": after["ft-par"], "ft_reg_rep": after.get("ft-reg-rep"), "reg_share": reg_share,
                    "share": share, "learned": bool(reg_share >= share)})
    return out


def baseline_markdown(rows: list[dict]) -> list[str]:
    """The check as Markdown lines (a heading, the criterion, a table), for ``06_claims.md``."""
    if not rows:
        return []
    lines = ["## Before the claims: has FT-reg learned its text?", "",
             f"FT-reg counts as trained when its training removed at least {rows[0]['share']:.0%} of the loss that "
             "FT-par's training removed from the same text, the knowledge base both trained on (loss in nats per "
             "token before and after, `03_memorisation.csv`). FT-reg(rep) is FT-reg's text repeated for FT-par's "
             "training tokens.", "",
             "| model | task | loss before | FT-reg | FT-par | FT-reg(rep) | share of FT-par's drop | FT-reg learned |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rep = f"{r['ft_reg_rep']:.3f}" if r["ft_reg_rep"] is not None else "-"
        lines.append(f"| {r['model']} | {r['task']} | {r['kb_loss_before']:.3f} | {r['ft_reg']:.3f} | "
                     f"{r['ft_par']:.3f} | {rep} | {r['reg_share']:.0%} | {'yes' if r['learned'] else 'no'} |")
    return lines + [""]
