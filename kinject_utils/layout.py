"""The results layout: one function per artifact, the only place a results path is spelled.

Every notebook and module asks this module for a path instead of writing ``"03_adapters"``
itself, so moving or renaming an artifact is a one-line change here (and ``docs/DESIGN.md``'s
file list is checked against :data:`ARTIFACTS` by a test).

Paths stored *inside* results files (adapter folders in the index, cache keys) are written
relative to the results folder with :func:`to_relative` and read back with :func:`from_relative`,
so a results folder can be copied or moved and still find its own adapters.

    >>> str(adapter_index("results"))
    'results/03_adapters/index.csv'
"""
from __future__ import annotations

import os
from pathlib import Path

PathLike = str | os.PathLike

# (function name, path pattern under RESULTS_DIR or FIGURES_DIR, what it holds); docs/DESIGN.md lists these.
ARTIFACTS: list[tuple[str, str, str]] = [
    ("task_dir", "01_tasks/<task>/", "one task in the task format (task.json, questions/kb/dev/paraphrases .jsonl)"),
    ("fk_judge_cache_dir", "cache/01_fk_judge/", "the fictional-knowledge judge's question-only scores"),
    ("paraphrase_file", "02_paraphrases/<task>.jsonl", "accepted paraphrases per document"),
    ("paraphrase_stats", "02_paraphrase_stats.csv", "acceptance and fill rates per task, backend, model"),
    ("paraphrase_cache_dir", "cache/paraphrases/", "raw backend replies, one JSONL per backend and model"),
    ("adapters_dir", "03_adapters/", "one peft adapter + manifest.json per model/task/variant"),
    ("adapter_index", "03_adapters/index.csv", "the adapters notebook 05 scores (adapter_dir relative)"),
    ("train_loss_csv", "03_train_loss.csv", "training loss per logged step"),
    ("memorisation_csv", "03_memorisation.csv", "chunk losses before/after fine-tuning"),
    ("retrieval_dir", "04_retrieval/<task>/", "passages.jsonl, retrieved.jsonl, manifest.json"),
    ("embedding_cache_dir", "cache/embeddings/<embedder>/", "embedding shards keyed by text hash"),
    ("recall_csv", "04_recall.csv", "recall@K and hit rate per task and retriever"),
    ("retrieval_throughput_csv", "04_throughput.csv", "retrieval throughput per task (last run)"),
    ("score_cache_dir", "cache/05_scores/", "per-question rows of each scored cell (resumable)"),
    ("scores_csv", "05_scores.csv", "one row per model, task, method, variant, shots, K"),
    ("per_question_jsonl", "05_per_question.jsonl", "per-question correctness for the paired tests"),
    ("costs_csv", "05_costs.csv", "wall time, memory and tokens per method"),
    ("results_md", "06_results.md", "Tables 1 and 2 beside the paper's"),
    ("claims_json", "06_claims.json", "the claims check, machine-readable"),
    ("claims_md", "06_claims.md", "the claims check, with intervals"),
    ("slick_dir", "07_new_knowledge/", "categorisation cache, training sets and adapters of notebook 07"),
    ("slick_csv", "07_slick.csv", "SliCK category per model and question"),
    ("slick_claims_md", "07_claims.md", "the new-knowledge findings, with intervals"),
]


def _r(results_dir: PathLike) -> Path:
    return Path(results_dir)


# ---- 01 -------------------------------------------------------------------------------------------
def task_dir(results_dir: PathLike, task: str) -> Path:
    """``01_tasks/<task>/``: one task in the task format."""
    return _r(results_dir) / "01_tasks" / task


def fk_judge_cache_dir(results_dir: PathLike) -> Path:
    """``cache/01_fk_judge/``: the fictional-knowledge judge's scores (a re-run of notebook 01 scores nothing)."""
    return _r(results_dir) / "cache" / "01_fk_judge"


# ---- 02 -------------------------------------------------------------------------------------------
def paraphrase_file(results_dir: PathLike, task: str) -> Path:
    """``02_paraphrases/<task>.jsonl``: accepted paraphrases per document."""
    return _r(results_dir) / "02_paraphrases" / f"{task}.jsonl"


def paraphrase_stats(results_dir: PathLike) -> Path:
    return _r(results_dir) / "02_paraphrase_stats.csv"


def paraphrase_cache_dir(results_dir: PathLike) -> Path:
    return _r(results_dir) / "cache" / "paraphrases"


# ---- 03 -------------------------------------------------------------------------------------------
def adapters_dir(results_dir: PathLike) -> Path:
    """``03_adapters/``: ``<model>/<task>/<variant>/`` below it."""
    return _r(results_dir) / "03_adapters"


def adapter_dir(results_dir: PathLike, model_slug: str, task: str, variant: str) -> Path:
    return adapters_dir(results_dir) / model_slug / task / variant


def lr_search_dir(results_dir: PathLike, model_slug: str, task: str) -> Path:
    """``03_adapters/lr_search/<model>/<task>/``: one adapter per learning rate tried (``lr-<lr>/``)."""
    return adapters_dir(results_dir) / "lr_search" / model_slug / task


def adapter_index(results_dir: PathLike) -> Path:
    return adapters_dir(results_dir) / "index.csv"


def train_loss_csv(results_dir: PathLike) -> Path:
    return _r(results_dir) / "03_train_loss.csv"


def memorisation_csv(results_dir: PathLike) -> Path:
    return _r(results_dir) / "03_memorisation.csv"


# ---- 04 -------------------------------------------------------------------------------------------
def retrieval_dir(results_dir: PathLike, task: str) -> Path:
    """``04_retrieval/<task>/``: passages, retrieved ids, manifest."""
    return _r(results_dir) / "04_retrieval" / task


def embedding_cache_dir(results_dir: PathLike, embedder_slug: str) -> Path:
    return _r(results_dir) / "cache" / "embeddings" / embedder_slug


def recall_csv(results_dir: PathLike) -> Path:
    return _r(results_dir) / "04_recall.csv"


def retrieval_throughput_csv(results_dir: PathLike) -> Path:
    return _r(results_dir) / "04_throughput.csv"


# ---- 05 / 06 --------------------------------------------------------------------------------------
def score_cache_dir(results_dir: PathLike) -> Path:
    return _r(results_dir) / "cache" / "05_scores"


def scores_csv(results_dir: PathLike) -> Path:
    return _r(results_dir) / "05_scores.csv"


def per_question_jsonl(results_dir: PathLike) -> Path:
    return _r(results_dir) / "05_per_question.jsonl"


def costs_csv(results_dir: PathLike) -> Path:
    return _r(results_dir) / "05_costs.csv"


def results_md(results_dir: PathLike) -> Path:
    return _r(results_dir) / "06_results.md"


def claims_json(results_dir: PathLike) -> Path:
    return _r(results_dir) / "06_claims.json"


def claims_md(results_dir: PathLike) -> Path:
    return _r(results_dir) / "06_claims.md"


def figure(figures_dir: PathLike, name: str) -> Path:
    """A figure file; ``name`` carries its notebook's number (``06_accuracy_by_method``)."""
    return Path(figures_dir) / (name if name.endswith(".png") else f"{name}.png")


# ---- 07 -------------------------------------------------------------------------------------------
def slick_dir(results_dir: PathLike) -> Path:
    return _r(results_dir) / "07_new_knowledge"


def slick_csv(results_dir: PathLike) -> Path:
    return _r(results_dir) / "07_slick.csv"


def slick_claims_md(results_dir: PathLike) -> Path:
    return _r(results_dir) / "07_claims.md"


# ---- runs and relocatable paths -------------------------------------------------------------------
def runs_dir(root: PathLike, config_name: str) -> Path:
    """``runs/<config name>/``: executed notebook copies (ignored by git)."""
    return Path(root) / "runs" / config_name


def timings_json(run_dir: PathLike) -> Path:
    """``timings.json`` in a run's folder: each notebook's wall seconds (the next run's ETA)."""
    return Path(run_dir) / "timings.json"


def to_relative(results_dir: PathLike, path: PathLike) -> str:
    """``path`` as stored inside a results file: relative to ``results_dir`` (POSIX separators).

    A path outside the results folder is kept absolute (it cannot move with it).
    """
    p, r = Path(path).resolve(), Path(results_dir).resolve()
    try:
        return p.relative_to(r).as_posix()
    except ValueError:
        return str(p)


def from_relative(results_dir: PathLike, stored: str) -> Path:
    """Inverse of :func:`to_relative`: a stored path resolved against the *current* results folder."""
    p = Path(stored)
    return p if p.is_absolute() else Path(results_dir) / p
