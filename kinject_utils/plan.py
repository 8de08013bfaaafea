"""The runner's ``--plan``: what each notebook would load, where, how much work, how long. Offline.

Nothing is downloaded and no model is loaded. Token counts come from the task generators run in
memory (the fictional news set is generated, ~0.4 s for ``large``) and are counted with the
embedded SmolLM2 tokenizer when its converted folder is already cached, else estimated as
words x 1.3 (the plan says which; a 7B model's 32k-vocabulary tokenizer gives somewhat more
tokens than SmolLM2's 49k one). Times come only from measured throughputs:

* GPU training: QLoRA on a Mistral-7B-shaped model, r=64, 256-token chunks, gradient
  checkpointing, one H100 80GB (2026-11-23): micro-batch 4 / 16 / 32 / 64 -> 1,273 / 3,585 /
  3,937 / 4,084 tokens/s. Other micro-batches use the nearest measured one below.
* CPU training: :func:`kinject_utils.finetune.plan_training`'s figure (an adapter this config
  already trained here, else the finetune package's measured table), else :data:`CPU_TRAIN_TOKS_PER_S`.
* Local paraphrasing (notebook 02): :data:`kinject_utils.paraphrase.LOCAL_SECONDS_PER_REQUEST`, measured here,
  at the upper bound (every retry used); a bring-your-own task's FT-par is planned with notebook 02's
  paraphrases (its file if written, else N per document, each as long as the document).
* Scoring on a GPU: not measured as requests/s (only relative to lm-eval), so the plan says so.
"""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import layout

#: H100 80GB, QLoRA r=64 at Mistral-7B shape, checkpointing on: micro-batch -> measured tokens/s
GPU_QLORA_TOKS_PER_S = {4: 1273.0, 16: 3585.0, 32: 3937.0, 64: 4084.0}
GPU_SOURCE = "H100 80GB, QLoRA r=64 at 7B shape, checkpointing, measured 2026-11-23"
#: CPU LoRA training, 2 cores, fp32 (model -> (tokens/s, where measured))
CPU_TRAIN_TOKS_PER_S = {"smollm2-135m": (295.0, "2-core AVX-512 CPU without AMX, fp32, measured 2026-11-23")}
MMLU_TEST_QUESTIONS = {"anatomy": 135, "astronomy": 152, "college_biology": 144, "college_chemistry": 100,
                       "prehistory": 324}
N_OPTIONS = 4
CHUNK_LEN = 256


@dataclass
class NotebookPlan:
    """One notebook's plan: printable lines and the expected hours (``None``: not measured)."""

    num: str
    name: str
    lines: list[str] = field(default_factory=list)
    hours: float | None = 0.0
    unmeasured: list[str] = field(default_factory=list)


def _default(info: dict[str, Any]) -> Any:
    try:
        return ast.literal_eval(str(info.get("default")))
    except (ValueError, SyntaxError):
        return None


def _params(declared: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    return {k: given.get(k, _default(v)) for k, v in declared.items()}


def _device(name: str) -> str:
    """The device a stage would use; ``cuda`` is printed as asked, without requiring a GPU here."""
    d = str(name).strip().lower()
    if d.startswith("cuda"):
        return f"{d} (as configured; not checked here)"
    from .device import resolve_device

    return resolve_device(d)


class _Counter:
    """Token counts: the embedded SmolLM2 tokenizer if already converted, else words x 1.3."""

    def __init__(self) -> None:
        self.tok = None
        self.how = "estimated as words x 1.3 (the SmolLM2 tokenizer is not cached yet)"
        try:
            from .models import cache_dir

            folder = cache_dir() / "models" / "smollm2-135m"
            if (folder / "tokenizer.json").exists() or (folder / "tokenizer_config.json").exists():
                from transformers import AutoTokenizer

                self.tok = AutoTokenizer.from_pretrained(str(folder))
                self.how = "counted with the embedded SmolLM2 tokenizer (a 7B 32k-vocab tokenizer gives more)"
        except Exception:  # noqa: BLE001 - any failure falls back to the stated estimate
            self.tok = None

    def __call__(self, texts: list[str]) -> int:
        if self.tok is None:
            return int(sum(len(t.split()) for t in texts) * 1.3)
        return sum(len(ids) for ids in self.tok(list(texts), add_special_tokens=False)["input_ids"])


def _task_sizes(p01: dict[str, Any], count: _Counter) -> dict[str, dict[str, Any]]:
    """Per task: questions, docs, per-document token counts of the text and its paraphrases (or a note)."""
    from . import data

    out: dict[str, dict[str, Any]] = {}
    for task in p01.get("TASKS") or []:
        if task == "fictional_news":
            t = data.make_fictional_news(p01.get("TASK_SIZE", "default"), p01.get("SEED", 0),
                                         p01.get("N_PARAPHRASES", 10))
            out[task] = _measure(t, count, f"generated offline (size {p01.get('TASK_SIZE')})")
        elif task == "fictional_knowledge":
            explicit = p01.get("FICTIONAL_KNOWLEDGE_DIR", "")
            try:
                src = data.resolve_dataset(task, explicit, download=False)  # never downloads in a plan
                cap = p01.get("FK_MAX_QUESTIONS") or None
                # judge=None: the counts do not depend on the judge, and a plan loads no model
                t = data.load_fictional_knowledge(src.path, max_questions=cap, seed=p01.get("SEED", 0), judge=None)
                out[task] = _measure(t, count, f"data: {src.origin}: {src.path}")
            except Exception:  # noqa: BLE001
                out[task] = {"note": f"data: {data.describe_source(task, explicit)}; size known once it is there"}
        elif task == "mmlu":
            n = sum(MMLU_TEST_QUESTIONS.values())
            kb = p01.get("MMLU_KB") or ""
            out[task] = {"questions": n, "per_subject": MMLU_TEST_QUESTIONS,
                         "note": f"data: {data.describe_source(task, p01.get('MMLU_DIR', ''))}; "
                                 f"5 subjects, {n} test questions; knowledge base: "
                                 + ("Wikipedia, size unknown offline" if kb == "wikipedia" else "none (no RAG, no FT)"),
                         "kb_unknown": kb == "wikipedia"}
        elif task == "custom":
            out[task] = _custom_size(p01, count)
        else:
            out[task] = {"note": "unknown task: size known after notebook 01"}
    return out


def _custom_size(p01: dict[str, Any], count: _Counter) -> dict[str, Any]:
    """The bring-your-own task read from CUSTOM_DOCS_DIR + CUSTOM_QUESTIONS (as notebook 01 reads it)."""
    from .data import load_custom_task
    from .io import resolve_path

    docs, questions = p01.get("CUSTOM_DOCS_DIR"), p01.get("CUSTOM_QUESTIONS")
    if not docs or not questions:
        return {"note": "bring-your-own task: set CUSTOM_DOCS_DIR and CUSTOM_QUESTIONS (notebook 01 stops without)"}
    try:
        task = load_custom_task(resolve_path(docs), resolve_path(questions))
    except Exception as exc:  # noqa: BLE001 - the plan reports it; notebook 01 raises it with the fix
        return {"note": f"bring-your-own task not readable: {exc}"}
    return _measure(task, count, f"read from {docs} and {questions}")


def _plan_02(p: dict[str, Any], sizes: dict[str, Any], results_dir: Path, count: _Counter) -> NotebookPlan:
    """Backend, requests and expected minutes per task; a task that ships no rewordings gets the paraphrases
    notebook 02 will write (its file if already written, else N per document as long as the document) for 03."""
    from .paraphrase import backend_for, format_budget, paraphrase_budget, read_paraphrases

    backend = p.get("PARAPHRASE_BACKEND")
    plan = NotebookPlan("02", "paraphrase", [f"backend {backend} on {_device(p.get('DEVICE', 'cpu'))}"])
    minutes = 0.0
    for name in p.get("TASKS") or []:
        size = sizes.get(name, {})
        task = size.get("task")
        if p.get("FT_TASKS") and name not in p["FT_TASKS"]:
            plan.lines.append(f"  {name}: not in FT_TASKS: not paraphrased")
            continue
        if task is None or not task.docs:
            plan.lines.append(f"  {name}: {size.get('note', 'no knowledge base')}: nothing to paraphrase")
            continue
        kind, why = backend_for(backend, task)
        if kind is None:
            plan.lines.append(f"  WARNING {why}")
            continue
        b = paraphrase_budget(task, kind, int(p.get("N_PARAPHRASES", 10)), int(p.get("MAX_RETRIES", 0)),
                              model=p.get("PARAPHRASE_MODEL", "smollm2-135m"),
                              max_new_tokens=int(p.get("LOCAL_MAX_NEW_TOKENS", 256)))
        plan.lines.append(f"  {format_budget(b)} [{why}]")
        if b["minutes_max"] is None:
            plan.unmeasured.append(f"02 {name} paraphrasing")
        else:
            minutes += b["minutes_max"]
        if kind != "generator":
            written = layout.paraphrase_file(results_dir, name)
            task.paraphrases = read_paraphrases(results_dir, name) if written.exists() else \
                {d.doc_id: [d.text] * int(p.get("N_PARAPHRASES", 10)) for d in task.docs}
            size["par_tokens"] = {d: [count([x]) for x in ps] for d, ps in task.paraphrases.items()}
            plan.lines.append(f"  {name}: notebook 03 planned with " + (f"the paraphrases in {written}" if
                              written.exists() else "every paraphrase assumed as long as its document"))
    if p.get("LOCAL_SAMPLE_DOCS"):
        plan.lines.append(f"  + local-model comparison on {p['LOCAL_SAMPLE_DOCS']} documents of "
                          f"{p.get('LOCAL_SAMPLE_TASK')} (not included in the time)")
    plan.hours = minutes / 60
    return plan


def _measure(task: Any, count: _Counter, note: str) -> dict[str, Any]:
    doc_tokens = {d.doc_id: count([d.text]) for d in task.docs}
    par_tokens = {d: [count([p]) for p in ps] for d, ps in task.paraphrases.items()}
    return {"questions": len(task.questions), "docs": len(task.docs), "doc_tokens": doc_tokens,
            "par_tokens": par_tokens, "note": note, "task": task}


def corpus_tokens(size: dict[str, Any], n: int) -> int:
    """Tokens of the corpus 'every document + its first ``n`` paraphrases'."""
    return sum(size["doc_tokens"].values()) + sum(sum(v[:n]) for v in size["par_tokens"].values())


def _finetune_cfg(p03: dict[str, Any]) -> tuple[Any, int, Any, str]:
    """(FinetuneConfig or None, effective batch, micro-batch, recipe) of notebook 03's preset + FT_SETTINGS."""
    name = p03.get("FT_PRESET", "cpu")
    try:
        from .finetune import preset

        cfg = preset(name, **{"epochs": p03.get("EPOCHS", 1), "seed": p03.get("SEED", 0),
                              "device": p03.get("DEVICE", "auto"), **(p03.get("FT_SETTINGS") or {})})
        return cfg, cfg.effective_batch, cfg.micro_batch, f"{name}: {cfg.method} r={cfg.lora_r}"
    except (ImportError, AttributeError):  # the plan still prints with the paper's batch
        return None, 64, 4, f"{name} (kinject_utils.finetune.preset not importable: batch 64 assumed)"


def _gpu_rate(micro: Any) -> tuple[float, str]:
    """Measured QLoRA tokens/s for a micro-batch: the nearest measured one at or below it."""
    if micro == "auto":  # the memory model picks the largest that fits; on an 80 GB card that is 64
        m = max(GPU_QLORA_TOKS_PER_S)
        return GPU_QLORA_TOKS_PER_S[m], f"{GPU_QLORA_TOKS_PER_S[m]:,.0f} tok/s ({GPU_SOURCE}, micro-batch auto -> {m})"
    m = max([x for x in GPU_QLORA_TOKS_PER_S if x <= int(micro)] or [min(GPU_QLORA_TOKS_PER_S)])
    return GPU_QLORA_TOKS_PER_S[m], f"{GPU_QLORA_TOKS_PER_S[m]:,.0f} tok/s ({GPU_SOURCE}, micro-batch {m})"


def _variant_rows(model: str, size: dict[str, Any], p: dict[str, Any], cfg: Any, eff: int,
                  tok: Any, results_dir: Path) -> list[dict[str, Any]]:
    """Per variant notebook 03 would train: name, corpus tokens, steps, training tokens, CPU minutes, source.

    With the finetune package and a tokenizer: :func:`finetune.plan_training` per variant (exact chunking);
    otherwise ceil(tokens / 256) chunks and ceil(chunks / batch) steps per epoch from the counted tokens.
    """
    in_sweep = model in (p.get("SWEEP_MODELS") or [])
    sweep = (p.get("SWEEP") or [0]) if in_sweep else [0]
    fixed = p.get("FIXED_BUDGET", "off") if in_sweep else "off"
    epochs = int(p.get("EPOCHS", 1))
    available = min((len(v) for v in size["par_tokens"].values()), default=0)
    task = size.get("task")
    if cfg is not None and tok is not None and task is not None:
        from .finetune import corpus_for, plan_training, plan_variants

        def one(n: int, vcfg: Any) -> dict[str, Any]:
            return plan_training(model, corpus_for(task.docs, task.paraphrases, n), vcfg, tokenizer=tok,
                                 results_dir=results_dir, warn=False)

        epoch_plans = {n: one(n, cfg) for n in sorted({0, *sweep, p.get("N_PAR", 0)}) if n <= available}
        rows = []
        for v in plan_variants(sweep, p.get("N_PAR", 0), lambda n: epoch_plans[n]["steps"], fixed_budget=fixed,
                               available=available):
            pl = epoch_plans[v.n_paraphrases] if v.budget == "epochs" else \
                one(v.n_paraphrases, cfg.replace(budget="steps", max_steps=v.max_steps))
            rows.append({"variant": v.name, "corpus": pl["corpus_tokens"], "steps": pl["steps"],
                         "tokens": pl["tokens_trained"], "minutes": pl["minutes"], "source": pl["tokens_per_s_source"],
                         "how": "finetune.plan_training"})
        return rows
    rows = []
    for n in sorted({0, *sweep, p.get("N_PAR", 0)}):
        if n <= available:
            corpus = corpus_tokens(size, n)
            steps = math.ceil(math.ceil(corpus / CHUNK_LEN) / eff) * epochs
            rows.append({"variant": "ft-reg" if n == 0 else f"ft-par-{n}", "corpus": corpus, "steps": steps,
                         "tokens": steps * eff * CHUNK_LEN, "minutes": None, "source": "",
                         "how": "ceil(tokens/256) chunks (fixed-step variants not counted)"})
    return rows


def _cpu_rate(model: str) -> tuple[float | None, str]:
    if model in CPU_TRAIN_TOKS_PER_S:
        rate, where = CPU_TRAIN_TOKS_PER_S[model]
        return rate, f"{rate:,.0f} tok/s ({where})"
    return None, "not measured for this model on a CPU"


def _plan_03(p: dict[str, Any], sizes: dict[str, Any], results_dir: Path, tok: Any) -> NotebookPlan:
    plan = NotebookPlan("03", "fine-tune")
    cfg, eff, micro, recipe = _finetune_cfg(p)
    device = _device(p.get("DEVICE", "auto"))
    ft_tasks = [t for t in p.get("TASKS", []) if not p.get("FT_TASKS") or t in p["FT_TASKS"]]
    plan.lines.append(f"models {p.get('MODELS')} on {device}; {recipe}, effective batch {eff}, micro-batch "
                      f"{micro}, {p.get('EPOCHS')} epoch(s), {CHUNK_LEN}-token chunks")
    total_h = 0.0
    for model in p.get("MODELS", []):
        for task in ft_tasks:
            size = sizes.get(task, {})
            if "doc_tokens" not in size:
                plan.lines.append(f"  {model} / {task}: {size.get('note', 'not built')}: not planned")
                if size.get("kb_unknown"):
                    plan.unmeasured.append(f"03 {task} (knowledge base size unknown offline)")
                continue
            rows = _variant_rows(model, size, p, cfg, eff, tok, results_dir)
            for r in rows:
                plan.lines.append(f"  {model} / {task} / {r['variant']}: corpus {r['corpus']:,} tokens, "
                                  f"{r['steps']:,} optimiser steps, {r['tokens']:,} training tokens")
            tokens = sum(r["tokens"] for r in rows)
            if device.startswith("cuda"):
                rate, note = _gpu_rate(micro)
                hours = tokens / rate / 3600
            elif rows and all(r["minutes"] is not None and math.isfinite(r["minutes"]) for r in rows):
                hours, note = sum(r["minutes"] for r in rows) / 60, rows[0]["source"]
            else:
                rate, note = _cpu_rate(model)
                hours = tokens / rate / 3600 if rate else None
            plan.lines.append(f"  {model} / {task}: {tokens:,} training tokens ({rows[0]['how'] if rows else '-'}) "
                              f"at {note} -> " + (_hm(hours) if hours is not None else "time not measured"))
            if hours is None:
                plan.unmeasured.append(f"03 {model} training")
            else:
                total_h += hours
    if p.get("LR_SEARCH"):
        plan.lines.append(f"  + learning-rate search over {p['LR_SEARCH']} on {p.get('LR_SEARCH_DOCS')} documents "
                          "(not included in the time)")
        plan.unmeasured.append("03 learning-rate search")
    plan.hours = total_h
    return plan


def _adapter_cells(p03: dict[str, Any], p05: dict[str, Any], model: str) -> int:
    """Cells notebook 05 scores for one fine-tuned model x task: each distinct adapter once, + FT-reg/FT-par+RAG.

    A sweep member that is also FT-reg or the headline FT-par is the same adapter and the same
    cached cell (scored once); each sweep count but 0 has a fixed-step twin unless FIXED_BUDGET is off.
    """
    n_par = int(p03.get("N_PAR") or 0)
    counts = {0, n_par}
    if p05.get("SWEEP") and model in (p03.get("SWEEP_MODELS") or []):
        counts |= {int(n) for n in p03.get("SWEEP") or []}
        twins = len(counts) - 1 if p03.get("FIXED_BUDGET", "ft-reg") != "off" else 0
    else:
        twins = 0
    return len(counts) + twins + (2 if n_par else 1)


def _plan_05(p: dict[str, Any], sizes: dict[str, Any], p03: dict[str, Any]) -> NotebookPlan:
    plan = NotebookPlan("05", "score")
    device = _device(p.get("DEVICE", "auto"))
    plan.lines.append(f"models {p.get('MODELS')} (base; + every adapter of 03 for {p03.get('MODELS')}) on {device}, "
                      f"dtype {p.get('DTYPE')}, batch {p.get('BATCH_SIZE')}")
    caps = p.get("MAX_QUESTIONS") or {}
    ft_tasks = [t for t in p03.get("TASKS", []) if not p03.get("FT_TASKS") or t in p03["FT_TASKS"]]
    total = 0
    for model in p.get("MODELS", []):
        for task in p.get("TASKS", []):
            size = sizes.get(task)
            if not size or "questions" not in size:
                plan.lines.append(f"  {model} / {task}: size unknown offline")
                continue
            if task == "mmlu":
                cap = caps.get("mmlu")
                q = sum(min(n, cap) if cap else n for n in MMLU_TEST_QUESTIONS.values())
                cells = len(p.get("MMLU_SHOTS") or [0]) * (2 if size.get("kb_unknown") else 1)
            else:
                q = min(size["questions"], caps[task]) if caps.get(task) else size["questions"]
                tuned = task in ft_tasks and model in (p03.get("MODELS") or [])  # notebook 03 trains it
                cells = 2 + len(p.get("K_SWEEP") or []) + (_adapter_cells(p03, p, model) if tuned else 0)
            plan.lines.append(f"  {model} / {task}: {q:,} questions x {cells} cells = {q * cells:,} scored questions "
                              f"({q * cells * N_OPTIONS:,} log-likelihood requests)")
            total += q * cells
    rate_note = "not measured as requests/s on a GPU" if device.startswith("cuda") else \
        "see the runner's timings.json of an earlier run"
    plan.lines.append(f"  {total:,} scored questions in all; time: {rate_note}")
    plan.hours = None
    plan.unmeasured.append("05 scoring")
    return plan


def _plan_07(p: dict[str, Any]) -> NotebookPlan:
    """Notebook 07's work in counts (SliCK generations, fine-tuning runs); its time is not modelled here."""
    n_q = 4 * int(p.get("N_QUESTIONS", 0)) + int(p.get("N_FICTIONAL", 0))  # 4 real relations + invented facts
    gens = int(p.get("N_PROMPTS", 0)) * (1 + int(p.get("N_SAMPLES", 0)))
    n_sets = len(p.get("UNKNOWN_SHARES") or []) + 1 + 3  # the shares, the IDK variant, up to 3 single-category sets
    dev = _device(p.get("DEVICE", "auto"))
    plan = NotebookPlan("07", "new knowledge", [
        f"models {p.get('MODELS')} on {dev}: SliCK over ~{n_q} questions (+ QA_FILES) x {p.get('N_PROMPTS')} prompts "
        f"x (1 greedy + {p.get('N_SAMPLES')} samples) = ~{n_q * gens:,} answers per model",
        f"fine-tunes {p.get('TRAIN_MODELS')}: up to {n_sets} sets of {p.get('TRAIN_SIZE')} (single-category: "
        f"{p.get('SINGLE_SIZE')}) examples x {p.get('EPOCHS')} epochs, answers re-scored after every epoch"])
    plan.hours = None
    plan.unmeasured.append("07 (see the runner's timings.json of an earlier run)")
    return plan


def plan_run(settings: Any, chosen: list[tuple[Path, dict[str, Any]]],
             declared: dict[str, dict[str, Any]]) -> list[NotebookPlan]:
    """One :class:`NotebookPlan` per chosen notebook (``chosen``, ``declared`` as :func:`runner.prepare` returns)."""
    allp = {num: _params(d, settings.parameters_for(num, d)) for num, d in declared.items()}
    p01 = allp.get("01", {})
    count = _Counter()
    sizes = _task_sizes(p01, count)
    # 02 first, always: a task without rewordings gets notebook 02's paraphrases, which 03 plans with
    plan02 = _plan_02(allp["02"], sizes, Path(allp["02"].get("RESULTS_DIR", "results")), count) if "02" in allp \
        else None
    out = []
    for nb, _ in chosen:
        num, p = nb.name[:2], allp[nb.name[:2]]
        if num == "01":
            pl = NotebookPlan(num, "prepare data", [f"tokenizer {p.get('TOKENIZER')!r} (token statistics); tokens "
                                                    + count.how])
            for task, s in sizes.items():
                pl.lines.append(f"  {task}: " + (f"{s['questions']:,} questions, {s.get('docs', 0):,} documents, "
                                                 f"{sum(s.get('doc_tokens', {}).values()):,} KB tokens; "
                                                 if "questions" in s else "") + s.get("note", ""))
        elif num == "02" and plan02 is not None:
            pl = plan02
        elif num == "03":
            pl = _plan_03(p, sizes, Path(p.get("RESULTS_DIR", "results")), count.tok)
        elif num == "04":
            pl = NotebookPlan(num, "retrieve", [f"embedder {p.get('EMBEDDER')} on {_device(p.get('DEVICE', 'cpu'))}; "
                                                f"top-{p.get('K_MAX')} {p.get('RETRIEVER')} over {p.get('TASKS')}"])
            pl.hours = None
            pl.unmeasured.append("04 embedding")
        elif num == "05":
            pl = _plan_05(p, sizes, allp.get("03") or {})
        elif num == "07":
            pl = _plan_07(p)
        else:
            pl = NotebookPlan(num, nb.stem[3:], ["tables, figures and the claims check: no model"])
        out.append(pl)
    return out


def _hm(hours: float) -> str:
    return f"{hours:.2f} h" if hours >= 1 else f"{hours * 60:.1f} min"


def format_plan(plans: list[NotebookPlan]) -> str:
    """The plan as text, with the total expected time from measured throughputs."""
    lines = []
    for p in plans:
        lines.append(f"[{p.num}] {p.name}")
        lines += [f"    {x}" for x in p.lines]
    measured = sum(p.hours for p in plans if p.hours)
    unmeasured = [u for p in plans for u in p.unmeasured]
    par = any(p.num == "02" and p.hours for p in plans)
    lines.append(f"expected: {measured:.2f} h ({measured * 60:.1f} min) of training from measured tokens/s"
                 + (" and local paraphrasing from measured seconds per request (at most)" if par else "")
                 + (f"; not included (not measured): {', '.join(unmeasured)}" if unmeasured else ""))
    return "\n".join(lines)
