"""Sampling cost and quality: DDPM with T steps vs DDIM with 10/25/50 steps, and batched CFG vs
two forwards, on one trained reference model, judged by the digit judge.

    python benchmarks/sampling.py --checkpoint runs/single   # a trained run directory
    python benchmarks/sampling.py --train-minutes 6          # trains the reference first

Target: DDIM-25 at least 6× faster than DDPM-100 with at most 1 point of accuracy lost.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, mnist, reference_config, timed  # noqa: E402
from trainables.diffusion import Schedule, guided_eps  # noqa: E402
from trainables.judge import load_or_train_judge  # noqa: E402
from trainables.sample import generate  # noqa: E402
from trainables.train_loop import LocalSession, fit, load_checkpoint  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="run directory or checkpoint.pt")
    p.add_argument("--train-minutes", type=float, default=6.0)
    p.add_argument("--per-digit", type=int, default=20, help="samples per digit per sampler")
    p.add_argument("--guidance", type=float, default=2.0)
    a = p.parse_args(argv)

    splits = mnist()
    judge = load_or_train_judge(splits)
    if a.checkpoint:
        cfg, _, ema, _ = load_checkpoint(a.checkpoint)
    else:
        cfg = reference_config(epochs=100, max_seconds=a.train_minutes * 60)
        ema = fit(cfg, LocalSession(Path("runs/bench-sampling"), verbose=False), splits).ema
    ema.eval()
    sched = Schedule.from_config(cfg.diffusion)
    T = sched.timesteps
    n = 10 * a.per_digit
    print(f"# sampling benchmark — {machine()}")
    print(f"model d{cfg.model.depth} w{cfg.model.width}, T={T}, w={a.guidance}, {n} samples each")
    rows = []
    for name, sampler, steps in [(f"DDPM-{T}", "ddpm", None), ("DDIM-50", "ddim", 50),
                                 ("DDIM-25", "ddim", 25), ("DDIM-10", "ddim", 10)]:
        (images, labels), secs = timed(generate, ema, sched, range(10), a.per_digit, a.guidance,
                                       sampler, steps, seed=0)
        acc = (judge.probs(images).argmax(1) == labels).float().mean().item()
        rows.append((name, secs / n, acc))
    base_s, base_acc = rows[0][1], rows[0][2]
    print(f"{'sampler':10s} {'s/image':>9s} {'speed-up':>9s} {'judge acc':>10s} {'Δ acc':>7s}")
    for name, s, acc in rows:
        print(f"{name:10s} {s:9.4f} {base_s / s:8.1f}× {acc:10.3f} {100 * (acc - base_acc):+6.1f}")

    # Batched CFG (one forward on 2B) vs two forwards of B
    x = torch.randn(200, 1, 28, 28)
    t = torch.full((200,), T // 2)
    y = torch.arange(10).repeat_interleave(20)
    null = torch.full_like(y, ema.cfg.null_label)
    with torch.no_grad():
        for _ in range(2):
            guided_eps(ema, x, t, y, a.guidance, ema.cfg.null_label)  # warm-up
        _, batched = timed(lambda: [guided_eps(ema, x, t, y, a.guidance, ema.cfg.null_label)
                                    for _ in range(5)])
        _, two = timed(lambda: [(1 + a.guidance) * ema(x, t, y) - a.guidance * ema(x, t, null)
                                for _ in range(5)])
    print(f"CFG: batched {batched / 5 * 1e3:.1f} ms vs two forwards {two / 5 * 1e3:.1f} ms "
          f"per step of 200 → ratio {two / batched:.2f}×")


if __name__ == "__main__":
    main()
