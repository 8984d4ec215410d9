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


TINY_CLIP = {
    "embed_dim": 32,
    # 48 px: a non-integer upscale of 28 px, with 16-px patches (3×3 tokens)
    "vision_cfg": {"image_size": 48, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory):
    """(model-config JSON, weights file) of a tiny randomly initialised open_clip model, saved
    the way a user provides local weights (pretrained weights cannot be downloaded here)."""
    import json

    import open_clip

    root = tmp_path_factory.mktemp("clip")
    config = root / "tiny_clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny_clip")
    checkpoint = root / "tiny_clip.pt"
    torch.save(model.state_dict(), checkpoint)
    return config, checkpoint


@pytest.fixture(scope="session")
def analysis_smoke_study(tmp_path_factory) -> Path:
    """A real smoke study (2 tiny trials, no CLIP) made by the CLI, shared by the analysis tests;
    the end of the run also writes the post-study inputs and the report. Its stdout is saved
    as run.log beside the study directory."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = tmp_path_factory.mktemp("analysis_runs")
    env = {**os.environ, "STUDY_CACHE_DIR": str(tmp_path_factory.mktemp("analysis_cache")),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
           "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, str(root / "study" / "run.py"), "--preset", "smoke",
                        "--dataset", "digits", "--no-clip", "--name", "smoke",
                        "--output-dir", str(out)], env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (out / "run.log").write_text(p.stdout)  # beside the study, for tests of what it printed
    return out / "smoke"
