"""The paraphrase reply cache: one append-only JSONL per backend and model, keyed by content hash.

Each request's reply is appended (flushed and fsynced) under a key of the document text,
backend, model, the backend's generation settings, the prompt template, the number asked for and
the seed. An interrupted run resumes at the first uncached request, a re-run makes no request,
and a changed document gets new keys. Raw replies are stored redacted (no key, whole or cut).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import content_hash, read_jsonl, slug
from ..log import get_logger
from .base import ParaphraseBackend
from .prompt import PARAPHRASE_PROMPT

__all__ = ["CACHE_VERSION", "cache_file", "cache_key", "load_cache"]

CACHE_VERSION = "paraphrase-cache-v1"
log = get_logger("paraphrase")


def cache_file(cache_dir: str | Path, backend: ParaphraseBackend) -> Path:
    """``<cache_dir>/<backend>__<model slug>.jsonl``."""
    return Path(cache_dir) / f"{backend.name}__{slug(backend.model, max_len=80)}.jsonl"


def cache_key(doc_text: str, backend: ParaphraseBackend, k: int, seed: int) -> str:
    """The key of one request: what it asked, of whom, with which settings and seed."""
    return content_hash(CACHE_VERSION, doc_text, backend.name, backend.model, backend.cache_identity(),
                        PARAPHRASE_PROMPT, k, seed)


def load_cache(path: Path) -> dict[str, dict[str, Any]]:
    """The cached replies by key, after cutting off a last line torn by a kill mid-write.

    The cut matters: the next append would otherwise extend the torn line, losing that row and
    leaving a malformed line in the middle of the file.
    """
    if not path.exists():
        return {}
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)
            log.warning(f"{path}: dropped a last line cut off by an interrupted write")
    return {row["key"]: row for row in read_jsonl(path, tolerate_torn_tail=True) if "key" in row}
