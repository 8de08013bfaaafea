"""Notebook 05 in one call: resolve the device, plan the grid from what earlier notebooks wrote, score."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .. import layout
from ..log import get_logger
from .grid import GridConfig, ScoreSpec, plan_grid, run_grid

__all__ = ["load_tasks", "model_precision", "score_study"]

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
                device: str = "auto", progress: bool = True) -> Path:
    """Plan the grid, score every cell on one device and dtype, aggregate; returns ``05_scores.csv``'s path.

    Base and fine-tuned models load on the device and dtype :func:`kinject_utils.device.resolve`
    gives for ``device`` and ``cfg.dtype``; a model with QLoRA adapters is scored, base and adapters
    alike, on the 4-bit base the adapters were trained on (:func:`model_precision`). Adapter folders
    are resolved against ``results_dir``, so a copied results folder scores its own adapters.
    """
    from .. import finetune, retrieval, scoring
    from ..device import resolve

    results_dir = Path(results_dir)
    dev, dtype = resolve(device, cfg.dtype)
    cfg = dataclasses.replace(cfg, dtype=dtype)
    log.info("scoring on %s in %s", dev, dtype)
    tasks = load_tasks(results_dir, task_names)

    switch = finetune.AdapterSwitch(device=dev, dtype=dtype)  # one base per model, adapters swapped onto it

    def load_model(spec: ScoreSpec):
        adapter = layout.from_relative(results_dir, spec.adapter_dir) if spec.adapter_dir else None
        return switch.load(spec.model, adapter, quantization="nf4" if spec.precision.startswith("nf4") else None)

    def load_contexts(task: str, k: int, tok: Any, max_tokens: int):
        return retrieval.load_contexts(results_dir, task, k, tok, max_tokens)

    specs = plan_grid(results_dir, models, tasks, cfg, lambda t: retrieval.has_retrieval(results_dir, t))
    label = {m: model_precision(results_dir, m, dtype, dev) for m in models}
    for m, p in label.items():
        if p != dtype:
            log.info("%s: every cell (base and fine-tuned) scored as %s: its adapters are QLoRA, so its base is "
                     "the 4-bit model they were trained on", m, p)
    specs = [dataclasses.replace(s, precision=label[s.model]) for s in specs]
    try:
        return run_grid(specs, results_dir, tasks, cfg, load_model, load_contexts, scoring.score_questions,
                        progress=progress, device=dev, dtype=dtype)
    finally:
        switch.close()
