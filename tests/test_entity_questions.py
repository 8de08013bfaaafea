"""EntityQuestions through the data resolver, against a loopback stand-in for GitHub's raw host.

The fixture is generated here in the release's layout (``dataset/<split>/<P>.<split>.json``, a JSON list of
``{"question", "answers"}``): download once into the cache with SHA-256 recorded, load facts from it offline,
notice a damaged cached file, stop with the fix named when nothing can be had. The real release was never
downloaded from this machine.
"""
import json
import subprocess
import sys

import pytest
from conftest import ROOT
from hub_server import LoopbackHub, entity_questions_files

from kinject_utils import data, stages
from kinject_utils.data import source
from kinject_utils.newknowledge import StudyConfig, entity_question_facts, study_facts
from kinject_utils.newknowledge.entity_questions import PAPER_OOD_RELATIONS, PAPER_RELATIONS

PINNED = source.ENTITY_QUESTIONS.revision


@pytest.fixture(scope="module")
def raw():
    return entity_questions_files(source.EQ_RELATIONS)


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """No KINJECT_DATA, an empty kinject cache; the hub and GitHub hosts point at a closed port until a test serves."""
    monkeypatch.delenv("KINJECT_DATA", raising=False)
    monkeypatch.setenv("KINJECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KINJECT_GITHUB_RAW", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    return tmp_path


def test_download_once_checksum_then_facts_offline_and_a_damaged_file_is_refused(raw, fresh, monkeypatch):
    with LoopbackHub({}, raw=raw) as hub:
        monkeypatch.setenv("KINJECT_GITHUB_RAW", hub.endpoint)
        src = data.resolve_dataset("entity_questions")
        got = sorted(r.split()[1] for r in hub.requests if r.startswith("GET"))
    assert src.origin == "hub" and src.path == source.data_cache_dir("entity_questions")
    assert got == sorted(f"/princeton-nlp/EntityQuestions/{PINNED}/{f}" for f in source.ENTITY_QUESTIONS.files)
    assert len(got) == 48 and not any("/dev/" in g for g in got)
    manifest = json.loads((src.path / source.MANIFEST).read_text())
    assert manifest["revision"] == PINNED and manifest["host"] == "github"
    entry = manifest["files"]["dataset/train/P17.train.json"]
    assert entry["hub_sha256"] is None and len(entry["sha256"]) == 64  # GitHub's ETag is not taken for a SHA-256
    # the server is gone: facts come from the cache
    facts = entity_question_facts(["P17", "P36"], per_relation=None, seed=0)
    by_rel = {r: [f for f in facts if f.relation == r] for r in ("P17", "P36")}
    assert all(len(v) == 10 for v in by_rel.values())  # 6 train + 6 test - 1 empty answer - 1 repeated question
    alias = next(f for f in facts if f.id == "eq/P17/train/0")
    assert alias.answer == "Object P17 train 0" and alias.aliases == ("Alias P17 0",)
    assert alias.is_correct("alias p17 0") and alias.is_correct("The Object P17 train 0.")
    assert not alias.is_correct("Object P17 train 1")
    capped = entity_question_facts(["P17", "P36"], per_relation=4, seed=1)
    assert len(capped) == 8 and capped == entity_question_facts(["P17", "P36"], per_relation=4, seed=1)
    assert {f.id for f in capped} != {f.id for f in entity_question_facts(["P17", "P36"], per_relation=4, seed=2)}
    # a damaged cached file: refused, and without a host the error says why and how to fix it
    damaged = src.path / "dataset" / "test" / "P36.test.json"
    damaged.write_bytes(damaged.read_bytes().replace(b"Object", b"Objekt", 1))
    with pytest.raises(data.DataUnavailableError, match=r"corrupted.*Fix: set ENTITY_QUESTIONS_DIR"):
        entity_question_facts(["P17"], per_relation=3)


def test_offline_with_nothing_local_stops_naming_the_fix(fresh):
    with pytest.raises(data.DataUnavailableError) as err:
        entity_question_facts(list(PAPER_RELATIONS), per_relation=10)
    msg = str(err.value)
    assert "entity_questions:" in msg and "ENTITY_QUESTIONS_DIR not set" in msg and "KINJECT_DATA not set" in msg
    assert "GitHub http://127.0.0.1:9/princeton-nlp/EntityQuestions" in msg and "FACTS=geonames" in msg
    assert not source.data_cache_dir("entity_questions").exists() or not any(
        source.data_cache_dir("entity_questions").rglob("*.json"))
    assert "download from GitHub" in data.describe_source("entity_questions")  # what --plan says, no network


def test_a_local_copy_in_either_layout_is_used_without_a_download(raw, fresh, monkeypatch):
    files = raw["princeton-nlp/EntityQuestions"]
    unzipped = fresh / "eq" / "entity_questions"
    for name, blob in files.items():  # the unzipped dataset.zip layout: train/P17.train.json
        (unzipped / name.removeprefix("dataset/")).parent.mkdir(parents=True, exist_ok=True)
        (unzipped / name.removeprefix("dataset/")).write_bytes(blob)
    monkeypatch.setenv("KINJECT_DATA", str(unzipped.parent))
    assert data.resolve_dataset("entity_questions").origin == "KINJECT_DATA"
    assert len(entity_question_facts(["P50"], per_relation=None)) == 10
    assert data.resolve_dataset("entity_questions", unzipped).origin == "explicit"
    with pytest.raises(data.DataUnavailableError, match="ENTITY_QUESTIONS_DIR is .*does not hold it"):
        data.resolve_dataset("entity_questions", fresh / "nowhere")


def test_a_malformed_file_names_itself(raw, fresh):
    folder = fresh / "eq"
    for name, blob in raw["princeton-nlp/EntityQuestions"].items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(blob)
    (folder / "dataset/train/P26.train.json").write_text('[{"question": "Who?", "answer": "x"}]')
    from kinject_utils.newknowledge.entity_questions import EntityQuestionsError

    with pytest.raises(EntityQuestionsError, match=r"P26.train.json, item 0: expected"):
        entity_question_facts(["P26"], folder=folder)


def test_study_config_and_the_pool_hold_out_the_ood_relations(raw, fresh):
    folder = fresh / "eq"
    for name, blob in raw["princeton-nlp/EntityQuestions"].items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(blob)
    cfg = StudyConfig(facts="entity_questions", eq_relations=("P17", "P36"), ood_relations=("P106",), per_relation=5,
                      n_fictional=0, entity_questions_dir=str(folder))
    facts = study_facts(cfg)
    assert sorted({f.relation for f in facts}) == ["P106", "P17", "P36"] and len(facts) == 15
    with pytest.raises(ValueError, match=r"FACTS='wikidata': choose one of \['geonames', 'entity_questions'\]"):
        StudyConfig(facts="wikidata")
    with pytest.raises(ValueError, match=r"OOD_RELATIONS \['currency'\] are geonames relations"):
        StudyConfig(facts="entity_questions")
    with pytest.raises(ValueError, match=r"EQ_RELATIONS: \['P999'\] are not EntityQuestions relations"):
        StudyConfig(eq_relations=("P17", "P999"))


def test_notebook_07_declares_the_fact_source_parameters_with_the_dataclass_defaults():
    import ast

    import papermill as pm

    nb = next((ROOT / "notebooks").glob("07_*.ipynb"))
    d = {k: ast.literal_eval(v["default"]) for k, v in pm.inspect_notebook(str(nb)).items()}
    cfg = StudyConfig()
    assert d["FACTS"] == cfg.facts == "geonames"
    assert d["EQ_RELATIONS"] == list(cfg.eq_relations) == list(PAPER_RELATIONS)
    assert d["ENTITY_QUESTIONS_DIR"] == cfg.entity_questions_dir == ""


def test_plan_07_counts_the_entity_questions_the_config_implies():
    p = {"MODELS": ["mistral-7b"], "DEVICE": "cuda", "FACTS": "entity_questions", "EQ_RELATIONS": list(PAPER_RELATIONS),
         "OOD_RELATIONS": list(PAPER_OOD_RELATIONS), "N_QUESTIONS": 1000, "N_FICTIONAL": 0, "N_PROMPTS": 10,
         "N_SAMPLES": 16, "TRAIN_MODELS": ["best"], "UNKNOWN_SHARES": [0, 0.5, 1], "TRAIN_SIZE": 2000,
         "SINGLE_SIZE": 1000, "EPOCHS": 10, "ENTITY_QUESTIONS_DIR": ""}
    plan = stages.plan_07(p)
    text = "\n".join(plan.lines)
    assert plan.counts == {"questions": 19000, "answers_per_model": 19000 * 170}  # (12 + 7) x 1000 x 10 x (1 + 16)
    assert "EntityQuestions" in text and "12 relations + 7 OOD" in text and "~3,230,000 answers" in text


@pytest.mark.slow  # plans notebooks 01-05 with their defaults too (tens of seconds on a loaded machine)
def test_plan_of_the_paper_new_knowledge_config_runs_offline(tmp_path):
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
           "KINJECT_CACHE": str(tmp_path / "cache"), "KINJECT_GITHUB_RAW": "http://127.0.0.1:9",
           "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("KINJECT_DATA", None)
    r = subprocess.run([sys.executable, "-m", "kinject_utils.runner", "-f", "configs/new_knowledge_paper.yaml",
                        "--plan"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[07] new knowledge" in r.stdout and "mistral-7b" in r.stdout and "cuda" in r.stdout
    assert "EntityQuestions" in r.stdout and "download from GitHub" in r.stdout
