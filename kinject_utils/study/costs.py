"""What each method costs (notebook 05 measures, notebook 06 shows): time, memory, tokens, index size.

Per scored cell notebook 05 records the scoring wall time, the model-loading time when the cell
loaded a model, the peak memory while it ran, and the tokens in its log-likelihood requests.
Training tokens and training wall time come from the adapter index (notebook 03); the retrieval
index size from notebook 04's folder. :func:`write_costs` writes them as ``05_costs.csv``
(``layout.costs_csv``); :func:`cost_by_method` sums them per Table 2 method.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (reset per cell). On a Linux CPU the
process's resident high-water mark (``VmHWM``), reset per cell through ``/proc/self/clear_refs``
where the kernel honours it (checked: after the reset the mark must be back near the resident size;
some sandboxed kernels accept the write and keep the old mark). Where it is not honoured, a thread
samples the resident size (``VmRSS``) every 10 ms during the cell. Without ``/proc`` (macOS,
Windows), ``getrusage``: the process peak so far. ``mem_source`` says which.
"""
from __future__ import annotations

import os
import sys
import threading
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


def _status_mb(key: str) -> float | None:
    """One ``/proc/self/status`` field in MiB (``VmHWM``, ``VmRSS``); None without ``/proc``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the resident high-water mark; True only if the kernel really did (checked, not assumed)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5": reset VmHWM (Linux >= 4.0)
    except OSError:
        return False
    hwm, rss = _status_mb("VmHWM"), _status_mb("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss + 8  # 8 MiB: allocations between the two reads


class _RssSampler(threading.Thread):
    """Highest ``VmRSS`` seen, sampled every ``every_s`` until :meth:`finish` (shorter peaks can be missed)."""

    def __init__(self, every_s: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.every_s = every_s
        self.peak = _status_mb("VmRSS") or 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every_s):
            self.peak = max(self.peak, _status_mb("VmRSS") or 0.0)

    def finish(self) -> float:
        self._done.set()
        self.join()
        return max(self.peak, _status_mb("VmRSS") or 0.0)


class CellMeter:
    """Wall time and peak memory of one cell (``start`` then ``stop``), on the run's device."""

    def __init__(self, device: str = "cpu") -> None:
        self.cuda = str(device).startswith("cuda") and cuda_available()
        self.t0 = 0.0
        self.source = ""
        self._sampler: _RssSampler | None = None

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.source = "cuda max_memory_allocated"
        elif _reset_hwm():
            self.source = "VmHWM (reset per cell)"
        elif _status_mb("VmRSS") is not None:
            self._sampler = _RssSampler()
            self._sampler.start()
            self.source = "VmRSS (sampled every 10 ms)"
        else:
            self.source = "ru_maxrss (process peak so far)"
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**20
        elif self._sampler is not None:
            peak, self._sampler = self._sampler.finish(), None
        elif self.source.startswith("VmHWM"):
            peak = _status_mb("VmHWM") or float("nan")
        else:
            peak, self.source = _process_peak_mb()
        return {"wall_s": time.perf_counter() - self.t0, "peak_mem_mb": round(peak, 1), "mem_source": self.source}


def _process_peak_mb() -> tuple[float, str]:
    """The process's peak resident memory so far (``getrusage``; NaN where it does not exist)."""
    try:
        import resource  # Unix only: imported here so the package still imports on Windows
    except ImportError:
        return float("nan"), "unavailable on this platform"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss / 2**20 if sys.platform == "darwin" else rss / 1024), "ru_maxrss (process peak so far)"


def scored_tokens(row: Mapping[str, Any]) -> int:
    """Tokens in one question's log-likelihood requests as lm-eval counts them: (context + option) per option."""
    conts = row.get("cont_tokens") or []
    return int(row.get("n_ctx_tokens") or 0) * len(conts) + int(sum(conts))


def _index_size(results_dir: Path, task: str, memo: dict) -> tuple[Any, Any]:
    if task not in memo:
        d = layout.retrieval_dir(results_dir, task)
        man = d / "manifest.json"
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
