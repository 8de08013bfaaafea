"""Notebook 07's test breakdown: the out-of-distribution split, the per-category table, train accuracy per epoch."""
import pytest

from kinject_utils.newknowledge import StudyConfig, build_sets, finding_1
from kinject_utils.newknowledge.claims import breakdown_markdown, category_table, train_accuracy


def _run(set_name, test_correct, ood_correct, epochs=3, early=2):
    """SFT rows of one run: train/dev every epoch (dev best at ``early``), test/ood at ``early`` and the last."""
    rows = []
    cats = ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
    for e in range(1, epochs + 1):
        rows += [{"model": "m", "set": set_name, "epoch": e, "split": "train", "id": f"tr{i}", "category": "Unknown",
                  "correct": int(i < e)} for i in range(4)]
        rows += [{"model": "m", "set": set_name, "epoch": e, "split": "dev", "id": f"d{i}", "category": "Unknown",
                  "correct": int(e == early and i < 3)} for i in range(4)]
    for e in sorted({early, epochs}):
        rows += [{"model": "m", "set": set_name, "epoch": e, "split": "test", "id": f"t{i:02d}",
                  "category": cats[i % 4], "correct": c if e == epochs else 1 - c} for i, c in enumerate(test_correct)]
        rows += [{"model": "m", "set": set_name, "epoch": e, "split": "ood", "id": f"o{i:02d}", "category": "Unknown",
                  "correct": c} for i, c in enumerate(ood_correct)]
    return rows


def test_category_table_reads_each_stop_and_category():
    rows = _run("unknown-000", [1, 1, 0, 0, 1, 0, 0, 0], [1, 0, 0, 0])
    t = category_table(rows, "m")
    assert [(r["stop"], r["epoch"]) for r in t] == [("early stop", 2), ("convergence", 3)]
    conv, early = t[1], t[0]
    assert conv["n"] == 8 and conv["acc"] == 3 / 8
    assert conv["HighlyKnown"] == (1.0, 2) and conv["MaybeKnown"] == (0.5, 2) and conv["Unknown"] == (0.0, 2)
    assert early["acc"] == 5 / 8 and early["HighlyKnown"] == (0.0, 2)  # the early-stop epoch's answers
    assert conv["ood"] == (0.25, 4)
    assert train_accuracy(rows, "m", "unknown-000") == [(1, 0.25, 0.0), (2, 0.5, 0.75), (3, 0.75, 0.0)]
    md = "\n".join(breakdown_markdown(rows, ["m"]))
    assert "| unknown-000 | convergence | 3 | 8 | 0.375 [" in md and "| 1.000 (2) | 0.500 (2) |" in md
    assert "| unknown-000 | 0.25 0.50 0.75 | 0.00 0.75 0.00 |" in md


def test_finding_1_adds_out_of_distribution_rows_without_changing_its_verdict_parts():
    rows = _run("unknown-000", [1] * 8, [1, 1, 1, 0]) + _run("unknown-100", [0] * 8, [0, 0, 1, 0])
    f = finding_1(rows, "m", [0, 1])
    assert [r["stop"] for r in f["rows"]] == ["early stop", "convergence", "early stop, OOD", "convergence, OOD"]
    assert f["rows"][3]["acc_a"] == 0.75 and f["rows"][3]["acc_b"] == 0.25
    assert f["rows"][1]["acc_a"] == 1.0 and f["rows"][1]["acc_b"] == 0.0


def _examples():
    rels = ["capital"] * 40 + ["currency"] * 10 + ["city_country"] * 40
    cats = ["Unknown", "HighlyKnown", "MaybeKnown"]
    return [{"id": f"q{i:03d}", "question": f"q{i}?", "answer": "a", "relation": r, "category": cats[i % 3]}
            for i, r in enumerate(rels)]


def test_build_sets_holds_out_the_ood_relations():
    cfg = StudyConfig(train_size=8, single_size=4, ood_relations=("currency",), dev_share=0.2, test_share=0.3)
    splits, sets, _ = build_sets(_examples(), cfg)
    assert {e["relation"] for e in splits["ood"]} == {"currency"} and len(splits["ood"]) == 10
    for name in ("train", "dev", "test"):
        assert all(e["relation"] != "currency" for e in splits[name])
    assert all(e["relation"] != "currency" for s in sets.values() for e in s)
    with pytest.raises(ValueError, match=r"OOD_RELATIONS \['weather'\] have no questions; choose among"):
        build_sets(_examples(), StudyConfig(ood_relations=("weather",)))


def test_the_unknown_only_set_is_the_full_unknown_share_set_and_is_trained_once(tmp_path, monkeypatch):
    from kinject_utils.newknowledge import sft

    cfg = StudyConfig(train_size=4, single_size=4, dev_share=0.2, test_share=0.3)
    splits, sets, notes = build_sets(_examples(), cfg)
    assert sets["only-Unknown"] == sets["unknown-100"] and "only-Unknown" in notes["single"]
    calls = {}

    def fake_train(base, tok, train, evals, cfg, label="", final=None):
        calls[label] = sorted(final)
        return [{"epoch": 1, "split": "train", "id": e["id"], "correct": 1} for e in train]

    monkeypatch.setattr(sft, "train_and_track", fake_train)
    final = {"test": splits["test"], "ood": splits["ood"]}
    rows = sft.run_sets(None, None, sets, {"dev": splits["dev"]}, sft.SftConfig(epochs=1), tmp_path, model="m",
                        final=final, final_only={"only-MaybeKnown": ["test"]})
    assert list(calls) == [f"m {n}" for n in sets if n != "only-Unknown"]
    assert calls["m only-MaybeKnown"] == ["test"] and calls["m unknown-100"] == ["ood", "test"]
    got = {n: [r["id"] for r in rows if r["set"] == n] for n in ("unknown-100", "only-Unknown")}
    assert got["only-Unknown"] == got["unknown-100"] and len(got["unknown-100"]) == 4
    assert not (tmp_path / "only-Unknown.jsonl").exists()
    _, other, _ = build_sets(_examples(), StudyConfig(train_size=4, single_size=2, dev_share=0.2, test_share=0.3))
    assert len(other["only-Unknown"]) == 2  # another size: a set of its own
