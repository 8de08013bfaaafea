"""The five claims of Ovadia et al. (2023) as notebook 06 tests them, decided by :mod:`kinject_utils.claims`.

Each claim is a declared :class:`PaperClaim`: the comparisons (A, B, what must hold of acc(A) - acc(B))
made in every (model, task, shots) cell that scored both methods, and for claim 4 the paraphrase
sweep's rise. The rule that decides a comparison by its 95% paired interval, and the verdict that
gathers them, are the claims engine's (:func:`kinject_utils.claims.decide`, :func:`~kinject_utils.claims.verdict`).
Each cell's correctness is read in the primary metric of its scoring style
(:func:`~kinject_utils.study.paper.metric_for`), the same rule the score table and the paper tables use.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..claims import HOLDS, anchor, decide, fmt_ci, paired_n, paired_test, verdict
from .paper import CLAIMS, metric_for

__all__ = ["check_claims", "claims_markdown", "PaperClaim", "PAPER_CLAIMS", "FIXED_STEPS"]

#: suffix of a sweep cell trained for FT-reg's number of steps (variant ``ft-par-N-fixed``)
FIXED_STEPS = "fixed-steps"


@dataclasses.dataclass(frozen=True)
class PaperClaim:
    """One of the paper's claims, as comparisons this run can make.

    Attributes:
        number: the claim's number (its text is ``CLAIMS[number]``).
        pairs: ``(A, B, want)``: methods compared in every cell that scored both; ``want`` is a key of
            :data:`kinject_utils.claims.WANTS`.
        sweep: the claim also says accuracy rises with the number of paraphrases, so each paraphrase
            sweep (3 or more points) adds one decision: does it rise monotonically.
        readings: ``(A, B, what the comparison tells)``, printed under the claim's table.
    """

    number: int
    pairs: tuple[tuple[str, str, str], ...]
    sweep: bool = False
    readings: tuple[tuple[str, str, str], ...] = ()

    @property
    def text(self) -> str:
        return CLAIMS[self.number]


PAPER_CLAIMS = (
    PaperClaim(1, (("base+RAG", "base", "better"),)),
    PaperClaim(2, (("base+RAG", "FT-reg", "better"), ("base+RAG", "FT-par", "better"))),
    PaperClaim(3, (("FT-reg", "base", "small"),)),
    PaperClaim(4, (("FT-par", "FT-reg", "better"), ("FT-par(10)", "FT-reg", "better"),  # the paper's N
                   ("FT-par", "FT-reg(rep)", "better")), sweep=True, readings=(
        ("FT-par", "FT-reg", "each trained as chosen (FT-reg for its own epochs, picked by held-out loss): does "
                             "paraphrase augmentation beat fine-tuning on the raw text, the paper's Table 2 reading"),
        ("FT-par", "FT-reg(rep)", "the same facts for as many training tokens, FT-reg's text repeated: "
                                  "do paraphrases beat repetition, the paper's explanation of claim 4"))),
    PaperClaim(5, (("FT-reg+RAG", "base+RAG", "not_better"), ("FT-par+RAG", "base+RAG", "not_better"))),
)


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
        # a fixed-step sweep adapter (ft-par-N-fixed, ft-reg-rep as FT-par(0)) is its own cell beside the same N at
        # fixed epochs; rows written before the budget was kept in the file are told by their variant's name
        if r.get("budget") == "steps" or str(r.get("variant") or "").endswith("-fixed"):
            key = key[:3] + (f"{r['method']} {FIXED_STEPS}",) + key[4:]
        out.setdefault(key, {})[r["id"]] = float(r[metric_for(style)])
    return out


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


def _comparisons(by_cell: dict[tuple, dict[str, float]], claim: PaperClaim, seed: int) -> list[dict]:
    """Every comparison of ``claim`` this run can make: one per cell and pair, each with its decision."""
    def cell(model: str, task: str, shots: int, method: str) -> dict[str, float] | None:
        return next((v for k_, v in by_cell.items() if k_[:4] == (model, task, shots, method)), None)

    out, seen = [], set()
    for (m, t, s) in sorted({k_[:3] for k_ in by_cell}):
        for a, b, want in claim.pairs:
            ca, cb = cell(m, t, s, a), cell(m, t, s, b)
            same = (m, t, s, b, tuple(sorted((ca or {}).items())))
            if ca is None or cb is None or same in seen:  # one adapter under two labels (N_PAR 10: FT-par is
                continue                                  # FT-par(10)): compared once
            seen.add(same)
            ids = sorted(set(ca) & set(cb))
            # paired_test(x, y) reports y - x: pass (b, a) so diff = acc(a) - acc(b)
            res = paired_test([cb[i] for i in ids], [ca[i] for i in ids], seed=seed)
            e = {"model": m, "task": t, "shots": s, "a": a, "b": b, "n": len(ids), "acc_a": res["acc_b"],
                 "acc_b": res["acc_a"], "diff": res["diff"], "diff_lo": res["diff_lo"], "diff_hi": res["diff_hi"],
                 "p_value": res["p_mcnemar"], "want": want}
            e["holds"] = decide(e["diff_lo"], e["diff_hi"], want)
            if ids:  # how many questions would decide a difference this size (80% power; paired_n)
                p10 = sum(ca[i] > cb[i] for i in ids) / len(ids)
                p01 = sum(cb[i] > ca[i] for i in ids) / len(ids)
                e["n_for_power"] = paired_n(p10, p01)
            out.append(e)
    return out


def check_claims(scores: Any, per_question: list[dict], seed: int = 0) -> list[dict]:
    """Decide, for each of the paper's five claims, whether this run supports it.

    Args:
        scores: ``05_scores.csv`` as a pandas DataFrame.
        per_question: rows of ``05_per_question.jsonl``.

    Returns:
        One dict per claim: claim, text, verdict (supported / not supported [where decided] / undecided /
        mixed / untested), evidence (every comparison it rests on, with ``holds``); a claim about the
        sweep (4) also has ``sweep``, whose ``monotone`` counts as one more decision.
    """
    by_cell = _by_cell(scores, per_question)
    sweep = _sweep(scores)
    out = []
    for claim in PAPER_CLAIMS:
        evid = _comparisons(by_cell, claim, seed)
        c = {"claim": claim.number, "text": claim.text, "evidence": evid}
        decisions = [e["holds"] for e in evid]
        if claim.sweep:
            c["sweep"] = sweep
            decisions += [m["monotone"] for m in sweep]
        c["verdict"] = verdict(decisions)
        out.append(c)
    return out


_PREAMBLE = ("A comparison counts when the paired 95% bootstrap interval of the accuracy difference "
             "(same questions) excludes 0; \"A beats B\" is undecided while the interval contains 0 "
             "(the run cannot tell). Verdicts: supported (every comparison holds), not supported (none "
             "does), undecided (none is decided), supported / not supported where decided (the decided "
             "ones agree, the rest are undecided), mixed (some hold, some fail). n: questions compared; "
             "n to decide: questions that would decide a difference of the size seen, 4 times in 5 "
             "(McNemar's test at alpha 0.05, power 0.8, from this run's share of questions on which the "
             "two methods disagree; kinject_utils.claims.paired_n).")


def claims_markdown(claims: list[dict], baseline: list[dict] | None = None) -> str:
    """``06_claims.md``: verdict per claim (each section anchored for links) and the comparisons that decided it;
    first, with ``baseline`` (:func:`~kinject_utils.study.baseline_check`), whether FT-reg learned its text."""
    from .learned import baseline_markdown

    lines = ["# Claims check", "", _PREAMBLE, "", *baseline_markdown(baseline or [])]
    for c in claims:
        lines += [f'<a id="{anchor(c["claim"])}"></a>', "",
                  f"## Claim {c['claim']}: {c['text']} — **{c['verdict']}**", ""]
        if c["evidence"]:
            lines.append("| model | task | shots | A | B | acc A | acc B | diff [95% CI] | p (McNemar) | holds | n | "
                         "n to decide |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
            for e in c["evidence"]:
                need = e.get("n_for_power")
                lines.append(f"| {e['model']} | {e['task']} | {e['shots']} | {e['a']} | {e['b']} | "
                             f"{e['acc_a']:.3f} | {e['acc_b']:.3f} | {fmt_ci(e)} | {e['p_value']:.3g} | "
                             f"{HOLDS[e['holds']]} | {e['n']} | {f'{need:,}' if need else '-'} |")
        else:
            lines.append("No cells of this run compare these methods.")
        readings = [x for x in next((p.readings for p in PAPER_CLAIMS if p.number == c["claim"]), ())
                    if any((e["a"], e["b"]) == x[:2] for e in c["evidence"])]
        if readings:
            lines += ["", "What each comparison tells:", ""] + [f"- {a} vs {b}: {why}." for a, b, why in readings]
        for sw in c.get("sweep", []):
            lines.append(f"\nSweep {sw['model']} {sw['task']} ({sw['budget'] or 'epochs'}): N={sw['n_paraphrases']} "
                         f"acc={sw['score']}, Spearman {sw['spearman']:.2f}, monotone: {sw['monotone']}")
        lines.append("")
    return "\n".join(lines)
