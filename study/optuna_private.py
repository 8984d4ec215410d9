"""Every use of Optuna's (and Ray's) private API, in one place.

Crash recovery needs a few things neither library offers publicly: the Optuna trial behind a
Tune trial id, adopting a trial a crashed driver asked for, and sampling the parameters such a
trial is missing; a clean Ctrl-C needs Tune's graceful stop without Tune's SIGINT handler; a
quiet console (study/console.py) needs the driver's handlers of Ray's forwarded worker output.
Each is a small function here; tests/test_optuna_private.py exercises every one against the
installed versions, so an upgrade that changes them fails loudly there instead of silently
breaking ``--resume`` or Ctrl-C.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
from ray.tune.search.optuna import OptunaSearch

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
            optuna.trial.TrialState.PRUNED)


def ot_trials(search: OptunaSearch) -> dict[str, optuna.Trial]:
    """Tune trial id → the Optuna trial OptunaSearch asked for it (``_ot_trials``)."""
    return search._ot_trials


def ot_study(search: OptunaSearch) -> optuna.Study:
    """The Optuna study OptunaSearch asks and tells (``_ot_study``)."""
    return search._ot_study


def mark_completed(search: OptunaSearch, trial_id: str) -> None:
    """Record a trial as done in OptunaSearch without telling Optuna (``_completed_trials``):
    for a resumed trial whose outcome Optuna already holds."""
    search._completed_trials.add(trial_id)


def adopt(search: OptunaSearch, frozen: optuna.trial.FrozenTrial) -> optuna.Trial:
    """A live handle on a RUNNING trial that a crashed driver asked for, with any parameter a
    kill between Optuna's writes left unset sampled now, as ``study.ask(fixed_distributions)``
    does. Optuna has no public call for either: ``Trial(study, _trial_id)`` and
    ``Trial._suggest``."""
    trial = optuna.Trial(search._ot_study, frozen._trial_id)
    for name, dist in search._space.items():
        if name not in frozen.params:
            trial._suggest(name, dist)
    return trial


def request_tune_stop(frame=None) -> bool:
    """Ask a running ``Tuner.fit()`` to stop as on its own SIGINT: end the trials, save the
    experiment state with them unfinished, return. Tune registers that handler for SIGUSR1
    too, whether or not its SIGINT handler is disabled (``ray.tune.tune._setup_signal_catching``);
    False when none is registered (no tuning running)."""
    import signal

    handler = signal.getsignal(signal.SIGUSR1)
    if not callable(handler) or getattr(handler, "__qualname__", "") != \
            "_setup_signal_catching.<locals>.signal_interrupt_tune_run":
        return False
    handler(signal.SIGUSR1, frame)
    return True


def _dispatcher():
    """Ray's driver-side fan-out of the stdout/stderr lines it forwards from every actor and
    worker (``ray._private.ray_logging.global_worker_stdstream_dispatcher``)."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher

    return global_worker_stdstream_dispatcher


#: The dispatcher handler through which ``ray.init(log_to_driver=True)`` prints those lines.
RAY_PRINT_HANDLER = "ray_print_logs"


def add_worker_output_handler(name: str, handler) -> None:
    """Call `handler(batch)` with every batch of forwarded lines: a dict with "lines", "pid",
    "ip", "is_err" and "actor_name" or "task_name"."""
    _dispatcher().add_handler(name, handler)


def remove_worker_output_handler(name: str) -> None:
    _dispatcher().remove_handler(name)


def remove_ray_worker_printing() -> bool:
    """Stop Ray printing forwarded lines on the driver's console (other handlers still get
    them); False when Ray had no such handler (``log_to_driver=False``)."""
    present = any(n == RAY_PRINT_HANDLER for n, _ in _dispatcher().handlers)
    _dispatcher().remove_handler(RAY_PRINT_HANDLER)
    return present


def route_raylet_messages(handler) -> Callable[[], None]:
    """Send the messages the raylet publishes to the driver ("N worker processes have been
    started ...", OOM kills) to `handler(batch)` instead of the console: Ray's error listener
    (``ray._private.worker.listen_error_messages``) prints them with the module's
    ``print_to_stdstream``, past the dispatcher above. Returns the function that undoes it."""
    from ray._private import worker

    printing = worker.print_to_stdstream
    worker.print_to_stdstream = lambda data, ignore_prefix=True: handler(data)

    def restore() -> None:
        worker.print_to_stdstream = printing

    return restore
