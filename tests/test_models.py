"""Model registry: embedded offline loading, cached conversion, clear errors for hub ids offline."""
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from kinject_utils import models


def test_registry_has_the_studys_models():
    for name in ["smollm2-135m", "gemma3-270m", "minilm-l6", "mistral-7b", "llama2-7b", "orca2-7b", "bge-large-en"]:
        assert models.get_spec(name) is not None
    assert models.get_spec("gemma3-270m").needs_bos and not models.get_spec("smollm2-135m").needs_bos


def test_hub_id_offline_fails_at_once_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # empty HF cache
    for name in ["mistral-7b", "bge-large-en", "someorg/some-model"]:
        t0 = time.time()
        with pytest.raises(models.ModelUnavailableError) as exc:
            models.load_causal_lm(name)
        assert time.time() - t0 < 10
        msg = str(exc.value)
        assert "offline" in msg and "local" in msg.lower() and ("--local-dir" in msg)


def test_unknown_name_and_bad_types_are_clear(tmp_path):
    with pytest.raises(models.ModelUnavailableError, match="Unknown model 'nosuchmodel'"):
        models.resolve_model_dir("nosuchmodel")
    with pytest.raises(TypeError, match="non-empty string"):
        models.resolve_model_dir(7)  # type: ignore[arg-type]
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelUnavailableError, match="not a model folder"):
        models.resolve_model_dir(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="dtype must be one of"):
        models.load_causal_lm("smollm2-135m", dtype="float8")


def _fake_convert(spec, target):
    """Stand-in for the 15 s GGUF conversion: slow, counted, written via a temp folder like the real one."""
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True)
    with open(target.parent / "conversions.log", "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(1.0)
    (tmp / "config.json").write_text("{}")
    os.replace(tmp, target)


def _resolve_in_child(cache):
    os.environ["KINJECT_CACHE"] = cache
    models._convert_gguf = _fake_convert
    models.resolve_model_dir("smollm2-135m")


def test_two_processes_convert_once(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_resolve_in_child, args=(str(tmp_path),)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert (tmp_path / "models" / "smollm2-135m" / "config.json").exists()
    assert len((tmp_path / "models" / "conversions.log").read_text().split()) == 1


def test_crashed_conversion_leaves_no_half_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("KINJECT_CACHE", str(tmp_path))

    def boom(spec, workdir):
        (workdir / "partial.bin").write_bytes(b"x" * 10)
        raise RuntimeError("simulated crash during conversion")

    monkeypatch.setattr(models, "_gguf_file", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        models.resolve_model_dir("smollm2-135m")
    leftovers = [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


@pytest.mark.slow
def test_smollm2_loads_offline_and_scores_a_question():
    import torch

    models.resolve_model_dir("smollm2-135m")  # convert (once per cache) before timing
    t0 = time.time()
    model, tok = models.load_causal_lm("smollm2-135m", dtype="bfloat16")
    load_s = time.time() - t0
    assert load_s < 5, f"cached load took {load_s:.1f}s"
    assert Path(models.resolve_model_dir("smollm2-135m"), "model.safetensors").exists()
    ctx = "Question: What is the capital of France?\nAnswer:"
    scores = []
    for cont in [" Paris", " Berlin", " Madrid", " Rome"]:
        ids = tok(ctx + cont, return_tensors="pt").input_ids
        n = len(tok(cont, add_special_tokens=False).input_ids)
        with torch.no_grad():
            logp = model(ids).logits.float().log_softmax(-1)[0, :-1]
        tgt = ids[0, 1:]
        scores.append(logp[-n:].gather(-1, tgt[-n:, None]).sum().item())
    assert max(range(4), key=scores.__getitem__) == 0


@pytest.mark.slow
def test_embedded_minilm_loads_offline():
    emb = models.load_embedder("minilm-l6")
    v = emb.encode(["a cat", "a dog"], normalize_embeddings=True)
    assert v.shape == (2, 384)


def test_read_jsonl_names_file_and_line_for_bad_bytes(tmp_path):
    from kinject_utils.io import read_jsonl

    p = tmp_path / "kb.jsonl"
    p.write_bytes(b'{"doc_id": "a", "text": "ok"}\n{"doc_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"kb.jsonl, line 2: not valid UTF-8"):
        list(read_jsonl(p))


@pytest.mark.parametrize("case, make, must", [
    ("missing relative folder", lambda d: "./no/such/model", ["does not exist", "Fix"]),
    ("missing absolute folder", lambda d: str(d / "nowhere"), ["does not exist", "Fix"]),
    ("config only", lambda d: _folder(d, "config.json"), ["safetensors", "tokenizer", "save_pretrained"]),
    ("no config", lambda d: _folder(d, "model.safetensors", "tokenizer.json"), ["config.json", "save_pretrained"]),
    ("a file", lambda d: _folder(d, "config.json") + "/config.json", ["not a model folder", "Fix"]),
])
def test_bad_local_model_paths_name_the_problem_and_fix(tmp_path, monkeypatch, case, make, must):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = make(tmp_path)
    with pytest.raises(models.ModelUnavailableError) as err:
        models.resolve_model_dir(name)
    msg = str(err.value)
    for s in must:
        assert s in msg, (case, msg)
    assert "huggingface-cli download ./" not in msg  # a path is never offered as a hub id


def _folder(root: Path, *files: str) -> str:
    d = root / "m"
    d.mkdir(exist_ok=True)
    for f in files:
        (d / f).write_text("{}")
    return str(d)


def test_complete_local_folder_is_accepted(tmp_path):
    d = Path(_folder(tmp_path, "config.json", "model.safetensors", "tokenizer.json"))
    assert models.resolve_model_dir(str(d)) == str(d)


def test_models_module_does_not_need_fcntl():
    import ast

    tree = ast.parse(Path(models.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert "fcntl" not in names  # POSIX-only: the package must import on Windows


def test_orca2_loads_the_revision_that_has_safetensors(monkeypatch):
    """microsoft/Orca-2-7b's main holds only pickled .bin weights; use_safetensors needs refs/pr/13."""
    import transformers

    from kinject_utils import models

    seen = {}

    class Stop(Exception):
        pass

    def tok(path, **kw):
        seen["tokenizer"] = (path, kw.get("revision"))
        return object()

    def model(path, **kw):
        seen["model"] = (path, kw.get("revision"), kw.get("use_safetensors"))
        raise Stop

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tok)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    with pytest.raises(Stop):
        models.load_causal_lm("orca2-7b", device="cpu")
    assert seen == {"tokenizer": ("microsoft/Orca-2-7b", "refs/pr/13"),
                    "model": ("microsoft/Orca-2-7b", "refs/pr/13", True)}


def test_loaded_models_run_no_hub_kernels(tmp_path):
    """transformers >= 5.2x kernelizes every model by default with layers fetched from the hub's
    kernels-community repos (code from the hub; offline on a GPU the load fails, seen on an H200).
    Our loader turns that off: the numbers come from transformers' own layers, online or offline."""
    from finetune_tiny import make_tiny_llama

    from kinject_utils import models

    model, _ = models.load_causal_lm(str(make_tiny_llama(tmp_path / "tiny")), device="cpu")
    assert model.use_kernels is False
