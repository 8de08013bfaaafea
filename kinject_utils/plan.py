"""The runner's ``--plan``: every chosen notebook's stage plan, composed. Offline; nothing is trained.

Each stage plans itself (:mod:`kinject_utils.stages`) from the same settings its notebook builds,
so the plan cannot drift from what the notebooks do. What is counted and how (tokenizers, measured
throughputs) is said in each stage's module and printed with the plan.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from .stages import StagePlan, format_plan, plan_study

__all__ = ["format_plan", "plan_run"]


def plan_run(settings: Any, chosen: list[tuple[Path, dict[str, Any]]],
             declared: dict[str, dict[str, Any]]) -> list[StagePlan]:
    """One :class:`~kinject_utils.stages.StagePlan` per chosen notebook (``chosen``, ``declared`` as
    :func:`kinject_utils.runner.prepare` returns them: each notebook's parameters, defaults filled in)."""
    params = {num: {**_defaults(d), **settings.parameters_for(num, d)} for num, d in declared.items()}
    plans = plan_study(params)
    return [plans[nb.name[:2]] for nb, _ in chosen if nb.name[:2] in plans]


def _defaults(declared: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A notebook's parameter defaults, as papermill reads them from its parameter cell."""
    return {name: ast.literal_eval(str(info.get("default"))) for name, info in declared.items()}
