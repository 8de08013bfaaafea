"""Retrieval throughput on this machine: embedding, FAISS (exact vs approximate), BM25.

    python scripts/bench_retrieval.py                      # ~1 min on 2 CPU cores
    python scripts/bench_retrieval.py --n-vectors 200000   # approximate indexes pay off here
    python scripts/bench_retrieval.py --n-docs 0           # FAISS and BM25 only, no embedder

Embeds passages of the fictional-knowledge corpus (found as notebook 01 finds it: KINJECT_DATA or
the kinject cache, never downloaded here; a synthetic corpus if neither has it) with the configured
embedder, then times FAISS search over ``--n-vectors`` random unit vectors of the embedder's dimension
for each index kind, with the agreement of the approximate ones with the exact one (top-1 and top-10
overlap). Prints one table; ``--out`` saves it.
Numbers are wall-clock: on a shared machine note the load average printed with them.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from kinject_utils.io import atomic_write_text
from kinject_utils.retrieval import BM25, LazyEmbedder, build_index, split_passages
from kinject_utils.tasks import Document


def _fk_file() -> Path | None:
    from kinject_utils.data import DataUnavailableError, resolve_dataset

    try:
        return resolve_dataset("fictional_knowledge", download=False).path / "fictional_knowledge.json"
    except DataUnavailableError:
        return None


def corpus(n_docs: int) -> tuple[list[Document], list[str]]:
    """Documents and probe-style queries: the fictional-knowledge corpus if present, else synthetic text."""
    fk = _fk_file()
    if fk is not None and fk.exists():
        rows = json.loads(fk.read_text(encoding="utf-8"))[:n_docs]
        docs = [Document(f"fk{i}", "", r["train_context"]) for i, r in enumerate(rows)]
        queries = [q for r in rows for q in r["mem_input"] + r["gen_input"]]
        return docs, queries
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(5000)]
    docs = [Document(f"s{i}", "", ". ".join(" ".join(rng.choice(words, 12)) for _ in range(25)) + ".")
            for i in range(n_docs)]
    return docs, [" ".join(rng.choice(words, 15)) for _ in range(n_docs * 10)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedder", default="minilm-l6")
    ap.add_argument("--n-docs", type=int, default=30, help="documents to embed (150-word passages)")
    ap.add_argument("--n-queries", type=int, default=200, help="queries to embed")
    ap.add_argument("--n-vectors", type=int, default=20_000, help="random vectors for the FAISS timing")
    ap.add_argument("--dim", type=int, default=384, help="vector size when --n-docs 0 (MiniLM: 384)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--out", default="", help="CSV file to write the table to")
    args = ap.parse_args()
    rows: list[tuple[str, int, float, str]] = []
    dim = args.dim
    if args.n_docs > 0:
        import torch

        torch.set_num_threads(args.threads)
        docs, queries = corpus(args.n_docs)
        passages = [p.text for p in split_passages(docs, 150)]
        queries = queries[:args.n_queries]
        emb = LazyEmbedder(args.embedder)
        emb.encode(passages[:4])  # load + warm up outside the clock
        rows.append(("load embedder", 1, emb.load_s, "s"))
        out = {}
        for what, texts in (("embed passages (150 words)", passages), ("embed queries", queries)):
            t0 = time.perf_counter()
            out[what] = emb.encode(texts)
            rows.append((what, len(texts), len(texts) / (time.perf_counter() - t0), "per s"))
        pvecs, qvecs = out["embed passages (150 words)"], out["embed queries"]
        dim = pvecs.shape[1]
        t0 = time.perf_counter()
        bm = BM25(passages)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        bm.search(queries, 5)
        rows.append((f"bm25 search ({len(passages)} passages, build {build * 1000:.0f} ms)", len(queries),
                     len(queries) / (time.perf_counter() - t0), "queries/s"))
        index = build_index(pvecs, "flat")
        t0 = time.perf_counter()
        index.search(qvecs, 5)
        rows.append((f"faiss flat search ({len(passages)} passages)", len(queries),
                     len(queries) / (time.perf_counter() - t0), "queries/s"))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n_vectors, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # queries near stored vectors (noise of norm ~0.3), as a paraphrased question is near its passage
    noise = rng.normal(size=(500, x.shape[1])).astype(np.float32) * (0.3 / np.sqrt(x.shape[1]))
    q = x[rng.choice(len(x), 500, replace=False)] + noise
    exact = None
    for kind in ("flat", "hnsw", "ivf"):
        t0 = time.perf_counter()
        index = build_index(x, kind)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, idx = index.search(q, 10)
        qps = len(q) / (time.perf_counter() - t0)
        if exact is None:
            exact = idx
        # top-1 agreement with the exact index (the near-duplicate source), and overlap of the top 10
        top1 = np.mean(idx[:, 0] == exact[:, 0])
        rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, exact)])
        rows.append((f"faiss {kind} over {len(x)} vectors (build {build:.1f}s, top1 {top1:.2f}, top10 {rec:.2f})",
                     len(q), qps, "queries/s"))
    load = os.getloadavg()[0]
    lines = [f"{'measure':<70} {'n':>6} {'rate':>10}"]
    lines += [f"{m:<70} {n:>6} {r:>10.1f} {u}" for m, n, r, u in rows]
    lines.append(f"(torch threads {args.threads}, load average {load:.1f})")
    print("\n".join(lines))
    if args.out:
        body = "".join(f'"{m}",{n},{r:.2f},{u}\n' for m, n, r, u in rows)
        atomic_write_text(args.out, "measure,n,rate,unit\n" + body)


if __name__ == "__main__":
    main()
