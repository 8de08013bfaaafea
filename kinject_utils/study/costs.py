"""What each method costs (notebook 05 measures, notebook 06 shows): time, memory, tokens, index size.

Per scored cell notebook 05 records the scoring wall time, the model-loading time when the cell
loaded a model, the peak memory while it ran, and the tokens in its log-likelihood requests.
Training tokens and training wall time come from the adapter index (notebook 03); the retrieval
index size from notebook 04's folder. :func:`write_costs` writes them as ``05_costs.csv``
(``layout.costs_csv``); :func:`cost_by_method` sums them per Table 2 method.

Peak memory (:class:`CellMeter`, one meter for both devices): on CUDA the allocator's peak since the
cell started (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``); on a CPU the
process's resident high-water mark (``getrusage``'s ``ru_maxrss``), which the kernel never lowers, so
a cell's figure is the notebook process's peak *so far* and the largest cell's figure is the
notebook's peak. ``mem_source`` says which.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from .. import layout
from ..device import cuda_available
from ..io import read_json, write_csv
from .paper import METHODS

__all__ = ["COST_COLUMNS", "CellMeter", "scored_tokens", "write_costs", "cost_by_method"]

COST_COLUMNS = ["model", "task", "method", "variant", "n_paraphrases", "budget", "shots", "k", "device", "dtype",
                "n", "scored_tokens", "score_wall_s", "load_wall_s", "peak_mem_mb", "mem_source", "train_tokens",
                "train_wall_s", "index_passages", "index_bytes"]


class CellMeter:
    """Wall time and peak memory of one cell on the run's device: ``start()``, then ``stop()`` (any number of
    times: each gives the figures since ``start``).

    On CUDA, the peak of memory allocated on ``device`` since ``start`` (MiB). On a CPU, ``ru_maxrss``:
    the whole process's peak resident memory so far, a high-water mark per process that is never reset,
    so a cell run after a larger one reports the larger one's peak (``mem_source`` says so).

    Example:
        >>> m = CellMeter("cpu"); m.start(); out = m.stop()
        >>> sorted(out), out["mem_source"]
        (['mem_source', 'peak_mem_mb', 'wall_s'], 'ru_maxrss (process peak so far)')
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = str(device)
        self.cuda = self.device.startswith("cuda") and cuda_available()
        self.t0 = 0.0

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            peak, source = torch.cuda.max_memory_allocated(self.device) / 2**20, "cuda max_memory_allocated"
        else:
            peak, source = _process_peak_mb()
        return {"wall_s": time.perf_counter() - self.t0, "peak_mem_mb": round(peak, 1), "mem_source": source}


def _process_peak_mb() -> tuple[float, str]:
    """The process's peak resident memory so far in MiB (``getrusage``; NaN where it does not exist)."""
    try:
        import resource  # Unix only: imported here so the package still imports on Windows
    except ImportError:
        return float("nan"), "unavailable on this platform"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return (rss / 2**20 if sys.platform == "darwin" else rss / 1024), "ru_maxrss (process peak so far)"


def scored_tokens(row: Mapping[str, Any]) -> int:
    """Tokens in one question's log-likelihood requests as lm-eval counts them: (context + option) per option."""
    conts = row.get("cont_tokens") or []
    return int(row.get("n_ctx_tokens") or 0) * len(conts) + int(sum(conts))


def _index_size(results_dir: Path, task: str, memo: dict) -> tuple[Any, Any]:
    """(passages, bytes on disk) of notebook 04's index for ``task``; ``("", "")`` without one."""
    from ..retrieval.files import MANIFEST

    if task not in memo:
        d = layout.retrieval_dir(results_dir, task)
        man = d / MANIFEST
        if not man.exists():
            memo[task] = ("", "")
        else:
            files = [p for p in d.iterdir() if p.is_file()]
            memo[task] = (int(read_json(man).get("n_passages", 0)), sum(p.stat().st_size for p in files))
    return memo[task]


def _adapter_costs(results_dir: Path) -> dict[str, tuple[Any, Any]]:
    """Relative adapter folder -> (training tokens, training wall seconds) from the adapter index."""
    from ..finetune import read_adapter_index

    out = {}
    for r in read_adapter_index(results_dir):
        out[layout.to_relative(results_dir, r["adapter_dir"])] = (r.get("tokens", ""), r.get("wall_s", ""))
    return out


def write_costs(cells: Iterable[tuple[Any, list[dict]]], results_dir: str | os.PathLike) -> Path:
    """Write ``05_costs.csv``: one row per scored cell (``(spec, cached rows)`` pairs), see :data:`COST_COLUMNS`."""
    results_dir = Path(results_dir)
    adapters = _adapter_costs(results_dir)
    memo: dict = {}
    out = []
    for spec, rows in cells:
        first = rows[0] if rows else {}
        train = adapters.get(spec.adapter_dir, ("", "")) if spec.adapter_dir else (0, 0.0)
        passages, nbytes = _index_size(results_dir, spec.task, memo) if spec.k else (0, 0)
        out.append({
            "model": spec.model, "task": spec.task, "method": spec.method, "variant": spec.variant,
            "n_paraphrases": spec.n_paraphrases, "budget": spec.budget, "shots": spec.shots, "k": spec.k,
            "device": first.get("device", ""), "dtype": first.get("dtype", spec.precision), "n": len(rows),
            "scored_tokens": sum(scored_tokens(r) for r in rows),
            "score_wall_s": round(float(first.get("seconds", 0.0)), 2),
            "load_wall_s": round(float(first.get("load_s", 0.0)), 2),
            "peak_mem_mb": first.get("peak_mem_mb", ""), "mem_source": first.get("mem_source", ""),
            "train_tokens": train[0], "train_wall_s": train[1], "index_passages": passages, "index_bytes": nbytes})
    return write_csv(out, layout.costs_csv(results_dir), columns=COST_COLUMNS)


def cost_by_method(costs: Any) -> Any:
    """Per Table 2 method: wall time, peak memory, training tokens, scored tokens, index size.

    Sums over the run's cells (each adapter's training and each task's index counted once per
    method); peak memory is the largest cell's. Methods the run did not score are left out.
    """
    import pandas as pd

    cols = ["method", "cells", "score_wall_s", "load_wall_s", "train_wall_s", "peak_mem_mb", "train_tokens",
            "scored_tokens", "index_passages", "index_bytes"]
    if costs is None or not len(costs):
        return pd.DataFrame(columns=cols)
    rows = []
    for m in METHODS:
        g = costs[costs["method"] == m]
        if g.empty:
            continue
        num = lambda c, frame=g: pd.to_numeric(frame[c], errors="coerce").fillna(0)  # noqa: E731
        adapters = g.drop_duplicates(["model", "task", "variant"])
        tasks = g[g["k"] > 0].drop_duplicates(["task"])
        rows.append({"method": m, "cells": len(g), "score_wall_s": round(num("score_wall_s").sum(), 1),
                     "load_wall_s": round(num("load_wall_s").sum(), 1),
                     "train_wall_s": round(num("train_wall_s", adapters).sum(), 1),
                     "peak_mem_mb": round(num("peak_mem_mb").max(), 1),
                     "train_tokens": int(num("train_tokens", adapters).sum()),
                     "scored_tokens": int(num("scored_tokens").sum()),
                     "index_passages": int(num("index_passages", tasks).sum()),
                     "index_bytes": int(num("index_bytes", tasks).sum())})
    return pd.DataFrame(rows, columns=cols)
