"""Shared fixtures. Tests use small sizes; the offline MNIST split comes from $STUDY_DATA_DIR."""

import contextlib
import gzip
import os
import re
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.data import DataConfig, load_splits

ROOT = Path(__file__).resolve().parent.parent
STUDY_CLI = [sys.executable, str(ROOT / "study" / "run.py")]


def study_env(cache: Path) -> dict:
    """The environment of a `study/run.py` subprocess: a private cache, quiet Ray, live output."""
    return {**os.environ, "STUDY_CACHE_DIR": str(cache), "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "PYTHONUNBUFFERED": "1"}


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


def write_idx(path: Path, array: np.ndarray, magic: int, compress: bool = True) -> None:
    """An MNIST-format IDX file (gzipped unless `compress` is False)."""
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.fixture
def idx_dir(tmp_path) -> Path:
    """A small valid IDX folder (200 random images, 20 per digit) for tests to break."""
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (200, 28, 28)), 0x803)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.repeat(np.arange(10), 20), 0x801)
    return tmp_path


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
def judge_cache(tmp_path_factory) -> Path:
    """The STUDY_CACHE_DIR of the session's local study runs: the digit judge is trained once
    (~10 s) by the first and loaded by the others."""
    return tmp_path_factory.mktemp("judge_cache")


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory, tiny_clip_files, judge_cache) -> Path:
    """One real smoke study made by the CLI, shared by the study and analysis tests: 2 tiny
    trials plus one confirmation seed of the Pareto front, with CLIP on through a tiny random
    open_clip model from local files (the --clip-model/--clip-checkpoint path a user takes, and
    the headline metric's code path). The end of the run writes the post-study inputs and the
    report. Its stdout and stderr are saved as run.log and run.err beside the study directory."""
    out = tmp_path_factory.mktemp("runs")
    config, checkpoint = tiny_clip_files
    p = subprocess.run([*STUDY_CLI, "--preset", "smoke", "--dataset", "digits",
                        "--clip-model", str(config), "--clip-checkpoint", str(checkpoint),
                        "--confirm-seeds", "1", "--name", "smoke", "--output-dir", str(out)],
                       env=study_env(judge_cache),
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (out / "run.log").write_text(p.stdout)  # beside the study, for tests of what it printed
    (out / "run.err").write_text(p.stderr)
    return out / "smoke"


def session_id(pid: int) -> int | None:
    """The session a process belongs to (None once it is gone)."""
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None


class Live:
    """A command in a session of its own, its output read line by line as it is printed: tests
    act on what a run prints (no sleeps, no timing guesses)."""

    def __init__(self, cmd: list[str], env: dict, timeout_s: float):
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._watchdog = threading.Timer(timeout_s, self.kill_all)  # a hang fails, not blocks
        self._watchdog.start()

    def until(self, pattern: str) -> re.Match:
        """Read output until a line matches `pattern`; the match."""
        for line in self.proc.stdout:
            self.lines.append(line)
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"the run ended before printing /{pattern}/:\n" + self.log())

    def finish(self) -> int:
        """Read to the end; the exit status. Whatever the run started is killed."""
        self.lines.extend(self.proc.stdout)
        code = self.proc.wait()
        self._watchdog.cancel()
        self.kill_all()
        return code

    def kill_all(self) -> None:
        """SIGKILL the command and every process of its session (e.g. a local Ray's)."""
        import psutil

        procs = [p for p in psutil.process_iter() if session_id(p.pid) == self.proc.pid]
        for p in procs:
            # a process may exit between the listing and its kill (CI saw one of the orphaned
            # Ray processes do so): already gone is what the kill wanted
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(procs, timeout=30)
        self._watchdog.cancel()

    def log(self) -> str:
        return "".join(self.lines)[-6000:]


@pytest.fixture
def live():
    """`live(cmd, env, timeout_s)` starts a Live run; all of them are killed at teardown."""
    started: list[Live] = []

    def start(cmd: list[str], env: dict, timeout_s: float = 600) -> Live:
        started.append(Live(cmd, env, timeout_s))
        return started[-1]

    yield start
    for run in started:
        run.kill_all()


@pytest.fixture(scope="session")
def trained_model(mnist_dir, tmp_path_factory) -> Path:
    """The checkpoint directory of a small conditional U-Net trained by `fit` on the offline
    MNIST: depth 3 × width 16, batch 64, 3 epochs (420 steps, about a minute on 2 cores).
    Batches of 64 draw legible digits in fewer images than the default 128 (the same model with
    3 epochs of 128 at lr 2e-3 did not); its coverage vs guidance weight peaks inside the range
    with margins of ~0.1 either side (benchmarks/RESULTS.md "Quality objective"), so tests of
    sample quality run on a real model. Load it with `load_checkpoint(path)`."""
    from trainables.config import TrainConfig, TrialConfig
    from trainables.train_loop import LocalSession, fit
    from trainables.unet import UNetConfig

    out = tmp_path_factory.mktemp("trained_model")
    cfg = TrialConfig(data=DataConfig("mnist-idx", str(mnist_dir)),
                      model=UNetConfig(depth=3, width=16),
                      train=TrainConfig(batch_size=64, epochs=3, early_stop_patience=None,
                                        seed=0))
    fit(cfg, LocalSession(out, verbose=False))
    return out
