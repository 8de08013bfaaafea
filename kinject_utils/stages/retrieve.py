"""Stage 04, retrieve: settings, plan (passages and queries per task) and the run.

A task is retrieved for when it has a knowledge base (MMLU without ``MMLU_KB`` has none and is
scored without RAG). The plan splits each knowledge base into passages exactly as the run does.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..io import read_jsonl, resolve_path
from ..retrieval import RetrievalConfig, retrieval_dir, run_retrieval, split_passages
from .base import TASKS, StagePlan, StageSettings, listed

__all__ = ["RetrieveSettings", "example", "plan", "retrieved_tasks", "run"]


@dataclasses.dataclass
class RetrieveSettings(StageSettings):
    """Notebook 04's parameters (its parameter cell documents each one)."""

    results_dir: str = "results"
    tasks: list = listed(TASKS)
    embedder: str = "minilm-l6"
    k_max: int = 5
    retriever: str = "dense"
    index: str = "flat"
    passage_words: int = 80
    batch_size: int = 32
    device: str = "cpu"

    def config(self) -> RetrievalConfig:
        """The validated :class:`~kinject_utils.retrieval.RetrievalConfig` of these settings."""
        return RetrievalConfig(embedder=self.embedder, k_max=self.k_max, retriever=self.retriever, index=self.index,
                               passage_words=self.passage_words, batch_size=self.batch_size, device=self.device)

    def __post_init__(self) -> None:
        self.config()  # validates every field, with RetrievalConfig's messages


def retrieved_tasks(s: RetrieveSettings, planned: dict[str, Any]) -> list[str]:
    """The tasks of ``planned`` (name -> task) that would get retrieval results: in TASKS, with documents."""
    return [n for n in s.tasks if not isinstance(planned.get(n, ""), str) and planned[n].docs]


def plan(s: RetrieveSettings, planned: dict[str, Any]) -> StagePlan:
    """Passages and queries per task (``counts["queries"]``: task -> questions retrieved for)."""
    cfg = s.config()
    p = StagePlan("04", "retrieve", [f"embedder {s.embedder} on {s.device}; top-{s.k_max} {s.retriever} "
                                     f"({s.index} index) over {s.tasks}"])
    p.counts["queries"] = {}
    for name in s.tasks:
        task = planned.get(name)
        if isinstance(task, str) or task is None or not task.docs:
            p.lines.append(f"  {name}: " + ("size not known here (see notebook 01's plan)" if isinstance(task, str)
                                            else "no knowledge base: not retrieved"))
            continue
        n = len(split_passages(task.docs, cfg.passage_words, include_title=cfg.include_title))
        p.counts["queries"][name] = len(task.questions)
        p.lines.append(f"  {name}: {n:,} passages to embed, {len(task.questions):,} queries")
    p.hours = None
    p.unmeasured.append("04 embedding")
    return p


def run(s: RetrieveSettings) -> Any:
    """:func:`kinject_utils.retrieval.run_retrieval` for these settings."""
    return run_retrieval(resolve_path(s.results_dir), s.tasks, s.config())


def example(s: RetrieveSettings, done: Any, chars: int = 600) -> str:
    """The top passage retrieved for the first question of the first task: what +RAG prepends."""
    if not done.tasks:
        return "no task was retrieved (see the skip messages above)"
    d = retrieval_dir(resolve_path(s.results_dir), done.tasks[0].task)
    first = next(read_jsonl(d / "retrieved.jsonl"))
    text = next(p["text"] for p in read_jsonl(d / "passages.jsonl") if p["passage_id"] == first["passage_ids"][0])
    return (f"{done.tasks[0].task} / question {first['id']}: top passage {first['passage_ids'][0]} "
            f"(score {first['scores'][0]:.3f})\n\n{text[:chars]}")
