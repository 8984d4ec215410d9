"""PNG figures of a trained model: forward noise progression, reverse generation steps, a
digits × samples grid, digits × style-level grids (style-on models) and training curves. Each
function returns the matplotlib Figure and saves it when given a path. Imported only where
figures are drawn (matplotlib is slow to import).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from trainables.diffusion import Schedule, q_sample  # noqa: E402


def _show(ax, img: torch.Tensor, title: str | None = None):
    ax.imshow(img.squeeze().clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _save(fig, path: Path | None):
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def noise_progression(images: torch.Tensor, sched: Schedule,
                      percents: Sequence[int] = (0, 10, 25, 50, 75, 100),
                      path: Path | None = None, seed: int = 0):
    """Rows: real digits; columns: x_t at the given percentages of T (q_sample)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=g)
    fig, axes = plt.subplots(len(images), len(percents), squeeze=False,
                             figsize=(1.2 * len(percents), 1.2 * len(images)))
    for j, pct in enumerate(percents):
        t = min(round(pct / 100 * sched.timesteps), sched.timesteps - 1)
        xt = images if pct == 0 else q_sample(sched, images, torch.full((len(images),), t), noise)
        for i in range(len(images)):
            _show(axes[i, j], xt[i], f"{pct}% (t={t})" if i == 0 and pct else
                  ("x_0" if i == 0 else None))
    fig.suptitle("Forward process: noise added to real digits", fontsize=10)
    return _save(fig, path)


def generation_steps(trajectory: Sequence[torch.Tensor], labels: torch.Tensor,
                     n_columns: int = 8, path: Path | None = None):
    """Rows: one sample per digit; columns: evenly spaced reverse steps from noise to x_0.

    trajectory[i] is the batch after i denoising steps (trajectory[0] is pure noise).
    """
    steps = len(trajectory) - 1
    cols = sorted({round(i * steps / (n_columns - 1)) for i in range(n_columns)})
    rows = [int(torch.nonzero(labels == d)[0]) for d in labels.unique().tolist()]
    fig, axes = plt.subplots(len(rows), len(cols), squeeze=False,
                             figsize=(1.1 * len(cols), 1.1 * len(rows)))
    for i, r in enumerate(rows):
        for j, s in enumerate(cols):
            _show(axes[i, j], trajectory[s][r], f"step {s}/{steps}" if i == 0 else None)
        axes[i, 0].set_ylabel(str(int(labels[r])), rotation=0, labelpad=10)
    fig.suptitle("Reverse process: generation steps per digit", fontsize=10)
    return _save(fig, path)


def sample_grid(images: torch.Tensor, labels: torch.Tensor, max_per_digit: int = 10,
                title: str = "Samples", path: Path | None = None):
    """Rows: digits; columns: up to `max_per_digit` samples of that digit."""
    digits = labels.unique().tolist()
    n = min(max_per_digit, max(int((labels == d).sum()) for d in digits))
    fig, axes = plt.subplots(len(digits), n, squeeze=False, figsize=(0.9 * n, 0.9 * len(digits)))
    for i, d in enumerate(digits):
        idx = torch.nonzero(labels == d).flatten()[:n].tolist()
        for j in range(n):
            if j < len(idx):
                _show(axes[i, j], images[idx[j]])
            else:
                axes[i, j].axis("off")
        axes[i, 0].set_ylabel(str(d), rotation=0, labelpad=10)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def style_grid(columns: torch.Tensor, labels: torch.Tensor, levels: Sequence[float],
               attribute: str, raw_levels: Sequence[float] | None = None,
               path: Path | None = None):
    """Rows: digits; columns: requested standard scores of one style attribute.

    columns[j] holds the images generated at levels[j] (``sample.style_sweep``); the first one
    of each digit is shown. `raw_levels` (the same levels in the attribute's own units, from
    the checkpoint's StyleNorm) are added to the column titles when given.
    """
    digits = labels.unique().tolist()
    fig, axes = plt.subplots(len(digits), len(levels), squeeze=False,
                             figsize=(0.9 * len(levels), 0.9 * len(digits)))
    for j, level in enumerate(levels):
        title = f"z={level:+.1f}" + (f"\n{raw_levels[j]:.2f}" if raw_levels is not None else "")
        for i, d in enumerate(digits):
            _show(axes[i, j], columns[j][int(torch.nonzero(labels == d)[0])],
                  title if i == 0 else None)
    for i, d in enumerate(digits):
        axes[i, 0].set_ylabel(str(d), rotation=0, labelpad=10)
    fig.suptitle(f"Requested {attribute} (standard score), same noise in every row", fontsize=10)
    return _save(fig, path)


def training_curves(history: Sequence[dict], path: Path | None = None):
    """Train / validation loss and learning rate per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val (EMA)")
    ax1.set(xlabel="epoch", ylabel="ε-MSE", title="Loss")
    ax1.legend()
    ax2.plot(epochs, [h["lr"] for h in history], marker="o")
    ax2.set(xlabel="epoch", ylabel="lr", yscale="log", title="Learning rate")
    fig.tight_layout()
    return _save(fig, path)


def close(fig) -> None:
    plt.close(fig)
