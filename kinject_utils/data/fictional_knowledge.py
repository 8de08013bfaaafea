"""Fictional knowledge (Chang et al. 2024): 130 invented passages whose cloze probes become fair 4-option questions.

A probe (``mem_input`` / ``gen_input`` / ``hard_gen_input``) is the question, its target the right
answer. Fair means the question alone cannot pick the answer out, so a base model is at chance:

- the distractors are other passages' targets of the *same answer type* (year, date, number,
  proper name, common phrase; the same leading "the" and the same trailing punctuation) that
  filled the *same slot*: their own probe ended with the same word as this one ("... founded in"
  -> years and places that followed "in"), so grammar does not rule them out;
- a probe whose answer repeats a content word of the question is dropped (the question gives it
  away), and so is a distractor that shares a content word with the question;
- a distractor never occurs in the question's own passage (it is never a true statement there);
- options come in balanced sets: 4 questions share the same 4 options, each right for one of them;
- a judge model (by default the embedded Gemma-3-270M) scores every candidate answer from the
  question alone, and the sets, and the probe groups kept, are chosen so that it is at chance
  (adversarial filtering as in HellaSwag/AFLite; :mod:`.fk_judge`). Without a judge
  (``judge=None``) the sets follow shape, slot and length only, and a base model that reads the
  question scores well above chance (SmolLM2-135M about 0.4, Gemma-3-270M about 0.5).

:func:`probe_kind_counts` reports the questions per probe kind and :func:`question_only_accuracy`
the accuracy of a question-only guesser (the option sharing most words with the question), which
must sit at chance (0.25).
"""
from __future__ import annotations

import dataclasses
import math
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..io import content_hash, read_json, resolve_path
from ..log import get_logger
from ..tasks import Document, Question, Task, TaskFormatError
from .fk_judge import Judge, JudgeFn, judge_name, judge_wins, judged_option_sets, select_groups
from .news_templates import MONTHS
from .source import resolve_dataset

__all__ = [
    "FK_DEFAULT_JUDGE",
    "FK_DEFAULT_MAX_QUESTIONS",
    "FK_KINDS",
    "Probe",
    "answer_kind",
    "judge_accuracy",
    "load_fictional_knowledge",
    "probe_kind_counts",
    "question_only_accuracy",
]

_log = get_logger("data.fictional_knowledge")

#: probe field -> Question.kind: memorisation (probe copied from the passage), semantic
#: generalisation (probe paraphrased), compositional generalisation (facts combined).
FK_KINDS: dict[str, str] = {"mem": "memorization", "gen": "semantic", "hard_gen": "composition"}
#: the judge of the option sets by default (:mod:`.fk_judge`): the embedded Gemma-3-270M, which also
#: puts SmolLM2-135M at chance (a SmolLM2 judge leaves Gemma about 0.45)
FK_DEFAULT_JUDGE = "gemma3-270m"
#: judged pool: this many times the probe groups needed (spares: probes without a set, groups passed over)
FK_JUDGE_POOL = 2.5
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
    if any(m.lower() in low for m in MONTHS) and re.search(r"\d", low):
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
class Probe:
    """One answer to place in an option set: a probe's target with what it must not clash with."""

    key: str  # "<entry>/<plain|hard>/<j>": mem and gen share the plain key (and so their choices)
    entry: int
    target: str
    slot: str
    q_words: set[str]  # content words of the probe(s) asking for this target
    passage: str  # lowercase source passage
    questions: tuple[str, ...] = ()  # the probe(s) asking for this target (what a judge scores)

    def accepts(self, other: Probe) -> bool:
        """Can ``other``'s target be a wrong option of this probe (and the other way round)?"""
        a, b = self.target.strip().lower(), other.target.strip().lower()
        return (self.entry != other.entry and a not in b and b not in a
                and b not in self.passage and a not in other.passage
                and not _content(other.target) & self.q_words and not _content(self.target) & other.q_words)


def _option_sets(probes: list[Probe], seed: int) -> dict[str, list[str]]:
    """Balanced option sets: probes in groups of 4 whose targets are each other's distractors.

    Every question of a set offers the same 4 options in the same order, each option right for
    exactly one of them: whatever a model prefers without reading the question (a frequent word,
    a length, a position) scores 1 in 4 over the set. Partners share the answer's shape (type,
    leading "the", trailing punctuation), preferring the same slot, then the closest length.
    Returns probe key -> its 4 options; probes left without partners get none (dropped).
    """
    buckets: dict[tuple[str, bool, bool], list[Probe]] = {}
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


def _fk_entries(source: str | Path) -> list[dict]:
    root = resolve_path(source)
    main = root / "fictional_knowledge.json"
    para = root / "fictional_knowledge_paraphrased.json"
    if not main.exists() and not para.exists():
        raise FileNotFoundError(f"fictional-knowledge file {main} not found; FICTIONAL_KNOWLEDGE_DIR must hold "
                                "fictional_knowledge.json (from github.com/kaistAI/factual-knowledge-acquisition "
                                "or the hub, kaist-ai/fictional-knowledge; FICTIONAL_KNOWLEDGE_DIR \"\" downloads it)")
    # the paraphrased file is the same 130 entries plus a "paraphrases" list (9 for entries 0-39)
    entries = read_json(para if para.exists() else main)
    if not isinstance(entries, list):
        raise TaskFormatError(f"{para if para.exists() else main}: expected a JSON list of entries")
    return entries


def _key(i: int, field: str, j: int) -> str:
    return f"{i}/{'hard' if field == 'hard_gen' else 'plain'}/{j}"


def _group(e: dict, i: int, j: int, kinds: Sequence[str], options: dict[str, list[str]]) -> list[Question] | None:
    """Probe group (i, j): one question per requested kind, or ``None`` when a kind has no option set."""
    group = []
    for field, kind in FK_KINDS.items():
        key = _key(i, field, j)
        if kind not in kinds or j >= len(e[f"{field}_input"]) or key not in options:
            continue
        target, choices = e[f"{field}_target"][j], options[key]
        if target not in choices:  # gen's target differs from mem's (never in the released data)
            continue
        group.append(Question(id=f"fk-{i:03d}/{field}/{j}", question=e[f"{field}_input"][j].strip(),
                              choices=list(choices), answer=choices.index(target),
                              source_doc_ids=[f"fk-{i:03d}"], subject="fictional_knowledge", kind=kind))
    return group if len(group) == len(kinds) else None


def _judged_groups(entries: list[dict], probes: dict[str, Probe], kinds: Sequence[str], seed: int,
                   max_questions: int | None, judges: list, cache_dir: str | Path | None, device: str = "cpu",
                   ) -> tuple[list[list[Question]], list[dict[str, dict[str, float]]]]:
    """Whole probe groups drawn (seeded) with judged option sets (:mod:`.fk_judge`).

    Only the groups drawn are judged: :data:`FK_JUDGE_POOL` times those needed, then, while too
    few have sets, twice the shortfall more, re-blocked with the probes still without a set. Of the
    groups with sets, those needed are taken in the drawn order, passing over one that would lift a
    judge above chance (:func:`.fk_judge.select_groups`).
    """
    fields = [f for f, k in FK_KINDS.items() if k in kinds]
    order = [(i, j) for i, e in enumerate(entries) for j in range(len(e["mem_target"]))
             if all(j < len(e[f"{f}_input"]) and _key(i, f, j) in probes
                    and e[f"{f}_target"][j] == probes[_key(i, f, j)].target for f in fields)]
    random.Random(f"kinject-fk-sample/{seed}").shuffle(order)
    need = len(order) if max_questions is None else min(len(order), max(1, max_questions // len(kinds)))
    t0 = time.perf_counter()
    judges = [Judge(j, cache_dir, content_hash(entries), device) for j in judges]
    options: dict[str, list[str]] = {}
    excess: Counter = Counter()  # the judges' wins over chance so far, per judge and question slot
    set_of: dict[str, list[Probe]] = {}
    free: list[Probe] = []
    kept: list[tuple[int, int]] = []
    end = rounds = 0
    placed = True
    while len(kept) < need and placed:  # the last round: no groups left, but leftovers placed before
        new = order[end:end + (math.ceil(need * FK_JUDGE_POOL) if not end else 2 * (need - len(kept)))]
        end, rounds = end + len(new), rounds + 1
        free += [probes[k] for k in dict.fromkeys(_key(i, f, j) for i, j in new for f in fields)]
        sets = judged_option_sets(free, _shape, seed, judges, excess)
        for s in sets:
            opts = [p.target for p in s]
            random.Random(f"kinject-fk/{seed}/{s[0].key}").shuffle(opts)
            options.update({p.key: opts for p in s})
            set_of.update({p.key: s for p in s})
        free = [p for p in free if p.key not in options]
        placed = bool(new or sets)
        kept = [(i, j) for i, j in order[:end] if all(_key(i, f, j) in options for f in fields)]

    def group_excess(g: tuple[int, int]) -> Counter:  # the judges' wins over chance on group g's questions
        out: Counter = Counter()
        for k in dict.fromkeys(_key(g[0], f, g[1]) for f in fields):
            for n, jd in enumerate(judges):
                out.update({(n, slot): v for slot, v in judge_wins(set_of[k], jd.table, probes[k]).items()})
        return out

    chosen = select_groups(kept, group_excess, need)
    for j in judges:
        _log.info("fictional knowledge: judge %s scored %d question-option pairs in %.1f s (%d from the cache)",
                  j.name, j.n_scored, j.seconds, j.n_cached)
    _log.info("fictional knowledge: %d probe groups chosen of %d with option sets (%d judged in %d rounds; "
              "%d eligible); judging took %.1f s", len(chosen), len(kept), end, rounds, len(order),
              time.perf_counter() - t0)
    groups = [_group(entries[i], i, j, kinds, options) for i, j in sorted(chosen)]
    return [g for g in groups if g is not None], [j.table for j in judges]


def judge_accuracy(questions: Sequence[Question], table: dict[str, dict[str, float]]) -> dict[str, float]:
    """Accuracy per probe kind (and ``"all"``) of a judge's score table: its best-scored option."""
    hits: dict[str, list[int]] = {}
    for q in questions:
        s = [table[q.question][c] for c in q.choices]
        for k in (q.kind or "other", "all"):
            hits.setdefault(k, []).append(int(s.index(max(s)) == q.answer))
    return {k: round(sum(v) / len(v), 4) for k, v in hits.items()}


def load_fictional_knowledge(source: str | Path = "", *,
                             max_questions: int | None = FK_DEFAULT_MAX_QUESTIONS,
                             kinds: Sequence[str] = tuple(FK_KINDS.values()), seed: int = 0,
                             judge: str | JudgeFn | Sequence[str | JudgeFn] | None = FK_DEFAULT_JUDGE,
                             judge_cache: str | Path | None = None, judge_device: str = "cpu") -> Task:
    """The fictional-knowledge corpus as a fair 4-option task (130 passages; distractors: module doc).

    A probe group is one passage's probe j in every requested kind; a group is kept only when every
    kind survives the give-away filter, so the kinds stay comparable (equal counts). A memorisation
    probe and its paraphrased (semantic) twin share the target, the slot and so the same choices in
    the same order.

    Args:
        source: folder with ``fictional_knowledge.json`` / ``fictional_knowledge_paraphrased.json``;
            ``""`` asks :func:`~kinject_utils.data.source.resolve_dataset` (``KINJECT_DATA``, the cache,
            the hub's ``kaist-ai/fictional-knowledge``, which has no paraphrases file).
        max_questions: keep at most this many questions, drawn (seeded) as whole probe groups;
            ``None`` keeps all. Docs stay all 130.
        kinds: any of ``memorization``, ``semantic``, ``composition``.
        seed: for the distractor tie-breaks, choice order and the subsample.
        judge: the model(s) whose question-only preference the option sets and kept groups are
            chosen against (:mod:`.fk_judge`; a registry name, a local folder, or a function
            scoring questions' choices), default the embedded Gemma-3-270M (about 3 minutes on
            2 CPU cores for the default 300 questions); ``None`` builds the sets without a model
            (shape, slot and length only: a base model then scores above chance).
        judge_cache: folder for the judge's scores (re-runs score nothing); ``None``: no cache.
        judge_device: where a model judge runs: ``"cpu"`` (default: the same option sets on every
            machine) or ``"cuda"``/``"auto"`` (faster at paper scale; fp32 scores that differ in the
            fifth decimal can choose another set, so its cache is kept apart).

    Raises:
        FileNotFoundError: the folder or JSON is missing.
        DataUnavailableError: ``source=""`` and the data is neither local, cached nor downloadable.
    """
    bad = set(kinds) - set(FK_KINDS.values())
    if bad or not kinds:
        raise ValueError(f"kinds {sorted(bad) or list(kinds)} not understood; use any of {list(FK_KINDS.values())}")
    if max_questions is not None and max_questions < 1:
        raise ValueError("max_questions must be >= 1 (or None for all)")
    judges = [] if judge is None else [judge] if isinstance(judge, str) or callable(judge) else list(judge)
    if any(not (isinstance(j, str) and j.strip()) and not callable(j) for j in judges):
        raise ValueError(f"judge must be a model name, a scoring function, a list of them, or None; got {judge!r}")
    if not str(source).strip():
        source = resolve_dataset("fictional_knowledge").path
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
    probes: dict[str, Probe] = {}
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
                key = _key(i, field, j)
                probes[key] = Probe(key, i, target, _slot(asked[0]), q_words, e["train_context"].lower(),
                                     tuple(q.strip() for q in asked))
    if "semantic" in kinds and "memorization" not in kinds:  # gen probes alone: key them as plain too
        for i, e in enumerate(entries):
            for j, (q, t) in enumerate(zip(e["gen_input"], e["gen_target"])):
                if isinstance(t, str) and t.strip() and not _content(t) & _content(q):
                    probes[f"{i}/plain/{j}"] = Probe(f"{i}/plain/{j}", i, t, _slot(q), _content(q),
                                                      e["train_context"].lower(), (q.strip(),))
    tables: list[dict[str, dict[str, float]]] = []
    if judges:
        groups, tables = _judged_groups(entries, probes, kinds, seed, max_questions, judges, judge_cache,
                                        judge_device)
    else:
        options = _option_sets(list(probes.values()), seed)
        groups = [g for i, e in enumerate(entries) for j in range(len(e["mem_target"]))
                  if (g := _group(e, i, j, kinds, options)) is not None]
        _log.info("fictional knowledge: %d probe groups kept, %d dropped (an answer the question gives away, "
                  "or no same-type option set)", len(groups), sum(len(e["mem_target"]) for e in entries) - len(groups))
        if max_questions is not None:
            keep = sorted(random.Random(f"kinject-fk-sample/{seed}").sample(
                range(len(groups)), min(len(groups), max(1, max_questions // len(kinds)))))
            groups = [groups[k] for k in keep]
    questions = [q for g in groups for q in g][: max_questions or None]
    names = [judge_name(j) for j in judges]
    judged = {n: judge_accuracy(questions, t) for n, t in zip(names, tables)}
    for n, acc in judged.items():
        _log.info("fictional knowledge: judge %s on the task (question only, acc_norm): %s", n,
                  ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    how = (f"judged by {', '.join(names)} so that the question alone is at chance for it" if judges
           else "not judged by a model")
    return Task(name="fictional_knowledge", questions=questions, docs=docs, paraphrases=paraphrases,
                meta={"kind": "fictional_knowledge", "source": str(source), "kinds": list(kinds), "seed": seed,
                      "max_questions": max_questions, "per_kind": probe_kind_counts(questions),
                      "judge": names or None, "judge_accuracy": judged or None,
                      "description": "Chang et al. (2024) fictional knowledge: 130 invented passages; cloze "
                                     "probes as 4-option questions (memorization / semantic / composition) with "
                                     f"same-type, same-slot distractors in balanced sets, {how}"})


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
