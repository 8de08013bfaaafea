"""Settings of one continued pre-training run: :class:`FinetuneConfig`, its presets and its run key.

Presets are looked up by name (:func:`preset`), so a notebook's ``FT_PRESET`` that is not one of
:data:`PRESETS` is an error naming the allowed ones (it used to select the CPU recipe silently).

    cfg = preset("cpu", epochs=2)               # LoRA r=16, dtype "auto" (fp32 here, bf16 with AMX)
    cfg = preset("paper_qlora")                 # nf4 QLoRA r=64, batch 64, micro-batch chosen by memory
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..device import DTYPE_ALIASES, DTYPES
from ..io import content_hash, read_json
from ..settings import (
    SettingTypeError,
    check_bool,
    check_choice,
    check_device,
    check_float,
    check_int,
    check_known_fields,
)

MANIFEST = "manifest.json"
TRAIN_LOG = "train_log.jsonl"
CKPT_DIR = "checkpoints"

METHODS = ("qlora", "lora", "full")
SCHEDULES = ("constant", "linear", "cosine")
OPTIMIZERS = ("auto", "adamw", "paged_adamw_32bit")
BUDGETS = ("epochs", "steps", "tokens")
MAX_PAPER_EPOCHS = 5  # "at most 5 epochs" (paper, section 4.1)
PAPER_BATCH = 64  # chunks per optimiser step (paper, section 4.1)


@dataclasses.dataclass
class FinetuneConfig:
    """Settings of one continued pre-training run. Validated on creation; errors name the fix.

    Defaults are the CPU setting calibrated on the embedded fictional task (LoRA r=16, alpha=32,
    lr 1e-3, batch 8 learned; lower learning rates learned nothing). The paper-scale GPU recipe is
    :meth:`paper_qlora`.

    Attributes:
        method: ``"qlora"`` (nf4 4-bit base, double quantization, bf16 compute, LoRA),
            ``"lora"`` (base in ``dtype``, LoRA) or ``"full"`` (every weight trained).
        lora_r, lora_alpha, lora_dropout: LoRA rank, scale numerator, dropout.
        target_modules: ``"all-linear"`` (every linear layer but the output head) or a list of
            module names (stored sorted, so ``adapter_config.json`` is byte-stable).
        lr: peak learning rate (paper searched [1e-6, 5e-5] for full FT; QLoRA uses 2e-4).
        epochs: passes over the corpus when ``budget="epochs"``; at most 5 unless ``allow_more_epochs``.
        micro_batch: chunks per forward pass, or ``"auto"``: chosen on CUDA by the memory model
            (:func:`kinject_utils.finetune.memory.choose_micro_batch`), 4 on a CPU.
        grad_accum: micro-batches per optimiser step (ignored with ``micro_batch="auto"``).
        batch: chunks per optimiser step with ``micro_batch="auto"`` (the paper's is 64); with an
            integer micro_batch it must be 0 or micro_batch x grad_accum.
        max_grad_norm: gradient clipping (0 turns it off).
        warmup_ratio: fraction of the steps with a linear warm-up (0 = none).
        schedule: ``"constant"``, ``"linear"`` or ``"cosine"`` decay after warm-up.
        optimizer: ``"auto"`` (``paged_adamw_32bit`` on CUDA, ``adamw`` on CPU), ``"adamw"``,
            ``"paged_adamw_32bit"`` (bitsandbytes, CUDA only).
        weight_decay: AdamW weight decay.
        gradient_checkpointing: recompute activations in the backward pass (less memory, slower);
            with ``micro_batch="auto"`` the memory model decides.
        seed: LoRA initialisation, data order (a function of seed and epoch) and dropout.
        checkpoint_every: save a resumable checkpoint every N optimiser steps (0 = never).
        packing: concatenate documents into full chunks (no padding) instead of one document per row.
        chunk_len: tokens per chunk (paper: 256).
        dtype: base weights' dtype for ``lora``/``full``: ``"auto"`` (resolved by
            :func:`kinject_utils.device.resolve_dtype`: bf16 on CUDA and AMX CPUs, fp32 otherwise),
            ``float32``, ``bfloat16`` or ``float16`` (CUDA only, with loss scaling). QLoRA computes
            in bf16. LoRA weights are kept in float32.
        budget: ``"epochs"`` (fixed passes; the paper), ``"steps"`` (``max_steps`` optimiser
            steps; the fair sweep) or ``"tokens"`` (``max_tokens`` real tokens, rounded up to steps).
        max_steps, max_tokens: the budget for ``steps`` / ``tokens``.
        max_train_tokens: a cap on top of any budget (0 = none): training stops after the step
            that reaches this many real tokens. The fix for a corpus that plans too long a run.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (resolved by :mod:`kinject_utils.device`).
    """

    method: str = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: Any = "all-linear"
    lr: float = 1e-3
    epochs: int = 1
    allow_more_epochs: bool = False
    micro_batch: Any = 4
    grad_accum: int = 2
    batch: int = 0
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.0
    schedule: str = "constant"
    optimizer: str = "auto"
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = 50
    packing: bool = True
    chunk_len: int = 256
    dtype: str = "auto"
    budget: str = "epochs"
    max_steps: int = 0
    max_tokens: int = 0
    max_train_tokens: int = 0
    device: str = "auto"

    # Settings that do not change the trained weights (left out of the run key).
    _NOT_IN_KEY = ("checkpoint_every",)

    def __post_init__(self) -> None:
        for name in ("allow_more_epochs", "gradient_checkpointing", "packing"):
            check_bool(self, name)
        for name, lo in (("lora_r", 1), ("epochs", 1), ("grad_accum", 1), ("batch", 0), ("seed", 0),
                         ("checkpoint_every", 0), ("max_steps", 0), ("max_tokens", 0), ("max_train_tokens", 0)):
            check_int(self, name, lo)
        check_int(self, "chunk_len", 2, hint="the paper's is 256")
        mb = self.micro_batch
        if mb != "auto" and (isinstance(mb, bool) or not isinstance(mb, int)):
            raise SettingTypeError(f"FinetuneConfig.micro_batch must be an integer or 'auto', got {mb!r}")
        if mb != "auto":
            check_int(self, "micro_batch", 1)
        check_float(self, "lora_alpha", 0, lo_open=True)
        check_float(self, "lora_dropout", 0, 1, hi_open=True)
        self.lora_dropout = float(self.lora_dropout)
        check_float(self, "lr", 0, 1, lo_open=True, hi_open=True,
                    hint="the paper searched 1e-6..5e-5 for full FT, QLoRA uses 2e-4, the CPU default is 1e-3")
        check_float(self, "warmup_ratio", 0, 1, hi_open=True)
        check_float(self, "max_grad_norm", 0)
        check_float(self, "weight_decay", 0)
        for name in ("method", "schedule", "optimizer", "budget", "dtype", "device"):
            if not isinstance(getattr(self, name), str):
                raise SettingTypeError(f"FinetuneConfig.{name} must be a string, got {getattr(self, name)!r}")
        self.dtype = DTYPE_ALIASES.get(self.dtype.lower(), self.dtype.lower())
        for name, allowed in (("method", METHODS), ("schedule", SCHEDULES), ("optimizer", OPTIMIZERS),
                              ("budget", BUDGETS), ("dtype", DTYPES)):
            check_choice(self, name, allowed)
        check_device(self)
        self._check_modules()
        self._check_batch()
        if self.budget == "epochs" and self.epochs > MAX_PAPER_EPOCHS and not self.allow_more_epochs:
            raise ValueError(f"FinetuneConfig.epochs={self.epochs}: the paper trains at most "
                             f"{MAX_PAPER_EPOCHS} epochs. Use epochs<={MAX_PAPER_EPOCHS}, or set "
                             "allow_more_epochs=True to go beyond on purpose")
        if self.budget == "steps" and self.max_steps < 1:
            raise ValueError("FinetuneConfig.budget='steps' needs max_steps >= 1 (the number of optimiser steps)")
        if self.budget == "tokens" and self.max_tokens < 1:
            raise ValueError("FinetuneConfig.budget='tokens' needs max_tokens >= 1 (real training tokens)")
        self._check_precision()

    def _check_modules(self) -> None:
        tm = self.target_modules
        if not (tm == "all-linear" or (isinstance(tm, (list, tuple)) and tm and all(isinstance(m, str) for m in tm))):
            raise ValueError(f"FinetuneConfig.target_modules must be 'all-linear' or a non-empty list of "
                             f"module names such as ['q_proj', 'v_proj'], got {tm!r}")
        if isinstance(tm, (list, tuple)):
            self.target_modules = sorted(set(tm))  # a stable order: adapter_config.json and the run key

    def _check_batch(self) -> None:
        if self.micro_batch == "auto":
            if self.batch < 1:
                raise ValueError("FinetuneConfig.micro_batch='auto' needs batch >= 1 (chunks per optimiser "
                                 f"step; the paper's is {PAPER_BATCH})")
        elif self.batch not in (0, self.micro_batch * self.grad_accum):
            raise ValueError(f"FinetuneConfig.batch={self.batch} but micro_batch x grad_accum = "
                             f"{self.micro_batch * self.grad_accum}; set batch=0, or micro_batch='auto'")

    def _check_precision(self) -> None:
        if self.method == "qlora" and self.dtype not in ("auto", "bfloat16"):
            raise ValueError(f"FinetuneConfig.method='qlora' computes in bfloat16; set dtype='bfloat16' or "
                             f"'auto' (not {self.dtype!r}), or use method='lora' for a {self.dtype} base")
        if self.dtype == "float16":
            if self.device == "cpu":
                raise ValueError("FinetuneConfig.dtype='float16' needs CUDA (loss scaling with a GradScaler); "
                                 "on a CPU use dtype='auto' or 'float32'")
            if self.method == "full":
                raise ValueError("FinetuneConfig.method='full' with dtype='float16' keeps fp16 master weights, "
                                 "which loss scaling cannot train; use dtype='bfloat16' or method='lora'")

    @property
    def effective_batch(self) -> int:
        """Chunks per optimiser step (``batch`` with an automatic micro-batch, else micro_batch x grad_accum)."""
        return self.batch if self.micro_batch == "auto" else self.micro_batch * self.grad_accum

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every setting (for manifests and run keys)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "FinetuneConfig":
        """A validated copy with some settings changed (a misspelt one answers "did you mean")."""
        check_known_fields(type(self), changes, "FinetuneConfig.replace")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FinetuneConfig":
        """Build from a mapping (a notebook's parameters or YAML); unknown keys are an error."""
        if not isinstance(d, Mapping):
            raise TypeError(f"expected a mapping of settings, got {type(d).__name__}")
        check_known_fields(cls, d)
        return cls(**dict(d))

    @classmethod
    def paper_qlora(cls, **overrides: Any) -> "FinetuneConfig":
        """The GPU recipe: QLoRA reference defaults (artidoro/qlora) within the paper's limits.

        nf4 + double quantization + bf16 compute, LoRA r=64 alpha=16 dropout 0.05 on all linear
        layers, paged AdamW 32-bit, lr 2e-4 constant with 3% warm-up, max_grad_norm 0.3; batch 64
        (paper) with the micro-batch and checkpointing chosen by the card's free memory; at most
        5 epochs (paper).
        """
        return preset("paper_qlora", **overrides)

    @classmethod
    def qlora_small_gpu(cls, **overrides: Any) -> "FinetuneConfig":
        """:meth:`paper_qlora` for 8-12 GB cards: micro-batch 2 x 32 with checkpointing (7B ~7 GiB)."""
        return preset("qlora_small_gpu", **overrides)

    @classmethod
    def cpu_default(cls, **overrides: Any) -> "FinetuneConfig":
        """The embedded CPU recipe: LoRA r=16 alpha=32, lr 1e-3 constant, batch 8 (4 x 2), dtype auto."""
        return preset("cpu", **overrides)


# name -> settings; the notebooks' FT_PRESET picks one (checked by :func:`preset`).
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "paper_qlora": dict(method="qlora", lora_r=64, lora_alpha=16, lora_dropout=0.05, lr=2e-4, epochs=5,
                        micro_batch="auto", grad_accum=1, batch=PAPER_BATCH, max_grad_norm=0.3,
                        warmup_ratio=0.03, schedule="constant", optimizer="auto", gradient_checkpointing=True,
                        dtype="bfloat16", checkpoint_every=100),
    "qlora_small_gpu": dict(method="qlora", lora_r=64, lora_alpha=16, lora_dropout=0.05, lr=2e-4, epochs=5,
                            micro_batch=2, grad_accum=PAPER_BATCH // 2, max_grad_norm=0.3, warmup_ratio=0.03,
                            schedule="constant", optimizer="auto", gradient_checkpointing=True,
                            dtype="bfloat16", checkpoint_every=100),
}


def preset(name: str, **overrides: Any) -> FinetuneConfig:
    """The named preset with ``overrides`` applied (notebook 03: ``preset(FT_PRESET, **FT_SETTINGS)``).

    Raises:
        ValueError: ``name`` is not one of :data:`PRESETS` (the message lists them), or an override
            is not a setting (the message names the closest one: "did you mean lr?").
    """
    if name not in PRESETS:
        raise ValueError(f"FT_PRESET={name!r} is not a known preset; use one of {sorted(PRESETS)} "
                         "(cpu: LoRA r=16 for CPUs; paper_qlora: nf4 QLoRA r=64, batch 64, GPU; "
                         "qlora_small_gpu: the same for 8-12 GB cards)")
    check_known_fields(FinetuneConfig, overrides, "FT_SETTINGS (or the preset's overrides)")
    return FinetuneConfig(**{**PRESETS[name], **overrides})


def _hash_settings(cfg: FinetuneConfig) -> dict[str, Any]:
    from ..device import resolve_device, resolve_dtype

    d = {k: v for k, v in cfg.to_dict().items() if k not in FinetuneConfig._NOT_IN_KEY}
    if d["dtype"] == "auto":  # "auto" trains in different precisions on different machines
        d["dtype"] = resolve_dtype("auto", resolve_device(cfg.device))
    return d


def run_key(model_name: str, texts: Sequence[str], cfg: FinetuneConfig) -> str:
    """Identity of a run: base model, data hash and every setting that changes the weights."""
    return content_hash("kinject-finetune-v1", model_name, content_hash(list(texts)), _hash_settings(cfg))


def is_trained(out_dir: Any, model_name: str, texts: Sequence[str], cfg: FinetuneConfig) -> bool:
    """True when ``out_dir`` holds a finished adapter for exactly this model, data and settings."""
    m = Path(out_dir) / MANIFEST
    if not m.exists():
        return False
    try:
        return read_json(m).get("key") == run_key(model_name, texts, cfg)
    except ValueError:
        return False
