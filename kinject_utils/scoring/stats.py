"""Statistics of scored questions: bootstrap intervals, a paired comparison, rank correlation.

:func:`bootstrap_ci` / :func:`summarize`: percentile-bootstrap intervals of accuracy.
:func:`paired_test`: two methods on the same questions, exact McNemar test (``scipy.stats.binomtest``
on the discordant pairs) plus a paired bootstrap interval of the accuracy difference.
:func:`spearman`: Spearman's rank correlation (``scipy.stats.spearmanr``, ties averaged).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence


def _as_binary(values: Iterable[Any], name: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool) or v in (0, 1):
            out.append(int(v))
        else:
            raise ValueError(f"{name} must hold 0/1 (or bool) per question, got {v!r}")
    if not out:
        raise ValueError(f"{name} is empty; need at least one scored question")
    return out


def bootstrap_ci(correct: Sequence[Any], n_boot: int = 2000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile-bootstrap ``1 - alpha`` interval of the accuracy (mean of 0/1 values).

    Example:
        >>> lo, hi = bootstrap_ci([1, 0, 1, 1, 0, 1, 1, 1])
        >>> 0.3 < lo < 0.75 < hi <= 1.0
        True
    """
    import numpy as np

    x = np.asarray(_as_binary(correct, "correct"), dtype=float)
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def summarize(rows: Sequence[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy and length-normalised accuracy with bootstrap 95% intervals.

    Returns:
        ``{"n", "acc", "acc_lo", "acc_hi", "acc_norm", "acc_norm_lo", "acc_norm_hi", "n_truncated"}``.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("no rows to summarise; score at least one question")
    out: dict[str, Any] = {"n": len(rows)}
    for key in ("acc", "acc_norm"):
        vals = _as_binary([r[key] for r in rows], key)
        lo, hi = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
        out.update({key: sum(vals) / len(vals), f"{key}_lo": lo, f"{key}_hi": hi})
    out["n_truncated"] = int(sum(bool(r.get("truncated", False)) for r in rows))
    return out


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of ``b`` vs ``c`` discordant pairs at 1/2."""
    from scipy.stats import binomtest

    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)


def paired_test(a_correct: Sequence[Any], b_correct: Sequence[Any], n_boot: int = 2000, seed: int = 0,
                alpha: float = 0.05) -> dict:
    """Compare two methods answered on the same questions (``b`` minus ``a``).

    Exact McNemar test on the discordant pairs (two-sided binomial test at 1/2), plus a paired
    percentile-bootstrap interval of ``acc_b - acc_a`` (questions resampled together).

    Returns:
        ``{"n", "acc_a", "acc_b", "diff", "diff_lo", "diff_hi", "a_only", "b_only", "p_mcnemar"}``;
        ``a_only`` counts questions only ``a`` got right.
    """
    import numpy as np

    a = _as_binary(a_correct, "a_correct")
    b = _as_binary(b_correct, "b_correct")
    if len(a) != len(b):
        raise ValueError(f"paired test needs the same questions: got {len(a)} and {len(b)} results")
    av, bv = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a_only = int(((av == 1) & (bv == 0)).sum())
    b_only = int(((av == 0) & (bv == 1)).sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    diffs = bv[idx].mean(axis=1) - av[idx].mean(axis=1)
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return {"n": len(a), "acc_a": float(av.mean()), "acc_b": float(bv.mean()),
            "diff": float(bv.mean() - av.mean()), "diff_lo": float(lo), "diff_hi": float(hi),
            "a_only": a_only, "b_only": b_only, "p_mcnemar": mcnemar_exact(a_only, b_only)}


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long sequences (ties get average ranks).

    Returns ``nan`` when either sequence is constant (no ranking to correlate).

    Example:
        >>> round(spearman([0, 1, 2, 5], [0.2, 0.3, 0.3, 0.6]), 4)
        0.9487
    """
    import warnings

    from scipy.stats import spearmanr

    x, y = list(x), list(y)
    if len(x) != len(y):
        raise ValueError(f"spearman needs two sequences of the same length, got {len(x)} and {len(y)}")
    if len(x) < 2:
        raise ValueError(f"spearman needs at least 2 points, got {len(x)}")
    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x, y).statistic)
