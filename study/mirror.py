"""The object-store copy of a study directory, kept current while the study runs.

With ``--storage-path s3://…`` (or gs://…) Tune and Train write the study's ``ray/`` folder
there themselves; the rest of the study directory is written on the driver's node and copied
here as it changes: a finished trial's folder, results.csv and study.json as soon as its row is
written (study/finalize.py), the SQLite Optuna database as soon as Optuna is told the trial's
values (study/search.py). So a driver stopped by ``ray job stop``, killed for memory or lost
with its head node loses only the trials that were running, and ``--resume`` pulls the copy
back (study/run.py). With a path every node mounts (``--shared-fs``) the study directory lives
on the mount already and nothing is copied.

    mirror = mirror_for(spec)        # None unless the study's storage is an object store
    mirror.after_row("3f2a_00001")   # trials/3f2a_00001/, results.csv, study.json
    mirror.after_tell()              # optuna.db
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

from study.layout import StudyLayout
from study.spec import StudySpec
from trainables.errors import one_line

#: Files of the study directory that change once, when the study is made.
ONCE = ("reference.json", "judge.pt")

_mirrors: dict[str, Mirror | None] = {}


def mirror_for(spec: StudySpec) -> Mirror | None:
    """The mirror of a study whose Tune storage is a URI (an object store), else None."""
    if spec.study_dir not in _mirrors:
        uri = spec.tune_storage
        _mirrors[spec.study_dir] = None if not uri or "://" not in uri else Mirror(
            spec.layout, uri.rstrip("/").rsplit("/", 1)[0])
    return _mirrors[spec.study_dir]


class Mirror:
    """Uploads parts of a local study directory to `uri` (the study's folder in the store)."""

    def __init__(self, layout: StudyLayout, uri: str):
        import pyarrow.fs as pafs

        self.layout = layout
        self.uri = uri
        self.fs, self.root = pafs.FileSystem.from_uri(uri)
        self._sent_once = False

    def after_row(self, trial_id: str) -> None:
        """A trial's row was written: its folder, then the table and study.json."""
        trial = self.layout.trial(trial_id).root
        files = sorted(p for p in trial.rglob("*") if p.is_file()) if trial.is_dir() else []
        once = [] if self._sent_once else [self.layout.root / n for n in ONCE]
        self._upload([*files, *once, self.layout.results, self.layout.spec], f"trial {trial_id}")
        self._sent_once = True

    def after_tell(self) -> None:
        """Optuna was told a trial's values: a consistent snapshot of its SQLite database."""
        db = self.layout.optuna_db
        if not db.is_file():
            return  # a server database (--storage postgresql://…) needs no copy
        with tempfile.TemporaryDirectory() as tmp:
            snap = Path(tmp) / db.name
            try:
                src, dst = sqlite3.connect(db), sqlite3.connect(snap)
                with dst:
                    src.backup(dst)  # a consistent copy while Optuna may be writing
                src.close()
                dst.close()
            except sqlite3.Error as e:
                self._warn("the Optuna database", e)
                return
            self._upload([snap], "the Optuna database", rel={snap: db.name})

    def _upload(self, paths: list[Path], what: str, rel: dict | None = None) -> None:
        import pyarrow.fs as pafs

        try:
            local = pafs.LocalFileSystem()
            for p in paths:
                if not p.is_file():
                    continue
                name = (rel or {}).get(p) or p.relative_to(self.layout.root).as_posix()
                dst = f"{self.root}/{name}"
                self.fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
                pafs.copy_files(str(p), dst, source_filesystem=local,
                                destination_filesystem=self.fs)
        except Exception as e:  # a failed upload must not fail the trial: it is retried at the end
            self._warn(what, e)

    def _warn(self, what: str, e: BaseException) -> None:
        print(f"warning: could not copy {what} to {self.uri} ({one_line(e, 200)}); the whole "
              f"study directory is copied again when the study ends", file=sys.stderr,
              flush=True)
