"""The executors (kinject_utils.execute): local and Ray give the same files; settings, schedule and plan."""
import csv
import io
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from kinject_utils import execute, layout, plan, runner
from kinject_utils.stages import StagePlan
from kinject_utils.stages.score import ScoreSettings

ROOT = Path(__file__).resolve().parents[1]


def test_executor_settings_name_the_problem_and_the_fix():
    assert execute.ExecutorSettings().executor == "local"
    with pytest.raises(ValueError, match=r"executor must be one of \('local', 'ray'\).*pip install -e \.\[ray\]"):
        execute.ExecutorSettings(executor="dask")
    with pytest.raises(ValueError, match="task_cpus must be an integer >= 0"):
        execute.ExecutorSettings(executor="ray", task_cpus=-1)
    with pytest.raises(ValueError, match="ray_address must be 'auto' or a Ray address"):
        execute.ExecutorSettings(executor="ray", ray_address="")
    with pytest.raises(ValueError, match="EXECUTOR|executor"):  # a notebook's parameters check it too
        ScoreSettings(executor="slurm")


def test_ray_executor_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as where it is not installed
    with pytest.raises(ImportError, match=r"pip install -e \.\[ray\]"):
        execute.run_jobs([_Job(1)], execute.ExecutorSettings(executor="ray"), progress=False)


class _Job:
    gpu = False

    def __init__(self, n):
        self.n, self.label = n, f"job {n}"

    def __call__(self):
        return self.n * 10


def test_local_executor_runs_every_job_in_order_here():
    assert execute.run_jobs([_Job(i) for i in range(4)], progress=False) == [0, 10, 20, 30]


def test_schedule_puts_the_longest_job_first_on_the_least_loaded_worker():
    jobs = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 3.0, "e": 1.0}
    out = execute.schedule(jobs, 2)
    assert out == [["a", "d"], ["b", "c", "e"]]  # a | b, c onto b (4 < 5), d onto a (5 < 7), e onto b: 8 | 8
    assert execute.schedule(jobs, 1) == [["a", "b", "c", "d", "e"]]
    assert [len(w) for w in execute.schedule(jobs, 8)] == [1, 1, 1, 1, 1, 0, 0, 0]
    with pytest.raises(ValueError, match="workers must be >= 1"):
        execute.schedule(jobs, 0)


def test_plan_schedule_gives_each_worker_its_adapters_and_the_wall_time():
    rows = [{"label": f"m / t / v{i}", "minutes": m} for i, m in enumerate([60.0, 30.0, 30.0, 15.0])]
    p = StagePlan("03", "fine-tune", counts={"rows": rows}, hours=135 / 60)
    plan.add_schedule(p, 2, "ray")
    assert p.hours == pytest.approx(75 / 60)  # 60 | 30 + 30, then 15 onto the first: 75 | 60
    text = "\n".join(p.lines)
    assert "worker 1: 75.0 min: m / t / v0, m / t / v3" in text and "worker 2: 60.0 min: m / t / v1, m / t / v2" in text
    assert "expected wall time on 2 workers: 1.25 h (one after another: 2.25 h; 4 jobs, speed-up 1.8x)" in text
    cells = {"m / t / base / 0 / 0 /  / ": 40, "m / t / FT-reg / 0 / 0 / ft-reg / ": 40,
             "m / t / FT-reg+RAG / 0 / 1 / ft-reg / ": 40}
    p5 = StagePlan("05", "score", counts={"cells": cells}, hours=None)
    plan.add_schedule(p5, 2, "local")
    text = "\n".join(p5.lines)
    assert "m / t / ft-reg" in text and "80 questions" in text and "set EXECUTOR: ray" in text and p5.hours is None


def _csv_without(path: Path, drop: str) -> str:
    """The CSV's text with one column removed (the rest byte for byte as written)."""
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    i = rows[0].index(drop)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([r[:i] + r[i + 1:] for r in rows])
    return out.getvalue()


def _kill_once(label_part: str, seen: list[str], stop: threading.Event, after_s: float = 3.0) -> None:
    """SIGKILL the first Ray worker that has run a task whose name contains ``label_part`` for ``after_s`` seconds (its
    process title is ``ray::<task name>`` while it runs); the label goes to ``seen``."""
    import psutil

    first: dict[int, float] = {}
    while not stop.is_set() and not seen:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            title = " ".join(proc.info["cmdline"] or []).strip()  # Ray pads its titles with spaces
            if title.startswith("ray::") and label_part in title:
                t0 = first.setdefault(proc.info["pid"], time.monotonic())
                if time.monotonic() - t0 >= after_s:
                    proc.kill()
                    seen.append(title)
                    return
        time.sleep(0.2)


class _Flaky:
    """A job that fails its first ``fails`` attempts (counted in ``marker``, across Ray's workers)."""

    gpu = False

    def __init__(self, label: str, marker: Path, fails: int):
        self.label, self.marker, self.fails = label, marker, fails

    def __call__(self) -> int:
        n = int(self.marker.read_text()) + 1 if self.marker.exists() else 1
        self.marker.write_text(str(n))
        if n <= self.fails:
            raise RuntimeError(f"attempt {n} failed")
        return n


@pytest.mark.slow
def test_ray_retries_a_failed_task_once_and_names_one_that_fails_twice(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    here = str(Path(__file__).resolve().parent)  # the workers import this module to unpickle _Flaky
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    jobs = [_Flaky("once", tmp_path / "a", 1), _Flaky("always", tmp_path / "b", 9), _Flaky("fine", tmp_path / "c", 0)]
    with pytest.raises(execute.JobsFailed, match=r"1 job\(s\) failed after a retry \(2 finished") as err:
        execute.run_jobs(jobs, execute.ExecutorSettings(executor="ray", task_cpus=1), progress=False)
    assert err.value.failures == {"always": "RuntimeError: attempt 2 failed"}
    assert [(tmp_path / m).read_text() for m in "abc"] == ["2", "2", "1"]  # one retry each, none for "fine"


@pytest.mark.slow
def test_tiny_config_on_a_local_ray_cluster_gives_the_local_files(tmp_path, monkeypatch):
    """Notebooks 03 and 05 of the tiny config with EXECUTOR ray (a private Ray, started and shut down by the
    notebook; one adapter's worker killed mid-run and retried by Ray) write the local executor's
    05_scores.csv, byte for byte but for its wall-time column, and the same adapters; and so does a run
    resumed from half the score cells (what a run killed half-way leaves: every cell is written atomically)."""
    pytest.importorskip("ray")
    monkeypatch.setenv("KINJECT_DTYPE", "float32")
    local, on_ray = tmp_path / "local", tmp_path / "ray"

    def run(results: Path, only: list[str], sets: tuple = ()) -> None:
        runner.run_notebooks(ROOT / "configs" / "tiny.yaml", only=only, root=ROOT, out_dir=tmp_path / "runs",
                             extra_params={"RESULTS_DIR": str(results), "FIGURES_DIR": str(tmp_path / "fig")},
                             sets=list(sets))

    run(local, ["01", "02", "03", "04", "05"])
    shutil.copytree(local, on_ray, ignore=shutil.ignore_patterns(layout.adapters_dir(local).name,
                                                                  layout.score_cache_dir(local).name))
    layout.scores_csv(on_ray).unlink()  # the adapters (and their index) were not copied: Ray trains them
    ray_sets = ("EXECUTOR=ray", "TASK_CPUS=2")  # the local run's 2 threads: the same arithmetic
    killed: list[str] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_once, args=("/ ft-par", killed, stop), daemon=True)
    killer.start()
    try:
        run(on_ray, ["03", "05"], ray_sets)
    finally:
        stop.set()
    assert killed, "no Ray worker ran ft-par for 3 s: the kill-and-retry was not exercised"
    want = _csv_without(layout.scores_csv(local), "seconds")
    assert _csv_without(layout.scores_csv(on_ray), "seconds") == want
    cols = ("model", "task", "variant", "budget_steps", "tokens", "final_loss", "adapter_dir")
    index = [[r[c] for c in cols] for r in csv.DictReader(layout.adapter_index(local).open())]
    assert [[r[c] for c in cols] for r in csv.DictReader(layout.adapter_index(on_ray).open())] == index

    cells = sorted(layout.score_cache_dir(on_ray).glob("*.jsonl"))
    for p in cells[::2]:  # half the cells, as a run killed half-way leaves them
        p.unlink()
    kept = {p: p.stat().st_mtime_ns for p in cells[1::2]}
    run(on_ray, ["05"], ray_sets)
    assert _csv_without(layout.scores_csv(on_ray), "seconds") == want
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "finished cells were scored again"


def test_tasks_get_the_projects_environment_but_no_secret(monkeypatch):
    monkeypatch.setenv("KINJECT_DTYPE", "float32")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("KINJECT_API_KEY", "sk-secret")
    env = execute._env()
    assert env["KINJECT_DTYPE"] == "float32" and env["HF_HUB_OFFLINE"] == "1"
    assert "HF_TOKEN" not in env and "KINJECT_API_KEY" not in env
