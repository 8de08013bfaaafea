"""Notebook 02's budget: which backend serves each task, how many requests, how many minutes.

``PARAPHRASE_BACKEND: auto`` picks per task: the generator's rewordings where the task ships them
(the fictional news generator; fictional-knowledge's entries 0-39), the local instruct model
otherwise (a bring-your-own task). :func:`backend_for` returns the choice, or ``None`` with a
message naming the fix when the chosen backend cannot serve the task (``generator`` for a task
that ships no rewordings).

:func:`paraphrase_budget` gives, before anything is generated, the requests a task costs
(documents x paraphrases; a local model asks for one paraphrase per request, a server for all of
a document's in one, and at most ``max_retries`` more per document when some are rejected) and
the expected minutes for the local model from :data:`LOCAL_SECONDS_PER_REQUEST`, measured on
this project's machine. A reply grows with its document, so the figure is scaled by the
document's generation budget (its tokens x 1.5 + 48, capped at ``max_new_tokens``; tokens
estimated as words x 1.3) relative to the measured documents'.
"""
from __future__ import annotations

import math
from typing import Any

from ..log import get_logger
from ..tasks import Task
from .local import LocalChatBackend
from .openai_compat import OpenAICompatibleBackend

__all__ = ["BACKEND_CHOICES", "LOCAL_SECONDS_PER_REQUEST", "backend_for", "coverage_note", "format_budget",
           "paraphrase_budget"]

BACKEND_CHOICES = ("auto", "generator", "local", "openai")

#: model -> (seconds per one-paraphrase request, generation budget in tokens of the measured documents, where).
#: SmolLM2-135M-Instruct through :class:`LocalChatBackend` (fp32, one torch thread, max_new_tokens 256) on the
#: four examples/byo documents (125-152 tokens, reply budgets 236-256 tokens, mean 248), seeds 0-2 each: 12
#: requests, mean 12.7 s (4.9-32.1 s), replies of 43-249 tokens (8.0 generated tokens/s). The machine was shared
#: (load average ~4 on its 2 cores); a quiet machine is faster.
LOCAL_SECONDS_PER_REQUEST: dict[str, tuple[float, int, str]] = {
    "smollm2-135m": (12.7, 248, "measured 2026-11-23 on a 2-core AMD EPYC (AVX2, no AMX), fp32, 1 torch thread, "
                                "shared machine (load ~4)"),
}


def backend_for(kind: str, task: Task) -> tuple[str | None, str]:
    """The backend that paraphrases ``task`` for ``PARAPHRASE_BACKEND = kind``, and a line saying why.

    Returns:
        ``(backend, why)``; ``backend`` is ``None`` when ``kind`` cannot serve the task, and ``why`` then
        names the fix.

    Raises:
        ValueError: ``kind`` is not one of :data:`BACKEND_CHOICES`.

    Example:
        >>> backend_for("auto", Task("custom", [], []))[0]
        'local'
    """
    k = (kind or "").strip().lower()
    if k not in BACKEND_CHOICES:
        raise ValueError(f"PARAPHRASE_BACKEND must be one of {', '.join(BACKEND_CHOICES)}, got {kind!r}")
    has = bool(task.paraphrases)
    if k == "auto":
        return ("generator", "auto: the task ships its own rewordings") if has else \
            ("local", "auto: the task ships no rewordings, so the local instruct model writes them")
    if k == "generator" and not has:
        return None, (f"task {task.name!r} gets no paraphrases, so no FT-par: the generator backend only has the "
                      "rewordings the fictional tasks ship with (fictional_news, fictional_knowledge), and this "
                      "task ships none. Fix: set PARAPHRASE_BACKEND: local (the embedded SmolLM2 instruct model, "
                      "offline) or openai (an OpenAI-compatible server, OPENAI_BASE_URL), or auto (local for such "
                      "tasks).")
    return k, f"{k}: as configured"


def paraphrase_budget(task: Task, backend: str, n: int, max_retries: int, model: str = "smollm2-135m",
                      max_new_tokens: int = 256, per_call: int | None = None) -> dict[str, Any]:
    """Requests and expected minutes to write ``n`` paraphrases of every document of ``task``.

    Returns:
        ``task``, ``backend``, ``model``, ``docs``, ``paraphrases`` (docs x n), ``requests_min`` (every
        paraphrase accepted at once), ``requests_max`` (every retry used), ``minutes_min``,
        ``minutes_max`` (``None`` when not measured for this backend/model) and ``source``.

    Example:
        >>> from kinject_utils.tasks import Document
        >>> b = paraphrase_budget(Task("t", [], [Document("d", "", "word " * 100)]), "local", 2, 1)
        >>> b["requests_min"], b["requests_max"], b["minutes_min"] > 0
        (2, 3, True)
    """
    docs = len(task.docs)
    out: dict[str, Any] = {"task": task.name, "backend": backend, "model": model, "docs": docs,
                           "paraphrases": docs * n, "minutes_min": None, "minutes_max": None}
    if backend == "generator":
        out.update(requests_min=docs, requests_max=docs, minutes_min=0.0, minutes_max=0.0,
                   model=f"rewordings:{task.name}", source="a lookup of the task's own rewordings: instant")
        return out
    if per_call is None:  # what the backend asks for per request (local: 1; openai: all 10 in one reply)
        per_call = (LocalChatBackend if backend == "local" else OpenAICompatibleBackend).default_per_call
    per_doc = math.ceil(n / per_call)
    out.update(requests_min=docs * per_doc, requests_max=docs * (per_doc + max_retries))
    measured = LOCAL_SECONDS_PER_REQUEST.get(model) if backend == "local" else None
    if measured is None:
        out["source"] = ("time depends on the server: not estimated" if backend == "openai"
                         else f"no measured seconds per request for {model!r}: not estimated")
        return out
    secs, ref_budget, where = measured
    per_request = [secs * min(max_new_tokens, math.ceil(1.5 * len(d.text.split()) * 1.3) + 48) / ref_budget
                   for d in task.docs]
    mean = sum(per_request) / docs if docs else 0.0
    out.update(minutes_min=mean * out["requests_min"] / 60, minutes_max=mean * out["requests_max"] / 60,
               source=f"{secs:.1f} s per request at a {ref_budget}-token reply budget ({where}), scaled by each "
                      "document's reply budget")
    return out


def format_budget(b: dict[str, Any]) -> str:
    """One line: ``custom [local smollm2-135m]: 4 documents x 2 paraphrases = 8 ...``."""
    head = (f"{b['task']} [{b['backend']} {b['model']}]: {b['docs']} documents x "
            f"{b['paraphrases'] // max(b['docs'], 1)} paraphrases = {b['paraphrases']} paraphrases, "
            f"{b['requests_min']}-{b['requests_max']} requests")
    if b["minutes_min"] is None:
        return f"{head}; {b['source']}"
    return f"{head}; expected {b['minutes_min']:.1f}-{b['minutes_max']:.1f} min ({b['source']})"


#: a paraphrasing plan longer than this many minutes is also logged as a warning (the runner's terminal shows it)
LONG_PLAN_MINUTES = 2.0


def announce_budget(b: dict[str, Any]) -> str:
    """:func:`format_budget`'s line; a plan expected to take over :data:`LONG_PLAN_MINUTES` is also logged
    as a warning with the ways to shorten it, so a batch run's terminal says why notebook 02 is slow."""
    line = format_budget(b)
    if (b.get("minutes_max") or 0) > LONG_PLAN_MINUTES:
        get_logger("paraphrase").warning(
            "notebook 02 is about to paraphrase: %s. To shorten it: fewer paraphrases (--set 02.N_PARAPHRASES=1), "
            "no retries (--set 02.MAX_RETRIES=0), a faster server (--set 02.PARAPHRASE_BACKEND=openai ...), or "
            "leave 02 out of the run (FT-par then trains on the task's own rewordings, if it ships any).", line)
    return line


def coverage_note(task_name: str, paraphrases: dict[str, list[str]], n: int, min_fact_recall: float) -> str:
    """What FT-par can train on, in one line, with the fix when some document has fewer than ``n``.

    FT-par(N) in notebook 03 trains only when every document has N accepted paraphrases.

    Example:
        >>> coverage_note("custom", {"a": ["x"], "b": []}, 1, 1.0)[:78]
        'custom: 1 of 2 documents have no accepted paraphrase, so notebook 03 trains no'
    """
    fewest = min(map(len, paraphrases.values()), default=0)
    fix = (f"Fix: raise MAX_RETRIES, lower MIN_FACT_RECALL (now {min_fact_recall:g}: the share of each document's "
           "answer strings a paraphrase must keep), or use a stronger model (PARAPHRASE_BACKEND: openai)")
    if fewest >= n:
        return f"{task_name}: every document has {n} accepted paraphrase(s): FT-par(N) can train for N <= {n}"
    if fewest > 0:
        return (f"{task_name}: the fewest accepted paraphrases of a document is {fewest}, so notebook 03 trains "
                f"FT-par(N) only for N <= {fewest}. {fix}")
    none = sum(not v for v in paraphrases.values())
    return (f"{task_name}: {none} of {len(paraphrases)} documents have no accepted paraphrase, so notebook 03 trains "
            f"no FT-par. {fix}")
