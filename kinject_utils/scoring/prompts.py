"""Request building: lm-evaluation-harness's MMLU prompts, string for string.

Templates (the harness's ``lm_eval/tasks/mmlu/{default,continuation}`` task files, 0.4.13)::

    letter  "{description}{shot}\\n\\n...{question.strip()}\\nA. {c0}\\nB. {c1}\\nC. {c2}\\nD. {c3}\\nAnswer:"
            continuations " A" .. " D"
    cloze   "{description}{shot}\\n\\n...Question: {question.strip()}\\nAnswer:"
            continuations " {choice}"

A shot is the same rendering followed by " " + its answer; shots are the first k dev rows of the
subject (the harness's ``first_n`` sampler), each followed by "\\n\\n". Retrieved passages go right
before the test question's rendering, after the description and the shots, followed by "\\n\\n".
"""
from __future__ import annotations

from typing import Any, Sequence

from ..tasks import Question

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Exact strings of lm_eval/tasks/mmlu/default and /continuation (lm-eval 0.4.13).
LETTER_DESCRIPTION = "The following are multiple choice questions (with answers) about {subject}.\n\n"
CLOZE_DESCRIPTION = "The following are questions (with answers) about {subject}.\n\n"
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
CONTEXT_DELIMITER = "\n\n"
STYLES = ("letter", "cloze")


def check_question(q: Any, where: str = "") -> None:
    """Re-validate a question handed in a list (it may have been built or mutated elsewhere)."""
    qid = getattr(q, "id", "?")
    tag = f"question {qid}{where}"
    for attr in ("id", "question", "choices", "answer"):
        if not hasattr(q, attr):
            raise ValueError(f"{tag}: expected a kinject_utils.tasks.Question (missing {attr!r})")
    if not isinstance(q.question, str) or not q.question.strip():
        raise ValueError(f"{tag}: empty question text; every question needs text to score")
    if not isinstance(q.choices, (list, tuple)) or len(q.choices) < 2:
        raise ValueError(f"{tag}: needs at least 2 choices, got {q.choices!r}")
    if any(not isinstance(c, str) or not c.strip() for c in q.choices):
        raise ValueError(f"{tag}: every choice must be a non-empty string, got {q.choices!r}")
    if isinstance(q.answer, bool) or not isinstance(q.answer, int) or not 0 <= q.answer < len(q.choices):
        raise ValueError(f"{tag}: answer {q.answer!r} is not an index into its {len(q.choices)} "
                         f"choices (use 0..{len(q.choices) - 1})")


def check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")


def render_letter(q: Question) -> str:
    """The MMLU default template: question, lettered options, ``Answer:``.

    Example:
        >>> q = Question("q1", " 2+2? ", ["3", "4"], 1)
        >>> render_letter(q)
        '2+2?\\nA. 3\\nB. 4\\nAnswer:'
    """
    if len(q.choices) > len(LETTERS):
        raise ValueError(f"question {q.id}: letter style supports at most {len(LETTERS)} choices, "
                         f"got {len(q.choices)}; use style='cloze'")
    options = "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(q.choices))
    return f"{q.question.strip()}{options}\nAnswer:"


def render_cloze(q: Question) -> str:
    """The mmlu_continuation template: ``Question: {question.strip()}\\nAnswer:``."""
    return f"Question: {q.question.strip()}\nAnswer:"


def _description(style: str, subject: str) -> str:
    if not subject:
        return ""  # no subject (e.g. invented news): the harness would have no description line
    readable = subject.replace("_", " ")
    return (LETTER_DESCRIPTION if style == "letter" else CLOZE_DESCRIPTION).format(subject=readable)


def _target(q: Question, style: str) -> str:
    return LETTERS[q.answer] if style == "letter" else q.choices[q.answer]


def fewshot_prefix(style: str, subject: str = "", fewshot: Sequence[Question] = ()) -> str:
    """The part of every request of a subject that does not depend on the question: the
    description line and the solved examples (what the k-shot prefix cache computes once)."""
    check_style(style)
    render = render_letter if style == "letter" else render_cloze
    parts = [_description(style, subject)]
    for i, ex in enumerate(fewshot):
        check_question(ex, f" (few-shot example {i})")
        parts.append(render(ex) + TARGET_DELIMITER + _target(ex, style) + FEWSHOT_DELIMITER)
    return "".join(parts)


def build_request(q: Question, *, style: str, subject: str = "", fewshot: Sequence[Question] = (),
                  context: str = "") -> tuple[str, list[str]]:
    """Context string and scored continuations for one question (see module docstring).

    Args:
        q: the question.
        style: ``"letter"`` (continuations " A".." D") or ``"cloze"`` (" {option text}").
        subject: e.g. ``"college_biology"``, rendered "college biology" in the description line;
            empty: no description line.
        fewshot: solved examples (the first k dev rows), rendered with their answers.
        context: retrieved passages, already assembled; placed right before the question.

    Returns:
        ``(context, continuations)``, the arguments of the harness's loglikelihood requests.
    """
    check_style(style)
    if not isinstance(context, str):
        raise ValueError(f"context must be a string of assembled passages, got {type(context).__name__}")
    check_question(q)
    render = render_letter if style == "letter" else render_cloze
    parts = [fewshot_prefix(style, subject, fewshot)]
    if context.strip():
        parts.append(context.strip() + CONTEXT_DELIMITER)
    parts.append(render(q))
    labels = LETTERS[: len(q.choices)] if style == "letter" else q.choices
    return "".join(parts), [TARGET_DELIMITER + c for c in labels]


def build_letter_request(q: Question, *, subject: str = "", fewshot: Sequence[Question] = (),
                         context: str = "") -> tuple[str, list[str]]:
    """Letter-style request (MMLU default template).

    Example:
        >>> q = Question("q1", "2+2?", ["3", "4", "5", "6"], 1)
        >>> ctx, conts = build_letter_request(q, subject="elementary_mathematics")
        >>> ctx.splitlines()[0]
        'The following are multiple choice questions (with answers) about elementary mathematics.'
        >>> conts
        [' A', ' B', ' C', ' D']
    """
    return build_request(q, style="letter", subject=subject, fewshot=fewshot, context=context)


def build_cloze_request(q: Question, *, subject: str = "", fewshot: Sequence[Question] = (),
                        context: str = "") -> tuple[str, list[str]]:
    """Cloze-style request (mmlu_continuation): continuations are the options' own text.

    Example:
        >>> q = Question("q1", "2+2?", ["3", "4"], 1)
        >>> build_cloze_request(q)
        ('Question: 2+2?\\nAnswer:', [' 3', ' 4'])
    """
    return build_request(q, style="cloze", subject=subject, fewshot=fewshot, context=context)


def fewshot_pool(dev: Sequence[Question], subject: str) -> list[Question]:
    """Dev rows for a subject, in file order: rows of that subject if any row has a subject."""
    if any(getattr(d, "subject", "") for d in dev):
        return [d for d in dev if getattr(d, "subject", "") == subject]
    return list(dev)
