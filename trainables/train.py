"""Train one conditional U-Net and write a run directory.

    python -m trainables.train --dataset mnist-idx --data-dir ../shared/data/mnist \\
        --depth 3 --width 32 --epochs 5 --guidance 2 --out runs/single

The run directory holds checkpoint.pt, samples.npz (10 per digit, fixed seed), metrics.json and
figures/ (noise progression, generation steps, sample grid, training curves; with --style also
digits × slant and digits × thickness grids).
Re-running with --resume continues from the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from trainables.config import SampleConfig, TrainConfig, TrialConfig
from trainables.data import (
    DATASETS,
    DataConfig,
    DataError,
    default_data_dir,
    default_dataset,
    load_splits,
)
from trainables.diffusion import DiffusionConfig, Schedule
from trainables.sample import generate, save_samples, style_sweep
from trainables.style import STYLE_DIM, STYLE_NAMES
from trainables.train_loop import LocalSession, fit
from trainables.unet import UNetConfig, forward_flops

STYLE_LEVELS = (-2.0, -1.0, 0.0, 1.0, 2.0)  # standard scores drawn in the style grids


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m trainables.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m, tr, s = UNetConfig(), TrainConfig(), SampleConfig()
    p.add_argument("--dataset", choices=DATASETS, default=default_dataset(),
                   help="mnist: torchvision download; mnist-idx: IDX files in --data-dir; "
                        "digits: scikit-learn's bundled 8×8 digits (default: $STUDY_DATASET, "
                        "else mnist-idx if $STUDY_DATA_DIR is set, else mnist)")
    p.add_argument("--data-dir", default=default_data_dir(),
                   help="download / IDX folder (default: $STUDY_DATA_DIR or ./data)")
    p.add_argument("--depth", type=int, default=m.depth, help="resolution levels, 1-4")
    p.add_argument("--width", type=int, default=m.width, help="base channels, 8-256")
    p.add_argument("--attention", action="store_true", help="self-attention at lowest level")
    p.add_argument("--style", action="store_true",
                   help="also condition on the digit's measured slant and stroke thickness")
    p.add_argument("--timesteps", type=int, default=DiffusionConfig().timesteps, help="T")
    p.add_argument("--schedule", choices=("linear", "cosine"), default="linear")
    p.add_argument("--epochs", type=int, default=tr.epochs)
    p.add_argument("--max-minutes", type=float, help="training time budget")
    p.add_argument("--batch-size", type=int, default=tr.batch_size)
    p.add_argument("--lr", type=float, default=tr.lr)
    p.add_argument("--seed", type=int, default=tr.seed)
    p.add_argument("--guidance", type=float, default=s.guidance,
                   help="CFG weight w for the samples (0 = conditional only)")
    p.add_argument("--sampler", choices=("ddpm", "ddim"), default=s.sampler)
    p.add_argument("--steps", type=int, default=s.steps, help="DDIM steps")
    p.add_argument("--samples-per-digit", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("runs/single"), help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if present)")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> TrialConfig:
    return TrialConfig(
        data=DataConfig(dataset=a.dataset, data_dir=a.data_dir),
        model=UNetConfig(depth=a.depth, width=a.width, attention=a.attention,
                         style_dim=STYLE_DIM if a.style else 0),
        diffusion=DiffusionConfig(timesteps=a.timesteps, schedule=a.schedule),
        train=TrainConfig(batch_size=a.batch_size, lr=a.lr, epochs=a.epochs, seed=a.seed,
                          max_seconds=a.max_minutes * 60 if a.max_minutes else None),
        sample=SampleConfig(guidance=a.guidance, sampler=a.sampler, steps=a.steps),
    )


def run(cfg: TrialConfig, out: Path, resume: bool = False, device: str | None = None,
        samples_per_digit: int = 10) -> dict:
    from trainables import figures  # matplotlib only here, not on the training path

    splits = load_splits(cfg.data)
    print(f"data: {splits.description}", flush=True)
    session = LocalSession(out, resume=resume, device=device)
    t0 = time.perf_counter()
    result = fit(cfg, session, splits)
    wall = time.perf_counter() - t0
    print(f"stopped: {result.stop_reason} {result.detail}".rstrip(), flush=True)
    if result.stop_reason == "diverged":
        raise RuntimeError(f"training diverged: {result.detail}")

    sched = Schedule.from_config(cfg.diffusion)
    sc = cfg.sample
    t1 = time.perf_counter()
    images, labels, traj = generate(result.ema, sched, range(10), samples_per_digit,
                                    sc.guidance, sc.sampler, sc.steps, sc.eta, seed=0,
                                    return_trajectory=True, amp=sc.amp)
    sample_s = time.perf_counter() - t1
    save_samples(out / "samples.npz", images, labels, cfg.to_dict())
    fig_dir = out / "figures"
    for fig in (
        figures.noise_progression(splits.val.images[:6].cpu(), sched,
                                  path=fig_dir / "noise_progression.png"),
        figures.generation_steps(traj, labels, path=fig_dir / "generation_steps.png"),
        figures.sample_grid(images, labels, title=f"w = {sc.guidance}",
                            path=fig_dir / "samples.png"),
        figures.training_curves(result.history, path=fig_dir / "training_curves.png"),
    ):
        figures.close(fig)
    if cfg.model.style_dim:
        for j, name in enumerate(STYLE_NAMES):
            columns, col_labels = style_sweep(result.ema, sched, name, STYLE_LEVELS,
                                              guidance=sc.guidance, sampler=sc.sampler,
                                              steps=sc.steps, eta=sc.eta, seed=0)
            z = torch.zeros(len(STYLE_LEVELS), STYLE_DIM)
            z[:, j] = torch.tensor(STYLE_LEVELS)
            raw = result.style_norm.decode(z)[:, j].tolist()
            figures.close(figures.style_grid(columns, col_labels, STYLE_LEVELS, name, raw,
                                             path=fig_dir / f"style_{name}.png"))

    last = result.history[-1] if result.history else {}
    metrics = {
        "config": cfg.to_dict(), "data": splits.description, "stop_reason": result.stop_reason,
        "params": result.ema.num_params(), "forward_gflops": forward_flops(result.ema) / 1e9,
        "wall_s": wall, "train_seconds": result.train_seconds, "sample_s": sample_s,
        "epochs_run": len(result.history), "final": last, "history": result.history,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"wrote {out}/ (checkpoint.pt, samples.npz, metrics.json, figures/)")
    return metrics


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
        run(cfg, args.out, args.resume, args.device, args.samples_per_digit)
    except (DataError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    sys.exit(main())
