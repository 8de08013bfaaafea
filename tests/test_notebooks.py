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
