"""The study's console (study/console.py): one line per trial event, a progress line, and Ray's,
Tune's and Train's own output routed to runs/<name>/logs/ (back on the console with
--verbose) while errors stay visible. Unit tests without Ray running, and the quiet console of
a real smoke study."""

import logging
import re
import sys
import types
import warnings

import optuna
import pandas as pd
import pytest

from analysis.tables import pareto_front
from study import console as console_mod
from study.confirm import ConfirmPlan
from study.console import Console, ProgressCallback, trial_line
from study.layout import ID_DTYPES, StudyLayout
from study.results import upsert
from study.rows import COLUMNS

OK = {"trial_id": "ab12", "status": "ok", "stop_reason": "completed", "depth": 3, "width": 16,
      "lr": 1e-3, "style": False, "epochs": 8, "epochs_run": 8, "quality": 0.6123,
      "quality_metric": "coverage", "guidance": 2.5, "train_seconds": 52.4,
      "trial_wall_s": 80.2}


def test_trial_lines_say_outcome_quality_and_cost():
    line = trial_line(OK)
    assert re.search(r"trial (\w+) d\d+ w\d+ .*: ok", line)  # what tests/test_faults.py reads
    assert line == ("trial ab12 d3 w16 lr=0.001: ok (completed 8/8 epochs), coverage 0.612 at "
                    "w=2.5; train 52 s, wall 80 s")
    asha = trial_line({**OK, "stop_reason": "asha", "epochs_run": 3})
    assert ": ok (stopped early by ASHA after 3/8 epochs), coverage 0.612" in asha
    failed = trial_line({**OK, "status": "failed", "stop_reason": "diverged", "quality": None,
                         "error": "non-finite loss at step 12 (lr=21)"})
    assert failed == "trial ab12 d3 w16 lr=0.001: FAILED (diverged): non-finite loss at step " \
                     "12 (lr=21)"


@pytest.fixture
def quiet(tmp_path, capsys):
    """A Console routing a study's output, quiet (as without --verbose)."""
    con = Console()
    layout = StudyLayout(tmp_path / "s")
    with con.study(layout, verbose=False):
        yield con, layout


def test_quiet_console_sends_rays_loggers_warnings_and_tunes_prints_to_the_driver_log(
        tmp_path, capfd):
    ray_logger = logging.getLogger("ray")
    before = (list(ray_logger.handlers), ray_logger.propagate)
    con, layout = Console(), StudyLayout(tmp_path / "s")
    with con.study(layout, verbose=False):
        assert not [h for h in ray_logger.handlers if _rays(h)]  # off the console
        logging.getLogger("ray.tune").warning("Reporting training result 1")
        logging.getLogger("ray").info("Started a local Ray instance")
        optuna.logging.get_logger("optuna.samplers._gp").warning("'greenlet' is unavailable")
        with warnings.catch_warnings():  # pytest's configuration ignores DeprecationWarnings
            warnings.simplefilter("always")
            warnings.warn("ExecutionOptions.exclude_resources is deprecated",
                          DeprecationWarning, stacklevel=1)
        with con.quiet():
            print("To visualize your results with TensorBoard, run: ...")  # Tune's print
            con.say("trial ab12 d3 w16: started")  # the study's own line
    out, err = capfd.readouterr()
    assert out == "trial ab12 d3 w16: started\n" and err == ""
    log = layout.logs.driver.read_text()
    for text in ("Reporting training result 1", "Started a local Ray instance", "greenlet",
                 "exclude_resources is deprecated", "TensorBoard", "trial ab12 d3 w16: started"):
        assert text in log, text
    # everything is put back as it was
    assert (ray_logger.handlers, ray_logger.propagate) == before
    assert [h for h in ray_logger.handlers if _rays(h)]


def _rays(handler: logging.Handler) -> bool:
    """One of Ray's own console handlers (pytest adds capturing handlers of its own)."""
    return type(handler).__module__.startswith("ray.")


def test_verbose_console_shows_rays_output_and_still_logs_it(tmp_path, capfd, monkeypatch):
    import ray  # noqa: F401  (sets up the "ray" logger and its console handler)

    for h in filter(_rays, logging.getLogger("ray").handlers):  # the stderr of Ray's import
        monkeypatch.setattr(h, "stream", sys.stderr)
    con, layout = Console(), StudyLayout(tmp_path / "s")
    with con.study(layout, verbose=True):
        logging.getLogger("ray.tune").warning("Trial status: 2 RUNNING")
        with con.quiet():
            print("View detailed results here")
    out, err = capfd.readouterr()
    assert "Trial status: 2 RUNNING" in err and "View detailed results here" in out
    assert "Trial status: 2 RUNNING" in layout.logs.driver.read_text()


def test_forwarded_worker_lines_go_to_the_log_and_only_errors_to_the_console(quiet, capsys):
    con, layout = quiet
    epoch = "[study_train_ab12_d3w16] epoch   2  train 0.1000  val 0.1100"
    con._forwarded({"pid": 42, "ip": "127.0.0.1", "actor_name": "RayTrainWorker",
                    "lines": [epoch, "[State Transition] SCHEDULING -> RUNNING.",
                              "resuming after epoch 2 (step 50)"]})
    con._forwarded({"pid": 7, "ip": "127.0.0.1", "actor_name": "TrainController",
                    "lines": ["Exception in thread Thread-1 (_reconciliation_loop):",
                              "Traceback (most recent call last):", '  File "x.py", line 1',
                              "ConnectionError: the GCS went away"]})
    con._forwarded({"pid": 8, "ip": "127.0.0.1", "task_name": "",
                    "lines": ["2026-01-01 ERROR worker.py:1 -- worker died"]})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "(RayTrainWorker pid=42, ip=127.0.0.1) resuming after epoch 2 (step 50)"
    assert out[1].startswith("(TrainController pid=7, ip=127.0.0.1) ConnectionError: the GCS "
                             "went away (traceback in ") and str(layout.logs.workers) in out[1]
    assert out[2] == "(pid=8, ip=127.0.0.1) 2026-01-01 ERROR worker.py:1 -- worker died"
    assert len(out) == 3
    logged = layout.logs.workers.read_text()
    assert f"(RayTrainWorker pid=42, ip=127.0.0.1) {epoch}" in logged  # what --verbose shows
    assert "[State Transition]" in logged and 'File "x.py"' in logged


def test_progress_line_counts_the_table_and_estimates_what_is_left(tmp_path, monkeypatch):
    console = Console()
    monkeypatch.setattr(console_mod, "CONSOLE", console)
    study_dir = tmp_path / "s"
    study_dir.mkdir()
    upsert(study_dir, {"trial_id": "old", "status": "ok"})  # finished before a resume
    clock = iter([100.0, 160.0, 220.0])  # set up, then two lines
    monkeypatch.setattr(console_mod.time, "monotonic", lambda: next(clock))
    progress = ProgressCallback(str(study_dir), total=5)
    assert progress.line() == ("[1/5 trials done, 0 running, 1m00s elapsed, time left known "
                               "after the first trial]")
    trial = types.SimpleNamespace(trial_id="t1", config={"depth": 2, "width": 8, "lr": 1e-3})
    progress.running.add("t1")
    upsert(study_dir, {"trial_id": "t2", "status": "failed"})
    # 1 trial in 2 minutes this run: 3 left take about 6 minutes
    assert progress.line() == "[2/5 trials done, 1 failed, 1 running, 2m00s elapsed, about " \
                              "6m00s left]"
    assert trial.trial_id in progress.running


def test_started_and_progress_lines_from_tune_callbacks(tmp_path, monkeypatch, capsys):
    console = Console()
    monkeypatch.setattr(console_mod, "CONSOLE", console)
    study_dir = tmp_path / "s"
    study_dir.mkdir()
    pd.DataFrame(columns=COLUMNS).to_csv(study_dir / "results.csv", index=False)
    progress = ProgressCallback(str(study_dir), total=2, confirm=ConfirmPlan(seeds=(1, 2)))
    # one search trial done, on the front: 1 search trial and 2 confirmation runs left
    upsert(study_dir, {"trial_id": "ab12", "status": "ok", "quality": 0.3, "train_cost_s": 60,
                       "trial_wall_s": 90, "depth": 2, "width": 8, "lr": 1e-3, "seed": 0})
    trial = types.SimpleNamespace(trial_id="c1", config={"fixed": {
        "depth": 2, "width": 8, "lr": 1e-3, "seed": 1, "confirm_of": "ab12"}})
    progress.on_trial_start(0, [], trial)
    upsert(study_dir, {"trial_id": "c1", "status": "ok", "confirm_of": "ab12", "seed": 1})
    progress.on_trial_complete(0, [], trial)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "trial c1 d2 w8 lr=0.001: started (confirms ab12 with seed 1)"
    # 2 runs (1 search trial, 1 confirmation) in this run so far; 2 left (1 of each)
    assert re.fullmatch(r"\[1/2 trials done, 1 confirmation runs done, 0 running, \S+ "
                        r"elapsed, about \S+ left\]", out[1]), out[1]


@pytest.mark.slow
def test_smoke_study_console_is_quiet_and_its_chatter_is_logged(smoke_study):
    """The real smoke study's stdout: the study directory first, one line per trial event and
    progress lines, none of Ray's, Tune's or Train's own output, which is in logs/."""
    log = (smoke_study.parent / "run.log").read_text()
    lines = log.splitlines()
    assert lines[0] == f"study directory: {smoke_study}"
    started = [m[1] for m in re.finditer(r"^trial (\w+) d\d+ w\d+ .*: started", log, re.M)]
    finished = [m[1] for m in re.finditer(r"^trial (\w+) d\d+ w\d+ .*: ok \(", log, re.M)]
    table = pd.read_csv(smoke_study / "results.csv", dtype=ID_DTYPES)
    first, confirm = table[table["confirm_of"].isna()], table[table["confirm_of"].notna()]
    # the smoke preset's 2 trials, then one more seed (--confirm-seeds 1) of each configuration
    # on the front of those ASHA did not stop: 1 or 2 runs, as the measured costs fall
    front = pareto_front(first[first["stop_reason"] != "asha"])
    assert len(first) == 2 and sorted(confirm["confirm_of"]) == sorted(front["trial_id"])
    assert sorted(started) == sorted(finished) == sorted(table["trial_id"])
    assert f"[2/2 trials done, {len(confirm)} confirmation runs done, 0 running" in log
    for chatter in ("Trial status:", "[State Transition]", "Reporting training result",
                    "tensorboard", "Configuration for experiment", "DeprecationWarning",
                    "(RayTrainWorker pid="):
        assert chatter not in log, chatter
    # nor Python warnings (Optuna's ExperimentalWarning, Ray's and torch's) on stderr
    err = (smoke_study.parent / "run.err").read_text()
    assert not re.search(r"\w+Warning: ", err), err[-2000:]
    logs = StudyLayout(smoke_study).logs
    assert "Configuration for experiment" in logs.driver.read_text()
    workers = logs.workers.read_text()
    assert "[State Transition]" in workers and re.search(r"\[smoke_train_\w+_d2w8\] epoch +1 ",
                                                         workers)
