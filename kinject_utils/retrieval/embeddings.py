"""Embeddings: a lazily loaded sentence embedder and an on-disk cache keyed by text hash.

A second run with unchanged data embeds nothing and never loads the embedder. The cache lives
in ``layout.embedding_cache_dir`` (``cache/embeddings/<embedder>/``), one ``.npz`` shard per write.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import layout
from ..device import resolve_device
from ..io import atomic_write_bytes, content_hash, slug
from ..log import get_logger, progress

__all__ = ["EmbedStats", "EmbeddingCache", "LazyEmbedder", "embed_texts"]

log = get_logger("retrieval")


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
            from ..models import load_embedder

            device = resolve_device(self.device)
            self._model = load_embedder(self.name, device=device)
            self.load_s = time.perf_counter() - t0
            log.info(f"loaded embedder {self.name} on {device} in {self.load_s:.1f}s")
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



class EmbeddingCache:
    """Embeddings on disk under ``<root>/cache/embeddings/<embedder>/``, keyed by text hash.

    Each write is one ``.npz`` shard (``keys``: 32-hex sha256 of embedder name + text, ``vecs``:
    float32), written atomically, so an interrupted run keeps what it finished and resumes.
    """

    def __init__(self, results_dir: str | Path, embedder: str) -> None:
        self.embedder = embedder
        self.dir = layout.embedding_cache_dir(results_dir, slug(embedder, max_len=60, unique=True))
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
        items = list(missing.items())
        _ = embedder.model  # load before the clock starts: load time is reported separately
        t0 = time.perf_counter()
        with progress(total=len(items), desc=desc, unit="text") as bar:
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

