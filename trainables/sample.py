"""Sample digits on command and store them as ``samples.npz`` (what evaluation and analysis read).

    images, labels = generate(ema, sched, digits=range(10), n_per_digit=10, guidance=2.0)
    save_samples(run_dir / "samples.npz", images, labels, config=cfg.to_dict())
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from trainables.diffusion import Schedule, sample
from trainables.unet import UNet


@torch.no_grad()
def generate(model: UNet, sched: Schedule, digits: Iterable[int] = range(10),
             n_per_digit: int = 10, guidance: float = 2.0, sampler: str = "ddim",
             steps: int | None = 25, eta: float = 0.0, seed: int = 0, batch_size: int = 500,
             return_trajectory: bool = False):
    """`n_per_digit` images of each requested digit, grouped by digit.

    Returns (images (N, 1, 28, 28) float in [-1, 1] on the CPU, labels (N,)), plus the list of
    intermediate batches when `return_trajectory`. A fixed `seed` gives every model the same
    starting noise, so trials are compared on equal terms.
    """
    digits = list(digits)
    for d in digits:
        if not 0 <= d < model.cfg.num_classes:
            raise ValueError(f"digit {d} is outside 0..{model.cfg.num_classes - 1}")
    device = next(model.parameters()).device
    labels = torch.tensor(digits).repeat_interleave(n_per_digit)
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    images, trajectories = [], []
    for start in range(0, len(labels), batch_size):
        out = sample(model, sched, labels[start : start + batch_size].to(device),
                     null_label=model.cfg.null_label, guidance=guidance, sampler=sampler,
                     steps=steps, eta=eta, generator=g,
                     image_shape=(model.cfg.in_channels, model.cfg.image_size,
                                  model.cfg.image_size),
                     return_trajectory=return_trajectory)
        if return_trajectory:
            out, traj = out
            trajectories.append(torch.stack(traj))  # (S+1, b, 1, 28, 28)
        images.append(out.cpu())
    model.train(was_training)
    images = torch.cat(images)
    if return_trajectory:
        return images, labels, list(torch.cat(trajectories, dim=1))
    return images, labels


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float images → uint8 0..255 (N, 28, 28), as MNIST stores them."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.squeeze(1).numpy()


def save_samples(path: Path, images: torch.Tensor, labels: torch.Tensor, config: dict,
                 **extra: np.ndarray) -> Path:
    """Write images (uint8), labels and the generating config (JSON) to an .npz file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=to_uint8(images), labels=labels.numpy(),
                        config=np.array(json.dumps(config)), **extra)
    return path


def load_samples(path: Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(images float [-1, 1] (N, 1, 28, 28), labels, config) from a samples.npz."""
    with np.load(path, allow_pickle=False) as f:
        images = torch.from_numpy(f["images"].astype(np.float32)).unsqueeze(1) / 127.5 - 1
        return images, torch.from_numpy(f["labels"]).long(), json.loads(str(f["config"]))
