"""Faults on a local Ray, each injected into a real study run by `study/run.py`:

1. a training worker killed with SIGKILL mid-trial: Ray Train restarts the worker group from the
   trial's last checkpoint and the trial finishes with a complete row;
2. a trial whose learning rate makes the loss non-finite: marked failed with the reason, while
   the rest of the study and its report are unaffected;
3. the study driver killed with SIGKILL mid-study: `--resume` finishes it without re-running
   finished trials, and the results table, Tune's state and the Optuna DB agree trial by trial.
   Before the kill, the test checks that the study's local Ray listens on 127.0.0.1 only and
   that its dashboard refuses requests without the token.

Faults are triggered by what the study prints (each worker's progress line carries its pid),
read line by line as it happens: no sleeps, no timing guesses.
"""

import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import psutil
import pytest
import requests
from conftest import STUDY_CLI, session_id, study_env

from study.results import read_results

SMOKE = ["--preset", "smoke", "--dataset", "digits", "--no-clip"]
pytestmark = pytest.mark.slow


@pytest.fixture
def study(live, judge_cache):
    """`study(args)`: a study CLI run, read live, sharing the session's judge cache."""
    return lambda args: live([*STUDY_CLI, *args], study_env(judge_cache))


def test_killed_worker_resumes_and_diverged_trial_is_failed(study, tmp_path):
    """One study, two faults. Seed 21 makes Optuna's first trial healthy (lr 2e-3) and its
    second diverge (lr 21): the first trial's rank-0 worker is SIGKILLed after its epoch-2
    checkpoint; the second trial's loss becomes non-finite."""
    space = tmp_path / "space.yaml"
    space.write_text("lr: [0.001, 1000]\n")
    run = study([*SMOKE, "--space", str(space), "--seed", "21", "--epochs", "4",
                 "--name", "faults", "--output-dir", str(tmp_path)])
    m = run.until(r"\(RayTrainWorker pid=(\d+)[^)]*\)\S* \[faults_train_(\w+?)_d\d+w\d+\] "
                    r"epoch +2 ")
    killed_pid, killed_trial = int(m[1]), m[2]
    os.kill(killed_pid, signal.SIGKILL)
    resumed = run.until(r"resuming after epoch (\d+)")
    assert run.finish() == 0, run.log()
    # From a checkpoint, not from scratch. Epoch 1's or 2's: the Train controller registers a
    # checkpoint when it next polls the workers, which the kill may pre-empt.
    assert int(resumed[1]) >= 1

    study_dir = tmp_path / "faults"
    df = read_results(study_dir).set_index("trial_id")
    assert len(df) == 2, df
    ok = df.loc[killed_trial]
    assert ok["status"] == "ok" and ok["epochs_run"] == 4 and ok["lr"] < 0.01
    assert pd.notna(ok["quality"]) and (study_dir / ok["checkpoint_path"]).exists()
    bad = df.drop(killed_trial).iloc[0]
    assert bad["status"] == "failed" and bad["lr"] > 10
    assert bad["stop_reason"] == "diverged" and "non-finite loss" in bad["error"]
    assert pd.isna(bad["quality"])

    ot = optuna.load_study(study_name="faults", storage=f"sqlite:///{study_dir / 'optuna.db'}")
    states = sorted(t.state.name for t in ot.trials)
    assert states == ["COMPLETE", "FAIL"]
    report = (study_dir / "report" / "index.html").read_text()
    assert "1 trial(s) FAILED" in report and "non-finite loss" in report
    assert (study_dir / "report" / "cost_quality.png").stat().st_size > 0
    assert "Pareto front" in run.log()


def assert_local_ray_is_private(run) -> None:
    """Every socket the study's local Ray listens on is on the loopback (GCS, raylet, agents,
    dashboard), and its dashboard API refuses a request without the token."""
    pids = {p.pid for p in psutil.process_iter() if session_id(p.pid) == run.proc.pid}
    listening = {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in pids}
    assert len(listening) >= 5, listening  # GCS, raylet, dashboard, agents, workers
    exposed = {a for a in listening if a[0] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")}
    assert not exposed, f"local Ray listens beyond the loopback: {exposed}"
    url = re.search(r"Ray dashboard: (http://127\.0\.0\.1:\d+)", "".join(run.lines))[1]
    assert requests.get(f"{url}/api/v0/nodes", timeout=30).status_code == 401
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    assert requests.get(f"{url}/api/v0/nodes", timeout=30,
                        headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_killed_driver_resumes_without_rerunning(study, tmp_path):
    """Also checks, while the study runs, what its local Ray exposes (see
    assert_local_ray_is_private)."""
    args = [*SMOKE, "--num-trials", "2", "--name", "crash",
            "--output-dir", str(tmp_path)]
    run = study(args)
    first = run.until(r"trial (\w+) d\d+ w\d+ .*: ok")[1]
    assert_local_ray_is_private(run)
    os.kill(run.proc.pid, signal.SIGKILL)  # the driver only; Ray's processes are orphaned
    run.finish()
    study_dir = tmp_path / "crash"
    before = read_results(study_dir).set_index("trial_id")
    assert first in before.index
    # A trial started again would write to its Train run (a new checkpoint, a new snapshot).
    train_run = next((study_dir / "ray").glob(f"crash_train_{first}_*"))
    train_files = {p: p.stat().st_mtime_ns for p in train_run.rglob("*")}

    again = study([*args, "--resume"])
    assert again.finish() == 0, again.log()
    assert {p: p.stat().st_mtime_ns for p in train_run.rglob("*")} == train_files, \
        "a finished trial was started again"

    df = read_results(study_dir).set_index("trial_id")
    assert len(df) == 2 and (df["status"] == "ok").all(), df[["status", "error"]]
    assert df.loc[first, "trial_wall_s"] == before.loc[first, "trial_wall_s"]  # row untouched

    # Optuna agrees with the table trial by trial: same count, configs and values.
    ot = optuna.load_study(study_name="crash", storage=f"sqlite:///{study_dir / 'optuna.db'}")
    done = [t for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == len(df) == len(ot.trials) == 2
    table = sorted(zip(df["lr"], df["guidance"], df["quality"], df["train_cost_s"], strict=True))
    db = sorted((t.params["lr"], t.params["guidance"], *t.values) for t in done)
    np.testing.assert_allclose(db, table, rtol=1e-9)
    # ... and so does Tune's own state: the same trials with the same configs.
    state = json.loads(max((study_dir / "ray" / "crash").glob("experiment_state-*.json"))
                       .read_text())
    tune_trials = {t["trial_id"]: t["config"] for t in
                   (json.loads(data) for data, _ in state["trial_data"])}
    assert set(tune_trials) == set(df.index)
    assert all(tune_trials[i]["lr"] == df.loc[i, "lr"] for i in df.index)
