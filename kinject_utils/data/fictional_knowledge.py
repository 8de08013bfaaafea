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


def answer_kind(s: str) -> str:
    """Coarse answer type of a cloze target: ``year``, ``date``, ``number``, ``proper`` or ``common``.

    Example:
        >>> [answer_kind(x) for x in ("1923", "4 May 2031", "12 ships", "Storm Ursa", "survival")]
        ['year', 'date', 'number', 'proper', 'common']
    """
    low = s.strip().lower()
    if re.fullmatch(r"\d{3,4}s?", low):
        return "year"
    if any(m.lower() in low for m in _MONTHS) and re.search(r"\d", low):
        return "date"
    if re.search(r"\d", low):
        return "number"
    core = s.strip()[4:] if low.startswith("the ") else s.strip()
    return "proper" if core[:1].isupper() else "common"


def _shape(s: str) -> tuple[str, bool, bool]:
    """(answer type, leading "the", trailing punctuation): what distractors must share."""
    t = s.strip()
    return answer_kind(t), t.lower().startswith("the "), t[-1:] in ".,;:!?\"'"


def _slot(question: str) -> str:
    """The slot a target fills: the probe's last word, lowercased."""
    words = question.strip().split()
    return words[-1].lower() if words else ""


class _TargetPool:
    """Every probe target with the slot it filled, grouped by shape for fast distractor search."""

    def __init__(self, pool: list[tuple[int, str, str]]) -> None:
        self.by_shape: dict[tuple[str, bool, bool], list[tuple[int, str, str]]] = {}
        for i, cand, slot in pool:
            self.by_shape.setdefault(_shape(cand), []).append((i, cand, slot))

    def distractors(self, answer: str, slot: str, q_words: set[str], passage: str, entry: int, key: str,
                    seed: int) -> list[str]:
        """Three other passages' targets that fill ``slot`` like ``answer`` does and share no word in
        ``q_words`` (the question's content words); see the module doc."""
        shape = _shape(answer)
        n_words, n_chars = len(answer.split()), len(answer)
        low_ans, low_passage = answer.strip().lower(), passage.lower()
        # same shape and slot first; then the same shape; then the same type whatever the "the"/punctuation
        steps = [(shape, True), (shape, False)] + [(s, False) for s in sorted(self.by_shape)
                                                   if s != shape and s[0] == shape[0]]
        out: list[str] = []
        for group, same_slot in steps:
            tiers: dict[tuple[int, int], list[str]] = {}
            for i, cand, cand_slot in self.by_shape.get(group, []):
                if i != entry and (cand_slot == slot or not same_slot):  # never a probe of the same passage
                    tiers.setdefault((abs(len(cand.split()) - n_words), abs(len(cand) - n_chars) // 6), []).append(cand)
            for tier in sorted(tiers):
                for cand in sorted(set(tiers[tier]), key=lambda c: content_hash(seed, key, c)):
                    low = cand.strip().lower()
                    if (not low or low == low_ans or low in low_ans or low_ans in low or low in low_passage
                            or _content(cand) & q_words or any(low == o.strip().lower() for o in out)):
                        continue
                    out.append(cand)
                    if len(out) == 3:
                        return out
        raise ValueError(f"not enough distractor candidates of type {shape[0]!r} for {key!r}")


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
    pool = _TargetPool(sorted({(i, t, _slot(q)) for i, e in enumerate(entries) for f in FK_KINDS
                               for q, t in zip(e[f"{f}_input"], e[f"{f}_target"])
                               if isinstance(t, str) and t.strip() and isinstance(q, str)}))
    groups: list[list[Question]] = []
    dropped = 0
    for i, e in enumerate(entries):
        for j in range(len(e["mem_target"])):
            group = []
            for field, kind in FK_KINDS.items():
                if kind not in kinds or j >= len(e[f"{field}_input"]):
                    continue
                target, text = e[f"{field}_target"][j], e[f"{field}_input"][j].strip()
                if _content(target) & _content(text):  # the question gives its answer away
                    continue
                # mem and gen share a target: share the key and the slot so they get identical choices
                key = f"{i}/{'hard' if field == 'hard_gen' else 'plain'}/{j}"
                probes = [text] if field == "hard_gen" else [e["mem_input"][j], *e["gen_input"][j:j + 1]]
                q_words = set().union(*(_content(p) for p in probes))
                wrong = pool.distractors(target, _slot(probes[0]), q_words, e["train_context"], i, key, seed)
                choices = [target, *wrong]
                random.Random(f"kinject-fk/{seed}/{key}").shuffle(choices)
                group.append(Question(id=f"fk-{i:03d}/{field}/{j}", question=text,
                                      choices=choices, answer=choices.index(target), source_doc_ids=[f"fk-{i:03d}"],
                                      subject="fictional_knowledge", kind=kind))
            if len(group) == len(kinds):
                groups.append(group)
            else:
                dropped += 1
    _log.info("fictional knowledge: %d probe groups kept, %d dropped (an answer the question gives away)",
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
