"""MMLU: the paper's five subjects from the original CSVs or the hub's parquet files (``cais/mmlu``).

Questions are the test rows; the dev rows (5 per subject) are the 5-shot exemplars in ``task.dev``.
Bad input names the file and line: a byte that is not UTF-8, a malformed row, an empty test or dev
file (an empty dev file is an error, not a silent fall-back to 0-shot: a run that asked for 5-shot
must not report 0-shot numbers under that name). A UTF-8 byte-order mark is dropped.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from ..io import resolve_path
from ..tasks import Document, Question, Task, TaskFormatError
from .source import MMLU_SUBJECTS, mmlu_parquet, resolve_dataset

__all__ = ["LETTERS", "MMLU_SUBJECTS", "build_mmlu_task", "load_mmlu"]

LETTERS = "ABCD"


def _decode_csv(path: Path) -> str:
    """The text of a CSV file: UTF-8, a leading byte-order mark dropped; bad bytes name the line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise TaskFormatError(f"{path}, line {line}: not valid UTF-8 (byte {raw[exc.start]:#04x}); "
                              "re-save the file as UTF-8 (the original MMLU CSVs are UTF-8)") from None


def _read_mmlu_csv(path: Path, subject: str, split: str) -> list[Question]:
    """Rows of one original MMLU CSV (no header: question, A, B, C, D, answer letter).

    Read with the csv module: every field stays text (``"0.50"`` stays ``"0.50"``, ``"None"`` stays
    ``"None"``), which pandas' defaults would break.

    Raises:
        TaskFormatError: bad UTF-8, a malformed row (file and line), or a file without any row.
    """
    out: list[Question] = []
    reader = csv.reader(io.StringIO(_decode_csv(path), newline=""), strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise TaskFormatError(f"{path}, line {start}: malformed CSV ({exc}); "
                                  "check the quoting of that row") from None
        if not row or not any(c.strip() for c in row):
            start = reader.line_num + 1
            continue
        if len(row) != 6:
            raise TaskFormatError(f"{path}, line {start}: expected 6 fields (question, A, B, C, D, "
                                  f"answer letter), got {len(row)}")
        letter = row[5].strip().upper()
        if letter not in LETTERS:
            raise TaskFormatError(f"{path}, line {start}: answer must be one of A/B/C/D, got {row[5]!r}")
        qid = f"{subject}/{len(out)}" if split == "test" else f"{subject}/{split}/{len(out)}"
        try:
            out.append(Question(id=qid, question=row[0], choices=list(row[1:5]),
                                answer=LETTERS.index(letter), subject=subject))
        except ValueError as exc:
            raise TaskFormatError(f"{path}, line {start}: {exc}") from None
        start = reader.line_num + 1
    if not out:
        what = ("the questions" if split == "test"
                else "the 5-shot exemplars (MMLU is scored 0-shot and 5-shot; 5-shot needs them)")
        raise TaskFormatError(f"{path}: no rows, but it should hold {what} of subject {subject!r}; "
                              "restore the original CSV (question, A, B, C, D, answer letter per row)")
    return out


def _read_mmlu_parquet(path: Path, subject: str, split: str) -> list[Question]:
    """Rows of one hub parquet file (``cais/mmlu``: question, subject, choices[4], answer 0-3)."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise TaskFormatError(f"{path}: not a readable parquet file ({exc}); delete it to fetch it again") from None
    missing = {"question", "choices", "answer"} - set(frame.columns)
    if missing:
        raise TaskFormatError(f"{path}: columns {sorted(missing)} missing; expected cais/mmlu's "
                              "question, subject, choices, answer")
    out = []
    for i, r in enumerate(frame.itertuples(index=False)):
        qid = f"{subject}/{i}" if split == "test" else f"{subject}/{split}/{i}"
        try:
            out.append(Question(id=qid, question=str(r.question), choices=[str(c) for c in r.choices],
                                answer=int(r.answer), subject=subject))
        except ValueError as exc:
            raise TaskFormatError(f"{path}, row {i}: {exc}") from None
    if not out:
        raise TaskFormatError(f"{path}: no rows; delete it to fetch it again")
    return out


def _split_file(root: Path, subject: str, split: str) -> Path:
    """The file of one split in either layout: the original CSVs, else the hub's parquet."""
    csv_path = root / split / f"{subject}_{split}.csv"
    parquet = root / mmlu_parquet(subject, split)
    if csv_path.exists() or not parquet.exists():
        return csv_path
    return parquet


def load_mmlu(subject: str, source: str | Path) -> Task:
    """One MMLU subject: test rows as questions, dev rows (5-shot exemplars) in ``task.dev``.

    Args:
        subject: e.g. ``"anatomy"``.
        source: a folder holding ``test/<subject>_test.csv`` and ``dev/<subject>_dev.csv`` (the
            original Hendrycks layout) or the hub's ``<subject>/{test,dev}-00000-of-00001.parquet``
            (``cais/mmlu``, as :func:`kinject_utils.data.source.resolve_dataset` downloads it);
            relative paths resolve against the project root.

    Raises:
        FileNotFoundError: the CSV folder or a file is missing (message names the path).
        TaskFormatError: a malformed CSV row (names the file and line).

    Example:
        >>> t = load_mmlu("anatomy", resolve_dataset("mmlu").path)  # doctest: +SKIP
        >>> len(t.questions), len(t.dev), t.questions[0].id  # doctest: +SKIP
        (135, 5, 'anatomy/0')
    """
    root = resolve_path(source)
    paths = [_split_file(root, subject, split) for split in ("test", "dev")]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"MMLU file {p} not found; the MMLU folder must hold the original CSVs "
                                    "(test/<subject>_test.csv, dev/<subject>_dev.csv) or cais/mmlu's parquet files "
                                    "(<subject>/test-00000-of-00001.parquet, <subject>/dev-...)")
    test, dev = ((_read_mmlu_parquet if p.suffix == ".parquet" else _read_mmlu_csv)(p, subject, s)
                 for p, s in zip(paths, ("test", "dev")))
    return Task(name=f"mmlu_{subject}", questions=test, docs=[], dev=dev,
                meta={"kind": "mmlu", "subjects": [subject], "source": str(source)})


def build_mmlu_task(source: str | Path = "", subjects: Sequence[str] = MMLU_SUBJECTS,
                    kb: Sequence[Document] | None = None) -> Task:
    """The paper's MMLU task: the five subjects in one question set (ids ``anatomy/0``...).

    Args:
        source: a folder in either layout (see :func:`load_mmlu`); ``""`` asks
            :func:`~kinject_utils.data.source.resolve_dataset` (``KINJECT_DATA``, the cache, the hub).
        subjects: which subjects (default the paper's five).
        kb: an optional knowledge base (from :func:`fetch_wikipedia_kb` or :func:`load_documents`).
            Without one the task has no documents and is scored without RAG.
    """
    if not str(source).strip():
        source = resolve_dataset("mmlu").path
    parts = [load_mmlu(s, source) for s in subjects]
    return Task(name="mmlu", questions=[q for p in parts for q in p.questions], docs=list(kb or []),
                dev=[q for p in parts for q in p.dev],
                meta={"kind": "mmlu", "subjects": list(subjects), "source": str(source),
                      "kb": "supplied" if kb else "none",
                      "description": "MMLU test rows of the paper's five subjects; dev rows for 5-shot"})

