"""The study end to end: `study/run.py` with the smoke preset on a local Ray (2 trials × 2 DDP
workers) and real Optuna SQLite storage. Resume after a crash, worker and node faults:
test_faults.py and test_cluster.py; bad input: test_bad_input.py."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from conftest import study_env

from study.results import COLUMNS, read_results
from trainables.precision import dtype_name, native_bf16


@pytest.mark.slow
def test_smoke_study_records_every_trial(smoke_study):
    study_dir = smoke_study
    log = (study_dir.parent / "run.log").read_text()
    assert "Ray dashboard: http://127.0.0.1:" in log and "Pareto front" in log
    df = read_results(study_dir)
    assert list(df.columns) == COLUMNS
    assert (df["status"] == "ok").all(), df[["status", "error"]]
    search, confirm = df[df["confirm_of"].isna()], df[df["confirm_of"].notna()]
    assert len(search) == 2
    # --confirm-seeds 1: each Pareto-front configuration re-trained once with another seed
    front = json.loads((study_dir / "pareto.json").read_text())
    assert sorted(confirm["confirm_of"]) == sorted(r["trial_id"] for r in front)
    for r in confirm.itertuples():
        orig = search.set_index("trial_id").loc[r.confirm_of]
        assert (r.depth, r.width, r.lr) == (orig.depth, orig.width, orig.lr)
        assert r.seed != orig.seed
    required = ["depth", "width", "lr", "guidance", "params", "forward_gflops", "train_gflops",
                "trial_wall_s", "train_seconds", "worker_seconds", "images_per_s", "epochs_run",
                "final_train_loss", "final_val_loss", "quality", "train_cost_s", "judge_acc",
                "frechet", "eval_s", "samples_path", "grid_path", "checkpoint_path"]
    assert df[required].notna().all().all(), df[required].isna().sum()
    assert df["train_dtype"].isin(["bf16", "fp32"]).all()  # the training step's, per trial
    # and the sampler's: bf16 where it pays (trainables/precision.py), as every row records
    assert (df["eval_dtype"] == dtype_name(native_bf16(torch.device("cpu")))).all()
    clip_cols = ["clip_top", "clip_all", "clip_gain", "clip_acc_all", "clip_acc_top"]
    assert df[clip_cols].notna().all().all()
    assert df["clip_model"].str.contains("tiny_clip.json").all()
    # quality is coverage, which guidance cannot inflate; CLIP-top-3 is logged beside it
    assert (df["quality"] == df["coverage"]).all() and (df["workers"] == 2).all()
    assert df["quality"].between(0, 1).all()
    # each trained model's w was searched (the smoke preset's grid: 1, 3) and the row says so
    assert df["guidance"].isin([1.0, 3.0]).all() and (df["guidance_search_s"] > 0).all()
    for r in df.itertuples():
        curve = json.loads(r.guidance_curve)
        assert set(curve) == {"1", "3"} and curve[f"{r.guidance:g}"] == max(curve.values())
        assert (study_dir / "trials" / r.trial_id / "guidance.csv").exists()
        # the probe's samples after every epoch, for the report's "how digits grew" grids
        with np.load(study_dir / "trials" / r.trial_id / "progress.npz") as z:
            assert list(z["epochs"]) == list(range(1, r.epochs_run + 1))
            assert z["images"].shape == (r.epochs_run, 20, 28, 28) and len(z["labels"]) == 20
    assert (df["clip_top"] >= df["clip_all"]).all()  # top-3 of 10 never below the mean
    for col in ("samples_path", "grid_path", "checkpoint_path"):
        assert all((study_dir / p).stat().st_size > 0 for p in df[col])
    setup = json.loads((study_dir / "study.json").read_text())
    assert setup["quality_metric"] == "coverage" and setup["headline_metric"] == "clip_top"
    assert setup["versions"]["ray"]
    ref = json.loads((study_dir / "reference.json").read_text())
    assert ref["judge_acc"] > 0.8  # real digits through the same pipeline
    # every epoch report carries the start-up split, so a trial ASHA stops is costed too
    epochs = [json.loads(line) for f in (study_dir / "ray" / "smoke").glob("*/result.json")
              for line in f.read_text().splitlines()]
    epochs = [r for r in epochs if "train_loss" in r]
    assert epochs and all(r["trainer_start_s"] > 0 and "probe_s_total" in r for r in epochs)


@pytest.mark.slow
def test_optuna_db_matches_results(smoke_study):
    study_dir = smoke_study
    df = read_results(study_dir)
    df = df[df["confirm_of"].isna()]  # confirmation runs are not Optuna trials
    ot = optuna.load_study(study_name="smoke", storage=f"sqlite:///{study_dir / 'optuna.db'}")
    done = [t for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == len(ot.trials) == 2
    assert sorted(tuple(t.values) for t in done) == sorted(
        zip(df["quality"], df["train_cost_s"], strict=True))
    assert sorted(t.params["lr"] for t in done) == pytest.approx(sorted(df["lr"]))


def test_finalizer_costs_rows_by_the_recorded_sizing(tmp_path):
    """The Finalizer builds each row from the trial's final report and the sizing the driver
    recorded in study.json (GPU-seconds), copies nothing it was not given, and a trial with no
    usable report becomes a failed row saying why; both are upserted into results.csv."""
    from study.finalize import Finalizer
    from study.spec import Sizing, StudyRecord

    spec = _spec("--output-dir", str(tmp_path), "--name", "fin")
    spec.layout.root.mkdir(parents=True)
    StudyRecord(spec, Sizing(1, 4.0, 0.5)).save(spec.layout)
    report = {"final": True, "stop_reason": "asha", "epoch": 1, "train_seconds": 2.0,
              "images_seen": 1600, "time_total_s": 12.0, "train_loss": 0.5, "val_loss": 0.4,
              "probe_judge_acc": 0.1, "probe_s_total": 1.5, "eval_total_s": 3.0,
              "trainer_start_s": 6.0, "worker_setup_s": 0.5, "train_dtype": "bf16",
              "coverage": 0.3, "judge_acc": 0.75, "frechet": 30.0}
    config = {"depth": 2, "width": 8, "lr": 1e-3}
    finalize = Finalizer(spec.layout)
    row = finalize("stopped1", report, config)
    assert (row["status"], row["stop_reason"], row["quality"]) == ("ok", "asha", 0.3)
    assert row["startup_s"] == pytest.approx(12.0 - 2.0 - 1.5 - 3.0)
    assert row["gpu_seconds"] == pytest.approx(12.0 * 2 * 0.5)  # wall × workers × share
    assert row["images_per_s"] == 800.0 and row["params"] > 0
    bad = finalize("gone", {"error": "RayActorError: the actor died"}, config)
    assert bad["status"] == "failed" and bad["error"].startswith("RayActorError")
    table = read_results(spec.layout.root).set_index("trial_id")
    assert list(table.index) == ["stopped1", "gone"]
    assert finalize("stopped1", {}, config) is row  # once per trial


def test_rungs_stop_what_tunes_asha_stops():
    """study/rungs.py decides with Tune's own ASHAScheduler: at the first rung (epoch 2 of 8)
    a trial below the 1 - 1/3 quantile of those recorded there stops; the first ones go on."""
    from study.rows import PROBE
    from study.rungs import AshaConfig, Rungs

    rungs = Rungs(AshaConfig.for_budget(epochs=8))
    assert AshaConfig.for_budget(8) == AshaConfig(grace_period=2, max_t=9)
    assert not rungs.decide("a", {"epoch": 1, PROBE: 0.1})  # before the first rung
    decisions = [rungs.decide(t, {"epoch": 2, PROBE: p})
                 for t, p in [("a", 0.5), ("b", 0.9), ("c", 0.2), ("d", 0.95)]]
    assert decisions == [False, False, True, False]
    again = Rungs(AshaConfig.for_budget(epochs=8))
    again.replay({"a": [{"epoch": 2, PROBE: 0.5}], "b": [{"epoch": 2, PROBE: 0.9}]})
    assert again.decide("c", {"epoch": 2, PROBE: 0.2})  # the same decision after a resume


def test_resumed_searcher_adopts_the_suggestion_a_crash_left_running(tmp_path):
    """A driver killed between Optuna's ask and Tune's state save leaves a RUNNING Optuna trial
    that Tune never heard of; the resumed searcher runs it instead of asking for another."""
    from study.optuna_private import ot_trials
    from study.presets import PRESETS
    from study.search import StudySearch

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"

    def searcher():
        s = StudySearch(study_dir=str(tmp_path), storage=optuna.storages.RDBStorage(storage),
                        study_name="s", seed=0)
        s.set_search_properties(None, None, PRESETS["smoke"].space.to_tune())
        return s

    crashed = searcher().suggest("t-before-crash")  # asked, never recorded by Tune
    resumed = searcher()
    assert resumed.suggest("t-after-resume") == crashed
    resumed.suggest("t-next")
    assert [ot_trials(resumed)[t].number for t in ("t-after-resume", "t-next")] == [0, 1]
    ot = optuna.load_study(study_name="s", storage=storage)
    assert len(ot.trials) == 2  # no dangling third trial

    # Killed between Optuna's writes: a trial holding only some parameters is completed.
    for number in (0, 1):
        ot.tell(number, state=optuna.trial.TrialState.FAIL)
    partial = ot.ask()
    partial.suggest_float("lr", 1e-3, 2e-3, log=True)
    completed = searcher().suggest("t-partial")
    assert completed["lr"] == partial.params["lr"] and set(completed) == set(crashed)
    assert len(ot.trials) == 3


def test_trial_config_turns_style_on_from_the_search_axis():
    from study.search_space import apply, values
    from trainables.config import TrialConfig
    from trainables.style import STYLE_DIM

    params = {"depth": 2, "width": 8, "lr": 1e-3}
    on = apply({**params, "style": True}, TrialConfig())
    assert on.model.style_dim == STYLE_DIM and values(on)["style"] is True
    off = apply(params, TrialConfig())  # tables and spaces from before the axis existed
    assert off.model.style_dim == 0 and values(off)["style"] is False
    assert values(off) == {**params, "style": False}


def _spec(*args: str):
    from study.run import build_spec, parse_args

    return build_spec(parse_args(["--preset", "smoke", "--dataset", "digits", "--no-clip",
                                  "--gpus", "1", "--address", "auto", *args]))


@pytest.mark.parametrize("workers, gpus, per_worker, concurrent", [
    (1, 1, 0.5, 2),  # single-worker trials share a GPU (--trials-per-gpu 2)
    (2, 2, 1.0, 1),  # DDP ranks never share one: NCCL refuses two ranks on a device
    (2, 4, 1.0, 2),
])
def test_gpu_trials_are_sized_so_ddp_ranks_get_their_own_gpu(workers, gpus, per_worker,
                                                             concurrent):
    from study.spec import size_trials

    spec = _spec("--workers-per-trial", str(workers), "--num-trials", "8")
    sizing = size_trials(spec, cpus=16, gpus=gpus)
    assert (sizing.gpus_per_worker, sizing.concurrent) == (per_worker, concurrent)
    assert sizing.cpus_per_worker * workers * concurrent <= 16


def test_a_ddp_trial_wider_than_the_gpus_is_refused():
    from study.errors import UsageError
    from study.spec import size_trials

    with pytest.raises(UsageError, match="each need a GPU of their own"):
        size_trials(_spec("--workers-per-trial", "2"), cpus=16, gpus=1)


def test_the_spec_round_trips_and_resume_compares_what_defines_the_trials():
    from dataclasses import replace

    from study.spec import StudySpec

    spec = _spec()
    again = StudySpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert spec.resume_mismatch(replace(spec, num_trials=9, address=None)) == []
    assert spec.resume_mismatch(replace(spec, seed=7, confirm_seeds=3)) == ["seed",
                                                                            "confirm_seeds"]
    other = replace(spec, base=replace(spec.base, train=replace(spec.base.train, lr=0.5)))
    assert spec.resume_mismatch(other) == ["base.train.lr"]


@pytest.mark.slow
def test_more_trials_than_slots_with_asha_stops_all_get_rows(tmp_path, judge_cache):
    """4 trials, 2 at a time, ASHA stopping the later ones at the first rung (see
    tests/queue_study.py): the study finishes, and every trial has a measured row and a
    finished Optuna trial. With Tune's reuse_actors on (a cpu-preset study stalled that way)
    this fails: a trial errors without a row and its Optuna trial stays RUNNING."""
    p = subprocess.run([sys.executable, str(Path(__file__).with_name("queue_study.py")),
                        str(tmp_path)], env=study_env(judge_cache),
                       capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    df = read_results(tmp_path / "queue").set_index("trial_id")
    assert len(df) == 4 and (df["status"] == "ok").all(), df[["status", "error"]]
    stopped = df[df["stop_reason"] == "asha"]
    assert len(stopped) >= 2 and (stopped["epochs_run"] == 1).all()
    assert stopped["quality"].notna().all()  # the trial's own final report
    assert stopped["train_dtype"].notna().all()  # from fit's epoch reports, as costed
    assert (df.loc[df["stop_reason"] == "completed", "epochs_run"] == 2).all()
    # the same meaning for stopped and completed rows: images trained on, per epoch run
    from trainables.data import DataConfig, load_splits

    per_epoch = len(load_splits(DataConfig(dataset="digits")).train) // 64 * 64  # smoke batch
    assert (df["images_seen"] == df["epochs_run"] * per_epoch).all(), df["images_seen"]
    busy = df["train_seconds"] + df["startup_s"]
    assert (df["trial_wall_s"] >= busy - 1e-6).all() and (df["startup_s"] > 0).all()
    # sized by the Finalizer from each trial's config, as the searcher passes it on
    assert df["params"].gt(0).all() and df["forward_gflops"].gt(0).all()
    ot = optuna.load_study(study_name="queue", storage=f"sqlite:///{tmp_path / 'queue/optuna.db'}")
    assert [t.state for t in ot.trials] == [optuna.trial.TrialState.COMPLETE] * 4
