"""Retrieval, the RAG side of the study: passages, cached embeddings, FAISS, BM25, recall@K, prompts.

The paper embeds the knowledge base with bge-large-en, indexes it with FAISS, retrieves the top-K
chunks by dot product (K grid-searched over 0..5) and prepends them to the question: q~ = b_q || q.
This package does that, and measures it, one concern per module:

    config      RetrievalConfig (notebook 04's settings, validated)
    corpus      split_passages (documents -> passages on sentence boundaries)
    embeddings  LazyEmbedder, EmbeddingCache (a warm run embeds nothing and never loads the embedder)
    search      build_index (FAISS flat/hnsw/ivf), BM25, rrf_fuse
    recall      recall_at_k
    files       retrieval_dir, has_retrieval (the one owner of "did notebook 04 run for this task")
    context     build_context, load_contexts (notebook 05)
    run         retrieve_task, run_retrieval (notebook 04), recall_table, throughput_table

Heavy imports (torch, sentence-transformers) happen only when something must be embedded.
"""
from .config import INDEXES, RETRIEVERS, RetrievalConfig
from .context import SEPARATOR, ContextResult, build_context, load_contexts
from .corpus import Passage, split_passages
from .embeddings import EmbeddingCache, EmbedStats, LazyEmbedder, embed_texts
from .files import has_retrieval, retrieval_dir
from .recall import recall_at_k
from .run import (
    RetrievalRun,
    TaskRetrieval,
    recall_table,
    retrieve_task,
    run_retrieval,
    throughput_table,
)
from .search import BM25, build_index, dense_search, rrf_fuse

__all__ = [
    "BM25",
    "INDEXES",
    "RETRIEVERS",
    "SEPARATOR",
    "ContextResult",
    "EmbedStats",
    "EmbeddingCache",
    "LazyEmbedder",
    "Passage",
    "RetrievalConfig",
    "RetrievalRun",
    "TaskRetrieval",
    "build_context",
    "build_index",
    "dense_search",
    "embed_texts",
    "has_retrieval",
    "load_contexts",
    "recall_at_k",
    "recall_table",
    "retrieval_dir",
    "retrieve_task",
    "rrf_fuse",
    "run_retrieval",
    "split_passages",
    "throughput_table",
]
