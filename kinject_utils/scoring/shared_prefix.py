"""The packed fast path: one row per question holding its context once, then every option.

A row is the context followed by each option's continuation tokens but the last, with a block
attention mask (each option sees the context and itself only) and position ids restarting after
the context for every option; sliding-window layers (Gemma 3, Mistral) get their window applied in
position space. Rows are sorted by length and batched. The output head runs only at the positions
that predict continuation tokens (``logits_to_keep`` as a boolean mask, so whatever the model's
forward applies after its head, e.g. Gemma's final logit softcapping, is applied).

:func:`run_rows` also serves the k-shot prefix cache (:mod:`.prefix_cache`): there every row is
only a question's own tokens, and its keys start with a cached prefix of ``n_prefix`` tokens.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

from .encode import Item

MAX_MASK_CELLS = 64 * 2 ** 20  # rows x queries x keys of one batch's attention mask


@dataclasses.dataclass
class Row:
    """Packed tokens of one request; ``seg`` 0 = context, k = option k, -1 = padding.
    ``scored[k]`` = (row positions whose logits predict option k's tokens, those token ids)."""

    toks: list[int]
    pos: list[int]
    seg: list[int]
    scored: list[tuple[list[int], list[int]]]


def pack_row(ctx_tokens: list[int], cont_encs: list[list[int]], start: int = 0) -> Row:
    """Context tokens (at positions ``start``..) then every option's tokens but its last."""
    n = len(ctx_tokens)
    if n < 1:
        raise ValueError("a packed row needs at least one context token (the one predicting each option)")
    toks, pos, seg, scored = list(ctx_tokens), list(range(start, start + n)), [0] * n, []
    for k, ce in enumerate(cont_encs, 1):
        first = len(toks)
        toks += ce[:-1]
        pos += range(start + n, start + n + len(ce) - 1)
        seg += [k] * (len(ce) - 1)
        scored.append(([n - 1] + list(range(first, first + len(ce) - 1)), list(ce)))
    return Row(toks, pos, seg, scored)


def attn_implementation(model: Any) -> str:
    cfg = getattr(model, "config", None)
    return getattr(getattr(cfg, "text_config", None) or cfg, "_attn_implementation", None) or "sdpa"


def mask_plan(model: Any) -> tuple[str, int | None] | None:
    """How to hand a custom mask to this model: ``("single", window)``, ``("dict", window)``, or
    ``None`` when the packed path does not know the architecture's masking."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    if attn_implementation(model) not in ("sdpa", "eager") or getattr(cfg, "use_bidirectional_attention", False):
        return None
    types = set(getattr(cfg, "layer_types", None) or [])
    window = getattr(cfg, "sliding_window", None)
    if not types:  # e.g. Mistral: one mask for all layers, windowed when the config says so
        use = getattr(cfg, "use_sliding_window", True)
        return ("single", int(window) if window and use else None)
    if types == {"full_attention"}:
        return ("single", None)
    if types == {"sliding_attention"} and window:
        return ("single", int(window))
    if types == {"full_attention", "sliding_attention"} and window:
        return ("dict", int(window))
    return None


def attention_masks(pos: Any, seg: Any, plan: tuple[str, int | None], dtype: Any, attn: str,
                    n_prefix: int = 0) -> Any:
    """Block masks ``[B, 1, S, n_prefix + S]`` for packed rows whose keys are ``n_prefix`` cached
    context tokens (positions 0.., segment 0) followed by the rows themselves. A token sees the
    context and its own option up to its own position; a pad token sees itself only (so it stays
    finite and never turns a real row's attention into NaN)."""
    import torch

    B, S = seg.shape
    pk, sk = pos, seg
    if n_prefix:
        pk = torch.cat([torch.arange(n_prefix, dtype=pos.dtype).expand(B, n_prefix), pos], dim=1)
        sk = torch.cat([torch.zeros((B, n_prefix), dtype=seg.dtype), seg], dim=1)
    sq, sk = seg[:, :, None], sk[:, None, :]
    pq, pk = pos[:, :, None], pk[:, None, :]
    eye = torch.zeros((S, n_prefix + S), dtype=torch.bool)
    eye[:, n_prefix:] = torch.eye(S, dtype=torch.bool)
    pad_self = eye[None] & (sq < 0)
    allowed = ((sk == 0) | (sk == sq)) & (pk <= pq) & (sk >= 0) | pad_self
    kind, window = plan

    def fmt(m: Any) -> Any:
        m = m[:, None]
        if attn == "eager":  # eager attention adds the mask to the scores
            return torch.zeros(m.shape, dtype=dtype).masked_fill(~m, torch.finfo(dtype).min)
        return m

    if window is None:
        return fmt(allowed)
    windowed = allowed & ((pq - pk < window) | pad_self)
    if kind == "single":
        return fmt(windowed)
    return {"full_attention": fmt(allowed), "sliding_attention": fmt(windowed)}


def batches(lengths: list[int], batch_size: int, max_cells: int = MAX_MASK_CELLS,
            n_prefix: int = 0) -> list[list[int]]:
    """Indices grouped into batches, longest first (stable); a batch's rows x length x keys (the
    attention-mask size) stays under ``max_cells`` unless one row alone exceeds it."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    for i in order:
        if out and len(out[-1]) < batch_size:
            L = lengths[out[-1][0]]
            if (len(out[-1]) + 1) * L * (L + n_prefix) <= max_cells:
                out[-1].append(i)
                continue
        out.append([i])
    return out


def model_device(model: Any) -> Any:
    return model.get_input_embeddings().weight.device


@functools.lru_cache(maxsize=None)
def _cache_arg(model_class: type) -> str:
    """``cache`` where this class's ``forward`` takes it (transformers 5.24+), else ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``forward`` keyword arguments that pass a KV cache, in this transformers' spelling.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name still works but warns that it
    goes in 5.40); a peft wrapper's ``forward`` takes ``**kwargs``, so the base model's class decides (read
    once per class: this runs on every decoding step of notebook 07's sampler)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {_cache_arg(type(base)): cache, "use_cache": True}


def output_cache(out: Any) -> Any:
    """The KV cache a forward returned (``out.cache`` from transformers 5.24, ``past_key_values`` before)."""
    return out["cache"] if "cache" in out else out["past_key_values"]


def model_dtype(model: Any) -> Any:
    import torch

    w = model.get_input_embeddings().weight
    return w.dtype if w.dtype.is_floating_point else torch.float32


def run_rows(model: Any, rows: list[Row], plan: tuple[str, int | None], batch_size: int, pbar: Any = None,
             prefix: tuple[list[tuple[Any, Any]], int] | None = None) -> list[tuple[list[float], list[bool]]]:
    """Log-likelihood and greedy flag of every option of every row.

    Args:
        prefix: ``(per-layer (keys, values) of shape [1, heads, P, dim], P)``: the rows continue a
            cached context of P tokens (their positions start at P); ``None``: plain packed rows.
    """
    import torch

    attn, dtype, device = attn_implementation(model), model_dtype(model), model_device(model)
    n_prefix = prefix[1] if prefix else 0
    lengths = [len(r.toks) for r in rows]
    results: list[Any] = [None] * len(rows)
    for batch in batches(lengths, batch_size, n_prefix=n_prefix):
        L = lengths[batch[0]]
        ids = torch.zeros((len(batch), L), dtype=torch.long)
        pos = torch.zeros((len(batch), L), dtype=torch.long)
        seg = torch.full((len(batch), L), -1, dtype=torch.long)
        keep = torch.zeros((len(batch), L), dtype=torch.bool)
        for b, i in enumerate(batch):
            r = rows[i]
            ids[b, : len(r.toks)] = torch.tensor(r.toks)
            pos[b, : len(r.toks)] = torch.tensor(r.pos)
            seg[b, : len(r.toks)] = torch.tensor(r.seg)
            for where, _ in r.scored:
                keep[b, where] = True
        # row-major rank of each kept (row, position): where its logits land in the output
        rank = torch.full((len(batch), L), -1, dtype=torch.long)
        rank[keep] = torch.arange(int(keep.sum()))
        mask = attention_masks(pos, seg, plan, dtype, attn, n_prefix=n_prefix)
        mask = {k: v.to(device) for k, v in mask.items()} if isinstance(mask, dict) else mask.to(device)
        extra = cache_kwargs(model, expand_cache(prefix[0], len(batch))) if prefix else {"use_cache": False}
        with torch.no_grad():
            out = model(input_ids=ids.to(device), attention_mask=mask, position_ids=pos.to(device),
                        logits_to_keep=keep.to(device), **extra)
        logits = out.logits
        if logits.ndim != 2 or logits.shape[0] != int(keep.sum()):
            raise RuntimeError("the model ignored a boolean logits_to_keep (unexpected logits shape "
                               f"{tuple(logits.shape)}); use method='naive'")
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        # every option's token log-probabilities in one gather and one copy to the host (not one sync per
        # option); sums and greedy flags are then taken on the host, option by option
        where = [rank[b, w] for b, i in enumerate(batch) for w, _ in rows[i].scored]
        targets = torch.tensor([t for i in batch for _, tgt in rows[i].scored for t in tgt], dtype=torch.long)
        flat = torch.cat(where)
        picked = logprobs[flat.to(logprobs.device), targets.to(logprobs.device)].cpu()
        hit = (logprobs.argmax(dim=-1)[flat.to(logprobs.device)].cpu() == targets)
        start = 0
        for i in batch:
            lls, greedy = [], []
            for _, tgt in rows[i].scored:
                end = start + len(tgt)
                lls.append(float(picked[start:end].sum()))
                greedy.append(bool(hit[start:end].all()))
                start = end
            results[i] = (lls, greedy)
        if pbar is not None:
            pbar.update(len(batch))
    return results


def expand_cache(kv: list[tuple[Any, Any]], batch: int) -> Any:
    """A fresh ``DynamicCache`` holding the prefix's keys/values for ``batch`` rows (the cached
    prefix itself is never modified: the forward appends to copies)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer, (k, v) in enumerate(kv):
        cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), layer)
    return cache


def run_shared_prefix(model: Any, items: list[Item], plan: tuple[str, int | None], batch_size: int,
                      pbar: Any = None) -> None:
    """Score every item with one packed row (context once, then each option's tokens but the last)."""
    rows = [pack_row(it.ctx_enc, it.cont_encs) for it in items]
    for it, (lls, greedy) in zip(items, run_rows(model, rows, plan, batch_size, pbar)):
        it.logliks, it.greedy = lls, greedy
