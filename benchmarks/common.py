"""Shared set-up for the benchmarks: the offline MNIST split, a trained reference model, timing.

Benchmarks print ratios measured in the same run (absolute times on shared machines are noisy).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from trainables.config import TrialConfig
from trainables.data import DataConfig, load_splits

DATA_DIR = os.environ.get("STUDY_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared"
                                                / "data" / "mnist"))


def mnist():
    return load_splits(DataConfig("mnist-idx", DATA_DIR))


def reference_config(**train) -> TrialConfig:
    """The issue's CPU reference: widths 16/32/64 (depth 3), T = 100 scaled linear, batch 128."""
    return TrialConfig.from_dict({
        "data": {"dataset": "mnist-idx", "data_dir": DATA_DIR},
        "model": {"depth": 3, "width": 16},
        "train": {"batch_size": 128, "lr": 2e-3, **train},
    })


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()} · {os.cpu_count()} CPUs · {gpu} · torch {torch.__version__}"
