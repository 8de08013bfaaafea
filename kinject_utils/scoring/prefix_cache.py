"""The k-shot prefix cache: the shared start of a subject's requests, computed once.

In k-shot MMLU every question of a subject starts with the same description line and solved
examples (about 300 of 340 tokens at 5-shot, letter style). Requests with the same prefix text
(``Item.prefix_key``) form a group; the group's shared tokens are the longest common prefix of
their *encoded* contexts (so a token merged across the prefix/question boundary stays with the
question), cut to leave every request at least its last context token. One forward over those
tokens gives their keys and values; each request then runs only its own tokens (question, options)
as a packed row (:mod:`.shared_prefix`) against that cache, broadcast across the batch, with
positions continuing after the prefix. Same log-likelihoods as the full rows, up to rounding.
"""
from __future__ import annotations

from typing import Any

from .encode import Item
from .shared_prefix import pack_row, run_rows

MIN_PREFIX_TOKENS = 32  # below this a separate prefix forward costs more than it saves
MIN_GROUP = 2  # a prefix used by one request only is not worth caching


def common_prefix_len(seqs: list[list[int]]) -> int:
    """Length of the longest common prefix of token lists."""
    first = seqs[0]
    n = len(first)
    for s in seqs[1:]:
        m = min(n, len(s))
        k = 0
        while k < m and s[k] == first[k]:
            k += 1
        n = k
    return n


def group_by_prefix(items: list[Item], min_tokens: int = MIN_PREFIX_TOKENS
                    ) -> tuple[list[tuple[int, list[Item]]], list[Item]]:
    """``([(n_prefix_tokens, items), ...], items left for the packed path)``."""
    by_key: dict[str, list[Item]] = {}
    for it in items:
        by_key.setdefault(it.prefix_key, []).append(it)
    groups, rest = [], []
    for key, its in by_key.items():
        n = 0
        if key and len(its) >= MIN_GROUP:
            # every request keeps >= 1 own context token: the one whose logits predict its options
            n = min(common_prefix_len([it.ctx_enc for it in its]), min(len(it.ctx_enc) for it in its) - 1)
        if n >= min_tokens:
            groups.append((n, its))
        else:
            rest.extend(its)
    return groups, rest


def prefix_kv(model: Any, tokens: list[int]) -> list[tuple[Any, Any]]:
    """Per-layer (keys, values) ``[1, heads, len(tokens), dim]`` of a plain causal forward.

    The cache is a config-less ``DynamicCache`` (full layers only), so sliding-window layers keep
    every key and the window is applied by the rows' masks, in position space."""
    import torch
    from transformers import DynamicCache

    from .shared_prefix import cache_kwargs, model_device, output_cache

    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens], device=model_device(model)),
                    logits_to_keep=1, **cache_kwargs(model, DynamicCache()))
    return cache_tensors(output_cache(out))


def cache_tensors(cache: Any) -> list[tuple[Any, Any]]:
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return list(zip(cache.key_cache, cache.value_cache))  # transformers releases before Cache.layers


def run_prefix_cached(model: Any, groups: list[tuple[int, list[Item]]], plan: tuple[str, int | None],
                      batch_size: int, pbar: Any = None) -> None:
    """Score each group: its prefix once, then its requests' own tokens in batches."""
    for n, its in groups:
        kv = prefix_kv(model, its[0].ctx_enc[:n])
        rows = [pack_row(it.ctx_enc[n:], it.cont_encs, start=n) for it in its]
        for it, (lls, greedy) in zip(its, run_rows(model, rows, plan, batch_size, pbar, prefix=(kv, n))):
            it.logliks, it.greedy = lls, greedy
        del kv
