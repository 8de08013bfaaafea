"""Log-likelihood multiple-choice scoring, identical to lm-evaluation-harness and faster.

The study's metric is lm-evaluation-harness (0.4.x) log-likelihood accuracy. This module rebuilds
its prompts string for string and its log-likelihoods token for token, then computes them faster:

Prompts (the harness's MMLU task files, ``lm_eval/tasks/mmlu/{default,continuation}``)::

    letter  "{description}{shot}\\n\\n...{question.strip()}\\nA. {c0}\\nB. {c1}\\nC. {c2}\\nD. {c3}\\nAnswer:"
            continuations " A" .. " D"; description "The following are multiple choice questions
            (with answers) about {subject}.\\n\\n"
    cloze   "{description}{shot}\\n\\n...Question: {question.strip()}\\nAnswer:"
            continuations " {choice}"; description "The following are questions (with answers)
            about {subject}.\\n\\n" (the harness's ``mmlu_<subject>_continuation`` tasks)

    A shot is the same rendering followed by " " + its answer (letter or option text); shots are
    the first k dev rows of the subject (the harness's ``first_n`` sampler), each followed by "\\n\\n".

Retrieved context (q~ = b_q || q, "simply prepended to the question"): the passages go right
before the test question's own rendering, after the description and the few-shot block, separated
from it by "\\n\\n" (few-shot examples carry no passages)::

    {description}{shots}{context.strip()}\\n\\n{rendered question}

Rows record ``n_ctx_tokens`` (the whole encoded context) and ``n_retrieved_tokens`` (how many of
those the passages added: the context encoded with and without them).

Log-likelihoods follow ``HFLM._encode_pair`` / ``_loglikelihood_tokens``: trailing whitespace of
the context moves to the continuation; the context is encoded with the tokenizer's default special
tokens (none if it already starts with the BOS text), the continuation is the tail of the encoding
of context+continuation after ``len(context tokens)``; inputs longer than ``max_length + 1`` lose
tokens from the left. ``acc`` is the argmax of summed log-likelihoods, ``acc_norm`` the argmax after
dividing by the option's character length (ties: the first option, as ``np.argmax``).

Speed (``method="shared_prefix"``): one row per question holds the context once and then every
option's continuation (minus its last token), with a block attention mask so each option sees the
context and itself only, and position ids restarting after the context; sliding-window layers
(Gemma 3) get the window applied in position space. Rows are sorted by length and batched. The
output head runs only at the positions that predict continuation tokens (``logits_to_keep`` as a
boolean mask, so whatever the model's forward applies after its head, e.g. Gemma's final logit
softcapping, is applied). A question whose options would be truncated is scored the harness's way
(one full row per option), counted and flagged in its row. ``method="naive"`` scores every option
with one full forward over the whole vocabulary, as the harness does: the reference for tests.

Statistics: percentile-bootstrap intervals (:func:`bootstrap_ci`, :func:`summarize`) and a paired
comparison of two methods on the same questions (:func:`paired_test`: exact McNemar test plus a
paired bootstrap interval of the accuracy difference).

Reference harness: :func:`write_lmeval_tasks` writes lm-eval task files that run the harness's own
MMLU prompts on local CSVs (used by tests/test_lmeval_parity.py and scripts/bench_scoring.py);
:func:`kinject_utils.data.load_mmlu` reads the same CSVs as questions, every field as text.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Iterable, Sequence

from .tasks import Question

__all__ = [
    "LETTER_DESCRIPTION", "CLOZE_DESCRIPTION", "TARGET_DELIMITER", "FEWSHOT_DELIMITER",
    "CONTEXT_DELIMITER", "STYLES", "METHODS",
    "render_letter", "render_cloze", "build_letter_request", "build_cloze_request", "build_request",
    "encode_pair", "resolve_max_length", "score_questions", "score_requests", "summarize", "bootstrap_ci", "paired_test",
    "write_lmeval_tasks",
]

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Exact strings of lm_eval/tasks/mmlu/default and /continuation (lm-eval 0.4.13).
LETTER_DESCRIPTION = "The following are multiple choice questions (with answers) about {subject}.\n\n"
CLOZE_DESCRIPTION = "The following are questions (with answers) about {subject}.\n\n"
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
CONTEXT_DELIMITER = "\n\n"
STYLES = ("letter", "cloze")
METHODS = ("shared_prefix", "naive")
_DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer give a length
_TOKENIZER_INFINITY = 1000000000000000019884624838656


# --------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------
def _check_question(q: Any, where: str = "") -> None:
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
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if not isinstance(context, str):
        raise ValueError(f"context must be a string of assembled passages, got {type(context).__name__}")
    _check_question(q)
    render = render_letter if style == "letter" else render_cloze
    parts = [_description(style, subject)]
    for i, ex in enumerate(fewshot):
        _check_question(ex, f" (few-shot example {i})")
        parts.append(render(ex) + TARGET_DELIMITER + _target(ex, style) + FEWSHOT_DELIMITER)
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


# --------------------------------------------------------------------------------------------
# tokenisation, exactly as HFLM
# --------------------------------------------------------------------------------------------
def _prefix_token_id(tokenizer: Any) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def _encode_many(tokenizer: Any, strings: list[str]) -> list[list[int]]:
    """``HFLM.tok_encode`` for many strings: default special tokens, none if the string already
    starts with the BOS text."""
    pid = _prefix_token_id(tokenizer)
    bos_str = tokenizer.decode(pid) if pid is not None else None
    out: list[list[int] | None] = [None] * len(strings)
    has_bos = [bool(bos_str) and s.startswith(bos_str) for s in strings]
    plain = [i for i, h in enumerate(has_bos) if not h]
    bare = [i for i, h in enumerate(has_bos) if h]
    for idx, special in ((plain, True), (bare, False)):
        if idx:
            enc = tokenizer([strings[i] for i in idx], add_special_tokens=special)["input_ids"]
            for i, e in zip(idx, enc):
                out[i] = list(e)
    return out  # type: ignore[return-value]


def encode_pair(tokenizer: Any, context: str, continuations: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """Token ids of a context and its continuations, as ``HFLM._encode_pair`` makes them.

    Trailing whitespace of ``context`` moves to the front of every continuation; the context is
    encoded alone; each continuation is what the encoding of context+continuation holds after the
    context's length (so a token that merges across the boundary stays with the continuation).

    Raises:
        ValueError: empty context or a continuation that encodes to no tokens.
    """
    if not isinstance(context, str) or not context:
        raise ValueError("context is empty; every request needs a non-empty context")
    n_spaces = len(context) - len(context.rstrip())
    ws, ctx = (context[-n_spaces:], context[:-n_spaces]) if n_spaces else ("", context)
    if not ctx:
        raise ValueError("context is only whitespace; every request needs a non-empty context")
    encs = _encode_many(tokenizer, [ctx] + [ctx + ws + c for c in continuations])
    ctx_enc, conts = encs[0], []
    for c, whole in zip(continuations, encs[1:]):
        cont = whole[len(ctx_enc):]
        if not cont:
            raise ValueError(f"continuation {c!r} encodes to no tokens after the context; "
                             "an option must contain text")
        conts.append(cont)
    return ctx_enc, conts


def resolve_max_length(model: Any, tokenizer: Any = None) -> int:
    """The harness's max length: ``n_positions``/``max_position_embeddings``/``n_ctx`` of the
    (text) config, else the tokenizer's ``model_max_length``, else 2048."""
    config = getattr(model, "config", None)
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    mml = getattr(tokenizer, "model_max_length", None)
    if mml is not None and mml != _TOKENIZER_INFINITY:
        return int(mml)
    return _DEFAULT_MAX_LENGTH


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Item:
    """One encoded request (a context and its continuations) and, after scoring, its results."""

    context: str
    continuations: list[str]
    ctx_enc: list[int]
    cont_encs: list[list[int]]
    n_truncated: int
    logliks: list[float] = dataclasses.field(default_factory=list)
    greedy: list[bool] = dataclasses.field(default_factory=list)


def _encode_item(tokenizer: Any, context: str, continuations: Sequence[str], max_length: int,
                 what: str) -> _Item:
    if not isinstance(continuations, (list, tuple)) or len(continuations) < 1:
        raise ValueError(f"{what}: needs a list of continuations, got {continuations!r}")
    if any(not isinstance(c, str) or not c for c in continuations):
        raise ValueError(f"{what}: every continuation must be a non-empty string, got {continuations!r}")
    try:
        ctx_enc, cont_encs = encode_pair(tokenizer, context, continuations)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    for c, ce in zip(continuations, cont_encs):
        if len(ce) > max_length:
            raise ValueError(f"{what}: continuation {c!r} is {len(ce)} tokens, longer than "
                             f"max_length={max_length}; it cannot be scored")
    over = max(len(ctx_enc) + len(ce) - (max_length + 1) for ce in cont_encs)
    return _Item(context, list(continuations), ctx_enc, cont_encs, max(over, 0))


def _fewshot_pool(dev: Sequence[Question], subject: str) -> list[Question]:
    """Dev rows for a subject, in file order: rows of that subject if any row has a subject."""
    if any(getattr(d, "subject", "") for d in dev):
        return [d for d in dev if getattr(d, "subject", "") == subject]
    return list(dev)


def _prepare(tokenizer: Any, questions: Sequence[Question], style: str, shots: int,
             dev: Sequence[Question], subject: str | None, contexts: Sequence[str] | None,
             max_length: int) -> tuple[list[_Item], list[int]]:
    """Encoded requests for the questions, and the tokens each retrieved context added."""
    items, n_retrieved = [], []
    for i, q in enumerate(questions):
        _check_question(q, f" (questions[{i}])")
        subj = subject if subject is not None else getattr(q, "subject", "")
        fs: list[Question] = []
        if shots:
            pool = _fewshot_pool(dev, subj)
            if len(pool) < shots:
                raise ValueError(f"question {q.id}: {shots}-shot needs {shots} dev rows for subject "
                                 f"{subj!r}, found {len(pool)}; pass dev=task.dev or use shots=0")
            fs = pool[:shots]
        ctx_text = contexts[i] if contexts is not None else ""
        context, conts = build_request(q, style=style, subject=subj, fewshot=fs, context=ctx_text)
        item = _encode_item(tokenizer, context, conts, max_length, f"question {q.id}")
        n_ret = 0
        if ctx_text.strip():
            bare, _ = build_request(q, style=style, subject=subj, fewshot=fs, context="")
            n_ret = len(item.ctx_enc) - len(encode_pair(tokenizer, bare, conts[:1])[0])
        items.append(item)
        n_retrieved.append(n_ret)
    return items, n_retrieved


def _model_dtype(model: Any) -> Any:
    emb = model.get_input_embeddings()
    return emb.weight.dtype if emb.weight.dtype.is_floating_point else None


def _device(model: Any) -> Any:
    return model.get_input_embeddings().weight.device


def _mask_plan(model: Any) -> tuple[str, int | None] | None:
    """How to hand a custom mask to this model: ``("single", window)``, ``("dict", window)``, or
    ``None`` when the shared-prefix path does not know the architecture's masking."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    attn = getattr(cfg, "_attn_implementation", None) or "sdpa"
    if attn not in ("sdpa", "eager") or getattr(cfg, "use_bidirectional_attention", False):
        return None
    types = set(getattr(cfg, "layer_types", None) or [])
    window = getattr(cfg, "sliding_window", None)
    if not types:  # e.g. Mistral: one mask for all layers, windowed when the config says so
        use = getattr(cfg, "use_sliding_window", True)
        return ("single", int(window) if window and use else None)
    if types == {"full_attention"}:
        return ("single", None)
    if types == {"sliding_attention"} and window:
        return ("single", int(window))
    if types == {"full_attention", "sliding_attention"} and window:
        return ("dict", int(window))
    return None


def _logits_to_keep_supported() -> bool:
    """Boolean 2-D ``logits_to_keep`` (head only at chosen positions) exists in this transformers."""
    try:
        import inspect

        from transformers.modeling_utils import slice_logits_to_keep
    except Exception:  # noqa: BLE001 - older transformers
        return False
    return "bool" in (inspect.getdoc(slice_logits_to_keep) or "")


def _attention_masks(pos: Any, seg: Any, plan: tuple[str, int | None], dtype: Any, attn: str) -> Any:
    """Block masks for packed rows. ``seg`` 0 = context, k = option k, -1 = padding; a token sees
    the context and its own option up to its own position; a pad token sees itself only (so it
    stays finite and never turns a real row's attention into NaN)."""
    import torch

    sq, sk = seg[:, :, None], seg[:, None, :]
    pq, pk = pos[:, :, None], pos[:, None, :]
    allowed = ((sk == 0) | (sk == sq)) & (pk <= pq) & (sk >= 0)
    eye = torch.eye(seg.shape[1], dtype=torch.bool, device=seg.device)[None]
    allowed = allowed | (eye & (sq < 0))
    kind, window = plan

    def fmt(m: Any) -> Any:
        m = m[:, None]  # [B, 1, L, L]
        if attn == "eager":  # eager attention adds the mask to the scores
            return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(~m, torch.finfo(dtype).min)
        return m

    if window is None:
        return fmt(allowed)
    windowed = allowed & ((pq - pk < window) | (eye & (sq < 0)))
    if kind == "single":
        return fmt(windowed)
    return {"full_attention": fmt(allowed), "sliding_attention": fmt(windowed)}


def _batches(lengths: list[int], batch_size: int, max_cells: int) -> list[list[int]]:
    """Indices grouped into batches, longest first (stable); a batch's rows x length^2 (the
    attention-mask size) stays under ``max_cells`` unless one row alone exceeds it."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    for i in order:
        if out and len(out[-1]) < batch_size and (len(out[-1]) + 1) * lengths[out[-1][0]] ** 2 <= max_cells:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _run_shared_prefix(model: Any, items: list[_Item], plan: tuple[str, int | None], batch_size: int,
                       pbar: Any) -> None:
    """Score every item with one packed row (context once, then each option's tokens but the last)."""
    import torch

    cfg = getattr(model, "config", None)
    attn = getattr(getattr(cfg, "text_config", None) or cfg, "_attn_implementation", None) or "sdpa"
    dtype, device = _model_dtype(model) or torch.float32, _device(model)
    rows = []
    for it in items:
        P = len(it.ctx_enc)
        toks, pos, seg = list(it.ctx_enc), list(range(P)), [0] * P
        # scored: per option, (row index of the token whose logits predict it, target id)
        scored = []
        for k, ce in enumerate(it.cont_encs, 1):
            start = len(toks)
            toks += ce[:-1]
            pos += range(P, P + len(ce) - 1)
            seg += [k] * (len(ce) - 1)
            scored.append(([P - 1] + list(range(start, start + len(ce) - 1)), ce))
        rows.append((toks, pos, seg, scored))
    lengths = [len(r[0]) for r in rows]
    for batch in _batches(lengths, batch_size, max_cells=64 * 2 ** 20):
        L = lengths[batch[0]]
        ids = torch.zeros((len(batch), L), dtype=torch.long)
        pos = torch.zeros((len(batch), L), dtype=torch.long)
        seg = torch.full((len(batch), L), -1, dtype=torch.long)
        keep = torch.zeros((len(batch), L), dtype=torch.bool)
        for b, i in enumerate(batch):
            toks, p, s, scored = rows[i]
            ids[b, : len(toks)] = torch.tensor(toks)
            pos[b, : len(toks)] = torch.tensor(p)
            seg[b, : len(toks)] = torch.tensor(s)
            for where, _ in scored:
                keep[b, where] = True
        # row-major rank of each kept (row, position): where its logits land in the output
        rank = torch.full((len(batch), L), -1, dtype=torch.long)
        rank[keep] = torch.arange(int(keep.sum()))
        mask = _attention_masks(pos, seg, plan, dtype, attn)
        if isinstance(mask, dict):
            mask = {k: v.to(device) for k, v in mask.items()}
        else:
            mask = mask.to(device)
        with torch.no_grad():
            out = model(input_ids=ids.to(device), attention_mask=mask, position_ids=pos.to(device),
                        logits_to_keep=keep.to(device), use_cache=False)
        logits = out.logits
        if logits.ndim != 2 or logits.shape[0] != int(keep.sum()):
            raise RuntimeError("the model ignored a boolean logits_to_keep (unexpected logits shape "
                               f"{tuple(logits.shape)}); use method='naive'")
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        greedy_ids = logprobs.argmax(dim=-1).cpu()
        for b, i in enumerate(batch):
            it, scored = items[i], rows[i][3]
            it.logliks, it.greedy = [], []
            for where, target in scored:
                r = rank[b, where]
                t = torch.tensor(target)
                it.logliks.append(float(logprobs[r.to(logprobs.device), t.to(logprobs.device)].sum()))
                it.greedy.append(bool((greedy_ids[r] == t).all()))
        pbar.update(len(batch))


def _run_naive(model: Any, items: list[_Item], max_length: int, pbar: Any) -> None:
    """Every option as its own full row, as the harness runs it (left-truncated to
    ``max_length + 1`` tokens, last token dropped), with log-softmax over the whole vocabulary."""
    import torch

    device = _device(model)
    for it in items:
        it.logliks, it.greedy = [], []
        for ce in it.cont_encs:
            inp = (it.ctx_enc + ce)[-(max_length + 1):][:-1]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([inp], device=device)).logits[0]
            lp = torch.log_softmax(logits.float(), dim=-1)[len(inp) - len(ce):]
            t = torch.tensor(ce, device=lp.device)
            it.logliks.append(float(lp.gather(1, t[:, None]).sum()))
            it.greedy.append(bool((lp.argmax(-1) == t).all()))
        pbar.update(1)


def _argmax(values: Sequence[float]) -> int:
    """First index of the maximum (``np.argmax``'s tie rule)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def score_questions(model: Any, tokenizer: Any, questions: Sequence[Question], *, style: str = "cloze",
                    shots: int = 0, dev: Sequence[Question] = (), subject: str | None = None,
                    contexts: Sequence[str] | None = None, batch_size: int = 8,
                    max_length: int | None = None, progress: bool = True,
                    method: str = "shared_prefix") -> list[dict]:
    """Score multiple-choice questions by log-likelihood, as lm-evaluation-harness does.

    Args:
        model: a causal LM (plain, peft-wrapped or 4-bit), in eval mode.
        tokenizer: its tokenizer (Gemma's must add BOS: ``load_causal_lm`` sets that).
        questions: the questions to score.
        style: ``"cloze"`` (option text as continuation) or ``"letter"`` (" A".." D").
        shots: number of solved dev examples in the prompt (the first ``shots`` of the subject).
        dev: the few-shot pool (``task.dev``).
        subject: description-line subject for all questions; ``None``: each question's ``subject``.
        contexts: one retrieved-context string per question (``""`` for none), or ``None``.
        batch_size: rows per forward pass.
        max_length: model context length; ``None``: the harness's rule (:func:`resolve_max_length`).
        progress: show a tqdm bar.
        method: ``"shared_prefix"`` (fast) or ``"naive"`` (one full forward per option).

    Returns:
        One dict per question, in input order: ``id, subject, style, shots, answer, pred,
        pred_norm, acc, acc_norm, logliks, is_greedy, n_ctx_tokens, n_retrieved_tokens,
        cont_tokens, truncated, n_truncated_tokens``.

    Raises:
        ValueError: malformed questions, ``contexts`` of the wrong length, too few dev rows, an
            option longer than ``max_length``, or bad settings.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
        raise ValueError(f"shots must be an integer >= 0, got {shots!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    questions = list(questions)
    if contexts is not None:
        contexts = list(contexts)
        if len(contexts) != len(questions):
            raise ValueError(f"contexts has {len(contexts)} entries for {len(questions)} questions; "
                             "pass one string per question ('' for none)")
        if any(not isinstance(c, str) for c in contexts):
            raise ValueError("every context must be a string ('' for no retrieved text)")
    max_length = _check_max_length(model, tokenizer, max_length)
    items, n_retrieved = _prepare(tokenizer, questions, style, shots, dev, subject, contexts, max_length)
    _score_items(model, items, method, batch_size, max_length, progress, f"scoring {style} {shots}-shot")
    rows = []
    for q, it, n_ret in zip(questions, items, n_retrieved):
        norm = [len(LETTERS[j]) if style == "letter" else len(c) for j, c in enumerate(q.choices)]
        pred = _argmax(it.logliks)
        pred_norm = _argmax([ll / n for ll, n in zip(it.logliks, norm)])
        rows.append({
            "id": q.id, "subject": subject if subject is not None else getattr(q, "subject", ""),
            "style": style, "shots": shots, "answer": q.answer,
            "pred": pred, "pred_norm": pred_norm,
            "acc": int(pred == q.answer), "acc_norm": int(pred_norm == q.answer),
            "logliks": it.logliks, "is_greedy": it.greedy,
            "n_ctx_tokens": len(it.ctx_enc), "n_retrieved_tokens": n_ret,
            "cont_tokens": [len(c) for c in it.cont_encs],
            "truncated": bool(it.n_truncated), "n_truncated_tokens": it.n_truncated,
        })
    _warn_truncated(rows, max_length)
    return rows


def score_requests(model: Any, tokenizer: Any, requests: Sequence[tuple[str, Sequence[str]]], *,
                   batch_size: int = 8, max_length: int | None = None, progress: bool = False,
                   method: str = "shared_prefix") -> list[dict]:
    """Log-likelihoods of raw ``(context, [continuation, ...])`` requests, the harness's way.

    The engine under :func:`score_questions`, for prompts built elsewhere (e.g. cloze probes).

    Returns:
        One dict per request: ``logliks, is_greedy, n_ctx_tokens, cont_tokens, truncated,
        n_truncated_tokens``.

    Example:
        >>> score_requests(model, tok, [("Paris is the capital of", [" France", " Spain"])])  # doctest: +SKIP
        [{'logliks': [-1.2, -7.9], 'is_greedy': [True, False], ...}]
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    max_length = _check_max_length(model, tokenizer, max_length)
    items = []
    for i, req in enumerate(requests):
        if not isinstance(req, (tuple, list)) or len(req) != 2:
            raise ValueError(f"requests[{i}] must be a (context, continuations) pair, got {req!r}")
        items.append(_encode_item(tokenizer, req[0], req[1], max_length, f"requests[{i}]"))
    _score_items(model, items, method, batch_size, max_length, progress, "scoring requests")
    rows = [{"logliks": it.logliks, "is_greedy": it.greedy, "n_ctx_tokens": len(it.ctx_enc),
             "cont_tokens": [len(c) for c in it.cont_encs], "truncated": bool(it.n_truncated),
             "n_truncated_tokens": it.n_truncated} for it in items]
    _warn_truncated(rows, max_length)
    return rows


def _check_max_length(model: Any, tokenizer: Any, max_length: int | None) -> int:
    max_length = int(max_length) if max_length is not None else resolve_max_length(model, tokenizer)
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    return max_length


def _warn_truncated(rows: list[dict], max_length: int) -> None:
    n_trunc = sum(r["truncated"] for r in rows)
    if n_trunc:
        warnings.warn(f"{n_trunc} of {len(rows)} requests exceeded max_length={max_length} and were "
                      "left-truncated as lm-eval does (their rows say truncated=True)", stacklevel=3)


def _score_items(model: Any, items: list[_Item], method: str, batch_size: int, max_length: int,
                 progress: bool, desc: str) -> None:
    """Fill ``logliks``/``greedy`` of every item: shared-prefix rows where possible, full rows
    (the harness's computation) for truncated items or unsupported models."""
    from tqdm.auto import tqdm

    plan = _mask_plan(model) if method == "shared_prefix" else None
    usable = plan is not None and _logits_to_keep_supported()
    if method == "shared_prefix" and not usable:
        warnings.warn("shared-prefix scoring does not support this model/transformers version "
                      "(attention implementation, layer types or logits_to_keep); scoring with "
                      "method='naive' (same numbers, slower)", stacklevel=3)
    fast = [it for it in items if usable and not it.n_truncated]
    fast_ids = {id(it) for it in fast}
    slow = [it for it in items if id(it) not in fast_ids]
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with tqdm(total=len(items), desc=desc, disable=not progress) as pbar:
            if fast:
                _run_shared_prefix(model, fast, plan, batch_size, pbar)  # type: ignore[arg-type]
            if slow:
                _run_naive(model, slow, max_length, pbar)
    finally:
        if was_training:
            model.train()


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------
def _as_binary(values: Iterable[Any], name: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool) or v in (0, 1):
            out.append(int(v))
        else:
            raise ValueError(f"{name} must hold 0/1 (or bool) per question, got {v!r}")
    if not out:
        raise ValueError(f"{name} is empty; need at least one scored question")
    return out


def bootstrap_ci(correct: Sequence[Any], n_boot: int = 2000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile-bootstrap ``1 - alpha`` interval of the accuracy (mean of 0/1 values).

    Example:
        >>> lo, hi = bootstrap_ci([1, 0, 1, 1, 0, 1, 1, 1])
        >>> 0.3 < lo < 0.75 < hi <= 1.0
        True
    """
    import numpy as np

    x = np.asarray(_as_binary(correct, "correct"), dtype=float)
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def summarize(rows: Sequence[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy and length-normalised accuracy with bootstrap 95% intervals.

    Returns:
        ``{"n", "acc", "acc_lo", "acc_hi", "acc_norm", "acc_norm_lo", "acc_norm_hi", "n_truncated"}``.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("no rows to summarise; score at least one question")
    out: dict[str, Any] = {"n": len(rows)}
    for key in ("acc", "acc_norm"):
        vals = _as_binary([r[key] for r in rows], key)
        lo, hi = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
        out.update({key: sum(vals) / len(vals), f"{key}_lo": lo, f"{key}_hi": hi})
    out["n_truncated"] = int(sum(bool(r.get("truncated", False)) for r in rows))
    return out


def _mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of ``b`` vs ``c`` discordant pairs at 1/2."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2 ** n)


def paired_test(a_correct: Sequence[Any], b_correct: Sequence[Any], n_boot: int = 2000, seed: int = 0,
                alpha: float = 0.05) -> dict:
    """Compare two methods answered on the same questions (``b`` minus ``a``).

    Exact McNemar test on the discordant pairs (two-sided binomial test at 1/2), plus a paired
    percentile-bootstrap interval of ``acc_b - acc_a`` (questions resampled together).

    Returns:
        ``{"n", "acc_a", "acc_b", "diff", "diff_lo", "diff_hi", "a_only", "b_only", "p_mcnemar"}``;
        ``a_only`` counts questions only ``a`` got right.
    """
    import numpy as np

    a = _as_binary(a_correct, "a_correct")
    b = _as_binary(b_correct, "b_correct")
    if len(a) != len(b):
        raise ValueError(f"paired test needs the same questions: got {len(a)} and {len(b)} results")
    av, bv = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a_only = int(((av == 1) & (bv == 0)).sum())
    b_only = int(((av == 0) & (bv == 1)).sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    diffs = bv[idx].mean(axis=1) - av[idx].mean(axis=1)
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return {"n": len(a), "acc_a": float(av.mean()), "acc_b": float(bv.mean()),
            "diff": float(bv.mean() - av.mean()), "diff_lo": float(lo), "diff_hi": float(hi),
            "a_only": a_only, "b_only": b_only, "p_mcnemar": _mcnemar_exact(a_only, b_only)}


# --------------------------------------------------------------------------------------------
# the reference harness on local MMLU CSVs (parity test and benchmark)
# --------------------------------------------------------------------------------------------
_LMEVAL_PROCESS_DOCS = '''"""Written by kinject_utils.scoring.write_lmeval_tasks: MMLU CSV rows -> harness docs."""
import json
from pathlib import Path

_CONTEXTS = json.loads((Path(__file__).parent / "contexts.json").read_text(encoding="utf-8"))


def as_text(field):
    return field


def process_docs(dataset):
    def convert(row):
        ctx = _CONTEXTS.get(row["question"], "")
        return {"question": row["question"], "choices": [row["A"], row["B"], row["C"], row["D"]],
                "answer": "ABCD".index(row["answer"].strip()),
                "kinject_context": ctx.strip() + "\\n\\n" if ctx.strip() else ""}
    import datasets

    # a fresh Dataset: mapping in place would keep the CSV's string type for "answer"
    return datasets.Dataset.from_list([convert(row) for row in dataset])
'''


def write_lmeval_tasks(folder: Any, mmlu_dir: Any, subjects: Sequence[str],
                       styles: Sequence[str] = STYLES, contexts: dict[str, str] | None = None) -> dict:
    """Write lm-evaluation-harness task YAMLs that read local MMLU CSVs with the harness's own
    MMLU prompts (they ``include`` the installed ``mmlu_<subject>.yaml`` /
    ``mmlu_<subject>_continuation`` files and only swap the data source).

    Args:
        folder: where to write (pass it as ``TaskManager(include_path=folder)``).
        mmlu_dir: folder holding ``test/<subject>_test.csv`` and ``dev/<subject>_dev.csv``.
        subjects: MMLU subjects.
        styles: ``"letter"`` (harness task ``mmlu_<subject>``) and/or ``"cloze"``
            (``mmlu_<subject>_continuation``).
        contexts: optional retrieved context per test question text; when given, the test
            question's rendering is preceded by it exactly as :func:`build_request` places it.

    Returns:
        ``{(subject, style): task_name}``.
    """
    import json
    from pathlib import Path

    import lm_eval

    folder, mmlu_dir = Path(folder), Path(mmlu_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tasks_dir = Path(lm_eval.__file__).parent / "tasks" / "mmlu"
    (folder / "kinject_mmlu_csv.py").write_text(_LMEVAL_PROCESS_DOCS, encoding="utf-8")
    (folder / "contexts.json").write_text(json.dumps(contexts or {}, ensure_ascii=False), encoding="utf-8")
    names = {}
    for subject in subjects:
        files = {"test": mmlu_dir / "test" / f"{subject}_test.csv", "dev": mmlu_dir / "dev" / f"{subject}_dev.csv"}
        for f in files.values():
            if not f.exists():
                raise FileNotFoundError(f"{f} not found: need the original MMLU CSVs under {mmlu_dir}")
        for style in styles:
            if style not in STYLES:
                raise ValueError(f"style must be one of {STYLES}, got {style!r}")
            base = (tasks_dir / "default" / f"mmlu_{subject}.yaml" if style == "letter"
                    else tasks_dir / "continuation" / f"mmlu_{subject}.yaml")
            name = f"kinject_{style}_{subject}"
            lines = [
                f"include: {json.dumps(str(base))}",
                f"task: {name}",
                "tag: kinject_mmlu_csv",
                f"task_alias: {name}",
                "dataset_path: csv",
                "dataset_name: null",
                "dataset_kwargs:",
                f"  data_files: {{test: {json.dumps(str(files['test']))}, dev: {json.dumps(str(files['dev']))}}}",
                "  column_names: [question, A, B, C, D, answer]",
                "  # every column as text: '0.50' stays '0.50', 'None' stays a string",
                "  converters: {" + ", ".join(f"{c}: !function kinject_mmlu_csv.as_text"
                                             for c in ("question", "A", "B", "C", "D", "answer")) + "}",
                "  na_filter: false",
                "  keep_default_na: false",
                "process_docs: !function kinject_mmlu_csv.process_docs",
            ]
            if contexts:
                text = ("{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}"
                        "\\nD. {{choices[3]}}\\nAnswer:" if style == "letter"
                        else "Question: {{question.strip()}}\\nAnswer:")
                lines.append(f'doc_to_text: "{{{{kinject_context}}}}{text}"')
            (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
            names[(subject, style)] = name
    return names
