"""File helpers shared by every stage: atomic writes, JSONL, content hashes, project paths.

Every result file is written to a temporary file in the same folder and renamed into place, so an
interrupted run never leaves a half-written result that a later notebook would read.
"""
from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = ["atomic_write_text", "atomic_write_bytes", "new_file_mode", "write_json", "read_json", "write_jsonl",
           "read_jsonl", "read_jsonl_numbered", "append_jsonl", "content_hash", "project_root", "resolve_path", "slug",
           "write_csv", "read_csv"]


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file under the current umask (usually ``0o644``).

    ``tempfile.mkstemp`` creates ``0o600`` files; a result renamed into place from one would be
    unreadable to a teammate, a JupyterHub user or a web server showing the figures.
    """
    mask = os.umask(0o022)  # read the umask (the only way), then put it back
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    The file gets the mode a plain ``open(path, "w")`` would (:func:`new_file_mode`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (byte-stable for identical objects)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file and position on a parse error."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write rows as JSON lines (keys sorted, UTF-8), atomically."""
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one row to a JSONL log (for caches/progress; readers skip a torn last line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl_numbered(path: str | os.PathLike, *, tolerate_torn_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, row)`` for each row of a JSONL file (1-based, blank lines counted).

    A UTF-8 byte-order mark at the start is dropped. A bad line raises ``ValueError`` naming file,
    line and the fix. With ``tolerate_torn_tail`` a malformed *last* line (a write cut off by a
    crash) is skipped.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        lines = fh.readlines()
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):
        lines[0] = lines[0][3:]
    for i, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}, line {i}: not valid UTF-8 (byte {raw[exc.start]:#04x} at column "
                             f"{exc.start + 1}). Re-save the file as UTF-8.") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if tolerate_torn_tail and i == len(lines):
                return
            raise ValueError(f"{path}, line {i}: not valid JSON ({exc.msg}). Fix or delete that line.") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {i}: expected a JSON object, got {type(row).__name__}. "
                             "Write one JSON object per line.")
        yield i, row


def read_jsonl(path: str | os.PathLike, *, tolerate_torn_tail: bool = False) -> Iterator[dict]:
    """The rows of :func:`read_jsonl_numbered` without their line numbers."""
    for _, row in read_jsonl_numbered(path, tolerate_torn_tail=tolerate_torn_tail):
        yield row


def content_hash(*parts: Any, length: int = 16) -> str:
    """Stable hex digest of JSON-serialisable parts (cache keys: content, model, prompt, seed)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:length]


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The kinject checkout holding ``start`` (default: cwd): the first parent with pyproject.toml
    and a ``notebooks/`` folder. Lets a notebook opened in JupyterLab (cwd ``notebooks/``) and the
    runner (cwd = root) resolve the same relative paths."""
    here = Path(start or os.getcwd()).resolve()
    for p in [here, *here.parents]:
        if (p / "pyproject.toml").exists() and (p / "notebooks").is_dir():
            return p
    return here


def resolve_path(p: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """``p`` if absolute, else relative to :func:`project_root`."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else (Path(root) if root else project_root()) / p


def slug(name: str, max_len: int = 80, *, unique: bool = False) -> str:
    """A file-name-safe form of ``name``: runs of other characters than ``A-Za-z0-9._-`` become ``_``.

    With ``unique`` an 8-hex hash of the full name is appended, so two names that slug alike
    (``a/b`` and ``a_b``) still get different folders.

    Example:
        >>> slug("BAAI/bge-large-en v1.5")
        'BAAI_bge-large-en_v1.5'
    """
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name).strip()).strip("_")[:max_len] or "x"
    return f"{s}-{hashlib.sha256(str(name).encode('utf-8')).hexdigest()[:8]}" if unique else s


def write_csv(table: Any, path: str | os.PathLike, columns: list[str] | None = None) -> Path:
    """Write a table atomically as CSV (csv-module quoting: commas, quotes and newlines survive).

    Args:
        table: a pandas DataFrame (written without its index) or a sequence of dict rows.
        path: the destination.
        columns: column order for dict rows (default: keys in first-seen order); keys not listed
            are left out, missing ones are written empty.
    """
    if hasattr(table, "to_csv"):
        return atomic_write_text(path, table.to_csv(index=False, lineterminator="\n"))
    rows = list(table)
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())



def read_csv(path: str | os.PathLike, *, frame: bool = False, missing_ok: bool = False) -> Any:
    """Read a CSV file with a header row, as :func:`write_csv` writes them: the one CSV reader.

    Args:
        path: the file (UTF-8; a byte-order mark is dropped).
        frame: return a pandas DataFrame, numbers parsed as numbers (for tables and figures),
            instead of dict rows whose every field stays text (for files merged and written back,
            where ``"0.50"`` must stay ``"0.50"``).
        missing_ok: a missing file reads as "not produced yet": ``[]``, or ``None`` with ``frame``
            (what the tables and figures render as such), instead of ``FileNotFoundError``.

    Example:
        >>> import tempfile
        >>> p = write_csv([{"task": "a", "score": "0.50"}], Path(tempfile.mkdtemp()) / "s.csv")
        >>> read_csv(p), read_csv(p.with_name("none.csv"), missing_ok=True)
        ([{'task': 'a', 'score': '0.50'}], [])
    """
    path = Path(path)
    if missing_ok and not path.exists():
        return None if frame else []
    if frame:
        import pandas as pd

        return pd.read_csv(path, encoding="utf-8-sig")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))
