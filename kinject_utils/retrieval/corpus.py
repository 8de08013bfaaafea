"""The knowledge base as retrieval sees it: tolerant reading and splitting into passages.

    read_corpus        a folder of text files or a kb.jsonl, tolerating bad documents (warns, skips)
    split_passages     documents -> passages of at most N words, cut on sentence boundaries
    load_task_tolerant tasks.load_task, except that a bad knowledge base is indexed document by document
"""
from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..io import read_json, read_jsonl
from ..log import get_logger
from ..tasks import Document, Question, Task, TaskFormatError, load_task

__all__ = ["CorpusWarning", "Passage", "load_task_tolerant", "read_corpus", "split_passages"]

log = get_logger("retrieval")


class CorpusWarning(UserWarning):
    """A document was skipped or repaired while indexing (empty, duplicate id, bad bytes)."""



@dataclasses.dataclass(frozen=True)
class Passage:
    """One retrievable unit: ``passage_id`` is ``<doc_id>#<n>`` (n counts from 0 in the document)."""

    passage_id: str
    doc_id: str
    text: str


def _warn(msg: str) -> None:
    warnings.warn(msg, CorpusWarning, stacklevel=3)


def _decode(raw: bytes, where: str) -> str:
    """UTF-8 text of ``raw``; bad bytes become U+FFFD with a warning naming ``where`` and the offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _warn(f"{where}: not valid UTF-8 (first bad byte at offset {exc.start}); undecodable bytes "
              "were replaced with U+FFFD and the rest of the document is indexed. Fix: re-save the "
              "file as UTF-8.")
        return raw.decode("utf-8", errors="replace")


def read_corpus(path: str | Path, suffixes: Sequence[str] = (".txt", ".md")) -> list[Document]:
    """Read a raw knowledge base, skipping or repairing bad documents with a warning for each.

    ``path`` is either a ``.jsonl`` file of ``{"doc_id", "text", "title"?}`` rows (the task's
    ``kb.jsonl`` format) or a folder whose text files (``suffixes``, recursively) are one document
    each (doc_id = relative path without suffix, title = file stem). Unlike ``tasks.load_task``,
    which refuses a malformed knowledge base, this indexes what it can:

    - an empty document (blank text) is skipped;
    - a duplicate doc_id keeps the first occurrence and skips the later one;
    - non-UTF-8 bytes are replaced with U+FFFD and the document is kept;
    - a line that is not a JSON object with a doc_id and a text is skipped.

    Each case emits a :class:`CorpusWarning` naming the document (and file/line).

    Example:
        >>> docs = read_corpus("my_notes/")  # doctest: +SKIP
        CorpusWarning: my_notes/b.md: empty document 'b' skipped
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus {path} does not exist; pass a folder of {'/'.join(suffixes)} "
                                "files or a .jsonl file with one {doc_id, title, text} per line")
    docs: list[Document] = []
    first_seen: dict[str, str] = {}

    def _add(doc_id: str, title: str, text: str, where: str) -> None:
        if doc_id in first_seen:
            _warn(f"{where}: duplicate doc_id {doc_id!r} (first seen at {first_seen[doc_id]}); "
                  "kept the first, skipped this one. Fix: give every document a unique id.")
            return
        if not text.strip():
            _warn(f"{where}: empty document {doc_id!r} skipped (no text to index).")
            return
        first_seen[doc_id] = where
        docs.append(Document(doc_id=doc_id, title=title, text=text))

    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise ValueError(f"corpus folder {path} holds no {'/'.join(suffixes)} files")
        for f in files:
            doc_id = f.relative_to(path).with_suffix("").as_posix()
            _add(doc_id, f.stem, _decode(f.read_bytes(), f"{f} (doc {doc_id!r})"), str(f))
    elif path.suffix.lower() == ".jsonl":
        for i, raw in enumerate(path.read_bytes().splitlines(), 1):
            if not raw.strip():
                continue
            where = f"{path}, line {i}"
            try:
                line, bad_at = raw.decode("utf-8"), -1
            except UnicodeDecodeError as exc:  # warn below, once the doc_id is known
                line, bad_at = raw.decode("utf-8", errors="replace"), exc.start
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                _warn(f"{where}: not valid JSON ({exc.msg}); line skipped. Fix or delete that line.")
                continue
            if bad_at >= 0:
                named = isinstance(row, dict) and isinstance(row.get("doc_id"), str)
                doc = f" (doc {row['doc_id']!r})" if named else ""
                _warn(f"{where}{doc}: not valid UTF-8 (first bad byte at offset {bad_at}); undecodable "
                      "bytes were replaced with U+FFFD and the rest of the document is indexed. Fix: "
                      "re-save the file as UTF-8.")
            if not isinstance(row, dict) or not isinstance(row.get("doc_id"), str) or not row["doc_id"] \
                    or not isinstance(row.get("text"), str):
                _warn(f"{where}: need a JSON object with a non-empty string 'doc_id' and a string "
                      "'text'; line skipped.")
                continue
            title = row.get("title") if isinstance(row.get("title"), str) else ""
            _add(row["doc_id"], title, row["text"], f"{where} (doc {row['doc_id']!r})")
    else:
        raise ValueError(f"corpus {path}: expected a folder of text files or a .jsonl file")
    return docs


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+|\n\s*\n")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _chunk_words(text: str, max_words: int) -> list[str]:
    """Greedy packing of whole sentences into chunks of at most ``max_words`` words; a sentence
    longer than that is cut at word boundaries."""
    chunks: list[str] = []
    cur: list[str] = []
    for sent in _sentences(text):
        words = sent.split()
        while len(words) > max_words:  # one over-long sentence: flush, then cut it in pieces
            if cur:
                chunks.append(" ".join(cur))
                cur = []
            chunks.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if cur and len(cur) + len(words) > max_words:
            chunks.append(" ".join(cur))
            cur = []
        cur.extend(words)
    if cur:
        chunks.append(" ".join(cur))
    return chunks


def split_passages(docs: Iterable[Document], passage_words: int = 150,
                   include_title: bool = True) -> list[Passage]:
    """Split documents into passages of at most ``passage_words`` words on sentence boundaries.

    Empty documents and repeated doc_ids are skipped with a :class:`CorpusWarning`. With
    ``include_title`` each passage starts with the title line (its words count towards the cap,
    so a retrieved passage is self-describing). ``passage_words=0`` keeps whole documents.

    Example:
        >>> [p.passage_id for p in split_passages([Document("d1", "", "A b. C d. E f.")], 10)]
        ['d1#0']
    """
    out: list[Passage] = []
    seen: set[str] = set()
    for d in docs:
        if d.doc_id in seen:
            _warn(f"duplicate doc_id {d.doc_id!r}: kept the first document, skipped this one")
            continue
        seen.add(d.doc_id)
        if not d.text.strip():
            _warn(f"empty document {d.doc_id!r} skipped (no text to index)")
            continue
        title = d.title.strip() if include_title else ""
        if passage_words == 0:
            chunks = [" ".join(d.text.split())]
        else:
            # the title line is repeated in every passage, so it eats into each passage's budget
            budget = max(passage_words // 2, passage_words - len(title.split()))
            chunks = _chunk_words(d.text, budget)
        for n, chunk in enumerate(chunks):
            out.append(Passage(f"{d.doc_id}#{n}", d.doc_id, f"{title}\n{chunk}" if title else chunk))
    return out



def load_task_tolerant(folder: str | Path) -> Task:
    """``tasks.load_task``, except that a bad knowledge base is read with :func:`read_corpus`.

    ``load_task`` refuses a kb.jsonl with a duplicate doc_id, bad bytes or a malformed row. For
    retrieval that is one bad document, not a reason to index nothing: the knowledge base is then
    read document by document (a :class:`CorpusWarning` names each one skipped or repaired) and
    the questions are loaded as usual (a bad question still raises).
    """
    folder = Path(folder)
    try:
        return load_task(folder)
    except ValueError as exc:  # TaskFormatError, and UnicodeDecodeError (a ValueError too)
        problem = str(exc).splitlines()[0][:300]
    questions = []
    fields = {f.name for f in dataclasses.fields(Question)}
    for i, row in enumerate(read_jsonl(folder / "questions.jsonl"), 1):  # a bad question raises
        try:
            questions.append(Question(**{k: v for k, v in row.items() if k in fields}))
        except (TypeError, ValueError) as exc:
            raise TaskFormatError(f"{folder / 'questions.jsonl'}, line {i}: {exc}") from None
    # the questions are fine, so the knowledge base (or an optional file retrieval does not read) is not
    log.warning(f"{folder.name}: load_task refused the task ({problem}); indexing the documents of "
                "kb.jsonl that can be read, with a warning for each one that cannot")
    kb = folder / "kb.jsonl"
    docs = read_corpus(kb) if kb.exists() else []
    meta = read_json(folder / "task.json") if (folder / "task.json").exists() else {}
    return Task(name=meta.get("name", folder.name), questions=questions, docs=docs, meta=meta)

