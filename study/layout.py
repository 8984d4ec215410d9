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
      report/             index.html, its PNGs, sort.js and summary.md (analysis/report.py)
      logs/               what Ray, Tune and Train said (study/console.py): driver.log, workers.log

The CLI, the driver, the post-study step and ``analysis/`` all find files through
``StudyLayout``, so no path is spelled out twice. This module imports nothing heavy: the
analysis side reads a study without Ray or torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from trainables import artefacts

#: Trial ids are hex strings; an all-digit one ("92990835") must not be read back as a number.
ID_DTYPES = {"trial_id": str, "confirm_of": str}
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_plain(name) -> bool:
    """A plain file name: letters, digits, '.', '_', '-', not starting with '.' or '-'."""
    return isinstance(name, str) and bool(_PLAIN.fullmatch(name))


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
    # what the trial's workers left (trainables/artefacts.py says what each holds)
    checkpoint = _In(artefacts.CHECKPOINT)
    samples = _In(artefacts.SAMPLES)
    grid = _In(artefacts.GRID)
    per_digit = _In(artefacts.PER_DIGIT)
    outcome = _In(artefacts.OUTCOME)
    guidance = _In(artefacts.GUIDANCE)
    progress = _In(artefacts.PROGRESS)


@dataclass(frozen=True)
class PostLayout:
    """``analysis/``: the report's inputs that need the checkpoints, written by study/post.py."""

    root: Path
    guidance_sweep = _In("guidance_sweep.csv")  # the evaluation at several w, best trials
    sample_scores = _In("sample_scores.csv")  # each evaluation sample's judge (and CLIP) score
    recognisable = _In("recognisable_steps.csv")  # first reverse step a digit is recognised at
    trajectory = _In("trajectory.npz")
    real_digits = _In("real_digits.npz")
    style = _In("style_grids.npz")  # the best style-on trial asked for each slant and thickness
    summary = _In("post.json")  # which trials and weights were evaluated, and the cost


@dataclass(frozen=True)
class ReportLayout:
    """``report/``: the static report (analysis/report.py); its PNGs and the table-sorting
    script (analysis/page.py) lie beside index.html."""

    root: Path
    index = _In("index.html")  # the page: open it in any browser, no server needed
    summary = _In("summary.md")  # the short Markdown answer


@dataclass(frozen=True)
class LogLayout:
    """``logs/``: Ray's, Tune's and Train's own output, kept off the console unless --verbose
    (study/console.py)."""

    root: Path
    driver = _In("driver.log")  # the driver's Ray/Tune/Train loggers and Python warnings
    workers = _In("workers.log")  # every line Ray forwarded from its actors and workers


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

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def name(self) -> str:
        return self.root.name

    def trial(self, trial_id: str) -> TrialLayout:
        """trials/<id>/; ValueError for an id that is not a plain name (a hand-edited table
        must not lead a reader outside the study directory)."""
        if not is_plain(trial_id):
            raise ValueError(f"trial id {str(trial_id)[:40]!r} is not a plain name")
        return TrialLayout(self.trials / str(trial_id))

    @property
    def post(self) -> PostLayout:
        return PostLayout(self.root / "analysis")

    @property
    def report(self) -> ReportLayout:
        return ReportLayout(self.root / "report")

    @property
    def logs(self) -> LogLayout:
        return LogLayout(self.root / "logs")

    def relative(self, path: Path) -> str | None:
        """`path` relative to the study directory (as results.csv records it), None if absent."""
        return str(Path(path).relative_to(self.root)) if Path(path).exists() else None

    def exists(self) -> bool:
        """Whether a study was made here (its study.json is written before any trial runs)."""
        return self.spec.exists()
