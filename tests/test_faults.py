"""Faults on a local Ray, each injected into a real study run by `study/run.py`:

1. a training worker killed with SIGKILL mid-trial: Ray Train restarts the worker group from the
   trial's last checkpoint and the trial finishes with a complete row;
2. a trial whose learning rate makes the loss non-finite: marked failed with the reason, while
   the rest of the study and its report are unaffected;
3. the study driver killed with SIGKILL mid-study, then (resumed) interrupted with Ctrl-C while
   a second driver of the same study is refused: each `--resume` finishes what is left without
   re-running finished trials, and the results table, Tune's state and the Optuna DB agree
   trial by trial. Before the kill, the test checks that the study's local Ray listens on
   127.0.0.1 only and that its dashboard refuses requests without the token;
4. without Ray: the study lock (a second driver refused, a dead driver's lock taken over), the
   claim on a shared Optuna storage, and the driver's Ctrl-C handling around Tune.

Faults are triggered by what the study prints (each worker's progress line carries its pid),
read line by line as it happens: no sleeps, no timing guesses.
"""

import json
import os
import re
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import psutil
import pytest
import requests
from conftest import STUDY_CLI, session_id, study_env

from study.interrupt import EXIT_STATUS, INTERRUPTS
from study.layout import StudyLayout
from study.lock import StudyLock
from study.results import read_results

SMOKE = ["--preset", "smoke", "--dataset", "digits", "--no-clip"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def study(live, judge_cache):
    """`study(args)`: a study CLI run, read live, sharing the session's judge cache."""
    return lambda args: live([*STUDY_CLI, *args], study_env(judge_cache))


@pytest.mark.slow
def test_killed_worker_resumes_and_diverged_trial_is_failed(study, tmp_path):
    """One study, two faults. Seed 7 makes Optuna's first trial healthy (lr 2.9e-3) and its
    second diverge (lr 48) — the draws depend on the search space's axes, so a change of axes
    needs a new seed (the first trial's lr < 0.01 and the second's > 10): the first trial's
    rank-0 worker is SIGKILLed after its epoch-2
    checkpoint; the second trial's loss becomes non-finite."""
    space = tmp_path / "space.yaml"
    space.write_text("lr: [0.001, 1000]\n")
    run = study([*SMOKE, "--space", str(space), "--seed", "7", "--epochs", "4",
                 "--name", "faults", "--output-dir", str(tmp_path), "--verbose"])
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


@pytest.mark.slow
def test_killed_then_interrupted_driver_resumes_without_rerunning(study, tmp_path, monkeypatch,
                                                                  capsys):
    """Also checks, while the study runs, what its local Ray exposes (see
    assert_local_ray_is_private)."""
    from study.run import main

    # --verbose: the test acts on Ray Train's worker lines, which a quiet console only logs
    args = [*SMOKE, "--num-trials", "2", "--epochs", "3", "--name", "crash",
            "--output-dir", str(tmp_path), "--verbose"]
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

    # Resumed, and while it runs: a second driver of the same study is refused at once.
    again = study([*args, "--resume"])
    again.until(r"^study crash: ")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")  # (main() sets it if unset)
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert f"in use by another driver (held by pid {again.proc.pid} on host " in err, err
    # Ctrl-C during the other trial's training, to the process group as a terminal sends it.
    while (m := again.until(r"\[crash_train_(\w+?)_d\d+w\d+\] epoch +(\d+) "))[1] == first:
        pass
    interrupted, epoch = m[1], int(m[2])
    assert epoch < 3, "the trial was not interrupted mid-training"
    os.killpg(again.proc.pid, signal.SIGINT)
    assert again.finish() == EXIT_STATUS, again.log()
    log = again.log()
    assert "interrupted: resume with `python study/run.py --name crash --resume --preset " \
           "smoke" in log, log
    assert "Pareto front" not in log and "marked FAIL" not in log
    assert not (study_dir / "report").exists()  # no summary, post-study or report
    assert set(read_results(study_dir)["trial_id"]) == {first}  # no row for the interrupted
    ot = optuna.load_study(study_name="crash", storage=f"sqlite:///{study_dir / 'optuna.db'}")
    assert sorted(t.state.name for t in ot.trials) == ["COMPLETE", "RUNNING"]

    last = study([*args, "--resume"])
    resumed = last.until(r"resuming after epoch (\d+)")  # (only the interrupted trial runs)
    assert last.finish() == 0, last.log()
    assert int(resumed[1]) >= 1  # Tune saved the interrupted trial with its checkpoint
    assert {p: p.stat().st_mtime_ns for p in train_run.rglob("*")} == train_files, \
        "a finished trial was started again"

    df = read_results(study_dir).set_index("trial_id")
    assert len(df) == 2 and (df["status"] == "ok").all(), df[["status", "error"]]
    assert set(df.index) == {first, interrupted}
    assert df.loc[first, "trial_wall_s"] == before.loc[first, "trial_wall_s"]  # row untouched

    # Optuna agrees with the table trial by trial: same count, configs and values.
    ot = optuna.load_study(study_name="crash", storage=f"sqlite:///{study_dir / 'optuna.db'}")
    done = [t for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == len(df) == len(ot.trials) == 2
    table = sorted(zip(df["lr"], df["width"], df["quality"], df["train_cost_s"], strict=True))
    db = sorted((t.params["lr"], t.params["width"], *t.values) for t in done)
    np.testing.assert_allclose(db, table, rtol=1e-9)
    # ... and so does Tune's own state: the same trials with the same configs.
    state = json.loads(max((study_dir / "ray" / "crash").glob("experiment_state-*.json"))
                       .read_text())
    tune_trials = {t["trial_id"]: t["config"] for t in
                   (json.loads(data) for data, _ in state["trial_data"])}
    assert set(tune_trials) == set(df.index)
    assert all(tune_trials[i]["lr"] == df.loc[i, "lr"] for i in df.index)


# ---- without Ray: the lock, the storage claim, Ctrl-C around Tune ------------------------------

HOLD = """import sys; from pathlib import Path
from study.layout import StudyLayout; from study.lock import StudyLock
StudyLock(StudyLayout(Path(sys.argv[1]))).acquire(); print("locked", flush=True); sys.stdin.read()
"""


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """main() in this process with the study driver (it returns 0) and the judge stubbed."""
    import trainables.evaluate
    import trainables.judge
    from study.run import main

    judge = types.SimpleNamespace(val_acc=0.5, state=lambda: {"weights": np.zeros(2)})
    monkeypatch.setattr(trainables.judge, "load_or_train_judge", lambda splits: judge)
    monkeypatch.setattr(trainables.evaluate, "reference_row", lambda *a, **k: {})
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    fake_driver = types.ModuleType("study.driver")
    fake_driver.run_study = lambda *a, **k: 0
    monkeypatch.setitem(sys.modules, "study.driver", fake_driver)
    return lambda *args: main([*SMOKE, *args])


def test_a_second_driver_is_refused_and_a_dead_drivers_lock_taken_over(tmp_path, cli, capsys):
    study_dir = tmp_path / "runs" / "busy"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(study_dir)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in ([], ["--resume"]):  # a new study of that name, or a resume of it
            if extra:
                (study_dir / "study.json").write_text("{}")  # (refused before it is read)
            assert cli("--name", "busy", "--output-dir", str(tmp_path / "runs"), *extra) == 2
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0 and err.startswith(f"error: {study_dir} is in use by "
                                                           f"another driver (held by pid "
                                                           f"{holder.pid} on host "), err
        assert sorted(p.name for p in study_dir.iterdir()) == [".lock", "study.json"]
    finally:
        holder.kill()  # a driver that dies holding the lock: the kernel releases it
        holder.wait()
    (study_dir / "study.json").unlink()
    lock = StudyLock(StudyLayout(study_dir))
    lock.acquire()
    assert f"taking over {study_dir / '.lock'}: the driver that held it (pid {holder.pid} on " \
           f"host " in capsys.readouterr().err
    assert json.loads((study_dir / ".lock").read_text())["pid"] == os.getpid()
    lock.started = True
    lock.release()
    assert (study_dir / ".lock").read_text() == ""  # released cleanly: no holder named


def test_two_study_directories_cannot_share_one_optuna_study(tmp_path, cli, capsys):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("--name", "s", "--storage", url, "--output-dir", str(a)) == 0
    record = json.loads((a / "s" / "study.json").read_text())
    ot = optuna.load_study(study_name="s", storage=url)
    assert ot.user_attrs == {"study_dir": str(a / "s"), "study_token": record["study_token"]}
    capsys.readouterr()
    assert cli("--name", "s", "--storage", url, "--output-dir", str(b)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already holds Optuna study 's', made by " + str(a / "s") \
        in err, err
    assert not b.exists()  # the refused driver's folders are gone
    assert cli("--name", "s", "--storage", url, "--output-dir", str(a), "--resume") == 0
    assert optuna.load_study(study_name="s", storage=url).user_attrs == ot.user_attrs


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C, `ray job stop`
def test_ctrl_c_stops_tune_once_then_at_once(sig):
    """Inside the tuning, the first SIGINT (or SIGTERM) asks Tune to stop (its graceful path)
    and returns; a second, or one outside the tuning, raises KeyboardInterrupt."""
    from ray.tune.tune import _setup_signal_catching

    saved = signal.getsignal(signal.SIGUSR1)
    try:
        with INTERRUPTS.installed():
            assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
            with pytest.raises(KeyboardInterrupt):  # before any tuning: at once
                os.kill(os.getpid(), sig)
            INTERRUPTS.count = 0
            with INTERRUPTS.tuning():
                tune_stopped = _setup_signal_catching()  # as Tuner.fit() does
                os.kill(os.getpid(), sig)
                assert tune_stopped.is_set() and INTERRUPTS.requested
                with pytest.raises(KeyboardInterrupt):
                    os.kill(os.getpid(), sig)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR1, saved)
