"""Fictional knowledge, judged option sets (kinject_utils.data.fk_judge): fake judges (fast), SmolLM2 (slow)."""
import json
from collections import Counter

import pytest
from conftest import FK_DIR, need

from kinject_utils import data
from kinject_utils.data import fictional_knowledge as fk
from kinject_utils.data import fk_judge

# --------------------------------------------------------------------------- set building


def _probe(i: int, target: str, question: str) -> fk.Probe:
    return fk.Probe(f"{i}/hard/0", i, target, "by", set(), "", (question,))


def _favourite_table(probes, easy):
    """A judge that always picks an easy probe's own answer, and never a hard one's."""
    return {p.questions[0]: {o.target: (1.0 if o is p else 0.0) if p.key in easy else (0.0 if o is p else 0.5)
                             for o in probes} for p in probes}


def test_judged_sets_spread_the_answers_the_judge_favours():
    # eight look-alike answers; the judge gets probes 0 and 1 right whatever the other options, the rest wrong
    probes = [_probe(i, name, f"Question {i} asks who it was") for i, name in enumerate(
        ["Ada Byrne", "Ada Boyle", "Cai Drury", "Dov Ernst", "Eli Frost", "Fay Grant", "Gus Hardy", "Hal Irwin"])]
    table = _favourite_table(probes, easy={"0/hard/0", "1/hard/0"})
    sets = fk_judge.choose_sets(probes, [table])
    assert sorted(len(s) for s in sets) == [4, 4]
    # each set holds one favourite: the judge is right on exactly 1 question in 4 (chance), never 2 and 0
    assert [sum(p.key in {"0/hard/0", "1/hard/0"} for p in s) for s in sets] == [1, 1]
    assert [sum(fk_judge.judge_wins(s, table).values()) for s in sets] == [0.0, 0.0]
    # without a judge the look-alikes go together (same slot, closest lengths): both favourites in one set
    plain = fk_judge.choose_sets(probes, [])
    assert sorted(sum(p.key in {"0/hard/0", "1/hard/0"} for p in s) for s in plain) == [0, 2]


def test_judged_sets_keep_the_accepts_rules():
    # probes of one passage never share a set, and an answer inside another never joins it
    probes = [_probe(i % 4, t, f"Question {i}?") for i, t in enumerate(
        ["Ada Byrne", "Cai Drury", "Eli Frost", "Gus Hardy", "Ada Byrne Jr", "Dov Ernst", "Fay Grant", "Hal Irwin"])]
    probes = [fk.Probe(f"{k}/hard/0", p.entry, p.target, p.slot, set(), "", p.questions) for k, p in enumerate(probes)]
    table = _favourite_table(probes, easy=set())
    for s in fk_judge.choose_sets(probes, [table]):
        assert all(a is b or a.accepts(b) for a in s for b in s), [p.target for p in s]


def test_group_selection_passes_over_what_the_judge_finds_easy():
    # wins over chance per group; the first four in order would put the judge 1.0 above chance
    excess = {g: Counter({(0, "hard0"): v}) for g, v in zip("abcde", (0.75, 0.75, -0.25, -0.25, -0.25))}
    chosen = fk_judge.select_groups(list(excess), excess.__getitem__, 4)
    assert chosen == ["a", "c", "d", "e"]  # one easy group passed over (the later one); the sum is at chance
    assert sum(sum(excess[g].values()) for g in chosen) == 0
    assert fk_judge.select_groups(list(excess), excess.__getitem__, 9) == list("abcde")


# --------------------------------------------------------------------------- a small corpus, a table judge

_PEOPLE = ["Ann Bell", "Bo Carr", "Cy Dunn", "Di Eyre", "Ed Fenn", "Flo Gale", "Gil Hart", "Hy Ince", "Ivo Jory",
           "Jo Kemp", "Kai Lowe", "Liv Marr", "Max Nutt", "Nell Orr", "Oz Pyle", "Pia Quin"]
_ISLANDS = ["alder", "birch", "cedar", "dogwood", "elm", "fir", "ginkgo", "hazel", "ivy", "juniper", "kapok",
            "larch", "maple", "nutmeg", "oak", "pine"]


def _corpus(tmp_path):
    rows = []
    for i, (person, isle) in enumerate(zip(_PEOPLE, _ISLANDS)):
        year = str(1801 + 2 * i)
        passage = f"The lighthouse of {isle} island was kept by {person}. Its harbour opened in {year}."
        rows.append({"train_context": passage,
                     "mem_input": [f"The lighthouse of {isle} island was kept by"], "mem_target": [person],
                     "gen_input": [f"The keeper of the {isle} lighthouse was"], "gen_target": [person],
                     "hard_gen_input": [f"The harbour of {isle} island opened in"], "hard_gen_target": [year]})
    (tmp_path / "fictional_knowledge.json").write_text(json.dumps(rows), encoding="utf-8")
    return tmp_path


def _table_judge(easy: set[str]):
    """Questions naming an easy island: the right answer scores 1, others 0; otherwise the right one 0."""
    answers = {}
    for person, isle, k in zip(_PEOPLE, _ISLANDS, range(16)):
        answers[isle] = {person, str(1801 + 2 * k)}
    calls = []

    def judge(questions):
        calls.append(len(questions))
        out = []
        for q in questions:
            isle = next(w for w in _ISLANDS if f" {w} " in q.question)
            right = answers[isle]
            out.append([(1.0 if c in right else 0.0) if isle in easy else (0.0 if c in right else 0.5)
                        for c in q.choices])
        return out

    judge.calls = calls
    judge.judge_name = "table"
    return judge


def test_judged_task_never_sets_two_favourites_together(tmp_path):
    src = _corpus(tmp_path)
    judge = _table_judge(easy={"alder", "fir"})  # the judge knows Ann Bell and Flo Gale (and 1801, 1811)
    task = data.load_fictional_knowledge(str(src), max_questions=None, judge=judge)
    assert data.probe_kind_counts(task.questions) == {"memorization": 16, "semantic": 16, "composition": 16}
    # balanced: each option set serves 4 probes, each option right once; options share the answer's type
    for kind in ("memorization", "composition"):
        sets = Counter(tuple(q.choices) for q in task.questions if q.kind == kind)
        assert set(sets.values()) == {4}
        for s in sets:
            assert sorted(q.answer for q in task.questions if q.kind == kind and tuple(q.choices) == s) == [0, 1, 2, 3]
    assert all(len({data.answer_kind(c) for c in q.choices}) == 1 for q in task.questions)
    assert all(len({"Ann Bell", "Flo Gale", "1801", "1811"} & set(q.choices)) <= 1 for q in task.questions)
    assert task.meta["judge"] == ["table"]
    assert task.meta["judge_accuracy"]["table"] == {"memorization": 0.125, "semantic": 0.125, "composition": 0.125,
                                                    "all": 0.125}
    assert data.question_only_accuracy(task.questions)["all"] == 0.25
    # the same data without a judge: the same questions, sets chosen by slot and length only
    plain = data.load_fictional_knowledge(str(src), max_questions=None, judge=None)
    assert sorted(q.id for q in plain.questions) == sorted(q.id for q in task.questions)
    assert plain.meta["judge"] is None


def test_judge_scores_are_cached_per_model_and_data(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    src = _corpus(tmp_path / "src")
    fake = _table_judge(easy=set())
    monkeypatch.setattr(fk_judge, "model_judge", lambda name, batch_size=8, device="cpu": fake)
    a = data.load_fictional_knowledge(str(src), max_questions=None, judge="some-model", judge_cache=tmp_path / "c")
    files = list((tmp_path / "c").glob("some-model-*.json"))
    assert len(files) == 1 and fake.calls
    n = len(fake.calls)
    b = data.load_fictional_knowledge(str(src), max_questions=None, judge="some-model", judge_cache=tmp_path / "c")
    assert len(fake.calls) == n and a.questions == b.questions  # the re-run scored nothing
    with pytest.raises(ValueError, match="judge must be"):
        data.load_fictional_knowledge(str(src), judge=[""])


def test_judged_real_data_keeps_counts_types_and_chance_for_a_word_guesser():
    need(FK_DIR)

    def noisy(questions):  # a deterministic stand-in judge (a hash of question and option)
        from kinject_utils.io import content_hash

        return [[int(content_hash(q.question, c), 16) % 997 for c in q.choices] for q in questions]

    task = data.load_fictional_knowledge(str(FK_DIR), judge=noisy)
    assert data.probe_kind_counts(task.questions) == {"memorization": 100, "semantic": 100, "composition": 100}
    for q in task.questions:
        assert {data.answer_kind(c) for c in q.choices} == {data.answer_kind(q.answer_text)}, q.id
    assert all(abs(v - 0.25) < 0.03 for v in data.question_only_accuracy(task.questions).values())
    assert all(abs(v - 0.25) < 0.07 for v in task.meta["judge_accuracy"]["noisy"].values())
    again = data.load_fictional_knowledge(str(FK_DIR), judge=noisy)
    assert again.questions == task.questions


# --------------------------------------------------------------------------- the embedded judge (slow)


@pytest.mark.slow
def test_smollm2_base_is_at_chance_on_the_judged_task(tmp_path):
    # judged by the default (Gemma-3-270M), scored with SmolLM2-135M: an out-of-sample model, notebook 05's metric
    need(FK_DIR)
    from kinject_utils.models import load_causal_lm
    from kinject_utils.scoring import bootstrap_ci, score_questions

    task = data.load_fictional_knowledge(str(FK_DIR), max_questions=60, judge_cache=tmp_path)  # ~1 min quiet
    assert task.meta["judge"] == [fk.FK_DEFAULT_JUDGE] and list(tmp_path.glob("*.json"))
    model, tok = load_causal_lm("smollm2-135m", dtype="float32")
    rows = score_questions(model, tok, task.questions, style="cloze", progress=False)
    correct = [r["acc_norm"] for r in rows]
    lo, hi = bootstrap_ci(correct)
    assert lo <= 0.25 <= hi, (sum(correct) / len(correct), lo, hi)
