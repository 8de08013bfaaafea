"""The knowledge base as retrieval sees it: documents split into passages of at most N words.

The documents come from the task folder notebook 01 wrote and validated (:func:`kinject_utils.tasks.load_task`).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from ..log import get_logger
from ..tasks import Document

__all__ = ["Passage", "split_passages"]

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

