"""Whether the shared-prefix paths work on a loaded model: decided by trying them, once per class.

The packed path needs three things of a model's forward: a custom 4-D (or per-layer-type) boolean
attention mask that is obeyed, explicit position ids, and a boolean 2-D ``logits_to_keep`` (the
head only at chosen positions; transformers releases before this existed fail or return the wrong
shape). The prefix cache also needs a ``DynamicCache`` that is continued with such a mask. The
probe scores a three-token request (context ``a``, options ``b x`` and ``c y``) both ways and with
the harness's full rows, and compares the log-probabilities over the whole vocabulary. To tell an
obeyed mask from an ignored one it also measures how far the option ``c`` moves when it is allowed
to see ``b``: the packed result must be far closer to the full rows than that.

The answer is cached per (model class, attention implementation, mask plan, dtype, 4-bit or not); when a path cannot be
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
    """What the probe found: which paths are usable, why not, and the errors it measured."""

    packed: bool
    cached: bool
    reason: str = ""
    packed_err: float = float("nan")   # max |dlogp| of the packed rows against full rows, whole vocabulary
    cached_err: float = float("nan")   # the same for the prefix-cached rows
    tolerance: float = float("nan")    # the bound both had to meet (:func:`_tolerance`)


def _model_class(model: Any) -> type:
    base = getattr(model, "get_base_model", None)  # peft wrappers: the wrapped model decides
    return type(base()) if callable(base) else type(model)


def _tolerance(dtype: Any, logit_scale: float = 0.0) -> float:
    """Largest |log-prob difference| over the whole vocabulary that still counts as "same numbers".

    float32: 1e-3. Gemma-3-270M's cached prefix is off by 1.5e-4 at worst over its 262k-token
    vocabulary (summation order), while on 100 real 5-shot MMLU questions its option
    log-likelihoods moved by at most 1.0e-5 with every prediction unchanged (and scoring took 24 s
    instead of 94 s); a mask that is not obeyed moves them by about 1, so the ``0.1 * moved`` test
    still catches it.

    bf16/fp16: four rounding steps at the logits' scale, within [5e-2, 0.5]. A bf16 value near 16 (real
    7B logits reach 8-16) is only resolved to 0.0625, and two attention kernels (packed vs full rows,
    two SDPA backends on a GPU) round differently, so a fixed 5e-2 over 32k-262k log-probabilities
    would refuse a correct path; four steps of 2^-7 x 16 = 0.5 still sits far below what an ignored
    mask moves (8-22 measured with SmolLM2 and Gemma-3 in bf16), which ``0.1 * moved`` checks.
    """
    import torch

    if dtype in (torch.float32, torch.float64):
        return 1e-3
    eps = torch.finfo(dtype).eps if dtype in (torch.bfloat16, torch.float16) else torch.finfo(torch.bfloat16).eps
    return min(0.5, max(5e-2, 4 * eps * float(logit_scale)))


def _full_logprobs(model: Any, tokens: list[int], scale: list[float] | None = None) -> Any:
    import torch

    from .shared_prefix import model_device

    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens], device=model_device(model)), use_cache=False)
    logits = out.logits[0, -1].float()
    if scale is not None:
        scale.append(float(logits.abs().max()))
    return torch.log_softmax(logits, dim=-1).cpu()


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
    scale: list[float] = []
    try:
        want_b, want_c = _full_logprobs(model, [a, b], scale), _full_logprobs(model, [a, c], scale)
        sees_b = _full_logprobs(model, [a, b, c])  # what an ignored mask would give c (roughly)
        got = _packed_logprobs(model, plan, [a, b, c], [0, 1, 1], [0, 1, 2])
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot be used"
        return Capabilities(False, False, f"packed forward failed: {type(exc).__name__}: {exc}"[:300])
    tol = _tolerance(next(p for p in model.parameters() if p.is_floating_point()).dtype, max(scale))
    err = max(float((got[1] - want_b).abs().max()), float((got[2] - want_c).abs().max()))
    moved = float((sees_b - want_c).abs().max())
    if not (err <= tol and err < 0.1 * moved):
        return Capabilities(False, False, f"packed rows differ from full rows (max |dlogp| {err:.2e}, tolerance "
                                          f"{tol:.1e}; an ignored mask would move them {moved:.2e}): the custom "
                                          "mask, position ids or logits_to_keep are not honoured", err, tolerance=tol)
    try:
        kv = prefix_kv(model, [a])
        got = _packed_logprobs(model, plan, [b, c], [1, 1], [1, 2], prefix=(kv, 1))
    except Exception as exc:  # noqa: BLE001
        return Capabilities(True, False, f"prefix-cache forward failed: {type(exc).__name__}: {exc}"[:300], err,
                            tolerance=tol)
    err2 = max(float((got[0] - want_b).abs().max()), float((got[1] - want_c).abs().max()))
    if not (err2 <= tol and err2 < 0.1 * moved):
        return Capabilities(True, False, f"prefix-cached rows differ from full rows (max |dlogp| {err2:.2e}, "
                                         f"tolerance {tol:.1e})", err, err2, tol)
    return Capabilities(True, True, "", err, err2, tol)


def capabilities(model: Any) -> Capabilities:
    """Which shared-prefix paths this model can use (probed once per model class and masking)."""
    from .shared_prefix import attn_implementation, mask_plan

    plan = mask_plan(model)
    # per dtype and quantisation too: a bf16 or nf4 model's verdict (and tolerance) is not a fp32 model's
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    key = (_model_class(model), attn_implementation(model), plan, str(dtype),
           bool(getattr(model, "is_loaded_in_4bit", False)))
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
