"""Sample digits on command and store them as ``samples.npz`` (what evaluation and analysis read).

    images, labels = generate(ema, sched, digits=range(10), n_per_digit=10, guidance=2.0)
    save_samples(run_dir / "samples.npz", images, labels, config=cfg.to_dict())

A style-conditioned model also takes a style in standard scores (see ``style.py``)::

    images, labels = generate(ema, sched, style={"slant": 1.5, "thickness": -1.0})
    columns, labels = style_sweep(ema, sched, "slant", [-2, -1, 0, 1, 2])  # same noise per level
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from trainables.diffusion import Schedule, sample
from trainables.style import STYLE_NAMES, style_tensor
from trainables.unet import UNet

# Most images per U-Net call when sampling on a CPU. There a forward of 2B images costs more
# than two of B (caches): per image, d3 w16 took 0.8 ms at 50-200 images and 1.5 ms at 500-1000;
# d4 w64 11 ms at 50 and 26 ms at 1000 (2-core EPYC, benchmarks/RESULTS.md "Sampling"). A GPU
# takes the whole batch, conditional and unconditional halves in one call.
CPU_FORWARD_BATCH = 64


def forward_batch(device: torch.device) -> int | None:
    return CPU_FORWARD_BATCH if device.type == "cpu" else None


@torch.no_grad()
def generate(model: UNet, sched: Schedule, digits: Iterable[int] = range(10),
             n_per_digit: int = 10, guidance: float = 2.0, sampler: str = "ddim",
             steps: int | None = 25, eta: float = 1.0, seed: int = 0, batch_size: int = 500,
             return_trajectory: bool = False,
             style: Mapping[str, float | Sequence[float] | torch.Tensor] | None = None):
    """`n_per_digit` images of each requested digit, grouped by digit.

    `style` (style-on models only) gives standard scores of slant and thickness, one value for
    all images or one per image (N = len(digits) · n_per_digit); an attribute left out is at
    the training mean. Without it a style-on model samples any style of the digit.

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
    if style is not None and not model.cfg.style_dim:
        raise ValueError("style requested from a model trained without style conditioning "
                         "(style_dim=0)")
    styles = None if style is None else style_tensor(style, len(labels)).to(device)
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    images, trajectories = [], []
    for start in range(0, len(labels), batch_size):
        out = sample(model, sched, labels[start : start + batch_size].to(device),
                     null_label=model.cfg.null_label, guidance=guidance, sampler=sampler,
                     steps=steps, eta=eta, generator=g, max_batch=forward_batch(device),
                     image_shape=(model.cfg.in_channels, model.cfg.image_size,
                                  model.cfg.image_size),
                     return_trajectory=return_trajectory,
                     style=None if styles is None else styles[start : start + batch_size])
        if return_trajectory:
            out, traj = out
            trajectories.append(torch.stack(traj))  # (S+1, b, 1, 28, 28)
        images.append(out.cpu())
    model.train(was_training)
    images = torch.cat(images)
    if return_trajectory:
        return images, labels, list(torch.cat(trajectories, dim=1))
    return images, labels


@torch.no_grad()
def style_sweep(model: UNet, sched: Schedule, attribute: str, levels: Sequence[float],
                digits: Iterable[int] = range(10), n_per_digit: int = 1, **kwargs):
    """One batch per requested level of `attribute` (a standard score; the other attribute at
    its mean), every level from the same starting noise, so only the style differs.

    Returns (images (L, N, 1, 28, 28), labels (N,)); `kwargs` go to `generate`.
    """
    if attribute not in STYLE_NAMES:
        raise ValueError(f"unknown style attribute {attribute!r}; use {', '.join(STYLE_NAMES)}")
    if len(levels) == 0:
        raise ValueError("style_sweep needs at least one level")
    digits = list(digits)
    columns = []
    for level in levels:
        images, labels = generate(model, sched, digits, n_per_digit,
                                  style={attribute: float(level)}, **kwargs)
        columns.append(images)
    return torch.stack(columns), labels


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
