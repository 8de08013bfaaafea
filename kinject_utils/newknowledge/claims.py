"""The four findings of Gekhman et al. (2024), checked on notebook 07's runs with paired intervals.

1. Test accuracy falls as the share of Unknown training examples rises, more at convergence than at
   early stop (lowest vs highest share, paired on the same test questions).
2. Unknown training examples are fitted more slowly than Known ones (epoch at which each is first
   answered right; two-sample bootstrap of the mean difference).
3. Relabelling the Unknown examples' answers "I don't know" removes most of the harm (IDK vs plain at
   the same share, paired; "most" = at least half the drop from the lowest share recovered).
4. MaybeKnown-only training is the best single-category set (paired against each other set).

Each is *supported* (interval(s) on the claimed side of 0), *not supported* (an interval on the
other side) or *undecided*: the claims engine's rule (:func:`kinject_utils.claims.decide`), parts of
one finding gathered by :func:`~kinject_utils.claims.verdict_all` (every part must hold). Intervals: the
engine's 95% percentile bootstrap, paired where both sides answer the same test questions.
Also writes ``07_slick.csv`` (:func:`write_slick_csv`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..claims import decide, fmt_ci, md_row, md_table, mean_ci, paired_test, two_sample_ci, verdict_all, write_claims
from ..io import write_csv
from .sets import IDK, share_name
from .slick import KNOWN

SLICK_COLUMNS = ["model", "id", "relation", "source", "category", "greedy_hits", "n_prompts", "sample_hits",
                 "n_samples", "temperature", "answer"]
N_BOOT = 2000


def write_slick_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """``07_slick.csv``: model, question id, relation, category, greedy/sample hit counts (one row per question)."""
    return write_csv([{c: r.get(c, "") for c in SLICK_COLUMNS} for r in rows], path, columns=SLICK_COLUMNS)


def _runs(rows: Sequence[dict], model: str, name: str) -> list[dict]:
    return [r for r in rows if r["model"] == model and r["set"] == name]


def stop_epochs(rows: Sequence[dict], model: str, name: str) -> tuple[int, int]:
    """``(early stop, convergence)``: the best dev-accuracy epoch (earliest on ties) and the last epoch."""
    run = _runs(rows, model, name)
    if not run:
        raise KeyError(f"no training run {name!r} for {model!r}")
    epochs = sorted({r["epoch"] for r in run})
    dev = {e: [r["correct"] for r in run if r["epoch"] == e and r["split"] == "dev"] for e in epochs}
    best = max(epochs, key=lambda e: (sum(dev[e]) / max(len(dev[e]), 1), -e))
    return best, epochs[-1]


def test_vector(rows: Sequence[dict], model: str, name: str, epoch: int, split: str = "test") -> list[int]:
    """0/1 per test question (sorted by id) of one run at one epoch."""
    got = sorted((r["id"], r["correct"]) for r in _runs(rows, model, name) if r["epoch"] == epoch
                 and r["split"] == split)
    return [c for _, c in got]


def finding_1(rows: Sequence[dict], model: str, shares: Sequence[float]) -> dict:
    """Lowest vs highest Unknown share, at early stop and at convergence; and the drop's difference."""
    lo_s, hi_s = share_name(min(shares)), share_name(max(shares))
    out: dict = {"model": model, "a": lo_s, "b": hi_s, "rows": []}
    vecs = {}
    for stop, idx in (("early stop", 0), ("convergence", 1)):
        ea, eb = stop_epochs(rows, model, lo_s)[idx], stop_epochs(rows, model, hi_s)[idx]
        a, b = test_vector(rows, model, lo_s, ea), test_vector(rows, model, hi_s, eb)
        vecs[stop] = (a, b)
        t = paired_test(a, b, n_boot=N_BOOT)
        out["rows"].append({"stop": stop, "epoch_a": ea, "epoch_b": eb, **t})
    (a_es, b_es), (a_cv, b_cv) = vecs["early stop"], vecs["convergence"]
    dod = [(ac - bc) - (ae - be) for ae, be, ac, bc in zip(a_es, b_es, a_cv, b_cv)]
    out["dod"] = sum(dod) / len(dod)
    out["dod_lo"], out["dod_hi"] = mean_ci(dod, n_boot=N_BOOT)
    if test_vector(rows, model, lo_s, stop_epochs(rows, model, lo_s)[1], "ood"):  # relations never fine-tuned on
        for stop, idx in (("early stop", 0), ("convergence", 1)):
            ea, eb = stop_epochs(rows, model, lo_s)[idx], stop_epochs(rows, model, hi_s)[idx]
            a, b = test_vector(rows, model, lo_s, ea, "ood"), test_vector(rows, model, hi_s, eb, "ood")
            out["rows"].append({"stop": f"{stop}, OOD", "epoch_a": ea, "epoch_b": eb,
                                **paired_test(a, b, n_boot=N_BOOT)})
    conv = out["rows"][1]
    decisions = [decide(conv["diff_lo"], conv["diff_hi"], "worse"), decide(out["dod_lo"], out["dod_hi"], "better")]
    out["parts"] = [verdict_all([d]) for d in decisions]
    out["verdict"] = verdict_all(decisions)
    return out


def first_fit(rows: Sequence[dict], model: str, name: str) -> dict[str, list[int]]:
    """Per category, the first epoch each training example was answered right (``epochs + 1`` if never)."""
    run = [r for r in _runs(rows, model, name) if r["split"] == "train"]
    last = max(r["epoch"] for r in run)
    first: dict[str, int] = {}
    cat: dict[str, str] = {}
    for r in sorted(run, key=lambda r: r["epoch"]):
        cat[r["id"]] = r["category"]
        if r["correct"] and r["id"] not in first:
            first[r["id"]] = r["epoch"]
    out: dict[str, list[int]] = {}
    for i, c in cat.items():
        out.setdefault(c, []).append(first.get(i, last + 1))
    return out


def finding_2(rows: Sequence[dict], model: str, name: str, seed: int = 0) -> dict:
    """Mean first-fit epoch, Unknown minus Known, in one mixed set (two-sample bootstrap)."""
    ff = first_fit(rows, model, name)
    unk, known = ff.get("Unknown", []), [e for c in KNOWN for e in ff.get(c, [])]
    out = {"model": model, "set": name, "n_unknown": len(unk), "n_known": len(known)}
    if not unk or not known:
        return {**out, "verdict": "undecided", "why": "the set lacks Unknown or Known examples"}
    lo, hi = two_sample_ci(unk, known, n_boot=N_BOOT, seed=seed)
    u, k = sum(unk) / len(unk), sum(known) / len(known)
    return {**out, "unknown": u, "known": k, "diff": u - k, "diff_lo": lo, "diff_hi": hi,
            "verdict": verdict_all([decide(lo, hi, "better")])}


def finding_3(rows: Sequence[dict], model: str, shares: Sequence[float], idk_share: float) -> dict:
    """IDK vs plain at ``idk_share`` (convergence), against the drop from the lowest share."""
    plain, idk, base = share_name(idk_share), "idk-" + share_name(idk_share), share_name(min(shares))
    out: dict = {"model": model, "plain": plain, "idk": idk}
    if not _runs(rows, model, idk):
        return {**out, "verdict": "undecided", "why": f"no {idk} run"}
    e_p, e_i, e_b = (stop_epochs(rows, model, n)[1] for n in (plain, idk, base))
    p, i, b = (test_vector(rows, model, n, e) for n, e in ((plain, e_p), (idk, e_i), (base, e_b)))
    t = paired_test(p, i, n_boot=N_BOOT)
    harm = sum(b) / len(b) - sum(p) / len(p)
    idk_preds = [r for r in _runs(rows, model, idk) if r["epoch"] == e_i and r["split"] == "test"]
    out.update(t, harm=harm, recovered=t["diff"], base_acc=sum(b) / len(b),
               abstain=sum(r["pred"].strip().lower().startswith(IDK.lower()[:9]) for r in idk_preds) / len(idk_preds))
    if harm <= 0:
        out["verdict"], out["why"] = "undecided", "no drop from the lowest share to remove"
    elif t["diff_lo"] > 0 and t["diff"] >= harm / 2:
        out["verdict"] = "supported"
    elif t["diff_hi"] < harm / 2:
        out["verdict"] = "not supported"
    else:
        out["verdict"] = "undecided"
    return out


def finding_4(rows: Sequence[dict], model: str, single: Sequence[str], stop: str = "early stop") -> dict:
    """MaybeKnown-only against every other single-category set, paired on the test questions."""
    idx = 0 if stop == "early stop" else 1
    best = "only-MaybeKnown"
    out: dict = {"model": model, "stop": stop, "rows": []}
    others = [s for s in single if s != best]
    if best not in single or not others:
        return {**out, "verdict": "undecided", "why": "no MaybeKnown-only set, or nothing to compare it with"}
    m = test_vector(rows, model, best, stop_epochs(rows, model, best)[idx])
    decisions = []
    for s in others:
        o = test_vector(rows, model, s, stop_epochs(rows, model, s)[idx])
        t = paired_test(o, m, n_boot=N_BOOT)
        out["rows"].append({"other": s, **t})
        decisions.append(decide(t["diff_lo"], t["diff_hi"], "better"))
    out["verdict"] = verdict_all(decisions)
    return out


def category_table(rows: Sequence[dict], model: str) -> list[dict]:
    """The paper's test breakdown: per training set and stop, test accuracy overall (95% CI), per SliCK
    category of the test question, and on the out-of-distribution relations."""
    out = []
    for name in dict.fromkeys(r["set"] for r in rows if r["model"] == model):
        for stop, idx in (("early stop", 0), ("convergence", 1)):
            e = stop_epochs(rows, model, name)[idx]
            got = [r for r in _runs(rows, model, name) if r["epoch"] == e and r["split"] in ("test", "ood")]
            test = [r["correct"] for r in got if r["split"] == "test"]
            lo, hi = mean_ci(test, n_boot=N_BOOT)
            row = {"set": name, "stop": stop, "epoch": e, "n": len(test), "acc": sum(test) / len(test),
                   "lo": lo, "hi": hi}
            for c in ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"):
                v = [r["correct"] for r in got if r["split"] == "test" and r["category"] == c]
                row[c] = (sum(v) / len(v), len(v)) if v else None
            ood = [r["correct"] for r in got if r["split"] == "ood"]
            row["ood"] = (sum(ood) / len(ood), len(ood)) if ood else None
            out.append(row)
    return out


def train_accuracy(rows: Sequence[dict], model: str, name: str) -> list[tuple[int, float, float]]:
    """``(epoch, train accuracy, dev accuracy)`` per epoch of one run: does a set learn its own examples?"""
    run = _runs(rows, model, name)
    out = []
    for e in sorted({r["epoch"] for r in run if r["split"] == "train"}):
        tr = [r["correct"] for r in run if r["epoch"] == e and r["split"] == "train"]
        dv = [r["correct"] for r in run if r["epoch"] == e and r["split"] == "dev"]
        out.append((e, sum(tr) / len(tr), sum(dv) / max(len(dv), 1)))
    return out


def _cell(v: tuple[float, int] | None) -> str:
    return "-" if v is None else f"{v[0]:.3f} ({v[1]})"


def breakdown_markdown(rows: Sequence[dict], models: Sequence[str]) -> list[str]:
    """The per-category test table and the train/dev accuracy per epoch of every run, for ``07_claims.md``."""
    L: list[str] = []
    for m in models:
        L += md_table(f"Test accuracy per SliCK category of the test question ({m})",
                      ("set", "stop", "epoch", "n test", "all [95% CI]", "HighlyKnown (n)", "MaybeKnown (n)",
                       "WeaklyKnown (n)", "Unknown (n)", "OOD relations (n)"),
                      [md_row(r["set"], r["stop"], r["epoch"], r["n"], f"{r['acc']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]",
                              *(_cell(r[c]) for c in ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown", "ood")))
                       for r in category_table(rows, m)])
        sets = list(dict.fromkeys(r["set"] for r in rows if r["model"] == m))
        L += md_table(f"Train / dev accuracy per epoch ({m}): does each set learn its own examples?",
                      ("set", "train acc by epoch", "dev acc by epoch"),
                      [md_row(n, " ".join(f"{t:.2f}" for _, t, _ in train_accuracy(rows, m, n)),
                              " ".join(f"{d:.2f}" for _, _, d in train_accuracy(rows, m, n))) for n in sets])
    return L


def claims_markdown(f1: list[dict], f2: list[dict], f3: list[dict], f4: list[dict], header: str = "",
                    extra: Sequence[str] = ()) -> str:
    """``07_claims.md`` in the style of ``06_claims.md``."""
    L = ["# New-knowledge findings (Gekhman et al. 2024)", "",
         "A comparison counts when its 95% bootstrap interval excludes 0 (paired on the same test questions "
         "where both sides answer the same questions).", "", header]
    L += md_table("Finding 1: test accuracy falls as the Unknown share rises, more at convergence",
                ("model", "A", "B", "stop", "epochs (A, B)", "acc A", "acc B", "B - A [95% CI]", "p (McNemar)"),
                [md_row(f["model"], f["a"], f["b"], r["stop"], f"{r['epoch_a']}, {r['epoch_b']}", f"{r['acc_a']:.3f}",
                      f"{r['acc_b']:.3f}", fmt_ci(r), f"{r['p_mcnemar']:.3g}") for f in f1 for r in f["rows"]])
    L += [""] + [f"- {f['model']}: drop at convergence minus drop at early stop {fmt_ci(f, 'dod')}; parts "
                 f"(falls at convergence, falls more than at early stop): {', '.join(f['parts'])} -> "
                 f"**{f['verdict']}**" for f in f1]
    L += md_table("Finding 2: Unknown examples are fitted more slowly than Known ones",
                ("model", "set", "n Unknown", "n Known", "first-fit epoch Unknown", "Known", "Unknown - Known [95% CI]",
                 "verdict"),
                [md_row(f["model"], f["set"], f["n_unknown"], f["n_known"],
                        *((f"{f['unknown']:.2f}", f"{f['known']:.2f}", fmt_ci(f)) if "diff" in f
                          else ("-", "-", f["why"])),
                      f"**{f['verdict']}**") for f in f2])
    L += md_table("Finding 3: relabelling Unknown answers as \"I don't know\" removes most of the harm",
                ("model", "plain", "IDK", "acc plain", "acc IDK", "IDK - plain [95% CI]", "harm (lowest share - plain)",
                 "IDK answers on test", "verdict"),
                [md_row(f["model"], f["plain"], f["idk"],
                        *((f"{f['acc_a']:.3f}", f"{f['acc_b']:.3f}", fmt_ci(f), f"{f['harm']:+.3f}",
                           f"{f['abstain']:.2f}") if "diff" in f else ("-",) * 5),
                      f"**{f['verdict']}**" + (f" ({f['why']})" if "why" in f else "")) for f in f3])
    L += md_table("Finding 4: MaybeKnown-only is the best single-category training set",
                ("model", "stop", "other set", "acc other", "acc MaybeKnown", "MaybeKnown - other [95% CI]",
                 "p (McNemar)"),
                [md_row(f["model"], f["stop"], r["other"], f"{r['acc_a']:.3f}", f"{r['acc_b']:.3f}", fmt_ci(r),
                      f"{r['p_mcnemar']:.3g}") for f in f4 for r in f["rows"]])
    L += [""] + [f"- {f['model']} ({f['stop']}): **{f['verdict']}**{' - ' + f['why'] if 'why' in f else ''}"
                 for f in f4]
    L += list(extra)
    return "\n".join(L) + "\n"


def check_findings(rows: Sequence[dict], models: Sequence[str], shares: Sequence[float], idk_share: float,
                   mixed_share: float, single: dict[str, Sequence[str]], path: str | Path | None = None,
                   header: str = "") -> dict:
    """All four findings for every model that was trained; writes ``07_claims.md`` when ``path`` is given."""
    trained = [m for m in models if any(r["model"] == m for r in rows)]
    res = {"f1": [finding_1(rows, m, shares) for m in trained],
           "f2": [finding_2(rows, m, share_name(mixed_share)) for m in trained],
           "f3": [finding_3(rows, m, shares, idk_share) for m in trained],
           "f4": [finding_4(rows, m, single.get(m, []), stop) for m in trained
                   for stop in ("early stop", "convergence")]}
    if path is not None:
        write_claims(res, claims_markdown(res["f1"], res["f2"], res["f3"], res["f4"], header,
                                          breakdown_markdown(rows, trained)), path)
    return res
