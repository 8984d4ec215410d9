"""The study's console: one line per trial event (started; finished, or stopped early, with its
quality and cost; failed with the reason) and a progress line (trials done / total, elapsed,
estimated remaining). What Ray, Tune and Train say themselves (controller state transitions,
"Reporting training result …", deprecation warnings, Tune's tables and TensorBoard hint, every
actor's and worker's output) goes to ``runs/<name>/logs/`` instead; ``--verbose`` brings it back
to the console, and it is logged all the same. Errors stay visible: a forwarded line that is
an error or a traceback is printed either way, and the driver's own warnings go to stderr.

    with CONSOLE.study(layout, verbose):      # study/driver.py, around Ray's lifetime
        ray.init(...)
        CONSOLE.follow_workers()              # Ray's forwarded output: to logs/workers.log
        with CONSOLE.quiet():                 # Tune's own prints: to logs/driver.log
            tuner.fit()                       # callbacks: [ResultsCallback, ProgressCallback]
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout, suppress
from pathlib import Path

from ray import tune

from study import results, rows
from study.layout import StudyLayout
from study.search_space import describe, hyperparameters

#: Loggers of the driver whose records go to logs/driver.log (and to the console if --verbose),
#: besides every "ray.*" logger that has handlers of its own (Ray Data's does). Optuna's too:
#: its lines (e.g. GPSampler's hint to install greenlet) are not the study's.
LOGGERS = ("ray", "optuna", "py.warnings")
#: A forwarded line shown on the console even when quiet: an error, or a trial's resume. Of a
#: traceback only the exception's line ("ConnectionError: ...") is shown, not its header
#: ("Exception in thread ...:"); the whole of it is in logs/workers.log.
SHOWN = re.compile(r"\b(ERROR|CRITICAL|FATAL)\b|^[\w.]*(Error|Exception)(:|$)|resuming after epoch")
HEARTBEAT_S = 300  # without a TTY, the progress line is printed again after this much silence
REDRAW_S = 1.0  # on a TTY, the live progress line is redrawn at most this often


class _LogFile:
    """A text file several threads append to (a logging stream and a stdout target)."""

    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "a", buffering=1)  # closed when Console.study ends
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:  # a line Ray forwards as the study ends is dropped, not an error
            return 0 if self._f.closed else self._f.write(text)

    def flush(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()

    def close(self) -> None:
        with self._lock:
            self._f.close()


class Console:
    """Where the study's lines go (module-level CONSOLE: Tune pickles callbacks, not streams)."""

    def __init__(self):
        self._console = None  # the real stdout while quiet() sends sys.stdout to the log
        self.verbose = True
        self.layout: StudyLayout | None = None
        self._driver: _LogFile | None = None
        self._workers: _LogFile | None = None
        self._raylet_printing = None  # undoes route_raylet_messages while workers are followed
        self._status = ""  # the live progress line drawn on a TTY ("" when none)
        self._lock = threading.Lock()

    @property
    def stream(self):
        """The console: sys.stdout as it is now (looked up at each line, since tests and
        notebooks replace it), or the one quiet() saved before sending sys.stdout to the log."""
        return self._console if self._console is not None else sys.stdout

    @property
    def tty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def say(self, line: str) -> None:
        """One line on the console (above the live progress line) and in logs/driver.log."""
        with self._lock:
            out = self.stream
            out.write(("\r\x1b[K" if self._status else "") + line + "\n" + self._status)
            out.flush()
        if self._driver is not None:
            self._driver.write(line + "\n")

    def status(self, line: str) -> None:
        """The live progress line: redrawn in place on a TTY, else printed as a line."""
        if not self.tty:
            self.say(line)
            return
        with self._lock:
            self._status = line
            self.stream.write("\r\x1b[K" + line)
            self.stream.flush()

    @contextmanager
    def study(self, layout: StudyLayout, verbose: bool) -> Iterator[None]:
        """Ray's, Tune's and Train's loggers and Python's warnings to logs/driver.log, and off
        the console unless `verbose`, for the duration of a study's use of Ray."""
        self.verbose, self.layout = verbose, layout
        logs = layout.logs
        logs.root.mkdir(parents=True, exist_ok=True)
        self._driver, self._workers = _LogFile(logs.driver), _LogFile(logs.workers)
        handler = logging.StreamHandler(self._driver)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.captureWarnings(True)
        saved = {}
        own = [n for n, lg in logging.root.manager.loggerDict.items()
               if n.startswith("ray.") and getattr(lg, "handlers", None)]
        for name in (*LOGGERS, *own):
            logger = logging.getLogger(name)
            saved[name] = (list(logger.handlers), logger.propagate)
            if not verbose:  # its console handlers off; its records to the file only
                for h in list(logger.handlers):
                    if isinstance(h, logging.StreamHandler) and \
                            not isinstance(h, logging.FileHandler):
                        logger.removeHandler(h)
                logger.propagate = False
            logger.addHandler(handler)
        try:
            yield
        finally:
            self.end_status()
            for name, (handlers, propagate) in saved.items():
                logger = logging.getLogger(name)
                logger.handlers[:] = handlers
                logger.propagate = propagate
            logging.captureWarnings(False)
            self._unfollow_workers()
            files, self._driver, self._workers = (self._driver, self._workers), None, None
            for f in files:  # after dropping them: a late forwarded line finds no file
                f.close()

    def follow_workers(self) -> None:
        """Every line Ray forwards from actors and workers to logs/workers.log; on the console
        too with --verbose (Ray's own printing), else only errors and trial resumes."""
        from study import optuna_private as private

        private.add_worker_output_handler("study_logs", self._forwarded)
        if not self.verbose:
            private.remove_ray_worker_printing()
            self._raylet_printing = private.route_raylet_messages(self._forwarded)

    def _unfollow_workers(self) -> None:
        from study import optuna_private as private

        with suppress(Exception):  # Ray may be shut down already
            private.remove_worker_output_handler("study_logs")
        if self._raylet_printing is not None:
            self._raylet_printing()
            self._raylet_printing = None

    def _forwarded(self, data: dict) -> None:
        """A batch of forwarded lines: {"pid", "actor_name"/"task_name", "ip", "lines", ...}."""
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who + ' ' if who else ''}pid={data.get('pid')}, ip={data.get('ip')})"
        lines = [str(line) for line in data.get("lines", [])]
        if self._workers is not None:
            self._workers.write("".join(f"{prefix} {line}\n" for line in lines))
        if self.verbose:
            return  # Ray prints them itself
        traceback = any(line.startswith("Traceback (most recent") for line in lines)
        for line in lines:
            if SHOWN.search(line):
                more = f" (traceback in {self.layout.logs.workers})" if traceback and \
                    self.layout is not None else ""
                self.say(f"{prefix} {line}{more}")

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """What Tune prints itself (its configuration box, trial tables, the TensorBoard hint)
        to logs/driver.log unless --verbose; the study's own lines use the saved stream."""
        if self.verbose or self._driver is None:
            yield
            return
        self._console = sys.stdout
        try:
            with redirect_stdout(self._driver):
                yield
        finally:
            self._console = None

    def end_status(self) -> None:
        """Leave the live progress line where it is and go to the next line."""
        with self._lock:
            if self._status:
                self.stream.write("\n")
                self.stream.flush()
            self._status = ""


CONSOLE = Console()


def trial_line(row: dict) -> str:
    """One console line per finished trial: its axes, outcome, quality and cost."""
    head = f"trial {row['trial_id']} {describe(row)}"
    if row.get("status") != "ok":
        return f"{head}: FAILED ({row.get('stop_reason')}): {row.get('error') or 'no result'}"
    reason, run = row.get("stop_reason"), _int(row.get("epochs_run"))
    budget = _int(row.get("epochs"))
    epochs = f"{run}/{budget} epochs" if run is not None and budget else "epochs unknown"
    how = {"completed": f"completed {epochs}", "asha": f"stopped early by ASHA after {epochs}",
           "early_stop": f"stopped early (no validation gain) after {epochs}",
           "time_budget": f"time budget spent after {epochs}",
           "step_budget": f"step budget spent after {epochs}"}.get(reason, f"{reason}, {epochs}")
    q, metric = row.get(rows.QUALITY), row.get("quality_metric")
    parts = [f"{head}: ok ({how})"]
    if q is not None:
        w = row.get("guidance")
        parts.append(f"{metric} {q:.3f}" + (f" at w={w:g}" if w is not None else ""))
    cost = [f"{label} {row[col]:.0f} s" for col, label in (("train_seconds", "train"),
                                                          ("trial_wall_s", "wall"))
            if row.get(col) is not None]
    return ", ".join(parts) + ("; " + ", ".join(cost) if cost else "")


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class ProgressCallback(tune.Callback):
    """`trial … started` lines and the progress line of the study's Tuner: search trials done /
    total and confirmation runs done (counted in results.csv, so a resumed study counts what
    it finished before), running, elapsed and an estimate of what is left at this run's pace.
    `confirm`: the study's ConfirmPlan (study/confirm.py), None when it confirms nothing."""

    def __init__(self, study_dir: str, total: int, confirm=None):
        self.study_dir, self.total, self.confirm = study_dir, total, confirm
        self._setup()

    def _setup(self) -> None:
        self.start = time.monotonic()
        self.running: set[str] = set()
        self.before = self._done()["runs"]
        self.last_line = self.last_draw = self.start

    def setup(self, **info):  # each fit, a restored one too (callbacks are pickled with Tune)
        self._setup()

    def _done(self) -> dict:
        """Rows in results.csv: search trials, of them failed, confirmation runs, all runs, and
        the runs left (search trials, and the confirmations the front as it stands calls for)."""
        df = results.read_results(Path(self.study_dir))
        search = df[df["confirm_of"].isna()]
        confirmed = len(df) - len(search)
        planned = self.confirm.planned(df) if self.confirm else 0
        return {"search": len(search), "failed": int((df["status"] == "failed").sum()),
                "confirmed": confirmed, "runs": len(df),
                "left": max(0, self.total - len(search)) + max(0, planned - confirmed)}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        params = hyperparameters(trial.config)
        extra = (f" (confirms {params['confirm_of']} with seed {params.get('seed')})"
                 if params.get("confirm_of") else "")
        CONSOLE.say(f"trial {trial.trial_id} {describe(params)}: started{extra}")
        if CONSOLE.tty:
            self._progress()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self._progress()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self._progress()

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if CONSOLE.tty and now - self.last_draw >= REDRAW_S:
            self._progress()
        elif not CONSOLE.tty and now - self.last_line >= HEARTBEAT_S:
            self._progress()

    def line(self) -> str:
        done = self._done()
        elapsed = time.monotonic() - self.start
        now, left = done["runs"] - self.before, done["left"]
        if left == 0:
            eta = "none left"
        elif now > 0:
            eta = f"about {_duration(elapsed / now * left)} left"
        else:
            eta = "time left known after the first trial"
        failed = f", {done['failed']} failed" if done["failed"] else ""
        confirmed = (f", {done['confirmed']} confirmation runs done"
                     if self.confirm and done["confirmed"] else "")
        return (f"[{done['search']}/{self.total} trials done{failed}{confirmed}, "
                f"{len(self.running)} running, {_duration(elapsed)} elapsed, {eta}]")

    def _progress(self) -> None:
        CONSOLE.status(self.line())
        self.last_line = self.last_draw = time.monotonic()
