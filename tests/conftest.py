"""Test settings: offline hub, one model cache for the whole run, the lab's data folder, test tiers.

Data: this lab keeps real MMLU CSVs and fictional-knowledge JSON in ``../shared/data``; the tests point
kinject's data resolver at it through ``KINJECT_DATA`` (set here and in ``.ci/run``, never as a default in
the package). Tests that need it skip, naming the path, where it is missing.

Tiers (markers, pyproject's addopts deselects the last two by default):
  (none)      fast unit tests             slow        runs a model or a notebook (the tiny config end to end)
  functional  the default config vs the committed results (pytest -m functional)
  gpu         needs CUDA (pytest -m gpu); skipped, with the reason, where torch sees no GPU
"""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KINJECT_DATA", str((ROOT / ".." / "shared" / "data").resolve()))
DATA = Path(os.environ["KINJECT_DATA"])
MMLU_DIR = DATA / "mmlu"
FK_DIR = DATA / "fictional_knowledge"


def need(path: Path) -> Path:
    """Skip the calling test, naming the path, when shared data is missing."""
    if not path.exists():
        pytest.skip(f"data not found at {path} (tests read it from KINJECT_DATA={DATA})")
    return path


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests skip themselves where torch sees no CUDA device (never fail for lack of one)."""
    gpu_items = [i for i in items if i.get_closest_marker("gpu")]
    if not gpu_items:
        return
    try:
        import torch

        has_cuda = bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch, no GPU
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False here)")
        for item in gpu_items:
            item.add_marker(skip)
