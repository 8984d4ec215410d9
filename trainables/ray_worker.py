"""The training function of one Ray Train worker (DDP rank) and its Ray session adapter.

``train_fn_per_worker`` runs ``fit`` under DDP, then rank 0 evaluates the EMA weights and
attaches a final checkpoint holding everything the study records for the trial: the model
checkpoint, ``samples.npz``, ``per_digit.csv``, ``samples.png``, ``guidance.csv`` (the
quality-vs-w curve of the model's guidance search) and ``outcome.json`` (stop reason,
evaluation metrics). The trial driver in ``study/trial.py`` builds the TorchTrainer.

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

from trainables import artefacts
from trainables.clip_score import ClipConfig
from trainables.config import TrialConfig
from trainables.data import load_splits
from trainables.eval_tools import EvalTools
from trainables.evaluate import EvalConfig, evaluate_model, quality_probe, quality_reference
from trainables.guidance import GuidanceSearch, curve_summary, search_guidance, write_curve
from trainables.judge import Judge
from trainables.session import format_metrics
from trainables.train_loop import fit

logger = logging.getLogger(__name__)


class RaySession:
    """`trainables.session.Session` backed by the Ray Train worker context. `trial_id` and
    `rungs`: the Tune trial this run trains and the study's early-stopping actor
    (study/rungs.py), or None: the run is never stopped early."""

    def __init__(self, trial_id: str | None = None, rungs=None):
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.run_name = ctx.get_experiment_name()
        self._resume_dir: tempfile.TemporaryDirectory | None = None
        self.startup: dict = {}  # trainer_start_s, worker_setup_s once known
        self.trial_id, self.rungs = trial_id, rungs

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
        found = any((path / name).exists() for name in (artefacts.CHECKPOINT, artefacts.OUTCOME))
        return path if found else None

    def should_stop(self, metrics: dict) -> str | None:
        """Ask the study's rungs whether this trial stops after this epoch (rank 0 only; `fit`
        shares the answer with the other ranks)."""
        if self.rungs is None:
            return None
        return "asha" if ray.get(self.rungs.decide.remote(self.trial_id, metrics)) else None

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
    the trial driver before it built the trainer (for the start-up breakdown), "trial_id" and
    "rungs": the Tune trial and the study's early-stopping actor, or None}.

    The final report is the last epoch's measurements (what an ASHA-stopped trial reports too),
    with the stop reason and, on rank 0, the evaluation of the EMA weights."""
    entered = time.time()
    torch.set_num_threads(config.get("threads", 1))
    cfg = TrialConfig.from_dict(config["trial"])
    session = RaySession(config.get("trial_id"), config.get("rungs"))

    # A retried trial whose final report already happened only repeats it.
    done = session.latest_checkpoint()
    if done is not None and (done / artefacts.OUTCOME).exists():
        outcome = json.loads((done / artefacts.OUTCOME).read_text())
        session.report(outcome["metrics"], done if session.rank == 0 else None)
        return

    splits = load_splits(cfg.data)
    judge = Judge.from_state(config["judge"], device=session.device)
    ready = time.time()
    # start-up: Ray Train (controller, worker processes, process group), then data and judge
    session.startup = {"trainer_start_s": entered - config.get("trial_start", entered),
                       "worker_setup_s": ready - entered}
    progress: list = []  # the probe's samples after each epoch (rank 0), for the report
    result = fit(cfg, session, splits, probe=quality_probe(judge, cfg, keep=progress))

    metrics = {**(result.history[-1] if result.history else {}), **session.startup,
               "stop_reason": result.stop_reason, "stop_detail": result.detail}
    if session.rank != 0:
        session.report(metrics, None)
        return

    with tempfile.TemporaryDirectory(prefix="final-") as tmp:
        out = Path(tmp)
        if progress:
            _save_progress(out / artefacts.PROGRESS, progress, result.history)
        if result.stop_reason != "diverged" and result.state:
            torch.save(result.state, out / artefacts.CHECKPOINT)
            metrics.update(_evaluate(result.ema, cfg, judge, splits.val, config, out))
        else:
            metrics["error"] = f"training diverged: {result.detail}"
        (out / artefacts.OUTCOME).write_text(
            json.dumps({"metrics": metrics, "history": result.history}, indent=1))
        session.report(metrics, out)


def _evaluate(ema, cfg: TrialConfig, judge: Judge, real, config: dict, out: Path) -> dict:
    """The study's protocol for a trained model: tune its w on the fixed evaluation noise
    (trainables/guidance.py), then evaluate it at that w; the curve is written beside the
    samples (guidance.csv) and summarised in the metrics."""
    clip = None if config.get("clip") is None else ClipConfig(**config["clip"])
    tools = EvalTools.load(judge, clip, real, device=str(next(ema.parameters()).device))
    ecfg = EvalConfig(**config["eval"])
    t0 = time.perf_counter()
    reference = quality_reference(tools.real, tools.judge, ecfg)
    search = search_guidance(ema, cfg, tools.judge, reference,
                             GuidanceSearch(**config.get("guidance", {})))
    write_curve(out / artefacts.GUIDANCE, search.curve)
    m = evaluate_model(ema, cfg, tools.judge, tools.clip, tools.real, out, ecfg,
                       guidance=search.guidance, reference=reference)
    m.update(guidance_search_s=search.seconds, guidance_curve=curve_summary(search.curve),
             eval_total_s=time.perf_counter() - t0)
    return m


def _save_progress(path: Path, progress: list, history: list[dict]) -> None:
    """progress.npz: images (E, N, 28, 28) uint8 and labels (N,) of the probe at the best w after
    each epoch this process trained (a resumed run keeps only its own), with their epochs and w."""
    import numpy as np

    n = min(len(progress), len(history))  # a probe whose epoch then diverged has no history
    if n == 0:
        return
    progress, tail = progress[len(progress) - n:], history[len(history) - n:]
    np.savez_compressed(path, images=np.stack([images for images, _ in progress]),
                        labels=progress[-1][1], epochs=np.array([h["epoch"] for h in tail]),
                        guidance=np.array([h.get("probe_guidance", np.nan) for h in tail]))
