"""Early stopping by asynchronous successive halving (ASHA), decided inside each trial.

Tune's ``ASHAScheduler`` stops a trial by ending its actor: the Train run dies with it, and the
epoch it reached must then be evaluated somewhere else, which used to be the Tune driver, one
stopped trial at a time (at 512 trials on 64 GPUs, benchmarks/scale_model.py found the GPUs
idle 98% of the time waiting on it). Here the very same scheduler only *decides*: after every
epoch a trial's rank 0 asks the study's ``RungKeeper``, and a trial told to stop ends training
(stop reason ``asha``) and evaluates itself on its own resources, exactly like a trial that
completed its budget.

    rungs = Rungs(AshaConfig.for_budget(epochs=8))
    rungs.decide("t1", {"epoch": 2, PROBE: 0.8})   # False: go on; True: stop here
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import SimpleNamespace

import ray
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from study.rows import PROBE

#: ASHA: a third of the trials at each rung go on (Li et al.'s default reduction factor), and
#: the first rung comes after a third of the epoch budget.
ASHA_REDUCTION = 3
ASHA_GRACE_DIVISOR = 3


@dataclass(frozen=True)
class AshaConfig:
    grace_period: int  # epochs before the first rung
    max_t: int  # one past the epoch budget: a trial that completes it is never "stopped"
    reduction_factor: int = ASHA_REDUCTION

    @classmethod
    def for_budget(cls, epochs: int) -> AshaConfig:
        return cls(grace_period=max(1, epochs // ASHA_GRACE_DIVISOR), max_t=epochs + 1)

    def to_dict(self) -> dict:
        return asdict(self)


class Rungs:
    """ASHA's decisions on the in-training quality probe (the judge's accuracy on a few samples
    at the best of a few w each epoch: diffusion loss keeps falling while samples stay poor),
    made by Tune's own ``ASHAScheduler`` through its public scheduler interface."""

    def __init__(self, cfg: AshaConfig):
        self.asha = ASHAScheduler(metric=PROBE, mode="max", time_attr="epoch", max_t=cfg.max_t,
                                  grace_period=cfg.grace_period,
                                  reduction_factor=cfg.reduction_factor)
        self._trials: dict[str, SimpleNamespace] = {}

    def decide(self, trial_id: str, result: dict) -> bool:
        """Whether the trial stops after the epoch `result` reports (its "epoch" and PROBE)."""
        trial = self._trials.get(trial_id)
        if trial is None:
            trial = self._trials[trial_id] = SimpleNamespace(trial_id=trial_id)
            self.asha.on_trial_add(None, trial)
        verdict = self.asha.on_trial_result(None, trial, {"epoch": result["epoch"],
                                                          PROBE: result.get(PROBE)})
        return verdict == TrialScheduler.STOP

    def replay(self, history: dict[str, list[dict]]) -> None:
        """Record what earlier trials reported, epoch by epoch (a resumed study's finished
        trials, from their outcome.json histories)."""
        for trial_id, epochs in history.items():
            for result in epochs:
                if PROBE in result:
                    self.decide(trial_id, result)


@ray.remote(num_cpus=0)
class RungKeeper:
    """The study's one ``Rungs``, shared by every trial's rank 0 (a Ray actor in the driver's
    Ray session; it needs no CPU of its own, so trials never wait for one)."""

    def __init__(self, cfg: AshaConfig, history: dict | None = None):
        self.rungs = Rungs(cfg)
        self.rungs.replay(history or {})

    def decide(self, trial_id: str, result: dict) -> bool:
        return self.rungs.decide(trial_id, result)


def start_keeper(cfg: AshaConfig, history: dict | None = None):
    """The study's RungKeeper, on this (the driver's) node: a worker node may be lost mid-study,
    and the keeper with it, which would fail every trial that asks it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return RungKeeper.options(scheduling_strategy=here).remote(cfg, history)
