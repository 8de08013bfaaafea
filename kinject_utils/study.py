"""The study grid (notebook 05) and the claims check (notebook 06).

Methods, as the paper names them (Tables 1 and 2, Figure 4):

    base            the model as it is
    base+RAG        top-K retrieved passages prepended to the question (q~ = b_q || q)
    FT-reg          adapter fine-tuned on the raw knowledge base
    FT-par          adapter fine-tuned on the knowledge base plus N paraphrases per document
    FT-reg+RAG, FT-par+RAG
    FT-par(N)       the paraphrase sweep (Figure 4), at fixed epochs and at a fixed step budget

Every (model, task, method, shots, K) cell is scored once and cached as per-question JSONL under
``{RESULTS_DIR}/cache/05_scores/``; a re-run after an interruption only scores what is missing.
``05_scores.csv`` is rebuilt from those files at the end, so it is always complete and consistent.
"""
from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from .io import atomic_write_text, content_hash, read_jsonl, write_jsonl

__all__ = ["ScoreSpec", "GridConfig", "PAPER_TABLE1", "PAPER_TABLE2", "CLAIMS", "plan_grid",
           "run_grid", "collect_scores", "check_claims", "SCORE_COLUMNS"]

# Paper's numbers (PAPER.md), to print beside ours. Table 2: current events.
PAPER_TABLE2 = {
    "mistral-7b": {"base": .481, "base+RAG": .875, "FT-reg": .504, "FT-par": .588, "FT-reg+RAG": .810, "FT-par+RAG": .830},
    "llama2-7b": {"base": .353, "base+RAG": .585, "FT-reg": .219, "FT-par": .392, "FT-reg+RAG": .326, "FT-par+RAG": .520},
    "orca2-7b": {"base": .456, "base+RAG": .876, "FT-reg": .511, "FT-par": .566, "FT-reg+RAG": .820, "FT-par+RAG": .826},
}
_T1_METHODS = ("base", "base+RAG", "FT-reg", "FT-reg+RAG")  # the paper's "FT" on MMLU is FT on the raw KB
_T1 = {
    (0, "mistral-7b"): {"anatomy": (.556, .681, .570, .659), "astronomy": (.625, .678, .651, .697),
                        "college_biology": (.681, .757, .701, .764), "college_chemistry": (.470, .500, .490, .500),
                        "prehistory": (.713, .750, .719, .731)},
    (0, "llama2-7b"): {"anatomy": (.393, .489, .430, .489), "astronomy": (.401, .467, .487, .520),
                       "college_biology": (.438, .493, .458, .465), "college_chemistry": (.310, .380, .390, .390),
                       "prehistory": (.448, .481, .457, .478)},
    (0, "orca2-7b"): {"anatomy": (.607, .637, .600, .637), "astronomy": (.645, .750, .651, .750),
                      "college_biology": (.583, .639, .604, .632), "college_chemistry": (.370, .440, .370, .390),
                      "prehistory": (.642, .679, .673, .673)},
    (5, "mistral-7b"): {"anatomy": (.600, .681, .622, .674), "astronomy": (.658, .724, .651, .697),
                        "college_biology": (.722, .778, .736, .771), "college_chemistry": (.470, .540, .500, .500),
                        "prehistory": (.722, .762, .725, .762)},
    (5, "llama2-7b"): {"anatomy": (.467, .563, .496, .548), "astronomy": (.401, .474, .447, .520),
                       "college_biology": (.451, .521, .424, .479), "college_chemistry": (.370, .380, .360, .390),
                       "prehistory": (.515, .531, .503, .537)},
    (5, "orca2-7b"): {"anatomy": (.570, .659, .593, .674), "astronomy": (.664, .763, .664, .743),
                      "college_biology": (.604, .660, .625, .653), "college_chemistry": (.430, .470, .370, .380),
                      "prehistory": (.664, .698, .667, .694)},
}
# PAPER_TABLE1[(shots, model)][subject][method] -> accuracy
PAPER_TABLE1 = {key: {subj: dict(zip(_T1_METHODS, vals)) for subj, vals in rows.items()} for key, rows in _T1.items()}

SCORE_COLUMNS = ["model", "task", "subject", "method", "variant", "n_paraphrases", "budget", "shots", "k",
                 "style", "metric", "score", "score_lo", "score_hi", "acc", "acc_norm", "n",
                 "n_truncated", "seconds"]

CLAIMS = {
    1: "RAG beats the base model everywhere",
    2: "RAG beats fine-tuning",
    3: "FT on the raw corpus barely helps (and can hurt)",
    4: "FT on paraphrases beats FT on the raw corpus, rising with the number of paraphrases",
    5: "FT+RAG is not better than RAG alone",
}


@dataclasses.dataclass(frozen=True)
class ScoreSpec:
    """One cell of the grid: what is scored, with which adapter and how many retrieved passages."""

    model: str
    task: str
    method: str                 # base, base+RAG, FT-reg, FT-par, FT-reg+RAG, FT-par+RAG, FT-par(N)
    shots: int = 0
    k: int = 0                  # retrieved passages (0 = no RAG)
    style: str = "cloze"        # cloze | letter
    adapter_dir: str = ""       # empty for the base model
    variant: str = ""           # adapter variant name from 03_adapters/index.csv
    n_paraphrases: int = 0
    budget: str = ""            # epochs | steps (sweep only)

    def key(self) -> str:
        """Cache key of the *computation*: cells that differ only in their label share one scoring."""
        return content_hash([self.model, self.task, self.shots, self.k, self.style, self.adapter_dir], length=12)


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
        batch_size, dtype: scoring batch and precision (float32 matches lm-eval; bfloat16 is faster on CPU).
        context_tokens: token budget for the retrieved context (truncation is counted, never silent).
    """

    k: int = 3
    k_sweep: tuple[int, ...] = ()
    mmlu_style: str = "letter"
    mmlu_shots: tuple[int, ...] = (0, 5)
    max_questions: dict[str, int] = dataclasses.field(default_factory=dict)
    batch_size: int = 8
    dtype: str = "bfloat16"
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
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"GridConfig.dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")


def _read_adapter_index(results_dir: Path) -> list[dict[str, str]]:
    path = results_dir / "03_adapters" / "index.csv"
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _method_for_variant(row: dict[str, str]) -> str | None:
    """Map an adapter index row (notebook 03) to the Table 2 method it stands for (None: sweep only).

    finetune.plan_variants names the headline adapters ``ft-reg`` and ``ft-par``; sweep members are
    ``ft-par-N`` and fixed-step variants end in ``-fixed``.
    """
    return {"ft-reg": "FT-reg", "ft-par": "FT-par"}.get((row.get("variant") or "").strip())


def plan_grid(results_dir: str | Path, models: list[str], tasks: dict[str, Any], cfg: GridConfig,
              has_retrieval: Callable[[str], bool]) -> list[ScoreSpec]:
    """List every cell to score, given the tasks on disk, the adapters notebook 03 wrote and retrieval.

    Args:
        results_dir: the run's RESULTS_DIR.
        models: model names.
        tasks: task name -> loaded :class:`~kinject_utils.tasks.Task`.
        cfg: grid settings.
        has_retrieval: task name -> whether notebook 04 wrote retrieval results for it.
    """
    results_dir = Path(results_dir)
    adapters = _read_adapter_index(results_dir)
    specs: list[ScoreSpec] = []
    for model in models:
        for tname, task in tasks.items():
            is_mmlu = task.meta.get("kind") == "mmlu" or tname == "mmlu"
            style = cfg.mmlu_style if is_mmlu else "cloze"
            shots_list = cfg.mmlu_shots if is_mmlu and task.dev else (0,)
            rag = has_retrieval(tname)
            mine = [a for a in adapters if a.get("model") == model and a.get("task") == tname]
            for shots in shots_list:
                common = dict(model=model, task=tname, shots=shots, style=style)
                specs.append(ScoreSpec(method="base", **common))
                if rag:
                    specs.append(ScoreSpec(method="base+RAG", k=cfg.k, **common))
                    for k in cfg.k_sweep:
                        if k != cfg.k:
                            specs.append(ScoreSpec(method="base+RAG", k=k, **common))
                for a in mine:
                    method = _method_for_variant(a)
                    npar = int(a.get("n_paraphrases") or 0)
                    extra = dict(adapter_dir=a["adapter_dir"], variant=a.get("variant", ""),
                                 n_paraphrases=npar, budget=a.get("budget", ""))
                    if method:
                        specs.append(ScoreSpec(method=method, **common, **extra))
                        if rag:
                            specs.append(ScoreSpec(method=f"{method}+RAG", k=cfg.k, **common, **extra))
                    if cfg.sweep and shots == 0 and len(mine) > 1:
                        # sweep = epochs | steps | epochs+steps (one adapter standing for both budgets)
                        for budget in (a.get("sweep") or "epochs").split("+"):
                            specs.append(ScoreSpec(method=f"FT-par({npar})", **common,
                                                   **{**extra, "budget": budget}))
    # de-duplicate while keeping order
    seen, out = set(), []
    for s in specs:
        ident = tuple(sorted(dataclasses.asdict(s).items()))
        if ident not in seen:
            seen.add(ident)
            out.append(s)
    return out


def run_grid(specs: list[ScoreSpec], results_dir: str | Path, tasks: dict[str, Any], cfg: GridConfig,
             load_model: Callable[[ScoreSpec], tuple[Any, Any]],
             load_contexts: Callable[[str, int, Any, int], tuple[list[str], dict]],
             score_fn: Callable[..., list[dict]], progress: bool = True) -> Path:
    """Score every cell not yet cached; then rebuild ``05_scores.csv`` and ``05_per_question.jsonl``.

    The model is (re)loaded only when the (model, adapter) pair changes; cells are ordered so that
    happens as rarely as possible. Each cell's per-question rows are written atomically to
    ``cache/05_scores/<key>.jsonl``; an interrupted run resumes with the next unscored cell.
    """
    from tqdm.auto import tqdm

    results_dir = Path(results_dir)
    cache = results_dir / "cache" / "05_scores"
    cache.mkdir(parents=True, exist_ok=True)
    unique = {s.key(): s for s in specs}  # one computation per key, however many labels it has
    todo = [s for k, s in unique.items() if not (cache / f"{k}.jsonl").exists()]
    todo.sort(key=lambda s: (s.model, s.adapter_dir, s.task, s.shots, s.k))
    print(f"[05] {len(specs)} cells in the grid ({len(unique)} distinct scorings), "
          f"{len(unique) - len(todo)} cached, {len(todo)} to score")
    loaded_key, model, tok = None, None, None
    ctx_cache: dict[tuple[str, str, int], tuple[list[str], dict]] = {}
    for spec in tqdm(todo, desc="scoring cells", disable=not progress):
        if (spec.model, spec.adapter_dir) != loaded_key:
            model = tok = None
            model, tok = load_model(spec)
            loaded_key = (spec.model, spec.adapter_dir)
        task = tasks[spec.task]
        questions = _subset(task, cfg.max_questions.get(spec.task, 0))
        contexts = None
        if spec.k:
            # one assembly per (base model, task, K): adapters of a model share its tokenizer
            ctx_key = (spec.model, spec.task, spec.k)
            if ctx_key not in ctx_cache:
                ctx_cache[ctx_key] = load_contexts(spec.task, spec.k, tok, cfg.context_tokens)
            all_ctx, _stats = ctx_cache[ctx_key]
            by_id = dict(zip([q.id for q in task.questions], all_ctx))
            contexts = [by_id[q.id] for q in questions]
        t0 = time.time()
        rows = score_fn(model, tok, questions, style=spec.style, shots=spec.shots, dev=task.dev,
                        contexts=contexts, batch_size=cfg.batch_size, progress=False)
        secs = time.time() - t0
        meta = {**dataclasses.asdict(spec), "seconds": secs}
        write_jsonl(cache / f"{spec.key()}.jsonl", [{**meta, **r} for r in rows])
    return collect_scores(specs, results_dir)


def _subset(task: Any, max_questions: int) -> list:
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


def collect_scores(specs: Iterable[ScoreSpec], results_dir: str | Path, seed: int = 0) -> Path:
    """Aggregate cached per-question rows into ``05_scores.csv`` (overall and per MMLU subject)."""
    from .scoring import bootstrap_ci

    results_dir = Path(results_dir)
    cache = results_dir / "cache" / "05_scores"
    out_rows, per_q = [], []
    for spec in specs:
        path = cache / f"{spec.key()}.jsonl"
        if not path.exists():
            continue
        rows = [{**r, **dataclasses.asdict(spec)} for r in read_jsonl(path)]
        per_q.extend(rows)
        metric = "acc_norm" if spec.style == "cloze" else "acc"
        groups = {"all": rows}
        subjects = sorted({r.get("subject", "") for r in rows} - {""})
        if len(subjects) > 1:
            groups.update({s: [r for r in rows if r.get("subject") == s] for s in subjects})
        for subject, grp in groups.items():
            vals = [float(r[metric]) for r in grp]
            lo, hi = bootstrap_ci(vals, seed=seed)
            out_rows.append({
                "model": spec.model, "task": spec.task, "subject": subject, "method": spec.method,
                "variant": spec.variant, "n_paraphrases": spec.n_paraphrases, "budget": spec.budget,
                "shots": spec.shots, "k": spec.k, "style": spec.style, "metric": metric,
                "score": round(sum(vals) / len(vals), 6), "score_lo": round(lo, 6), "score_hi": round(hi, 6),
                "acc": round(sum(float(r["acc"]) for r in grp) / len(grp), 6),
                "acc_norm": round(sum(float(r["acc_norm"]) for r in grp) / len(grp), 6),
                "n": len(grp), "n_truncated": sum(bool(r.get("truncated")) for r in grp),
                "seconds": round(float(grp[0].get("seconds", 0.0)), 2) if subject == "all" else "",
            })
    lines = [",".join(SCORE_COLUMNS)]
    for r in out_rows:
        lines.append(",".join(_csv_cell(r[c]) for c in SCORE_COLUMNS))
    path = results_dir / "05_scores.csv"
    atomic_write_text(path, "\n".join(lines) + "\n")
    write_jsonl(results_dir / "05_per_question.jsonl",
                [{k: r[k] for k in ("model", "task", "method", "shots", "k", "variant", "id", "acc", "acc_norm", "subject") if k in r}
                 for r in per_q])
    return path


def _csv_cell(v: Any) -> str:
    s = str(v)
    return f'"{s}"' if any(c in s for c in ',"\n') else s


def check_claims(scores: Any, per_question: list[dict], seed: int = 0) -> list[dict]:
    """Decide, for each of the paper's five claims, whether this run supports it.

    A comparison "A beats B" counts as supported when a paired test on the same questions gives a
    positive difference whose 95% bootstrap interval excludes 0. Each claim reports every
    comparison it rests on, so the reader can see what decided it.

    Args:
        scores: ``05_scores.csv`` as a pandas DataFrame.
        per_question: rows of ``05_per_question.jsonl``.

    Returns:
        One dict per claim: number, claim, verdict (supported / not supported / mixed / untested), evidence.
    """
    from .scoring import paired_test

    def key(r: dict) -> tuple:
        return (r["model"], r["task"], int(r["shots"]), r["method"], int(r["k"]))

    by_cell: dict[tuple, dict[str, float]] = {}
    for r in per_question:
        metric = "acc_norm" if r["task"] != "mmlu" else "acc"
        by_cell.setdefault(key(r), {})[r["id"]] = float(r.get(metric, r["acc"]))

    def compare(model, task, shots, a, b):
        ca = next((v for k_, v in by_cell.items() if k_[:4] == (model, task, shots, a)), None)
        cb = next((v for k_, v in by_cell.items() if k_[:4] == (model, task, shots, b)), None)
        if ca is None or cb is None:
            return None
        ids = sorted(set(ca) & set(cb))
        # paired_test(x, y) reports y - x: pass (b, a) so diff = acc(a) - acc(b)
        res = paired_test([cb[i] for i in ids], [ca[i] for i in ids], seed=seed)
        return {"model": model, "task": task, "shots": shots, "a": a, "b": b, "n": len(ids),
                "acc_a": res["acc_b"], "acc_b": res["acc_a"], "diff": res["diff"],
                "diff_lo": res["diff_lo"], "diff_hi": res["diff_hi"], "p_value": res["p_mcnemar"]}

    combos = sorted({(k_[0], k_[1], k_[2]) for k_ in by_cell})
    out = []

    def verdict(evid: list[dict]) -> str:
        if not evid:
            return "untested"
        ok = [e["holds"] for e in evid]
        return "supported" if all(ok) else ("not supported" if not any(ok) else "mixed")

    pairs = {
        1: [("base+RAG", "base", "better")],
        2: [("base+RAG", "FT-reg", "better"), ("base+RAG", "FT-par", "better")],
        3: [("FT-reg", "base", "small")],
        4: [("FT-par", "FT-reg", "better")],
        5: [("FT-reg+RAG", "base+RAG", "not_better"), ("FT-par+RAG", "base+RAG", "not_better")],
    }
    for num, comps in pairs.items():
        evid = []
        for (m, t, s) in combos:
            for a, b, want in comps:
                e = compare(m, t, s, a, b)
                if e:
                    e["want"] = want
                    e["holds"] = _holds(e)
                    evid.append(e)
        out.append({"claim": num, "text": CLAIMS[num],
                    "verdict": verdict(evid), "evidence": evid})
    # claim 4's second half: monotone rise over the sweep (Spearman rho of acc vs N)
    sweep = scores[scores["method"].str.startswith("FT-par(") & (scores["subject"] == "all")] if len(scores) else scores
    mono = []
    for (m, t, budget), grp in (sweep.groupby(["model", "task", "budget"]) if len(sweep) else []):
        g = grp.sort_values("n_paraphrases")
        if len(g) >= 3:
            mono.append({"model": m, "task": t, "budget": budget, "n_paraphrases": list(g["n_paraphrases"]),
                         "score": [round(x, 3) for x in g["score"]], "spearman": _spearman(list(g["n_paraphrases"]), list(g["score"])),
                         "monotone": all(b >= a for a, b in zip(g["score"], list(g["score"])[1:]))})
    out[3]["sweep"] = mono
    if mono:  # claim 4 has two halves: FT-par > FT-reg, and a monotone rise over the sweep
        ok = [m["monotone"] for m in mono]
        sweep_verdict = "supported" if all(ok) else ("not supported" if not any(ok) else "mixed")
        pair = out[3]["verdict"]
        if pair == "untested":
            out[3]["verdict"] = sweep_verdict
        elif pair != sweep_verdict:
            out[3]["verdict"] = "mixed"
    return out


def _holds(e: dict) -> bool:
    """Whether one comparison goes the way the claim says (``e["want"]``), by its 95% interval."""
    lo, hi = e["diff_lo"], e["diff_hi"]
    w = e["want"]
    if w == "better":
        return lo > 0
    if w == "not_better":
        return not lo > 0
    if w == "small":  # "barely helps": no significant gain above 5 points
        return hi < 0.05 or not lo > 0.05
    raise ValueError(w)


def _spearman(x: list, y: list) -> float:
    import numpy as np

    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for val in np.unique(v):  # average ties
            idx = v == val
            r[idx] = r[idx].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def load_tasks(results_dir: str | Path, names: list[str]) -> dict[str, Any]:
    """Load the tasks notebook 01 wrote; a missing one is skipped with a message naming its folder."""
    from .tasks import load_task, task_dir

    out = {}
    for name in names:
        folder = task_dir(results_dir, name)
        if not (folder / "questions.jsonl").exists():
            print(f"[05] skipping task '{name}': {folder} not found (notebook 01 did not build it; "
                  "for MMLU, is ../shared/data/mmlu there?)")
            continue
        out[name] = load_task(folder)
    return out


def score_study(results_dir: str | Path, models: list[str], task_names: list[str], cfg: GridConfig,
                device: str = "auto", progress: bool = True) -> Path:
    """Notebook 05 in one call: plan the grid from what earlier notebooks wrote, score, aggregate."""
    from . import finetune, retrieval, scoring
    from .models import load_causal_lm

    results_dir = Path(results_dir)
    tasks = load_tasks(results_dir, task_names)

    def has_retrieval(task: str) -> bool:
        return (results_dir / "04_retrieval" / task / "retrieved.jsonl").exists()

    def load_model(spec: ScoreSpec):
        if spec.adapter_dir:
            return finetune.load_finetuned(spec.model, spec.adapter_dir, dtype=cfg.dtype, merge=True)
        return load_causal_lm(spec.model, dtype=cfg.dtype, device=device)

    def load_contexts(task: str, k: int, tok: Any, max_tokens: int):
        return retrieval.load_contexts(results_dir, task, k, tok, max_tokens)

    specs = plan_grid(results_dir, models, tasks, cfg, has_retrieval)
    return run_grid(specs, results_dir, tasks, cfg, load_model, load_contexts, scoring.score_questions,
                    progress=progress)
