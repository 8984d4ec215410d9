"""Named study presets: a search space and a budget sized for the hardware (``--preset``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from study.search_space import SearchSpace
from trainables.guidance import GuidanceSearch


@dataclass(frozen=True)
class SamplerConfig:
    """The study's Optuna sampler (built by ``study.search.make_sampler``); each preset's was
    chosen by replaying searches on a tabular grid (benchmarks/search.py, RESULTS.md)."""

    kind: Literal["tpe", "random", "qmc", "nsga2", "gp"] = "tpe"
    n_startup_trials: int = 10  # TPE/GP: random trials before a model of the results is used
    multivariate: bool = False  # TPE: one joint density over the axes instead of one per axis
    constant_liar: bool = True  # TPE: running trials count as bad (trials run concurrently)
    population_size: int = 50  # NSGA-II: trials per generation

    def __post_init__(self):
        if self.kind not in ("tpe", "random", "qmc", "nsga2", "gp"):
            raise ValueError(f"sampler kind={self.kind!r}: use tpe, random, qmc, nsga2 or gp")
        if self.n_startup_trials < 0 or self.population_size < 2:
            raise ValueError(f"n_startup_trials={self.n_startup_trials} must be >= 0 and "
                             f"population_size={self.population_size} >= 2")


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
    asha: bool = True  # stop hopeless trials early (study/rungs.py AshaConfig.for_budget)
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
        num_trials=8, epochs=8, max_trial_minutes=4, confirm_seeds=1,
        description="a laptop/2-core study on the offline 10k MNIST in about 20 minutes",
    ),
    "gpu": Preset(
        SearchSpace(), num_trials=24, epochs=20, max_trial_minutes=15, batch_size=256,
        confirm_seeds=2,
        description="the full space on one GPU, several trials sharing it",
    ),
}
