"""The stages: each notebook's parameters are its stage's settings, and the plan counts what the run does."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from kinject_utils import layout, plan, runner, stages, tasks
from kinject_utils.finetune import read_adapter_index
from kinject_utils.io import read_jsonl
from kinject_utils.paraphrase import read_paraphrases

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


@pytest.mark.parametrize("num", sorted(stages.SETTINGS))
def test_each_notebook_declares_exactly_its_stage_settings_with_the_same_defaults(num):
    declared = runner.declared_parameters(ROOT)[num]
    defaults = {k: v for k, v in plan._defaults(declared).items()}
    cls = stages.SETTINGS[num]
    assert {f.name.upper() for f in dataclasses.fields(cls)} == set(defaults), num
    built = cls.from_params(defaults)
    assert dataclasses.asdict(built) == dataclasses.asdict(cls()), f"notebook {num}'s defaults differ from {cls}"


def test_a_misspelt_parameter_answers_did_you_mean_and_a_missing_one_names_the_mismatch():
    params = plan._defaults(runner.declared_parameters(ROOT)["03"])
    with pytest.raises(ValueError, match=r"'epoch' \(did you mean epochs\?\)"):
        stages.finetune.FinetuneSettings.from_params({**params, "EPOCH": 2})
    params.pop("EPOCHS")
    with pytest.raises(ValueError, match=r"\['EPOCHS'\] are missing"):
        stages.finetune.FinetuneSettings.from_params(params)
    with pytest.raises(ValueError, match="FinetuneSettings.fixed_budget must be one of"):
        stages.finetune.FinetuneSettings(fixed_budget="sometimes")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_notebook_code_cells_are_short_and_define_nothing(nb):
    """Notebooks orchestrate and show: one library call per section, no function defined, no code cell over
    10 non-blank lines (the parameter cell excepted: one line per parameter)."""
    for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
        if cell["cell_type"] != "code" or "parameters" in cell["metadata"].get("tags", []):
            continue
        src = "".join(cell["source"])
        assert not re.search(r"^\s*(def|class) ", src, re.M), f"{nb.name} cell {i} defines a function or class"
        n = sum(1 for line in src.splitlines() if line.strip())
        assert n <= 10, f"{nb.name} cell {i} has {n} lines: move the work into kinject_utils"


def test_the_sweep_rule_lives_in_one_place():
    s = stages.finetune.FinetuneSettings(models=["a", "b"], ft_models=[], sweep=[0, 2], sweep_models=["a"], n_par=2,
                                         fixed_budget="ft-reg", reg_epochs=3)
    assert s.variants_for("a") == {"sweep": [0, 2], "n_par": 2, "fixed_budget": "ft-reg", "reg_epochs": 3}
    assert s.variants_for("b") == {"sweep": [], "n_par": 2, "fixed_budget": "off", "reg_epochs": 3}


def test_ft_models_picks_the_fine_tuned_models_of_models():
    s = stages.finetune.FinetuneSettings(models=["a", "b", "c"], ft_models=["c", "a"])
    assert s.trained_models() == ["a", "c"]  # in MODELS' order
    assert stages.finetune.FinetuneSettings(models=["a", "b"], ft_models=[]).trained_models() == ["a", "b"]
    with pytest.raises(ValueError, match=r"FT_MODELS \['x'\] must name models of MODELS"):
        stages.finetune.FinetuneSettings(models=["a"], ft_models=["x"])


def check_plan_counts(before: dict[str, stages.StagePlan], results: Path) -> None:
    """What the stages planned before a run (``before``: notebook number -> plan) is what the run wrote:
    tasks' questions and documents, paraphrased documents, each adapter's optimiser steps, queries
    retrieved for, and every score cell with its questions."""
    import csv

    built = {n: tasks.load_task(layout.task_dir(results, n)) for n in before["01"].counts["questions"]}
    assert before["01"].counts["questions"] == {n: len(t.questions) for n, t in built.items()} != {}
    assert before["01"].counts["docs"] == {n: len(t.docs) for n, t in built.items()}
    assert before["02"].counts["documents"] == {n: len(read_paraphrases(results, n))
                                                for n in before["02"].counts["documents"]}
    index = read_adapter_index(results)
    assert before["03"].counts["adapters"] == {f"{r['model']} / {r['task']} / {r['variant']}": int(r["budget_steps"])
                                               for r in index} != {}
    assert before["04"].counts["queries"] == {n: sum(1 for _ in read_jsonl(layout.retrieval_dir(results, n) /
                                                                           "retrieved.jsonl"))
                                              for n in before["04"].counts["queries"]}
    with open(layout.scores_csv(results), newline="", encoding="utf-8") as fh:
        scored = {stages.score.cell_key(r): int(r["n"]) for r in csv.DictReader(fh) if r["subject"] == "all"}
    assert before["05"].counts["cells"] == scored != {}


def test_plan_07_counts_questions_answers_and_sets():
    p = {"MODELS": ["smollm2-135m"], "DEVICE": "cpu", "N_QUESTIONS": 15, "N_FICTIONAL": 15, "N_PROMPTS": 4,
         "N_SAMPLES": 3, "TRAIN_MODELS": ["best"], "UNKNOWN_SHARES": [0, 0.5, 1], "TRAIN_SIZE": 12,
         "SINGLE_SIZE": 6, "EPOCHS": 6}
    text = "\n".join(stages.plan_07(p).lines)
    assert "~75 questions" in text and "~1,200 answers per model" in text  # (4 x 15 + 15) x 4 x (1 + 3)
    assert "up to 7 sets of 12" in text and "6 epochs" in text


def _news(n_docs: int = 4, n_q: int = 10) -> tasks.Task:
    docs = [tasks.Document(f"d{i}", f"Story {i}", f"Story {i} says that the mayor of Town{i} opened a bridge. " * 3)
            for i in range(n_docs)]
    qs = [tasks.Question(f"q{i}", f"Who opened the bridge in Town{i % n_docs}?", ["the mayor", "a dog", "b", "c"], 0,
                         source_doc_ids=[f"d{i % n_docs}"]) for i in range(n_q)]
    return tasks.Task("fictional_news", qs, docs)


def test_score_plan_counts_adapter_cells_only_for_the_models_03_trains(tmp_path):
    """Model b is scored (05's MODELS) but not fine-tuned (03's FT_MODELS): base and base+RAG only. Model a gets
    FT-reg and FT-par (each with +RAG) and the sweep at fixed epochs and at FT-reg's steps."""
    task = _news()
    pars = {"fictional_news": {d.doc_id: [f"In Town{i} a bridge was opened by the mayor, version {j}." * 3
                                          for j in range(10)] for i, d in enumerate(task.docs)}}
    s03 = stages.finetune.FinetuneSettings(results_dir=str(tmp_path), models=["a", "b"], ft_models=["a"],
                                           tasks=["fictional_news"], ft_tasks=[], n_par=2, sweep=[0, 2, 10],
                                           sweep_models=["a"])
    p03 = stages.finetune.plan(s03, {"fictional_news": task}, pars, warn=False)
    assert set(p03.counts["adapters"]) >= {"a / fictional_news / ft-reg", "a / fictional_news / ft-par",
                                           "a / fictional_news / ft-par-10"}
    s05 = stages.score.ScoreSettings(results_dir=str(tmp_path), models=["a", "b"], tasks=["fictional_news"])
    cells = stages.score.plan(s05, {"fictional_news": task}, stages.finetune.planned_adapters(s03, p03),
                              ["fictional_news"]).counts["cells"]
    methods = {m: sorted(k.split(" / ")[2] for k in cells if k.startswith(f"{m} / ")) for m in ("a", "b")}
    assert methods["b"] == ["base", "base+RAG"]
    assert {"FT-reg", "FT-par", "FT-reg+RAG", "FT-par+RAG", "FT-par(0)", "FT-par(2)", "FT-par(10)"} <= set(methods["a"])
    budgets = {k.split(" / ")[-1] for k in cells if "FT-par(10)" in k}
    assert budgets == {"epochs", "steps"}, budgets  # the fixed-step twin of FT-par(10) is scored too
    assert set(cells.values()) == {10}
    no_sweep = stages.score.plan(dataclasses.replace(s05, score_sweep=False), {"fictional_news": task},
                                 stages.finetune.planned_adapters(s03, p03), ["fictional_news"]).counts["cells"]
    assert not any("FT-par(" in k for k in no_sweep)
