"""Turning finished trials into rows: the Finalizer, and the Tune callback that calls it.

Tune tells two parties a trial ended, the searcher (study/search.py) and ``ResultsCallback``;
whichever comes first makes the row through the ``Finalizer`` of the study, which

- classifies the trial's last result: the trial's final report (it trained until its budget,
  an early stop or ASHA ended it, and evaluated itself; or it diverged), or nothing usable;
- copies the trial's checkpoint and artefacts into ``trials/<id>/``;
- builds the row with study/rows.py and upserts it into results.csv.

Nothing is evaluated here: every trial evaluates itself on its own resources (study/rungs.py).

Rows recorded before an interruption are final: a resumed study reuses them as they are.
"""

from __future__ import annotations

from pathlib import Path

from ray import tune

from study import results, rows
from study.console import CONSOLE, trial_line
from study.layout import StudyLayout
from study.mirror import mirror_for
from study.search_space import apply, hyperparameters
from study.spec import StudyRecord

_finalizers: dict[str, Finalizer] = {}


def get_finalizer(study_dir: str) -> Finalizer:
    """One Finalizer per study directory in this process (callbacks and searchers are pickled
    with Tune's state, so they hold only the directory and look the Finalizer up here)."""
    if study_dir not in _finalizers:
        _finalizers[study_dir] = Finalizer(StudyLayout(Path(study_dir)))
    return _finalizers[study_dir]


class Finalizer:
    """Turns a trial's last result into its complete results row, once per trial."""

    def __init__(self, layout: StudyLayout):
        self.layout = layout
        record = StudyRecord.load(layout)
        self.spec = record.spec
        sizing = record.sizing
        self.ctx = rows.RowContext(self.spec.workers_per_trial,
                                   sizing.gpus_per_worker if sizing else 0.0,
                                   self.spec.quality_metric)
        self.rows: dict[str, dict] = results.finished_rows(layout.root)
        self._sizes: dict = {}  # UNetConfig -> its size columns

    def __call__(self, trial_id: str, result: dict | None, config: dict) -> dict:
        if trial_id not in self.rows:
            self.rows[trial_id] = self._finalize(trial_id, result or {}, config)
            results.upsert(self.layout.root, self.rows[trial_id])
            if (mirror := mirror_for(self.spec)) is not None:  # an object-store study
                mirror.after_row(trial_id)
        return self.rows[trial_id]

    def _finalize(self, trial_id: str, result: dict, config: dict) -> dict:
        params = hyperparameters(config)
        cfg = apply(params, self.spec.base)
        trial = self.layout.trial(trial_id)
        wall = result.get("time_total_s")
        extra = {"size": self._size(cfg), "confirm_of": params.get("confirm_of")}
        if result.get("final"):
            if result.get("final_checkpoint"):
                self._checkpoint(result["final_checkpoint"]).to_directory(str(trial.root))
            return rows.finished(trial_id, cfg, result, wall, self.ctx, **extra,
                                 artefacts=self._artefacts(trial))
        return rows.failed(trial_id, cfg, result.get("error") or "no result reported", self.ctx,
                           result, wall, **extra)

    def _artefacts(self, trial) -> dict:
        return {"samples_path": self.layout.relative(trial.samples),
                "grid_path": self.layout.relative(trial.grid),
                "checkpoint_path": self.layout.relative(trial.checkpoint)}

    def _checkpoint(self, path: str) -> tune.Checkpoint:
        """Train reports object-store checkpoint paths without their scheme: put it back."""
        storage = self.spec.tune_storage or ""
        if "://" in storage and "://" not in path:
            path = f"{storage.split('://')[0]}://{path}"
        return tune.Checkpoint(path)

    def _size(self, cfg) -> dict:
        """The model's parameters and forward FLOPs, counted here once per architecture rather
        than in each trial: the FLOP counter's first use in a process takes ~1.3 s, which a
        trial would spend on its own time (trial_wall_s) and its slot's."""
        from trainables.unet import UNet, forward_flops

        if cfg.model not in self._sizes:
            model = UNet(cfg.model)
            self._sizes[cfg.model] = {"params": model.num_params(),
                                      "forward_gflops": forward_flops(model) / 1e9}
        return self._sizes[cfg.model]


class ResultsCallback(tune.Callback):
    """Writes each finished or failed trial's row (the Finalizer upserts the table) and prints
    its line: its outcome, quality and cost (study/console.py)."""

    def __init__(self, study_dir: str):
        self.study_dir = study_dir

    def on_trial_complete(self, iteration, trials, trial, **info):
        row = get_finalizer(self.study_dir)(trial.trial_id, trial.last_result, trial.config)
        CONSOLE.say(trial_line(row))

    def on_trial_error(self, iteration, trials, trial, **info):
        result = {**(trial.last_result or {}), "error": _error_text(trial)}
        result.pop("checkpoint_path", None)  # its checkpoint is not an evaluated end state
        result.pop("final", None)
        row = get_finalizer(self.study_dir)(trial.trial_id, result, trial.config)
        CONSOLE.say(trial_line(row))


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        lines = [s for s in Path(path).read_text().splitlines() if s.strip()] if path else []
    except OSError:
        lines = []
    return lines[-1][:500] if lines else "trial failed"
