"""The package's logger and its one progress bar.

Messages go through ``logging.getLogger("kinject")`` so a batch run can filter by level;
progress goes through :func:`progress` (plain-text tqdm: the widget flavour needs ipywidgets,
which papermill's headless kernel lacks, and prints nothing useful to a log file).
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Iterable

LOGGER_NAME = "kinject"


def get_logger(name: str | None = None) -> logging.Logger:
    """``kinject`` or a child of it (``kinject.finetune``); a stderr handler is added once."""
    root = logging.getLogger(LOGGER_NAME)
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("[%(name)s] %(levelname)s %(message)s"))
        root.addHandler(h)
        root.setLevel(logging.INFO)
        root.propagate = False
    return root if not name else root.getChild(name.removeprefix(LOGGER_NAME + "."))


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """A tqdm bar with an ETA (``total=``, ``desc=``, ``unit=`` as tqdm takes them)."""
    from tqdm import tqdm

    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
