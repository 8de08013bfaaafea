"""The task format every stage shares: questions and a knowledge base, as files with fixed names.

A task lives in one folder (``{RESULTS_DIR}/01_tasks/<task>/``)::

    task.json          {"name", "kind", "description", ...free metadata (seed, size, source)}
    questions.jsonl    one question per line:
                       {"id": str, "question": str, "choices": [str, ...] (>= 2), "answer": int
                        (0-based index into choices), "source_doc_ids": [str] (may be empty),
                        "subject": str, "kind": str (optional, e.g. probe kind)}
    kb.jsonl           one document per line: {"doc_id": str, "title": str, "text": str}
    dev.jsonl          optional few-shot rows, same schema as questions.jsonl
    paraphrases.jsonl  optional: {"doc_id": str, "paraphrases": [str, ...]} (rewordings shipped with the task)

Loading validates every row and names the file, the line and the fault.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from . import layout
from .io import read_json, read_jsonl_numbered, write_json, write_jsonl

__all__ = [
    "QUESTION_FIELDS",
    "Document",
    "Question",
    "Task",
    "TaskFormatError",
    "TasksNotBuiltError",
    "load_task",
    "parse_question",
    "read_questions",
    "require_built",
    "save_task",
    "task_dir",
]

QUESTIONS, KB, DEV, PARAPHRASES, META = "questions.jsonl", "kb.jsonl", "dev.jsonl", "paraphrases.jsonl", "task.json"


class TaskFormatError(ValueError):
    """A task file is malformed; the message names the file, the line and the fault."""


@dataclasses.dataclass
class Question:
    """One multiple-choice question. ``answer`` is a 0-based index into ``choices``."""

    id: str
    question: str
    choices: list[str]
    answer: int
    source_doc_ids: list[str] = dataclasses.field(default_factory=list)
    subject: str = ""
    kind: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"question id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"question {self.id}: empty question text")
        if not isinstance(self.choices, list) or len(self.choices) < 2:
            raise ValueError(f"question {self.id}: needs at least 2 choices, got {self.choices!r}")
        if any(not isinstance(c, str) or not c.strip() for c in self.choices):
            raise ValueError(f"question {self.id}: every choice must be a non-empty string")
        if isinstance(self.answer, bool) or not isinstance(self.answer, int):
            raise ValueError(f"question {self.id}: answer must be an integer index, got {self.answer!r}")
        if not 0 <= self.answer < len(self.choices):
            raise ValueError(f"question {self.id}: answer index {self.answer} out of range for "
                             f"{len(self.choices)} choices (use 0..{len(self.choices) - 1})")
        if not isinstance(self.source_doc_ids, list) or any(not isinstance(d, str) for d in self.source_doc_ids):
            raise ValueError(f"question {self.id}: source_doc_ids must be a list of strings")

    @property
    def answer_text(self) -> str:
        return self.choices[self.answer]


@dataclasses.dataclass
class Document:
    """One knowledge-base document."""

    doc_id: str
    title: str
    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.doc_id, str) or not self.doc_id:
            raise ValueError(f"doc_id must be a non-empty string, got {self.doc_id!r}")
        if not isinstance(self.text, str):
            raise ValueError(f"document {self.doc_id}: text must be a string")
        if not isinstance(self.title, str):
            raise ValueError(f"document {self.doc_id}: title must be a string")


@dataclasses.dataclass
class Task:
    """A question set Q with its knowledge base B_Q (and optional few-shot rows and rewordings)."""

    name: str
    questions: list[Question]
    docs: list[Document]
    dev: list[Question] = dataclasses.field(default_factory=list)
    paraphrases: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def doc_by_id(self) -> dict[str, Document]:
        return {d.doc_id: d for d in self.docs}


def task_dir(results_dir: str | Path, name: str) -> Path:
    """Where notebook 01 writes a task: :func:`kinject_utils.layout.task_dir` (kept as an alias)."""
    return layout.task_dir(results_dir, name)


#: the fields a question row must have (the rest of :class:`Question`'s fields are optional)
QUESTION_FIELDS: tuple[str, ...] = ("id", "question", "choices", "answer")
_QUESTION_HINT = ('write one JSON object per line: {"id", "question", "choices": [...], "answer": 0-based index, '
                  '"source_doc_ids"?: [...], "subject"?, "kind"?}')


class TasksNotBuiltError(RuntimeError):
    """A notebook after 01 finds none of its tasks built; the message names them and the fix."""


def require_built(results_dir: str | Path, names: list[str], notebook: str) -> list[str]:
    """The tasks of ``names`` that notebook 01 built (a missing one is logged); none of them is an error.

    A notebook that found none of its tasks would otherwise "succeed" on nothing (an empty
    ``05_scores.csv``, then a bare parse error in 06). Typical cause: ``TASKS`` set for notebook 01
    only (``notebooks: {"01": {TASKS: [...]}}``), so the later notebooks keep their own defaults.

    Raises:
        TasksNotBuiltError: naming the tasks expected, the tasks 01 built, and the fix.
    """
    from .log import get_logger

    root = Path(results_dir) / layout.task_dir("", "x").parent
    built = [n for n in names if (task_dir(results_dir, n) / QUESTIONS).exists()]
    for n in names:
        if n not in built:
            get_logger("tasks").warning("notebook %s: task %s skipped: %s not found (notebook 01 did not build it)",
                                        notebook, n, task_dir(results_dir, n))
    if not built:
        there = sorted(p.parent.name for p in root.glob(f"*/{QUESTIONS}")) if root.is_dir() else []
        raise TasksNotBuiltError(
            f"notebook {notebook} was given TASKS={list(names)}, and notebook 01 built none of them in {root} "
            f"(it built: {', '.join(there) or 'nothing'}). Fix: set TASKS under params: in the config, so every "
            "notebook gets the same list (not only under notebooks: \"01\"), or run notebook 01 for these tasks.")
    return built


def _parse_row(row: dict, cls: type, required: tuple[str, ...], where: str) -> Any:
    missing = [k for k in required if k not in row]
    if missing:
        raise TaskFormatError(f"{where}: missing field(s) {missing}; each row needs {list(required)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in row.items() if k in fields})
    except (TypeError, ValueError) as exc:
        raise TaskFormatError(f"{where}: {exc}") from None


def parse_question(row: dict, where: str) -> Question:
    """One question row (a dict from JSON) as a validated :class:`Question`.

    The one parser of question rows: task folders, bring-your-own question files and few-shot rows
    all go through it. ``where`` (``"<file>, line <n>"``) starts every error message.

    Raises:
        TaskFormatError: a missing field or an invalid value (names ``where`` and the fault).
    """
    return _parse_row(row, Question, QUESTION_FIELDS, where)


def read_questions(path: str | Path) -> list[Question]:
    """Every question row of a JSONL file, validated, with unique ids.

    Line numbers in messages count blank lines; a UTF-8 byte-order mark is ignored.

    Raises:
        TaskFormatError: bad JSON or UTF-8, a malformed row, or a duplicate id (names file and line).
    """
    path = Path(path)
    out: list[Question] = []
    seen: dict[str, int] = {}
    try:
        rows = list(read_jsonl_numbered(path))
    except ValueError as exc:  # read_jsonl's errors already name file and line
        raise TaskFormatError(str(exc)) from None
    for i, row in rows:
        q = parse_question(row, f"{path}, line {i}")
        if q.id in seen:
            raise TaskFormatError(f"{path}, line {i}: duplicate question id {q.id!r} (also on line {seen[q.id]}); "
                                  "ids must be unique")
        seen[q.id] = i
        out.append(q)
    return out


def _read_docs(path: Path) -> list[Document]:
    try:
        rows = list(read_jsonl_numbered(path))
    except ValueError as exc:
        raise TaskFormatError(str(exc)) from None
    return [_parse_row(row, Document, ("doc_id", "text"), f"{path}, line {i}") for i, row in rows]


def load_task(folder: str | Path) -> Task:
    """Load and validate a task folder (see module docstring for the format).

    Raises:
        TaskFormatError: a missing file, a malformed row, a duplicate id, or a question whose
            source document is not in the knowledge base.
    """
    folder = Path(folder)
    if not (folder / QUESTIONS).exists():
        raise TaskFormatError(f"{folder}: no {QUESTIONS}; run notebook 01 (or write the task "
                              "files as described in kinject_utils/tasks.py)")
    questions = read_questions(folder / QUESTIONS)
    docs = _read_docs(folder / KB) if (folder / KB).exists() else []
    dev = read_questions(folder / DEV) if (folder / DEV).exists() else []
    seen: set[str] = set()
    for d in docs:
        if d.doc_id in seen:
            raise TaskFormatError(f"{folder / KB}: duplicate doc_id {d.doc_id!r}; ids must be unique")
        seen.add(d.doc_id)
    ids = {d.doc_id for d in docs}
    if docs:
        for q in questions:
            bad = [d for d in q.source_doc_ids if d not in ids]
            if bad:
                raise TaskFormatError(f"{folder / QUESTIONS}: question {q.id} cites source "
                                      f"doc(s) {bad} that are not in {KB}")
    paraphrases: dict[str, list[str]] = {}
    if (folder / PARAPHRASES).exists():
        try:
            para_rows = list(read_jsonl_numbered(folder / PARAPHRASES))
        except ValueError as exc:
            raise TaskFormatError(str(exc)) from None
        for i, row in para_rows:
            if not isinstance(row.get("doc_id"), str) or not isinstance(row.get("paraphrases"), list):
                raise TaskFormatError(f"{folder / PARAPHRASES}, line {i}: need doc_id (str) and paraphrases (list)")
            paraphrases[row["doc_id"]] = [str(p) for p in row["paraphrases"]]
    meta = read_json(folder / META) if (folder / META).exists() else {}
    return Task(name=meta.get("name", folder.name), questions=questions, docs=docs, dev=dev,
                paraphrases=paraphrases, meta=meta)


def save_task(task: Task, folder: str | Path) -> Path:
    """Write a task folder (atomically, file by file; byte-identical for identical tasks).

    Optional files the task does not have (``dev.jsonl``, ``paraphrases.jsonl``) are removed, so a
    stale one from an earlier run is never read back with the new task.
    """
    folder = Path(folder)
    write_jsonl(folder / QUESTIONS, [dataclasses.asdict(q) for q in task.questions])
    write_jsonl(folder / KB, [dataclasses.asdict(d) for d in task.docs])
    if task.dev:
        write_jsonl(folder / DEV, [dataclasses.asdict(q) for q in task.dev])
    else:
        (folder / DEV).unlink(missing_ok=True)
    if task.paraphrases:
        write_jsonl(folder / PARAPHRASES, [{"doc_id": k, "paraphrases": v} for k, v in task.paraphrases.items()])
    else:
        (folder / PARAPHRASES).unlink(missing_ok=True)
    meta = {**task.meta, "name": task.name, "n_questions": len(task.questions), "n_docs": len(task.docs)}
    write_json(folder / META, meta)
    return folder
