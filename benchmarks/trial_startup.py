"""Where a trial's Ray Train start-up goes: a bare ``TorchTrainer`` (a worker function that only
reports) with a trial's resources, backend and worker env (``study.trial.trainer_sizing``,
``worker_env``), timed from ``trainer.fit()``.

    python benchmarks/trial_startup.py --runs 3              # CPU workers (gloo)
    python benchmarks/trial_startup.py --runs 3 --gpu        # GPU workers (nccl), then CPU again
    python benchmarks/trial_startup.py --runs 3 --concurrent 2   # then 2 trainers at once
    python benchmarks/trial_startup.py --runs 4 --variants       # what the worker env costs

``--variants`` compares, each in a Ray session of its own, ways to start the trial's workers:
``env`` gives them a runtime env (``OMP_NUM_THREADS``, as the study did: every worker is a
fresh process, since the raylet hands pooled or prestarted workers only to actors whose runtime
env matches), ``propagated`` gives them none but keeps the ``RAY_TRAIN_*`` variables the driver
sets (Train V2 copies those into every worker's runtime env: fresh processes again), ``bare``
sets neither (prestarted workers can be used), and ``bare+preload`` also has Ray's prestarted
workers import torch (``preload_python_modules``).

Per run it prints when each of Ray Train's actors was constructed and each of its remote calls
that took 0.1 s or more started, with how long it ran (from ``ray.timeline()``); when the worker
function was entered; when the worker's first CUDA tensor was done (the CUDA context); and when
``fit()`` returned. With ``--gpu`` the CPU runs follow in the same Ray session, so the two
compare within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from study.ray_env import RAY_ENV  # noqa: E402

for _k, _v in RAY_ENV.items():  # as the study's driver does, before Ray is imported
    os.environ.setdefault(_k, _v)


def worker_fn(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch

    entered = time.time()
    torch.zeros(1, device=ray.train.torch.get_device()).sum().item()  # CUDA context, if any
    metrics = {"entered": entered, "device_ready": time.time()}
    # Train V2's Result.metrics is the last report that carried a checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def one_run(sizing: dict, env: dict | None, storage: str, name: str,
            timeline: bool = True) -> dict:
    """`sizing` and `env`: `study.trial.trainer_sizing(...)` and `worker_env(...)`, built by the
    caller, so that a task running this unpickles Ray's config objects, not the project."""
    import ray
    from ray import train
    from ray.train.torch import TorchTrainer

    t0 = time.time()
    result = TorchTrainer(
        worker_fn, **sizing,
        run_config=train.RunConfig(name=name, storage_path=storage,
                                   worker_runtime_env=env),
    ).fit()
    done = time.time()
    m = result.metrics
    row = {"worker function entered": m["entered"] - t0,
           "device ready": m["device_ready"] - t0, "fit() returned": done - t0}
    # Ray Train's actors and tasks since t0: constructors, and anything that ran 0.1 s or more
    for e in ray.timeline() if timeline else []:
        what = e.get("cat", "").removeprefix("task::")
        if e.get("cat", "").startswith("task::") and e["ts"] / 1e6 >= t0 and (
                what.endswith(".__init__") or e.get("dur", 0) >= 1e5):
            row.setdefault(what, (e["ts"] / 1e6 - t0, e.get("dur", 0) / 1e6))
    return row


def show(label: str, rows: list[dict]) -> None:
    print(f"\n## {label}: seconds after fit() was called, median of {len(rows)} "
          f"(min–max)")
    keys = sorted({k for r in rows for k in r},
                  key=lambda k: statistics.median(_start(r[k]) for r in rows if k in r))
    for k in keys:
        vals = [r[k] for r in rows if k in r]
        starts = [_start(v) for v in vals]
        line = f"{k:<56} {statistics.median(starts):6.2f} ({min(starts):.2f}–{max(starts):.2f})"
        if isinstance(vals[0], tuple):
            line += f"  ran {statistics.median(v[1] for v in vals):.2f}"
        print(line)


def _start(v) -> float:
    return v[0] if isinstance(v, tuple) else v


def concurrent(k: int, gpu: bool, storage: str, label: str) -> None:
    """K trainers started at once from K tasks: the study's situation when trials start together."""
    import ray

    from study.spec import Sizing
    from study.trial import trainer_sizing, worker_env

    launch = ray.remote(num_cpus=0.01)(one_run)
    share = Sizing(k, 1, 1 / k if gpu else 0.0)
    rows = ray.get([launch.remote(trainer_sizing(1, share), worker_env(share), storage,
                                  f"startup-{_tag(gpu)}-x{k}-{i}", timeline=False)
                    for i in range(k)])
    for i, r in enumerate(rows):
        print(f"{label}, {k} at once, trainer {i + 1}: worker function entered at "
              f"+{r['worker function entered']:.2f} s, fit() returned at "
              f"+{r['fit() returned']:.2f} s", flush=True)


def _tag(gpu: bool) -> str:
    return "gpu" if gpu else "cpu"


#: name → (worker runtime env, keep the RAY_TRAIN_* variables, preload torch in Ray's workers)
VARIANTS = {"env": (True, True, False), "propagated": (False, True, False),
            "bare": (False, False, False), "bare+preload": (False, False, True)}


def variants(runs: int, storage: str) -> None:
    """Each VARIANTS entry in a Ray session of its own: `runs` trainers one after another,
    then the median time to the worker function (the first run of a session included)."""
    import ray

    from study.spec import Sizing
    from study.trial import trainer_sizing, worker_env

    sizing = Sizing(1, 1, 0.0)
    train_vars = {k: v for k, v in RAY_ENV.items() if k.startswith("RAY_TRAIN_")}
    summary = {}
    for name, (with_env, keep_train_vars, preload) in VARIANTS.items():
        for k, v in train_vars.items():  # read by Train V2 in this process at fit()
            if keep_train_vars:
                os.environ[k] = v
            else:
                os.environ.pop(k, None)
        ray.init(address="local", include_dashboard=False, num_cpus=os.cpu_count(),
                 _system_config={"preload_python_modules": ["torch"]} if preload else None)
        try:
            rows = [one_run(trainer_sizing(1, sizing), worker_env(sizing) if with_env else None,
                            storage, f"startup-{name}-{i}".replace("+", "-"), timeline=False)
                    for i in range(runs)]
        finally:
            ray.shutdown()
        entered = [r["worker function entered"] for r in rows]
        returned = [r["fit() returned"] for r in rows]
        summary[name] = statistics.median(entered)
        print(f"{name:<13} worker function entered +{statistics.median(entered):5.2f} s "
              f"({' / '.join(f'{x:.2f}' for x in entered)}); fit() returned "
              f"+{statistics.median(returned):5.2f} s", flush=True)
    for k, v in train_vars.items():
        os.environ[k] = v
    base = summary["env"]
    for name, t in summary.items():
        print(f"start-up ratio ({name} / env): {t / base:.2f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="trainer launches per device")
    p.add_argument("--gpu", action="store_true", help="GPU workers first, then CPU workers")
    p.add_argument("--concurrent", type=int, default=0, metavar="K",
                   help="then launch K trainers at once, each from its own Ray task (as Tune's "
                   "trial actors do; GPU workers get 1/K of the GPU), and time them")
    p.add_argument("--variants", action="store_true",
                   help="compare how the workers are started (see above) on CPU workers, "
                   "each in a Ray session of its own, instead of the runs above")
    a = p.parse_args(argv)
    import ray
    import torch

    from benchmarks.common import machine
    from study.spec import Sizing
    from study.trial import trainer_sizing, worker_env

    if a.gpu and not torch.cuda.is_available():
        sys.exit("trial_startup.py: --gpu needs a CUDA GPU")
    print(f"# Ray Train trial start-up — {machine()}; 1 worker, {a.runs} runs per device")
    if a.variants:
        with tempfile.TemporaryDirectory() as tmp:
            variants(a.runs, tmp)
        return
    # worker_fn is pickled by value: the workers need nothing of the project's on their path
    ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for gpu in ([True, False] if a.gpu else [False]):
                label = "GPU worker (nccl)" if gpu else "CPU worker (gloo)"
                rows = []
                for i in range(a.runs):
                    sizing = Sizing(1, 1, 1.0 if gpu else 0.0)
                    rows.append(one_run(trainer_sizing(1, sizing), worker_env(sizing), tmp,
                                        f"startup-{_tag(gpu)}-{i}"))
                    print(f"{label} run {i + 1}: worker function entered at "
                          f"+{rows[-1]['worker function entered']:.2f} s", flush=True)
                show(label, rows)
                if a.concurrent:
                    concurrent(a.concurrent, gpu, tmp, label)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
