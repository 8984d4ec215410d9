"""Where a training run runs: the ``Session`` that ``fit`` reports to and resumes from.

What differs between one process and a DDP rank (rank, device, model wrapping, where reports
and checkpoints go, whether the run is told to stop early) is a session's:
``LocalSession`` here for one process, ``trainables.ray_worker.RaySession`` in a Ray Train
worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from trainables.artefacts import CHECKPOINT as CHECKPOINT_FILE


class Session(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def latest_checkpoint(self) -> Path | None: ...

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None: ...

    def should_stop(self, metrics: dict) -> str | None:
        """Asked on rank 0 after each epoch's report but the last: a reason to stop training
        here (a study's early stopping, e.g. "asha"), or None to go on."""


class LocalSession:
    """Single process on CUDA if present, else CPU; checkpoints go to `run_dir`."""

    rank, world_size = 0, 1

    def __init__(self, run_dir: Path, resume: bool = False, verbose: bool = True,
                 device: str | None = None):
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.verbose = verbose
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def prepare_model(self, model):
        return model

    def latest_checkpoint(self):
        path = self.run_dir / CHECKPOINT_FILE
        return path.parent if self.resume and path.exists() else None

    def report(self, metrics, checkpoint_dir):
        if checkpoint_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (checkpoint_dir / CHECKPOINT_FILE).replace(self.run_dir / CHECKPOINT_FILE)
        if self.verbose:
            print(format_metrics(metrics), flush=True)

    def should_stop(self, metrics):
        return None  # a single run trains to its own budget


def format_metrics(m: dict) -> str:
    return (f"epoch {m['epoch']:3d}  train {m['train_loss']:.4f}  val {m['val_loss']:.4f}  "
            f"lr {m['lr']:.2e}  {m['images_per_s']:.0f} img/s  {m['epoch_s']:.1f}s"
            + "".join(f"  {k} {m[k]:.3f}" for k in m if k.startswith("probe_")))
