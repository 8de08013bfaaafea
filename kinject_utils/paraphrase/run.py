"""Notebook 02's driver: the cached, checked loop over a task, its output files and statistics.

Files (paths from :mod:`kinject_utils.layout`)::

    02_paraphrases/<task>.jsonl   {"doc_id", "paraphrases", "backend", "model", "doc_hash"}; a pass
                                  that got fewer accepted paraphrases for a document than the file
                                  holds keeps the earlier ones (a failed pass never loses work)
    02_paraphrase_stats.csv       one row per task, backend, model and scope
    cache/paraphrases/            raw replies, one JSONL per backend and model (see cache.py)
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .. import layout
from ..io import append_jsonl, content_hash, read_csv, read_jsonl, write_csv, write_jsonl
from ..log import get_logger
from ..log import progress as progress_bar
from ..tasks import Task
from .base import ChatBackend, ParaphraseBackend
from .cache import cache_file, cache_key, load_cache
from .check import check_paraphrase, fact_recall, normalise, required_facts
from .generator import GeneratorRewordingsBackend
from .local import LocalChatBackend
from .openai_compat import OpenAICompatibleBackend
from .parse import parse_paraphrases
from .prompt import PROMPT_ID

__all__ = [
    "STATS_COLUMNS",
    "coverage_table",
    "make_backend",
    "paraphrase_task",
    "read_paraphrases",
    "write_paraphrases",
    "write_stats",
]

#: Columns of ``{RESULTS_DIR}/02_paraphrase_stats.csv`` (one row per task, backend, model, scope).
STATS_COLUMNS = ["task", "backend", "model", "scope", "n_docs", "n_requested", "n_accepted",
                 "n_rejected", "acceptance_rate", "fill_rate", "paraphrases_per_min", "seconds",
                 "n_calls", "n_cached_calls", "n_parse_failures", "n_short_replies", "n_retries",
                 "mean_fact_recall", "min_fact_recall",
                 "rejected_missing_fact", "rejected_duplicate", "rejected_too_short",
                 "rejected_empty", "wall_seconds"]
log = get_logger("paraphrase")


def make_backend(kind: str, *, task: Task | None = None, model: str = "smollm2-135m", base_url: str = "",
                 api_key_env: str = "OPENAI_API_KEY", **kwargs: Any) -> ParaphraseBackend:
    """Build a backend from notebook parameters.

    Args:
        kind: ``"generator"`` (needs ``task``), ``"local"`` (``model``: an instruct model) or
            ``"openai"`` (``base_url``, ``model``, ``api_key_env``).
        kwargs: passed to the backend's constructor (``max_new_tokens``, ``timeout``, ...).
    """
    kind = (kind or "").strip().lower()
    if kind == "generator":
        if task is None:
            raise ValueError("the generator backend needs the task (its rewordings live in task.paraphrases)")
        return GeneratorRewordingsBackend(task)
    if kind == "local":
        return LocalChatBackend(model, **kwargs)
    if kind == "openai":
        return OpenAICompatibleBackend(base_url, model, api_key_env=api_key_env, **kwargs)
    raise ValueError(f"unknown paraphrase backend {kind!r}; use 'generator', 'local' or 'openai'")



def paraphrase_task(task: Task, backend: ParaphraseBackend, n: int = 10, seed: int = 0,
                    cache_dir: str | os.PathLike | None = None, progress: bool = True, *,
                    doc_ids: Sequence[str] | None = None, per_call: int | None = None, max_retries: int = 3,
                    check_facts: bool = True, min_fact_recall: float = 1.0, min_length_ratio: float = 0.25,
                    scope: str = "all") -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Up to ``n`` checked paraphrases of every document of ``task`` (resumable; see module docstring).

    Args:
        task: the task; its questions' answers drive the fact check.
        backend: a :class:`ParaphraseBackend`.
        n: paraphrases wanted per document (the paper: 10).
        seed: base seed; request ``i`` of a document uses ``seed + i``.
        cache_dir: folder of the JSONL reply cache (``None``: no cache).
        progress: show a tqdm bar.
        doc_ids: only these documents (default: all, in knowledge-base order).
        per_call: paraphrases asked for per request (default: the backend's ``default_per_call``).
        max_retries: requests per document beyond the ``ceil(n / per_call)`` needed.
        check_facts: reject paraphrases that lose answer strings (:func:`required_facts`).
        min_fact_recall: with ``check_facts``, the fraction of a document's answer strings a
            paraphrase must keep (1.0: all of them, the strict rule).
        min_length_ratio: reject paraphrases shorter than this fraction of the document.
        scope: label for the stats row (``"all"``, ``"sample"``).

    Returns:
        ``(paraphrases, stats)``: doc_id -> accepted paraphrases (at most ``n``; possibly fewer),
        and a dict with the :data:`STATS_COLUMNS` plus ``per_doc``: per document its counts, the
        answer strings required and the rejected candidates as ``(reason, text)``.

    Raises:
        ValueError: bad settings or unknown ``doc_ids``.
        ParaphraseBackendError: a backend request failed for good; what was done is cached.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (paraphrases per document) must be an integer >= 1, got {n!r}")
    per_call = int(per_call or backend.default_per_call)
    if per_call < 1 or max_retries < 0 or not 0 <= min_length_ratio < 1 or not 0 <= min_fact_recall <= 1:
        raise ValueError(f"need per_call >= 1, max_retries >= 0, 0 <= min_length_ratio < 1 and "
                         f"0 <= min_fact_recall <= 1; got {per_call}, {max_retries}, {min_length_ratio}, "
                         f"{min_fact_recall}")
    by_id = task.doc_by_id()
    if doc_ids is None:
        docs = list(task.docs)
    else:
        unknown = [d for d in doc_ids if d not in by_id]
        if unknown:
            raise ValueError(f"doc_ids not in task {task.name!r}: {unknown[:5]}")
        docs = [by_id[d] for d in doc_ids]
    facts = required_facts(task) if check_facts else {}
    use_cache = cache_dir is not None and backend.cacheable
    cache_path = cache_file(cache_dir, backend) if use_cache else None
    cache = load_cache(cache_path) if cache_path else {}
    max_calls = 1 if backend.deterministic else math.ceil(n / per_call) + max_retries
    counters0 = dict(backend.counters)

    t_wall = time.time()
    out: dict[str, list[str]] = {}
    per_doc = []
    tot = {"calls": 0, "cached": 0, "parse_failures": 0, "short": 0, "seconds": 0.0, "candidates": 0}
    recalls: list[float] = []
    rejected = {"missing_fact": 0, "duplicate": 0, "too_short": 0, "empty": 0}
    bar = progress_bar(docs, desc=f"paraphrase {task.name} [{backend.name}]", unit="doc", disable=not progress)
    for doc in bar:
        accepted: list[str] = []
        seen = {normalise(doc.text)}
        doc_facts = facts.get(doc.doc_id, [])
        calls = 0
        doc_rejected: list[tuple[str, str]] = []
        while len(accepted) < n and calls < max_calls:
            k = min(per_call, n - len(accepted))
            call_seed = seed + calls
            key = cache_key(doc.text, backend, k, call_seed)
            calls += 1
            if key in cache:
                row = cache[key]
                tot["cached"] += 1
                if isinstance(backend, ChatBackend) and row.get("raw"):
                    # re-parse what the model wrote: parser fixes apply without regenerating
                    found, how = parse_paraphrases(backend.redact(row["raw"]), k)
                    row = {**row, "paraphrases": found, "how": how}
            else:
                t0 = time.perf_counter()
                reply = backend.paraphrase(doc, k, call_seed)
                row = {"key": key, "doc_id": doc.doc_id, "n_requested": k, "seed": call_seed,
                       "paraphrases": [backend.redact(p) for p in reply.paraphrases], "how": reply.how,
                       "raw": backend.redact(reply.raw),
                       "seconds": round(time.perf_counter() - t0, 6), "backend": backend.name,
                       "model": backend.model, "prompt_id": PROMPT_ID}
                if cache_path is not None:
                    append_jsonl(cache_path, row)  # flushed + fsynced: survives a kill right after
                    cache[key] = row
            tot["calls"] += 1
            tot["seconds"] += float(row.get("seconds", 0.0))
            # only the k asked for count: a small model repeating one line 6 times is 1 candidate
            cands = [p for p in row["paraphrases"] if isinstance(p, str)][:k]
            if not cands and row.get("how") != "generator":  # the model wrote nothing usable
                tot["parse_failures"] += 1
            elif len(cands) < k:
                tot["short"] += 1
            for p in cands:
                tot["candidates"] += 1
                r = fact_recall(p, doc_facts)
                if r is not None:
                    recalls.append(r)
                why = check_paraphrase(p, doc.text, doc_facts, seen, min_length_ratio, min_fact_recall)
                if why is None:
                    accepted.append(p.strip())
                    seen.add(normalise(p))
                else:
                    rejected[why] += 1
                    doc_rejected.append((why, p))
        out[doc.doc_id] = accepted
        per_doc.append({"doc_id": doc.doc_id, "n_accepted": len(accepted), "n_rejected": len(doc_rejected),
                        "rejected": doc_rejected, "n_calls": calls, "facts": doc_facts})
        if progress:
            # refresh=False: redraw at tqdm's own pace (papermill logs every redraw as a line)
            bar.set_postfix(ok=sum(len(v) for v in out.values()), rejected=sum(rejected.values()), refresh=False)
    bar.close()

    n_acc = sum(len(v) for v in out.values())
    n_rej = sum(rejected.values())
    secs = tot["seconds"]
    stats = {
        "task": task.name, "backend": backend.name, "model": backend.model, "scope": scope,
        "n_docs": len(docs), "n_requested": n * len(docs), "n_accepted": n_acc, "n_rejected": n_rej,
        # acceptance: of the candidates the backend produced, the fraction that passed the checks
        "acceptance_rate": round(n_acc / (n_acc + n_rej), 4) if n_acc + n_rej else float("nan"),
        # fill: of the paraphrases asked for, the fraction obtained
        "fill_rate": round(n_acc / (n * len(docs)), 4) if docs else float("nan"),
        # throughput over backend time as measured when each reply was made (cached replies keep
        # their original timing, so a re-run reports the same figure)
        # (a lookup backend such as the generator's rewordings has no meaningful throughput: NaN)
        "paraphrases_per_min": round(60.0 * n_acc / secs, 2) if secs > 1e-3 and backend.name != "generator"
        else float("nan"),
        "seconds": round(secs, 3), "n_calls": tot["calls"], "n_cached_calls": tot["cached"],
        "n_parse_failures": tot["parse_failures"], "n_short_replies": tot["short"],
        "n_retries": backend.counters.get("retries", 0) - counters0.get("retries", 0),
        # mean fraction of answer strings kept, over every candidate of a document with answers
        "mean_fact_recall": round(sum(recalls) / len(recalls), 4) if recalls else float("nan"),
        "min_fact_recall": min_fact_recall if check_facts else 0.0,
        **{f"rejected_{k}": v for k, v in rejected.items()},
        "wall_seconds": round(time.time() - t_wall, 3),
        "per_doc": per_doc,
    }
    return out, stats


def _doc_hashes(task: Task | None) -> dict[str, str]:
    return {d.doc_id: content_hash(d.text, length=12) for d in task.docs} if task is not None else {}


def write_paraphrases(results_dir: str | os.PathLike, task_name: str, paraphrases: dict[str, list[str]],
                      backend: ParaphraseBackend, task: Task | None = None) -> Path:
    """Write ``02_paraphrases/<task>.jsonl`` atomically, never losing earlier accepted paraphrases.

    One row per document: ``{"doc_id", "paraphrases": [...], "backend", "model", "doc_hash"}``. A
    document with no accepted paraphrase gets an empty list (so readers see it was tried). Where the
    file already holds *more* accepted paraphrases for a document than this pass got (a failed or
    partly failed pass: a server down, replies that did not parse), the earlier row is kept, so a bad
    pass never replaces good work. With ``task`` given, an earlier row is kept only while its
    document's text is unchanged (``doc_hash``) and still in the task.
    """
    path = layout.paraphrase_file(results_dir, task_name)
    hashes = _doc_hashes(task)
    earlier = {r["doc_id"]: r for r in read_jsonl(path)} if path.exists() else {}
    rows, kept = {}, 0
    for d, p in paraphrases.items():
        row = {"doc_id": d, "paraphrases": [backend.redact(x) for x in p], "backend": backend.name,
               "model": backend.model, "doc_hash": hashes.get(d, "")}
        old = earlier.get(d)
        same_doc = old is not None and (not hashes or old.get("doc_hash") in (None, "", hashes.get(d)))
        if same_doc and len(old.get("paraphrases", [])) > len(row["paraphrases"]):
            row, kept = old, kept + 1
        rows[d] = row
    for d, old in earlier.items():  # documents this pass did not touch
        if d not in rows and (not hashes or (d in hashes and old.get("doc_hash") in (None, "", hashes[d]))):
            rows[d] = old
    if kept:
        log.warning(f"{task_name}: this pass accepted fewer paraphrases than {path} already held for {kept} "
                    "document(s); kept the earlier ones (delete the file to start over)")
    order = [d.doc_id for d in task.docs] if task is not None else list(rows)
    return write_jsonl(path, [rows[d] for d in order if d in rows] + [r for d, r in rows.items() if d not in order])


def read_paraphrases(results_dir: str | os.PathLike, task_name: str) -> dict[str, list[str]]:
    """The one reader of ``02_paraphrases/<task>.jsonl``: doc_id -> accepted paraphrases.

    Notebook 03 trains FT-par(N) on the first N of each document.

    Raises:
        FileNotFoundError: notebook 02 has not run for this task (the message says so).
        ValueError: a malformed row (file and line named).
    """
    path = layout.paraphrase_file(results_dir, task_name)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run notebook 02 for task {task_name!r} first "
                                "(or list the task in its TASKS)")
    out: dict[str, list[str]] = {}
    for i, row in enumerate(read_jsonl(path), 1):
        ps = row.get("paraphrases", [])
        if not isinstance(row.get("doc_id"), str) or not isinstance(ps, list) or \
                not all(isinstance(p, str) for p in ps):
            raise ValueError(f"{path}, row {i}: expected {{\"doc_id\": str, \"paraphrases\": [str, ...]}}. "
                             "Fix that row or delete the file and re-run notebook 02.")
        out[row["doc_id"]] = list(ps)
    return out


def write_stats(results_dir: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    """Merge stats rows into ``02_paraphrase_stats.csv`` (atomically).

    A row replaces an earlier one with the same (task, backend, model, scope); other rows stay.
    """
    path = layout.paraphrase_stats(results_dir)
    key = lambda r: (str(r["task"]), str(r["backend"]), str(r["model"]), str(r.get("scope", "all")))
    merged: dict[tuple, dict] = {}
    for r in read_csv(path, missing_ok=True):
        merged[key(r)] = r
    for r in rows:
        merged[key(r)] = {c: r.get(c, "") for c in STATS_COLUMNS}
    return write_csv([merged[k] for k in sorted(merged)], path, STATS_COLUMNS)


def coverage_table(paraphrases: dict[str, list[str]], n_max: int = 10) -> list[dict[str, Any]]:
    """How many documents have at least N paraphrases, for N = 0..n_max (what FT-par(N) can use).

    Example:
        >>> coverage_table({"a": ["x", "y"], "b": []}, 2)
        [{'N': 0, 'docs': 2, 'share': 1.0}, {'N': 1, 'docs': 1, 'share': 0.5}, {'N': 2, 'docs': 1, 'share': 0.5}]
    """
    total = len(paraphrases)
    return [{"N": k, "docs": sum(len(v) >= k for v in paraphrases.values()),
             "share": round(sum(len(v) >= k for v in paraphrases.values()) / total, 4) if total else float("nan")}
            for k in range(n_max + 1)]
