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

from study.layout import ID_DTYPES, StudyLayout
from study.rows import CLIP_COLUMNS, COLUMNS

CLIP_OFF = ("CLIP DISABLED for this study (--no-clip): quality is the judge's conditional "
            "accuracy, and every CLIP chart and column is absent.")


class StudyDirError(ValueError):
    """The path is not a study directory; the message says what is missing."""


@dataclass
class Study:
    path: Path
    results: pd.DataFrame  # results.csv with every COLUMNS column (absent ones all NaN)
    record: dict  # study.json ({} when missing): its "spec", "sizing" and measured facts
    reference: dict | None  # reference.json: the real-data row, with its per_digit list
    histories: pd.DataFrame  # trial_id, epoch, train_loss, val_loss, lr, probe_judge_acc, …
    per_digit: pd.DataFrame  # trial_id, digit, judge_acc, judge_conf[, clip_*]
    guidance_sweep: pd.DataFrame | None  # analysis/guidance_sweep.csv (study/post.py)
    sample_scores: pd.DataFrame | None  # analysis/sample_scores.csv
    recognisable: pd.DataFrame | None  # analysis/recognisable_steps.csv
    post: dict | None  # analysis/post.json: trials, guidance values and cost of study/post.py
    notes: list[str] = field(default_factory=list)  # what is missing, in plain words

    @property
    def layout(self) -> StudyLayout:
        return StudyLayout(self.path)

    @property
    def spec(self) -> dict:
        """The study's spec as study.json stores it (study/spec.py's StudySpec)."""
        return self.record.get("spec") or {}

    @property
    def name(self) -> str:
        return self.spec.get("name") or self.path.name

    @property
    def quality_metric(self) -> str:
        return self.record.get("quality_metric") or "judge_acc"

    @property
    def clip_configured(self) -> bool:
        return self.spec.get("clip") is not None

    @property
    def clip_enabled(self) -> bool:
        """CLIP was on and its columns hold numbers (a --no-clip study leaves them empty)."""
        return self.clip_configured and bool(self.results["clip_top"].notna().any())

    @property
    def ok(self) -> pd.DataFrame:
        return self.results[self.results["status"] == "ok"]

    @property
    def top_k(self) -> int:
        return int(self.spec.get("evaluation", {}).get("top_k", 3))

    @property
    def n_per_digit(self) -> int:
        return int(self.spec.get("evaluation", {}).get("n_per_digit", 10))

    @property
    def axes(self) -> list[str]:
        """The searched axes (the spec's search space), in their order."""
        return list(self.spec.get("space") or ["depth", "width", "lr", "guidance"])

    def best(self, by: str, n: int = 1) -> pd.DataFrame:
        """The n ok trials with the highest `by`."""
        return self.ok.dropna(subset=[by]).sort_values(by, ascending=False).head(n)


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
    layout = StudyLayout(path)
    if not path.is_dir():
        raise StudyDirError(f"{path} is not a directory (expected runs/<name>)")
    if not layout.results.exists():
        raise StudyDirError(f"{path} holds no {layout.results.name}: not a study directory, or "
                            f"the study finished no trial yet")
    notes: list[str] = []
    raw = pd.read_csv(layout.results, dtype=ID_DTYPES)
    absent = [c for c in COLUMNS if c not in raw.columns]
    if any(c in absent for c in CLIP_COLUMNS):
        notes.append("results.csv has no CLIP columns (an older or CLIP-less table).")
    df = raw.reindex(columns=COLUMNS + [c for c in raw.columns if c not in COLUMNS])
    df["trial_id"] = df["trial_id"].astype(str)
    df["status"] = df["status"].fillna("unknown")

    record = _read_json(layout.spec) or {}
    if not record:
        notes.append("study.json is missing: settings, versions and machine are unknown.")
    reference = _read_json(layout.reference)
    if reference is None:
        notes.append("reference.json is missing: no real-data reference row.")
    if (record.get("spec") or {}).get("clip") is None:
        notes.append(CLIP_OFF)

    histories, per_digit = [], []
    for trial_id in df["trial_id"]:
        trial = layout.trial(trial_id)
        h = _history(trial)
        if h:
            histories.append(pd.DataFrame(h).assign(trial_id=trial_id))
        pd_table = _read_csv(trial.per_digit)
        if pd_table is not None:
            per_digit.append(pd_table.assign(trial_id=trial_id))

    post = layout.post
    sweep = _read_csv(post.guidance_sweep)
    if sweep is None:
        notes.append(f"No guidance sweep ({post.guidance_sweep.relative_to(path)}): run "
                     f"`python -m study.post {path}` where the checkpoints are.")
    return Study(
        path=path, results=df, record=record, reference=reference,
        histories=pd.concat(histories, ignore_index=True) if histories else pd.DataFrame(),
        per_digit=pd.concat(per_digit, ignore_index=True) if per_digit else pd.DataFrame(),
        guidance_sweep=sweep, sample_scores=_read_csv(post.sample_scores),
        recognisable=_read_csv(post.recognisable), post=_read_json(post.summary), notes=notes)


def _history(trial) -> list[dict]:
    """Per-epoch metrics: outcome.json of a trial that ran its own evaluation, else the
    checkpoint of one stopped by ASHA (which never wrote an outcome)."""
    outcome = _read_json(trial.outcome)
    if outcome is not None:
        return outcome.get("history", [])
    ckpt = trial.checkpoint
    if ckpt.exists():
        import torch  # only for ASHA-stopped trials; their history lives in the checkpoint

        return torch.load(ckpt, map_location="cpu", weights_only=True).get("history", [])
    return []


def load_samples(study: Study, trial_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(images uint8 (N, 28, 28), labels (N,)) of a trial's evaluation samples, or None."""
    f = study.layout.trial(trial_id).samples
    if not f.exists():
        return None
    with np.load(f, allow_pickle=False) as z:
        return z["images"], z["labels"]


def load_npz(f: Path) -> dict | None:
    """A post-study array file (study.layout.post.trajectory, ...) as a dict, or None."""
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
    with np.load(study.layout.trial(trial_id).samples) as z:
        out["judge"] = z["judge_conf"]
    return out
