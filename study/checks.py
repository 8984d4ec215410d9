"""Checks of what a user hands the study, made before anything is written: names and paths,
numbers, search-space files, storage URLs, and on ``--resume`` the files of the study itself.

Each failure is a ``UsageError`` with one line naming the value and the fix (study/run.py prints
it, exit status 2). Files are opened only if they are regular and read only up to a bound, so a
FIFO, a device or a huge file cannot hang or exhaust the CLI.

    check_name("cpu-1")                 # a plain, short file name
    data = read_space_file(path)        # {axis: [values]}, every number finite
    check_storage_url(url, study_dir)   # its driver installed, its host reachable
    check_study_files(layout)           # study.json, results.csv, outcome.json, checkpoints
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import stat
from pathlib import Path

import yaml

from study.errors import UsageError
from study.layout import StudyLayout, is_plain
from study.search_space import AXES
from trainables.artefacts import is_whole_archive

#: A study name is one plain path component: letters, digits, '.', '_' and '-', not starting
#: with '.' or '-' (no hidden folders, no options), short enough for Ray's and Optuna's names.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Integer options and the values each may take (inclusive). Seeds leave headroom below 2^32
#: (numpy's and Optuna's limit) for the confirmation seeds seed + 1 + s.
LIMITS = {"--num-trials": (1, 10_000), "--epochs": (1, 10_000), "--seed": (0, 2**31 - 1),
          "--confirm-seeds": (0, 100), "--workers-per-trial": (1, 1024),
          "--trials-per-gpu": (1, 64), "--gpus": (0, 4096)}
SPACE_FILE_BYTES = 64 * 1024  # a search-space file is a few lines
STUDY_JSON_BYTES = 4 * 1024**2
RESULTS_BYTES = 256 * 1024**2
OUTCOME_BYTES = 64 * 1024**2
CONNECT_TIMEOUT_S = 5
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433,
                 "oracle": 1521}
#: Columns a results table must have for --resume, and the statuses a row may hold.
RESULT_KEYS = ("trial_id", "status")
STATUSES = ("ok", "failed")
NUMERIC = ("quality", "train_cost_s")  # Optuna is told these: they must be numbers


def check_name(name: str) -> None:
    if not NAME.fullmatch(name) or name in (".", ".."):
        raise UsageError(f"--name {name!r}: a study name must be a plain file name of 1-64 "
                         f"letters, digits, '.', '_' or '-' (not starting with '.' or '-'), "
                         f"e.g. --name cpu-1")


def check_count(option: str, value: int | None) -> None:
    """An integer option within LIMITS (None: not given)."""
    lo, hi = LIMITS[option]
    if value is not None and not lo <= value <= hi:
        raise UsageError(f"{option} {value}: must be between {lo} and {hi}")


def check_path(option: str, value) -> None:
    """A path option: no NUL byte (the OS refuses it), not absurdly long."""
    text = str(value)
    if "\x00" in text or len(text) > 4096:
        raise UsageError(f"{option} {text[:60]!r}: not a usable path (NUL byte or over 4096 "
                         f"characters); pass an ordinary path")


def check_regular(option: str, path) -> None:
    """A file option that, if it exists, is a regular file (a FIFO or device would block or
    never end when read)."""
    check_path(option, path)
    p = Path(path)
    if p.exists() and not p.is_file():
        raise UsageError(f"{option} {path}: not a regular file; pass a file")


def check_output_dir(path: Path) -> None:
    """The parent of study directories: a folder, or a path that can become one."""
    check_path("--output-dir", path)
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise UsageError(f"--output-dir {path}: {p} is not a folder; pass a folder "
                                 f"(it is created if missing)")
            return


def check_address(address: str | None) -> None:
    """A Ray address to attach to: auto/local, ray://host:port, host:port or a dashboard URL.
    A host:port that nothing answers at is refused here, before a study directory is made."""
    if address is None or address in ("auto", "local"):
        return
    if re.fullmatch(r"https?://[\w.\-\[\]:]+(/\S*)?", address):
        return  # the Jobs API: checked by study/jobs.py before anything is submitted
    m = re.fullmatch(r"(?:ray://)?([\w.\-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})", address)
    if not m or not 0 < int(m[2]) < 65536:
        raise UsageError(f"--address {address!r}: use host:port (a Ray cluster's GCS), "
                         f"ray://host:port, or http://host:8265 (its dashboard)")
    _reachable(m[1].strip("[]"), int(m[2]), f"--address {address}",
               "is the cluster up and the address right?")


def _reachable(host: str, port: int, what: str, fix: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise UsageError(f"{what}: cannot reach {host}:{port} ({e.strerror or e}); "
                         f"{fix}") from None


# ---- files -----------------------------------------------------------------------------------


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; UsageError otherwise (a FIFO is
    opened without blocking and refused before any read)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise UsageError(f"{what} {path}: cannot open it ({e.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UsageError(f"{what} {path}: not a regular file; pass a file")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > limit:
            raise UsageError(f"{what} {path}: {info.st_size} bytes, more than the "
                             f"{limit} this file may hold; pass the right file")
        data = f.read(limit + 1)
    if len(data) > limit:  # grew while being read
        raise UsageError(f"{what} {path}: more than {limit} bytes; pass the right file")
    return data


class _AliasError(ValueError):
    pass


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader without anchors and aliases: a few lines of aliases can expand to
    billions of nodes ("billion laughs"), and a search space never needs them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _AliasError("YAML aliases (*name) are not allowed here")
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise _AliasError("YAML anchors (&name) are not allowed here")
        return super().compose_node(parent, index)


def _yaml(text: str):
    """safe_load with _NoAliasLoader (a SafeLoader: plain data only, no aliases)."""
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_space_file(path: Path) -> dict:
    """A --space file (YAML or JSON) as {axis: [values]}, each value a finite number or a
    boolean; whether the axes and ranges make sense is SearchSpace's to say."""
    check_path("--space", path)
    path = Path(path)
    raw = read_bounded(path, SPACE_FILE_BYTES, "--space")
    try:
        text = raw.decode("utf-8")
        data = _yaml(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError, RecursionError) as e:
        why = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"--space {path}: cannot read it ({why[:200]}); write e.g. "
                         f"'depth: [2, 3]'") from None
    if not isinstance(data, dict):
        raise UsageError(f"--space {path}: must hold a mapping of axis: range, e.g. "
                         f"'depth: [2, 3]'")
    for key, values in data.items():
        if not isinstance(key, str):
            raise UsageError(f"--space {path}: axis {key!r} is not a name; use e.g. 'depth'")
        if not isinstance(values, list):
            continue  # SearchSpace says "must be a list" with an example
        for v in values:
            if isinstance(v, bool):
                continue
            if not isinstance(v, int | float):
                raise UsageError(f"--space {path}: {key} holds {_show(v)}, not a number; "
                                 f"write numbers, e.g. '{key}: [2, 3]'")
            if (isinstance(v, float) and not math.isfinite(v)) or abs(v) > 1e300:
                raise UsageError(f"--space {path}: {key} holds {_show(v)}; every value must "
                                 f"be a finite number")
            axis = AXES.get(key)
            if axis is not None and axis.to_config is int and isinstance(v, float):
                raise UsageError(f"--space {path}: {key} holds {_show(v)}; its choices are "
                                 f"whole numbers, e.g. '{key}: [2, 3]'")
    return data


def _show(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


# ---- storage ---------------------------------------------------------------------------------


def check_storage_url(url: str, study_dir: Path, connect: bool = True) -> None:
    """An Optuna storage URL that can work: SQLAlchemy parses it, and (`connect`: the study runs
    on this machine) its driver is installed, a SQLite file's folder exists (or is the study's
    own), and a server's host answers."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from study.redact import redact

    shown = redact(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise UsageError(f"--storage {shown!r} is not a SQLAlchemy URL (e.g. "
                         f"sqlite:///path/optuna.db or postgresql://user@host/db)") from None
    dialect = parsed.get_backend_name()
    if not connect:
        return
    if dialect == "sqlite":
        db = parsed.database
        if not db or db == ":memory:" or parsed.query.get("mode") == "memory":
            raise UsageError(f"--storage {shown}: an in-memory database would lose the study "
                             f"(and --resume); give a file, e.g. sqlite:///runs/optuna.db")
        check_path("--storage", db)
        folder = Path(db).resolve().parent
        inside = folder == study_dir or study_dir in folder.parents
        if not inside and not folder.is_dir():
            raise UsageError(f"--storage {shown}: folder {folder} does not exist; create it or "
                             f"point at an existing one")
    try:
        create_engine(parsed).dispose()  # imports the dialect and its DBAPI driver
    except NoSuchModuleError:
        raise UsageError(f"--storage {shown}: SQLAlchemy has no dialect {parsed.drivername!r}; "
                         f"use e.g. sqlite:///…, postgresql://… or mysql+pymysql://…") from None
    except ImportError as e:
        raise UsageError(f"--storage {shown}: its driver is not installed ({e}); install it "
                         f"here, e.g. pip install 'psycopg[binary]' for postgresql://") from None
    except (ArgumentError, ValueError, TypeError) as e:
        raise UsageError(f"--storage {shown}: {str(e).splitlines()[0][:200]}") from None
    if dialect != "sqlite":
        host = parsed.host or "localhost"
        port = parsed.port or DEFAULT_PORTS.get(dialect)
        if port:
            _reachable(host, port, f"--storage {shown}",
                       "is the database server up and the URL right?")


# ---- a study's own files, on --resume --------------------------------------------------------


def load_record(layout: StudyLayout):
    """study.json as a StudyRecord; a damaged one is a UsageError naming it."""
    from study.spec import StudyRecord

    raw = read_bounded(layout.spec, STUDY_JSON_BYTES, "--resume:")
    try:
        return StudyRecord.from_dict(json.loads(raw))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        raise UsageError(f"--resume: {layout.spec} is damaged ({_why(e)}); restore it from a "
                         f"copy (or --storage-path), or start a new --name") from None


def check_study_files(layout: StudyLayout) -> None:
    """Before a study is resumed: results.csv parses with the columns a resume reads, every
    trial's outcome.json parses and its checkpoint.pt is a whole archive. A damaged file is a
    UsageError naming it and the fix; nothing is changed."""
    import pandas as pd

    from study.layout import ID_DTYPES

    ids: list[str] = []
    if layout.results.exists():
        read_bounded(layout.results, RESULTS_BYTES, "--resume:")
        try:
            df = pd.read_csv(layout.results, dtype=ID_DTYPES)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
            _damaged_results(layout, _why(e))
        missing = [c for c in RESULT_KEYS if c not in df.columns]
        if missing:
            _damaged_results(layout, f"no column {', '.join(missing)}")
        bad = df[~df["status"].isin(STATUSES) | df["trial_id"].isna()]
        if len(bad):
            _damaged_results(layout, f"line {bad.index[0] + 2} has status "
                                     f"{_show(bad['status'].iloc[0])}; each row must be "
                                     f"{' or '.join(STATUSES)} with a trial_id")
        if df["trial_id"].duplicated().any():
            _damaged_results(layout, f"trial {df['trial_id'][df['trial_id'].duplicated()].iloc[0]}"
                                     f" has two rows")
        for col in NUMERIC:  # hand-edited cells: Optuna is told these for ok rows
            if col in df:
                cells = df[col].dropna()
                bad = cells[pd.to_numeric(cells, errors="coerce").isna()]
                if len(bad):
                    _damaged_results(layout, f"line {bad.index[0] + 2}: {col} is "
                                             f"{_show(bad.iloc[0])}, not a number")
        ids = list(df["trial_id"])
        for tid in ids:
            if not is_plain(tid):
                _damaged_results(layout, f"trial id {_show(tid)} is not a plain name")
    for tid in ids:
        trial = layout.trial(tid)
        if trial.outcome.exists():
            try:
                json.loads(read_bounded(trial.outcome, OUTCOME_BYTES, "--resume:"))
            except (ValueError, RecursionError) as e:
                _damaged_trial(trial.outcome, tid, _why(e))
        if trial.checkpoint.exists() and not is_whole_archive(trial.checkpoint):
            _damaged_trial(trial.checkpoint, tid, "not a complete checkpoint archive")


def _damaged_results(layout: StudyLayout, why: str):
    raise UsageError(f"--resume: {layout.results} is damaged ({why}); restore it from a copy "
                     f"(or --storage-path) before resuming")


def _damaged_trial(path: Path, trial_id: str, why: str):
    raise UsageError(f"--resume: {path} is damaged ({why}); restore it from a copy, or delete "
                     f"it to resume without it (trial {trial_id}'s row stays; its report "
                     f"pictures and post-study evaluation will be missing)")


def _why(e: BaseException) -> str:
    lines = [s for s in str(e).splitlines() if s.strip()]
    return (lines[0] if lines else type(e).__name__)[:160]


# ---- data ------------------------------------------------------------------------------------


def data_fingerprint(splits) -> str:
    """A digest of the training and validation digits (pixels and labels): what a resumed
    study must still train and judge on."""
    h = hashlib.sha256()
    for part in (splits.train, splits.val):
        for t in (part.images, part.labels):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
