"""Secrets: the one check of a ``*_ENV`` parameter, and the one redaction of what is kept or shown.

A key never goes into a config or notebook parameter (papermill writes parameters into the executed
notebook). It lives in the environment, and a ``*_ENV`` parameter holds the variable's NAME::

    OPENAI_API_KEY_ENV: OPENAI_API_KEY      # export OPENAI_API_KEY=... in the shell

- :func:`check_env_name` is the check of a ``*_ENV`` value, run where the runner validates a config
  (:class:`kinject_utils.config.RunSettings`) and where the paraphrase backend reads the key, so a
  notebook run by hand is covered too. A value that looks like a key is rejected without being echoed.
- :func:`looks_like_secret` flags a pasted key or token in any other parameter.
- :func:`redact` removes secrets from everything the paraphrase stage keeps or shows (errors, log
  lines, cached replies, stored paraphrases): an OpenAI-compatible server, or a proxy in front of it,
  may echo the request (``Authorization: Bearer <key>`` included) in an error body, in a reply cut at
  some length, or inside a completion. It removes every run of 8 or more characters that also occurs
  in a configured key (so a key cut anywhere, or only its tail, goes too) and any ``Bearer <token>``
  or ``sk-...``-like token, whoever's key it is. :class:`RedactingFilter` applies it to log records.

    >>> redact("auth: Bearer abcdefghijkl", keys=["zzzz-abcdefghijklmnop"])
    'auth: Bearer [REDACTED]'
    >>> check_env_name("OPENAI_API_KEY")
    'OPENAI_API_KEY'
"""
from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

__all__ = ["MASK", "MIN_RUN", "RedactingFilter", "check_env_name", "looks_like_secret", "redact"]

MASK = "[REDACTED]"
#: the shortest run of a key's characters that is removed wherever it appears
MIN_RUN = 8
_BEARER = re.compile(r"(?i)\b(bearer)\s+(?!\[REDACTED\])[^\s\"',;}\]]+")
_TOKEN = re.compile(r"\b(?:sk|pk|rk|sess)-[A-Za-z0-9_\-]{8,}")
#: an environment variable's name: UPPER_CASE words of letters and digits (OPENAI_API_KEY, VLLM_KEY_2)
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")
_KEY_PREFIXES = ("sk-", "sk_", "hf_", "bearer ", "ghp_", "gho_", "github_pat_", "xoxb-", "xoxp-", "glpat-",
                 "aiza", "akia", "eyj")


# ---- what a parameter may hold --------------------------------------------------------------------
def check_env_name(value: Any, parameter: str = "OPENAI_API_KEY_ENV") -> str:
    """``value`` if it is a plausible environment variable NAME, else a ValueError that never shows it.

    A name is UPPER_CASE words of letters and digits, at most 64 characters, each word at most 16
    characters with at most 4 digits (``OPENAI_API_KEY``, ``VLLM_KEY_2``). Anything else - mixed case,
    ``sk-...``, a long run of capitals and digits - is taken for a key pasted in the wrong place.

    Example:
        >>> check_env_name("sk-proj-abc123")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: OPENAI_API_KEY_ENV must hold the NAME of ... (14 characters, not shown) looks like a key...
    """
    if (isinstance(value, str) and len(value) <= 64 and _ENV_NAME.fullmatch(value)
            and all(len(w) <= 16 and sum(c.isdigit() for c in w) <= 4 for w in value.split("_"))):
        return value
    n = len(value) if isinstance(value, str) else 0
    raise ValueError(
        f"{parameter} must hold the NAME of an environment variable (like OPENAI_API_KEY), but its value "
        f"({n} characters, not shown) looks like a key itself. Fix: remove the key from the config/notebook, "
        f"put it in the environment (export OPENAI_API_KEY=...) and set {parameter}: OPENAI_API_KEY. "
        "If that key was shared anywhere, revoke it.")


def _entropy(s: str) -> float:
    counts = Counter(s)
    return -sum(c / len(s) * math.log2(c / len(s)) for c in counts.values())


def looks_like_secret(value: Any) -> bool:
    """True for a string that looks like an API key or token (``sk-...``, ``hf_...``, ``Bearer ...``,
    or a long mixed-case/digit token of high entropy). Paths, URLs and words are not.

    Example:
        >>> looks_like_secret("sk-abcdefghijklmnop1234"), looks_like_secret("runs/tiny/results")
        (True, False)
    """
    if not isinstance(value, str):
        return False
    s = value.strip()
    if s.lower().startswith(_KEY_PREFIXES) and len(s) >= 12:
        return True
    if len(s) < 24 or any(c.isspace() for c in s) or "/" in s or s.startswith(("http:", "https:", ".", "~")):
        return False
    classes = sum([any(c.islower() for c in s), any(c.isupper() for c in s), any(c.isdigit() for c in s)])
    return classes >= 2 and _entropy(s) >= 3.5 and any(c.isdigit() for c in s)


# ---- what leaves the process ----------------------------------------------------------------------
def _key_runs(text: str, key: str) -> list[tuple[int, int]]:
    """Spans of ``text`` made of MIN_RUN+ characters that occur contiguously in ``key``."""
    if len(key) < MIN_RUN:
        return []
    grams = {key[i:i + MIN_RUN] for i in range(len(key) - MIN_RUN + 1)}
    spans: list[tuple[int, int]] = []
    for i in range(len(text) - MIN_RUN + 1):
        if text[i:i + MIN_RUN] in grams:
            if spans and i <= spans[-1][1]:
                spans[-1] = (spans[-1][0], i + MIN_RUN)
            else:
                spans.append((i, i + MIN_RUN))
    return spans


def redact(text: str, keys: Iterable[str] = (), env_names: Iterable[str] = ()) -> str:
    """``text`` with every configured key (whole or any 8+ character piece) and token-like value masked.

    Args:
        text: anything about to be shown, logged or stored.
        keys: secret values to remove.
        env_names: names of environment variables whose values are secrets (read now).
    """
    if not isinstance(text, str) or not text:
        return text
    secrets = [k for k in keys if k] + [os.environ.get(n, "") for n in env_names if n]
    for key in sorted({k for k in secrets if k}, key=len, reverse=True):
        text = text.replace(key, MASK)
        for a, b in reversed(_key_runs(text, key)):
            text = text[:a] + MASK + text[b:]
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _TOKEN.sub(MASK, text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the keys held in ``env_names`` from every record it passes."""

    def __init__(self, env_names: Iterable[str] = ()) -> None:
        super().__init__()
        self.env_names = set(env_names)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg, env_names=self.env_names)
        if clean != msg:
            record.msg, record.args = clean, None
        return True
