"""Where everything of a study lives: the study directory's layout, as paths and nothing else.

    runs/<name>/
      study.json          the study's spec, its sizing, versions and machine (study/spec.py)
      judge.pt            the digit judge every trial is scored by
      reference.json      real validation digits scored by the same protocol (the ceiling)
      results.csv         one row per trial (study/rows.py says what a row holds)
      optuna.db           the Optuna study (unless --storage points elsewhere)
      pareto.json         the Pareto front printed at the end
      ray/                Tune's and Train's state (--resume reads it)
      trials/<id>/        checkpoint.pt, samples.npz, samples.png, per_digit.csv, outcome.json
      analysis/           inputs of the report that need the checkpoints (study/post.py)
      report/             index.html, its PNGs and summary.md (analysis/report.py)

The CLI, the driver, the post-study step and ``analysis/`` all find files through
``StudyLayout``, so no path is spelled out twice. This module imports nothing heavy: the
analysis side reads a study without Ray or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Trial ids are hex strings; an all-digit one ("92990835") must not be read back as a number.
ID_DTYPES = {"trial_id": str, "confirm_of": str}


class _In:
    """A file or folder `name` inside the layout's root (a read-only attribute)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, layout, owner=None) -> Path:
        return self if layout is None else layout.root / self.name


@dataclass(frozen=True)
class TrialLayout:
    """One trial's folder: ``trials/<id>/``."""

    root: Path
    checkpoint = _In("checkpoint.pt")  # model, EMA, optimizer, history, config (train_loop.py)
    samples = _In("samples.npz")  # the evaluation samples, from fixed noise (sample.py)
    grid = _In("samples.png")
    per_digit = _In("per_digit.csv")
    outcome = _In("outcome.json")  # the worker's final metrics and per-epoch history


@dataclass(frozen=True)
class PostLayout:
    """``analysis/``: the report's inputs that need the checkpoints, written by study/post.py."""

    root: Path
    guidance_sweep = _In("guidance_sweep.csv")  # the evaluation at several w, best trials
    sample_scores = _In("sample_scores.csv")  # each evaluation sample's judge (and CLIP) score
    recognisable = _In("recognisable_steps.csv")  # first reverse step a digit is recognised at
    trajectory = _In("trajectory.npz")
    real_digits = _In("real_digits.npz")
    summary = _In("post.json")  # which trials and weights were evaluated, and the cost


@dataclass(frozen=True)
class StudyLayout:
    """A study directory ``<output-dir>/<name>/`` and every file in it."""

    root: Path
    spec = _In("study.json")
    judge = _In("judge.pt")
    reference = _In("reference.json")
    results = _In("results.csv")
    optuna_db = _In("optuna.db")
    pareto = _In("pareto.json")
    tune = _In("ray")  # Tune's and Train's storage when not an object store
    trials = _In("trials")
    report = _In("report")

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def name(self) -> str:
        return self.root.name

    def trial(self, trial_id: str) -> TrialLayout:
        return TrialLayout(self.trials / str(trial_id))

    @property
    def post(self) -> PostLayout:
        return PostLayout(self.root / "analysis")

    def relative(self, path: Path) -> str | None:
        """`path` relative to the study directory (as results.csv records it), None if absent."""
        return str(Path(path).relative_to(self.root)) if Path(path).exists() else None

    def exists(self) -> bool:
        """Whether a study was made here (its study.json is written before any trial runs)."""
        return self.spec.exists()
