"""How the study searches: the multi-objective Optuna searcher and the ASHA scheduler.

``StudySearch`` is Tune's ``OptunaSearch`` that tells Optuna the *measured* row of every
trial (an ASHA-stopped trial is evaluated first, by study/finalize.py, rather than told a
made-up number), and that adopts the trial a crashed driver had asked for instead of asking
anew, so the Optuna study and the results table agree trial by trial after ``--resume``.
"""

from __future__ import annotations

import optuna
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from study import optuna_private as private
from study.finalize import get_finalizer
from study.rows import COST, PROBE, QUALITY

#: ASHA: a third of the trials at each rung go on (Li et al.'s default reduction factor), and
#: the first rung comes after a third of the epoch budget.
ASHA_REDUCTION = 3
ASHA_GRACE_DIVISOR = 3


class StudySearch(OptunaSearch):
    """OptunaSearch (quality up, training seconds down) over the study's measured rows."""

    def __init__(self, *args, study_dir: str, **kwargs):
        super().__init__(*args, metric=[QUALITY, COST], mode=["max", "min"], **kwargs)
        self.study_dir = study_dir

    def suggest(self, trial_id):
        if trial_id not in private.ot_trials(self) and (orphan := self._orphan()) is not None:
            # Optuna asked for this one before the driver died, but Tune's saved state never
            # recorded it: run it now instead of asking anew, so no trial dangles in Optuna.
            private.ot_trials(self)[trial_id] = private.adopt(self, orphan)
        return super().suggest(trial_id)

    def _orphan(self) -> optuna.trial.FrozenTrial | None:
        mine = {t.number for t in private.ot_trials(self).values()}
        running = private.ot_study(self).get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return next((t for t in running if t.number not in mine), None)

    def on_trial_complete(self, trial_id, result=None, error=False):
        if self._told_before(trial_id):  # a resumed study re-reports rows it already has
            private.mark_completed(self, trial_id)
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
        ot_trial = private.ot_trials(self).get(trial_id)
        if ot_trial is None:
            return False
        finished = private.ot_study(self).get_trials(deepcopy=False, states=private.FINISHED)
        return any(t.number == ot_trial.number for t in finished)


def fail_orphans(study: optuna.Study) -> int:
    """Mark trials still RUNNING after the study as FAIL (asked for by a crashed driver and not
    resumed, e.g. when the resumed study needed fewer trials); returns how many."""
    orphans = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in orphans:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return len(orphans)


def make_scheduler(epochs: int) -> ASHAScheduler:
    """ASHA on the in-training quality probe (judge accuracy of a few DDIM samples per epoch):
    diffusion loss keeps falling while samples stay poor, so loss alone is a poor stop signal."""
    # max_t is one past the budget: ASHA stops a trial that reaches max_t, and a trial that
    # completes its budget must still run its own final evaluation.
    return ASHAScheduler(metric=PROBE, mode="max", time_attr="epoch", max_t=epochs + 1,
                         grace_period=max(1, epochs // ASHA_GRACE_DIVISOR),
                         reduction_factor=ASHA_REDUCTION)
