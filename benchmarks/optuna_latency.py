"""Optuna ask/tell latency as a study grows: the cost the Tune driver pays per trial, serially.

    python benchmarks/optuna_latency.py            # 100 / 500 / 1,000 finished trials (~2 min)
    python benchmarks/optuna_latency.py --quick    # 50 / 200, 5 pairs (~20 s)
    python benchmarks/optuna_latency.py --running 64 --samplers default

``OptunaSearch`` asks Optuna for a trial's parameters in ``suggest`` and tells it the result in
``on_trial_complete``, both in the Tune driver process, one trial at a time; every trial of a
study waits for them. This times exactly those calls — ``study.ask(fixed_distributions=space)``
(OptunaSearch's call for a dict search space) and ``study.tell(trial, [quality, cost])`` — for
four samplers and three storages after N finished trials:

- samplers: ``default`` is what ``OptunaSearch`` builds when given none,
  ``TPESampler(seed=seed)`` (ray/tune/search/optuna/optuna_search.py, ``_setup_study``); with
  two objectives Optuna 5 makes that the *independent* TPE (``multivariate`` defaults to False
  for multi-objective studies) with ``constant_liar=True`` (Optuna 5's default). ``tpe-mv`` is
  ``TPESampler(multivariate=True, constant_liar=True)``; ``nsga2`` is ``NSGAIISampler()``;
  ``gp`` is the ``cpu`` and ``gpu`` presets' default since the search benchmark
  (``study.search.make_sampler`` of the ``gpu`` preset's ``SamplerConfig``: ``GPSampler`` with
  6 start-up trials), whose ask fits a Gaussian process and optimises log EHVI each time.
- storages: in-memory (OptunaSearch's default), SQLite ``RDBStorage`` (what the study uses,
  ``runs/<name>/optuna.db``), ``JournalStorage(JournalFileBackend)``.

The space is the study's ``gpu`` space: depth {2,3,4}, width {8,16,32,64}, lr log-uniform
1e-4..3e-3 (guidance is tuned inside each trial, not by this search). The N finished trials are
added in bulk (``study.add_trials`` of ``create_trial``s with a cheap synthetic quality/cost),
plus ``--running`` trials left RUNNING, as a study with that many trials in flight has (the
constant liar reads them). Then ``--pairs`` ask+tell pairs are timed one after the other.
Medians and 90th percentiles in ms; "of which CPU" is the process time of a pair (the rest is
waiting: for SQLite mostly disk syncs, one or more per commit — with ``PRAGMA synchronous=OFF``
a pair took 125 ms instead of 218 in a side check); the ratio column is against in-memory
storage in the same run. Timings on a shared machine are noisy: compare within a run.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
)
from optuna.storages.journal import JournalFileBackend, JournalStorage  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from study.presets import PRESETS  # noqa: E402
from study.search import make_sampler  # noqa: E402

SPACE = {
    "depth": CategoricalDistribution((2, 3, 4)),
    "width": CategoricalDistribution((8, 16, 32, 64)),
    "lr": FloatDistribution(1e-4, 3e-3, log=True),
}
DIRECTIONS = ["maximize", "minimize"]  # quality up, training seconds down (the study's two)
SAMPLERS = {
    "default": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "tpe-mv": lambda seed: optuna.samplers.TPESampler(multivariate=True, constant_liar=True,
                                                      seed=seed),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
    "gp": lambda seed: make_sampler(PRESETS["gpu"].sampler, seed),
}
STORAGES = ("memory", "sqlite", "journal")


def objectives(p: dict, rng: np.random.Generator) -> list[float]:
    """A cheap stand-in for (quality, training seconds): bigger models and lr near 1e-3 score
    better and cost more; a little noise so that the Pareto front is not degenerate."""
    size = p["depth"] * p["width"]
    quality = (1 - math.exp(-size / 48) - 0.08 * (math.log10(p["lr"]) + 3) ** 2
               + 0.02 * rng.standard_normal())
    cost = 30 + 0.4 * size * p["depth"] + 5 * rng.standard_normal()
    return [quality, cost]


def random_params(rng: np.random.Generator) -> dict:
    return {"depth": int(rng.choice(SPACE["depth"].choices)),
            "width": int(rng.choice(SPACE["width"].choices)),
            "lr": float(math.exp(rng.uniform(math.log(1e-4), math.log(3e-3))))}


def make_storage(kind: str, folder: Path):
    if kind == "memory":
        return optuna.storages.InMemoryStorage()
    if kind == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}")
    return JournalStorage(JournalFileBackend(str(folder / "optuna.log")))


def fill(study: optuna.Study, n: int, rng: np.random.Generator,
         state: TrialState = TrialState.COMPLETE) -> None:
    """Add n trials in bulk: finished ones with synthetic values, or RUNNING ones."""
    trials = []
    for _ in range(n):
        p = random_params(rng)
        values = objectives(p, rng) if state == TrialState.COMPLETE else None
        trials.append(create_trial(state=state, params=p, distributions=SPACE, values=values))
    study.add_trials(trials)


def time_pairs(study: optuna.Study, pairs: int, rng: np.random.Generator) -> dict:
    """`pairs` ask+tell pairs, one after another as the Tune driver makes them: ms each."""
    ask, tell, cpu = [], [], []
    for _ in range(pairs):
        c0, t0 = time.process_time(), time.perf_counter()
        trial = study.ask(fixed_distributions=SPACE)
        t1 = time.perf_counter()
        study.tell(trial, objectives(trial.params, rng))
        t2 = time.perf_counter()
        ask.append(1000 * (t1 - t0))
        tell.append(1000 * (t2 - t1))
        cpu.append(1000 * (time.process_time() - c0))
    return {"ask": ask, "tell": tell, "cpu": cpu,
            "pair": [a + b for a, b in zip(ask, tell, strict=True)]}


def p90(xs: list[float]) -> float:
    return float(np.percentile(xs, 90))


def run(sizes: list[int], pairs: int, running: int, samplers: list[str], storages: list[str],
        seed: int) -> dict:
    """{(storage, sampler, n): timings}; one study per storage × sampler, grown through sizes."""
    out = {}
    for storage_kind in storages:
        for name in samplers:
            with tempfile.TemporaryDirectory() as tmp:
                rng = np.random.default_rng(seed)
                study = optuna.create_study(storage=make_storage(storage_kind, Path(tmp)),
                                            sampler=SAMPLERS[name](seed), directions=DIRECTIONS,
                                            study_name="latency")
                fill(study, running, rng, TrialState.RUNNING)
                done = 0
                for n in sizes:
                    t0 = time.perf_counter()
                    fill(study, n - done, rng)
                    fill_s = time.perf_counter() - t0
                    out[storage_kind, name, n] = t = time_pairs(study, pairs, rng)
                    done = n + pairs
                    print(f"  {storage_kind:7s} {name:8s} N={n:5d}: pair median "
                          f"{statistics.median(t['pair']):7.1f} ms, p90 {p90(t['pair']):7.1f} "
                          f"(filled in {fill_s:.1f} s)", flush=True)
    return out


def report(out: dict, sizes: list[int], samplers: list[str], storages: list[str]) -> None:
    print("\n| storage | sampler | N finished | ask median / p90 (ms) | tell median / p90 (ms) "
          "| ask+tell median / p90 (ms) | of which CPU (ms) | ÷ in-memory |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for storage_kind in storages:
        for name in samplers:
            for n in sizes:
                t = out[storage_kind, name, n]
                med = statistics.median(t["pair"])
                base = out.get(("memory", name, n))
                ratio = f"{med / statistics.median(base['pair']):.2f}" if base else ""
                print(f"| {storage_kind} | {name} | {n:,} | "
                      f"{statistics.median(t['ask']):.1f} / {p90(t['ask']):.1f} | "
                      f"{statistics.median(t['tell']):.1f} / {p90(t['tell']):.1f} | "
                      f"**{med:.1f}** / {p90(t['pair']):.1f} | {statistics.median(t['cpu']):.1f} | "
                      f"{ratio} |")
    n = sizes[-1]
    worst = max(((k, statistics.median(v["pair"])) for k, v in out.items() if k[2] == n),
                key=lambda kv: kv[1])
    (s_kind, s_name, _), ms = worst
    print(f"\nSlowest at N={n:,}: {s_name} on {s_kind}, {ms:.0f} ms per ask+tell. It is serial "
          f"in the Tune driver, so Optuna alone caps a study at {1000 / ms:.1f} trial starts/s; "
          f"128 slots (64 GPUs × 2) of 1-minute trials need {128 / 60:.1f}/s, and when 64 "
          f"trials end at once the last waits {64 * ms / 1000:.1f} s.")
    print("Cluster: use RDBStorage on PostgreSQL (or MySQL) that every node reaches — the driver "
          "alone asks and tells, but a resumed or second driver on another node needs the same "
          "study; the Optuna docs warn that file locks on NFS may not work, so SQLite and "
          "JournalFileBackend files belong on one node's local disk only.")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="50 / 200 trials, 5 pairs")
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1000])
    p.add_argument("--pairs", type=int, default=20, help="ask+tell pairs timed at each size")
    p.add_argument("--running", type=int, default=8, help="trials left RUNNING (in flight)")
    p.add_argument("--samplers", nargs="+", choices=list(SAMPLERS), default=list(SAMPLERS))
    p.add_argument("--storages", nargs="+", choices=STORAGES, default=list(STORAGES))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    sizes, pairs = ([50, 200], 5) if a.quick else (sorted(a.sizes), a.pairs)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    print(f"# Optuna ask/tell latency — optuna {optuna.__version__}; sizes {sizes}, {pairs} "
          f"pairs each, {a.running} trials RUNNING; two objectives, 3 parameters")
    t0 = time.perf_counter()
    out = run(sizes, pairs, a.running, a.samplers, a.storages, a.seed)
    report(out, sizes, a.samplers, a.storages)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
