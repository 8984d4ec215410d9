"""Ray overhead: training images/s of the study's trainer (Ray Train TorchTrainer, 1 worker, the
same `fit`) ÷ the same model and batch in a plain PyTorch loop, measured in the same run.

    python benchmarks/ray_overhead.py --epochs 3

Throughput is the median over epochs; the plain loop runs before and after Ray Train, and the
ratio is taken against the mean of its two medians (this machine's speed drifts over minutes).
Start-up is reported apart. On a CUDA machine both train on the GPU. Target: ratio ≥ 0.95.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, mnist, reference_config  # noqa: E402
from trainables.train_loop import LocalSession, fit, load_checkpoint  # noqa: E402


def ray_worker(config: dict) -> None:
    import torch

    from trainables.config import TrialConfig
    from trainables.ray_worker import RaySession

    torch.set_num_threads(config["threads"])
    cfg = TrialConfig.from_dict(config["trial"])
    fit(cfg, RaySession())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch threads in both (default: torch's own; "
                   "the cpu preset's trials use 1 each)")
    a = p.parse_args(argv)
    import ray
    import torch
    from ray import train
    from ray.train.torch import TorchTrainer

    from study.spec import Sizing
    from study.trial import trainer_sizing

    threads = a.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    gpu = torch.cuda.is_available()  # both loops then train on the GPU (LocalSession's default)
    cfg = reference_config(epochs=a.epochs, early_stop_patience=None)
    splits = mnist()
    print(f"# Ray overhead — {machine()}; d3 w16, batch 128, {a.epochs} epochs, "
          f"{threads} threads in both, on the {'GPU' if gpu else 'CPU'}")

    def plain_ips() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            plain = fit(cfg, LocalSession(Path(tmp) / "plain", verbose=False), splits)
        return statistics.median(h["images_per_s"] for h in plain.history)

    before = plain_ips()

    # the dashboard stays on: without it Train V2 logs "Failed to query ... actor state" forever
    ray.init(address="local", num_cpus=threads, include_dashboard=True,
             dashboard_host="127.0.0.1")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = TorchTrainer(
                ray_worker, train_loop_config={"trial": cfg.to_dict(), "threads": threads},
                **trainer_sizing(1, Sizing(1, threads, 1.0 if gpu else 0.0)),
                run_config=train.RunConfig(name="ray-overhead", storage_path=tmp),
            ).fit()
            wall = time.perf_counter() - t0
            # every epoch's throughput, from the history in the last checkpoint
            history = load_checkpoint(Path(result.checkpoint.path))[3]["history"]
        ray_ips = statistics.median(h["images_per_s"] for h in history)
        startup = wall - result.metrics["train_seconds"]
    finally:
        ray.shutdown()
    after = plain_ips()
    plain = (before + after) / 2
    print(f"plain loop   {before:8.0f} images/s before, {after:.0f} after (median over epochs)")
    print(f"Ray Train    {ray_ips:8.0f} images/s (median over epochs); start-up + reports "
          f"{startup:.1f}s")
    print(f"ratio Ray / plain = {ray_ips / plain:.3f} (target ≥ 0.95)")


if __name__ == "__main__":
    main()
