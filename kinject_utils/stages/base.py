"""What every stage shares: settings read from a notebook's parameters, and the plan a stage reports.

A stage is one notebook's work: a settings dataclass whose fields are the notebook's parameters
(lower-cased: ``EPOCHS`` is ``epochs``), a ``plan(settings, ...)`` that counts what the stage would
load, train and score before anything runs, and the calls that do the work. The notebook and the
runner's ``--plan`` build the same settings and call the same ``plan``, so the two cannot drift.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ..settings import check_known_fields

__all__ = ["FT_MODELS", "FT_TASKS", "MODELS", "StagePlan", "StageSettings", "TASKS", "hm", "listed"]

#: the default study's tasks, models and fine-tuned tasks (the notebooks' parameter defaults)
TASKS = ("fictional_news", "fictional_knowledge", "mmlu")
MODELS = ("smollm2-135m", "gemma3-270m")
#: fine-tuned in the default study (notebook 03's FT_MODELS): Gemma-3 too: 52 min instead of 31 on an AVX2 laptop
FT_MODELS = ("smollm2-135m",)
FT_TASKS = ("fictional_news", "custom")


def listed(values: tuple) -> Any:
    """A dataclass field defaulting to a fresh list of ``values``."""
    return dataclasses.field(default_factory=lambda: list(values))


@dataclasses.dataclass
class StageSettings:
    """Base of the stage settings. Subclasses declare one field per notebook parameter."""

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "StageSettings":
        """From notebook parameters by name (``{"EPOCHS": 1, ...}``); an unknown name answers "did you mean".

        Every field must be given: the notebook's parameter cell (or the runner's merged parameters)
        holds them all, so a missing one is a notebook and a stage out of step, said as such.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        given = {k.lower(): v for k, v in params.items()}
        check_known_fields(cls, given, "notebook parameters")
        missing = sorted(fields - set(given))
        if missing:
            raise ValueError(f"{cls.__name__}: parameters {[m.upper() for m in missing]} are missing; the "
                             "notebook's parameter cell and its stage settings must declare the same names")
        return cls(**given)

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> "StageSettings":
        """From a notebook's globals: picks each field's upper-case parameter variable."""
        return cls.from_params({f.name.upper(): namespace[f.name.upper()] for f in dataclasses.fields(cls)
                                if f.name.upper() in namespace})


@dataclasses.dataclass
class StagePlan:
    """One stage's plan: printable lines, counts a test compares with what the stage did, and hours.

    Attributes:
        num, name: the notebook's number and what it does.
        lines: the plan as text.
        counts: what the stage will produce, in the units its outputs report (e.g. ``adapters``:
            ``{"model/task/variant": optimiser steps}``, ``cells``: ``{cell label: questions}``).
        hours: expected hours from measured throughputs; ``None`` when not measured.
        unmeasured: parts whose time is not in ``hours``.
    """

    num: str
    name: str
    lines: list[str] = dataclasses.field(default_factory=list)
    counts: dict[str, Any] = dataclasses.field(default_factory=dict)
    hours: float | None = 0.0
    unmeasured: list[str] = dataclasses.field(default_factory=list)


def hm(hours: float) -> str:
    """``1.25 h`` or ``12.5 min``."""
    return f"{hours:.2f} h" if hours >= 1 else f"{hours * 60:.1f} min"
