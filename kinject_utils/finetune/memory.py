"""Micro-batch and gradient checkpointing for a CUDA card, from a memory model of (Q)LoRA training.

The effective batch stays the paper's 64 chunks; what changes with the card is how many chunks go
through one forward pass (more = faster, more memory) and whether activations are recomputed.
The model below predicts peak allocated memory from the model's shape and was fitted to one run
on an H100 80GB (Mistral-7B shape with random weights, QLoRA r=64 all-linear, paged AdamW 32-bit,
256-token chunks, torch 2.11, bitsandbytes 0.50.2, peft 0.21; docs/GPU.md):

    micro-batch  checkpointing  allocated  tokens/s
    4            on             7.36 GiB   1,273
    16           on             10.5 GiB   3,585
    32           on             14.8 GiB   3,937
    64           on             22.8 GiB   4,084
    16           off            67 GiB     5,254

:func:`choose_micro_batch` is a pure function of the free memory, so it is tested on a CPU.
"""
from __future__ import annotations

import dataclasses
from typing import Any

GIB = 2**30
# Fitted to the table above (Mistral-7B: hidden 4096, 32 layers, vocab 32000, intermediate 14336).
_CKPT_BYTES_PER_TOKEN_HIDDEN_LAYER = 5.74    # checkpointed layer inputs + one layer recomputed
_FULL_BYTES_PER_TOKEN_HIDDEN_LAYER = 116.0   # every layer's activations kept
_LOGIT_BYTES_PER_TOKEN_VOCAB = 10.0          # bf16 logits + fp32 upcast + its gradient
_OVERHEAD_GIB = 0.2                          # CUDA context, allocator slack, quantization constants
# Headroom: checkpointed runs peak close to the model; un-checkpointed ones spike more.
CKPT_FILL = 0.85
NO_CKPT_FILL = 0.70

# Mistral-7B's shape: the reference the constants were fitted on (tests check the table against it).
MISTRAL_7B = dict(hidden_size=4096, num_hidden_layers=32, vocab_size=32000, intermediate_size=14336,
                  num_attention_heads=32, num_key_value_heads=8)


@dataclasses.dataclass(frozen=True)
class Shape:
    """What the memory model needs to know about a causal LM (from its ``config.json``)."""

    hidden: int
    layers: int
    vocab: int
    intermediate: int
    kv_dim: int

    @classmethod
    def from_config(cls, cfg: Any) -> "Shape":
        """From a ``transformers`` config or a dict with the same field names."""
        get = (lambda k, d=None: cfg.get(k, d)) if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
        h, heads = int(get("hidden_size")), int(get("num_attention_heads"))
        kv_heads = int(get("num_key_value_heads", heads) or heads)
        head_dim = int(get("head_dim", h // heads) or h // heads)
        return cls(hidden=h, layers=int(get("num_hidden_layers")), vocab=int(get("vocab_size")),
                   intermediate=int(get("intermediate_size", 4 * h)), kv_dim=kv_heads * head_dim)

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of every linear layer of one decoder layer (q, k, v, o, gate, up, down)."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    @property
    def params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_shapes()) + 2 * self.vocab * self.hidden


def predict_gib(shape: Shape, micro_batch: int, checkpointing: bool, *, method: str = "qlora",
                lora_r: int = 64, chunk_len: int = 256) -> float:
    """Predicted peak allocated GiB of one training step on CUDA (within 3% of the table above)."""
    weight_bytes = {"qlora": 0.54, "lora": 2.0, "full": 16.0}[method]  # nf4 + constants / bf16 / fp32+Adam
    lora = 0 if method == "full" else shape.layers * lora_r * sum(a + b for a, b in shape.linear_shapes())
    static = shape.params * weight_bytes + lora * 16  # LoRA: fp32 weight, grad, two Adam moments
    per_token = (_CKPT_BYTES_PER_TOKEN_HIDDEN_LAYER if checkpointing else _FULL_BYTES_PER_TOKEN_HIDDEN_LAYER) \
        * shape.hidden * shape.layers + _LOGIT_BYTES_PER_TOKEN_VOCAB * shape.vocab
    return (static + per_token * chunk_len * micro_batch) / GIB + _OVERHEAD_GIB


# Measured tokens/s with checkpointing (table above); without it, x 5,254 / 3,585 (the mb16 pair).
MEASURED_TOK_S_CKPT = {4: 1273.0, 16: 3585.0, 32: 3937.0, 64: 4084.0}
NO_CKPT_SPEEDUP = 5254.0 / 3585.0


def relative_speed(micro_batch: int, checkpointing: bool) -> float:
    """Tokens/s of (micro_batch, checkpointing) on the reference run, interpolated in log2(micro-batch).

    Used only to rank candidates; below micro-batch 4 throughput is taken as proportional to it.
    """
    import math

    pts = sorted(MEASURED_TOK_S_CKPT.items())
    if micro_batch <= pts[0][0]:
        v = pts[0][1] * micro_batch / pts[0][0]
    elif micro_batch >= pts[-1][0]:
        v = pts[-1][1]
    else:
        (a, va), (b, vb) = next(((p, q) for p, q in zip(pts, pts[1:]) if p[0] <= micro_batch <= q[0]))
        t = (math.log2(micro_batch) - math.log2(a)) / (math.log2(b) - math.log2(a))
        v = va + t * (vb - va)
    return v if checkpointing else v * NO_CKPT_SPEEDUP


def choose_micro_batch(free_gib: float, shape: Shape | None = None, *, batch: int = 64, method: str = "qlora",
                       lora_r: int = 64, chunk_len: int = 256) -> dict[str, Any]:
    """The fastest (micro-batch, checkpointing) that fits ``free_gib`` of GPU memory.

    Candidates are the divisors of ``batch`` (so the effective batch stays ``batch``), with and
    without checkpointing. One fits when its predicted peak is at most ``CKPT_FILL`` (checkpointed)
    or ``NO_CKPT_FILL`` (not checkpointed: larger transient spikes) of the free memory; among those
    the one with the highest :func:`relative_speed` wins (ties: the smaller micro-batch). On an
    H100 80GB this is micro-batch 64 with checkpointing (4,084 tok/s, 22.8 GiB); on a 141 GB
    card micro-batch 16 without (5,254 tok/s); on 8-12 GB cards a small checkpointed micro-batch.
    When nothing fits: micro-batch 1 with checkpointing and ``fits=False`` (the caller warns).

    Returns:
        ``{"micro_batch", "grad_accum", "gradient_checkpointing", "predicted_gib", "fits", "why"}``.
    """
    shape = shape or Shape.from_config(MISTRAL_7B)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    best = None
    for mb in (d for d in range(1, batch + 1) if batch % d == 0):
        for ckpt, fill in ((True, CKPT_FILL), (False, NO_CKPT_FILL)):
            need = predict_gib(shape, mb, ckpt, method=method, lora_r=lora_r, chunk_len=chunk_len)
            if need <= fill * free_gib and (best is None or relative_speed(mb, ckpt) > best[0]):
                best = (relative_speed(mb, ckpt), mb, ckpt, need, fill)
    if best is not None:
        _, mb, ckpt, need, fill = best
        return {"micro_batch": mb, "grad_accum": batch // mb, "gradient_checkpointing": ckpt,
                "predicted_gib": round(need, 2), "fits": True,
                "why": f"{need:.1f} GiB predicted <= {fill:.0%} of {free_gib:.1f} GiB free"}
    need = predict_gib(shape, 1, True, method=method, lora_r=lora_r, chunk_len=chunk_len)
    return {"micro_batch": 1, "grad_accum": batch, "gradient_checkpointing": True, "predicted_gib": round(need, 2),
            "fits": False, "why": f"even micro-batch 1 with checkpointing needs {need:.1f} GiB predicted, "
                                  f"over {CKPT_FILL:.0%} of {free_gib:.1f} GiB free"}


def cuda_free_gib(device: str = "cuda") -> float:
    """Free memory of the CUDA device in GiB (``torch.cuda.mem_get_info``), read after
    :func:`release_memory`: blocks the caching allocator keeps from an earlier run are free to us
    but not to ``mem_get_info``, and counting them as used would shrink the next run's micro-batch."""
    import torch

    release_memory()
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return free / GIB


def release_memory(optimizer: Any = None) -> int:
    """Give back what a finished training run held: its optimizer's paged buffers, then garbage and
    the CUDA allocator's cached blocks.

    bitsandbytes' paged optimizers register every paged state buffer in the process-wide
    ``GlobalPageManager.paged_tensors`` list, which keeps them alive after the optimizer is gone
    (about 1.3 GB per 7B QLoRA run); this drops the ones ``optimizer`` owns.

    Returns:
        the number of paged buffers released.
    """
    import gc

    released = 0
    if optimizer is not None:
        owned = {id(v) for st in getattr(optimizer, "state", {}).values() if isinstance(st, dict)
                 for v in st.values()}
        manager = _page_manager()
        if manager is not None and owned:
            keep = [t for t in manager.paged_tensors if id(t) not in owned]
            released = len(manager.paged_tensors) - len(keep)
            manager.paged_tensors[:] = keep
        if hasattr(optimizer, "state"):
            optimizer.state.clear()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - no torch / no CUDA: nothing cached to give back
        pass
    return released


def _page_manager() -> Any:
    try:
        from bitsandbytes.functional import GlobalPageManager
    except Exception:  # noqa: BLE001 - bitsandbytes is optional off the QLoRA path
        return None
    return GlobalPageManager.get_instance()
