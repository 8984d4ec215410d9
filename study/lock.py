"""One driver per study: a lock on the study directory, and a claim on the Optuna study.

The lock is a kernel lock (``flock``) on ``<study dir>/.lock``, held from the first check of
the study until its driver exits. The kernel releases it when the process ends, however it
ends, so a lock left by a dead driver is free again and the next driver takes it over (the file
still names the dead holder, and the takeover says so). While it is held, the file names its
holder: a second driver is refused at once with "held by pid N on host H since T".

The Optuna study is claimed for the study directory: its user attributes record the directory
and a per-study token (study.json's ``study_token``), so another study directory that uses the
same ``--storage`` and ``--name`` (on this machine or another) is refused, while the study
itself, resumed, shows its token and is let in.

    lock = StudyLock(layout)
    lock.acquire()          # UsageError if another driver holds it
    check_claim(spec, token)
    ...
    lock.release()
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
import warnings
from pathlib import Path

from study.errors import UsageError
from study.layout import StudyLayout

LOCK_FILE = ".lock"
#: Optuna user attributes of a claimed study.
DIR_ATTR, TOKEN_ATTR = "study_dir", "study_token"
DIRECTIONS = ["maximize", "minimize"]  # quality up, training seconds down (study/search.py)
METRIC_NAMES = ["quality", "train_cost_s"]  # study.rows.QUALITY, COST


class StudyLock:
    """The kernel lock on one study directory."""

    def __init__(self, layout: StudyLayout):
        self.root = layout.root
        self.path = layout.root / LOCK_FILE
        self.created: Path | None = None  # the top folder this driver made for the study
        self.started = False  # the study began: its directory is never removed after this
        self._fd: int | None = None

    def acquire(self) -> None:
        missing = [p for p in (self.root, *self.root.parents) if not p.exists()]
        self.created = missing[-1] if missing else None
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UsageError(f"{self.root} is in use by another driver ({holder}): wait for it "
                             f"to finish or stop it; a study runs one driver at a time") from None
        previous = _holder(fd, live=False)
        if previous:
            print(f"note: taking over {self.path}: the driver that held it ({previous}) is no "
                  f"longer running", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock; a directory this driver made for a study that never began is removed, so a
        refused or interrupted start leaves nothing half-made."""
        if self._fd is None:
            return
        if self.created is not None and not self.started:
            shutil.rmtree(self.created, ignore_errors=True)
        else:
            os.ftruncate(self._fd, 0)  # released cleanly: no holder to report
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int, live: bool = True) -> str:
    """Who the lock file says holds (or held) the lock, in words ('' when nobody)."""
    try:
        d = json.loads(os.pread(fd, 4096, 0) or b"null")
        return f"held by pid {d['pid']} on host {d['host']} since {d['since']}" if live else \
            f"pid {d['pid']} on host {d['host']}, since {d['since']}"
    except (ValueError, TypeError, KeyError):
        return "held by a process that has not said who it is yet" if live else ""


# ---- the Optuna study ------------------------------------------------------------------------


def _load(url: str, name: str):
    """The Optuna study `name` at `url`, or None (a SQLite file that does not exist yet holds
    no study, and is not created here)."""
    import optuna
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database).is_file():
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return None


def check_claim(spec, token: str, resume: bool) -> None:
    """Refuse a study directory whose Optuna study (same storage and name) belongs to another
    study directory; a new study must not find one at all."""
    from study.redact import redact

    found = _load(spec.storage, spec.name)
    if found is None:
        return
    attrs = found.user_attrs
    if attrs.get(TOKEN_ATTR) == token:
        return
    if resume and TOKEN_ATTR not in attrs:
        return  # made before studies were claimed: this driver claims it
    owner = attrs.get(DIR_ATTR) or "another study"
    raise UsageError(f"--storage {redact(spec.storage)} already holds Optuna study "
                     f"{spec.name!r}, made by {owner}: two study directories cannot share it; "
                     f"choose another --name (or resume that study from {owner})")


def claim(spec, token: str, resume: bool) -> None:
    """Create (or label) the Optuna study for this study directory: later drivers of another
    directory are refused by check_claim. Of two new studies racing for one name, the second
    finds the first's study and is refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(study_name=spec.name, storage=spec.storage,
                                    directions=DIRECTIONS)
    except optuna.exceptions.DuplicatedStudyError:
        check_claim(spec, token, resume)
        study = optuna.load_study(study_name=spec.name, storage=spec.storage)
    study.set_user_attr(TOKEN_ATTR, token)
    study.set_user_attr(DIR_ATTR, str(spec.study_dir))
    # optuna-dashboard and Optuna's plots label the objectives with these, not "Objective 0".
    # Experimental since Optuna 3.2 and stable in use: its warning would be console noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(METRIC_NAMES)
