"""The knowledge base as retrieval sees it: tolerant reading and splitting into passages.

    split_passages     documents -> passages of at most N words, cut on sentence boundaries
    load_task_tolerant tasks.load_task, except that a bad knowledge base is indexed document by document

Raw documents are read by the package's one reader, :func:`kinject_utils.data.load_documents`
(``strict=False`` here: a bad document is skipped or repaired with a warning on the ``kinject``
logger, the rest is indexed).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path

from ..data.custom import load_documents
from ..io import read_json, read_jsonl
from ..log import get_logger
from ..tasks import Document, Question, Task, TaskFormatError, load_task

__all__ = ["Passage", "load_task_tolerant", "split_passages"]

log = get_logger("retrieval")


@dataclasses.dataclass(frozen=True)
class Passage:
    """One retrievable unit: ``passage_id`` is ``<doc_id>#<n>`` (n counts from 0 in the document)."""

    passage_id: str
    doc_id: str
    text: str


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

    Empty documents and repeated doc_ids are skipped with a logged warning. With
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
            log.warning(f"duplicate doc_id {d.doc_id!r}: kept the first document, skipped this one. "
                        "Fix: give every document a unique id.")
            continue
        seen.add(d.doc_id)
        if not d.text.strip():
            log.warning(f"empty document {d.doc_id!r} skipped (no text to index)")
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
    """``tasks.load_task``, except that a bad knowledge base is read document by document.

    ``load_task`` refuses a kb.jsonl with a duplicate doc_id, bad bytes or a malformed row. For
    retrieval that is one bad document, not a reason to index nothing: kb.jsonl is then read with
    ``load_documents(kb, strict=False)`` (a duplicate id keeps the first, a malformed row or empty
    document is skipped, bad bytes become U+FFFD, a row without doc_id gets ``kb/<line>``; each is
    named in a warning on the ``kinject`` logger) and the questions are loaded as usual (a bad
    question still raises). A kb.jsonl with no usable document at all gives a task without
    documents, which retrieval skips.
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
    docs: list[Document] = []
    if kb.exists():
        try:
            docs = load_documents(kb, strict=False)
        except TaskFormatError as exc:  # not one usable document: the task is skipped, with the reason
            log.warning(str(exc))
    meta = read_json(folder / "task.json") if (folder / "task.json").exists() else {}
    return Task(name=meta.get("name", folder.name), questions=questions, docs=docs, meta=meta)
