"""Notebook 06 as library calls: read the result files, then write the tables, figures, claims and README block.

    res = read_results("results")               # what notebooks 03-05 wrote (None where one has not run)
    tables = write_tables(res, "results")       # 06_results.md: Tables 1-2 beside the paper's, costs, ...
    paths = draw_figures(res, "figures")        # figures/06_*.png
    claims = write_claims(res, "results")       # 06_claims.json and 06_claims.md
    write_readme("results", "figures")          # README.md's results block, from 06_claims.json

The README's block is generated, never edited by hand: the headline figure, the accuracy table and one
row per claim with its intervals and a link to its section of ``06_claims.md``. Only the reference
run writes it (results in the project's ``results/``, figures in ``figures/``: what the README links
to); a tiny, bring-your-own or paper-scale run leaves the README alone.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from . import claims as engine
from . import layout, plots, study
from .io import atomic_write_text, project_root, read_csv, read_json, read_jsonl
from .log import get_logger

__all__ = ["StudyResults", "read_results", "results_tables", "write_tables", "draw_figures", "write_claims",
           "readme_block", "write_readme", "REFERENCE_DIRS", "SECTIONS", "FIGURES"]

log = get_logger("report")

#: the folders of the reference run, relative to the project root: the README links into them
REFERENCE_DIRS = ("results", "figures")

#: the result tables notebook 06 reads: attribute of :class:`StudyResults` -> layout function
_TABLES = {"scores": layout.scores_csv, "loss": layout.train_loss_csv, "recall": layout.recall_csv,
           "costs": layout.costs_csv, "memo": layout.memorisation_csv}


@dataclasses.dataclass
class StudyResults:
    """The result files of notebooks 03-05 as tables; ``None`` (or no rows) where a notebook has not run."""

    scores: Any
    loss: Any
    recall: Any
    costs: Any
    memo: Any
    per_question: list[dict]


def read_results(results_dir: str | os.PathLike) -> StudyResults:
    """Read every table notebook 06 draws from; a missing one is logged and renders as "no rows"."""
    got: dict[str, Any] = {}
    for name, where in _TABLES.items():
        path = where(results_dir)
        if not path.exists():
            log.warning("missing %s: its notebook has not run; the figure or table will say so", path)
        got[name] = read_csv(path, frame=True, missing_ok=True)
    pq = layout.per_question_jsonl(results_dir)
    return StudyResults(**got, per_question=list(read_jsonl(pq)) if pq.exists() else [])


#: the sections of ``06_results.md``, in order: key of :func:`results_tables` -> heading
SECTIONS = {"table2": "Table 2 (current-events style)", "table1": "Table 1 (MMLU)", "costs": "Cost per method",
            "learned": "What fine-tuning learned", "chance": "Base model per question kind (chance check)"}


def results_tables(res: StudyResults, results_dir: str | os.PathLike, seed: int = 0) -> dict[str, str]:
    """The Markdown tables of ``06_results.md`` (keys of :data:`SECTIONS`)."""
    tasks = sorted(set(res.scores["task"])) if res.scores is not None else []
    return {"table2": plots.table2_markdown(res.scores), "table1": plots.table1_markdown(res.scores),
            "costs": plots.costs_markdown(study.cost_by_method(res.costs)),
            "learned": plots.learned_markdown(study.memorisation_vs_accuracy(res.memo, res.scores)),
            "chance": plots.chance_markdown(study.base_by_kind(res.per_question, study.load_tasks(results_dir, tasks),
                                                               seed=seed))}


def write_tables(res: StudyResults, results_dir: str | os.PathLike, seed: int = 0) -> dict[str, str]:
    """Write ``06_results.md`` (every table under its heading) and return the tables."""
    tables = results_tables(res, results_dir, seed)
    atomic_write_text(layout.results_md(results_dir),
                      "# Results\n" + "".join(f"\n## {title}\n\n{tables[key]}" for key, title in SECTIONS.items()))
    return tables


#: notebook 06's figures: file name, drawer, the table of :class:`StudyResults` it draws
FIGURES = (("06_accuracy_by_method", plots.fig_box_by_method, "scores"),  # the paper's Figure 2
           ("06_relative_gain", plots.fig_relative_gain, "scores"),
           ("06_training_loss", plots.fig_train_loss, "loss"),  # Figure 3
           ("06_paraphrase_sweep", plots.fig_paraphrase_sweep, "scores"),  # Figure 4
           ("06_retrieval_recall", plots.fig_recall, "recall"))


def draw_figures(res: StudyResults, figures_dir: str | os.PathLike) -> list[Path]:
    """Draw :data:`FIGURES` into ``figures_dir``; return their paths."""
    return [draw(getattr(res, table), layout.figure(figures_dir, name)) for name, draw, table in FIGURES]


def write_claims(res: StudyResults, results_dir: str | os.PathLike, seed: int = 0) -> list[dict]:
    """Decide the paper's five claims on this run; write ``06_claims.json`` and ``06_claims.md``."""
    import pandas as pd

    claims = study.check_claims(res.scores if res.scores is not None else pd.DataFrame(), res.per_question, seed=seed)
    markdown = study.claims_markdown(claims, study.baseline_check(res.memo))
    engine.write_claims(claims, markdown, layout.claims_md(results_dir), layout.claims_json(results_dir))
    for c in claims:
        log.info("claim %d: %s (%s)", c["claim"], c["verdict"], c["text"])
    return claims


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def readme_block(claims: list[dict], scores: Any, readme_dir: str | os.PathLike, results_dir: str | os.PathLike,
                 figures_dir: str | os.PathLike, memo: Any = None) -> str:
    """The README's results block: the headline figure, the accuracy table, what each adapter learned (from
    ``memo``, ``03_memorisation.csv``, when there is one), one row per claim.

    Links are relative to ``readme_dir``, so they work on GitHub and in a clone.
    """
    here = Path(readme_dir)
    res = {name: _rel(where(results_dir), here) for name, where in
           (("scores", layout.scores_csv), ("json", layout.claims_json), ("md", layout.claims_md))}
    figure = _rel(layout.figure(figures_dir, "06_accuracy_by_method"), here)
    return "\n".join([
        f"![Accuracy by method]({figure})", "",
        "Accuracy of the reference run (`make study`, `configs/default.yaml`), each task in its primary metric; "
        f"intervals in [`{res['scores']}`]({res['scores']}), the machines and timings in "
        f"[`{_rel(here / 'docs' / 'RESULTS.md', here)}`]({_rel(here / 'docs' / 'RESULTS.md', here)}):", "",
        plots.accuracy_markdown(scores).rstrip("\n"), "",
        *_learned_lines(memo, scores, here, results_dir),
        "The paper's claims, each comparison decided by its paired 95% bootstrap interval on the same questions "
        "(it holds on the claimed side of 0, is undecided while the interval contains 0). Written by notebook 06 "
        f"from [`{res['json']}`]({res['json']}); every comparison in [`{res['md']}`]({res['md']}):", "",
        *engine.claims_table(claims, res["md"]), ""])


def _learned_lines(memo: Any, scores: Any, here: Path, results_dir: str | os.PathLike) -> list[str]:
    table = study.memorisation_vs_accuracy(memo, scores)
    if not len(table):
        return []
    memo_csv = _rel(layout.memorisation_csv(results_dir), here)
    return [f"Has each adapter learned its text? Knowledge-base loss (nats per token) before -> after training "
            f"([`{memo_csv}`]({memo_csv})) beside its accuracy; FT-reg counts as trained when it removes at least "
            f"{study.LEARNED_SHARE:.0%} of FT-par's drop (`06_claims.md`):", "",
            plots.learned_markdown(table).rstrip("\n"), ""]


def write_readme(results_dir: str | os.PathLike, figures_dir: str | os.PathLike,
                 readme: str | os.PathLike | None = None) -> str | None:
    """Rewrite the README's results block from ``06_claims.json`` and ``05_scores.csv``; return the block.

    Only for the reference run (``results_dir`` and ``figures_dir`` the project's :data:`REFERENCE_DIRS`):
    the README links to those folders, so another run's numbers there would describe files that are
    not this run's. Returns ``None``, with a logged reason, when it leaves the README alone.
    """
    readme = Path(readme) if readme is not None else project_root() / "README.md"
    root = readme.resolve().parent
    wanted = [root / d for d in REFERENCE_DIRS]
    if [Path(results_dir).resolve(), Path(figures_dir).resolve()] != wanted or not readme.exists():
        log.info("README.md shows the reference run (%s); this run's results are in %s: README left as it is",
                 ", ".join(f"{d}/" for d in REFERENCE_DIRS), results_dir)
        return None
    claims, scores = read_json(layout.claims_json(results_dir)), read_csv(layout.scores_csv(results_dir), frame=True)
    memo_csv = layout.memorisation_csv(results_dir)
    memo = read_csv(memo_csv, frame=True) if memo_csv.exists() else None
    block = readme_block(claims, scores, root, results_dir, figures_dir, memo)
    engine.replace_block(readme, block)
    return block
