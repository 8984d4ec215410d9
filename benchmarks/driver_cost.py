"""The Tune driver's own cost per trial and per reported result, for benchmarks/scale_model.py.

Trivial trials go through the study's real Tuner (``study.driver.make_tuner``: the Optuna
searcher on SQLite, the results callback writing results.csv, the progress line, Tune's trial
bookkeeping); each trial only reports R per-epoch results and a final row, so what is left to
time is the driver. Two runs, with few and with many results per trial, separate the two costs:

    cpu = trials · (per_trial + optuna) + results · per_result

where ``optuna`` (ask + tell, timed inside the searcher) is measured apart, because the scale
model takes Optuna's latency from benchmarks/optuna_latency.py at each study size. Driver CPU
is this process's CPU time (Tune's driver loop, the searcher and the callbacks all run here);
the trials' own processes are not counted.

    python benchmarks/driver_cost.py                      # 500 × 2 results, then 100 × 21
    python benchmarks/driver_cost.py --trials 100 20 --results 2 21
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def trivial_trial(params: dict, spec, sizing, judge, rungs=None, finished=None) -> None:
    """Reports what study.trial.run_trial reports, without training: `results_per_trial - 1`
    epoch results, then the final row (made-up quality and cost: the driver only stores them)."""
    from ray import tune

    n = spec.base.train.epochs  # the run's R - 1 epoch reports
    quality = params["lr"] * 100  # any value: a front exists and the sampler has a signal
    epoch = {"train_loss": 0.1, "val_loss": 0.1, "lr": params["lr"], "epoch_s": 0.01,
             "images_per_s": 1e4, "train_seconds": 0.01}
    for e in range(1, n + 1):
        tune.report({**epoch, "epoch": e})
    tune.report({**epoch, "epoch": n, "final": True, "stop_reason": "completed",
                 "images_seen": 100 * n, spec.quality_metric: quality, "judge_acc": quality,
                 "eval_s": 0.01})


def one_run(trials: int, results: int, out: Path) -> dict:
    """Driver CPU and wall seconds of `trials` trivial trials reporting `results` results each
    (R - 1 epochs + the final row), and the part of the CPU spent in Optuna's ask and tell."""
    import ray

    from study import driver
    from study.run import build_spec, local_sizing, parse_args, prepare
    from study.search import StudySearch

    args = parse_args(["--preset", "smoke", "--dataset", "digits", "--no-clip",
                       "--num-trials", str(trials), "--epochs", str(results - 1),
                       "--workers-per-trial", "1", "--confirm-seeds", "0",
                       "--name", f"driver-{trials}x{results}", "--output-dir", str(out)])
    spec = build_spec(args)
    # Trials hold no resources of their own (DRIVER_CPU each): as many at once as a cluster's
    # slots would allow, so the driver, not the 2 cores, sets the pace.
    sizing = replace(local_sizing(spec), concurrent=8)
    record, judge = prepare(spec, sizing, resume=False)
    optuna_cpu = [0.0]

    def timed(method):
        def wrapper(self, *a, **kw):
            t = time.process_time()
            try:
                return method(self, *a, **kw)
            finally:
                optuna_cpu[0] += time.process_time() - t
        return wrapper

    originals = StudySearch.suggest, StudySearch.on_trial_complete
    StudySearch.suggest, StudySearch.on_trial_complete = map(timed, originals)
    driver.init_ray(None)
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        driver.make_tuner(spec, sizing, judge, run=trivial_trial).fit()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        StudySearch.suggest, StudySearch.on_trial_complete = originals
        ray.shutdown()
    return {"trials": trials, "results": results, "cpu_s": cpu, "wall_s": wall,
            "optuna_cpu_s": optuna_cpu[0]}


def rung_round_trip(calls: int = 200) -> float:
    """Median seconds of a trial's question to the study's RungKeeper (study/rungs.py), asked
    from a Ray task as a Train worker asks it; not the driver's time, but what a trial waits."""
    import statistics

    import ray

    from study.rungs import AshaConfig, start_keeper

    @ray.remote(num_cpus=0)
    def ask(keeper, n: int) -> list[float]:
        times = []
        for i in range(n):
            t = time.perf_counter()
            ray.get(keeper.decide.remote(f"t{i}", {"epoch": 1, "probe_judge_acc": i / n}))
            times.append(time.perf_counter() - t)
        return times

    ray.init(address="local", include_dashboard=False, num_cpus=os.cpu_count())
    try:
        return statistics.median(ray.get(ask.remote(start_keeper(AshaConfig.for_budget(8)),
                                                    calls)))
    finally:
        ray.shutdown()


def solve(a: dict, b: dict) -> tuple[float, float]:
    """(per_trial, per_result) driver CPU seconds, Optuna excluded, from two runs."""
    import numpy as np

    m = np.array([[r["trials"], r["trials"] * r["results"]] for r in (a, b)], dtype=float)
    y = np.array([r["cpu_s"] - r["optuna_cpu_s"] for r in (a, b)])
    per_trial, per_result = np.linalg.solve(m, y)
    return float(per_trial), float(per_result)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, nargs=2, default=[500, 100], metavar=("N1", "N2"),
                   help="trials in the first and the second run")
    p.add_argument("--results", type=int, nargs=2, default=[2, 21], metavar=("R1", "R2"),
                   help="results each trial reports in the two runs (R - 1 epochs + final)")
    a = p.parse_args(argv)
    if a.results[0] == a.results[1] or min(a.results) < 2:
        p.error("--results: two different counts, each at least 2 (an epoch and the final)")
    from benchmarks.common import machine

    print(f"# Tune driver cost — {machine()}")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("STUDY_CACHE_DIR", str(Path(tmp) / "cache"))
        for n, r in zip(a.trials, a.results, strict=True):
            run = one_run(n, r, Path(tmp))
            runs.append(run)
            print(f"{n} trials × {r} results: driver CPU {run['cpu_s']:.1f} s "
                  f"(Optuna ask + tell {run['optuna_cpu_s']:.1f} s), wall {run['wall_s']:.1f} s "
                  f"= {run['wall_s'] / n:.2f} s per trial", flush=True)
    per_trial, per_result = solve(*runs)
    print(f"driver CPU per trial (besides Optuna): {per_trial * 1e3:.1f} ms")
    print(f"driver CPU per reported result: {per_result * 1e3:.1f} ms")
    print(f"a trial's RungKeeper question at a rung: {rung_round_trip() * 1e3:.1f} ms (median)")


if __name__ == "__main__":
    main()
