"""Sampling cost and quality: DDPM with T steps vs DDIM with 10/16/25/50 steps (η = 1, and
η = 0 at 25 steps), judged by the digit judge; then how many images one U-Net call should take
(the whole guided batch at once vs slices of `CPU_FORWARD_BATCH`).

    python benchmarks/sampling.py --checkpoint runs/cpu/trials/<id> [...]   # trained runs
    python benchmarks/sampling.py --train-minutes 6                  # trains the reference first
    python benchmarks/sampling.py --device cuda --train-minutes 1

Target: DDIM-25 at least 6× faster than DDPM-100 with at most 1 point of accuracy lost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, mnist, reference_config, timed  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.diffusion import Schedule, sample  # noqa: E402
from trainables.evaluate import frechet_distance  # noqa: E402
from trainables.judge import load_or_train_judge  # noqa: E402
from trainables.sample import CPU_FORWARD_BATCH, generate  # noqa: E402
from trainables.train_loop import LocalSession, fit, load_checkpoint  # noqa: E402


def sampler_table(ema, sched, judge, real_features, per_digit: int, guidance: float) -> None:
    T = sched.timesteps
    rows = []
    for name, sampler, steps, eta in [(f"DDPM-{T}", "ddpm", None, 0.0),
                                      ("DDIM-50", "ddim", 50, 1.0), ("DDIM-25", "ddim", 25, 1.0),
                                      ("DDIM-16", "ddim", 16, 1.0), ("DDIM-10", "ddim", 10, 1.0),
                                      ("DDIM-25 η=0", "ddim", 25, 0.0)]:
        (images, labels), secs = timed(generate, ema, sched, range(10), per_digit, guidance,
                                       sampler, steps, eta, seed=0)
        acc = (judge.probs(images).argmax(1) == labels).float().mean().item()
        fd = frechet_distance(judge.features(images), real_features)
        rows.append((name, steps or T, secs / len(labels), acc, fd))
    base_s, base_acc = rows[0][2], rows[0][3]
    print(f"{'sampler':12s} {'steps':>5s} {'s/image':>9s} {'speed-up':>9s} {'judge acc':>10s} "
          f"{'Δ acc':>7s} {'Fréchet':>8s}")
    for name, steps, s, acc, fd in rows:
        print(f"{name:12s} {steps:5d} {s:9.4f} {base_s / s:8.1f}× {acc:10.3f} "
              f"{100 * (acc - base_acc):+6.1f} {fd:8.1f}")


def forward_batch_table(ema, sched, guidance: float, n: int, rounds: int = 3) -> None:
    """DDIM-25 over n images, the guided batch (conditional and null halves, 2n images) passed
    to the U-Net in one call, in two calls of n (the halves apart), or in slices of
    CPU_FORWARD_BATCH; alternating rounds, medians."""
    device = next(ema.parameters()).device
    labels = torch.arange(10, device=device).repeat_interleave(n // 10)
    variants = {f"one call of {2 * n}": None, f"two calls of {n}": n,
                f"slices of {CPU_FORWARD_BATCH}": CPU_FORWARD_BATCH}
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, max_batch in variants.items():
            _, secs = timed(sample, ema, sched, labels, null_label=ema.cfg.null_label,
                            guidance=guidance, steps=25,
                            generator=torch.Generator().manual_seed(0), max_batch=max_batch)
            times[name].append(secs)
    base = statistics.median(next(iter(times.values())))
    print(f"U-Net calls per guided DDIM-25 step, {n} images on {device.type} ({rounds} "
          f"alternating rounds, median; generate() uses "
          f"{'slices' if device.type == 'cpu' else 'one call'} here):")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"  {name:18s} {t / n * 1e3:8.3f} ms/image  {t / base:5.2f}× the time of one call")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, nargs="+", default=[],
                   help="run directories or checkpoint.pt files (each gets the sampler table)")
    p.add_argument("--train-minutes", type=float, default=6.0)
    p.add_argument("--per-digit", type=int, default=50, help="samples per digit per sampler")
    p.add_argument("--guidance", type=float,
                   help="guidance weight w (default: each checkpoint's own; 2 when training)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-images", type=int, default=500,
                   help="images in the forward-batch comparison")
    a = p.parse_args(argv)

    device = torch.device(a.device)
    splits = mnist()
    judge = load_or_train_judge(splits, device=a.device)
    real_features = judge.features(splits.val.images)
    print(f"# sampling benchmark — {machine()}")
    models = [load_checkpoint(c)[::2] for c in a.checkpoint]  # (config, ema)
    if not models:
        cfg = reference_config(epochs=100, max_seconds=a.train_minutes * 60)
        cfg = TrialConfig.from_dict({**cfg.to_dict(), "sample": {"guidance": 2.0}})
        session = LocalSession(Path("runs/bench-sampling"), verbose=False, device=a.device)
        models = [(cfg, fit(cfg, session, splits).ema)]
    for cfg, ema in models:
        ema = ema.to(device).eval()
        sched = Schedule.from_config(cfg.diffusion)
        w = cfg.sample.guidance if a.guidance is None else a.guidance
        print(f"\nmodel d{cfg.model.depth} w{cfg.model.width}, T={sched.timesteps}, "
              f"w={w:.2f}, {10 * a.per_digit} samples per sampler, on {device}; Fréchet "
              f"distance to {len(splits.val.images)} real validation digits (judge features)")
        sampler_table(ema, sched, judge, real_features, a.per_digit, w)
    forward_batch_table(ema, sched, w, a.batch_images)


if __name__ == "__main__":
    main()
