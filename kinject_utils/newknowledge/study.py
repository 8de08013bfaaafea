"""Notebook 07's pipeline: load, categorise (SliCK), build the sets, fine-tune each one; per model or for all.

    cfg = StudyConfig(n_prompts=4, n_samples=4, train_size=16, shares=(0, 0.5, 1), epochs=4)
    facts = study_facts(cfg)   # geonames or EntityQuestions (cfg.facts), + fictional, + QA files
    cat = categorise_models(["smollm2-135m", "gemma3-270m"], facts, cfg, "results")  # + 07_slick.csv
    trained = train_models(choose_models(["best"], cat.counts), facts, cat.rows, cfg, "results")

Files (under ``layout.slick_dir(results_dir)``): ``<model>/slick.jsonl`` (categorisation cache),
``<model>/sets.json`` (the ids of every split and set), ``<model>/sft/<set>.jsonl`` (one per run).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

from .. import layout
from ..data.source import EQ_RELATIONS
from ..device import normalise_dtype, resolve
from ..io import slug, write_json
from ..log import get_logger
from ..settings import check_device, check_float, check_int
from .claims import write_slick_csv
from .entity_questions import PAPER_RELATIONS as EQ_PAPER_RELATIONS
from .entity_questions import check_relations
from .facts import FACT_SOURCES, RELATIONS, Fact, collect_facts
from .generate import HFGenerator
from .sets import idk_variant, max_size, share_name, single_category_sets, split, unknown_share_sets
from .sft import SftConfig, run_sets
from .slick import KNOWN, SlickConfig, categorise, counts

log = get_logger("newknowledge")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Every setting of notebook 07; the defaults are its parameters cell's (a test keeps them equal)."""

    n_prompts: int = 4
    n_samples: int = 3
    per_relation: int = 100
    n_fictional: int = 60
    train_size: int = 24
    shares: tuple[float, ...] = (0.0, 0.5, 1.0)
    idk_share: float = 0.5
    mixed_share: float = 0.5
    single_size: int = 24
    epochs: int = 4
    lr: float = 0.0005
    batch_size: int = 8
    dev_share: float = 0.12
    test_share: float = 0.53
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    gen_batch: int = 64
    ood_relations: tuple[str, ...] = ("currency",)
    n_cities: int = 320
    min_city_population: int = 500_000
    facts: str = "geonames"
    eq_relations: tuple[str, ...] = EQ_PAPER_RELATIONS
    entity_questions_dir: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ood_relations", tuple(self.ood_relations))
        if self.facts not in FACT_SOURCES:
            raise ValueError(f"FACTS={self.facts!r}: choose one of {list(FACT_SOURCES)} (geonames: embedded, offline; "
                             "entity_questions: the paper's questions, downloaded once)")
        object.__setattr__(self, "eq_relations", check_relations(self.eq_relations))
        if self.facts == "entity_questions":
            geo = [r for r in self.ood_relations if r in RELATIONS]
            if geo:
                raise ValueError(f"OOD_RELATIONS {geo} are geonames relations, absent with FACTS=entity_questions: "
                                 "hold out EntityQuestions relations (Wikidata ids), e.g. the paper's "
                                 "[P106, P127, P170, P175, P20, P413, P50]")
        check_int(self, "n_cities", 0, hint="N_CITIES: city -> country questions (0: N_QUESTIONS)")
        check_int(self, "min_city_population", 1, hint="MIN_CITY_POPULATION")
        shares = tuple(float(s) for s in self.shares)
        object.__setattr__(self, "shares", shares)
        if len(shares) < 2:
            raise ValueError(f"UNKNOWN_SHARES needs at least two shares to compare, got {list(shares)}")
        check_float(self, "idk_share", 0, 1, hint="IDK_SHARE, a fraction")
        check_float(self, "mixed_share", 0, 1, lo_open=True, hi_open=True,
                    hint="MIXED_SHARE: a set with both Known and Unknown examples")
        for name in ("idk_share", "mixed_share"):
            if getattr(self, name) not in shares:
                raise ValueError(f"{name.upper()}={getattr(self, name)} must be one of UNKNOWN_SHARES "
                                 f"{list(shares)}")
        check_int(self, "n_prompts", 1, hint="N_PROMPTS; paper: 10")
        for name in ("train_size", "single_size", "gen_batch"):
            check_int(self, name, 1)
        for name in ("dev_share", "test_share"):
            check_float(self, name, 0, 1, lo_open=True, hi_open=True)
        check_device(self)
        normalise_dtype(self.dtype)
        self.slick()
        self.sft()

    def slick(self) -> SlickConfig:
        return SlickConfig(n_prompts=self.n_prompts, n_samples=self.n_samples, seed=self.seed,
                           batch_questions=max(1, self.gen_batch // self.n_prompts))

    def sft(self) -> SftConfig:
        return SftConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed)


def study_facts(cfg: StudyConfig, qa_files: Sequence[str | Path] = ()) -> list[Fact]:
    """Notebook 07's question pool for ``cfg``: its real facts (``cfg.facts``), fictional facts and QA files.

    With EntityQuestions the pool holds ``cfg.eq_relations`` and the OOD relations (held out later, by
    :func:`build_sets`), ``cfg.per_relation`` questions each.
    """
    eq = cfg.eq_relations + tuple(r for r in cfg.ood_relations if r not in cfg.eq_relations and r in EQ_RELATIONS)
    return collect_facts(per_relation=cfg.per_relation, n_fictional=cfg.n_fictional, seed=cfg.seed, qa_files=qa_files,
                         n_cities=cfg.n_cities, min_city_population=cfg.min_city_population, source=cfg.facts,
                         eq_relations=eq, eq_dir=cfg.entity_questions_dir)


def model_dir(results_dir: str | Path, model: str) -> Path:
    return layout.slick_dir(results_dir) / slug(model)


def load(model: str, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """The base model on the run's device and dtype (``kinject_utils.device.resolve``)."""
    from ..models import load_causal_lm

    dev, dt = resolve(device, dtype)
    return load_causal_lm(model, dtype=dt, device=dev)


def categorise_model(model: str, facts: Sequence[Fact], cfg: StudyConfig, results_dir: str | Path,
                     loaded: tuple[Any, Any] | None = None) -> list[dict]:
    """SliCK rows for one model (cached in ``<model>/slick.jsonl``); ``seconds`` = time spent this call."""
    t0 = time.perf_counter()
    model_obj, tok = loaded if loaded is not None else load(model, cfg.device, cfg.dtype)
    gen = HFGenerator(model_obj, tok, batch_size=cfg.gen_batch, keep_prefixes=True)  # base model: frozen
    rows = categorise(facts, gen, cfg.slick(), model_dir(results_dir, model) / "slick.jsonl", model=model)
    log.info("SliCK %s: %d questions in %.0f s", model, len(rows), time.perf_counter() - t0)
    return rows


def examples(facts: Sequence[Fact], slick_rows: Sequence[dict]) -> list[dict]:
    """Facts joined with their category: ``{"id", "question", "answer", "aliases", "relation", "category"}``."""
    cat = {r["id"]: r["category"] for r in slick_rows}
    return [{"id": f.id, "question": f.question, "answer": f.answer, "aliases": list(f.aliases),
             "relation": f.relation, "category": cat[f.id]} for f in facts if f.id in cat]


def build_sets(exs: Sequence[dict], cfg: StudyConfig) -> tuple[dict[str, list[dict]], dict[str, list[dict]], dict]:
    """``(splits, training sets, notes)``: Unknown-share sets, the IDK variant, the single-category sets.

    Questions of ``cfg.ood_relations`` are held out of every split and set: they form the ``ood`` split
    (out-of-distribution test, relations never fine-tuned on).
    """
    unknown = [r for r in cfg.ood_relations if not any(e["relation"] == r for e in exs)]
    if unknown:
        raise ValueError(f"OOD_RELATIONS {unknown} have no questions; choose among "
                         f"{sorted({e['relation'] for e in exs})}")
    ood = [e for e in exs if e["relation"] in cfg.ood_relations]
    splits = split([e for e in exs if e["relation"] not in cfg.ood_relations], cfg.dev_share, cfg.test_share,
                   cfg.seed)
    splits["ood"] = sorted(ood, key=lambda e: e["id"])
    size = min(cfg.train_size, max_size(splits["train"], cfg.shares))
    if size < 1:
        raise ValueError(f"no training-set size works for shares {list(cfg.shares)}: the train split has too few "
                         "Known or Unknown questions; raise N_QUESTIONS / N_FICTIONAL")
    if size < cfg.train_size:
        log.warning("TRAIN_SIZE=%d needs more Known/Unknown training questions than there are; using %d "
                    "(the largest size every share fits exactly)", cfg.train_size, size)
    sets = unknown_share_sets(splits["train"], size, cfg.shares, cfg.seed)
    sets["idk-" + share_name(cfg.idk_share)] = idk_variant(sets[share_name(cfg.idk_share)])
    single, skipped = single_category_sets(splits["train"], cfg.single_size, cfg.seed)
    if "only-Unknown" in single and cfg.single_size == size and 1.0 in cfg.shares:
        # the 100%-Unknown set already is an Unknown-only set of this size: the same examples, trained once
        single["only-Unknown"] = sets[share_name(1.0)]  # (run_sets reuses the run of an identical set)
    sets.update(single)
    return splits, sets, {"single": sorted(single), "skipped": skipped, "train_size": size}


def train_model(model: str, facts: Sequence[Fact], slick_rows: Sequence[dict], cfg: StudyConfig,
                results_dir: str | Path, loaded: tuple[Any, Any] | None = None) -> tuple[list[dict], dict]:
    """Fine-tune every training set of one model; rows of :func:`~.sft.run_sets` and the set notes."""
    splits, sets, notes = build_sets(examples(facts, slick_rows), cfg)
    mdir = model_dir(results_dir, model)
    write_json(mdir / "sets.json", {"splits": {k: [e["id"] for e in v] for k, v in splits.items()},
                                    "sets": {k: [e["id"] for e in v] for k, v in sets.items()}, **notes})
    model_obj, tok = loaded if loaded is not None else load(model, cfg.device, cfg.dtype)
    final = {"test": splits["test"], **({"ood": splits["ood"]} if splits["ood"] else {})}
    # out-of-distribution answers for the Unknown-share sets only: the paper's OOD result (finding 1) reads them
    only = {name: ("test",) for name in sets if name not in {share_name(s) for s in cfg.shares}}
    rows = run_sets(model_obj, tok, sets, {"dev": splits["dev"]}, cfg.sft(), mdir / "sft", model=model, final=final,
                    final_only=only)
    notes["sizes"] = {k: len(v) for k, v in splits.items()}
    return rows, notes


def best_model(counts_by_model: dict[str, dict[str, int]]) -> str:
    """The model with the most Known (Highly + Maybe) questions: the one the study means most for."""
    return max(counts_by_model, key=lambda m: (sum(counts_by_model[m][c] for c in KNOWN), m))


@dataclasses.dataclass
class Categorised:
    """Every model's SliCK rows, its category counts, and the seconds it took (loading included)."""

    rows: list[dict]
    counts: dict[str, dict[str, int]]
    seconds: dict[str, float]

    def table(self) -> Any:
        """Questions per category and model, the Known (Highly + Maybe) share, and seconds."""
        import pandas as pd

        table = pd.DataFrame(self.counts).T
        table["Known share"] = table[list(KNOWN)].sum(axis=1) / table.sum(axis=1)
        table["seconds"] = pd.Series(self.seconds).round(0)
        return table

    def per_relation(self) -> Any:
        """Questions per model, relation and category: where each model's Known questions come from."""
        import pandas as pd

        return pd.DataFrame(self.rows).pivot_table(index=["model", "relation"], columns="category", values="id",
                                                   aggfunc="count", fill_value=0)


def categorise_models(models: Sequence[str], facts: Sequence[Fact], cfg: StudyConfig,
                      results_dir: str | Path) -> Categorised:
    """Categorise every model in turn (each loaded, then freed) and write ``07_slick.csv``."""
    rows, by_model, seconds = [], {}, {}
    for m in models:
        t0 = time.perf_counter()
        got = categorise_model(m, facts, cfg, results_dir)
        seconds[m] = time.perf_counter() - t0
        rows += got
        by_model[m] = counts(got)
    write_slick_csv(rows, layout.slick_csv(results_dir))
    return Categorised(rows, by_model, seconds)


def choose_models(train_models: Sequence[str], counts_by_model: dict[str, dict[str, int]]) -> list[str]:
    """The models to fine-tune: as listed, or for ``["best"]`` the one with the most Known questions."""
    return [best_model(counts_by_model)] if list(train_models) == ["best"] else list(train_models)


@dataclasses.dataclass
class Trained:
    """The fine-tuned models' SFT rows (:func:`~.sft.run_sets`) and, per model, its set notes and training seconds."""

    models: list[str]
    rows: list[dict]
    notes: dict[str, dict]

    def single(self) -> dict[str, list[str]]:
        """Per model, the single-category sets it trained (finding 4 compares them)."""
        return {m: self.notes[m]["single"] for m in self.models}


def train_models(models: Sequence[str], facts: Sequence[Fact], slick_rows: Sequence[dict], cfg: StudyConfig,
                 results_dir: str | Path) -> Trained:
    """Fine-tune every training set of each model in turn; ``notes[model]["seconds"]`` excludes loading."""
    rows: list[dict] = []
    notes: dict[str, dict] = {}
    for m in models:
        loaded = load(m, cfg.device, cfg.dtype)
        t0 = time.perf_counter()
        got, notes[m] = train_model(m, facts, [r for r in slick_rows if r["model"] == m], cfg, results_dir, loaded)
        notes[m]["seconds"] = round(time.perf_counter() - t0)
        log.info("SFT %s: %d sets in %d s", m, len({r["set"] for r in got}), notes[m]["seconds"])
        rows += got
        del loaded  # one model in memory at a time
    return Trained(list(models), rows, notes)


def findings_header(cat: Categorised, trained: Trained, cfg: StudyConfig) -> str:
    """The line under ``07_claims.md``'s title: what was categorised and trained, and with which settings."""
    return (f"Models categorised: {', '.join(f'{m} {c}' for m, c in cat.counts.items())}. "
            f"Fine-tuned: {', '.join(trained.models)}. SliCK: {cfg.n_prompts} prompts x (1 greedy + {cfg.n_samples} "
            f"samples at T=0.5) (paper: 10 x (1 + 16)). "
            f"Sets: {', '.join(f'{m} {trained.notes[m]}' for m in trained.models)}. "
            f"Epochs {cfg.epochs}, lr {cfg.lr}, batch {cfg.batch_size}."
            + (f" Out-of-distribution relations (never fine-tuned on): {', '.join(cfg.ood_relations)}."
               if cfg.ood_relations else ""))
