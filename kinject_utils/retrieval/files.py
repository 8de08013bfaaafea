"""Where notebook 04's per-task files live, and the one test of whether they exist."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .. import layout
from ..io import content_hash
from ..tasks import Document

__all__ = ["MANIFEST", "PASSAGES", "RETRIEVED", "has_retrieval", "kb_hash", "retrieval_dir"]

PASSAGES, RETRIEVED, MANIFEST = "passages.jsonl", "retrieved.jsonl", "manifest.json"


def retrieval_dir(results_dir: str | Path, task: str) -> Path:
    """``{results_dir}/04_retrieval/<task>`` (from :func:`kinject_utils.layout.retrieval_dir`)."""
    return layout.retrieval_dir(results_dir, task)


def has_retrieval(results_dir: str | Path, task: str) -> bool:
    """Whether notebook 04 wrote retrieval results for ``task``: its ``retrieved.jsonl`` exists.

    The one owner of this test (notebook 05's grid planning and :func:`load_contexts` both ask
    here). A task without a knowledge base (MMLU offline) has none.
    """
    return (retrieval_dir(results_dir, task) / RETRIEVED).exists()


def kb_hash(docs: Sequence[Document]) -> str:
    """Content hash of a knowledge base (ids, titles, texts), stored in the manifest."""
    return content_hash([[d.doc_id, d.title, d.text] for d in docs])
