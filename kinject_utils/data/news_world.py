"""The fictional 2031 news world: sizes, invented entities, events and their wordings.

Pure, seeded construction: :mod:`.news_questions` turns a world into a task with questions.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import random
from collections.abc import Callable

from .news_templates import (
    ATTRS,
    CODAS,
    EVENT_TYPES,
    FIRST_ENDINGS,
    FOLLOW,
    LEDES,
    MONTHS,
    NEIGHBOUR,
    ONSETS,
    ORG_KINDS,
    PERSON,
    PLACE_FORMS,
    PLACE_KINDS,
    QUOTE,
    VOWELS,
    YEAR,
)


@dataclasses.dataclass(frozen=True)
class NewsSize:
    """How big a fictional news world is.

    Entities are fewer than events, so each person, organisation and place recurs across stories
    (events x 2 person slots / people = appearances per person).
    """

    n_events: int
    n_types: int
    n_objects: int  # objects per event type (a plant, a ferry...): fewer -> more look-alike stories
    n_people: int
    n_orgs: int
    n_places: int
    questions_per_event: int

    def __post_init__(self) -> None:
        if self.n_events < 2 or self.questions_per_event < 1:
            raise ValueError("NewsSize needs n_events >= 2 and questions_per_event >= 1")
        if not 1 <= self.n_types <= len(EVENT_TYPES):
            raise ValueError(f"n_types must be 1..{len(EVENT_TYPES)}, got {self.n_types}")
        if not 1 <= self.n_objects <= min(len(t["objects"]) for t in EVENT_TYPES):
            raise ValueError("n_objects must be between 1 and 4")
        if self.n_people < 3 or self.n_orgs < 3 or self.n_places < 3:
            raise ValueError("need at least 3 people, organisations and places (4-option questions "
                             "draw 3 distractors of the same kind)")
        if self.n_events > 365:
            raise ValueError("at most 365 events: every event gets its own day of 2031")
        if self.questions_per_event > len(ATTRS):
            raise ValueError(f"questions_per_event must be <= {len(ATTRS)} (one per attribute: {list(ATTRS)})")


# Each event type: objects (full phrase, short noun), the organisation's verb, the person's role, a
# number with its unit, and outcomes (>= 5, so 3 same-kind distractors exist). Sentences come in

FICTIONAL_SIZES: dict[str, NewsSize] = {
    "tiny": NewsSize(n_events=8, n_types=4, n_objects=1, n_people=4, n_orgs=4, n_places=4, questions_per_event=2),
    "default": NewsSize(n_events=36, n_types=6, n_objects=2, n_people=12, n_orgs=9, n_places=9,
                        questions_per_event=8),
    "large": NewsSize(n_events=300, n_types=8, n_objects=3, n_people=60, n_orgs=40, n_places=30,
                      questions_per_event=3),
}

@dataclasses.dataclass
class NewsEvent:
    """One invented news event: its slots (who, where, when, ...) and the sentence facts."""

    doc_id: str
    type_key: str
    obj: str  # full phrase ("a desalination plant")
    short: str  # short noun ("desalination plant")
    slots: dict[str, str]  # who, org, where, when, number, outcome (the answer strings) + month
    extras: dict[str, str]  # person2, org2, place2, adj, later, desc (filler, never asked)


def _invent_word(rng: random.Random, syllables: int) -> str:
    w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables)) + rng.choice(CODAS)
    return w.capitalize()


def _invent_first_name(rng: random.Random) -> str:
    name = rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(ONSETS[:21]) + rng.choice(FIRST_ENDINGS)
    return name.capitalize()


def invent_entities(rng: random.Random, size: NewsSize) -> tuple[list[str], list[str], list[str], dict[str, str]]:
    """Unique invented people, organisations and places (+ a fixed descriptor per place).

    No name is a substring of another, so an answer string occurs only where it is written.
    """
    taken: list[str] = []

    def fresh(make: Callable[[], str]) -> str:
        for _ in range(1000):
            name = make()
            low = name.lower()
            if all(low not in t.lower() and t.lower() not in low for t in taken):
                taken.append(name)
                return name
        raise RuntimeError("could not invent enough distinct names")  # pragma: no cover

    regions = [f"the {fresh(lambda: _invent_word(rng, 2))} {k}" for k in ("coast", "valley", "plateau")]
    people = [fresh(lambda: f"{_invent_first_name(rng)} {_invent_word(rng, 2)}") for _ in range(size.n_people)]
    orgs = [fresh(lambda: f"{_invent_word(rng, 2)} {rng.choice(ORG_KINDS)}") for _ in range(size.n_orgs)]
    places = [fresh(lambda: rng.choice(PLACE_FORMS).format(s=_invent_word(rng, 2))) for _ in range(size.n_places)]
    desc = {}
    for p in places:
        kind = rng.choice(PLACE_KINDS)
        desc[p] = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} in {rng.choice(regions)}"
    return people, orgs, places, desc


def balanced_draws(rng: random.Random, pool: list[str], n: int) -> list[str]:
    """``n`` draws that use every pool item equally often (shuffled rounds): guarantees recurrence."""
    out: list[str] = []
    while len(out) < n:
        block = list(pool)
        rng.shuffle(block)
        out += block
    return out[:n]


def fmt_number(value: int, fmt: str) -> str:
    return f"{value / 10:.1f} million dollars" if fmt == "millions" else f"{value:,}"


def fmt_date(day_of_year: int) -> str:
    d = _dt.date(YEAR, 1, 1) + _dt.timedelta(days=day_of_year)
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


def cap_first(s: str) -> str:
    return s[:1].upper() + s[1:]


def _render(ev: NewsEvent, t: dict, choice: dict[str, int], order: list[str]) -> str:
    """One wording of an event: each fact in the realisation ``choice[fact]``, facts in ``order``."""
    s, x = ev.slots, ev.extras
    fill = {"org": s["org"], "Org": cap_first(s["org"]), "verb": t["verb"], "obj": ev.obj, "Obj": cap_first(ev.obj),
            "short": ev.short,
                "place": s["where"], "desc": x["desc"], "date": s["when"], "person": s["who"], "role": t["role"],
                "n": s["number"], "o": s["outcome"], "person2": x["person2"], "org2": x["org2"], "adj": x["adj"],
                "later": x["later"], "place2": x["place2"]}
    facts = {"lede": LEDES, "person": PERSON, "number": t["number"]["sents"], "outcome": t["outcome"]["sents"],
             "quote": QUOTE, "follow": FOLLOW, "neighbour": NEIGHBOUR}
    return " ".join(facts[f][choice[f]].format(**fill) for f in order)


_FACTS = ("lede", "person", "number", "outcome", "quote", "follow", "neighbour")


def wordings(ev: NewsEvent, t: dict, rng: random.Random, n: int) -> list[str]:
    """The document (first) plus ``n`` distinct rewordings: other realisations and fact orders."""
    sizes = {"lede": len(LEDES), "person": len(PERSON), "number": len(t["number"]["sents"]),
             "outcome": len(t["outcome"]["sents"]), "quote": len(QUOTE), "follow": len(FOLLOW),
             "neighbour": len(NEIGHBOUR)}
    out: list[str] = []
    for _ in range(50 * (n + 1)):
        choice = {f: rng.randrange(k) for f, k in sizes.items()}
        body = ["person", "number", "outcome", "quote", "follow", "neighbour"]
        if out:  # rewordings also reorder facts; the lede may come second
            rng.shuffle(body)
            body.insert(rng.randrange(2), "lede")
        else:  # the original: news order, lede first
            body.insert(0, "lede")
        text = _render(ev, t, choice, body)
        if text not in out:
            out.append(text)
        if len(out) == n + 1:
            return out
    raise RuntimeError("could not word the event differently enough")  # pragma: no cover

