"""How long FT-reg must train to learn its corpus: the search behind notebook 03's REG_EPOCHS default.

For each model, FT-reg (the raw fictional-news knowledge base, no paraphrases) is trained for each
candidate number of epochs (and learning rate), and scored on paraphrases of 8 documents that it
never trains on (held-out loss: the paper chose its learning rate this way) and on its own chunks
(has it learned the text?). Writes a CSV and prints the table; same seed, same numbers.

    python scripts/search_ft_reg.py --out runs/search_ft_reg            # both embedded models
    python scripts/search_ft_reg.py --models smollm2-135m --epochs 1 3 5 --lrs 1e-3 3e-3
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from kinject_utils import data
from kinject_utils import finetune as ft
from kinject_utils.io import write_csv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--epochs", nargs="+", type=int, default=[1, 3, 5])
    ap.add_argument("--lrs", nargs="+", type=float, default=[1e-3])
    ap.add_argument("--heldout-docs", type=int, default=8)
    ap.add_argument("--out", default="runs/search_ft_reg")
    args = ap.parse_args()
    task = data.make_fictional_news("default", 0, 10)
    _, held = ft.split_heldout_paraphrases(task.paraphrases, args.heldout_docs, 2, 0)
    texts = ft.corpus_for(task.docs, {}, 0)  # FT-reg: the knowledge base alone
    cfg = ft.preset("cpu", seed=0, device="cpu")
    rows = []
    for model in args.models:
        t0 = time.perf_counter()
        candidates = [{"epochs": e, "lr": lr} for lr in args.lrs for e in args.epochs]
        table = ft.fit_search(model, texts, held, cfg, candidates, Path(args.out) / model, progress=False)
        rows += [{"model": model, **r} for r in table.to_dict("records")]
        print(table.round(3).to_string(index=False), f"\n{model}: {time.perf_counter() - t0:.0f} s\n", flush=True)
    print(write_csv(rows, Path(args.out) / "search.csv"))


if __name__ == "__main__":
    main()
