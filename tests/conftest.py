"""Shared test settings: offline hub, one model cache for the whole run, shared-data paths."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
MMLU_DIR = SHARED_DATA / "mmlu"
FK_DIR = SHARED_DATA / "fictional_knowledge"


def need(path: Path) -> Path:
    """Skip the calling test, naming the path, when shared data is missing."""
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (tests read it from ../shared/data)")
    return path
