"""The study grid of notebook 05: which cells to score, and scoring them resumably.

Methods, as the paper names them (Tables 1 and 2, Figure 4):

    base            the model as it is
    base+RAG        top-K retrieved passages prepended to the question (q~ = b_q || q)
    FT-reg          adapter fine-tuned on the raw knowledge base
    FT-par          adapter fine-tuned on the knowledge base plus N paraphrases per document
    FT-reg+RAG, FT-par+RAG
    FT-reg(rep)     the repetition control: FT-reg's text repeated for FT-par's steps (claim 4)
    FT-par(N)       the paraphrase sweep (Figure 4), at fixed epochs and at a fixed step budget

Every (model, task, method, shots, K) cell is scored once and cached as per-question JSONL under
``layout.score_cache_dir``; a re-run after an interruption only scores what is missing. Cache keys
and the adapter folders stored in them are relative to the results folder, so a copied results
folder reuses its own scores and adapters.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from .. import layout
from ..device import normalise_dtype
from ..io import content_hash, write_jsonl
from ..log import get_logger
from ..log import progress as progress_iter
from .costs import CellMeter

__all__ = ["ScoreSpec", "GridConfig", "pending_cells", "plan_grid", "run_grid", "score_cells", "subset"]

log = get_logger("study")


@dataclasses.dataclass(frozen=True)
class ScoreSpec:
    """One cell of the grid: what is scored, with which adapter and how many retrieved passages."""

    model: str
    task: str
    method: str                 # base, base+RAG, FT-reg, FT-par, FT-reg+RAG, FT-par+RAG, FT-par(N)
    shots: int = 0
    k: int = 0                  # retrieved passages (0 = no RAG)
    style: str = "cloze"        # cloze | letter
    adapter_dir: str = ""       # adapter folder relative to the results folder; empty for the base model
    variant: str = ""           # adapter variant name from the adapter index
    n_paraphrases: int = 0
    budget: str = ""            # epochs | steps (sweep only)
    precision: str = ""         # the dtype scored in (part of the cache key: bf16 and fp32 differ)

    def key(self) -> str:
        """Cache key of the *computation*: cells that differ only in their label share one scoring."""
        parts = [self.model, self.task, self.shots, self.k, self.style, self.adapter_dir]
        return content_hash(parts + ([self.precision] if self.precision else []), length=12)


@dataclasses.dataclass
class GridConfig:
    """What notebook 05 scores. Validated on construction.

    Attributes:
        k: retrieved passages for the +RAG methods (the paper grid-searched 0..5 with no stable best).
        k_sweep: extra K values scored for base+RAG only (the K grid); empty to skip.
        mmlu_style: ``letter`` (the paper's harness default) or ``cloze`` (what small models need).
        mmlu_shots: MMLU shot counts (paper: 0 and 5).
        max_questions: task name -> cap on questions (per subject for MMLU), for quick runs;
            a task not named is scored in full.
        batch_size: scoring batch.
        dtype: ``auto`` (:func:`kinject_utils.device.resolve_dtype`: bf16 on CUDA and AMX CPUs, fp32
            otherwise; fp32 matches lm-eval to 1e-4), ``float32``, ``bfloat16`` or ``float16``.
        context_tokens: token budget for the retrieved context (truncation is counted, never silent).
        sweep: score the paraphrase-sweep adapters.
    """

    k: int = 1
    k_sweep: tuple[int, ...] = ()
    mmlu_style: str = "letter"
    mmlu_shots: tuple[int, ...] = (0, 5)
    max_questions: dict[str, int] = dataclasses.field(default_factory=lambda: {"mmlu": 10})
    batch_size: int = 8
    dtype: str = "auto"
    context_tokens: int = 1024
    sweep: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.max_questions, dict) or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in self.max_questions.values()):
            raise ValueError("GridConfig.max_questions must map task names to non-negative ints, e.g. "
                             f"{{'mmlu': 20}}; got {self.max_questions!r}")
        for name in ("k", "batch_size", "context_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"GridConfig.{name} must be a non-negative int, got {v!r}")
        if self.k > 5 or self.k < 1:
            raise ValueError(f"GridConfig.k must be in 1..5 (the paper's grid), got {self.k}")
        self.k_sweep = tuple(int(x) for x in self.k_sweep)
        self.mmlu_shots = tuple(int(x) for x in self.mmlu_shots)
        if any(s not in (0, 5) for s in self.mmlu_shots):
            raise ValueError(f"GridConfig.mmlu_shots must be a subset of (0, 5), got {self.mmlu_shots}")
        if self.mmlu_style not in ("letter", "cloze"):
            raise ValueError(f"GridConfig.mmlu_style must be 'letter' or 'cloze', got {self.mmlu_style!r}")
        try:
            self.dtype = normalise_dtype(self.dtype)
        except ValueError as exc:
            raise ValueError(f"GridConfig.dtype: {exc} Set DTYPE to auto, float32 or bfloat16.") from None


def _method_for_variant(row: dict[str, str]) -> str | None:
    """Map an adapter index row (notebook 03) to the Table 2 method it stands for (None: sweep only).

    finetune.plan_variants names the headline adapters ``ft-reg`` and ``ft-par``, and the repetition
    control ``ft-reg-rep`` (FT-reg's text for FT-par's steps); sweep members are ``ft-par-N`` and
    fixed-step variants end in ``-fixed``.
    """
    return {"ft-reg": "FT-reg", "ft-par": "FT-par", "ft-reg-rep": "FT-reg(rep)"}.get((row.get("variant") or "").strip())


def plan_grid(results_dir: str | Path, models: list[str], tasks: dict[str, Any], cfg: GridConfig,
              has_retrieval: Callable[[str], bool], adapters: list[dict[str, Any]] | None = None) -> list[ScoreSpec]:
    """List every cell to score, given the tasks on disk, the adapters notebook 03 wrote and retrieval.

    Args:
        results_dir: the run's RESULTS_DIR (adapter folders are stored relative to it).
        models: model names.
        tasks: task name -> loaded :class:`~kinject_utils.tasks.Task`.
        cfg: grid settings (``cfg.dtype`` should be resolved: it is part of each cell's cache key).
        has_retrieval: task name -> whether notebook 04 wrote retrieval results for it.
        adapters: adapter-index rows; ``None`` reads the index notebook 03 wrote (a plan passes the
            adapters it expects notebook 03 to train).
    """
    from ..finetune import read_adapter_index

    results_dir = Path(results_dir)
    adapters = read_adapter_index(results_dir) if adapters is None else adapters
    specs: list[ScoreSpec] = []
    for model in models:
        for tname, task in tasks.items():
            is_mmlu = task.meta.get("kind") == "mmlu" or tname == "mmlu"
            style = cfg.mmlu_style if is_mmlu else "cloze"
            shots_list = cfg.mmlu_shots if is_mmlu and task.dev else (0,)
            rag = has_retrieval(tname)
            mine = [a for a in adapters if a.get("model") == model and a.get("task") == tname]
            for shots in shots_list:
                common = dict(model=model, task=tname, shots=shots, style=style, precision=cfg.dtype)
                specs.append(ScoreSpec(method="base", **common))
                if rag:
                    specs.append(ScoreSpec(method="base+RAG", k=cfg.k, **common))
                    specs.extend(ScoreSpec(method="base+RAG", k=k, **common) for k in cfg.k_sweep if k != cfg.k)
                for a in mine:
                    method = _method_for_variant(a)
                    npar = int(a.get("n_paraphrases") or 0)
                    extra = dict(adapter_dir=layout.to_relative(results_dir, a["adapter_dir"]),
                                 variant=a.get("variant", ""), n_paraphrases=npar, budget=a.get("budget", ""))
                    if method:
                        specs.append(ScoreSpec(method=method, **common, **extra))
                        if rag and method in ("FT-reg", "FT-par"):  # Table 2's +RAG rows; not the control's
                            specs.append(ScoreSpec(method=f"{method}+RAG", k=cfg.k, **common, **extra))
                    if cfg.sweep and shots == 0 and len(mine) > 1 and a.get("sweep") != "none":
                        # sweep = epochs | steps | epochs+steps (one adapter standing for both budgets)
                        for budget in (a.get("sweep") or "epochs").split("+"):
                            specs.append(ScoreSpec(method=f"FT-par({npar})", **common,
                                                   **{**extra, "budget": budget}))
    return list(dict.fromkeys(specs))  # de-duplicated, order kept (frozen dataclasses hash by value)


def run_grid(specs: list[ScoreSpec], results_dir: str | Path, tasks: dict[str, Any], cfg: GridConfig,
             load_model: Callable[[ScoreSpec], tuple[Any, Any]],
             load_contexts: Callable[[str, int, Any, int], tuple[list[str], dict]],
             score_fn: Callable[..., list[dict]], progress: bool = True, device: str = "cpu",
             dtype: str = "") -> Path:
    """Score every cell not yet cached; then rebuild ``05_scores.csv``, the per-question file and the costs.

    The model is (re)loaded only when the (model, adapter) pair changes; cells are ordered so that
    happens as rarely as possible. Each cell's per-question rows (with its wall time, load time and
    peak memory on ``device``) are written atomically to the score cache; an interrupted run
    resumes with the next unscored cell.
    """
    from .collect import collect_scores

    score_cells(pending_cells(specs, results_dir), results_dir, tasks, cfg, load_model, load_contexts, score_fn,
                progress=progress, device=device, dtype=dtype)
    return collect_scores(specs, results_dir)


def pending_cells(specs: list[ScoreSpec], results_dir: str | Path) -> list[ScoreSpec]:
    """The distinct scorings of ``specs`` not yet in the score cache, ordered so that cells sharing a
    (model, adapter) follow each other (one model load for them all)."""
    cache = layout.score_cache_dir(Path(results_dir))
    unique = {s.key(): s for s in specs}  # one computation per key, however many labels it has
    todo = [s for k, s in unique.items() if not (cache / f"{k}.jsonl").exists()]
    todo.sort(key=lambda s: (s.model, s.adapter_dir, s.task, s.shots, s.k))
    log.info("%d cells in the grid (%d distinct scorings), %d cached, %d to score",
             len(specs), len(unique), len(unique) - len(todo), len(todo))
    return todo


def score_cells(todo: list[ScoreSpec], results_dir: str | Path, tasks: dict[str, Any], cfg: GridConfig,
                load_model: Callable[[ScoreSpec], tuple[Any, Any]],
                load_contexts: Callable[[str, int, Any, int], tuple[list[str], dict]],
                score_fn: Callable[..., list[dict]], progress: bool = True, device: str = "cpu",
                dtype: str = "") -> None:
    """Score ``todo`` in order, each cell's per-question rows written atomically to the score cache
    (a cell already there, e.g. written by another worker, is skipped)."""
    cache = layout.score_cache_dir(Path(results_dir))
    cache.mkdir(parents=True, exist_ok=True)
    loaded_key, model, tok = None, None, None
    ctx_cache: dict[tuple[str, str, int], tuple[list[str], dict]] = {}
    meter = CellMeter(device)
    for spec in progress_iter(todo, desc="scoring cells", disable=not progress):
        if (cache / f"{spec.key()}.jsonl").exists():
            continue
        meter.start()
        load_s = 0.0
        if (spec.model, spec.adapter_dir) != loaded_key:
            model = tok = None
            model, tok = load_model(spec)
            loaded_key = (spec.model, spec.adapter_dir)
            load_s = meter.stop()["wall_s"]
        task = tasks[spec.task]
        questions = subset(task, cfg.max_questions.get(spec.task, 0))
        contexts = None
        if spec.k:
            # one assembly per (base model, task, K): adapters of a model share its tokenizer
            ctx_key = (spec.model, spec.task, spec.k)
            if ctx_key not in ctx_cache:
                ctx_cache[ctx_key] = load_contexts(spec.task, spec.k, tok, cfg.context_tokens)
            all_ctx, _stats = ctx_cache[ctx_key]
            by_id = dict(zip([q.id for q in task.questions], all_ctx))
            contexts = [by_id[q.id] for q in questions]
        t_load_end = meter.stop()["wall_s"]
        rows = score_fn(model, tok, questions, style=spec.style, shots=spec.shots, dev=task.dev,
                        contexts=contexts, batch_size=cfg.batch_size, progress=False)
        m = meter.stop()
        meta = {**dataclasses.asdict(spec), "seconds": round(m["wall_s"] - t_load_end, 3), "load_s": round(load_s, 3),
                "peak_mem_mb": m["peak_mem_mb"], "mem_source": m["mem_source"], "device": device,
                "dtype": spec.precision or dtype}
        write_jsonl(cache / f"{spec.key()}.jsonl", [{**meta, **r} for r in rows])


def subset(task: Any, max_questions: int) -> list:
    """The first ``max_questions`` questions (per subject when questions carry subjects)."""
    if not max_questions:
        return list(task.questions)
    per: dict[str, int] = {}
    out = []
    for q in task.questions:
        if per.get(q.subject, 0) < max_questions:
            per[q.subject] = per.get(q.subject, 0) + 1
            out.append(q)
    return out
