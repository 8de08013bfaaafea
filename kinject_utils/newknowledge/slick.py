"""SliCK: how well does the base model know each fact? (Gekhman et al. 2024, section 3)

For each question, ``n_prompts`` random 4-shot prompts whose exemplars come from the same relation
(shared by the relation's questions, see :func:`build_prompts`); per prompt one greedy answer and, for
questions no greedy answer got right, ``n_samples`` answers sampled at temperature 0.5 (the samples
only separate WeaklyKnown from Unknown, so a Known question needs none); exact match after
:func:`~kinject_utils.newknowledge.facts.normalise`. Then::

    HighlyKnown   greedy right for every prompt
    MaybeKnown    greedy right for some prompts
    WeaklyKnown   greedy never right, some sample right
    Unknown       nothing right

The paper used 10 prompts and 16 samples; on a CPU the embedded default is smaller (a parameter,
recorded in every row). The model is reached only through a ``generate`` callable
(:mod:`.generate`), so tests script it. Results are cached one JSON line per question
(:func:`categorise` appends and resumes; a torn last line from a crash is skipped).

    rows = categorise(facts, gen, SlickConfig(n_prompts=4, n_samples=4), cache_file)
    counts(rows)   # {"HighlyKnown": 12, "MaybeKnown": 7, "WeaklyKnown": 5, "Unknown": 136}
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Sequence

from ..io import append_jsonl, read_jsonl
from ..log import get_logger, progress
from ..settings import check_float, check_int
from .facts import Fact
from .generate import GenerateFn

CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
KNOWN = ("HighlyKnown", "MaybeKnown")
log = get_logger("newknowledge")
PROMPTS_VERSION = "per-relation-2"  # exemplars shared per relation and prompt, samples only on greedy misses


@dataclasses.dataclass(frozen=True)
class SlickConfig:
    """Categorisation settings (paper: 10 prompts, 16 samples at T=0.5, 4 shots).

    Attributes:
        n_prompts: random few-shot prompts per question (P).
        n_samples: sampled answers per prompt (S); 0 skips sampling (no WeaklyKnown then).
        temperature: sampling temperature.
        shots: exemplars per prompt, from the same relation.
        max_new_tokens: answer length cap (answers are a few tokens; a newline ends them).
        seed: prompt choice and sampling seed.
        batch_questions: questions whose prompts go to the generator together (sorted by relation, so
            prompts sharing exemplars meet in one call).
    """

    n_prompts: int = 4
    n_samples: int = 4
    temperature: float = 0.5
    shots: int = 4
    max_new_tokens: int = 8
    seed: int = 0
    batch_questions: int = 64

    def __post_init__(self) -> None:
        check_int(self, "n_prompts", 1, hint="paper: 10")
        check_int(self, "n_samples", 0, hint="paper: 16; 0 skips sampling")
        if self.n_samples:
            check_float(self, "temperature", 0, lo_open=True, hint="needed to sample; paper: 0.5")
        check_int(self, "shots", 0, hint="paper: 4")
        check_int(self, "max_new_tokens", 1)
        check_int(self, "seed")
        check_int(self, "batch_questions", 1)

    def key(self) -> dict:
        """The settings a cached row must match to be reused."""
        return {"n_prompts": self.n_prompts, "n_samples": self.n_samples, "temperature": self.temperature,
                "shots": self.shots, "max_new_tokens": self.max_new_tokens, "seed": self.seed,
                "prompts": PROMPTS_VERSION}


def qa_line(question: str, answer: str | None = None) -> str:
    """One QA turn of the prompt format (train and test use it too).

    >>> qa_line("What is the capital of Peru?", "Lima")
    'Q: What is the capital of Peru?\\nA: Lima\\n\\n'
    """
    return f"Q: {question}\nA:" if answer is None else f"Q: {question}\nA: {answer}\n\n"


def category_of(greedy_hits: int, n_prompts: int, sample_hits: int) -> str:
    """The SliCK category from hit counts.

    >>> [category_of(4, 4, 0), category_of(1, 4, 0), category_of(0, 4, 2), category_of(0, 4, 0)]
    ['HighlyKnown', 'MaybeKnown', 'WeaklyKnown', 'Unknown']
    """
    if not 0 <= greedy_hits <= n_prompts or sample_hits < 0:
        raise ValueError(f"hit counts out of range: greedy {greedy_hits}/{n_prompts}, samples {sample_hits}")
    if greedy_hits == n_prompts:
        return "HighlyKnown"
    if greedy_hits > 0:
        return "MaybeKnown"
    return "WeaklyKnown" if sample_hits > 0 else "Unknown"


def build_prompts(fact: Fact, pool: Sequence[Fact], cfg: SlickConfig) -> list[str]:
    """``n_prompts`` few-shot prompts for ``fact``: exemplars drawn from ``pool`` (same relation, not itself).

    Prompt ``p`` of a relation is one seeded shuffle of the relation's facts (config seed, relation, ``p``);
    a question takes its first ``shots`` facts other than itself. So every question of a relation shares
    prompt ``p``'s exemplars (the generator computes that prefix once, :class:`~.generate.HFGenerator`),
    except the few that are among them, whose prompt takes the next fact instead; and a question's prompts
    do not depend on which other questions are categorised with it. (The paper drew exemplars per question;
    shared ones are what makes the prefix cache possible.)
    """
    others = sorted((f for f in pool if f.relation == fact.relation), key=lambda f: f.id)
    if sum(f.id != fact.id for f in others) < cfg.shots:
        raise ValueError(f"relation {fact.relation!r} has {len(others) - 1} other facts; {cfg.shots}-shot prompts "
                         "need more (add facts of that relation or lower shots)")
    out = []
    for p in range(cfg.n_prompts):
        order = list(others)
        random.Random(f"kinject-slick/{cfg.seed}/{fact.relation}/{p}").shuffle(order)
        shots = [e for e in order[:cfg.shots + 1] if e.id != fact.id][:cfg.shots]
        out.append("".join(qa_line(e.question, e.answer) for e in shots) + qa_line(fact.question))
    return out


def _cached(cache_file: Path | None, cfg: SlickConfig) -> dict[str, dict]:
    if cache_file is None or not Path(cache_file).exists():
        return {}
    key = cfg.key()
    rows = {}
    for r in read_jsonl(cache_file, tolerate_torn_tail=True):
        if all(r.get(k) == v for k, v in key.items()):
            rows[r["id"]] = r
    return rows


def categorise(facts: Sequence[Fact], generate: GenerateFn, cfg: SlickConfig, cache_file: str | Path | None = None,
               pool: Sequence[Fact] | None = None, model: str = "") -> list[dict]:
    """Categorise every fact; one row per fact (in ``facts`` order).

    Args:
        facts: the questions.
        generate: ``generate(prompts, temperature, n, max_new_tokens, seed) -> [[answer, ...], ...]``.
        cfg: the settings (recorded in each row).
        cache_file: JSONL cache; rows with the same settings are reused, new ones appended as they finish.
        pool: where exemplars come from (default: ``facts``).
        model: a label stored in each row.

    Returns:
        rows ``{"id", "relation", "model", "category", "greedy_hits", "sample_hits", "n_prompts", "n_samples",
        "greedy": [...], ...settings}``.
    """
    pool = list(facts) if pool is None else list(pool)
    cache_path = Path(cache_file) if cache_file is not None else None
    done = _cached(cache_path, cfg)
    todo = [f for f in facts if f.id not in done]
    if done:
        log.info("SliCK %s: %d of %d questions from the cache %s", model, len(facts) - len(todo), len(facts),
                 cache_path)
    P = cfg.n_prompts
    todo.sort(key=lambda f: (f.relation, f.id))  # a relation's questions share prompt prefixes: batch them
    bar = progress(total=len(todo), desc=f"SliCK {model}", unit="q")
    for i in range(0, len(todo), cfg.batch_questions):
        batch = todo[i:i + cfg.batch_questions]
        prompts = [build_prompts(f, pool, cfg) for f in batch]
        seed = cfg.seed * 1_000_003 + i
        greedy = generate([p for ps in prompts for p in ps], 0.0, 1, cfg.max_new_tokens, seed)
        if len(greedy) != len(batch) * P:
            raise RuntimeError(f"generate returned {len(greedy)} answers for {len(batch) * P} prompts")
        g = {f.id: [a[0] for a in greedy[j * P:(j + 1) * P]] for j, f in enumerate(batch)}
        gh = {f.id: sum(f.is_correct(a) for a in g[f.id]) for f in batch}
        # samples decide only WeaklyKnown vs Unknown, i.e. for questions no greedy answer got right
        miss = [j for j, f in enumerate(batch) if gh[f.id] == 0] if cfg.n_samples else []
        samples = generate([p for j in miss for p in prompts[j]], cfg.temperature, cfg.n_samples,
                           cfg.max_new_tokens, seed) if miss else []
        if len(samples) != len(miss) * P:
            raise RuntimeError(f"generate returned {len(samples)} sample lists for {len(miss) * P} prompts")
        sh = {batch[j].id: sum(batch[j].is_correct(a) for lst in samples[k * P:(k + 1) * P] for a in lst)
              for k, j in enumerate(miss)}
        for f in batch:
            row = {"id": f.id, "relation": f.relation, "source": f.source, "model": model,
                   "category": category_of(gh[f.id], P, sh.get(f.id, 0)), "greedy_hits": gh[f.id],
                   "sample_hits": sh.get(f.id), "greedy": g[f.id], "answer": f.answer, **cfg.key()}
            if cache_path is not None:
                append_jsonl(cache_path, row)
            done[f.id] = row
        bar.update(len(batch))
    bar.close()
    return [done[f.id] for f in facts]


def counts(rows: Sequence[dict]) -> dict[str, int]:
    """Questions per category, in :data:`CATEGORIES` order (zeros kept)."""
    out = dict.fromkeys(CATEGORIES, 0)
    for r in rows:
        out[r["category"]] += 1
    return out
