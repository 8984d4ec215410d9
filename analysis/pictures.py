"""Image figures of the report: top-k selections per digit, the worst samples beside the best,
sample grids (a thumbnail per trial, a row per epoch of training), style grids, the forward
noise progression and the reverse generation steps. Inputs are uint8 arrays (N, 28, 28) as
stored in samples.npz, progress.npz and the post-study files; each function returns a
matplotlib Figure, except `grid_array`, which returns the grid itself as an image array.

    fig = top_k_grids(images, labels, {"CLIP": clip_scores, "judge": judge_conf}, k=3)
    thumb = grid_array(images, labels)          # (H, W) uint8, for matplotlib.image.imsave
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def _show(ax, img: np.ndarray, title: str | None = None, fontsize: int = 7) -> None:
    ax.imshow(img, cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if title:
        ax.set_title(title, fontsize=fontsize)


def top_k_indices(scores: np.ndarray, labels: np.ndarray, digit: int, k: int) -> np.ndarray:
    """Indices of the k highest-scoring samples of `digit`, best first."""
    idx = np.flatnonzero(labels == digit)
    return idx[np.argsort(-scores[idx], kind="stable")[:k]]


def top_k_grids(images: np.ndarray, labels: np.ndarray, picks: Mapping[str, np.ndarray], k: int,
                title: str = "") -> Figure:
    """Rows: digits; column blocks: the top k samples of each digit chosen by each scorer in
    `picks` (name → per-sample score), side by side, each image titled with its score."""
    digits = np.unique(labels)
    names = list(picks)
    ncols = len(names) * (k + 1) - 1  # a blank column between blocks
    fig = Figure(figsize=(0.85 * ncols + 0.4, 0.9 * len(digits) + 0.6), layout="constrained")
    axes = fig.subplots(len(digits), ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for b, name in enumerate(names):
        for i, d in enumerate(digits):
            for j, idx in enumerate(top_k_indices(picks[name], labels, int(d), k)):
                ax = axes[i, b * (k + 1) + j]
                ax.set_axis_on()
                _show(ax, images[idx], f"{picks[name][idx]:.2f}", fontsize=6)
                if j == 0 and b == 0:
                    ax.set_ylabel(str(int(d)), rotation=0, labelpad=8)
        axes[0, b * (k + 1)].annotate(f"top {k} by {name}", (0, 1.6), xycoords="axes fraction",
                                      fontsize=9, fontweight="bold")
    fig.suptitle(title or f"Top {k} per digit", fontsize=10)
    return fig


def noise_progression(images: np.ndarray, timesteps: int, schedule: str = "linear",
                      percents: Sequence[int] = (0, 10, 25, 50, 75, 100), seed: int = 0) -> Figure:
    """Rows: real digits; columns: x_t = q_sample(x_0, t) at percentages of T (the study's own
    schedule, from trainables.diffusion)."""
    import torch

    from trainables.diffusion import DiffusionConfig, Schedule, q_sample

    sched = Schedule.from_config(DiffusionConfig(timesteps=timesteps, schedule=schedule))
    x0 = torch.from_numpy(images.astype(np.float32)).unsqueeze(1) / 127.5 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    fig = Figure(figsize=(1.1 * len(percents), 1.1 * len(images) + 0.5), layout="constrained")
    axes = fig.subplots(len(images), len(percents), squeeze=False)
    for j, pct in enumerate(percents):
        t = min(round(pct / 100 * timesteps), timesteps - 1)
        xt = x0 if pct == 0 else q_sample(sched, x0, torch.full((len(x0),), t), noise)
        xt = ((xt.clamp(-1, 1) + 1) * 127.5).squeeze(1).numpy()
        for i in range(len(images)):
            _show(axes[i, j], xt[i], (f"{pct}% (t={t})" if pct else "x_0") if i == 0 else None)
    fig.suptitle(f"Forward process: noise added to real digits (T={timesteps}, {schedule})",
                 fontsize=10)
    return fig


def generation_steps(traj: Mapping[str, np.ndarray], threshold: float = 0.5) -> Figure:
    """Rows: samples (one or more per digit); columns: evenly spaced reverse steps, each titled
    with the judge's confidence in the requested digit. A red frame marks the first shown step at or
    after the sample's measured recognisable step (confidence > threshold)."""
    images, steps, labels = traj["images"], traj["steps"], traj["labels"]
    conf, rows, total = traj["conf"], traj["rows"], int(traj["total_steps"])
    ncols, nrows = len(steps), len(labels)
    fig = Figure(figsize=(1.0 * ncols + 0.6, 1.05 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i in range(nrows):
        c = conf[:, rows[i]]  # (S+1,) confidence of this sample after every step
        above = np.flatnonzero(c > threshold)
        first = int(above[0]) if len(above) else None
        for j, s in enumerate(steps):
            head = f"step {s}/{total}\n" if i == 0 else ""
            _show(axes[i, j], images[j, i], f"{head}{c[s]:.2f}", fontsize=6)
            if first is not None and s >= first and (j == 0 or steps[j - 1] < first):
                axes[i, j].add_patch(Rectangle((-0.5, -0.5), 28, 28, fill=False, ec="red", lw=2))
        label = f"{int(labels[i])}\n@{first}" if first is not None else f"{int(labels[i])}\nnever"
        axes[i, 0].set_ylabel(label, rotation=0, labelpad=14, fontsize=7)
    fig.suptitle(f"Reverse process of trial {traj['trial_id']}: judge confidence per step; red = "
                 f"first step above {threshold} (row label: @step)", fontsize=9)
    return fig


def grid_array(images: np.ndarray, labels: np.ndarray, per_digit: int | None = None,
               pad: int = 2) -> np.ndarray:
    """A sample grid as one uint8 image: a row per digit, its samples left to right, `pad`
    pixels of black between them. Cheap enough for a thumbnail of every trial (no figure)."""
    digits = np.unique(labels)
    rows = [images[labels == d][:per_digit] for d in digits]
    width = max((len(r) for r in rows), default=0)
    size = images.shape[-1] + pad
    out = np.zeros((len(rows) * size + pad, width * size + pad), dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            out[pad + i * size: (i + 1) * size, pad + j * size: (j + 1) * size] = img
    return out


def worst_and_best(images: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int,
                   title: str = "") -> Figure:
    """A column per digit: the k samples the judge scored lowest (top rows, worst first) above
    the k it scored highest (bottom rows, best first), each titled with its score."""
    digits = np.unique(labels)
    fig = Figure(figsize=(0.62 * len(digits) + 1.0, 0.7 * (2 * k) + 0.9), layout="constrained")
    axes = fig.subplots(2 * k, len(digits), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for j, d in enumerate(digits):
        worst = top_k_indices(-scores, labels, int(d), k)
        best = top_k_indices(scores, labels, int(d), k)
        for i, idx in [*enumerate(worst), *((k + i, idx) for i, idx in enumerate(best))]:
            ax = axes[i, j]
            ax.set_axis_on()
            head = f"{int(d)}\n" if i == 0 else ""
            _show(ax, images[idx], f"{head}{scores[idx]:.2f}", fontsize=6)
            if i == k:  # the first best row: a line between the worst and the best
                ax.spines["top"].set(color="crimson", linewidth=2)
    for i in range(2 * k):
        axes[i, 0].set_axis_on()
        axes[i, 0].set_ylabel(f"worst {i + 1}" if i < k else f"best {i - k + 1}", rotation=0,
                              labelpad=18, fontsize=7, va="center")
    fig.suptitle(title or f"Worst (top) and best (bottom) {k} per digit", fontsize=9)
    return fig


def progress_grid(progress: Mapping[str, np.ndarray], max_rows: int = 8,
                  title: str = "") -> Figure:
    """How the digits grew during training: a row per epoch (at most `max_rows`, evenly
    spaced, always the last), one probe sample per digit, from the same noise every epoch."""
    images, labels, epochs = progress["images"], progress["labels"], progress["epochs"]
    guidance = progress.get("guidance")
    n = min(max_rows, len(epochs))
    keep = sorted({round(i * (len(epochs) - 1) / max(1, n - 1)) for i in range(n)})
    cols = [int(np.flatnonzero(labels == d)[0]) for d in np.unique(labels)]
    fig = Figure(figsize=(0.62 * len(cols) + 1.0, 0.66 * len(keep) + 0.6), layout="constrained")
    axes = fig.subplots(len(keep), len(cols), squeeze=False)
    for i, e in enumerate(keep):
        for j, c in enumerate(cols):
            _show(axes[i, j], images[e, c], str(int(labels[c])) if i == 0 else None)
        w = f"\nw={float(guidance[e]):g}" if guidance is not None and len(guidance) > e else ""
        axes[i, 0].set_ylabel(f"epoch {int(epochs[e])}{w}", rotation=0, labelpad=22,
                              fontsize=7, va="center")
    fig.suptitle(title or "Probe samples after each epoch", fontsize=9)
    return fig


def style_grids(style: Mapping[str, np.ndarray], title: str = "") -> Figure:
    """A style-on model asked for each style level: one panel per attribute, a row per digit,
    a column per requested standard score, the same noise along each row."""
    images, attributes, levels = style["images"], list(style["attributes"]), style["levels"]
    labels = style["labels"]
    nrows, ncols = len(labels), len(levels)
    fig = Figure(figsize=(len(attributes) * (0.62 * ncols + 0.5), 0.66 * nrows + 0.9),
                 layout="constrained")
    subfigs = fig.subfigures(1, len(attributes), squeeze=False)[0]
    for a, (sub, name) in enumerate(zip(subfigs, attributes, strict=True)):
        axes = sub.subplots(nrows, ncols, squeeze=False)
        for j, level in enumerate(levels):
            for i in range(nrows):
                _show(axes[i, j], images[a, j, i], f"z={float(level):+.1f}" if i == 0 else None)
        for i, d in enumerate(labels):
            axes[i, 0].set_ylabel(str(int(d)), rotation=0, labelpad=8)
        sub.suptitle(f"requested {name}", fontsize=9)
    fig.suptitle(title or "Style control", fontsize=10)
    return fig
