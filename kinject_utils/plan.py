"""The runner's ``--plan``: every chosen notebook's stage plan, composed. Offline; nothing is trained.

Each stage plans itself (:mod:`kinject_utils.stages`) from the same settings its notebook builds,
so the plan cannot drift from what the notebooks do. What is counted and how (tokenizers, measured
throughputs) is said in each stage's module and printed with the plan.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from .execute import schedule
from .stages import StagePlan, format_plan, plan_study
from .stages.base import hm

__all__ = ["add_schedule", "format_plan", "plan_run"]


def plan_run(settings: Any, chosen: list[tuple[Path, dict[str, Any]]],
             declared: dict[str, dict[str, Any]], workers: int = 0) -> list[StagePlan]:
    """One :class:`~kinject_utils.stages.StagePlan` per chosen notebook (``chosen``, ``declared`` as
    :func:`kinject_utils.runner.prepare` returns them: each notebook's parameters, defaults filled in).

    ``workers`` (> 0): notebook 03's adapters and 05's model x task x adapter jobs are scheduled onto that many
    GPUs or CPU slots (:func:`add_schedule`), and 03's hours become the grid's wall time there."""
    params = {num: {**_defaults(d), **settings.parameters_for(num, d)} for num, d in declared.items()}
    plans = plan_study(params)
    if workers:
        for num in ("03", "05"):
            add_schedule(plans[num], workers, params.get(num, {}).get("EXECUTOR", "local"))
    return [plans[nb.name[:2]] for nb, _ in chosen if nb.name[:2] in plans]


def add_schedule(p: StagePlan, workers: int, executor: str = "ray") -> None:
    """Append to ``p`` its jobs' schedule on ``workers`` GPUs or CPU slots, longest job first onto the least
    loaded worker (:func:`kinject_utils.execute.schedule`), and the expected wall time.

    03: one job per adapter at its planned minutes (measured tokens/s), so ``p.hours`` becomes the
    slowest worker's hours. 05: one job per model x task x adapter, sized by scored questions (its speed is not
    measured, so no time).
    """
    if p.num == "03":
        sizes = {r["label"]: float(r["minutes"]) for r in p.counts.get("rows", [])}
        unit, fmt = "min", (lambda x: f"{x:.1f} min")
    elif p.num == "05":
        sizes = {}
        for key, q in p.counts.get("cells", {}).items():
            model, task, _method, _shots, _k, variant, _budget = key.split(" / ")
            job = f"{model} / {task} / {variant or 'base model'}"  # as score_study's jobs
            sizes[job] = sizes.get(job, 0.0) + q
        unit, fmt = "questions", (lambda x: f"{x:,.0f} questions")
    else:
        return
    if not sizes:
        return
    plan = schedule(sizes, workers)
    loads = [sum(sizes[j] for j in jobs) for jobs in plan]
    note = "" if executor == "ray" else f" (EXECUTOR is {executor}: set EXECUTOR: ray to run it so)"
    p.lines.append(f"  on {workers} workers (GPUs or CPU slots), longest job first{note}:")
    for i, (jobs, load) in enumerate(zip(plan, loads), 1):
        if jobs:
            p.lines.append(f"    worker {i}: {fmt(load)}: {', '.join(jobs)}")
    serial = sum(sizes.values())
    if unit == "min":
        p.hours = max(loads) / 60
        p.lines.append(f"  expected wall time on {workers} workers: {hm(p.hours)} (one after another: "
                       f"{hm(serial / 60)}; {len(sizes)} jobs, speed-up {serial / max(max(loads), 1e-9):.1f}x)")
    else:
        p.lines.append(f"  busiest worker {fmt(max(loads))} of {fmt(serial)} ({len(sizes)} jobs; "
                       "time not measured: see the runner's timings.json of an earlier run)")


def _defaults(declared: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A notebook's parameter defaults, as papermill reads them from its parameter cell."""
    return {name: ast.literal_eval(str(info.get("default"))) for name, info in declared.items()}
