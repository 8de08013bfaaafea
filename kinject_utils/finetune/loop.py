"""The training loop: continued pre-training of one (Q)LoRA adapter, resumable, on the run's device.

The loop is our own (not ``transformers.Trainer``) because exact resume needs the data order to
be a pure function of ``(seed, epoch)`` and the checkpoint to hold the RNG states, and because
chunks are already packed to 256 tokens (no collator, no padding). The loss is accumulated on the
device and read back once per optimiser step (no host sync per micro-batch). float16 trains with
loss scaling (``torch.amp.GradScaler``) on CUDA only. With ``micro_batch="auto"`` the micro-batch
and checkpointing come from :func:`kinject_utils.finetune.memory.choose_micro_batch` on CUDA.

    result = train_adapter("smollm2-135m", texts, preset("cpu"), "out/ft-reg")
"""
from __future__ import annotations

import contextlib
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..io import append_jsonl, content_hash, read_json, write_json, write_jsonl
from ..log import get_logger
from ..log import progress as progress_bar
from .checkpoints import (
    TrainResult,
    latest_checkpoint,
    library_versions,
    load_checkpoint,
    read_train_log,
    result_from_manifest,
    save_checkpoint,
    seed_all,
    trainable_params,
)
from .chunking import chunk_corpus
from .config import CKPT_DIR, MANIFEST, TRAIN_LOG, FinetuneConfig, run_key
from .memory import release_memory
from .schedule import epoch_order, lr_at, plan_steps

log = get_logger("finetune")


class TrainingInterrupted(RuntimeError):
    """Raised by a callback to stop a run (tests use it to simulate a kill)."""


def resolve_run(model_name: str, cfg: FinetuneConfig) -> dict[str, Any]:
    """Device, dtype, micro-batch, accumulation and checkpointing this run will actually use.

    ``micro_batch="auto"``: on CUDA the memory model picks them from the card's free memory (a
    warning when even micro-batch 1 may not fit); on a CPU the largest divisor of ``batch`` up to 4.
    """
    from ..device import resolve_device, resolve_dtype

    device = resolve_device(cfg.device)
    dtype = "bfloat16" if cfg.method == "qlora" else resolve_dtype(cfg.dtype, device)
    if dtype == "float16" and not device.startswith("cuda"):
        raise ValueError("dtype float16 trains only on CUDA (loss scaling); on a CPU set DTYPE/dtype to "
                         "'auto' or 'float32'")
    run = {"device": device, "dtype": dtype, "micro_batch": cfg.micro_batch, "grad_accum": cfg.grad_accum,
           "gradient_checkpointing": cfg.gradient_checkpointing, "memory_plan": None}
    if cfg.micro_batch != "auto":
        return run
    if device.startswith("cuda"):
        from transformers import AutoConfig

        from ..models import resolve_model_dir
        from .memory import Shape, choose_micro_batch, cuda_free_gib

        shape = Shape.from_config(AutoConfig.from_pretrained(resolve_model_dir(model_name)))
        plan = choose_micro_batch(cuda_free_gib(device), shape, batch=cfg.batch, method=cfg.method,
                                  lora_r=cfg.lora_r, chunk_len=cfg.chunk_len)
        if not plan["fits"]:
            log.warning("%s may not fit this GPU: %s. Free GPU memory, or use a smaller model.", model_name,
                        plan["why"])
        run.update(micro_batch=plan["micro_batch"], grad_accum=plan["grad_accum"],
                   gradient_checkpointing=plan["gradient_checkpointing"], memory_plan=plan)
    else:
        mb = max(d for d in range(1, min(4, cfg.batch) + 1) if cfg.batch % d == 0)
        run.update(micro_batch=mb, grad_accum=cfg.batch // mb)
    return run


def _build_model(model_name: str, cfg: FinetuneConfig, run: dict[str, Any]) -> tuple[Any, Any]:
    """Load the base model for ``cfg.method`` and make the right parameters trainable."""
    import torch

    from ..models import disable_bnb_cpu_inference_repack, load_causal_lm

    if cfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model, tok = load_causal_lm(model_name, dtype="bfloat16", quantization="nf4", device=run["device"])
        # Casts norms/embeddings to fp32 and freezes the base; checkpointing handled below.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model, tok = load_causal_lm(model_name, dtype=run["dtype"], device=run["device"])
    if run["gradient_checkpointing"]:
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


@contextlib.contextmanager
def compute_precision(method: str, device: str) -> Iterator[str]:
    """The precision the training forward and backward run in; yields its name for the manifest.

    QLoRA on a CUDA card with native bf16 runs under bf16 autocast with TF32 matmuls (restored after):
    ``prepare_model_for_kbit_training`` upcasts embeddings, norms and the head to fp32 and ``Linear4bit``
    returns its input's dtype, so without autocast the residual stream, attention and the LoRA matmuls run
    in fp32 (no flash-attention kernel). The QLoRA reference recipe and ``Trainer(bf16=True)`` do the same.
    Anything else runs in the model's own dtype (``"native"``).
    """
    import torch

    from ..device import native_bf16

    if method != "qlora" or not str(device).startswith("cuda") or not native_bf16():
        yield "native"
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield "bf16 autocast + tf32"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _make_optimizer(params: list, cfg: FinetuneConfig, device: str) -> Any:
    import torch

    name = cfg.optimizer
    if name == "auto":
        name = "paged_adamw_32bit" if device.startswith("cuda") else "adamw"
    if name == "paged_adamw_32bit":
        if not device.startswith("cuda"):
            raise ValueError("optimizer='paged_adamw_32bit' needs a CUDA GPU (bitsandbytes pages to "
                             "GPU memory); use optimizer='adamw' or 'auto' on a CPU")
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW32bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def collate(chunks: Sequence[Sequence[int]], pad_id: int, device: str) -> tuple[Any, Any, Any, int, int]:
    """Right-pad a micro-batch; labels are -100 on padding. Returns ids, mask, labels, real, padded."""
    import torch

    L = max(len(c) for c in chunks)
    ids = torch.full((len(chunks), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(chunks), L), dtype=torch.long)
    for i, c in enumerate(chunks):
        ids[i, :len(c)] = torch.tensor(c, dtype=torch.long)
        mask[i, :len(c)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    real = sum(len(c) for c in chunks)
    nb = device != "cpu"
    return (ids.to(device, non_blocking=nb), mask.to(device, non_blocking=nb), labels.to(device, non_blocking=nb),
            real, len(chunks) * L)


def _sort_adapter_config(out: Path) -> None:
    """Rewrite ``adapter_config.json`` with ``target_modules`` sorted (peft writes a set: random order)."""
    p = out / "adapter_config.json"
    if p.exists():
        conf = read_json(p)
        if isinstance(conf.get("target_modules"), list):
            conf["target_modules"] = sorted(conf["target_modules"])
        write_json(p, conf)


def train_adapter(model_name: str, texts: Sequence[str], cfg: FinetuneConfig, out_dir: Any, *,
                  resume: bool = True, progress: bool = True,
                  callback: Callable[[int, float], None] | None = None) -> TrainResult:
    """Continued pre-training of ``model_name`` on ``texts``; saves the adapter and ``manifest.json``.

    A finished run with the same key (model, data hash, settings) is not repeated: its manifest is
    returned with ``skipped=True``. An unfinished one resumes from its last checkpoint when
    ``resume`` (same key only; a checkpoint of other settings is ignored and replaced).

    Args:
        model_name: registry name, folder or hub id (see :func:`kinject_utils.models.load_causal_lm`).
        texts: training documents (knowledge base, plus paraphrases for FT-par).
        cfg: the settings (device and dtype ``"auto"`` are resolved by :mod:`kinject_utils.device`).
        out_dir: adapter folder (:func:`kinject_utils.layout.adapter_dir`).
        resume: continue from a checkpoint in ``out_dir`` if there is one.
        progress: show a progress bar.
        callback: called as ``callback(step, loss)`` after every optimiser step (and checkpoint);
            raising stops the run (tests simulate a kill this way).

    Returns:
        A :class:`TrainResult`; the per-step losses are in ``out_dir/train_log.jsonl``.
    """
    import torch

    if not isinstance(cfg, FinetuneConfig):
        raise TypeError(f"cfg must be a FinetuneConfig, got {type(cfg).__name__}; "
                        "build one with FinetuneConfig(...) or preset(name, ...)")
    texts = list(texts)
    out = Path(out_dir)
    key = run_key(model_name, texts, cfg)
    if (out / MANIFEST).exists():
        man = read_json(out / MANIFEST)
        if man.get("key") == key:
            return result_from_manifest(out, man, skipped=True)
        (out / MANIFEST).unlink()  # other settings or data: retrain in place
    out.mkdir(parents=True, exist_ok=True)
    run = resolve_run(model_name, cfg)
    device, mb, batch = run["device"], run["micro_batch"], cfg.effective_batch

    model, tok = _build_model(model_name, cfg, run)
    chunks = chunk_corpus(texts, tok, cfg.chunk_len, pack=cfg.packing)
    corpus_tokens = sum(len(c) for c in chunks)
    plan = plan_steps(len(chunks), cfg, corpus_tokens)
    spe, total = plan["steps_per_epoch"], plan["total_steps"]
    params = [p for _, p in trainable_params(model)]
    if not params:
        raise RuntimeError("no trainable parameters: check target_modules against the model's layer names")
    optimizer = _make_optimizer(params, cfg, device)
    scaler = torch.amp.GradScaler("cuda") if run["dtype"] == "float16" else None
    seed_all(cfg.seed + 1)  # dropout stream, independent of the LoRA initialisation

    start, tokens, padded, wall_prev, resumed_from = 0, 0, 0, 0.0, 0
    ck = latest_checkpoint(out, key) if resume else None
    if ck is not None:
        st = load_checkpoint(ck, model, optimizer)
        start, tokens, padded, wall_prev = st["step"], st["tokens"], st["padded"], st["wall_s"]
        if scaler is not None and st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        resumed_from = start
        write_jsonl(out / TRAIN_LOG, [r for r in read_train_log(out) if r["step"] <= start])
    else:
        shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
        (out / TRAIN_LOG).unlink(missing_ok=True)

    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    model.train()
    t0 = time.time()
    orders: dict[int, list[int]] = {}
    loss_val, precision = float("nan"), "native"
    bar = progress_bar(total=total, initial=start, disable=not progress, desc=f"train {out.name}", unit="step")
    for step in range(start, total):
        epoch, k = divmod(step, spe)
        if epoch not in orders:
            orders = {epoch: epoch_order(len(chunks), cfg.seed, epoch)}
        idx = orders[epoch][k * batch:(k + 1) * batch]
        # Loss is the mean over every predicted token of the whole step, whatever the micro-batching.
        n_pred = sum(len(chunks[i]) - 1 for i in idx)
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, total, cfg)
        step_loss = torch.zeros((), device=device)
        micros = [[chunks[i] for i in idx[j:j + mb]] for j in range(0, len(idx), mb)]
        if cfg.packing:  # the corpus' one short tail chunk gets its own forward: no padding at all
            micros = [[c for c in m if len(c) == n] for m in micros for n in sorted({len(c) for c in m}, reverse=True)]
        for micro in micros:
            ids, mask, labels, real, pad = collate(micro, pad_id, device)
            n_micro = sum(len(c) - 1 for c in micro)
            with compute_precision(cfg.method, device) as used:
                precision = used
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss * (n_micro / n_pred)
                (scaler.scale(loss) if scaler is not None else loss).backward()
            step_loss += loss.detach()  # stays on the device: one sync per optimiser step, below
            del loss  # free this micro-batch's logits before the next forward
            tokens += real
            padded += pad
        if scaler is not None:
            scaler.unscale_(optimizer)
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_val = float(step_loss)
        wall = wall_prev + time.time() - t0
        append_jsonl(out / TRAIN_LOG, {"step": step + 1, "epoch": round(epoch + (k + 1) / spe, 6),
                                       "loss": loss_val, "lr": optimizer.param_groups[0]["lr"],
                                       "tokens": tokens, "wall_s": round(wall, 3)})
        bar.update(1)
        bar.set_postfix(loss=f"{loss_val:.3f}")
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            state = {"step": step + 1, "tokens": tokens, "padded": padded, "wall_s": wall,
                     "scaler": scaler.state_dict() if scaler is not None else None}
            save_checkpoint(out, model, optimizer, step + 1, state, key)
        if callback is not None:
            callback(step + 1, loss_val)
    bar.close()

    wall = wall_prev + time.time() - t0
    model.save_pretrained(out, safe_serialization=True)
    if cfg.method == "full":
        tok.save_pretrained(out)
    _sort_adapter_config(out)
    from ..models import resolve_model_dir

    man = {
        "key": key, "base_model": model_name, "base_model_path": resolve_model_dir(model_name),
        "method": cfg.method, "data_hash": content_hash(texts), "n_texts": len(texts),
        "n_chunks": len(chunks), "corpus_tokens": corpus_tokens, "settings": cfg.to_dict(), "seed": cfg.seed,
        "versions": library_versions(), "device": device, "dtype": run["dtype"], "compute": precision,
        "micro_batch": mb,
        "grad_accum": math.ceil(batch / mb), "gradient_checkpointing": run["gradient_checkpointing"],
        "memory_plan": run["memory_plan"], "steps": total, "steps_per_epoch": spe,
        "epochs": round(total / spe, 4), "tokens_trained": tokens,
        "real_token_fraction": round(tokens / padded, 4) if padded else 1.0,
        "wall_s": round(wall, 2), "tokens_per_s": round((tokens / wall) if wall > 0 else 0.0, 1),
        "final_loss": loss_val, "resumed_from_step": resumed_from,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(out / MANIFEST, man)  # written last: its presence means the adapter is complete
    shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
    release_memory(optimizer)  # the next adapter's auto micro-batch must see this run's memory as free
    del model, optimizer, params
    release_memory()
    return result_from_manifest(out, man, skipped=False)
