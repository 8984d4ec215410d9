"""Confirmation runs: each configuration on the first-seed Pareto front trained again with more
seeds (the preset's ``confirm_seeds``), for error bars, started as soon as its point is final.

They run in the search's own Tuner (study/search.py hands them out once Optuna's trials are all
asked), so they fill the slots the search's last trials leave idle instead of waiting for the
slowest of them. A point is final when no running trial can dominate it: a running trial ends
at least as costly as the training seconds it has already spent, so it can only dominate
points that cost more than that. Front points cheaper than every running trial's spent seconds
stay on the front whatever those trials score; once no search trial runs, all of them do.

    plan = ConfirmPlan(seeds=(1,))
    plan.ready(rows, spent=[183.0])  # [{"depth": 3, ..., "seed": 1, "confirm_of": "ab12"}]

Only trials that trained to their budget count: a trial ASHA stopped is cheap because it was
stopped, and its configuration run to the budget would be another point; ASHA judged it not
worth that budget.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import pandas as pd

from analysis.tables import pareto_front
from study.rows import COST
from study.search_space import AXES


@dataclass(frozen=True)
class ConfirmPlan:
    seeds: tuple[int, ...]  # the further training seeds of every front configuration

    @classmethod
    def for_study(cls, seed: int, confirm_seeds: int) -> ConfirmPlan | None:
        """The study's plan (seeds after its own), or None when it confirms nothing."""
        return cls(tuple(seed + 1 + s for s in range(confirm_seeds))) if confirm_seeds else None

    def front(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The first-seed Pareto front of the finished search trials that trained to budget."""
        if rows.empty:
            return rows
        search = rows[rows["confirm_of"].isna() & (rows["stop_reason"] != "asha")]
        return pareto_front(search)

    def ready(self, rows: pd.DataFrame, spent: Iterable[float] = (),
              issued: Collection[tuple[str, int]] = ()) -> list[dict]:
        """The confirmation runs that can start now, longest first: every seed of each final
        front point (see the module's doc; `spent`: the training seconds each running search
        trial has spent) that is neither in `rows` nor in `issued` ((trial id, seed) pairs
        already handed out). Longest first (by the first seed's wall time), so the short runs
        fill the slots while the long ones train (LPT order)."""
        front = self.front(rows)
        if front.empty:
            return []
        limit = min(spent, default=math.inf)
        final = front[front[COST] < limit].sort_values("trial_wall_s", ascending=False,
                                                       kind="stable")
        confirms = rows[rows["confirm_of"].notna()]
        done = {(of, int(seed)) for of, seed in zip(confirms["confirm_of"], confirms["seed"],
                                                    strict=True) if seed == seed} | set(issued)
        return [{**{name: _plain(row[name]) for name in AXES}, "seed": seed,
                 "confirm_of": row["trial_id"]}
                for row in final.to_dict(orient="records") for seed in self.seeds
                if (row["trial_id"], seed) not in done]

    def planned(self, rows: pd.DataFrame) -> int:
        """How many confirmation runs the front as it stands calls for."""
        return len(self.front(rows)) * len(self.seeds)


def _plain(v):
    """A table cell as the plain Python value a search axis takes (numpy ints, bools)."""
    return v.item() if hasattr(v, "item") else v
