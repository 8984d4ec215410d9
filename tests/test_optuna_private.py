"""study/optuna_private.py against the installed Optuna and Ray: each private attribute or call
the study's crash recovery relies on still exists and does what it did. An upgrade that changes
one fails here, loudly, instead of silently breaking `--resume`."""

import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch

from study import optuna_private as private
from study.presets import PRESETS


@pytest.fixture
def search():
    s = OptunaSearch(metric=["quality", "train_cost_s"], mode=["max", "min"], seed=0)
    s.set_search_properties(None, None, PRESETS["smoke"].space.to_tune())
    return s


def test_tune_trial_ids_map_to_their_optuna_trials(search):
    params = search.suggest("t1")
    trials = private.ot_trials(search)
    assert set(trials) == {"t1"} and isinstance(trials["t1"], optuna.Trial)
    study = private.ot_study(search)
    assert isinstance(study, optuna.Study)
    frozen = study.trials[trials["t1"].number]
    assert frozen.state == optuna.trial.TrialState.RUNNING and frozen.params == params


def test_marking_completed_tells_optuna_nothing(search):
    search.suggest("t1")
    private.mark_completed(search, "t1")
    assert "t1" in search._completed_trials
    states = [t.state for t in private.ot_study(search).trials]
    assert states == [optuna.trial.TrialState.RUNNING]


def test_adopting_a_half_written_trial_completes_its_parameters(search):
    study = private.ot_study(search)
    crashed = study.ask()  # asked by a driver killed after writing one parameter
    crashed.suggest_float("lr", 1e-3, 2e-3, log=True)
    frozen = study.trials[crashed.number]
    adopted = private.adopt(search, frozen)
    assert adopted.number == crashed.number and len(study.trials) == 1
    params = study.trials[crashed.number].params
    assert set(params) == set(PRESETS["smoke"].space.to_dict())
    assert params["lr"] == frozen.params["lr"]  # what was written stays


def test_finished_states_are_optunas_terminal_ones():
    assert {s for s in optuna.trial.TrialState if s.is_finished()} == set(private.FINISHED)


@pytest.mark.parametrize("sigint_disabled", ["0", "1"])
def test_tune_stops_on_request_whether_or_not_it_handles_sigint(sigint_disabled, monkeypatch):
    """Tune's graceful stop (what its own SIGINT handler does) is reachable through SIGUSR1's
    handler, also with TUNE_DISABLE_SIGINT_HANDLER=1 (how the driver takes Ctrl-C itself)."""
    import signal

    from ray.tune.tune import _setup_signal_catching

    monkeypatch.setenv("TUNE_DISABLE_SIGINT_HANDLER", sigint_disabled)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR1)}
    try:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        assert not private.request_tune_stop()  # no tuning: nothing to ask
        signal.signal(signal.SIGINT, signal.default_int_handler)
        interrupted = _setup_signal_catching()  # what Tuner.fit() does first
        assert (signal.getsignal(signal.SIGINT) is signal.default_int_handler) == \
            (sigint_disabled == "1")
        assert private.request_tune_stop() and interrupted.is_set()
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_raylet_messages_reach_the_handler_instead_of_the_console(capfd):
    import inspect

    from ray._private import worker

    # Ray's error listener prints through the module's print_to_stdstream, looked up per call
    assert "print_to_stdstream(" in inspect.getsource(worker.listen_error_messages)
    got = []
    restore = private.route_raylet_messages(got.append)
    try:
        batch = {"lines": ["WARNING: 10 PYTHON worker processes have been started"],
                 "pid": "raylet", "is_err": False}
        worker.print_to_stdstream(batch, ignore_prefix=False)
    finally:
        restore()
    assert got == [batch] and capfd.readouterr().out == ""
    worker.print_to_stdstream({"lines": ["back on the console"], "pid": "raylet",
                               "is_err": False}, ignore_prefix=False)
    assert "back on the console" in capfd.readouterr().out
