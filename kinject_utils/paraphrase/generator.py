"""The rewordings a task ships with, as a backend (offline, instant, nothing to cache)."""
from __future__ import annotations

from ..tasks import Document, Task
from .base import ParaphraseBackend, Reply

__all__ = ["GeneratorRewordingsBackend"]


class GeneratorRewordingsBackend(ParaphraseBackend):
    """The rewordings a task ships with (``task.paraphrases``), for fully offline runs.

    The fictional news generator writes its own template rewordings; fictional-knowledge ships
    9 paraphrases for entries 0-39. Documents without rewordings get none. Nothing to cache
    and nothing to retry: asking again gives the same list.
    """

    name = "generator"
    cacheable = False
    deterministic = True

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.model = f"rewordings:{task.name}"
        self._rewordings = {k: list(v) for k, v in task.paraphrases.items()}

    def __repr__(self) -> str:
        return f"GeneratorRewordingsBackend(model={self.model!r}, n_docs={len(self._rewordings)})"

    def paraphrase(self, doc: Document, n: int, seed: int) -> Reply:
        self.counters["requests"] += 1
        return Reply(self._rewordings.get(doc.doc_id, [])[:n], "", "generator")

