"""Drive a prepared study on Ray: start (or attach to) Ray, size the trials to the resources found,
run the Tuner (or restore it): the search, then the Pareto front's confirmation runs with more
seeds (study/confirm.py), print a summary, and write the post-study inputs and the report.
The console shows one line per trial event and a progress line; Ray's, Tune's and Train's own
output goes to runs/<name>/logs/ unless --verbose (study/console.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from study.ray_env import RAY_ENV

for _name, _value in RAY_ENV.items():  # before Ray is imported
    os.environ.setdefault(_name, _value)

import optuna  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402

from analysis.tables import pareto_front  # noqa: E402
from study import results  # noqa: E402
from study.auth_token import ensure_token, make_private, token_path  # noqa: E402
from study.confirm import ConfirmPlan  # noqa: E402
from study.console import CONSOLE, ProgressCallback  # noqa: E402
from study.errors import UsageError  # noqa: E402
from study.finalize import ResultsCallback  # noqa: E402
from study.interrupt import EXIT_STATUS, INTERRUPTS  # noqa: E402
from study.presets import sampler_kind  # noqa: E402
from study.redact import redact  # noqa: E402
from study.rungs import AshaConfig, start_keeper  # noqa: E402
from study.search import StudySearch, fail_orphans  # noqa: E402
from study.search_space import AXES, trial_name  # noqa: E402
from study.spec import DRIVER_CPU, Sizing, StudyRecord, StudySpec, size_trials  # noqa: E402
from study.trial import run_trial  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OBJECT_STORE_BYTES = 512 * 1024**2  # samples and checkpoints are small; Ray's default is 30% RAM


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Attach to `address` (or to $RAY_ADDRESS, which Ray sets inside a Ray Job), or start a
    local Ray with the dashboard bound to 127.0.0.1."""
    # Workers import the project; an editable install suffices, a plain checkout needs this.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    if address or os.environ.get("RAY_ADDRESS"):
        make_private(token_path())
        ctx = ray.init(address=address)
    else:
        if os.environ.get("RAY_AUTH_MODE", "token") == "token" and \
                not os.environ.get("RAY_AUTH_TOKEN"):
            ensure_token()  # Ray would create it readable by everyone
        ctx = ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1",
                       num_cpus=num_cpus or os.cpu_count(), object_store_memory=OBJECT_STORE_BYTES)
    url = ctx.dashboard_url
    print(f"Ray dashboard: http://{url}" if url else "Ray dashboard: not running", flush=True)


def attached(spec: StudySpec) -> bool:
    return bool(spec.address or os.environ.get("RAY_ADDRESS"))


def run_study(record: StudyRecord, judge: dict, resume: bool = False,
              verbose: bool = False) -> int:
    """Run the study `record` describes; its sizing is None when attaching to a cluster (sized
    here, from what the cluster has). `judge`: the judge's state, sent to every trial.
    `verbose`: Ray's, Tune's and Train's own output on the console too, not only in logs/."""
    logs = record.spec.layout.logs
    print(f"Ray, Tune and Train output: {logs.root}/ ({logs.driver.name}, {logs.workers.name})"
          + ("" if verbose else "; --verbose prints it here too"), flush=True)
    with CONSOLE.study(record.spec.layout, verbose):
        return _run_study(record, judge, resume, verbose)


def _run_study(record: StudyRecord, judge: dict, resume: bool, verbose: bool) -> int:
    spec = record.spec
    init_ray(spec.address, num_cpus=None)
    CONSOLE.follow_workers()
    try:
        nodes = sum(n["Alive"] for n in ray.nodes())
        if nodes > 1 and not spec.shared_storage:
            from study.storage import refuse_node_local

            refuse_node_local(None, False, f"this Ray cluster has {nodes} nodes")
        sizing = record.sizing
        if sizing is None:
            res = ray.cluster_resources()
            sizing = size_trials(spec, res.get("CPU", 1), res.get("GPU", 0))
            record = StudyRecord(spec, sizing, record.facts)
            record.save(spec.layout)  # the Finalizer costs stopped trials by it
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        ray.shutdown()
        return 2
    try:
        print(f"study {spec.name}: {spec.num_trials} trials, "
              f"{sizing.describe(spec.workers_per_trial)}; sampler "
              f"{sampler_kind(spec.sampler)}, ASHA {'on' if spec.asha else 'off'}", flush=True)
        tune_path = f"{spec.tune_path.rstrip('/')}/{spec.name}"
        rungs = start_keeper(AshaConfig.for_budget(spec.base.train.epochs),
                             _histories(spec.layout)) if spec.asha else None
        if resume and tune.Tuner.can_restore(tune_path):
            # Tune's state may predate the last rows written: those trials only re-report.
            trainable = _trainable(spec, sizing, judge, rungs,
                                   results.finished_rows(spec.study_dir))
            tuner = tune.Tuner.restore(tune_path, trainable=trainable,
                                       resume_unfinished=True, resume_errored=True)
        else:
            tuner = make_tuner(spec, sizing, judge, rungs, verbose=verbose)
        with INTERRUPTS.tuning(), CONSOLE.quiet():  # Ctrl-C: stop the trials, save Tune's state
            tuner.fit()
        if INTERRUPTS.requested:  # stopped, not finished: nothing after the tuning runs
            return EXIT_STATUS
        orphans = fail_orphans(optuna.load_study(study_name=spec.name, storage=spec.storage))
        if orphans:
            print(f"Optuna: {orphans} trial(s) left running by an interrupted driver marked "
                  f"FAIL (Tune never ran them)", flush=True)
        print_summary(spec)
        _post_study(spec)
    finally:
        ray.shutdown()
    return 0


def _post_study(spec: StudySpec) -> None:
    """Report inputs that need the checkpoints, then the report itself; the results are already
    on disk, so a failure here only costs the report (rebuild it by hand)."""
    study_dir = spec.study_dir
    try:
        from study.post import post_study

        post_study(Path(study_dir))
    except Exception as e:
        print(f"warning: post-study evaluation failed ({type(e).__name__}: {e}); "
              f"retry with `python -m study.post {study_dir}`", flush=True)
    try:
        from analysis.report import build_report

        print(f"report: {build_report(study_dir)}", flush=True)
    except Exception as e:
        print(f"warning: report failed ({type(e).__name__}: {e}); retry with "
              f"`python -m analysis.report {study_dir}`", flush=True)


def _trainable(spec: StudySpec, sizing: Sizing, judge: dict, rungs=None,
               finished: dict | None = None, run=run_trial):
    return tune.with_resources(
        tune.with_parameters(run, spec=spec, sizing=sizing, judge=judge, rungs=rungs,
                             finished=finished),
        {"cpu": DRIVER_CPU})


def _histories(layout) -> dict[str, list[dict]]:
    """Per-epoch reports of the trials a resumed study already finished, for its rungs."""
    out = {}
    for trial_id in results.finished_rows(layout.root):
        outcome = layout.trial(trial_id).outcome
        try:
            out[trial_id] = json.loads(outcome.read_text()).get("history", [])
        except (OSError, ValueError):  # a trial without a readable outcome: nothing to replay
            continue
    return out


def _trial_name(trial) -> str:
    return trial_name(trial.trial_id, trial.config)


def make_tuner(spec: StudySpec, sizing: Sizing, judge: dict, rungs=None,
               run=run_trial, verbose: bool = False) -> tune.Tuner:
    """The study's Tuner; `run(params, spec, sizing, judge, rungs, finished)` is the trial
    (tests pass a lighter one); `rungs` the study's RungKeeper (study/rungs.py). Tune's own
    trial table only with `verbose`: the study prints its own lines (study/console.py).
    The confirmation runs are the Tuner's last trials, handed out by the searcher as front
    points become final (study/confirm.py): num_samples leaves room for a front of every
    trial, and the searcher ends the Tuner when its front is confirmed."""
    confirm = ConfirmPlan.for_study(spec.seed, spec.confirm_seeds)
    searcher = StudySearch(study_dir=spec.study_dir, study_name=spec.name, seed=spec.seed,
                           sampler_config=spec.sampler, num_trials=spec.num_trials,
                           confirm=confirm, storage=optuna.storages.RDBStorage(spec.storage))
    return tune.Tuner(
        _trainable(spec, sizing, judge, rungs, run=run),
        param_space=spec.space.to_tune(),
        tune_config=tune.TuneConfig(
            # Early stopping is decided inside the trials (study/rungs.py): Tune runs them FIFO.
            search_alg=searcher,
            num_samples=spec.num_trials * (1 + (len(confirm.seeds) if confirm else 0)),
            max_concurrent_trials=sizing.concurrent,
            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
            # Not reused: a reused trial driver once outlived Tune's ASHA stop, its Ray Train run
            # kept training and holding CPUs, and a cpu-preset study stalled after 4 trials.
            reuse_actors=False),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=spec.tune_path,
            callbacks=[ResultsCallback(spec.study_dir),
                       ProgressCallback(spec.study_dir, spec.num_trials, confirm)],
            failure_config=tune.FailureConfig(max_failures=spec.trial_retries),
            verbose=1 if verbose else 0),
    )


def print_summary(spec: StudySpec) -> None:
    """The study's outcome on the console: counts, the first-seed front, Optuna's view, and the
    answer (the best configuration for its cost, with ± where seeds exist)."""
    layout = spec.layout
    df = results.read_results(spec.study_dir)
    print(f"\n{len(df)} trials; {int((df['status'] == 'ok').sum())} ok, "
          f"{int((df['status'] != 'ok').sum())} failed. Quality = {spec.quality_metric}.")
    front = pareto_front(df[df["confirm_of"].isna()])
    cols = ["trial_id", *AXES, "quality", "judge_acc", "frechet", "train_cost_s", "params"]
    print("Pareto front (quality up, training seconds down):")
    print(front[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    ot = optuna.load_study(study_name=spec.name, storage=spec.storage)
    print(f"Optuna: {len(ot.trials)} trials, {len(ot.best_trials)} on its Pareto front "
          f"(storage {redact(spec.storage)})")
    print(f"results: {layout.results}")
    layout.pareto.write_text(json.dumps(front[cols].to_dict(orient="records"), indent=1))
    try:  # the report's opening sentences (mean ± std over seeds), from the files just written
        from analysis.results import load_study
        from analysis.summary import answer

        print("\n".join(["", *answer(load_study(layout.root))]), flush=True)
    except Exception as e:  # the summary must not cost the study its post-study and report
        print(f"warning: no answer sentence ({type(e).__name__}: {e})", file=sys.stderr)
