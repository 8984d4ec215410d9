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

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from study.layout import ID_DTYPES, StudyLayout, is_plain
from study.rows import CLIP_COLUMNS, COLUMNS
from trainables.artefacts import is_whole_archive

CLIP_OFF = ("CLIP DISABLED for this study (--no-clip): the report leads with the quality "
            "(coverage) instead of CLIP-top-3, and every CLIP chart and column is absent.")


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
    def headline_metric(self) -> str:
        """The number the report leads with: CLIP-top-k when CLIP is on (and scored), else the
        quality."""
        metric = self.record.get("headline_metric") or self.quality_metric
        return metric if metric != "clip_top" or self.clip_enabled else self.quality_metric

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


#: Columns that hold text (or booleans); every other column of COLUMNS holds numbers, and a
#: hand-edited cell that is not one is read as empty (with a note).
TEXT_COLUMNS = {"trial_id", "status", "stop_reason", "error", "confirm_of", "style",
                "channels", "dataset", "train_dtype", "quality_metric", "clip_model",
                "eval_sampler", "eval_dtype", "samples_path", "grid_path", "checkpoint_path",
                "guidance_curve"}
#: Larger files than these are not study files: they are skipped, not read.
MAX_TABLE_BYTES, MAX_JSON_BYTES = 256 * 1024**2, 64 * 1024**2


def _read_csv(path: Path, notes: list[str] | None = None) -> pd.DataFrame | None:
    """A table, or None when it is missing, empty or unreadable (said in `notes`)."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    if path.stat().st_size > MAX_TABLE_BYTES:
        _skip(notes, path, f"over {MAX_TABLE_BYTES} bytes")
        return None
    bad: list[int] = []
    try:
        df = pd.read_csv(path, dtype=ID_DTYPES, engine="python", encoding_errors="replace",
                         on_bad_lines=lambda line: bad.append(1))
    except pd.errors.EmptyDataError:
        return None
    except (ValueError, pd.errors.ParserError, csv.Error) as e:
        _skip(notes, path, _why(e))
        return None
    if bad:
        _skip(notes, path, f"{len(bad)} malformed line(s) skipped", whole=False)
    return df if len(df) else None


def _read_json(path: Path, notes: list[str] | None = None):
    """A JSON file, or None when it is missing or damaged (said in `notes`)."""
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ValueError(f"over {MAX_JSON_BYTES} bytes")
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        _skip(notes, path, _why(e))
        return None


def _skip(notes: list[str] | None, path: Path, why: str, whole: bool = True) -> None:
    if notes is not None:
        notes.append(f"{path.parent.name}/{path.name} is damaged ({why}): "
                     + ("skipped." if whole else "the rest is shown."))


def _why(e: BaseException) -> str:
    lines = [s for s in str(e).splitlines() if s.strip()]
    return (lines[0] if lines else type(e).__name__)[:160]


def _numbers(df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Numeric columns as numbers: a hand-edited cell that is not one becomes empty. (A column
    none of whose cells is a number is text, whatever its name.)"""
    for col in df.columns:
        if col in TEXT_COLUMNS or col not in COLUMNS or pd.api.types.is_numeric_dtype(df[col]):
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        lost = int((values.isna() & df[col].notna()).sum())
        if values.notna().any():  # a numeric column: its hand-edited cells become empty
            if lost:
                notes.append(f"results.csv: {lost} cell(s) of {col} are not numbers; shown "
                             f"empty.")
            df[col] = values
    return df


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
    raw = _read_csv(layout.results, notes)
    if raw is None or "trial_id" not in raw.columns:
        if raw is not None:
            notes.append("results.csv has no trial_id column: its rows are skipped.")
        raw = pd.DataFrame(columns=COLUMNS)
    absent = [c for c in COLUMNS if c not in raw.columns]
    if any(c in absent for c in CLIP_COLUMNS) and len(raw):
        notes.append("results.csv has no CLIP columns (an older or CLIP-less table).")
    df = _numbers(raw.reindex(columns=COLUMNS + [c for c in raw.columns if c not in COLUMNS]),
                  notes)
    df["trial_id"] = df["trial_id"].astype(str)
    df["status"] = df["status"].fillna("unknown")

    record = _read_json(layout.spec, notes)
    if not isinstance(record, dict) or not isinstance(record.get("spec", {}), dict):
        record = None
    record = record or {}
    if not record:
        notes.append("study.json is missing or unreadable: settings, versions and machine are "
                     "unknown.")
    reference = _read_json(layout.reference, notes)
    if not isinstance(reference, dict):
        reference = None
        notes.append("reference.json is missing: no real-data reference row.")
    if (record.get("spec") or {}).get("clip") is None:
        notes.append(CLIP_OFF)

    histories, per_digit = [], []
    for trial_id in df["trial_id"]:
        if not is_plain(trial_id):
            notes.append(f"trial id {trial_id[:40]!r} in results.csv is not a plain name: its "
                         f"files are skipped.")
            continue
        trial = layout.trial(trial_id)
        h = _history(trial, notes)
        if h:
            histories.append(pd.DataFrame(h).assign(trial_id=trial_id))
        pd_table = _read_csv(trial.per_digit, notes)
        if pd_table is not None:
            per_digit.append(pd_table.assign(trial_id=trial_id))
        if trial.samples.is_file() and not is_whole_archive(trial.samples):
            notes.append(f"{trial_id}/samples.npz is damaged: its pictures are skipped.")

    post = layout.post
    sweep = _read_csv(post.guidance_sweep, notes)
    if sweep is None:  # the post-study step did not run: the trials' own curves
        sweep = _guidance_curves(layout, df, notes)
    if sweep is None:
        notes.append(f"No guidance curves (trials/<id>/guidance.csv, "
                     f"{post.guidance_sweep.relative_to(path)}).")
    return Study(
        path=path, results=df, record=record, reference=reference,
        histories=pd.concat(histories, ignore_index=True) if histories else pd.DataFrame(),
        per_digit=pd.concat(per_digit, ignore_index=True) if per_digit else pd.DataFrame(),
        guidance_sweep=sweep, sample_scores=_read_csv(post.sample_scores, notes),
        recognisable=_read_csv(post.recognisable, notes),
        post=_dict_or_none(_read_json(post.summary, notes)), notes=notes)


def _guidance_curves(layout: StudyLayout, df: pd.DataFrame, notes: list[str]
                     ) -> pd.DataFrame | None:
    """Every ok trial's guidance search from trials/<id>/guidance.csv, with the w it chose as
    `chosen_guidance` (what study/post.py collects into analysis/guidance_sweep.csv). A trial
    without that file (a study copied without trials/) falls back on its row's
    `guidance_curve`, which holds the quality at each w only."""
    curves = []
    for row in df[df["status"] == "ok"].itertuples():
        curve = _read_csv(layout.trial(row.trial_id).guidance, notes) \
            if is_plain(row.trial_id) else None
        if curve is None or "guidance" not in curve:
            curve = _curve_cell(row.guidance_curve, row.quality_metric)
        if curve is not None:
            curves.append(curve.assign(trial_id=row.trial_id, chosen_guidance=row.guidance))
    return pd.concat(curves, ignore_index=True) if curves else None


def _curve_cell(cell, metric) -> pd.DataFrame | None:
    """results.csv's `guidance_curve` cell, JSON {w: quality}, as a (guidance, metric) table."""
    if not isinstance(cell, str) or not isinstance(metric, str):
        return None
    try:
        points = {float(w): float(q) for w, q in json.loads(cell).items()}
    except (ValueError, TypeError, AttributeError):  # a hand-edited cell: no curve
        return None
    return pd.DataFrame({"guidance": list(points), metric: list(points.values())}) \
        if points else None


def _dict_or_none(value) -> dict | None:
    return value if isinstance(value, dict) else None


def _history(trial, notes: list[str]) -> list[dict]:
    """Per-epoch metrics: outcome.json of a trial that ran its own evaluation, else the
    checkpoint of one stopped by ASHA (which never wrote an outcome). A damaged file is
    skipped with a note."""
    outcome = _read_json(trial.outcome, notes)
    if outcome is not None:
        history = outcome.get("history", []) if isinstance(outcome, dict) else None
        if isinstance(history, list) and all(isinstance(h, dict) for h in history):
            return history
        notes.append(f"{trial.root.name}/outcome.json has no readable history: skipped.")
        return []
    ckpt = trial.checkpoint
    if ckpt.exists():
        import torch  # only for ASHA-stopped trials; their history lives in the checkpoint

        try:
            history = torch.load(ckpt, map_location="cpu", weights_only=True).get("history", [])
            return history if isinstance(history, list) else []
        except Exception as e:  # a truncated or edited checkpoint: torch raises many types
            notes.append(f"{trial.root.name}/checkpoint.pt is damaged ({_why(e)}): its "
                         f"training curve is skipped.")
    return []


def load_samples(study: Study, trial_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(images uint8 (N, 28, 28), labels (N,)) of a trial's evaluation samples, or None when
    they are missing or damaged (load_study notes which)."""
    if not is_plain(trial_id):
        return None
    f = study.layout.trial(trial_id).samples
    if not f.exists() or not is_whole_archive(f):
        return None
    try:
        with np.load(f, allow_pickle=False) as z:
            return z["images"], z["labels"]
    except (OSError, ValueError, KeyError, EOFError):
        return None


def load_npz(f: Path) -> dict | None:
    """A post-study array file (study.layout.post.trajectory, ...) as a dict, or None."""
    if not f.exists() or not is_whole_archive(f):
        return None
    try:
        with np.load(f, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):
        return None


def load_progress(study: Study, trial_id: str) -> dict | None:
    """A trial's probe samples after each epoch (trials/<id>/progress.npz): images (E, N, 28, 28)
    uint8, labels (N,), epochs (E,), guidance (E,); None when missing or damaged."""
    if not is_plain(trial_id):
        return None
    z = load_npz(study.layout.trial(trial_id).progress)
    if z is None or not {"images", "labels", "epochs"} <= set(z) or z["images"].ndim != 4:
        return None
    return z


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
