"""Notebook 04's driver: retrieve for each task, write its files, the recall table and throughput log.

Files (under ``RESULTS_DIR``, paths from :mod:`kinject_utils.layout`)::

    04_retrieval/<task>/passages.jsonl   {"passage_id", "doc_id", "text"}
    04_retrieval/<task>/retrieved.jsonl  {"id", "passage_ids", "doc_ids", "scores"}  top K_MAX,
                                          configured retriever, in task.questions order
    04_retrieval/<task>/manifest.json    settings + hashes of the knowledge base and questions
    04_recall.csv                        task, retriever, k, recall, hit_rate, n
    04_throughput.csv                    the last run's row per task (cold or warm)
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import layout
from ..io import content_hash, read_csv, write_csv, write_json, write_jsonl
from ..log import get_logger
from ..tasks import Task, load_task, require_built
from .config import RETRIEVERS, RetrievalConfig
from .corpus import Passage, split_passages
from .embeddings import EmbeddingCache, EmbedStats, LazyEmbedder, embed_texts
from .files import MANIFEST, PASSAGES, RETRIEVED, kb_hash, retrieval_dir
from .recall import recall_at_k
from .search import BM25, build_index, dense_search, rrf_fuse

__all__ = ["RetrievalRun", "TaskRetrieval", "recall_table", "retrieve_task", "run_retrieval", "throughput_table"]

log = get_logger("retrieval")


@dataclasses.dataclass
class TaskRetrieval:
    """What :func:`retrieve_task` did for one task (timings in seconds)."""

    task: str
    n_passages: int = 0
    n_queries: int = 0
    recall_rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    passage_embed: EmbedStats = dataclasses.field(default_factory=EmbedStats)
    query_embed: EmbedStats = dataclasses.field(default_factory=EmbedStats)
    search_s: dict[str, float] = dataclasses.field(default_factory=dict)
    embedder_load_s: float = 0.0
    wall_s: float = 0.0
    skipped: str = ""


def _rank_all(passages: list[Passage], queries: list[str], cfg: RetrievalConfig,
              pvecs: np.ndarray | None, qvecs: np.ndarray | None,
              out: TaskRetrieval) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Rankings (scores, indices) per retriever: the configured one, plus the rest if comparing."""
    n = len(passages)
    want = set(RETRIEVERS) if cfg.compare else {cfg.retriever}
    if "hybrid" in want:
        want |= {"dense", "bm25"}
    # fusion needs deeper rankings than K_MAX: a passage ranked 20th by both can win
    depth = min(n, max(cfg.k_max, 1, cfg.fusion_depth if "hybrid" in want else 0))
    ranked: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if "dense" in want:
        t0 = time.perf_counter()
        index = build_index(pvecs, cfg.index, hnsw_m=cfg.hnsw_m, ef_search=max(cfg.ef_search, depth),
                            ivf_nlist=cfg.ivf_nlist, ivf_nprobe=cfg.ivf_nprobe)
        ranked["dense"] = dense_search(index, qvecs, depth)
        out.search_s["dense"] = time.perf_counter() - t0
    if "bm25" in want:
        t0 = time.perf_counter()
        ranked["bm25"] = BM25([p.text for p in passages], cfg.bm25_k1, cfg.bm25_b).search(queries, depth)
        out.search_s["bm25"] = time.perf_counter() - t0
    if "hybrid" in want:
        t0 = time.perf_counter()
        ranked["hybrid"] = rrf_fuse([ranked["dense"][1], ranked["bm25"][1]], depth, cfg.rrf_k)
        # fusion reuses both rankings, so its cost is theirs plus the merge
        out.search_s["hybrid"] = time.perf_counter() - t0 + out.search_s["dense"] + out.search_s["bm25"]
    return ranked


def retrieve_task(task: Task, cfg: RetrievalConfig, results_dir: str | Path,
                  embedder: LazyEmbedder | None = None) -> TaskRetrieval:
    """Index one task's knowledge base, retrieve for every question, write its files.

    Writes ``04_retrieval/<task>/{passages.jsonl, retrieved.jsonl, manifest.json}`` (see the module
    docstring) and returns recall rows (for every retriever compared, when questions carry
    ``source_doc_ids``) and timings. A task without documents is skipped with a reason.
    """
    t_start = time.perf_counter()
    out = TaskRetrieval(task=task.name, n_queries=len(task.questions))
    passages = split_passages(task.docs, cfg.passage_words, cfg.include_title)
    out.n_passages = len(passages)
    if not passages:
        out.skipped = ("no knowledge base (kb.jsonl is missing or empty): nothing to retrieve"
                       if not task.docs else "every document is empty: nothing to index")
        out.wall_s = time.perf_counter() - t_start
        return out
    if not task.questions:
        out.skipped = "no questions"
        out.wall_s = time.perf_counter() - t_start
        return out
    if cfg.k_max > len(passages):
        log.info(f"{task.name}: K_MAX={cfg.k_max} > {len(passages)} passages; retrieving all {len(passages)}")
    k_keep = min(cfg.k_max, len(passages))
    instr = cfg.resolved_query_instruction()
    queries = [q.question for q in task.questions]
    pvecs = qvecs = None
    if cfg.needs_dense:
        embedder = embedder or LazyEmbedder(cfg.embedder, cfg.device, cfg.batch_size)
        cache = EmbeddingCache(results_dir, cfg.embedder)
        load_before = embedder.load_s
        pvecs, out.passage_embed = embed_texts([p.text for p in passages], embedder, cache,
                                               desc=f"{task.name} passages")
        qvecs, out.query_embed = embed_texts([instr + q for q in queries], embedder, cache,
                                             desc=f"{task.name} queries")
        out.embedder_load_s = embedder.load_s - load_before
    ranked = _rank_all(passages, queries, cfg, pvecs, qvecs, out)

    gold = [q.source_doc_ids for q in task.questions]
    for name in RETRIEVERS:
        if name not in ranked or (not cfg.compare and name != cfg.retriever):
            continue
        idx = ranked[name][1]
        docs = [[passages[i].doc_id for i in row if i >= 0] for row in idx.tolist()]
        for row in recall_at_k(docs, gold, cfg.k_max):
            out.recall_rows.append({"task": task.name, "retriever": name, **row})

    scores, idx = ranked[cfg.retriever]
    rows = []
    for q, s_row, i_row in zip(task.questions, scores.tolist(), idx.tolist()):
        keep = [(s, i) for s, i in zip(s_row, i_row) if i >= 0][:k_keep]
        rows.append({"id": q.id, "passage_ids": [passages[i].passage_id for _, i in keep],
                     "doc_ids": [passages[i].doc_id for _, i in keep],
                     "scores": [round(float(s), 6) for s, _ in keep]})
    d = retrieval_dir(results_dir, task.name)
    write_jsonl(d / PASSAGES, [dataclasses.asdict(p) for p in passages])
    write_jsonl(d / RETRIEVED, rows)
    write_json(d / MANIFEST, {
        "task": task.name, "embedder": cfg.embedder, "retriever": cfg.retriever, "index": cfg.index,
        "k_max": cfg.k_max, "passage_words": cfg.passage_words, "include_title": cfg.include_title,
        "query_instruction": instr, "n_passages": len(passages), "n_questions": len(task.questions),
        "kb_hash": kb_hash(task.docs), "questions_hash": content_hash([q.id for q in task.questions]),
    })
    out.wall_s = time.perf_counter() - t_start
    return out


@dataclasses.dataclass
class RetrievalRun:
    """What :func:`run_retrieval` did: per-task results, the recall rows it saved, its timing."""

    tasks: list[TaskRetrieval]
    recall_rows: list[dict[str, Any]]
    throughput_rows: list[dict[str, Any]]
    skipped: dict[str, str]
    wall_s: float
    warm: bool  # nothing had to be embedded (and the embedder was never loaded)


_THROUGHPUT_COLS = ["run_at", "task", "embedder", "index", "retriever", "cache", "n_passages",
                    "passages_embedded", "passage_embed_s", "passages_per_s", "n_queries",
                    "queries_embedded", "query_embed_s", "search_s", "queries_per_s",
                    "bm25_queries_per_s", "hybrid_queries_per_s", "embedder_load_s", "task_wall_s",
                    "run_wall_s"]


def _rate(n: int, s: float) -> float | str:
    return round(n / s, 1) if n and s > 0 else ""


def _throughput_row(r: TaskRetrieval, cfg: RetrievalConfig, run_at: str) -> dict[str, Any]:
    pe, qe = r.passage_embed, r.query_embed
    hits, computed = pe.n_cached + qe.n_cached, pe.n_computed + qe.n_computed
    cache = "warm" if computed == 0 else ("cold" if hits == 0 else "partial")
    search = r.search_s.get(cfg.retriever, 0.0)
    # "queries answered per second": embedding the query (when not cached) plus the search
    return {"run_at": run_at, "task": r.task, "embedder": cfg.embedder if cfg.needs_dense else "",
            "index": cfg.index, "retriever": cfg.retriever, "cache": cache if cfg.needs_dense else "",
            "n_passages": r.n_passages, "passages_embedded": pe.n_computed,
            "passage_embed_s": round(pe.seconds, 3), "passages_per_s": _rate(pe.n_computed, pe.seconds),
            "n_queries": r.n_queries, "queries_embedded": qe.n_computed, "query_embed_s": round(qe.seconds, 3),
            "search_s": round(search, 4), "queries_per_s": _rate(r.n_queries, qe.seconds + search),
            "bm25_queries_per_s": _rate(r.n_queries, r.search_s.get("bm25", 0.0)),
            "hybrid_queries_per_s": _rate(r.n_queries, qe.seconds + r.search_s.get("hybrid", 0.0)),
            "embedder_load_s": round(r.embedder_load_s, 2), "task_wall_s": round(r.wall_s, 2)}


def run_retrieval(results_dir: str | Path, tasks: Sequence[str], cfg: RetrievalConfig) -> RetrievalRun:
    """Notebook 04: retrieve for every task that notebook 01 wrote; save recall and throughput.

    A task folder that does not exist, or a task without a knowledge base (MMLU offline), is
    skipped with a logged reason. Writes ``04_recall.csv`` (this run's tasks) and this run's row per
    task into ``04_throughput.csv`` (replacing that task's earlier row, so the file does not grow;
    other tasks' rows stay). One embedder is shared by all tasks and loaded only if something is
    missing from the cache.
    """
    t0 = time.perf_counter()
    results_dir = Path(results_dir)
    run_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    embedder = LazyEmbedder(cfg.embedder, cfg.device, cfg.batch_size)
    done: list[TaskRetrieval] = []
    skipped: dict[str, str] = {}
    require_built(results_dir, list(tasks), "04")
    for name in tasks:
        folder = layout.task_dir(results_dir, name)
        if not folder.exists():
            skipped[name] = f"no task folder {folder}; run notebook 01 first"
            log.warning(f"{name}: SKIPPED - {skipped[name]}")
            continue
        r = retrieve_task(load_task(folder), cfg, results_dir, embedder)
        if r.skipped:
            skipped[name] = r.skipped
            log.warning(f"{name}: SKIPPED - {r.skipped}")
            continue
        if not r.recall_rows:
            log.info(f"{name}: no question names its source document: recall not computed")
        hit = r.passage_embed.n_computed + r.query_embed.n_computed == 0
        log.info(f"{name}: {r.n_passages} passages, {r.n_queries} queries; embedded "
                 f"{r.passage_embed.n_computed} passages + {r.query_embed.n_computed} queries "
                 f"({'cache hit' if hit else 'cache miss'}) in {r.wall_s:.2f}s")
        done.append(r)
    if embedder.n_over_length:
        log.warning(f"{embedder.n_over_length} texts were longer than the embedder's max_seq_length and were "
                    "embedded from their start only (lower PASSAGE_WORDS to avoid)")
    recall_rows = [row for r in done for row in r.recall_rows]
    write_csv(recall_rows, layout.recall_csv(results_dir), ["task", "retriever", "k", "recall", "hit_rate", "n"])
    wall = time.perf_counter() - t0
    tp_rows = [{**_throughput_row(r, cfg, run_at), "run_wall_s": round(wall, 2)} for r in done]
    if tp_rows:
        tp_path = layout.retrieval_throughput_csv(results_dir)
        kept = [row for row in read_csv(tp_path, missing_ok=True) if row.get("task") not in {r.task for r in done}]
        write_csv(kept + tp_rows, tp_path, _THROUGHPUT_COLS)
    return RetrievalRun(tasks=done, recall_rows=recall_rows, throughput_rows=tp_rows, skipped=skipped,
                        wall_s=wall, warm=not embedder.loaded)


def recall_table(rows: Sequence[dict[str, Any]], metric: str = "recall") -> str:
    """A plain-text table: one line per (task, k), one column per retriever.

    Example:
        >>> print(recall_table([{"task": "t", "retriever": "dense", "k": 1, "recall": 0.5, "hit_rate": 0.5, "n": 2}]))
        task  k  dense   (recall, n=2)
        t     1  0.500
    """
    if not rows:
        return "(no recall rows: no task with a knowledge base and source_doc_ids)"
    rets = [r for r in RETRIEVERS if any(row["retriever"] == r for row in rows)]
    cell = {(row["task"], int(row["k"]), row["retriever"]): float(row[metric]) for row in rows}
    keys = sorted({(row["task"], int(row["k"])) for row in rows}, key=lambda x: (str(x[0]), x[1]))
    ns = sorted({int(row["n"]) for row in rows})
    tw = max(4, *(len(str(t)) for t, _ in keys))
    head = f"{'task':<{tw}}  k  " + "  ".join(f"{r:<6}" for r in rets)
    lines = [f"{head.rstrip()}   ({metric}, n={'/'.join(map(str, ns))})"]
    for t, k in keys:
        vals = "  ".join(f"{cell[(t, k, r)]:.3f} " if (t, k, r) in cell else "   -   " for r in rets)
        lines.append(f"{t:<{tw}}  {k}  {vals}".rstrip())
    return "\n".join(lines)


def throughput_table(results_dir: str | Path, last: int = 6) -> str:
    """The last ``last`` rows of ``04_throughput.csv`` as text (each task's latest run, cold or warm)."""
    rows = read_csv(layout.retrieval_throughput_csv(results_dir), missing_ok=True)[-last:]
    if not rows:
        return "(no throughput rows yet)"
    cols = ["run_at", "task", "cache", "n_passages", "passages_embedded", "passages_per_s", "n_queries",
            "queries_embedded", "queries_per_s", "embedder_load_s", "task_wall_s", "run_wall_s"]
    width = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(f"{c:<{width[c]}}" for c in cols)]
    lines += ["  ".join(f"{r.get(c, '')!s:<{width[c]}}" for c in cols) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


