"""Supervised fine-tuning question -> answer, with per-epoch accuracy by category (notebook 07).

Each training set gets a fresh LoRA adapter on the same base model, the same number of epochs and
the same learning rate; the loss is on the answer tokens only (prompt ``Q: ...\\nA:`` masked out,
answer `` <answer>\\n`` learned, the newline being the stop signal; the output head runs on the answer
positions only). After every epoch the adapter answers (greedy, zero-shot, the training format) the
training examples and the dev questions; the test questions (and the out-of-distribution ones) are
answered at early stop (best dev epoch, from the adapter weights kept for that epoch) and at
convergence (last epoch) only. Each answer is stored, so both are read from one file.

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
    """Left-padded batch with position ids; ``labels`` are the answer tokens of the last ``K - 1`` positions
    (-100 elsewhere), ``keep`` = ``K``: the output head runs on the last ``K`` positions only (on Gemma-3's
    262k-token vocabulary the head over every question token costs more than the model body)."""
    import torch

    ids, answers = [], []
    for e in examples:
        p = tok(qa_line(e["question"]))["input_ids"]
        a = tok(f" {e['answer']}\n", add_special_tokens=False)["input_ids"]
        ids.append(p + a)
        answers.append(a)
    width, K = max(len(x) for x in ids), max(len(a) for a in answers) + 1
    pad = tok.pad_token_id
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    labels = torch.tensor([[-100] * (K - 1 - len(a)) + a for a in answers])
    return {"input_ids": torch.tensor([[pad] * (width - len(x)) + x for x in ids]), "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp(min=0), "labels": labels, "keep": K}


def answer_loss(model: Any, batch: dict) -> Any:
    """Mean cross-entropy of the answer tokens (the prompt and the padding carry no loss)."""
    import torch

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=batch["keep"], use_cache=False)
    logits = out.logits[:, :-1, :].float()  # position t predicts token t + 1
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                                             ignore_index=-100)


def evaluate(gen: HFGenerator, examples: Sequence[dict], max_new_tokens: int) -> list[dict]:
    """Greedy zero-shot answers: ``[{"id", "category", "pred", "correct"}]``."""
    if not examples:
        return []
    preds = gen([qa_line(e["question"]) for e in examples], 0.0, 1, max_new_tokens, 0)
    return [{"id": e["id"], "category": e["category"], "pred": p[0], "correct": int(is_correct(e, p[0]))}
            for e, p in zip(examples, preds)]


def best_epoch(dev_acc: dict[int, float]) -> int:
    """Early stop: the epoch with the best dev accuracy, the earliest on ties (as :func:`.claims.stop_epochs`)."""
    return max(dev_acc, key=lambda e: (dev_acc[e], -e))


def train_and_track(base: Any, tok: Any, train: Sequence[dict], evals: dict[str, Sequence[dict]],
                    cfg: SftConfig, label: str = "", final: dict[str, Sequence[dict]] | None = None) -> list[dict]:
    """Fine-tune a fresh LoRA adapter on ``train``; after each epoch answer ``train`` and every ``evals`` split.

    ``final`` splits (the test questions) are answered at early stop (best ``dev`` epoch) and at
    convergence (last epoch) only: the adapter's weights are kept after every epoch and put back for
    the early-stop evaluation, so the test set is not answered at epochs no finding reads.
    The base model is deep-copied, so it stays untouched for the next set.

    Returns:
        rows ``{"epoch", "split", "id", "category", "pred", "correct"}`` plus ``{"epoch", "split": "_loss",
        "loss", "seconds"}`` per epoch.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    final = final or {}
    if final and "dev" not in evals:
        raise ValueError("final splits are answered at the best dev epoch: evals needs a 'dev' split")
    torch.manual_seed(cfg.seed)
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                            target_modules="all-linear", task_type="CAUSAL_LM"))
    device = next(model.parameters()).device
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr)
    gen = HFGenerator(model, tok, batch_size=cfg.eval_batch)
    rows: list[dict] = []
    snapshots: dict[int, dict[str, Any]] = {}
    dev_acc: dict[int, float] = {}
    order = list(train)
    for epoch in range(1, cfg.epochs + 1):
        t0, losses = time.perf_counter(), []
        random.Random(f"kinject-sft/{cfg.seed}/{epoch}").shuffle(order)
        model.train()
        for i in range(0, len(order), cfg.batch_size):
            batch = {k: v.to(device) if hasattr(v, "to") else v
                     for k, v in _encode(tok, order[i:i + cfg.batch_size]).items()}
            loss = answer_loss(model, batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        train_s = time.perf_counter() - t0
        snapshots[epoch] = {n: p.detach().clone() for n, p in params.items()}
        rows += _answer(gen, epoch, {"train": train, **evals}, cfg.max_new_tokens)
        if "dev" in evals:
            dev = [r["correct"] for r in rows if r["epoch"] == epoch and r["split"] == "dev"]
            dev_acc[epoch] = sum(dev) / max(len(dev), 1)
        rows.append({"epoch": epoch, "split": "_loss", "loss": sum(losses) / len(losses), "train_s": train_s,
                     "seconds": time.perf_counter() - t0})
        acc = sum(r["correct"] for r in rows if r["epoch"] == epoch and r["split"] == "train") / max(len(train), 1)
        log.info("SFT %s epoch %d: loss %.3f, train acc %.2f, dev acc %.2f (%.0f s)", label, epoch, rows[-1]["loss"],
                 acc, dev_acc.get(epoch, float("nan")), rows[-1]["seconds"])
    if final:
        t0 = time.perf_counter()
        rows += _answer(gen, cfg.epochs, final, cfg.max_new_tokens)  # convergence: the weights as they are
        early = best_epoch(dev_acc)
        if early != cfg.epochs:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(snapshots[early][n])
            rows += _answer(gen, early, final, cfg.max_new_tokens)
        rows.append({"epoch": 0, "split": "_final", "early": early, "seconds": time.perf_counter() - t0})
    return rows


def _answer(gen: HFGenerator, epoch: int, splits: dict[str, Sequence[dict]], max_new_tokens: int) -> list[dict]:
    """One generation pass over every split (fewer decode loops); rows tagged with the epoch and split."""
    tags = [name for name, exs in splits.items() for _ in exs]
    answers = evaluate(gen, [e for exs in splits.values() for e in exs], max_new_tokens)
    return [{"epoch": epoch, "split": name, **r} for name, r in zip(tags, answers)]


def run_sets(base: Any, tok: Any, sets: dict[str, Sequence[dict]], evals: dict[str, Sequence[dict]], cfg: SftConfig,
             run_dir: str | Path, model: str = "", final: dict[str, Sequence[dict]] | None = None,
             final_only: dict[str, Sequence[str]] | None = None) -> list[dict]:
    """Train every set (same ``cfg``), caching each run in ``run_dir/<set>.jsonl``; all rows with ``model``/``set``.

    ``final_only`` restricts a set's ``final`` splits to those named (e.g. ``{"only-MaybeKnown": ["test"]}``:
    no finding reads that set's out-of-distribution answers, so they are not generated).

    A cached run is reused when its settings, training ids and eval ids match; else it is redone. A set
    with the same examples in the same order as an earlier one (notebook 07's only-Unknown set when it is
    the 100%-Unknown set) is trained once: its rows are the earlier set's.
    """
    run_dir = Path(run_dir)
    out: list[dict] = []
    trained: dict[tuple, str] = {}
    for name, train in sets.items():
        same = trained.setdefault(tuple((e["id"], e["answer"]) for e in train), name)
        if same != name:
            log.info("SFT %s %s: the same examples as %s, not trained again", model, name, same)
            out += [{**r, "set": name} for r in out if r["set"] == same]
            continue
        path = run_dir / f"{name}.jsonl"
        keep = (final_only or {}).get(name)
        fin = {k: v for k, v in (final or {}).items() if keep is None or k in keep}
        meta = {"_meta": True, "format": 2, **cfg.key(), "train_ids": sorted(e["id"] for e in train),
                "eval_ids": {k: sorted(e["id"] for e in v) for k, v in {**evals, **fin}.items()},
                "answers": sorted(e["answer"] for e in train)}
        rows = None
        if path.exists():
            cached = list(read_jsonl(path))
            if cached and cached[0] == meta:
                rows = cached[1:]
                log.info("SFT %s %s: reused %s", model, name, path)
        if rows is None:
            rows = train_and_track(base, tok, train, evals, cfg, label=f"{model} {name}", final=fin or None)
            write_jsonl(path, [meta, *rows])
        out += [{"model": model, "set": name, **r} for r in rows]
    return out
