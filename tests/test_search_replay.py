"""benchmarks/search.py measures the study's real search, not a copy of it.

On a tiny stored grid (benchmarks/grids/tiny.csv: depth {2, 3} × width {8, 32} × 2 lrs, 8
epochs, a slice of the cpu grid whose width-32 runs cross the cpu preset's time cap) a replayed
study must (a) be suggested exactly what the
study's own ``StudySearch`` suggests for the same seed when Tune drives it: its
``on_trial_complete`` goes through the study's Finalizer (a results row built from the trial's
final report, then told to Optuna), where the replay tells Optuna the row's two objectives
directly; and (b) stop trials exactly where a fresh ``study.rungs.Rungs`` (Tune's ASHAScheduler)
stops them when fed the same epoch reports in the order they arrive.

Each case replays the cpu budget's concurrency (2 trials at a time), so TPE's constant liar
and the order of tells matter.
"""

import dataclasses
import math
from pathlib import Path

import optuna
import pytest

from benchmarks.search import Budget, Clock, Grid, replay
from study.presets import PRESETS, SamplerConfig
from study.rows import PROBE
from study.rungs import AshaConfig, Rungs

TINY = Path(__file__).resolve().parents[1] / "benchmarks" / "grids" / "tiny.csv"
TPE_SMALL_STARTUP = SamplerConfig("tpe", n_startup_trials=2, multivariate=True)


@pytest.fixture(scope="module")
def grid() -> Grid:
    return Grid(TINY)


def _study_searcher(tmp_path: Path, grid: Grid, sampler, seed: int):
    """The study's searcher as make_tuner builds it (SQLite storage, the study's seed), over a
    study directory whose study.json its Finalizer reads."""
    from study.run import build_spec, parse_args
    from study.search import StudySearch
    from study.spec import Sizing, StudyRecord

    spec = build_spec(parse_args(["--preset", "cpu", "--dataset", "digits", "--no-clip",
                                  "--address", "auto", "--output-dir", str(tmp_path),
                                  "--name", f"replay-{seed}", "--seed", str(seed)]))
    spec = dataclasses.replace(spec, space=grid.space)
    spec.layout.root.mkdir(parents=True)
    StudyRecord(spec, Sizing(2, 0.99)).save(spec.layout)
    search = StudySearch(study_dir=spec.study_dir, study_name=spec.name, seed=spec.seed,
                         sampler_config=sampler,
                         storage=optuna.storages.RDBStorage(spec.storage))
    search.set_search_properties(None, None, spec.space.to_tune())
    return search, spec


# the cpu preset's sampler (GP: ~1 s a suggestion, so fewer trials), and TPE under ASHA
@pytest.mark.parametrize("sampler, asha, trials", [(PRESETS["cpu"].sampler, False, 5),
                                                   (TPE_SMALL_STARTUP, True, 7)],
                         ids=["cpu-preset", "tpe-2-startup-asha"])
def test_replay_suggests_what_the_studys_searcher_suggests(tmp_path, grid, sampler, asha,
                                                           trials):
    budget, seed = Budget("cpu", trials, 2), 3
    rungs = AshaConfig.for_budget(grid.epochs) if asha else None
    outcomes = replay(grid, sampler, rungs, budget, seed, cap=None)
    assert len(outcomes) == budget.trials
    assert not asha or any(o.reason == "asha" for o in outcomes)  # stops are replayed too

    # Tune's order of calls: `concurrent` suggestions, then a suggestion after each tell
    search, spec = _study_searcher(tmp_path, grid, sampler, seed)
    ids = sorted(o.trial_id for o in outcomes)
    suggested = {tid: search.suggest(tid) for tid in ids[:budget.concurrent]}
    for o in outcomes:
        d, w, lr = o.point
        report = {"final": True, "stop_reason": o.reason, "epoch": o.epoch,
                  "train_seconds": o.cost, "coverage": o.quality, "images_seen": 1,
                  "time_total_s": o.finished - o.started,
                  **{f"config/{k}": v for k, v in suggested[o.trial_id].items()}}
        search.on_trial_complete(o.trial_id, report)  # through the study's Finalizer
        if len(suggested) < len(ids):
            nxt = ids[len(suggested)]
            suggested[nxt] = search.suggest(nxt)
    assert suggested == {o.trial_id: o.params for o in outcomes}
    told = optuna.load_study(study_name=spec.name, storage=spec.storage).trials
    assert [tuple(t.values) for t in told] == [
        (o.quality, o.cost) for o in sorted(outcomes, key=lambda o: o.trial_id)]


@pytest.mark.parametrize("capped", [False, True], ids=["grid-cap-only", "preset-cap"])
@pytest.mark.parametrize("seed", [0, 1])
def test_replay_stops_where_the_studys_rungs_stop(grid, seed, capped):
    """The replay's ASHA stops, against a fresh Rungs fed every trial's epoch reports in the
    order they arrive (each epoch ends at its recorded cost after the trial's start); a trial
    reports no epoch after a stop, nor asks after its budget's last epoch or its time cap's
    (the grid's runs end at the cap already; the replay then also ends the capped epoch at
    the cap itself)."""
    clock, cfg = Clock(), AshaConfig.for_budget(grid.epochs)
    cap = grid.meta["max_trial_seconds"] if capped else None
    outcomes = replay(grid, TPE_SMALL_STARTUP, cfg, Budget("cpu", 8, 2), seed, cap, clock)
    assert any(o.reason == "time_budget" for o in outcomes), "no capped trial: a weak case"
    reports = []
    for o in outcomes:
        rows = grid.runs[o.point]
        for i, row in enumerate(rows):
            if row["epoch"] >= grid.epochs or i == len(rows) - 1:
                break  # fit asks no more: the budget's last epoch, or the capped one
            at = o.started + clock.startup_s + row["cost_s"] + (i + 1) * clock.epoch_s
            reports.append((at, o.trial_id, row))
    rungs, stopped = Rungs(cfg), {}
    for _, tid, row in sorted(reports, key=lambda r: r[0]):
        if tid not in stopped and rungs.decide(tid, {"epoch": int(row["epoch"]),
                                                     PROBE: row[PROBE]}):
            stopped[tid] = row
    assert stopped, "ASHA stopped nothing: the case checks nothing"
    assert {o.trial_id: o.epoch for o in outcomes if o.reason == "asha"} == \
        {tid: int(row["epoch"]) for tid, row in stopped.items()}
    for o in outcomes:
        if o.trial_id in stopped:  # an ASHA-stopped trial is told its epoch's measurements
            assert (o.quality, o.cost) == (stopped[o.trial_id]["quality"],
                                           stopped[o.trial_id]["cost_s"])
        elif cap is not None and o.reason == "time_budget":
            assert o.cost == cap
            assert not math.isnan(o.quality)  # the grid scored either side of the cap


@pytest.mark.parametrize("cfg, cls", [
    (SamplerConfig("random"), optuna.samplers.RandomSampler),
    (SamplerConfig("qmc"), optuna.samplers.QMCSampler),
    (SamplerConfig("tpe", n_startup_trials=3, multivariate=True), optuna.samplers.TPESampler),
    (SamplerConfig("nsga2", population_size=4), optuna.samplers.NSGAIISampler),
    (SamplerConfig("gp", n_startup_trials=3), optuna.samplers.GPSampler),
])
def test_make_sampler_builds_the_sampler_its_config_names(cfg, cls):
    from study.search import make_sampler

    assert type(make_sampler(cfg, seed=0)) is cls


def test_every_presets_sampler_builds_and_a_bad_one_is_refused():
    from study.search import make_sampler

    for preset in PRESETS.values():
        if preset.sampler is not None:
            make_sampler(preset.sampler, seed=0)
    with pytest.raises(ValueError, match="kind='cmaes'"):
        SamplerConfig("cmaes")
    with pytest.raises(ValueError, match="population_size=1"):
        SamplerConfig("nsga2", population_size=1)
