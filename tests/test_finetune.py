"""kinject_utils.finetune: chunking, settings, variant planning, exact resume, a real (Q)LoRA run on SmolLM2."""
from __future__ import annotations

import math

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
    (dict(lr="1e-3"), TypeError, "write a number without quotes"),
    (dict(lr=0.0), ValueError, r"lr must be a number in \(0, 1\), got 0.0; the paper searched"),
    (dict(micro_batch=True), TypeError, "integer"),
    (dict(micro_batch=0), ValueError, "micro_batch must be an integer >= 1, got 0"),
    (dict(method="qlora4"), ValueError, "'qlora', 'lora', 'full'"),
    (dict(budget="steps"), ValueError, "max_steps >= 1"),
    (dict(budget="tokens"), ValueError, "max_tokens >= 1"),
    (dict(method="qlora", dtype="float32"), ValueError, "bfloat16"),
    (dict(target_modules=[]), ValueError, "all-linear"),
    (dict(packing="yes"), TypeError, "true/false"),
    (dict(lora_dropout=1.0), ValueError, "lora_dropout"),
    (dict(device="gpu"), ValueError, r"FinetuneConfig.device must be one of .*cuda:N.*got 'gpu'"),
    (dict(device="cuda:x"), ValueError, "cuda:N"),
    (dict(chunk_len=1), ValueError, r"FinetuneConfig.chunk_len must be an integer >= 2, got 1; the paper's is 256"),
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
    assert cpu.dtype == "auto" and ft.preset("cpu") == cpu and ft.preset("paper_qlora") == paper
    assert ft.FinetuneConfig.from_dict({"lr": 3e-4}).lr == 3e-4
    # every device name resolve_device accepts (whether CUDA is there is checked when it is resolved)
    assert [ft.FinetuneConfig(device=d).device for d in ("auto", "cpu", "cuda", "cuda:0", "cuda:1")] == [
        "auto", "cpu", "cuda", "cuda:0", "cuda:1"]
    with pytest.raises(ValueError, match="FinetuneConfig has no setting 'learning_rate'"):
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
    o0, o1 = ft.epoch_order(50, 0, 0), ft.epoch_order(50, 0, 1)
    assert sorted(o0) == list(range(50)) and o0 != o1 and o0 == ft.epoch_order(50, 0, 0)
    assert o0 != ft.epoch_order(50, 1, 0)


def test_lr_schedule():
    cfg = ft.FinetuneConfig(warmup_ratio=0.1, schedule="linear", lr=1e-3)
    lrs = [ft.lr_at(s, 20, cfg) for s in range(20)]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3) and lrs[-1] < lrs[2]
    assert {ft.lr_at(s, 20, ft.FinetuneConfig()) for s in range(20)} == {1e-3}


def test_corpus_and_variants():
    docs = [Document("d1", "", "one"), Document("d2", "", "two")]
    par = {"d1": ["one'", "one''"], "d2": ["two'"]}
    assert ft.corpus_for(docs, par, 0) == ["one", "two"]
    assert ft.corpus_for(docs, par, 2) == ["one", "two", "one'", "two'", "one''"]
    steps = {0: 3, 1: 6, 2: 9, 3: 12}.__getitem__
    v = ft.plan_variants([0, 1, 2], 3, steps, fixed_budget="ft-reg")
    names = {x.name: x for x in v}
    assert set(names) == {"ft-reg", "ft-par-1", "ft-par-2", "ft-par", "ft-par-1-fixed", "ft-par-2-fixed",
                          "ft-par-fixed"}
    assert names["ft-reg"].sweep == "epochs+steps"  # FT-reg defines the budget: not trained twice
    assert names["ft-par-2-fixed"].budget == "steps" and names["ft-par-2-fixed"].max_steps == 3
    v = ft.plan_variants([0, 1], 3, steps, fixed_budget="ft-par-max")
    # FT-reg at the largest FT-par's steps is the repetition control: same text, as many steps and tokens
    assert {x.name: x.max_steps for x in v if x.budget == "steps"} == {"ft-reg-rep": 12, "ft-par-1-fixed": 12}
    # FT-reg with its own epochs: the headline adapter leaves the sweep, whose N = 0 point trains at the config's
    v = {x.name: x for x in ft.plan_variants([0, 3], 3, steps, fixed_budget="ft-par-max", reg_epochs=5, epochs=1)}
    assert (v["ft-reg"].epochs, v["ft-reg"].sweep) == (5, "none") and v["ft-par-0"].sweep == "epochs"
    assert v["ft-reg"].config(ft.FinetuneConfig()).epochs == 5 and v["ft-par-0"].config(ft.FinetuneConfig()).epochs == 1
    assert v["ft-reg-rep"].config(ft.FinetuneConfig()).max_steps == 12
    # given FT-par's training tokens, the control repeats FT-reg's text for as many tokens (not steps)
    v = {x.name: x for x in ft.plan_variants([0, 3], 3, steps, fixed_budget="ft-par-max", reg_epochs=5, epochs=1,
                                             tokens_of={0: 700, 3: 3000}.__getitem__)}
    rep = v["ft-reg-rep"].config(ft.FinetuneConfig())
    assert (rep.budget, rep.max_tokens, v["ft-reg-rep"].sweep) == ("tokens", 3000, "none")
    no_sweep = ft.plan_variants([], 3, steps, fixed_budget="off", reg_epochs=5, epochs=1)
    assert [x.name for x in no_sweep] == ["ft-reg", "ft-par"]  # a model without the sweep: no ft-par-0
    same = ft.plan_variants([0, 3], 3, steps, fixed_budget="off", reg_epochs=1, epochs=1)
    assert [x.name for x in same] == ["ft-reg", "ft-par"]  # REG_EPOCHS = EPOCHS: FT-reg is the sweep's N = 0
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
        ft.train_adapter("smollm2-135m", [text], cfg, tmp_path / "q", progress=False)
    except ModelUnavailableError as exc:
        pytest.skip(f"SmolLM2 not available: {exc}")
    losses = [r["loss"] for r in ft.read_train_log(tmp_path / "q")]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.2, losses
    model, tok = ft.load_finetuned("smollm2-135m", tmp_path / "q", device="cpu", dtype="bfloat16")
    rep = ft.memorisation_report(model, tok, {"train": ft.chunk_corpus([text], tok, 64)})
    assert rep.loss_after[0] < rep.loss_before[0] - 0.2
    with pytest.raises(ValueError, match="trained on"):
        ft.load_finetuned("gemma3-270m", tmp_path / "q")


# ------------------------------------------------------------------ presets, precision, stable lists
@pytest.mark.parametrize("build", [
    lambda: ft.preset("cpu", **{"epochs": 1, **{"lrr": 3e-4}}),  # notebook 03: preset(FT_PRESET, **FT_SETTINGS)
    lambda: ft.FinetuneConfig.cpu_default(lrr=3e-4),
    lambda: ft.FinetuneConfig.paper_qlora(lrr=3e-4),
    lambda: ft.FinetuneConfig.qlora_small_gpu(lrr=3e-4),
    lambda: ft.FinetuneConfig.from_dict({"lrr": 3e-4}),
    lambda: ft.FinetuneConfig().replace(lrr=3e-4),
], ids=["preset", "cpu_default", "paper_qlora", "qlora_small_gpu", "from_dict", "replace"])
def test_a_misspelt_setting_answers_did_you_mean_on_every_path(build):
    with pytest.raises(ValueError, match=r"FinetuneConfig has no setting 'lrr' \(did you mean lr\?\); allowed: "):
        build()


def test_unknown_preset_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"FT_PRESET='paper-qlora'.*\['cpu', 'paper_qlora', 'qlora_small_gpu'\]"):
        ft.preset("paper-qlora")
    assert ft.preset("qlora_small_gpu").effective_batch == ft.PAPER_BATCH


def test_float16_is_rejected_on_cpu_with_the_fix(tiny):
    with pytest.raises(ValueError, match="float16.*CUDA"):
        ft.FinetuneConfig(dtype="float16", device="cpu")
    with pytest.raises(ValueError, match="float16 trains only on CUDA"):  # "auto" resolved to the CPU here
        ft.resolve_run(str(tiny), ft.FinetuneConfig(dtype="float16", device="auto"))


def test_cpu_preset_dtype_is_chosen_by_the_machine(monkeypatch, tiny):
    from kinject_utils import device

    for want in ("float32", "bfloat16"):
        monkeypatch.setattr(device, "cpu_precision_report", lambda w=want: {"dtype": w, "why": "test"})
        monkeypatch.delenv("KINJECT_DTYPE", raising=False)
        cfg = ft.preset("cpu", device="cpu")
        assert cfg.dtype == "auto" and ft.resolve_run(str(tiny), cfg)["dtype"] == want
        # the run key holds the resolved precision: an fp32 and a bf16 machine never share an adapter
        assert ft.run_key("m", ["a"], cfg) == ft.run_key("m", ["a"], cfg.replace(dtype=want))


def test_target_modules_are_stored_sorted():
    cfg = ft.FinetuneConfig(target_modules=["v_proj", "q_proj", "o_proj", "q_proj"])
    assert cfg.target_modules == ["o_proj", "q_proj", "v_proj"]
    same = cfg.replace(target_modules=["q_proj", "v_proj", "o_proj"])
    assert ft.run_key("m", ["a"], cfg) == ft.run_key("m", ["a"], same)


# ------------------------------------------------------------------ micro-batch chooser (CUDA memory model)
H100_TABLE = [(4, True, 7.36), (16, True, 10.5), (32, True, 14.8), (64, True, 22.8), (16, False, 67.0)]


def test_memory_model_matches_the_h100_table():
    shape = ft.Shape.from_config(__import__("kinject_utils.finetune.memory", fromlist=["x"]).MISTRAL_7B)
    for mb, ckpt, gib in H100_TABLE:
        assert ft.predict_gib(shape, mb, ckpt) == pytest.approx(gib, rel=0.03), (mb, ckpt)


@pytest.mark.parametrize("free, mb, ckpt", [
    (79.0, 64, True),    # H100 80GB: mb 64 + checkpointing (4,084 tok/s, 22.8 GiB); mb16 without needs 67 GiB
    (139.0, 16, False),  # H200: mb 16 without checkpointing fits (5,254 tok/s)
    (11.5, 8, True),     # 12 GB card
])
def test_micro_batch_chooser(free, mb, ckpt):
    got = ft.choose_micro_batch(free)
    assert (got["micro_batch"], got["gradient_checkpointing"], got["fits"]) == (mb, ckpt, True)
    assert got["micro_batch"] * got["grad_accum"] == 64 and got["predicted_gib"] <= 0.85 * free


def test_micro_batch_chooser_on_a_card_too_small_says_so():
    got = ft.choose_micro_batch(7.0)  # an 8 GB card with a desktop on it: 7B QLoRA needs ~6.6 GiB
    assert (got["micro_batch"], got["grad_accum"], got["fits"]) == (1, 64, False) and "6.6 GiB" in got["why"]
    cfg = ft.preset("paper_qlora")
    assert cfg.micro_batch == "auto" and cfg.effective_batch == 64


# ------------------------------------------------------------------ training plan
def _warnings():
    import logging

    from kinject_utils.log import get_logger

    records = []
    h = logging.Handler(logging.WARNING)
    h.emit = records.append
    get_logger().addHandler(h)
    return records, lambda: get_logger().removeHandler(h)


def test_plan_warns_before_a_corpus_far_over_budget(tiny, tok, tmp_path):
    from kinject_utils import layout
    from kinject_utils.io import write_json

    # a measured rate from an earlier adapter of this model on this machine
    fake = layout.adapter_dir(tmp_path, "m", "t", "ft-reg") / ft.MANIFEST
    write_json(fake, {"base_model": str(tiny), "method": "lora", "dtype": "float32", "device": "cpu",
                      "tokens_per_s": 300.0, "created": "2026-01-01T00:00:00"})
    cfg = ft.preset("cpu", device="cpu", dtype="float32", epochs=5)
    big = ["The Varnholt ferry opened on the third of May. " * 2000]  # ~22k tokens x 5 epochs
    records, stop = _warnings()
    try:
        plan = ft.plan_training(str(tiny), big, cfg, tokenizer=tok, results_dir=tmp_path, budget_minutes=2)
        small = ft.plan_training(str(tiny), big[:1], cfg.replace(max_train_tokens=20_000), tokenizer=tok,
                                 results_dir=tmp_path, budget_minutes=2)
    finally:
        stop()
    assert plan["tokens_per_s"] == 300.0 and "measured here" in plan["tokens_per_s_source"]
    assert plan["steps"] == plan["steps_per_epoch"] * 5 and plan["minutes"] > 2 and plan["over_budget"]
    assert plan["minutes"] == pytest.approx(plan["tokens_trained"] / 300 / 60, rel=1e-3)
    assert len(records) == 1 and "MAX_TRAIN_TOKENS" in records[0].getMessage() \
        and f"{plan['steps']} optimiser steps" in records[0].getMessage()
    assert not small["over_budget"] and small["steps"] < plan["steps"] and small["tokens_trained"] <= 20_000 + 8 * 256


# ------------------------------------------------------------------ variants, index, memorisation (tiny model)
@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    from kinject_utils.tasks import Document

    class _Task:
        name = "toy"
        docs = [Document(f"d{i}", "", t) for i, t in enumerate(CORPUS[:4])]
        paraphrases: dict = {}

    results = tmp_path_factory.mktemp("results")
    par = {d.doc_id: [d.text.replace("the", "a")] for d in _Task.docs}
    cfg = ft.FinetuneConfig(dtype="float32", device="cpu", epochs=1, chunk_len=32, micro_batch=2, grad_accum=1,
                            checkpoint_every=0)
    rows = ft.train_variants(str(tiny), _Task(), par, cfg, results, sweep=[0], n_par=1, progress=False)
    return results, rows, _Task(), par


def test_adapter_config_lists_target_modules_sorted(trained):
    import json
    from pathlib import Path

    results, rows, _, _ = trained
    for r in rows:
        tm = json.loads((Path(r["adapter_dir"]) / "adapter_config.json").read_text())["target_modules"]
        assert tm == sorted(tm) and {t.rsplit(".", 1)[-1] for t in tm} >= {"q_proj", "down_proj"}, tm


def test_index_is_relative_and_a_moved_results_folder_finds_its_adapters(trained, tmp_path):
    import csv
    import shutil

    from kinject_utils import layout

    results, rows, _, _ = trained
    ft.write_adapter_index(results, rows)
    stored = list(csv.DictReader(open(layout.adapter_index(results), encoding="utf-8")))
    assert [r["variant"] for r in stored] == ["ft-par", "ft-reg"]  # sorted rows
    assert all(r["adapter_dir"].startswith("03_adapters/") for r in stored)
    moved = tmp_path / "elsewhere" / "results"
    shutil.copytree(results, moved)
    back = ft.read_adapter_index(moved)
    assert all(str(moved) in r["adapter_dir"] and str(results) not in r["adapter_dir"] for r in back)
    model, _ = ft.load_finetuned(back[0]["model"], back[0]["adapter_dir"], device="cpu", dtype="float32")
    assert hasattr(model, "disable_adapter")
    (layout.from_relative(moved, stored[0]["adapter_dir"]) / ft.MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match="line 2: .*re-run notebook 03"):
        ft.read_adapter_index(moved)


def test_memorisation_computes_the_base_pass_once_per_chunk_set(trained, monkeypatch):
    from kinject_utils.finetune import evaluate

    results, rows, task, par = trained
    calls = []
    real = evaluate.chunk_losses

    def counting(model, tok, chunks, *a, **k):
        calls.append(len(chunks))
        return real(model, tok, chunks, *a, **k)

    monkeypatch.setattr(evaluate, "chunk_losses", counting)
    memo = ft.memorisation_for(rows, {"toy": task}, {"toy": par}, device="cpu", dtype="float32", max_chunks=None)
    # ft-reg: kb before + after; ft-par: kb after (before shared), paraphrases before + after
    assert len(calls) == 5, calls
    kb = memo[memo.split == "kb"]
    assert len(kb) == 2 and kb.loss_before.nunique() == 1 and (kb.loss_after < kb.loss_before + 1).all()


# ------------------------------------------------------------------ CUDA (pytest -m gpu; skipped without a GPU)
@pytest.mark.gpu
@pytest.mark.parametrize("method, dtype", [("lora", "float16"), ("qlora", "auto")])
def test_cuda_training_lands_on_the_gpu_and_scores_on_its_base(tiny, tmp_path, method, dtype):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    cfg = ft.FinetuneConfig(method=method, dtype=dtype, device="cuda", micro_batch="auto", batch=4, epochs=2,
                            chunk_len=32, checkpoint_every=0)
    res = ft.train_adapter(str(tiny), CORPUS, cfg, tmp_path / "a", progress=False)
    man = res.manifest
    assert man["device"].startswith("cuda") and man["memory_plan"]["fits"]
    assert man["micro_batch"] * man["grad_accum"] == 4
    assert man["dtype"] == ("float16" if method == "lora" else "bfloat16")  # float16 ran with a GradScaler
    losses = [r["loss"] for r in ft.read_train_log(tmp_path / "a")]
    assert all(math.isfinite(x) for x in losses)
    model, _ = ft.load_finetuned(str(tiny), tmp_path / "a", device="cuda", dtype="auto")
    assert next(model.parameters()).device.type == "cuda"
    if method == "qlora":  # scored on the 4-bit base it was trained on, not merged into bf16
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def test_plan_tokens_per_s_follows_the_cpus_vector_isa(monkeypatch):
    """An AVX2-only CPU trains ~2x slower than an AVX-512 one: the plan must not quote the faster figure."""
    from kinject_utils.finetune import plan as plan_mod

    got = {}
    for isa in ("cpu/AVX512", "cpu/AVX2"):
        monkeypatch.setattr(plan_mod, "_cpu_class", lambda isa=isa: isa)
        got[isa] = plan_mod.tokens_per_s("smollm2-135m", "lora", "float32", "cpu")
    assert got["cpu/AVX512"][0] == plan_mod.TOKENS_PER_S[("smollm2-135m", "lora", "float32", "cpu/AVX512")][0]
    assert got["cpu/AVX2"][0] == plan_mod.TOKENS_PER_S[("smollm2-135m", "lora", "float32", "cpu/AVX2")][0]
    assert got["cpu/AVX2"][0] < got["cpu/AVX512"][0] and "AVX2 only" in got["cpu/AVX2"][1]
    monkeypatch.setattr(plan_mod, "_cpu_class", lambda: "cpu/AVX512")  # without a Gemma row: scaled, and said so
    monkeypatch.delitem(plan_mod.TOKENS_PER_S, ("gemma3-270m", "lora", "float32", "cpu/AVX512"))
    tps, src = plan_mod.tokens_per_s("gemma3-270m", "lora", "float32", "cpu")
    assert "scaled by parameter count" in src and tps < got["cpu/AVX512"][0]


def test_task_plan_sums_its_variants_and_warns_once(tiny, monkeypatch):
    from kinject_utils.finetune import plan as plan_mod
    from kinject_utils.tasks import Document

    class _Task:
        name = "big"
        docs = [Document("d0", "", "The Varnholt ferry opened on the third of May. " * 400)]

    monkeypatch.setitem(plan_mod.TOKENS_PER_S, (str(tiny), "lora", "float32", plan_mod._cpu_class()),
                        (50.0, "test"))
    records, stop = _warnings()
    try:
        plans = ft.plan_task(str(tiny), _Task(), {"d0": ["A ferry opened in May. " * 400]},
                             ft.preset("cpu", device="cpu", dtype="float32", epochs=5), sweep=[0, 1], n_par=1,
                             fixed_budget="ft-reg", budget_minutes=1)
    finally:
        stop()
    assert [p["label"].rsplit(" / ", 1)[1] for p in plans] == ["ft-reg", "ft-par", "ft-par-fixed"]
    assert plans[2]["steps"] == plans[0]["steps"] < plans[1]["steps"]  # the fixed-step control: FT-reg's steps
    assert len(records) == 1 and "3 adapters" in records[0].getMessage() \
        and "MAX_TRAIN_TOKENS" in records[0].getMessage()
