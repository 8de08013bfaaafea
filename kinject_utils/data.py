"""The question sets Q and knowledge bases B_Q the study injects (notebook 01).

Four sources, one format (:mod:`kinject_utils.tasks`):

    mmlu                 the paper's five MMLU subjects, from the original CSVs or the hub (``cais/mmlu``)
    fictional_news       a seeded generator of news from 2031 (the stand-in for the paper's unreleased
                         current-events set): knowledge no model can have, with rewordings for FT-par
    fictional_knowledge  the 130 invented passages of Chang et al. (2024) with their cloze probes,
                         turned into 4-option questions
    custom               bring your own: a folder of .txt/.md/.jsonl documents and a questions file

plus a Wikipedia builder for an MMLU knowledge base (online users; the paper's KB was never released)
and optional question writing by any LLM (the paper's recipe: 4 questions per chunk, keep the 2 most
specific). Chunking into 256-token training blocks lives in :mod:`kinject_utils.finetune`.

Example:
    >>> task = make_fictional_news("tiny", seed=0)
    >>> len(task.docs), len(task.questions)
    (8, 16)
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import itertools
import json
import random
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import tasks
from .io import content_hash, read_json, read_jsonl, resolve_path
from .tasks import Document, Question, Task, TaskFormatError

__all__ = [
    "MMLU_SUBJECTS", "MMLU_WIKI_TOPICS", "TASK_NAMES", "FICTIONAL_SIZES", "FK_KINDS",
    "DataUnavailableError", "WikipediaUnavailableError",
    "load_mmlu", "build_mmlu_task",
    "fetch_wikipedia_kb", "clean_wiki_text",
    "NewsSize", "NewsEvent", "NewsWorld", "generate_news_world", "make_fictional_news",
    "load_fictional_knowledge",
    "load_documents", "load_questions", "load_custom_task",
    "write_questions", "parse_json_reply",
    "build_tasks", "task_summary",
]

MMLU_SUBJECTS: tuple[str, ...] = ("anatomy", "astronomy", "college_biology", "college_chemistry", "prehistory")
TASK_NAMES: tuple[str, ...] = ("fictional_news", "fictional_knowledge", "mmlu", "custom")
LETTERS = "ABCD"


class DataUnavailableError(RuntimeError):
    """A data source cannot be reached here; the message says which and how to supply it."""


class WikipediaUnavailableError(DataUnavailableError):
    """Wikipedia cannot be reached (offline); the message says how to bring a local corpus."""


def _offline() -> bool:
    from .models import is_offline

    return is_offline()


# ---------------------------------------------------------------------------------------------
# MMLU
# ---------------------------------------------------------------------------------------------

def _read_mmlu_csv(path: Path, subject: str, split: str) -> list[Question]:
    """Rows of one original MMLU CSV (no header: question, A, B, C, D, answer letter).

    Read with the csv module: every field stays text (``"0.50"`` stays ``"0.50"``, ``"None"`` stays
    ``"None"``), which pandas' defaults would break.
    """
    out: list[Question] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, strict=True)
        start = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise TaskFormatError(f"{path}, line {start}: malformed CSV ({exc}); "
                                      "check the quoting of that row") from None
            if not row or not any(c.strip() for c in row):
                start = reader.line_num + 1
                continue
            if len(row) != 6:
                raise TaskFormatError(f"{path}, line {start}: expected 6 fields (question, A, B, C, D, "
                                      f"answer letter), got {len(row)}")
            letter = row[5].strip().upper()
            if letter not in LETTERS:
                raise TaskFormatError(f"{path}, line {start}: answer must be one of A/B/C/D, got {row[5]!r}")
            qid = f"{subject}/{len(out)}" if split == "test" else f"{subject}/{split}/{len(out)}"
            try:
                out.append(Question(id=qid, question=row[0], choices=list(row[1:5]),
                                    answer=LETTERS.index(letter), subject=subject))
            except ValueError as exc:
                raise TaskFormatError(f"{path}, line {start}: {exc}") from None
            start = reader.line_num + 1
    return out


def _mmlu_from_hub(subject: str) -> tuple[list[Question], list[Question]]:
    if _offline():
        raise DataUnavailableError(
            f"MMLU source 'hub' needs the Hugging Face hub (cais/mmlu, subject {subject}) but "
            "HF_HUB_OFFLINE is set. Point MMLU_DIR at a folder of the original CSVs "
            "(test/<subject>_test.csv, dev/<subject>_dev.csv), e.g. ../shared/data/mmlu.")
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets comes with lm-eval
        raise DataUnavailableError("MMLU source 'hub' needs the `datasets` package: pip install datasets") from exc
    try:
        ds = datasets.load_dataset("cais/mmlu", subject)
    except Exception as exc:  # noqa: BLE001 - network/hub errors come in many types
        raise DataUnavailableError(f"could not load cais/mmlu ({subject}) from the hub: {exc}. "
                                   "Offline, point MMLU_DIR at a folder of the original CSVs.") from None
    splits = []
    for split in ("test", "dev"):
        rows = []
        for i, r in enumerate(ds[split]):
            qid = f"{subject}/{i}" if split == "test" else f"{subject}/dev/{i}"
            rows.append(Question(id=qid, question=str(r["question"]), choices=[str(c) for c in r["choices"]],
                                 answer=int(r["answer"]), subject=subject))
        splits.append(rows)
    return splits[0], splits[1]


def load_mmlu(subject: str, source: str = "../shared/data/mmlu") -> Task:
    """One MMLU subject: test rows as questions, dev rows (5-shot exemplars) in ``task.dev``.

    Args:
        subject: e.g. ``"anatomy"``.
        source: a folder holding ``test/<subject>_test.csv`` and ``dev/<subject>_dev.csv`` (the
            original Hendrycks layout; relative paths resolve against the repository root), or
            ``"hub"`` for ``cais/mmlu`` via ``datasets`` (online only).

    Raises:
        FileNotFoundError: the CSV folder or a file is missing (message names the path).
        TaskFormatError: a malformed CSV row (names the file and line).
        DataUnavailableError: ``source="hub"`` while offline.

    Example:
        >>> t = load_mmlu("anatomy")  # doctest: +SKIP
        >>> len(t.questions), len(t.dev), t.questions[0].id  # doctest: +SKIP
        (135, 5, 'anatomy/0')
    """
    if source == "hub":
        test, dev = _mmlu_from_hub(subject)
    else:
        root = resolve_path(source)
        paths = [root / "test" / f"{subject}_test.csv", root / "dev" / f"{subject}_dev.csv"]
        for p in paths:
            if not p.exists():
                raise FileNotFoundError(f"MMLU file {p} not found; MMLU_DIR must hold the original CSVs "
                                        "as test/<subject>_test.csv and dev/<subject>_dev.csv (or use 'hub')")
        test, dev = (_read_mmlu_csv(p, subject, s) for p, s in zip(paths, ("test", "dev")))
    return Task(name=f"mmlu_{subject}", questions=test, docs=[], dev=dev,
                meta={"kind": "mmlu", "subjects": [subject], "source": str(source)})


def build_mmlu_task(source: str = "../shared/data/mmlu", subjects: Sequence[str] = MMLU_SUBJECTS,
                    kb: Sequence[Document] | None = None) -> Task:
    """The paper's MMLU task: the five subjects in one question set (ids ``anatomy/0``...).

    Args:
        source: CSV folder or ``"hub"`` (see :func:`load_mmlu`).
        subjects: which subjects (default the paper's five).
        kb: an optional knowledge base (from :func:`fetch_wikipedia_kb` or :func:`load_documents`).
            Without one the task has no documents and is scored without RAG.
    """
    parts = [load_mmlu(s, source) for s in subjects]
    return Task(name="mmlu", questions=[q for p in parts for q in p.questions], docs=list(kb or []),
                dev=[q for p in parts for q in p.dev],
                meta={"kind": "mmlu", "subjects": list(subjects), "source": str(source),
                      "kb": "supplied" if kb else "none",
                      "description": "MMLU test rows of the paper's five subjects; dev rows for 5-shot"})


# ---------------------------------------------------------------------------------------------
# Wikipedia knowledge base for MMLU (online only)
# ---------------------------------------------------------------------------------------------

WIKI_API = "https://{lang}.wikipedia.org/w/api.php"
#: Central pages per MMLU subject (the paper names no titles; these are the obvious ones).
MMLU_WIKI_TOPICS: dict[str, list[str]] = {
    "anatomy": ["Human anatomy"], "astronomy": ["Astronomy"], "college_biology": ["Biology"],
    "college_chemistry": ["Chemistry"], "prehistory": ["Prehistory"],
}
_SKIP_SECTIONS = {"see also", "references", "external links", "further reading", "notes", "bibliography",
                  "sources", "citations", "footnotes", "works cited", "notes and references"}
_SKIP_TITLES = re.compile(r"^(List of|Lists of|Outline of|Index of|Glossary of|Timeline of)\b|\(disambiguation\)$")


def clean_wiki_text(text: str) -> str:
    """Plain-text cleanup of a TextExtracts extract (what wikiextractor does for the paper).

    Drops reference-like sections (See also, References, ...), section headings, math markup
    (``{\\displaystyle ...}``), bracketed citation marks and empty parentheses; collapses whitespace.

    Example:
        >>> clean_wiki_text("Mars is red.[1]\\n\\n== See also ==\\nVenus")
        'Mars is red.'
    """
    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        m = re.fullmatch(r"\s*(=+)\s*(.*?)\s*\1\s*", line)
        if m:
            skipping = m.group(2).strip().lower() in _SKIP_SECTIONS
            continue
        if not skipping:
            kept.append(line)
    out = "\n".join(kept)
    out = re.sub(r"\{\\displaystyle[^{}]*(\{[^{}]*\}[^{}]*)*\}", "", out)  # math alt-text, one nesting level
    out = re.sub(r"\[(\d+|citation needed|note \d+|[a-z])\]", "", out)
    out = re.sub(r"\(\s*[;,]?\s*\)", "", out)
    out = re.sub(r"[ \t]+", " ", out)
    out = re.sub(r" +([.,;:])", r"\1", out)
    out = re.sub(r"\n\s*\n+", "\n\n", out)
    return out.strip()


def _wiki_get(session: Any, url: str, params: dict, timeout: float) -> dict:
    try:
        resp = session.get(url, params=params, timeout=timeout,
                           headers={"User-Agent": "kinject/0.1 (knowledge-injection reproduction)"})
        resp.raise_for_status()
        return resp.json()
    except OSError as exc:  # requests' ConnectionError/Timeout and urllib's URLError are OSErrors
        raise WikipediaUnavailableError(_wiki_offline_message(url, exc)) from None


def _wiki_offline_message(url: str, exc: Any = None) -> str:
    why = f" ({exc})" if exc else ""
    return (f"cannot reach Wikipedia at {url}{why}, so no MMLU knowledge base can be built here. "
            "Supply a local corpus instead: put .txt/.md/.jsonl documents in a folder and pass it as "
            "MMLU_KB (notebook 01) or load it with kinject_utils.data.load_documents(folder). "
            "Without a knowledge base MMLU is scored without RAG.")


def fetch_wikipedia_kb(topics: Sequence[str], session: Any = None, *, max_linked: int = 20,
                       lang: str = "en", min_chars: int = 300, timeout: float = 30.0,
                       max_link_pages: int = 10) -> list[Document]:
    """Build a knowledge base from Wikipedia: each topic's central page plus pages it links to.

    Uses the MediaWiki API: ``prop=links`` (namespace 0, paginated) for the linked titles and
    ``prop=extracts&explaintext=1`` (one full page per request, an API limit) for plain text,
    cleaned with :func:`clean_wiki_text`. Links come back alphabetically, so ``max_linked`` titles
    are taken evenly spaced across the whole list (not the first ones, which would all start
    with "A"); list/outline/index/disambiguation pages are skipped.

    Args:
        topics: central page titles (see :data:`MMLU_WIKI_TOPICS`).
        session: anything with ``get(url, params=, timeout=, headers=)`` returning an object with
            ``raise_for_status()`` and ``json()`` (a ``requests.Session``; tests pass a fake).
        max_linked: linked pages kept per topic (0: central pages only).
        min_chars: drop pages whose cleaned text is shorter (stubs, redirects).
        max_link_pages: at most this many ``prop=links`` continuation requests per topic.

    Raises:
        WikipediaUnavailableError: offline (``HF_HUB_OFFLINE`` set or no connection); the message
            says how to bring a local corpus.

    Example:
        >>> kb = fetch_wikipedia_kb(MMLU_WIKI_TOPICS["astronomy"], max_linked=5)  # doctest: +SKIP
    """
    url = WIKI_API.format(lang=lang)
    if session is None:
        if _offline():
            raise WikipediaUnavailableError(_wiki_offline_message(url, "offline mode: HF_HUB_OFFLINE is set"))
        import requests

        session = requests.Session()
    base = {"action": "query", "format": "json", "formatversion": "2", "redirects": "1"}
    docs: list[Document] = []
    seen: set[str] = set()
    for topic in topics:
        titles = [topic]
        if max_linked > 0:
            links: list[str] = []
            params = {**base, "prop": "links", "titles": topic, "plnamespace": "0", "pllimit": "max"}
            for _ in range(max_link_pages):
                data = _wiki_get(session, url, params, timeout)
                for page in data.get("query", {}).get("pages", []):
                    links += [lk["title"] for lk in page.get("links", []) if lk.get("ns", 0) == 0]
                cont = data.get("continue")
                if not cont:
                    break
                params = {**params, **cont}
            links = [t for t in dict.fromkeys(links) if not _SKIP_TITLES.search(t)]
            if len(links) > max_linked:
                step = len(links) / max_linked
                links = [links[int(i * step)] for i in range(max_linked)]
            titles += links
        for title in titles:
            data = _wiki_get(session, url, {**base, "prop": "extracts", "explaintext": "1",
                                            "exsectionformat": "wiki", "titles": title}, timeout)
            for page in data.get("query", {}).get("pages", []):
                if page.get("missing") or "extract" not in page:
                    continue
                text = clean_wiki_text(page["extract"])
                if len(text) < min_chars or page["title"] in seen:
                    continue
                seen.add(page["title"])
                docs.append(Document(doc_id=f"wiki/{page['title'].replace(' ', '_')}", title=page["title"], text=text))
    return docs


# ---------------------------------------------------------------------------------------------
# The fictional current-events task (2031 news)
# ---------------------------------------------------------------------------------------------

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
        if not 1 <= self.n_types <= len(_EVENT_TYPES):
            raise ValueError(f"n_types must be 1..{len(_EVENT_TYPES)}, got {self.n_types}")
        if not 1 <= self.n_objects <= min(len(t["objects"]) for t in _EVENT_TYPES):
            raise ValueError("n_objects must be between 1 and 4")
        if self.n_people < 3 or self.n_orgs < 3 or self.n_places < 3:
            raise ValueError("need at least 3 people, organisations and places (4-option questions "
                             "draw 3 distractors of the same kind)")
        if self.n_events > 365:
            raise ValueError("at most 365 events: every event gets its own day of 2031")
        if self.questions_per_event > 5:
            raise ValueError("questions_per_event must be <= 5 (one per attribute)")


# Each event type: objects (full phrase, short noun), the organisation's verb, the person's role, a
# number with its unit, and outcomes (>= 5, so 3 same-kind distractors exist). Sentences come in
# several realisations so that rewordings say the same facts differently.
_EVENT_TYPES: list[dict[str, Any]] = [
    dict(key="opening", verb="opened", role="project director",
         objects=[("a desalination plant", "desalination plant"), ("a tidal power station", "tidal power station"),
                  ("a light-rail line", "light-rail line"), ("a vertical farm", "vertical farm")],
         number=dict(unit="households", lo=1200, hi=48000, step=100, fmt="int",
                     sents=["The {short} is expected to serve {n} households.",
                            "Officials said {n} households will rely on the {short}.",
                            "Some {n} households are due to be connected to the {short}."],
                     q="How many households is {D} expected to serve?"),
         outcome=dict(values=["ahead of schedule", "on schedule", "four months late", "a year late",
                              "after a funding freeze"],
                      sents=["Construction was completed {o}.", "The builders finished the work {o}.",
                             "Work on the {short} wrapped up {o}."],
                      q="How was construction of {D} completed?")),
    dict(key="launch", verb="launched", role="product lead",
         objects=[("a solar ferry", "solar ferry"), ("a delivery drone", "delivery drone"),
                  ("a water-purifying tablet", "water-purifying tablet"), ("a soil sensor", "soil sensor")],
         number=dict(unit="pre-orders", lo=800, hi=95000, step=50, fmt="int",
                     sents=["The company said it had received {n} pre-orders.",
                            "Pre-orders reached {n} before launch day.",
                            "By launch day, buyers had placed {n} pre-orders."],
                     q="How many pre-orders did {D} receive?"),
         outcome=dict(values=["sold out within a day", "was recalled after a week", "received mixed reviews",
                              "won a design award", "was delayed by a software fault"],
                      sents=["After the launch, the {short} {o}.", "In its first week on sale the {short} {o}.",
                             "Reports say the {short} {o}."],
                      q="What happened to {D} after release?")),
    dict(key="discovery", verb="reported", role="lead scientist",
         objects=[("a deep-sea vent", "deep-sea vent"), ("a drought-resistant wheat strain", "wheat strain"),
                  ("a new lichen species", "lichen species"), ("a meteorite fragment", "meteorite fragment")],
         number=dict(unit="samples", lo=40, hi=9000, step=1, fmt="int",
                     sents=["The team analysed {n} samples.",
                            "The finding rests on {n} samples collected over two years.",
                            "Researchers examined {n} samples before announcing the result."],
                     q="How many samples were analysed for {D}?"),
         outcome=dict(values=["was confirmed by an independent lab", "was disputed by rival researchers",
                              "was published in a peer-reviewed journal", "was withdrawn for re-analysis",
                              "was shortlisted for a national prize"],
                      sents=["The finding {o}.", "Since then the result {o}.", "The report on the {short} {o}."],
                      q="What happened to the finding on {D}?")),
    dict(key="strike", verb="organised", role="union spokesperson",
         objects=[("a strike at the port", "port strike"), ("a strike on the bus network", "bus strike"),
                  ("a strike at the public hospitals", "hospital strike"),
                  ("a strike at the recycling depots", "recycling strike")],
         number=dict(unit="workers", lo=150, hi=12000, step=1, fmt="int",
                     sents=["Some {n} workers walked out.", "The walkout involved {n} workers.",
                            "Organisers said {n} workers took part."],
                     q="How many workers took part in {D}?"),
         outcome=dict(values=["ended with a pay deal", "was called off after two days", "went to arbitration",
                              "lasted nine days", "ended without an agreement"],
                      sents=["The strike {o}.", "In the end the {short} {o}.", "The dispute {o}."],
                      q="How did {D} end?")),
    dict(key="festival", verb="hosted", role="festival director",
         objects=[("a jazz festival", "jazz festival"), ("a robotics fair", "robotics fair"),
                  ("a harbour marathon", "harbour marathon"), ("a film week", "film week")],
         number=dict(unit="visitors", lo=2000, hi=250000, step=100, fmt="int",
                     sents=["Organisers counted {n} visitors.", "The event drew {n} visitors.",
                            "Over the weekend, {n} visitors attended."],
                     q="How many visitors attended {D}?"),
         outcome=dict(values=["set an attendance record", "was cut short by storms", "ran at a loss",
                              "moved to a larger venue", "was extended by a day"],
                      sents=["This year the {short} {o}.", "The {short} {o}, organisers confirmed.",
                             "According to organisers, the event {o}."],
                      q="What happened at {D}?")),
    dict(key="lawsuit", verb="filed", role="lead counsel",
         objects=[("a lawsuit over water rights", "water-rights lawsuit"),
                  ("a lawsuit over a patent", "patent lawsuit"),
                  ("a lawsuit over a land lease", "land-lease lawsuit"),
                  ("a lawsuit over a data breach", "data-breach lawsuit")],
         number=dict(unit="million dollars", lo=12, hi=980, step=1, fmt="millions",
                     sents=["The claim sought {n} in damages.", "Damages of {n} were at stake.",
                            "The suit asked the court for {n}."],
                     q="How much in damages did {D} seek?"),
         outcome=dict(values=["was upheld in full", "was dismissed", "was settled out of court",
                              "was sent to a higher court", "ended in a retrial"],
                      sents=["The lawsuit {o}.", "In the end the case {o}.", "Court records show the {short} {o}."],
                      q="What was the result of {D}?")),
    dict(key="agreement", verb="signed", role="chief negotiator",
         objects=[("a water-sharing treaty", "water-sharing treaty"), ("a ten-year supply contract", "supply contract"),
                  ("a research partnership", "research partnership"), ("a land-use accord", "land-use accord")],
         number=dict(unit="jobs", lo=50, hi=20000, step=10, fmt="int",
                     sents=["The deal is expected to create {n} jobs.", "Planners say {n} jobs will follow.",
                            "It should bring {n} jobs to the area."],
                     q="How many jobs is {D} expected to create?"),
         outcome=dict(values=["was ratified by the city council", "was rejected by the city council",
                              "was put on hold", "was extended to neighbouring towns", "was renegotiated within months"],
                      sents=["The agreement {o}.", "Weeks later the deal {o}.", "The {short} {o}, officials said."],
                      q="What happened to {D}?")),
    dict(key="emergency", verb="tackled", role="incident commander",
         objects=[("a flash flood", "flash flood"), ("a wildfire", "wildfire"), ("a landslide", "landslide"),
                  ("a chemical spill", "chemical spill")],
         number=dict(unit="residents", lo=100, hi=30000, step=1, fmt="int",
                     sents=["Crews evacuated {n} residents.", "The evacuation covered {n} residents.",
                            "In total {n} residents had to leave their homes."],
                     q="How many residents were evacuated during {D}?"),
         outcome=dict(values=["was contained within a day", "spread to nearby towns", "forced a week-long curfew",
                              "was declared a regional emergency", "caused no injuries"],
                      sents=["The {short} {o}.", "Officials said the {short} {o}.", "In the end the incident {o}."],
                      q="What happened with {D}?")),
]

#: tiny: tests (~1 s); default: the embedded CPU study (notebook 03 fine-tunes on it);
#: large: ~900 questions, the size of the paper's current-events set (910).
FICTIONAL_SIZES: dict[str, NewsSize] = {
    "tiny": NewsSize(n_events=8, n_types=4, n_objects=1, n_people=4, n_orgs=4, n_places=4, questions_per_event=2),
    "default": NewsSize(n_events=36, n_types=6, n_objects=2, n_people=12, n_orgs=9, n_places=9,
                        questions_per_event=2),
    "large": NewsSize(n_events=300, n_types=8, n_objects=3, n_people=60, n_orgs=40, n_places=30,
                      questions_per_event=3),
}

_LEDES = ["{Org} {verb} {obj} in {place}, {desc}, on {date}.",
          "On {date}, {org} {verb} {obj} in {place}, {desc}.",
          "In {place}, {desc}, {org} {verb} {obj} on {date}.",
          "{Obj} was {verb} by {org} in {place}, {desc}, on {date}."]
_PERSON = ["{person} served as {role}.", "The {role} was {person}.",
           "{person}, who acted as {role}, spoke to reporters afterwards.",
           "Speaking as {role}, {person} called the day a milestone."]
_QUOTE = ["{person2} of {org2} called it {adj}.", "\"It is {adj},\" said {person2} of {org2}.",
          "Commenting for {org2}, {person2} described it as {adj}."]
_FOLLOW = ["{org} said more details would follow in {later}.", "A review is planned for {later}.",
           "The next update is expected in {later}."]
_NEIGHBOUR = ["Residents of neighbouring {place2} followed the news closely.",
              "The news was also watched in nearby {place2}.",
              "Officials in {place2}, a short drive away, welcomed the news."]
_ADJS = ["long overdue", "a bold gamble", "a welcome surprise", "premature", "a model for the region",
         "a costly detour"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
_ATTRS = ("who", "org", "where", "when", "number", "outcome")
_YEAR = 2031

# Invented-name syllables (ASCII, pronounceable, chosen to avoid common English words).
_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t",
           "tr", "v", "z", "th", "sh", "kal", "mer", "val"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ia", "ou", "y"]
_CODAS = ["n", "r", "l", "s", "th", "m", "x", "nd", "rn", "lt", "sk", "v", "ck"]
_FIRST_ENDINGS = ["a", "o", "en", "is", "el", "an", "ia", "ir", "ette", "ard"]
_ORG_KINDS = ["Group", "Works", "Consortium", "Institute", "Alliance", "Foundation", "Holdings",
              "Collective", "Labs", "Authority", "Trust", "Partners"]
_PLACE_FORMS = ["{s}", "Port {s}", "{s} Bay", "New {s}", "{s} Falls", "{s}ford", "{s} Heights"]
_PLACE_KINDS = ["harbour town", "river city", "mountain town", "lake city", "industrial city", "market town"]


@dataclasses.dataclass
class NewsEvent:
    """One invented news event: its slots (who, where, when, ...) and the sentence facts."""

    doc_id: str
    type_key: str
    obj: str  # full phrase ("a desalination plant")
    short: str  # short noun ("desalination plant")
    slots: dict[str, str]  # who, org, where, when, number, outcome (the answer strings) + month
    extras: dict[str, str]  # person2, org2, place2, adj, later, desc (filler, never asked)


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


def _invent_word(rng: random.Random, syllables: int) -> str:
    w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
    return w.capitalize()


def _invent_first_name(rng: random.Random) -> str:
    return (rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_ONSETS[:21]) + rng.choice(_FIRST_ENDINGS)).capitalize()


def _invent_entities(rng: random.Random, size: NewsSize) -> tuple[list[str], list[str], list[str], dict[str, str]]:
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
    orgs = [fresh(lambda: f"{_invent_word(rng, 2)} {rng.choice(_ORG_KINDS)}") for _ in range(size.n_orgs)]
    places = [fresh(lambda: rng.choice(_PLACE_FORMS).format(s=_invent_word(rng, 2))) for _ in range(size.n_places)]
    desc = {}
    for p in places:
        kind = rng.choice(_PLACE_KINDS)
        desc[p] = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} in {rng.choice(regions)}"
    return people, orgs, places, desc


def _cycle(rng: random.Random, pool: list[str], n: int) -> list[str]:
    """``n`` draws that use every pool item equally often (shuffled rounds): guarantees recurrence."""
    out: list[str] = []
    while len(out) < n:
        block = list(pool)
        rng.shuffle(block)
        out += block
    return out[:n]


def _fmt_number(value: int, fmt: str) -> str:
    return f"{value / 10:.1f} million dollars" if fmt == "millions" else f"{value:,}"


def _fmt_date(day_of_year: int) -> str:
    d = _dt.date(_YEAR, 1, 1) + _dt.timedelta(days=day_of_year)
    return f"{d.day} {_MONTHS[d.month - 1]} {d.year}"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _render(ev: NewsEvent, t: dict, choice: dict[str, int], order: list[str]) -> str:
    """One wording of an event: each fact in the realisation ``choice[fact]``, facts in ``order``."""
    s, x = ev.slots, ev.extras
    fill = dict(org=s["org"], Org=_cap(s["org"]), verb=t["verb"], obj=ev.obj, Obj=_cap(ev.obj), short=ev.short,
                place=s["where"], desc=x["desc"], date=s["when"], person=s["who"], role=t["role"],
                n=s["number"], o=s["outcome"], person2=x["person2"], org2=x["org2"], adj=x["adj"],
                later=x["later"], place2=x["place2"])
    facts = {"lede": _LEDES, "person": _PERSON, "number": t["number"]["sents"], "outcome": t["outcome"]["sents"],
             "quote": _QUOTE, "follow": _FOLLOW, "neighbour": _NEIGHBOUR}
    return " ".join(facts[f][choice[f]].format(**fill) for f in order)


_FACTS = ("lede", "person", "number", "outcome", "quote", "follow", "neighbour")


def _wordings(ev: NewsEvent, t: dict, rng: random.Random, n: int) -> list[str]:
    """The document (first) plus ``n`` distinct rewordings: other realisations and fact orders."""
    sizes = {"lede": len(_LEDES), "person": len(_PERSON), "number": len(t["number"]["sents"]),
             "outcome": len(t["outcome"]["sents"]), "quote": len(_QUOTE), "follow": len(_FOLLOW),
             "neighbour": len(_NEIGHBOUR)}
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
        parts.append(f"in {cues['month']} {_YEAR}")
    return " ".join(parts)


def _question_text(attr: str, ev: NewsEvent, t: dict, cues: dict[str, str]) -> str:
    d = _description(ev, t, cues)
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
    keys = [k for k in ("org", "who", "where", "month") if k != attr and not (attr == "when" and k == "month")]
    rng.shuffle(keys)
    for r in range(1, len(keys) + 1):
        for combo in itertools.combinations(keys, r):
            rivals = [e for e in same_kind if e is not ev and all(e.slots[k] == ev.slots[k] for k in combo)]
            if not rivals:
                return {k: ev.slots[k] for k in combo}
    return None


def _distractors(attr: str, ev: NewsEvent, t: dict, world: dict[str, list[str]], rng: random.Random) -> list[str]:
    """Three wrong answers of the same kind as the right one (people for who, dates for when...)."""
    ans = ev.slots[attr]
    if attr in ("who", "org", "where"):
        pool = world[attr]
    elif attr == "outcome":
        pool = t["outcome"]["values"]
    elif attr == "when":
        day = _dt.datetime.strptime(ans, "%d %B %Y").date().timetuple().tm_yday - 1
        pool = [_fmt_date(d) for d in rng.sample([d for d in range(365) if d != day], 6)]
    else:  # number: near the answer, with the answer's rank among the 4 uniform (no "middle value" tell)
        spec = t["number"]
        value = int(ev.extras["number_value"])
        below = rng.randrange(4)
        lo_f, hi_f = [0.45, 0.6, 0.75], [1.3, 1.55, 1.9]
        vals = [value * f for f in sorted(rng.sample(lo_f, below))] + \
               [value * f for f in sorted(rng.sample(hi_f, 3 - below))]
        step = spec["step"]
        vals = [max(step, int(round(v / step)) * step) for v in vals]
        vals = [v if v != value else v + step * (i + 1) for i, v in enumerate(vals)]
        pool = [_fmt_number(v, spec["fmt"]) for v in vals]
        if len(set(pool) | {ans}) == 4:
            return pool
        pool = [_fmt_number(value + step * k, spec["fmt"]) for k in (-7, 5, 11)]
        return pool
    cands = [p for p in pool if p != ans]
    return rng.sample(cands, 3)


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

    people, orgs, places, desc = _invent_entities(rng_for("names"), spec)
    r = rng_for("events")
    types = r.sample(_EVENT_TYPES, spec.n_types)
    objects = {t["key"]: r.sample(t["objects"], spec.n_objects) for t in types}
    ev_types = _cycle(r, [t["key"] for t in types], spec.n_events)
    ev_people, ev_orgs, ev_places = (_cycle(r, pool, spec.n_events) for pool in (people, orgs, places))
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
            n_str = _fmt_number(value, num["fmt"])
            if n_str not in used_numbers:
                used_numbers.add(n_str)
                break
        when = _fmt_date(days[i])
        slots = {"who": ev_people[i], "org": ev_orgs[i], "where": ev_places[i], "when": when,
                 "month": when.split()[1], "number": n_str, "outcome": r.choice(t["outcome"]["values"])}
        later_month = _MONTHS[(_MONTHS.index(slots["month"]) + r.randrange(1, 4)) % 12]
        extras = {"person2": r.choice([p for p in people if p != slots["who"]]),
                  "org2": r.choice([o for o in orgs if o != slots["org"]]),
                  "place2": r.choice([p for p in places if p != slots["where"]]),
                  "adj": r.choice(_ADJS), "later": later_month, "desc": desc[slots["where"]],
                  "number_value": str(value)}
        events.append(NewsEvent(doc_id=f"news-{i:03d}", type_key=t["key"], obj=obj, short=short,
                                slots=slots, extras=extras))

    rp = rng_for("wordings")
    docs, paraphrases = [], {}
    for ev in events:
        t = by_key[ev.type_key]
        texts = _wordings(ev, t, rp, n_paraphrases)
        title = f"{_cap(ev.short)}: {ev.slots['org']} in {ev.slots['where']}"
        docs.append(Document(doc_id=ev.doc_id, title=title, text=texts[0]))
        if n_paraphrases:
            paraphrases[ev.doc_id] = texts[1:]

    rq = rng_for("questions")
    world_pools = {"who": people, "org": orgs, "where": places}
    questions, cues_by_q = [], {}
    # answer positions cycle through A-D in shuffled rounds: no position is favoured
    positions = _cycle(rq, [0, 1, 2, 3], spec.n_events * spec.questions_per_event)
    for i, ev in enumerate(events):
        t = by_key[ev.type_key]
        same_kind = [e for e in events if e.type_key == ev.type_key and e.short == ev.short]
        # rotate the asked attributes across events so every attribute is asked about equally often
        attrs = list(_ATTRS[i % len(_ATTRS):] + _ATTRS[:i % len(_ATTRS)])
        n_asked = 0
        for attr in attrs:
            if n_asked == spec.questions_per_event:
                break
            cues = _pick_cues(ev, attr, same_kind, rq)
            if cues is None:
                continue
            wrong = _distractors(attr, ev, t, world_pools, rq)
            rq.shuffle(wrong)
            choices = list(wrong)
            choices.insert(positions[len(questions)], ev.slots[attr])
            qid = f"{ev.doc_id}/{attr}"
            questions.append(Question(id=qid, question=_question_text(attr, ev, t, cues), choices=choices,
                                      answer=choices.index(ev.slots[attr]), source_doc_ids=[ev.doc_id],
                                      subject="fictional_news", kind=attr))
            cues_by_q[qid] = cues
            n_asked += 1
    task = Task(name="fictional_news", questions=questions, docs=docs, paraphrases=paraphrases,
                meta={"kind": "fictional_news", "size": size_name, "seed": seed, "generator": "kinject-news-v1",
                      "period": str(_YEAR), "n_paraphrases": n_paraphrases,
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
        size: ``"tiny"`` (8 events, 16 questions), ``"default"`` (36 events, 72 questions),
            ``"large"`` (300 events, ~900 questions) or a :class:`NewsSize`.
        seed: same seed -> byte-identical task files.
        n_paraphrases: rewordings per document.

    Example:
        >>> t = make_fictional_news("tiny")
        >>> t.questions[0].answer_text in t.doc_by_id()[t.questions[0].source_doc_ids[0]].text
        True
    """
    return generate_news_world(size, seed, n_paraphrases).task


# ---------------------------------------------------------------------------------------------
# Fictional knowledge (Chang et al. 2024: 130 invented passages with cloze probes)
# ---------------------------------------------------------------------------------------------

#: probe field -> Question.kind: memorisation (probe copied from the passage), semantic
#: generalisation (probe paraphrased), compositional generalisation (facts combined).
FK_KINDS: dict[str, str] = {"mem": "memorization", "gen": "semantic", "hard_gen": "composition"}
_FK_FIELDS = ("train_context", "mem_input", "mem_target", "gen_input", "gen_target", "hard_gen_input",
              "hard_gen_target")


def _target_kind(s: str) -> tuple[str, bool]:
    """Coarse type of a cloze target, for same-kind distractors: (class, starts with 'the')."""
    low = s.strip().lower()
    the = low.startswith("the ")
    if re.fullmatch(r"\d{3,4}s?", low):
        return "year", the
    if any(m.lower() in low for m in _MONTHS) and re.search(r"\d", low):
        return "date", the
    if re.search(r"\d", low):
        return "number", the
    core = s.strip()[4:] if the else s.strip()
    return ("proper" if core[:1].isupper() else "common"), the


class _TargetPool:
    """Every probe target, grouped by coarse type, for fast same-kind distractor search."""

    def __init__(self, pool: list[tuple[int, str]]) -> None:
        self.groups: dict[tuple[str, bool], list[tuple[int, int, int, str]]] = {}
        for i, cand in pool:
            self.groups.setdefault(_target_kind(cand), []).append((len(cand.split()), len(cand), i, cand))

    def distractors(self, answer: str, passage: str, entry: int, key: str, seed: int) -> list[str]:
        """Three other probes' targets that look like ``answer`` (heuristic documented in the loader)."""
        kind, the = _target_kind(answer)
        n_words, n_chars = len(answer.split()), len(answer)
        low_ans, low_passage = answer.strip().lower(), passage.lower()
        # the same type first, then the same type without the matching "the", then anything
        order = [(kind, the), (kind, not the)] + [k for k in sorted(self.groups) if k[0] != kind]
        out: list[str] = []
        for group in order:
            tiers: dict[tuple[int, int], list[str]] = {}
            for nw, nc, i, cand in self.groups.get(group, []):
                if i != entry:  # never another probe of the same passage
                    tiers.setdefault((abs(nw - n_words), abs(nc - n_chars) // 6), []).append(cand)
            for tier in sorted(tiers):
                ranked = sorted(set(tiers[tier]), key=lambda c: content_hash(seed, key, c))
                for cand in ranked:
                    low = cand.strip().lower()
                    if (not low or low == low_ans or low in low_ans or low_ans in low or low in low_passage
                            or any(low == o.strip().lower() for o in out)):
                        continue
                    out.append(cand)
                    if len(out) == 3:
                        return out
        raise ValueError(f"not enough distractor candidates for {key!r}")  # pragma: no cover


def _fk_entries(source: str) -> list[dict]:
    if source == "hub":
        if _offline():
            raise DataUnavailableError(
                "fictional-knowledge source 'hub' needs the Hugging Face hub (kaist-ai/fictional-knowledge) "
                "but HF_HUB_OFFLINE is set. Point FICTIONAL_KNOWLEDGE_DIR at the folder holding "
                "fictional_knowledge.json (and fictional_knowledge_paraphrased.json), e.g. "
                "../shared/data/fictional_knowledge.")
        try:
            import datasets

            ds = datasets.load_dataset("kaist-ai/fictional-knowledge")
        except Exception as exc:  # noqa: BLE001
            raise DataUnavailableError(f"could not load kaist-ai/fictional-knowledge from the hub: {exc}") from None
        split = next(iter(ds.values()))
        return [dict(r) for r in split]
    root = resolve_path(source)
    main = root / "fictional_knowledge.json"
    para = root / "fictional_knowledge_paraphrased.json"
    if not main.exists() and not para.exists():
        raise FileNotFoundError(f"fictional-knowledge file {main} not found; FICTIONAL_KNOWLEDGE_DIR must hold "
                                "fictional_knowledge.json (from github.com/kaistAI/factual-knowledge-acquisition "
                                "or the hub, kaist-ai/fictional-knowledge)")
    # the paraphrased file is the same 130 entries plus a "paraphrases" list (9 for entries 0-39)
    entries = read_json(para if para.exists() else main)
    if not isinstance(entries, list):
        raise TaskFormatError(f"{para if para.exists() else main}: expected a JSON list of entries")
    return entries


def load_fictional_knowledge(source: str = "../shared/data/fictional_knowledge", *, max_questions: int | None = None,
                             kinds: Sequence[str] = tuple(FK_KINDS.values()), seed: int = 0) -> Task:
    """The fictional-knowledge corpus as a 4-option task (130 passages, up to 1,950 questions).

    Each cloze probe (``mem_input``/``gen_input``/``hard_gen_input`` with its target) becomes a
    question: the probe is the question text, the target the right answer. Distractor heuristic
    (deterministic): candidates are the targets of *other* passages' probes that are not the
    answer, do not contain / are not contained in it, and do not occur in the question's own
    passage (so a distractor is never a true statement of the source); they are ranked by (1) the
    same coarse type (year, date, other number, proper name, common phrase) and the same leading
    "the", (2) closest word count, (3) closest character length in steps of 6, (4) a seeded hash
    as tie-break; the first 3 distinct ones are kept. A memorisation probe and its paraphrased
    (semantic) twin share the target and therefore the same choices in the same order.

    Args:
        source: folder with ``fictional_knowledge.json`` / ``fictional_knowledge_paraphrased.json``,
            or ``"hub"``.
        max_questions: keep at most this many questions, drawn (seeded) as whole probe groups
            (a passage's probe j in every requested kind) so kinds stay comparable; docs stay all 130.
        kinds: any of ``memorization``, ``semantic``, ``composition``.
        seed: for the distractor tie-breaks, choice order and the subsample.

    Raises:
        FileNotFoundError: the folder or JSON is missing.
        DataUnavailableError: ``source="hub"`` while offline.
    """
    bad = set(kinds) - set(FK_KINDS.values())
    if bad or not kinds:
        raise ValueError(f"kinds {sorted(bad) or list(kinds)} not understood; use any of {list(FK_KINDS.values())}")
    entries = _fk_entries(source)
    for i, e in enumerate(entries):
        missing = [f for f in _FK_FIELDS if f not in e]
        if missing:
            raise TaskFormatError(f"fictional-knowledge entry {i}: missing field(s) {missing}")
    docs = [Document(doc_id=f"fk-{i:03d}", title=f"Fictional knowledge passage {i}", text=e["train_context"])
            for i, e in enumerate(entries)]
    paraphrases = {f"fk-{i:03d}": [str(p) for p in e["paraphrases"]] for i, e in enumerate(entries)
                   if e.get("paraphrases")}
    pool = _TargetPool(sorted({(i, t) for i, e in enumerate(entries)
                               for f in ("mem_target", "gen_target", "hard_gen_target")
                               for t in e[f] if isinstance(t, str) and t.strip()}))
    groups: list[list[Question]] = []
    for i, e in enumerate(entries):
        for j in range(len(e["mem_target"])):
            group = []
            for field, kind in FK_KINDS.items():
                if kind not in kinds or j >= len(e[f"{field}_input"]):
                    continue
                target = e[f"{field}_target"][j]
                # mem and gen share a target: share the key so they get identical choices
                key = f"{i}/{'hard' if field == 'hard_gen' else 'plain'}/{j}"
                wrong = pool.distractors(target, e["train_context"], i, key, seed)
                choices = [target, *wrong]
                random.Random(f"kinject-fk/{seed}/{key}").shuffle(choices)
                group.append(Question(id=f"fk-{i:03d}/{field}/{j}", question=e[f"{field}_input"][j].strip(),
                                      choices=choices, answer=choices.index(target), source_doc_ids=[f"fk-{i:03d}"],
                                      subject="fictional_knowledge", kind=kind))
            if group:
                groups.append(group)
    if max_questions is not None:
        if max_questions < 1:
            raise ValueError("max_questions must be >= 1 (or None for all)")
        per = max(1, len(kinds))
        keep = sorted(random.Random(f"kinject-fk-sample/{seed}").sample(range(len(groups)),
                                                                       min(len(groups), max(1, max_questions // per))))
        groups = [groups[k] for k in keep]
    questions = [q for g in groups for q in g][: max_questions or None]
    return Task(name="fictional_knowledge", questions=questions, docs=docs, paraphrases=paraphrases,
                meta={"kind": "fictional_knowledge", "source": str(source), "kinds": list(kinds), "seed": seed,
                      "max_questions": max_questions,
                      "description": "Chang et al. (2024) fictional knowledge: 130 invented passages; cloze "
                                     "probes as 4-option questions (memorization / semantic / composition)"})


# ---------------------------------------------------------------------------------------------
# Bring your own corpus
# ---------------------------------------------------------------------------------------------

def load_documents(docs_dir: str | Path) -> list[Document]:
    """Documents from a folder (recursively): ``.txt``/``.md`` files and ``.jsonl`` rows.

    A ``.txt``/``.md`` file is one document: id = its path relative to the folder without the
    suffix, title = the first Markdown heading (``# ...``) or the file name. A ``.jsonl`` row is
    ``{"doc_id"?, "title"?, "text"}`` (id defaults to ``<file>/<line>``). Files that are not UTF-8
    or are empty are skipped with a warning naming the file; the rest are kept.

    Raises:
        FileNotFoundError: the folder does not exist.
        TaskFormatError: duplicate document ids (names both sources), a bad JSONL row (file + line),
            or no usable document at all.
    """
    root = resolve_path(docs_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"documents folder {root} not found; put .txt, .md or .jsonl files there")
    docs: list[Document] = []
    origin: dict[str, str] = {}

    def add(doc: Document, where: str) -> None:
        if doc.doc_id in origin:
            raise TaskFormatError(f"duplicate document id {doc.doc_id!r} in {where} (first seen in "
                                  f"{origin[doc.doc_id]}); rename one of them")
        origin[doc.doc_id] = where
        docs.append(doc)

    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".md", ".jsonl")):
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            warnings.warn(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start}); skipped. "
                          "Re-save it as UTF-8 to include it.", stacklevel=2)
            continue
        rel = path.relative_to(root).with_suffix("").as_posix()
        if path.suffix.lower() == ".jsonl":
            for i, row in enumerate(read_jsonl(path), 1):
                text = row.get("text")
                if not isinstance(text, str):
                    raise TaskFormatError(f"{path}, line {i}: each row needs a string 'text' "
                                          "(and optionally 'doc_id', 'title')")
                if not text.strip():
                    warnings.warn(f"{path}, line {i}: empty text; skipped.", stacklevel=2)
                    continue
                try:
                    doc = Document(doc_id=str(row.get("doc_id") or f"{rel}/{i}"), title=str(row.get("title", "")),
                                   text=text.strip())
                except ValueError as exc:
                    raise TaskFormatError(f"{path}, line {i}: {exc}") from None
                add(doc, f"{path}, line {i}")
            continue
        if not raw.strip():
            warnings.warn(f"{path}: empty document; skipped.", stacklevel=2)
            continue
        heading = re.search(r"^#\s+(.+)$", raw, flags=re.M) if path.suffix.lower() == ".md" else None
        add(Document(doc_id=rel, title=heading.group(1).strip() if heading else path.stem, text=raw.strip()), str(path))
    if not docs:
        raise TaskFormatError(f"{root}: no usable documents (.txt, .md or .jsonl, UTF-8, non-empty)")
    return docs


def load_questions(path: str | Path) -> list[Question]:
    """Questions in the task format (one JSON object per line, see :mod:`kinject_utils.tasks`).

    Raises:
        TaskFormatError: a malformed line or duplicate id (names the file and line).
    """
    path = resolve_path(path)
    if not path.exists():
        raise FileNotFoundError(f"questions file {path} not found; write one JSON object per line: "
                                '{"id", "question", "choices", "answer", "source_doc_ids"?}')
    fields = {f.name for f in dataclasses.fields(Question)}
    out: list[Question] = []
    seen: dict[str, int] = {}
    try:
        rows = list(enumerate(read_jsonl(path), 1))
    except ValueError as exc:
        raise TaskFormatError(str(exc)) from None
    for i, row in rows:
        missing = [k for k in ("id", "question", "choices", "answer") if k not in row]
        if missing:
            raise TaskFormatError(f"{path}, line {i}: missing field(s) {missing}")
        try:
            q = Question(**{k: v for k, v in row.items() if k in fields})
        except (TypeError, ValueError) as exc:
            raise TaskFormatError(f"{path}, line {i}: {exc}") from None
        if q.id in seen:
            raise TaskFormatError(f"{path}, line {i}: duplicate question id {q.id!r} (also on line {seen[q.id]})")
        seen[q.id] = i
        out.append(q)
    return out


def load_custom_task(docs_dir: str | Path, questions_file: str | Path, name: str = "custom") -> Task:
    """Bring your own: a folder of documents (:func:`load_documents`) and a questions file.

    Raises:
        TaskFormatError: as in the two loaders, or a question citing a document id the folder lacks.
    """
    docs = load_documents(docs_dir)
    questions = load_questions(questions_file)
    ids = {d.doc_id for d in docs}
    for q in questions:
        bad = [d for d in q.source_doc_ids if d not in ids]
        if bad:
            raise TaskFormatError(f"{questions_file}: question {q.id} cites document(s) {bad} that are not "
                                  f"in {docs_dir} (ids are paths without suffix, e.g. {sorted(ids)[:3]})")
    return Task(name=name, questions=questions, docs=docs,
                meta={"kind": "custom", "docs_dir": str(docs_dir), "questions_file": str(questions_file)})


# ---------------------------------------------------------------------------------------------
# Question writing by an LLM (the paper's recipe)
# ---------------------------------------------------------------------------------------------

QUESTION_PROMPT = (
    "Write {n} multiple-choice questions about the text below. Each question must be answerable "
    "from the text alone, ask about a specific fact in it (a name, date, number or outcome), and "
    "have 4 options of the same kind with exactly one correct. Rate how specific each question is "
    "to this text from 1 (generic) to 10 (only this text answers it).\n"
    "Return only JSON: {{\"questions\": [{{\"question\": str, \"choices\": [4 strings], "
    "\"answer\": index 0-3, \"specificity\": 1-10}}]}}\n\nText:\n{text}\n")


def parse_json_reply(reply: str) -> Any:
    """Parse JSON out of a model reply: code fences, prose around it, trailing commas, smart quotes.

    Raises:
        ValueError: no JSON object or array could be recovered (message shows the reply's start).

    Example:
        >>> parse_json_reply('Sure! ```json\\n{"a": [1, 2,],}\\n``` Hope it helps')
        {'a': [1, 2]}
    """
    text = reply.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.S)
    candidates = [fence.group(1)] if fence else []
    candidates.append(text)
    for cand in candidates:
        cand = cand.replace("\u201c", '"').replace("\u201d", '"')
        starts = [i for i in (cand.find("{"), cand.find("[")) if i >= 0]
        if not starts:
            continue
        start = min(starts)
        close = "}" if cand[start] == "{" else "]"
        end = cand.rfind(close)
        for body in (cand[start:end + 1], _balanced(cand, start)):
            if not body:
                continue
            body = re.sub(r",\s*([}\]])", r"\1", body)
            try:
                return json.loads(body)
            except json.JSONDecodeError:
                continue
    raise ValueError(f"no JSON found in model reply: {reply[:200]!r}")


def _balanced(s: str, start: int) -> str:
    """The first bracket-balanced span from ``start`` (ignores brackets inside strings)."""
    depth, in_str, esc = 0, False, False
    for i in range(start, len(s)):
        c = s[i]
        if in_str:
            esc = (c == "\\") and not esc
            if c == '"' and not esc:
                in_str = False
            continue
        if c == '"':
            in_str = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return s[start:i + 1]
    return ""


def _coerce_question(item: Any, text: str) -> tuple[str, list[str], int, float] | None:
    if not isinstance(item, dict):
        return None
    q, choices, ans = item.get("question"), item.get("choices") or item.get("options"), item.get("answer")
    if isinstance(choices, dict):  # {"A": ..., "B": ...}
        choices = [choices[k] for k in sorted(choices)]
    if not isinstance(q, str) or not q.strip() or not isinstance(choices, list) or len(choices) != 4:
        return None
    choices = [re.sub(r"^[A-Da-d][.)]\s+", "", str(c)).strip() for c in choices]
    if any(not c for c in choices) or len({c.lower() for c in choices}) != 4:
        return None
    if isinstance(ans, str):
        a = ans.strip()
        if len(a) == 1 and a.upper() in LETTERS:
            ans = LETTERS.index(a.upper())
        elif a.isdigit():
            ans = int(a)
        else:
            a = re.sub(r"^[A-Da-d][.)]\s+", "", a)
            ans = next((k for k, c in enumerate(choices) if c.lower() == a.lower()), None)
    if isinstance(ans, bool) or not isinstance(ans, int) or not 0 <= ans < 4:
        return None
    spec = item.get("specificity")
    try:
        score = float(spec)
    except (TypeError, ValueError):
        score = float("nan")
    if score != score:  # no rating: count the question's words that occur in the chunk
        words = set(re.findall(r"[a-z0-9]{4,}", q.lower()))
        score = len(words & set(re.findall(r"[a-z0-9]{4,}", text.lower()))) / 2.0
    # an answer stated verbatim in the chunk is more certainly about this chunk
    score += 0.5 * (choices[ans].lower() in text.lower())
    return q.strip(), choices, ans, score


def write_questions(chunks: Sequence[Document], generate_fn: Callable[[str], str], *, per_chunk: int = 4,
                    keep: int = 2, seed: int = 0, max_attempts: int = 2, prompt: str = QUESTION_PROMPT,
                    subject: str = "custom", progress: bool = True) -> list[Question]:
    """Write questions with an LLM: ``per_chunk`` per document, keep the ``keep`` most specific.

    The paper's recipe (GPT-4, 4 questions per chunk, the 2 most specific kept). ``generate_fn`` is
    any callable prompt -> reply text (a local chat model, an HTTP API, a test fake). Replies are
    parsed leniently (:func:`parse_json_reply`); malformed questions are dropped; a chunk whose
    reply cannot be parsed is retried ``max_attempts`` times, then skipped with a warning. The
    specificity is the model's own 1-10 rating, or (if absent) the number of the chunk's words the
    question uses, plus a bonus when the answer is stated verbatim. Choices are shuffled (seeded) so
    the answer position does not follow the model's habits.

    Returns:
        Questions with ids ``<doc_id>/gen<k>`` and ``source_doc_ids=[doc_id]``.
    """
    if keep > per_chunk or keep < 1:
        raise ValueError(f"keep ({keep}) must be between 1 and per_chunk ({per_chunk})")
    from tqdm.auto import tqdm

    out: list[Question] = []
    for doc in tqdm(chunks, desc="writing questions", disable=not progress):
        parsed: list[tuple[str, list[str], int, float]] = []
        for _ in range(max_attempts):
            try:
                data = parse_json_reply(generate_fn(prompt.format(n=per_chunk, text=doc.text)))
            except ValueError:
                continue
            items = data.get("questions", []) if isinstance(data, dict) else data
            parsed = [c for c in (_coerce_question(it, doc.text) for it in (items or [])) if c]
            if parsed:
                break
        if not parsed:
            warnings.warn(f"{doc.doc_id}: the model gave no usable questions after {max_attempts} attempts; skipped",
                          stacklevel=2)
            continue
        best = sorted(enumerate(parsed), key=lambda kv: (-kv[1][3], kv[0]))[:keep]
        for k, (_, (q, choices, ans, _score)) in enumerate(sorted(best)):
            right = choices[ans]
            order = list(choices)
            random.Random(f"kinject-write/{seed}/{doc.doc_id}/{k}").shuffle(order)
            out.append(Question(id=f"{doc.doc_id}/gen{k}", question=q, choices=order, answer=order.index(right),
                                source_doc_ids=[doc.doc_id], subject=subject, kind="generated"))
    return out


# ---------------------------------------------------------------------------------------------
# Notebook 01 entry points
# ---------------------------------------------------------------------------------------------

def build_tasks(task_names: Iterable[str], results_dir: str | Path, size: str = "default", seed: int = 0,
                mmlu_dir: str = "../shared/data/mmlu", fk_dir: str = "../shared/data/fictional_knowledge", *,
                fk_max_questions: int | None = None, fk_kinds: Sequence[str] = tuple(FK_KINDS.values()),
                mmlu_kb: str = "", custom_docs_dir: str = "", custom_questions: str = "",
                n_paraphrases: int = 10) -> dict[str, Path]:
    """Build and write every requested task under ``{results_dir}/01_tasks/<name>/``.

    A task whose shared data is missing (or that needs the hub while offline) is skipped with a
    printed message naming the path; the others are still written.

    Args:
        task_names: any of ``fictional_news``, ``fictional_knowledge``, ``mmlu``, ``custom``.
        size: fictional news size (``tiny|default|large``).
        mmlu_kb: ``""`` (no MMLU knowledge base: MMLU is scored without RAG), ``"wikipedia"``
            (online builder) or a folder of documents.
        custom_docs_dir, custom_questions: the bring-your-own task's inputs.

    Returns:
        task name -> folder written.
    """
    names = list(task_names)
    unknown = [n for n in names if n not in TASK_NAMES]
    if unknown:
        raise ValueError(f"unknown task name(s) {unknown}; use any of {list(TASK_NAMES)}")
    written: dict[str, Path] = {}
    for name in names:
        try:
            if name == "fictional_news":
                task = make_fictional_news(size, seed, n_paraphrases)
            elif name == "fictional_knowledge":
                task = load_fictional_knowledge(fk_dir, max_questions=fk_max_questions, kinds=fk_kinds, seed=seed)
            elif name == "mmlu":
                kb = None
                if mmlu_kb == "wikipedia":
                    kb = fetch_wikipedia_kb([t for s in MMLU_SUBJECTS for t in MMLU_WIKI_TOPICS[s]])
                elif mmlu_kb:
                    kb = load_documents(mmlu_kb)
                task = build_mmlu_task(mmlu_dir, kb=kb)
            else:
                if not custom_docs_dir or not custom_questions:
                    raise FileNotFoundError("task 'custom' needs CUSTOM_DOCS_DIR and CUSTOM_QUESTIONS")
                task = load_custom_task(custom_docs_dir, custom_questions)
        except (FileNotFoundError, DataUnavailableError) as exc:
            print(f"[01] skipping task {name}: {exc}")
            continue
        written[name] = tasks.save_task(task, tasks.task_dir(resolve_path(results_dir), name))
    return written


def task_summary(task_map: dict[str, Task], tokenizer: Any = None):
    """One row per task: counts and token statistics (a ``pandas.DataFrame``).

    Args:
        task_map: name -> task.
        tokenizer: a Hugging Face tokenizer; without one, whitespace words are counted.
    """
    import numpy as np
    import pandas as pd

    def n_tok(texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        if tokenizer is None:
            return np.array([len(t.split()) for t in texts])
        return np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]])

    rows = []
    for name, t in task_map.items():
        d = n_tok([doc.text for doc in t.docs])
        q = n_tok([x.question for x in t.questions])
        p = n_tok([p for ps in t.paraphrases.values() for p in ps])
        rows.append({"task": name, "questions": len(t.questions), "docs": len(t.docs), "dev": len(t.dev),
                     "paraphrased_docs": len(t.paraphrases), "paraphrases": int(p.size),
                     "doc_tokens_mean": round(float(d.mean()), 1) if d.size else 0.0,
                     "doc_tokens_max": int(d.max()) if d.size else 0, "kb_tokens": int(d.sum()),
                     "paraphrase_tokens": int(p.sum()),
                     "question_tokens_mean": round(float(q.mean()), 1) if q.size else 0.0,
                     "unit": "tokens" if tokenizer is not None else "words"})
    return pd.DataFrame(rows).set_index("task")
