"""Questions about the fictional 2031 news world, and the task they make (``fictional_news``).

Each question asks about one attribute of one story: its own slots (who, organisation, where,
when, number, outcome) or the commentary around it (commentator, their organisation and verdict,
the neighbouring town, the month of the next update). It names just enough other slots to single
the story out, and offers 3 distractors of the answer's kind that the question does not rule out.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import itertools
import random

from ..tasks import Document, Question, Task
from .news_templates import ADJS, ATTRS, EVENT_TYPES, MONTHS, YEAR
from .news_world import (
    FICTIONAL_SIZES,
    NewsEvent,
    NewsSize,
    balanced_draws,
    cap_first,
    fmt_date,
    fmt_number,
    invent_entities,
    wordings,
)

__all__ = ["NewsWorld", "generate_news_world", "make_fictional_news"]

#: attribute -> the entity pool its distractors come from
_POOL_OF = {"who": "people", "org": "orgs", "where": "places", "commentator": "people",
            "commentator_org": "orgs", "neighbour": "places"}


@dataclasses.dataclass
class NewsWorld:
    """A generated world: entities, events, documents, rewordings and questions with their cues."""

    size: str
    seed: int
    people: list[str]
    orgs: list[str]
    places: list[str]
    events: list[NewsEvent]
    task: Task
    cues: dict[str, dict[str, str]]  # question id -> the slots the question names (besides type/object)


def _description(ev: NewsEvent, t: dict, cues: dict[str, str]) -> str:
    """``the desalination plant opened by X under project director Y in Z in March 2031``."""
    parts = [f"the {ev.short} {t['verb']}"]
    if "org" in cues:
        parts.append(f"by {cues['org']}")
    if "who" in cues:
        parts.append(f"under {t['role']} {cues['who']}")
    if "where" in cues:
        parts.append(f"in {cues['where']}")
    if "month" in cues:
        parts.append(f"in {cues['month']} {YEAR}")
    return " ".join(parts)


def _question_text(attr: str, ev: NewsEvent, t: dict, cues: dict[str, str]) -> str:
    d = _description(ev, t, cues)
    s = ev.slots
    commentary = {
        "commentator": f"Who from {s['commentator_org']} commented on {d}?",
        "commentator_org": f"Which organisation did {s['commentator']} speak for when commenting on {d}?",
        "verdict": f"How did {s['commentator']} of {s['commentator_org']} describe {d}?",
        "neighbour": f"Which nearby town followed the news of {d}?",
        "next_update": f"In which month was the next update on {d} expected?",
    }
    if attr in commentary:
        return commentary[attr]
    if attr == "who":
        return f"Who was the {t['role']} for {d}?"
    if attr == "org":
        rest = _description(ev, t, cues)[len(f"the {ev.short} {t['verb']}"):]
        return f"Which organisation {t['verb']} the {ev.short}{rest}?"
    if attr == "where":
        return f"In which city was {d}?"
    if attr == "when":
        return f"On what date was {d}?"
    if attr == "number":
        return t["number"]["q"].format(D=d)
    return t["outcome"]["q"].format(D=d)


def _pick_cues(ev: NewsEvent, attr: str, same_kind: list[NewsEvent], rng: random.Random) -> dict[str, str] | None:
    """The smallest set of named slots that singles ``ev`` out among events of the same type/object.

    Candidate cues are the organisation, person, place and month (never the asked slot, never the
    exact date or number, which are unique and would make retrieval a string match). Returns None
    when no set identifies the event (the attribute is then not asked).
    """
    keys = [k for k in ("org", "who", "where", "month")
            if k != attr and not (attr in ("when", "next_update") and k == "month")]
    rng.shuffle(keys)
    for r in range(1, len(keys) + 1):
        for combo in itertools.combinations(keys, r):
            rivals = [e for e in same_kind if e is not ev and all(e.slots[k] == ev.slots[k] for k in combo)]
            if not rivals:
                return {k: ev.slots[k] for k in combo}
    return None


def _distractors(attr: str, ev: NewsEvent, t: dict, world: dict[str, list[str]], rng: random.Random,
                 question: str) -> list[str] | None:
    """Three wrong answers of the same kind as the right one (people for who, dates for when...).

    A candidate the question itself names (the project director in a question about the
    commentator) is never offered: the question alone would rule it out. None when fewer than 3
    candidates are left (the attribute is then not asked).
    """
    ans = ev.slots[attr]
    if attr in _POOL_OF:
        pool = world[_POOL_OF[attr]]
    elif attr == "outcome":
        pool = t["outcome"]["values"]
    elif attr == "verdict":
        pool = ADJS
    elif attr == "next_update":
        pool = MONTHS
    elif attr == "when":
        day = _dt.datetime.strptime(ans, "%d %B %Y").date().timetuple().tm_yday - 1
        pool = [fmt_date(d) for d in rng.sample([d for d in range(365) if d != day], 6)]
    else:  # number: near the answer, with the answer's rank among the 4 uniform (no "middle value" tell)
        spec = t["number"]
        value = int(ev.extras["number_value"])
        below = rng.randrange(4)
        lo_f, hi_f = [0.45, 0.6, 0.75], [1.3, 1.55, 1.9]
        vals = [value * f for f in sorted(rng.sample(lo_f, below))] + \
               [value * f for f in sorted(rng.sample(hi_f, 3 - below))]
        step = spec["step"]
        vals = [max(step, round(v / step) * step) for v in vals]
        vals = [v if v != value else v + step * (i + 1) for i, v in enumerate(vals)]
        pool = [fmt_number(v, spec["fmt"]) for v in vals]
        if len(set(pool) | {ans}) == 4:
            return pool
        pool = [fmt_number(value + step * k, spec["fmt"]) for k in (-7, 5, 11)]
        return pool
    cands = [p for p in pool if p != ans and p not in question]
    return rng.sample(cands, 3) if len(cands) >= 3 else None


def generate_news_world(size: str | NewsSize = "default", seed: int = 0, n_paraphrases: int = 10) -> NewsWorld:
    """Generate the fictional 2031 news world behind :func:`make_fictional_news` (with its cues).

    Deterministic: the same ``size`` and ``seed`` give the same world on any machine (string seeds
    go through SHA-512 in :class:`random.Random`, independent of ``PYTHONHASHSEED``).
    """
    if isinstance(size, str):
        if size not in FICTIONAL_SIZES:
            raise ValueError(f"unknown size {size!r}; use one of {sorted(FICTIONAL_SIZES)} or a NewsSize")
        size_name, spec = size, FICTIONAL_SIZES[size]
    else:
        size_name, spec = "custom", size
    if n_paraphrases < 0:
        raise ValueError("n_paraphrases must be >= 0")

    def rng_for(part: str) -> random.Random:  # independent streams: changing one part leaves the rest
        return random.Random(f"kinject-news-v1/{seed}/{part}")

    people, orgs, places, desc = invent_entities(rng_for("names"), spec)
    r = rng_for("events")
    types = r.sample(EVENT_TYPES, spec.n_types)
    objects = {t["key"]: r.sample(t["objects"], spec.n_objects) for t in types}
    ev_types = balanced_draws(r, [t["key"] for t in types], spec.n_events)
    ev_people, ev_orgs, ev_places = (balanced_draws(r, pool, spec.n_events) for pool in (people, orgs, places))
    days = sorted(r.sample(range(365), spec.n_events))
    by_key = {t["key"]: t for t in types}
    used_numbers: set[str] = set()
    events: list[NewsEvent] = []
    for i in range(spec.n_events):
        t = by_key[ev_types[i]]
        obj, short = r.choice(objects[t["key"]])
        num = t["number"]
        while True:  # numbers are unique across all events: a number answer sits in one document only
            value = r.randrange(num["lo"], num["hi"] + 1, num["step"])
            n_str = fmt_number(value, num["fmt"])
            if n_str not in used_numbers:
                used_numbers.add(n_str)
                break
        when = fmt_date(days[i])
        slots = {"who": ev_people[i], "org": ev_orgs[i], "where": ev_places[i], "when": when,
                 "month": when.split()[1], "number": n_str, "outcome": r.choice(t["outcome"]["values"])}
        later_month = MONTHS[(MONTHS.index(slots["month"]) + r.randrange(1, 4)) % 12]
        extras = {"person2": r.choice([p for p in people if p != slots["who"]]),
                  "org2": r.choice([o for o in orgs if o != slots["org"]]),
                  "place2": r.choice([p for p in places if p != slots["where"]]),
                  "adj": r.choice(ADJS), "later": later_month, "desc": desc[slots["where"]],
                  "number_value": str(value)}
        slots.update(commentator=extras["person2"], commentator_org=extras["org2"], verdict=extras["adj"],
                     neighbour=extras["place2"], next_update=later_month)
        events.append(NewsEvent(doc_id=f"news-{i:03d}", type_key=t["key"], obj=obj, short=short,
                                slots=slots, extras=extras))

    rp = rng_for("wordings")
    docs, paraphrases = [], {}
    for ev in events:
        t = by_key[ev.type_key]
        texts = wordings(ev, t, rp, n_paraphrases)
        title = f"{cap_first(ev.short)}: {ev.slots['org']} in {ev.slots['where']}"
        docs.append(Document(doc_id=ev.doc_id, title=title, text=texts[0]))
        if n_paraphrases:
            paraphrases[ev.doc_id] = texts[1:]

    rq = rng_for("questions")
    world_pools = {"people": people, "orgs": orgs, "places": places}
    questions, cues_by_q = [], {}
    # answer positions cycle through A-D in shuffled rounds: no position is favoured
    positions = balanced_draws(rq, [0, 1, 2, 3], spec.n_events * spec.questions_per_event)
    for i, ev in enumerate(events):
        t = by_key[ev.type_key]
        same_kind = [e for e in events if e.type_key == ev.type_key and e.short == ev.short]
        # rotate the asked attributes across events so every attribute is asked about equally often
        attrs = list(ATTRS[i % len(ATTRS):] + ATTRS[:i % len(ATTRS)])
        n_asked = 0
        for attr in attrs:
            if n_asked == spec.questions_per_event:
                break
            cues = _pick_cues(ev, attr, same_kind, rq)
            if cues is None:
                continue
            text = _question_text(attr, ev, t, cues)
            wrong = _distractors(attr, ev, t, world_pools, rq, text)
            if wrong is None:
                continue
            rq.shuffle(wrong)
            choices = list(wrong)
            choices.insert(positions[len(questions)], ev.slots[attr])
            qid = f"{ev.doc_id}/{attr}"
            questions.append(Question(id=qid, question=text, choices=choices,
                                      answer=choices.index(ev.slots[attr]), source_doc_ids=[ev.doc_id],
                                      subject="fictional_news", kind=attr))
            cues_by_q[qid] = cues
            n_asked += 1
    task = Task(name="fictional_news", questions=questions, docs=docs, paraphrases=paraphrases,
                meta={"kind": "fictional_news", "size": size_name, "seed": seed, "generator": "kinject-news-v1",
                      "period": str(YEAR), "n_paraphrases": n_paraphrases,
                      "entities": {"people": people, "organisations": orgs, "places": places},
                      "description": "Invented news from 2031 (stand-in for the paper's unreleased "
                                     "current-events set); entities recur across stories."})
    return NewsWorld(size=size_name, seed=seed, people=people, orgs=orgs, places=places, events=events,
                     task=task, cues=cues_by_q)


def make_fictional_news(size: str | NewsSize = "default", seed: int = 0, n_paraphrases: int = 10) -> Task:
    """The embedded current-events task: invented news from 2031 that no model can know.

    People, organisations and places are invented and recur across stories, so a question names
    entities that several documents mention: finding the source takes more than matching a unique
    name. Each event has a who, organisation, place, date, number and outcome; it is written as
    a news-like document (``kb``) plus ``n_paraphrases`` rewordings (``task.paraphrases``, for
    FT-par without a paraphrasing model). Each question asks about one attribute of one event,
    names just enough other attributes to single the event out, and offers 3 distractors of the
    same kind; its answer string is stated in its one source document.

    Args:
        size: ``"tiny"`` (8 events, 16 questions), ``"default"`` (36 events, 288 questions),
            ``"large"`` (300 events, ~900 questions) or a :class:`NewsSize`.
        seed: same seed -> byte-identical task files.
        n_paraphrases: rewordings per document.

    Example:
        >>> t = make_fictional_news("tiny")
        >>> t.questions[0].answer_text in t.doc_by_id()[t.questions[0].source_doc_ids[0]].text
        True
    """
    return generate_news_world(size, seed, n_paraphrases).task

