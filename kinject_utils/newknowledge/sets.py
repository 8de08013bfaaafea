"""Splits and training sets of the controlled fine-tuning (Gekhman et al. 2024, section 4).

* :func:`split` - categorised questions into train pool / dev / test, stratified by category.
* :func:`unknown_share_sets` - sets of one fixed size with an exact share of Unknown examples
  (the rest Known = HighlyKnown + MaybeKnown). The sets are nested prefixes of one shuffled order
  per group, so going from 25% to 50% Unknown swaps Known examples for Unknown ones and nothing else.
* :func:`single_category_sets` - one set per category, all of one size.
* :func:`idk_variant` - the same set with every Unknown example's answer replaced by ``I don't know``.

An example is a dict ``{"id", "question", "answer", "category", "relation"}``.

    >>> ex = [{"id": str(i), "category": c} for i, c in enumerate(["Unknown"] * 4 + ["HighlyKnown"] * 4)]
    >>> sets = unknown_share_sets(ex, size=4, shares=[0, 0.5, 1], seed=0)
    >>> [sum(e["category"] == "Unknown" for e in s) for s in sets.values()]
    [0, 2, 4]
"""
from __future__ import annotations

import random
from typing import Sequence

from .slick import CATEGORIES, KNOWN

IDK = "I don't know"


def _by_category(examples: Sequence[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {c: [] for c in CATEGORIES}
    for e in examples:
        if e["category"] not in out:
            raise ValueError(f"example {e.get('id')!r} has category {e['category']!r}; expected one of {CATEGORIES}")
        out[e["category"]].append(e)
    return {c: sorted(v, key=lambda e: e["id"]) for c, v in out.items()}


def _shuffled(rows: list[dict], seed: int, tag: str) -> list[dict]:
    rows = list(rows)
    random.Random(f"kinject-sets/{seed}/{tag}").shuffle(rows)
    return rows


def split(examples: Sequence[dict], dev_share: float = 0.15, test_share: float = 0.3,
          seed: int = 0) -> dict[str, list[dict]]:
    """Stratified ``{"train", "dev", "test"}`` split: each category split by the same shares.

    Raises:
        ValueError: shares outside (0, 1) or summing to 1 or more.
    """
    if not (0 < dev_share < 1 and 0 < test_share < 1 and dev_share + test_share < 1):
        raise ValueError(f"need 0 < dev_share, test_share and dev_share + test_share < 1; got {dev_share}, "
                         f"{test_share}")
    out: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for cat, rows in _by_category(examples).items():
        rows = _shuffled(rows, seed, f"split/{cat}")
        n_test, n_dev = round(len(rows) * test_share), round(len(rows) * dev_share)
        out["test"] += rows[:n_test]
        out["dev"] += rows[n_test:n_test + n_dev]
        out["train"] += rows[n_test + n_dev:]
    return {k: sorted(v, key=lambda e: e["id"]) for k, v in out.items()}


def share_name(share: float) -> str:
    """``unknown-050`` for 0.5."""
    return f"unknown-{round(share * 100):03d}"


def max_size(train: Sequence[dict], shares: Sequence[float]) -> int:
    """The largest set size every share can be built with exactly (a hint for the error message)."""
    g = _by_category(train)
    n_unk, n_known = len(g["Unknown"]), sum(len(g[c]) for c in KNOWN)
    best = 0
    for size in range(1, n_unk + n_known + 1):
        if all(float(size * s).is_integer() and size * s <= n_unk and size - size * s <= n_known for s in shares):
            best = size
    return best


def unknown_share_sets(train: Sequence[dict], size: int, shares: Sequence[float],
                       seed: int = 0) -> dict[str, list[dict]]:
    """One training set per share: exactly ``size * share`` Unknown examples, the rest Known.

    Raises:
        ValueError: a share outside [0, 1], ``size * share`` not a whole number, or too few Unknown /
            Known examples (the message gives the largest size that works).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    for s in shares:
        if not 0 <= s <= 1:
            raise ValueError(f"share {s} is outside [0, 1]; write shares as fractions (0.25, not 25)")
        if not float(size * s).is_integer():
            raise ValueError(f"size {size} x share {s} = {size * s} is not a whole number of examples; pick a "
                             "size divisible by every share's denominator (e.g. a multiple of 4 for 25% steps)")
    g = _by_category(train)
    unknown = _shuffled(g["Unknown"], seed, "unknown")
    known = _shuffled([e for c in KNOWN for e in g[c]], seed, "known")
    need_u, need_k = int(size * max(shares)), int(size * (1 - min(shares)))
    if need_u > len(unknown) or need_k > len(known):
        raise ValueError(f"a {size}-example set at shares {list(shares)} needs {need_u} Unknown and {need_k} Known "
                         f"training examples; there are {len(unknown)} and {len(known)}. Use TRAIN_SIZE <= "
                         f"{max_size(train, shares)} or more questions (N_QUESTIONS)")
    out = {}
    for s in shares:
        n_u = int(size * s)
        rows = unknown[:n_u] + known[:size - n_u]
        out[share_name(s)] = _shuffled(rows, seed, f"order/{s}")
    return out


def single_category_sets(train: Sequence[dict], size: int, seed: int = 0,
                         categories: Sequence[str] = CATEGORIES) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """One ``size``-example set per category that has enough examples.

    Returns:
        ``(sets, skipped)``: sets by ``only-<Category>`` name, and for each category left out the reason.
    """
    g = _by_category(train)
    sets, skipped = {}, {}
    for c in categories:
        if len(g[c]) >= size:
            sets[f"only-{c}"] = _shuffled(g[c], seed, f"single/{c}")[:size]
        else:
            skipped[c] = f"{len(g[c])} training examples, fewer than the set size {size}"
    return sets, skipped


def idk_variant(examples: Sequence[dict]) -> list[dict]:
    """A copy with each Unknown example's answer replaced by :data:`IDK` (the paper's IDK relabelling)."""
    return [{**e, "answer": IDK} if e["category"] == "Unknown" else dict(e) for e in examples]
