"""The runner: config validation, and the tiny config end to end through every notebook."""
import csv
from pathlib import Path

import pytest

from kinject_utils import runner

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_are_valid_and_only_set_declared_parameters():
    declared = set()
    for nb in runner.list_notebooks(ROOT):
        declared |= set(runner.notebook_parameters(nb))
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert {"tiny.yaml", "default.yaml"} <= {c.name for c in configs}
    assert any(c.name.startswith("paper_") for c in configs)
    for c in configs:
        cfg = runner.load_config(c)
        assert set(cfg["params"]) <= declared, f"{c.name}: {set(cfg['params']) - declared}"
        for num, over in cfg["notebooks"].items():
            nb = next(p for p in runner.list_notebooks(ROOT) if p.name.startswith(num))
            assert set(over) <= set(runner.notebook_parameters(nb)), f"{c.name}: notebook {num}"


def test_bad_configs_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nparms: {}\n")
    with pytest.raises(runner.ConfigError, match="unknown top-level keys"):
        runner.load_config(bad)
    bad.write_text("params: [1, 2]\n")
    with pytest.raises(runner.ConfigError, match="'params' must be a mapping"):
        runner.load_config(bad)
    bad.write_text("notebooks: {three: {}}\n")
    with pytest.raises(runner.ConfigError, match="notebook numbers"):
        runner.load_config(bad)
    with pytest.raises(runner.ConfigError, match="not found"):
        runner.load_config(tmp_path / "missing.yaml")
    typo = tmp_path / "typo.yaml"
    typo.write_text("params: {RESULT_DIR: x}\n")
    with pytest.raises(runner.ConfigError, match="RESULT_DIR"):
        runner.run_notebooks(typo, root=ROOT, out_dir=tmp_path / "out")


def test_runner_stops_at_first_failing_cell(tmp_path, capsys):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError):
        runner.run_notebooks({"name": "t", "offline": True, "params": {}, "notebooks": {}},
                             only=["06"], root=ROOT, out_dir=tmp_path,
                             extra_params={"RESULTS_DIR": 12345})  # wrong type -> first cell using it fails
    err = capsys.readouterr().err
    assert "06_plot_results.ipynb FAILED in cell" in err and "--- error ---" in err


@pytest.mark.slow
def test_tiny_config_end_to_end(tmp_path):
    results, figures = tmp_path / "results", tmp_path / "figures"
    executed = runner.run_notebooks(ROOT / "configs" / "tiny.yaml", root=ROOT, out_dir=tmp_path / "runs",
                                    extra_params={"RESULTS_DIR": str(results), "FIGURES_DIR": str(figures)})
    assert [p.name[:2] for p in executed] == ["01", "02", "03", "04", "05", "06"]
    # every stage handed its files on
    assert (results / "01_tasks" / "fictional_news" / "questions.jsonl").exists()
