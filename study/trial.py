"""One Tune trial: a function that builds and fits a Ray Train ``TorchTrainer`` for the sampled
hyperparameters, then reports the trial's measurements to Tune (study/finalize.py makes them
a row).

Train V2 pattern (see ../shared/RAY_NOTES.md), with one change: worker reports reach Tune from
this function's own thread (``fit_reporting``), not through ``TuneReportCallback``. The
trainer's name is derived from the trial, so a retried trial finds its checkpoints and resumes;
the driver ends with ``tune.report`` carrying the final checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ray import train, tune
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Empty, Queue

from study.search_space import apply, hyperparameters, trial_name
from study.spec import Sizing, StudySpec
from trainables.errors import one_line
from trainables.ray_worker import train_fn_per_worker


def run_trial(params: dict, spec: StudySpec, sizing: Sizing, judge: dict, rungs=None,
              finished: dict | None = None) -> None:
    """Tune function trainable. `judge`: the judge's state; `rungs`: the study's RungKeeper
    (study/rungs.py), None for runs that are never stopped early; `finished`: trial id → row of
    the trials a resumed study recorded before it was interrupted (they only re-report)."""
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    if trial_id in (finished or {}):
        tune.report(finished[trial_id])
        return
    params = hyperparameters(params)
    if params.get("confirm_of"):  # error bars of a front point: trained to budget, never stopped
        rungs = None
    cfg = apply(params, spec.base)

    def trainer(forward: UserCallback) -> TorchTrainer:
        return TorchTrainer(
            train_fn_per_worker,
            train_loop_config={"trial": cfg.to_dict(), "judge": judge,
                               "eval": spec.evaluation.to_dict(),
                               "guidance": spec.guidance.to_dict(),
                               "clip": spec.clip.to_dict() if spec.clip else None,
                               "threads": sizing.threads, "trial_start": time.time(),
                               "trial_id": trial_id, "rungs": rungs},
            **trainer_sizing(spec.workers_per_trial, sizing),
            run_config=train.RunConfig(
                # Deterministic per trial (a retried trial resumes from its checkpoints) and
                # readable in the dashboard's Train page.
                name=f"{ctx.get_experiment_name()}_train_"
                     f"{trial_name(trial_id, params)}",
                storage_path=spec.tune_path,
                callbacks=[forward],
                failure_config=train.FailureConfig(max_failures=spec.worker_retries),
                worker_runtime_env=worker_env(sizing),
            ),
        )

    try:
        result = fit_reporting(trainer)
    except Exception as e:  # TrainingFailedError after the worker retries are spent
        tune.report({"final": True, "error": one_line(e)})
        return
    ckpt = result.checkpoint
    tune.report({**result.metrics, "final": True,
                 "final_checkpoint": ckpt.path if ckpt else None},
                checkpoint=tune.Checkpoint.from_directory(ckpt.path) if ckpt else None)


def fit_reporting(build: Callable[[UserCallback], TorchTrainer]) -> train.Result:
    """Fit the trainer `build(callback)` makes, reporting each of its workers' reports (rank 0's
    metrics, plus `checkpoint_path`) to Tune from this thread, in order, as they arrive.

    Why not TuneReportCallback: it hands reports to Tune's main thread, which reports them
    itself into the one-slot queue this thread's own tune.report also fills. When the last
    epoch's report was still in flight as fit() returned, the final tune.report and the late
    epoch report each waited for that slot, and the trial hung forever (seen in a test run:
    both threads blocked in Queue.put); had the late one come second instead, the trial's last
    result would have been the epoch report, not the final one. One reporting thread rules out
    both."""
    reports = Queue(actor_options={"num_cpus": 0})  # from the Train controller's process
    pool = ThreadPoolExecutor(1, thread_name_prefix="fit")
    try:
        fitting = pool.submit(build(_Forward(reports)).fit)
        # a report is queued before fit() returns, so once it has, the queue holds the rest
        while not (fitting.done() and reports.empty()):
            try:
                tune.report(reports.get(timeout=0.5))
            except Empty:
                pass
        return fitting.result()
    finally:
        pool.shutdown(wait=False)  # (a trial Tune stops exits here while fit still runs)
        reports.shutdown(force=True)  # nothing is left to read


class _Forward(UserCallback):
    """Runs in the Train controller: puts each report where fit_reporting reads it."""

    def __init__(self, reports: Queue):
        self.reports = reports

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        self.reports.put({**metrics[0],
                          **({"checkpoint_path": checkpoint.path} if checkpoint else {})})


def trainer_sizing(workers: int, sizing: Sizing) -> dict:
    """A trial's TorchTrainer resources and process-group backend, as keyword arguments (the
    benchmarks launch their trainers with these too, so they time the study's trainer)."""
    per_worker = {"CPU": sizing.cpus_per_worker,
                  **({"GPU": sizing.gpus_per_worker} if sizing.use_gpu else {})}
    return {"scaling_config": train.ScalingConfig(num_workers=workers, use_gpu=sizing.use_gpu,
                                                  resources_per_worker=per_worker),
            "torch_config": TorchConfig(backend="nccl" if sizing.use_gpu else "gloo")}


def worker_env(sizing: Sizing) -> dict:
    """Runtime env of a trial's workers: OpenMP sized to the worker's CPUs."""
    return {"env_vars": {"OMP_NUM_THREADS": str(sizing.threads)}}
