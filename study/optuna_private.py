"""Every use of Optuna's (and Tune's OptunaSearch's) private API, in one place.

Crash recovery needs a few things neither library offers publicly: the Optuna trial behind a
Tune trial id, adopting a trial a crashed driver asked for, and sampling the parameters such a
trial is missing. Each is a small function here; tests/test_optuna_private.py exercises every
one against the installed versions, so an upgrade that changes them fails loudly there instead
of silently breaking ``--resume``.
"""

from __future__ import annotations

import optuna
from ray.tune.search.optuna import OptunaSearch

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
            optuna.trial.TrialState.PRUNED)


def ot_trials(search: OptunaSearch) -> dict[str, optuna.Trial]:
    """Tune trial id → the Optuna trial OptunaSearch asked for it (``_ot_trials``)."""
    return search._ot_trials


def ot_study(search: OptunaSearch) -> optuna.Study:
    """The Optuna study OptunaSearch asks and tells (``_ot_study``)."""
    return search._ot_study


def mark_completed(search: OptunaSearch, trial_id: str) -> None:
    """Record a trial as done in OptunaSearch without telling Optuna (``_completed_trials``):
    for a resumed trial whose outcome Optuna already holds."""
    search._completed_trials.add(trial_id)


def adopt(search: OptunaSearch, frozen: optuna.trial.FrozenTrial) -> optuna.Trial:
    """A live handle on a RUNNING trial that a crashed driver asked for, with any parameter a
    kill between Optuna's writes left unset sampled now, as ``study.ask(fixed_distributions)``
    does. Optuna has no public call for either: ``Trial(study, _trial_id)`` and
    ``Trial._suggest``."""
    trial = optuna.Trial(search._ot_study, frozen._trial_id)
    for name, dist in search._space.items():
        if name not in frozen.params:
            trial._suggest(name, dist)
    return trial
