"""Stage 03, fine-tune: settings, plan (every adapter's tokens, steps and minutes) and the training.

Which adapters a model gets is decided once, here (:meth:`FinetuneSettings.variants_for`): every
fine-tuned model trains FT-reg (for ``REG_EPOCHS``, chosen by held-out loss) and FT-par(``N_PAR``) (for
``EPOCHS``); the models of ``SWEEP_MODELS`` also train the paraphrase sweep ``SWEEP`` and, unless
``FIXED_BUDGET`` is ``off``, its fixed-step controls (``ft-par-max``: FT-reg's text repeated for
FT-par's steps, the repetition control of claim 4).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .. import finetune as ft
from .. import layout, plots, tasks
from ..device import cpu_precision_report, resolve
from ..execute import ExecutorSettings
from ..io import resolve_path, slug, write_csv
from ..log import get_logger
from ..settings import check_choice, check_float, check_int
from .base import FT_MODELS, FT_TASKS, MODELS, TASKS, StagePlan, StageSettings, hm, listed
from .tokens import model_tokenizer

__all__ = ["FinetuneSettings", "PLAN_COLUMNS", "load_inputs", "lr_search", "memorisation", "plan",
           "planned_adapters", "time_table", "train", "train_loss"]

log = get_logger("finetune")

PLAN_COLUMNS = ["label", "corpus_tokens", "chunks", "steps", "tokens_trained", "tokens_per_s", "minutes"]


@dataclasses.dataclass
class FinetuneSettings(StageSettings):
    """Notebook 03's parameters (its parameter cell documents each one)."""

    results_dir: str = "results"
    figures_dir: str = "figures"
    seed: int = 0
    models: list = listed(MODELS)
    ft_models: list = listed(FT_MODELS)
    tasks: list = listed(TASKS)
    ft_tasks: list = listed(FT_TASKS)
    device: str = "auto"
    dtype: str = "auto"
    ft_preset: str = "cpu"
    epochs: int = 1
    max_train_tokens: int = 0
    ft_settings: dict = dataclasses.field(default_factory=dict)
    n_par: int = 10
    reg_epochs: int = 5
    sweep: list = dataclasses.field(default_factory=lambda: [0, 10])
    sweep_models: list = dataclasses.field(default_factory=lambda: ["smollm2-135m"])
    fixed_budget: str = "ft-par-max"
    lr_search: list = dataclasses.field(default_factory=list)
    lr_search_docs: int = 8
    memo_max_chunks: int = 8
    plan_budget_minutes: float = 30.0
    executor: str = "local"
    ray_address: str = "auto"
    task_cpus: int = 0
    task_gpus: float = 1.0

    def __post_init__(self) -> None:
        self.executor_settings()  # validates EXECUTOR, RAY_ADDRESS, TASK_CPUS, TASK_GPUS
        check_choice(self, "fixed_budget", ("ft-reg", "ft-par-max", "off"))
        for name in ("epochs", "reg_epochs", "n_par", "lr_search_docs", "memo_max_chunks", "max_train_tokens"):
            check_int(self, name, 0)
        check_float(self, "plan_budget_minutes", 0.0, lo_open=True)
        if not isinstance(self.sweep, list) or any(isinstance(n, bool) or not isinstance(n, int) or n < 0
                                                   for n in self.sweep):
            raise ValueError(f"SWEEP must be a list of paraphrase counts >= 0, e.g. [0, 10], got {self.sweep!r}")
        if not isinstance(self.ft_models, list) or not set(self.ft_models) <= set(self.models):
            raise ValueError(f"FT_MODELS {self.ft_models!r} must name models of MODELS {self.models!r} (the models to "
                             "fine-tune); [] fine-tunes every model of MODELS")
        if not isinstance(self.ft_settings, dict):
            raise ValueError(f"FT_SETTINGS must be a mapping of FinetuneConfig fields, got {self.ft_settings!r}")

    def executor_settings(self) -> ExecutorSettings:
        """Where the jobs run (:mod:`kinject_utils.execute`): ``EXECUTOR`` and its resources per task."""
        return ExecutorSettings(self.executor, self.ray_address, self.task_cpus, self.task_gpus)

    def config(self) -> ft.FinetuneConfig:
        """The preset with this notebook's epochs, seed, device, dtype, token cap and ``FT_SETTINGS`` applied."""
        return ft.preset(self.ft_preset, **{"epochs": self.epochs, "seed": self.seed, "device": self.device,
                                            "dtype": self.dtype, "max_train_tokens": self.max_train_tokens,
                                            **self.ft_settings})

    def variants_for(self, model: str) -> dict[str, Any]:
        """``sweep``, ``n_par``, ``fixed_budget`` and ``reg_epochs`` for ``model`` (the sweep and its fixed-step
        controls only for ``SWEEP_MODELS``; FT-reg's own epochs for every model)."""
        in_sweep = model in self.sweep_models
        return {"sweep": self.sweep if in_sweep else [], "n_par": self.n_par,
                "fixed_budget": self.fixed_budget if in_sweep else "off", "reg_epochs": self.reg_epochs}

    def trained_models(self) -> list[str]:
        """The models of ``MODELS`` this stage fine-tunes (``FT_MODELS``; empty: all)."""
        return [m for m in self.models if not self.ft_models or m in self.ft_models]

    def fine_tuned(self, names: list[str]) -> list[str]:
        """The task names of ``names`` this stage fine-tunes on (``FT_TASKS``; empty: all)."""
        return [t for t in names if not self.ft_tasks or t in self.ft_tasks]


def describe(s: FinetuneSettings, cfg: ft.FinetuneConfig) -> str:
    """Where and in what precision training runs, and why (on a CPU: AMX or not)."""
    device, dtype = resolve(s.device, s.dtype)
    return (f"device {device}, dtype {'bfloat16 (QLoRA compute)' if cfg.method == 'qlora' else dtype}"
            + ("" if device != "cpu" else f" ({cpu_precision_report()['why']})"))


def load_inputs(s: FinetuneSettings) -> tuple[dict[str, Any], dict[str, dict], list[str]]:
    """(task name -> task, task name -> paraphrases, lines) for every task to fine-tune, from notebook 01's and
    02's files; a task without a knowledge base is skipped, and a task whose documents have fewer than
    ``N_PAR`` paraphrases is said to train no FT-par(N_PAR)."""
    results = resolve_path(s.results_dir)
    objs, pars, lines = {}, {}, []
    for name in s.fine_tuned(tasks.require_built(results, s.tasks, "03")):
        task = tasks.load_task(layout.task_dir(results, name))
        if not task.docs:
            lines.append(f"skipping {name}: no knowledge base (kb.jsonl is empty), nothing to fine-tune on")
            continue
        objs[name] = task
        pars[name], source = ft.paraphrases_for(results, task)
        lines.append(f"{name}: {len(task.docs)} documents; paraphrases from {source}")
        fewest = min((len(pars[name].get(d.doc_id, ())) for d in task.docs), default=0)
        if pars[name] and fewest < s.n_par:
            lines.append(f"  {name}: FT-par({s.n_par}) is NOT trained: a document has only {fewest} accepted "
                         "paraphrase(s) (notebook 02 prints the fix); FT-par(N) trains for N <= the fewest")
    return objs, pars, lines


def _rows(s: FinetuneSettings, cfg: ft.FinetuneConfig, task_objs: dict[str, Any], pars: dict[str, dict],
          warn: bool) -> tuple[list[dict[str, Any]], list[str]]:
    rows, how = [], []
    for model in s.trained_models():
        tok, counted = model_tokenizer(model)
        how.append(f"{model}: tokens by {counted}")
        for name, task in task_objs.items():
            rows += ft.plan_task(model, task, pars.get(name, {}), cfg, **s.variants_for(model),
                                 results_dir=resolve_path(s.results_dir),
                                 budget_minutes=s.plan_budget_minutes if warn else float("inf"), tokenizer=tok)
    return rows, how


def plan(s: FinetuneSettings, task_objs: dict[str, Any], pars: dict[str, dict], *,
         cfg: ft.FinetuneConfig | None = None, warn: bool = True) -> StagePlan:
    """Per adapter: corpus tokens, chunks, optimiser steps, tokens trained and minutes at a measured rate.

    ``counts["adapters"]``: ``"model / task / variant"`` -> optimiser steps (what the adapter index reports
    as ``budget_steps`` after training). ``counts["rows"]`` holds each adapter's full plan.
    """
    cfg = cfg or s.config()
    p = StagePlan("03", "fine-tune", [f"models {s.trained_models()} on {s.device}; {s.ft_preset}: {cfg.method} "
                                      f"r={cfg.lora_r}, "
                                      f"effective batch {cfg.effective_batch}, micro-batch {cfg.micro_batch}, "
                                      f"{s.epochs} epoch(s), {cfg.chunk_len}-token chunks"])
    rows, how = _rows(s, cfg, task_objs, pars, warn)
    p.lines += [f"  {h}" for h in how]
    for r in rows:
        p.lines.append(f"  {r['label']}: corpus {r['corpus_tokens']:,} tokens, {r['steps']:,} optimiser steps, "
                       f"{r['tokens_trained']:,} training tokens, ~{r['minutes']:.1f} min at {r['tokens_per_s']:,.0f} "
                       f"tok/s ({r['tokens_per_s_source']})")
    skipped = [f"{m} / {t}" for m in s.trained_models() for t in s.fine_tuned(s.tasks) if t not in task_objs]
    if skipped:
        p.lines.append(f"  not planned (no knowledge base known here): {', '.join(skipped)}")
    if s.lr_search:
        p.lines.append(f"  + learning-rate search over {s.lr_search} on {s.lr_search_docs} documents (not in the time)")
        p.unmeasured.append("03 learning-rate search")
    p.hours = sum(r["minutes"] for r in rows) / 60
    p.lines.append(f"  {len(rows)} adapters, {sum(r['steps'] for r in rows):,} optimiser steps, ~{hm(p.hours)} "
                   "of training (adapters already trained are skipped)")
    p.counts = {"adapters": {r["label"]: r["steps"] for r in rows}, "rows": rows}
    return p


def planned_adapters(s: FinetuneSettings, p: StagePlan) -> list[dict[str, Any]]:
    """Adapter-index rows (:data:`kinject_utils.finetune.INDEX_COLUMNS`) for the adapters ``p`` plans, at the
    folders training would write, so the scoring stage can plan its grid before anything is trained."""
    results = resolve_path(s.results_dir)
    return [{"model": r["model"], "task": r["task"], "variant": r["variant"], "n_paraphrases": r["n_paraphrases"],
             "budget": r["budget"], "sweep": r["sweep"],
             "adapter_dir": str(layout.adapter_dir(results, slug(r["model"]), r["task"], r["variant"]))}
            for r in p.counts["rows"]]


def lr_search(s: FinetuneSettings, cfg: ft.FinetuneConfig, task_objs: dict[str, Any],
              pars: dict[str, dict]) -> tuple[ft.FinetuneConfig, Any]:
    """The paper's learning-rate search on held-out paraphrases (first task, first model), when ``LR_SEARCH``
    names rates: returns the settings with the best rate and the table; else ``(cfg, None)``."""
    if not s.lr_search or not task_objs:
        log.info("learning-rate search off: lr %g", cfg.lr)
        return cfg, None
    name = next(iter(task_objs))
    task, model = task_objs[name], s.trained_models()[0]
    train_par, held = ft.split_heldout_paraphrases(pars[name], s.lr_search_docs, 2, s.seed)
    texts = ft.corpus_for(task.docs, train_par, max(0, min(s.n_par, min(map(len, train_par.values())))))
    table = ft.lr_search(model, texts, held, cfg, s.lr_search,
                         layout.lr_search_dir(resolve_path(s.results_dir), slug(model), name), device=s.device,
                         dtype=s.dtype)
    best = float(table.loc[table.best, "lr"].iloc[0])
    log.info("learning-rate search: using lr %g", best)
    return cfg.replace(lr=best), table


def train(s: FinetuneSettings, cfg: ft.FinetuneConfig, task_objs: dict[str, Any],
          pars: dict[str, dict]) -> list[dict[str, Any]]:
    """Train (or find trained) every adapter of every model x task; writes the adapter index; returns its rows.

    Each adapter is one job (:class:`kinject_utils.finetune.variants.TrainJob`), run here one after another
    (``EXECUTOR: local``) or as Ray tasks, one GPU or ``TASK_CPUS`` threads each (``EXECUTOR: ray``).
    """
    from ..execute import run_jobs
    from ..finetune.variants import variant_jobs

    results = resolve_path(s.results_dir)
    ex = s.executor_settings()
    jobs = [job for model in s.trained_models() for name, task in task_objs.items()
            for job in variant_jobs(model, task, pars[name], cfg, results, **s.variants_for(model),
                                    progress=ex.executor == "local")]
    rows = run_jobs(jobs, ex, desc="adapters", progress=ex.executor != "local", device=s.device)
    ft.write_adapter_index(results, rows)
    return rows


def train_loss(s: FinetuneSettings, rows: list[dict[str, Any]]) -> Path:
    """Writes the per-step training loss table and its figure (the paper's Figure 3); returns the figure."""
    table = ft.collect_train_loss(rows)
    write_csv(table, layout.train_loss_csv(resolve_path(s.results_dir)))
    return plots.fig_train_loss(table, layout.figure(resolve_path(s.figures_dir), "03_train_loss"))


def memorisation(s: FinetuneSettings, rows: list[dict[str, Any]], task_objs: dict[str, Any],
                 pars: dict[str, dict], timings: dict[str, float]) -> Any:
    """Loss on each adapter's training text before vs after (written to ``03_memorisation.csv``)."""
    memo = ft.memorisation_for(rows, task_objs, pars, device=s.device, dtype=s.dtype, max_chunks=s.memo_max_chunks,
                               seed=s.seed, timings=timings)
    write_csv(memo, layout.memorisation_csv(resolve_path(s.results_dir)))
    return memo


def time_table(rows: list[dict[str, Any]], memo_s: dict[str, float]) -> Any:
    """Per adapter: training seconds this run and in all, and memorisation seconds (a ``pandas.DataFrame``)."""
    import pandas as pd

    out = []
    for r in rows:
        label = f"{r['model']}/{r['task']}/{r['variant']}"
        out.append({"adapter": label, "train_s_this_run": r["trained_now_s"], "train_s_total": r["wall_s"],
                    "memorisation_s": memo_s.get(label, 0.0)})
    table = pd.DataFrame(out, columns=["adapter", "train_s_this_run", "train_s_total", "memorisation_s"])
    log.info("%d adapters; this run: %.0f s training, %.0f s memorisation", len(rows),
             table.train_s_this_run.sum(), table.memorisation_s.sum())
    return table
