"""Bad input to `study/run.py`: each case is one line on stderr that names the bad value and the
fix, exit status 2, no traceback, nothing created, and no file of an existing study changed.

Most cases call `main()` in this process (no interpreter start-up each); two run the real
command line to check the process exit status and stderr end to end. Cluster-file cases live
in test_cluster.py, CLIP checkpoint-format cases in test_clip_score.py.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import write_idx

from study.run import build_spec, main, parse_args
from study.spec import StudyRecord

ROOT = Path(__file__).resolve().parent.parent
BASE = ["--preset", "smoke", "--dataset", "digits", "--no-clip"]


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).digest())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """An output folder holding an existing study `old` (its study.json as run.py writes it)."""
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))
    # main() sets this for local Ray; keep it from leaking into later tests' subprocesses.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    # Input that passes validation must fail this test, not start a study.
    fake_driver = types.ModuleType("study.driver")
    fake_driver.run_study = lambda *a, **k: pytest.fail("bad input reached the study driver")
    monkeypatch.setitem(sys.modules, "study.driver", fake_driver)
    out = tmp_path / "runs"
    spec = build_spec(parse_args([*BASE, "--name", "old", "--output-dir", str(out)]))
    old = out / "old"
    (old / "trials" / "t1").mkdir(parents=True)
    StudyRecord(spec).save(spec.layout)
    (old / "results.csv").write_text("trial_id,status\nt1,ok\n")
    (old / "trials" / "t1" / "checkpoint.pt").write_bytes(b"weights")
    return out


def _space(tmp: Path, text: str) -> list[str]:
    path = tmp / "space.yaml"
    path.write_text(text)
    return ["--space", str(path)]


def _data(tmp: Path, breakage: str) -> list[str]:
    d = tmp / "idx"
    d.mkdir()
    if breakage != "empty":
        images = np.random.default_rng(0).integers(0, 256, (200, 28, 28))
        write_idx(d / "t10k-images-idx3-ubyte.gz", images, 0x803)
        labels = np.repeat(np.arange(10), 15 if breakage == "counts" else 20)
        write_idx(d / "t10k-labels-idx1-ubyte.gz", labels, 0x801)
        if breakage == "magic":
            shutil.copy(d / "t10k-labels-idx1-ubyte.gz", d / "t10k-images-idx3-ubyte.gz")
        if breakage == "truncated":
            p = d / "t10k-images-idx3-ubyte.gz"
            p.write_bytes(p.read_bytes()[:500])
    return ["--dataset", "mnist-idx", "--data-dir", str(d)]


def _clip(tmp: Path, tiny_clip_files, what: str) -> list[str]:
    config, _ = tiny_clip_files
    if what == "checkpoint":
        bad = tmp / "clip.pt"
        bad.write_bytes(b"not a checkpoint")
        return ["--clip-model", str(config), "--clip-checkpoint", str(bad)]
    return ["--clip-model", "ViT-B-32", "--clip-pretrained", "no-such-tag"]


CASES = {  # name: (arguments, fragments the one-line error must contain)
    "unknown preset": (["--preset", "huge"], ["unknown preset 'huge'", "smoke, cpu, gpu"]),
    "depth out of range": (lambda t: _space(t, "depth: [2, 5]\n"), ["depth choices [2, 5]",
                                                                      "1..4"]),
    "width out of range": (lambda t: _space(t, "width: [4]\n"), ["width choices [4]", "8..256"]),
    "zero lr": (lambda t: _space(t, "lr: [0, 0.001]\n"), ["lr range [0, 0.001]", "positive"]),
    "negative lr": (lambda t: _space(t, "lr: [-0.1, 0.001]\n"), ["lr range [-0.1, 0.001]"]),
    "guidance inverted": (lambda t: _space(t, "guidance: [4, 1]\n"),
                          ["guidance range [4, 1]", "low <= high"]),
    "empty space": (lambda t: _space(t, "depth: []\n"), ["search space is empty"]),
    "axis not a list": (lambda t: _space(t, "depth: 3\n"), ["depth must be a list",
                                                            "depth: [2]"]),
    "unknown axis": (lambda t: _space(t, "heads: [4]\n"), ["unknown search axes ['heads']"]),
    "zero trials": (["--num-trials", "0"], ["--num-trials 0", "at least 1"]),
    "zero epochs": (["--epochs", "0"], ["--epochs 0", "at least 1"]),
    "data dir missing": (["--dataset", "mnist-idx", "--data-dir", "/nonexistent"],
                         ["/nonexistent", "does not exist", "--data-dir"]),
    "data dir empty": (lambda t: _data(t, "empty"), ["no MNIST IDX files"]),
    "truncated gzip": (lambda t: _data(t, "truncated"), ["cannot read", "images-idx3"]),
    "wrong magic": (lambda t: _data(t, "magic"), ["magic number 0x00000801"]),
    "counts disagree": (lambda t: _data(t, "counts"), ["200 images", "150 labels"]),
    "unknown CLIP model": (["--clip-model", "no-such-model"], ["no-such-model", "--no-clip"]),
    "unknown CLIP tag": ("clip-tag", ["unknown pretrained tag 'no-such-tag'"]),
    "unreadable CLIP checkpoint": ("clip-checkpoint", ["could not load CLIP", "clip.pt"]),
    "malformed storage URL": (["--storage", "not a url"], ["'not a url'", "SQLAlchemy URL"]),
    "malformed storage path": (["--storage-path", "ftp://host/runs"], ["s3:// or gs://"]),
    "zero workers": (["--workers-per-trial", "0"], ["--workers-per-trial", ">= 1"]),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input(name, runs, tmp_path, capsys, tiny_clip_files):
    args, fragments = CASES[name]
    if callable(args):
        args = args(tmp_path)
    elif isinstance(args, str):
        args = _clip(tmp_path, tiny_clip_files, args.split("-")[1])
    base = [a for a in BASE if a != "--no-clip" or not any("clip" in x for x in args)]
    before = snapshot(runs)
    code = main([*base, "--name", "new", "--output-dir", str(runs), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    assert all(f in err for f in fragments), err
    assert snapshot(runs) == before and not (runs / "new").exists()


def test_resume_with_different_config_changes_nothing(runs, capsys):
    before = snapshot(runs)
    code = main([*BASE, "--name", "old", "--output-dir", str(runs), "--resume", "--seed", "7"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert "was made with different seed" in err and "pick a new --name" in err
    assert snapshot(runs) == before


def test_new_study_over_an_existing_one_changes_nothing(runs, capsys):
    before = snapshot(runs)
    assert main([*BASE, "--name", "old", "--output-dir", str(runs)]) == 2
    assert "already holds a study: pass --resume" in capsys.readouterr().err
    assert snapshot(runs) == before


@pytest.mark.parametrize("args, match", [
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--resume", "--name", "never-made"], "holds no study"),
])
def test_command_line_exit_status_2(args, match, tmp_path):
    env = {**os.environ, "STUDY_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, str(ROOT / "study" / "run.py"), *BASE,
                        "--output-dir", str(tmp_path), *args], env=env, capture_output=True,
                       text=True, timeout=120)
    err = p.stderr.strip()
    assert p.returncode == 2 and err.count("\n") == 0 and match in err, p.stderr
    assert "Traceback" not in err and not any(tmp_path.glob("*/study.json"))


def test_one_gpu_machine_runs_the_smoke_presets_ddp_trials_on_one_worker(tmp_path, monkeypatch,
                                                                        capsys):
    """NCCL refuses two ranks on one GPU: on a 1-GPU machine the preset's 2 workers become 1
    (with a note), and asking for 2 explicitly is a usage error."""
    import torch

    from study.errors import UsageError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    args = [*BASE, "--output-dir", str(tmp_path)]
    spec = build_spec(parse_args([*args, "--name", "a"]))
    assert spec.workers_per_trial == 1 and spec.use_gpu
    assert "this machine has 1" in capsys.readouterr().err
    with pytest.raises(UsageError, match="--workers-per-trial 2: each DDP worker needs a GPU"):
        build_spec(parse_args([*args, "--name", "b", "--workers-per-trial", "2"]))
