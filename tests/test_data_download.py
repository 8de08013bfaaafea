"""The data resolver against a hub that is really HTTP (a loopback server laid out as the hub is).

A fresh clone has no data folder: MMLU and fictional knowledge are downloaded once into the kinject
cache, read from there afterwards (offline), a damaged cached file is fetched again, and with no
hub, no cache and no ``KINJECT_DATA`` notebook 01 stops at once naming each task and the fixes.
"""
import os
import time

import pytest
from conftest import FK_DIR, MMLU_DIR, ROOT, need
from hub_server import LoopbackHub, hub_files
from papermill import PapermillExecutionError

from kinject_utils import data, layout, runner
from kinject_utils.data import source


@pytest.fixture(scope="module")
def files():
    need(MMLU_DIR)
    need(FK_DIR)
    return hub_files(MMLU_DIR, FK_DIR)


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A user's machine: no KINJECT_DATA, an empty kinject cache (models still found in the real one)."""
    monkeypatch.delenv("KINJECT_DATA", raising=False)
    monkeypatch.setenv("KINJECT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_download_once_then_cache_offline_then_refetch_a_damaged_file(files, fresh, monkeypatch):
    with LoopbackHub(files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        src = data.resolve_dataset("mmlu")
        assert src.origin == "hub" and src.path == source.data_cache_dir("mmlu")
        fetched = sorted(r.split()[1] for r in hub.requests if r.startswith("GET /datasets"))
        assert fetched == sorted(f"/datasets/cais/mmlu/resolve/main/{f}" for f in source.DATASETS["mmlu"].files)
        assert not any("auxiliary_train" in r or "validation" in r for r in hub.requests)
        fk = data.resolve_dataset("fictional_knowledge")
        assert fk.origin == "hub" and (fk.path / "fictional_knowledge.json").exists()
    # the server is gone: both come from the cache, checked against the recorded SHA-256
    assert data.resolve_dataset("mmlu").origin == "cache"
    assert data.resolve_dataset("fictional_knowledge").origin == "cache"
    # a damaged cached file is detected and fetched again
    damaged = src.path / "anatomy" / "test-00000-of-00001.parquet"
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(data.DataUnavailableError, match="corrupted"):
        data.resolve_dataset("mmlu")  # server down: it says why the cache was refused
    with LoopbackHub(files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        again = data.resolve_dataset("mmlu")
        assert again.origin == "hub" and any("anatomy/test" in r for r in hub.requests)
    assert data.load_mmlu("anatomy", again.path).questions  # and it reads


def test_hub_parquet_gives_the_same_questions_as_the_original_csvs(files, fresh, monkeypatch):
    with LoopbackHub(files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        cached = data.resolve_dataset("mmlu").path
    hub_task, csv_task = data.build_mmlu_task(cached), data.build_mmlu_task(MMLU_DIR)
    assert len(hub_task.questions) == 855 and len(hub_task.dev) == 25
    assert hub_task.questions == csv_task.questions and hub_task.dev == csv_task.dev


def test_a_transfer_that_does_not_match_the_hub_checksum_is_refused(files, fresh, monkeypatch):
    with LoopbackHub(files, tamper=True) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(data.DataUnavailableError, match="SHA-256"):
            data.resolve_dataset("fictional_knowledge")
    folder = source.data_cache_dir("fictional_knowledge")
    assert not folder.exists() or not any(folder.iterdir())  # nothing half-written is left


def test_an_explicit_folder_wins_and_a_wrong_one_names_itself(fresh, monkeypatch):
    need(MMLU_DIR)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # never asked
    assert data.resolve_dataset("mmlu", MMLU_DIR).origin == "explicit"
    with pytest.raises(data.DataUnavailableError, match="MMLU_DIR is .*does not hold it"):
        data.resolve_dataset("mmlu", fresh / "nowhere")
    monkeypatch.setenv("KINJECT_DATA", str(MMLU_DIR.parent))
    assert data.resolve_dataset("mmlu").origin == "KINJECT_DATA"


def _notebook_01(results, out, **params):
    cfg = {"name": "fresh", "run": ["01"], "offline": True,
           "params": {"RESULTS_DIR": str(results), "TASKS": ["fictional_news", "mmlu", "fictional_knowledge"]},
           "notebooks": {"01": {"TASK_SIZE": "tiny", "FK_JUDGE": [], "FK_MAX_QUESTIONS": 30, "TOKENIZER": "",
                                **params}}}
    return runner.run_notebooks(cfg, root=ROOT, out_dir=out)


@pytest.mark.slow
def test_notebook_01_in_a_fresh_clone_downloads_once_and_stops_clearly_without_a_hub(files, fresh, monkeypatch):
    """Through the runner (offline for models, HF_HUB_OFFLINE=1): data arrives, is reused, or the run stops."""
    results = fresh / "results"
    with LoopbackHub(files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        _notebook_01(results, fresh / "runs")
        assert sum(r.startswith("GET /datasets") for r in hub.requests) == 11  # 10 MMLU files + 1 JSON
    for task in ("fictional_news", "mmlu", "fictional_knowledge"):
        assert (layout.task_dir(results, task) / "questions.jsonl").exists(), task
    first = (layout.task_dir(results, "mmlu") / "questions.jsonl").read_bytes()
    # second run: the server is stopped, everything comes from the cache
    _notebook_01(fresh / "results2", fresh / "runs2")
    assert (layout.task_dir(fresh / "results2", "mmlu") / "questions.jsonl").read_bytes() == first
    # no hub, no cache, no KINJECT_DATA: notebook 01 stops within seconds naming both tasks and the fixes
    monkeypatch.setenv("KINJECT_CACHE", str(fresh / "empty-cache"))
    t0 = time.perf_counter()
    with pytest.raises(PapermillExecutionError) as err:
        _notebook_01(fresh / "results3", fresh / "runs3")
    elapsed = time.perf_counter() - t0
    msg = err.value.evalue
    assert err.value.ename == "DataUnavailableError"
    assert "mmlu:" in msg and "fictional_knowledge:" in msg and "KINJECT_DATA" in msg
    assert "--set TASKS=[fictional_news]" in msg and "go online once" in msg
    assert not layout.task_dir(fresh / "results3", "fictional_news").exists()  # stopped before any work
    assert elapsed < 60, elapsed  # a kernel start plus two refused connections
    assert "HF_HUB_OFFLINE" not in os.environ or os.environ["HF_HUB_OFFLINE"] == "1"
