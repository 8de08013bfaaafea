"""The harness's own computation, batched: the reference path and the fallback.

Every option is a full row (context + continuation, left-truncated to ``max_length + 1`` tokens,
last token dropped) with log-softmax over the whole vocabulary at the continuation's positions,
as ``HFLM._loglikelihood_tokens`` computes it. Rows are right-padded (a causal model never lets a
real token see the padding after it) and run ``batch_size`` at a time, longest first. Options
whose rows are identical (letter style: every continuation is one token, so each option's row is
the context alone) share one row, as the harness's one-token-continuation cache does.

Used for ``method="naive"``, for requests that must be truncated, and for models on which the
shared-prefix path cannot be used (the probe in :mod:`.probe` decides).
"""
from __future__ import annotations

from typing import Any

from .encode import Item
from .shared_prefix import model_device


def run_naive(model: Any, items: list[Item], max_length: int, batch_size: int = 8, pbar: Any = None) -> None:
    """Fill ``logliks``/``greedy`` of every item with full-row forwards, ``batch_size`` rows each."""
    import torch

    device = model_device(model)
    rows: dict[tuple[int, ...], list[tuple[int, int]]] = {}  # row tokens -> [(item, option)]
    for i, it in enumerate(items):
        it.logliks, it.greedy = [0.0] * len(it.cont_encs), [False] * len(it.cont_encs)
        for k, ce in enumerate(it.cont_encs):
            rows.setdefault(tuple((it.ctx_enc + ce)[-(max_length + 1):][:-1]), []).append((i, k))
    order = sorted(rows, key=len, reverse=True)
    left = [len(it.cont_encs) for it in items]  # options still to score, for the progress bar
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        ids = torch.zeros((len(batch), len(batch[0])), dtype=torch.long)
        for b, inp in enumerate(batch):
            ids[b, : len(inp)] = torch.tensor(inp)
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), use_cache=False).logits
        done, slots, sums, hits = 0, [], [], []
        for b, inp in enumerate(batch):
            for i, k in rows[inp]:
                ce = items[i].cont_encs[k]
                lp = torch.log_softmax(logits[b, len(inp) - len(ce): len(inp)].float(), dim=-1)
                t = torch.tensor(ce, device=lp.device)
                slots.append((i, k))
                sums.append(lp.gather(1, t[:, None]).sum())
                hits.append((lp.argmax(-1) == t).all())
                left[i] -= 1
                done += left[i] == 0
        # one copy to the host per batch (the same sums as before, not one device sync per option)
        for (i, k), ll, g in zip(slots, torch.stack(sums).cpu().tolist(), torch.stack(hits).cpu().tolist()):
            items[i].logliks[k], items[i].greedy[k] = float(ll), bool(g)
        if pbar is not None and done:
            pbar.update(done)
