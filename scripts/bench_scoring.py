"""Benchmark: our scorer against lm-evaluation-harness on the same questions, in one run.

Two cases, both fp32 on CPU with the same torch thread count:

    cloze  MMLU questions (0-shot, mmlu_continuation prompts) each preceded by a retrieved
           context of three ~200-word passages (the first 200 words of fictional-knowledge
           articles 3i, 3i+1, 3i+2: deterministic). Target: >= 3x the harness's throughput.
    letter MMLU questions, 0-shot, the harness's default MMLU prompt. Target: >= 1x.
    letter 5-shot: the same prompt after the subject's description and first five dev rows
           (~300 shared tokens per question, computed once per call by the k-shot prefix cache).
           Target: >= 3x, identical predictions, log-likelihoods within 1e-4.

The harness runs its own task files (``write_lmeval_tasks``: its installed MMLU YAMLs, local CSVs)
through ``simple_evaluate``; its scoring time is the time spent in ``HFLM.loglikelihood``. Ours is
the whole ``score_questions`` call (prompt building and tokenisation included). Both get a short
warm-up first, and they alternate on chunks of questions (who goes first alternating too), so that
a busy shared machine slows both alike (the 5-shot case alternates on larger chunks: our prefix is
computed once per call, as notebook 05 calls it once per subject). Predictions must be identical;
the largest log-likelihood difference is printed, and the machine's load average before and after.

Usage (repo root):
    .venv/bin/python scripts/bench_scoring.py                 # default: a few minutes on 2 cores
    .venv/bin/python scripts/bench_scoring.py --n-cloze 40 --n-letter 144 --threads 4
    .venv/bin/python scripts/bench_scoring.py --cases letter5 --n-letter5 48 --chunk5 16
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def passages_for(n_questions: int, n_passages: int, words: int, fk_file: Path) -> list[str]:
    """Deterministic retrieved contexts: the first ``words`` words of consecutive articles."""
    articles = [row["train_context"] for row in json.loads(fk_file.read_text(encoding="utf-8"))]
    out = []
    for i in range(n_questions):
        picked = [articles[(n_passages * i + k) % len(articles)] for k in range(n_passages)]
        out.append("\n\n".join(" ".join(p.split()[:words]) for p in picked))
    return out


def run_case(label: str, style: str, questions: list, contexts: list[str] | None, model, tok, lm,
             names: dict, subject: str, task_root: Path, batch_size: int, chunk: int,
             shots: int = 0, dev: list | None = None) -> dict:
    """Score ``questions`` with both scorers, alternating chunks of ``chunk`` questions (and who
    goes first) so that both see the same machine load on a shared CPU."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from kinject_utils.scoring import score_questions

    name = names[(subject, style)]
    spent = {"ours": 0.0, "lmeval": 0.0}
    original = lm.loglikelihood

    def timed(requests, disable_tqdm=False):
        t = time.perf_counter()
        try:
            return original(requests, disable_tqdm=True)
        finally:
            spent["lmeval"] += time.perf_counter() - t

    ours: list[dict] = []
    samples: list[dict] = []
    lm.loglikelihood = timed
    try:
        for k, start in enumerate(range(0, len(questions), chunk)):
            idx = list(range(start, min(start + chunk, len(questions))))

            def run_ours(idx=idx):
                t = time.perf_counter()
                ours.extend(score_questions(model, tok, [questions[i] for i in idx], style=style,
                                            contexts=[contexts[i] for i in idx] if contexts else None,
                                            shots=shots, dev=dev or (), batch_size=batch_size, progress=False))
                spent["ours"] += time.perf_counter() - t

            def run_lmeval(idx=idx):
                res = lm_eval.simple_evaluate(
                    model=lm, tasks=[name], num_fewshot=shots, samples={name: idx}, log_samples=True,
                    bootstrap_iters=0, task_manager=TaskManager(include_path=str(task_root), include_defaults=False))
                samples.extend(sorted(res["samples"][name], key=lambda s: s["doc_id"]))

            for fn in ((run_ours, run_lmeval) if k % 2 == 0 else (run_lmeval, run_ours)):
                fn()
    finally:
        lm.loglikelihood = original
    theirs = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    their_pred = [max(range(len(ll)), key=lambda j: (ll[j], -j)) for ll in theirs]
    our_pred = [r["pred"] for r in ours]
    diffs = [max(abs(a - b) for a, b in zip(r["logliks"], ll)) for r, ll in zip(ours, theirs)]
    diff, worst = max(diffs), diffs.index(max(diffs))
    n = len(questions)
    t_ours, t_lm = spent["ours"], spent["lmeval"]
    out = {"case": label, "n": n, "ours_s": t_ours, "lmeval_s": t_lm,
           "ours_qps": n / t_ours, "lmeval_qps": n / t_lm, "ratio": t_lm / t_ours,
           "identical_predictions": our_pred == their_pred and [s["doc_id"] for s in samples] == list(range(n)),
           "max_abs_loglik_diff": diff, "worst_question": worst,
           "worst_logliks": {"ours": ours[worst]["logliks"], "lmeval": theirs[worst]},
           "mean_ctx_tokens": sum(r["n_ctx_tokens"] for r in ours) / n,
           "mean_retrieved_tokens": sum(r["n_retrieved_tokens"] for r in ours) / n}
    print(f"{label:>28}: n={n}  ours {out['ours_qps']:.3f} q/s  lm-eval {out['lmeval_qps']:.3f} q/s  "
          f"ratio {out['ratio']:.2f}x  identical predictions: {out['identical_predictions']}  "
          f"max |dlogL| {diff:.2e} (question {worst})  mean context {out['mean_ctx_tokens']:.0f} tokens", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="registry name or folder")
    ap.add_argument("--subject", default="college_biology", help="MMLU subject the questions come from")
    ap.add_argument("--n-cloze", type=int, default=8, help="questions in the cloze + context case")
    ap.add_argument("--n-letter", type=int, default=32, help="questions in the letter 0-shot case")
    ap.add_argument("--n-letter5", type=int, default=32, help="questions in the letter 5-shot case")
    ap.add_argument("--passages", type=int, default=3, help="retrieved passages per question")
    ap.add_argument("--words", type=int, default=200, help="words per passage")
    ap.add_argument("--batch-size", type=int, default=8, help="batch size for both scorers")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for both scorers")
    ap.add_argument("--chunk", type=int, default=4,
                    help="questions per alternation between the two scorers (fair timing on a shared CPU)")
    ap.add_argument("--chunk5", type=int, default=16,
                    help="questions per alternation in the 5-shot case (ours computes the prefix once per chunk)")
    ap.add_argument("--data", type=Path, default=None,
                    help="folder holding mmlu/ (the original CSVs) and fictional_knowledge/; default: found as "
                         "notebook 01 finds it (KINJECT_DATA, the kinject cache, the hub)")
    ap.add_argument("--cases", nargs="+", choices=("cloze", "letter", "letter5"),
                    default=["cloze", "letter", "letter5"],
                    help="which cases to run")
    ap.add_argument("--out", type=Path, default=None, help="optional JSON file for the results")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from kinject_utils.data import DataUnavailableError, resolve_dataset

    try:
        mmlu, fk = ((args.data / name) if args.data else resolve_dataset(name).path
                    for name in ("mmlu", "fictional_knowledge"))
    except DataUnavailableError as exc:
        print(f"no data for the benchmark: {exc}", file=sys.stderr)
        return 2
    fk = fk / "fictional_knowledge.json"
    for p in (mmlu / "test" / f"{args.subject}_test.csv", fk):
        if not p.exists():
            print(f"missing {p}: lm-eval's side reads the original MMLU CSVs (test/, dev/) and "
                  "fictional_knowledge.json; pass --data DIR or set KINJECT_DATA", file=sys.stderr)
            return 2
    import torch
    from lm_eval.models.huggingface import HFLM

    from kinject_utils.data import load_mmlu
    from kinject_utils.models import load_causal_lm, resolve_model_dir
    from kinject_utils.scoring import score_questions, write_lmeval_tasks

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    mmlu_task = load_mmlu(args.subject, source=str(mmlu))
    test, dev = mmlu_task.questions, mmlu_task.dev
    n_max = max(args.n_cloze, args.n_letter, args.n_letter5)
    if n_max > len(test):
        print(f"{args.subject} has {len(test)} test questions; ask for fewer", file=sys.stderr)
        return 2
    contexts = passages_for(args.n_cloze, args.passages, args.words, fk)
    task_root = Path(tempfile.mkdtemp(prefix="kinject_bench_"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(task_root / "hf_datasets"))
    plain = write_lmeval_tasks(task_root / "plain", mmlu, [args.subject], styles=("letter",))
    rag = write_lmeval_tasks(task_root / "rag", mmlu, [args.subject], styles=("cloze",),
                             contexts={q.question: c for q, c in zip(test, contexts)})

    model, tok = load_causal_lm(args.model, dtype="float32")
    lm = HFLM(pretrained=resolve_model_dir(args.model), dtype="float32", batch_size=args.batch_size, device="cpu")
    print(f"torch threads {torch.get_num_threads()}, model {args.model}, batch size {args.batch_size}, "
          f"subject {args.subject}", flush=True)
    # warm-up: first forward passes pay one-off allocation/kernel-selection costs
    score_questions(model, tok, test[:2], style="cloze", contexts=contexts[:2], progress=False)
    lm.loglikelihood([type("R", (), {"args": ("Warm up the", " model")})()], disable_tqdm=True)

    results = []
    if "cloze" in args.cases:
        results.append(run_case(f"cloze + {args.passages}x{args.words}-word context", "cloze",
                                test[:args.n_cloze], contexts, model, tok, lm, rag, args.subject,
                                task_root / "rag", args.batch_size, args.chunk))
    if "letter" in args.cases:
        results.append(run_case("letter 0-shot", "letter", test[:args.n_letter], None, model, tok, lm,
                                plain, args.subject, task_root / "plain", args.batch_size, args.chunk))
    if "letter5" in args.cases:
        results.append(run_case("letter 5-shot", "letter", test[:args.n_letter5], None, model, tok, lm,
                                plain, args.subject, task_root / "plain", args.batch_size, args.chunk5,
                                shots=5, dev=dev))
    load_after = os.getloadavg()
    print(f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} on {os.cpu_count()} CPUs")
    targets = {"cloze": 3.0, "letter 0-shot": 1.0, "letter 5-shot": 3.0}
    ok = True
    for r in results:
        target = targets["cloze" if r["case"].startswith("cloze") else r["case"]]
        met = r["ratio"] >= target and r["identical_predictions"]
        if r["case"] == "letter 5-shot":
            met = met and r["max_abs_loglik_diff"] <= 1e-4
        ok &= met
        print(f"{r['case']}: target >= {target:.0f}x with identical predictions -> {'met' if met else 'NOT met'}")
    if args.out:
        from kinject_utils.io import write_json

        write_json(args.out, {"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                              "load_before": load_before, "load_after": load_after})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
