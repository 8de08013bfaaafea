"""Notebook hygiene: no committed outputs, kernel python3, exactly one documented parameters cell."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_prepare_data", "02_paraphrase_corpus", "03_finetune_qlora", "04_retrieve_faiss",
            "05_score_methods", "06_plot_results", "07_new_knowledge"]


def test_the_six_numbered_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_hygiene(nb_path):
    import papermill as pm

    nb = json.loads(nb_path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for c in code:
        assert not c.get("outputs"), f"{nb_path.name}: committed outputs (strip them)"
        assert c.get("execution_count") is None, f"{nb_path.name}: committed execution counts"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{nb_path.name}: needs exactly one cell tagged 'parameters'"
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and "Inputs" in "".join(first["source"]) \
        and "Outputs" in "".join(first["source"])
    params = pm.inspect_notebook(str(nb_path))
    assert params, f"{nb_path.name}: parameters cell declares nothing"
    # papermill silently drops a line it cannot parse (e.g. '=' inside the comment): count them all
    import re

    declared = re.findall(r"^([A-Z][A-Z0-9_]*)\s*[:=]", "".join(tagged[0]["source"]), flags=re.M)
    assert sorted(declared) == sorted(params), \
        f"{nb_path.name}: papermill does not see {sorted(set(declared) - set(params))} (no '=' in comments)"
    for name, info in params.items():
        assert name.isupper(), f"{nb_path.name}: parameter {name} should be UPPER_CASE"
        assert info["help"].strip(), \
            f"{nb_path.name}: parameter {name} has no comment (papermill --help-notebook shows it)"
        assert info["inferred_type_name"] != "None", f"{nb_path.name}: parameter {name} needs a type annotation"
    assert "%run" not in json.dumps(nb) and "sys.path" not in json.dumps(nb)


def test_no_secret_parameters():
    for nb_path in NOTEBOOKS:
        import papermill as pm

        for name in pm.inspect_notebook(str(nb_path)):
            if name.endswith("_ENV"):  # the *name* of an environment variable holding a secret is fine
                continue
            parts = set(name.split("_"))
            assert not parts & {"KEY", "TOKEN", "SECRET", "PASSWORD", "APIKEY"}, \
                f"{nb_path.name}: {name} looks like a secret; read it from an environment variable instead"


def _defaults() -> dict[str, dict]:
    import ast

    import papermill as pm

    return {p.name[:2]: {k: ast.literal_eval(v["default"]) for k, v in pm.inspect_notebook(str(p)).items()}
            for p in NOTEBOOKS}


#: parameters two notebooks both declare that are per stage on purpose (one notebook's setting only)
PER_STAGE = {"DEVICE": "each stage's device (02's local paraphraser and 04's embedder stay on the CPU)",
             "BATCH_SIZE": "04 embeds, 05 scores, 07 trains", "EPOCHS": "03 and 07 are different studies"}


def test_notebook_defaults_are_the_default_study():
    """Run All in JupyterLab is `make study`: the runner passes configs/default.yaml nothing the notebooks
    do not already default to, and a name several notebooks declare has one default."""
    from kinject_utils import runner

    defaults = _defaults()
    _, chosen, _ = runner.prepare(ROOT / "configs" / "default.yaml", root=ROOT)
    for nb, params in chosen:
        num = nb.name[:2]
        differ = {k: (v, defaults[num].get(k)) for k, v in params.items() if defaults[num].get(k) != v}
        assert not differ, f"{nb.name}: configs/default.yaml passes {differ} (value, notebook default)"
    by_name: dict[str, dict[str, object]] = {}
    for num, params in defaults.items():
        for k, v in params.items():
            by_name.setdefault(k, {})[num] = v
    split = {k: m for k, m in by_name.items() if len({repr(v) for v in m.values()}) > 1 and k not in PER_STAGE}
    assert not split, f"one name, several defaults across notebooks: {split}"


def test_settings_dataclasses_default_to_the_notebooks():
    """The dataclasses a notebook fills take the same defaults, so a library user runs the same study."""
    import dataclasses

    from kinject_utils.finetune import FinetuneConfig
    from kinject_utils.newknowledge import StudyConfig
    from kinject_utils.retrieval import RetrievalConfig
    from kinject_utils.study import GridConfig

    d = _defaults()
    fields = {
        ("03", FinetuneConfig): {"EPOCHS": "epochs", "SEED": "seed", "DTYPE": "dtype", "DEVICE": "device"},
        ("04", RetrievalConfig): {k: k.lower() for k in ("EMBEDDER", "K_MAX", "RETRIEVER", "INDEX", "PASSAGE_WORDS",
                                                          "BATCH_SIZE", "DEVICE")},
        ("05", GridConfig): {"K": "k", "MMLU_STYLE": "mmlu_style", "MMLU_SHOTS": "mmlu_shots", "MAX_QUESTIONS":
                             "max_questions", "BATCH_SIZE": "batch_size", "DTYPE": "dtype", "CONTEXT_TOKENS":
                             "context_tokens", "SCORE_SWEEP": "sweep", "K_SWEEP": "k_sweep"},
        ("07", StudyConfig): {"N_PROMPTS": "n_prompts", "N_SAMPLES": "n_samples", "N_QUESTIONS": "per_relation",
                              "N_FICTIONAL": "n_fictional", "TRAIN_SIZE": "train_size", "UNKNOWN_SHARES": "shares",
                              "IDK_SHARE": "idk_share", "MIXED_SHARE": "mixed_share", "SINGLE_SIZE": "single_size",
                              "EPOCHS": "epochs", "LR": "lr", "BATCH_SIZE": "batch_size", "SEED": "seed",
                              "DEVICE": "device", "DTYPE": "dtype"},
    }
    for (num, cls), mapping in fields.items():
        made = cls()
        names = {f.name for f in dataclasses.fields(cls)}
        for param, field in mapping.items():
            assert field in names, (cls.__name__, field)
            got, want = getattr(made, field), d[num][param]
            got = list(got) if isinstance(got, tuple) else got
            assert got == want, f"{cls.__name__}.{field} defaults to {got!r}, notebook {num}'s {param} to {want!r}"
