"""Resumable training state: checkpoints (weights, optimizer, RNG, step), the train log, the result.

A checkpoint holds the trainable weights, the optimizer state, the RNG states and the step, written
to a temporary folder and renamed into place; a killed run started again ends with the same
adapter, bit for bit, as an uninterrupted one (same seed, same machine).
"""
from __future__ import annotations

import dataclasses
import os
import random
import shutil
from pathlib import Path
from typing import Any, Mapping

from ..io import read_json, read_jsonl, write_json
from .config import CKPT_DIR, TRAIN_LOG


@dataclasses.dataclass
class TrainResult:
    """What a finished run reports (also stored in ``manifest.json``)."""

    out_dir: str
    steps: int
    epochs: float
    tokens: int
    real_token_fraction: float
    wall_s: float
    tokens_per_s: float
    final_loss: float
    resumed_from_step: int
    skipped: bool
    manifest: dict[str, Any]


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "kinject"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: Mapping[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def trainable_params(model: Any) -> list[tuple[str, Any]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def latest_checkpoint(out: Path, key: str) -> Path | None:
    ck = out / CKPT_DIR
    if not ck.is_dir():
        return None
    done = []
    for d in ck.iterdir():
        if d.is_dir() and d.name.startswith("step-") and (d / "state.pt").exists():
            meta = d / "meta.json"
            if meta.exists() and read_json(meta).get("key") == key:
                done.append((int(d.name.split("-")[1]), d))
    return max(done)[1] if done else None


def save_checkpoint(out: Path, model: Any, optimizer: Any, step: int, state: dict[str, Any], key: str) -> None:
    """Write ``checkpoints/step-N`` atomically (temp folder, rename), then drop older ones."""
    import torch

    ck = out / CKPT_DIR
    ck.mkdir(parents=True, exist_ok=True)
    final = ck / f"step-{step:07d}"
    tmp = ck / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save({"params": {n: p.detach().cpu().clone() for n, p in trainable_params(model)},
                "optimizer": optimizer.state_dict(), "rng": _rng_state(), **state}, tmp / "state.pt")
    write_json(tmp / "meta.json", {"key": key, "step": step})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for d in ck.iterdir():
        if d != final and d.name.startswith(("step-", ".tmp-step-")):
            shutil.rmtree(d, ignore_errors=True)


def load_checkpoint(path: Path, model: Any, optimizer: Any) -> dict[str, Any]:
    import torch

    st = torch.load(path / "state.pt", map_location="cpu", weights_only=False)  # our own file
    params = dict(trainable_params(model))
    missing = set(params) - set(st["params"])
    if missing:
        raise RuntimeError(f"checkpoint {path} lacks {len(missing)} trainable tensors; "
                           f"delete {path.parent} to start over")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(st["params"][n].to(p.device))
    optimizer.load_state_dict(st["optimizer"])
    _set_rng_state(st["rng"])
    return st


def read_train_log(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of ``train_log.jsonl`` (step, epoch, loss, lr, tokens, wall_s) in an adapter folder."""
    p = Path(out_dir) / TRAIN_LOG
    return list(read_jsonl(p, tolerate_torn_tail=True)) if p.exists() else []


def result_from_manifest(out: Path, man: dict[str, Any], skipped: bool) -> TrainResult:
    return TrainResult(out_dir=str(out), steps=man["steps"], epochs=man["epochs"], tokens=man["tokens_trained"],
                       real_token_fraction=man["real_token_fraction"], wall_s=man["wall_s"],
                       tokens_per_s=man["tokens_per_s"], final_loss=man["final_loss"],
                       resumed_from_step=man.get("resumed_from_step", 0), skipped=skipped, manifest=man)
