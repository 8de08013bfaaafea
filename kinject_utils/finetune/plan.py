"""A training plan before training: tokens, chunks, optimiser steps and expected minutes on this machine.

:func:`plan_training` is a pure function of the texts, the settings and the model name (it loads
the tokenizer only), so the runner's ``--plan`` and notebook 03 can show it before anything
trains, with a warning on the terminal when a corpus plans far more than the budget (a 5 MB
document at the CPU preset is ~1,650 steps: hours, not minutes).

Tokens/s come, in this order, from the newest finished adapter of the same model, method, dtype
and device under ``results_dir`` (measured on this machine), else :data:`TOKENS_PER_S` (measured,
provenance in each entry), else a scaled estimate (said so in ``tokens_per_s_source``).
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from .. import layout
from ..io import read_json
from ..log import get_logger
from .chunking import chunk_corpus
from .config import MANIFEST, FinetuneConfig
from .schedule import plan_steps

log = get_logger("finetune")

# (model, method, dtype, device) -> (tokens/s, provenance). CPU devices name ATen's vector ISA ("cpu/AVX512",
# "cpu/AVX2": the same CPU trains about 2x slower as AVX2). CPU rows: LoRA r=16 all-linear, micro-batch 4 x 2,
# 256-token chunks, through train_adapter (scripts/bench_train.py --which ours), on a quiet machine.
TOKENS_PER_S: dict[tuple[str, str, str, str], tuple[float, str]] = {
    ("smollm2-135m", "lora", "float32", "cpu/AVX512"): (
        295.0, "measured 2026-11-23 on a 2-core CPU with AVX-512 bf16 but no AMX, train_adapter"),
    ("smollm2-135m", "lora", "bfloat16", "cpu/AVX512"): (
        188.0, "measured 2026-11-23 on a 2-core CPU with AVX-512 bf16 but no AMX, train_adapter"),
    ("smollm2-135m", "lora", "float32", "cpu/AVX2"): (
        142.0, "measured 2026-11-23 on a 2-core AMD EPYC with AVX2 only (no AVX-512), train_adapter"),
    ("gemma3-270m", "lora", "float32", "cpu/AVX512"): (
        132.0, "measured 2026-12-02 in notebook 03 (train_adapter) on a 2-core Intel Xeon with AMX switched off "
               "for oneDNN (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16); SmolLM2 ran at 252 there"),
    ("gemma3-270m", "lora", "float32", "cpu/AVX2"): (
        65.0, "measured 2026-11-23 on a 2-core AMD EPYC with AVX2 only (no AVX-512), train_adapter"),
    ("mistral-7b", "qlora", "bfloat16", "cuda"): (
        4084.0, "measured 2026-11-23 on an H100 80GB, Mistral-7B shape, QLoRA r=64, micro-batch 64 + checkpointing "
                "(the memory model's pick for an 80 GB card; docs/GPU.md)"),
}
_CPU_REF = ("smollm2-135m", 135e6)       # unknown CPU models: scaled by parameter count from this one
_CUDA_REF = ("mistral-7b", 7.24e9)       # unknown CUDA models: scaled from the 7B measurement
_SAME_SHAPE = {"llama2-7b": "mistral-7b", "orca2-7b": "mistral-7b"}  # 7B models of (nearly) one shape


def measured_tokens_per_s(results_dir: str | os.PathLike, model_name: str, method: str, dtype: str,
                          device: str) -> tuple[float, str] | None:
    """Tokens/s of the newest finished adapter with this model, method, dtype and device, if any."""
    root = layout.adapters_dir(results_dir)
    best = None
    for m in sorted(root.glob("**/" + MANIFEST)) if root.is_dir() else []:
        try:
            man = read_json(m)
        except ValueError:
            continue
        dt = man.get("dtype", man.get("settings", {}).get("dtype"))
        if (man.get("base_model"), man.get("method"), dt, str(man.get("device", "")).split(":")[0]) \
                != (model_name, method, dtype, device.split(":")[0]) or not man.get("tokens_per_s"):
            continue
        if best is None or man.get("created", "") > best[1].get("created", ""):
            best = (m, man)
    if best is None:
        return None
    return float(best[1]["tokens_per_s"]), f"measured here: {best[0].parent} ({best[1].get('created', '?')})"


def _params(model_name: str) -> float | None:
    try:
        from transformers import AutoConfig

        from ..models import resolve_model_dir
        from .memory import Shape

        return float(Shape.from_config(AutoConfig.from_pretrained(resolve_model_dir(model_name))).params)
    except Exception:  # noqa: BLE001 - an estimate only; the caller says it has none
        return None


def tokens_per_s(model_name: str, method: str, dtype: str, device: str,
                 results_dir: str | os.PathLike | None = None) -> tuple[float, str]:
    """The tokens/s figure a plan uses, and where it came from (module docstring)."""
    if results_dir is not None:
        got = measured_tokens_per_s(results_dir, model_name, method, dtype, device)
        if got:
            return got
    dev = "cuda" if device.startswith("cuda") else _cpu_class()
    key = (_SAME_SHAPE.get(model_name, model_name), method, dtype, dev)
    if key in TOKENS_PER_S:
        return TOKENS_PER_S[key]
    ref_name, ref_params = _CUDA_REF if dev == "cuda" else _CPU_REF
    ref_dtype = "bfloat16" if dev == "cuda" else "float32"
    ref_method = "qlora" if dev == "cuda" else "lora"
    ref_key = (ref_name, ref_method, ref_dtype, dev)
    if ref_key not in TOKENS_PER_S:  # a CPU class with no row (e.g. no AVX2): the AVX2 row, the slower one
        ref_key = (ref_name, ref_method, ref_dtype, "cpu/AVX2")
    ref = TOKENS_PER_S[ref_key][0]
    params = _params(model_name)
    if params is None:
        return ref, f"no measurement for {key}; {ref_name}'s {ref_key[3]} figure used unscaled (a rough guess)"
    return ref * ref_params / params, (f"no measurement for {key}; {ref_name}'s {ref_key[3]} figure scaled by "
                                       "parameter count")


def _cpu_class() -> str:
    """``cpu/AVX512`` or ``cpu/AVX2`` (ATen's vector ISA, which ``ATEN_CPU_CAPABILITY`` can lower)."""
    from ..device import cpu_precision_report

    aten = str(cpu_precision_report()["aten"]).upper()
    return "cpu/AVX512" if aten.startswith("AVX512") else "cpu/AVX2"


def plan_training(model_name: str, texts: Sequence[str], cfg: FinetuneConfig, *, tokenizer: Any = None,
                  results_dir: str | os.PathLike | None = None, budget_minutes: float = 30.0,
                  label: str = "", warn: bool = True) -> dict[str, Any]:
    """What training ``texts`` under ``cfg`` will cost, before any weights are loaded.

    Returns:
        ``{"label", "model", "device", "dtype", "texts", "corpus_tokens", "chunks", "steps_per_epoch",
        "steps", "tokens_trained", "tokens_per_s", "tokens_per_s_source", "minutes", "over_budget",
        "message"}``. When ``minutes`` exceeds ``budget_minutes`` (and ``warn``), the message, with
        the fix, goes to the logger as a warning (stderr), before training starts.
    """
    from ..device import resolve_device, resolve_dtype
    from .variants import tokenizer_for

    tok = tokenizer if tokenizer is not None else tokenizer_for(model_name)
    try:
        device = resolve_device(cfg.device)
    except ValueError:
        device = cfg.device  # planning a cuda run on a machine without one (the runner's --plan)
    dtype = "bfloat16" if cfg.method == "qlora" else (
        resolve_dtype(cfg.dtype, device) if cfg.dtype != "auto" or device == "cpu" else "bfloat16")
    chunks = chunk_corpus(list(texts), tok, cfg.chunk_len, pack=cfg.packing)
    corpus_tokens = sum(map(len, chunks))
    steps = plan_steps(len(chunks), cfg, corpus_tokens) if chunks else {"steps_per_epoch": 0, "total_steps": 0}
    per_step = corpus_tokens / steps["steps_per_epoch"] if chunks else 0.0
    trained = int(round(per_step * steps["total_steps"]))
    tps, source = tokens_per_s(model_name, cfg.method, dtype, device, results_dir)
    if tps <= 0:
        raise ValueError(f"tokens/s for {model_name} is {tps} ({source}); fix the entry in TOKENS_PER_S")
    minutes = trained / tps / 60
    name = label or model_name
    summary = (f"{name}: {len(texts)} texts, {corpus_tokens:,} tokens, {len(chunks)} chunks, "
               f"{steps['total_steps']} optimiser steps ({cfg.budget} budget), {trained:,} training tokens, "
               f"~{minutes:.1f} min at {tps:.0f} tok/s ({source})")
    msg = summary
    over = minutes > budget_minutes
    if over:
        cap = int(budget_minutes * 60 * tps)
        msg += (f". This is over the {budget_minutes:g}-minute budget: cap it with MAX_TRAIN_TOKENS "
                f"(max_train_tokens={cap:,} fits the budget), fewer EPOCHS, or a shorter corpus")
        if warn:
            log.warning(msg)
    return {"label": name, "model": model_name, "device": device, "dtype": dtype, "texts": len(texts),
            "corpus_tokens": corpus_tokens, "chunks": len(chunks), "steps_per_epoch": steps["steps_per_epoch"],
            "steps": steps["total_steps"], "tokens_trained": trained, "tokens_per_s": round(tps, 1),
            "tokens_per_s_source": source, "minutes": round(minutes, 2), "over_budget": over, "summary": summary,
            "message": msg}


def plan_task(model_name: str, task: Any, paraphrases: Mapping[str, Sequence[str]], cfg: FinetuneConfig, *,
              sweep: Sequence[int] = (0,), n_par: int = 0, fixed_budget: str = "off", reg_epochs: int = 0,
              results_dir: str | os.PathLike | None = None, budget_minutes: float = 30.0,
              tokenizer: Any = None) -> list[dict[str, Any]]:
    """:func:`plan_training` for every variant notebook 03 would train for one model x task.

    One warning (the total over every variant) when the task's plan exceeds ``budget_minutes``.
    ``tokenizer``: the model's own is loaded when not given (the runner's ``--plan`` passes a stand-in
    for a model whose files are not on this machine).
    """
    from .variants import tokenizer_for, variant_corpora

    tok = tokenizer if tokenizer is not None else tokenizer_for(model_name)
    corpora, variants = variant_corpora(tok, task, paraphrases, cfg, sweep=sweep, n_par=n_par,
                                        fixed_budget=fixed_budget, reg_epochs=reg_epochs)
    plans = []
    for v in variants:
        vcfg = v.config(cfg)
        plans.append({**plan_training(model_name, corpora[v.n_paraphrases], vcfg, tokenizer=tok,
                                      results_dir=results_dir, budget_minutes=budget_minutes,
                                      label=f"{model_name} / {task.name} / {v.name}", warn=False),
                      "task": task.name, "variant": v.name, "n_paraphrases": v.n_paraphrases,
                      "budget": v.budget, "sweep": v.sweep})
    total = sum(p["minutes"] for p in plans)
    if total > budget_minutes:
        worst = max(plans, key=lambda p: p["minutes"])
        cap = int(budget_minutes * 60 * worst["tokens_per_s"] / len(plans))
        log.warning("%s / %s plans ~%.0f min of training over %d adapters, over the %g-minute budget; the largest "
                    "is %s. Cap it with MAX_TRAIN_TOKENS (%s per adapter fits the budget), fewer EPOCHS or a "
                    "shorter corpus", model_name, task.name, total, len(plans), budget_minutes, worst["summary"],
                    f"{cap:,}")
    return plans
