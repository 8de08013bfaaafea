"""The backend interface: what every paraphrase backend returns and how a chat backend asks."""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

from ..secrets import redact
from ..tasks import Document
from .parse import parse_paraphrases
from .prompt import render_prompt

__all__ = ["ChatBackend", "ParaphraseBackend", "ParaphraseBackendError", "Reply"]


class ParaphraseBackendError(RuntimeError):
    """A backend failed for good (after its bounded retries); the message says why and what to do."""


@dataclasses.dataclass
class Reply:
    """What one backend request returned.

    Attributes:
        paraphrases: candidate paraphrases, parsed, before any check.
        raw: the reply text as the model wrote it ("" for the generator backend).
        how: which parse rule matched (``json``, ``embedded_json``, ``truncated_json``,
            ``numbered``, ``prose``, ``none``) or ``generator``.
    """

    paraphrases: list[str]
    raw: str = ""
    how: str = "none"



class ParaphraseBackend(abc.ABC):
    """One way of producing paraphrases.

    Subclasses set ``name`` (``"local"``, ``"openai"``, ``"generator"``) and ``model``, and
    implement :meth:`paraphrase`. ``cacheable`` says whether replies are worth caching;
    ``deterministic`` that asking again with another seed cannot give anything new (no retries).
    ``counters`` accumulates request-level events (retries, timeouts, ...) for the stats.
    """

    name: ClassVar[str] = "backend"
    cacheable: ClassVar[bool] = True
    deterministic: ClassVar[bool] = False
    #: how many paraphrases one request asks for when the caller does not say
    default_per_call: ClassVar[int] = 10
    model: str

    def __init__(self) -> None:
        self.counters: dict[str, int] = {"requests": 0, "retries": 0, "timeouts": 0,
                                         "server_errors": 0, "bad_bodies": 0}

    @abc.abstractmethod
    def paraphrase(self, doc: Document, n: int, seed: int) -> Reply:
        """Ask for ``n`` paraphrases of ``doc`` with ``seed``; return what came back (unchecked)."""

    def cache_identity(self) -> dict[str, Any]:
        """Settings that change the output (go into the cache key), beyond name and model."""
        return {}

    def redact(self, text: str) -> str:
        """``text`` with this backend's secrets removed (before it is cached, stored or shown)."""
        return redact(text)


class ChatBackend(ParaphraseBackend):
    """A backend that sends the paper's prompt as one user message and parses the reply."""

    def paraphrase(self, doc: Document, n: int, seed: int) -> Reply:
        messages = [{"role": "user", "content": render_prompt(doc.text, n)}]
        raw = self.complete(messages, seed=seed, max_tokens=self.max_tokens_for(doc.text, n))
        found, how = parse_paraphrases(raw, n)
        return Reply(found, raw, how)

    def max_tokens_for(self, text: str, n: int) -> int | None:
        """Generation budget for ``n`` paraphrases of ``text`` (``None``: the server decides)."""
        return None

    @abc.abstractmethod
    def complete(self, messages: list[dict[str, str]], seed: int, max_tokens: int | None = None) -> str:
        """One chat completion: the assistant's reply text."""

