"""scripts/search_sft_lr.py's rule: the best early-stop dev accuracy among the rates that fit every set."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "search_sft_lr.py"


@pytest.fixture(scope="module")
def search():
    spec = importlib.util.spec_from_file_location("search_sft_lr", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(lr, name, train, dev):
    return [{"lr": lr, "set": name, "epoch": e + 1, "train_acc": t, "dev_acc": d}
            for e, (t, d) in enumerate(zip(train, dev))]


def test_a_rate_must_fit_every_set_before_its_dev_accuracy_counts(search):
    table = (_rows(1e-3, "known", [0.9, 1.0, 1.0], [0.6, 0.5, 0.5])
             + _rows(1e-3, "unknown", [0.2, 0.6, 0.95], [0.3] * 3)
             + _rows(2e-4, "known", [1.0] * 3, [0.8] * 3) + _rows(2e-4, "unknown", [0.1, 0.3, 0.5], [0.7] * 3))
    lr, summary = search.choose(table, fit=0.9)
    assert lr == 1e-3  # 2e-4 answers the dev set better, but never fits its Unknown examples
    assert {s["lr"]: s["fits"] for s in summary} == {1e-3: True, 2e-4: False}
    assert summary[0]["mean_best_dev"] == pytest.approx((0.6 + 0.3) / 2)
    assert search.choose([r for r in table if r["epoch"] <= 2], fit=0.9)[0] is None  # two epochs fit nothing
    assert search.choose(table, fit=0.5)[0] == 2e-4  # both fit: the better dev accuracy


def test_epoch_table_reads_train_and_dev_accuracy_and_the_loss(search):
    rows = ([{"epoch": 1, "split": "train", "correct": c} for c in (1, 0)]
            + [{"epoch": 1, "split": "dev", "correct": c} for c in (1, 1, 0, 0)]
            + [{"epoch": 1, "split": "_loss", "loss": 2.5}])
    assert search.epoch_table(rows) == [{"epoch": 1, "loss": 2.5, "train_acc": 0.5, "dev_acc": 0.5}]
