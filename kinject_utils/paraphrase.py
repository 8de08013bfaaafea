"""Paraphrase augmentation (notebook 02): backends, parsing, a fact check and a resumable cache.

The paper fine-tunes on up to 10 paraphrases of every knowledge-base document (FT-par) and finds
accuracy rising with their number. This module makes them, behind one interface::

    backend = LocalChatBackend("smollm2-135m")                        # local instruct model
    backend = OpenAICompatibleBackend("http://localhost:8000/v1", "mistral-7b-instruct")
    backend = GeneratorRewordingsBackend(task)                        # the task's own rewordings
    paraphrases, stats = paraphrase_task(task, backend, n=10, seed=0,
                                         cache_dir="results/cache/paraphrases")

Every backend turns ``(document, k, seed)`` into a :class:`Reply` (a list of candidate
paraphrases plus the raw text). :func:`paraphrase_task` then, per document:

1. asks for the missing paraphrases (at most ``per_call`` per request) with seed ``seed + call``
   (the paper used a different seed per pass);
2. checks the first ``k`` candidates of a reply asked for ``k`` (:func:`check_paraphrase`): not
   empty, not a copy of the document or of an accepted paraphrase, at least
   ``min_length_ratio`` of the document's length, and - for tasks that know their answers -
   still holding the answer string of every question citing the document (see
   :func:`required_facts`; ``min_fact_recall`` < 1 relaxes "every" to a share);
3. retries with the next seed until ``n`` are accepted or ``ceil(n / per_call) + max_retries``
   requests were made; everything rejected is counted by reason.

Each request's reply is appended to a JSONL cache under ``cache_dir`` (one file per backend and
model) keyed by :func:`kinject_utils.io.content_hash` of the document text, backend, model, the
backend's generation settings, the prompt template, the number asked for and the seed. An
interrupted run therefore resumes at the first uncached request, a re-run makes no request at
all, and a changed document gets new keys and is redone. The cache stores each raw reply;
parsing (for chat backends) and the checks are re-applied on every run, so a parser fix or
changed questions cost no generation.

What a reply may look like (:func:`parse_paraphrases`, tried in this order):

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

The API key of an HTTP endpoint is read from the environment variable *named* by
``api_key_env`` at request time; it is never stored on the backend, in its repr, in caches,
outputs, stats or error messages.
"""
from __future__ import annotations

import abc
import csv
import dataclasses
import http.client
import io as _io
import json
import math
import os
import re
import socket
import time
import unicodedata
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

from .io import append_jsonl, atomic_write_text, content_hash, read_jsonl, write_jsonl
from .tasks import Document, Task

__all__ = [
    "PARAPHRASE_PROMPT",
    "PROMPT_ID",
    "STATS_COLUMNS",
    "Reply",
    "ParaphraseBackend",
    "ChatBackend",
    "LocalChatBackend",
    "OpenAICompatibleBackend",
    "GeneratorRewordingsBackend",
    "ParaphraseBackendError",
    "make_backend",
    "render_prompt",
    "parse_paraphrases",
    "normalise",
    "required_facts",
    "fact_recall",
    "check_paraphrase",
    "paraphrase_task",
    "write_paraphrases",
    "read_paraphrases",
    "write_stats",
    "fact_recall_curve",
    "coverage_table",
]

# The paper's prompt (Ovadia et al. 2023, appendix), as PAPER.md describes it: NUM_PARAPHRASES
# different paraphrases that keep all the information, returned as a JSON string with one key,
# "paraphrases". {num_paraphrases} and {text} are filled in by render_prompt.
PARAPHRASE_PROMPT = (
    "Your task is to paraphrase a text paragraph. The paragraph is given below. "
    "Make sure to keep the same meaning and all the information: every name, number, date and "
    "fact must stay. Change the wording. Give {num_paraphrases} different paraphrases of the "
    "paragraph, as different from one another as possible. "
    'Return a JSON formatted string with one key, "paraphrases", holding a list of the '
    "paraphrases.\n\n"
    "Input paragraph:\n{text}"
)
#: Short id of the prompt template; part of every cache key, so editing the prompt redoes the work.
PROMPT_ID = content_hash(PARAPHRASE_PROMPT, length=8)

#: Columns of ``{RESULTS_DIR}/02_paraphrase_stats.csv`` (one row per task, backend, model, scope).
STATS_COLUMNS = ["task", "backend", "model", "scope", "n_docs", "n_requested", "n_accepted",
                 "n_rejected", "acceptance_rate", "fill_rate", "paraphrases_per_min", "seconds",
                 "n_calls", "n_cached_calls", "n_parse_failures", "n_short_replies", "n_retries",
                 "mean_fact_recall", "min_fact_recall",
                 "rejected_missing_fact", "rejected_duplicate", "rejected_too_short",
                 "rejected_empty", "wall_seconds"]

_CACHE_VERSION = "paraphrase-cache-v1"


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


# --------------------------------------------------------------------------------------------
# prompt and parsing
# --------------------------------------------------------------------------------------------
def render_prompt(text: str, num_paraphrases: int, template: str = PARAPHRASE_PROMPT) -> str:
    """Fill the paper's prompt for one document.

    Example:
        >>> "Give 3 different paraphrases" in render_prompt("Some text.", 3)
        True
    """
    if num_paraphrases < 1:
        raise ValueError(f"num_paraphrases must be >= 1, got {num_paraphrases}")
    # str.replace, not str.format: a document may contain braces.
    return template.replace("{num_paraphrases}", str(num_paraphrases)).replace("{text}", text.strip())


_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?```\s*$", re.S)
_NUMBERED = re.compile(r"^\s*(?:\(?\d{1,2}[.):]|paraphrase\s*#?\s*\d{1,2}\s*[:.)-])\s*", re.I)
_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)


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
    m = re.search(r'"paraphrases"\s*:\s*\[', text, re.I)
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
    clean = lambda xs: [s.strip() for s in xs if s.strip()]  # noqa: E731
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


# --------------------------------------------------------------------------------------------
# fact check
# --------------------------------------------------------------------------------------------
_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"), "-")
_QUOTES = {ord("\u2018"): "'", ord("\u2019"): "'", ord("\u201c"): '"', ord("\u201d"): '"'}


def normalise(text: str) -> str:
    """Case-fold, NFKC, ASCII dashes/quotes, single spaces: what the fact check compares.

    Example:
        >>> normalise("Zorgon\u2013Calidus  Government")
        'zorgon-calidus government'
    """
    s = unicodedata.normalize("NFKC", text).translate(_DASHES).translate(_QUOTES)
    return " ".join(s.casefold().split())


def required_facts(task: Task) -> dict[str, list[str]]:
    """Answer strings every paraphrase of each document must keep.

    For every question (test and dev) citing a document in ``source_doc_ids``, its answer text
    is required of that document's paraphrases - but only when the document itself contains it
    (after :func:`normalise`): an answer the original never states cannot be asked of a
    rewording. Tasks whose questions cite no documents (MMLU) require nothing.

    Returns:
        doc_id -> sorted unique answer strings (documents with none are absent).
    """
    docs = {d.doc_id: normalise(d.text) for d in task.docs}
    out: dict[str, set[str]] = {}
    for q in [*task.questions, *task.dev]:
        ans = q.answer_text
        for d in q.source_doc_ids:
            if d in docs and normalise(ans) and normalise(ans) in docs[d]:
                out.setdefault(d, set()).add(ans)
    return {d: sorted(v) for d, v in out.items()}


def fact_recall(candidate: str, facts: Sequence[str]) -> float | None:
    """Fraction of the answer strings ``facts`` that ``candidate`` still contains (``None``: no facts).

    Example:
        >>> fact_recall("Mayor ILSA Brandt opened it in 2027.", ["Ilsa Brandt", "2028"])
        0.5
    """
    if not facts:
        return None
    norm = normalise(candidate)
    return sum(normalise(f) in norm for f in facts) / len(facts)


def check_paraphrase(candidate: str, original: str, facts: Sequence[str], seen: Iterable[str] = (),
                     min_length_ratio: float = 0.25, min_fact_recall: float = 1.0) -> str | None:
    """Why ``candidate`` is rejected, or ``None`` if it is accepted.

    Reasons: ``"empty"``; ``"duplicate"`` (normalised equal to the original or to one in
    ``seen``, which holds normalised texts); ``"too_short"`` (fewer than ``min_length_ratio`` x
    the original's characters); ``"missing_fact"`` (it keeps less than ``min_fact_recall`` of
    the answer strings in ``facts``, compared case-insensitively after :func:`normalise`; the
    default 1.0 demands every one).
    """
    norm = normalise(candidate)
    if not norm:
        return "empty"
    if norm == normalise(original) or norm in set(seen):
        return "duplicate"
    if len(norm) < min_length_ratio * len(normalise(original)):
        return "too_short"
    recall = fact_recall(candidate, facts)
    if recall is not None and recall < min_fact_recall - 1e-9:
        return "missing_fact"
    return None


# --------------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------------
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


class LocalChatBackend(ChatBackend):
    """A local instruct model through its chat template (SmolLM2 replies to nothing else).

    The model loads on first use with :func:`kinject_utils.models.load_causal_lm`. With
    ``temperature > 0`` it samples (``torch.manual_seed(seed)`` first, so a seed gives the same
    text every time on the same machine); with ``temperature == 0`` it decodes greedily (and
    retries with other seeds give the same reply, so keep a temperature for retries to help).

    The generation budget is ``min(max_new_tokens, ceil(length_ratio x doc tokens) x n + 48)``:
    enough for ``n`` paraphrases of similar length plus JSON punctuation, never more than the
    cap. SmolLM2-135M (bf16, one torch thread) wrote ~24 tokens/s here: ~6 s per request on a
    fictional news story, ~23 s on a ~450-token encyclopedia entry. On an oversubscribed CPU
    (other processes busy) two torch threads were ~50x slower than one
    (``torch.set_num_threads(1)`` or ``OMP_NUM_THREADS=1`` helps there).

    Args:
        model_name: registry name, local folder or hub id of an instruct (chat) model.
        dtype: ``bfloat16`` (faster on AMX CPUs and GPUs) or ``float32``.
        device: ``cpu``, ``cuda`` or ``auto``.
        max_new_tokens: hard cap on generated tokens per request.
        temperature: sampling temperature; 0 = greedy.
        top_p: nucleus sampling mass.
        length_ratio: expected paraphrase length relative to the document, in tokens.
    """

    name = "local"
    default_per_call = 1  # small models manage one paraphrase per reply at best

    def __init__(self, model_name: str = "smollm2-135m", *, dtype: str = "bfloat16", device: str = "cpu",
                 max_new_tokens: int = 512, temperature: float = 0.7, top_p: float = 0.9,
                 length_ratio: float = 1.5) -> None:
        super().__init__()
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        from .models import get_spec

        spec = get_spec(model_name)
        if spec is not None and (spec.kind != "lm" or not spec.instruct):
            raise ValueError(f"'{model_name}' is not an instruct (chat) model, so it cannot follow the "
                             "paraphrase prompt. Use 'smollm2-135m' (embedded) or an instruct model's "
                             "folder or hub id.")
        self.model = model_name
        self.dtype, self.device = dtype, device
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.length_ratio = length_ratio
        self._lm: Any = None
        self._tok: Any = None

    def __repr__(self) -> str:
        return (f"LocalChatBackend(model_name={self.model!r}, dtype={self.dtype!r}, device={self.device!r}, "
                f"max_new_tokens={self.max_new_tokens}, temperature={self.temperature}, top_p={self.top_p})")

    def cache_identity(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "length_ratio": self.length_ratio}

    def _load(self) -> None:
        if self._lm is not None:
            return
        from .models import load_causal_lm

        self._lm, self._tok = load_causal_lm(self.model, dtype=self.dtype, device=self.device)
        if not getattr(self._tok, "chat_template", None):
            raise ValueError(f"'{self.model}' has no chat template, so it is not an instruct model; "
                             "use 'smollm2-135m' or another instruct model.")

    def max_tokens_for(self, text: str, n: int) -> int:
        self._load()
        n_doc = len(self._tok(text, add_special_tokens=False)["input_ids"])
        return int(min(self.max_new_tokens, math.ceil(self.length_ratio * n_doc) * n + 48))

    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> Any:
        """Token ids of ``messages`` through the chat template, ending with the assistant turn."""
        self._load()
        return self._tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                             return_dict=True)

    def complete(self, messages: list[dict[str, str]], seed: int, max_tokens: int | None = None) -> str:
        import torch

        enc = self.chat_prompt_ids(messages)
        dev = next(self._lm.parameters()).device
        enc = {k: v.to(dev) for k, v in enc.items()}
        sample = self.temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": int(max_tokens or self.max_new_tokens), "do_sample": sample,
                                  "pad_token_id": self._tok.pad_token_id}
        if sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        torch.manual_seed(int(seed))
        self.counters["requests"] += 1
        with torch.no_grad():
            out = self._lm.generate(**enc, **kwargs)
        return self._tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


class OpenAICompatibleBackend(ChatBackend):
    """Any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, Ollama, llama.cpp, hosted APIs).

    The API key is read from the environment variable named ``api_key_env`` at each request
    (no key set: no ``Authorization`` header, which local servers accept); it is never kept on
    the object. Timeouts, connection errors, HTTP 429/5xx and bodies that are not a chat
    completion are retried up to ``max_retries`` times with exponential backoff
    (``backoff_s x 2**attempt``), then raise :class:`ParaphraseBackendError`; other HTTP errors
    (400, 401, 404, ...) raise at once. Every request sends ``seed`` (servers that ignore it
    still work).

    Args:
        base_url: the API root, e.g. ``http://localhost:8000/v1`` (``/chat/completions`` is appended).
        model: the model id the server knows.
        api_key_env: NAME of the environment variable holding the key (never the key itself).
        timeout: seconds to wait for one response.
        max_retries: extra attempts after the first for retryable failures.
        backoff_s: first backoff pause in seconds.
        temperature: sampling temperature sent to the server.
        max_tokens: ``max_tokens`` sent to the server (``None``: not sent).
    """

    name = "openai"
    default_per_call = 10  # the paper asked GPT-4 for all 10 in one reply

    _RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
                 max_retries: int = 3, backoff_s: float = 1.0, temperature: float = 0.7,
                 max_tokens: int | None = None) -> None:
        super().__init__()
        if not isinstance(base_url, str) or not re.match(r"^https?://", base_url):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r} "
                             "(e.g. 'http://localhost:8000/v1')")
        if not model:
            raise ValueError("model must name the model id the server serves (e.g. 'mistral-7b-instruct')")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env or ""):
            raise ValueError(f"api_key_env must be the NAME of an environment variable (like "
                             f"'OPENAI_API_KEY'), not a key; got a value of length {len(api_key_env or '')}")
        if timeout <= 0 or max_retries < 0 or backoff_s < 0:
            raise ValueError("need timeout > 0, max_retries >= 0 and backoff_s >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout, self.max_retries, self.backoff_s = float(timeout), int(max_retries), float(backoff_s)
        self.temperature, self.max_tokens = temperature, max_tokens

    def __repr__(self) -> str:
        return (f"OpenAICompatibleBackend(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r}, timeout={self.timeout}, max_retries={self.max_retries})")

    def cache_identity(self) -> dict[str, Any]:
        # base_url is left out on purpose: the same model served elsewhere gives the same text.
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.api_key_env, "")
        return text.replace(key, "***") if key else text

    def _request_once(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - user-chosen URL
            return resp.read().decode("utf-8", errors="replace")

    def complete(self, messages: list[dict[str, str]], seed: int, max_tokens: int | None = None) -> str:
        payload: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature,
                                   "seed": int(seed)}
        if (max_tokens or self.max_tokens) is not None:
            payload["max_tokens"] = int(max_tokens or self.max_tokens)
        body = json.dumps(payload).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.counters["retries"] += 1
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            self.counters["requests"] += 1
            try:
                text = self._request_once(body)
            except urllib.error.HTTPError as exc:
                detail = self._scrub(exc.read().decode("utf-8", errors="replace")[:300])
                if exc.code in self._RETRY_STATUS:
                    self.counters["server_errors"] += 1
                    last = f"HTTP {exc.code} {exc.reason}: {detail}"
                    continue
                hint = (f" Check the key in the environment variable {self.api_key_env} (it is "
                        f"{'set' if os.environ.get(self.api_key_env) else 'NOT set'})."
                        if exc.code in (401, 403) else
                        " Check base_url (it should end in /v1) and the model id." if exc.code == 404 else "")
                raise ParaphraseBackendError(f"{self.url} answered HTTP {exc.code} {exc.reason}: {detail}.{hint}") from None
            except (TimeoutError, socket.timeout):
                self.counters["timeouts"] += 1
                last = f"no response within timeout={self.timeout}s"
                continue
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                    self.counters["timeouts"] += 1
                    last = f"no response within timeout={self.timeout}s"
                else:
                    last = f"connection failed: {exc.reason}"
                continue
            except (OSError, http.client.HTTPException) as exc:  # reset, closed or cut mid-response
                last = f"connection failed: {type(exc).__name__}: {exc}"
                continue
            try:
                content = json.loads(text)["choices"][0]["message"]["content"]
                if not isinstance(content, str):
                    raise TypeError("content is not a string")
                return content
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
                self.counters["bad_bodies"] += 1
                last = f"response is not a chat completion ({type(exc).__name__}): {self._scrub(text[:200])!r}"
                continue
        raise ParaphraseBackendError(
            f"{self.url} failed {self.max_retries + 1} times; last: {last}. Check that the server is up "
            f"and serves model {self.model!r}; raise timeout= or max_retries= for a slow server.")


class GeneratorRewordingsBackend(ParaphraseBackend):
    """The rewordings a task ships with (``task.paraphrases``), for fully offline runs.

    The fictional news generator writes its own template rewordings; fictional-knowledge ships
    9 paraphrases for entries 0-39. Documents without rewordings get none. Nothing to cache
    and nothing to retry: asking again gives the same list.
    """

    name = "generator"
    cacheable = False
    deterministic = True

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.model = f"rewordings:{task.name}"
        self._rewordings = {k: list(v) for k, v in task.paraphrases.items()}

    def __repr__(self) -> str:
        return f"GeneratorRewordingsBackend(model={self.model!r}, n_docs={len(self._rewordings)})"

    def paraphrase(self, doc: Document, n: int, seed: int) -> Reply:
        self.counters["requests"] += 1
        return Reply(self._rewordings.get(doc.doc_id, [])[:n], "", "generator")


def make_backend(kind: str, *, task: Task | None = None, model: str = "smollm2-135m", base_url: str = "",
                 api_key_env: str = "OPENAI_API_KEY", **kwargs: Any) -> ParaphraseBackend:
    """Build a backend from notebook parameters.

    Args:
        kind: ``"generator"`` (needs ``task``), ``"local"`` (``model``: an instruct model) or
            ``"openai"`` (``base_url``, ``model``, ``api_key_env``).
        kwargs: passed to the backend's constructor (``max_new_tokens``, ``timeout``, ...).
    """
    kind = (kind or "").strip().lower()
    if kind == "generator":
        if task is None:
            raise ValueError("the generator backend needs the task (its rewordings live in task.paraphrases)")
        return GeneratorRewordingsBackend(task)
    if kind == "local":
        return LocalChatBackend(model, **kwargs)
    if kind == "openai":
        return OpenAICompatibleBackend(base_url, model, api_key_env=api_key_env, **kwargs)
    raise ValueError(f"unknown paraphrase backend {kind!r}; use 'generator', 'local' or 'openai'")


# --------------------------------------------------------------------------------------------
# the cached, checked loop over a task
# --------------------------------------------------------------------------------------------
def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")[:80] or "model"


def _cache_file(cache_dir: Path, backend: ParaphraseBackend) -> Path:
    return cache_dir / f"{backend.name}__{_slug(backend.model)}.jsonl"


def _load_cache(path: Path) -> dict[str, dict]:
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
            print(f"[kinject] {path}: dropped a last line cut off by an interrupted write")
    return {row["key"]: row for row in read_jsonl(path, tolerate_torn_tail=True) if "key" in row}


def paraphrase_task(task: Task, backend: ParaphraseBackend, n: int = 10, seed: int = 0,
                    cache_dir: str | os.PathLike | None = None, progress: bool = True, *,
                    doc_ids: Sequence[str] | None = None, per_call: int | None = None, max_retries: int = 3,
                    check_facts: bool = True, min_fact_recall: float = 1.0, min_length_ratio: float = 0.25,
                    scope: str = "all") -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Up to ``n`` checked paraphrases of every document of ``task`` (resumable; see module docstring).

    Args:
        task: the task; its questions' answers drive the fact check.
        backend: a :class:`ParaphraseBackend`.
        n: paraphrases wanted per document (the paper: 10).
        seed: base seed; request ``i`` of a document uses ``seed + i``.
        cache_dir: folder of the JSONL reply cache (``None``: no cache).
        progress: show a tqdm bar.
        doc_ids: only these documents (default: all, in knowledge-base order).
        per_call: paraphrases asked for per request (default: the backend's ``default_per_call``).
        max_retries: requests per document beyond the ``ceil(n / per_call)`` needed.
        check_facts: reject paraphrases that lose answer strings (:func:`required_facts`).
        min_fact_recall: with ``check_facts``, the fraction of a document's answer strings a
            paraphrase must keep (1.0: all of them, the strict rule).
        min_length_ratio: reject paraphrases shorter than this fraction of the document.
        scope: label for the stats row (``"all"``, ``"sample"``).

    Returns:
        ``(paraphrases, stats)``: doc_id -> accepted paraphrases (at most ``n``; possibly fewer),
        and a dict with the :data:`STATS_COLUMNS` plus ``per_doc``: per document its counts, the
        answer strings required and the rejected candidates as ``(reason, text)``.

    Raises:
        ValueError: bad settings or unknown ``doc_ids``.
        ParaphraseBackendError: a backend request failed for good; what was done is cached.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (paraphrases per document) must be an integer >= 1, got {n!r}")
    per_call = int(per_call or backend.default_per_call)
    if per_call < 1 or max_retries < 0 or not 0 <= min_length_ratio < 1 or not 0 <= min_fact_recall <= 1:
        raise ValueError(f"need per_call >= 1, max_retries >= 0, 0 <= min_length_ratio < 1 and "
                         f"0 <= min_fact_recall <= 1; got {per_call}, {max_retries}, {min_length_ratio}, "
                         f"{min_fact_recall}")
    by_id = task.doc_by_id()
    if doc_ids is None:
        docs = list(task.docs)
    else:
        unknown = [d for d in doc_ids if d not in by_id]
        if unknown:
            raise ValueError(f"doc_ids not in task {task.name!r}: {unknown[:5]}")
        docs = [by_id[d] for d in doc_ids]
    facts = required_facts(task) if check_facts else {}
    use_cache = cache_dir is not None and backend.cacheable
    cache_path = _cache_file(Path(cache_dir), backend) if use_cache else None
    cache = _load_cache(cache_path) if cache_path else {}
    max_calls = 1 if backend.deterministic else math.ceil(n / per_call) + max_retries
    counters0 = dict(backend.counters)

    from tqdm.auto import tqdm

    t_wall = time.time()
    out: dict[str, list[str]] = {}
    per_doc = []
    tot = {"calls": 0, "cached": 0, "parse_failures": 0, "short": 0, "seconds": 0.0, "candidates": 0}
    recalls: list[float] = []
    rejected = {"missing_fact": 0, "duplicate": 0, "too_short": 0, "empty": 0}
    bar = tqdm(docs, desc=f"paraphrase {task.name} [{backend.name}]", unit="doc", disable=not progress)
    for doc in bar:
        accepted: list[str] = []
        seen = {normalise(doc.text)}
        doc_facts = facts.get(doc.doc_id, [])
        calls = 0
        doc_rejected: list[tuple[str, str]] = []
        while len(accepted) < n and calls < max_calls:
            k = min(per_call, n - len(accepted))
            call_seed = seed + calls
            key = content_hash(_CACHE_VERSION, doc.text, backend.name, backend.model, backend.cache_identity(),
                               PARAPHRASE_PROMPT, k, call_seed)
            calls += 1
            if key in cache:
                row = cache[key]
                tot["cached"] += 1
                if isinstance(backend, ChatBackend) and row.get("raw"):
                    # re-parse what the model wrote: parser fixes apply without regenerating
                    found, how = parse_paraphrases(row["raw"], k)
                    row = {**row, "paraphrases": found, "how": how}
            else:
                t0 = time.perf_counter()
                reply = backend.paraphrase(doc, k, call_seed)
                row = {"key": key, "doc_id": doc.doc_id, "n_requested": k, "seed": call_seed,
                       "paraphrases": list(reply.paraphrases), "how": reply.how, "raw": reply.raw,
                       "seconds": round(time.perf_counter() - t0, 6), "backend": backend.name,
                       "model": backend.model, "prompt_id": PROMPT_ID}
                if cache_path is not None:
                    append_jsonl(cache_path, row)  # flushed + fsynced: survives a kill right after
                    cache[key] = row
            tot["calls"] += 1
            tot["seconds"] += float(row.get("seconds", 0.0))
            # only the k asked for count: a small model repeating one line 6 times is 1 candidate
            cands = [p for p in row["paraphrases"] if isinstance(p, str)][:k]
            if not cands and row.get("how") != "generator":  # the model wrote nothing usable
                tot["parse_failures"] += 1
            elif len(cands) < k:
                tot["short"] += 1
            for p in cands:
                tot["candidates"] += 1
                r = fact_recall(p, doc_facts)
                if r is not None:
                    recalls.append(r)
                why = check_paraphrase(p, doc.text, doc_facts, seen, min_length_ratio, min_fact_recall)
                if why is None:
                    accepted.append(p.strip())
                    seen.add(normalise(p))
                else:
                    rejected[why] += 1
                    doc_rejected.append((why, p))
        out[doc.doc_id] = accepted
        per_doc.append({"doc_id": doc.doc_id, "n_accepted": len(accepted), "n_rejected": len(doc_rejected),
                        "rejected": doc_rejected, "n_calls": calls, "facts": doc_facts})
        if progress:
            # refresh=False: redraw at tqdm's own pace (papermill logs every redraw as a line)
            bar.set_postfix(ok=sum(len(v) for v in out.values()), rejected=sum(rejected.values()), refresh=False)
    bar.close()

    n_acc = sum(len(v) for v in out.values())
    n_rej = sum(rejected.values())
    secs = tot["seconds"]
    stats = {
        "task": task.name, "backend": backend.name, "model": backend.model, "scope": scope,
        "n_docs": len(docs), "n_requested": n * len(docs), "n_accepted": n_acc, "n_rejected": n_rej,
        # acceptance: of the candidates the backend produced, the fraction that passed the checks
        "acceptance_rate": round(n_acc / (n_acc + n_rej), 4) if n_acc + n_rej else float("nan"),
        # fill: of the paraphrases asked for, the fraction obtained
        "fill_rate": round(n_acc / (n * len(docs)), 4) if docs else float("nan"),
        # throughput over backend time as measured when each reply was made (cached replies keep
        # their original timing, so a re-run reports the same figure)
        # (a lookup backend such as the generator's rewordings has no meaningful throughput: NaN)
        "paraphrases_per_min": round(60.0 * n_acc / secs, 2) if secs > 1e-3 and backend.name != "generator"
        else float("nan"),
        "seconds": round(secs, 3), "n_calls": tot["calls"], "n_cached_calls": tot["cached"],
        "n_parse_failures": tot["parse_failures"], "n_short_replies": tot["short"],
        "n_retries": backend.counters.get("retries", 0) - counters0.get("retries", 0),
        # mean fraction of answer strings kept, over every candidate of a document with answers
        "mean_fact_recall": round(sum(recalls) / len(recalls), 4) if recalls else float("nan"),
        "min_fact_recall": min_fact_recall if check_facts else 0.0,
        **{f"rejected_{k}": v for k, v in rejected.items()},
        "wall_seconds": round(time.time() - t_wall, 3),
        "per_doc": per_doc,
    }
    return out, stats


# --------------------------------------------------------------------------------------------
# output files
# --------------------------------------------------------------------------------------------
def write_paraphrases(results_dir: str | os.PathLike, task_name: str, paraphrases: dict[str, list[str]],
                      backend: ParaphraseBackend) -> Path:
    """Write ``{results_dir}/02_paraphrases/<task>.jsonl`` atomically.

    One row per document, in the order of ``paraphrases``:
    ``{"doc_id", "paraphrases": [...], "backend", "model"}``. A document with no accepted
    paraphrase gets an empty list (so readers see it was tried).
    """
    path = Path(results_dir) / "02_paraphrases" / f"{task_name}.jsonl"
    return write_jsonl(path, [{"doc_id": d, "paraphrases": list(p), "backend": backend.name,
                               "model": backend.model} for d, p in paraphrases.items()])


def read_paraphrases(results_dir: str | os.PathLike, task_name: str) -> dict[str, list[str]]:
    """Read what :func:`write_paraphrases` wrote: doc_id -> paraphrases (notebook 03 uses the first N)."""
    path = Path(results_dir) / "02_paraphrases" / f"{task_name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run notebook 02 for task {task_name!r} first")
    return {row["doc_id"]: list(row.get("paraphrases", [])) for row in read_jsonl(path)}


def write_stats(results_dir: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    """Merge stats rows into ``{results_dir}/02_paraphrase_stats.csv`` (atomically).

    A row replaces an earlier one with the same (task, backend, model, scope); other rows stay.
    """
    path = Path(results_dir) / "02_paraphrase_stats.csv"
    key = lambda r: (str(r["task"]), str(r["backend"]), str(r["model"]), str(r.get("scope", "all")))  # noqa: E731
    merged: dict[tuple, dict] = {}
    if path.exists():
        with open(path, newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                merged[key(r)] = r
    for r in rows:
        merged[key(r)] = {c: r.get(c, "") for c in STATS_COLUMNS}
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=STATS_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for k in sorted(merged):
        w.writerow(merged[k])
    return atomic_write_text(path, buf.getvalue())


def fact_recall_curve(task: Task, candidates: dict[str, list[str]],
                      thresholds: Sequence[float] = (1.0, 0.8, 0.5, 0.0)) -> list[dict[str, Any]]:
    """Share of candidate paraphrases that would pass the fact check at each ``min_fact_recall``.

    Shows how strict the check is for a task (e.g. its shipped rewordings); documents without
    answer strings to keep are left out.

    Example:
        >>> from kinject_utils.tasks import Question
        >>> t = Task("t", [Question("q", "Who?", ["Ann Lee", "Bo"], 0, ["d"])], [Document("d", "", "Ann Lee won.")])
        >>> fact_recall_curve(t, {"d": ["Ann Lee took it.", "She won."]}, (1.0, 0.0))
        [{'min_fact_recall': 1.0, 'candidates': 2, 'would_pass': 1, 'share': 0.5}, {'min_fact_recall': 0.0, 'candidates': 2, 'would_pass': 2, 'share': 1.0}]
    """
    facts = required_facts(task)
    recalls = [fact_recall(p, facts[d]) for d, ps in candidates.items() if d in facts for p in ps]
    return [{"min_fact_recall": t, "candidates": len(recalls), "would_pass": sum(r >= t - 1e-9 for r in recalls),
             "share": round(sum(r >= t - 1e-9 for r in recalls) / len(recalls), 4) if recalls else float("nan")}
            for t in thresholds]


def coverage_table(paraphrases: dict[str, list[str]], n_max: int = 10) -> list[dict[str, Any]]:
    """How many documents have at least N paraphrases, for N = 0..n_max (what FT-par(N) can use).

    Example:
        >>> coverage_table({"a": ["x", "y"], "b": []}, 2)
        [{'N': 0, 'docs': 2, 'share': 1.0}, {'N': 1, 'docs': 1, 'share': 0.5}, {'N': 2, 'docs': 1, 'share': 0.5}]
    """
    total = len(paraphrases)
    return [{"N": k, "docs": sum(len(v) >= k for v in paraphrases.values()),
             "share": round(sum(len(v) >= k for v in paraphrases.values()) / total, 4) if total else float("nan")}
            for k in range(n_max + 1)]
