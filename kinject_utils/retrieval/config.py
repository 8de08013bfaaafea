"""Retrieval settings (notebook 04's parameters), validated on construction."""
from __future__ import annotations

import dataclasses

from ..settings import check_choice, check_device, check_float, check_int

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
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for the embedder.
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
    passage_words: int = 80
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
        if not isinstance(self.embedder, str) or not self.embedder.strip():
            raise ValueError("RetrievalConfig.embedder must name an embedder, e.g. 'minilm-l6' "
                             "(embedded) or 'bge-large-en' (paper, needs the hub)")
        check_int(self, "k_max", 0, 100)
        check_choice(self, "retriever", RETRIEVERS)
        check_choice(self, "index", INDEXES, hint="'flat' is exact; 'hnsw'/'ivf' are approximate for large corpora")
        check_int(self, "passage_words", 0)
        if 0 < self.passage_words < 10:
            raise ValueError(f"RetrievalConfig.passage_words={self.passage_words} is too short to "
                             "hold a sentence; use >= 10 (e.g. 200) or 0 for whole documents")
        check_int(self, "batch_size", 1)
        check_device(self)
        if self.query_instruction is not None and not isinstance(self.query_instruction, str):
            raise ValueError("RetrievalConfig.query_instruction must be a string or None (registry default)")
        for name, lo in (("rrf_k", 0), ("fusion_depth", 1), ("hnsw_m", 2), ("ef_search", 1), ("ivf_nlist", 0),
                         ("ivf_nprobe", 1)):
            check_int(self, name, lo)
        check_float(self, "bm25_k1", 0)
        check_float(self, "bm25_b", 0, 1)

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
