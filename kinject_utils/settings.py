"""Field checks for the settings dataclasses: one call per field, one message form.

Every settings dataclass validates itself in ``__post_init__`` with these helpers, so every bad
value is reported the same way, naming the class and field, the expected form and the value::

    RetrievalConfig.k_max must be an integer in 0..100, got -1
    FinetuneConfig.lr must be a number in (0, 1), got '1e-3' (str) (write a number without quotes ...)

A value of the wrong *type* raises :class:`SettingTypeError` (both a ``TypeError`` and a
``ValueError``); a value of the right type out of range raises ``ValueError``.

    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class C:
    ...     n: int = 0
    >>> check_int(C(n=-1), "n", 0)
    Traceback (most recent call last):
    ...
    ValueError: C.n must be an integer >= 0, got -1
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Iterable

__all__ = ["SettingTypeError", "check_bool", "check_choice", "check_device", "check_float", "check_int",
           "check_known_fields", "is_device_name"]

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_YAML_FLOAT = " (write a number without quotes, e.g. 1e-3; kinject's configs read 1e-3 as a number)"


class SettingTypeError(TypeError, ValueError):
    """A setting of the wrong type (caught as either ``TypeError`` or ``ValueError``)."""


def _where(obj: Any, field: str) -> str:
    return f"{type(obj).__name__}.{field}"


def _hint(hint: str) -> str:
    return f"; {hint}" if hint else ""


def _range(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool, integer: bool) -> str:
    if lo is not None and hi is not None:
        if integer and not (lo_open or hi_open):
            return f" in {lo}..{hi}"
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def _check_number(obj: Any, field: str, types: tuple[type, ...], what: str, lo: float | None, hi: float | None,
                  lo_open: bool, hi_open: bool, hint: str) -> Any:
    v = getattr(obj, field)
    expected = what + _range(lo, hi, lo_open, hi_open, integer=types == (int,))
    if isinstance(v, bool) or not isinstance(v, types):
        yaml = _YAML_FLOAT if isinstance(v, str) and float in types else ""
        raise SettingTypeError(f"{_where(obj, field)} must be {expected}, got {v!r} ({type(v).__name__}){yaml}"
                               f"{_hint(hint)}")
    below = lo is not None and (v <= lo if lo_open else v < lo)
    above = hi is not None and (v >= hi if hi_open else v > hi)
    if below or above:
        raise ValueError(f"{_where(obj, field)} must be {expected}, got {v!r}{_hint(hint)}")
    return v


def check_int(obj: Any, field: str, lo: int | None = None, hi: int | None = None, hint: str = "") -> int:
    """``obj.field`` is an int (not a bool) in ``lo..hi`` (either bound optional)."""
    return _check_number(obj, field, (int,), "an integer", lo, hi, False, False, hint)


def check_float(obj: Any, field: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                hi_open: bool = False, hint: str = "") -> float:
    """``obj.field`` is a number (int or float, not a bool) within the bounds (open bounds exclude them)."""
    return _check_number(obj, field, (int, float), "a number", lo, hi, lo_open, hi_open, hint)


def check_bool(obj: Any, field: str) -> bool:
    """``obj.field`` is ``True`` or ``False`` (not ``"yes"`` or ``1``)."""
    v = getattr(obj, field)
    if not isinstance(v, bool):
        raise SettingTypeError(f"{_where(obj, field)} must be true/false, got {v!r} ({type(v).__name__})")
    return v


def check_choice(obj: Any, field: str, allowed: Iterable[Any], hint: str = "") -> Any:
    """``obj.field`` is one of ``allowed``."""
    v, allowed = getattr(obj, field), tuple(allowed)
    if v not in allowed:
        raise ValueError(f"{_where(obj, field)} must be one of {allowed}, got {v!r}{_hint(hint)}")
    return v


def is_device_name(device: Any) -> bool:
    """Whether ``device`` is a device name :func:`kinject_utils.device.resolve_device` accepts:
    ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (any case, surrounding spaces ignored)."""
    return isinstance(device, str) and _DEVICE.fullmatch(device.strip().lower()) is not None


def check_device(obj: Any, field: str = "device") -> str:
    """``obj.field`` is a device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``); whether CUDA is there is
    checked later, when the device is resolved."""
    v = getattr(obj, field)
    if not is_device_name(v):
        raise ValueError(f"{_where(obj, field)} must be one of ('auto', 'cpu', 'cuda') or cuda:N "
                         f"(e.g. cuda:0), got {v!r}")
    return v


def check_known_fields(cls: type, keys: Iterable[str], where: str = "", allowed: Iterable[str] | None = None) -> None:
    """Every key names a field of the dataclass ``cls``; a misspelt one answers "did you mean".

    Every settings dataclass built from a user's mapping (a YAML file, a notebook's ``FT_SETTINGS``)
    goes through here first, so an unknown key never ends in a bare ``TypeError``.

    Args:
        allowed: the keys a user may give, when fewer than every field (default: every field).

    Raises:
        ValueError: naming each unknown key, the closest field, and every allowed field.

    Example:
        >>> check_known_fields(FinetuneConfig, ["lrr"], "FT_SETTINGS")  # doctest: +SKIP
        ValueError: FT_SETTINGS: FinetuneConfig has no setting 'lrr' (did you mean lr?); allowed: ...
    """
    names = list(allowed) if allowed is not None else [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in keys if k not in names]
    if unknown:
        parts = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), names, n=1)
            parts.append(f"{k!r}" + (f" (did you mean {close[0]}?)" if close else ""))
        raise ValueError(f"{where + ': ' if where else ''}{cls.__name__} has no setting {', '.join(parts)}; "
                         f"allowed: {', '.join(sorted(names))}")
