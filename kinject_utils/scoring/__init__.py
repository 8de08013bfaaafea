"""Log-likelihood multiple-choice scoring, identical to lm-evaluation-harness and faster.

The study's metric is lm-evaluation-harness (0.4.x) log-likelihood accuracy. This package rebuilds
its prompts string for string and its log-likelihoods token for token, then computes them faster.

Modules, one concern each:

    prompts        the harness's MMLU templates (letter and cloze), few-shot block, retrieved context
    encode         ``HFLM``'s token split (``encode_pair``), max length, encoded requests
    shared_prefix  packed rows: context once, every option after it, block masks, boolean head
    prefix_cache   k-shot prefix computed once per subject (KV cache), questions run against it
    probe          whether a loaded model can use those paths (tried once per model class)
    fallback       the harness's full rows, batched: the reference and the fallback
    score          ``score_questions`` / ``score_requests``: who scores what, rows out
    stats          bootstrap intervals, paired test (exact McNemar), Spearman correlation
    lmeval         harness task files on local MMLU CSVs (parity tests, benchmark)

Retrieved context (q~ = b_q || q, "simply prepended to the question"): the passages go right
before the test question's own rendering, after the description and the few-shot block::

    {description}{shots}{context.strip()}\\n\\n{rendered question}

Rows record ``n_ctx_tokens`` (the whole encoded context) and ``n_retrieved_tokens`` (how many of
those the passages added). A question whose options would be truncated is scored the harness's way
(one full row per option), counted and flagged in its row.
"""
from __future__ import annotations

from .encode import encode_pair, resolve_max_length
from .lmeval import write_lmeval_tasks
from .probe import Capabilities, capabilities
from .prompts import (
    CLOZE_DESCRIPTION,
    CONTEXT_DELIMITER,
    FEWSHOT_DELIMITER,
    LETTER_DESCRIPTION,
    LETTERS,
    STYLES,
    TARGET_DELIMITER,
    build_cloze_request,
    build_letter_request,
    build_request,
    fewshot_prefix,
    render_cloze,
    render_letter,
)
from .score import METHODS, score_questions, score_requests
from .stats import bootstrap_ci, paired_test, spearman, summarize

__all__ = [
    "LETTER_DESCRIPTION", "CLOZE_DESCRIPTION", "TARGET_DELIMITER", "FEWSHOT_DELIMITER",
    "CONTEXT_DELIMITER", "STYLES", "METHODS", "LETTERS",
    "render_letter", "render_cloze", "build_letter_request", "build_cloze_request", "build_request",
    "fewshot_prefix", "encode_pair", "resolve_max_length", "score_questions", "score_requests",
    "capabilities", "Capabilities", "summarize", "bootstrap_ci", "paired_test", "spearman",
    "write_lmeval_tasks",
]
