"""Bad input to `study/run.py`: each case is one line on stderr that names the bad value and the
fix, exit status 2, no traceback, nothing created, and no file of an existing study changed.

Most cases call `main()` in this process (no interpreter start-up each); two run the real
command line to check the process exit status and stderr end to end. The cases cover the
command line's values, names and paths, search-space files, storage URLs and addresses, data
folders (each damaged IDX file goes through `main()` here; trainables' reader has its own
property test in test_data.py), CLIP, and on `--resume` a study whose files were damaged or
whose data changed. Cluster-file cases live in test_cluster.py, CLIP checkpoint-format cases in
test_clip_score.py, the property-based fuzzing of the same inputs in test_fuzz_inputs.py.
"""

import gzip
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import dialects  # noqa: F401  (registers netdb://, a server dialect whose driver "is installed")
import numpy as np
import pytest
from conftest import write_idx

from study.lock import LOCK_FILE
from study.run import build_spec, main, parse_args
from study.spec import StudyRecord

ROOT = Path(__file__).resolve().parent.parent
BASE = ["--preset", "smoke", "--dataset", "digits", "--no-clip"]


def snapshot(root: Path) -> dict:
    """Every file under root, with its mtime and digest; the driver's lock file (study/lock.py)
    is not the study's content: a refused driver may take and release it."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).digest())
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    (old / "results.csv").write_text("trial_id,status,quality,train_cost_s\nt1,ok,0.5,12.0\n")
    with zipfile.ZipFile(old / "trials" / "t1" / "checkpoint.pt", "w") as z:  # torch.save's format
        z.writestr("checkpoint/data.pkl", b"weights" * 100)
    (old / "trials" / "t1" / "outcome.json").write_text('{"history": [{"epoch": 1}]}')
    return out


def _space(tmp: Path, text: str) -> list[str]:
    path = tmp / "space.yaml"
    path.write_text(text)
    return ["--space", str(path)]


IMAGES, LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def _header(count: int, dims=(28, 28), magic: int = 0x803) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{1 + len(dims)}I", count, *dims)


def _data(tmp: Path, breakage: str) -> list[str]:
    """An IDX folder of 200 images (20 per digit) broken as `breakage` says."""
    d = tmp / "idx"
    d.mkdir()
    images, labels = d / f"{IMAGES}.gz", d / f"{LABELS}.gz"
    if breakage != "empty":
        write_idx(images, np.random.default_rng(0).integers(0, 256, (200, 28, 28)), 0x803)
        write_idx(labels, np.repeat(np.arange(10), 15 if breakage == "counts" else 20), 0x801)
    if breakage == "magic":
        shutil.copy(labels, images)
    elif breakage == "truncated":
        images.write_bytes(images.read_bytes()[:500])
    elif breakage == "not gzip":
        images.write_bytes(b"plain text, not gzip")
    elif breakage == "no labels":
        labels.unlink()
    elif breakage == "label 10":
        write_idx(labels, np.arange(200) % 11, 0x801)
    elif breakage == "bomb":  # 10 images promised, 16 MB inflated (a few kB on disk)
        images.write_bytes(gzip.compress(_header(10) + bytes(16 << 20), compresslevel=9))
    elif breakage == "2^31 images":
        images.write_bytes(gzip.compress(_header(2**31) + bytes(784 * 3)))
    elif breakage == "shape":
        images.write_bytes(gzip.compress(_header(200, dims=(28, 29)) + bytes(200 * 28 * 29)))
    elif breakage == "huge raw":  # a sparse 8 GB file: refused by its size, never read
        images.unlink()
        with open(d / IMAGES, "wb") as f:
            f.write(_header(200))
            f.truncate(8 << 30)
    elif breakage in ("fifo", "device"):
        images.unlink()
        os.mkfifo(d / IMAGES) if breakage == "fifo" else os.symlink("/dev/zero", d / IMAGES)
    elif breakage == "too few":
        write_idx(images, np.zeros((3, 28, 28)), 0x803)
        write_idx(labels, np.arange(3), 0x801)
    return ["--dataset", "mnist-idx", "--data-dir", str(d)]


def _file(tmp: Path, kind: str) -> Path:
    """A path of `kind`: a FIFO, a link to /dev/zero, a folder, a file, or a file's child."""
    p = tmp / f"thing-{kind}"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "device":
        os.symlink("/dev/zero", p)
    elif kind == "folder":
        p.mkdir()
    elif kind == "file":
        p.write_text("x")
    elif kind == "under a file":
        (tmp / "plain-file").write_text("x")
        p = tmp / "plain-file" / "sub"
    return p


def _space_file(tmp: Path, kind: str) -> list[str]:
    return ["--space", str(_file(tmp, kind))]


def _space_bytes(tmp: Path, data: bytes) -> list[str]:
    path = tmp / "space.yaml"
    path.write_bytes(data)
    return ["--space", str(path)]


def _space_json(tmp: Path, text: str) -> list[str]:
    path = tmp / "space.json"
    path.write_text(text)
    return ["--space", str(path)]


BILLION_LAUGHS = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi",
                                                                strict=True)) + "depth: *i\n"


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
    "lr inverted": (lambda t: _space(t, "lr: [0.004, 0.001]\n"),
                    ["lr range [0.004, 0.001]", "low <= high"]),
    "guidance is no longer an axis": (lambda t: _space(t, "guidance: [1, 4]\n"),
                                      ["guidance is not searched per trial", "remove"]),
    "empty space": (lambda t: _space(t, "depth: []\n"), ["search space is empty"]),
    "axis not a list": (lambda t: _space(t, "depth: 3\n"), ["depth must be a list",
                                                            "depth: [2]"]),
    "unknown axis": (lambda t: _space(t, "heads: [4]\n"), ["unknown search axes ['heads']"]),
    "zero trials": (["--num-trials", "0"], ["--num-trials 0", "between 1 and"]),
    "zero epochs": (["--epochs", "0"], ["--epochs 0", "between 1 and"]),
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
    "zero workers": (["--workers-per-trial", "0"], ["--workers-per-trial 0", "between 1"]),
    # ---- values on the command line
    "negative seed": (["--seed", "-1"], ["--seed -1", "between 0 and 2147483647"]),
    "seed past 2^32": (["--seed", "4294967296"], ["--seed 4294967296", "between 0"]),
    "seed not a number": (["--seed", "abc"], ["--seed", "invalid int value: 'abc'", "--help"]),
    "too many workers": (["--workers-per-trial", "100000"], ["--workers-per-trial 100000",
                                                             "between 1 and 1024"]),
    "zero trials per GPU": (["--trials-per-gpu", "0"], ["--trials-per-gpu 0", "between 1"]),
    "too many confirm seeds": (["--confirm-seeds", "1000"], ["--confirm-seeds 1000"]),
    "negative confirm seeds": (["--confirm-seeds", "-1"], ["--confirm-seeds -1"]),
    "negative GPUs": (["--gpus", "-1"], ["--gpus -1", "between 0"]),
    "too many trials": (["--num-trials", "100000"], ["--num-trials 100000", "10000"]),
    "unknown option": (["--frobnicate", "3"], ["unrecognized arguments: --frobnicate 3"]),
    "unknown dataset": (["--dataset", "cifar"], ["--dataset", "invalid choice: 'cifar'"]),
    # ---- names and paths
    "name escapes the output dir": (["--name", "../escape"], ["--name '../escape'",
                                                                "plain file name"]),
    "absolute name": (["--name", "/tmp/elsewhere"], ["--name '/tmp/elsewhere'"]),
    "hidden name": (["--name", ".hidden"], ["--name '.hidden'", "not starting with '.'"]),
    "option-like name": (["--name=-rf"], ["--name '-rf'"]),
    "empty name": (["--name="], ["--name ''"]),
    "name with a space": (["--name", "my study"], ["--name 'my study'"]),
    "name too long": (["--name", "n" * 65], ["1-64 letters"]),
    "name with NUL": (["--name", "a\x00b"], ["--name 'a\\x00b'"]),
    "output dir is a file": (lambda t: ["--output-dir", str(_file(t, "file"))],
                             ["--output-dir", "is not a folder"]),
    "output dir under a file": (lambda t: ["--output-dir", str(_file(t, "under a file"))],
                                ["plain-file is not a folder"]),
    "data dir with NUL": (["--data-dir", "/tmp/a\x00b"], ["--data-dir", "NUL byte"]),
    # ---- search-space files
    "space file missing": (["--space", "/nonexistent/space.yaml"], ["--space", "cannot open"]),
    "space file is a FIFO": (lambda t: _space_file(t, "fifo"), ["not a regular file"]),
    "space file is /dev/zero": (lambda t: _space_file(t, "device"), ["not a regular file"]),
    "space file is a folder": (lambda t: _space_file(t, "folder"), ["not a regular file"]),
    "space file too big": (lambda t: _space(t, "# padding\n" * 10_000 + "depth: [2]\n"),
                           ["more than the 65536"]),
    "YAML billion laughs": (lambda t: _space(t, BILLION_LAUGHS), ["anchors", "not allowed"]),
    "YAML alias": (lambda t: _space(t, "depth: [2]\nwidth: *x\n"), ["cannot read it"]),
    "YAML NaN": (lambda t: _space(t, "lr: [.nan, 0.001]\n"), ["lr holds nan",
                                                             "finite number"]),
    "YAML infinity": (lambda t: _space(t, "lr: [0.001, .inf]\n"), ["lr holds inf"]),
    "JSON NaN": (lambda t: _space_json(t, '{"lr": [NaN, 0.001]}'), ["lr holds nan"]),
    "JSON Infinity": (lambda t: _space_json(t, '{"lr": [0.001, Infinity]}'),
                      ["lr holds inf"]),
    "JSON 1e999": (lambda t: _space_json(t, '{"lr": [1e-4, 1e999]}'), ["lr holds inf"]),
    "string in a range": (lambda t: _space(t, "depth: [two]\n"), ["depth holds 'two'",
                                                                   "not a number"]),
    "nested list": (lambda t: _space(t, "depth: [[2]]\n"), ["depth holds [2]"]),
    "mapping in a range": (lambda t: _space(t, "width: [{a: 1}]\n"), ["width holds {'a': 1}"]),
    "fractional depth": (lambda t: _space(t, "depth: [2.5]\n"), ["depth holds 2.5",
                                                                  "whole numbers"]),
    "boolean depth": (lambda t: _space(t, "depth: [true]\n"), ["depth choices [True]"]),
    "huge width": (lambda t: _space(t, "width: [100000000000000000000000]\n"),
                   ["width choices", "8..256"]),
    "style not boolean": (lambda t: _space(t, "style: [1]\n"), ["style choices [1]"]),
    "lr not a range": (lambda t: _space(t, "lr: [0.001]\n"), ["lr range [0.001]",
                                                               "[low, high]"]),
    "space not a mapping": (lambda t: _space(t, "- 1\n- 2\n"), ["must hold a mapping"]),
    "space not YAML": (lambda t: _space(t, "depth: [2, 3\n"), ["cannot read it"]),
    "space not UTF-8": (lambda t: _space_bytes(t, b"depth: [2]\n# \xff\xfe\n"),
                        ["cannot read it"]),
    "JSON nested 30000 deep": (lambda t: _space_json(t, "[" * 30_000 + "]" * 30_000),
                               ["cannot read it"]),
    "numeric axis name": (lambda t: _space(t, "1: [2]\n"), ["axis 1 is not a name"]),
    # ---- storage and addresses
    "in-memory storage": (["--storage", "sqlite://"], ["--storage sqlite://", "in-memory"]),
    "storage folder missing": (["--storage", "sqlite:////nonexistent/dir/optuna.db"],
                               ["/nonexistent/dir does not exist"]),
    "unknown storage dialect": (["--storage", "nosuchdb://h/db"], ["no dialect 'nosuchdb'"]),
    "storage driver missing": (["--storage", "postgresql://me:hunter2@127.0.0.1/db"],
                               ["postgresql://me:***@127.0.0.1/db", "driver is not installed"]),
    "storage host unreachable": (lambda t: ["--storage", f"netdb://me:hunter2@127.0.0.1:"
                                                         f"{free_port()}/db"],
                                 ["netdb://me:***@127.0.0.1", "cannot reach", "refused"]),
    "malformed address": (["--address", "not an address"], ["--address 'not an address'",
                                                             "host:port"]),
    "unreachable address": (lambda t: ["--address", f"127.0.0.1:{free_port()}"],
                            ["cannot reach 127.0.0.1", "is the cluster up"]),
    # ---- data, through the CLI (trainables/data.py bounds every read)
    "gzip bomb": (lambda t: _data(t, "bomb"), ["longer than its header"]),
    "header claims 2^31 images": (lambda t: _data(t, "2^31 images"), ["2147483648",
                                                                      "1 to 1000000"]),
    "huge raw images file": (lambda t: _data(t, "huge raw"), ["the file holds"]),
    "images not 28x28": (lambda t: _data(t, "shape"), ["shape (28, 29)", "28×28"]),
    "images file is a FIFO": (lambda t: _data(t, "fifo"), ["is a FIFO, not a regular file"]),
    "images file is /dev/zero": (lambda t: _data(t, "device"), ["is a device"]),
    "images not gzip": (lambda t: _data(t, "not gzip"), ["cannot read"]),
    "labels missing": (lambda t: _data(t, "no labels"), ["no matching t10k-labels"]),
    "label 10": (lambda t: _data(t, "label 10"), ["holds label 10", "digits 0-9"]),
    "too few images to split": (lambda t: _data(t, "too few"), ["too few to split"]),
    "CLIP checkpoint is a FIFO": (lambda t: ["--clip-checkpoint", str(_file(t, "fifo"))],
                                  ["--clip-checkpoint", "not a regular file"]),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input(name, runs, tmp_path, capsys, tiny_clip_files):
    args, fragments = CASES[name]
    if callable(args):
        args = args(tmp_path)
    elif isinstance(args, str):
        args = _clip(tmp_path, tiny_clip_files, args.split("-")[1])
    base = [a for a in BASE if a != "--no-clip" or not any("clip-model" in x or "clip-pre" in x
                                                           for x in args)]
    before = snapshot(runs)
    code = main([*base, "--name", "new", "--output-dir", str(runs), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    assert all(f in err for f in fragments), err
    assert "hunter2" not in err  # a storage URL's password is never printed
    assert snapshot(runs) == before and not (runs / "new").exists()
    assert sorted(p.name for p in runs.iterdir()) == ["old"]  # nothing else made either


def test_there_are_at_least_50_bad_input_cases():
    assert len(CASES) + len(DAMAGED) >= 50


def _damage(old: Path, what: str) -> None:
    """Break one file of the existing study `old` as a hand edit or a crash would."""
    results = old / "results.csv"
    if what == "results.csv truncated mid-row":
        results.write_text(results.read_text()[:-11])  # "t1,o"
    elif what == "results.csv binary":
        results.write_bytes(b"\xff\xfe\x00garbage\x00" * 50)
    elif what == "results.csv without status":
        results.write_text("trial_id,quality\nt1,0.5\n")
    elif what == "results.csv quality not a number":
        results.write_text("trial_id,status,quality,train_cost_s\nt1,ok,high,12\n")
    elif what == "results.csv hostile trial id":
        results.write_text("trial_id,status,quality,train_cost_s\n../../etc,ok,0.5,12\n")
    elif what == "results.csv duplicate trial":
        results.write_text(results.read_text() + "t1,failed,,\n")
    elif what == "outcome.json truncated":
        (old / "trials" / "t1" / "outcome.json").write_text('{"history": [{"epo')
    elif what == "checkpoint truncated":
        ckpt = old / "trials" / "t1" / "checkpoint.pt"
        ckpt.write_bytes(ckpt.read_bytes()[:-40])
    elif what == "study.json truncated":
        spec = old / "study.json"
        spec.write_text(spec.read_text()[:200])
    elif what == "data changed since":
        record = json.loads((old / "study.json").read_text())
        record["data_fingerprint"] = "0123456789abcdef"
        (old / "study.json").write_text(json.dumps(record))


DAMAGED = {  # what is damaged: fragments of the one-line error
    "results.csv truncated mid-row": ["results.csv is damaged", "line 2", "restore it"],
    "results.csv binary": ["results.csv is damaged"],
    "results.csv without status": ["results.csv is damaged", "no column status"],
    "results.csv quality not a number": ["line 2: quality is 'high', not a number"],
    "results.csv hostile trial id": ["trial id '../../etc' is not a plain name"],
    "results.csv duplicate trial": ["trial t1 has two rows"],
    "outcome.json truncated": ["t1/outcome.json is damaged", "delete it to resume"],
    "checkpoint truncated": ["t1/checkpoint.pt is damaged", "not a complete checkpoint"],
    "study.json truncated": ["study.json is damaged", "restore it"],
    "data changed since": ["the data in", "changed since the study was made",
                           "fingerprint 0123456789abcdef"],
}


@pytest.mark.parametrize("what", DAMAGED)
def test_resume_of_a_damaged_study_is_refused_and_changes_nothing(what, runs, capsys):
    _damage(runs / "old", what)
    before = snapshot(runs)
    code = main([*BASE, "--name", "old", "--output-dir", str(runs), "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --resume") and "\n" not in err, err
    assert all(f in err for f in DAMAGED[what]), err
    assert snapshot(runs) == before


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


def test_report_of_a_damaged_study_renders_what_it_can_and_says_what_it_skipped(tmp_path):
    """A hand-edited or truncated study directory: the report is still built, from what can be
    read, and its notes name each file it skipped."""
    from fake_study import fake_study

    from analysis.report import build_report
    from analysis.report import main as report_main

    study = fake_study(tmp_path / "s", clip=False)
    results = study / "results.csv"
    lines = results.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[2].split(",")
    row[header.index("quality")] = "very good"  # a hand edit
    results.write_text("\n".join([*lines[:2], ",".join(row), *lines[3:],
                                  "x,y,z," + ",".join(["1"] * (len(header) + 3))]) + "\n")
    (study / "trials" / "good" / "outcome.json").write_text('{"history": [{"epoch": 1, "tr')
    samples = study / "trials" / "early" / "samples.npz"
    samples.write_bytes(samples.read_bytes()[:300])
    (study / "trials" / "early" / "per_digit.csv").write_bytes(b"\xff\xfe\x00" * 10)
    (study / "reference.json").write_text("{not json")
    index = build_report(study)
    text = index.read_text()
    for note in ("results.csv is damaged (", "1 malformed line(s) skipped",
                 "1 cell(s) of quality are not numbers; shown empty",
                 "good/outcome.json is damaged", "early/samples.npz is damaged",
                 "s/reference.json is damaged"):
        assert note in text, note
    assert "Training curves" in text and "This section could not be drawn" not in text
    assert report_main([str(study)]) == 0
