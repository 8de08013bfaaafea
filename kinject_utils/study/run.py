"""Notebook 05 in one call: resolve the device, plan the grid from what earlier notebooks wrote, score."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .. import layout
from ..log import get_logger
from .grid import GridConfig, ScoreSpec, plan_grid, run_grid

__all__ = ["ScoreJob", "grid_specs", "load_tasks", "model_precision", "score_cells_here", "score_study"]

log = get_logger("study")


def load_tasks(results_dir: str | Path, names: list[str], notebook: str = "05") -> dict[str, Any]:
    """Load the tasks notebook 01 wrote; a missing one is skipped with a logged warning naming its folder.

    Raises:
        TasksNotBuiltError: none of ``names`` was built (:func:`kinject_utils.tasks.require_built`).
    """
    from ..tasks import load_task, require_built

    return {name: load_task(layout.task_dir(results_dir, name))
            for name in require_built(results_dir, list(names), notebook)}


def model_precision(results_dir: str | Path, model: str, dtype: str, device: str) -> str:
    """What every cell of ``model`` is scored in: ``dtype``, or ``nf4/<compute dtype>`` when any of its
    adapters is QLoRA, so that base and fine-tuned cells of one model differ only by the adapter
    (never also by nf4's quantisation loss). Part of each cell's cache key and the costs' ``dtype``."""
    from ..finetune import MANIFEST, read_adapter_index
    from ..io import read_json
    from ..models import nf4_compute_dtype

    for a in read_adapter_index(results_dir):
        man = Path(a["adapter_dir"]) / MANIFEST
        if a.get("model") == model and man.exists() and read_json(man).get("method") == "qlora":
            return f"nf4/{nf4_compute_dtype(device)}"
    return dtype


def score_study(results_dir: str | Path, models: list[str], task_names: list[str], cfg: GridConfig,
                device: str = "auto", progress: bool = True, executor: Any = None) -> Path:
    """Plan the grid, score every cell on one device and dtype, aggregate; returns ``05_scores.csv``'s path.

    Base and fine-tuned models load on the device and dtype :func:`kinject_utils.device.resolve`
    gives for ``device`` and ``cfg.dtype``; a model with QLoRA adapters is scored, base and adapters
    alike, on the 4-bit base the adapters were trained on (:func:`model_precision`). Adapter folders
    are resolved against ``results_dir``, so a copied results folder scores its own adapters.

    ``executor`` (:class:`kinject_utils.execute.ExecutorSettings`; ``None``: local) decides where the
    cells are scored: here, one after another, or as one :class:`ScoreJob` per model x task x adapter (its
    cells share one loaded model) on Ray. Either way each cell lands in the same score cache and
    ``05_scores.csv`` is rebuilt from it here.
    """
    from ..device import resolve
    from ..execute import ExecutorSettings, run_jobs
    from .collect import collect_scores
    from .grid import pending_cells

    results_dir = Path(results_dir)
    executor = executor or ExecutorSettings()
    dev, dtype = resolve(device, cfg.dtype)
    cfg = dataclasses.replace(cfg, dtype=dtype)
    log.info("scoring on %s in %s", dev, dtype)
    tasks = load_tasks(results_dir, task_names)
    specs = grid_specs(results_dir, models, tasks, cfg, dev)
    if executor.executor == "local":
        return score_cells_here(results_dir, specs, tasks, cfg, dev, dtype, progress, run_all=True)
    groups: dict[tuple[str, str, str], list[ScoreSpec]] = {}
    for spec in pending_cells(specs, results_dir):
        groups.setdefault((spec.model, spec.task, spec.adapter_dir), []).append(spec)
    jobs = [ScoreJob(str(results_dir), cells, sorted({c.task for c in cells}), cfg, dev, dtype)
            for cells in groups.values()]
    run_jobs(jobs, executor, desc="scoring (model x task x adapter)", progress=progress, device=dev)
    return collect_scores(specs, results_dir)


def grid_specs(results_dir: Path, models: list[str], tasks: dict[str, Any], cfg: GridConfig,
               dev: str) -> list[ScoreSpec]:
    """Every cell of the grid, each labelled with the precision its model is scored in."""
    from .. import retrieval

    specs = plan_grid(results_dir, models, tasks, cfg, lambda t: retrieval.has_retrieval(results_dir, t))
    label = {m: model_precision(results_dir, m, cfg.dtype, dev) for m in models}
    for m, p in label.items():
        if p != cfg.dtype:
            log.info("%s: every cell (base and fine-tuned) scored as %s: its adapters are QLoRA, so its base is "
                     "the 4-bit model they were trained on", m, p)
    return [dataclasses.replace(s, precision=label[s.model]) for s in specs]


def score_cells_here(results_dir: Path, specs: list[ScoreSpec], tasks: dict[str, Any], cfg: GridConfig, dev: str,
                     dtype: str, progress: bool, run_all: bool = False) -> Path | None:
    """Score ``specs`` in this process (one base per model, adapters swapped onto it); with ``run_all``, the
    whole grid through :func:`run_grid` (which also rebuilds ``05_scores.csv``)."""
    from .. import finetune, retrieval, scoring
    from .grid import score_cells

    switch = finetune.AdapterSwitch(device=dev, dtype=dtype)  # one base per model, adapters swapped onto it

    def load_model(spec: ScoreSpec):
        adapter = layout.from_relative(results_dir, spec.adapter_dir) if spec.adapter_dir else None
        return switch.load(spec.model, adapter, quantization="nf4" if spec.precision.startswith("nf4") else None)

    def load_contexts(task: str, k: int, tok: Any, max_tokens: int):
        return retrieval.load_contexts(results_dir, task, k, tok, max_tokens)

    try:
        if run_all:
            return run_grid(specs, results_dir, tasks, cfg, load_model, load_contexts, scoring.score_questions,
                            progress=progress, device=dev, dtype=dtype)
        score_cells(specs, results_dir, tasks, cfg, load_model, load_contexts, scoring.score_questions,
                    progress=progress, device=dev, dtype=dtype)
        return None
    finally:
        switch.close()


@dataclasses.dataclass
class ScoreJob:
    """The cells of one model x task x adapter, scored as one job (:mod:`kinject_utils.execute`): one model load,
    each cell written atomically to the score cache (a cell already there is skipped)."""

    results_dir: str
    cells: list
    task_names: list
    cfg: GridConfig
    device: str
    dtype: str
    gpu = True

    @property
    def label(self) -> str:
        c = self.cells[0]
        return f"{c.model} / {c.task} / {Path(c.adapter_dir).name if c.adapter_dir else 'base model'}"

    def __call__(self) -> int:
        results = Path(self.results_dir)
        tasks = load_tasks(results, self.task_names)
        score_cells_here(results, self.cells, tasks, self.cfg, self.device, self.dtype, progress=False)
        return len(self.cells)
