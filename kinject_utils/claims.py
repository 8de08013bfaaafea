"""The one claims engine of both studies: the verdict rule, paired intervals, Markdown, JSON, the README.

Each study declares what its claims compare (:mod:`kinject_utils.study.claims`, the five claims of
Ovadia et al. 2023; :mod:`kinject_utils.newknowledge.claims`, the four findings of Gekhman et al. 2024);
this module decides and writes them, so both read "supported" the same way.

The rule. A comparison of A with B on the same questions is decided by the 95% paired bootstrap
interval of acc(A) - acc(B) (:func:`~kinject_utils.scoring.paired_test`: questions resampled together,
exact McNemar test beside it). "A beats B" *holds* when the interval lies above 0, *fails* when it lies
below 0, and is *undecided* when it contains 0: the run is too small to tell, which is not evidence
against the claim. :func:`decide` is that rule; a claim's verdict gathers its comparisons' decisions:

- :func:`verdict`, one claim tested in several cells (models, tasks): supported / not supported when
  all are decided and agree, "... where decided" when the decided ones agree and the rest cannot tell,
  mixed when they disagree, undecided when none is decided;
- :func:`verdict_all`, one finding made of parts that must all hold (a conjunction): not supported
  as soon as one part fails, supported when every part holds, undecided otherwise.

    >>> decide(0.01, 0.13), decide(-0.04, 0.09), decide(-0.4, -0.26, "worse")
    (True, None, True)
    >>> verdict([True, None]), verdict_all([True, None])
    ('supported where decided', 'undecided')
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from .io import atomic_write_text, write_json
from .log import get_logger
from .scoring.stats import mean_ci, paired_test, two_sample_ci

__all__ = ["WANTS", "HOLDS", "decide", "paired_n", "verdict", "verdict_all", "paired_test", "mean_ci",
           "two_sample_ci", "fmt_ci", "md_row", "md_table", "anchor", "claims_table", "write_claims", "replace_block",
           "BLOCK_START", "BLOCK_END"]

log = get_logger("claims")

#: what a comparison claims of acc(A) - acc(B), and how its interval decides it (:func:`decide`)
WANTS = {"better": "A beats B: holds above 0, fails below 0",
         "worse": "A falls below B: holds below 0, fails above 0",
         "not_better": "A is no better than B: holds unless the interval lies above 0",
         "small": "A barely helps over B: holds unless the interval shows a gain above 5 points"}

#: a decision as the claims tables print it
HOLDS = {True: "yes", False: "no", None: "undecided"}

#: the markers of a generated block inside a hand-written Markdown file (the README's results)
BLOCK_START, BLOCK_END = "<!-- RESULTS:START -->", "<!-- RESULTS:END -->"


def decide(lo: float, hi: float, want: str = "better") -> bool | None:
    """Whether a comparison goes the way its claim says, from the 95% interval ``[lo, hi]`` of A - B.

    ``None``: the interval contains 0, the run cannot tell. "Not better" and "small" are claims of
    no (large) gain: they hold unless the interval shows one.

    Example:
        >>> decide(-0.07, 0.0, "not_better"), decide(0.06, 0.2, "small"), decide(0.2, 0.3, "worse")
        (True, False, False)
    """
    if want == "better":
        return True if lo > 0 else (False if hi < 0 else None)
    if want == "worse":
        return True if hi < 0 else (False if lo > 0 else None)
    if want == "not_better":
        return not lo > 0
    if want == "small":  # "barely helps": no significant gain above 5 points
        return hi < 0.05 or not lo > 0.05
    raise ValueError(f"want must be one of {sorted(WANTS)}, got {want!r}")


def verdict(decisions: Sequence[bool | None]) -> str:
    """One claim's verdict from its comparisons in several cells (``True`` holds, ``False`` fails, ``None`` undecided).

    supported (all hold), not supported (all fail), undecided (none decided); where only some are
    decided and those agree, "supported where decided" / "not supported where decided" (nothing in
    the run goes against it, and the undecided ones are named in the evidence); mixed when some hold
    and some fail; untested when nothing compared.
    """
    if not decisions:
        return "untested"
    decided = [d for d in decisions if d is not None]
    if not decided:
        return "undecided"
    if all(decided) or not any(decided):
        word = "supported" if all(decided) else "not supported"
        return word if len(decided) == len(decisions) else word + " where decided"
    return "mixed"


def verdict_all(decisions: Sequence[bool | None]) -> str:
    """The verdict of a finding whose parts must all hold: one failing part fails it.

    ``[d]`` alone reads as :func:`verdict` does: supported, not supported or undecided.
    """
    if any(d is False for d in decisions):
        return "not supported"
    return "supported" if decisions and all(d is True for d in decisions) else "undecided"


def paired_n(p10: float, p01: float, *, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Questions a paired comparison needs to decide its difference with probability ``power``.

    McNemar's test in its normal approximation (Connor 1987): with ``p10`` the share of questions
    A gets right and B wrong, ``p01`` the reverse, the difference is ``d = p10 - p01`` and

        n = (z(1 - alpha/2) * sqrt(p10 + p01) + z(power) * sqrt(p10 + p01 - d^2))^2 / d^2

    ``None`` when the two never disagree in one direction more than the other (``d = 0``: no size
    decides it). The bootstrap interval the claims use behaves like this test at these sizes.

    Example:
        >>> paired_n(0.10, 0.05)  # A right where B is wrong on 10% of questions, the reverse on 5%
        469
    """
    from scipy.stats import norm

    d, disc = p10 - p01, p10 + p01
    if d == 0 or disc <= 0:
        return None
    z_a, z_b = norm.ppf(1 - alpha / 2), norm.ppf(power)
    return math.ceil((z_a * math.sqrt(disc) + z_b * math.sqrt(max(disc - d * d, 0.0))) ** 2 / (d * d))


def fmt_ci(d: dict, key: str = "diff") -> str:
    """``d[key]`` with its interval ``d[key_lo], d[key_hi]``, signed, 3 decimals: ``+0.073 [+0.010, +0.132]``."""
    return f"{d[key]:+.3f} [{d[key + '_lo']:+.3f}, {d[key + '_hi']:+.3f}]"


def md_row(*cells: Any) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def md_table(title: str, columns: Sequence[str], rows: Sequence[str]) -> list[str]:
    """A ``##`` section holding one table: blank line, title, header, rule, the rows."""
    return ["", f"## {title}", "", md_row(*columns), "|" + "---|" * len(columns), *rows]


def anchor(number: int) -> str:
    """The HTML anchor a claim's section carries, so a link survives a change of its verdict or title."""
    return f"claim-{number}"


def claims_table(claims: Sequence[dict], link: str) -> list[str]:
    """One row per claim: number (linked to its section), claim, verdict, each comparison's interval.

    Args:
        claims: rows of a claims JSON (``claim``, ``text``, ``verdict``, ``evidence`` with ``model``,
            ``task``, ``a``, ``b``, ``diff``, ``diff_lo``, ``diff_hi``, ``holds``).
        link: the claims Markdown file, relative to where the table goes.
    """
    out = ["| # | claim | verdict | A - B, paired 95% interval (per model and task) |", "|---|---|---|---|"]
    for c in claims:
        cis = "<br>".join(f"{e['model']} {e['task']}, {e['a']} - {e['b']}: {fmt_ci(e)}"
                          + ("" if e["holds"] else f" ({HOLDS[e['holds']]})") for e in c["evidence"])
        out.append(md_row(f"[{c['claim']}]({link}#{anchor(c['claim'])})", c["text"], f"**{c['verdict']}**",
                          cis or "no cells compare these methods"))
    return out


def write_claims(claims: Any, markdown: str, md_path: str | Path, json_path: str | Path | None = None) -> Path:
    """Write a claims check: its Markdown report and, where given, its JSON (key-sorted, byte-stable)."""
    if json_path is not None:
        write_json(json_path, claims)
    return atomic_write_text(md_path, markdown)


def replace_block(path: str | Path, block: str, start: str = BLOCK_START, end: str = BLOCK_END) -> bool:
    """Put ``block`` between the ``start`` and ``end`` markers of a Markdown file; the rest stays as written.

    Returns whether the file changed. A file without both markers, in order, is an error naming
    them: a generated block never lands where nobody marked a place for it.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"{path} has no {start} ... {end} block to write into; add the two marker lines "
                         "where the generated results go")
    new = text[:i + len(start)] + "\n" + block.rstrip("\n") + "\n" + text[j:]
    if new == text:
        return False
    atomic_write_text(path, new)
    log.info("wrote the results block of %s", path)
    return True
