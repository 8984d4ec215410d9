"""The training function of one Ray Train worker (DDP rank) and its Ray session adapter.

``train_fn_per_worker`` runs ``fit`` under DDP, then rank 0 evaluates the EMA weights and
attaches a final checkpoint holding everything the study records for the trial: the model
checkpoint, ``samples.npz``, ``per_digit.csv``, ``samples.png`` and ``outcome.json`` (stop
reason, evaluation metrics). The trial driver in ``study/trial.py`` builds the TorchTrainer.

Imports here stay light (no open_clip, no matplotlib until the final evaluation): per-trial
start-up time is training time lost.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import ray.train
import ray.train.torch
import torch

from trainables.clip_score import ClipConfig
from trainables.config import TrialConfig
from trainables.data import load_splits
from trainables.eval_tools import EvalTools
from trainables.evaluate import EvalConfig, evaluate_model, quality_probe
from trainables.judge import Judge
from trainables.train_loop import CHECKPOINT_FILE, fit, format_metrics

OUTCOME_FILE = "outcome.json"
logger = logging.getLogger(__name__)


class RaySession:
    """`trainables.train_loop.Session` backed by the Ray Train worker context."""

    def __init__(self):
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.run_name = ctx.get_experiment_name()
        self._resume_dir: tempfile.TemporaryDirectory | None = None
        self.startup: dict = {}  # trainer_start_s, worker_setup_s once known

    def prepare_model(self, model):
        return ray.train.torch.prepare_model(model)

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint Train resumes this worker from, downloaded once (the worker function
        and `fit` both ask)."""
        if self._resume_dir is None:
            ckpt = ray.train.get_checkpoint()
            if ckpt is None:
                return None
            # A private copy per rank: in the default shared temporary folder two ranks on one
            # node download at once, and the second rewrites files the first is reading.
            self._resume_dir = tempfile.TemporaryDirectory(prefix=f"resume-rank{self.rank}-")
            ckpt.to_directory(self._resume_dir.name)
        path = Path(self._resume_dir.name)
        return path if (path / CHECKPOINT_FILE).exists() or (path / OUTCOME_FILE).exists() \
            else None

    def report(self, metrics, checkpoint_dir):
        epoch = "train_loss" in metrics
        # an epoch carries the start-up split too: a trial ASHA stops after it is costed by it
        reported = {**metrics, **self.startup} if epoch else metrics
        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(reported, checkpoint=ckpt)
        if self.rank == 0 and epoch:  # progress, once the checkpoint is stored
            # Through logging: Train forwards it to the driver once (a print is teed twice).
            logger.info("[%s] %s", self.run_name, format_metrics(metrics))


def train_fn_per_worker(config: dict) -> None:
    """config: {"trial": TrialConfig dict, "judge": judge state, "eval": EvalConfig dict,
    "clip": ClipConfig dict or None, "threads": torch threads, "trial_start": time.time() of
    the trial driver before it built the trainer (for the start-up breakdown)}.

    The final report is the last epoch's measurements (what an ASHA-stopped trial reports too),
    with the stop reason and, on rank 0, the evaluation of the EMA weights."""
    entered = time.time()
    torch.set_num_threads(config.get("threads", 1))
    cfg = TrialConfig.from_dict(config["trial"])
    session = RaySession()

    # A retried trial whose final report already happened only repeats it.
    done = session.latest_checkpoint()
    if done is not None and (done / OUTCOME_FILE).exists():
        outcome = json.loads((done / OUTCOME_FILE).read_text())
        session.report(outcome["metrics"], done if session.rank == 0 else None)
        return

    splits = load_splits(cfg.data)
    judge = Judge.from_state(config["judge"], device=session.device)
    ready = time.time()
    # start-up: Ray Train (controller, worker processes, process group), then data and judge
    session.startup = {"trainer_start_s": entered - config.get("trial_start", entered),
                       "worker_setup_s": ready - entered}
    result = fit(cfg, session, splits, probe=quality_probe(judge, cfg))

    metrics = {**(result.history[-1] if result.history else {}), **session.startup,
               "stop_reason": result.stop_reason, "stop_detail": result.detail}
    if session.rank != 0:
        session.report(metrics, None)
        return

    with tempfile.TemporaryDirectory(prefix="final-") as tmp:
        out = Path(tmp)
        if result.stop_reason != "diverged" and result.state:
            torch.save(result.state, out / CHECKPOINT_FILE)
            metrics.update(_evaluate(result.ema, cfg, judge, splits.val, config, out))
        else:
            metrics["error"] = f"training diverged: {result.detail}"
        (out / OUTCOME_FILE).write_text(
            json.dumps({"metrics": metrics, "history": result.history}, indent=1))
        session.report(metrics, out)


def _evaluate(ema, cfg: TrialConfig, judge: Judge, real, config: dict, out: Path) -> dict:
    clip = None if config.get("clip") is None else ClipConfig(**config["clip"])
    tools = EvalTools.load(judge, clip, real, device=str(next(ema.parameters()).device))
    t0 = time.perf_counter()
    m = evaluate_model(ema, cfg, tools.judge, tools.clip, tools.real, out,
                       EvalConfig(**config["eval"]))
    m["eval_total_s"] = time.perf_counter() - t0
    return m
