"""The reference harness on local MMLU CSVs: lm-evaluation-harness task files for parity and benchmarks.

:func:`write_lmeval_tasks` writes task YAMLs that ``include`` the installed harness's own MMLU task
files and only swap the data source for local CSVs (every field read as text), optionally with a
retrieved context placed exactly as :func:`kinject_utils.scoring.build_request` places it. Used by
tests/test_lmeval_parity.py and scripts/bench_scoring.py.
"""
from __future__ import annotations

from typing import Any, Sequence

from .prompts import STYLES

_LMEVAL_PROCESS_DOCS = '''"""Written by kinject_utils.scoring.write_lmeval_tasks: MMLU CSV rows -> harness docs."""
import json
from pathlib import Path

_CONTEXTS = json.loads((Path(__file__).parent / "contexts.json").read_text(encoding="utf-8"))


def as_text(field):
    return field


def process_docs(dataset):
    def convert(row):
        ctx = _CONTEXTS.get(row["question"], "")
        return {"question": row["question"], "choices": [row["A"], row["B"], row["C"], row["D"]],
                "answer": "ABCD".index(row["answer"].strip()),
                "kinject_context": ctx.strip() + "\\n\\n" if ctx.strip() else ""}
    import datasets

    # a fresh Dataset: mapping in place would keep the CSV's string type for "answer"
    return datasets.Dataset.from_list([convert(row) for row in dataset])
'''


def write_lmeval_tasks(folder: Any, mmlu_dir: Any, subjects: Sequence[str],
                       styles: Sequence[str] = STYLES, contexts: dict[str, str] | None = None) -> dict:
    """Write lm-evaluation-harness task YAMLs that read local MMLU CSVs with the harness's own
    MMLU prompts (they ``include`` the installed ``mmlu_<subject>.yaml`` /
    ``mmlu_<subject>_continuation`` files and only swap the data source).

    Args:
        folder: where to write (pass it as ``TaskManager(include_path=folder)``).
        mmlu_dir: folder holding ``test/<subject>_test.csv`` and ``dev/<subject>_dev.csv``.
        subjects: MMLU subjects.
        styles: ``"letter"`` (harness task ``mmlu_<subject>``) and/or ``"cloze"``
            (``mmlu_<subject>_continuation``).
        contexts: optional retrieved context per test question text; when given, the test
            question's rendering is preceded by it exactly as :func:`build_request` places it.

    Returns:
        ``{(subject, style): task_name}``.
    """
    import json
    from pathlib import Path

    import lm_eval

    folder, mmlu_dir = Path(folder), Path(mmlu_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tasks_dir = Path(lm_eval.__file__).parent / "tasks" / "mmlu"
    (folder / "kinject_mmlu_csv.py").write_text(_LMEVAL_PROCESS_DOCS, encoding="utf-8")
    (folder / "contexts.json").write_text(json.dumps(contexts or {}, ensure_ascii=False), encoding="utf-8")
    names = {}
    for subject in subjects:
        files = {"test": mmlu_dir / "test" / f"{subject}_test.csv", "dev": mmlu_dir / "dev" / f"{subject}_dev.csv"}
        for f in files.values():
            if not f.exists():
                raise FileNotFoundError(f"{f} not found: need the original MMLU CSVs under {mmlu_dir}")
        for style in styles:
            if style not in STYLES:
                raise ValueError(f"style must be one of {STYLES}, got {style!r}")
            base = (tasks_dir / "default" / f"mmlu_{subject}.yaml" if style == "letter"
                    else tasks_dir / "continuation" / f"mmlu_{subject}.yaml")
            name = f"kinject_{style}_{subject}"
            lines = [
                f"include: {json.dumps(str(base))}",
                f"task: {name}",
                "tag: kinject_mmlu_csv",
                f"task_alias: {name}",
                "dataset_path: csv",
                "dataset_name: null",
                "dataset_kwargs:",
                f"  data_files: {{test: {json.dumps(str(files['test']))}, dev: {json.dumps(str(files['dev']))}}}",
                "  column_names: [question, A, B, C, D, answer]",
                "  # every column as text: '0.50' stays '0.50', 'None' stays a string",
                "  converters: {" + ", ".join(f"{c}: !function kinject_mmlu_csv.as_text"
                                             for c in ("question", "A", "B", "C", "D", "answer")) + "}",
                "  na_filter: false",
                "  keep_default_na: false",
                "process_docs: !function kinject_mmlu_csv.process_docs",
            ]
            if contexts:
                text = ("{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}"
                        "\\nD. {{choices[3]}}\\nAnswer:" if style == "letter"
                        else "Question: {{question.strip()}}\\nAnswer:")
                lines.append(f'doc_to_text: "{{{{kinject_context}}}}{text}"')
            (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
            names[(subject, style)] = name
    return names
