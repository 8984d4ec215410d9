"""The study's one search space and its named presets.

Searched axes: U-Net depth (resolution levels), width (base channels), learning rate
(log-uniform), classifier-free guidance weight w (uniform) and style conditioning (on/off; off
in every preset). Presets narrow the space and set the per-trial budget for the hardware; a
YAML/JSON file may override any range::

    # space.yaml
    depth: [2, 3]
    lr: [0.0005, 0.002]
    style: [false, true]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class SearchSpace:
    depth: tuple[int, ...] = (2, 3, 4)  # choices; resolution levels of the U-Net
    width: tuple[int, ...] = (8, 16, 32, 64)  # choices; base channels
    lr: tuple[float, float] = (1e-4, 3e-3)  # [low, high], log-uniform
    guidance: tuple[float, float] = (0.0, 6.0)  # [low, high], uniform
    # choices; True also conditions on slant and thickness (UNetConfig.style_dim, style.py)
    style: tuple[bool, ...] = (False,)

    def __post_init__(self):
        for f in fields(self):  # lists from YAML/JSON/study.json → tuples
            object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        if not self.depth or not self.width:
            raise ValueError("the search space is empty: depth and width need at least one "
                             "choice each")
        if any(not 1 <= d <= 4 for d in self.depth):
            raise ValueError(f"depth choices {list(self.depth)} must lie in 1..4")
        if any(not 8 <= w <= 256 for w in self.width):
            raise ValueError(f"width choices {list(self.width)} must lie in 8..256")
        lo, hi = self.lr
        if not 0 < lo <= hi:
            raise ValueError(f"lr range {list(self.lr)} must be positive and low <= high")
        glo, ghi = self.guidance
        if not 0 <= glo <= ghi:
            raise ValueError(f"guidance range {list(self.guidance)} must satisfy "
                             f"0 <= low <= high")
        if not self.style or any(not isinstance(s, bool) for s in self.style):
            raise ValueError(f"style choices {list(self.style)} must be one or both of "
                             f"false, true")

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    def override(self, path: Path) -> SearchSpace:
        """This space with the ranges given in a YAML or JSON file replaced."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") \
                else json.loads(path.read_text())
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise ValueError(f"cannot read search-space file {path}: "
                             f"{str(e).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ValueError(f"search-space file {path} must hold a mapping of axis: range")
        unknown = set(data) - set(asdict(self))
        if unknown:
            raise ValueError(f"unknown search axes {sorted(unknown)} in {path}; "
                             f"use {', '.join(asdict(self))}")
        bad = [k for k, v in data.items() if not isinstance(v, list)]
        if bad:
            raise ValueError(f"search-space file {path}: {', '.join(bad)} must be a list, e.g. "
                             f"'{bad[0]}: {list(getattr(self, bad[0]))}'")
        try:
            return replace(self, **data)
        except (ValueError, TypeError) as e:  # e.g. a range with a non-number in it
            raise ValueError(f"search-space file {path}: {e}") from None


def to_tune(space: SearchSpace) -> dict:
    """Tune's param_space for OptunaSearch."""
    from ray import tune

    return {"depth": tune.choice(list(space.depth)), "width": tune.choice(list(space.width)),
            "lr": tune.loguniform(*space.lr), "guidance": tune.uniform(*space.guidance),
            "style": tune.choice(list(space.style))}


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

