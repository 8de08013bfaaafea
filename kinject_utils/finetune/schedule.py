"""How many optimiser steps a run takes, in which order it sees the chunks, at which learning rate.

All three are pure functions of the settings (and, for the order, of ``(seed, epoch)``), so a
resumed run sees exactly the data and learning rates an uninterrupted one would.
"""
from __future__ import annotations

import math

from .config import FinetuneConfig


def plan_steps(n_chunks: int, cfg: FinetuneConfig, real_tokens: int | None = None) -> dict[str, int]:
    """Steps per epoch and total optimiser steps for ``n_chunks`` chunks under ``cfg``'s budget.

    Every epoch is ``ceil(n_chunks / effective_batch)`` steps (the last one smaller). A ``tokens``
    budget becomes ``ceil(max_tokens / mean real tokens per step)`` steps (needs ``real_tokens``,
    the corpus' token count); ``max_train_tokens`` caps any budget the same way.

    Example:
        >>> plan_steps(100, FinetuneConfig(epochs=2))  # batch 8: 13 steps per epoch
        {'steps_per_epoch': 13, 'total_steps': 26}
    """
    if n_chunks < 1:
        raise ValueError("no training chunks: the corpus is empty")
    spe = math.ceil(n_chunks / cfg.effective_batch)
    if (cfg.budget == "tokens" or cfg.max_train_tokens) and not real_tokens:
        raise ValueError("budget='tokens' and max_train_tokens need the corpus token count (real_tokens)")
    if cfg.budget == "epochs":
        total = spe * cfg.epochs
    elif cfg.budget == "steps":
        total = cfg.max_steps
    else:
        total = math.ceil(cfg.max_tokens / (real_tokens / spe))
    if cfg.max_train_tokens:
        total = min(total, math.ceil(cfg.max_train_tokens / (real_tokens / spe)))
    return {"steps_per_epoch": spe, "total_steps": int(total)}


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """Chunk order of one epoch: a pure function of (seed, epoch), so a resumed run sees the same data."""
    import torch

    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g).tolist()


def lr_at(step: int, total: int, cfg: FinetuneConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up then the schedule."""
    warm = math.ceil(cfg.warmup_ratio * total) if cfg.warmup_ratio > 0 else 0
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    frac = (step - warm) / max(1, total - warm)
    if cfg.schedule == "linear":
        return cfg.lr * max(0.0, 1.0 - frac)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
