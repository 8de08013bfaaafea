"""Fictional knowledge (Chang et al. 2024): 130 invented passages whose cloze probes become fair 4-option questions.

A probe (``mem_input`` / ``gen_input`` / ``hard_gen_input``) is the question, its target the right
answer. Fair means the question alone cannot pick the answer out, so a base model is at chance:

- the distractors are other passages' targets of the *same answer type* (year, date, number,
  proper name, common phrase; the same leading "the" and the same trailing punctuation) that
  filled the *same slot*: their own probe ended with the same word as this one ("... founded in"
  -> years and places that followed "in"), so grammar does not rule them out;
- a probe whose answer repeats a content word of the question is dropped (the question gives it
  away), and so is a distractor that shares a content word with the question;
- a distractor never occurs in the question's own passage (it is never a true statement there).

:func:`probe_kind_counts` reports the questions per probe kind and :func:`question_only_accuracy`
the accuracy of a question-only guesser (the option sharing most words with the question), which
must sit at chance (0.25).
"""
from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter
from collections.abc import Sequence

from ..io import content_hash, read_json, resolve_path
from ..log import get_logger
from ..tasks import Document, Question, Task, TaskFormatError
from .errors import DataUnavailableError, offline
from .news_templates import _MONTHS

__all__ = [
    "FK_DEFAULT_MAX_QUESTIONS",
    "FK_KINDS",
    "answer_kind",
    "load_fictional_knowledge",
    "probe_kind_counts",
    "question_only_accuracy",
]

_log = get_logger("data.fictional_knowledge")

#: probe field -> Question.kind: memorisation (probe copied from the passage), semantic
#: generalisation (probe paraphrased), compositional generalisation (facts combined).
FK_KINDS: dict[str, str] = {"mem": "memorization", "gen": "semantic", "hard_gen": "composition"}
#: questions kept by default: 100 probe groups x 3 kinds (>= 250 for a paired interval under +-0.07)
FK_DEFAULT_MAX_QUESTIONS = 300
_FK_FIELDS = ("train_context", "mem_input", "mem_target", "gen_input", "gen_target", "hard_gen_input",
              "hard_gen_target")
_STOP = frozenset("the a an of in on at to and or for with by from that this was were is are be been its it as "
                  "into their his her has had have which who whom whose".split())


def _content(s: str) -> set[str]:
    """Content words of ``s`` (lowercase, 3+ characters, stop words dropped)."""
    return {w for w in re.findall(r"[a-z0-9]+", s.lower()) if len(w) >= 3 and w not in _STOP}


_ORG_WORDS = frozenset("""inc ltd llc corp corporation company co association society institute university academy
college school council union group industries enterprises syndicate organization organisation party agency foundation
committee club bank labs laboratory network systems technologies alliance league federation ministry department
authority commission board bureau trust partners holdings consortium collective studios records press times
festival awards games olympics championship cup expo show series band orchestra team united fc""".split())
_PLACE_WORDS = frozenset("""north south east west northern southern eastern western new port mount mt lake river
island islands bay city town county province state republic kingdom valley hills coast sea ocean desert forest
park street avenue district region""".split())


def answer_kind(s: str) -> str:
    """Answer type of a cloze target, for same-type distractors.

    ``year``, ``date``, ``number``; proper names split into ``org`` (a word like Institute,
    Syndicate, Festival), ``place`` (North, Port, Island, a "City, Country" pair...), ``person``
    (two or three capitalised words, none of those) and ``name`` (any other proper name); else
    ``common``.

    Example:
        >>> [answer_kind(x) for x in ("1923", "4 May 2031", "12 ships", "Galaxy Music Syndicate",
        ...                           "South Mars", "Rowan Hughes", "Ursa", "survival")]
        ['year', 'date', 'number', 'org', 'place', 'person', 'name', 'common']
    """
    t = s.strip()
    low = t.lower()
    if re.fullmatch(r"\d{3,4}s?", low):
        return "year"
    if any(m.lower() in low for m in _MONTHS) and re.search(r"\d", low):
        return "date"
    if re.search(r"\d", low):
        return "number"
    core = t[4:] if low.startswith("the ") else t
    if not core[:1].isupper():
        return "common"
    words = re.findall(r"[A-Za-z]+", core.lower())
    if any(w in _ORG_WORDS for w in words):
        return "org"
    if any(w in _PLACE_WORDS for w in words) or re.fullmatch(r"[A-Z][\w'-]+, [A-Z][\w'-]+", core):
        return "place"
    tokens = core.split()
    if 2 <= len(tokens) <= 3 and all(re.fullmatch(r"[A-Z][a-z'-]+\.?", w) for w in tokens):
        return "person"
    return "name"


def _shape(s: str) -> tuple[str, bool, bool]:
    """(answer type, leading "the", trailing punctuation): what distractors must share."""
    t = s.strip()
    return answer_kind(t), t.lower().startswith("the "), t[-1:] in ".,;:!?\"'"


def _slot(question: str) -> str:
    """The slot a target fills: the probe's last word, lowercased."""
    words = question.strip().split()
    return words[-1].lower() if words else ""


@dataclasses.dataclass
class _Probe:
    """One answer to place in an option set: a probe's target with what it must not clash with."""

    key: str  # "<entry>/<plain|hard>/<j>": mem and gen share the plain key (and so their choices)
    entry: int
    target: str
    slot: str
    q_words: set[str]  # content words of the probe(s) asking for this target
    passage: str  # lowercase source passage

    def accepts(self, other: _Probe) -> bool:
        """Can ``other``'s target be a wrong option of this probe (and the other way round)?"""
        a, b = self.target.strip().lower(), other.target.strip().lower()
        return (self.entry != other.entry and a not in b and b not in a
                and b not in self.passage and a not in other.passage
                and not _content(other.target) & self.q_words and not _content(self.target) & other.q_words)


def _option_sets(probes: list[_Probe], seed: int) -> dict[str, list[str]]:
    """Balanced option sets: probes in groups of 4 whose targets are each other's distractors.

    Every question of a set offers the same 4 options in the same order, each option right for
    exactly one of them: whatever a model prefers without reading the question (a frequent word,
    a length, a position) scores 1 in 4 over the set. Partners share the answer's shape (type,
    leading "the", trailing punctuation), preferring the same slot, then the closest length.
    Returns probe key -> its 4 options; probes left without partners get none (dropped).
    """
    buckets: dict[tuple[str, bool, bool], list[_Probe]] = {}
    for p in sorted(probes, key=lambda p: content_hash(seed, "fk-order", p.key)):
        buckets.setdefault(_shape(p.target), []).append(p)
    out: dict[str, list[str]] = {}
    for bucket in buckets.values():
        free = list(bucket)
        while len(free) >= 4:
            first = free.pop(0)
            group = [first]
            ranked = sorted(free, key=lambda p: (p.slot != first.slot,
                                                 abs(len(p.target.split()) - len(first.target.split())),
                                                 abs(len(p.target) - len(first.target)) // 6))
            for cand in ranked:
                if all(g.accepts(cand) for g in group):
                    group.append(cand)
                    if len(group) == 4:
                        break
            if len(group) < 4:
                continue  # no partners for ``first``: it is dropped, the others stay free
            for g in group[1:]:
                free.remove(g)
            options = [g.target for g in group]
            random.Random(f"kinject-fk/{seed}/{first.key}").shuffle(options)
            out.update({g.key: options for g in group})
    return out


def _fk_entries(source: str) -> list[dict]:
    if source == "hub":
        if offline():
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


def load_fictional_knowledge(source: str = "../shared/data/fictional_knowledge", *,
                             max_questions: int | None = FK_DEFAULT_MAX_QUESTIONS,
                             kinds: Sequence[str] = tuple(FK_KINDS.values()), seed: int = 0) -> Task:
    """The fictional-knowledge corpus as a fair 4-option task (130 passages; distractors: module doc).

    A probe group is one passage's probe j in every requested kind; a group is kept only when every
    kind survives the give-away filter, so the kinds stay comparable (equal counts). A memorisation
    probe and its paraphrased (semantic) twin share the target, the slot and so the same choices in
    the same order.

    Args:
        source: folder with ``fictional_knowledge.json`` / ``fictional_knowledge_paraphrased.json``,
            or ``"hub"``.
        max_questions: keep at most this many questions, drawn (seeded) as whole probe groups;
            ``None`` keeps all. Docs stay all 130.
        kinds: any of ``memorization``, ``semantic``, ``composition``.
        seed: for the distractor tie-breaks, choice order and the subsample.

    Raises:
        FileNotFoundError: the folder or JSON is missing.
        DataUnavailableError: ``source="hub"`` while offline.
    """
    bad = set(kinds) - set(FK_KINDS.values())
    if bad or not kinds:
        raise ValueError(f"kinds {sorted(bad) or list(kinds)} not understood; use any of {list(FK_KINDS.values())}")
    if max_questions is not None and max_questions < 1:
        raise ValueError("max_questions must be >= 1 (or None for all)")
    entries = _fk_entries(source)
    for i, e in enumerate(entries):
        missing = [f for f in _FK_FIELDS if f not in e]
        if missing:
            raise TaskFormatError(f"fictional-knowledge entry {i}: missing field(s) {missing}; "
                                  "use the original fictional_knowledge.json")
    docs = [Document(doc_id=f"fk-{i:03d}", title=f"Fictional knowledge passage {i}", text=e["train_context"])
            for i, e in enumerate(entries)]
    paraphrases = {f"fk-{i:03d}": [str(p) for p in e["paraphrases"]] for i, e in enumerate(entries)
                   if e.get("paraphrases")}
    probes: dict[str, _Probe] = {}
    for i, e in enumerate(entries):
        for j in range(len(e["mem_target"])):
            for field, kind in FK_KINDS.items():
                if kind not in kinds or j >= len(e[f"{field}_input"]) or field == "gen":
                    continue
                asked = [e[f"{field}_input"][j]] + ([e["gen_input"][j]] if field == "mem" and "semantic" in kinds
                                                   and j < len(e["gen_input"]) else [])
                target, q_words = e[f"{field}_target"][j], set().union(*(_content(q) for q in asked))
                if not isinstance(target, str) or not target.strip() or _content(target) & q_words:
                    continue  # the question gives its answer away
                key = f"{i}/{'hard' if field == 'hard_gen' else 'plain'}/{j}"
                probes[key] = _Probe(key, i, target, _slot(asked[0]), q_words, e["train_context"].lower())
    if "semantic" in kinds and "memorization" not in kinds:  # gen probes alone: key them as plain too
        for i, e in enumerate(entries):
            for j, (q, t) in enumerate(zip(e["gen_input"], e["gen_target"])):
                if isinstance(t, str) and t.strip() and not _content(t) & _content(q):
                    probes[f"{i}/plain/{j}"] = _Probe(f"{i}/plain/{j}", i, t, _slot(q), _content(q),
                                                      e["train_context"].lower())
    options = _option_sets(list(probes.values()), seed)
    groups: list[list[Question]] = []
    dropped = 0
    for i, e in enumerate(entries):
        for j in range(len(e["mem_target"])):
            group = []
            for field, kind in FK_KINDS.items():
                key = f"{i}/{'hard' if field == 'hard_gen' else 'plain'}/{j}"
                if kind not in kinds or j >= len(e[f"{field}_input"]) or key not in options:
                    continue
                target, choices = e[f"{field}_target"][j], options[key]
                if target not in choices:  # gen's target differs from mem's (never in the released data)
                    continue
                group.append(Question(id=f"fk-{i:03d}/{field}/{j}", question=e[f"{field}_input"][j].strip(),
                                      choices=list(choices), answer=choices.index(target),
                                      source_doc_ids=[f"fk-{i:03d}"], subject="fictional_knowledge", kind=kind))
            if len(group) == len(kinds):
                groups.append(group)
            else:
                dropped += 1
    _log.info("fictional knowledge: %d probe groups kept, %d dropped (an answer the question gives away, "
              "or no same-type option set)",
              len(groups), dropped)
    if max_questions is not None:
        keep = sorted(random.Random(f"kinject-fk-sample/{seed}").sample(
            range(len(groups)), min(len(groups), max(1, max_questions // len(kinds)))))
        groups = [groups[k] for k in keep]
    questions = [q for g in groups for q in g][: max_questions or None]
    return Task(name="fictional_knowledge", questions=questions, docs=docs, paraphrases=paraphrases,
                meta={"kind": "fictional_knowledge", "source": str(source), "kinds": list(kinds), "seed": seed,
                      "max_questions": max_questions, "per_kind": probe_kind_counts(questions),
                      "description": "Chang et al. (2024) fictional knowledge: 130 invented passages; cloze "
                                     "probes as 4-option questions (memorization / semantic / composition) with "
                                     "same-type, same-slot distractors"})


def probe_kind_counts(questions: Sequence[Question]) -> dict[str, int]:
    """Questions per probe kind (memorization / semantic / composition), in :data:`FK_KINDS` order."""
    c = Counter(q.kind for q in questions)
    return {k: c[k] for k in FK_KINDS.values() if c[k]}


def question_only_accuracy(questions: Sequence[Question]) -> dict[str, float]:
    """Accuracy per probe kind (and ``"all"``) of a guesser that sees only the question.

    It picks the option sharing most content words with the question (ties split evenly: a tie of
    k options counts 1/k when the answer is among them). On a fair task it sits at chance, 0.25.
    """
    hits: dict[str, list[float]] = {}
    for q in questions:
        words = _content(q.question)
        overlap = [len(_content(c) & words) for c in q.choices]
        best = [k for k, v in enumerate(overlap) if v == max(overlap)]
        score = 1 / len(best) if q.answer in best else 0.0
        for k in (q.kind or "other", "all"):
            hits.setdefault(k, []).append(score)
    return {k: sum(v) / len(v) for k, v in hits.items()}
