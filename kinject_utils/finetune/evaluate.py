"""What an adapter learned: per-chunk losses, memorisation (before vs after), the learning-rate search.

The "before" losses (base model, adapter off) depend only on the base model and the chunks, so
:func:`memorisation_for` computes them once per (model, chunk set) and reuses them for every
adapter of that model (they used to be recomputed per adapter: about a third of notebook 03).

    model, tok = load_finetuned("smollm2-135m", "out/ft-reg", device="cpu", dtype="auto")
    memorisation_report(model, tok, {"kb": chunks})          # loss before vs after, per chunk set
"""
from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Sequence

from ..io import content_hash, read_json
from ..log import get_logger
from ..log import progress as progress_bar
from .chunking import chunk_corpus
from .config import MANIFEST, FinetuneConfig
from .load import AdapterSwitch, load_finetuned
from .loop import collate, train_adapter
from .variants import corpus_for

log = get_logger("finetune")


def chunk_losses(model: Any, tokenizer: Any, chunks: Sequence[Sequence[int]], batch_size: int = 8,
                 progress: bool = False) -> list[float]:
    """Mean next-token loss (nats/token) of ``model`` on each chunk (no grad, eval mode).

    Example:
        >>> chunk_losses(model, tok, chunk_corpus(texts, tok))  # doctest: +SKIP
        [2.91, 3.05, ...]
    """
    import torch
    import torch.nn.functional as F

    from ..models import disable_bnb_cpu_inference_repack

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    disable_bnb_cpu_inference_repack(model)  # an eval forward must not break later 4-bit training
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    with torch.no_grad():
        for i in progress_bar(range(0, len(chunks), batch_size), disable=not progress, desc="chunk losses"):
            ids, mask, labels, _, _ = collate(chunks[i:i + batch_size], pad_id, str(device))
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            tgt = labels[:, 1:]
            nll = F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100, reduction="none")
            n = (tgt != -100).sum(1).clamp(min=1)
            out.append(nll.sum(1) / n)  # stays on the device; one transfer at the end
    if was_training:
        model.train()
    return torch.cat(out).tolist() if out else []


def _sample(chunks: Sequence[Sequence[int]], max_chunks: int | None, seed: int) -> list[Sequence[int]]:
    chunks = list(chunks)
    if max_chunks and len(chunks) > max_chunks:
        chunks = [chunks[i] for i in sorted(random.Random(seed).sample(range(len(chunks)), max_chunks))]
    return chunks


def _weighted(losses: Sequence[float], chunks: Sequence[Sequence[int]]) -> float:
    w = [len(c) - 1 for c in chunks]  # token-weighted mean
    return sum(a * b for a, b in zip(losses, w)) / sum(w)


def memorisation_report(model: Any, tokenizer: Any, chunk_sets: Mapping[str, Sequence[Sequence[int]]], *,
                        batch_size: int = 8, max_chunks: int | None = None, seed: int = 0,
                        before_cache: MutableMapping[str, list[float]] | None = None,
                        cache_prefix: str = "") -> Any:
    """How much of its training text an adapter reproduces: loss before (adapter off) vs after.

    Args:
        model: a ``peft.PeftModel`` (from :func:`load_finetuned`); "before" runs with the adapter
            disabled, so one loaded model gives both numbers.
        chunk_sets: name -> chunks (e.g. ``{"kb": ..., "paraphrases": ...}``).
        max_chunks: score at most this many chunks per set (a seeded sample), to bound the cost.
        before_cache: "before" losses keyed by ``cache_prefix`` + the chunks' hash; filled and
            reused, so adapters of one base model share the base-model pass.
        cache_prefix: what else the "before" losses depend on (base model, precision).

    Returns:
        A ``pandas.DataFrame``: split, n_chunks, loss_before, loss_after, delta, ppl_before, ppl_after.
    """
    import pandas as pd

    if not hasattr(model, "disable_adapter"):
        raise TypeError("memorisation_report needs a peft model (load_finetuned(..., merge=False))")
    rows = []
    for name, chunks in chunk_sets.items():
        chunks = _sample(chunks, max_chunks, seed)
        if not chunks:
            continue
        key = content_hash(cache_prefix, chunks, batch_size)
        if before_cache is not None and key in before_cache:
            before = before_cache[key]
        else:
            with model.disable_adapter():
                before = chunk_losses(model, tokenizer, chunks, batch_size)
            if before_cache is not None:
                before_cache[key] = before
        after = chunk_losses(model, tokenizer, chunks, batch_size)
        lb, la = _weighted(before, chunks), _weighted(after, chunks)
        rows.append({"split": name, "n_chunks": len(chunks), "loss_before": lb, "loss_after": la,
                     "delta": la - lb, "ppl_before": math.exp(lb), "ppl_after": math.exp(la)})
    return pd.DataFrame(rows)


def memorisation_for(index_rows: Sequence[Mapping[str, Any]], tasks_by_name: Mapping[str, Any],
                     paraphrases_by_task: Mapping[str, Mapping[str, Sequence[str]]], *, device: str = "auto",
                     dtype: str = "auto", max_chunks: int | None = 32, batch_size: int = 8, seed: int = 0,
                     timings: dict[str, float] | None = None) -> Any:
    """Loss on the knowledge base (and on the trained paraphrases) before vs after each adapter.

    ``kb`` rows measure how much of the original text an adapter reproduces; ``paraphrases`` rows
    (FT-par variants) the same on the rewordings it trained on. The base-model ("before") pass over
    a chunk set is computed once per model and reused for every adapter. ``index_rows`` hold
    ``adapter_dir`` as an absolute or current path (as :func:`read_adapter_index` returns them).
    ``timings`` (if given) receives seconds per ``model/task/variant``. Returns the
    ``03_memorisation.csv`` table.
    """
    import pandas as pd

    from ..device import resolve

    dev, dt = resolve(device, dtype)
    cache: dict[str, list[float]] = {}
    frames = []
    switch = AdapterSwitch(device=dev, dtype=dt)  # one base per model and precision, adapters swapped onto it
    for r in index_rows:
        t0 = time.perf_counter()
        task = tasks_by_name[r["task"]]
        qlora = read_json(Path(r["adapter_dir"]) / MANIFEST).get("method") == "qlora"
        model, tok = switch.load(r["model"], r["adapter_dir"], quantization="nf4" if qlora else None)
        n = int(r["n_paraphrases"])
        sets = {"kb": chunk_corpus([d.text for d in task.docs], tok)}
        if n:
            extra = corpus_for(task.docs, paraphrases_by_task.get(r["task"], {}), n)[len(task.docs):]
            sets["paraphrases"] = chunk_corpus(extra, tok)
        base = "nf4" if qlora else dt
        rep = memorisation_report(model, tok, sets, batch_size=batch_size, max_chunks=max_chunks, seed=seed,
                                  before_cache=cache, cache_prefix=f"{r['model']}|{dev}|{base}")
        frames.append(rep.assign(model=r["model"], task=r["task"], variant=r["variant"], n_paraphrases=n))
        del model
        secs = time.perf_counter() - t0
        if timings is not None:
            timings[f"{r['model']}/{r['task']}/{r['variant']}"] = round(secs, 2)
        log.info("memorisation %s / %s / %s: %.1f s", r["model"], r["task"], r["variant"], secs)
    switch.close()
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    return df[["model", "task", "variant", "n_paraphrases", *rep.columns]]


def fit_search(model_name: str, train_texts: Sequence[str], heldout_texts: Sequence[str], cfg: FinetuneConfig,
               candidates: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, *, device: str | None = None,
               dtype: str | None = None, batch_size: int = 8, progress: bool = True,
               train_chunks: int = 64, seed: int = 0) -> Any:
    """Choose training settings by held-out paraphrase loss, as the paper chose its learning rate.

    Trains one adapter per candidate (a mapping of :class:`FinetuneConfig` fields, e.g.
    ``{"epochs": 3}`` or ``{"lr": 3e-4}``; resumable, each in its own folder under ``out_dir``) on
    ``train_texts`` and measures, adapter on and off, the mean loss on chunks of ``heldout_texts``
    (paraphrases never trained on: :func:`split_heldout_paraphrases`) and on the chunks it trained on
    (has it learned its corpus? a seeded sample of ``train_chunks`` of them), on ``device`` / ``dtype``
    (default: the config's).

    Returns:
        A ``pandas.DataFrame``, one row per candidate in the given order: the candidate's fields,
        ``steps``, ``heldout_loss_before``, ``heldout_loss_after``, ``train_loss_after`` (own chunks),
        ``train_final_loss`` (last optimiser step) and ``best`` (lowest held-out loss; the first such).
    """
    import pandas as pd

    if not candidates:
        raise ValueError("candidates is empty; give the settings to try, e.g. [{'epochs': 1}, {'epochs': 3}]")
    device, dtype = device or cfg.device, dtype or cfg.dtype
    cache: dict[str, list[float]] = {}
    rows = []
    for cand in candidates:
        sub = Path(out_dir) / "_".join(f"{k}-{v:g}" if isinstance(v, float) else f"{k}-{v}" for k, v in cand.items())
        res = train_adapter(model_name, train_texts, cfg.replace(**cand), sub, progress=progress)
        model, tok = load_finetuned(model_name, sub, device=device, dtype=dtype)
        sets = {"heldout": chunk_corpus(list(heldout_texts), tok, cfg.chunk_len, pack=cfg.packing),
                "train": _sample(chunk_corpus(list(train_texts), tok, cfg.chunk_len, pack=cfg.packing), train_chunks,
                                 seed)}
        rep = memorisation_report(model, tok, sets, batch_size=batch_size, before_cache=cache,
                                  cache_prefix=f"{model_name}|{device}|{dtype}|{cfg.method}").set_index("split")
        rows.append({**cand, "steps": res.steps, "heldout_loss_before": float(rep.loss_before["heldout"]),
                     "heldout_loss_after": float(rep.loss_after["heldout"]),
                     "train_loss_after": float(rep.loss_after["train"]), "train_final_loss": res.final_loss})
        log.info("%s %s: held-out loss %.3f -> %.3f, own chunks %.3f (%d steps)", model_name, cand,
                 rows[-1]["heldout_loss_before"], rows[-1]["heldout_loss_after"], rows[-1]["train_loss_after"],
                 res.steps)
        del model
    df = pd.DataFrame(rows)
    df["best"] = False
    df.loc[df.heldout_loss_after.idxmin(), "best"] = True
    return df


def lr_search(model_name: str, train_texts: Sequence[str], heldout_texts: Sequence[str], cfg: FinetuneConfig,
              lrs: Sequence[float], out_dir: str | os.PathLike, *, device: str | None = None,
              dtype: str | None = None, batch_size: int = 8, progress: bool = True) -> Any:
    """:func:`fit_search` over learning rates (one adapter per rate, in ``out_dir/lr-<lr>``), sorted by lr."""
    if not lrs:
        raise ValueError("lrs is empty; give the learning rates to try, e.g. [3e-4, 1e-3, 3e-3]")
    df = fit_search(model_name, train_texts, heldout_texts, cfg, [{"lr": float(lr)} for lr in lrs], out_dir,
                    device=device, dtype=dtype, batch_size=batch_size, progress=progress)
    return df.sort_values("lr").reset_index(drop=True)
