"""Retrieval settings (notebook 04's parameters), validated on construction."""
from __future__ import annotations

import dataclasses

RETRIEVERS = ("dense", "bm25", "hybrid")
INDEXES = ("flat", "hnsw", "ivf")

__all__ = ["INDEXES", "RETRIEVERS", "RetrievalConfig"]


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
        from ..models import get_spec

        spec = get_spec(self.embedder)
        return spec.query_instruction if spec is not None else ""
