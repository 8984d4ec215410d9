"""The study's results table: one row per trial, written atomically after every finished trial.

The table is CSV (readable anywhere, diff-able); ``analysis/`` reads it without Ray.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

RESULTS_FILE = "results.csv"

#: Columns every row has, in this order (a missing value is an explicit empty cell).
COLUMNS = [
    "trial_id", "status", "stop_reason", "error", "confirm_of",
    "depth", "width", "style", "channels", "lr", "guidance", "batch_size", "epochs", "seed",
    "timesteps", "dataset",
    "params", "forward_gflops", "train_gflops", "images_seen", "images_per_s", "precision",
    "trial_wall_s", "train_seconds", "startup_s", "trainer_start_s", "worker_setup_s",
    "worker_seconds", "gpu_seconds", "workers",
    "epochs_run", "final_train_loss", "final_val_loss", "probe_judge_acc",
    "quality", "quality_metric", "train_cost_s",
    "judge_acc", "judge_conf", "judge_acc_top_judge", "frechet",
    "clip_top", "clip_all", "clip_gain", "clip_acc_all", "clip_acc_top",
    "judge_acc_top_clip", "clip_top_judge", "clip_model",
    "eval_s", "eval_sample_s", "eval_steps", "eval_sampler", "n_samples",
    "samples_path", "grid_path", "checkpoint_path",
]


#: Trial ids are hex strings; an all-digit one ("92990835") must not be read back as a number.
ID_DTYPES = {"trial_id": str, "confirm_of": str}


def to_row(result: dict) -> dict:
    """A results row from a trial's final report: exactly COLUMNS, None where absent."""
    return {c: result.get(c) for c in COLUMNS}


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
    path = Path(study_dir) / RESULTS_FILE
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
    new = pd.DataFrame([to_row(row)], columns=COLUMNS)
    df = new if df.empty else pd.concat([df, new], ignore_index=True)
    write_atomic(df, Path(study_dir) / RESULTS_FILE)
    return df


def pareto_front(df: pd.DataFrame, quality: str = "quality", cost: str = "train_cost_s",
                 ) -> pd.DataFrame:
    """Rows not dominated by any other (higher quality and lower cost; ties are kept)."""
    ok = df.dropna(subset=[quality, cost])
    keep = []
    for i, r in ok.iterrows():
        dominated = ((ok[quality] >= r[quality]) & (ok[cost] <= r[cost])
                     & ((ok[quality] > r[quality]) | (ok[cost] < r[cost]))).any()
        if not dominated:
            keep.append(i)
    return ok.loc[keep].sort_values(cost)
