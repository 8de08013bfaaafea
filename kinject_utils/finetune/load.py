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


class AdapterSwitch:
    """One loaded base per model, adapters swapped onto it (``load_adapter``/``set_adapter``/``delete_adapter``).

    Notebooks 03 (memorisation) and 05 (scoring) visit many adapters of one base; loading, and for
    QLoRA quantising, a 7B base again for each costs tens of seconds on a GPU, about 90 times in a
    paper-scale run. The weights are the same as a fresh :func:`load_finetuned`'s, so the scores are
    (a test compares). The base itself (``adapter_dir=None``) is the model with every adapter removed.

    Example:
        >>> switch = AdapterSwitch(device="cuda", dtype="bfloat16")              # doctest: +SKIP
        >>> model, tok = switch.load("mistral-7b", "results/03_adapters/.../ft-reg", quantization="nf4")
    """

    def __init__(self, device: str = "auto", dtype: str = "auto") -> None:
        from ..device import resolve

        self.device, self.dtype = resolve(device, dtype)
        self.key: tuple | None = None
        self.model: Any = None
        self.tok: Any = None
        self.active = ""
        self._n = 0

    def load(self, model_name: str, adapter_dir: str | os.PathLike | None = None, *,
             quantization: str | None = None) -> tuple[Any, Any]:
        """The base (``adapter_dir=None``) or the base with that adapter active, in eval mode.

        ``quantization``: ``"nf4"`` or ``None``, the base every adapter of this model is scored on
        (notebook 05 picks nf4 when the model's adapters are QLoRA). A full fine-tune is a model of its
        own and is loaded whole.
        """
        from ..models import load_causal_lm

        man = read_json(Path(adapter_dir) / MANIFEST) if adapter_dir is not None else {}
        if adapter_dir is not None and not man:
            raise FileNotFoundError(f"{adapter_dir} holds no {MANIFEST}: it is not a finished adapter")
        if man.get("method") == "full":
            self.close()
            return load_finetuned(model_name, adapter_dir, device=self.device, dtype=self.dtype)
        if man and man.get("base_model") != model_name:
            raise ValueError(f"{adapter_dir} was trained on {man.get('base_model')!r}, not {model_name!r}")
        key = (model_name, quantization)
        if key != self.key:
            self.close()
            self.model, self.tok = load_causal_lm(model_name, dtype=self.dtype, quantization=quantization,
                                                  device=self.device)
            self.key = key
        if adapter_dir is None:
            if self.active:  # back to the plain base: every LoRA layer removed
                self.model, self.active = self.model.unload(), ""
            self.model.eval()
            return self.model, self.tok
        from peft import PeftModel

        self._n += 1
        name = f"adapter{self._n}"
        if not self.active:
            self.model = PeftModel.from_pretrained(self.model, str(adapter_dir), adapter_name=name)
        else:
            self.model.load_adapter(str(adapter_dir), adapter_name=name)
            self.model.set_adapter(name)
            self.model.delete_adapter(self.active)
        self.active = name
        self.model.eval()
        return self.model, self.tok

    def close(self) -> None:
        """Drop the loaded model and give its memory back."""
        from .memory import release_memory

        if self.model is not None:
            self.model = self.tok = None
            self.key, self.active = None, ""
            release_memory()
