"""Search: FAISS (dense), a small numpy BM25 (sparse) and reciprocal rank fusion."""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .config import INDEXES

__all__ = ["BM25", "build_index", "dense_search", "rrf_fuse"]


def build_index(vecs: np.ndarray, kind: str = "flat", *, hnsw_m: int = 32, ef_search: int = 128,
                ivf_nlist: int = 0, ivf_nprobe: int = 8) -> Any:
    """A FAISS inner-product index over unit vectors (so scores are cosine similarities).

    ``flat`` is exact. ``hnsw`` (graph) and ``ivf`` (k-means cells; ``ivf_nlist=0`` picks about
    sqrt(n)) are approximate and pay off only for large corpora (>~100k passages).
    """
    import faiss

    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    n, d = vecs.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
    elif kind == "ivf":
        nlist = ivf_nlist or max(1, round(math.sqrt(n)))
        nlist = min(nlist, n)  # k-means needs at least one point per cell
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vecs)
        index.nprobe = min(ivf_nprobe, nlist)
    else:
        raise ValueError(f"index kind must be one of {INDEXES}, got {kind!r}")
    index.add(vecs)
    return index


def dense_search(index: Any, qvecs: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    scores, idx = index.search(np.ascontiguousarray(qvecs, dtype=np.float32), depth)
    return scores, idx  # approximate indexes may return -1 for missing slots; callers drop them


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, ties broken by lower index (deterministic)."""
    if k >= len(scores):
        cand = np.arange(len(scores))
    else:
        cand = np.argpartition(-scores, k - 1)[:k]
        # include every index tied with the k-th score so the tie-break below is by index
        cut = scores[cand].min()
        cand = np.flatnonzero(scores >= cut)
    order = np.lexsort((cand, -scores[cand]))
    return cand[order][:k]


_TOKEN = re.compile(r"\w+", re.UNICODE)


def _bm25_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class BM25:
    """Okapi BM25 over passages, in numpy (postings per term with precomputed weights).

    score(q, p) = sum over distinct query terms t in p of
    idf(t) * tf(t,p) * (k1 + 1) / (tf(t,p) + k1 * (1 - b + b * |p| / avg|p|)),
    idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))  (Lucene's, never negative).

    Example:
        >>> BM25(["red fox", "blue sky"]).search(["fox"], 1)[1].tolist()
        [[0]]
    """

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.n = len(texts)
        toks = [_bm25_tokens(t) for t in texts]
        lengths = np.array([len(t) for t in toks], dtype=np.float64)
        avg = lengths.mean() if self.n and lengths.mean() > 0 else 1.0
        norm = k1 * (1.0 - b + b * lengths / avg)
        post: dict[str, tuple[list[int], list[int]]] = {}
        for i, t in enumerate(toks):
            for term, tf in Counter(t).items():
                ids, tfs = post.setdefault(term, ([], []))
                ids.append(i)
                tfs.append(tf)
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term, (ids, tfs) in post.items():
            ids_a, tf_a = np.array(ids), np.array(tfs, dtype=np.float64)
            idf = math.log(1.0 + (self.n - len(ids) + 0.5) / (len(ids) + 0.5))
            self.postings[term] = (ids_a, idf * tf_a * (k1 + 1.0) / (tf_a + norm[ids_a]))

    def scores(self, query: str) -> np.ndarray:
        s = np.zeros(self.n, dtype=np.float64)
        for term in set(_bm25_tokens(query)):
            hit = self.postings.get(term)
            if hit is not None:
                s[hit[0]] += hit[1]
        return s

    def search(self, queries: Sequence[str], depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices), each ``(len(queries), min(depth, n))``, best first."""
        depth = min(depth, self.n)
        out_s = np.zeros((len(queries), depth), dtype=np.float32)
        out_i = np.zeros((len(queries), depth), dtype=np.int64)
        for r, q in enumerate(queries):
            s = self.scores(q)
            top = _topk(s, depth)
            out_i[r], out_s[r] = top, s[top]
        return out_s, out_i


def rrf_fuse(rankings: Sequence[np.ndarray], depth: int, k: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal rank fusion: score(p) = sum over rankings of 1 / (k + rank(p)), rank from 1.

    Args:
        rankings: arrays ``(n_queries, depth_i)`` of passage indices, best first (-1 = empty slot).
        depth: how many fused results to keep per query.
        k: the RRF constant (60 in Cormack, Clarke & Buettcher 2009).

    Returns:
        (scores, indices), each ``(n_queries, depth)``; rows shorter than ``depth`` are padded
        with index -1 and score 0. Ties go to the passage ranked higher by the first ranking.
    """
    nq = rankings[0].shape[0]
    out_s = np.zeros((nq, depth), dtype=np.float32)
    out_i = np.full((nq, depth), -1, dtype=np.int64)
    for r in range(nq):
        fused: dict[int, float] = {}
        order: dict[int, int] = {}
        for ranking in rankings:
            for rank, p in enumerate(ranking[r].tolist(), 1):
                if p < 0:
                    continue
                fused[p] = fused.get(p, 0.0) + 1.0 / (k + rank)
                order.setdefault(p, len(order))
        best = sorted(fused, key=lambda p: (-fused[p], order[p]))[:depth]
        out_i[r, :len(best)] = best
        out_s[r, :len(best)] = [fused[p] for p in best]
    return out_s, out_i

