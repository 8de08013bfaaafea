"""Data (notebook 01): MMLU, the fictional news generator, fictional knowledge, bring-your-own, Wikipedia."""
import collections
import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import FK_DIR, MMLU_DIR, need
from kinject_utils import data, tasks
from kinject_utils.tasks import Document, TaskFormatError

FIXTURES = Path(__file__).resolve().parent / "fixtures"


# --------------------------------------------------------------------------- fictional news

def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("size", ["tiny", "default"])
def test_fictional_news_regenerates_byte_identically(tmp_path, size):
    a = tasks.save_task(data.make_fictional_news(size, seed=0), tmp_path / "a")
    b = tasks.save_task(data.make_fictional_news(size, seed=0), tmp_path / "b")
    c = tasks.save_task(data.make_fictional_news(size, seed=1), tmp_path / "c")
    assert _files(a) == _files(b)
    assert set(_files(a)) == {"questions.jsonl", "kb.jsonl", "paraphrases.jsonl", "task.json"}
    fa, fc = _files(a), _files(c)
    assert all(fa[k] != fc[k] for k in ("questions.jsonl", "kb.jsonl", "paraphrases.jsonl"))
    back = tasks.load_task(a)  # the written files pass the format's validation
    assert back.questions == data.make_fictional_news(size, seed=0).questions


@pytest.fixture(scope="module")
def default_world():
    return data.generate_news_world("default", seed=0)


def test_fictional_news_sizes():
    for size, (n_docs, n_q) in {"tiny": (8, 16), "default": (36, 72)}.items():
        t = data.make_fictional_news(size)
        assert (len(t.docs), len(t.questions)) == (n_docs, n_q)
    big = data.make_fictional_news("large")
    assert len(big.docs) == 300 and 850 <= len(big.questions) <= 900


def test_every_answer_is_stated_in_exactly_its_source_document(default_world):
    w = default_world
    t = w.task
    docs = t.doc_by_id()
    events = {e.doc_id: e for e in w.events}
    for q in t.questions:
        assert len(q.source_doc_ids) == 1
        ev = events[q.source_doc_ids[0]]
        assert len(q.choices) == 4 and len(set(q.choices)) == 4, q.id
        assert q.answer_text == ev.slots[q.kind]
        assert q.choices.count(q.answer_text) == 1  # distractors are never the answer
        assert q.answer_text in docs[ev.doc_id].text
        assert q.answer_text not in q.question  # the question does not give its answer away
        for p in t.paraphrases[ev.doc_id]:  # every rewording keeps the fact
            assert q.answer_text in p
        # no other document fills this question's answer slot: no other event of the same type and
        # object matches every slot the question names
        cues = w.cues[q.id]
        assert cues and all(v in q.question for v in cues.values())
        rivals = [e for e in w.events if e is not ev and e.type_key == ev.type_key and e.short == ev.short
                  and all(e.slots[k] == v for k, v in cues.items())]
        assert not rivals, q.id
        if q.kind in ("when", "number"):  # unique strings: stated in one document only
            whole = re.compile(rf"(?<!\w){re.escape(q.answer_text)}(?!\w|[,.]\d)")  # "4 May" is not in "14 May"
            assert sum(bool(whole.search(d.text)) for d in t.docs) == 1, q.id


def test_distractors_are_of_the_same_kind(default_world):
    w = default_world
    pools = {"who": set(w.people), "org": set(w.orgs), "where": set(w.places)}
    outcomes = {e.type_key: set() for e in w.events}
    from kinject_utils.data import _EVENT_TYPES
    for t in _EVENT_TYPES:
        outcomes[t["key"]] = set(t["outcome"]["values"])
    events = {e.doc_id: e for e in w.events}
    date = re.compile(r"\d{1,2} (January|February|March|April|May|June|July|August|September|October|November|"
                      r"December) 2031")
    for q in w.task.questions:
        ev = events[q.source_doc_ids[0]]
        if q.kind in pools:
            assert set(q.choices) <= pools[q.kind], q.id
        elif q.kind == "outcome":
            assert set(q.choices) <= outcomes[ev.type_key], q.id
        elif q.kind == "when":
            assert all(date.fullmatch(c) for c in q.choices), q.choices
        else:
            shape = re.sub(r"[\d,.]+", "N", q.answer_text)
            assert all(re.sub(r"[\d,.]+", "N", c) == shape for c in q.choices), q.choices
    assert collections.Counter(q.answer for q in w.task.questions) == {0: 18, 1: 18, 2: 18, 3: 18}
    assert set(q.kind for q in w.task.questions) == {"who", "org", "where", "when", "number", "outcome"}


def test_entities_recur_across_stories(default_world):
    w = default_world
    t = w.task
    for name in w.people + w.orgs + w.places:
        assert sum(name in d.text for d in t.docs) >= 2, f"{name} appears in fewer than 2 stories"
    primary = collections.Counter(e.slots["who"] for e in w.events)
    assert max(primary.values()) >= 2  # one person leads several stories
    for q in t.questions:  # every name a question uses is shared by several documents
        for v in w.cues[q.id].values():
            if v in w.people + w.orgs + w.places:
                assert sum(v in d.text for d in t.docs) >= 2


def test_paraphrases_are_distinct_rewordings(default_world):
    t = default_world.task
    for d in t.docs:
        ps = t.paraphrases[d.doc_id]
        assert len(ps) == 10 and len(set(ps)) == 10 and d.text not in ps


def _tfidf_top1(task) -> float:
    """Top-1 source hit rate of a plain TF-IDF retriever (question -> document), in numpy."""
    tok = lambda s: re.findall(r"[a-z0-9]+", s.lower())  # noqa: E731
    vocab: dict[str, int] = {}
    for d in task.docs:
        for w in tok(d.text):
            vocab.setdefault(w, len(vocab))

    def counts(text):
        v = np.zeros(len(vocab))
        for w in tok(text):
            if w in vocab:
                v[vocab[w]] += 1
        return v

    mat = np.stack([counts(d.text) for d in task.docs])
    idf = np.log((1 + len(task.docs)) / (1 + (mat > 0).sum(0))) + 1
    mat = mat * idf
    mat /= np.linalg.norm(mat, axis=1, keepdims=True)
    ids = [d.doc_id for d in task.docs]
    hits = [ids[int(np.argmax(mat @ (counts(q.question) * idf)))] == q.source_doc_ids[0] for q in task.questions]
    return float(np.mean(hits))


def test_retrieval_is_not_a_unique_name_match():
    # With one-off names TF-IDF found the source 100% of the time; recurring entities must bring it
    # well below that while staying far above chance (1/36).
    rates = [_tfidf_top1(data.make_fictional_news("default", seed=s)) for s in (0, 1)]
    print("TF-IDF top-1 source hit rate (default, seeds 0/1):", rates)
    assert all(0.35 <= r <= 0.9 for r in rates), rates


# --------------------------------------------------------------------------- MMLU

def test_mmlu_five_subjects_load_with_the_paper_counts():
    need(MMLU_DIR)
    expected = {"anatomy": 135, "astronomy": 152, "college_biology": 144, "college_chemistry": 100, "prehistory": 324}
    for subject, n in expected.items():
        t = data.load_mmlu(subject, str(MMLU_DIR))
        assert len(t.questions) == n and len(t.dev) == 5, subject
        assert t.questions[0].id == f"{subject}/0" and all(q.subject == subject for q in t.questions)
    both = data.build_mmlu_task(str(MMLU_DIR))
    assert len(both.questions) == 855 and len(both.dev) == 25 and both.docs == []
    chem = {q.id: q for q in both.questions}["college_chemistry/54"]
    assert chem.choices == ["0.95", "0.85", "0.15", "0.65"]  # numeric-only options stay text


def test_mmlu_relative_path_resolves_against_repo_root(monkeypatch):
    need(MMLU_DIR)
    monkeypatch.chdir(Path(__file__).resolve().parents[1] / "notebooks")  # JupyterLab's cwd
    assert len(data.load_mmlu("anatomy").questions) == 135


def _mmlu_dir(tmp_path: Path, test_csv: str, subject: str = "toy") -> Path:
    (tmp_path / "test").mkdir(parents=True)
    (tmp_path / "dev").mkdir()
    (tmp_path / "test" / f"{subject}_test.csv").write_text(test_csv, encoding="utf-8")
    (tmp_path / "dev" / f"{subject}_dev.csv").write_text('Q?,a,b,c,d,A\n', encoding="utf-8")
    return tmp_path


def test_mmlu_options_are_kept_as_text(tmp_path):
    src = _mmlu_dir(tmp_path, 'Which is half?,0.50,None,NA,1e3,A\n"Multi-line\nquestion, with comma",x,"y, z",w,v,D\n')
    t = data.load_mmlu("toy", str(src))
    assert t.questions[0].choices == ["0.50", "None", "NA", "1e3"]
    assert t.questions[1].question == "Multi-line\nquestion, with comma" and t.questions[1].answer == 3


@pytest.mark.parametrize("bad_row, fault", [
    ("Q3?,a,b,c,D\n", "expected 6 fields"),
    ("Q3?,a,b,c,d,E\n", "answer must be one of"),
    ('Q3?,"a"x,b,c,d,A\n', "malformed CSV"),
])
def test_malformed_mmlu_csv_names_file_and_line(tmp_path, bad_row, fault):
    src = _mmlu_dir(tmp_path, "Q1?,a,b,c,d,A\n\"Q2\nspans two lines\",a,b,c,d,B\n" + bad_row)
    with pytest.raises(TaskFormatError, match=rf"toy_test\.csv, line 4: {fault}"):
        data.load_mmlu("toy", str(src))


def test_missing_mmlu_folder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        data.load_mmlu("anatomy", str(tmp_path / "nowhere"))


def test_malformed_task_jsonl_names_file_and_line(tmp_path):
    tasks.save_task(data.make_fictional_news("tiny"), tmp_path / "t")
    qfile = tmp_path / "t" / "questions.jsonl"
    lines = qfile.read_text().splitlines()
    lines[2] = lines[2][:-5]
    qfile.write_text("\n".join(lines) + "\n")
    with pytest.raises(TaskFormatError, match=r"questions\.jsonl, line 3"):
        tasks.load_task(tmp_path / "t")
    with pytest.raises(TaskFormatError, match=r"questions\.jsonl, line 3"):
        data.load_questions(qfile)
    row = json.loads(lines[0])
    qfile.write_text(json.dumps(row) + "\n" + json.dumps({**row, "answer": 7}) + "\n")
    with pytest.raises(TaskFormatError, match=r"questions\.jsonl, line 2: .*answer index 7 out of range"):
        data.load_questions(qfile)


# --------------------------------------------------------------------------- offline errors

def test_hub_sources_fail_at_once_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(data.DataUnavailableError, match="HF_HUB_OFFLINE.*MMLU_DIR"):
        data.load_mmlu("anatomy", "hub")
    with pytest.raises(data.DataUnavailableError, match="FICTIONAL_KNOWLEDGE_DIR"):
        data.load_fictional_knowledge("hub")
    with pytest.raises(data.WikipediaUnavailableError, match="cannot reach Wikipedia.*local corpus.*load_documents"):
        data.fetch_wikipedia_kb(["Astronomy"])


def test_wikipedia_connection_error_says_how_to_bring_a_corpus():
    import requests

    class Down:
        def get(self, *a, **k):
            raise requests.ConnectionError("Failed to resolve 'en.wikipedia.org'")

    with pytest.raises(data.WikipediaUnavailableError, match="cannot reach Wikipedia.*Failed to resolve.*folder"):
        data.fetch_wikipedia_kb(["Astronomy"], session=Down())


# --------------------------------------------------------------------------- Wikipedia (recorded)

class _RecordedSession:
    """Replays tests/fixtures/wikipedia_api.json and records the requests it got."""

    def __init__(self):
        self.responses = json.loads((FIXTURES / "wikipedia_api.json").read_text(encoding="utf-8"))["responses"]
        self.calls = []

    def get(self, url, params=None, timeout=None, headers=None):
        self.calls.append(dict(params))
        key = f"{params['prop']}|{params['titles']}" + (f"|{params['plcontinue']}" if "plcontinue" in params else "")
        body = self.responses[key]

        class Resp:
            def raise_for_status(self):
                pass

            def json(self):
                return json.loads(json.dumps(body))

        return Resp()


def test_wikipedia_builder_against_recorded_response():
    s = _RecordedSession()
    docs = data.fetch_wikipedia_kb(["Astronomy"], session=s, max_linked=10, min_chars=100)
    assert [d.title for d in docs] == ["Astronomy", "Astrophysics", "Comet"]  # Galaxy missing, Saros a stub
    astro = docs[0].text
    assert "celestial objects" in astro and "saros" in astro  # sections' text kept
    for junk in ("==", "[1]", "[citation needed]", "displaystyle", "List of astronomers", "Some citation", "( )"):
        assert junk not in astro, junk
    assert "university site" not in docs[1].text  # External links dropped
    assert docs[0].doc_id == "wiki/Astronomy"
    # pagination followed, list/disambiguation pages skipped, one extract per request (an API limit)
    extract_titles = [c["titles"] for c in s.calls if c["prop"] == "extracts"]
    assert extract_titles == ["Astronomy", "Astrophysics", "Comet", "Galaxy", "Saros"]
    assert all(c["explaintext"] == "1" for c in s.calls if c["prop"] == "extracts")
    few = data.fetch_wikipedia_kb(["Astronomy"], session=_RecordedSession(), max_linked=2, min_chars=100)
    assert len(few) <= 3


# --------------------------------------------------------------------------- fictional knowledge

@pytest.fixture(scope="module")
def fk():
    need(FK_DIR)
    return data.load_fictional_knowledge(str(FK_DIR))


def test_fictional_knowledge_conversion(fk):
    raw = json.loads((FK_DIR / "fictional_knowledge.json").read_text(encoding="utf-8"))
    assert len(fk.docs) == 130 and len(fk.questions) == 1950
    assert collections.Counter(q.kind for q in fk.questions) == {"memorization": 650, "semantic": 650,
                                                                 "composition": 650}
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
    assert min(spread.values()) > 400


def test_fictional_knowledge_distractors_match_the_answer_kind(fk):
    years = [q for q in fk.questions if re.fullmatch(r"\d{4}", q.answer_text)]
    assert years and all(all(re.fullmatch(r"\d{3,4}s?", c) for c in q.choices) for q in years)
    words = [abs(len(c.split()) - len(q.answer_text.split())) for q in fk.questions for c in q.choices]
    assert np.mean(words) < 0.5


def test_fictional_knowledge_subsample_is_grouped_and_deterministic():
    need(FK_DIR)
    a = data.load_fictional_knowledge(str(FK_DIR), max_questions=60)
    b = data.load_fictional_knowledge(str(FK_DIR), max_questions=60)
    assert a.questions == b.questions and len(a.questions) == 60 and len(a.docs) == 130
    assert collections.Counter(q.kind for q in a.questions) == {"memorization": 20, "semantic": 20, "composition": 20}
    only = data.load_fictional_knowledge(str(FK_DIR), kinds=["composition"], max_questions=10)
    assert len(only.questions) == 10 and {q.kind for q in only.questions} == {"composition"}
    with pytest.raises(ValueError, match="kinds"):
        data.load_fictional_knowledge(str(FK_DIR), kinds=["paraphrase"])


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
    with pytest.warns(UserWarning) as rec:
        t = data.load_custom_task(d, q)
    msgs = " ".join(str(w.message) for w in rec)
    assert "latin1.txt: not UTF-8" in msgs and "empty.md: empty document" in msgs
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


# --------------------------------------------------------------------------- LLM question writing

def test_parse_json_reply_is_lenient():
    assert data.parse_json_reply('Sure!\n```json\n{"a": [1, 2,],}\n```\nDone') == {"a": [1, 2]}
    assert data.parse_json_reply('Here: [{"q": "x"}] and {"noise"}') == [{"q": "x"}]
    assert data.parse_json_reply('{"t": "a } inside"} trailing } junk') == {"t": "a } inside"}
    with pytest.raises(ValueError, match="no JSON"):
        data.parse_json_reply("I cannot help with that.")


def test_write_questions_keeps_the_two_most_specific():
    chunks = [Document("d1", "", "Orvane Dynamics opened a tidal station in Port Mell on 3 May 2031."),
              Document("d2", "", "Nothing useful here.")]

    def fake(prompt: str) -> str:
        if "Nothing useful" in prompt:
            return "Sorry, I can't."
        qs = [{"question": "What is a station?", "choices": ["a", "b", "c", "d"], "answer": "A", "specificity": 2},
              {"question": "Who opened the tidal station in Port Mell?", "choices": ["A. Orvane Dynamics", "B. Kell",
               "C. Mora", "D. Zed"], "answer": "A", "specificity": 9},
              {"question": "When did it open?", "choices": ["3 May 2031", "1 May", "2 May", "4 May"],
               "answer": 0, "specificity": "8"},
              {"question": "Broken", "choices": ["only", "two"], "answer": 0, "specificity": 10}]
        return "```json\n" + json.dumps({"questions": qs}) + ",\n```"

    with pytest.warns(UserWarning, match="d2: the model gave no usable questions"):
        out = data.write_questions(chunks, fake, progress=False)
    assert [q.id for q in out] == ["d1/gen0", "d1/gen1"]
    assert [q.answer_text for q in out] == ["Orvane Dynamics", "3 May 2031"]
    assert all(q.source_doc_ids == ["d1"] and len(q.choices) == 4 for q in out)
    assert data.write_questions(chunks[:1], fake, progress=False) == out  # seeded shuffle


# --------------------------------------------------------------------------- notebook entry point

def test_build_tasks_writes_and_skips_missing_data(tmp_path, capsys):
    out = data.build_tasks(["fictional_news", "mmlu", "fictional_knowledge"], tmp_path, size="tiny", seed=0,
                           mmlu_dir=str(tmp_path / "no_mmlu"), fk_dir=str(tmp_path / "no_fk"))
    assert list(out) == ["fictional_news"]
    printed = capsys.readouterr().out
    assert "skipping task mmlu" in printed and str(tmp_path / "no_mmlu") in printed
    assert "skipping task fictional_knowledge" in printed and str(tmp_path / "no_fk") in printed
    back = tasks.load_task(out["fictional_news"])
    assert back.questions == data.make_fictional_news("tiny").questions and back.meta["size"] == "tiny"
    with pytest.raises(ValueError, match="unknown task"):
        data.build_tasks(["mmlu_typo"], tmp_path)


def test_task_summary_counts_words_without_a_tokenizer():
    t = data.make_fictional_news("tiny")
    df = data.task_summary({"fictional_news": t})
    row = df.loc["fictional_news"]
    assert row["questions"] == 16 and row["docs"] == 8 and row["paraphrases"] == 80
    assert row["kb_tokens"] == sum(len(d.text.split()) for d in t.docs)
