"""Supervised fine-tuning question -> answer, with per-epoch accuracy by category (notebook 07).

Each training set gets a fresh LoRA adapter on the same base model, the same number of epochs and
the same learning rate; the loss is on the answer tokens only (prompt ``Q: ...\\nA:`` masked out,
answer `` <answer>\\n`` learned, the newline being the stop signal). After every epoch the adapter
answers (greedy, zero-shot, the training format) the training examples, the dev and the test
questions; each answer is stored, so early stop (best dev epoch) and convergence (last epoch) are
read from one file.

Why not :func:`kinject_utils.finetune.train_adapter`: that is continued pre-training on packed
256-token chunks of documents, with a loss on every token. Here the examples are ~20-token QA pairs,
the loss must skip the question, and generation-based accuracy is needed after *every* epoch; a
60-line loop does that directly.

Results: one JSONL per run, ``<run_dir>/<set>.jsonl``, written atomically when the run ends; a
finished run is reused when its settings match (resumable at run granularity).
"""
from __future__ import annotations

import copy
import dataclasses
import random
import time
from pathlib import Path
from typing import Any, Sequence

from ..io import read_jsonl, write_jsonl
from ..log import get_logger
from ..settings import check_float, check_int
from .facts import normalise
from .generate import HFGenerator
from .slick import qa_line

log = get_logger("newknowledge")


@dataclasses.dataclass(frozen=True)
class SftConfig:
    """Fine-tuning settings shared by every training set (same budget for each).

    Attributes:
        epochs: passes over the training set (convergence = the last one).
        lr: AdamW learning rate (constant).
        batch_size: examples per optimiser step.
        lora_r, lora_alpha: LoRA rank and scale, on all linear layers.
        seed: adapter initialisation and data order.
        max_new_tokens: answer length cap at evaluation.
        eval_batch: prompts per generation batch.
    """

    epochs: int = 6
    lr: float = 1e-3
    batch_size: int = 8
    lora_r: int = 16
    lora_alpha: int = 32
    seed: int = 0
    max_new_tokens: int = 8
    eval_batch: int = 128

    def __post_init__(self) -> None:
        check_int(self, "epochs", 1, hint="EPOCHS in notebook 07")
        check_float(self, "lr", 0, 1, lo_open=True, hi_open=True, hint="try 1e-3 for LoRA")
        for name in ("batch_size", "lora_r", "max_new_tokens", "eval_batch"):
            check_int(self, name, 1)
        check_float(self, "lora_alpha", 1)
        check_int(self, "seed")

    def key(self) -> dict:
        return dataclasses.asdict(self)


def is_correct(example: dict, prediction: str) -> bool:
    """Exact match after normalisation against ``answer`` and any ``aliases``."""
    p = normalise(prediction)
    return bool(p) and p in {normalise(a) for a in (example["answer"], *example.get("aliases", ()))}


def _encode(tok: Any, examples: Sequence[dict]) -> dict:
    """Right-padded batch; labels -100 on the prompt and the padding (loss on the answer only)."""
    import torch

    ids, labels = [], []
    for e in examples:
        p = tok(qa_line(e["question"]))["input_ids"]
        a = tok(f" {e['answer']}\n", add_special_tokens=False)["input_ids"]
        ids.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(len(x) for x in ids)
    pad = tok.pad_token_id
    return {"input_ids": torch.tensor([x + [pad] * (width - len(x)) for x in ids]),
            "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
            "labels": torch.tensor([x + [-100] * (width - len(x)) for x in labels])}


def evaluate(gen: HFGenerator, examples: Sequence[dict], max_new_tokens: int) -> list[dict]:
    """Greedy zero-shot answers: ``[{"id", "category", "pred", "correct"}]``."""
    if not examples:
        return []
    preds = gen([qa_line(e["question"]) for e in examples], 0.0, 1, max_new_tokens, 0)
    return [{"id": e["id"], "category": e["category"], "pred": p[0], "correct": int(is_correct(e, p[0]))}
            for e, p in zip(examples, preds)]


def train_and_track(base: Any, tok: Any, train: Sequence[dict], evals: dict[str, Sequence[dict]],
                    cfg: SftConfig, label: str = "") -> list[dict]:
    """Fine-tune a fresh LoRA adapter on ``train``; after each epoch answer ``train`` and every ``evals`` split.

    The base model is deep-copied, so it stays untouched for the next set.

    Returns:
        rows ``{"epoch", "split", "id", "category", "pred", "correct"}`` plus ``{"epoch", "split": "_loss",
        "loss", "seconds"}`` per epoch.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                            target_modules="all-linear", task_type="CAUSAL_LM"))
    device = next(model.parameters()).device
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    gen = HFGenerator(model, tok, batch_size=cfg.eval_batch)
    old_side = tok.padding_side
    rows: list[dict] = []
    order = list(train)
    for epoch in range(1, cfg.epochs + 1):
        t0, losses = time.perf_counter(), []
        random.Random(f"kinject-sft/{cfg.seed}/{epoch}").shuffle(order)
        model.train()
        tok.padding_side = "right"
        for i in range(0, len(order), cfg.batch_size):
            batch = {k: v.to(device) for k, v in _encode(tok, order[i:i + cfg.batch_size]).items()}
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        tok.padding_side = old_side
        train_s = time.perf_counter() - t0
        splits = {"train": train, **evals}  # one generation pass over every split (fewer decode loops)
        tags = [name for name, exs in splits.items() for _ in exs]
        answers = evaluate(gen, [e for exs in splits.values() for e in exs], cfg.max_new_tokens)
        rows += [{"epoch": epoch, "split": name, **r} for name, r in zip(tags, answers)]
        rows.append({"epoch": epoch, "split": "_loss", "loss": sum(losses) / len(losses), "train_s": train_s,
                     "seconds": time.perf_counter() - t0})
        acc = sum(r["correct"] for r in rows if r["epoch"] == epoch and r["split"] == "train") / max(len(train), 1)
        log.info("SFT %s epoch %d: loss %.3f, train acc %.2f (%.0f s)", label, epoch, rows[-1]["loss"], acc,
                 rows[-1]["seconds"])
    return rows


def run_sets(base: Any, tok: Any, sets: dict[str, Sequence[dict]], evals: dict[str, Sequence[dict]], cfg: SftConfig,
             run_dir: str | Path, model: str = "") -> list[dict]:
    """Train every set (same ``cfg``), caching each run in ``run_dir/<set>.jsonl``; all rows with ``model``/``set``.

    A cached run is reused when its settings, training ids and eval ids match; else it is redone.
    """
    run_dir = Path(run_dir)
    out: list[dict] = []
    for name, train in sets.items():
        path = run_dir / f"{name}.jsonl"
        meta = {"_meta": True, **cfg.key(), "train_ids": sorted(e["id"] for e in train),
                "eval_ids": {k: sorted(e["id"] for e in v) for k, v in evals.items()},
                "answers": sorted(e["answer"] for e in train)}
        rows = None
        if path.exists():
            cached = list(read_jsonl(path))
            if cached and cached[0] == meta:
                rows = cached[1:]
                log.info("SFT %s %s: reused %s", model, name, path)
        if rows is None:
            rows = train_and_track(base, tok, train, evals, cfg, label=f"{model} {name}")
            write_jsonl(path, [meta, *rows])
        out += [{"model": model, "set": name, **r} for r in rows]
    return out
