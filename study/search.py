"""How the study searches: the multi-objective Optuna searcher (early stopping: study/rungs.py).

``StudySearch`` is Tune's ``OptunaSearch`` that tells Optuna the *measured* row of every
trial (as study/finalize.py records it), and that adopts the trial a crashed driver had asked
for instead of asking anew, so the Optuna study and the results table agree trial by trial
after ``--resume``. Once Optuna's trials are all asked, it hands out the confirmation runs of
the Pareto front (study/confirm.py), each as soon as its point is final, and then finishes.
"""

from __future__ import annotations

import io
import pickle

import optuna
import pandas as pd
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study import optuna_private as private
from study.confirm import ConfirmPlan
from study.console import CONSOLE
from study.finalize import get_finalizer
from study.mirror import mirror_for
from study.presets import SamplerConfig
from study.redact import redact, reveal
from study.rows import COST, QUALITY
from study.search_space import AXES, describe


def make_sampler(cfg: SamplerConfig, seed: int | None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a SamplerConfig describes (benchmarks/search.py replays these)."""
    samplers = optuna.samplers
    if cfg.kind == "random":
        return samplers.RandomSampler(seed=seed)
    if cfg.kind == "qmc":  # scrambled Sobol points: random search that fills the space evenly
        return samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed)
    if cfg.kind == "nsga2":
        return samplers.NSGAIISampler(population_size=cfg.population_size, seed=seed)
    if cfg.kind == "gp":
        return samplers.GPSampler(n_startup_trials=cfg.n_startup_trials, seed=seed)
    return samplers.TPESampler(n_startup_trials=cfg.n_startup_trials,
                               multivariate=cfg.multivariate, constant_liar=cfg.constant_liar,
                               seed=seed)


class StudySearch(OptunaSearch):
    """OptunaSearch (quality up, training seconds down) over the study's measured rows, drawing
    with the sampler `sampler_config` describes (seeded by `seed`); None: OptunaSearch's own
    default, TPESampler(seed). With a `confirm` plan, the confirmation runs follow Optuna's
    `num_trials` trials in the same Tuner (give Tune room for them in its num_samples)."""

    def __init__(self, *args, study_dir: str, sampler_config: SamplerConfig | None = None,
                 num_trials: int = 0, confirm: ConfirmPlan | None = None, **kwargs):
        if sampler_config is not None:
            kwargs["sampler"] = make_sampler(sampler_config, kwargs.pop("seed", None))
        super().__init__(*args, metric=[QUALITY, COST], mode=["max", "min"], **kwargs)
        self.study_dir = study_dir
        self.num_trials, self.confirm = num_trials, confirm
        self._spent: dict[str, float] = {}  # running search trial → training seconds so far
        self._confirming: dict[str, tuple[str, int]] = {}  # trial → (front trial, seed)

    def suggest(self, trial_id):
        if self.confirm is not None and len(private.ot_trials(self)) >= self.num_trials:
            return self._confirmation(trial_id)
        if trial_id not in private.ot_trials(self) and (orphan := self._orphan()) is not None:
            # Optuna asked for this one before the driver died, but Tune's saved state never
            # recorded it: run it now instead of asking anew, so no trial dangles in Optuna.
            private.ot_trials(self)[trial_id] = private.adopt(self, orphan)
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            self._spent[trial_id] = 0.0
        return config

    def _confirmation(self, trial_id):
        """The next confirmation run whose front point is final; None: wait for the running
        search trials; FINISHED once they are done and every run was handed out."""
        rows = pd.DataFrame(list(get_finalizer(self.study_dir).rows.values()))
        ready = self.confirm.ready(rows, self._spent.values(), self._confirming.values())
        if not ready:
            return Searcher.FINISHED if not self._spent else None
        run = ready[0]
        if self._spent:  # ahead of the search's end: say why it may start now
            CONSOLE.say(f"confirming {describe(run)} (trial {run['confirm_of']}) while "
                        f"{len(self._spent)} search trial(s) run: each has already trained "
                        f"longer than it did, so none can displace it from the Pareto front")
        self._confirming[trial_id] = (run["confirm_of"], run["seed"])
        # the axes at the top level too: they override the param space's sampled ones
        return {**{name: run[name] for name in AXES}, "fixed": run}

    def on_trial_result(self, trial_id, result):
        if trial_id in self._spent and result.get("train_seconds") is not None:
            self._spent[trial_id] = float(result["train_seconds"])
        super().on_trial_result(trial_id, result)

    def _orphan(self) -> optuna.trial.FrozenTrial | None:
        mine = {t.number for t in private.ot_trials(self).values()}
        running = private.ot_study(self).get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return next((t for t in running if t.number not in mine), None)

    def on_trial_complete(self, trial_id, result=None, error=False):
        self._spent.pop(trial_id, None)
        if trial_id in self._confirming:  # not an Optuna trial: ResultsCallback writes its row
            return
        if self._told_before(trial_id):  # a resumed study re-reports rows it already has
            private.mark_completed(self, trial_id)
            return
        finalizer = get_finalizer(self.study_dir)
        if error or result is None:  # the row is written by ResultsCallback.on_trial_error
            super().on_trial_complete(trial_id, None, error=True)
        else:
            row = finalizer(trial_id, result, _config(result))
            failed = row.get("status") != "ok" or row.get(QUALITY) is None
            super().on_trial_complete(trial_id, None if failed else row, error=failed)
        if (mirror := mirror_for(finalizer.spec)) is not None:  # an object-store study
            mirror.after_tell()

    def __reduce__(self):
        """Pickled (Tune keeps the searcher in tuner.pkl and its saved state) with each Optuna
        storage as its URL with the password masked; unpickling reconnects with the full URL
        this driver was given (study/redact.py)."""
        buf = io.BytesIO()
        _StoragePickler(buf).dump(self.__dict__.copy())
        return _unpickle_search, (type(self), buf.getvalue())

    def save(self, checkpoint_path: str):
        """OptunaSearch's saved state (Tune keeps it in the study's ray/ folder and uploads it
        with the study), with each Optuna storage saved by its URL with the password masked."""
        with open(checkpoint_path, "wb") as f:
            _StoragePickler(f).dump(self.__dict__.copy())

    def restore(self, checkpoint_path: str):
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(_StorageUnpickler(f).load())

    def _told_before(self, trial_id) -> bool:
        """Whether Optuna already holds this trial's outcome (told before a driver crash)."""
        ot_trial = private.ot_trials(self).get(trial_id)
        if ot_trial is None:
            return False
        finished = private.ot_study(self).get_trials(deepcopy=False, states=private.FINISHED)
        return any(t.number == ot_trial.number for t in finished)


def _config(result: dict) -> dict:
    """A trial's config from the result Tune hands searchers: flattened, "config/depth"."""
    return {k.removeprefix("config/"): v for k, v in result.items() if k.startswith("config/")}


def _unpickle_search(cls, data: bytes) -> StudySearch:
    search = cls.__new__(cls)
    search.__dict__.update(_StorageUnpickler(io.BytesIO(data)).load())
    return search


class _StoragePickler(pickle.Pickler):
    """Pickles an Optuna RDBStorage as its redacted URL (study/redact.py)."""

    def persistent_id(self, obj):
        if isinstance(obj, optuna.storages.RDBStorage):
            return ("optuna-rdb-storage", redact(obj.url))
        return None


class _StorageUnpickler(pickle.Unpickler):
    """Reconnects each storage by the full URL this driver was given for it."""

    def __init__(self, f):
        super().__init__(f)
        self._storages: dict[str, optuna.storages.RDBStorage] = {}

    def persistent_load(self, pid):
        kind, url = pid
        if kind != "optuna-rdb-storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        if url not in self._storages:
            self._storages[url] = optuna.storages.RDBStorage(reveal(url))
        return self._storages[url]


def fail_orphans(study: optuna.Study) -> int:
    """Mark trials still RUNNING after the study as FAIL (asked for by a crashed driver and not
    resumed, e.g. when the resumed study needed fewer trials); returns how many."""
    orphans = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in orphans:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return len(orphans)
