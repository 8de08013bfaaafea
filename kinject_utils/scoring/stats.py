"""Statistics of scored questions: bootstrap intervals, a paired comparison, rank correlation.

One resampler (:func:`_resampled_means`) serves every interval in the project, so a score's interval
(notebook 05), a claim's (06) and a finding's (07) are the same percentile bootstrap with the same seed:

:func:`bootstrap_ci` / :func:`summarize`: intervals of accuracy (0/1 per question).
:func:`mean_ci`: the same for any numbers (a per-question difference of differences, say).
:func:`two_sample_ci`: the difference of two means over different items (resampled separately).
:func:`paired_test`: two methods on the same questions, exact McNemar test (``scipy.stats.binomtest``
on the discordant pairs) plus a paired bootstrap interval of the accuracy difference.
:func:`spearman`: Spearman's rank correlation (``scipy.stats.spearmanr``, ties averaged).

``scipy.stats.bootstrap`` is not used for the intervals: its resampling differs, and the committed
results' intervals were drawn with this one (a test regenerates ``06_claims.json`` bit for bit).
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


def _resampled_means(samples: Sequence[Any], n_boot: int, seed: int, paired: bool) -> list[Any]:
    """Bootstrap means of each sample: ``n_boot`` resamples with replacement, one ``rng`` seeded ``seed``.

    ``paired``: the samples are the same items (questions) and are resampled together, one index
    draw for all; otherwise each sample draws its own indices, in order.
    """
    import numpy as np

    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    xs = [np.asarray(x, dtype=float) for x in samples]
    rng = np.random.default_rng(seed)
    if paired:
        idx = rng.integers(0, len(xs[0]), size=(n_boot, len(xs[0])))
        return [x[idx].mean(axis=1) for x in xs]
    return [x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1) for x in xs]


def _percentiles(draws: Any, alpha: float) -> tuple[float, float]:
    """The percentile interval ``[alpha/2, 1 - alpha/2]`` of bootstrap draws."""
    import numpy as np

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def mean_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile-bootstrap ``1 - alpha`` interval of the mean of any numbers.

    Example:
        >>> mean_ci([-1, 0, 0, 1, 1, 1, 2, 1])  # mean 0.625
        (0.0, 1.125)
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_ci needs at least one value")
    (means,) = _resampled_means([values], n_boot, seed, paired=True)
    return _percentiles(means, alpha)


def two_sample_ci(x: Sequence[float], y: Sequence[float], n_boot: int = 2000, seed: int = 0,
                  alpha: float = 0.05) -> tuple[float, float]:
    """Interval of ``mean(x) - mean(y)`` for two samples of different items (each resampled on its own).

    Example:
        >>> two_sample_ci([3, 3, 2, 4], [1, 2, 1, 2])
        (0.75, 2.25)
    """
    if not len(x) or not len(y):
        raise ValueError(f"two_sample_ci needs two non-empty samples, got {len(x)} and {len(y)} values")
    mx, my = _resampled_means([x, y], n_boot, seed, paired=False)
    return _percentiles(mx - my, alpha)


def bootstrap_ci(correct: Sequence[Any], n_boot: int = 2000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile-bootstrap ``1 - alpha`` interval of the accuracy (mean of 0/1 values).

    Example:
        >>> lo, hi = bootstrap_ci([1, 0, 1, 1, 0, 1, 1, 1])
        >>> 0.3 < lo < 0.75 < hi <= 1.0
        True
    """
    return mean_ci(_as_binary(correct, "correct"), n_boot=n_boot, seed=seed, alpha=alpha)


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
    ma, mb = _resampled_means([av, bv], n_boot, seed, paired=True)
    lo, hi = _percentiles(mb - ma, alpha)
    return {"n": len(a), "acc_a": float(av.mean()), "acc_b": float(bv.mean()),
            "diff": float(bv.mean() - av.mean()), "diff_lo": lo, "diff_hi": hi,
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
