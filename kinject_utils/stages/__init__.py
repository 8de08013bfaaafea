"""The pipeline as stages: each notebook's settings, its plan, and the calls that do its work.

    01 prepare     PrepareSettings     plan_tasks, plan, run, examples, *_overview
    02 paraphrase  ParaphraseSettings  plan, planned_paraphrases, run, compare_local, sample_text
    03 finetune    FinetuneSettings    plan, planned_adapters, load_inputs, lr_search, train, train_loss, memorisation
    04 retrieve    RetrieveSettings    plan, retrieved_tasks, run, example
    05 score       ScoreSettings       plan, cell_key, run

A notebook builds its stage's settings from its parameters (``Settings.from_namespace(globals())``)
and calls the stage; the runner's ``--plan`` builds the same settings from the config and composes
the same ``plan`` functions (:func:`plan_study`), each stage planning from what the stages before
it would produce. Notebooks 06 (tables, figures and claims: no model) and 07 are planned in counts.
"""
from __future__ import annotations

from typing import Any, Mapping

from . import finetune, paraphrase, prepare, retrieve, score
from .base import StagePlan, StageSettings
from .tokens import TokenCounter

__all__ = ["SETTINGS", "StagePlan", "StageSettings", "finetune", "format_plan", "paraphrase", "plan_07",
           "plan_study", "prepare", "retrieve", "score"]

#: notebook number -> its stage's settings class
SETTINGS: dict[str, type[StageSettings]] = {"01": prepare.PrepareSettings, "02": paraphrase.ParaphraseSettings,
                                            "03": finetune.FinetuneSettings, "04": retrieve.RetrieveSettings,
                                            "05": score.ScoreSettings}


def plan_study(params: Mapping[str, Mapping[str, Any]]) -> dict[str, StagePlan]:
    """Every stage's plan from each notebook's full parameters (notebook number -> parameter name -> value).

    Stages are planned in order whether or not they are run, since each plans from what the ones
    before it would produce: 01's tasks (built in memory), 02's paraphrases, 03's adapters, 04's
    retrieved tasks. A notebook absent from ``params`` is planned with its stage's defaults.
    """
    s = {num: cls.from_params(params[num]) if num in params else cls() for num, cls in SETTINGS.items()}
    planned = prepare.plan_tasks(s["01"])
    out = {"01": prepare.plan(s["01"], planned, TokenCounter(s["01"].tokenizer or "smollm2-135m"))}
    out["02"] = paraphrase.plan(s["02"], planned)
    pars, notes = paraphrase.planned_paraphrases(s["02"], planned)
    out["02"].lines += notes
    ft_tasks = {n: t for n, t in planned.items() if n in s["03"].fine_tuned(s["03"].tasks)
                and not isinstance(t, str) and t.docs}
    out["03"] = finetune.plan(s["03"], ft_tasks, pars, warn=False)
    out["04"] = retrieve.plan(s["04"], planned)
    out["05"] = score.plan(s["05"], planned, finetune.planned_adapters(s["03"], out["03"]),
                           retrieve.retrieved_tasks(s["04"], planned))
    if "06" in params:
        out["06"] = StagePlan("06", "plot results", ["tables, figures and the claims check: no model"])
    if "07" in params:
        out["07"] = plan_07(params["07"])
    return out


def plan_07(p: Mapping[str, Any]) -> StagePlan:
    """Notebook 07's work in counts (SliCK generations, fine-tuning runs); its time is not modelled."""
    per = int(p.get("N_QUESTIONS", 0))
    source = ""
    if p.get("FACTS", "geonames") == "entity_questions":  # the relations the config names, N_QUESTIONS each (at most)
        from ..data import describe_source

        eq = list(p.get("EQ_RELATIONS") or [])
        ood = [r for r in p.get("OOD_RELATIONS") or [] if r not in eq]
        n_q = per * (len(eq) + len(ood)) + int(p.get("N_FICTIONAL", 0))
        source = (f"facts: EntityQuestions, {len(eq)} relations + {len(ood)} OOD x up to {per} questions "
                  f"(a relation with fewer gives fewer); data: "
                  f"{describe_source('entity_questions', p.get('ENTITY_QUESTIONS_DIR', ''))}")
    else:
        cities = int(p.get("N_CITIES", 0) or per)  # city -> country has its own count
        n_q = 3 * per + cities + int(p.get("N_FICTIONAL", 0))  # 4 real relations + invented
    gens = int(p.get("N_PROMPTS", 0)) * (1 + int(p.get("N_SAMPLES", 0)))  # at most: Known questions are not sampled
    n_sets = len(p.get("UNKNOWN_SHARES") or []) + 1 + 3  # the shares, the IDK variant, up to 3 single-category sets
    plan = StagePlan("07", "new knowledge", [
        f"models {p.get('MODELS')} on {p.get('DEVICE')}: SliCK over ~{n_q:,} questions (+ QA_FILES) x "
        f"{p.get('N_PROMPTS')} prompts x (1 greedy + {p.get('N_SAMPLES')} samples) = ~{n_q * gens:,} answers per model",
        f"fine-tunes {p.get('TRAIN_MODELS')}: up to {n_sets} sets of {p.get('TRAIN_SIZE')} (single-category: "
        f"{p.get('SINGLE_SIZE')}) examples x {p.get('EPOCHS')} epochs, train and dev answered after every epoch, "
        f"test (and OOD relations {p.get('OOD_RELATIONS')}) at early stop and convergence"])
    if source:
        plan.lines.insert(0, source)
    plan.counts = {"questions": n_q, "answers_per_model": n_q * gens}
    plan.hours = None
    plan.unmeasured.append("07 (see the runner's timings.json of an earlier run)")
    return plan


def format_plan(plans: list[StagePlan]) -> str:
    """The plans as text, with the total expected time from measured throughputs."""
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
