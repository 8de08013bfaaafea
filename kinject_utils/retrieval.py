"""Retrieval, the RAG side of the study: passages, cached embeddings, FAISS, BM25, recall@K, prompts.

The paper embeds the knowledge base with bge-large-en, indexes it with FAISS, retrieves the top-K
chunks by dot product (K grid-searched over 0..5) and prepends them to the question: q~ = b_q || q.
This module does that, and measures it:

    split_passages    documents -> passages of at most N words, cut on sentence boundaries
    EmbeddingCache    normalised embeddings on disk, keyed by (embedder, text) hash: a second run
                      with unchanged data embeds nothing and never loads the embedder
    build_index       FAISS: exact inner product (``flat``) or approximate (``hnsw``, ``ivf``)
    BM25, rrf_fuse    a small numpy BM25 and reciprocal rank fusion with the dense ranking
    recall_at_k       hit rate and recall of each question's source documents, K = 1..K_MAX
    run_retrieval     notebook 04: every task -> files below, recall table, throughput log
    build_context     top-K passages -> context string that fits a token budget (cuts reported)
    load_contexts     notebook 05: the context string per question for top-k
    read_corpus       a folder of text files or a kb.jsonl, tolerating bad documents (warns, skips);
                      notebook 04 falls back to it when a task's kb.jsonl has a bad document

Files (under ``RESULTS_DIR``)::

    04_retrieval/<task>/passages.jsonl   {"passage_id", "doc_id", "text"}
    04_retrieval/<task>/retrieved.jsonl  {"id", "passage_ids", "doc_ids", "scores"}  top K_MAX,
                                          configured retriever, in task.questions order
    04_retrieval/<task>/manifest.json    settings + hashes of the knowledge base and questions
    04_recall.csv                        task, retriever, k, recall, hit_rate, n
    04_throughput.csv                    one row per task per run (appended): cold and warm runs
    cache/embeddings/<embedder>/*.npz    the embedding cache (safe to delete)

Heavy imports (torch, sentence-transformers) happen only when something must be embedded.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import re
import time
import warnings
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .io import atomic_write_bytes, atomic_write_text, content_hash, read_json, read_jsonl, write_json, write_jsonl
from .tasks import Document, Question, Task, TaskFormatError, load_task, task_dir

__all__ = [
    "RetrievalConfig", "CorpusWarning", "Passage", "split_passages", "read_corpus",
    "LazyEmbedder", "EmbeddingCache", "embed_texts", "build_index", "BM25", "rrf_fuse",
    "recall_at_k", "TaskRetrieval", "RetrievalRun", "retrieve_task", "run_retrieval",
    "ContextResult", "build_context", "load_contexts", "retrieval_dir", "has_retrieval",
    "recall_table", "throughput_table", "load_task_tolerant", "SEPARATOR", "RETRIEVERS", "INDEXES",
]

RETRIEVERS = ("dense", "bm25", "hybrid")
INDEXES = ("flat", "hnsw", "ivf")
SEPARATOR = "\n\n"  # between passages, and after the last one so the question starts on its own line
RECALL_CSV, THROUGHPUT_CSV = "04_recall.csv", "04_throughput.csv"
PASSAGES, RETRIEVED, MANIFEST = "passages.jsonl", "retrieved.jsonl", "manifest.json"


class CorpusWarning(UserWarning):
    """A document was skipped or repaired while indexing (empty, duplicate id, bad bytes)."""


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RetrievalConfig:
    """Retrieval settings; notebook 04 builds one from its parameters.

    Attributes:
        embedder: registry name (``minilm-l6``; paper ``bge-large-en``), local folder or hub id.
        k_max: retrieve the top ``k_max`` passages (paper grid K = 0..5; 0 retrieves nothing).
        retriever: what ``retrieved.jsonl`` holds: ``dense``, ``bm25`` or ``hybrid`` (RRF of both).
        index: ``flat`` (exact inner product), ``hnsw`` or ``ivf`` (approximate, large corpora).
        passage_words: passage length cap in words (title included); 0 keeps whole documents.
            150 words stay under MiniLM's 256 word pieces even with invented names (200 did not:
            22% of fictional-knowledge passages ran over and were embedded from their start only).
        include_title: start each passage with its document's title line.
        batch_size: embedder batch size.
        device: ``cpu``, ``cuda`` or ``auto`` for the embedder.
        query_instruction: prefix for queries; ``None`` takes the registry's (BGE v1 has one).
        compare: also compute recall for the other two retrievers (cheap once embedded).
        rrf_k: the constant in 1 / (rrf_k + rank); 60 as in Cormack et al. 2009.
        fusion_depth: ranks taken from each retriever before fusing.
        bm25_k1, bm25_b: BM25 term-saturation and length-normalisation constants.
        hnsw_m, ef_search: HNSW graph degree and search breadth.
        ivf_nlist, ivf_nprobe: IVF cells (0 = about sqrt(#passages)) and cells probed per query.
    """

    embedder: str = "minilm-l6"
    k_max: int = 5
    retriever: str = "dense"
    index: str = "flat"
    passage_words: int = 150
    include_title: bool = True
    batch_size: int = 32
    device: str = "cpu"
    query_instruction: str | None = None
    compare: bool = True
    rrf_k: int = 60
    fusion_depth: int = 100
    bm25_k1: float = 1.5
    bm25_b: float = 0.75
    hnsw_m: int = 32
    ef_search: int = 128
    ivf_nlist: int = 0
    ivf_nprobe: int = 8

    def __post_init__(self) -> None:
        def _int(name: str, lo: int, hi: int | None = None) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
                raise ValueError(f"RetrievalConfig.{name} must be an integer in {rng}, got {v!r}")

        if not isinstance(self.embedder, str) or not self.embedder.strip():
            raise ValueError("RetrievalConfig.embedder must name an embedder, e.g. 'minilm-l6' "
                             "(embedded) or 'bge-large-en' (paper, needs the hub)")
        _int("k_max", 0, 100)
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"RetrievalConfig.retriever must be one of {RETRIEVERS}, got {self.retriever!r}")
        if self.index not in INDEXES:
            raise ValueError(f"RetrievalConfig.index must be one of {INDEXES} ('flat' is exact; "
                             f"'hnsw'/'ivf' are approximate for large corpora), got {self.index!r}")
        _int("passage_words", 0)
        if 0 < self.passage_words < 10:
            raise ValueError(f"RetrievalConfig.passage_words={self.passage_words} is too short to "
                             "hold a sentence; use >= 10 (e.g. 200) or 0 for whole documents")
        _int("batch_size", 1)
        if self.device not in ("cpu", "cuda", "auto") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"RetrievalConfig.device must be 'cpu', 'cuda' or 'auto', got {self.device!r}")
        if self.query_instruction is not None and not isinstance(self.query_instruction, str):
            raise ValueError("RetrievalConfig.query_instruction must be a string or None (registry default)")
        _int("rrf_k", 0)
        _int("fusion_depth", 1)
        _int("hnsw_m", 2)
        _int("ef_search", 1)
        _int("ivf_nlist", 0)
        _int("ivf_nprobe", 1)
        for name in ("bm25_k1", "bm25_b"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"RetrievalConfig.{name} must be a number >= 0, got {v!r}")
        if self.bm25_b > 1:
            raise ValueError(f"RetrievalConfig.bm25_b must lie in 0..1, got {self.bm25_b}")

    @property
    def needs_dense(self) -> bool:
        """Whether embeddings are needed at all (a bm25-only run without comparison skips them)."""
        return self.retriever != "bm25" or self.compare

    def resolved_query_instruction(self) -> str:
        """The query prefix: the explicit one, else the registry's (BGE v1), else none."""
        if self.query_instruction is not None:
            return self.query_instruction
        from .models import get_spec

        spec = get_spec(self.embedder)
        return spec.query_instruction if spec is not None else ""


# --------------------------------------------------------------------------------------------
# Corpus: reading tolerant of bad input, splitting into passages
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Passage:
    """One retrievable unit: ``passage_id`` is ``<doc_id>#<n>`` (n counts from 0 in the document)."""

    passage_id: str
    doc_id: str
    text: str


def _warn(msg: str) -> None:
    warnings.warn(msg, CorpusWarning, stacklevel=3)


def _decode(raw: bytes, where: str) -> str:
    """UTF-8 text of ``raw``; bad bytes become U+FFFD with a warning naming ``where`` and the offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _warn(f"{where}: not valid UTF-8 (first bad byte at offset {exc.start}); undecodable bytes "
              "were replaced with U+FFFD and the rest of the document is indexed. Fix: re-save the "
              "file as UTF-8.")
        return raw.decode("utf-8", errors="replace")


def read_corpus(path: str | Path, suffixes: Sequence[str] = (".txt", ".md")) -> list[Document]:
    """Read a raw knowledge base, skipping or repairing bad documents with a warning for each.

    ``path`` is either a ``.jsonl`` file of ``{"doc_id", "text", "title"?}`` rows (the task's
    ``kb.jsonl`` format) or a folder whose text files (``suffixes``, recursively) are one document
    each (doc_id = relative path without suffix, title = file stem). Unlike ``tasks.load_task``,
    which refuses a malformed knowledge base, this indexes what it can:

    - an empty document (blank text) is skipped;
    - a duplicate doc_id keeps the first occurrence and skips the later one;
    - non-UTF-8 bytes are replaced with U+FFFD and the document is kept;
    - a line that is not a JSON object with a doc_id and a text is skipped.

    Each case emits a :class:`CorpusWarning` naming the document (and file/line).

    Example:
        >>> docs = read_corpus("my_notes/")  # doctest: +SKIP
        CorpusWarning: my_notes/b.md: empty document 'b' skipped
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus {path} does not exist; pass a folder of {'/'.join(suffixes)} "
                                "files or a .jsonl file with one {doc_id, title, text} per line")
    docs: list[Document] = []
    first_seen: dict[str, str] = {}

    def _add(doc_id: str, title: str, text: str, where: str) -> None:
        if doc_id in first_seen:
            _warn(f"{where}: duplicate doc_id {doc_id!r} (first seen at {first_seen[doc_id]}); "
                  "kept the first, skipped this one. Fix: give every document a unique id.")
            return
        if not text.strip():
            _warn(f"{where}: empty document {doc_id!r} skipped (no text to index).")
            return
        first_seen[doc_id] = where
        docs.append(Document(doc_id=doc_id, title=title, text=text))

    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise ValueError(f"corpus folder {path} holds no {'/'.join(suffixes)} files")
        for f in files:
            doc_id = f.relative_to(path).with_suffix("").as_posix()
            _add(doc_id, f.stem, _decode(f.read_bytes(), f"{f} (doc {doc_id!r})"), str(f))
    elif path.suffix.lower() == ".jsonl":
        for i, raw in enumerate(path.read_bytes().splitlines(), 1):
            if not raw.strip():
                continue
            where = f"{path}, line {i}"
            try:
                line, bad_at = raw.decode("utf-8"), -1
            except UnicodeDecodeError as exc:  # warn below, once the doc_id is known
                line, bad_at = raw.decode("utf-8", errors="replace"), exc.start
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                _warn(f"{where}: not valid JSON ({exc.msg}); line skipped. Fix or delete that line.")
                continue
            if bad_at >= 0:
                named = isinstance(row, dict) and isinstance(row.get("doc_id"), str)
                doc = f" (doc {row['doc_id']!r})" if named else ""
                _warn(f"{where}{doc}: not valid UTF-8 (first bad byte at offset {bad_at}); undecodable "
                      "bytes were replaced with U+FFFD and the rest of the document is indexed. Fix: "
                      "re-save the file as UTF-8.")
            if not isinstance(row, dict) or not isinstance(row.get("doc_id"), str) or not row["doc_id"] \
                    or not isinstance(row.get("text"), str):
                _warn(f"{where}: need a JSON object with a non-empty string 'doc_id' and a string "
                      "'text'; line skipped.")
                continue
            title = row.get("title") if isinstance(row.get("title"), str) else ""
            _add(row["doc_id"], title, row["text"], f"{where} (doc {row['doc_id']!r})")
    else:
        raise ValueError(f"corpus {path}: expected a folder of text files or a .jsonl file")
    return docs


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+|\n\s*\n")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _chunk_words(text: str, max_words: int) -> list[str]:
    """Greedy packing of whole sentences into chunks of at most ``max_words`` words; a sentence
    longer than that is cut at word boundaries."""
    chunks: list[str] = []
    cur: list[str] = []
    for sent in _sentences(text):
        words = sent.split()
        while len(words) > max_words:  # one over-long sentence: flush, then cut it in pieces
            if cur:
                chunks.append(" ".join(cur))
                cur = []
            chunks.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if cur and len(cur) + len(words) > max_words:
            chunks.append(" ".join(cur))
            cur = []
        cur.extend(words)
    if cur:
        chunks.append(" ".join(cur))
    return chunks


def split_passages(docs: Iterable[Document], passage_words: int = 150,
                   include_title: bool = True) -> list[Passage]:
    """Split documents into passages of at most ``passage_words`` words on sentence boundaries.

    Empty documents and repeated doc_ids are skipped with a :class:`CorpusWarning`. With
    ``include_title`` each passage starts with the title line (its words count towards the cap,
    so a retrieved passage is self-describing). ``passage_words=0`` keeps whole documents.

    Example:
        >>> [p.passage_id for p in split_passages([Document("d1", "", "A b. C d. E f.")], 10)]
        ['d1#0']
    """
    out: list[Passage] = []
    seen: set[str] = set()
    for d in docs:
        if d.doc_id in seen:
            _warn(f"duplicate doc_id {d.doc_id!r}: kept the first document, skipped this one")
            continue
        seen.add(d.doc_id)
        if not d.text.strip():
            _warn(f"empty document {d.doc_id!r} skipped (no text to index)")
            continue
        title = d.title.strip() if include_title else ""
        if passage_words == 0:
            chunks = [" ".join(d.text.split())]
        else:
            # the title line is repeated in every passage, so it eats into each passage's budget
            budget = max(passage_words // 2, passage_words - len(title.split()))
            chunks = _chunk_words(d.text, budget)
        for n, chunk in enumerate(chunks):
            out.append(Passage(f"{d.doc_id}#{n}", d.doc_id, f"{title}\n{chunk}" if title else chunk))
    return out


# --------------------------------------------------------------------------------------------
# Embeddings: lazy model, content-hash cache
# --------------------------------------------------------------------------------------------
class LazyEmbedder:
    """A sentence embedder loaded on first use (loading torch + the model costs seconds).

    Attributes:
        load_s: seconds spent loading (0 until loaded).
    """

    def __init__(self, name: str = "minilm-l6", device: str = "cpu", batch_size: int = 32) -> None:
        self.name, self.device, self.batch_size = name, device, batch_size
        self._model: Any = None
        self.load_s = 0.0
        self.n_over_length = 0  # texts longer than the embedder's max_seq_length (truncated by it)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        if self._model is None:
            t0 = time.perf_counter()
            from .models import load_embedder

            device = self.device
            if device == "auto":
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            self._model = load_embedder(self.name, device=device)
            self.load_s = time.perf_counter() - t0
            print(f"[04] loaded embedder {self.name} on {device} in {self.load_s:.1f}s")
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-norm float32 embeddings of ``texts`` (rows)."""
        m = self.model
        max_len = getattr(m, "max_seq_length", None)
        if max_len:
            enc = m.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)
            lengths = [len(ids) for ids in enc["input_ids"]]
            self.n_over_length += sum(n > max_len for n in lengths)
        vecs = m.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                        normalize_embeddings=True, show_progress_bar=False)
        vecs = np.asarray(vecs, dtype=np.float32)
        # normalise again in float32: the index scores by dot product, i.e. cosine for unit vectors
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("_")
    return f"{s[:60]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


class EmbeddingCache:
    """Embeddings on disk under ``<root>/cache/embeddings/<embedder>/``, keyed by text hash.

    Each write is one ``.npz`` shard (``keys``: 32-hex sha256 of embedder name + text, ``vecs``:
    float32), written atomically, so an interrupted run keeps what it finished and resumes.
    """

    def __init__(self, results_dir: str | Path, embedder: str) -> None:
        self.embedder = embedder
        self.dir = Path(results_dir) / "cache" / "embeddings" / _slug(embedder)
        self._mem: dict[str, np.ndarray] | None = None

    def key(self, text: str) -> str:
        h = hashlib.sha256(self.embedder.encode("utf-8"))
        h.update(b"\x00")
        h.update(text.encode("utf-8", errors="surrogatepass"))
        return h.hexdigest()[:32]

    def _load(self) -> dict[str, np.ndarray]:
        if self._mem is None:
            self._mem = {}
            for shard in sorted(self.dir.glob("*.npz")):
                try:
                    with np.load(shard, allow_pickle=False) as z:
                        keys, vecs = z["keys"], z["vecs"]
                except Exception as exc:  # noqa: BLE001 - a bad shard is recomputed, not fatal
                    warnings.warn(f"embedding cache shard {shard} unreadable ({exc}); ignored "
                                  "(its texts will be re-embedded)", stacklevel=2)
                    continue
                self._mem.update(zip(keys.tolist(), vecs))
        return self._mem

    def get(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        mem = self._load()
        return [mem.get(k) for k in keys]

    def put(self, keys: Sequence[str], vecs: np.ndarray) -> None:
        """Store ``vecs`` (rows aligned with ``keys``) as a new shard."""
        if not len(keys):
            return
        buf = io.BytesIO()
        np.savez(buf, keys=np.asarray(keys, dtype="U32"), vecs=np.asarray(vecs, dtype=np.float32))
        atomic_write_bytes(self.dir / f"{content_hash(list(keys), length=20)}.npz", buf.getvalue())
        self._load().update(zip(keys, np.asarray(vecs, dtype=np.float32)))


@dataclasses.dataclass
class EmbedStats:
    n: int = 0           # texts asked for
    n_cached: int = 0    # of those, found in the cache
    n_computed: int = 0  # distinct texts actually embedded (0 on a warm run)
    seconds: float = 0.0  # time spent embedding (model load excluded)


def embed_texts(texts: Sequence[str], embedder: LazyEmbedder, cache: EmbeddingCache,
                desc: str = "embedding", shard_size: int = 256) -> tuple[np.ndarray, EmbedStats]:
    """Embeddings for ``texts`` (rows aligned), from the cache where present.

    Only texts missing from the cache are embedded (the embedder is loaded only then), in shards
    of ``shard_size`` written as they finish, so an interrupted run resumes where it stopped.
    """
    keys = [cache.key(t) for t in texts]
    found = cache.get(keys)
    missing: dict[str, str] = {}
    for k, t, v in zip(keys, texts, found):
        if v is None:
            missing.setdefault(k, t)
    stats = EmbedStats(n=len(texts), n_cached=sum(v is not None for v in found))
    if missing:
        from tqdm import tqdm  # plain text bars: tqdm.auto wants ipywidgets inside papermill

        items = list(missing.items())
        _ = embedder.model  # load before the clock starts: load time is reported separately
        t0 = time.perf_counter()
        with tqdm(total=len(items), desc=desc, unit="text") as bar:
            for s in range(0, len(items), shard_size):
                part = items[s:s + shard_size]
                cache.put([k for k, _ in part], embedder.encode([t for _, t in part]))
                bar.update(len(part))
        stats.seconds = time.perf_counter() - t0
        stats.n_computed = len(items)
        found = cache.get(keys)
    if not texts:
        return np.zeros((0, 0), dtype=np.float32), stats
    return np.stack(found).astype(np.float32, copy=False), stats


# --------------------------------------------------------------------------------------------
# Search: FAISS (dense), BM25 (sparse), reciprocal rank fusion
# --------------------------------------------------------------------------------------------
def build_index(vecs: np.ndarray, kind: str = "flat", *, hnsw_m: int = 32, ef_search: int = 128,
                ivf_nlist: int = 0, ivf_nprobe: int = 8) -> Any:
    """A FAISS inner-product index over unit vectors (so scores are cosine similarities).

    ``flat`` is exact. ``hnsw`` (graph) and ``ivf`` (k-means cells; ``ivf_nlist=0`` picks about
    sqrt(n)) are approximate and pay off only for large corpora (>~100k passages).
    """
    import faiss

    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    n, d = vecs.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
    elif kind == "ivf":
        nlist = ivf_nlist or max(1, int(round(math.sqrt(n))))
        nlist = min(nlist, n)  # k-means needs at least one point per cell
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vecs)
        index.nprobe = min(ivf_nprobe, nlist)
    else:
        raise ValueError(f"index kind must be one of {INDEXES}, got {kind!r}")
    index.add(vecs)
    return index


def _dense_search(index: Any, qvecs: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    scores, idx = index.search(np.ascontiguousarray(qvecs, dtype=np.float32), depth)
    return scores, idx  # approximate indexes may return -1 for missing slots; callers drop them


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, ties broken by lower index (deterministic)."""
    if k >= len(scores):
        cand = np.arange(len(scores))
    else:
        cand = np.argpartition(-scores, k - 1)[:k]
        # include every index tied with the k-th score so the tie-break below is by index
        cut = scores[cand].min()
        cand = np.flatnonzero(scores >= cut)
    order = np.lexsort((cand, -scores[cand]))
    return cand[order][:k]


_TOKEN = re.compile(r"\w+", re.UNICODE)


def _bm25_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class BM25:
    """Okapi BM25 over passages, in numpy (postings per term with precomputed weights).

    score(q, p) = sum over distinct query terms t in p of
    idf(t) * tf(t,p) * (k1 + 1) / (tf(t,p) + k1 * (1 - b + b * |p| / avg|p|)),
    idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))  (Lucene's, never negative).

    Example:
        >>> BM25(["red fox", "blue sky"]).search(["fox"], 1)[1].tolist()
        [[0]]
    """

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.n = len(texts)
        toks = [_bm25_tokens(t) for t in texts]
        lengths = np.array([len(t) for t in toks], dtype=np.float64)
        avg = lengths.mean() if self.n and lengths.mean() > 0 else 1.0
        norm = k1 * (1.0 - b + b * lengths / avg)
        post: dict[str, tuple[list[int], list[int]]] = {}
        for i, t in enumerate(toks):
            for term, tf in Counter(t).items():
                ids, tfs = post.setdefault(term, ([], []))
                ids.append(i)
                tfs.append(tf)
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term, (ids, tfs) in post.items():
            ids_a, tf_a = np.array(ids), np.array(tfs, dtype=np.float64)
            idf = math.log(1.0 + (self.n - len(ids) + 0.5) / (len(ids) + 0.5))
            self.postings[term] = (ids_a, idf * tf_a * (k1 + 1.0) / (tf_a + norm[ids_a]))

    def scores(self, query: str) -> np.ndarray:
        s = np.zeros(self.n, dtype=np.float64)
        for term in set(_bm25_tokens(query)):
            hit = self.postings.get(term)
            if hit is not None:
                s[hit[0]] += hit[1]
        return s

    def search(self, queries: Sequence[str], depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices), each ``(len(queries), min(depth, n))``, best first."""
        depth = min(depth, self.n)
        out_s = np.zeros((len(queries), depth), dtype=np.float32)
        out_i = np.zeros((len(queries), depth), dtype=np.int64)
        for r, q in enumerate(queries):
            s = self.scores(q)
            top = _topk(s, depth)
            out_i[r], out_s[r] = top, s[top]
        return out_s, out_i


def rrf_fuse(rankings: Sequence[np.ndarray], depth: int, k: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal rank fusion: score(p) = sum over rankings of 1 / (k + rank(p)), rank from 1.

    Args:
        rankings: arrays ``(n_queries, depth_i)`` of passage indices, best first (-1 = empty slot).
        depth: how many fused results to keep per query.
        k: the RRF constant (60 in Cormack, Clarke & Buettcher 2009).

    Returns:
        (scores, indices), each ``(n_queries, depth)``; rows shorter than ``depth`` are padded
        with index -1 and score 0. Ties go to the passage ranked higher by the first ranking.
    """
    nq = rankings[0].shape[0]
    out_s = np.zeros((nq, depth), dtype=np.float32)
    out_i = np.full((nq, depth), -1, dtype=np.int64)
    for r in range(nq):
        fused: dict[int, float] = {}
        order: dict[int, int] = {}
        for ranking in rankings:
            for rank, p in enumerate(ranking[r].tolist(), 1):
                if p < 0:
                    continue
                fused[p] = fused.get(p, 0.0) + 1.0 / (k + rank)
                order.setdefault(p, len(order))
        best = sorted(fused, key=lambda p: (-fused[p], order[p]))[:depth]
        out_i[r, :len(best)] = best
        out_s[r, :len(best)] = [fused[p] for p in best]
    return out_s, out_i


# --------------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------------
def recall_at_k(retrieved_doc_ids: Sequence[Sequence[str]], gold_doc_ids: Sequence[Sequence[str]],
                k_max: int) -> list[dict[str, Any]]:
    """Hit rate and recall of the source documents among the top-K retrieved, K = 1..k_max.

    Only questions with at least one source document count (``n``). hit_rate: share of questions
    with any source document in the top K; recall: mean share of each question's source
    documents found in the top K (equal to hit_rate when every question has one source).

    Example:
        >>> recall_at_k([["a", "b"]], [["b"]], 2)
        [{'k': 1, 'recall': 0.0, 'hit_rate': 0.0, 'n': 1}, {'k': 2, 'recall': 1.0, 'hit_rate': 1.0, 'n': 1}]
    """
    pairs = [(list(r), set(g)) for r, g in zip(retrieved_doc_ids, gold_doc_ids) if g]
    rows = []
    for k in range(1, k_max + 1):
        if not pairs:
            break
        hits, rec = 0, 0.0
        for got, gold in pairs:
            found = gold & set(got[:k])
            hits += bool(found)
            rec += len(found) / len(gold)
        rows.append({"k": k, "recall": rec / len(pairs), "hit_rate": hits / len(pairs), "n": len(pairs)})
    return rows


# --------------------------------------------------------------------------------------------
# Per task and per study
# --------------------------------------------------------------------------------------------
def load_task_tolerant(folder: str | Path) -> Task:
    """``tasks.load_task``, except that a bad knowledge base is read with :func:`read_corpus`.

    ``load_task`` refuses a kb.jsonl with a duplicate doc_id, bad bytes or a malformed row. For
    retrieval that is one bad document, not a reason to index nothing: the knowledge base is then
    read document by document (a :class:`CorpusWarning` names each one skipped or repaired) and
    the questions are loaded as usual (a bad question still raises).
    """
    folder = Path(folder)
    try:
        return load_task(folder)
    except ValueError as exc:  # TaskFormatError, and UnicodeDecodeError (a ValueError too)
        problem = str(exc).splitlines()[0][:300]
    questions = []
    fields = {f.name for f in dataclasses.fields(Question)}
    for i, row in enumerate(read_jsonl(folder / "questions.jsonl"), 1):  # a bad question raises
        try:
            questions.append(Question(**{k: v for k, v in row.items() if k in fields}))
        except (TypeError, ValueError) as exc:
            raise TaskFormatError(f"{folder / 'questions.jsonl'}, line {i}: {exc}") from None
    # the questions are fine, so the knowledge base (or an optional file retrieval does not read) is not
    print(f"[04] {folder.name}: load_task refused the task ({problem}); indexing the documents of "
          "kb.jsonl that can be read, with a warning for each one that cannot")
    kb = folder / "kb.jsonl"
    docs = read_corpus(kb) if kb.exists() else []
    meta = read_json(folder / "task.json") if (folder / "task.json").exists() else {}
    return Task(name=meta.get("name", folder.name), questions=questions, docs=docs, meta=meta)


def retrieval_dir(results_dir: str | Path, task: str) -> Path:
    """``{results_dir}/04_retrieval/<task>``."""
    return Path(results_dir) / "04_retrieval" / task


def has_retrieval(results_dir: str | Path, task: str) -> bool:
    """Whether notebook 04 wrote retrieval results for ``task`` (MMLU offline has none)."""
    d = retrieval_dir(results_dir, task)
    return (d / RETRIEVED).exists() and (d / PASSAGES).exists()


def _kb_hash(docs: Sequence[Document]) -> str:
    return content_hash([[d.doc_id, d.title, d.text] for d in docs])


@dataclasses.dataclass
class TaskRetrieval:
    """What :func:`retrieve_task` did for one task (timings in seconds)."""

    task: str
    n_passages: int = 0
    n_queries: int = 0
    recall_rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    passage_embed: EmbedStats = dataclasses.field(default_factory=EmbedStats)
    query_embed: EmbedStats = dataclasses.field(default_factory=EmbedStats)
    search_s: dict[str, float] = dataclasses.field(default_factory=dict)
    embedder_load_s: float = 0.0
    wall_s: float = 0.0
    skipped: str = ""


def _rank_all(passages: list[Passage], queries: list[str], cfg: RetrievalConfig,
              pvecs: np.ndarray | None, qvecs: np.ndarray | None,
              out: TaskRetrieval) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Rankings (scores, indices) per retriever: the configured one, plus the rest if comparing."""
    n = len(passages)
    want = set(RETRIEVERS) if cfg.compare else {cfg.retriever}
    if "hybrid" in want:
        want |= {"dense", "bm25"}
    # fusion needs deeper rankings than K_MAX: a passage ranked 20th by both can win
    depth = min(n, max(cfg.k_max, 1, cfg.fusion_depth if "hybrid" in want else 0))
    ranked: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if "dense" in want:
        t0 = time.perf_counter()
        index = build_index(pvecs, cfg.index, hnsw_m=cfg.hnsw_m, ef_search=max(cfg.ef_search, depth),
                            ivf_nlist=cfg.ivf_nlist, ivf_nprobe=cfg.ivf_nprobe)
        ranked["dense"] = _dense_search(index, qvecs, depth)
        out.search_s["dense"] = time.perf_counter() - t0
    if "bm25" in want:
        t0 = time.perf_counter()
        ranked["bm25"] = BM25([p.text for p in passages], cfg.bm25_k1, cfg.bm25_b).search(queries, depth)
        out.search_s["bm25"] = time.perf_counter() - t0
    if "hybrid" in want:
        t0 = time.perf_counter()
        ranked["hybrid"] = rrf_fuse([ranked["dense"][1], ranked["bm25"][1]], depth, cfg.rrf_k)
        # fusion reuses both rankings, so its cost is theirs plus the merge
        out.search_s["hybrid"] = time.perf_counter() - t0 + out.search_s["dense"] + out.search_s["bm25"]
    return ranked


def retrieve_task(task: Task, cfg: RetrievalConfig, results_dir: str | Path,
                  embedder: LazyEmbedder | None = None) -> TaskRetrieval:
    """Index one task's knowledge base, retrieve for every question, write its files.

    Writes ``04_retrieval/<task>/{passages.jsonl, retrieved.jsonl, manifest.json}`` (see the module
    docstring) and returns recall rows (for every retriever compared, when questions carry
    ``source_doc_ids``) and timings. A task without documents is skipped with a reason.
    """
    t_start = time.perf_counter()
    out = TaskRetrieval(task=task.name, n_queries=len(task.questions))
    passages = split_passages(task.docs, cfg.passage_words, cfg.include_title)
    out.n_passages = len(passages)
    if not passages:
        out.skipped = ("no knowledge base (kb.jsonl is missing or empty): nothing to retrieve"
                       if not task.docs else "every document is empty: nothing to index")
        out.wall_s = time.perf_counter() - t_start
        return out
    if not task.questions:
        out.skipped = "no questions"
        out.wall_s = time.perf_counter() - t_start
        return out
    if cfg.k_max > len(passages):
        print(f"[04] {task.name}: K_MAX={cfg.k_max} > {len(passages)} passages; "
              f"retrieving all {len(passages)}")
    k_keep = min(cfg.k_max, len(passages))
    instr = cfg.resolved_query_instruction()
    queries = [q.question for q in task.questions]
    pvecs = qvecs = None
    if cfg.needs_dense:
        embedder = embedder or LazyEmbedder(cfg.embedder, cfg.device, cfg.batch_size)
        cache = EmbeddingCache(results_dir, cfg.embedder)
        load_before = embedder.load_s
        pvecs, out.passage_embed = embed_texts([p.text for p in passages], embedder, cache,
                                               desc=f"{task.name} passages")
        qvecs, out.query_embed = embed_texts([instr + q for q in queries], embedder, cache,
                                             desc=f"{task.name} queries")
        out.embedder_load_s = embedder.load_s - load_before
    ranked = _rank_all(passages, queries, cfg, pvecs, qvecs, out)

    gold = [q.source_doc_ids for q in task.questions]
    for name in RETRIEVERS:
        if name not in ranked or (not cfg.compare and name != cfg.retriever):
            continue
        idx = ranked[name][1]
        docs = [[passages[i].doc_id for i in row if i >= 0] for row in idx.tolist()]
        for row in recall_at_k(docs, gold, cfg.k_max):
            out.recall_rows.append({"task": task.name, "retriever": name, **row})

    scores, idx = ranked[cfg.retriever]
    rows = []
    for q, s_row, i_row in zip(task.questions, scores.tolist(), idx.tolist()):
        keep = [(s, i) for s, i in zip(s_row, i_row) if i >= 0][:k_keep]
        rows.append({"id": q.id, "passage_ids": [passages[i].passage_id for _, i in keep],
                     "doc_ids": [passages[i].doc_id for _, i in keep],
                     "scores": [round(float(s), 6) for s, _ in keep]})
    d = retrieval_dir(results_dir, task.name)
    write_jsonl(d / PASSAGES, [dataclasses.asdict(p) for p in passages])
    write_jsonl(d / RETRIEVED, rows)
    write_json(d / MANIFEST, {
        "task": task.name, "embedder": cfg.embedder, "retriever": cfg.retriever, "index": cfg.index,
        "k_max": cfg.k_max, "passage_words": cfg.passage_words, "include_title": cfg.include_title,
        "query_instruction": instr, "n_passages": len(passages), "n_questions": len(task.questions),
        "kb_hash": _kb_hash(task.docs), "questions_hash": content_hash([q.id for q in task.questions]),
    })
    out.wall_s = time.perf_counter() - t_start
    return out


@dataclasses.dataclass
class RetrievalRun:
    """What :func:`run_retrieval` did: per-task results, the recall rows it saved, its timing."""

    tasks: list[TaskRetrieval]
    recall_rows: list[dict[str, Any]]
    throughput_rows: list[dict[str, Any]]
    skipped: dict[str, str]
    wall_s: float
    warm: bool  # nothing had to be embedded (and the embedder was never loaded)


_THROUGHPUT_COLS = ["run_at", "task", "embedder", "index", "retriever", "cache", "n_passages",
                    "passages_embedded", "passage_embed_s", "passages_per_s", "n_queries",
                    "queries_embedded", "query_embed_s", "search_s", "queries_per_s",
                    "bm25_queries_per_s", "hybrid_queries_per_s", "embedder_load_s", "task_wall_s",
                    "run_wall_s"]


def _rate(n: int, s: float) -> float | str:
    return round(n / s, 1) if n and s > 0 else ""


def _throughput_row(r: TaskRetrieval, cfg: RetrievalConfig, run_at: str) -> dict[str, Any]:
    pe, qe = r.passage_embed, r.query_embed
    hits, computed = pe.n_cached + qe.n_cached, pe.n_computed + qe.n_computed
    cache = "warm" if computed == 0 else ("cold" if hits == 0 else "partial")
    search = r.search_s.get(cfg.retriever, 0.0)
    # "queries answered per second": embedding the query (when not cached) plus the search
    return {"run_at": run_at, "task": r.task, "embedder": cfg.embedder if cfg.needs_dense else "",
            "index": cfg.index, "retriever": cfg.retriever, "cache": cache if cfg.needs_dense else "",
            "n_passages": r.n_passages, "passages_embedded": pe.n_computed,
            "passage_embed_s": round(pe.seconds, 3), "passages_per_s": _rate(pe.n_computed, pe.seconds),
            "n_queries": r.n_queries, "queries_embedded": qe.n_computed, "query_embed_s": round(qe.seconds, 3),
            "search_s": round(search, 4), "queries_per_s": _rate(r.n_queries, qe.seconds + search),
            "bm25_queries_per_s": _rate(r.n_queries, r.search_s.get("bm25", 0.0)),
            "hybrid_queries_per_s": _rate(r.n_queries, qe.seconds + r.search_s.get("hybrid", 0.0)),
            "embedder_load_s": round(r.embedder_load_s, 2), "task_wall_s": round(r.wall_s, 2)}


def _write_csv(path: Path, rows: list[dict[str, Any]], cols: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def run_retrieval(results_dir: str | Path, tasks: Sequence[str], cfg: RetrievalConfig) -> RetrievalRun:
    """Notebook 04: retrieve for every task that notebook 01 wrote; save recall and throughput.

    A task folder that does not exist, or a task without a knowledge base (MMLU offline), is
    skipped with a printed reason. Writes ``04_recall.csv`` (this run's tasks) and appends one row
    per task to ``04_throughput.csv`` so cold and warm runs stay side by side. One embedder is
    shared by all tasks and loaded only if something is missing from the cache.
    """
    t0 = time.perf_counter()
    results_dir = Path(results_dir)
    run_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    embedder = LazyEmbedder(cfg.embedder, cfg.device, cfg.batch_size)
    done: list[TaskRetrieval] = []
    skipped: dict[str, str] = {}
    for name in tasks:
        folder = task_dir(results_dir, name)
        if not folder.exists():
            skipped[name] = f"no task folder {folder}; run notebook 01 first"
            print(f"[04] {name}: SKIPPED - {skipped[name]}")
            continue
        r = retrieve_task(load_task_tolerant(folder), cfg, results_dir, embedder)
        if r.skipped:
            skipped[name] = r.skipped
            print(f"[04] {name}: SKIPPED - {r.skipped}")
            continue
        if not r.recall_rows:
            print(f"[04] {name}: no question names its source document: recall not computed")
        print(f"[04] {name}: {r.n_passages} passages, {r.n_queries} queries; embedded "
              f"{r.passage_embed.n_computed} passages + {r.query_embed.n_computed} queries "
              f"({'cache hit' if r.passage_embed.n_computed + r.query_embed.n_computed == 0 else 'cache miss'}) "
              f"in {r.wall_s:.2f}s")
        done.append(r)
    if embedder.n_over_length:
        print(f"[04] note: {embedder.n_over_length} texts were longer than the embedder's "
              f"max_seq_length and were embedded from their start only (lower PASSAGE_WORDS to avoid)")
    recall_rows = [row for r in done for row in r.recall_rows]
    _write_csv(results_dir / RECALL_CSV, recall_rows, ["task", "retriever", "k", "recall", "hit_rate", "n"])
    wall = time.perf_counter() - t0
    tp_rows = [{**_throughput_row(r, cfg, run_at), "run_wall_s": round(wall, 2)} for r in done]
    if tp_rows:
        _write_csv(results_dir / THROUGHPUT_CSV, _read_csv(results_dir / THROUGHPUT_CSV) + tp_rows,
                   _THROUGHPUT_COLS)
    return RetrievalRun(tasks=done, recall_rows=recall_rows, throughput_rows=tp_rows, skipped=skipped,
                        wall_s=wall, warm=not embedder.loaded)


def recall_table(rows: Sequence[dict[str, Any]], metric: str = "recall") -> str:
    """A plain-text table: one line per (task, k), one column per retriever.

    Example:
        >>> print(recall_table([{"task": "t", "retriever": "dense", "k": 1, "recall": 0.5, "hit_rate": 0.5, "n": 2}]))
        task  k  dense   (recall, n=2)
        t     1  0.500
    """
    if not rows:
        return "(no recall rows: no task with a knowledge base and source_doc_ids)"
    rets = [r for r in RETRIEVERS if any(row["retriever"] == r for row in rows)]
    cell = {(row["task"], int(row["k"]), row["retriever"]): float(row[metric]) for row in rows}
    keys = sorted({(row["task"], int(row["k"])) for row in rows}, key=lambda x: (str(x[0]), x[1]))
    ns = sorted({int(row["n"]) for row in rows})
    tw = max(4, *(len(str(t)) for t, _ in keys))
    head = f"{'task':<{tw}}  k  " + "  ".join(f"{r:<6}" for r in rets)
    lines = [f"{head.rstrip()}   ({metric}, n={'/'.join(map(str, ns))})"]
    for t, k in keys:
        vals = "  ".join(f"{cell[(t, k, r)]:.3f} " if (t, k, r) in cell else "   -   " for r in rets)
        lines.append(f"{t:<{tw}}  {k}  {vals}".rstrip())
    return "\n".join(lines)


def throughput_table(results_dir: str | Path, last: int = 6) -> str:
    """The last ``last`` rows of ``04_throughput.csv`` as text (cold and warm runs side by side)."""
    rows = _read_csv(Path(results_dir) / THROUGHPUT_CSV)[-last:]
    if not rows:
        return "(no throughput rows yet)"
    cols = ["run_at", "task", "cache", "n_passages", "passages_embedded", "passages_per_s", "n_queries",
            "queries_embedded", "queries_per_s", "embedder_load_s", "task_wall_s", "run_wall_s"]
    width = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(f"{c:<{width[c]}}" for c in cols)]
    lines += ["  ".join(f"{str(r.get(c, '')):<{width[c]}}" for c in cols) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


# --------------------------------------------------------------------------------------------
# Prompt assembly: q~ = b_q || q within a token budget
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ContextResult:
    """A context string b_q ready to prepend to the question.

    Attributes:
        text: passages joined by ``SEPARATOR`` and ending with it ("" when nothing fits or k=0).
        n_tokens: tokens in ``text`` (no special tokens), <= the budget.
        n_passages_used: passages kept, a cut one included.
        truncated: True when a passage was cut or dropped to fit.
        n_passages_given: passages offered.
        n_tokens_untruncated: tokens the full context would have taken.
        passage_cut: True when the last passage kept was cut short.
    """

    text: str
    n_tokens: int
    n_passages_used: int
    truncated: bool
    n_passages_given: int = 0
    n_tokens_untruncated: int = 0
    passage_cut: bool = False


def _count(tokenizer: Any, text: str) -> int:
    if not text:
        return 0
    try:
        return len(tokenizer.encode(text, add_special_tokens=False))
    except TypeError:  # a tokenizer without the keyword
        return len(tokenizer.encode(text))


def _cut(tokenizer: Any, text: str, n: int) -> str:
    """The longest prefix of ``text`` that is about ``n`` tokens, cut in the original string."""
    if n <= 0:
        return ""
    try:  # fast (Rust) tokenizers give character offsets: cut the original text, lossless
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        return text if n >= len(offsets) else text[:offsets[n - 1][1]]
    except (TypeError, KeyError, NotImplementedError, ValueError):
        ids = tokenizer.encode(text, add_special_tokens=False)
        return text if n >= len(ids) else tokenizer.decode(ids[:n])


def _join(parts: Sequence[str]) -> str:
    return SEPARATOR.join(parts) + SEPARATOR if parts else ""


def build_context(passages: Sequence[str], tokenizer: Any, max_tokens: int) -> ContextResult:
    """Join the top-K passages (best first) into a context that fits ``max_tokens`` tokens.

    Format: ``p1 + "\\n\\n" + p2 + ... + pK + "\\n\\n"``, so the question follows on its own line
    (q~ = b_q || q). When the whole does not fit, the lowest-ranked text goes first: passages
    are kept whole in rank order, the first one that does not fit is cut at a token boundary
    (the longest prefix that fits) and the rest are dropped. Tokens are counted without special
    tokens; a tokenizer may merge the last separator with the question's first token, so leave a
    token or two of margin in ``max_tokens``.

    Args:
        passages: passage texts, best first.
        tokenizer: a Hugging Face tokenizer (or any object with ``encode``/``decode``).
        max_tokens: the token budget for the context alone (>= 0).

    Example:
        >>> class WS:  # a whitespace tokenizer, for the example
        ...     def encode(self, t, add_special_tokens=False): return t.split(" ")
        ...     def decode(self, ids): return " ".join(ids)
        >>> build_context(["a b c", "d e f"], WS(), 100).text
        'a b c\\n\\nd e f\\n\\n'
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise ValueError(f"max_tokens must be an integer >= 0, got {max_tokens!r}")
    passages = [p.strip() for p in passages if p and p.strip()]
    full = _join(passages)
    n_full = _count(tokenizer, full)
    if n_full <= max_tokens:
        return ContextResult(full, n_full, len(passages), False, len(passages), n_full)
    used: list[str] = []
    for p in passages:
        if _count(tokenizer, _join(used + [p])) <= max_tokens:
            used.append(p)
            continue
        # binary search for the longest token prefix of p that still fits with the separators
        lo, hi = 0, _count(tokenizer, p)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _count(tokenizer, _join(used + [_cut(tokenizer, p, mid)])) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        part = _cut(tokenizer, p, lo).strip()
        if part:
            used.append(part)
        text = _join(used)
        return ContextResult(text, _count(tokenizer, text), len(used), True, len(passages), n_full, bool(part))
    raise AssertionError("unreachable: the full context did not fit, so some passage cannot")


def load_contexts(results_dir: str | Path, task: Task | str, k: int, tokenizer: Any,
                  max_tokens: int) -> tuple[list[str], dict[str, Any]]:
    """Context strings for top-``k`` retrieval, one per question in ``task.questions`` order.

    Reads what notebook 04 wrote for ``task`` (a :class:`Task`, or a task name whose folder under
    ``01_tasks/`` is loaded) and assembles each context with :func:`build_context`. Truncation is
    counted in the returned stats and printed.

    Returns:
        (contexts, stats) with stats keys: task, k, max_tokens, n_questions, n_truncated,
        n_passages_cut, n_passages_dropped (whole passages left out), mean_tokens,
        max_tokens_used.

    Raises:
        FileNotFoundError: notebook 04 has not written results for this task.
        ValueError: ``k`` exceeds the K_MAX notebook 04 ran with, or the task changed since.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}")
    if isinstance(task, str):
        task = load_task_tolerant(task_dir(results_dir, task))
    d = retrieval_dir(results_dir, task.name)
    if not has_retrieval(results_dir, task.name):
        raise FileNotFoundError(f"no retrieval results for task {task.name!r} in {d}; run notebook 04 "
                                "(a task without a knowledge base, such as MMLU offline, has none)")
    man = read_json(d / MANIFEST) if (d / MANIFEST).exists() else {}
    if man and man.get("kb_hash") != _kb_hash(task.docs):
        raise ValueError(f"{d} was built from a different knowledge base than task {task.name!r} "
                         "has now; re-run notebook 04")
    if k > int(man.get("k_max", k)):
        raise ValueError(f"k={k} but notebook 04 retrieved only the top {man['k_max']} for "
                         f"{task.name!r}; re-run notebook 04 with K_MAX >= {k}")
    text_of = {r["passage_id"]: r["text"] for r in read_jsonl(d / PASSAGES)}
    got = {r["id"]: r["passage_ids"] for r in read_jsonl(d / RETRIEVED)}
    missing = [q.id for q in task.questions if q.id not in got]
    if missing:
        raise ValueError(f"{d / RETRIEVED} has no row for question(s) {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}; the task changed since notebook 04 ran: re-run it")
    contexts, n_trunc, n_cut, n_drop, toks = [], 0, 0, 0, []
    for q in task.questions:
        res = build_context([text_of[p] for p in got[q.id][:k]], tokenizer, max_tokens)
        contexts.append(res.text)
        toks.append(res.n_tokens)
        if res.truncated:
            n_trunc += 1
            n_cut += res.passage_cut
            n_drop += res.n_passages_given - res.n_passages_used
    stats = {"task": task.name, "k": k, "max_tokens": max_tokens, "n_questions": len(contexts),
             "n_truncated": n_trunc, "n_passages_cut": n_cut, "n_passages_dropped": n_drop,
             "mean_tokens": float(np.mean(toks)) if toks else 0.0, "max_tokens_used": max(toks, default=0)}
    if n_trunc:
        print(f"[04] {task.name}, k={k}: {n_trunc}/{len(contexts)} contexts truncated to fit "
              f"{max_tokens} tokens ({n_cut} passages cut, {n_drop} dropped)")
    return contexts, stats
