"""Stage 05, score: settings, plan (every cell of the grid and its questions) and the scoring.

The plan enumerates the grid with :func:`kinject_utils.study.plan_grid`, the function the scoring
itself uses, from the tasks, the adapters and the retrieval results the earlier stages would
write, so the cells it counts are the cells ``05_scores.csv`` will hold.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .. import study
from ..execute import ExecutorSettings
from ..io import read_csv, resolve_path
from ..settings import check_int
from .base import MODELS, TASKS, StagePlan, StageSettings, listed

__all__ = ["ScoreSettings", "cell_key", "plan", "run"]

N_OPTIONS = 4  # choices per question: each is one log-likelihood request


@dataclasses.dataclass
class ScoreSettings(StageSettings):
    """Notebook 05's parameters (its parameter cell documents each one)."""

    results_dir: str = "results"
    seed: int = 0
    models: list = listed(MODELS)
    tasks: list = listed(TASKS)
    k: int = 1
    k_sweep: list = dataclasses.field(default_factory=list)
    mmlu_style: str = "letter"
    mmlu_shots: list = dataclasses.field(default_factory=lambda: [0, 5])
    max_questions: dict = dataclasses.field(default_factory=lambda: {"mmlu": 10})
    batch_size: int = 8
    dtype: str = "auto"
    context_tokens: int = 1024
    score_sweep: bool = True
    device: str = "auto"
    executor: str = "local"
    ray_address: str = "auto"
    task_cpus: int = 0
    task_gpus: float = 1.0

    def __post_init__(self) -> None:
        self.executor_settings()  # validates EXECUTOR, RAY_ADDRESS, TASK_CPUS, TASK_GPUS
        check_int(self, "seed")
        self.config()  # validates the grid fields, with GridConfig's messages

    def executor_settings(self) -> ExecutorSettings:
        """Where the jobs run (:mod:`kinject_utils.execute`): ``EXECUTOR`` and its resources per task."""
        return ExecutorSettings(self.executor, self.ray_address, self.task_cpus, self.task_gpus)

    def config(self, dtype: str | None = None) -> study.GridConfig:
        """The grid settings (``dtype``: the resolved one, part of every cell's cache key)."""
        return study.GridConfig(k=self.k, k_sweep=tuple(self.k_sweep), mmlu_style=self.mmlu_style,
                                mmlu_shots=tuple(self.mmlu_shots), max_questions=self.max_questions,
                                batch_size=self.batch_size, dtype=dtype or self.dtype,
                                context_tokens=self.context_tokens, sweep=self.score_sweep)


def cell_key(cell: Mapping[str, Any]) -> str:
    """One label per grid cell, the same from a :class:`~kinject_utils.study.ScoreSpec` and a row of
    ``05_scores.csv``: model / task / method / shots / K / variant / budget."""
    return " / ".join(str(cell[k]) for k in ("model", "task", "method", "shots", "k", "variant", "budget"))


def plan(s: ScoreSettings, planned: dict[str, Any], adapters: list[dict[str, Any]], retrieved: list[str]) -> StagePlan:
    """Cells and questions to score (``counts["cells"]``: :func:`cell_key` -> questions).

    Args:
        planned: task name -> task (or a note when its size is not known here).
        adapters: adapter-index rows notebook 03 would write (:func:`.finetune.planned_adapters`).
        retrieved: the tasks notebook 04 would retrieve for.
    """
    from ..device import resolve

    try:
        device, dtype = resolve(s.device, s.dtype)
    except ValueError:  # planning a cuda run on a machine without one
        device, dtype = s.device, s.dtype
    p = StagePlan("05", "score", [f"models {s.models} on {device}, dtype {dtype}, batch {s.batch_size}"])
    known = {n: t for n, t in planned.items() if n in s.tasks and not isinstance(t, str)}
    for n in s.tasks:
        if n not in known:
            p.lines.append(f"  {n}: " + ("size not known here (see notebook 01's plan): not counted" if n in planned
                                         else "not in notebook 01's TASKS: not scored"))
    specs = study.plan_grid(resolve_path(s.results_dir), s.models, known, s.config(dtype),
                            lambda t: t in retrieved, adapters=adapters)
    cells = {cell_key(dataclasses.asdict(c)): len(study.subset(known[c.task], s.max_questions.get(c.task, 0)))
             for c in specs}
    for model in s.models:
        for task in known:
            mine = [q for key, q in cells.items() if key.startswith(f"{model} / {task} / ")]
            if mine:
                p.lines.append(f"  {model} / {task}: {len(mine)} cells, {sum(mine):,} scored questions "
                               f"({sum(mine) * N_OPTIONS:,} log-likelihood requests)")
    total = sum(cells.values())
    p.lines.append(f"  {len(cells)} cells, {total:,} scored questions in all; time: "
                   + ("not measured as requests/s on a GPU" if str(device).startswith("cuda") else
                      "see the runner's timings.json of an earlier run"))
    p.counts["cells"] = cells
    p.hours = None
    p.unmeasured.append("05 scoring")
    return p


def run(s: ScoreSettings) -> Any:
    """Score every cell not yet scored; returns ``05_scores.csv`` as a ``pandas.DataFrame``."""
    return read_csv(study.score_study(resolve_path(s.results_dir), s.models, s.tasks, s.config(),
                                      device=s.device, executor=s.executor_settings()), frame=True)
