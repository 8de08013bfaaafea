"""Notebook 05 in one call: resolve the device, plan the grid from what earlier notebooks wrote, score."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .. import layout
from ..log import get_logger
from .grid import GridConfig, ScoreSpec, plan_grid, run_grid

__all__ = ["load_tasks", "score_study"]

log = get_logger("study")


def load_tasks(results_dir: str | Path, names: list[str], notebook: str = "05") -> dict[str, Any]:
    """Load the tasks notebook 01 wrote; a missing one is skipped with a logged warning naming its folder.

    Raises:
        TasksNotBuiltError: none of ``names`` was built (:func:`kinject_utils.tasks.require_built`).
    """
    from ..tasks import load_task, require_built

    return {name: load_task(layout.task_dir(results_dir, name))
            for name in require_built(results_dir, list(names), notebook)}


def score_study(results_dir: str | Path, models: list[str], task_names: list[str], cfg: GridConfig,
                device: str = "auto", progress: bool = True) -> Path:
    """Plan the grid, score every cell on one device and dtype, aggregate; returns ``05_scores.csv``'s path.

    Base and fine-tuned models load on the device and dtype :func:`kinject_utils.device.resolve`
    gives for ``device`` and ``cfg.dtype``; a QLoRA adapter is scored on the 4-bit base it was
    trained on (``finetune.load_finetuned``'s "as trained"). Adapter folders are resolved against
    ``results_dir``, so a copied results folder scores its own adapters.
    """
    from .. import finetune, retrieval, scoring
    from ..device import resolve
    from ..models import load_causal_lm

    results_dir = Path(results_dir)
    dev, dtype = resolve(device, cfg.dtype)
    cfg = dataclasses.replace(cfg, dtype=dtype)
    log.info("scoring on %s in %s", dev, dtype)
    tasks = load_tasks(results_dir, task_names)

    def load_model(spec: ScoreSpec):
        if spec.adapter_dir:
            return finetune.load_finetuned(spec.model, layout.from_relative(results_dir, spec.adapter_dir),
                                           device=dev, dtype=dtype)
        return load_causal_lm(spec.model, dtype=dtype, device=dev)

    def load_contexts(task: str, k: int, tok: Any, max_tokens: int):
        return retrieval.load_contexts(results_dir, task, k, tok, max_tokens)

    specs = plan_grid(results_dir, models, tasks, cfg, lambda t: retrieval.has_retrieval(results_dir, t))
    return run_grid(specs, results_dir, tasks, cfg, load_model, load_contexts, scoring.score_questions,
                    progress=progress, device=dev, dtype=dtype)
