"""Unsupervised continued pre-training (the paper's FT): 256-token chunks, (Q)LoRA, packing, resume (03).

One concern per module:

    config       FinetuneConfig, the named presets (cpu, paper_qlora, qlora_small_gpu), run keys
    chunking     documents -> equal 256-token chunks with BOS/EOS at document boundaries
    schedule     optimiser steps of a budget, data order, learning-rate schedule
    memory       micro-batch and checkpointing for a CUDA card (memory model, CPU-testable)
    plan         tokens, steps and expected minutes before training, with a budget warning
    checkpoints  resumable state, the train log, the result of a run
    loop         train_adapter: the training loop
    load         load_finetuned: base + adapter on the run's device (QLoRA on its 4-bit base)
    evaluate     chunk losses, memorisation (shared "before" pass), learning-rate search
    variants     FT-reg / FT-par / the sweep, their corpora, the relocatable adapter index

    cfg = preset("cpu", epochs=2)                              # dtype "auto": fp32 here, bf16 with AMX
    plan_training("smollm2-135m", texts, cfg)["minutes"]      # before training
    result = train_adapter("smollm2-135m", texts, cfg, "out/ft-reg")
    model, tok = load_finetuned("smollm2-135m", "out/ft-reg", device="auto", dtype="auto")
"""
from .checkpoints import TrainResult, read_train_log
from .chunking import chunk_corpus
from .config import CKPT_DIR, MANIFEST, PAPER_BATCH, PRESETS, TRAIN_LOG, FinetuneConfig, is_trained, preset, run_key
from .evaluate import chunk_losses, fit_search, lr_search, memorisation_for, memorisation_report
from .load import AdapterSwitch, load_finetuned
from .loop import TrainingInterrupted, resolve_run, train_adapter
from .memory import Shape, choose_micro_batch, predict_gib
from .plan import plan_task, plan_training, tokens_per_s
from .schedule import epoch_order, lr_at, plan_steps
from .variants import (
                     INDEX_COLUMNS,
                     Variant,
                     collect_train_loss,
                     corpus_for,
                     paraphrases_for,
                     plan_variants,
                     read_adapter_index,
                     split_heldout_paraphrases,
                     train_variants,
                     variant_corpora,
                     write_adapter_index,
)

__all__ = [
    "CKPT_DIR", "INDEX_COLUMNS", "MANIFEST", "PAPER_BATCH", "PRESETS", "TRAIN_LOG",
    "FinetuneConfig", "Shape", "TrainResult", "TrainingInterrupted", "Variant",
    "choose_micro_batch", "chunk_corpus", "chunk_losses", "collect_train_loss", "corpus_for", "epoch_order",
    "AdapterSwitch", "fit_search", "is_trained", "load_finetuned", "lr_at", "lr_search", "memorisation_for",
    "memorisation_report",
    "paraphrases_for", "plan_steps", "plan_task", "plan_training", "plan_variants", "predict_gib", "preset",
    "read_adapter_index", "read_train_log", "resolve_run", "run_key", "split_heldout_paraphrases",
    "tokens_per_s", "train_adapter", "train_variants", "variant_corpora", "write_adapter_index",
]
