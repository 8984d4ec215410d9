"""Named study presets: a search space and a budget sized for the hardware (``--preset``)."""

from __future__ import annotations

from dataclasses import dataclass

from study.search_space import SearchSpace


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
    description: str = ""


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        SearchSpace(depth=(2,), width=(8,), lr=(1e-3, 2e-3), guidance=(1.0, 3.0)),
        num_trials=2, epochs=1, max_trial_minutes=1, batch_size=64, workers_per_trial=2,
        eval_n_per_digit=4, eval_steps=5, timesteps=50,
        description="2 tiny trials × 2 DDP workers, for tests and a first look",
    ),
    "cpu": Preset(
        SearchSpace(depth=(2, 3), width=(8, 16, 32), lr=(5e-4, 3e-3), guidance=(1.0, 4.0)),
        num_trials=8, epochs=8, max_trial_minutes=4,
        description="a laptop/2-core study on the offline 10k MNIST in about 20 minutes",
    ),
    "gpu": Preset(
        SearchSpace(), num_trials=24, epochs=20, max_trial_minutes=15, batch_size=256,
        description="the full space on one GPU, several trials sharing it",
    ),
}
