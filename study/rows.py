"""A trial's row in results.csv: what each column means, and one builder per outcome.

Every row is built here, from the trial's config and its measurements, with one clock and one
definition per column whatever the outcome:

- ``finished``: the trial's own final report: it trained until its budget, early stopping or
  ASHA (study/rungs.py) ended it, then evaluated itself (its stop_reason says which);
- ``failed``: it raised, diverged, or could not be evaluated; what it measured is kept.

Wall time is Tune's ``time_total_s`` of the trial (its driver's clock, from start to last
report) for every outcome; ``images_seen`` is the images trained on, counted by ``fit``;
``train_cost_s`` (an objective) is the seconds spent in training steps. This module imports
nothing heavy: ``analysis/`` reads the column list from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from study.search_space import AXES, values

if TYPE_CHECKING:
    from trainables.config import TrialConfig

#: The study's two objectives (quality up, training seconds down) and ASHA's metric.
QUALITY, COST, PROBE = "quality", "train_cost_s", "probe_judge_acc"
CLIP_COLUMNS = ("clip_top", "clip_all", "clip_gain", "clip_acc_all", "clip_acc_top",
                "judge_acc_top_clip", "clip_top_judge")

#: Every column, in order, with what it means (a missing value is an empty cell).
COLUMN_DOCS: dict[str, str] = {
    "trial_id": "Tune's trial id (trials/<id>/ holds its files)",
    "status": "ok, or failed (see error)",
    "stop_reason": "completed, time_budget, step_budget, early_stop, asha, diverged or error",
    "error": "why a failed trial failed, one line",
    "confirm_of": "the trial whose configuration this run repeats with another seed",
    **{name: f"searched: {axis.field}" for name, axis in AXES.items()},
    "channels": "U-Net channels per level",
    "batch_size": "global batch", "epochs": "epoch budget", "seed": "training seed",
    "timesteps": "diffusion steps T", "dataset": "training data",
    "params": "U-Net parameters", "forward_gflops": "GFLOPs of one forward pass of one image",
    "train_gflops": "training compute: 3 × forward_gflops × images_seen",
    "images_seen": "training images processed (steps × global batch)",
    "images_per_s": "images_seen / train_seconds", "train_dtype": "training step: bf16 or fp32",
    "trial_wall_s": "the trial's wall time (Tune's clock: start to last report)",
    "train_seconds": "seconds in training steps", "startup_s": "wall time not spent training, "
    "probing or evaluating inside the trial (Ray Train start-up, teardown)",
    "trainer_start_s": "trial start to the worker function (Ray Train's start-up)",
    "worker_setup_s": "worker function to the first step (data, judge)",
    "worker_seconds": "trial_wall_s × workers", "gpu_seconds": "worker_seconds × GPU share",
    "workers": "DDP workers", "epochs_run": "epochs trained",
    "final_train_loss": "last epoch's training loss",
    "final_val_loss": "last epoch's validation loss (EMA weights, fixed noise)",
    PROBE: "ASHA's in-training quality probe at the last epoch (judge accuracy, best of 3 w)",
    "probe_guidance": "the w the last probe read best",
    QUALITY: "objective: the value of quality_metric", "quality_metric": "what quality is",
    COST: "objective: train_seconds",
    "coverage": "class-conditional coverage (Naeem et al. 2020) in the judge's feature space: "
    "the share of real digits with a sample of their class nearby; the study's quality",
    "precision": "class-conditional k-NN precision (Kynkäänniemi et al. 2019): fidelity",
    "recall": "class-conditional k-NN recall: diversity",
    "density": "class-conditional density (Naeem et al. 2020)",
    "guidance": "w chosen for this trained model by the guidance search (the evaluation's w)",
    "guidance_curve": "the search's curve, {w: coverage} (trials/<id>/guidance.csv: all metrics)",
    "guidance_search_s": "seconds of the guidance search",
    "judge_acc": "judge: samples read as the requested digit",
    "judge_no_digit": "judge: samples read as no digit at all",
    "judge_conf": "judge: mean confidence in the requested digit",
    "judge_acc_top_judge": "judge accuracy of the judge's own top-k per digit",
    "frechet": "Fréchet distance to real digits in the judge's feature space",
    "clip_top": "CLIP-top-k: mean CLIP score of the best k of n per digit",
    "clip_all": "mean CLIP score of all samples", "clip_gain": "clip_top − clip_all",
    "clip_acc_all": "CLIP zero-shot accuracy, all samples",
    "clip_acc_top": "CLIP zero-shot accuracy of CLIP's picks",
    "judge_acc_top_clip": "judge accuracy of CLIP's picks",
    "clip_top_judge": "CLIP score of the judge's picks", "clip_model": "CLIP used, or disabled",
    "eval_s": "evaluation seconds", "eval_sample_s": "of which sampling",
    "eval_steps": "sampler steps", "eval_sampler": "ddim or ddpm",
    "eval_dtype": "the U-Net's precision when sampling (evaluation, w search, probe): bf16 or fp32",
    "n_samples": "evaluation samples",
    "samples_path": "trials/<id>/samples.npz", "grid_path": "trials/<id>/samples.png",
    "checkpoint_path": "trials/<id>/checkpoint.pt",
}
COLUMNS = list(COLUMN_DOCS)
#: The columns an evaluation (trainables.evaluate.evaluate_model) fills.
EVAL_COLUMNS = COLUMNS[COLUMNS.index("coverage"):COLUMNS.index("samples_path")]


@dataclass(frozen=True)
class RowContext:
    """What every row of one study shares: how trials are sized and what quality means."""

    workers: int  # DDP workers per trial
    gpus_per_worker: float  # 0 on CPU
    quality_metric: str


def finished(trial_id: str, cfg: TrialConfig, report: dict, wall_s: float | None,
             ctx: RowContext, **extra) -> dict:
    """From the trial's final report: its last epoch's measurements, its stop reason and its
    evaluation (a diverged trial reports no evaluation and becomes a failed row)."""
    if report.get("stop_reason") == "diverged" or report.get("error"):
        return failed(trial_id, cfg, report.get("error") or "no evaluation", ctx, report, wall_s,
                      stop_reason=report.get("stop_reason") or "error", **extra)
    return _row(trial_id, cfg, ctx, status="ok", stop_reason=report["stop_reason"],
                training=report, evaluation=report, wall_s=wall_s,
                busy_s=report.get("eval_total_s", 0.0), **extra)


def failed(trial_id: str, cfg: TrialConfig, error: str, ctx: RowContext,
           training: dict | None = None, wall_s: float | None = None,
           stop_reason: str = "error", **extra) -> dict:
    """A trial without a usable evaluation; what it measured before failing is kept."""
    return _row(trial_id, cfg, ctx, status="failed", stop_reason=stop_reason,
                training=training or {}, evaluation={}, wall_s=wall_s, busy_s=0.0,
                error=error, **extra)


def _row(trial_id: str, cfg: TrialConfig, ctx: RowContext, *, status: str, stop_reason: str,
         training: dict, evaluation: dict, wall_s: float | None, busy_s: float,
         error: str | None = None, size: dict | None = None, artefacts: dict | None = None,
         confirm_of: str | None = None) -> dict:
    """The one place a row is assembled. `busy_s`: evaluation seconds inside the trial."""
    ok = status == "ok"
    train_s = training.get("train_seconds")
    seen = training.get("images_seen")
    size = size or {}
    row = {
        "trial_id": trial_id, "status": status, "stop_reason": stop_reason, "error": error,
        "confirm_of": confirm_of, **values(cfg),
        "channels": "-".join(map(str, cfg.model.channels)), "batch_size": cfg.train.batch_size,
        "epochs": cfg.train.epochs, "seed": cfg.train.seed,
        "timesteps": cfg.diffusion.timesteps, "dataset": cfg.data.dataset,
        **size,
        "train_gflops": 3 * size["forward_gflops"] * seen  # forward + backward ≈ 3 forwards
        if seen and size.get("forward_gflops") else None,
        "images_seen": seen, "images_per_s": seen / train_s if seen and train_s else None,
        "train_dtype": training.get("train_dtype"), "train_seconds": train_s,
        "trainer_start_s": training.get("trainer_start_s"),
        "worker_setup_s": training.get("worker_setup_s"), "workers": ctx.workers,
        "epochs_run": training.get("epoch", 0), "final_train_loss": training.get("train_loss"),
        "final_val_loss": training.get("val_loss"), PROBE: training.get(PROBE),
        "probe_guidance": training.get("probe_guidance"),
        **{k: evaluation.get(k) for k in EVAL_COLUMNS},
        "quality_metric": ctx.quality_metric,
        QUALITY: evaluation.get(ctx.quality_metric) if ok else None,
        COST: train_s if ok else None,
        **(artefacts or {}),
    }
    if wall_s is not None:
        busy = (train_s or 0.0) + training.get("probe_s_total", 0.0) + busy_s
        row.update(trial_wall_s=wall_s, worker_seconds=wall_s * ctx.workers,
                   gpu_seconds=wall_s * ctx.workers * ctx.gpus_per_worker,
                   startup_s=wall_s - busy)
    return {c: row.get(c) for c in COLUMNS}

