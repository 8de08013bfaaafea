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
    s = stages.finetune.FinetuneSettings(models=["a", "b"], sweep=[0, 2], sweep_models=["a"], n_par=2)
    assert s.variants_for("a") == {"sweep": [0, 2], "n_par": 2, "fixed_budget": "ft-reg"}
    assert s.variants_for("b") == {"sweep": [0], "n_par": 2, "fixed_budget": "off"}


def _plans(config: Path, extra: dict) -> dict[str, stages.StagePlan]:
    settings, chosen, declared = runner.prepare(config, root=ROOT, extra_params=extra)
    return {p.num: p for p in plan.plan_run(settings, chosen, declared)}


@pytest.mark.slow  # notebooks 01-05 of the tiny config (~2 min on 2 cores)
def test_plan_counts_equal_what_the_tiny_run_produced(tmp_path):
    results = tmp_path / "results"
    extra = {"RESULTS_DIR": str(results), "FIGURES_DIR": str(tmp_path / "figures")}
    before = _plans(ROOT / "configs" / "tiny.yaml", extra)  # planned before anything exists
    runner.run_notebooks(ROOT / "configs" / "tiny.yaml", only=["01", "02", "03", "04", "05"], root=ROOT,
                         out_dir=tmp_path / "runs", extra_params=extra)
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
    import csv

    with open(layout.scores_csv(results), newline="", encoding="utf-8") as fh:
        scored = {stages.score.cell_key(r): int(r["n"]) for r in csv.DictReader(fh) if r["subject"] == "all"}
    assert before["05"].counts["cells"] == scored and len(scored) == 8
    after = _plans(ROOT / "configs" / "tiny.yaml", extra)  # planned again from what the run wrote: the same
    assert {k: p.counts.get("cells", p.counts.get("adapters")) for k, p in after.items() if k in ("03", "05")} == \
        {k: p.counts.get("cells", p.counts.get("adapters")) for k, p in before.items() if k in ("03", "05")}
