"""Notebook 07's tables and figures: category counts, training curves, accuracy against % Unknown, IDK.

Every function takes the rows the pipeline returns (SliCK rows, SFT rows) and draws one figure,
written by the one figure saver (:func:`kinject_utils.figures.save_figure`, byte-stable PNGs);
:func:`accuracy_table` is the long table behind the curves.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..figures import pyplot, save_figure
from .claims import stop_epochs
from .sets import share_name
from .slick import CATEGORIES, KNOWN


def accuracy_table(rows: Sequence[dict]):
    """Accuracy per model, set, split, epoch and category (``all`` and ``Known`` pooled too), as a DataFrame."""
    import pandas as pd

    df = pd.DataFrame([r for r in rows if r["split"] != "_loss"])
    parts = [df, df.assign(category="all"), df[df["category"].isin(KNOWN)].assign(category="Known")]
    return (pd.concat(parts).groupby(["model", "set", "split", "epoch", "category"])["correct"]
            .agg(acc="mean", n="size").reset_index())


def _finish(fig, ax, path: str | Path, title: str, ylabel: str, xlabel: str = "", legend_size: int = 8) -> Path:
    """Label the axes, add the legend, lay out, and save."""
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_counts(counts_by_model: dict[str, dict[str, int]], path: str | Path) -> Path:
    """Questions per SliCK category, one group of bars per model: which model knows enough to fine-tune."""
    fig, ax = pyplot().subplots(figsize=(6, 3.2))
    models = list(counts_by_model)
    w = 0.8 / len(CATEGORIES)
    for i, c in enumerate(CATEGORIES):
        xs = [j + i * w for j in range(len(models))]
        ax.bar(xs, [counts_by_model[m][c] for m in models], width=w, label=c)
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(models))], models)
    return _finish(fig, ax, path, title="SliCK categories per model", ylabel="questions")


def plot_train_curves(table, model: str, name: str, path: str | Path) -> Path:
    """Training accuracy per category against epoch for one run (the paper's Figure 1 analogue)."""
    t = table[(table.model == model) & (table.set == name) & (table.split == "train")]
    fig, ax = pyplot().subplots(figsize=(5, 3.2))
    for c in CATEGORIES:
        s = t[t.category == c].sort_values("epoch")
        if len(s):
            ax.plot(s.epoch, s.acc, marker="o", label=f"{c} (n={int(s.n.iloc[0])})")
    ax.set_ylim(-0.05, 1.05)
    return _finish(fig, ax, path, title=f"{model}: fitting {name}", ylabel="training accuracy", xlabel="epoch")


def epoch_table(table, split: str, category: Sequence[str]):
    """Accuracy per model, set and category (rows) after each epoch (columns), for one split; 3 decimals."""
    t = table[(table.split == split) & table.category.isin(category)]
    return t.pivot_table(index=["model", "set", "category"], columns="epoch", values="acc").round(3)


def _acc_at(table, rows, model: str, name: str, idx: int, category: str = "all") -> float:
    e = stop_epochs(rows, model, name)[idx]
    t = table[(table.model == model) & (table.set == name) & (table.split == "test") & (table.epoch == e)
              & (table.category == category)]
    return float(t.acc.iloc[0]) if len(t) else float("nan")


def plot_share_curve(table, rows, models: Sequence[str], shares: Sequence[float], path: str | Path,
                     idk_share: float | None = None) -> Path:
    """Test accuracy against % Unknown at early stop and convergence (IDK variant as separate markers)."""
    fig, ax = pyplot().subplots(figsize=(5.5, 3.4))
    for m in models:
        if not (table.model == m).any():
            continue
        for idx, (stop, style) in enumerate((("early stop", "-o"), ("convergence", "--s"))):
            ax.plot([100 * s for s in shares], [_acc_at(table, rows, m, share_name(s), idx) for s in shares], style,
                    label=f"{m}, {stop}")
            idk = "idk-" + share_name(idk_share) if idk_share is not None else None
            if idk and (table.set == idk).any():
                ax.plot([100 * idk_share], [_acc_at(table, rows, m, idk, idx)], "*", markersize=12,
                        label=f"{m}, IDK, {stop}")
    return _finish(fig, ax, path, title="Fine-tuning on unknown facts", ylabel="test accuracy (all questions)",
                   xlabel="% Unknown in the training set", legend_size=7)


def plot_single(table, rows, model: str, names: Sequence[str], path: str | Path) -> Path:
    """Test accuracy of the single-category sets (early stop and convergence)."""
    fig, ax = pyplot().subplots(figsize=(5.5, 3.2))
    for idx, stop in enumerate(("early stop", "convergence")):
        ax.bar([i + idx * 0.4 for i in range(len(names))], [_acc_at(table, rows, model, n, idx) for n in names],
               width=0.4, label=stop)
    ax.set_xticks([i + 0.2 for i in range(len(names))], [n.replace("only-", "") for n in names], fontsize=8)
    return _finish(fig, ax, path, title=f"{model}: single-category training sets", ylabel="test accuracy")
