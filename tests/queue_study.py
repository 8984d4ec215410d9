"""Run by tests/test_study.py as a subprocess: the study's own Tuner (Optuna searcher, ASHA,
results callback, Tune settings) over more trials than run at once, with ASHA stopping some.

Each trial is a light stand-in for `study.trial.run_trial`: a Ray Train TorchTrainer running the
real `fit` on the smoke model, whose in-training probe (ASHA's metric) is fixed by the order the
trials start in: 1 / (1 + trials started before). Trials started after the first two score below
every score recorded at the first rung, so the study's rungs (study/rungs.py) stop them there,
deterministically, and they end with a final report like a completed trial.

    python tests/queue_study.py OUTPUT_DIR
"""

import sys
import tempfile
from pathlib import Path

from ray import train, tune
from ray.train.torch import TorchTrainer

from study import driver
from study.run import build_spec, local_sizing, parse_args, prepare
from study.search_space import apply, hyperparameters
from study.trial import fit_reporting


def light_worker(config: dict) -> None:
    from trainables.config import TrialConfig
    from trainables.ray_worker import RaySession
    from trainables.train_loop import fit

    score = config["score"]
    session = RaySession(config["trial_id"], config["rungs"])
    result = fit(TrialConfig.from_dict(config["trial"]), session,
                 probe=lambda ema: {"judge_acc": score})
    with tempfile.TemporaryDirectory() as final:  # V2's Result.metrics: the last checkpointed
        session.report({**result.history[-1], "stop_reason": result.stop_reason}, Path(final))


def light_trial(params: dict, spec, sizing, judge, rungs=None, finished=None) -> None:
    """Reports what study.trial.run_trial reports: the last epoch's measurements, the stop
    reason and the evaluation (here the probe's score stands for the judge's accuracy)."""
    trial_id = tune.get_context().get_trial_id()
    started = spec.layout.root / "started"
    started.mkdir(exist_ok=True)
    score = 1 / (1 + len(list(started.iterdir())))
    (started / trial_id).touch()
    cfg = apply(hyperparameters(params), spec.base)
    # the study's own reporting path (study/trial.py), whose race this test once hung on
    result = fit_reporting(lambda forward: TorchTrainer(
        light_worker, train_loop_config={"trial": cfg.to_dict(), "score": score,
                                         "trial_id": trial_id, "rungs": rungs},
        scaling_config=train.ScalingConfig(
            num_workers=1, resources_per_worker={"CPU": sizing.cpus_per_worker}),
        run_config=train.RunConfig(name=f"queue_train_{trial_id}", storage_path=spec.tune_path,
                                   callbacks=[forward]),
    ))
    tune.report({**result.metrics, "final": True, spec.quality_metric: score})


def main(out: str) -> None:
    args = parse_args(["--preset", "smoke", "--dataset", "digits", "--no-clip",
                       "--num-trials", "4", "--epochs", "2", "--workers-per-trial", "1",
                       "--name", "queue", "--output-dir", out])
    spec = build_spec(args)
    sizing = local_sizing(spec)
    record, judge = prepare(spec, sizing, resume=False)
    driver.init_ray(None)
    try:
        rungs = driver.start_keeper(driver.AshaConfig.for_budget(spec.base.train.epochs))
        driver.make_tuner(spec, sizing, judge, rungs, run=light_trial).fit()
    finally:
        driver.ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
