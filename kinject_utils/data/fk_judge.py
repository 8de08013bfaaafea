"""Judged option sets for fictional knowledge: adversarial filtering of the distractors.

Same-type, same-slot distractors still let a language model answer without the passage: it reads
the question and picks the option that *sounds* right. On option sets built without a judge, the
base models score well above the 0.25 of chance in notebook 05's metric (SmolLM2-135M about 0.4,
Gemma-3-270M about 0.5; Gemma 0.6 on composition probes, whose answers are often common phrases
such as "a state of emergency" or real-world names). As in SWAG/HellaSwag's adversarial filtering
and AFLite, a judge model scores every candidate answer from the question alone, and the sets and
the questions kept are chosen so that it does no better than chance:

1. Probes of one answer shape are ordered by slot (the most common first), then word count and
   length, and cut into blocks of :data:`BLOCK` (a remainder under 4 joins the last block).
2. The judge scores each probe's question(s) against every target of its block, one question
   with up to 11 choices, in exactly notebook 05's metric: 0-shot cloze prompt, log-likelihood
   divided by the option's length (``acc_norm``), float32 on the CPU. An option's score does not
   depend on the other options, so these scores give the judge's pick within any 4 of them.
3. Each block is split into as many balanced sets of 4 as the ``accepts`` rules allow, choosing
   the split whose judge *wins* (questions whose own target is the judge's best of the set's 4)
   bring the running total closest to a quarter of the questions, per question slot
   (memorisation, paraphrase, composition), then each set closest to a quarter, then same slot
   and close lengths (:func:`choose_sets`).
4. The pool judged is 2.5 times the probe groups needed; of those that got sets, the groups kept
   are the drawn ones whose summed wins are closest to chance, per judge and slot
   (:func:`select_groups`): what the judge finds easy is passed over.

The judge is Gemma-3-270M by default, the stronger of the two embedded models: judged by it, both
it and SmolLM2-135M (out of sample) sit at chance on every probe kind of the default 300 questions
(notebook 05 scores them), while a SmolLM2 judge leaves Gemma near 0.45 (0.58 on composition).
Judging the default takes about 3 minutes on 2 CPU cores (750 questions x 8 options); scores are
cached per judge (``<cache_dir>/<judge>-<hash>.json``, question -> option -> score), so a re-run
scores nothing.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import atomic_write_text, content_hash, read_json, slug
from ..log import get_logger
from ..tasks import Question

if TYPE_CHECKING:
    from .fictional_knowledge import Probe

__all__ = ["BLOCK", "Judge", "JudgeFn", "choose_sets", "judge_name", "judge_wins", "judged_option_sets", "make_blocks",
           "model_judge", "select_groups"]

_log = get_logger("data.fictional_knowledge")

#: probes per judged block: each question is scored against 8 (up to 11) candidate answers
BLOCK = 8
#: a judge: questions in, one score per choice out (higher = preferred; a model's is loglik / len)
JudgeFn = Callable[[list[Question]], list[list[float]]]
_SUBJECT = "fictional_knowledge"  # the task's subject: notebook 05's cloze prompt names it
_FORMAT = "cloze-0shot-acc_norm-float32-v1"  # what a cached score means (part of its file name)


def model_judge(name: str, batch_size: int = 8, device: str = "cpu") -> JudgeFn:
    """A judge that scores with model ``name`` (loaded once, on first use, in float32, on ``device``).

    Its scores are notebook 05's: :func:`kinject_utils.scoring.score_questions` in cloze style,
    0-shot, log-likelihood divided by the option's length in characters (``acc_norm``).
    """
    loaded: list[Any] = []

    def judge(questions: list[Question]) -> list[list[float]]:
        from ..models import load_causal_lm
        from ..scoring import score_questions

        if not loaded:
            from ..models import ModelUnavailableError

            t0 = time.perf_counter()
            try:
                loaded.extend(load_causal_lm(name, dtype="float32", device=device))
            except (ModelUnavailableError, OSError) as exc:
                raise ModelUnavailableError(
                    f"fictional-knowledge judge {name!r} could not be loaded ({exc}); name another model, or "
                    "build the option sets without one: FK_JUDGE: [] in notebook 01, judge=None in "
                    "load_fictional_knowledge") from exc
            _log.info("fictional knowledge: judge %s loaded in %.1f s", name, time.perf_counter() - t0)
        rows = score_questions(loaded[0], loaded[1], questions, style="cloze", batch_size=batch_size,
                               progress=False)
        return [[ll / len(c) for ll, c in zip(r["logliks"], q.choices)] for r, q in zip(rows, questions)]

    judge.judge_name = name  # type: ignore[attr-defined]
    return judge


def judge_name(judge: str | JudgeFn) -> str:
    return judge if isinstance(judge, str) else getattr(judge, "judge_name", getattr(judge, "__name__", "judge"))


class Judge:
    """One judge: its name, scoring function (a model, loaded on first use) and score table.

    ``table`` maps question -> option -> score. A named judge (a model) keeps its table in
    ``cache_dir`` when given (``<judge>-<hash of data_hash and the scoring format>.json``), so a
    re-run scores nothing; a function judge is never cached.
    """

    def __init__(self, judge: str | JudgeFn, cache_dir: str | Path | None = None, data_hash: str = "",
                 device: str = "cpu"):
        self.name = judge_name(judge)
        self.fn = model_judge(judge, device=device) if isinstance(judge, str) else judge
        self.path = None
        # scores of another device kind differ in the 5th decimal: they are kept apart (cpu keeps the old name)
        fmt = _FORMAT if str(device).startswith("cpu") else f"{_FORMAT}-{str(device).split(':')[0]}"
        if cache_dir is not None and isinstance(judge, str):
            self.path = Path(cache_dir) / f"{slug(self.name, unique=True)}-{content_hash(data_hash, fmt)}.json"
        self.table: dict[str, dict[str, float]] = {}
        if self.path is not None and self.path.exists():
            self.table = {q: dict(o) for q, o in read_json(self.path).get("scores", {}).items()}
        self.seconds = 0.0
        self.n_scored = self.n_cached = 0

    def score(self, wanted: dict[str, set[str]]) -> None:
        """Score every wanted (question, option) pair the table lacks, in one call of the judge."""
        todo = {q: sorted(o for o in opts if o not in self.table.get(q, {})) for q, opts in sorted(wanted.items())}
        todo = {q: opts for q, opts in todo.items() if opts}
        n_todo = sum(map(len, todo.values()))
        for q, opts in todo.items():  # a question needs 2 choices: rescore a known option beside a lone one
            if len(opts) == 1:
                opts.append(min(o for o in wanted[q] if o != opts[0]))
        self.n_cached += sum(map(len, wanted.values())) - n_todo
        if not todo:
            return
        questions = [Question(id=f"judge/{k}", question=q, choices=opts, answer=0, subject=_SUBJECT)
                     for k, (q, opts) in enumerate(todo.items())]
        t0 = time.perf_counter()
        scores = self.fn(questions)
        self.seconds += time.perf_counter() - t0
        self.n_scored += n_todo
        for q, s in zip(questions, scores):
            self.table.setdefault(q.question, {}).update(zip(q.choices, map(float, s)))
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps({"judge": self.name, "format": _FORMAT, "scores": self.table},
                                                    sort_keys=True))


def make_blocks(probes: Sequence[Probe], shape: Callable[[str], Any], seed: int) -> list[list[Probe]]:
    """Probes of one shape in blocks of :data:`BLOCK`, ordered by slot (most common first), words, length."""
    buckets: dict[Any, list[Probe]] = {}
    for p in sorted(probes, key=lambda p: content_hash(seed, "fk-order", p.key)):
        buckets.setdefault(shape(p.target), []).append(p)
    blocks: list[list[Probe]] = []
    for bucket in buckets.values():
        n_slot = Counter(p.slot for p in bucket)
        bucket = sorted(bucket, key=lambda p: (-n_slot[p.slot], p.slot, len(p.target.split()), len(p.target)))
        cut = [bucket[k:k + BLOCK] for k in range(0, len(bucket), BLOCK)]
        if len(cut) > 1 and len(cut[-1]) < 4:
            last = cut.pop()
            cut[-1] += last
        blocks += [b for b in cut if len(b) >= 4]
    return blocks


def judge_wins(group: Sequence[Probe], table: dict[str, dict[str, float]],
               only: Probe | None = None) -> Counter:
    """Per question slot (``plain0`` memorisation, ``plain1`` its paraphrase, ``hard0`` composition):
    the judge's wins (own target scored best of the group's) minus a quarter of the questions;
    ``only``: count that probe's questions alone."""
    out: Counter = Counter()
    for p in group if only is None else [only]:
        for k, q in enumerate(p.questions):
            own = table[q][p.target]
            out[f"{p.key.split('/')[1]}{k}"] += all(own >= table[q][o.target] for o in group) - 0.25
    return out


def select_groups(groups: Sequence[Any], excess: Callable[[Any], Counter], need: int) -> list[Any]:
    """``need`` of ``groups`` whose summed judge excess (wins over chance, per judge and question
    slot) is closest to 0 (least sum of squares): the first ``need`` in the given order, then swaps
    with the rest while a swap brings the sum closer (largest gain first; ties: the earlier group
    stays, the earlier joins). AFLite-style: the groups a judge finds easy are the ones passed over."""
    if len(groups) <= need:
        return list(groups)
    d = [excess(g) for g in groups]

    def cost(total: Counter) -> float:
        return sum(v * v for v in total.values())

    chosen = list(range(need))
    total: Counter = Counter()
    for i in chosen:
        total.update(d[i])
    while True:
        now, best = cost(total), None
        for a in sorted(chosen, reverse=True):
            for b in range(len(groups)):
                if b in chosen:
                    continue
                new = Counter(total)
                new.subtract(d[a])
                new.update(d[b])
                gain = now - cost(new)
                if gain > 1e-9 and (best is None or gain > best[0] + 1e-9):
                    best = (gain, a, b, new)
        if best is None:
            return [groups[i] for i in sorted(chosen)]
        _, a, b, total = best
        chosen[chosen.index(a)] = b


def choose_sets(block: Sequence[Probe], tables: Sequence[dict[str, dict[str, float]]],
                excess: Counter | None = None) -> list[list[Probe]]:
    """The best split of a block into as many sets of 4 as ``accepts`` allows (<= 11 probes: exhaustive).

    Best: the judges' running excess of wins over chance (``excess``, per judge and question slot,
    updated in place) ends closest to 0; then each set closest to chance; then same slot, close
    word counts and lengths.
    """
    excess = Counter() if excess is None else excess
    n = len(block)
    ok = [[a is b or a.accepts(b) for b in block] for a in block]
    by_first: dict[int, list[tuple[int, Counter, tuple]]] = {}
    for c in combinations(range(n), 4):
        if all(ok[a][b] for a, b in combinations(c, 2)):
            group = [block[k] for k in c]
            signed: Counter = Counter()
            dev = 0.0
            for j, t in enumerate(tables):
                d = judge_wins(group, t)
                signed.update({(j, k): v for k, v in d.items()})
                dev += abs(sum(d.values()))
            words = [len(p.target.split()) for p in group]
            chars = [len(p.target) for p in group]
            prefs = (dev, len({p.slot for p in group}) - 1, max(words) - min(words), (max(chars) - min(chars)) // 6)
            by_first.setdefault(c[0], []).append((sum(1 << k for k in c), signed, prefs))

    @lru_cache(maxsize=None)
    def most(mask: int) -> int:
        if not mask:
            return 0
        first = mask & -mask
        return max([most(mask & ~first)] + [1 + most(mask & ~bits) for bits, _, _ in
                                             by_first.get(first.bit_length() - 1, ()) if bits & mask == bits])

    def packings(mask: int, k: int):  # every way to place k sets in mask (k == most(mask))
        if not k:
            yield ()
            return
        first = mask & -mask
        if most(mask & ~first) >= k:
            yield from packings(mask & ~first, k)
        for item in by_first.get(first.bit_length() - 1, ()):
            if item[0] & mask == item[0] and most(mask & ~item[0]) >= k - 1:
                for rest in packings(mask & ~item[0], k - 1):
                    yield (item, *rest)

    def cost(packing: tuple) -> tuple:
        total = Counter(excess)
        for _, signed, _ in packing:
            total.update(signed)
        return (sum(abs(v) for v in total.values()), *(sum(x) for x in zip((0, 0, 0, 0), *(p for *_, p in packing))))

    full = (1 << n) - 1
    best = min(packings(full, most(full)), key=cost)
    for _, signed, _ in best:
        excess.update(signed)
    return [[block[k] for k in range(n) if bits >> k & 1] for bits, _, _ in best]


def judged_option_sets(probes: Sequence[Probe], shape: Callable[[str], Any], seed: int,
                       judges: Sequence[Judge], excess: Counter | None = None) -> list[list[Probe]]:
    """Judged balanced sets of 4 probes: blocks scored by every judge, then split (:func:`choose_sets`)."""
    blocks = make_blocks(probes, shape, seed)
    wanted: dict[str, set[str]] = {}
    for b in blocks:
        for p in b:
            for q in p.questions:
                wanted.setdefault(q, set()).update(o.target for o in b)
    for j in judges:
        j.score(wanted)
    excess = Counter() if excess is None else excess
    return [s for b in blocks for s in choose_sets(b, [j.table for j in judges], excess)]
