"""The one figure saver: every PNG of notebooks 03, 06 and 07 goes through :func:`save_figure`.

A committed figure should change only when what it draws changes. Matplotlib writes its version
into a PNG's ``Software`` text chunk, so the same figure saved under another matplotlib release
would differ in bytes alone; the saver drops that chunk (Agg writes no creation time), draws at one
resolution, and writes atomically, so a rerun on the same data leaves ``git status`` clean.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .io import atomic_write_bytes

__all__ = ["pyplot", "save_figure", "DPI"]

#: the resolution of every figure (a 7 x 4 inch figure is 840 x 480 pixels)
DPI = 120


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend: figures are drawn to files, also where no display exists."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a byte-stable PNG at ``path`` (atomically), close it, and return the path.

    Example:
        >>> import tempfile
        >>> fig, ax = pyplot().subplots()
        >>> save_figure(fig, Path(tempfile.mkdtemp()) / "f.png").suffix
        '.png'
    """
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())
