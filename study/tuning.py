"""Tune-side pieces of the study: the multi-objective Optuna searcher, the ASHA scheduler, and the
callback that turns every finished trial into a row of the results table.

A trial stopped by ASHA never reaches its own evaluation, so its last result has no quality.
Rather than telling Optuna a made-up number, ``Finalizer`` evaluates the trial's last
checkpoint in the driver with the same protocol (fixed noise, same judge and CLIP), and both
the searcher and the table use that measured row.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from study import results
from study.trial import (
    COST,
    PROBE,
    QUALITY,
    describe,
    hyperparameters,
    one_line,
    trial_config,
    wall_columns,
)

SETUP_FILE, JUDGE_FILE = "study.json", "judge.pt"
_finalizers: dict[str, Finalizer] = {}


def get_finalizer(study_dir: str) -> Finalizer:
    """One Finalizer per study directory in this process (callbacks and searchers are pickled
    with Tune's state, so they hold only the directory and look the Finalizer up here)."""
    if study_dir not in _finalizers:
        _finalizers[study_dir] = Finalizer(Path(study_dir))
    return _finalizers[study_dir]


class Finalizer:
    """Turns a trial's last result into its complete results row, once per trial."""

    def __init__(self, study_dir: Path):
        self.study_dir = study_dir
        self.setup = json.loads((study_dir / SETUP_FILE).read_text())
        # Rows recorded before an interruption are final: a resumed study reuses them as they are.
        self.rows: dict[str, dict] = results.finished_rows(study_dir)
        self._eval_tools = None
        self._sizes: dict = {}  # UNetConfig -> its size columns

    def __call__(self, trial_id: str, result: dict | None, config: dict) -> dict:
        if trial_id not in self.rows:
            self.rows[trial_id] = self._finalize(trial_id, result or {}, config)
        return self.rows[trial_id]

    def _finalize(self, trial_id: str, result: dict, config: dict) -> dict:
        trial_dir = self.study_dir / "trials" / trial_id
        if result.get("final"):
            row = dict(result)
            if row.get("final_checkpoint"):
                self._checkpoint(row["final_checkpoint"]).to_directory(str(trial_dir))
        elif result.get("checkpoint_path"):  # stopped by ASHA after at least one epoch
            try:
                self._checkpoint(result["checkpoint_path"]).to_directory(str(trial_dir))
                row = self._evaluate_stopped(trial_id, result, config, trial_dir)
            except Exception as e:  # an exception here would error the trial in Tune (retried)
                row = self._failed(trial_id, config, f"evaluating the stopped trial: {one_line(e)}")
        else:
            row = self._failed(trial_id, config, result.get("error") or "no result reported")
        row.update(self._size(config))
        row["confirm_of"] = hyperparameters(config).get("confirm_of")
        if row.get("status") == "ok":
            row.update(samples_path=_rel(trial_dir / "samples.npz", self.study_dir),
                       grid_path=_rel(trial_dir / "samples.png", self.study_dir),
                       checkpoint_path=_rel(trial_dir / "checkpoint.pt", self.study_dir))
        if row.get("forward_gflops") and row.get("images_seen"):
            # forward + backward ≈ 3 forward passes per training image
            row["train_gflops"] = 3 * row["forward_gflops"] * row["images_seen"]
        results.upsert(self.study_dir, row)
        return row

    def _failed(self, trial_id: str, config: dict, error: str) -> dict:
        return {"trial_id": trial_id, **describe(self._config(config)), "status": "failed",
                "stop_reason": "error", "error": error, QUALITY: None, COST: None}

    def _checkpoint(self, path: str) -> tune.Checkpoint:
        """Train reports object-store checkpoint paths without their scheme: put it back."""
        storage = self.setup.get("storage_path") or ""
        if "://" in storage and "://" not in path:
            path = f"{storage.split('://')[0]}://{path}"
        return tune.Checkpoint(path)

    def _config(self, config: dict):
        return trial_config(self.setup["base"], config)

    def _size(self, config: dict) -> dict:
        """The model's parameters and forward FLOPs, counted here once per architecture rather
        than in each trial: the FLOP counter's first use in a process takes ~1.3 s, which a
        trial would spend on its own time (trial_wall_s) and its slot's."""
        from trainables.unet import UNet, forward_flops

        arch = self._config(config).model
        if arch not in self._sizes:
            model = UNet(arch)
            self._sizes[arch] = {"params": model.num_params(),
                                 "forward_gflops": forward_flops(model) / 1e9}
        return self._sizes[arch]

    def _evaluate_stopped(self, trial_id, result, config, trial_dir: Path) -> dict:
        from trainables.evaluate import EvalConfig, evaluate_model
        from trainables.train_loop import load_checkpoint

        judge, clip, real = self._tools()
        cfg, _, ema, _ = load_checkpoint(trial_dir)
        m = evaluate_model(ema, cfg, judge, clip, real, trial_dir,
                           EvalConfig(**self.setup["eval"]),
                           grid_title=f"w = {cfg.sample.guidance:.2f} (stopped early)")
        train_s = result.get("train_seconds", 0.0)
        workers = self.setup["workers_per_trial"]
        wall = result.get("time_total_s", train_s)
        return {
            "trial_id": trial_id, **describe(cfg), **m, "status": "ok", "stop_reason": "asha",
            "workers": workers, "epochs_run": result.get("epoch"), "train_seconds": train_s,
            "images_per_s": result.get("images_per_s"), "precision": result.get("precision"),
            "images_seen": round(result.get("images_per_s", 0) * train_s),
            "final_train_loss": result.get("train_loss"),
            "final_val_loss": result.get("val_loss"), PROBE: result.get(PROBE),
            **wall_columns(self.setup, wall, workers, train_s + result.get("probe_s_total", 0.0)),
            "trainer_start_s": result.get("trainer_start_s"),
            "worker_setup_s": result.get("worker_setup_s"),
            "quality_metric": self.setup["quality_metric"],
            QUALITY: m.get(self.setup["quality_metric"]), COST: train_s,
        }

    def _tools(self):
        """Judge, CLIP and real validation digits, loaded once, only if a trial needs them."""
        if self._eval_tools is None:
            import torch

            from trainables.config import TrialConfig
            from trainables.data import load_splits
            from trainables.judge import Judge

            judge = Judge.from_state(torch.load(self.study_dir / JUDGE_FILE, weights_only=True))
            clip = None
            if self.setup["clip"] is not None:
                from trainables.clip_score import ClipConfig, ClipScorer

                clip = ClipScorer.load(ClipConfig(**self.setup["clip"]))
            data = TrialConfig.from_dict(self.setup["base"]).data
            self._eval_tools = (judge, clip, load_splits(data).val)
        return self._eval_tools


def _rel(path: Path, root: Path) -> str | None:
    return str(path.relative_to(root)) if path.exists() else None


class StudySearch(OptunaSearch):
    """OptunaSearch (multi-objective) that tells Optuna the measured row of every trial:
    ASHA-stopped trials are evaluated first, failed trials are told as FAIL."""

    def __init__(self, *args, study_dir: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.study_dir = study_dir

    def suggest(self, trial_id):
        if trial_id not in self._ot_trials and (orphan := self._orphan()) is not None:
            # Optuna asked for this one before the driver died, but Tune's saved state never
            # recorded it: run it now instead of asking anew, so no trial dangles in Optuna.
            ot_trial = optuna.Trial(self._ot_study, orphan._trial_id)
            # A kill between Optuna's writes can leave some parameters unset: sample them now,
            # as `study.ask(fixed_distributions)` does (Optuna has no public call for this).
            for name, dist in self._space.items():
                if name not in orphan.params:
                    ot_trial._suggest(name, dist)
            self._ot_trials[trial_id] = ot_trial
        return super().suggest(trial_id)

    def _orphan(self) -> optuna.trial.FrozenTrial | None:
        mine = {t.number for t in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False,
                                            states=(optuna.trial.TrialState.RUNNING,))
        return next((t for t in running if t.number not in mine), None)

    def on_trial_complete(self, trial_id, result=None, error=False):
        if self._told_before(trial_id):  # a resumed study re-reports rows it already has
            self._completed_trials.add(trial_id)
            return
        if error or result is None:  # the row is written by ResultsCallback.on_trial_error
            return super().on_trial_complete(trial_id, None, error=True)
        # Tune hands searchers the result flattened: the config arrives as "config/depth", ...
        config = {k.removeprefix("config/"): v for k, v in result.items()
                  if k.startswith("config/")}
        row = get_finalizer(self.study_dir)(trial_id, result, config)
        failed = row.get("status") != "ok" or row.get(QUALITY) is None
        super().on_trial_complete(trial_id, None if failed else row, error=failed)

    def _told_before(self, trial_id) -> bool:
        """Whether Optuna already holds this trial's outcome (told before a driver crash)."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return False
        finished = self._ot_study.get_trials(deepcopy=False, states=_FINISHED)
        return any(t.number == ot_trial.number for t in finished)


_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
             optuna.trial.TrialState.PRUNED)


def fail_orphans(study: optuna.Study) -> int:
    """Mark trials still RUNNING after the study as FAIL (asked for by a crashed driver and not
    resumed, e.g. when the resumed study needed fewer trials); returns how many."""
    orphans = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in orphans:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return len(orphans)


class ResultsCallback(tune.Callback):
    """Writes each finished or failed trial's row (the Finalizer upserts the table)."""

    def __init__(self, study_dir: str):
        self.study_dir = study_dir

    def on_trial_complete(self, iteration, trials, trial, **info):
        row = get_finalizer(self.study_dir)(trial.trial_id, trial.last_result, trial.config)
        print(summary_line(row), flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = _error_text(trial)
        row = get_finalizer(self.study_dir)(trial.trial_id, {"error": error}, trial.config)
        print(summary_line(row), flush=True)


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        lines = [s for s in Path(path).read_text().splitlines() if s.strip()] if path else []
    except OSError:
        lines = []
    return lines[-1][:500] if lines else one_line(RuntimeError("trial failed"))


def summary_line(row: dict) -> str:
    q = row.get(QUALITY)
    cost = row.get(COST)
    return (f"trial {row['trial_id']} d{row.get('depth')} w{row.get('width')} "
            f"lr={row.get('lr', 0):.2g} g={row.get('guidance', 0):.2f}: {row.get('status')} "
            f"({row.get('stop_reason')})"
            + (f", {row.get('quality_metric')}={q:.3f}" if q is not None else "")
            + (f", train {cost:.0f}s" if cost is not None else "")
            + (f", {row['error']}" if row.get("error") else ""))


def make_scheduler(epochs: int) -> ASHAScheduler:
    """ASHA on the in-training quality probe (judge accuracy of a few DDIM samples per epoch):
    diffusion loss keeps falling while samples stay poor, so loss alone is a poor stop signal."""
    # max_t is one past the budget: ASHA stops a trial that reaches max_t, and a trial that
    # completes its budget must still run its own final evaluation.
    return ASHAScheduler(metric=PROBE, mode="max", time_attr="epoch", max_t=epochs + 1,
                         grace_period=max(1, epochs // 3), reduction_factor=3)
