"""Data (notebook 01): fictional knowledge (a fair task) and bring-your-own documents and questions."""
import collections
import json
import re

import numpy as np
import pytest
from conftest import FK_DIR, need
from logcap import kinject_log, text

from kinject_utils import data
from kinject_utils.tasks import Question, TaskFormatError

# --------------------------------------------------------------------------- fictional knowledge


@pytest.fixture(scope="module")
def fk_all():
    need(FK_DIR)
    return data.load_fictional_knowledge(str(FK_DIR), max_questions=None, judge=None)  # judged sets: own test file


@pytest.fixture(scope="module")
def fk_default():
    need(FK_DIR)
    return data.load_fictional_knowledge(str(FK_DIR), judge=None)


def test_fictional_knowledge_conversion(fk_all):
    fk = fk_all
    raw = json.loads((FK_DIR / "fictional_knowledge.json").read_text(encoding="utf-8"))
    # 650 probe groups; those whose answer the question gives away are dropped, whole groups
    per_kind = data.probe_kind_counts(fk.questions)
    assert set(per_kind) == {"memorization", "semantic", "composition"} and len(set(per_kind.values())) == 1
    assert 500 <= per_kind["memorization"] < 650 and len(fk.docs) == 130
    assert sorted(fk.paraphrases) == [f"fk-{i:03d}" for i in range(40)]
    assert all(len(v) == 9 for v in fk.paraphrases.values())
    docs = fk.doc_by_id()
    by_id = {q.id: q for q in fk.questions}
    for q in fk.questions:
        i, field, j = q.id.split("/")
        e = raw[int(i[3:])]
        assert q.answer_text == e[f"{field}_target"][int(j)] and q.question == e[f"{field}_input"][int(j)].strip()
        assert len({c.lower() for c in q.choices}) == 4
        passage = docs[q.source_doc_ids[0]].text.lower()
        for k, c in enumerate(q.choices):
            if k != q.answer:  # a distractor is never stated in the question's own passage
                assert c.lower() not in passage and c.lower() != q.answer_text.lower(), (q.id, c)
        if field == "gen":  # the paraphrased probe offers exactly the memorisation probe's choices
            assert q.choices == by_id[q.id.replace("/gen/", "/mem/")].choices
    spread = collections.Counter(q.answer for q in fk.questions)
    assert min(spread.values()) > 0.2 * len(fk.questions)


def test_fictional_knowledge_default_keeps_at_least_250_questions(fk_default):
    assert len(fk_default.questions) == data.FK_DEFAULT_MAX_QUESTIONS >= 250
    assert data.probe_kind_counts(fk_default.questions) == {"memorization": 100, "semantic": 100, "composition": 100}
    assert fk_default.meta["per_kind"] == data.probe_kind_counts(fk_default.questions)


def test_fictional_knowledge_distractors_share_the_answer_type(fk_all):
    for q in fk_all.questions:
        kinds = {data.answer_kind(c) for c in q.choices}
        assert kinds == {data.answer_kind(q.answer_text)}, (q.id, q.choices)
    years = [q for q in fk_all.questions if re.fullmatch(r"\d{4}", q.answer_text)]
    assert years and all(all(re.fullmatch(r"\d{3,4}s?", c) for c in q.choices) for q in years)
    words = [abs(len(c.split()) - len(q.answer_text.split())) for q in fk_all.questions for c in q.choices]
    assert np.mean(words) < 0.5


def test_fictional_knowledge_question_alone_is_at_chance(fk_all):
    # no option shares a content word with its question, so a word-overlap guesser is at chance
    acc = data.question_only_accuracy(fk_all.questions)
    assert set(acc) == {"all", "memorization", "semantic", "composition"}
    assert all(abs(v - 0.25) < 0.03 for v in acc.values()), acc
    # the guesser itself can tell: on questions that give their answer away it is far above chance
    leaky = [Question("x", "The storm was named Storm", ["Storm Ursa", "Kelvin", "Amsterdam", "Oslo"], 0)]
    assert data.question_only_accuracy(leaky)["all"] == 1.0


def test_fictional_knowledge_subsample_is_grouped_and_deterministic():
    need(FK_DIR)
    a = data.load_fictional_knowledge(str(FK_DIR), max_questions=60, judge=None)
    b = data.load_fictional_knowledge(str(FK_DIR), max_questions=60, judge=None)
    assert a.questions == b.questions and len(a.questions) == 60 and len(a.docs) == 130
    assert collections.Counter(q.kind for q in a.questions) == {"memorization": 20, "semantic": 20, "composition": 20}
    only = data.load_fictional_knowledge(str(FK_DIR), kinds=["composition"], max_questions=10, judge=None)
    assert len(only.questions) == 10 and {q.kind for q in only.questions} == {"composition"}
    with pytest.raises(ValueError, match="kinds"):
        data.load_fictional_knowledge(str(FK_DIR), kinds=["paraphrase"], judge=None)


# --------------------------------------------------------------------------- bring your own

def test_custom_task_reads_txt_md_jsonl_and_warns_on_bad_files(tmp_path):
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("Alpha text.", encoding="utf-8")
    (d / "sub" / "b.md").write_text("# Bee heading\n\nBee text.", encoding="utf-8")
    (d / "c.jsonl").write_text('{"doc_id": "c1", "title": "C", "text": "Cee."}\n{"text": "No id."}\n', encoding="utf-8")
    (d / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (d / "empty.md").write_text("  \n", encoding="utf-8")
    (d / "ignored.pdf").write_bytes(b"%PDF")
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"id": "q1", "question": "What?", "choices": ["x", "y"], "answer": 1,
                             "source_doc_ids": ["sub/b"]}) + "\n", encoding="utf-8")
    with kinject_log() as rec:
        t = data.load_custom_task(d, q)
    msgs = text(rec)
    assert "latin1.txt, line 1: skipped, not UTF-8" in msgs and "empty.md: empty document" in msgs
    assert "ignored.pdf: skipped" in msgs and "pdftotext" in msgs
    assert [x.doc_id for x in t.docs] == ["a", "c1", "c/2", "sub/b"]
    assert t.doc_by_id()["sub/b"].title == "Bee heading" and len(t.questions) == 1
    (d / "c.jsonl").write_text('{"doc_id": "a", "text": "dup"}\n', encoding="utf-8")
    with pytest.raises(TaskFormatError, match="duplicate document id 'a'.*c.jsonl, line 1.*a.txt"):
        data.load_documents(d)
    for name in ("c.jsonl", "latin1.txt", "empty.md"):
        (d / name).unlink()
    q.write_text(json.dumps({"id": "q1", "question": "What?", "choices": ["x", "y"], "answer": 0,
                             "source_doc_ids": ["nope"]}) + "\n", encoding="utf-8")
    with pytest.raises(TaskFormatError, match="cites document.*nope"):
        data.load_custom_task(d, q)


def test_a_bad_documents_row_is_an_error_naming_file_and_line(tmp_path):
    kb = tmp_path / "kb.jsonl"
    kb.write_bytes(b'{"doc_id": "a", "text": "Alpha"}\n\nnot json\n')
    with pytest.raises(TaskFormatError, match=r"kb.jsonl, line 3: not valid JSON"):
        data.load_documents(kb)
