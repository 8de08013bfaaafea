"""Notebook 07's package: the SliCK categoriser on a scripted model, the training sets, the findings."""
import collections
import json

import pytest

from kinject_utils.newknowledge import (
    CATEGORIES,
    IDK,
    Fact,
    QAFormatError,
    SftConfig,
    SlickConfig,
    StudyConfig,
    categorise,
    counts,
    finding_1,
    idk_variant,
    normalise,
    read_qa_file,
    share_name,
    single_category_sets,
    unknown_share_sets,
)
from kinject_utils.newknowledge.claims import claims_markdown


def _facts(n_per_rel=6):
    return [Fact(f"r{r}/{i}", f"rel{r}", f"Question {r}-{i}?", f"Answer {r} {i}") for r in range(2)
            for i in range(n_per_rel)]


class ScriptedModel:
    """Answers by a script: fact id -> (how many of the P greedy prompts are right, samples right?)."""

    def __init__(self, facts, script):
        self.by_q = {f.question: f for f in facts}
        self.script = script
        self.calls = {}

    def __call__(self, prompts, temperature, n, max_new_tokens, seed):
        out = []
        for p in prompts:
            f = self.by_q[p.rsplit("Q: ", 1)[1].split("\nA:")[0]]
            k = self.calls[(f.id, temperature)] = self.calls.get((f.id, temperature), -1) + 1
            greedy_right, sample_right = self.script[f.id]
            if temperature == 0:
                out.append([f.answer if k < greedy_right else "wrong"])
            else:
                out.append([f.answer if (sample_right and j == 0) else "nope" for j in range(n)])
        return out


def test_categoriser_recovers_scripted_categories(tmp_path):
    facts = _facts()
    want = {}
    script = {}
    for i, f in enumerate(facts):
        cat = CATEGORIES[i % 4]
        want[f.id] = cat
        # MaybeKnown facts get 1, 2 and 3 of the 4 greedy answers right (both edges of "sometimes")
        script[f.id] = {"HighlyKnown": (4, True), "MaybeKnown": (1 + (i // 4) % 3, True), "WeaklyKnown": (0, True),
                        "Unknown": (0, False)}[cat]
    cfg = SlickConfig(n_prompts=4, n_samples=3, batch_questions=3)
    rows = categorise(facts, ScriptedModel(facts, script), cfg, tmp_path / "c.jsonl", model="stub")
    assert {r["id"]: r["category"] for r in rows} == want
    assert counts(rows) == {c: 3 for c in CATEGORIES}
    assert {r["id"]: r["greedy_hits"] for r in rows} == {k: v[0] for k, v in script.items()}
    # resumable: a second call reads the cache and never calls the model
    def boom(*a, **k):
        raise AssertionError("model called although every question is cached")
    assert categorise(facts, boom, cfg, tmp_path / "c.jsonl", model="stub") == rows
    # other settings do not reuse the cache
    with pytest.raises(AssertionError):
        categorise(facts, boom, SlickConfig(n_prompts=2, n_samples=3), tmp_path / "c.jsonl")


def test_prompts_use_same_relation_exemplars_and_are_seeded():
    from kinject_utils.newknowledge import build_prompts

    facts = _facts()
    p = build_prompts(facts[0], facts, SlickConfig(n_prompts=3))
    assert len(p) == 3 and all(s.count("Q: ") == 5 and s.endswith(f"Q: {facts[0].question}\nA:") for s in p)
    assert all("Question 1-" not in s for s in p)  # relation rel0 only
    assert all(f"A: {facts[0].answer}\n" not in s for s in p)  # never its own answer
    assert p == build_prompts(facts[0], facts, SlickConfig(n_prompts=3))


def _examples(n_unknown=20, n_known=20, n_weak=6):
    cats = ["Unknown"] * n_unknown + ["HighlyKnown", "MaybeKnown"] * (n_known // 2) + ["WeaklyKnown"] * n_weak
    return [{"id": f"q{i:03d}", "question": f"q{i}?", "answer": f"a{i}", "category": c} for i, c in enumerate(cats)]


@pytest.mark.parametrize("size", [4, 8, 16])
def test_unknown_share_sets_sizes_and_shares_exact(size):
    shares = [0, 0.25, 0.5, 0.75, 1]
    sets = unknown_share_sets(_examples(), size, shares, seed=3)
    assert list(sets) == [share_name(s) for s in shares]
    for s in shares:
        rows = sets[share_name(s)]
        assert len(rows) == size and len({r["id"] for r in rows}) == size
        assert sum(r["category"] == "Unknown" for r in rows) == size * s
        assert all(r["category"] in ("Unknown", "HighlyKnown", "MaybeKnown") for r in rows)
    assert sets == unknown_share_sets(_examples(), size, shares, seed=3)  # deterministic
    assert sets != unknown_share_sets(_examples(), size, shares, seed=4)


def test_unknown_share_sets_refuse_what_cannot_be_exact():
    with pytest.raises(ValueError, match="whole number"):
        unknown_share_sets(_examples(), 6, [0, 0.25], seed=0)
    with pytest.raises(ValueError, match="TRAIN_SIZE <= 20"):
        unknown_share_sets(_examples(), 24, [0, 1], seed=0)


def test_idk_relabels_only_unknown_and_single_sets():
    rows = unknown_share_sets(_examples(), 8, [0.5], seed=0)["unknown-050"]
    idk = idk_variant(rows)
    assert [r["id"] for r in idk] == [r["id"] for r in rows]
    for a, b in zip(rows, idk):
        assert b["answer"] == (IDK if a["category"] == "Unknown" else a["answer"])
    assert any(r["answer"] != IDK for r in rows)  # the original is untouched
    sets, skipped = single_category_sets(_examples(), 8, seed=0)
    assert sorted(sets) == ["only-HighlyKnown", "only-MaybeKnown", "only-Unknown"] and "WeaklyKnown" in skipped
    assert all(len(v) == 8 and {r["category"] for r in v} == {k[5:]} for k, v in sets.items())


def test_normalise_and_qa_file_errors(tmp_path):
    assert normalise("The  Hague!") == normalise("hague") == "hague"
    assert normalise("São Paulo") == "sao paulo"
    p = tmp_path / "qa.jsonl"
    p.write_text(json.dumps({"question": "Q?", "answer": "A"}) + "\n"
                 + json.dumps({"id": "x", "question": "Q2?", "choices": ["no", "yes"], "answer": 1, "kind": "k"})
                 + "\n")
    facts = read_qa_file(p)
    assert [f.answer for f in facts] == ["A", "yes"] and facts[1].relation == "k"
    p.write_text(json.dumps({"question": "Q?"}) + "\n")
    with pytest.raises(QAFormatError, match=r"qa.jsonl, line 1: needs 'question' and 'answer'"):
        read_qa_file(p)


def _sft_rows(acc):
    """Two runs whose test accuracy per epoch is given: {set: [acc epoch1, acc epoch2]} over 40 questions."""
    rows = []
    for name, per_epoch in acc.items():
        for e, a in enumerate(per_epoch, 1):
            for i in range(40):
                for split in ("test", "dev"):
                    rows.append({"model": "m", "set": name, "epoch": e, "split": split, "id": f"t{i}",
                                 "category": "HighlyKnown", "correct": int(i < a * 40), "pred": ""})
    return rows


def test_finding_1_verdicts():
    # falls, and more at convergence (epoch 2) than at early stop (best dev: epoch 1 for the 100% set)
    r = finding_1(_sft_rows({"unknown-000": [0.9, 0.9], "unknown-100": [0.7, 0.2]}), "m", [0, 1])
    assert r["verdict"] == "supported"
    r = finding_1(_sft_rows({"unknown-000": [0.5, 0.5], "unknown-100": [0.8, 0.9]}), "m", [0, 1])
    assert r["verdict"] == "not supported"
    # falls at convergence, but no more than at early stop: one part undecided leaves the finding undecided
    r = finding_1(_sft_rows({"unknown-000": [0.9, 0.9], "unknown-100": [0.2, 0.2]}), "m", [0, 1])
    assert r["parts"] == ["supported", "undecided"] and r["verdict"] == "undecided"


def _fake_pipeline(monkeypatch, counts_by_model):
    """Stand-ins for loading, categorising and training, so the notebook-07 helpers run without a model."""
    from kinject_utils.newknowledge import study as nkstudy

    def categorise_model(m, facts, cfg, results_dir):
        return [{"model": m, "id": f"q{i}", "relation": f"rel{i % 2}", "category": c}
                for i, c in enumerate(c for c in CATEGORIES for _ in range(counts_by_model[m][c]))]

    def train_model(m, facts, slick_rows, cfg, results_dir, loaded):
        assert loaded == ("model", m) and all(r["model"] == m for r in slick_rows)
        rows = [{"model": m, "set": s, "epoch": 1, "split": "test", "id": "t", "category": "Unknown", "correct": 1}
                for s in ("unknown-000", "only-Unknown")]
        return rows, {"single": ["only-Unknown"], "train_size": 4}

    monkeypatch.setattr(nkstudy, "categorise_model", categorise_model)
    monkeypatch.setattr(nkstudy, "train_model", train_model)
    monkeypatch.setattr(nkstudy, "load", lambda m, device, dtype: ("model", m))


def test_notebook_07_pipeline_helpers(tmp_path, monkeypatch):
    from kinject_utils import layout
    from kinject_utils.io import read_csv
    from kinject_utils.newknowledge import categorise_models, choose_models, findings_header, train_models

    counts_by_model = {"a": {"HighlyKnown": 1, "MaybeKnown": 1, "WeaklyKnown": 0, "Unknown": 2},
                       "b": {"HighlyKnown": 3, "MaybeKnown": 0, "WeaklyKnown": 1, "Unknown": 0}}
    _fake_pipeline(monkeypatch, counts_by_model)
    cfg = StudyConfig()
    cat = categorise_models(["a", "b"], [], cfg, tmp_path)
    assert cat.counts == counts_by_model and set(cat.seconds) == {"a", "b"}
    assert len(read_csv(layout.slick_csv(tmp_path))) == 8  # every model's rows in 07_slick.csv
    assert list(cat.table()["Known share"]) == [0.5, 0.75]
    assert cat.per_relation().loc[("b", "rel0"), "HighlyKnown"] == 2
    assert choose_models(["best"], cat.counts) == ["b"] and choose_models(["a", "b"], cat.counts) == ["a", "b"]
    trained = train_models(["b", "a"], [], cat.rows, cfg, tmp_path)
    assert trained.models == ["b", "a"] and {r["model"] for r in trained.rows} == {"a", "b"}
    assert trained.single() == {"b": ["only-Unknown"], "a": ["only-Unknown"]}
    assert all(isinstance(n["seconds"], int) for n in trained.notes.values())
    assert findings_header(cat, trained, cfg).startswith(
        f"Models categorised: a {counts_by_model['a']}, b {counts_by_model['b']}. Fine-tuned: b, a. SliCK: 4 prompts")


def test_findings_header_writes_the_committed_07_claims_line():
    """The header format is the one under 07_claims.md's title (its counts from the committed 07_slick.csv)."""
    import ast
    import re
    from pathlib import Path

    from kinject_utils.io import read_csv
    from kinject_utils.newknowledge import Categorised, Trained, findings_header

    results = Path(__file__).resolve().parents[1] / "results"
    line = (results / "07_claims.md").read_text(encoding="utf-8").splitlines()[4]
    rows = read_csv(results / "07_slick.csv")
    models = list(dict.fromkeys(r["model"] for r in rows))
    cat = Categorised(rows, {m: counts([r for r in rows if r["model"] == m]) for m in models}, {})
    chosen, notes = re.search(r"Sets: (\S+) (\{.*\})\. Epochs", line).groups()
    trained = Trained([chosen], [], {chosen: ast.literal_eval(notes)})
    assert findings_header(cat, trained, StudyConfig()) == line


def test_shared_prompt_pass_keeps_greedy_answers(tmp_path):
    """greedy_and_samples (one prompt pass) gives the greedy call's answers first, then n seeded samples."""
    from finetune_tiny import make_tiny_llama

    from kinject_utils.models import load_causal_lm
    from kinject_utils.newknowledge import HFGenerator

    model, tok = load_causal_lm(str(make_tiny_llama(tmp_path / "m")), dtype="float32", device="cpu")
    gen = HFGenerator(model, tok, batch_size=2)
    prompts = ["Q: Where is Tarnby?\nA:", "Q: Who is the mayor?\nA:", "Q: What opened in May?\nA:"]
    greedy = gen(prompts, 0.0, 1, 6, 0)
    both = gen.greedy_and_samples(prompts, 5.0, 3, 6, 0)
    assert [b[0] for b in both] == [g[0] for g in greedy] and all(len(b) == 4 for b in both)
    assert both == gen.greedy_and_samples(prompts, 5.0, 3, 6, 0)  # seeded
    assert any(s != b[0] for b in both for s in b[1:])  # samples at T=5 are not the greedy answer


def test_categoriser_samples_only_questions_no_greedy_answer_got_right():
    """Samples separate WeaklyKnown from Unknown only: a question with a greedy hit is never sampled."""
    facts = _facts()
    script = {f.id: ((4 - i % 3, False) if i % 2 else (0, i % 4 == 0)) for i, f in enumerate(facts)}
    stub = ScriptedModel(facts, script)
    rows = categorise(facts, stub, SlickConfig(n_prompts=4, n_samples=2, batch_questions=5))
    sampled = {fid for (fid, t) in stub.calls if t > 0}
    assert sampled == {f.id for i, f in enumerate(facts) if i % 2 == 0}
    assert [r["category"] for r in rows] == [("WeaklyKnown" if i % 4 == 0 else "Unknown") if i % 2 == 0 else
                                             ("HighlyKnown" if i % 3 == 0 else "MaybeKnown") for i in range(12)]
    assert all(r["sample_hits"] is None for r in rows[1::2])


def test_prompts_share_exemplars_within_a_relation():
    """Prompt p of a relation has the same exemplars for every question but the few among them."""
    from kinject_utils.newknowledge import build_prompts

    facts = _facts(12)
    cfg = SlickConfig(n_prompts=3)
    prefixes = [[p.rsplit("Q: ", 1)[0] for p in build_prompts(f, facts, cfg)] for f in facts[:12]]
    for k in range(3):
        shared = max({pr[k] for pr in prefixes}, key=[pr[k] for pr in prefixes].count)
        assert sum(pr[k] == shared for pr in prefixes) >= 12 - cfg.shots


def test_prefix_cache_and_early_stop_keep_the_answers(tmp_path):
    """Greedy answers with the exemplar prefix computed once equal those of full prompts; samples seeded."""
    from finetune_tiny import make_tiny_llama

    from kinject_utils.models import load_causal_lm
    from kinject_utils.newknowledge import HFGenerator, build_prompts

    model, tok = load_causal_lm(str(make_tiny_llama(tmp_path / "m")), dtype="float32", device="cpu")
    facts = _facts(16)
    prompts = [p for f in facts for p in build_prompts(f, facts, SlickConfig(n_prompts=2))]
    shared, plain = HFGenerator(model, tok, batch_size=5), HFGenerator(model, tok, batch_size=5, share_prefix=False)
    assert shared(prompts, 0.0, 1, 6, 0) == plain(prompts, 0.0, 1, 6, 0)
    assert shared.stats["own_tokens"] < plain.stats["own_tokens"] / 2 and shared.stats["prefix_tokens"] > 0
    s1 = shared(prompts, 5.0, 3, 6, 7)
    assert s1 == shared(prompts, 5.0, 3, 6, 7) and all(len(a) == 3 for a in s1)


def test_kept_prefixes_are_computed_once_per_run_with_the_same_answers(tmp_path):
    """keep_prefixes: a relation's few prefixes run once over every call (greedy, samples, batch after batch),
    and the answers equal those of a generator that recomputes them."""
    from finetune_tiny import make_tiny_llama

    from kinject_utils.models import load_causal_lm
    from kinject_utils.newknowledge import HFGenerator, build_prompts

    model, tok = load_causal_lm(str(make_tiny_llama(tmp_path / "m")), dtype="float32", device="cpu")
    facts = _facts(8)
    prompts = [p for f in facts for p in build_prompts(f, facts, SlickConfig(n_prompts=2))]
    kept, fresh = HFGenerator(model, tok, batch_size=5, keep_prefixes=True), HFGenerator(model, tok, batch_size=5)
    for call in [(prompts, 0.0, 1, 6, 0), (prompts[:7], 0.0, 1, 6, 0), (prompts, 5.0, 3, 6, 7)]:
        assert kept(*call) == fresh(*call)
    from kinject_utils.newknowledge.generate import MIN_SHARED
    once = kept.stats["prefix_tokens"]
    prefixes = collections.Counter(p[:p.rfind("\n\n") + 2] for p in prompts)  # exemplars, shared by most prompts
    shared = [p for p, n in prefixes.items() if n >= MIN_SHARED]  # the rest run as whole prompts
    assert 0 < once and len(kept._kept) == len(shared) and 0 < len(shared) < len(prefixes)
    kept(prompts, 0.0, 1, 6, 0)
    assert kept.stats["prefix_tokens"] == once and fresh.stats["prefix_tokens"] >= 2 * once


def test_two_stage_sampler_matches_the_distribution():
    """The top-k-then-tail sampler draws from softmax(logits / T): frequencies of a known distribution."""
    import torch

    from kinject_utils.newknowledge import generate as g

    logits = torch.log(torch.tensor([[0.5, 0.2, 0.1] + [0.2 / 197] * 197]))
    gen = g.HFGenerator.__new__(g.HFGenerator)
    gen.stats = {"full_softmax_rows": 0}
    old, g.TOP_K = g.TOP_K, 2
    try:
        rng = torch.Generator().manual_seed(0)
        draws = torch.cat([gen._sample(logits.expand(500, -1), 1.0, rng) for _ in range(20)])
    finally:
        g.TOP_K = old
    freq = torch.bincount(draws, minlength=200).float() / len(draws)
    assert abs(freq[0] - 0.5) < 0.02 and abs(freq[1] - 0.2) < 0.02 and abs(freq[2] - 0.1) < 0.015
    assert abs(freq[3:].sum() - 0.2) < 0.02 and gen.stats["full_softmax_rows"] > 0


@pytest.mark.parametrize("make, error, message", [
    (lambda: SlickConfig(n_prompts=0), ValueError, "SlickConfig.n_prompts must be an integer >= 1, got 0; paper: 10"),
    (lambda: SlickConfig(temperature=0), ValueError, "SlickConfig.temperature must be a number > 0, got 0; needed"),
    (lambda: SlickConfig(shots=1.5), TypeError, r"SlickConfig.shots must be an integer >= 0, got 1.5 \(float\); paper"),
    (lambda: SftConfig(epochs=0), ValueError, "SftConfig.epochs must be an integer >= 1, got 0; EPOCHS in notebook 07"),
    (lambda: SftConfig(lr="1e-3"), TypeError, r"SftConfig.lr must be a number in \(0, 1\), got '1e-3' \(str\)"),
    (lambda: SftConfig(lora_alpha=0), ValueError, "SftConfig.lora_alpha must be a number >= 1, got 0"),
    (lambda: StudyConfig(mixed_share=1.0), ValueError, r"StudyConfig.mixed_share must be a number in \(0, 1\), got 1"),
    (lambda: StudyConfig(idk_share=0.25), ValueError, r"IDK_SHARE=0.25 must be one of UNKNOWN_SHARES \[0.0, 0.5"),
    (lambda: StudyConfig(device="gpu"), ValueError, "StudyConfig.device must be one of"),
    (lambda: StudyConfig(dtype="fp8"), ValueError, "DTYPE='fp8' is not one of"),
    (lambda: StudyConfig(n_prompts=0), ValueError, "StudyConfig.n_prompts must be an integer >= 1, got 0; N_PROMPTS"),
])
def test_settings_name_the_field_and_the_fix(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_settings_accept_the_notebook_defaults_and_no_sampling():
    assert SlickConfig(n_samples=0, temperature=0).n_samples == 0
    cfg = StudyConfig(n_prompts=1, n_samples=1, train_size=4, single_size=2, epochs=1, lr=0.002, batch_size=4)
    assert cfg.slick().batch_questions == cfg.gen_batch and cfg.sft().lr == 0.002


def test_claims_markdown_tables():
    ci = {"diff": -0.1, "diff_lo": -0.2, "diff_hi": 0.01}
    f3 = [{"model": "m", "plain": "unknown-050", "idk": "idk-unknown-050", "acc_a": 0.3, "acc_b": 0.4, "harm": -0.2,
           "abstain": 0.33, "verdict": "holds", **ci},
          {"model": "m3", "plain": "a", "idk": "b", "verdict": "untestable", "why": "no IDK run"}]
    md = claims_markdown([], [], f3, [], "hdr").splitlines()
    i = md.index('## Finding 3: relabelling Unknown answers as "I don\'t know" removes most of the harm')
    assert md[i + 2].startswith("| model | plain | IDK |") and md[i + 3] == "|" + "---|" * 9
    assert md[i + 4] == ("| m | unknown-050 | idk-unknown-050 | 0.300 | 0.400 | -0.100 [-0.200, +0.010] | -0.200 | "
                         "0.33 | **holds** |")
    assert md[i + 5] == "| m3 | a | b | - | - | - | - | - | **untestable** (no IDK run) |"
