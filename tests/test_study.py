"""Study grid planning, relocatable results, aggregation, costs, claims check and figures.

Synthetic per-question results and fake adapters (an index plus manifest.json): no model runs here.
"""
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kinject_utils import finetune as ft
from kinject_utils import layout, plots, study
from kinject_utils.io import read_jsonl, write_json, write_jsonl
from kinject_utils.tasks import Document, Question, Task, save_task

ROOT = Path(__file__).resolve().parents[1]


def _task(name="fictional_news", n=40):
    qs = [Question(id=f"q{i}", question=f"What {i}?", choices=["a", "b", "c", "d"], answer=i % 4,
                   source_doc_ids=[f"d{i % 5}"]) for i in range(n)]
    return Task(name=name, questions=qs, docs=[Document(f"d{i}", "t", "text") for i in range(5)],
                meta={"kind": "current_events"})


def _adapters(results, rows):
    """A fake notebook-03 output: one manifest.json per adapter folder and the relative index."""
    out = []
    for r in rows:
        folder = layout.adapter_dir(results, r["model"], r["task"], r["variant"])
        write_json(folder / ft.MANIFEST, {"base_model": r["model"], "method": r.get("method", "lora")})
        out.append({**r, "adapter_dir": str(folder)})
    ft.write_adapter_index(results, out)


SWEEP_ROWS = [dict(model="m", task="fictional_news", variant="ft-reg", n_paraphrases=0, budget="epochs",
                   sweep="epochs+steps", tokens=1000, wall_s=10.0),
              dict(model="m", task="fictional_news", variant="ft-par", n_paraphrases=3, budget="epochs", sweep="epochs",
                   tokens=4000, wall_s=40.0),
              dict(model="m", task="fictional_news", variant="ft-par-1", n_paraphrases=1, budget="epochs",
                   sweep="epochs", tokens=2000, wall_s=20.0),
              dict(model="m", task="fictional_news", variant="ft-par-fixed", n_paraphrases=3, budget="steps",
                   sweep="steps", tokens=1000, wall_s=10.0)]


REP_ROWS = [dict(model="m", task="fictional_news", variant="ft-reg", n_paraphrases=0, budget="epochs", sweep="none",
                 tokens=5000, wall_s=10.0),
            dict(model="m", task="fictional_news", variant="ft-par-0", n_paraphrases=0, budget="epochs",
                 sweep="epochs", tokens=1000, wall_s=2.0),
            dict(model="m", task="fictional_news", variant="ft-par", n_paraphrases=3, budget="epochs",
                 sweep="epochs+steps", tokens=4000, wall_s=40.0),
            dict(model="m", task="fictional_news", variant="ft-reg-rep", n_paraphrases=0, budget="tokens",
                 sweep="none", tokens=4000, wall_s=40.0)]


def test_plan_grid_scores_the_repetition_control_and_keeps_ft_reg_out_of_the_sweep(tmp_path):
    """FT-reg trained for its own epochs is not a sweep point (ft-par-0 is); the repetition control (FT-reg's text
    for FT-par's tokens) is scored as FT-reg(rep), without +RAG, and is no sweep point either."""
    _adapters(tmp_path, REP_ROWS)
    specs = study.plan_grid(tmp_path, ["m"], {"fictional_news": _task()}, study.GridConfig(k=1), lambda t: True)
    by = {(s.method, s.budget): s.variant for s in specs}
    assert by[("FT-reg", "epochs")] == "ft-reg" and by[("FT-par(0)", "epochs")] == "ft-par-0"
    assert by[("FT-reg(rep)", "tokens")] == "ft-reg-rep"
    assert not any(s.variant in ("ft-reg", "ft-reg-rep") and s.method.startswith("FT-par(") for s in specs)
    assert not any(s.method == "FT-reg(rep)+RAG" for s in specs)
    rep = {s.key() for s in specs if s.variant == "ft-reg-rep"}
    assert len(rep) == 1


def test_grid_config_validates():
    with pytest.raises(ValueError, match="k must be in 1..5"):
        study.GridConfig(k=9)
    with pytest.raises(ValueError, match="mmlu_style"):
        study.GridConfig(mmlu_style="letters")
    with pytest.raises(ValueError, match="non-negative int"):
        study.GridConfig(batch_size="8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="DTYPE"):
        study.GridConfig(dtype="float64")
    assert study.GridConfig().dtype == "auto" and study.GridConfig(dtype="bf16").dtype == "bfloat16"


def test_plan_grid_covers_table2_methods_and_sweep(tmp_path):
    _adapters(tmp_path, SWEEP_ROWS)
    specs = study.plan_grid(tmp_path, ["m"], {"fictional_news": _task()}, study.GridConfig(k=3), lambda t: True)
    methods = [s.method for s in specs]
    for m in [*study.METHODS, "FT-par(0)", "FT-par(1)", "FT-par(3)"]:
        assert m in methods, m
    budgets = {(s.n_paraphrases, s.budget) for s in specs if s.method.startswith("FT-par(")}
    assert budgets == {(0, "epochs"), (0, "steps"), (1, "epochs"), (3, "epochs"), (3, "steps")}
    reg = "03_adapters/m/fictional_news/ft-reg"
    assert {s.adapter_dir for s in specs if s.adapter_dir} >= {reg}  # stored relative to the results folder
    # FT-reg and FT-par(0) at both budgets are one adapter: scored once
    assert len({s.key() for s in specs if s.adapter_dir == reg and s.k == 0}) == 1
    no_rag = study.plan_grid(tmp_path, ["m"], {"fictional_news": _task()}, study.GridConfig(k=3), lambda t: False)
    assert not any("RAG" in s.method for s in no_rag)
    # the precision scored in is part of the key: a bf16 cache is not reused for fp32
    fp32 = study.plan_grid(tmp_path, ["m"], {"fictional_news": _task()}, study.GridConfig(dtype="float32"),
                           lambda t: False)
    bf16 = study.plan_grid(tmp_path, ["m"], {"fictional_news": _task()}, study.GridConfig(dtype="bfloat16"),
                           lambda t: False)
    assert {s.key() for s in fp32}.isdisjoint({s.key() for s in bf16})


def _fake_score(model, tok, questions, **kw):
    return [{"id": q.id, "subject": "", "acc": int(q.answer == 0), "acc_norm": int(q.answer == 0),
             "n_ctx_tokens": 10, "cont_tokens": [1, 2, 1, 1], "truncated": False} for q in questions]


def _patch_loaders(monkeypatch, calls):
    from kinject_utils import models

    def fake_finetuned(name, adapter_dir, **kw):
        # "as trained": no merge and no forced quantization, so a QLoRA adapter stays on its 4-bit base
        assert not kw.get("merge") and kw.get("quantization") is None, kw
        calls.append(("ft", str(adapter_dir), kw.get("device"), kw.get("dtype")))
        return object(), object()

    def fake_base(name, **kw):
        calls.append(("base", name, kw.get("device"), kw.get("dtype")))
        return object(), object()

    def switch_load(self, name, adapter_dir=None, *, quantization=None):
        # notebook 05 keeps one base and swaps adapters (ft.AdapterSwitch; its numbers: test_gpu_memory.py)
        if adapter_dir is None:
            return fake_base(name, device=self.device, dtype=self.dtype, quantization=quantization)
        return fake_finetuned(name, adapter_dir, device=self.device, dtype=self.dtype, quantization=quantization)

    monkeypatch.setattr(ft, "load_finetuned", fake_finetuned)
    monkeypatch.setattr(models, "load_causal_lm", fake_base)
    monkeypatch.setattr(ft.AdapterSwitch, "load", switch_load)
    monkeypatch.setattr("kinject_utils.scoring.score_questions", _fake_score)


def test_copied_results_folder_scores_its_own_adapters_and_reuses_its_cache(tmp_path, monkeypatch):
    orig = tmp_path / "orig" / "results"
    save_task(_task(n=8), layout.task_dir(orig, "fictional_news"))
    _adapters(orig, SWEEP_ROWS[:2])
    calls: list = []
    _patch_loaders(monkeypatch, calls)
    cfg = study.GridConfig(dtype="float32", sweep=False)
    study.score_study(orig, ["m"], ["fictional_news"], cfg, device="cpu", progress=False)
    ft_calls = [c for c in calls if c[0] == "ft"]
    assert {Path(c[1]).name for c in ft_calls} == {"ft-reg", "ft-par"}
    assert all(Path(c[1]).is_relative_to(orig) for c in ft_calls)
    for f in layout.score_cache_dir(orig).glob("*.jsonl"):  # no absolute path stored in the cache
        assert str(tmp_path) not in f.read_text()

    copy = tmp_path / "elsewhere" / "results"
    shutil.copytree(orig, copy)
    shutil.rmtree(orig)  # the copy must not need the original
    calls.clear()
    study.score_study(copy, ["m"], ["fictional_news"], cfg, device="cpu", progress=False)
    assert calls == []  # same keys: every cell found in the copy's own cache
    assert set(pd.read_csv(layout.scores_csv(copy))["method"]) == {"base", "FT-reg", "FT-par"}
    shutil.rmtree(layout.score_cache_dir(copy))
    study.score_study(copy, ["m"], ["fictional_news"], cfg, device="cpu", progress=False)
    ft_calls = [c for c in calls if c[0] == "ft"]
    assert len(ft_calls) == 2 and all(Path(c[1]).is_relative_to(copy) for c in ft_calls)
    assert {c[2:] for c in calls} == {("cpu", "float32")}  # one device and dtype for base and FT


def _fake_run(tmp_path, accs, style="cloze", norm=None):
    """Write cached per-question rows for each method with the given per-question correctness."""
    task = _task()
    specs = []
    for method, correct in accs.items():
        spec = study.ScoreSpec(model="m", task="fictional_news", method=method, k=3 if "RAG" in method else 0,
                               adapter_dir=method.split("+")[0] if method.startswith("FT") else "", style=style)
        specs.append(spec)
        other = (norm or {}).get(method, correct)
        rows = [{**spec.__dict__, "id": q.id, "acc": c, "acc_norm": o, "truncated": False, "seconds": 1.0}
                for q, c, o in zip(task.questions, correct, other)]
        write_jsonl(layout.score_cache_dir(tmp_path) / f"{spec.key()}.jsonl", rows)
    return specs


def _claims(tmp_path, specs):
    scores = pd.read_csv(study.collect_scores(specs, tmp_path))
    per_q = list(read_jsonl(layout.per_question_jsonl(tmp_path)))
    return scores, {c["claim"]: c for c in study.check_claims(scores, per_q)}


def test_claims_follow_the_data(tmp_path):
    n = 40
    accs = {"base": [1 if i < 10 else 0 for i in range(n)],          # 0.25
            "base+RAG": [1 if i < 36 else 0 for i in range(n)],      # 0.90
            "FT-reg": [1 if i < 11 else 0 for i in range(n)],        # 0.275
            "FT-par": [1 if i < 24 else 0 for i in range(n)],        # 0.60
            "FT-reg+RAG": [1 if i < 34 else 0 for i in range(n)],
            "FT-par+RAG": [1 if i < 35 else 0 for i in range(n)]}
    scores, claims = _claims(tmp_path, _fake_run(tmp_path, accs))
    assert set(scores["method"]) == set(accs)
    assert scores.loc[scores.method == "base+RAG", "score"].item() == pytest.approx(0.9)
    assert all(claims[i]["verdict"] == "supported" for i in range(1, 6))
    # flip the data: FT-reg now beats RAG -> claim 2 must fail
    accs["FT-reg"] = [1] * n
    _, claims = _claims(tmp_path, _fake_run(tmp_path, accs))
    assert claims[2]["verdict"] in ("mixed", "not supported")
    assert claims[3]["verdict"] == "not supported"
    md = study.claims_markdown(list(claims.values()))
    assert "Claim 2" in md and "diff [95% CI]" in md


@pytest.mark.parametrize("style", ["letter", "cloze"])
def test_claims_pick_the_metric_by_style_like_the_tables(tmp_path, style):
    """A non-MMLU task scored letter-style: the claims read ``acc`` (the old rule read acc_norm by task name)."""
    n = 40
    good, bad = [1 if i < 36 else 0 for i in range(n)], [1 if i < 10 else 0 for i in range(n)]
    # acc says RAG wins, acc_norm says it loses
    specs = _fake_run(tmp_path, {"base": bad, "base+RAG": good}, style=style, norm={"base": good, "base+RAG": bad})
    scores, claims = _claims(tmp_path, specs)
    want = "supported" if style == "letter" else "not supported"
    assert claims[1]["verdict"] == want
    table_says_rag_wins = (scores.loc[scores.method == "base+RAG", "score"].item()
                           > scores.loc[scores.method == "base", "score"].item())
    assert table_says_rag_wins == (want == "supported")  # tables and claims agree
    # a per-question file written before rows carried a style: the style comes from 05_scores.csv
    per_q = [{k: v for k, v in r.items() if k != "style"} for r in read_jsonl(layout.per_question_jsonl(tmp_path))]
    assert {c["claim"]: c for c in study.check_claims(scores, per_q)}[1]["verdict"] == want
    with pytest.raises(ValueError, match="re-run notebook 05"):
        study.check_claims(scores.iloc[0:0], per_q)


def test_costs_per_cell_and_per_method(tmp_path):
    _adapters(tmp_path, SWEEP_ROWS[:2])
    rdir = layout.retrieval_dir(tmp_path, "fictional_news")
    write_jsonl(rdir / "passages.jsonl", [{"passage_id": f"p{i}", "text": "x" * 50} for i in range(7)])
    write_json(rdir / "manifest.json", {"n_passages": 7})
    task = _task(n=4)
    specs = []
    for method, adapter in [("base", ""), ("base+RAG", ""), ("FT-reg", "ft-reg"), ("FT-reg+RAG", "ft-reg"),
                            ("FT-par", "ft-par")]:
        folder = layout.adapter_dir(tmp_path, "m", "fictional_news", adapter)
        a = layout.to_relative(tmp_path, folder) if adapter else ""
        spec = study.ScoreSpec(model="m", task="fictional_news", method=method, k=3 if "RAG" in method else 0,
                               adapter_dir=a, variant=adapter)
        specs.append(spec)
        write_jsonl(layout.score_cache_dir(tmp_path) / f"{spec.key()}.jsonl",
                    [{"id": q.id, "acc": 1, "acc_norm": 1, "seconds": 2.0, "load_s": 0.5, "peak_mem_mb": 100.0 + i,
                      "mem_source": "test", "device": "cpu", "dtype": "float32", "n_ctx_tokens": 10 if a else 5,
                      "cont_tokens": [1, 1, 2, 2]} for i, q in enumerate(task.questions)])
    study.collect_scores(specs, tmp_path)
    costs = pd.read_csv(layout.costs_csv(tmp_path))
    assert list(costs.columns) == study.COST_COLUMNS
    row = costs.set_index("method").loc
    assert row["FT-reg", "train_tokens"] == 1000 and row["FT-par", "train_wall_s"] == 40.0
    assert row["base", "train_tokens"] == 0 and row["base", "index_bytes"] == 0
    assert row["base+RAG", "index_passages"] == 7
    assert row["base+RAG", "index_bytes"] == sum(p.stat().st_size for p in rdir.iterdir())
    assert row["base", "scored_tokens"] == 4 * (5 * 4 + 6) and row["FT-reg", "scored_tokens"] == 4 * (10 * 4 + 6)
    assert row["base", "score_wall_s"] == 2.0 and row["base", "peak_mem_mb"] == 100.0
    by = study.cost_by_method(costs).set_index("method")
    assert list(by.index) == ["base", "base+RAG", "FT-reg", "FT-par", "FT-reg+RAG"]  # METHODS order
    assert by.loc["FT-reg+RAG", "train_tokens"] == 1000 and by.loc["FT-reg+RAG", "index_passages"] == 7
    md = plots.costs_markdown(by)
    assert "| FT-reg+RAG |" in md and "training tokens" in md


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
    acc = plots.accuracy_markdown(scores).splitlines()  # the README's table: one row per cell, "–" where unscored
    assert acc[2] == "| m | fictional_news | 0 | 40 | 0.500 | 1.000 | – | – | – | – |"
    assert "no scores yet" in plots.accuracy_markdown(None)


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
        write_jsonl(layout.score_cache_dir(tmp_path) / f"{spec.key()}.jsonl",
                    [{"id": f"q{i}", "acc": int(i < good), "acc_norm": int(i < good)} for i in range(n)])
    _, claims = _claims(tmp_path, specs)
    assert claims[4]["sweep"][0]["monotone"] is False
    assert claims[4]["sweep"][0]["spearman"] == pytest.approx(0.8)
    assert claims[4]["verdict"] == "mixed"  # FT-par beats FT-reg, but the sweep does not rise monotonically


def test_design_doc_lists_every_artifact_and_the_real_score_columns():
    text = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    missing = [pattern for _, pattern, _ in layout.ARTIFACTS if f"`{pattern}`" not in text]
    assert not missing, f"docs/DESIGN.md does not list {missing} (layout.ARTIFACTS)"
    m = re.search(r"`05_scores\.csv` columns: (.+)", text)
    assert m, "docs/DESIGN.md needs a line '`05_scores.csv` columns: `model`, `task`, ...'"
    assert re.findall(r"`([a-z_]+)`", m.group(1)) == study.SCORE_COLUMNS
    m = re.search(r"`05_costs\.csv` columns: (.+)", text)
    assert m and re.findall(r"`([a-z_]+)`", m.group(1)) == study.COST_COLUMNS
    for mod in ("study/grid.py", "study/claims.py", "study/costs.py"):
        assert mod in text, f"docs/DESIGN.md's module table lacks {mod}"


def test_memorisation_beside_accuracy_joins_each_adapter_to_its_own_scores():
    import pandas as pd

    from kinject_utils import plots

    memo = pd.DataFrame([
        {"model": "m", "task": "t", "variant": "ft-reg", "n_paraphrases": 0, "split": "kb", "loss_before": 4.0,
         "loss_after": 3.0},
        {"model": "m", "task": "t", "variant": "ft-par-10", "n_paraphrases": 10, "split": "kb", "loss_before": 4.0,
         "loss_after": 0.5},
        {"model": "m", "task": "t", "variant": "ft-par-10", "n_paraphrases": 10, "split": "paraphrases",
         "loss_before": 4.1, "loss_after": 0.6},
        {"model": "m", "task": "t", "variant": "ft-par-10-fixed", "n_paraphrases": 10, "split": "kb",
         "loss_before": 4.0, "loss_after": 3.1},
        {"model": "m", "task": "t", "variant": "never-scored", "n_paraphrases": 1, "split": "kb", "loss_before": 4.0,
         "loss_after": 1.0}])
    row = dict(model="m", task="t", subject="all", shots=0, k=0, score_lo=0.0, score_hi=1.0)
    scores = pd.DataFrame([
        {**row, "method": "base", "variant": None, "score": 0.25},
        {**row, "method": "base+RAG", "variant": None, "k": 1, "score": 0.9},
        {**row, "method": "FT-reg+RAG", "variant": "ft-reg", "k": 1, "score": 0.8},
        {**row, "method": "FT-reg", "variant": "ft-reg", "score": 0.2},
        {**row, "method": "FT-par(10)", "variant": "ft-par-10", "score": 0.31},
        {**row, "method": "FT-par(10)", "variant": "ft-par-10-fixed", "score": 0.24}])
    t = study.memorisation_vs_accuracy(memo, scores)
    assert list(t.variant) == ["ft-reg", "ft-par-10", "ft-par-10-fixed"]  # epochs by N, then steps; unscored dropped
    got = t.set_index("variant")
    assert got.loc["ft-reg", "acc"] == 0.2 and got.loc["ft-par-10", "acc"] == 0.31  # not the +RAG row
    assert got.loc["ft-par-10", "kb_loss_after"] == 0.5 and got.loc["ft-par-10", "par_loss_after"] == 0.6
    assert got.loc["ft-par-10-fixed", "budget"] == "steps" and set(t.base_acc) == {0.25}
    md = plots.learned_markdown(t)
    assert "| m | t | ft-par-10 | 10 | epochs | 4.00 -> 0.50 | 0.60 | 0.310 [0.000, 1.000] | 0.250 |" in md
    assert "no fine-tuned adapters" in plots.learned_markdown(study.memorisation_vs_accuracy(None, scores))


def test_claim4_compares_ft_par_10_at_fixed_epochs_not_its_fixed_step_twin(tmp_path):
    n = 40
    accs = {"base": [0] * n, "FT-reg": [1 if i < 8 else 0 for i in range(n)],
            "FT-par": [1 if i < 9 else 0 for i in range(n)]}
    specs = _fake_run(tmp_path, accs)
    for variant, budget, good in (("ft-par-10", "epochs", 30), ("ft-par-10-fixed", "steps", 8)):
        spec = study.ScoreSpec(model="m", task="fictional_news", method="FT-par(10)", adapter_dir=variant,
                               variant=variant, n_paraphrases=10, budget=budget)
        specs.append(spec)
        write_jsonl(layout.score_cache_dir(tmp_path) / f"{spec.key()}.jsonl",
                    [{"id": f"q{i}", "acc": int(i < good), "acc_norm": int(i < good)} for i in range(n)])
    _, claims = _claims(tmp_path, specs)
    ev = {(e["a"], e["b"]): e for e in claims[4]["evidence"]}
    assert ev[("FT-par(10)", "FT-reg")]["acc_a"] == pytest.approx(30 / n)  # the fixed-epochs adapter, not 8/40
    assert ev[("FT-par(10)", "FT-reg")]["holds"] and ev[("FT-par", "FT-reg")]["holds"] is None
    assert claims[4]["verdict"] == "supported where decided"  # FT-par(2)'s +1 question cannot tell


def test_base_by_kind_flags_a_kind_the_question_gives_away():
    """Per probe kind, beside chance: a kind the base model gets right too often is flagged, others not."""
    qs = [Question(id=f"q{i}", question="?", choices=list("abcd"), answer=0, kind="mem" if i < 200 else "comp")
          for i in range(400)]
    task = Task("fictional_knowledge", qs, [Document("d", "t", "x")])
    rows = [{"model": "m", "task": "fictional_knowledge", "method": "base", "shots": 0, "k": 0, "style": "cloze",
             "id": f"q{i}", "acc": 1, "acc_norm": int(i % 4 == 0) if i < 200 else int(i % 5 != 0)} for i in range(400)]
    noise = [dict(r, method="base+RAG", k=1, acc_norm=1) for r in rows] + [dict(rows[0], id="not-a-question")]
    table = study.base_by_kind(rows + noise, {"fictional_knowledge": task})
    got = {r["kind"]: r for r in table.to_dict("records")}
    assert list(table["kind"]) == ["comp", "mem", "all"]
    assert got["mem"]["n"] == 200 and got["mem"]["score"] == 0.25 and got["mem"]["at_chance"]
    assert got["comp"]["score"] == 0.8 and not got["comp"]["at_chance"] and got["comp"]["chance"] == 0.25
    assert got["all"]["n"] == 400 and got["all"]["score"] == pytest.approx(0.525)
    md = plots.chance_markdown(table)
    assert "| m | fictional_knowledge | comp | 200 | 0.800 [" in md and "**no**" in md
    assert "no base scores" in plots.chance_markdown(study.base_by_kind([], {}))


def test_claim4_lists_one_adapter_under_two_labels_once(tmp_path):
    """With N_PAR 10 the headline FT-par is the sweep's FT-par(10): the same cell, compared once."""
    n = 40
    good = [1 if i < 30 else 0 for i in range(n)]
    specs = _fake_run(tmp_path, {"base": [0] * n, "base+RAG": [1] * n, "FT-reg": [1 if i < 8 else 0 for i in range(n)],
                                 "FT-par": good})
    spec = study.ScoreSpec(model="m", task="fictional_news", method="FT-par(10)", adapter_dir="ft-par",
                           variant="ft-par", n_paraphrases=10, budget="epochs")
    specs.append(spec)
    write_jsonl(layout.score_cache_dir(tmp_path) / f"{spec.key()}.jsonl",
                [{"id": f"q{i}", "acc": v, "acc_norm": v} for i, v in enumerate(good)])
    _, claims = _claims(tmp_path, specs)
    assert [(e["a"], e["b"]) for e in claims[4]["evidence"]] == [("FT-par", "FT-reg")]
    assert claims[4]["verdict"] == "supported"
    assert len(claims[2]["evidence"]) == 2  # base+RAG vs FT-reg and vs FT-par: different B, both kept


def test_a_comparison_whose_interval_contains_0_is_undecided_not_contradicted(tmp_path):
    n = 40
    accs = {"base": [1 if i < 10 else 0 for i in range(n)], "FT-reg": [1 if i < 10 else 0 for i in range(n)],
            "FT-par": [1 if i < 13 else 0 for i in range(n)]}  # +0.075 on 3 discordant questions: can't tell
    _, claims = _claims(tmp_path, _fake_run(tmp_path, accs))
    (e,) = claims[4]["evidence"]
    assert e["diff_lo"] <= 0 < e["diff_hi"] and e["holds"] is None
    assert claims[4]["verdict"] == "undecided"
    assert "| undecided |" in study.claims_markdown(list(claims.values()))
    accs["FT-par"] = [0] * n  # now clearly worse: contradicted
    _, claims = _claims(tmp_path, _fake_run(tmp_path, accs))
    assert claims[4]["evidence"][0]["holds"] is False and claims[4]["verdict"] == "not supported"


def test_verdicts_name_what_was_decided():
    """Decided comparisons that agree, beside undecided ones, give 'supported/not supported where decided'."""
    from kinject_utils.claims import verdict as _verdict

    assert _verdict([True, True]) == "supported" and _verdict([False]) == "not supported"
    assert _verdict([None, None]) == "undecided" and _verdict([]) == "untested"
    assert _verdict([True, None]) == "supported where decided"  # one model decided, the other cannot tell
    assert _verdict([None, False]) == "not supported where decided"
    assert _verdict([True, False, None]) == "mixed"
