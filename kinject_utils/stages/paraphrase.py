"""Stage 02, paraphrase: settings, plan (backend, requests and minutes per task) and the run.

Only the tasks notebook 03 fine-tunes are paraphrased (``FT_TASKS``; empty: every task of
``TASKS``). Per task the backend is chosen by :func:`kinject_utils.paraphrase.backend_for`
(``auto``: the task's own rewordings where it ships them, else the local instruct model).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .. import layout
from .. import paraphrase as P
from ..io import read_csv, resolve_path
from ..log import get_logger
from ..settings import check_choice, check_float, check_int
from .base import FT_TASKS, TASKS, StagePlan, StageSettings, listed

__all__ = ["STATS_COLUMNS", "ParaphraseRun", "ParaphraseSettings", "compare_local", "fact_recall_table", "load",
           "plan", "planned_paraphrases", "run", "sample_text", "task_table", "tasks_to_paraphrase", "write_stats"]

log = get_logger("paraphrase")


@dataclasses.dataclass
class ParaphraseSettings(StageSettings):
    """Notebook 02's parameters (its parameter cell documents each one)."""

    results_dir: str = "results"
    seed: int = 0
    tasks: list = listed(TASKS)
    ft_tasks: list = listed(FT_TASKS)
    device: str = "cpu"
    n_paraphrases: int = 10
    paraphrase_backend: str = "auto"
    paraphrase_model: str = "smollm2-135m"
    openai_base_url: str = "http://localhost:8000/v1"
    openai_api_key_env: str = "OPENAI_API_KEY"
    max_retries: int = 0
    min_fact_recall: float = 1.0
    local_sample_task: str = "fictional_news"
    local_sample_docs: int = 0
    local_sample_n: int = 2
    local_max_new_tokens: int = 160
    request_timeout_s: float = 120.0
    request_retries: int = 3

    def __post_init__(self) -> None:
        check_choice(self, "paraphrase_backend", P.BACKEND_CHOICES)
        if self.paraphrase_backend == "openai":
            P.check_env_name(self.openai_api_key_env)  # a key pasted here is rejected without being shown
        for name in ("n_paraphrases", "max_retries", "local_sample_docs", "local_sample_n", "request_retries"):
            check_int(self, name, 0)
        check_int(self, "local_max_new_tokens", 1)
        check_float(self, "min_fact_recall", 0.0, 1.0)
        check_float(self, "request_timeout_s", 0.0, lo_open=True)

    def wants(self, name: str) -> bool:
        """Whether task ``name`` is paraphrased: notebook 03 fine-tunes it (``FT_TASKS``, empty: all)."""
        return not self.ft_tasks or name in self.ft_tasks

    def backend_kwargs(self, kind: str) -> dict[str, Any]:
        """Backend-specific settings for :func:`kinject_utils.paraphrase.make_backend`."""
        return {"local": {"max_new_tokens": self.local_max_new_tokens, "device": self.device},
                "openai": {"timeout": self.request_timeout_s, "max_retries": self.request_retries}}.get(kind, {})

    def check_kwargs(self) -> dict[str, Any]:
        return {"max_retries": self.max_retries, "min_fact_recall": self.min_fact_recall}


def tasks_to_paraphrase(s: ParaphraseSettings, loaded: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(task name -> (task, backend kind, why)) for every task to paraphrase, and one line per task skipped."""
    chosen, skipped = {}, []
    for name, task in loaded.items():
        if isinstance(task, str):
            skipped.append(f"{name}: size not known here (see notebook 01's plan)")
        elif not s.wants(name):
            skipped.append(f"{name}: not in FT_TASKS, so notebook 03 trains no FT-par on it: not paraphrased")
        elif not task.docs:
            skipped.append(f"{name}: its knowledge base is empty, nothing to paraphrase")
        else:
            kind, why = P.backend_for(s.paraphrase_backend, task)
            if kind is None:
                skipped.append(f"WARNING {why}")
            else:
                chosen[name] = (task, kind, why)
    return chosen, skipped


def _budget(s: ParaphraseSettings, task: Any, kind: str) -> dict[str, Any]:
    return P.paraphrase_budget(task, kind, s.n_paraphrases, s.max_retries, model=s.paraphrase_model,
                               max_new_tokens=s.local_max_new_tokens)


def plan(s: ParaphraseSettings, planned: dict[str, Any]) -> StagePlan:
    """Backend, requests and expected minutes per task (``counts["documents"]``: task -> documents)."""
    p = StagePlan("02", "paraphrase", [f"backend {s.paraphrase_backend} on {s.device}"])
    chosen, skipped = tasks_to_paraphrase(s, planned)
    p.lines += [f"  {x}" for x in skipped]
    minutes = 0.0
    p.counts["documents"] = {}
    for name, (task, kind, why) in chosen.items():
        b = _budget(s, task, kind)
        p.lines.append(f"  {P.format_budget(b)} [{why}]")
        p.counts["documents"][name] = b["docs"]
        if b["minutes_max"] is None:
            p.unmeasured.append(f"02 {name} paraphrasing")
        else:
            minutes += b["minutes_max"]
    if s.local_sample_docs:
        p.lines.append(f"  + local-model comparison on {s.local_sample_docs} documents of {s.local_sample_task} "
                       "(not included in the time)")
    p.hours = minutes / 60
    return p


def planned_paraphrases(s: ParaphraseSettings, planned: dict[str, Any]) -> tuple[dict[str, dict], list[str]]:
    """The paraphrases notebook 03 would train on, per task, before notebook 02 has run: notebook 02's file
    where written, the task's own rewordings, else (a model would write them) each document repeated
    ``N_PARAPHRASES`` times, so lengths are right on average. Also one line per assumption made."""
    results = resolve_path(s.results_dir)
    chosen, _ = tasks_to_paraphrase(s, planned)
    out, notes = {}, []
    for name, task in planned.items():
        if isinstance(task, str):
            continue
        written = layout.paraphrase_file(results, name)
        if written.exists():
            out[name] = P.read_paraphrases(results, name)
        elif name in chosen and chosen[name][1] != "generator":
            out[name] = {d.doc_id: [d.text] * s.n_paraphrases for d in task.docs}
            notes.append(f"  {name}: notebook 03 planned with every paraphrase as long as its document")
        else:
            out[name] = dict(task.paraphrases)
    return out, notes


@dataclasses.dataclass
class ParaphraseRun:
    """What :func:`run` did: tasks paraphrased, their paraphrases, one statistics row each, messages."""

    loaded: dict[str, Any]
    made: dict[str, dict[str, list[str]]]
    stats: list[dict[str, Any]]
    lines: list[str]

    def coverage(self, n_max: int) -> Any:
        """Documents with at least N accepted paraphrases, per task (a ``pandas.DataFrame``)."""
        import pandas as pd

        return pd.DataFrame({name: {row["N"]: row["docs"] for row in P.coverage_table(out, n_max)}
                             for name, out in self.made.items()}).rename_axis("docs with >= N paraphrases")


def run(s: ParaphraseSettings, loaded: dict[str, Any]) -> ParaphraseRun:
    """Paraphrase every task to paraphrase, write each task's paraphrases, log the budget and the acceptance."""
    results = resolve_path(s.results_dir)
    chosen, skipped = tasks_to_paraphrase(s, loaded)
    for line in skipped:
        if line.startswith("WARNING"):
            log.warning(line.removeprefix("WARNING "))
    out = ParaphraseRun({n: t for n, (t, _, _) in chosen.items()}, {}, [], [])
    for task, kind, why in chosen.values():
        out.lines.append(P.announce_budget(_budget(s, task, kind)) + f" [{why}]")
    for name, (task, kind, _) in chosen.items():
        backend = P.make_backend(kind, task=task, model=s.paraphrase_model, base_url=s.openai_base_url,
                                 api_key_env=s.openai_api_key_env, **s.backend_kwargs(kind))
        out.made[name], st = P.paraphrase_task(task, backend, s.n_paraphrases, s.seed,
                                               layout.paraphrase_cache_dir(results), **s.check_kwargs())
        out.lines.append(str(P.write_paraphrases(results, name, out.made[name], backend, task)))
        out.lines.append(f"{name}: {st['n_accepted']} accepted of {st['n_accepted'] + st['n_rejected']} candidates "
                         f"(acceptance {st['acceptance_rate']}, MIN_FACT_RECALL {s.min_fact_recall})")
        out.lines.append(P.coverage_note(name, out.made[name], s.n_paraphrases, s.min_fact_recall))
        out.stats.append(st)
    return out


def compare_local(s: ParaphraseSettings, done: ParaphraseRun) -> dict[str, Any]:
    """The first ``LOCAL_SAMPLE_DOCS`` documents of ``LOCAL_SAMPLE_TASK`` through the generator's rewordings and
    the local model; adds their statistics rows to ``done.stats``. Returns backend -> {"made", "rejected"}
    (empty when the comparison is off or the task was not paraphrased)."""
    task = done.loaded.get(s.local_sample_task)
    if s.local_sample_docs <= 0 or task is None:
        log.info("local-model comparison skipped (LOCAL_SAMPLE_DOCS=%d, task %r %s)", s.local_sample_docs,
                 s.local_sample_task, "loaded" if task is not None else "not paraphrased")
        return {}
    ids = [d.doc_id for d in task.docs[:s.local_sample_docs]]
    model = s.paraphrase_model if s.paraphrase_backend in ("local", "auto") else "smollm2-135m"
    out = {}
    for backend in (P.GeneratorRewordingsBackend(task),
                    P.LocalChatBackend(model, max_new_tokens=s.local_max_new_tokens, device=s.device)):
        made, st = P.paraphrase_task(task, backend, s.local_sample_n, s.seed,
                                     layout.paraphrase_cache_dir(resolve_path(s.results_dir)), doc_ids=ids,
                                     scope="sample", **s.check_kwargs())
        done.stats.append(st)
        out[backend.name] = {"made": made, "rejected": {d["doc_id"]: d["rejected"] for d in st["per_doc"]}}
    out["task"] = task
    return out


def sample_text(s: ParaphraseSettings, done: ParaphraseRun, sample: dict[str, Any], shown: int = 2) -> str:
    """One document, its answer strings, and the first accepted (and rejected) paraphrases of each backend."""
    if sample:
        task = sample["task"]
        doc = task.docs[0]
        out = [f"ORIGINAL: {doc.text}", f"MUST KEEP: {P.required_facts(task).get(doc.doc_id, [])}"]
        for name, got in sample.items():
            if name == "task":
                continue
            out += [f"\n[{name} #{i}] {p}" for i, p in enumerate(got["made"].get(doc.doc_id, [])[:shown])]
            out += [f"\n[{name}, rejected: {why}] {p}" for why, p in got["rejected"].get(doc.doc_id, [])[:shown]]
        return "\n".join(out)
    for name, made in done.made.items():
        doc_id = next((d for d, ps in made.items() if ps), None)
        if doc_id:
            return "\n\n".join([done.loaded[name].doc_by_id()[doc_id].text, *made[doc_id][:shown]])
    return "no paraphrases"


STATS_COLUMNS = ["task", "backend", "model", "scope", "n_docs", "n_requested", "n_accepted", "n_rejected",
                 "acceptance_rate", "fill_rate", "mean_fact_recall", "n_parse_failures", "paraphrases_per_min",
                 "seconds", "n_cached_calls"]



def load(s: ParaphraseSettings) -> dict[str, Any]:
    """The tasks notebook 01 built (stops when it built none of ``TASKS``)."""
    from ..study import load_tasks

    return load_tasks(resolve_path(s.results_dir), s.tasks, "02")


def task_table(chosen: dict[str, Any]) -> Any:
    """Per task to paraphrase: documents, questions, shipped rewordings, documents with answers to keep."""
    import pandas as pd

    return pd.DataFrame([{"task": n, "backend": kind, "docs": len(t.docs), "questions": len(t.questions),
                          "docs with shipped rewordings": len(t.paraphrases),
                          "docs with answer strings to keep": len(P.required_facts(t))}
                         for n, (t, kind, _) in chosen.items()])


def fact_recall_table(done: ParaphraseRun) -> Any:
    """How strict the fact check is: per task shipping rewordings, the share keeping a given share of facts."""
    import pandas as pd

    return pd.DataFrame([{"task": name, **row} for name, task in done.loaded.items() if task.paraphrases
                         for row in P.fact_recall_curve(task, task.paraphrases)])


def write_stats(s: ParaphraseSettings, done: ParaphraseRun) -> Any:
    """Merge this run's rows into ``02_paraphrase_stats.csv``; returns the file as a ``pandas.DataFrame``."""
    return read_csv(P.write_stats(resolve_path(s.results_dir), done.stats), frame=True)
