"""Named study presets: a search space and a budget sized for the hardware (``--preset``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from study.search_space import SearchSpace
from trainables.guidance import GuidanceSearch

SAMPLER_KINDS = ("gp", "tpe", "random", "qmc", "nsga2")


@dataclass(frozen=True)
class SamplerConfig:
    """The study's Optuna sampler (built by ``study.search.make_sampler``); each preset's was
    chosen by replaying searches on a tabular grid (benchmarks/search.py, RESULTS.md)."""

    kind: Literal["tpe", "random", "qmc", "nsga2", "gp"] = "tpe"
    n_startup_trials: int = 10  # TPE/GP: random trials before a model of the results is used
    multivariate: bool = False  # TPE: one joint density over the axes instead of one per axis
    # TPE: running trials count as bad, so concurrent trials spread out. GP needs no flag: it
    # scores candidates jointly with the running trials (q-batch log EHVI).
    constant_liar: bool = True
    population_size: int = 50  # NSGA-II: trials per generation

    def __post_init__(self):
        if self.kind not in SAMPLER_KINDS:
            raise ValueError(f"sampler kind={self.kind!r}: use one of {', '.join(SAMPLER_KINDS)}")
        if self.n_startup_trials < 0 or self.population_size < 2:
            raise ValueError(f"n_startup_trials={self.n_startup_trials} must be >= 0 and "
                             f"population_size={self.population_size} >= 2")


def sampler_kind(config: SamplerConfig | None) -> str:
    """The kind of sampler a study searches with; None is OptunaSearch's own TPESampler."""
    return config.kind if config else "tpe"


@dataclass(frozen=True)
class Preset:
    space: SearchSpace
    num_trials: int  # Optuna trials
    epochs: int  # per-trial epoch budget (cost differs by model size)
    max_trial_minutes: float  # per-trial training time cap
    batch_size: int = 128  # global batch
    workers_per_trial: int = 1  # DDP workers per trial
    timesteps: int = 100  # T
    eval_n_per_digit: int = 10  # samples per digit for CLIP-top-k and the judge
    eval_steps: int = 25  # DDIM steps at evaluation
    # each trained model's w: scored on this grid, refined around the best (trainables/guidance)
    guidance: GuidanceSearch = GuidanceSearch()
    confirm_seeds: int = 0  # further seeds each Pareto configuration is retrained with
    # the Optuna sampler (study.search.make_sampler); None: OptunaSearch's TPESampler(seed)
    sampler: SamplerConfig | None = None
    # stop trials early on the probe (study/rungs.py AshaConfig.for_budget). Off in the cpu and
    # gpu presets: replayed on the cpu grid it cost a third of the hypervolume at the same
    # number of trials (ASHA ranks by quality alone, so it stops the cheap models on the front)
    asha: bool = True
    description: str = ""


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        SearchSpace(depth=(2,), width=(8,), lr=(1e-3, 2e-3)),
        num_trials=2, epochs=1, max_trial_minutes=1, batch_size=64, workers_per_trial=2,
        eval_n_per_digit=4, eval_steps=5, timesteps=50,
        guidance=GuidanceSearch(grid=(1.0, 3.0), refine_rounds=0, n_per_digit=4, steps=5),
        description="2 tiny trials × 2 DDP workers, for tests and a first look",
    ),
    "cpu": Preset(
        SearchSpace(depth=(2, 3), width=(8, 16, 32), lr=(5e-4, 3e-3)),
        # 7 trials, not 8: an 8th adds 9% of hypervolume (replayed: 0.217 -> 0.238) for ~2 min,
        # which the 20-minute budget cannot spare beside the confirmations (cpu-20a: 20.3 min)
        num_trials=7, epochs=8, max_trial_minutes=4, confirm_seeds=1,
        # GP once 2 trials have finished: 1.20x random search's median hypervolume at 7 trials
        sampler=SamplerConfig("gp", n_startup_trials=2), asha=False,
        description="a laptop/2-core study on the offline 10k MNIST in about 15 minutes",
    ),
    "gpu": Preset(
        SearchSpace(), num_trials=24, epochs=20, max_trial_minutes=15, batch_size=256,
        confirm_seeds=2,
        # GP after a quarter of the trials, as in cpu (replayed on the cpu grid: no gpu grid yet)
        sampler=SamplerConfig("gp", n_startup_trials=6), asha=False,
        description="the full space on one GPU, several trials sharing it",
    ),
}
