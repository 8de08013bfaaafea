"""Load a fine-tuned model for scoring or measuring: the base plus the adapter, on the run's device.

A QLoRA adapter is scored on the 4-bit base it was trained on (``quantization=None`` means "as
trained"); ``merge=True`` folds the LoRA weights into a base in ``dtype`` instead, on purpose.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..io import read_json
from .config import MANIFEST


def load_finetuned(model_name: str, adapter_dir: str | os.PathLike, *, device: str = "auto", dtype: str = "auto",
                   quantization: str | None = None, merge: bool = False) -> tuple[Any, Any]:
    """Load ``model_name`` with the adapter in ``adapter_dir``, in eval mode.

    Args:
        model_name: the base model (as trained; checked against the manifest).
        adapter_dir: a folder written by :func:`kinject_utils.finetune.train_adapter`.
        device, dtype: the run's ``DEVICE`` / ``DTYPE`` (``"auto"`` resolved by :mod:`kinject_utils.device`).
        quantization: ``None`` = as trained (``"nf4"`` for a QLoRA adapter unless ``merge``), or
            ``"nf4"`` / ``"none"`` to force one.
        merge: fold the LoRA weights into a ``dtype`` base (faster scoring; a QLoRA adapter is then
            no longer on the 4-bit base it was trained on).

    Returns:
        ``(model, tokenizer)``: a ``peft.PeftModel`` (or merged model) in eval mode.

    Raises:
        FileNotFoundError: ``adapter_dir`` holds no finished adapter (run notebook 03).
        ValueError: the adapter was trained on another base model.
    """
    from ..device import resolve_device, resolve_dtype
    from ..models import load_causal_lm

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / MANIFEST).exists():
        raise FileNotFoundError(f"{adapter_dir} holds no {MANIFEST}: it is not a finished adapter; "
                                "run notebook 03 (train_adapter) first")
    man = read_json(adapter_dir / MANIFEST)
    if man.get("base_model") != model_name:
        raise ValueError(f"{adapter_dir} was trained on {man.get('base_model')!r}, not {model_name!r}; "
                         "pass the base model named in its manifest.json")
    if quantization not in (None, "nf4", "none"):
        raise ValueError(f"quantization must be None (as trained), 'nf4' or 'none', got {quantization!r}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if man.get("method") == "full":
        return load_causal_lm(str(adapter_dir), dtype=dt, device=dev)
    if quantization is None:
        quantization = "nf4" if man.get("method") == "qlora" and not merge else "none"
    from peft import PeftModel

    base, tok = load_causal_lm(model_name, dtype=dt, quantization=None if quantization == "none" else quantization,
                               device=dev)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    if merge:
        model = model.merge_and_unload()
    model.eval()
    return model, tok
