"""Bring your own: the one folder-of-documents reader, a questions file, and the task they make.

:func:`load_documents` is the only reader of raw documents in the package (notebook 01's
``CUSTOM_DOCS_DIR`` and ``MMLU_KB``). Its id rule:

- a ``.txt`` / ``.md`` file is one document; its id is the file's path relative to the folder,
  with ``/`` separators and without the suffix (``notes/mars.md`` -> ``notes/mars``); its title is
  the first Markdown heading (``# ...``) of a ``.md`` file, else the file name without suffix;
- a ``.jsonl`` row ``{"doc_id"?, "title"?, "text"}`` is one document; its id is its ``doc_id``, or
  ``<file id>/<line>`` without one (the line number counts blank lines);
- a single ``.jsonl`` file (a task's ``kb.jsonl``) can be passed instead of a folder.

Files are UTF-8 (a byte-order mark is dropped). Every file that is skipped or repaired is named in
a warning on the ``kinject.data`` logger, which prints to stderr (the terminal), with the fix:
binary files (NUL bytes or mostly unprintable), other suffixes (``.pdf``, ``.docx``: convert them
to text first), empty documents; a very large document is kept with a warning giving its size.
"""
from __future__ import annotations

from pathlib import Path

from ..io import resolve_path
from ..log import get_logger
from ..tasks import Document, Question, Task, TaskFormatError, read_questions

__all__ = ["DOC_SUFFIXES", "LARGE_DOC_CHARS", "load_custom_task", "load_documents", "load_questions"]

_log = get_logger("data.documents")

DOC_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".jsonl")
#: a document longer than this (characters, about 250k tokens) is kept with a warning giving its size
LARGE_DOC_CHARS = 1_000_000


def _looks_binary(raw: bytes) -> bool:
    """NUL bytes, or more than 10% of the first 8 kB unprintable control bytes: not a text file."""
    head = raw[:8192]
    if b"\x00" in head:
        return True
    ctrl = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    return bool(head) and ctrl > 0.1 * len(head)


def _decode(raw: bytes, path: Path) -> str | None:
    """The text of a document file, or None (skipped, with a warning naming the file and the fix)."""
    if _looks_binary(raw):
        _log.warning("%s: skipped, looks binary (NUL or control bytes), not text. Fix: convert it to UTF-8 "
                     "text (.txt/.md) or remove it from the folder.", path)
        return None
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        _log.warning("%s, line %d: skipped, not UTF-8 (%s at byte %d). Fix: re-save it as UTF-8 to "
                     "include it.", path, line, exc.reason, exc.start)
        return None


def _jsonl_docs(path: Path, text: str, file_id: str) -> list[tuple[Document, str]]:
    """Rows of a documents JSONL file as (document, where); a bad row raises, naming file and line."""
    import json

    out: list[tuple[Document, str]] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}, line {i}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problem = f"{where}: not valid JSON ({exc.msg}). Fix or delete that line."
            row = None
        else:
            problem = (None if isinstance(row, dict) and isinstance(row.get("text"), str) else
                       f"{where}: each row needs a string 'text' (and optionally 'doc_id', 'title'). "
                       "Fix or delete that line.")
        if problem:
            raise TaskFormatError(problem)
        doc_id = str(row["doc_id"]) if row.get("doc_id") else f"{file_id}/{i}"
        if not row["text"].strip():
            _log.warning("%s: empty text of document %r; skipped. Fix: add its text or delete the line.",
                         where, doc_id)
            continue
        title = row.get("title")
        try:
            doc = Document(doc_id=doc_id,
                           title=title if isinstance(title, str) else "", text=row["text"].strip())
        except ValueError as exc:
            raise TaskFormatError(f"{where}: {exc}") from None
        out.append((doc, where))
    return out


def load_documents(docs_dir: str | Path) -> list[Document]:
    """Documents from a folder (recursively) or one ``.jsonl`` file; ids as in the module doc.

    Args:
        docs_dir: a folder of ``.txt``/``.md``/``.jsonl`` files, or a ``.jsonl`` file.

    A file that is not UTF-8 text, an empty document and a file of another kind are skipped with a
    warning naming the file and the fix.

    Raises:
        FileNotFoundError: the folder or file does not exist.
        TaskFormatError: duplicate ids (naming both sources), a bad JSONL row (file and line), or
            no usable document at all.
    """
    root = resolve_path(docs_dir)
    if not root.exists():
        raise FileNotFoundError(f"documents folder {root} not found; put .txt, .md or .jsonl files there "
                                "(or pass a .jsonl file with one {doc_id, title, text} per line)")
    if root.is_file():
        if root.suffix.lower() != ".jsonl":
            raise TaskFormatError(f"{root}: a single documents file must be .jsonl; put .txt/.md files in a folder")
        files, base = [root], root.parent
    else:
        files, base = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")), root
    docs: list[Document] = []
    origin: dict[str, str] = {}
    for path in files:
        suffix = path.suffix.lower()
        if suffix not in DOC_SUFFIXES:
            _log.warning("%s: skipped, only %s files are read. Fix: convert it to text first (e.g. pdftotext "
                         "for a PDF) and save it as .txt.", path, "/".join(DOC_SUFFIXES))
            continue
        text = _decode(path.read_bytes(), path)
        if text is None:
            continue
        file_id = path.relative_to(base).with_suffix("").as_posix()
        if suffix == ".jsonl":
            found = _jsonl_docs(path, text, file_id)
        elif not text.strip():
            _log.warning("%s: empty document; skipped.", path)
            continue
        else:
            heading = next((ln[2:].strip() for ln in text.splitlines() if ln.startswith("# ")), "") \
                if suffix == ".md" else ""
            found = [(Document(doc_id=file_id, title=heading or path.stem, text=text.strip()), str(path))]
        for doc, where in found:
            if doc.doc_id in origin:
                raise TaskFormatError(f"duplicate document id {doc.doc_id!r} in {where} (first seen in "
                                      f"{origin[doc.doc_id]}); rename one of them")
            if len(doc.text) > LARGE_DOC_CHARS:
                _log.warning("%s: a very large document (%.1f MB of text, about %d k tokens): fine-tuning and "
                             "indexing it take long. Fix: split it or check it is the file you meant.",
                             where, len(doc.text.encode("utf-8")) / 1e6, len(doc.text) // 4000)
            origin[doc.doc_id] = where
            docs.append(doc)
    if not docs:
        raise TaskFormatError(f"{root}: no usable documents (.txt, .md or .jsonl, UTF-8, non-empty); "
                              "see the warnings above for the files skipped")
    return docs


def load_questions(path: str | Path) -> list[Question]:
    """Questions in the task format, one JSON object per line (parsed by :func:`kinject_utils.tasks.read_questions`).

    Raises:
        FileNotFoundError: the file is missing (the message shows the row format).
        TaskFormatError: a malformed line or duplicate id (names the file and line).
    """
    path = resolve_path(path)
    if not path.exists():
        raise FileNotFoundError(f"questions file {path} not found; write one JSON object per line: "
                                '{"id", "question", "choices", "answer", "source_doc_ids"?}')
    return read_questions(path)


def load_custom_task(docs_dir: str | Path, questions_file: str | Path, name: str = "custom") -> Task:
    """Bring your own: a folder of documents (:func:`load_documents`) and a questions file.

    Raises:
        TaskFormatError: as in the two loaders, or a question citing a document id the folder lacks.
    """
    docs = load_documents(docs_dir)
    questions = load_questions(questions_file)
    ids = {d.doc_id for d in docs}
    for q in questions:
        bad = [d for d in q.source_doc_ids if d not in ids]
        if bad:
            raise TaskFormatError(f"{questions_file}: question {q.id} cites document(s) {bad} that are not "
                                  f"in {docs_dir} (ids are paths without suffix, e.g. {sorted(ids)[:3]}); "
                                  "fix its source_doc_ids")
    return Task(name=name, questions=questions, docs=docs,
                meta={"kind": "custom", "docs_dir": str(docs_dir), "questions_file": str(questions_file)})
