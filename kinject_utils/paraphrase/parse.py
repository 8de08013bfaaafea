"""Reading paraphrases out of a model's reply: the package's one JSON-repair parser.

What a reply may look like (tried in this order):

1. JSON: the whole reply (optionally inside a Markdown code fence) is an object whose
   ``"paraphrases"`` key holds a list of strings (or one string), or a bare list of strings;
2. embedded JSON: the first such object or list found inside surrounding text;
3. truncated JSON: ``{"paraphrases": ["...", "...`` cut off (``max_new_tokens`` reached): the
   complete string items before the cut are kept;
4. a numbered list: lines starting ``1.``, ``1)``, ``(1)`` or ``Paraphrase 1:``; an item runs
   until the next number (continuation lines are joined with a space; surrounding quotes go);
5. prose, only when exactly one paraphrase was asked for: the whole reply, minus a first line
   ending in ``:`` ("Here is a paraphrase:") and surrounding quotes.

Anything else parses to no paraphrase (counted as a parse failure, then retried). Non-string
list items are dropped.
"""
from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["parse_paraphrases"]


_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?```\s*$", re.DOTALL)
_NUMBERED = re.compile(r"^\s*(?:\(?\d{1,2}[.):]|paraphrase\s*#?\s*\d{1,2}\s*[:.)-])\s*", re.IGNORECASE)
_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)


def _strings_from(obj: Any) -> list[str] | None:
    """The paraphrase list inside a parsed JSON value, or None if it has none."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and k.strip().lower() == "paraphrases":
                if isinstance(v, str):
                    return [v]
                if isinstance(v, list):
                    return [s for s in v if isinstance(s, str)]
        return None
    if isinstance(obj, list) and obj and all(isinstance(s, str) for s in obj):
        return list(obj)
    return None


def _embedded_json(text: str) -> list[str] | None:
    """The first JSON object/list inside ``text`` that holds paraphrases."""
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch not in "{[":
            continue
        try:
            obj, _ = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            continue
        found = _strings_from(obj)
        if found is not None:
            return found
    return None


def _truncated_json(text: str) -> list[str] | None:
    """Complete string items of a ``"paraphrases": [`` list that was cut off."""
    m = re.search(r'"paraphrases"\s*:\s*\[', text, re.IGNORECASE)
    if not m:
        return None
    items: list[str] = []
    rest, pos = text[m.end():], 0
    while True:
        while pos < len(rest) and rest[pos] in " \t\r\n,":
            pos += 1
        sm = _JSON_STRING.match(rest, pos)  # only a string with its closing quote matches
        if not sm:
            break
        try:
            items.append(json.loads('"' + sm.group(1) + '"'))
        except json.JSONDecodeError:
            break
        pos = sm.end()
    return items or None


def _numbered(text: str) -> list[str] | None:
    items: list[list[str]] = []
    for line in text.splitlines():
        m = _NUMBERED.match(line)
        if m:
            items.append([line[m.end():].strip()])
        elif items and line.strip():
            items[-1].append(line.strip())
    out = [" ".join(p for p in it if p).strip() for it in items]
    out = [s for s in out if s]
    return out if len(out) >= 1 and items else None


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        s = s[1:-1].strip()
    return s


def _prose(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines()]
    if len(lines) > 1 and lines[0].rstrip().endswith(":"):
        lines = lines[1:]  # "Here is a paraphrase of the text:" preamble
    return _unquote("\n".join(lines))


def parse_paraphrases(text: str, num_requested: int = 1) -> tuple[list[str], str]:
    """Extract paraphrases from a model reply (accepted forms: see the module docstring).

    Args:
        text: the reply.
        num_requested: how many were asked for; prose is accepted only when this is 1.

    Returns:
        ``(paraphrases, how)`` with ``how`` naming the rule that matched (``"none"`` if none did).

    Example:
        >>> parse_paraphrases('Sure! {"paraphrases": ["A b.", "C d."]} Done.', 2)
        (['A b.', 'C d.'], 'embedded_json')
    """
    if not isinstance(text, str) or not text.strip():
        return [], "none"
    body = text.strip()
    fence = _FENCE.match(body)
    if fence:
        body = fence.group(1).strip()
    clean = lambda xs: [s.strip() for s in xs if s.strip()]
    try:
        found = _strings_from(json.loads(body))
        if found is not None:
            return clean(found), "json"
    except json.JSONDecodeError:
        pass
    for how, fn in (("embedded_json", _embedded_json), ("truncated_json", _truncated_json),
                    ("numbered", _numbered)):
        found = fn(body)
        if found:
            return clean([_unquote(s) for s in found] if how == "numbered" else found), how
    if num_requested == 1 and not body.lstrip().startswith(("{", "[")):
        s = _prose(body)
        if s:
            return [s], "prose"
    return [], "none"

