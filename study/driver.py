"""Drive a prepared study on Ray: start (or attach to) Ray, size the concurrency to the resources
found, run the Tuner (or restore it), confirm the Pareto front with more seeds, print a summary.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from study.ray_env import RAY_ENV

for _name, _value in RAY_ENV.items():  # before Ray is imported
    os.environ.setdefault(_name, _value)

import optuna  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402

from study import results  # noqa: E402
from study.search_space import SearchSpace, to_tune  # noqa: E402
from study.trial import COST, QUALITY, run_trial  # noqa: E402
from study.tuning import (  # noqa: E402
    SETUP_FILE,
    ResultsCallback,
    StudySearch,
    fail_orphans,
    make_scheduler,
)

ROOT = Path(__file__).resolve().parent.parent
DRIVER_CPU = 0.01  # each trial's driver function; its workers hold the real resources
OBJECT_STORE_BYTES = 512 * 1024**2  # samples and checkpoints are small; Ray's default is 30% RAM


def init_ray(address: str | None) -> None:
    """Attach to `address` (or to $RAY_ADDRESS, which Ray sets inside a Ray Job), or start a
    local Ray with the dashboard bound to 127.0.0.1."""
    # Workers import the project; an editable install suffices, a plain checkout needs this.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    if address or os.environ.get("RAY_ADDRESS"):
        ctx = ray.init(address=address)
    else:
        ctx = ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1",
                       num_cpus=os.cpu_count(), object_store_memory=OBJECT_STORE_BYTES)
    url = ctx.dashboard_url
    print(f"Ray dashboard: http://{url}" if url else "Ray dashboard: not running", flush=True)


def size_trials(setup: dict) -> dict:
    """Concurrent trials and per-worker CPU/GPU shares from the cluster's resources."""
    res = ray.cluster_resources()
    # An autoscaling cluster may show fewer GPUs than it brings up (--gpus, set by --cluster).
    cpus, gpus = res.get("CPU", 1), max(res.get("GPU", 0), setup.get("gpus") or 0)
    workers = setup["workers_per_trial"]
    use_gpu = setup["use_gpu"] and gpus > 0
    if use_gpu:
        # NCCL refuses two ranks of one process group on the same GPU, so only single-worker
        # trials share a GPU; a DDP trial takes a whole GPU per worker.
        gpus_per_worker = 1 / setup["trials_per_gpu"] if workers == 1 else 1.0
        if workers > gpus:
            raise ValueError(f"a trial's {workers} DDP workers each need a GPU of their own and "
                             f"the cluster has {gpus:g}: use --workers-per-trial {int(gpus)}")
        concurrent = max(1, math.floor(gpus / (gpus_per_worker * workers)))
    else:
        gpus_per_worker = 0.0
        concurrent = max(1, math.floor(cpus / workers))
    concurrent = min(concurrent, setup["num_trials"])
    cpus_per_worker = math.floor(100 * (cpus - DRIVER_CPU * concurrent) / (concurrent * workers))
    return {**setup, "use_gpu": use_gpu, "gpus_per_worker": gpus_per_worker,
            "cpus_per_worker": max(cpus_per_worker / 100, 0.01), "concurrent": concurrent,
            "storage_path": setup.get("storage_path") or str(Path(setup["study_dir"]) / "ray")}


SIZING_KEYS = ("use_gpu", "gpus_per_worker", "cpus_per_worker", "concurrent")


def record_sizing(setup: dict) -> None:
    """Put what this run sized (GPU use and shares) into study.json: the Finalizer costs the
    trials ASHA stops from it, in the driver, as the trials cost themselves."""
    path = Path(setup["study_dir"]) / SETUP_FILE
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, **{k: setup[k] for k in SIZING_KEYS}}, indent=1))


def trainable(setup: dict, run=run_trial):
    return tune.with_resources(tune.with_parameters(run, setup=setup),
                               {"cpu": DRIVER_CPU})


def _trial_name(trial) -> str:
    c = trial.config
    return f"{trial.trial_id}_d{c.get('depth')}w{c.get('width')}"


def run_study(setup: dict, resume: bool = False) -> int:
    study_dir = Path(setup["study_dir"])
    init_ray(setup.get("address"))
    try:
        nodes = sum(n["Alive"] for n in ray.nodes())
        if nodes > 1 and not setup.get("storage_shared"):
            from study.cluster import ClusterError, refuse_node_local

            try:
                refuse_node_local(None, False, f"this Ray cluster has {nodes} nodes")
            except ClusterError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
        try:
            setup = size_trials(setup)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        record_sizing(setup)
        print(f"study {setup['name']}: {setup['num_trials']} trials, {setup['concurrent']} at a "
              f"time, {setup['workers_per_trial']} worker(s) each "
              f"({setup['cpus_per_worker']} CPU" + (f", {setup['gpus_per_worker']:.2f} GPU"
                                                     if setup["use_gpu"] else "") + " per worker)",
              flush=True)
        tune_path = f"{setup['storage_path'].rstrip('/')}/{setup['name']}"
        if resume and tune.Tuner.can_restore(tune_path):
            # Tune's state may predate the last rows written: those trials only re-report.
            setup["finished"] = results.finished_rows(study_dir)
            tuner = tune.Tuner.restore(tune_path, trainable=trainable(setup),
                                       resume_unfinished=True, resume_errored=True)
        else:
            tuner = make_tuner(setup)
        tuner.fit()
        orphans = fail_orphans(optuna.load_study(study_name=setup["name"],
                                                 storage=setup["storage"]))
        if orphans:
            print(f"Optuna: {orphans} trial(s) left running by an interrupted driver marked "
                  f"FAIL (Tune never ran them)", flush=True)
        if setup["confirm_seeds"] > 0:
            confirm_pareto(setup)
        print_summary(setup)
        # Report inputs that need the checkpoints, then the report itself; the results are
        # already on disk, so a failure here only costs the report (rebuild it by hand).
        try:
            from study.post import post_study

            post_study(study_dir)
        except Exception as e:
            print(f"warning: post-study evaluation failed ({type(e).__name__}: {e}); "
                  f"retry with `python -m study.post {study_dir}`", flush=True)
        try:
            from analysis.report import build_report

            print(f"report: {build_report(study_dir)}", flush=True)
        except Exception as e:
            print(f"warning: report failed ({type(e).__name__}: {e}); retry with "
                  f"`python -m analysis.report {study_dir}`", flush=True)
    finally:
        ray.shutdown()
    return 0


def make_tuner(setup: dict, run=run_trial) -> tune.Tuner:
    """The study's Tuner; `run(params, setup)` is the trial (tests pass a lighter one)."""
    space = SearchSpace(**setup["space"])
    searcher = StudySearch(
        metric=[QUALITY, COST], mode=["max", "min"], study_dir=setup["study_dir"],
        storage=optuna.storages.RDBStorage(setup["storage"]), study_name=setup["name"],
        seed=setup["seed"])
    return tune.Tuner(
        trainable(setup, run),
        param_space=to_tune(space),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=make_scheduler(setup["base"]["train"]["epochs"]),
            num_samples=setup["num_trials"], max_concurrent_trials=setup["concurrent"],
            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
            # Not reused: a reused trial driver outlives an ASHA stop, so its Ray Train run
            # kept training and holding CPUs, and a cpu-preset study stalled after 4 trials.
            reuse_actors=False),
        run_config=tune.RunConfig(
            name=setup["name"], storage_path=setup["storage_path"],
            callbacks=[ResultsCallback(setup["study_dir"])],
            failure_config=tune.FailureConfig(max_failures=1), verbose=1),
    )


def confirm_pareto(setup: dict) -> None:
    """Re-train each Pareto-front configuration with `confirm_seeds` further seeds."""
    df = results.read_results(setup["study_dir"])
    front = results.pareto_front(df[df["confirm_of"].isna()])
    done = set(zip(df["confirm_of"].dropna(), df.loc[df["confirm_of"].notna(), "seed"],
                   strict=True))  # a resumed study does not confirm twice
    configs = [{"depth": int(r.depth), "width": int(r.width), "lr": float(r.lr),
                "guidance": float(r.guidance), "style": bool(r.style),
                "seed": setup["seed"] + 1 + s,
                "confirm_of": r.trial_id}
               for r in front.itertuples() for s in range(setup["confirm_seeds"])
               if (r.trial_id, setup["seed"] + 1 + s) not in done]
    if not configs:
        return
    print(f"confirming {len(front)} Pareto configurations with {setup['confirm_seeds']} more "
          f"seed(s) each ({len(configs)} trials)", flush=True)
    tune.Tuner(
        trainable(setup),
        param_space={"fixed": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=setup["concurrent"]),
        run_config=tune.RunConfig(name=f"{setup['name']}-confirm",
                                  storage_path=setup["storage_path"],
                                  callbacks=[ResultsCallback(setup["study_dir"])], verbose=1),
    ).fit()


def print_summary(setup: dict) -> None:
    df = results.read_results(setup["study_dir"])
    q = setup["quality_metric"]
    print(f"\n{len(df)} trials; {int((df['status'] == 'ok').sum())} ok, "
          f"{int((df['status'] != 'ok').sum())} failed. Quality = {q}.")
    front = results.pareto_front(df[df["confirm_of"].isna()])
    cols = ["trial_id", "depth", "width", "lr", "guidance", "quality", "judge_acc", "frechet",
            "train_cost_s", "params"]
    print("Pareto front (quality up, training seconds down):")
    print(front[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    ot = optuna.load_study(study_name=setup["name"], storage=setup["storage"])
    print(f"Optuna: {len(ot.trials)} trials, {len(ot.best_trials)} on its Pareto front "
          f"(storage {setup['storage']})")
    print(f"results: {Path(setup['study_dir']) / results.RESULTS_FILE}")
    (Path(setup["study_dir"]) / "pareto.json").write_text(
        json.dumps(front[cols].to_dict(orient="records"), indent=1))
