"""Whether the shared-prefix paths work on a loaded model: decided by trying them, once per class.

The packed path needs three things of a model's forward: a custom 4-D (or per-layer-type) boolean
attention mask that is obeyed, explicit position ids, and a boolean 2-D ``logits_to_keep`` (the
head only at chosen positions; transformers releases before this existed fail or return the wrong
shape). The prefix cache also needs a ``DynamicCache`` that is continued with such a mask. The
probe scores a three-token request (context ``a``, options ``b x`` and ``c y``) both ways and with
the harness's full rows, and compares the log-probabilities over the whole vocabulary. To tell an
obeyed mask from an ignored one it also measures how far the option ``c`` moves when it is allowed
to see ``b``: the packed result must be far closer to the full rows than that.

The answer is cached per (model class, attention implementation, mask plan); when a path cannot be
used, the logger says so once with the reason, and scoring uses the batched full-row fallback.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..log import get_logger

log = get_logger("scoring")
_CACHE: dict[tuple, "Capabilities"] = {}


@dataclasses.dataclass(frozen=True)
class Capabilities:
    packed: bool
    cached: bool
    reason: str = ""


def _model_class(model: Any) -> type:
    base = getattr(model, "get_base_model", None)  # peft wrappers: the wrapped model decides
    return type(base()) if callable(base) else type(model)


def _tolerance(dtype: Any) -> float:
    """Largest |log-prob difference| over the whole vocabulary that still counts as "same numbers".

    float32: 1e-3. Gemma-3-270M's cached prefix is off by 1.5e-4 at worst over its 262k-token
    vocabulary (summation order), while on 100 real 5-shot MMLU questions its option
    log-likelihoods moved by at most 1.0e-5 with every prediction unchanged (and scoring took 24 s
    instead of 94 s); a mask that is not obeyed moves them by about 1, so the ``0.1 * moved`` test
    still catches it.
    """
    import torch

    return 1e-3 if dtype in (torch.float32, torch.float64) else 5e-2


def _full_logprobs(model: Any, tokens: list[int]) -> Any:
    import torch

    from .shared_prefix import model_device

    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens], device=model_device(model)), use_cache=False)
    return torch.log_softmax(out.logits[0, -1].float(), dim=-1).cpu()


def _packed_logprobs(model: Any, plan: Any, toks: list[int], pos: list[int], seg: list[int],
                     prefix: Any = None) -> Any:
    """Log-probabilities at every position of one packed row (optionally after a cached prefix)."""
    import torch

    from .shared_prefix import (
        attention_masks,
        attn_implementation,
        cache_kwargs,
        expand_cache,
        model_device,
        model_dtype,
    )

    device, n = model_device(model), len(toks)
    pos_t, seg_t = torch.tensor([pos]), torch.tensor([seg])
    mask = attention_masks(pos_t, seg_t, plan, model_dtype(model), attn_implementation(model),
                           n_prefix=prefix[1] if prefix else 0)
    mask = {k: v.to(device) for k, v in mask.items()} if isinstance(mask, dict) else mask.to(device)
    extra = cache_kwargs(model, expand_cache(prefix[0], 1)) if prefix else {"use_cache": False}
    with torch.no_grad():
        out = model(input_ids=torch.tensor([toks], device=device), attention_mask=mask,
                    position_ids=pos_t.to(device), logits_to_keep=torch.ones((1, n), dtype=torch.bool, device=device),
                    **extra)
    if out.logits.ndim != 2 or out.logits.shape[0] != n:
        raise RuntimeError(f"boolean logits_to_keep not supported (logits shape {tuple(out.logits.shape)})")
    return torch.log_softmax(out.logits.float(), dim=-1).cpu()


def probe(model: Any, plan: Any) -> Capabilities:
    """Run the probe now (uncached); see the module docstring."""
    from .prefix_cache import prefix_kv

    vocab = model.get_input_embeddings().weight.shape[0]
    a, b, c = (min(t, vocab - 1) for t in (11, 23, 37))
    tol = _tolerance(next(p for p in model.parameters() if p.is_floating_point()).dtype)
    try:
        want_b, want_c = _full_logprobs(model, [a, b]), _full_logprobs(model, [a, c])
        sees_b = _full_logprobs(model, [a, b, c])  # what an ignored mask would give c (roughly)
        got = _packed_logprobs(model, plan, [a, b, c], [0, 1, 1], [0, 1, 2])
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot be used"
        return Capabilities(False, False, f"packed forward failed: {type(exc).__name__}: {exc}"[:300])
    err = max(float((got[1] - want_b).abs().max()), float((got[2] - want_c).abs().max()))
    moved = float((sees_b - want_c).abs().max())
    if not (err <= tol and err < 0.1 * moved):
        return Capabilities(False, False, f"packed rows differ from full rows (max |dlogp| {err:.2e}; "
                                          f"an ignored mask would move them {moved:.2e}): the custom "
                                          "mask, position ids or logits_to_keep are not honoured")
    try:
        kv = prefix_kv(model, [a])
        got = _packed_logprobs(model, plan, [b, c], [1, 1], [1, 2], prefix=(kv, 1))
    except Exception as exc:  # noqa: BLE001
        return Capabilities(True, False, f"prefix-cache forward failed: {type(exc).__name__}: {exc}"[:300])
    err = max(float((got[0] - want_b).abs().max()), float((got[1] - want_c).abs().max()))
    if not (err <= tol and err < 0.1 * moved):
        return Capabilities(True, False, f"prefix-cached rows differ from full rows (max |dlogp| {err:.2e})")
    return Capabilities(True, True)


def capabilities(model: Any) -> Capabilities:
    """Which shared-prefix paths this model can use (probed once per model class and masking)."""
    from .shared_prefix import attn_implementation, mask_plan

    plan = mask_plan(model)
    key = (_model_class(model), attn_implementation(model), plan)
    if key not in _CACHE:
        if plan is None:
            caps = Capabilities(False, False, f"attention implementation {attn_implementation(model)!r} "
                                              "or layer types without a known mask layout")
        else:
            was_training = getattr(model, "training", False)
            model.eval()
            try:
                caps = probe(model, plan)
            finally:
                if was_training:
                    model.train()
        _CACHE[key] = caps
        name = key[0].__name__
        if not caps.packed:
            log.warning("shared-prefix scoring cannot be used with %s (%s); scoring with the batched "
                        "full-row fallback (same numbers, slower)", name, caps.reason)
        elif not caps.cached:
            log.warning("k-shot prefix cache cannot be used with %s (%s); scoring k-shot requests "
                        "as full packed rows (same numbers, slower)", name, caps.reason)
    return _CACHE[key]
