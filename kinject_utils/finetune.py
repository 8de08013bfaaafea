"""Unsupervised continued pre-training (the paper's FT): 256-token chunks, (Q)LoRA, packing, resume.

The paper (Ovadia et al. 2023, section 4) fine-tunes on the knowledge base cut into equal chunks of
256 tokens, documents concatenated or split, BOS/EOS marking document boundaries; at most 5 epochs,
batch 64, learning rate searched on held-out paraphrases. It does not say LoRA or full FT; this
module defaults to the QLoRA reference recipe on a GPU (:meth:`FinetuneConfig.paper_qlora`) and to a
bf16 LoRA that measurably learns on the embedded CPU task (:meth:`FinetuneConfig.cpu_default`).

    chunks = chunk_corpus(texts, tokenizer)                  # equal 256-token chunks, BOS/EOS
    result = train_adapter("smollm2-135m", texts, FinetuneConfig.cpu_default(), "out/ft-reg")
    model, tok = load_finetuned("smollm2-135m", "out/ft-reg")  # peft model, eval mode
    memorisation_report(model, tok, {"kb": chunks})          # loss before vs after, per chunk set

The training loop is our own (not ``transformers.Trainer``) because exact resume needs the data
order to be a pure function of ``(seed, epoch)`` and the checkpoint to hold the RNG states, and
because chunks are already packed to 256 tokens (no collator, no padding). A checkpoint holds the
trainable weights, the optimizer state, the RNG states and the step, written to a temporary folder
and renamed into place; a killed run started again ends with the same adapter, bit for bit, as an
uninterrupted one (same seed, same machine; ``tests/test_finetune.py`` checks it).

Variants for notebook 03 (see :func:`plan_variants`): FT-reg (knowledge base only), FT-par(N)
(knowledge base + N paraphrases per document) at a fixed number of epochs (the paper's setting),
and the same corpora at a fixed number of optimiser steps, so that wording variety can be told
apart from extra training (FT-par(10) at 5 epochs takes 11x the steps of FT-reg).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .io import append_jsonl, content_hash, read_json, read_jsonl, write_json, write_jsonl

__all__ = [
    "FinetuneConfig",
    "TrainResult",
    "Variant",
    "chunk_corpus",
    "plan_steps",
    "corpus_for",
    "plan_variants",
    "split_heldout_paraphrases",
    "run_key",
    "is_trained",
    "train_adapter",
    "load_finetuned",
    "chunk_losses",
    "memorisation_report",
    "lr_search",
    "read_train_log",
    "load_paraphrases",
    "train_variants",
    "collect_train_loss",
    "memorisation_for",
    "plot_train_loss",
    "write_csv",
]

MANIFEST = "manifest.json"
TRAIN_LOG = "train_log.jsonl"
CKPT_DIR = "checkpoints"

METHODS = ("qlora", "lora", "full")
SCHEDULES = ("constant", "linear", "cosine")
OPTIMIZERS = ("auto", "adamw", "paged_adamw_32bit")
BUDGETS = ("epochs", "steps", "tokens")
DTYPES = ("bfloat16", "float32", "float16")
DEVICES = ("auto", "cpu", "cuda")
MAX_PAPER_EPOCHS = 5  # "at most 5 epochs" (paper, section 4.1)


# --------------------------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------------------------
def _boundary_ids(tokenizer: Any) -> tuple[int | None, int | None]:
    """(BOS, EOS) ids to put around each document; BOS is dropped when it equals EOS (GPT-2 style)."""
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    if bos is not None and bos == eos:
        bos = None  # one <|endoftext|> between documents is the convention for such tokenizers
    if bos is None and eos is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token, so document boundaries "
                         "cannot be marked; set tokenizer.eos_token (e.g. to a special token it has) first")
    return bos, eos


def chunk_corpus(texts: Sequence[str], tokenizer: Any, chunk_len: int = 256, *, pack: bool = True,
                 drop_last: bool = False) -> list[list[int]]:
    """Cut documents into equal chunks of ``chunk_len`` tokens, BOS/EOS marking document boundaries.

    Each document becomes ``[BOS] + tokens + [EOS]`` (whichever of the two the tokenizer has;
    tokens are encoded with ``add_special_tokens=False`` so Gemma's automatic BOS is not doubled).
    With ``pack`` (the paper's chunking) the documents are concatenated into one stream and cut
    every ``chunk_len`` tokens, so short documents share a chunk and long ones are split; only the
    last chunk can be shorter (dropped with ``drop_last``). Without ``pack`` each document is split
    on its own (chunks then need padding in a batch: the un-packed baseline). Empty documents are
    skipped. Deterministic: same texts and tokenizer, same chunks.

    Example:
        >>> chunk_corpus(["a b", "c"], tok, chunk_len=4)  # doctest: +SKIP
        [[BOS, a, b, EOS], [BOS, c, EOS]]

    Raises:
        TypeError: ``texts`` is not a list of strings.
        ValueError: ``chunk_len`` < 2, or the tokenizer has no BOS and no EOS.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts[{bad[0]}] is {type(texts[bad[0]]).__name__}, not str; pass document texts")
    if isinstance(chunk_len, bool) or not isinstance(chunk_len, int) or chunk_len < 2:
        raise ValueError(f"chunk_len must be an integer >= 2 (the paper uses 256), got {chunk_len!r}")
    bos, eos = _boundary_ids(tokenizer)
    docs = [t for t in texts if t.strip()]
    encoded = tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"] if docs else []
    pieces: list[list[int]] = []
    for ids in encoded:
        pieces.append(([bos] if bos is not None else []) + list(ids) + ([eos] if eos is not None else []))
    chunks: list[list[int]] = []
    if pack:
        stream = [t for p in pieces for t in p]
        chunks = [stream[i:i + chunk_len] for i in range(0, len(stream), chunk_len)]
        if drop_last and chunks and len(chunks[-1]) < chunk_len:
            chunks.pop()
    else:
        for p in pieces:
            chunks.extend(p[i:i + chunk_len] for i in range(0, len(p), chunk_len))
        if drop_last:
            chunks = [c for c in chunks if len(c) == chunk_len]
    return chunks


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------
_INT = (int,)
_NUM = (int, float)


@dataclasses.dataclass
class FinetuneConfig:
    """Settings of one continued pre-training run. Validated on creation; errors name the fix.

    Defaults are the CPU setting calibrated on the embedded fictional task (PAPER.md: LoRA r=16,
    alpha=32, lr 1e-3, batch 8 learned; lower learning rates learned nothing). The paper-scale GPU
    recipe is :meth:`paper_qlora`.

    Attributes:
        method: ``"qlora"`` (nf4 4-bit base, double quantization, bf16 compute, LoRA),
            ``"lora"`` (base in ``dtype``, LoRA) or ``"full"`` (every weight trained).
        lora_r, lora_alpha, lora_dropout: LoRA rank, scale numerator, dropout.
        target_modules: ``"all-linear"`` (every linear layer but the output head, as QLoRA) or a
            list of module names.
        lr: peak learning rate (paper searched [1e-6, 5e-5] for full FT; QLoRA uses 2e-4).
        epochs: passes over the corpus when ``budget="epochs"``; at most 5 (the paper's limit)
            unless ``allow_more_epochs``.
        micro_batch: chunks per forward pass.
        grad_accum: micro-batches per optimiser step (effective batch = micro_batch x grad_accum;
            the paper's is 64).
        max_grad_norm: gradient clipping (0 turns it off).
        warmup_ratio: fraction of the steps with a linear warm-up (0 = none).
        schedule: ``"constant"``, ``"linear"`` or ``"cosine"`` decay after warm-up.
        optimizer: ``"auto"`` (``paged_adamw_32bit`` on CUDA, ``adamw`` on CPU), ``"adamw"``,
            ``"paged_adamw_32bit"`` (bitsandbytes, CUDA only).
        weight_decay: AdamW weight decay.
        gradient_checkpointing: recompute activations in the backward pass (less memory, ~30% slower).
        seed: LoRA initialisation, data order (a function of seed and epoch) and dropout.
        checkpoint_every: save a resumable checkpoint every N optimiser steps (0 = never).
        packing: concatenate documents into full chunks (no padding) instead of one document per row.
        chunk_len: tokens per chunk (paper: 256).
        dtype: dtype of the base weights for ``lora``/``full`` (``bfloat16`` is fast on AMX CPUs
            and GPUs); QLoRA always computes in bf16. LoRA weights are kept in float32.
        budget: ``"epochs"`` (fixed passes; the paper), ``"steps"`` (``max_steps`` optimiser
            steps; the fair sweep) or ``"tokens"`` (``max_tokens`` real tokens, rounded up to steps).
        max_steps, max_tokens: the budget for ``steps`` / ``tokens``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    method: str = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: Any = "all-linear"
    lr: float = 1e-3
    epochs: int = 5
    allow_more_epochs: bool = False
    micro_batch: int = 4
    grad_accum: int = 2
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
    dtype: str = "bfloat16"
    budget: str = "epochs"
    max_steps: int = 0
    max_tokens: int = 0
    device: str = "auto"

    _TYPES = {
        "method": (str,), "lora_r": _INT, "lora_alpha": _NUM, "lora_dropout": _NUM, "lr": _NUM,
        "epochs": _INT, "allow_more_epochs": (bool,), "micro_batch": _INT, "grad_accum": _INT,
        "max_grad_norm": _NUM, "warmup_ratio": _NUM, "schedule": (str,), "optimizer": (str,),
        "weight_decay": _NUM, "gradient_checkpointing": (bool,), "seed": _INT,
        "checkpoint_every": _INT, "packing": (bool,), "chunk_len": _INT, "dtype": (str,),
        "budget": (str,), "max_steps": _INT, "max_tokens": _INT, "device": (str,),
    }
    # Settings that do not change the trained weights (left out of the run key).
    _NOT_IN_KEY = ("checkpoint_every",)

    def __post_init__(self) -> None:
        for name, types in self._TYPES.items():
            v = getattr(self, name)
            ok = isinstance(v, types) and (bool in types or not isinstance(v, bool))
            if not ok:
                hint = ""
                if isinstance(v, str) and types is _NUM:
                    hint = " (in YAML write a float with a dot, e.g. 1.0e-3: '1e-3' reads as a string)"
                want = "true/false" if types == (bool,) else ("a number" if types is _NUM else
                                                               "an integer" if types is _INT else "a string")
                raise TypeError(f"FinetuneConfig.{name} must be {want}, got {v!r} ({type(v).__name__}){hint}")
        if isinstance(self.lora_dropout, int):
            self.lora_dropout = float(self.lora_dropout)
        for name, allowed in (("method", METHODS), ("schedule", SCHEDULES), ("optimizer", OPTIMIZERS),
                              ("budget", BUDGETS), ("dtype", DTYPES), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"FinetuneConfig.{name}={getattr(self, name)!r} is not one of {list(allowed)}")
        tm = self.target_modules
        if not (tm == "all-linear" or (isinstance(tm, (list, tuple)) and tm and all(isinstance(m, str) for m in tm))):
            raise ValueError(f"FinetuneConfig.target_modules must be 'all-linear' or a non-empty list of "
                             f"module names such as ['q_proj', 'v_proj'], got {tm!r}")
        if isinstance(tm, tuple):
            self.target_modules = list(tm)
        for name in ("lora_r", "micro_batch", "grad_accum", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"FinetuneConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lora_alpha <= 0:
            raise ValueError(f"FinetuneConfig.lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"FinetuneConfig.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0.0 < self.lr < 1.0:
            raise ValueError(f"FinetuneConfig.lr must be in (0, 1), got {self.lr}; the paper searched "
                             "1e-6..5e-5 for full FT, QLoRA uses 2e-4, the CPU default is 1e-3")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"FinetuneConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for name in ("max_grad_norm", "weight_decay", "checkpoint_every", "max_steps", "max_tokens", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"FinetuneConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.chunk_len < 2:
            raise ValueError(f"FinetuneConfig.chunk_len must be >= 2 (paper: 256), got {self.chunk_len}")
        if self.budget == "epochs" and self.epochs > MAX_PAPER_EPOCHS and not self.allow_more_epochs:
            raise ValueError(f"FinetuneConfig.epochs={self.epochs}: the paper trains at most "
                             f"{MAX_PAPER_EPOCHS} epochs. Use epochs<={MAX_PAPER_EPOCHS}, or set "
                             "allow_more_epochs=True to go beyond on purpose")
        if self.budget == "steps" and self.max_steps < 1:
            raise ValueError("FinetuneConfig.budget='steps' needs max_steps >= 1 (the number of optimiser steps)")
        if self.budget == "tokens" and self.max_tokens < 1:
            raise ValueError("FinetuneConfig.budget='tokens' needs max_tokens >= 1 (real training tokens)")
        if self.method == "qlora" and self.dtype == "float32":
            raise ValueError("FinetuneConfig.method='qlora' computes in bfloat16; set dtype='bfloat16' "
                             "(or use method='lora' for a float32 base)")

    @property
    def effective_batch(self) -> int:
        """Chunks per optimiser step (micro_batch x grad_accum)."""
        return self.micro_batch * self.grad_accum

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every setting (for manifests and run keys)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "FinetuneConfig":
        """A validated copy with some settings changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FinetuneConfig":
        """Build from a mapping (a notebook's parameters or YAML); unknown keys are an error."""
        if not isinstance(d, Mapping):
            raise TypeError(f"expected a mapping of settings, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown FinetuneConfig setting(s) {unknown}; allowed: {sorted(names)}")
        return cls(**dict(d))

    @classmethod
    def paper_qlora(cls, **overrides: Any) -> "FinetuneConfig":
        """The GPU recipe: QLoRA reference defaults (artidoro/qlora) within the paper's limits.

        nf4 + double quantization + bf16 compute, LoRA r=64 alpha=16 dropout 0.05 on all linear
        layers, paged AdamW 32-bit, lr 2e-4 constant with 3% warm-up, max_grad_norm 0.3, gradient
        checkpointing; batch 64 (paper) = 4 x 16 accumulation; at most 5 epochs (paper).
        """
        base = dict(method="qlora", lora_r=64, lora_alpha=16, lora_dropout=0.05, lr=2e-4, epochs=5,
                    micro_batch=4, grad_accum=16, max_grad_norm=0.3, warmup_ratio=0.03,
                    schedule="constant", optimizer="auto", gradient_checkpointing=True,
                    dtype="bfloat16", checkpoint_every=100)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def cpu_default(cls, **overrides: Any) -> "FinetuneConfig":
        """The embedded CPU recipe: bf16 LoRA r=16 alpha=32, lr 1e-3 constant, batch 8 (4 x 2)."""
        return cls(**overrides)


def _hash_settings(cfg: FinetuneConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_dict().items() if k not in FinetuneConfig._NOT_IN_KEY}


def run_key(model_name: str, texts: Sequence[str], cfg: FinetuneConfig) -> str:
    """Identity of a run: base model, data hash and every setting that changes the weights."""
    return content_hash("kinject-finetune-v1", model_name, content_hash(list(texts)), _hash_settings(cfg))


def is_trained(out_dir: str | os.PathLike, model_name: str, texts: Sequence[str], cfg: FinetuneConfig) -> bool:
    """True when ``out_dir`` holds a finished adapter for exactly this model, data and settings."""
    m = Path(out_dir) / MANIFEST
    if not m.exists():
        return False
    try:
        return read_json(m).get("key") == run_key(model_name, texts, cfg)
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# Planning: steps, data order, learning rate
# --------------------------------------------------------------------------------------------
def plan_steps(n_chunks: int, cfg: FinetuneConfig, real_tokens: int | None = None) -> dict[str, int]:
    """Steps per epoch and total optimiser steps for ``n_chunks`` chunks under ``cfg``'s budget.

    Every epoch is ``ceil(n_chunks / effective_batch)`` steps (the last one smaller). A ``tokens``
    budget becomes ``ceil(max_tokens / mean real tokens per step)`` steps (needs ``real_tokens``,
    the corpus' token count).

    Example:
        >>> plan_steps(100, FinetuneConfig(epochs=2))  # batch 8: 13 steps per epoch
        {'steps_per_epoch': 13, 'total_steps': 26}
    """
    if n_chunks < 1:
        raise ValueError("no training chunks: the corpus is empty")
    spe = math.ceil(n_chunks / cfg.effective_batch)
    if cfg.budget == "epochs":
        total = spe * cfg.epochs
    elif cfg.budget == "steps":
        total = cfg.max_steps
    else:
        if not real_tokens:
            raise ValueError("budget='tokens' needs the corpus token count (real_tokens)")
        total = math.ceil(cfg.max_tokens / (real_tokens / spe))
    return {"steps_per_epoch": spe, "total_steps": int(total)}


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """Chunk order of one epoch: a pure function of (seed, epoch), so a resumed run sees the same data."""
    import torch

    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g).tolist()


def _lr_at(step: int, total: int, cfg: FinetuneConfig) -> float:
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


# --------------------------------------------------------------------------------------------
# Variants (notebook 03)
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Variant:
    """One adapter to train: which corpus (N paraphrases per document) under which budget.

    Attributes:
        name: folder and method name (``ft-reg``, ``ft-par``, ``ft-par-3``, ``ft-reg-fixed``...).
        n_paraphrases: paraphrases per document added to the knowledge base (0 = FT-reg).
        budget: ``"epochs"`` (the paper's setting) or ``"steps"`` (fixed optimiser steps).
        max_steps: the step budget when ``budget == "steps"``.
        sweep: which sweep(s) the adapter belongs to: ``"epochs"``, ``"steps"`` or ``"epochs+steps"``.
    """

    name: str
    n_paraphrases: int
    budget: str = "epochs"
    max_steps: int = 0
    sweep: str = "epochs"


def corpus_for(docs: Sequence[Any], paraphrases: Mapping[str, Sequence[str]], n: int) -> list[str]:
    """Training texts of FT-par(n): every document, then round 1 of paraphrases, round 2, ...

    Args:
        docs: ``tasks.Document`` objects (``doc_id``, ``text``).
        paraphrases: doc_id -> rewordings; documents with fewer than ``n`` contribute what they have.
        n: paraphrases per document (0 = FT-reg: the knowledge base alone).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n (paraphrases per document) must be an integer >= 0, got {n!r}")
    texts = [d.text for d in docs]
    for r in range(n):
        texts.extend(paraphrases[d.doc_id][r] for d in docs if len(paraphrases.get(d.doc_id, ())) > r)
    return texts


def plan_variants(sweep: Sequence[int], n_par: int, steps_of: Callable[[int], int], *,
                  fixed_budget: str = "ft-reg", available: int | None = None) -> list[Variant]:
    """The adapters for one model x task: FT-reg, FT-par(n_par), the sweep, the fixed-step sweep.

    Fixed-epoch variants train each corpus for the configured epochs (the paper). Fixed-step
    variants train every corpus for the same number of optimiser steps S, so they differ only in
    wording variety: ``fixed_budget="ft-reg"`` sets S to FT-reg's steps (each fact is still seen
    about ``epochs`` times, spread over 1+N wordings; cheap), ``"ft-par-max"`` to the largest
    FT-par's steps (FT-reg then trains ~(1+N) times longer on the same text; costly), ``"off"``
    skips them. A fixed-step variant whose corpus already trains for S steps at fixed epochs is not
    trained twice: that adapter is marked ``sweep="epochs+steps"``.

    Args:
        sweep: paraphrase counts to train at fixed epochs (0 = FT-reg).
        n_par: N of the headline FT-par (Table 2); 0 or None-equivalent skips FT-par.
        steps_of: n -> optimiser steps of FT-par(n) at fixed epochs.
        available: the most paraphrases every document has; larger counts are dropped with a message.
    """
    if fixed_budget not in ("ft-reg", "ft-par-max", "off"):
        raise ValueError(f"fixed_budget must be 'ft-reg', 'ft-par-max' or 'off', got {fixed_budget!r}")
    counts = sorted({0, *[int(n) for n in sweep], *([int(n_par)] if n_par else [])})
    if any(n < 0 for n in counts):
        raise ValueError(f"paraphrase counts must be >= 0, got {sorted(counts)}")
    if available is not None:
        dropped = [n for n in counts if n > available]
        if dropped:
            print(f"[03] only {available} paraphrases per document available: skipping N={dropped}")
        counts = [n for n in counts if n <= available]

    def name(n: int) -> str:
        return "ft-reg" if n == 0 else ("ft-par" if n == n_par else f"ft-par-{n}")

    steps = {n: steps_of(n) for n in counts}
    out: list[Variant] = []
    target = None
    if fixed_budget != "off" and len(counts) > 1:
        target = steps[0] if fixed_budget == "ft-reg" else steps[max(counts)]
    for n in counts:
        out.append(Variant(name(n), n, "epochs", 0, "epochs+steps" if steps[n] == target else "epochs"))
    if target is not None:
        out.extend(Variant(f"{name(n)}-fixed", n, "steps", target, "steps") for n in counts if steps[n] != target)
    return out


def split_heldout_paraphrases(paraphrases: Mapping[str, Sequence[str]], n_docs: int, per_doc: int = 2,
                              seed: int = 0) -> tuple[dict[str, list[str]], list[str]]:
    """Hold out ``per_doc`` paraphrases of ``n_docs`` random documents for the learning-rate search.

    The paper held out 240 chunks x 2 paraphrases per task; here the held-out rewordings are
    removed from the training paraphrases so the search measures generalisation to new wording.

    Returns:
        (training paraphrases, held-out texts).
    """
    eligible = sorted(d for d, ps in paraphrases.items() if len(ps) > per_doc)
    rng = random.Random(seed)
    chosen = set(rng.sample(eligible, min(n_docs, len(eligible))))
    train: dict[str, list[str]] = {}
    held: list[str] = []
    for d, ps in paraphrases.items():
        ps = list(ps)
        if d in chosen:
            held.extend(ps[-per_doc:])
            ps = ps[:-per_doc]
        train[d] = ps
    return train, held


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainResult:
    """What a finished run reports (also stored in ``manifest.json``)."""

    out_dir: str
    steps: int
    epochs: float
    tokens: int
    real_token_fraction: float
    wall_s: float
    tokens_per_s: float
    final_loss: float
    resumed_from_step: int
    skipped: bool
    manifest: dict[str, Any]


class TrainingInterrupted(RuntimeError):
    """Raised by a callback to stop a run (tests use it to simulate a kill)."""


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("FinetuneConfig.device='cuda' but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return device


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "kinject"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: Mapping[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _build_model(model_name: str, cfg: FinetuneConfig, device: str) -> tuple[Any, Any]:
    """Load the base model for ``cfg.method`` and make the right parameters trainable."""
    import torch

    from .models import disable_bnb_cpu_inference_repack, load_causal_lm

    if cfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model, tok = load_causal_lm(model_name, dtype="bfloat16", quantization="nf4", device=device)
        # Casts norms/embeddings to fp32 and freezes the base; checkpointing handled below.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model, tok = load_causal_lm(model_name, dtype=cfg.dtype, device=device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "config"):
        model.config.use_cache = False
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(cfg.seed)  # LoRA A initialisation
        lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.target_modules, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, lcfg)
    disable_bnb_cpu_inference_repack(model)  # the trap: keep 4-bit layers trainable after eval forwards
    return model, tok


def _make_optimizer(params: list, cfg: FinetuneConfig, device: str) -> Any:
    import torch

    name = cfg.optimizer
    if name == "auto":
        name = "paged_adamw_32bit" if device == "cuda" else "adamw"
    if name == "paged_adamw_32bit":
        if device != "cuda":
            raise ValueError("optimizer='paged_adamw_32bit' needs a CUDA GPU (bitsandbytes pages to "
                             "GPU memory); use optimizer='adamw' or 'auto' on a CPU")
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW32bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _collate(chunks: Sequence[Sequence[int]], pad_id: int, device: str) -> tuple[Any, Any, Any, int, int]:
    """Right-pad a micro-batch; labels are -100 on padding. Returns ids, mask, labels, real, padded."""
    import torch

    L = max(len(c) for c in chunks)
    ids = torch.full((len(chunks), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(chunks), L), dtype=torch.long)
    for i, c in enumerate(chunks):
        ids[i, :len(c)] = torch.tensor(c, dtype=torch.long)
        mask[i, :len(c)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    real = int(mask.sum())
    return ids.to(device), mask.to(device), labels.to(device), real, len(chunks) * L


def _trainable(model: Any) -> list[tuple[str, Any]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _latest_checkpoint(out: Path, key: str) -> Path | None:
    ck = out / CKPT_DIR
    if not ck.is_dir():
        return None
    done = []
    for d in ck.iterdir():
        if d.is_dir() and d.name.startswith("step-") and (d / "state.pt").exists():
            meta = d / "meta.json"
            if meta.exists() and read_json(meta).get("key") == key:
                done.append((int(d.name.split("-")[1]), d))
    return max(done)[1] if done else None


def _save_checkpoint(out: Path, model: Any, optimizer: Any, step: int, state: dict[str, Any], key: str) -> None:
    """Write ``checkpoints/step-N`` atomically (temp folder, rename), then drop older ones."""
    import torch

    ck = out / CKPT_DIR
    ck.mkdir(parents=True, exist_ok=True)
    final = ck / f"step-{step:07d}"
    tmp = ck / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save({"params": {n: p.detach().cpu().clone() for n, p in _trainable(model)},
                "optimizer": optimizer.state_dict(), "rng": _rng_state(), **state}, tmp / "state.pt")
    write_json(tmp / "meta.json", {"key": key, "step": step})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for d in ck.iterdir():
        if d != final and d.name.startswith(("step-", ".tmp-step-")):
            shutil.rmtree(d, ignore_errors=True)


def _load_checkpoint(path: Path, model: Any, optimizer: Any) -> dict[str, Any]:
    import torch

    st = torch.load(path / "state.pt", map_location="cpu", weights_only=False)  # our own file
    params = dict(_trainable(model))
    missing = set(params) - set(st["params"])
    if missing:
        raise RuntimeError(f"checkpoint {path} lacks {len(missing)} trainable tensors; delete {path.parent} to start over")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(st["params"][n].to(p.device))
    optimizer.load_state_dict(st["optimizer"])
    _set_rng_state(st["rng"])
    return st


def read_train_log(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of ``train_log.jsonl`` (step, epoch, loss, lr, tokens, wall_s) in an adapter folder."""
    p = Path(out_dir) / TRAIN_LOG
    return list(read_jsonl(p, tolerate_torn_tail=True)) if p.exists() else []


def _result_from_manifest(out: Path, man: dict[str, Any], skipped: bool) -> TrainResult:
    return TrainResult(out_dir=str(out), steps=man["steps"], epochs=man["epochs"], tokens=man["tokens_trained"],
                       real_token_fraction=man["real_token_fraction"], wall_s=man["wall_s"],
                       tokens_per_s=man["tokens_per_s"], final_loss=man["final_loss"],
                       resumed_from_step=man.get("resumed_from_step", 0), skipped=skipped, manifest=man)


def train_adapter(model_name: str, texts: Sequence[str], cfg: FinetuneConfig, out_dir: str | os.PathLike, *,
                  resume: bool = True, progress: bool = True,
                  callback: Callable[[int, float], None] | None = None) -> TrainResult:
    """Continued pre-training of ``model_name`` on ``texts``; saves the adapter and ``manifest.json``.

    A finished run with the same key (model, data hash, settings) is not repeated: its manifest is
    returned with ``skipped=True``. An unfinished one resumes from its last checkpoint when
    ``resume`` (same key only; a checkpoint of other settings is ignored and replaced).

    Args:
        model_name: registry name, folder or hub id (see :func:`kinject_utils.models.load_causal_lm`).
        texts: training documents (knowledge base, plus paraphrases for FT-par).
        cfg: the settings.
        out_dir: adapter folder (``{RESULTS_DIR}/03_adapters/<model>/<task>/<variant>``).
        resume: continue from a checkpoint in ``out_dir`` if there is one.
        progress: show a tqdm bar.
        callback: called as ``callback(step, loss)`` after every optimiser step (and checkpoint);
            raising stops the run (tests simulate a kill this way).

    Returns:
        A :class:`TrainResult`; the per-step losses are in ``out_dir/train_log.jsonl``.
    """
    import torch
    from tqdm.auto import tqdm

    if not isinstance(cfg, FinetuneConfig):
        raise TypeError(f"cfg must be a FinetuneConfig, got {type(cfg).__name__}; "
                        "build one with FinetuneConfig(...) or FinetuneConfig.from_dict({...})")
    texts = list(texts)
    out = Path(out_dir)
    key = run_key(model_name, texts, cfg)
    if (out / MANIFEST).exists():
        man = read_json(out / MANIFEST)
        if man.get("key") == key:
            return _result_from_manifest(out, man, skipped=True)
        (out / MANIFEST).unlink()  # other settings or data: retrain in place
    out.mkdir(parents=True, exist_ok=True)
    device = _resolve_device(cfg.device)

    model, tok = _build_model(model_name, cfg, device)
    chunks = chunk_corpus(texts, tok, cfg.chunk_len, pack=cfg.packing)
    corpus_tokens = sum(len(c) for c in chunks)
    plan = plan_steps(len(chunks), cfg, corpus_tokens)
    spe, total = plan["steps_per_epoch"], plan["total_steps"]
    params = [p for _, p in _trainable(model)]
    if not params:
        raise RuntimeError("no trainable parameters: check target_modules against the model's layer names")
    optimizer = _make_optimizer(params, cfg, device)
    _seed_all(cfg.seed + 1)  # dropout stream, independent of the LoRA initialisation

    start, tokens, padded, wall_prev, resumed_from = 0, 0, 0, 0.0, 0
    ck = _latest_checkpoint(out, key) if resume else None
    if ck is not None:
        st = _load_checkpoint(ck, model, optimizer)
        start, tokens, padded, wall_prev = st["step"], st["tokens"], st["padded"], st["wall_s"]
        resumed_from = start
        rows = [r for r in read_train_log(out) if r["step"] <= start]
        write_jsonl(out / TRAIN_LOG, rows)  # drop steps logged after the checkpoint
    else:
        shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
        (out / TRAIN_LOG).unlink(missing_ok=True)

    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    model.train()
    t0 = time.time()
    orders: dict[int, list[int]] = {}
    loss_val = float("nan")
    bar = tqdm(total=total, initial=start, disable=not progress, desc=f"train {out.name}", unit="step")
    for step in range(start, total):
        epoch, k = divmod(step, spe)
        if epoch not in orders:
            orders = {epoch: _epoch_order(len(chunks), cfg.seed, epoch)}
        idx = orders[epoch][k * cfg.effective_batch:(k + 1) * cfg.effective_batch]
        # Loss is the mean over every predicted token of the whole step, whatever the micro-batching.
        n_pred = sum(len(chunks[i]) - 1 for i in idx)
        for g in optimizer.param_groups:
            g["lr"] = _lr_at(step, total, cfg)
        step_loss = 0.0
        micros = [[chunks[i] for i in idx[j:j + cfg.micro_batch]] for j in range(0, len(idx), cfg.micro_batch)]
        if cfg.packing:  # the corpus' one short tail chunk gets its own forward: no padding at all
            micros = [[c for c in m if len(c) == n] for m in micros for n in sorted({len(c) for c in m}, reverse=True)]
        for micro in micros:
            ids, mask, labels, real, pad = _collate(micro, pad_id, device)
            n_micro = sum(len(c) - 1 for c in micro)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss * (n_micro / n_pred)
            loss.backward()
            step_loss += float(loss.detach())
            del loss  # free this micro-batch's logits before the next forward
            tokens += real
            padded += pad
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_val = step_loss
        wall = wall_prev + time.time() - t0
        append_jsonl(out / TRAIN_LOG, {"step": step + 1, "epoch": round(epoch + (k + 1) / spe, 6),
                                       "loss": loss_val, "lr": optimizer.param_groups[0]["lr"],
                                       "tokens": tokens, "wall_s": round(wall, 3)})
        bar.update(1)
        bar.set_postfix(loss=f"{loss_val:.3f}")
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            _save_checkpoint(out, model, optimizer, step + 1,
                             {"step": step + 1, "tokens": tokens, "padded": padded, "wall_s": wall}, key)
        if callback is not None:
            callback(step + 1, loss_val)
    bar.close()

    wall = wall_prev + time.time() - t0
    if cfg.method == "full":
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
    else:
        model.save_pretrained(out)
    from .models import resolve_model_dir

    man = {
        "key": key, "base_model": model_name, "base_model_path": resolve_model_dir(model_name),
        "method": cfg.method, "data_hash": content_hash(texts), "n_texts": len(texts),
        "n_chunks": len(chunks), "corpus_tokens": corpus_tokens, "settings": cfg.to_dict(), "seed": cfg.seed,
        "versions": _versions(), "device": device, "steps": total, "steps_per_epoch": spe,
        "epochs": round(total / spe, 4), "tokens_trained": tokens,
        "real_token_fraction": round(tokens / padded, 4) if padded else 1.0,
        "wall_s": round(wall, 2), "tokens_per_s": round((tokens / wall) if wall > 0 else 0.0, 1),
        "final_loss": loss_val, "resumed_from_step": resumed_from,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(out / MANIFEST, man)  # written last: its presence means the adapter is complete
    shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
    del model, optimizer
    return _result_from_manifest(out, man, skipped=False)


# --------------------------------------------------------------------------------------------
# Loading and measuring
# --------------------------------------------------------------------------------------------
def load_finetuned(model_name: str, adapter_dir: str | os.PathLike, dtype: str = "float32", *,
                   quantization: str | None = None, device: str = "cpu", merge: bool = False) -> tuple[Any, Any]:
    """Load a fine-tuned model for scoring (notebook 05): the base plus the adapter, in eval mode.

    Args:
        model_name: the base model (as trained; checked against the manifest).
        adapter_dir: a folder written by :func:`train_adapter`.
        dtype: base weights' dtype for scoring (``float32`` matches lm-eval).
        quantization: ``"nf4"`` to score on the 4-bit base a QLoRA adapter was trained on.
        merge: fold the LoRA weights into the base (faster scoring; returns a plain model).

    Returns:
        ``(model, tokenizer)``: a ``peft.PeftModel`` (or merged model) in eval mode.
    """
    from .models import load_causal_lm

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / MANIFEST).exists():
        raise FileNotFoundError(f"{adapter_dir} holds no {MANIFEST}: it is not a finished adapter; "
                                "run notebook 03 (train_adapter) first")
    man = read_json(adapter_dir / MANIFEST)
    if man.get("base_model") != model_name:
        raise ValueError(f"{adapter_dir} was trained on {man.get('base_model')!r}, not {model_name!r}; "
                         "pass the base model named in its manifest.json")
    if man.get("method") == "full":
        model, tok = load_causal_lm(str(adapter_dir), dtype=dtype, quantization=quantization, device=device)
        return model, tok
    from peft import PeftModel

    base, tok = load_causal_lm(model_name, dtype=dtype, quantization=quantization, device=device)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    if merge:
        model = model.merge_and_unload()
    model.eval()
    return model, tok


def chunk_losses(model: Any, tokenizer: Any, chunks: Sequence[Sequence[int]], batch_size: int = 8,
                 progress: bool = False) -> list[float]:
    """Mean next-token loss (nats/token) of ``model`` on each chunk (no grad, eval mode).

    Example:
        >>> chunk_losses(model, tok, chunk_corpus(texts, tok))  # doctest: +SKIP
        [2.91, 3.05, ...]
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from .models import disable_bnb_cpu_inference_repack

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    disable_bnb_cpu_inference_repack(model)  # an eval forward must not break later 4-bit training
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    with torch.no_grad():
        for i in tqdm(range(0, len(chunks), batch_size), disable=not progress, desc="chunk losses"):
            ids, mask, labels, _, _ = _collate(chunks[i:i + batch_size], pad_id, str(device))
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            tgt = labels[:, 1:]
            nll = F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100, reduction="none")
            n = (tgt != -100).sum(1).clamp(min=1)
            out.extend((nll.sum(1) / n).tolist())
    if was_training:
        model.train()
    return out


def memorisation_report(model: Any, tokenizer: Any, chunk_sets: Mapping[str, Sequence[Sequence[int]]], *,
                        batch_size: int = 8, max_chunks: int | None = None, seed: int = 0) -> Any:
    """How much of its training text an adapter reproduces: loss before (adapter off) vs after.

    Args:
        model: a ``peft.PeftModel`` (from :func:`load_finetuned`); "before" runs with the adapter
            disabled, so one loaded model gives both numbers.
        chunk_sets: name -> chunks (e.g. ``{"kb": ..., "paraphrases": ...}``).
        max_chunks: score at most this many chunks per set (a seeded sample), to bound the cost.

    Returns:
        A ``pandas.DataFrame``: split, n_chunks, loss_before, loss_after, delta, ppl_before, ppl_after.
    """
    import pandas as pd

    if not hasattr(model, "disable_adapter"):
        raise TypeError("memorisation_report needs a peft model (load_finetuned(..., merge=False))")
    rows = []
    for name, chunks in chunk_sets.items():
        chunks = list(chunks)
        if max_chunks and len(chunks) > max_chunks:
            chunks = [chunks[i] for i in sorted(random.Random(seed).sample(range(len(chunks)), max_chunks))]
        if not chunks:
            continue
        with model.disable_adapter():
            before = chunk_losses(model, tokenizer, chunks, batch_size)
        after = chunk_losses(model, tokenizer, chunks, batch_size)
        w = [len(c) - 1 for c in chunks]  # token-weighted means
        lb = sum(a * b for a, b in zip(before, w)) / sum(w)
        la = sum(a * b for a, b in zip(after, w)) / sum(w)
        rows.append({"split": name, "n_chunks": len(chunks), "loss_before": lb, "loss_after": la,
                     "delta": la - lb, "ppl_before": math.exp(lb), "ppl_after": math.exp(la)})
    return pd.DataFrame(rows)


def lr_search(model_name: str, train_texts: Sequence[str], heldout_texts: Sequence[str], cfg: FinetuneConfig,
              lrs: Sequence[float], out_dir: str | os.PathLike, *, batch_size: int = 8,
              progress: bool = True) -> Any:
    """Pick the learning rate by held-out paraphrase loss, as the paper did (scaled down).

    Trains one adapter per learning rate on ``train_texts`` (resumable: each lives in
    ``out_dir/lr-<lr>``) and measures the mean loss on chunks of ``heldout_texts`` (paraphrases
    never trained on: :func:`split_heldout_paraphrases`).

    Returns:
        A ``pandas.DataFrame`` (lr, heldout_loss_before, heldout_loss_after, train_final_loss,
        best) sorted by lr; ``best`` marks the lowest held-out loss.
    """
    import pandas as pd

    if not lrs:
        raise ValueError("lrs is empty; give the learning rates to try, e.g. [3e-4, 1e-3, 3e-3]")
    rows = []
    for lr in lrs:
        sub = Path(out_dir) / f"lr-{lr:g}"
        res = train_adapter(model_name, train_texts, cfg.replace(lr=float(lr)), sub, progress=progress)
        model, tok = load_finetuned(model_name, sub, dtype=cfg.dtype if cfg.method != "qlora" else "bfloat16")
        held = chunk_corpus(list(heldout_texts), tok, cfg.chunk_len, pack=cfg.packing)
        rep = memorisation_report(model, tok, {"heldout": held}, batch_size=batch_size)
        rows.append({"lr": float(lr), "heldout_loss_before": float(rep.loss_before[0]),
                     "heldout_loss_after": float(rep.loss_after[0]), "train_final_loss": res.final_loss})
        del model
    df = pd.DataFrame(rows).sort_values("lr").reset_index(drop=True)
    df["best"] = df.heldout_loss_after == df.heldout_loss_after.min()
    return df


# --------------------------------------------------------------------------------------------
# Notebook 03 orchestration: one call per step of the notebook
# --------------------------------------------------------------------------------------------
def load_paraphrases(results_dir: str | os.PathLike, task: Any) -> tuple[dict[str, list[str]], str]:
    """Paraphrases for FT-par: notebook 02's file, else the task's own rewordings, else none.

    Returns:
        (doc_id -> paraphrases, a line saying where they came from).
    """
    path = Path(results_dir) / "02_paraphrases" / f"{task.name}.jsonl"
    if path.exists():
        par = {r["doc_id"]: [str(p) for p in r.get("paraphrases", [])] for r in read_jsonl(path)}
        return par, f"{path} ({len(par)} documents)"
    if task.paraphrases:
        return dict(task.paraphrases), f"the task's own rewordings (paraphrases.jsonl, {len(task.paraphrases)} documents)"
    return {}, f"none: {path} does not exist and the task ships no rewordings (FT-par is skipped)"


def model_slug(model_name: str) -> str:
    """Folder-safe name of a model: registry names as they are, hub ids with '__', folders by basename."""
    p = Path(model_name)
    if p.exists():
        return p.name
    return model_name.replace("/", "__")


def _tokenizer(model_name: str) -> Any:
    from transformers import AutoTokenizer

    from .models import resolve_model_dir

    return AutoTokenizer.from_pretrained(resolve_model_dir(model_name))


def train_variants(model_name: str, task: Any, paraphrases: Mapping[str, Sequence[str]], cfg: FinetuneConfig,
                   adapters_root: str | os.PathLike, *, sweep: Sequence[int] = (0,), n_par: int = 0,
                   fixed_budget: str = "off", progress: bool = True) -> list[dict[str, Any]]:
    """Train (or find already trained) every adapter of one model x task; return index rows.

    Adapters go to ``adapters_root/<model>/<task>/<variant>/``; a variant whose manifest matches
    the model, data hash and settings is not retrained, a half-trained one resumes.

    Returns:
        Rows for ``03_adapters/index.csv``: model, task, variant, n_paraphrases, budget,
        budget_steps, epochs, sweep, tokens, final_loss, wall_s, adapter_dir.
    """
    if not task.docs:
        raise ValueError(f"task {task.name} has no knowledge base (kb.jsonl is empty): nothing to fine-tune on")
    tok = _tokenizer(model_name)
    counts = [n for n in sorted({0, *sweep, n_par}) if n >= 0]
    available = min((len(paraphrases.get(d.doc_id, ())) for d in task.docs), default=0)
    corpora: dict[int, list[str]] = {}
    steps: dict[int, int] = {}
    for n in counts:
        if n <= available:
            corpora[n] = corpus_for(task.docs, paraphrases, n)
            chunks = chunk_corpus(corpora[n], tok, cfg.chunk_len, pack=cfg.packing)
            steps[n] = plan_steps(len(chunks), cfg, sum(map(len, chunks)))["total_steps"]
    variants = plan_variants(sweep, n_par, lambda n: steps[n], fixed_budget=fixed_budget, available=available)
    rows = []
    for v in variants:
        vcfg = cfg if v.budget == "epochs" else cfg.replace(budget="steps", max_steps=v.max_steps)
        out = Path(adapters_root) / model_slug(model_name) / task.name / v.name
        res = train_adapter(model_name, corpora[v.n_paraphrases], vcfg, out, progress=progress)
        print(f"[03] {model_name} / {task.name} / {v.name}: {'already trained' if res.skipped else 'trained'}, "
              f"{res.steps} steps ({res.epochs:g} epochs), {res.tokens} tokens, final loss {res.final_loss:.3f}, "
              f"{res.tokens_per_s:.0f} tok/s, {res.real_token_fraction:.1%} real tokens")
        rows.append({"model": model_name, "task": task.name, "variant": v.name, "n_paraphrases": v.n_paraphrases,
                     "budget": "epochs" if v.budget == "epochs" else "steps", "budget_steps": res.steps,
                     "epochs": res.epochs, "sweep": v.sweep, "tokens": res.tokens, "final_loss": res.final_loss,
                     "wall_s": res.wall_s, "adapter_dir": str(out)})
    return rows


def collect_train_loss(index_rows: Sequence[Mapping[str, Any]]) -> Any:
    """The per-step training losses of every adapter as one table (``03_train_loss.csv``)."""
    import pandas as pd

    frames = []
    for r in index_rows:
        log = read_train_log(r["adapter_dir"])
        if log:
            df = pd.DataFrame(log)[["step", "epoch", "loss", "tokens"]]
            frames.append(df.assign(model=r["model"], task=r["task"], variant=r["variant"]))
    cols = ["model", "task", "variant", "step", "epoch", "loss", "tokens"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def memorisation_for(index_rows: Sequence[Mapping[str, Any]], tasks_by_name: Mapping[str, Any],
                     paraphrases_by_task: Mapping[str, Mapping[str, Sequence[str]]], *, dtype: str = "bfloat16",
                     max_chunks: int | None = 32, batch_size: int = 8, seed: int = 0) -> Any:
    """Loss on the knowledge base (and on the trained paraphrases) before vs after each adapter.

    ``kb`` rows measure how much of the original text an adapter reproduces; ``paraphrases`` rows
    (FT-par variants) the same on the rewordings it trained on. Returns the ``03_memorisation.csv`` table.
    """
    import pandas as pd

    frames = []
    for r in index_rows:
        task = tasks_by_name[r["task"]]
        model, tok = load_finetuned(r["model"], r["adapter_dir"], dtype=dtype)
        par = paraphrases_by_task.get(r["task"], {})
        n = int(r["n_paraphrases"])
        sets = {"kb": chunk_corpus([d.text for d in task.docs], tok)}
        if n:
            extra = corpus_for(task.docs, par, n)[len(task.docs):]
            sets["paraphrases"] = chunk_corpus(extra, tok)
        rep = memorisation_report(model, tok, sets, batch_size=batch_size, max_chunks=max_chunks, seed=seed)
        frames.append(rep.assign(model=r["model"], task=r["task"], variant=r["variant"], n_paraphrases=n))
        del model
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    return df[["model", "task", "variant", "n_paraphrases", *[c for c in rep.columns]]]


def plot_train_loss(loss_df: Any, model: str, task: str) -> Any:
    """Training loss per optimiser step (x = epochs), one line per variant (the paper's Figure 3)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    sub = loss_df[(loss_df.model == model) & (loss_df.task == task)]
    for name, g in sub.groupby("variant", sort=True):
        ax.plot(g.epoch, g.loss, marker=".", label=name)
    ax.set(xlabel="epoch", ylabel="training loss (nats/token)", title=f"03 training loss: {model} on {task}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_csv(df: Any, path: str | os.PathLike) -> Path:
    """Write a table atomically (no index column)."""
    from .io import atomic_write_text

    return atomic_write_text(path, df.to_csv(index=False))
