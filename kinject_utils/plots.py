"""Figures and tables for notebook 06: ours beside the paper's.

Each function takes the result files' tables (pandas DataFrames read from ``05_scores.csv``,
``05_costs.csv``, ``03_train_loss.csv``, ``04_recall.csv``), writes one PNG through the one figure
saver (:func:`kinject_utils.figures.save_figure`, byte-stable) and returns its path, or returns a
Markdown string. The training-loss figure (notebooks 03 and 06) has its one owner here. Missing
inputs give an empty-but-honest output ("no rows"), never a crash, so a partial run still renders
what it has. The claims report is the claims engine's (:mod:`kinject_utils.study.claims`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .figures import pyplot, save_figure
from .study import METHODS, PAPER_TABLE1, PAPER_TABLE2

__all__ = ["table2_markdown", "table1_markdown", "accuracy_markdown", "fig_box_by_method", "fig_relative_gain",
           "fig_train_loss", "fig_paraphrase_sweep", "fig_recall", "costs_markdown", "learned_markdown",
           "chance_markdown", "relative_gain"]

METHOD_ORDER = METHODS


def _axes(width: float = 7, height: float = 4) -> tuple[Any, Any]:
    """A new figure and its one axes."""
    return pyplot().subplots(figsize=(width, height))


def _finish(fig: Any, ax: Any, path: str | Path, title: str, ylabel: str, xlabel: str = "",
            empty: str | None = None) -> Path:
    """Title and label the axes, say ``empty`` in the middle when there was nothing to draw, and save."""
    if empty:
        ax.text(0.5, 0.5, empty, ha="center", transform=ax.transAxes)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return save_figure(fig, path)


def _main_rows(scores: Any) -> Any:
    """Rows of the method table: overall subject, one K per RAG method (the configured one)."""
    if scores is None or len(scores) == 0:
        return scores
    s = scores[(scores["subject"] == "all") & scores["method"].isin(METHOD_ORDER)]
    # base+RAG may have a K sweep: keep the K that the FT+RAG rows used (the grid's configured K)
    rag_k = s.loc[s["method"].str.contains(r"FT-.*\+RAG", regex=True), "k"]
    if len(rag_k):
        k = int(rag_k.mode().iloc[0])
        s = s[(s["method"] != "base+RAG") | (s["k"] == k)]
    return s


def _fmt(x: Any) -> str:
    return "" if x is None or x != x else f"{x:.3f}"


def table2_markdown(scores: Any) -> str:
    """Table 2 (current-events style tasks): our accuracy [95% CI] per method, then the paper's rows."""
    s = _main_rows(scores)
    lines = ["| model | task | " + " | ".join(METHOD_ORDER) + " |", "|---|---|" + "---|" * len(METHOD_ORDER)]
    if s is not None and len(s):
        s = s[s["task"] != "mmlu"]
        for (model, task), g in s.groupby(["model", "task"]):
            cells = []
            for m in METHOD_ORDER:
                r = g[g["method"] == m]
                cells.append("" if r.empty else
                             f"{r['score'].iloc[0]:.3f} [{r['score_lo'].iloc[0]:.2f}, {r['score_hi'].iloc[0]:.2f}]")
            lines.append(f"| {model} (ours) | {task} | " + " | ".join(cells) + " |")
    for model, row in PAPER_TABLE2.items():
        lines.append(f"| {model} (paper) | current events | "
                     + " | ".join(_fmt(row.get(m)) for m in METHOD_ORDER) + " |")
    return "\n".join(lines) + "\n"


def table1_markdown(scores: Any) -> str:
    """Table 1 (MMLU): per subject and shots, base / base+RAG / FT / FT+RAG, ours and the paper's."""
    cols = ["base", "base+RAG", "FT-reg", "FT-reg+RAG"]
    lines = ["| model | shots | subject | base | base+RAG | FT | FT+RAG |", "|---|---|---|---|---|---|---|"]
    s = scores[(scores["task"] == "mmlu")] if scores is not None and len(scores) else None
    if s is not None and len(s):
        for (model, shots, subject), g in s.groupby(["model", "shots", "subject"]):
            vals = [g.loc[g["method"] == m, "score"] for m in cols]
            lines.append(f"| {model} (ours) | {shots} | {subject} | " +
                         " | ".join(_fmt(v.iloc[0]) if len(v) else "" for v in vals) + " |")
    for (shots, model), subj in PAPER_TABLE1.items():
        for subject, row in subj.items():
            lines.append(f"| {model} (paper) | {shots} | {subject} | " + " | ".join(_fmt(row[m]) for m in cols) + " |")
    return "\n".join(lines) + "\n"


def accuracy_markdown(scores: Any) -> str:
    """The headline table (README): accuracy per method for each model, task and shots, in run order.

    Each task's primary metric (``score``: cloze ``acc_norm``, letter ``acc``); intervals are in
    :func:`table2_markdown`. A method a cell did not score shows "–".
    """
    lines = ["| model | task | shots | n | " + " | ".join(METHOD_ORDER) + " |", "|---" * (4 + len(METHOD_ORDER)) + "|"]
    s = _main_rows(scores)
    if s is None or not len(s):
        return "\n".join(lines + ["| no scores yet (run notebook 05) |" + " |" * (3 + len(METHOD_ORDER))]) + "\n"
    for (model, task, shots), g in s.groupby(["model", "task", "shots"], sort=False):
        by = dict(zip(g["method"], g["score"]))
        lines.append(f"| {model} | {task} | {shots} | {int(g['n'].max())} | "
                     + " | ".join(f"{by[m]:.3f}" if m in by else "–" for m in METHOD_ORDER) + " |")
    return "\n".join(lines) + "\n"


def fig_box_by_method(scores: Any, path: str | Path) -> Path:
    """Figure 2: distribution of accuracy over all experiments (model × task × shots), per method."""
    s = _main_rows(scores)
    fig, ax = _axes()
    data, labels = [], []
    for m in METHOD_ORDER:
        v = [] if s is None or not len(s) else list(s.loc[s["method"] == m, "score"])
        if v:
            data.append(v)
            labels.append(f"{m}\n(n={len(v)})")
    if data:
        ax.boxplot(data, tick_labels=labels)
    ax.axhline(0.25, ls="--", c="grey", lw=1, label="chance (4 options)")
    ax.legend(loc="lower right")
    return _finish(fig, ax, path, "Accuracy by method over all experiments (Figure 2)", "accuracy",
                   empty=None if data else "no scores yet")


def relative_gain(scores: Any) -> Any:
    """Eq. 5: (L' - L) / L per experiment, L = base accuracy of the same (model, task, shots)."""
    import pandas as pd

    s = _main_rows(scores)
    if s is None or not len(s):
        return pd.DataFrame(columns=["model", "task", "shots", "method", "gain"])
    base = s[s["method"] == "base"].set_index(["model", "task", "shots"])["score"]
    rows = []
    for _, r in s[s["method"] != "base"].iterrows():
        b = base.get((r["model"], r["task"], r["shots"]))
        if b:
            rows.append({"model": r["model"], "task": r["task"], "shots": r["shots"], "method": r["method"],
                         "gain": (r["score"] - b) / b})
    return pd.DataFrame(rows)


def fig_relative_gain(scores: Any, path: str | Path) -> Path:
    """Mean relative accuracy gain over the base model (Eq. 5) per method, per model."""
    g = relative_gain(scores)
    fig, ax = _axes()
    if len(g):
        piv = g.groupby(["method", "model"])["gain"].mean().unstack("model")
        piv = piv.reindex([m for m in METHOD_ORDER if m in piv.index])
        piv.plot.bar(ax=ax, rot=20)
    ax.axhline(0, c="k", lw=0.8)
    return _finish(fig, ax, path, "Relative accuracy gain per method (Eq. 5)", "relative gain (L' - L) / L",
                   empty=None if len(g) else "no scores yet")


def fig_train_loss(loss: Any, path: str | Path) -> Path:
    """Figure 3: training loss per step, one line per (model, task, variant) of the main variants."""
    fig, ax = _axes()
    has = loss is not None and len(loss) > 0
    if has:
        for (model, task, variant), g in loss.groupby(["model", "task", "variant"]):
            ax.plot(g["step"], g["loss"], lw=1, label=f"{model} {task} {variant}")
        ax.legend(fontsize=6, ncol=2)
    return _finish(fig, ax, path, "Training loss (Figure 3)", "training loss", "optimiser step",
                   empty=None if has else "no training log")


def fig_paraphrase_sweep(scores: Any, path: str | Path) -> Path:
    """Figure 4: accuracy against the number of paraphrases, at fixed epochs and at a fixed step budget."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _axes()
    s = None if scores is None or not len(scores) else scores[
        scores["method"].str.startswith("FT-par(") & (scores["subject"] == "all")]
    has = s is not None and len(s) > 0
    if has:
        for (model, task, budget), g in s.groupby(["model", "task", "budget"]):
            g = g.sort_values("n_paraphrases")
            ax.errorbar(g["n_paraphrases"], g["score"], yerr=[g["score"] - g["score_lo"], g["score_hi"] - g["score"]],
                        marker="o", capsize=3, label=f"{model} {task} ({budget or 'epochs'})")
        ax.legend(fontsize=7)
    ax.axhline(0.25, ls="--", c="grey", lw=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, ax, path, "Accuracy vs paraphrases (Figure 4)", "accuracy",
                   "number of paraphrases per document", empty=None if has else "no paraphrase sweep scored")


def fig_recall(recall: Any, path: str | Path) -> Path:
    """Retrieval recall@K of the source document, per task and retriever."""
    fig, ax = _axes(6)
    has = recall is not None and len(recall) > 0
    if has:
        for (task, retr), g in recall.groupby(["task", "retriever"]):
            g = g.sort_values("k")
            ax.plot(g["k"], g["recall"], marker="o", label=f"{task} ({retr})")
        ax.legend(fontsize=7)
        ax.set_ylim(0, 1.02)
    return _finish(fig, ax, path, "Retrieval recall", "recall@K of the source document", "K (passages retrieved)",
                   empty=None if has else "no retrieval diagnostics")


_COST_HEADERS = [("method", "method"), ("cells", "cells"), ("score_wall_s", "scoring s"), ("load_wall_s", "loading s"),
                 ("train_wall_s", "training s"), ("peak_mem_mb", "peak memory MB"),
                 ("train_tokens", "training tokens"), ("scored_tokens", "scored tokens"),
                 ("index_passages", "index passages"), ("index_bytes", "index bytes")]


def costs_markdown(by_method: Any) -> str:
    """The cost table per method (``study.cost_by_method``) as Markdown, beside the accuracy tables."""
    lines = ["| " + " | ".join(h for _, h in _COST_HEADERS) + " |", "|---" * len(_COST_HEADERS) + "|"]
    if by_method is None or not len(by_method):
        return "\n".join(lines + ["| no costs recorded (run notebook 05) |" + " |" * (len(_COST_HEADERS) - 1)]) + "\n"
    table = by_method.reset_index() if "method" not in by_method.columns else by_method
    for r in table.to_dict("records"):
        cells = [f"{r[c]:,.1f}" if isinstance(r[c], float) else (f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]))
                 for c, _ in _COST_HEADERS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def learned_markdown(table: Any) -> str:
    """``study.memorisation_vs_accuracy`` as Markdown: did an adapter learn the text, and could it answer?"""
    head = ("| model | task | adapter | N | budget | KB loss before -> after | paraphrase loss after "
            "| accuracy [95% CI] | base |")
    lines = [head, "|---" * 9 + "|"]
    if table is None or not len(table):
        return "\n".join(lines + ["| no fine-tuned adapters scored (run notebooks 03 and 05) |" + " |" * 8]) + "\n"
    for r in table.to_dict("records"):
        par = "–" if r["par_loss_after"] != r["par_loss_after"] else f"{r['par_loss_after']:.2f}"
        lines.append(f"| {r['model']} | {r['task']} | {r['variant']} | {r['n_paraphrases']} | {r['budget']} "
                     f"| {r['kb_loss_before']:.2f} -> {r['kb_loss_after']:.2f} | {par} "
                     f"| {r['acc']:.3f} [{r['acc_lo']:.3f}, {r['acc_hi']:.3f}] | {_fmt(r['base_acc'])} |")
    return "\n".join(lines) + "\n"


def chance_markdown(table: Any) -> str:
    """``study.base_by_kind`` as Markdown: the base model per question kind, beside chance."""
    lines = ["| model | task | kind | n | base accuracy [95% CI] | chance | at chance |", "|---" * 7 + "|"]
    if table is None or not len(table):
        return "\n".join(lines + ["| no base scores with question kinds (run notebooks 01 and 05) |" + " |" * 6]) + "\n"
    for r in table.to_dict("records"):
        lines.append(f"| {r['model']} | {r['task']} | {r['kind']} | {r['n']} "
                     f"| {r['score']:.3f} [{r['score_lo']:.3f}, {r['score_hi']:.3f}] | {r['chance']:.2f} "
                     f"| {'yes' if r['at_chance'] else '**no**'} |")
    return "\n".join(lines) + "\n"
