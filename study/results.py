"""The study's results table, results.csv: one row per trial (study/rows.py builds them),
rewritten atomically after every finished trial.

The table is CSV (readable anywhere, diff-able); ``analysis/`` reads it without Ray.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from study.layout import ID_DTYPES, StudyLayout
from study.rows import COLUMNS


def write_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write a CSV through a temporary file and a rename: a crash never leaves it truncated."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            df.to_csv(f, index=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_results(study_dir: Path) -> pd.DataFrame:
    path = StudyLayout(study_dir).results
    return pd.read_csv(path, dtype=ID_DTYPES) if path.exists() else pd.DataFrame(columns=COLUMNS)


def finished_rows(study_dir: Path) -> dict[str, dict]:
    """trial_id → row for every trial the table already records as finished (ok or failed):
    what a resumed study must neither re-run nor rewrite. Empty cells become None."""
    df = read_results(study_dir)
    df = df[df["status"].isin(["ok", "failed"])].astype(object)
    return {r["trial_id"]: r for r in df.where(df.notna(), None).to_dict(orient="records")}


def upsert(study_dir: Path, row: dict) -> pd.DataFrame:
    """Insert or replace the row of row['trial_id'] and rewrite the table atomically."""
    df = read_results(study_dir)
    df = df[df["trial_id"] != row["trial_id"]]
    new = pd.DataFrame([{c: row.get(c) for c in COLUMNS}], columns=COLUMNS)
    df = new if df.empty else pd.concat([df, new], ignore_index=True)
    write_atomic(df, StudyLayout(study_dir).results)
    return df
