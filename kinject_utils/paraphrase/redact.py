"""Secrets never leave the process: redaction of API keys, whole or cut, and of key-like tokens.

An OpenAI-compatible server (or a proxy in front of it) may echo the request - the
``Authorization: Bearer <key>`` header included - in an error body, in a reply cut off at some
length, or even inside a successful completion. Everything the paraphrase stage keeps or shows
(error messages, log lines, cached replies, stored paraphrases) goes through :func:`redact`, which
removes

- every run of 8 or more characters that also occurs in a configured key (so a key cut at any
  truncation point, or only its tail, is removed too), and
- any ``Bearer <token>`` and any ``sk-...``-like token, whoever's key it is.

:func:`check_env_name` guards the one parameter that names the key's environment variable: a
value that looks like a key itself is rejected without being echoed.

    >>> redact("auth: Bearer abcdefghijkl", keys=["zzzz-abcdefghijklmnop"])
    'auth: Bearer [REDACTED]'
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

__all__ = ["MASK", "MIN_RUN", "RedactingFilter", "check_env_name", "looks_like_secret", "redact"]

MASK = "[REDACTED]"
#: the shortest run of a key's characters that is removed wherever it appears
MIN_RUN = 8
_BEARER = re.compile(r"(?i)\b(bearer)\s+(?!\[REDACTED\])[^\s\"',;}\]]+")
_TOKEN = re.compile(r"\b(?:sk|pk|rk|sess)-[A-Za-z0-9_\-]{8,}")
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")


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


def looks_like_secret(value: str) -> bool:
    """Whether ``value`` is more likely a key than an environment variable's name.

    A name is UPPER_CASE words of letters and digits (``OPENAI_API_KEY``, ``VLLM_KEY_2``), each
    word at most 16 characters and with at most 4 digits; anything else (mixed case, ``sk-``,
    long random runs) is taken for a key.
    """
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value) or len(value) > 64:
        return True
    return any(len(w) > 16 or sum(c.isdigit() for c in w) > 4 for w in value.split("_"))


def check_env_name(value: str, parameter: str = "OPENAI_API_KEY_ENV") -> str:
    """``value`` if it is a plausible environment variable NAME; else a ValueError that never shows it."""
    if looks_like_secret(value):
        n = len(value) if isinstance(value, str) else 0
        raise ValueError(
            f"{parameter} must hold the NAME of an environment variable (like 'OPENAI_API_KEY'), but its "
            f"value ({n} characters, not shown) looks like a key itself. Fix: remove the key from the "
            f"config/notebook, put it in the environment (export OPENAI_API_KEY=...) and set "
            f"{parameter}: OPENAI_API_KEY. If that key was shared anywhere, revoke it.")
    return value


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
