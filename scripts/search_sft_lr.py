"""Which learning rate notebook 07's fine-tuning should use: the search behind its LR default.

Gekhman et al. fine-tune until the training set is fitted ("convergence") and early-stop on a dev
set. Too high a rate breaks that design: the model forgets what it knew while fitting 24 examples
(dev accuracy falls from the first epoch, a Known-only set's own train accuracy collapses), and the
"convergence" column measures instability, not new knowledge. This script trains chosen sets of the
default study at each candidate rate and answers **only the training examples and the dev set**
after every epoch (the test and out-of-distribution questions are never looked at), then picks
the rate with the best mean early-stop dev accuracy among those whose every set fits its own
examples (train accuracy >= ``--fit``) by the last epoch. Same seed, same numbers.

The categories come from a finished notebook 07 (``07_slick.csv``), so SliCK is not rerun:

    python scripts/search_sft_lr.py --slick results/07_slick.csv --out runs/search_sft_lr
    python scripts/search_sft_lr.py --lrs 1e-3 5e-4 --epochs 6 --sets unknown-000 unknown-100
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from kinject_utils.io import read_csv, write_csv
from kinject_utils.log import get_logger
from kinject_utils.newknowledge import StudyConfig, build_sets, examples, load, study_facts, train_and_track
from kinject_utils.newknowledge.claims import train_accuracy
from kinject_utils.newknowledge.sft import SftConfig

log = get_logger("search_sft_lr")


def epoch_table(rows: list[dict]) -> list[dict]:
    """Per epoch: train and dev accuracy (as ``07_claims.md`` reads them) and the mean training loss."""
    loss = {r["epoch"]: r["loss"] for r in rows if r["split"] == "_loss"}
    run = [{"model": "", "set": "", **r} for r in rows]
    return [{"epoch": e, "loss": loss[e], "train_acc": tr, "dev_acc": dv} for e, tr, dv in train_accuracy(run, "", "")]


def choose(table: list[dict], fit: float) -> tuple[float | None, list[dict]]:
    """``(rate, summary)``: per rate the mean best dev accuracy and whether every set fitted its examples."""
    summary = []
    for lr in sorted({r["lr"] for r in table}, reverse=True):
        runs = {s: [r for r in table if r["lr"] == lr and r["set"] == s] for s in {r["set"] for r in table}}
        best = {s: max(r["dev_acc"] for r in v) for s, v in runs.items()}
        last = {s: max(v, key=lambda r: r["epoch"])["train_acc"] for s, v in runs.items()}
        summary.append({"lr": lr, "mean_best_dev": sum(best.values()) / len(best),
                        "min_last_train": min(last.values()), "fits": min(last.values()) >= fit,
                        **{f"best_dev {s}": b for s, b in sorted(best.items())}})
    ok = [s for s in summary if s["fits"]]
    return (max(ok, key=lambda s: (s["mean_best_dev"], s["lr"]))["lr"] if ok else None), summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slick", default="results/07_slick.csv", help="07_slick.csv of a finished notebook 07")
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--lrs", nargs="+", type=float, default=[2e-3, 1e-3, 5e-4, 2.5e-4])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--sets", nargs="+", default=["unknown-000", "unknown-100", "only-HighlyKnown"])
    ap.add_argument("--fit", type=float, default=0.9, help="train accuracy every set must reach by the last epoch")
    ap.add_argument("--out", default="runs/search_sft_lr")
    args = ap.parse_args()
    cfg = StudyConfig()
    slick = [r for r in read_csv(args.slick) if r["model"] == args.model]
    if not slick:
        raise SystemExit(f"{args.slick} has no rows for {args.model!r}: run notebook 07 (make newknowledge) first")
    splits, sets, notes = build_sets(examples(study_facts(cfg), slick), cfg)
    missing = [s for s in args.sets if s not in sets]
    if missing:
        raise SystemExit(f"sets {missing} are not built by the default study; choose among {sorted(sets)}")
    log.info("train size %d, dev %d questions; sets %s", notes["train_size"], len(splits["dev"]), args.sets)
    base, tok = load(args.model, cfg.device, cfg.dtype)
    table = []
    for lr in args.lrs:
        sft = SftConfig(epochs=args.epochs, lr=lr, batch_size=cfg.batch_size, seed=cfg.seed)
        for name in args.sets:
            t0 = time.perf_counter()
            rows = train_and_track(base, tok, sets[name], {"dev": splits["dev"]}, sft, label=f"lr {lr:g} {name}")
            table += [{"lr": lr, "set": name, **r} for r in epoch_table(rows)]
            log.info("lr %g %s: %.0f s", lr, name, time.perf_counter() - t0)
    out = Path(args.out)
    write_csv(table, out / "epochs.csv")
    lr, summary = choose(table, args.fit)
    write_csv(summary, out / "summary.csv")
    for s in summary:
        print({k: (f"{v:g}" if k == "lr" else round(v, 3)) if isinstance(v, float) else v for k, v in s.items()})
    # the first E epochs of this run are an E-epoch run (data order seeded per epoch, constant rate)
    for cap in range(1, args.epochs + 1):
        got, _ = choose([r for r in table if r["epoch"] <= cap], args.fit)
        print(f"EPOCHS {cap}: " + (f"LR {got:g}" if got is not None else f"no rate fits every set to {args.fit}"))
    print(f"chosen LR: {lr:g}" if lr is not None else f"no rate fits every set to train accuracy {args.fit}: "
          "add epochs or higher rates")


if __name__ == "__main__":
    main()
