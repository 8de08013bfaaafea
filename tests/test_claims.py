"""The one claims engine: its rule, its intervals, the committed results it must reproduce, the README
block notebook 06 writes, the one figure saver and the one CSV reader."""
import json
import re
from pathlib import Path

import pytest

from kinject_utils import claims, layout, report, study
from kinject_utils.figures import save_figure
from kinject_utils.io import read_csv, read_json, write_csv
from kinject_utils.scoring.stats import mean_ci, paired_test, two_sample_ci

ROOT = Path(__file__).resolve().parents[1]
RESULTS, FIGURES = ROOT / "results", ROOT / "figures"


@pytest.mark.parametrize("lo, hi, want, decided", [
    (0.01, 0.13, "better", True), (-0.04, 0.09, "better", None), (-0.2, -0.01, "better", False),
    (0.0, 0.1, "better", None),  # an interval touching 0 contains it: undecided
    (-0.4, -0.26, "worse", True), (-0.1, 0.2, "worse", None), (0.1, 0.2, "worse", False),
    (-0.07, 0.0, "not_better", True), (0.01, 0.2, "not_better", False),
    (-0.04, 0.04, "small", True), (0.06, 0.2, "small", False), (0.01, 0.06, "small", True),
])
def test_decide_reads_the_interval_against_0(lo, hi, want, decided):
    assert claims.decide(lo, hi, want) is decided


def test_decide_names_the_wants_on_a_typo():
    with pytest.raises(ValueError, match="better"):
        claims.decide(0, 1, "beter")


def test_the_two_verdicts_gather_decisions_as_documented():
    # across cells: the decided ones speak, the undecided are named
    assert [claims.verdict(d) for d in ([True, True], [True, None], [None, False], [True, False], [None], [])] == \
        ["supported", "supported where decided", "not supported where decided", "mixed", "undecided", "untested"]
    # a conjunction of parts: one failing part fails it, one undecided part leaves it undecided
    assert [claims.verdict_all(d) for d in ([True, True], [True, None], [None, False], [True, False], [])] == \
        ["supported", "undecided", "not supported", "not supported", "undecided"]
    assert all(claims.verdict([d]) == claims.verdict_all([d]) for d in (True, False, None))


def test_intervals_share_one_resampler():
    """The one-sample, two-sample and paired intervals come from the same seeded draws."""
    x, y = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1], [0, 0, 1, 0, 0, 1, 0, 0, 0, 1]
    assert mean_ci(x, seed=3) == mean_ci([float(v) for v in x], seed=3)  # the same interval, any number type
    # paired: resampling the per-question difference gives the paired test's interval
    lo, hi = mean_ci([b - a for a, b in zip(x, y)], seed=0)
    t = paired_test(x, y, seed=0)
    assert (t["diff_lo"], t["diff_hi"]) == pytest.approx((lo, hi))
    # two-sample: each side resampled on its own, so it is wider than the paired interval of the same data
    lo2, hi2 = two_sample_ci(y, x, seed=0)
    assert lo2 < t["diff"] < hi2 and hi2 - lo2 > hi - lo
    with pytest.raises(ValueError, match="non-empty"):
        two_sample_ci([], [1.0])


def test_the_committed_claims_regenerate_bit_for_bit():
    """06_claims.json and 06_claims.md are what the engine makes of the committed 05 files, to the last digit."""
    res = report.read_results(RESULTS)
    got = study.check_claims(res.scores, res.per_question, seed=0)
    assert json.loads(json.dumps(got)) == read_json(layout.claims_json(RESULTS))
    markdown = study.claims_markdown(got, study.baseline_check(res.memo))
    assert markdown == layout.claims_md(RESULTS).read_text(encoding="utf-8")
    assert [c["claim"] for c in got] == [c.number for c in study.PAPER_CLAIMS]
    assert "sweep" in got[3] and all("sweep" not in c for i, c in enumerate(got) if i != 3)


def _block(text):
    m = re.search(re.escape(claims.BLOCK_START) + r"\n(.*?)" + re.escape(claims.BLOCK_END), text, flags=re.S)
    assert m, "README.md has no RESULTS:START ... RESULTS:END block"
    return m.group(1)


def test_the_readme_block_is_what_notebook_06_writes_from_the_committed_results():
    want = report.readme_block(read_json(layout.claims_json(RESULTS)), read_csv(layout.scores_csv(RESULTS), frame=True),
                               ROOT, RESULTS, FIGURES, read_csv(layout.memorisation_csv(RESULTS), frame=True))
    assert "Has each adapter learned its text?" in want  # the learned table, one row per adapter
    assert _block((ROOT / "README.md").read_text(encoding="utf-8")) == want, \
        "README's results block is not notebook 06's: run notebook 06 (make study --only 06), never edit it by hand"
    for c in read_json(layout.claims_json(RESULTS)):  # one row per claim, linked to its anchored section
        assert f"[{c['claim']}](results/06_claims.md#claim-{c['claim']})" in want
        assert f'<a id="claim-{c["claim"]}"></a>' in layout.claims_md(RESULTS).read_text(encoding="utf-8")
    for link in re.findall(r"\]\(([^)#]+)", want):  # every link resolves in the checkout
        assert (ROOT / link).exists(), link


def test_readme_stays_short_and_keeps_the_ci_command():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "make study" in text and "make test" in text and "what CI runs" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def _project(tmp_path):
    (tmp_path / "README.md").write_text(
        f"# t\n\nintro\n\n{claims.BLOCK_START}\nSTALE-BLOCK\n{claims.BLOCK_END}\n\n## Run\n")
    for d in report.REFERENCE_DIRS:
        (tmp_path / d).mkdir()
    write_csv([{"model": "m", "task": "t", "subject": "all", "method": "base", "k": 0, "shots": 0, "n": 4,
                "score": 0.25}], layout.scores_csv(tmp_path / "results"))
    c = [{"claim": 1, "text": "RAG beats the base model everywhere", "verdict": "undecided",
          "evidence": [{"model": "m", "task": "t", "a": "base+RAG", "b": "base", "diff": 0.1, "diff_lo": -0.1,
                        "diff_hi": 0.3, "holds": None}]}]
    (tmp_path / "results" / "06_claims.json").write_text(json.dumps(c))
    return tmp_path / "README.md"


def test_write_readme_rewrites_only_the_reference_runs_block(tmp_path):
    readme = _project(tmp_path)
    before = readme.read_text()
    # another run's folders (tiny, byo, paper configs): the README is left alone
    assert report.write_readme(tmp_path / "runs" / "tiny" / "results", tmp_path / "figures", readme) is None
    assert readme.read_text() == before
    block = report.write_readme(tmp_path / "results", tmp_path / "figures", readme)
    text = readme.read_text()
    assert _block(text) == block and "STALE-BLOCK" not in text
    assert text.startswith("# t\n\nintro\n\n") and text.endswith(f"{claims.BLOCK_END}\n\n## Run\n")
    assert "+0.100 [-0.100, +0.300] (undecided)" in block and "**undecided**" in block
    assert report.write_readme(tmp_path / "results", tmp_path / "figures", readme) == block  # idempotent
    assert readme.read_text() == text


def test_replace_block_refuses_a_file_without_markers(tmp_path):
    p = tmp_path / "x.md"
    p.write_text("no markers\n")
    with pytest.raises(ValueError, match="RESULTS:START"):
        claims.replace_block(p, "block")


def _png_text_chunks(data: bytes) -> list[bytes]:
    """The keywords of a PNG's text chunks (tEXt, iTXt, zTXt)."""
    out, i = [], 8
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        if kind in (b"tEXt", b"iTXt", b"zTXt"):
            out.append(data[i + 8:i + 8 + n].split(b"\0")[0])
        i += 12 + n
    return out


def test_two_saves_of_a_figure_are_byte_identical_and_carry_no_version(tmp_path):
    import pandas as pd

    from kinject_utils import plots
    from kinject_utils.figures import pyplot
    from kinject_utils.newknowledge import plots as nkplots

    scores = pd.DataFrame([{"model": "m", "task": "t", "subject": "all", "method": m, "k": 1 if "RAG" in m else 0,
                            "shots": 0, "score": s} for m, s in (("base", 0.3), ("base+RAG", 0.7))])
    a = plots.fig_box_by_method(scores, tmp_path / "a.png").read_bytes()
    b = plots.fig_box_by_method(scores, tmp_path / "b.png").read_bytes()
    assert a == b and a.startswith(b"\x89PNG")
    counts = {"m": {"HighlyKnown": 3, "MaybeKnown": 2, "WeaklyKnown": 1, "Unknown": 4}}
    c = nkplots.plot_counts(counts, tmp_path / "c.png").read_bytes()
    assert c == nkplots.plot_counts(counts, tmp_path / "d.png").read_bytes()
    fig, ax = pyplot().subplots()
    ax.plot([0, 1], [1, 0])
    e = save_figure(fig, tmp_path / "e.png").read_bytes()
    for png in (a, c, e):  # matplotlib's version would make the same figure differ between installs
        assert b"Software" not in _png_text_chunks(png) and b"Matplotlib" not in png


def test_read_csv_keeps_text_or_parses_a_frame(tmp_path):
    p = write_csv([{"task": "a", "score": "0.50", "note": "x, \"y\""}], tmp_path / "s.csv")
    assert read_csv(p) == [{"task": "a", "score": "0.50", "note": "x, \"y\""}]
    assert read_csv(p, frame=True)["score"].iloc[0] == 0.5
    assert read_csv(tmp_path / "none.csv", missing_ok=True) == []
    assert read_csv(tmp_path / "none.csv", frame=True, missing_ok=True) is None
    with pytest.raises(FileNotFoundError):
        read_csv(tmp_path / "none.csv")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbftask\nb\n")  # a spreadsheet's export
    assert read_csv(tmp_path / "bom.csv") == [{"task": "b"}]


def test_no_hand_rolled_csv_reader_outside_io():
    """One reader per format (STYLE 12): only io.py parses a CSV with a header row (data/mmlu.py reads the
    original headerless MMLU files, a different format)."""
    pkg = ROOT / "kinject_utils"
    offenders = [str(p.relative_to(ROOT)) for p in pkg.rglob("*.py")
                 if p.name != "io.py" and re.search(r"csv\.DictReader", p.read_text())]
    assert not offenders, f"read CSV files through kinject_utils.io.read_csv: {offenders}"


@pytest.mark.parametrize("name", ["06_plot_results", "07_new_knowledge"])
def test_notebooks_06_and_07_only_call_the_package(name):
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "code" or "parameters" in c["metadata"].get("tags", []):
            continue
        src = "".join(c["source"])
        assert not re.search(r"^\s*(def|class) ", src, flags=re.M), f"{name} cell {i} defines a function"
        lines = [line for line in src.splitlines() if line.strip()]
        assert len(lines) <= 10, f"{name} cell {i} has {len(lines)} lines: move the work into kinject_utils"


def test_paired_n_follows_mcnemars_normal_approximation():
    from kinject_utils.claims import paired_n

    assert paired_n(0.10, 0.05) == 469  # (1.96 * sqrt(.15) + 0.8416 * sqrt(.15 - .0025))^2 / .0025
    assert paired_n(0.10, 0.10) is None  # no difference: no size decides it
    assert paired_n(0.20, 0.05) < paired_n(0.10, 0.05)  # a larger difference needs fewer questions
    assert paired_n(0.10, 0.05, power=0.9) > paired_n(0.10, 0.05)


def test_the_baseline_check_says_whether_ft_reg_learned_its_text():
    import pandas as pd

    from kinject_utils import study

    def memo(reg_after):
        return pd.DataFrame([{"model": "m", "task": "t", "variant": v, "split": "kb", "loss_before": 5.0,
                              "loss_after": a} for v, a in (("ft-reg", reg_after), ("ft-par", 1.0),
                                                            ("ft-reg-rep", 0.9))])

    learned, = study.baseline_check(memo(1.9))  # removed 3.1 of FT-par's 4.0: 78%
    assert learned["learned"] and round(learned["reg_share"], 3) == 0.775 and learned["ft_reg_rep"] == 0.9
    assert not study.baseline_check(memo(3.0))[0]["learned"]  # 50% of FT-par's drop
    text = study.claims_markdown([], study.baseline_check(memo(3.0)))
    assert "has FT-reg learned its text?" in text and "| m | t | 5.000 | 3.000 | 1.000 | 0.900 | 50% | no |" in text
