"""The study's one search space: its axes, their ranges, and what each axis sets.

Only what changes the trained model is searched: classifier-free guidance is a sampling-time
knob, tuned per trained model after training (trainables/guidance.py), not per training run.

An axis is declared once, in ``AXES``: how it is sampled, which ``TrialConfig`` field it sets
and how its value maps to that field. Everything else (Tune's param space, a trial's config,
its row's columns, its name in the dashboard, a confirmation run's parameters) is derived
from that table, so adding an axis is one entry here plus its range in ``SearchSpace``.

A YAML/JSON file may override any range (``--space``)::

    # space.yaml
    depth: [2, 3]
    lr: [0.0005, 0.002]
    style: [false, true]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from trainables.config import TrialConfig


def _identity(v):
    return v


def _style_dim(on: bool) -> int:
    from trainables.style import STYLE_DIM  # torch: only once a config is built

    return STYLE_DIM if on else 0


@dataclass(frozen=True)
class Axis:
    """One searched hyperparameter."""

    kind: Literal["choice", "loguniform", "uniform"]
    field: str  # "<section>.<field>" of TrialConfig that the axis sets
    to_config: Callable[[Any], Any] = _identity  # search value -> config value
    from_config: Callable[[Any], Any] = _identity  # config value -> search value (row column)
    bounds: tuple[float, float] | None = None  # allowed values (choice) or range ends
    tag: str = ""  # prefix in trial names (d3w16); "" keeps the axis out of the name
    fmt: str = "g"  # format of the value in the one-line trial summary


AXES: dict[str, Axis] = {
    "depth": Axis("choice", "model.depth", int, int, bounds=(1, 4), tag="d"),  # levels
    "width": Axis("choice", "model.width", int, int, bounds=(8, 256), tag="w"),  # channels
    "lr": Axis("loguniform", "train.lr", float, float, fmt=".2g"),  # AdamW peak lr
    # True also conditions on slant and thickness (UNetConfig.style_dim, trainables/style.py)
    "style": Axis("choice", "model.style_dim", _style_dim, bool),
}


@dataclass(frozen=True)
class SearchSpace:
    """The range of every axis in AXES: choices, or [low, high] for the continuous ones."""

    depth: tuple[int, ...] = (2, 3, 4)
    width: tuple[int, ...] = (8, 16, 32, 64)
    lr: tuple[float, float] = (1e-4, 3e-3)
    style: tuple[bool, ...] = (False,)

    def __post_init__(self):
        assert [f.name for f in fields(self)] == list(AXES), "SearchSpace and AXES disagree"
        for f in fields(self):  # lists from YAML/JSON/study.json → tuples
            object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        if not self.depth or not self.width:
            raise ValueError("the search space is empty: depth and width need at least one "
                             "choice each")
        for name, axis in AXES.items():
            _check(name, axis, getattr(self, name))

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
        if "guidance" in data:
            raise ValueError(f"search-space file {path}: guidance is not searched per trial any "
                             f"more: every trained model's w is tuned after training "
                             f"(trainables/guidance.py); remove 'guidance'")
        unknown = set(data) - set(AXES)
        if unknown:
            raise ValueError(f"unknown search axes {sorted(unknown)} in {path}; "
                             f"use {', '.join(AXES)}")
        bad = [k for k, v in data.items() if not isinstance(v, list)]
        if bad:
            raise ValueError(f"search-space file {path}: {', '.join(bad)} must be a list, e.g. "
                             f"'{bad[0]}: {list(getattr(self, bad[0]))}'")
        try:
            return replace(self, **data)
        except (ValueError, TypeError) as e:  # e.g. a range with a non-number in it
            raise ValueError(f"search-space file {path}: {e}") from None

    def to_tune(self) -> dict:
        """Tune's param_space (sampled by the Optuna searcher)."""
        from ray import tune

        sample = {"choice": lambda v: tune.choice(list(v)),
                  "loguniform": lambda v: tune.loguniform(*v),
                  "uniform": lambda v: tune.uniform(*v)}
        return {name: sample[axis.kind](getattr(self, name)) for name, axis in AXES.items()}


def _check(name: str, axis: Axis, values: tuple) -> None:
    """A ValueError naming the axis and its bad range."""
    shown = list(values)
    if axis.kind == "choice":
        if name == "style":
            if not values or any(not isinstance(v, bool) for v in values):
                raise ValueError(f"style choices {shown} must be one or both of false, true")
            return
        lo, hi = axis.bounds
        if not values or any(isinstance(v, bool) or not lo <= v <= hi for v in values):
            raise ValueError(f"{name} choices {shown} must lie in {lo:g}..{hi:g}")
        return
    if len(values) != 2:
        raise ValueError(f"{name} range {shown} must be [low, high]")
    lo, hi = values
    if axis.kind == "loguniform" and not 0 < lo <= hi:
        raise ValueError(f"{name} range {shown} must be positive and low <= high")
    if axis.kind == "uniform" and not axis.bounds[0] <= lo <= hi <= axis.bounds[1]:
        raise ValueError(f"{name} range {shown} must satisfy {axis.bounds[0]:g} <= low <= high")


def hyperparameters(config: dict) -> dict:
    """A trial's hyperparameters: sampled by the searcher, or fixed (a confirmation run's
    ``{"fixed": {...}}``, which also carries its seed and the trial it confirms)."""
    return config.get("fixed", config)


def apply(params: dict, base: TrialConfig) -> TrialConfig:
    """The base trial config with the searched values (and a confirmation run's seed) set."""
    from trainables.config import TrialConfig

    d = base.to_dict()
    for name, axis in AXES.items():
        if name in params:
            section, key = axis.field.split(".")
            d[section][key] = axis.to_config(params[name])
    if "seed" in params:
        d["train"]["seed"] = int(params["seed"])
    return TrialConfig.from_dict(d)


def values(cfg: TrialConfig) -> dict:
    """Every axis's value in a trial config (the row's axis columns)."""
    out = {}
    for name, axis in AXES.items():
        section, key = axis.field.split(".")
        out[name] = axis.from_config(getattr(getattr(cfg, section), key))
    return out


def trial_name(trial_id: str, params: dict) -> str:
    """`<trial id>_d3w16`: the name a trial shows in Tune's table and the dashboard."""
    return trial_id + "_" + "".join(f"{axis.tag}{params.get(name)}" for name, axis in AXES.items()
                                    if axis.tag)


def describe(row: dict) -> str:
    """The axes of a row in one line: `d3 w16 lr=0.001`."""
    parts = []
    for name, axis in AXES.items():
        v = row.get(name)
        if axis.tag:  # a table cell may hold 3.0 for 3
            parts.append(f"{axis.tag}{int(v) if v == v and v is not None else v}")
        elif isinstance(v, int | float) and not isinstance(v, bool):
            parts.append(f"{name}={v:{axis.fmt}}")
        elif v:
            parts.append(name)
    return " ".join(parts)
