"""The claims check of notebook 06: does this run support each of the paper's five claims?

A comparison "A beats B" counts as supported when a paired test on the same questions gives a
positive difference whose 95% bootstrap interval excludes 0, as contradicted when the interval lies
below 0, and as undecided when it contains 0 (the run is too small to tell). Each cell's correctness is read in
the primary metric of its scoring style (:func:`~kinject_utils.study.paper.metric_for`), the same
rule the score table and the paper tables use.
"""
from __future__ import annotations

from typing import Any

from .paper import CLAIMS, metric_for

__all__ = ["check_claims", "PAIRS", "FIXED_STEPS"]

#: suffix of a sweep cell trained for FT-reg's number of steps (variant ``ft-par-N-fixed``)
FIXED_STEPS = "fixed-steps"

# claim -> comparisons (A, B, what must hold of acc(A) - acc(B))
PAIRS = {
    1: [("base+RAG", "base", "better")],
    2: [("base+RAG", "FT-reg", "better"), ("base+RAG", "FT-par", "better")],
    3: [("FT-reg", "base", "small")],
    4: [("FT-par", "FT-reg", "better"), ("FT-par(10)", "FT-reg", "better")],  # FT-par(10): the paper's N
    5: [("FT-reg+RAG", "base+RAG", "not_better"), ("FT-par+RAG", "base+RAG", "not_better")],
}


def _styles(scores: Any) -> dict[tuple, str]:
    """(model, task, shots, method, k) -> scoring style, from ``05_scores.csv`` (for files without a style)."""
    if scores is None or not len(scores) or "style" not in scores:
        return {}
    return {(r.model, r.task, int(r.shots), r.method, int(r.k)): r.style
            for r in scores[["model", "task", "shots", "method", "k", "style"]].itertuples(index=False)}


def _by_cell(scores: Any, per_question: list[dict]) -> dict[tuple, dict[str, float]]:
    styles = _styles(scores)
    out: dict[tuple, dict[str, float]] = {}
    for i, r in enumerate(per_question, 1):
        key = (r["model"], r["task"], int(r["shots"]), r["method"], int(r["k"]))
        style = r.get("style") or styles.get(key)
        if style is None:
            raise ValueError(f"05_per_question.jsonl row {i} ({key}) has no 'style' and 05_scores.csv has no row "
                             "for its cell; re-run notebook 05 to rebuild both files")
        if str(r.get("variant") or "").endswith("-fixed"):  # the sweep's fixed-step twin of FT-par(N): its own cell
            key = key[:3] + (f"{r['method']} {FIXED_STEPS}",) + key[4:]
        out.setdefault(key, {})[r["id"]] = float(r[metric_for(style)])
    return out


def _holds(e: dict) -> bool | None:
    """Whether one comparison goes the way the claim says (``e["want"]``), by its 95% interval.

    ``None``: the run cannot tell. "A beats B" holds when the interval of acc(A) - acc(B) lies
    above 0, fails when it lies below 0, and is undecided when it contains 0. "Not better" and
    "barely helps" are claims of no (large) gain: they hold unless the interval shows one.
    """
    lo, hi, w = e["diff_lo"], e["diff_hi"], e["want"]
    if w == "better":
        return True if lo > 0 else (False if hi < 0 else None)
    if w == "not_better":
        return not lo > 0
    if w == "small":  # "barely helps": no significant gain above 5 points
        return hi < 0.05 or not lo > 0.05
    raise ValueError(w)


def _verdict(ok: list[bool | None]) -> str:
    """The claim's verdict from its comparisons (``True`` holds, ``False`` fails, ``None`` undecided).

    supported (all hold), not supported (all fail), undecided (none decided); where only some are
    decided and those agree, "supported where decided" / "not supported where decided" (nothing in
    the run goes against it, and the undecided ones are named in the evidence); mixed when some hold
    and some fail.
    """
    if not ok:
        return "untested"
    decided = [o for o in ok if o is not None]
    if not decided:
        return "undecided"
    if all(decided) or not any(decided):
        verdict = "supported" if all(decided) else "not supported"
        return verdict if len(decided) == len(ok) else verdict + " where decided"
    return "mixed"


def _sweep(scores: Any) -> list[dict]:
    """Claim 4's second half: accuracy over the paraphrase sweep, with Spearman's rho and monotonicity."""
    from ..scoring import spearman

    if scores is None or not len(scores):
        return []
    sweep = scores[scores["method"].str.startswith("FT-par(") & (scores["subject"] == "all")]
    out = []
    for (m, t, budget), grp in (sweep.groupby(["model", "task", "budget"]) if len(sweep) else []):
        g = grp.sort_values("n_paraphrases")
        if len(g) >= 3:
            n, s = list(g["n_paraphrases"]), list(g["score"])
            out.append({"model": m, "task": t, "budget": budget, "n_paraphrases": n, "score": [round(x, 3) for x in s],
                        "spearman": spearman(n, s), "monotone": all(b >= a for a, b in zip(s, s[1:]))})
    return out


def check_claims(scores: Any, per_question: list[dict], seed: int = 0) -> list[dict]:
    """Decide, for each of the paper's five claims, whether this run supports it.

    Args:
        scores: ``05_scores.csv`` as a pandas DataFrame.
        per_question: rows of ``05_per_question.jsonl``.

    Returns:
        One dict per claim: claim, text, verdict (supported / not supported [where decided] / undecided /
        mixed / untested), evidence (every comparison it rests on, with ``holds``); claim 4 also has ``sweep``.
    """
    from ..scoring import paired_test

    by_cell = _by_cell(scores, per_question)

    def compare(model, task, shots, a, b):
        ca = next((v for k_, v in by_cell.items() if k_[:4] == (model, task, shots, a)), None)
        cb = next((v for k_, v in by_cell.items() if k_[:4] == (model, task, shots, b)), None)
        if ca is None or cb is None:
            return None
        ids = sorted(set(ca) & set(cb))
        # paired_test(x, y) reports y - x: pass (b, a) so diff = acc(a) - acc(b)
        res = paired_test([cb[i] for i in ids], [ca[i] for i in ids], seed=seed)
        return {"_same": (model, task, shots, b, tuple(sorted(ca.items()))),
                "model": model, "task": task, "shots": shots, "a": a, "b": b, "n": len(ids),
                "acc_a": res["acc_b"], "acc_b": res["acc_a"], "diff": res["diff"],
                "diff_lo": res["diff_lo"], "diff_hi": res["diff_hi"], "p_value": res["p_mcnemar"]}

    combos = sorted({k_[:3] for k_ in by_cell})
    out = []
    for num, comps in PAIRS.items():
        evid, seen = [], set()
        for (m, t, s) in combos:
            for a, b, want in comps:
                e = compare(m, t, s, a, b)
                same = e.pop("_same") if e else None
                if e and same not in seen:  # one adapter under two labels (N_PAR 10: FT-par is FT-par(10)): once
                    seen.add(same)
                    e["want"] = want
                    e["holds"] = _holds(e)
                    evid.append(e)
        out.append({"claim": num, "text": CLAIMS[num], "verdict": _verdict([e["holds"] for e in evid]),
                    "evidence": evid})
    mono = _sweep(scores)
    out[3]["sweep"] = mono
    if mono:  # claim 4 has two halves: FT-par > FT-reg, and a monotone rise over the sweep
        out[3]["verdict"] = _verdict([e["holds"] for e in out[3]["evidence"]] + [m["monotone"] for m in mono])
    return out
