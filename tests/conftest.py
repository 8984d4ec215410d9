"""Shared fixtures. Tests use small sizes; the offline MNIST split comes from $STUDY_DATA_DIR."""

import os
from pathlib import Path

import pytest
import torch

from trainables.data import DataConfig, load_splits


@pytest.fixture(scope="session")
def digits_splits():
    """scikit-learn's digits (always available), the tests' default real data."""
    return load_splits(DataConfig(dataset="digits"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The offline MNIST IDX folder; CI always sets it, elsewhere tests needing it are skipped."""
    d = os.environ.get("STUDY_DATA_DIR")
    if not d:
        pytest.skip("STUDY_DATA_DIR is not set (offline MNIST IDX files)")
    return Path(d)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
