"""EntityQuestions (Sciavolino et al. 2021) as closed-book facts: the question set of Gekhman et al. (2024).

The release keeps one JSON file per Wikidata relation and split (``dataset/train/P17.train.json``), each a
list of ``{"question": str, "answers": [str, ...]}``; :data:`kinject_utils.data.source.ENTITY_QUESTIONS`
says where it comes from and how it is cached and checked. Here every item becomes a :class:`~.facts.Fact`:

* ``id`` ``eq/<relation>/<split>/<index in the file>``, ``relation`` the Wikidata id (``P17``): few-shot
  exemplars come from the same relation, as in the paper;
* ``answer`` the first listed answer, ``aliases`` the others: :meth:`~.facts.Fact.is_correct` is exact match
  after :func:`~.facts.normalise` against any of them (the paper: exact match with the gold answers).

``per_relation`` caps each relation (a seeded sample over its train and test items together; notebook 07
makes its own train/dev/test split); an item without an answer, with a multi-line answer, or repeating an
earlier question of the same relation is skipped.

Relations of the paper (Gekhman et al. 2024, appendix A, as recalled; not checked against the paper from
here): 12 in-distribution, :data:`PAPER_RELATIONS`, and 7 held out as the out-of-distribution test,
:data:`PAPER_OOD_RELATIONS`.

    facts = entity_question_facts(["P17", "P36"], per_relation=100, seed=0)   # downloads once, then the cache
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable, Sequence

from ..data.errors import DataUnavailableError
from ..data.source import EQ_RELATIONS, EQ_SPLITS, eq_file, resolve_dataset
from ..log import get_logger
from .facts import Fact

log = get_logger("newknowledge")

#: the paper's in-distribution relations (fine-tuning, dev and test)
PAPER_RELATIONS: tuple[str, ...] = ("P131", "P136", "P17", "P19", "P26", "P264", "P36", "P40", "P495", "P69",
                                    "P740", "P800")
#: the paper's out-of-distribution relations (test only, never fine-tuned on)
PAPER_OOD_RELATIONS: tuple[str, ...] = ("P106", "P127", "P170", "P175", "P20", "P413", "P50")

_FIX = ("set ENTITY_QUESTIONS_DIR to a copy of EntityQuestions' dataset folder (train/ and test/ inside), "
        "or put one at $KINJECT_DATA/entity_questions, or run once with network access so the download lands in "
        "the kinject cache; or use FACTS=geonames (embedded, offline)")


class EntityQuestionsError(ValueError):
    """An EntityQuestions file is missing or malformed; the message names the file and the fix."""


def check_relations(relations: Iterable[str], what: str = "EQ_RELATIONS") -> tuple[str, ...]:
    """The relations as a tuple, each one of the release's 24; otherwise a ValueError naming the known ones."""
    rels = tuple(relations)
    bad = [r for r in rels if r not in EQ_RELATIONS]
    if bad:
        raise ValueError(f"{what}: {bad} are not EntityQuestions relations; choose Wikidata ids among "
                         f"{list(EQ_RELATIONS)} (the paper's: {list(PAPER_RELATIONS)}, "
                         f"OOD {list(PAPER_OOD_RELATIONS)})")
    return rels


def _path(folder: Path, relation: str, split: str) -> Path:
    """The file in either local layout: the repository's (``dataset/train/...``) or the unzipped folder's."""
    name = eq_file(relation, split)
    for candidate in (folder / name, folder / name.removeprefix("dataset/")):
        if candidate.is_file():
            return candidate
    raise EntityQuestionsError(f"{folder}: no {name} (nor {name.removeprefix('dataset/')}); {_FIX}")


def read_relation(path: Path, relation: str, split: str) -> list[Fact]:
    """One relation's split file as facts (see the module docstring for ids, answers and what is skipped).

    Raises:
        EntityQuestionsError: the file is not a JSON list of ``{"question", "answers"}`` objects.
    """
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EntityQuestionsError(f"{path}: not readable as JSON ({exc}); {_FIX}") from None
    if not isinstance(rows, list):
        raise EntityQuestionsError(f"{path}: expected a JSON list of {{\"question\", \"answers\"}} objects")
    out: list[Fact] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) \
                or not isinstance(row.get("answers"), list):
            raise EntityQuestionsError(f"{path}, item {i}: expected {{\"question\": str, \"answers\": [str]}}, "
                                       f"got {str(row)[:120]}")
        answers = [str(a).strip() for a in row["answers"] if str(a).strip()]
        if not row["question"].strip() or not answers or any("\n" in a for a in answers):
            continue
        out.append(Fact(f"eq/{relation}/{split}/{i}", relation, row["question"].strip(), answers[0],
                        tuple(answers[1:]), source="entity_questions"))
    return out


def entity_question_facts(relations: Sequence[str] = PAPER_RELATIONS + PAPER_OOD_RELATIONS,
                          per_relation: int | None = 100, seed: int = 0, folder: str | Path = "",
                          splits: Sequence[str] = EQ_SPLITS, download: bool = True) -> list[Fact]:
    """EntityQuestions facts: ``per_relation`` of each relation (all if ``None``), a seeded sample.

    Args:
        relations: Wikidata ids among the release's 24.
        per_relation: the cap per relation (over the chosen splits together).
        seed: the sample's seed.
        folder: an explicit local copy (``ENTITY_QUESTIONS_DIR``); ``""``: KINJECT_DATA, the cache, else a download.
        splits: the release's splits to pool (``train``, ``test``).
        download: whether the resolver may download.

    Raises:
        DataUnavailableError: no local copy and no download possible; the message lists where it looked and the fix.
        ValueError: an unknown relation or split.
    """
    rels = check_relations(relations)
    bad = [s for s in splits if s not in EQ_SPLITS]
    if bad or not splits:
        raise ValueError(f"splits {list(splits)}: choose among {list(EQ_SPLITS)}")
    try:
        src = resolve_dataset("entity_questions", folder, download=download)
    except DataUnavailableError as exc:
        raise DataUnavailableError(f"{exc}. Fix: {_FIX}") from None
    log.info("EntityQuestions from %s (%s): %d relations, up to %s questions each", src.path, src.origin, len(rels),
             per_relation if per_relation is not None else "all")
    rng = random.Random(f"kinject-entity-questions/{seed}")
    out: list[Fact] = []
    for rel in rels:
        seen: set[str] = set()
        rows: list[Fact] = []
        for split in splits:
            for f in read_relation(_path(src.path, rel, split), rel, split):
                if f.question not in seen:
                    seen.add(f.question)
                    rows.append(f)
        if per_relation is not None and per_relation < len(rows):
            rows = rng.sample(rows, per_relation)
        out += sorted(rows, key=lambda f: f.id)
    return out
