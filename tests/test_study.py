"""Study grid planning, aggregation, claims check and figures on synthetic per-question results."""
import csv

import pandas as pd
import pytest

from kinject_utils import plots, study
from kinject_utils.io import read_jsonl, write_jsonl
from kinject_utils.tasks import Document, Question, Task


def _task(name="fictional_news", n=40):
    qs = [Question(id=f"q{i}", question=f"What {i}?", choices=["a", "b", "c", "d"], answer=i % 4,
                   source_doc_ids=[f"d{i % 5}"]) for i in range(n)]
    return Task(name=name, questions=qs, docs=[Document(f"d{i}", "t", "text") for i in range(5)],
                meta={"kind": "current_events"})


def test_grid_config_validates():
    with pytest.raises(ValueError, match="k must be in 1..5"):
        study.GridConfig(k=9)
    with pytest.raises(ValueError, match="mmlu_style"):
        study.GridConfig(mmlu_style="letters")
    with pytest.raises(ValueError, match="non-negative int"):
        study.GridConfig(batch_size="8")  # type: ignore[arg-type]


def test_plan_grid_covers_table2_methods_and_sweep(tmp_path):
    idx = tmp_path / "03_adapters" / "index.csv"
    idx.parent.mkdir(parents=True)
    rows = [dict(model="m", task="fictional_news", variant="ft-reg", n_paraphrases=0, budget="epochs", sweep="epochs+steps", adapter_dir="a0"),
            dict(model="m", task="fictional_news", variant="ft-par", n_paraphrases=3, budget="epochs", sweep="epochs", adapter_dir="a3"),
            dict(model="m", task="fictional_news", variant="ft-par-1", n_paraphrases=1, budget="epochs", sweep="epochs", adapter_dir="a1"),
            dict(model="m", task="fictional_news", variant="ft-par-fixed", n_paraphrases=3, budget="steps", sweep="steps", adapter_dir="a3f")]
    with open(idx, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    specs = study.plan_grid(tmp_path, ["m"], {"fictional_news": _task()}, study.GridConfig(k=3), lambda t: True)
    methods = [s.method for s in specs]
    for m in ["base", "base+RAG", "FT-reg", "FT-par", "FT-reg+RAG", "FT-par+RAG", "FT-par(0)", "FT-par(1)", "FT-par(3)"]:
        assert m in methods, m
    budgets = {(s.n_paraphrases, s.budget) for s in specs if s.method.startswith("FT-par(")}
    assert budgets == {(0, "epochs"), (0, "steps"), (1, "epochs"), (3, "epochs"), (3, "steps")}
    # FT-reg and FT-par(0) at both budgets are one adapter: scored once
    assert len({s.key() for s in specs if s.adapter_dir == "a0" and s.k == 0}) == 1
    no_rag = study.plan_grid(tmp_path, ["m"], {"fictional_news": _task()}, study.GridConfig(k=3), lambda t: False)
    assert not any("RAG" in s.method for s in no_rag)


def _fake_run(tmp_path, accs):
    """Write cached per-question rows for each method with the given per-question correctness."""
    task = _task()
    specs = []
    for method, correct in accs.items():
        spec = study.ScoreSpec(model="m", task="fictional_news", method=method, k=3 if "RAG" in method else 0,
                               adapter_dir=method.split("+")[0] if method.startswith("FT") else "")
        specs.append(spec)
        rows = [{**spec.__dict__, "id": q.id, "acc": c, "acc_norm": c, "truncated": False, "seconds": 1.0}
                for q, c in zip(task.questions, correct)]
        write_jsonl(tmp_path / "cache" / "05_scores" / f"{spec.key()}.jsonl", rows)
    return specs


def test_claims_follow_the_data(tmp_path):
    n = 40
    accs = {"base": [1 if i < 10 else 0 for i in range(n)],          # 0.25
            "base+RAG": [1 if i < 36 else 0 for i in range(n)],      # 0.90
            "FT-reg": [1 if i < 11 else 0 for i in range(n)],        # 0.275
            "FT-par": [1 if i < 24 else 0 for i in range(n)],        # 0.60
            "FT-reg+RAG": [1 if i < 34 else 0 for i in range(n)],
            "FT-par+RAG": [1 if i < 35 else 0 for i in range(n)]}
    specs = _fake_run(tmp_path, accs)
    path = study.collect_scores(specs, tmp_path)
    scores = pd.read_csv(path)
    assert set(scores["method"]) == set(accs)
    assert scores.loc[scores.method == "base+RAG", "score"].item() == pytest.approx(0.9)
    per_q = list(read_jsonl(tmp_path / "05_per_question.jsonl"))
    claims = {c["claim"]: c for c in study.check_claims(scores, per_q)}
    assert claims[1]["verdict"] == "supported"
    assert claims[2]["verdict"] == "supported"
    assert claims[3]["verdict"] == "supported"
    assert claims[4]["verdict"] == "supported"
    assert claims[5]["verdict"] == "supported"
    # flip the data: FT-reg now beats RAG -> claim 2 must fail
    accs["FT-reg"] = [1] * n
    specs = _fake_run(tmp_path, accs)
    scores = pd.read_csv(study.collect_scores(specs, tmp_path))
    claims = {c["claim"]: c for c in study.check_claims(scores, list(read_jsonl(tmp_path / "05_per_question.jsonl")))}
    assert claims[2]["verdict"] in ("mixed", "not supported")
    assert claims[3]["verdict"] == "not supported"
    md = plots.claims_markdown(list(claims.values()))
    assert "Claim 2" in md and "diff [95% CI]" in md


def test_figures_and_tables_render(tmp_path):
    specs = _fake_run(tmp_path, {"base": [0, 1] * 20, "base+RAG": [1] * 40})
    scores = pd.read_csv(study.collect_scores(specs, tmp_path))
    for fn, arg in [(plots.fig_box_by_method, scores), (plots.fig_relative_gain, scores),
                    (plots.fig_paraphrase_sweep, scores), (plots.fig_train_loss, None), (plots.fig_recall, None)]:
        p = fn(arg, tmp_path / f"{fn.__name__}.png")
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    t2 = plots.table2_markdown(scores)
    assert "m (ours)" in t2 and "mistral-7b (paper)" in t2 and "0.875" in t2
    gain = plots.relative_gain(scores)
    assert gain.loc[gain.method == "base+RAG", "gain"].item() == pytest.approx(1.0)


def test_claim4_needs_a_monotone_sweep(tmp_path):
    n = 40
    accs = {"base": [0] * n, "FT-reg": [1 if i < 8 else 0 for i in range(n)],
            "FT-par": [1 if i < 30 else 0 for i in range(n)]}
    specs = _fake_run(tmp_path, accs)
    sweep = {0: 8, 1: 20, 2: 12, 3: 30}  # FT-par(N) correct counts: not monotone
    for npar, good in sweep.items():
        spec = study.ScoreSpec(model="m", task="fictional_news", method=f"FT-par({npar})", adapter_dir=f"s{npar}",
                               n_paraphrases=npar, budget="epochs")
        specs.append(spec)
        write_jsonl(tmp_path / "cache" / "05_scores" / f"{spec.key()}.jsonl",
                    [{"id": f"q{i}", "acc": int(i < good), "acc_norm": int(i < good)} for i in range(n)])
    scores = pd.read_csv(study.collect_scores(specs, tmp_path))
    claims = {c["claim"]: c for c in study.check_claims(scores, list(read_jsonl(tmp_path / "05_per_question.jsonl")))}
    assert claims[4]["sweep"][0]["monotone"] is False
    assert claims[4]["verdict"] == "mixed"  # FT-par beats FT-reg, but the sweep does not rise monotonically
