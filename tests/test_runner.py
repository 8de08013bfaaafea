"""The runner: shipped configs, --plan, timings, and the tiny config end to end with every stage's outputs checked."""
import csv
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from logcap import kinject_log, text
from test_stages import check_plan_counts

from kinject_utils import layout, plan, runner
from kinject_utils.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY_TASK = "fictional_news"
SLICK_CATEGORIES = {"HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"}
METHODS = {"base", "base+RAG", "FT-reg", "FT-par", "FT-reg+RAG", "FT-par+RAG"}


def test_import_star_works():
    ns: dict = {}
    exec("from kinject_utils.runner import *", ns)  # noqa: S102 - the check issue 11 asks for
    assert {"run_notebooks", "load_config", "RunSettings", "ConfigError", "main"} <= set(ns)


def test_shipped_configs_are_valid_against_the_notebooks():
    declared = runner.declared_parameters(ROOT)
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert {"tiny.yaml", "default.yaml", "paper_base.yaml"} <= {c.name for c in configs}
    for c in configs:
        runner.load_config(c).check_against(declared)


def test_run_field_chooses_the_notebooks_and_only_narrows_it(tmp_path):
    def chosen(cfg, only=None, sets=None):
        return [nb.name[:2] for nb, _ in runner.prepare(cfg, only=only, root=ROOT, sets=sets)[1]]

    assert chosen(ROOT / "configs" / "default.yaml") == ["01", "02", "03", "04", "05", "06"]
    assert chosen(ROOT / "configs" / "tiny.yaml") == ["01", "02", "03", "04", "05", "06", "07"]
    assert chosen(ROOT / "configs" / "tiny.yaml", only=["07", "1"]) == ["01", "07"]
    # YAML reads 01 as an int and 08 as text; both are notebook numbers; --set run=... overrides the list
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\nrun: [07, 01]\n", encoding="utf-8")
    assert runner.load_config(cfg).run == ["01", "07"] and chosen(cfg) == ["01", "07"]
    assert chosen(cfg, sets=["run=[2]"]) == ["02"]
    assert chosen({"name": "all"}) == [p.name[:2] for p in runner.list_notebooks(ROOT)]
    # an unknown number, a non-list, and --only outside run: each names the problem and the fix
    cfg.write_text("name: c\nrun: [\"01\", \"09\"]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"run: there is no notebook 09; the notebooks are 01, .*07\. "
                                          r"Fix: remove 09 from 'run'"):
        runner.prepare(cfg, root=ROOT)
    with pytest.raises(ConfigError, match=r"'run' must be a non-empty list of notebook numbers, e\.g\. run: \["):
        runner.prepare({"name": "c", "run": "01"}, root=ROOT)
    with pytest.raises(ConfigError, match=r"--only 07: not in this config's run list \(01, 02, 03, 04, 05, 06\).*"
                                          r"--set run=\[01, 02, 03, 04, 05, 06, 07\]"):
        runner.prepare(ROOT / "configs" / "default.yaml", only=["07"], root=ROOT)


def test_paper_configs_share_one_base_and_differ_only_in_model_and_folders():
    papers = {c.stem: runner.load_config(c) for c in (ROOT / "configs").glob("paper_*.yaml") if c.stem != "paper_base"}
    assert len(papers) == 3
    for name, s in papers.items():
        text = (ROOT / "configs" / f"{name}.yaml").read_text()
        assert "extends: paper_base.yaml" in text and s.name == name and s.offline is False
        assert s.params["RESULTS_DIR"] == f"runs/{name}/results" and len(s.params["MODELS"]) == 1
        assert s.notebooks["03"]["SWEEP_MODELS"] == s.params["MODELS"]
        assert s.notebooks["03"]["FT_PRESET"] == "paper_qlora" and s.notebooks["05"]["DEVICE"] == "cuda"
        assert s.run == ["01", "02", "03", "04", "05", "06"]  # the FT-vs-RAG study; 07 has its own config

    def strip(s):
        return ({k: v for k, v in s.params.items() if k not in ("RESULTS_DIR", "FIGURES_DIR", "MODELS")},
                {n: {k: v for k, v in o.items() if k != "SWEEP_MODELS"} for n, o in s.notebooks.items()})
    assert len({json.dumps(strip(s), sort_keys=True) for s in papers.values()}) == 1


def test_set_overrides_one_notebook_or_all(tmp_path):
    s, chosen, _ = runner.prepare(ROOT / "configs" / "tiny.yaml", root=ROOT, sets=["03.EPOCHS=3", "SEED=7"])
    params = {nb.name[:2]: p for nb, p in chosen}
    assert params["03"]["EPOCHS"] == 3 and params["01"]["SEED"] == 7 and params["03"]["SEED"] == 7
    assert "EPOCHS" not in params["01"]


@pytest.mark.slow  # generates the large tasks and tokenizes every variant's corpus (~30 s)
def test_plan_of_a_paper_config_runs_offline_and_prints_devices_tokens_and_hours():
    r = subprocess.run([sys.executable, "-m", "kinject_utils.runner", "-f", "configs/paper_mistral7b.yaml", "--plan"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "mistral-7b" in out and "cuda" in out and "bge-large-en" in out
    assert "training tokens" in out and "optimiser steps" in out and "scored questions" in out
    assert re.search(r"tok/s \(measured [\d-]+ on an H100 80GB", out), out[-2000:]
    assert re.search(r"expected: \d+\.\d+ h \([\d.]+ min\) of training from measured tokens/s", out), out[-600:]
    assert "Wikipedia, size unknown offline" in out and "not measured" in out
    assert "SmolLM2 tokenizer" in out or "words x 1.3" in out


def test_timing_table_and_weights(tmp_path):
    table = runner.timing_table({"01": 30.0, "03": 90.0}, {"01": "01_prepare_data", "03": "03_finetune_qlora"})
    assert "25.0%" in table and "75.0%" in table and "1m 30s" in table and "total" in table
    timings = layout.timings_json(tmp_path)
    w, why = runner._weights(timings, ["01", "03", "42"])
    assert "fixed weights" in why and all(v > 0 for v in w.values())  # even a notebook the guess does not know
    runner._save_timings(timings, {"01": 12.0, "03": 300.0})
    w, why = runner._weights(timings, ["01", "03"])
    assert w == {"01": 12.0, "03": 300.0} and "last run" in why  # the slower notebook takes the larger share
    # a notebook the last run did not time: the fixed guess for all, never two scales mixed in one bar
    assert "fixed weights" in runner._weights(timings, ["01", "03", "04"])[1]
    runner._save_timings(timings, {"04": 5.0})  # merged into the earlier seconds
    assert runner._weights(timings, ["01", "03", "04"])[0] == {"01": 12.0, "03": 300.0, "04": 5.0}


def _fake_root(tmp_path: Path, cells: list[str]) -> Path:
    """A repository root with one notebook ``notebooks/01_x.ipynb``: a parameters cell, then ``cells``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("RESULTS_DIR: str = \"results\"  # where results go")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    (tmp_path / "root" / "notebooks").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "root" / "notebooks" / "01_x.ipynb")
    return tmp_path / "root"


def test_runner_stops_at_first_failing_cell(tmp_path):
    import papermill as pm

    root = _fake_root(tmp_path, ["x = 1", "raise RuntimeError('boom in cell two')", "open('never', 'w')"])
    with kinject_log(logging.ERROR) as records, pytest.raises(pm.PapermillExecutionError):
        runner.run_notebooks({"name": "t"}, root=root, out_dir=tmp_path / "runs")
    err = text(records)
    assert "01_x.ipynb FAILED in cell" in err and "--- error ---" in err and "boom in cell two" in err
    assert not (root / "never").exists() and not (root / "notebooks" / "never").exists()


def test_a_notebook_warning_reaches_the_runner_terminal_while_it_runs_and_in_the_summary(tmp_path):
    """The notebook logs a warning, then waits until the test has seen it on the runner's stderr."""
    import subprocess
    import sys

    go = tmp_path / "go"
    root = _fake_root(tmp_path, [
        "from kinject_utils.log import get_logger\n"
        "get_logger('data').warning('very large document big.txt: split it')\n"
        "get_logger('data').info('an info line stays in the notebook')",
        "import time, pathlib\n"
        f"deadline = time.time() + 60\nwhile not pathlib.Path({str(go)!r}).exists():\n"
        "    assert time.time() < deadline, 'the runner never relayed the warning'\n    time.sleep(0.2)",
    ])
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / "c.yaml").write_text("name: t\n")
    cmd = [sys.executable, "-m", "kinject_utils.runner", "-f", "c.yaml", "--out", str(tmp_path / "r")]
    proc = subprocess.Popen(cmd, cwd=root, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "01_x: [kinject.data] WARNING very large document big.txt: split it" in line:
            go.touch()  # only now may the notebook finish
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, "".join(seen) + rest
    assert go.exists(), "".join(seen)
    assert "1 warning(s) in this run" in rest and "01_x: [kinject.data] WARNING very large document" in rest, rest
    assert "an info line" not in "".join(seen) + rest


def test_runner_warns_before_starting_when_later_notebooks_expect_tasks_01_will_not_build(tmp_path):
    with kinject_log() as rec:
        runner.prepare({"name": "t", "run": ["01", "02", "03"], "notebooks": {"01": {"TASKS": ["custom"]}}}, root=ROOT)
    msg = text(rec)
    assert "notebook 02 is given TASKS=" in msg and "set TASKS under params:" in msg
    with kinject_log() as rec:
        runner.prepare({"name": "t", "run": ["01", "02", "03"], "params": {"TASKS": ["custom"]}}, root=ROOT)
    assert "is given TASKS" not in text(rec)


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_stage_outputs(results: Path) -> None:
    """Schema and sanity of every stage's outputs of the tiny config (one task, one model)."""
    # 01: the task with questions (4 options, a valid answer index) and a knowledge base
    tdir = layout.task_dir(results, TINY_TASK)
    qs = _jsonl(tdir / "questions.jsonl")
    assert qs and all(q["question"] and len(q["choices"]) == 4 and 0 <= q["answer"] < 4 for q in qs)
    assert _jsonl(tdir / "kb.jsonl")
    # 02: one row per document, each with accepted paraphrases
    par = _jsonl(layout.paraphrase_file(results, TINY_TASK))
    assert par and all(r["doc_id"] and isinstance(r["paraphrases"], list) for r in par)
    assert any(r["paraphrases"] for r in par)
    # 03: the adapter index names existing adapter folders (relative to the results folder)
    idx = _rows(layout.adapter_index(results))
    assert {"ft-reg", "ft-par"} <= {r["variant"] for r in idx}
    for r in idx:
        folder = Path(r["adapter_dir"])
        folder = folder if folder.is_absolute() else results / folder
        assert (folder / "adapter_config.json").exists(), f"index row {r['variant']}: no adapter at {folder}"
    # 04: one retrieved row per question, with passage ids
    ret = _jsonl(layout.retrieval_dir(results, TINY_TASK) / "retrieved.jsonl")
    assert len(ret) == len(qs) and all(r["passage_ids"] for r in ret)
    # 05: every method for the tiny task, each scored on every question notebook 01 wrote
    scores = [r for r in _rows(layout.scores_csv(results)) if r["task"] == TINY_TASK and r["subject"] == "all"]
    assert METHODS <= {r["method"] for r in scores}, f"methods missing: {METHODS - {r['method'] for r in scores}}"
    assert all(int(r["n"]) == len(qs) for r in scores), [(r["method"], r["n"]) for r in scores]
    # 06: the claims check, five claims
    claims = json.loads(layout.claims_json(results).read_text(encoding="utf-8"))
    claims = claims.get("claims", claims) if isinstance(claims, dict) else claims
    assert len({c["claim"] for c in claims}) == 5, claims
    assert layout.claims_md(results).exists()
    check_new_knowledge_outputs(results)


#: the seeded tiny run's scores (acc_norm, cloze; fp32), as two runs of the tiny config gave them, byte for byte
#: (2-core AMD EPYC, torch fp32): base 1 of 16, with retrieval 10 of 16; one epoch of FT-reg/FT-par moves nothing
TINY_SCORES = {"base": 0.0625, "base+RAG": 0.625, "FT-reg": 0.0625, "FT-par": 0.0625, "FT-reg+RAG": 0.625,
               "FT-par+RAG": 0.625, "FT-par(0)": 0.0625, "FT-par(1)": 0.0625}


def check_tiny_scores(results: Path) -> None:
    """The seeded tiny run scores what it scored before (within one question: another CPU's fp32 kernels can
    flip a near-tie), and the ordering the claims rest on holds: retrieval beats no retrieval by a margin."""
    rows = {r["method"]: r for r in _rows(layout.scores_csv(results))
            if r["task"] == TINY_TASK and r["subject"] == "all"}
    got = {m: float(r["score"]) for m, r in rows.items()}
    one = 1 / int(rows["base"]["n"])
    for plain in ("base", "FT-reg", "FT-par"):  # the claim first, so a lost ordering says so
        assert got[f"{plain}+RAG"] >= got[plain] + 6 * one, f"{plain}+RAG no longer beats {plain}: {got}"
    off = {m: (TINY_SCORES[m], got.get(m)) for m in TINY_SCORES if m not in got or abs(got[m] - TINY_SCORES[m]) > one}
    assert not off, f"tiny scores moved by more than one question (pinned, got): {off}"


def check_new_knowledge_outputs(results: Path) -> None:
    """Notebook 07: a SliCK category for every categorised question; four findings, each with a verdict."""
    slick = _rows(layout.slick_csv(results))
    assert slick and all(r["category"] in SLICK_CATEGORIES for r in slick), {r["category"] for r in slick}
    assert all(r["model"] and r["id"] for r in slick)
    findings = layout.slick_claims_md(results).read_text(encoding="utf-8")
    assert [line[:13] for line in findings.splitlines() if line.startswith("## Finding ")] == [
        f"## Finding {i}:" for i in (1, 2, 3, 4)], findings
    assert findings.count("**supported**") + findings.count("**not supported**") + findings.count(
        "**undecided**") >= 4, findings


def test_new_knowledge_checks_catch_a_bad_category_and_a_missing_finding(tmp_path):
    from kinject_utils.newknowledge import write_slick_csv

    row = {"model": "m", "id": "q1", "relation": "capital", "category": "MaybeKnown"}
    findings = "".join(f"## Finding {i}: ...\n\n| m | **{v}** |\n" for i, v in
                       enumerate(["supported", "not supported", "undecided", "supported"], 1))
    write_slick_csv([row], layout.slick_csv(tmp_path))
    layout.slick_claims_md(tmp_path).write_text(findings, encoding="utf-8")
    check_new_knowledge_outputs(tmp_path)
    write_slick_csv([row, {**row, "id": "q2", "category": "Known"}], layout.slick_csv(tmp_path))
    with pytest.raises(AssertionError):
        check_new_knowledge_outputs(tmp_path)
    write_slick_csv([row], layout.slick_csv(tmp_path))
    layout.slick_claims_md(tmp_path).write_text(findings.split("## Finding 4")[0], encoding="utf-8")
    with pytest.raises(AssertionError):
        check_new_knowledge_outputs(tmp_path)
    layout.slick_claims_md(tmp_path).write_text(findings.replace("**", ""), encoding="utf-8")  # no verdicts
    with pytest.raises(AssertionError):
        check_new_knowledge_outputs(tmp_path)


def test_tiny_score_check_catches_a_moved_score_and_a_lost_ordering(tmp_path):
    from kinject_utils.io import write_csv

    def write(scores):
        write_csv([{"task": TINY_TASK, "subject": "all", "method": m, "score": v, "n": 16} for m, v in scores.items()],
                  layout.scores_csv(tmp_path), ["task", "subject", "method", "score", "n"])

    write(TINY_SCORES)
    check_tiny_scores(tmp_path)
    write({**TINY_SCORES, "base+RAG": TINY_SCORES["base+RAG"] - 2 / 16})  # two questions lost
    with pytest.raises(AssertionError, match="moved by more than one question"):
        check_tiny_scores(tmp_path)
    write({m: 0.25 for m in TINY_SCORES})  # retrieval no longer helps
    with pytest.raises(AssertionError, match=r"base\+RAG no longer beats base"):
        check_tiny_scores(tmp_path)


def _project_copy(dest: Path) -> Path:
    """A clone-like project folder (pyproject, notebooks, configs): relative paths resolve inside it."""
    import shutil

    dest.mkdir()
    shutil.copy(ROOT / "pyproject.toml", dest)
    for sub in ("notebooks", "configs"):
        shutil.copytree(ROOT / sub, dest / sub, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return dest


@pytest.mark.slow
def test_tiny_config_end_to_end(tmp_path, monkeypatch):
    """Every notebook, run as JupyterLab runs it (working directory notebooks/), with the tiny config's own
    relative RESULTS_DIR/FIGURES_DIR: outputs land under the project root and nothing under notebooks/; the
    seeded scores are the pinned ones."""
    monkeypatch.setenv("KINJECT_DTYPE", "float32")  # the pinned scores are fp32's (auto is bf16 on an AMX CPU)
    proj = _project_copy(tmp_path / "clone")
    before = sorted(p.relative_to(proj) for p in (proj / "notebooks").rglob("*"))
    monkeypatch.chdir(proj)  # the plan resolves the config's relative folders as the notebooks will
    settings, chosen, declared = runner.prepare(proj / "configs" / "tiny.yaml", root=proj)
    planned = {p.num: p for p in plan.plan_run(settings, chosen, declared)}  # before anything exists
    executed = runner.run_notebooks(proj / "configs" / "tiny.yaml", root=proj, out_dir=tmp_path / "runs")
    nums = ["01", "02", "03", "04", "05", "06", "07"]
    assert [p.name[:2] for p in executed] == nums
    after = sorted(p.relative_to(proj) for p in (proj / "notebooks").rglob("*"))
    assert after == before, f"written under notebooks/: {sorted(set(after) - set(before))}"
    check_stage_outputs(proj / "runs" / "tiny" / "results")
    check_tiny_scores(proj / "runs" / "tiny" / "results")
    check_plan_counts(planned, proj / "runs" / "tiny" / "results")  # --plan counted what the stages did
    assert (proj / "runs" / "tiny" / "figures" / "07_categories.png").exists()
    timings = json.loads((tmp_path / "runs" / "timings.json").read_text())["seconds"]
    assert set(timings) == set(nums) and all(v > 0 for v in timings.values())


@pytest.mark.functional
def test_default_config_reproduces_the_committed_results(tmp_path, monkeypatch):
    """The default study (tens of minutes) against results/05_scores.csv: same cells, scores within 0.03."""
    # the reference run is fp32; bf16 (auto on an AMX CPU) moved cells by up to 0.04 (0.1 in a 10-question subject)
    monkeypatch.setenv("KINJECT_DTYPE", "float32")
    results = tmp_path / "results"
    runner.run_notebooks(ROOT / "configs" / "default.yaml", root=ROOT, out_dir=tmp_path / "runs",
                         extra_params={"RESULTS_DIR": str(results), "FIGURES_DIR": str(tmp_path / "figures")})
    key = ("model", "task", "subject", "method", "variant", "budget", "shots", "k")
    ref = {tuple(r[k] for k in key): r for r in _rows(ROOT / "results" / "05_scores.csv")}
    new = {tuple(r[k] for k in key): r for r in _rows(layout.scores_csv(results))}
    assert set(new) == set(ref), f"cells differ: {sorted(set(ref) ^ set(new))[:10]}"
    off = {k: (ref[k]["score"], new[k]["score"]) for k in ref
           if abs(float(ref[k]["score"]) - float(new[k]["score"])) > 0.03 or ref[k]["n"] != new[k]["n"]}
    assert not off, f"scores moved by more than 0.03 (or n changed): {off}"
