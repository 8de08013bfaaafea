"""Stage 01, prepare data: settings, plan (tasks counted in memory, nothing written) and the build.

The plan builds each task the way :func:`kinject_utils.data.build_tasks` does, in memory and
without a model or a download: the fictional news set is generated (~0.4 s at ``large``),
fictional knowledge and MMLU are read where they already are (``KINJECT_DATA``, the cache or an
explicit folder), the bring-your-own task from its files. A task whose data is not here yet is
reported with where it would come from; its size is known once notebook 01 has run.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .. import data, tasks
from ..io import resolve_path
from ..log import get_logger
from ..settings import check_choice, check_int
from .base import TASKS, StagePlan, StageSettings, listed
from .tokens import TokenCounter

__all__ = ["PrepareSettings", "plan", "plan_tasks", "run", "examples", "news_overview", "fk_overview",
           "mmlu_overview"]

log = get_logger("data")


@dataclasses.dataclass
class PrepareSettings(StageSettings):
    """Notebook 01's parameters (its parameter cell documents each one)."""

    results_dir: str = "results"
    seed: int = 0
    tasks: list = listed(TASKS)
    task_size: str = "default"
    news_rewordings: int = 10
    mmlu_dir: str = ""
    mmlu_kb: str = ""
    fictional_knowledge_dir: str = ""
    fk_max_questions: int = 99
    fk_kinds: list = dataclasses.field(default_factory=lambda: ["memorization", "semantic", "composition"])
    fk_judge: list = dataclasses.field(default_factory=lambda: ["gemma3-270m"])
    fk_judge_device: str = "cpu"
    custom_docs_dir: str = ""
    custom_questions: str = ""
    tokenizer: str = "smollm2-135m"

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str) or not isinstance(self.tasks, list):
            raise ValueError(f"TASKS must be a list of task names, e.g. [{self.tasks}], got {self.tasks!r}")
        unknown = [t for t in self.tasks if t not in data.TASK_NAMES]
        if unknown:
            raise ValueError(f"TASKS: unknown task(s) {unknown}; use any of {list(data.TASK_NAMES)}")
        check_choice(self, "task_size", ("tiny", "default", "large"))
        check_int(self, "news_rewordings", 0)
        check_int(self, "fk_max_questions", 0)
        check_int(self, "seed")


def plan_tasks(s: PrepareSettings) -> dict[str, Any]:
    """Task name -> the :class:`~kinject_utils.tasks.Task` notebook 01 would build, or a note (str) saying
    why its size is not known here. Nothing is written, downloaded or judged (the judge changes which
    options a question gets, never how many questions there are)."""
    out: dict[str, Any] = {}
    for name in s.tasks:
        if name == "fictional_news":
            out[name] = data.make_fictional_news(s.task_size, s.seed, s.news_rewordings)
        elif name in ("fictional_knowledge", "mmlu"):
            explicit = s.fictional_knowledge_dir if name == "fictional_knowledge" else s.mmlu_dir
            try:
                src = data.resolve_dataset(name, explicit, download=False)
            except Exception:  # noqa: BLE001 - not here yet: the plan says where it would come from
                out[name] = f"data: {data.describe_source(name, explicit)}; size known once it is there"
                continue
            if name == "mmlu":
                out[name] = data.build_mmlu_task(src.path)
                if s.mmlu_kb:
                    out[name].meta["kb_note"] = ("Wikipedia, size unknown offline" if s.mmlu_kb == "wikipedia"
                                                 else f"documents of {s.mmlu_kb}")
                    if s.mmlu_kb == "wikipedia":
                        out[name].meta["kb_unknown"] = True
                    else:
                        out[name].docs = data.load_documents(s.mmlu_kb)
            else:
                out[name] = data.load_fictional_knowledge(src.path, max_questions=s.fk_max_questions or None,
                                                          kinds=s.fk_kinds, seed=s.seed, judge=None)
            out[name].meta["source"] = f"data: {src.origin}: {src.path}"
        else:
            if not s.custom_docs_dir or not s.custom_questions:
                out[name] = "bring-your-own task: set CUSTOM_DOCS_DIR and CUSTOM_QUESTIONS (notebook 01 stops without)"
                continue
            try:
                out[name] = data.load_custom_task(resolve_path(s.custom_docs_dir), resolve_path(s.custom_questions))
            except Exception as exc:  # noqa: BLE001 - notebook 01 raises it with the fix
                out[name] = f"bring-your-own task not readable: {exc}"
    return out


def plan(s: PrepareSettings, planned: dict[str, Any], count: TokenCounter) -> StagePlan:
    """Questions, documents and knowledge-base tokens per task (``counts``: ``questions``, ``docs``)."""
    p = StagePlan("01", "prepare data", [f"tokens {count.how}"])
    p.counts = {"questions": {}, "docs": {}}
    for name, t in planned.items():
        if isinstance(t, str):
            p.lines.append(f"  {name}: {t}")
            continue
        p.counts["questions"][name], p.counts["docs"][name] = len(t.questions), len(t.docs)
        kb = t.meta.get("kb_note") or (f"{count([d.text for d in t.docs]):,} KB tokens" if t.docs else "no knowledge "
                                       "base (no RAG, no FT)")
        p.lines.append(f"  {name}: {len(t.questions):,} questions, {len(t.docs):,} documents, {kb}"
                       + (f"; {t.meta['source']}" if t.meta.get("source") else ""))
    return p


def run(s: PrepareSettings) -> dict[str, tasks.Task]:
    """Build and write every task of ``s.tasks`` (:func:`kinject_utils.data.build_tasks`), then read each
    back (the files validate on reading); returns task name -> task."""
    results = resolve_path(s.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    written = data.build_tasks(
        s.tasks, results, size=s.task_size, seed=s.seed, mmlu_dir=s.mmlu_dir, fk_dir=s.fictional_knowledge_dir,
        fk_max_questions=s.fk_max_questions or None, fk_kinds=s.fk_kinds, fk_judge=s.fk_judge,
        fk_judge_device=s.fk_judge_device, mmlu_kb=s.mmlu_kb, custom_docs_dir=s.custom_docs_dir,
        custom_questions=s.custom_questions, n_paraphrases=s.news_rewordings)
    for name, folder in written.items():
        log.info("%-20s -> %s", name, folder)
    return {name: tasks.load_task(Path(folder)) for name, folder in written.items()}


def examples(loaded: dict[str, tasks.Task], n_questions: int = 2, chars: int = 600) -> str:
    """One document and ``n_questions`` questions per task, the answer marked with ``*``."""
    out = []
    for name, t in loaded.items():
        out.append(f"===== {name}: {len(t.questions)} questions, {len(t.docs)} documents")
        if t.docs:
            first = t.questions[0].source_doc_ids if t.questions else []
            doc = t.doc_by_id().get(first[0], t.docs[0]) if first else t.docs[0]
            out.append(f"[{doc.doc_id}] {doc.title}\n{doc.text[:chars]}{' ...' if len(doc.text) > chars else ''}\n")
        for q in t.questions[:n_questions]:
            out.append(f"({q.kind or q.subject}) {q.question}")
            out.append("   " + "   ".join(("*" if i == q.answer else " ") + f"{'ABCD'[i]}. {c}"
                                          for i, c in enumerate(q.choices)))
        out.append("")
    return "\n".join(out)


def news_overview(task: tasks.Task) -> tuple[dict, dict, Any]:
    """Fictional news: questions by attribute, answer positions, and how often each entity recurs."""
    import pandas as pd

    kinds = pd.Series([q.kind for q in task.questions]).value_counts().to_dict()
    positions = pd.Series(["ABCD"[q.answer] for q in task.questions]).value_counts().sort_index().to_dict()
    recurrence = pd.DataFrame([{"kind": kind, "entity": e, "stories": sum(e in d.text for d in task.docs)}
                               for kind, names in task.meta["entities"].items() for e in names])
    return kinds, positions, recurrence.groupby("kind")["stories"].describe()[["count", "min", "mean", "max"]]


def fk_overview(task: tasks.Task) -> Any:
    """Fictional knowledge: questions per probe kind, and how well the question alone is answered (a word
    guesser, and each judge model): near chance means the options give nothing away."""
    import pandas as pd

    table = pd.DataFrame({"questions": data.probe_kind_counts(task.questions),
                          "question-only word guesser": data.question_only_accuracy(task.questions)})
    for judge, acc in (task.meta.get("judge_accuracy") or {}).items():
        table[f"judge {judge}, question only"] = pd.Series(acc)
    return table


def mmlu_overview(task: tasks.Task) -> Any:
    """MMLU: test and dev questions per subject, and the knowledge base's size."""
    import pandas as pd

    table = pd.DataFrame({"test": pd.Series([q.subject for q in task.questions]).value_counts(),
                          "dev": pd.Series([q.subject for q in task.dev]).value_counts()})
    table.attrs["kb"] = f"{len(task.docs)} documents" if task.docs else "none (MMLU is scored without RAG)"
    return table
