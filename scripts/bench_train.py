"""Training throughput and peak memory: kinject's loop vs plain transformers Trainer, same settings.

    python scripts/bench_train.py                       # SmolLM2, LoRA r=16, batch 4 x 2, 256 tokens, dtype auto
    python scripts/bench_train.py --which ours --dtype float32   # one side only, one dtype
    python scripts/bench_train.py --method qlora --steps 4

Both runs train the same model on the same device, LoRA rank and dropout, packed 256-token chunks,
micro-batch, accumulation, dtype, optimizer (paged AdamW 32-bit on CUDA, AdamW on a CPU), precision
(QLoRA on a card with native bf16: Trainer's ``bf16=True`` autocast against our bf16 autocast, TF32 on
in both), learning rate and number of optimiser steps; each runs in its own subprocess so that peak RSS
(``resource.getrusage``; ``torch.cuda.max_memory_allocated`` on a GPU) belongs to it alone.
Tokens/s counts real (non-padding) tokens over the training call, model loading excluded.
It also prints the real-token fraction of the packed chunks vs one-document-per-row batching.
Target (issue 6): >= 1.0x Trainer's throughput, >= 95% real tokens.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time


def corpus(n_docs: int = 64, seed: int = 0) -> list[str]:
    """Deterministic invented news stories (~100-250 words), like the embedded fictional task."""
    rng = random.Random(seed)
    words = ("harbour council ferry tidal station mayor engineers opened launched households delivery "
             "drone sensor festival bridge library vote budget river museum rail orchard").split()
    names = ["Velmora", "Quorvale", "Tarnby", "Ilsa Brenn", "Odo Markel", "Varnholt", "Pell Aster"]
    docs = []
    for i in range(n_docs):
        sents = [f"In {2030 + i % 5} {rng.choice(names)} {rng.choice(words)} the {rng.choice(words)} "
                 f"of {rng.choice(names)} with {rng.randint(100, 99000)} {rng.choice(words)}."
                 for _ in range(rng.randint(8, 20))]
        docs.append(" ".join(sents))
    return docs


def peak_mem_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _dtype(a: argparse.Namespace) -> str:
    from kinject_utils.device import resolve

    return "bfloat16" if a.method == "qlora" else resolve("auto", a.dtype)[1]


def run_ours(a: argparse.Namespace) -> dict:
    from kinject_utils.finetune import FinetuneConfig, train_adapter

    cfg = FinetuneConfig(method=a.method, micro_batch=a.micro_batch, grad_accum=a.grad_accum, lr=1e-3,
                         budget="steps", max_steps=a.steps, checkpoint_every=0, dtype=_dtype(a),
                         gradient_checkpointing=a.method == "qlora", lora_r=16, lora_alpha=32, lora_dropout=0.0,
                         device="auto", optimizer="auto")
    with tempfile.TemporaryDirectory() as d:
        res = train_adapter(a.model, corpus(), cfg, d, progress=False)
    return {"tokens": res.tokens, "seconds": res.wall_s, "tok_s": res.tokens / res.wall_s,
            "real_fraction": res.real_token_fraction, "final_loss": res.final_loss, "peak_mb": peak_mem_mb()}


def run_trainer(a: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from kinject_utils.device import native_bf16
    from kinject_utils.finetune import chunk_corpus
    from kinject_utils.models import load_causal_lm

    cuda = torch.cuda.is_available()
    if a.method == "qlora":
        model, tok = load_causal_lm(a.model, dtype="bfloat16", quantization="nf4", device="auto")
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        model, tok = load_causal_lm(a.model, dtype=_dtype(a), device="auto")
    autocast = cuda and a.method == "qlora" and native_bf16()  # what our loop does (finetune.loop.compute_precision)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    chunks = chunk_corpus(corpus(), tok, 256)  # the same packed chunks: a like-for-like throughput test
    ds = Dataset.from_dict({"input_ids": chunks})
    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(output_dir=d, per_device_train_batch_size=a.micro_batch,
                                 gradient_accumulation_steps=a.grad_accum, learning_rate=1e-3,
                                 lr_scheduler_type="constant", max_steps=a.steps, max_grad_norm=1.0,
                                 optim="paged_adamw_32bit" if cuda else "adamw_torch", bf16=autocast, tf32=autocast,
                                 logging_steps=10**6, save_strategy="no", report_to=[],
                                 use_cpu=not cuda, seed=0, dataloader_num_workers=0,
                                 disable_tqdm=True, gradient_checkpointing=a.method == "qlora")
        collator = DataCollatorForLanguageModeling(tok, mlm=False)
        trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator)
        # real tokens Trainer will see: the same steps x batch over its shuffled order (approximation:
        # all chunks but the last are full, so tokens = chunks seen x 256 up to one short chunk)
        t0 = time.time()
        out = trainer.train()
        secs = time.time() - t0
    n_chunks_seen = a.steps * a.micro_batch * a.grad_accum
    tokens = n_chunks_seen * 256
    return {"tokens": tokens, "seconds": secs, "tok_s": tokens / secs, "final_loss": out.training_loss,
            "peak_mb": peak_mem_mb()}


def padding_report(a: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer

    from kinject_utils.finetune import chunk_corpus
    from kinject_utils.models import resolve_model_dir

    tok = AutoTokenizer.from_pretrained(resolve_model_dir(a.model))
    out = {}
    for pack in (True, False):
        ch = chunk_corpus(corpus(), tok, 256, pack=pack)
        mb = a.micro_batch
        padded = sum(len(ch[i:i + mb]) * max(len(c) for c in ch[i:i + mb]) for i in range(0, len(ch), mb))
        out["packed" if pack else "one_doc_per_row"] = sum(map(len, ch)) / padded
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--method", default="lora", choices=["lora", "qlora"])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--which", choices=["ours", "trainer", "both"], default="both")
    p.add_argument("--dtype", default="auto", help="auto (fp32 on CPUs without AMX) | float32 | bfloat16")
    a = p.parse_args()
    if a.which != "both":
        res = run_ours(a) if a.which == "ours" else run_trainer(a)
        print("RESULT " + json.dumps(res))
        return
    results = {}
    for which in ("ours", "trainer"):
        cmd = [sys.executable, __file__, "--which", which, "--model", a.model, "--method", a.method, "--dtype", a.dtype,
               "--steps", str(a.steps), "--micro-batch", str(a.micro_batch), "--grad-accum", str(a.grad_accum)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"{which} run failed:\n{proc.stderr[-3000:]}")
        results[which] = json.loads(line[0][7:])
    pad = padding_report(a)
    import torch

    print(f"model {a.model}, {a.method} ({_dtype(a)}, LoRA r=16 all-linear), "
          f"batch {a.micro_batch} x {a.grad_accum} x 256 "
          f"tokens, {a.steps} steps, torch threads {torch.get_num_threads()}")
    for k, r in results.items():
        print(f"  {k:8s} {r['tok_s']:7.1f} tok/s  ({r['tokens']} tokens in {r['seconds']:.1f} s)  "
              f"peak memory {r['peak_mb']:.0f} MB  final loss {r['final_loss']:.3f}")
    ratio = results["ours"]["tok_s"] / results["trainer"]["tok_s"]
    print(f"  throughput ratio ours/Trainer: {ratio:.2f}x (target >= 1.0x)")
    print(f"  real-token fraction: ours {results['ours']['real_fraction']:.3f} (packed chunks); "
          f"one document per row would be {pad['one_doc_per_row']:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
