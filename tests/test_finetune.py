"""finetune.py: chunking, settings, variant planning, exact resume, a real (Q)LoRA run on SmolLM2."""
from __future__ import annotations

import pytest

from finetune_tiny import CORPUS, make_tiny_llama
from kinject_utils import finetune as ft
from kinject_utils.tasks import Document


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def tok(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny))


DOCS = ["First story about the Varnholt ferry and its 1,200 passengers.", "Second.",
        "A third, much longer story. " * 20, "", "Last one: Mayor Ilsa Brenn."]


def _segments(stream, bos, eos):
    """Split a token stream at BOS/EOS into the token lists of the documents."""
    docs, cur = [], ([] if bos is None else None)
    for t in stream:
        if t == bos:
            cur = []
        elif t == eos:
            docs.append(cur)
            cur = [] if bos is None else None
        else:
            cur.append(t)
    return docs


# ------------------------------------------------------------------ chunking
def test_packed_chunks_are_equal_length_with_boundaries_and_cover_all_text(tok):
    chunks = ft.chunk_corpus(DOCS, tok, chunk_len=16)
    assert all(len(c) == 16 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 16
    stream = [t for c in chunks for t in c]
    nonempty = [d for d in DOCS if d.strip()]
    assert stream.count(tok.bos_token_id) == len(nonempty) == stream.count(tok.eos_token_id)
    assert stream[0] == tok.bos_token_id and stream[-1] == tok.eos_token_id
    segs = _segments(stream, tok.bos_token_id, tok.eos_token_id)
    assert [tok.decode(s) for s in segs] == nonempty  # every document, whole and in order
    assert ft.chunk_corpus(DOCS, tok, chunk_len=16) == chunks  # deterministic
    assert all(len(c) == 16 for c in ft.chunk_corpus(DOCS, tok, chunk_len=16, drop_last=True))


def test_unpacked_chunks_never_mix_documents(tok):
    chunks = ft.chunk_corpus(DOCS, tok, chunk_len=16, pack=False)
    for c in chunks:
        inner = c[1:] if c[0] == tok.bos_token_id else c
        assert tok.bos_token_id not in inner  # a BOS only ever opens a chunk
    assert sum(len(c) < 16 for c in chunks) >= 3  # padding needed: the baseline packing removes


def test_tokenizer_that_adds_bos_itself_gets_exactly_one(tok):
    from tokenizers.processors import TemplateProcessing

    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])  # Gemma-style automatic BOS
    assert tok("Second.").input_ids[0] == tok.bos_token_id
    stream = [t for c in ft.chunk_corpus(["Second.", "Last."], tok, 64) for t in c]
    assert stream.count(tok.bos_token_id) == 2


def test_tokenizers_without_bos_or_with_bos_equal_eos(tok):
    tok.bos_token = None  # SmolLM2-like tokenizers may lack one: EOS alone marks boundaries
    stream = [t for c in ft.chunk_corpus(DOCS, tok, 32) for t in c]
    assert stream.count(tok.eos_token_id) == 4 and stream[-1] == tok.eos_token_id
    assert [tok.decode(s) for s in _segments(stream, None, tok.eos_token_id)] == [d for d in DOCS if d.strip()]
    tok.bos_token = tok.eos_token  # GPT-2 style <|endoftext|>: one separator, not two
    stream = [t for c in ft.chunk_corpus(DOCS, tok, 32) for t in c]
    assert stream.count(tok.eos_token_id) == 4
    tok.eos_token = None
    tok.bos_token = None
    with pytest.raises(ValueError, match="neither a BOS nor an EOS"):
        ft.chunk_corpus(DOCS, tok, 32)


def test_chunking_rejects_bad_input(tok):
    with pytest.raises(TypeError, match="list of strings"):
        ft.chunk_corpus("one long string", tok)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        ft.chunk_corpus(["ok", 3], tok)
    with pytest.raises(ValueError, match="chunk_len"):
        ft.chunk_corpus(["ok"], tok, chunk_len=1)


# ------------------------------------------------------------------ settings
@pytest.mark.parametrize("kwargs, err, match", [
    (dict(epochs=6), ValueError, "allow_more_epochs"),
    (dict(lr="1e-3"), TypeError, "1.0e-3"),
    (dict(lr=0.0), ValueError, "lr must be in"),
    (dict(micro_batch=True), TypeError, "integer"),
    (dict(micro_batch=0), ValueError, "micro_batch must be >= 1"),
    (dict(method="qlora4"), ValueError, "'qlora', 'lora', 'full'"),
    (dict(budget="steps"), ValueError, "max_steps >= 1"),
    (dict(budget="tokens"), ValueError, "max_tokens >= 1"),
    (dict(method="qlora", dtype="float32"), ValueError, "bfloat16"),
    (dict(target_modules=[]), ValueError, "all-linear"),
    (dict(packing="yes"), TypeError, "true/false"),
    (dict(lora_dropout=1.0), ValueError, "lora_dropout"),
])
def test_config_errors_name_the_fix(kwargs, err, match):
    with pytest.raises(err, match=match):
        ft.FinetuneConfig(**kwargs)


def test_config_presets_and_from_dict():
    assert ft.FinetuneConfig(epochs=8, allow_more_epochs=True).epochs == 8
    assert ft.FinetuneConfig(budget="steps", max_steps=40, epochs=5).max_steps == 40
    paper = ft.FinetuneConfig.paper_qlora()
    assert (paper.method, paper.lora_r, paper.lora_alpha, paper.lr, paper.effective_batch,
            paper.max_grad_norm, paper.gradient_checkpointing) == ("qlora", 64, 16, 2e-4, 64, 0.3, True)
    cpu = ft.FinetuneConfig.cpu_default()
    assert (cpu.method, cpu.lora_r, cpu.lora_alpha, cpu.lr, cpu.effective_batch) == ("lora", 16, 32, 1e-3, 8)
    assert ft.FinetuneConfig.from_dict({"lr": 3e-4}).lr == 3e-4
    with pytest.raises(ValueError, match="unknown FinetuneConfig setting"):
        ft.FinetuneConfig.from_dict({"learning_rate": 3e-4})
    base = ft.FinetuneConfig()
    texts = ["a", "b"]
    # checkpoint_every does not change the weights, so it does not change the run key
    assert ft.run_key("m", texts, base) == ft.run_key("m", texts, base.replace(checkpoint_every=7))
    assert ft.run_key("m", texts, base) != ft.run_key("m", texts, base.replace(seed=1))
    assert ft.run_key("m", texts, base) != ft.run_key("m", ["a", "c"], base)


# ------------------------------------------------------------------ planning
def test_plan_steps_and_data_order():
    cfg = ft.FinetuneConfig(epochs=3)  # batch 8
    assert ft.plan_steps(20, cfg) == {"steps_per_epoch": 3, "total_steps": 9}
    assert ft.plan_steps(20, cfg.replace(budget="steps", max_steps=5))["total_steps"] == 5
    # 20 chunks of ~256 tokens = 3 steps/epoch -> ~1707 tokens/step; 4000 tokens -> 3 steps
    assert ft.plan_steps(20, cfg.replace(budget="tokens", max_tokens=4000), 20 * 256)["total_steps"] == 3
    o0, o1 = ft._epoch_order(50, 0, 0), ft._epoch_order(50, 0, 1)
    assert sorted(o0) == list(range(50)) and o0 != o1 and o0 == ft._epoch_order(50, 0, 0)
    assert o0 != ft._epoch_order(50, 1, 0)


def test_lr_schedule():
    cfg = ft.FinetuneConfig(warmup_ratio=0.1, schedule="linear", lr=1e-3)
    lrs = [ft._lr_at(s, 20, cfg) for s in range(20)]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3) and lrs[-1] < lrs[2]
    assert {ft._lr_at(s, 20, ft.FinetuneConfig()) for s in range(20)} == {1e-3}


def test_corpus_and_variants():
    docs = [Document("d1", "", "one"), Document("d2", "", "two")]
    par = {"d1": ["one'", "one''"], "d2": ["two'"]}
    assert ft.corpus_for(docs, par, 0) == ["one", "two"]
    assert ft.corpus_for(docs, par, 2) == ["one", "two", "one'", "two'", "one''"]
    steps = {0: 3, 1: 6, 2: 9, 3: 12}.__getitem__
    v = ft.plan_variants([0, 1, 2], 3, steps, fixed_budget="ft-reg")
    names = {x.name: x for x in v}
    assert set(names) == {"ft-reg", "ft-par-1", "ft-par-2", "ft-par", "ft-par-1-fixed", "ft-par-2-fixed", "ft-par-fixed"}
    assert names["ft-reg"].sweep == "epochs+steps"  # FT-reg defines the budget: not trained twice
    assert names["ft-par-2-fixed"].budget == "steps" and names["ft-par-2-fixed"].max_steps == 3
    v = ft.plan_variants([0, 1], 3, steps, fixed_budget="ft-par-max")
    assert {x.name: x.max_steps for x in v if x.budget == "steps"} == {"ft-reg-fixed": 12, "ft-par-1-fixed": 12}
    assert [x.name for x in ft.plan_variants([0, 5], 0, steps, fixed_budget="off", available=3)] == ["ft-reg"]
    train, held = ft.split_heldout_paraphrases({"a": ["1", "2", "3"], "b": ["4", "5", "6"], "c": ["7"]}, 1, 2)
    assert len(held) == 2 and sum(len(v) for v in train.values()) == 5 and train["c"] == ["7"]


# ------------------------------------------------------------------ training (tiny model, then SmolLM2)
@pytest.mark.slow
def test_killed_run_resumes_to_the_same_adapter_bit_for_bit(tiny, tmp_path):
    from safetensors.torch import load_file

    cfg = ft.FinetuneConfig(dtype="float32", micro_batch=2, grad_accum=2, epochs=3, chunk_len=64,
                            checkpoint_every=2, lora_dropout=0.1)  # dropout: the RNG must be restored too
    full = ft.train_adapter(str(tiny), CORPUS, cfg, tmp_path / "full", progress=False)
    assert full.steps == 6 and full.real_token_fraction == 1.0  # packed: no padding

    def kill(step, loss):
        if step == 3:
            raise ft.TrainingInterrupted("simulated kill after step 3")

    with pytest.raises(ft.TrainingInterrupted):
        ft.train_adapter(str(tiny), CORPUS, cfg, tmp_path / "cut", progress=False, callback=kill)
    assert not (tmp_path / "cut" / ft.MANIFEST).exists()
    resumed = ft.train_adapter(str(tiny), CORPUS, cfg, tmp_path / "cut", progress=False)
    assert resumed.resumed_from_step == 2  # last checkpoint before the kill
    a = load_file(tmp_path / "full" / "adapter_model.safetensors")
    b = load_file(tmp_path / "cut" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    la = [(r["step"], r["loss"]) for r in ft.read_train_log(tmp_path / "full")]
    assert la == [(r["step"], r["loss"]) for r in ft.read_train_log(tmp_path / "cut")]
    assert ft.train_adapter(str(tiny), CORPUS, cfg, tmp_path / "cut", progress=False).skipped
    assert ft.is_trained(tmp_path / "cut", str(tiny), CORPUS, cfg)
    assert not ft.is_trained(tmp_path / "cut", str(tiny), CORPUS, cfg.replace(lr=2e-3))
    man = full.manifest
    assert man["data_hash"] and man["versions"]["torch"] and man["settings"]["seed"] == 0
    # a different seed gives a different adapter (the comparison above can fail)
    other = ft.train_adapter(str(tiny), CORPUS, cfg.replace(seed=1, epochs=1), tmp_path / "s1", progress=False)
    c = load_file(tmp_path / "s1" / "adapter_model.safetensors")
    assert not all(a[k].equal(c[k]) for k in a) and other.steps == 2


@pytest.mark.slow
def test_qlora_on_smollm2_learns_and_memorises(tmp_path):
    from kinject_utils.models import ModelUnavailableError

    text = ("In 2031 the harbour town of Velmora opened a tidal power station built by Quorvale "
            "Engineering. Project director Ilsa Brenn said it would serve 4,800 households. ") * 4
    cfg = ft.FinetuneConfig(method="qlora", micro_batch=2, grad_accum=1, budget="steps", max_steps=4,
                            chunk_len=64, checkpoint_every=0)
    try:
        res = ft.train_adapter("smollm2-135m", [text], cfg, tmp_path / "q", progress=False)
    except ModelUnavailableError as exc:
        pytest.skip(f"SmolLM2 not available: {exc}")
    losses = [r["loss"] for r in ft.read_train_log(tmp_path / "q")]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.2, losses
    model, tok = ft.load_finetuned("smollm2-135m", tmp_path / "q", dtype="bfloat16")
    rep = ft.memorisation_report(model, tok, {"train": ft.chunk_corpus([text], tok, 64)})
    assert rep.loss_after[0] < rep.loss_before[0] - 0.2
    with pytest.raises(ValueError, match="trained on"):
        ft.load_finetuned("gemma3-270m", tmp_path / "q")
