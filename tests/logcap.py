"""Capture what the package logs (the ``kinject`` logger prints to stderr and does not propagate)."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from kinject_utils.log import get_logger


@contextmanager
def kinject_log(level: int = logging.WARNING) -> Iterator[list[logging.LogRecord]]:
    """Collect the ``kinject`` logger's records at ``level`` and above while the block runs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level)
    handler.emit = records.append  # type: ignore[method-assign]
    root = get_logger()
    root.addHandler(handler)
    try:
        yield records
    finally:
        root.removeHandler(handler)


def text(records: list[logging.LogRecord]) -> str:
    return "\n".join(r.getMessage() for r in records)
