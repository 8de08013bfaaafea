"""Paraphrase augmentation (notebook 02): backends, parsing, a fact check and a resumable cache.

The paper fine-tunes on up to 10 paraphrases of every knowledge-base document (FT-par) and finds
accuracy rising with their number. This package makes them, behind one interface::

    backend = LocalChatBackend("smollm2-135m")                        # local instruct model
    backend = OpenAICompatibleBackend("http://localhost:8000/v1", "mistral-7b-instruct")
    backend = GeneratorRewordingsBackend(task)                        # the task's own rewordings
    paraphrases, stats = paraphrase_task(task, backend, n=10, seed=0,
                                         cache_dir=layout.paraphrase_cache_dir(results))

Per document, :func:`paraphrase_task` asks for the missing paraphrases (at most ``per_call`` per
request, seed ``seed + call``), checks each candidate (:func:`check_paraphrase`: not empty, not a
copy, long enough, still holding the answers of the questions citing the document) and asks again
until ``n`` are accepted or ``ceil(n / per_call) + max_retries`` requests were made.

Modules: prompt (the paper's prompt), parse (the one JSON-repair parser), check (the fact check),
base / local / openai_compat / generator (the backends), budget (the backend per task, requests and
expected minutes), cache (the reply cache), run (the loop, output files, statistics).

The API key of an HTTP endpoint is read from the environment variable *named* by
``api_key_env`` (checked by :func:`kinject_utils.secrets.check_env_name`, re-exported here); it is
never stored on the backend, and every reply, cache entry, error and log line goes through
:func:`kinject_utils.secrets.redact` (the key whole or cut, any ``Bearer``/``sk-`` token).
"""
from ..secrets import check_env_name, redact
from .base import ChatBackend, ParaphraseBackend, ParaphraseBackendError, Reply
from .budget import (
                  BACKEND_CHOICES,
                  LOCAL_SECONDS_PER_REQUEST,
                  announce_budget,
                  backend_for,
                  coverage_note,
                  format_budget,
                  paraphrase_budget,
)
from .cache import cache_file
from .check import (
                  check_paraphrase,
                  fact_recall,
                  fact_recall_curve,
                  normalise,
                  required_facts,
)
from .generator import GeneratorRewordingsBackend
from .local import LocalChatBackend
from .openai_compat import OpenAICompatibleBackend
from .parse import parse_paraphrases
from .prompt import PARAPHRASE_PROMPT, PROMPT_ID, render_prompt
from .run import (
                  STATS_COLUMNS,
                  coverage_table,
                  make_backend,
                  paraphrase_task,
                  read_paraphrases,
                  write_paraphrases,
                  write_stats,
)

__all__ = [
                  "BACKEND_CHOICES",
                  "LOCAL_SECONDS_PER_REQUEST",
                  "backend_for",
                  "coverage_note",
                  "announce_budget",
                  "format_budget",
                  "paraphrase_budget",
                  "PARAPHRASE_PROMPT",
                  "PROMPT_ID",
                  "STATS_COLUMNS",
                  "ChatBackend",
                  "GeneratorRewordingsBackend",
                  "LocalChatBackend",
                  "OpenAICompatibleBackend",
                  "ParaphraseBackend",
                  "ParaphraseBackendError",
                  "Reply",
                  "cache_file",
                  "check_env_name",
                  "check_paraphrase",
                  "coverage_table",
                  "fact_recall",
                  "fact_recall_curve",
                  "make_backend",
                  "normalise",
                  "paraphrase_task",
                  "parse_paraphrases",
                  "read_paraphrases",
                  "redact",
                  "render_prompt",
                  "required_facts",
                  "write_paraphrases",
                  "write_stats",
]
