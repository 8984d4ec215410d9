"""Ctrl-C (or SIGTERM, e.g. `ray job stop`) during a study: the first stops it cleanly, a second
stops it at once.

Ray Tune, left to itself, catches SIGINT inside ``Tuner.fit()``, saves its state and returns as
if the study had finished, so the driver went on to fail "orphaned" Optuna trials, print a
summary and exit 0. Here the driver owns SIGINT (``TUNE_DISABLE_SIGINT_HANDLER``, Tune's
documented switch) and tells the two apart:

- first Ctrl-C while trials run: Tune is asked to stop as it would on its own SIGINT (the
  running trials stop, its state is saved with them unfinished); the driver then skips
  everything after the tuning (no Optuna FAIL, summary, post-study or report), says how to
  resume and exits 130;
- a Ctrl-C outside the tuning, or a second one: KeyboardInterrupt at once. Nothing is left
  corrupted: results.csv is replaced atomically, Optuna writes in transactions, and Tune keeps
  its last complete state (the same recovery as a killed driver's).

    with INTERRUPTS.installed():        # study/run.py, around the whole study
        with INTERRUPTS.tuning():
            tuner.fit()
        if INTERRUPTS.requested: ...    # stopped, not finished
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_STATUS = 130  # 128 + SIGINT, what a shell reports for a process ended by Ctrl-C
TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"
#: Ctrl-C, and SIGTERM: what `ray job stop` sends a study's job (then SIGKILL 3 s later, time
#: enough for Tune to save its state with the running trials unfinished).
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    def __init__(self):
        self.count = 0
        self._tuning = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        """The driver's SIGINT handling for the duration of a study (the previous handler and
        environment come back after)."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only
            return
        self.count = 0
        env = os.environ.get(TUNE_SIGINT_ENV)
        os.environ[TUNE_SIGINT_ENV] = "1"  # read by Tuner.fit(): the driver's, not Tune's
        previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if env is None:
                os.environ.pop(TUNE_SIGINT_ENV, None)
            else:
                os.environ[TUNE_SIGINT_ENV] = env

    @property
    def requested(self) -> bool:
        return self.count > 0

    @contextmanager
    def tuning(self) -> Iterator[None]:
        """While Tune runs trials: the first Ctrl-C asks it to stop and save its state."""
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:  # again: ray.init() installs a SIGTERM handler of its own
                signal.signal(s, self._handle)
        self._tuning = True
        try:
            yield
        finally:
            self._tuning = False

    def _handle(self, signum, frame) -> None:
        from study import optuna_private as private

        self.count += 1
        if self.count == 1 and self._tuning and private.request_tune_stop(frame):
            print("\ninterrupted: stopping the running trials and saving Tune's state "
                  "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
            return
        raise KeyboardInterrupt


INTERRUPTS = Interrupts()


def resume_hint(name: str, argv: list[str]) -> str:
    """The line that ends an interrupted study: the command that continues it, i.e. the same
    options with --name and --resume (credentials masked)."""
    from study.redact import redact

    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--name":
            skip = True
        elif a != "--resume" and not a.startswith("--name="):
            rest.append(redact(a) if "://" in a else a)
    return (f"interrupted: resume with `python study/run.py "
            f"{shlex.join(['--name', name, '--resume', *rest])}`")
