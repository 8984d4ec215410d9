"""Load a finished (or interrupted) study directory into one ``Study`` object, from files alone.

    study = load_study("runs/cpu-1")
    study.results           # one row per trial (results.csv, every column of study.results)
    study.ok                # the trials that produced samples
    study.histories         # per-epoch training metrics of every trial, long format

Nothing here imports Ray or needs the cluster: a report can be rebuilt anywhere, later.
Missing pieces (no CLIP, no post-study sweep, a trial without history) are recorded in
``Study.notes`` instead of raising, so the report can say what it could not show and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from study.results import COLUMNS, ID_DTYPES, RESULTS_FILE

POST_DIR = "analysis"  # written by study/post.py
CLIP_OFF = ("CLIP DISABLED for this study (--no-clip): quality is the judge's conditional "
            "accuracy, and every CLIP chart and column is absent.")
CLIP_COLUMNS = ("clip_top", "clip_all", "clip_gain", "clip_acc_all", "clip_acc_top",
                "judge_acc_top_clip", "clip_top_judge")


class StudyDirError(ValueError):
    """The path is not a study directory; the message says what is missing."""


@dataclass
class Study:
    path: Path
    results: pd.DataFrame  # results.csv with every COLUMNS column (absent ones all NaN)
    setup: dict  # study.json ({} when missing)
    reference: dict | None  # reference.json: the real-data row, with its per_digit list
    histories: pd.DataFrame  # trial_id, epoch, train_loss, val_loss, lr, probe_judge_acc, …
    per_digit: pd.DataFrame  # trial_id, digit, judge_acc, judge_conf[, clip_*]
    guidance_sweep: pd.DataFrame | None  # analysis/guidance_sweep.csv (study/post.py)
    sample_scores: pd.DataFrame | None  # analysis/sample_scores.csv
    recognisable: pd.DataFrame | None  # analysis/recognisable_steps.csv
    post: dict | None  # analysis/post.json: trials, guidance values and cost of study/post.py
    notes: list[str] = field(default_factory=list)  # what is missing, in plain words

    @property
    def name(self) -> str:
        return self.setup.get("name") or self.path.name

    @property
    def quality_metric(self) -> str:
        return self.setup.get("quality_metric") or "judge_acc"

    @property
    def clip_enabled(self) -> bool:
        """CLIP was on and its columns hold numbers (a --no-clip study leaves them empty)."""
        return self.setup.get("clip") is not None and bool(self.results["clip_top"].notna().any())

    @property
    def ok(self) -> pd.DataFrame:
        return self.results[self.results["status"] == "ok"]

    @property
    def top_k(self) -> int:
        return int(self.setup.get("eval", {}).get("top_k", 3))

    @property
    def n_per_digit(self) -> int:
        return int(self.setup.get("eval", {}).get("n_per_digit", 10))

    def best(self, by: str, n: int = 1) -> pd.DataFrame:
        """The n ok trials with the highest `by`."""
        return self.ok.dropna(subset=[by]).sort_values(by, ascending=False).head(n)

    def file(self, relative: str) -> Path:
        return self.path / relative


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    try:
        df = pd.read_csv(path, dtype=ID_DTYPES)
    except pd.errors.EmptyDataError:
        return None
    return df if len(df) else None


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def load_study(path: Path | str) -> Study:
    """Read a study directory; raises StudyDirError when it holds no results.csv."""
    path = Path(path)
    if not path.is_dir():
        raise StudyDirError(f"{path} is not a directory (expected runs/<name>)")
    if not (path / RESULTS_FILE).exists():
        raise StudyDirError(f"{path} holds no {RESULTS_FILE}: not a study directory, or the "
                            f"study finished no trial yet")
    notes: list[str] = []
    raw = pd.read_csv(path / RESULTS_FILE, dtype=ID_DTYPES)
    absent = [c for c in COLUMNS if c not in raw.columns]
    if any(c in absent for c in CLIP_COLUMNS):
        notes.append("results.csv has no CLIP columns (an older or CLIP-less table).")
    df = raw.reindex(columns=COLUMNS + [c for c in raw.columns if c not in COLUMNS])
    df["trial_id"] = df["trial_id"].astype(str)
    df["status"] = df["status"].fillna("unknown")

    setup = _read_json(path / "study.json") or {}
    if not setup:
        notes.append("study.json is missing: settings, versions and machine are unknown.")
    reference = _read_json(path / "reference.json")
    if reference is None:
        notes.append("reference.json is missing: no real-data reference row.")
    if setup.get("clip") is None:
        notes.append(CLIP_OFF)

    histories, per_digit = [], []
    for trial_id in df["trial_id"]:
        trial_dir = path / "trials" / trial_id
        h = _history(trial_dir)
        if h:
            histories.append(pd.DataFrame(h).assign(trial_id=trial_id))
        pd_table = _read_csv(trial_dir / "per_digit.csv")
        if pd_table is not None:
            per_digit.append(pd_table.assign(trial_id=trial_id))

    post = path / POST_DIR
    sweep = _read_csv(post / "guidance_sweep.csv")
    if sweep is None:
        notes.append(f"No guidance sweep ({POST_DIR}/guidance_sweep.csv): run "
                     f"`python -m study.post {path}` where the checkpoints are.")
    return Study(
        path=path, results=df, setup=setup, reference=reference,
        histories=pd.concat(histories, ignore_index=True) if histories else pd.DataFrame(),
        per_digit=pd.concat(per_digit, ignore_index=True) if per_digit else pd.DataFrame(),
        guidance_sweep=sweep, sample_scores=_read_csv(post / "sample_scores.csv"),
        recognisable=_read_csv(post / "recognisable_steps.csv"),
        post=_read_json(post / "post.json"), notes=notes)


def _history(trial_dir: Path) -> list[dict]:
    """Per-epoch metrics: outcome.json of a trial that ran its own evaluation, else the
    checkpoint of one stopped by ASHA (which never wrote an outcome)."""
    outcome = _read_json(trial_dir / "outcome.json")
    if outcome is not None:
        return outcome.get("history", [])
    ckpt = trial_dir / "checkpoint.pt"
    if ckpt.exists():
        import torch  # only for ASHA-stopped trials; their history lives in the checkpoint

        return torch.load(ckpt, map_location="cpu", weights_only=True).get("history", [])
    return []


def load_samples(study: Study, trial_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(images uint8 (N, 28, 28), labels (N,)) of a trial's evaluation samples, or None."""
    f = study.path / "trials" / trial_id / "samples.npz"
    if not f.exists():
        return None
    with np.load(f, allow_pickle=False) as z:
        return z["images"], z["labels"]


def load_npz(study: Study, name: str) -> dict | None:
    """A post-study array file (trajectory.npz, real_digits.npz) as a dict, or None."""
    f = study.path / POST_DIR / name
    if not f.exists():
        return None
    with np.load(f, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def sample_picks(study: Study, trial_id: str) -> dict[str, np.ndarray]:
    """Per-sample scores a top-k selection can use, aligned with samples.npz: CLIP score (when
    CLIP ran and study/post.py scored the trial) and the judge's confidence."""
    out = {}
    s = study.sample_scores
    if s is not None:
        s = s[s["trial_id"].astype(str) == str(trial_id)].sort_values("index")
        if "clip_score" in s and s["clip_score"].notna().any():
            out["CLIP"] = s["clip_score"].to_numpy()
    with np.load(study.path / "trials" / str(trial_id) / "samples.npz") as z:
        out["judge"] = z["judge_conf"]
    return out
