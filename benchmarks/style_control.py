"""Style control, measured: does a style-conditioned U-Net draw the slant and stroke thickness it
is asked for, and what does style conditioning cost in digit accuracy?

    python benchmarks/style_control.py --minutes 6     # trains both models, then measures
    python benchmarks/style_control.py --reuse         # measures the models already trained

A style-on and a style-off U-Net of the same size are trained with the same budget on the
offline 10k MNIST (``trainables.train.run``, so each run directory also holds the figures,
including the digits × slant and digits × thickness grids of the style-on model). Then:

- **control**: for each attribute, every digit is generated at requested standard scores
  −2…2 (the other attribute at 0; the same noise at every level), the attribute is measured on
  the samples (``trainables/style.py``) and the Spearman correlation between requested and
  measured is reported (target ≥ 0.8 each), with the mean measured score per level;
- **accuracy**: the judge reads the style-off model's digits and the style-on model's digits
  asked for the styles of real validation digits (same digits, same noise; target: at most 1
  point lower), and the style-on model's digits without a style.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, mnist, reference_config  # noqa: E402
from trainables.diffusion import Schedule  # noqa: E402
from trainables.judge import load_or_train_judge  # noqa: E402
from trainables.sample import generate, style_sweep  # noqa: E402
from trainables.style import STYLE_DIM, STYLE_NAMES, StyleNorm, style_vectors  # noqa: E402
from trainables.train import run  # noqa: E402
from trainables.train_loop import load_checkpoint  # noqa: E402

LEVELS = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)  # requested standard scores


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation (ties get their mean rank, as the requested levels repeat)."""
    return float(pd.Series(a.tolist()).corr(pd.Series(b.tolist()), method="spearman"))


def train_pair(minutes: float, out: Path, reuse: bool) -> dict[str, Path]:
    """Run directories of the style-off and style-on models (trained unless reused)."""
    dirs = {"off": out / "style-off", "on": out / "style-on"}
    for name, d in dirs.items():
        if reuse and (d / "checkpoint.pt").exists():
            continue
        cfg = reference_config(epochs=200, max_seconds=minutes * 60)
        cfg = replace(cfg, model=replace(cfg.model, style_dim=STYLE_DIM if name == "on" else 0))
        print(f"\n## training style-{name}: d{cfg.model.depth} w{cfg.model.width}, "
              f"{minutes:g} min", flush=True)
        run(cfg, d)
    return dirs


def control(ema, sched, norm: StyleNorm, judge, per_digit: int, guidance: float) -> list[dict]:
    """Requested vs measured standard score of each attribute over a sweep of levels."""
    rows = []
    for j, name in enumerate(STYLE_NAMES):
        columns, labels = style_sweep(ema, sched, name, LEVELS, n_per_digit=per_digit,
                                      guidance=guidance, seed=1)
        images = columns.flatten(0, 1)  # (L·N, 1, 28, 28), level-major
        measured = norm.encode(style_vectors(images))  # (L·N, STYLE_DIM)
        requested = torch.tensor(LEVELS).repeat_interleave(len(labels))
        digit = labels.repeat(len(LEVELS))
        per_digit_rho = [spearman(requested[digit == d], measured[digit == d, j])
                         for d in range(10)]
        rows.append({
            "attribute": name,
            "spearman": spearman(requested, measured[:, j]),
            "spearman_per_digit_mean": sum(per_digit_rho) / len(per_digit_rho),
            # does asking for one attribute move the other?
            "spearman_other": spearman(requested, measured[:, 1 - j]),
            "mean_measured_by_level": measured[:, j].view(len(LEVELS), -1).mean(1).tolist(),
            "judge_acc": (judge.probs(images).argmax(1) == digit).float().mean().item(),
            "n": len(images),
        })
    return rows


def accuracy(on, off, sched, norm: StyleNorm, judge, val, per_digit: int,
             guidance: float) -> dict:
    """Judge accuracy of the style-off model, the style-on model asked for real validation
    digits' styles, and the style-on model without a style; the same labels and noise."""
    idx = torch.cat([torch.nonzero(val.labels == d).flatten()[:per_digit] for d in range(10)])
    if len(idx) != 10 * per_digit:
        raise ValueError(f"fewer than {per_digit} validation digits of some class")
    real = norm.encode(style_vectors(val.images[idx]))  # (10·per_digit, STYLE_DIM)
    style = {name: real[:, j] for j, name in enumerate(STYLE_NAMES)}
    kw = {"n_per_digit": per_digit, "guidance": guidance, "seed": 2}
    out = {}
    for key, model, s in (("off", off, None), ("on_real_style", on, style),
                          ("on_no_style", on, None)):
        images, labels = generate(model, sched, range(10), style=s, **kw)
        out[key] = (judge.probs(images).argmax(1) == labels).float().mean().item()
        if key == "on_real_style":
            got = norm.encode(style_vectors(images))
            out["real_style_spearman"] = {n: spearman(real[:, j], got[:, j])
                                          for j, n in enumerate(STYLE_NAMES)}
    out["n"] = 10 * per_digit
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=6.0, help="training budget per model")
    p.add_argument("--out", type=Path, default=Path("runs/style-control"))
    p.add_argument("--reuse", action="store_true", help="measure models already trained in OUT")
    p.add_argument("--per-level", type=int, default=5, help="samples per digit per level")
    p.add_argument("--judge-per-digit", type=int, default=60,
                   help="samples per digit for the judge's accuracy (≤ validation digits)")
    p.add_argument("--guidance", type=float, default=2.0)
    a = p.parse_args(argv)

    torch.manual_seed(0)
    splits = mnist()
    dirs = train_pair(a.minutes, a.out, a.reuse)
    judge = load_or_train_judge(splits)
    cfg, _, on, ckpt = load_checkpoint(dirs["on"])
    _, _, off, _ = load_checkpoint(dirs["off"])
    norm = StyleNorm(**ckpt["style_norm"])
    sched = Schedule.from_config(cfg.diffusion)
    metrics = {k: json.loads((d / "metrics.json").read_text()) for k, d in dirs.items()}

    rows = control(on, sched, norm, judge, a.per_level, a.guidance)
    acc = accuracy(on, off, sched, norm, judge, splits.val, a.judge_per_digit, a.guidance)

    print(f"\n# style control — {machine()}")
    for k in ("off", "on"):
        m = metrics[k]
        print(f"style-{k}: d{cfg.model.depth} w{cfg.model.width}, {m['params']} params, "
              f"{m['epochs_run']} epochs in {m['train_seconds']:.0f} s ({m['stop_reason']}), "
              f"final val loss {m['final'].get('val_loss', float('nan')):.4f}")
    print(f"normaliser (training set): mean {norm.mean}, std {norm.std}")
    print(f"w = {a.guidance}, DDIM-{cfg.sample.steps}, levels {LEVELS[0]:+g}…{LEVELS[-1]:+g} "
          f"(step 0.5), {a.per_level} per digit per level")
    print(f"\n{'attribute':10s} {'Spearman':>9s} {'per digit':>10s} {'other':>7s} "
          f"{'judge acc':>10s}  mean measured z per requested level")
    for r in rows:
        means = " ".join(f"{v:+.2f}" for v in r["mean_measured_by_level"])
        print(f"{r['attribute']:10s} {r['spearman']:9.3f} {r['spearman_per_digit_mean']:10.3f} "
              f"{r['spearman_other']:+7.3f} {r['judge_acc']:10.3f}  {means}")
    print(f"\njudge accuracy, {acc['n']} samples each (same labels, same noise):")
    print(f"  style off                              {acc['off']:.3f}")
    print(f"  style on, styles of real val digits    {acc['on_real_style']:.3f}  "
          f"(Δ {100 * (acc['on_real_style'] - acc['off']):+.1f} points)")
    print(f"  style on, no style (null style)        {acc['on_no_style']:.3f}  "
          f"(Δ {100 * (acc['on_no_style'] - acc['off']):+.1f} points)")
    rs = acc["real_style_spearman"]
    print("  requested (real) vs measured style, Spearman: "
          + ", ".join(f"{k} {v:.3f}" for k, v in rs.items()))
    result = {"machine": machine(), "args": {k: str(v) for k, v in vars(a).items()},
              "control": rows, "accuracy": acc, "norm": norm.to_dict(),
              "train": {k: {f: metrics[k][f] for f in ("params", "epochs_run", "train_seconds",
                                                         "stop_reason")} for k in metrics}}
    (a.out / "style_control.json").write_text(json.dumps(result, indent=1))
    print(f"\nwrote {a.out / 'style_control.json'}; figures in {dirs['on'] / 'figures'}")


if __name__ == "__main__":
    main()
