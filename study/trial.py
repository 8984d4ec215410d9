"""One Tune trial: a function that builds and fits a Ray Train ``TorchTrainer`` for the sampled
hyperparameters, then reports the trial's row (cost and quality) to Tune.

Train V2 pattern (see ../shared/RAY_NOTES.md): worker reports reach Tune through
``TuneReportCallback``; the trainer's name is derived from the trial, so a retried trial finds
its checkpoints and resumes; the driver ends with ``tune.report`` carrying the final checkpoint.
"""

from __future__ import annotations

import time

from ray import train, tune
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from trainables.config import TrialConfig
from trainables.ray_worker import train_fn_per_worker
from trainables.style import STYLE_DIM

#: Keys every report carries, so Tune's metric checks pass before the final row exists.
QUALITY, COST, PROBE = "quality", "train_cost_s", "probe_judge_acc"


def hyperparameters(config: dict) -> dict:
    """A trial's hyperparameters: sampled by Optuna, or fixed (confirmation runs)."""
    return config.get("fixed", config)


def trial_config(base: dict, config: dict) -> TrialConfig:
    """The base trial config with the trial's hyperparameters filled in."""
    params = hyperparameters(config)
    d = {k: dict(v) for k, v in base.items()}
    d["model"].update(depth=int(params["depth"]), width=int(params["width"]),
                      style_dim=STYLE_DIM if params.get("style", False) else 0)
    d["train"].update(lr=float(params["lr"]), seed=int(params.get("seed", d["train"]["seed"])))
    d["sample"].update(guidance=float(params["guidance"]))
    return TrialConfig.from_dict(d)


def run_trial(params: dict, setup: dict) -> None:
    """Tune function trainable. `setup` is the study's resolved settings (see study/run.py)."""
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    if trial_id in setup.get("finished", {}):  # recorded before the study was interrupted
        tune.report(setup["finished"][trial_id])
        return
    cfg = trial_config(setup["base"], params)
    workers = setup["workers_per_trial"]
    t0 = time.time()
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"trial": cfg.to_dict(), "judge": setup["judge"],
                           "eval": setup["eval"], "clip": setup["clip"],
                           "cpus_per_worker": setup["cpus_per_worker"], "trial_start": t0},
        **trainer_sizing(workers, setup["use_gpu"], setup["cpus_per_worker"],
                         setup["gpus_per_worker"]),
        run_config=train.RunConfig(
            # Deterministic per trial (a retried trial resumes from its checkpoints) and readable
            # in the dashboard's Train page.
            name=f"{ctx.get_experiment_name()}_train_{trial_id}_d{cfg.model.depth}w{cfg.model.width}",
            storage_path=setup["storage_path"],
            callbacks=[TuneReportCallback()],
            failure_config=train.FailureConfig(max_failures=setup["worker_retries"]),
            worker_runtime_env=worker_env(setup["cpus_per_worker"]),
        ),
    )
    # The model's size columns are added by the driver's Finalizer (study/tuning.py).
    row = {"trial_id": trial_id, **describe(cfg), "workers": workers,
           "quality_metric": setup["quality_metric"], "final": True}
    try:
        result = trainer.fit()
    except Exception as e:  # TrainingFailedError after the worker retries are spent
        row.update(status="failed", stop_reason="error", error=one_line(e),
                   trial_wall_s=time.time() - t0, **{QUALITY: None, COST: None, PROBE: 0.0})
        tune.report(row)
        return
    row.update(summarise(result.metrics, row, setup, wall=time.time() - t0))
    row["final_checkpoint"] = result.checkpoint.path if result.checkpoint else None
    ckpt = tune.Checkpoint.from_directory(result.checkpoint.path) if result.checkpoint else None
    tune.report(row, checkpoint=ckpt)


def trainer_sizing(workers: int, use_gpu: bool, cpus_per_worker: float,
                   gpus_per_worker: float = 1.0) -> dict:
    """A trial's TorchTrainer resources and process-group backend, as keyword arguments (the
    benchmarks launch their trainers with these too, so they time the study's trainer)."""
    per_worker = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    return {"scaling_config": train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                                  resources_per_worker=per_worker),
            "torch_config": TorchConfig(backend="nccl" if use_gpu else "gloo")}


def worker_env(cpus_per_worker: float) -> dict:
    """Runtime env of a trial's workers: OpenMP sized to the worker's CPUs."""
    return {"env_vars": {"OMP_NUM_THREADS": str(max(1, int(cpus_per_worker)))}}


def describe(cfg: TrialConfig) -> dict:
    """The config columns of a results row."""
    return {"depth": cfg.model.depth, "width": cfg.model.width, "style": cfg.model.style_dim > 0,
            "channels": "-".join(map(str, cfg.model.channels)), "lr": cfg.train.lr,
            "guidance": cfg.sample.guidance, "batch_size": cfg.train.batch_size,
            "epochs": cfg.train.epochs, "seed": cfg.train.seed,
            "timesteps": cfg.diffusion.timesteps, "dataset": cfg.data.dataset}


def wall_columns(setup: dict, wall: float, workers: int, busy_s: float) -> dict:
    """What a trial's wall time cost: worker- and GPU-seconds held, and the start-up share
    (wall time not spent training, probing or evaluating)."""
    return {"trial_wall_s": wall, "worker_seconds": wall * workers,
            "gpu_seconds": wall * workers * setup["gpus_per_worker"] if setup["use_gpu"] else 0.0,
            "startup_s": wall - busy_s}


def summarise(m: dict, row: dict, setup: dict, wall: float) -> dict:
    """Cost and quality columns from the worker's final report."""
    failed = m.get("stop_reason") == "diverged"
    train_s = m.get("train_seconds", 0.0)
    out = {k: v for k, v in m.items() if k not in ("final", "epoch", "checkpoint_path")}
    out.update({
        "status": "failed" if failed else "ok",
        "error": m.get("error"),
        "epochs_run": m.get("epoch", 0),
        **wall_columns(setup, wall, row["workers"],
                       train_s + m.get("eval_total_s", 0.0) + m.get("probe_s_total", 0.0)),
        COST: None if failed else train_s,
        QUALITY: None if failed else m.get(setup["quality_metric"]),
    })
    out.setdefault(PROBE, 0.0)
    return out


def one_line(e: BaseException) -> str:
    lines = [s for s in str(e).splitlines() if s.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"[:500]
