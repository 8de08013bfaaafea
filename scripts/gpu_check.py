"""GPU self-check with no downloaded weights: kinject's own loaders on a random-weight Mistral-7B shape.

Builds a model of Mistral-7B's shape (``transformers.MistralConfig``: hidden 4096, 32 layers, 32
heads, 8 key-value heads, MLP 14336, vocabulary 32,000) with random weights on the device, saves
it as safetensors with a tokenizer made on the fly, then runs kinject's own code on it:

* QLoRA training: ``models.load_causal_lm`` (nf4) through ``finetune.train_adapter`` with the
  ``paper_qlora`` preset (r=64, paged AdamW, gradient checkpointing) at several micro-batches:
  peak memory (notebook 05's ``study.costs.CellMeter``: ``torch.cuda.max_memory_allocated``; on a
  CPU the process's peak RSS so far) and tokens/s.
* Scoring: ``scoring.score_questions`` against lm-evaluation-harness ``HFLM.loglikelihood`` on the
  same requests, at two batch sizes, letter style 5-shot and cloze with a 3 x 200-word context:
  seconds, speed-up, identical predictions, largest log-likelihood difference.

Memory and speed are real; accuracy is not (random weights). The tokenizer is a word-level one
(``tokenizers`` WordLevel, whitespace split) with exactly the model's vocabulary: the embedded
SmolLM2 tokenizer has 49,152 entries and would not fit Mistral's 32,000, and a word-level
vocabulary lets the synthetic texts be exactly one token per word.

Usage (repo root)::

    python scripts/gpu_check.py                      # Mistral-7B shape on CUDA; JSON in runs/gpu_check.json
    python scripts/gpu_check.py --shape tiny --device cpu --steps 2 --out /tmp/g.json   # seconds, CPU

``--shape tiny`` (2 layers, hidden 64, vocabulary 1,024) is the CPU-safe part the test suite runs.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHAPES = {
    "mistral-7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=14336, vocab_size=32000, max_position_embeddings=32768),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=1024, max_position_embeddings=2048),
}
SPECIALS = ["<unk>", "<s>", "</s>"]
# words the harness prompts use, so they are real tokens rather than <unk>
PROMPT_WORDS = ["A", "B", "C", "D", "A.", "B.", "C.", "D.", "Answer:", "Question:", "The", "following", "are",
                "multiple", "choice", "questions", "(with", "answers)", "about", "gpu", "check."]
QLORA_FIELDS = ["micro_batch", "steps", "tokens", "tokens_per_s", "peak_mem_gib", "mem_source", "final_loss"]
SCORING_FIELDS = ["case", "batch_size", "n", "ours_s", "lmeval_s", "speedup", "identical_predictions",
                  "max_abs_loglik_diff"]


def words(vocab_size: int) -> list[str]:
    """The ordinary words of the vocabulary (``w0``, ``w1``, ...), after the specials and prompt words."""
    return [f"w{i}" for i in range(vocab_size - len(SPECIALS) - len(PROMPT_WORDS))]


def build_tokenizer(vocab_size: int):
    """A word-level fast tokenizer with exactly ``vocab_size`` entries (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + PROMPT_WORDS + words(vocab_size))}
    assert len(vocab) == vocab_size
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def build_model(shape: str, device: str, folder: Path, dtype: str) -> dict:
    """Random-weight Mistral-shaped model + tokenizer saved (safetensors) under ``folder``."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(**SHAPES[shape], head_dim=SHAPES[shape]["hidden_size"] // SHAPES[shape]["num_attention_heads"],
                        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))  # built in its final dtype: 7B in fp32 first would need 29 GB
    try:
        with torch.device(device):
            model = MistralForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder, safe_serialization=True)
    build_tokenizer(cfg.vocab_size).save_pretrained(folder)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"params": n_params, "build_save_s": round(time.perf_counter() - t0, 1)}


def texts(vocab_size: int, n_docs: int, words_per_doc: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    w = words(vocab_size)
    return [" ".join(rng.choice(w) for _ in range(words_per_doc)) for _ in range(n_docs)]


def check_qlora(folder: Path, device: str, micro_batches: list[int], steps: int, vocab: int, work: Path) -> list[dict]:
    """``train_adapter`` with the paper_qlora preset at each micro-batch, for ``steps`` optimiser steps."""
    from kinject_utils.finetune import preset, train_adapter
    from kinject_utils.finetune.memory import release_memory
    from kinject_utils.study.costs import CellMeter

    docs = texts(vocab, n_docs=max(micro_batches) * steps + 8)
    meter = CellMeter(device)  # notebook 05's meter: CUDA allocator peak, or the process's peak RSS on a CPU
    rows = []
    for mb in micro_batches:
        cfg = preset("paper_qlora", micro_batch=mb, grad_accum=1, batch=0, budget="steps", max_steps=steps,
                     device=device, checkpoint_every=10**6)
        meter.start()
        res = train_adapter(str(folder), docs, cfg, work / f"qlora-mb{mb}", progress=False)
        peak = meter.stop()
        rows.append({"micro_batch": mb, "steps": res.steps, "tokens": res.tokens,
                     "tokens_per_s": round(res.tokens_per_s, 1), "peak_mem_gib": round(peak["peak_mem_mb"] / 1024, 2),
                     "mem_source": peak["mem_source"], "final_loss": res.final_loss})
        release_memory()
        r = rows[-1]
        print(f"qlora micro-batch {mb:>3}: {r['tokens_per_s']:>9,.1f} tok/s, peak {r['peak_mem_gib']:.2f} GiB "
              f"({r['mem_source']}), loss {res.final_loss:.3f}", flush=True)
    return rows


def check_auto_twice(folder: Path, device: str, steps: int, vocab: int, work: Path) -> dict:
    """Two QLoRA runs with ``micro_batch="auto"`` in one process, as notebook 03 trains adapter after adapter:
    the second must choose the micro-batch the first chose (nothing of the first left counted as used)."""
    from kinject_utils.finetune import MANIFEST, preset, train_adapter

    chosen = []
    for i in (1, 2):
        cfg = preset("paper_qlora", budget="steps", max_steps=steps, device=device, checkpoint_every=10**6,
                     seed=i)  # another seed: another run, not the first one's cache
        res = train_adapter(str(folder), texts(vocab, n_docs=8, seed=i), cfg, work / f"auto-{i}", progress=False)
        chosen.append(json.loads((Path(res.out_dir) / MANIFEST).read_text())["micro_batch"])
    out = {"first": chosen[0], "second": chosen[1], "same": chosen[0] == chosen[1]}
    print(f"auto micro-batch, two runs in one process: {chosen[0]} then {chosen[1]} "
          f"({'same' if out['same'] else 'DIFFERENT'})", flush=True)
    return out


def check_adapter_scoring(folder: Path, adapter: Path, device: str, vocab: int, n: int) -> dict:
    """Score through ``load_finetuned`` (a QLoRA adapter on its nf4 base, as notebook 05 does): which
    scoring path the probe allowed, its measured error, and the fast path against the plain one."""
    from kinject_utils.finetune import load_finetuned
    from kinject_utils.finetune.memory import release_memory
    from kinject_utils.scoring import capabilities, score_questions

    model, tok = load_finetuned(str(folder), adapter, device=device)
    caps = capabilities(model)
    dev, qs = _questions(vocab, 5, 1, "dev"), _questions(vocab, n, 3, "a")
    fast = score_questions(model, tok, qs, style="letter", shots=5, dev=dev, progress=False)
    plain = score_questions(model, tok, qs, style="letter", shots=5, dev=dev, progress=False, method="naive")
    path = ("shared prefix + k-shot prefix cache" if caps.cached else "shared prefix" if caps.packed
            else "batched full-row fallback")
    out = {"path": path, "probe_packed_err": caps.packed_err, "probe_cached_err": caps.cached_err,
           "probe_tolerance": caps.tolerance, "reason": caps.reason,
           "identical_predictions": [r["pred"] for r in fast] == [r["pred"] for r in plain],
           "max_abs_loglik_diff": max(abs(a - b) for r, s in zip(fast, plain) for a, b in zip(r["logliks"],
                                                                                               s["logliks"]))}
    print(f"nf4 + LoRA scoring: path {path}; probe max |dlogp| {caps.packed_err:.2e} / {caps.cached_err:.2e} "
          f"(tolerance {caps.tolerance:.1e}); fast vs plain: identical predictions {out['identical_predictions']}, "
          f"max |dlogL| {out['max_abs_loglik_diff']:.2e}", flush=True)
    release_memory()
    return out


def _questions(vocab: int, n: int, seed: int, prefix: str):
    from kinject_utils.tasks import Question

    rng = random.Random(seed)
    w = words(vocab)
    return [Question(id=f"{prefix}{i}", question=" ".join(rng.choice(w) for _ in range(12)),
                     choices=[" ".join(rng.choice(w) for _ in range(rng.randint(1, 4))) for _ in range(4)],
                     answer=rng.randrange(4), subject="gpu_check") for i in range(n)]


def _lmeval_loglik(lm, requests: list[tuple[str, str]]) -> list[float]:
    from lm_eval.api.instance import Instance

    inst = [Instance("loglikelihood", doc={}, arguments=r, idx=i, metadata=("gpu_check", i, 1))
            for i, r in enumerate(requests)]
    return [float(ll) for ll, _ in lm.loglikelihood(inst, disable_tqdm=True)]


def check_scoring(folder: Path, device: str, dtype: str, batches: list[int], n: int, vocab: int) -> list[dict]:
    """``score_questions`` vs lm-eval's ``HFLM`` on the same requests: letter 5-shot, cloze with context."""
    from lm_eval.models.huggingface import HFLM

    from kinject_utils.models import load_causal_lm
    from kinject_utils.scoring import build_request, capabilities, score_questions

    model, tok = load_causal_lm(str(folder), dtype=dtype, device=device)
    caps = capabilities(model)
    print(f"scoring path for the base model in {dtype}: "
          f"{'shared prefix + k-shot prefix cache' if caps.cached else 'shared prefix' if caps.packed else 'fallback'}"
          f"; probe max |dlogp| {caps.packed_err:.2e} / {caps.cached_err:.2e} (tolerance {caps.tolerance:.1e})"
          f"{'; ' + caps.reason if caps.reason else ''}", flush=True)
    dev = _questions(vocab, 5, 1, "dev")
    qs = _questions(vocab, n, 2, "q")
    ctx = [" ".join(texts(vocab, 3, 200, seed=100 + i)) for i in range(n)]
    cases = {"letter 5-shot": dict(style="letter", shots=5, contexts=None),
             "cloze + 3x200-word context": dict(style="cloze", shots=0, contexts=ctx)}
    rows = []
    for bs in batches:
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=bs, device=device)
        for case, kw in cases.items():
            warm = {**kw, "contexts": kw["contexts"][:2] if kw["contexts"] else None}
            score_questions(model, tok, qs[:2], dev=dev, batch_size=bs, progress=False, **warm)  # warm-up
            t0 = time.perf_counter()
            ours = score_questions(model, tok, qs, dev=dev, batch_size=bs, progress=False, **kw)
            ours_s = time.perf_counter() - t0
            reqs, spans = [], []
            for i, q in enumerate(qs):
                c, conts = build_request(q, style=kw["style"], subject=q.subject, fewshot=dev[:kw["shots"]],
                                         context=(kw["contexts"] or [""] * n)[i])
                spans.append((len(reqs), len(conts)))
                reqs.extend((c, x) for x in conts)
            t0 = time.perf_counter()
            lls = _lmeval_loglik(lm, reqs)
            lm_s = time.perf_counter() - t0
            theirs = [lls[a:a + k] for a, k in spans]
            their_pred = [max(range(len(ll)), key=lambda j: (ll[j], -j)) for ll in theirs]
            diff = max(abs(a - b) for r, ll in zip(ours, theirs) for a, b in zip(r["logliks"], ll))
            rows.append({"case": case, "batch_size": bs, "n": n, "ours_s": round(ours_s, 3),
                         "lmeval_s": round(lm_s, 3), "speedup": round(lm_s / ours_s, 2),
                         "identical_predictions": [r["pred"] for r in ours] == their_pred,
                         "max_abs_loglik_diff": float(f"{diff:.3g}")})
            r = rows[-1]
            print(f"scoring {case:>27}, batch {bs:>2}: ours {r['ours_s']:.2f} s, lm-eval {r['lmeval_s']:.2f} s, "
                  f"{r['speedup']:.2f}x, identical predictions {r['identical_predictions']}, "
                  f"max |dlogL| {r['max_abs_loglik_diff']:.2e}", flush=True)
    return rows


def table(result: dict) -> str:
    lines = [f"gpu_check: {result['shape']} shape ({result['model']['params']:,} parameters, random weights) "
             f"on {result['device']} ({result['gpu']}), scoring dtype {result['dtype']}",
             "", "| QLoRA micro-batch | tokens/s | peak memory GiB | final loss |", "|---|---|---|---|"]
    lines += [f"| {r['micro_batch']} | {r['tokens_per_s']:,.1f} | {r['peak_mem_gib']:.2f} | {r['final_loss']:.3f} |"
              for r in result["qlora"]]
    au, ad = result["auto_micro_batch"], result["adapter_scoring"]
    lines += ["", f"auto micro-batch, two runs in one process: {au['first']} then {au['second']} "
              f"({'same' if au['same'] else 'DIFFERENT'})",
              f"nf4 + LoRA adapter scoring: {ad['path']}; probe max |dlogp| {ad['probe_packed_err']:.2e} / "
              f"{ad['probe_cached_err']:.2e} (tolerance {ad['probe_tolerance']:.1e}); fast vs plain identical "
              f"predictions {ad['identical_predictions']}, max |dlogL| {ad['max_abs_loglik_diff']:.2e}"]
    lines += ["", "| scoring case | batch | ours s | lm-eval s | speed-up | identical | max abs dloglik |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['batch_size']} | {r['ours_s']:.2f} | {r['lmeval_s']:.2f} | {r['speedup']:.2f}x | "
              f"{r['identical_predictions']} | {r['max_abs_loglik_diff']:.2e} |" for r in result["scoring"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="mistral-7b")
    ap.add_argument("--device", default="cuda", help="cuda | cpu (cuda needs a CUDA build of torch and a GPU)")
    ap.add_argument("--steps", type=int, default=4, help="optimiser steps per micro-batch measured")
    ap.add_argument("--micro-batches", default="4,16,32", help="QLoRA micro-batches to measure")
    ap.add_argument("--batches", default="8,32", help="scoring batch sizes")
    ap.add_argument("--questions", type=int, default=64, help="questions per scoring case")
    ap.add_argument("--dtype", default="auto", help="scoring dtype: auto (bf16 on CUDA) | float32 | bfloat16")
    ap.add_argument("--workdir", default="", help="where the model and adapters go (default: a temporary folder)")
    ap.add_argument("--out", default="runs/gpu_check.json", help="JSON file to write the results to")
    a = ap.parse_args(argv)
    if a.steps < 1:
        ap.error("--steps must be >= 1")

    import peft
    import torch
    import transformers

    from kinject_utils.device import resolve

    device, dtype = resolve(a.device, a.dtype)
    vocab = SHAPES[a.shape]["vocab_size"]
    with tempfile.TemporaryDirectory(prefix="kinject-gpu-check-", dir=a.workdir or None) as tmp:
        work = Path(tmp)
        folder = work / f"random-{a.shape}"
        info = build_model(a.shape, device, folder, "bfloat16" if device.startswith("cuda") else "float32")
        print(f"built {a.shape} shape: {info['params']:,} parameters in {info['build_save_s']} s -> {folder}",
              flush=True)
        mbs = [int(x) for x in a.micro_batches.split(",")]
        qlora = check_qlora(folder, device, mbs, a.steps, vocab, work)
        auto = check_auto_twice(folder, device, a.steps, vocab, work)
        adapter = check_adapter_scoring(folder, work / f"qlora-mb{mbs[0]}", device, vocab, min(a.questions, 16))
        scoring = check_scoring(folder, device, dtype, [int(x) for x in a.batches.split(",")], a.questions, vocab)
    try:
        import bitsandbytes
        bnb = bitsandbytes.__version__
    except ImportError:
        bnb = "not installed"
    result = {"shape": a.shape, "device": device, "dtype": dtype, "model": info,
              "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
              "date": time.strftime("%Y-%m-%d"),
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "peft": peft.__version__, "bitsandbytes": bnb},
              "qlora": qlora, "auto_micro_batch": auto, "adapter_scoring": adapter, "scoring": scoring}
    print("\n" + table(result))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
