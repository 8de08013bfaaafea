"""Our scorer against lm-evaluation-harness itself, on the embedded SmolLM2 in fp32.

lm-eval 0.4.13 runs its own MMLU prompts (task files that ``include`` the installed
``mmlu_<subject>.yaml`` / continuation YAMLs and read ../shared/data/mmlu CSVs as text) on
chosen rows: plain questions, numeric-only options ("0.50"-style, which a careless CSV reader
reformats) and multi-line questions. Letter and cloze style, 0- and 5-shot: the prompts must be
string-identical, every per-choice log-likelihood within 1e-4, greedy flags and predictions equal.
At 5-shot the two college_chemistry rows share their subject's prefix, so they go through the k-shot
prefix cache (one forward over description + shots, then each question's own tokens).
A second test feeds the harness hand-made requests whose contexts end in whitespace.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from conftest import MMLU_DIR, need

pytestmark = pytest.mark.slow

# rows of each test CSV: 2/50 college_chemistry and 67/121 astronomy have numeric-only options;
# college_chemistry 3 spans several lines
ROWS = {"college_chemistry": [0, 2, 3, 50], "astronomy": [0, 67, 121]}
# 5-shot cloze costs the harness four ~400-token rows per question: fewer rows keep the test short
ROWS_5SHOT = {"college_chemistry": [2, 3], "astronomy": [67]}
TOL = 1e-4


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """lm-eval's HF model (``pretrained=<dir>,dtype=float32``), our model, and the task files."""
    need(MMLU_DIR)
    pytest.importorskip("lm_eval", reason="lm-eval is a test dependency: pip install 'lm-eval[hf]==0.4.13'")
    from lm_eval.models.huggingface import HFLM

    from kinject_utils.models import load_causal_lm, resolve_model_dir
    from kinject_utils.scoring import write_lmeval_tasks

    tmp = tmp_path_factory.mktemp("lmeval")
    os.environ.setdefault("HF_DATASETS_CACHE", str(tmp / "hf_datasets"))
    names = write_lmeval_tasks(tmp / "tasks", MMLU_DIR, list(ROWS))
    lm = HFLM(pretrained=resolve_model_dir("smollm2-135m"), dtype="float32", batch_size=8, device="cpu")
    model, tok = load_causal_lm("smollm2-135m", dtype="float32")
    return SimpleNamespace(lm=lm, model=model, tok=tok, names=names, task_dir=tmp / "tasks")


@pytest.mark.parametrize("shots", [0, 5])
def test_scores_match_lm_eval(harness, shots):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from kinject_utils.data import load_mmlu
    from kinject_utils.scoring import build_request, capabilities, score_questions

    rows_for = ROWS if shots == 0 else ROWS_5SHOT
    assert capabilities(harness.model).cached, capabilities(harness.model).reason  # the path under test
    res = lm_eval.simple_evaluate(
        model=harness.lm, tasks=list(harness.names.values()), num_fewshot=shots,
        samples={name: rows_for[subject] for (subject, _), name in harness.names.items()},
        log_samples=True, bootstrap_iters=0,
        task_manager=TaskManager(include_path=str(harness.task_dir), include_defaults=False))
    checked = 0
    for (subject, style), name in harness.names.items():
        mmlu = load_mmlu(subject, source=str(MMLU_DIR))
        test, dev = mmlu.questions, mmlu.dev
        questions = [test[i] for i in rows_for[subject]]
        rows = score_questions(harness.model, harness.tok, questions, style=style, shots=shots,
                               dev=dev, progress=False)
        samples = {s["doc_id"]: s for s in res["samples"][name]}
        assert sorted(samples) == sorted(rows_for[subject])
        for q, row, i in zip(questions, rows, rows_for[subject]):
            s, where = samples[i], f"{name} {shots}-shot row {i}"
            ctx, conts = build_request(q, style=style, subject=subject, fewshot=dev[:shots])
            assert [tuple(a) for a in s["arguments"]] == [(ctx, c) for c in conts], f"{where}: prompt differs"
            theirs = [float(r[0]) for r in s["filtered_resps"]]
            diffs = [abs(a - b) for a, b in zip(theirs, row["logliks"])]
            assert len(theirs) == len(row["logliks"]) and max(diffs) <= TOL, f"{where}: {theirs} vs {row['logliks']}"
            assert [bool(r[1]) for r in s["filtered_resps"]] == row["is_greedy"], where
            assert float(s["acc"]) == row["acc"], where
            if "acc_norm" in s:  # the letter task files only ask the harness for acc
                assert float(s["acc_norm"]) == row["acc_norm"], where
            assert not row["truncated"]
            checked += 1
    assert checked == 2 * sum(len(v) for v in rows_for.values())


def test_whitespace_and_encode_pair_match_lm_eval(harness):
    """Contexts ending in spaces/newlines, continuations with odd spacing and numbers: the same
    token split as ``HFLM._encode_pair`` and the same log-likelihoods as ``HFLM.loglikelihood``."""
    from kinject_utils.scoring import encode_pair, score_requests

    requests = [
        ("Question: What is 1/2 as a decimal?\nAnswer: ", ["0.50", "0.5", " 1.0", "2"]),
        ("The capital of France is\n", ["Paris", " Paris", "  Paris."]),
        ("Numbers:  ", ["3,000", "-7", "1e-3"]),
        ("Answer:", [" A", " B"]),
    ]
    for ctx, conts in requests:
        ours_ctx, ours_conts = encode_pair(harness.tok, ctx, conts)
        for cont, oc in zip(conts, ours_conts):
            their_ctx, their_cont = harness.lm._encode_pair(ctx, cont)
            assert (ours_ctx, oc) == (their_ctx, their_cont), (ctx, cont)
    flat = [SimpleNamespace(args=(ctx, c)) for ctx, conts in requests for c in conts]
    theirs = harness.lm.loglikelihood(flat, disable_tqdm=True)
    ours = [(ll, g) for r in score_requests(harness.model, harness.tok, requests)
            for ll, g in zip(r["logliks"], r["is_greedy"])]
    assert len(ours) == len(theirs)
    for (a, ga), (b, gb), req in zip(ours, theirs, flat):
        assert abs(a - b) <= TOL and ga == gb, (req.args, a, b)
