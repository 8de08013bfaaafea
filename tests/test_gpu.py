"""GPU paths: ``DEVICE: cuda`` reaches every model loader (CPU test), gpu_check's CPU-safe part, and
``gpu``-marked runs of a tiny random-weight Mistral through QLoRA and the scoring grid on CUDA.

The CPU test drives the library functions the notebooks call, with the parameters the runner gives
them for ``configs/tiny.yaml --set DEVICE=cuda``; torch is told a GPU exists and every loader is
replaced by one that records the device and dtype it was asked for.
"""
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from kinject_utils import device as device_mod
from kinject_utils import finetune as ft
from kinject_utils import layout, models, runner, study
from kinject_utils.tasks import save_task

ROOT = Path(__file__).resolve().parents[1]


class Stop(Exception):
    """Raised by a recording loader where the caller would go on to use a real model."""


def _patch_everywhere(monkeypatch, original, fake):
    """Replace ``original`` in every loaded kinject module that bound it (``from x import f`` included)."""
    for name, mod in list(sys.modules.items()):
        if name.startswith("kinject_utils") and mod is not None:
            for attr, val in list(vars(mod).items()):
                if val is original:
                    monkeypatch.setattr(mod, attr, fake)


def _dtype(device, dtype):
    return device_mod.resolve_dtype(dtype, device_mod.resolve_device(device))


class FakeEmbedder:
    max_seq_length = None

    def encode(self, texts, **kw):
        rng = np.random.default_rng(len(texts))
        return rng.normal(size=(len(texts), 8)).astype(np.float32)


def _tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models.resolve_model_dir("smollm2-135m"))
    tok.pad_token = tok.pad_token or tok.eos_token
    return tok


@pytest.fixture
def cuda_world(monkeypatch):
    """torch "sees" a GPU (bf16-capable); every loader records (stage, what, device, dtype, extra).

    The device is recorded as passed: with a GPU "seen", a caller that dropped the setting would pass
    the default "auto" (and still land on the GPU), so only "cuda" proves the setting arrived. The
    dtype is recorded as the real loader resolves it ("auto" -> what it loads in).
    """
    import torch

    import kinject_utils.paraphrase  # noqa: F401 - load every module the notebooks use before patching
    import kinject_utils.retrieval  # noqa: F401
    import kinject_utils.scoring  # noqa: F401

    monkeypatch.setattr(device_mod, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    calls: list[tuple] = []
    tok = _tokenizer()
    state = {"stop_lm": False, "stop_ft": False}

    def load_causal_lm(name, *, dtype="float32", quantization=None, device="cpu", **kw):
        calls.append(("load_causal_lm", name, device, _dtype(device, dtype), quantization))
        if state["stop_lm"]:
            raise Stop
        return types.SimpleNamespace(name=name), tok

    def load_embedder(name="minilm-l6", device="cpu", **kw):
        calls.append(("load_embedder", name, device, None, None))
        return FakeEmbedder()

    def load_finetuned(model_name, adapter_dir, *, device="auto", dtype="auto", quantization=None, merge=False):
        calls.append(("load_finetuned", str(adapter_dir), device, _dtype(device, dtype), quantization))
        if state["stop_ft"]:
            raise Stop
        return types.SimpleNamespace(name=model_name), tok

    def train_adapter(model_name, texts, cfg, out_dir, **kw):
        run = ft.resolve_run(model_name, cfg)  # what the real loop hands load_causal_lm
        calls.append(("train_adapter", model_name, run["device"], run["dtype"], cfg.method))
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / ft.MANIFEST).write_text(json.dumps({"base_model": model_name, "method": cfg.method}))
        return types.SimpleNamespace(skipped=False, steps=1, epochs=1.0, tokens=256, final_loss=1.0,
                                     tokens_per_s=1.0, real_token_fraction=1.0, wall_s=0.1, out_dir=str(out))

    def switch_load(self, model_name, adapter_dir=None, *, quantization=None):
        # AdapterSwitch keeps one base and swaps adapters (tested for equal numbers in test_gpu_memory.py);
        # here it records what it would load, as the two loaders above do
        if adapter_dir is None:
            return load_causal_lm(model_name, dtype=self.dtype, quantization=quantization, device=self.device)
        return load_finetuned(model_name, adapter_dir, device=self.device, dtype=self.dtype,
                              quantization=quantization or "none")

    for original, fake in [(models.load_causal_lm, load_causal_lm), (models.load_embedder, load_embedder),
                           (ft.load_finetuned, load_finetuned)]:
        _patch_everywhere(monkeypatch, original, fake)
    monkeypatch.setattr(ft.AdapterSwitch, "load", switch_load)
    real_train = ft.train_adapter
    return types.SimpleNamespace(calls=calls, state=state, fake_train=train_adapter, real_train=real_train,
                                 patch=lambda: _patch_everywhere(monkeypatch, real_train, train_adapter))


def test_device_cuda_reaches_every_loader(cuda_world, tmp_path):
    import ast

    from kinject_utils import paraphrase as P
    from kinject_utils import retrieval
    from kinject_utils.data import make_fictional_news

    _, chosen, declared = runner.prepare(ROOT / "configs" / "tiny.yaml", root=ROOT, sets=["DEVICE=cuda"])
    # each notebook's parameters as it runs them: its declared defaults, then what the runner passes
    p = {nb.name[:2]: {**{k: ast.literal_eval(str(i["default"])) for k, i in declared[nb.name[:2]].items()}, **params}
         for nb, params in chosen}
    assert all(p[n]["DEVICE"] == "cuda" for n in ("02", "03", "04", "05"))
    results = tmp_path / "results"
    task = make_fictional_news("tiny", seed=0)
    save_task(task, layout.task_dir(results, task.name))
    calls = cuda_world.calls

    def stage(name):
        got = [c for c in calls if c[0] == name]
        calls[:] = [c for c in calls if c[0] != name]
        return got

    # 02: the local paraphraser (notebook 02 builds it with device=DEVICE; it loads on first use)
    backend = P.LocalChatBackend("smollm2-135m", max_new_tokens=p["02"]["LOCAL_MAX_NEW_TOKENS"],
                                 device=p["02"]["DEVICE"])
    backend.max_tokens_for("a document", 1)
    assert [c[2:4] for c in stage("load_causal_lm")] == [("cuda", "bfloat16")]

    # 01: the fictional-knowledge judge, when FK_JUDGE_DEVICE asks for the card (paper configs do)
    from kinject_utils.data.fk_judge import model_judge

    cuda_world.state["stop_lm"] = True
    with pytest.raises(Stop):
        model_judge("gemma3-270m", device="cuda")(task.questions[:1])
    assert [c[2:4] for c in stage("load_causal_lm")] == [("cuda", "float32")]
    cuda_world.state["stop_lm"] = False

    # 03: the training loop itself asks for CUDA (the real train_adapter, stopped at its loader)
    cfg = ft.preset(p["03"]["FT_PRESET"], epochs=p["03"]["EPOCHS"], seed=0, device=p["03"]["DEVICE"],
                    dtype=p["03"]["DTYPE"])
    cuda_world.state["stop_lm"] = True
    with pytest.raises(Stop):
        cuda_world.real_train("smollm2-135m", [d.text for d in task.docs], cfg, tmp_path / "probe")
    assert [c[2:4] for c in stage("load_causal_lm")] == [("cuda", "bfloat16")]
    cuda_world.state["stop_lm"] = False

    # 03: the variants the notebook trains, the learning-rate search and memorisation
    cuda_world.patch()
    rows = ft.train_variants("smollm2-135m", task, dict(task.paraphrases), cfg, results, sweep=p["03"]["SWEEP"],
                             n_par=p["03"]["N_PAR"], fixed_budget=p["03"]["FIXED_BUDGET"], progress=False)
    ft.write_adapter_index(results, rows)
    trained = stage("train_adapter")
    assert len(trained) == len(rows) >= 2 and {c[2:4] for c in trained} == {("cuda", "bfloat16")}
    cuda_world.state["stop_ft"] = True
    with pytest.raises(Stop):
        ft.lr_search("smollm2-135m", [d.text for d in task.docs], ["held out"], cfg, [1e-3],
                     layout.lr_search_dir(results, "smollm2-135m", task.name), device=p["03"]["DEVICE"],
                     dtype=p["03"]["DTYPE"])
    assert {c[2:4] for c in stage("train_adapter")} == {("cuda", "bfloat16")}
    assert [c[2:4] for c in stage("load_finetuned")] == [("cuda", "bfloat16")]
    with pytest.raises(Stop):
        ft.memorisation_for(rows, {task.name: task}, {task.name: dict(task.paraphrases)}, device=p["03"]["DEVICE"],
                            dtype=p["03"]["DTYPE"], max_chunks=2)
    assert [c[2:4] for c in stage("load_finetuned")] == [("cuda", "bfloat16")]
    cuda_world.state["stop_ft"] = False

    # 04: the embedder
    rcfg = retrieval.RetrievalConfig(embedder=p["04"].get("EMBEDDER", "minilm-l6"), device=p["04"]["DEVICE"])
    retrieval.run_retrieval(results, [task.name], rcfg)
    assert [c[2] for c in stage("load_embedder")] == ["cuda"]

    # 05: base and fine-tuned scoring cells (scoring itself faked: no model runs)
    def fake_score(model, tok, questions, **kw):
        return [{"id": q.id, "acc": 1, "acc_norm": 1, "n_ctx_tokens": 3, "cont_tokens": [1] * 4} for q in questions]

    import kinject_utils.scoring as scoring_pkg
    orig_score = scoring_pkg.score_questions
    scoring_pkg.score_questions = fake_score
    try:
        gcfg = study.GridConfig(dtype=p["05"].get("DTYPE", "auto"), sweep=True)
        study.score_study(results, p["05"]["MODELS"], [task.name], gcfg, device=p["05"]["DEVICE"], progress=False)
    finally:
        scoring_pkg.score_questions = orig_score
    base, tuned = stage("load_causal_lm"), stage("load_finetuned")
    assert [c[2:4] for c in base] == [("cuda", "bfloat16")]
    assert len(tuned) == len(rows) and {c[2:4] for c in tuned} == {("cuda", "bfloat16")}
    costs = study.cost_by_method(__import__("pandas").read_csv(layout.costs_csv(results)))
    assert {"base", "base+RAG", "FT-reg", "FT-par", "FT-reg+RAG", "FT-par+RAG"} <= set(costs["method"])


def test_auto_dtype_on_a_card_that_only_emulates_bf16_is_float32(monkeypatch):
    """T4/V100: torch.cuda.is_bf16_supported() is True counting emulation; auto must not pick bf16 there."""
    import torch

    native = {"v": False}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or native["v"])
    assert device_mod.resolve_dtype("auto", "cuda") == "float32"
    native["v"] = True  # Ampere and later
    assert device_mod.resolve_dtype("auto", "cuda") == "bfloat16"


@pytest.mark.slow  # builds a 2-layer random model and trains/scores it on the CPU (~30-60 s on 2 busy cores)
def test_gpu_check_cpu_part_writes_the_table(tmp_path):
    out = tmp_path / "gpu_check.json"
    r = subprocess.run([sys.executable, "scripts/gpu_check.py", "--shape", "tiny", "--device", "cpu", "--steps", "1",
                        "--micro-batches", "1,2", "--batches", "8,32", "--questions", "4", "--out", str(out),
                        "--dtype", "float32"],  # the parity below is fp32's: auto is bf16 on an AMX CPU
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    gc = _gpu_check()
    assert res["shape"] == "tiny" and res["device"] == "cpu" and res["model"]["params"] > 0
    assert [q["micro_batch"] for q in res["qlora"]] == [1, 2]
    for q in res["qlora"]:
        assert set(gc.QLORA_FIELDS) <= set(q) and q["tokens_per_s"] > 0 and q["peak_mem_gib"] > 0
        assert np.isfinite(q["final_loss"]) and q["tokens"] == q["micro_batch"] * 256
    first, second = res["qlora"]  # on a CPU the meter reads the process's peak so far: it never falls
    assert second["peak_mem_gib"] >= first["peak_mem_gib"] and first["mem_source"].startswith("ru_maxrss")
    assert {(s["case"], s["batch_size"]) for s in res["scoring"]} == {
        (c, b) for c in ("letter 5-shot", "cloze + 3x200-word context") for b in (8, 32)}
    for s in res["scoring"]:
        assert set(gc.SCORING_FIELDS) <= set(s) and s["ours_s"] > 0 and s["lmeval_s"] > 0
        assert s["identical_predictions"] is True and s["max_abs_loglik_diff"] < 1e-4  # fp32 parity with lm-eval
    assert "| QLoRA micro-batch |" in r.stdout and "| scoring case |" in r.stdout
    auto, ad = res["auto_micro_batch"], res["adapter_scoring"]
    assert auto["same"] and auto["first"] == auto["second"] >= 1
    assert ad["path"] in ("shared prefix + k-shot prefix cache", "shared prefix", "batched full-row fallback")
    assert ad["identical_predictions"] and ad["probe_packed_err"] <= ad["probe_tolerance"]
    assert "nf4 + LoRA adapter scoring:" in r.stdout and "probe max |dlogp|" in r.stdout


def _gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_tokenizer_fits_the_vocabulary():
    gc = _gpu_check()
    for shape in ("tiny", "mistral-7b"):
        v = gc.SHAPES[shape]["vocab_size"]
        tok = gc.build_tokenizer(v)
        assert len(tok) == v
        ids = tok(gc.texts(v, 1, 50)[0] + " Answer: A", add_special_tokens=False)["input_ids"]
        assert len(ids) == 52 and max(ids) < v and tok.unk_token_id not in ids


# ---- gpu tier: a tiny random Mistral on the card ------------------------------------------------
@pytest.fixture
def tiny_mistral(tmp_path):
    gc = _gpu_check()
    folder = tmp_path / "tiny-mistral"
    gc.build_model("tiny", "cuda", folder, "bfloat16")
    return gc, folder


@pytest.mark.gpu
def test_qlora_nf4_paged_adamw_on_cuda(tiny_mistral, tmp_path):
    import torch

    gc, folder = tiny_mistral
    docs = gc.texts(gc.SHAPES["tiny"]["vocab_size"], 16)
    cfg = ft.preset("paper_qlora", micro_batch=4, grad_accum=1, batch=0, budget="steps", max_steps=3, device="cuda")
    res = ft.train_adapter(str(folder), docs, cfg, tmp_path / "ad", progress=False)
    assert res.steps == 3 and np.isfinite(res.final_loss)
    assert res.manifest.get("method") == "qlora"
    model, _ = ft.load_finetuned(str(folder), tmp_path / "ad", device="cuda")  # as trained: the 4-bit base
    devices = {p.device.type for p in model.parameters()}
    assert devices == {"cuda"}
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    assert torch.cuda.max_memory_allocated() > 0


@pytest.mark.gpu
def test_scoring_grid_on_cuda(tiny_mistral, tmp_path, monkeypatch):

    from kinject_utils.tasks import Question, Task

    gc, folder = tiny_mistral
    v = gc.SHAPES["tiny"]["vocab_size"]
    qs = gc._questions(v, 8, 2, "q")
    results = tmp_path / "results"
    save_task(Task(name="t", questions=[Question(**{**q.__dict__, "subject": ""}) for q in qs], docs=[],
                   meta={"kind": "custom"}), layout.task_dir(results, "t"))
    seen = []
    real = study.run_grid

    def spy(specs, results_dir, tasks, cfg, load_model, *a, **k):
        def load(spec):
            m, t = load_model(spec)
            seen.append(({p.device.type for p in m.parameters()},
                         str(next(p.dtype for p in m.parameters() if p.is_floating_point())).removeprefix("torch.")))
            return m, t
        return real(specs, results_dir, tasks, cfg, load, *a, **k)

    monkeypatch.setattr("kinject_utils.study.run.run_grid", spy)
    path = study.score_study(results, [str(folder)], ["t"], study.GridConfig(dtype="auto"), device="cuda",
                             progress=False)
    import pandas as pd

    from kinject_utils.io import read_jsonl

    scores = pd.read_csv(path)
    (devices, loaded_dtype), = seen
    assert devices == {"cuda"} and len(scores) == 1
    # the cell's score is its 8 questions' mean under the cell's metric, as the per-question file records them
    per_q = list(read_jsonl(layout.per_question_jsonl(results)))
    assert scores.n.item() == len(per_q) == 8
    assert scores.score.item() == pytest.approx(np.mean([r[scores.metric.item()] for r in per_q]))
    costs = pd.read_csv(layout.costs_csv(results))
    assert costs.device.item() == "cuda" and costs.mem_source.item().startswith("cuda")
    assert costs.peak_mem_mb.item() > 0
    assert costs.dtype.item() == loaded_dtype  # the label names the precision the model really ran in


@pytest.mark.parametrize("method, expect", [("qlora", "nf4/bfloat16"), ("lora", "bfloat16")])
def test_base_and_finetuned_cells_of_a_model_share_one_precision(cuda_world, tmp_path, method, expect):
    """QLoRA adapters are scored on their nf4 base, so the base cells load that same nf4 base: an FT-vs-base
    difference is the adapter's, not also nf4's quantisation loss; the label says so (cache key, costs)."""
    import pandas as pd

    from kinject_utils.data import make_fictional_news

    results = tmp_path / "results"
    task = make_fictional_news("tiny", seed=0)
    save_task(task, layout.task_dir(results, task.name))
    cuda_world.patch()
    cfg = ft.preset("qlora_small_gpu" if method == "qlora" else "cpu", epochs=1, device="cuda", dtype="auto")
    rows = ft.train_variants("smollm2-135m", task, dict(task.paraphrases), cfg, results, sweep=[0, 1], n_par=1,
                             fixed_budget="off", progress=False)
    ft.write_adapter_index(results, rows)
    cuda_world.calls.clear()

    def fake_score(model, tok, questions, **kw):
        return [{"id": q.id, "acc": 1, "acc_norm": 1, "n_ctx_tokens": 3, "cont_tokens": [1] * 4} for q in questions]

    import kinject_utils.scoring as scoring_pkg

    orig, scoring_pkg.score_questions = scoring_pkg.score_questions, fake_score
    try:
        study.score_study(results, ["smollm2-135m"], [task.name], study.GridConfig(dtype="auto"), device="cuda",
                          progress=False)
    finally:
        scoring_pkg.score_questions = orig
    quant = "nf4" if method == "qlora" else None
    base = [c for c in cuda_world.calls if c[0] == "load_causal_lm"]
    tuned = [c for c in cuda_world.calls if c[0] == "load_finetuned"]
    assert base and {c[4] for c in base} == {quant}
    assert tuned and {c[4] for c in tuned} == {quant or "none"}
    costs = pd.read_csv(layout.costs_csv(results))
    assert set(costs["dtype"]) == {expect}
