"""bf16 autocast on a CPU: training images/s and the quality it reaches, against fp32, in the
same run. `fit` turns autocast on by default on CPUs whose oneDNN has native bf16 kernels
(`trainables.train_loop.uses_amp`); this measures whether that pays and costs no quality.

    python benchmarks/cpu_amp.py --epochs 3

Both runs train the CPU reference U-Net (d3 w16, batch 128) for the same epochs from the same
seed with `fit` itself. Quality at the end of each, evaluated in fp32 from the EMA weights: the
validation loss (fixed noise) and the digit judge's accuracy on 20 DDIM-25 samples per digit at
w = 2. Per-epoch throughput is compared on the epochs after the first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import machine, mnist, reference_config  # noqa: E402
from trainables.evaluate import quality_probe  # noqa: E402
from trainables.judge import load_or_train_judge  # noqa: E402
from trainables.train_loop import LocalSession, fit  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--probe-per-digit", type=int, default=20)
    a = p.parse_args(argv)
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    print(f"# bf16 autocast on the CPU — {machine()}; native oneDNN bf16: {native}; d3 w16, "
          f"batch 128, {a.epochs} epochs each, {torch.get_num_threads()} threads")
    splits = mnist()
    judge = load_or_train_judge(splits)
    rows = {}
    for name, amp in (("fp32", False), ("bf16 autocast", True)):
        cfg = reference_config(epochs=a.epochs, early_stop_patience=None, amp=amp)
        probe = quality_probe(judge, cfg, n_per_digit=a.probe_per_digit, steps=25)
        with tempfile.TemporaryDirectory() as tmp:
            result = fit(cfg, LocalSession(Path(tmp), verbose=False), splits)
        speeds = [h["images_per_s"] for h in result.history[1:]] or \
            [result.history[-1]["images_per_s"]]
        rows[name] = {"images_per_s": statistics.median(speeds),
                      "val_loss": result.history[-1]["val_loss"],
                      "judge_acc": probe(result.ema)["judge_acc"]}
        r = rows[name]
        print(f"{name:14s} {r['images_per_s']:7.1f} images/s   val loss {r['val_loss']:.4f}   "
              f"judge acc {r['judge_acc']:.3f}", flush=True)
    fp, bf = rows["fp32"], rows["bf16 autocast"]
    n = 10 * a.probe_per_digit
    print(f"\nbf16 ÷ fp32 images/s: {bf['images_per_s'] / fp['images_per_s']:.2f}×; "
          f"val loss {bf['val_loss'] - fp['val_loss']:+.4f}; judge accuracy "
          f"{100 * (bf['judge_acc'] - fp['judge_acc']):+.1f} points ({n} samples each: a "
          f"difference within ±{200 * (0.5 / n) ** 0.5:.0f} points is 2σ noise at most)")


if __name__ == "__main__":
    main()
