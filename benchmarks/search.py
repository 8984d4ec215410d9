"""Does the study's search beat random search? Searches replayed on a tabular grid.

    python benchmarks/search.py                       # the cpu grid, 20 repetitions per searcher
    python benchmarks/search.py --grid benchmarks/grids/gpu.csv --budgets gpu=24x2 --reps 40

A grid (benchmarks/search_grid.py) holds every configuration of the preset's space trained once,
with cost and ASHA's probe after every epoch and quality wherever a study could read it. A
replay runs a whole study against it in simulated time: the study's own searcher
(``study.search.StudySearch`` with the sampler ``study.search.make_sampler`` builds, set up on
``SearchSpace.to_tune()`` as Tune does) suggests each trial; its lr is mapped to the grid's
nearest lr (log scale: the usual tabular-benchmark trick); trials run ``concurrent`` at a time;
each epoch ends when its recorded cost (plus the study's per-trial start-up and per-epoch
overhead) has passed, and the study's own ``study.rungs.Rungs`` (Tune's ASHAScheduler) decides
on the recorded probe, in the order the epochs of concurrent trials end; the preset's time cap
(applied by the grid already) ends a trial at the nearer whole epoch. A finished trial tells
Optuna what the study's Finalizer would: its quality at the epoch it stopped after and its
training seconds up to it (a diverged one fails). tests/test_search_replay.py checks both
against the study's searcher and rungs.

Each searcher is replayed with seeds 0..reps-1 (the study's ``--seed``), ASHA off and on (random
search with every ASHA setting the grid can replay), for each preset's budget
(cpu: 7 trials, 2 at a time; gpu: 24 trials, 2 at a time on one GPU, replayed on the cpu grid
when no gpu grid is given). Hypervolume of (quality up, training seconds down), from the
reference point (quality 0, 1.1 × the most a trial can cost) with seconds divided by it, is
plotted against trials (median, quartiles) and tabulated (``hv_trained``: the front of the
trials ASHA did not stop, the configurations trained to their budget); the script prints, for
each budget, ``hypervolume ratio (default / random) at N trials: X`` (medians: the preset's
sampler with its ASHA setting over random search without ASHA) and the trials the default
needs to reach random's median hypervolume at N, as a share of N.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import logging
import math
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from study.presets import PRESETS, SamplerConfig  # noqa: E402
from study.rows import COST, PROBE, QUALITY  # noqa: E402
from study.rungs import AshaConfig, Rungs  # noqa: E402
from study.search_space import SearchSpace  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT = "default"  # the preset's own sampler and ASHA (study/presets.py)


@dataclass(frozen=True)
class Clock:
    """A trial's time outside its training steps, which orders concurrent trials' events: the
    cpu study's measured Ray Train start-up, per-epoch validation + probe + checkpoint, and
    final evaluation with the guidance search (benchmarks/RESULTS.md "Study efficiency")."""

    startup_s: float = 15.0
    epoch_s: float = 1.5
    eval_s: float = 25.0


@dataclass(frozen=True)
class Budget:
    preset: str
    trials: int
    concurrent: int


@dataclass
class Outcome:
    trial_id: str
    params: dict
    point: tuple  # (depth, width, lr) of the grid
    epoch: int  # the epoch its quality is from
    quality: float | None  # None: the trial failed (diverged)
    cost: float  # training seconds up to its stop
    reason: str  # completed, asha, time_budget, early_stop, diverged
    started: float  # simulated seconds since the study started
    finished: float


class Grid:
    """A grid's CSV and its sidecar: per configuration, its rows epoch by epoch."""

    def __init__(self, path: Path):
        df = pd.read_csv(path)
        df["stop_reason"] = df["stop_reason"].fillna("")  # only a configuration's last row has one
        self.meta = json.loads(Path(path).with_suffix(".json").read_text())
        space = self.meta.get("space")  # a slice of a grid covers less than its preset
        self.space = SearchSpace(**space) if space else PRESETS[self.meta["preset"]].space
        self.epochs = int(self.meta["epochs"])
        self.runs = {key: g.sort_values("epoch").to_dict("records")
                     for key, g in df.groupby(["depth", "width", "lr"])}
        self.lrs = sorted({k[2] for k in self.runs})
        # epochs before the last whose quality every configuration that reached them has (the
        # grid scores quality only where ASHA can stop; benchmarks/search_grid.py)
        self.scored = {e for e in range(1, self.epochs) if all(
            not math.isnan(r["quality"]) for rows in self.runs.values() for r in rows
            if r["epoch"] == e)}

    def point(self, params: dict) -> tuple:
        lr = min(self.lrs, key=lambda v: abs(math.log(v / params["lr"])))
        return int(params["depth"]), int(params["width"]), lr

    def max_cost(self, cap: float | None) -> float:
        most = max(rows[-1]["cost_s"] for rows in self.runs.values())
        return min(most, cap) if cap else most


def schedule(rows: list[dict], cap: float | None) -> tuple[list[float], int, dict, float, str]:
    """How a trial of these epoch rows runs under the time cap: (the training seconds at which
    each epoch it runs ends, index of the last one, the row its quality is read from, its cost,
    its stop reason if it runs to the end). A capped epoch counts as the nearer whole epoch."""
    costs = [r["cost_s"] for r in rows]
    last = len(rows) - 1
    reason = rows[-1]["stop_reason"] or "completed"  # a grid's slice: its last epoch completes
    if cap is not None and (over := next((i for i, c in enumerate(costs) if c >= cap), None)) \
            is not None and (over < last or costs[over] > cap):
        before = costs[over - 1] if over else 0.0
        share = (cap - before) / (costs[over] - before)  # of the capped epoch trained
        read = over if share >= 0.5 or over == 0 else over - 1
        return costs[:over] + [cap], over, _scored(rows[read]), cap, "time_budget"
    return costs, last, _scored(rows[-1]), costs[-1], reason


def _scored(row: dict) -> dict:
    if math.isnan(row["quality"]):
        raise ValueError(f"the grid has no quality for {row['depth']}/{row['width']}/"
                         f"{row['lr']:g} at epoch {row['epoch']}, where a replay reads it")
    return row


def replay(grid: Grid, sampler: SamplerConfig | None, asha: AshaConfig | None, budget: Budget,
           seed: int, cap: float | None, clock: Clock = Clock()) -> list[Outcome]:
    """One study against the grid; its trials in the order they finished."""
    from ray.tune.search.optuna import OptunaSearch

    from study.search import StudySearch

    search = StudySearch(study_dir="", study_name="replay", seed=seed, sampler_config=sampler)
    search.set_search_properties(None, None, grid.space.to_tune())
    rungs = Rungs(asha) if asha else None
    events: list = []
    order = itertools.count()
    trials: dict[str, dict] = {}
    done: list[Outcome] = []

    def start(now: float) -> None:
        tid = f"trial_{len(trials):04d}"
        params = search.suggest(tid)
        point = grid.point(params)
        rows = grid.runs[point]
        ends, last, read, cost, reason = schedule(rows, cap)
        trials[tid] = dict(params=params, point=point, rows=rows, ends=ends, last=last,
                           read=read, cost=cost, reason=reason, start=now)
        heapq.heappush(events, (_epoch_end(trials[tid], 0, clock), next(order), tid, 0))

    for _ in range(min(budget.concurrent, budget.trials)):
        start(0.0)
    while events:
        now, _, tid, i = heapq.heappop(events)
        t = trials[tid]
        if i < 0:  # the trial's evaluation is done: Tune hands its row to the searcher
            failed = t["reason"] == "diverged"
            OptunaSearch.on_trial_complete(search, tid, None if failed else {
                QUALITY: t["read"]["quality"], COST: t["cost"]}, error=failed)
            done.append(Outcome(tid, t["params"], t["point"], int(t["read"]["epoch"]),
                                None if failed else t["read"]["quality"], t["cost"],
                                t["reason"], t["start"], now))
            if len(trials) < budget.trials:
                start(now)
            continue
        row, stop = t["rows"][i], i == t["last"]
        # fit asks the rungs after every epoch before the budget's last, unless it stopped
        if not stop and rungs is not None and row["epoch"] < grid.epochs \
                and rungs.decide(tid, {"epoch": int(row["epoch"]), PROBE: row[PROBE]}):
            stop = True
            t.update(read=_scored(row), cost=t["ends"][i], reason="asha")
        if stop:
            heapq.heappush(events, (now + clock.eval_s, next(order), tid, -1))
        else:
            heapq.heappush(events, (_epoch_end(t, i + 1, clock), next(order), tid, i + 1))
    return done


def _epoch_end(t: dict, i: int, clock: Clock) -> float:
    return t["start"] + clock.startup_s + t["ends"][i] + (i + 1) * clock.epoch_s


def hypervolume(points: list[tuple[float, float]], ref_cost: float) -> float:
    """Area dominated by (quality, cost) points, quality up from 0, cost down from ref_cost,
    with cost divided by ref_cost (so at most 1)."""
    area, best = 0.0, 0.0
    for q, c in sorted(points, key=lambda p: (p[1], -p[0])):
        if c < ref_cost and q > best:
            area += (q - best) * (1 - c / ref_cost)
            best = q
    return area


def curve(outcomes: list[Outcome], ref_cost: float) -> list[float]:
    """Hypervolume after each finished trial."""
    ok = [(o.quality, o.cost) for o in outcomes]
    return [hypervolume([p for p in ok[:n] if p[0] is not None], ref_cost)
            for n in range(1, len(ok) + 1)]


def candidates(budget: Budget) -> dict[str, SamplerConfig | None]:
    """The searchers compared, with start-up trials and generations fitted to the budget: TPE
    models the results after a quarter (or three eighths) of the trials, never fewer than run
    at a time; NSGA-II gets two or more generations."""
    n, k = budget.trials, budget.concurrent
    quarter, three_eighths = max(2, k, round(n / 4)), max(3, k, round(3 * n / 8))
    out: dict[str, SamplerConfig | None] = {
        DEFAULT: PRESETS[budget.preset].sampler,
        "random": SamplerConfig("random"),
        "qmc": SamplerConfig("qmc"),  # scrambled Sobol: random search that fills the space
        "tpe-10": None,  # OptunaSearch's own default: TPESampler(seed), 10 start-up trials
        "nsga2": SamplerConfig("nsga2", population_size=max(4, n // 4)),
    }
    for s in (quarter, three_eighths):
        out[f"tpe-s{s}"] = SamplerConfig("tpe", n_startup_trials=s)
        out[f"tpe-mv-s{s}"] = SamplerConfig("tpe", n_startup_trials=s, multivariate=True)
    out[f"tpe-mv-s{quarter}-noliar"] = SamplerConfig("tpe", n_startup_trials=quarter,
                                                     multivariate=True, constant_liar=False)
    out[f"gp-s{quarter}"] = SamplerConfig("gp", n_startup_trials=quarter)
    return out


def asha_variants(grid: Grid) -> dict[str, AshaConfig | None]:
    """ASHA off, the study's (``AshaConfig.for_budget``: "on"), and every other grace period and
    reduction factor whose stops fall where the grid scored quality ("g<grace>r<factor>")."""
    base = AshaConfig.for_budget(grid.epochs)
    out: dict[str, AshaConfig | None] = {"off": None, "on": base}
    seen = {(tuple(stop_epochs(base, grid.epochs)), base.reduction_factor)}
    for grace in range(1, grid.epochs):
        for factor in (2, 3, 4):
            cfg = replace(base, grace_period=grace, reduction_factor=factor)
            stops = tuple(stop_epochs(cfg, grid.epochs))
            if stops and set(stops) <= grid.scored and (stops, factor) not in seen:
                seen.add((stops, factor))
                out[f"g{grace}r{factor}"] = cfg
    return out


def stop_epochs(cfg: AshaConfig, epochs: int) -> list[int]:
    """The epochs this ASHA can stop a trial after: Tune's rungs before the budget's last."""
    bracket = Rungs(cfg).asha._brackets[0]  # Tune's own milestones, not a copy of its formula
    return sorted(int(m) for m, _ in bracket._rungs if m < epochs)


def describe(cfg: SamplerConfig | None) -> str:
    if cfg is None:
        return "TPESampler(seed) (10 start-up)"
    if cfg.kind == "tpe":
        return (f"TPE, {cfg.n_startup_trials} start-up, "
                f"{'multivariate' if cfg.multivariate else 'independent'}"
                f"{', constant liar' if cfg.constant_liar else ''}")
    return {"random": "RandomSampler", "qmc": "QMCSampler (scrambled Sobol)",
            "gp": f"GP, {cfg.n_startup_trials} start-up",
            "nsga2": f"NSGA-II, population {cfg.population_size}"}[cfg.kind]


def run_budget(grid: Grid, budget: Budget, reps: int, cap: float | None, ref: float,
               all_asha: bool = False) -> pd.DataFrame:
    """One row per (searcher, ASHA setting, repetition): the hypervolume curve and totals.
    Random search gets every ASHA setting, the others off and on (all with `all_asha`); a
    searcher equal to one already replayed (the default is one of the others) is not rerun."""
    records, done = [], {}
    variants = asha_variants(grid)
    for name, sampler in candidates(budget).items():
        for asha_name in variants if all_asha or name == "random" else ["off", "on"]:
            if (sampler, asha_name) not in done:
                done[sampler, asha_name] = [
                    _measure(replay(grid, sampler, variants[asha_name], budget, seed, cap), ref)
                    for seed in range(reps)]
            records += [{"searcher": name, "asha": asha_name, "seed": seed, **m}
                        for seed, m in enumerate(done[sampler, asha_name])]
            print(f"  {budget.preset}: {name} ({describe(sampler)}), ASHA {asha_name}: done",
                  flush=True)
    return pd.DataFrame(records)


def _measure(out: list[Outcome], ref: float) -> dict:
    return {"hv": curve(out, ref), "spent_s": sum(o.cost for o in out),
            # the front of the trials trained to their budget or cap only
            "hv_trained": hypervolume([(o.quality, o.cost) for o in out
                                       if o.reason != "asha" and o.quality is not None], ref),
            "stopped": sum(o.reason == "asha" for o in out),
            "study_s": max(o.finished for o in out), "distinct": len({o.point for o in out})}


def summarise(df: pd.DataFrame, budget: Budget) -> pd.DataFrame:
    n = budget.trials
    curves = {key: np.array(list(g["hv"])) for key, g in df.groupby(["searcher", "asha"])}
    base = np.median(curves["random", "off"], axis=0)  # random search without ASHA
    rows = []
    for (name, asha), c in curves.items():
        med = np.median(c, axis=0)
        reach = next((i + 1 for i, v in enumerate(med) if v >= base[-1] - 1e-12), None)
        g = df[(df["searcher"] == name) & (df["asha"] == asha)]
        rows.append({"searcher": name, "asha": asha, "hv_median": med[-1],
                     "hv_q1": np.percentile(c[:, -1], 25), "hv_q3": np.percentile(c[:, -1], 75),
                     "ratio_vs_random": med[-1] / base[-1],
                     "hv_trained": g["hv_trained"].median(),
                     "ratio_at_half": med[n // 2 - 1] / base[-1],
                     "trials_to_random": reach / n if reach else math.inf,
                     "spent_s": g["spent_s"].median(), "study_s": g["study_s"].median(),
                     "stopped": g["stopped"].mean(),
                     "distinct": g["distinct"].mean()})
    return pd.DataFrame(rows).sort_values("hv_median", ascending=False)


def plot(results: dict[str, pd.DataFrame], budgets: list[Budget], best: float,
         path: Path) -> None:
    """Median hypervolume vs trials per searcher (quartiles shaded for the default and random
    search), ASHA off above and on below on one scale; dashed: every configuration's front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = sorted({n for df in results.values() for n in df["searcher"]} - {DEFAULT, "random"})
    hues = plt.get_cmap("tab20").colors  # dark shades first, then the light ones
    colour = {DEFAULT: "black", "random": "tab:red",
              **dict(zip(others, [c for c in hues[::2] + hues[1::2] if c not in
                                  (hues[6], hues[7])], strict=False))}  # no reds
    fig, axes = plt.subplots(2, len(budgets), figsize=(6 * len(budgets), 8), squeeze=False,
                             sharey=True)
    for col, b in enumerate(budgets):
        df = results[b.preset]
        for row, asha in enumerate(("off", "on")):
            ax = axes[row][col]
            for name, g in df[df["asha"] == asha].groupby("searcher"):
                c = np.array(list(g["hv"]))
                x = np.arange(1, c.shape[1] + 1)
                main = name in (DEFAULT, "random")
                ax.plot(x, np.median(c, axis=0), label=name, color=colour[name],
                        lw=2.5 if main else 1)
                if main:
                    ax.fill_between(x, *np.percentile(c, [25, 75], axis=0), alpha=0.15,
                                    color=colour[name])
            ax.axhline(best, ls="--", color="grey", lw=1, label="every configuration")
            ax.set(title=f"{b.preset} budget ({b.trials} trials, {b.concurrent} at a time), "
                         f"ASHA {asha}", xlabel="trials finished", ylabel="hypervolume")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def grid_front(grid: Grid, cap: float | None, ref: float) -> float:
    """The hypervolume of every configuration trained to its budget (or cap)."""
    return hypervolume([(read["quality"], cost) for read, cost in
                        (schedule(rows, cap)[2:4] for rows in grid.runs.values())], ref)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=Path, default=HERE / "grids" / "cpu.csv")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--budgets", nargs="+", default=["cpu=7x2", "gpu=24x2"],
                   help="preset=TRIALSxCONCURRENT")
    p.add_argument("--all-asha", action="store_true",
                   help="every ASHA setting the grid allows for every searcher (default: for "
                        "random search; the others with ASHA off and on)")
    p.add_argument("--plot", type=Path, default=HERE / "search_hv.png")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("ray").setLevel(logging.ERROR)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    grid = Grid(args.grid)
    cap = grid.meta.get("max_trial_seconds")
    ref = 1.1 * grid.max_cost(cap)
    budgets = [Budget(name, *map(int, spec.split("x")))
               for name, spec in (b.split("=") for b in args.budgets)]
    print(f"grid {args.grid} ({len(grid.runs)} configurations × {grid.epochs} epochs, "
          f"{grid.meta['preset']} preset, {grid.meta['runs'][0]['machine']}); time cap "
          f"{cap} s; hypervolume reference: quality 0, {ref:.0f} training seconds; every "
          f"configuration's front: {grid_front(grid, cap, ref):.3f}", flush=True)
    results, tables = {}, {}
    for b in budgets:
        if b.preset != grid.meta["preset"]:
            print(f"note: the {b.preset} budget is replayed on the {grid.meta['preset']} grid",
                  flush=True)
        results[b.preset] = run_budget(grid, b, args.reps, cap, ref, args.all_asha)
        tables[b.preset] = summarise(results[b.preset], b)
    pd.set_option("display.width", 200)
    for b in budgets:
        t = tables[b.preset]
        print(f"\n{b.preset} budget: {b.trials} trials, {b.concurrent} at a time, "
              f"{args.reps} repetitions (hypervolume median [q1, q3]; ratios of medians to "
              f"random search without ASHA)")
        print(t.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for b in budgets:
        t = tables[b.preset].set_index(["searcher", "asha"])
        d = t.loc[(DEFAULT, "on" if PRESETS[b.preset].asha else "off")]
        print(f"hypervolume ratio (default / random) at {b.trials} trials: "
              f"{d['ratio_vs_random']:.3f}")
        print(f"trials the default needs to reach random's median hypervolume at {b.trials} "
              f"trials, ÷ {b.trials}: {d['trials_to_random']:.2f}")
    plot(results, budgets, grid_front(grid, cap, ref), args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
