"""Should the `cpu` preset train on all 60,000 MNIST training digits instead of the 9,000 of the
offline test split? Everything the decision needs, measured in one run on this machine.

    python benchmarks/full_mnist.py                       # ~15 min on 2 busy cores
    python benchmarks/full_mnist.py --seconds 30 --per-digit 5    # a quick look

1. The splits: ``--dataset mnist-idx --data-dir <mnist-full>`` must give train = MNIST's 60k
   training split and val = its 10k test split (checked against the test split's own files in
   the small folder); load time of each dataset (median of 3 loads).
2. The judge (``trainables.judge.train_judge``) trained on each split for ``--judge-epochs``
   (1 by default; the study trains 6, and the time is linear in epochs): its training time,
   timed 9k / 60k / 9k again so the ratio is against the mean of the two 9k runs on this noisy
   shared machine, and each judge's accuracy on the same 1,000 validation digits (the small
   split's held-out tenth of the test split, seen by neither judge nor either model).
3. The same U-Net (depth 3, width 16, lr 1e-3, batch 128) trained for the same ``--seconds`` of
   training steps (``TrainConfig.max_seconds``, the cpu preset's 4 minutes by default) on 9k
   and on 60k digits. The two run at the same time, one thread each, as two cpu-preset trials
   share this machine, so both see the same load. Both validate on the same 1,000 digits.
   Then ``trainables.evaluate.evaluate_model`` at w = 2 (``--per-digit`` samples per digit,
   fixed evaluation noise) under each judge: judge accuracy and Fréchet distance, against the
   same real reference digits.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import DATA_DIR, machine, timed  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.data import DataConfig, Splits, load_splits, read_idx  # noqa: E402
from trainables.evaluate import EvalConfig, evaluate_model  # noqa: E402
from trainables.judge import accuracy, train_judge  # noqa: E402
from trainables.train_loop import LocalSession, fit  # noqa: E402
from trainables.unet import UNet  # noqa: E402

FULL_DIR = str(Path(DATA_DIR).with_name("mnist-full"))
MODEL = {"depth": 3, "width": 16}
TRAIN = {"batch_size": 128, "lr": 1e-3}


def digest(images: torch.Tensor) -> set[bytes]:
    return {hashlib.blake2b(x.numpy().tobytes(), digest_size=16).digest() for x in images}


def check_splits(small: Splits, full: Splits) -> None:
    """Print and assert what the full folder's splits are."""
    t10k = read_idx(next(Path(DATA_DIR).glob("t10k-images-idx3-ubyte*")), 0x803)
    full_val_u8 = ((full.val.images.squeeze(1) + 1) * 127.5).round().to(torch.uint8).numpy()
    counts = torch.bincount(full.train.labels, minlength=10).tolist()
    print(f"full: {full.description}\n  train {len(full.train):,} digits, class counts {counts}"
          f"\n  val {len(full.val):,} digits, identical to the test split in {DATA_DIR}: "
          f"{np.array_equal(full_val_u8, t10k)}")
    small_val, small_train = digest(small.val.images), digest(small.train.images)
    full_train, full_val = digest(full.train.images), digest(full.val.images)
    print(f"small: {small.description}\n  its 1,000 val digits: {len(small_val & full_val)} in "
          f"the full val split, {len(small_val & full_train)} in the full train split; its "
          f"{len(small.train):,} train digits: {len(small_train & full_val):,} in the full val "
          f"split (never judge a 9k-trained model on the full val split)")
    assert len(full.train) == 60_000 and len(full.val) == 10_000
    assert np.array_equal(full_val_u8, t10k), "full val is not MNIST's test split"


def load_time(data_dir: str, repeats: int = 3) -> float:
    return statistics.median(timed(load_splits, DataConfig("mnist-idx", data_dir))[1]
                             for _ in range(repeats))


def train_model(which: str, seconds: float, queue) -> None:
    """One diffusion model trained in this (child) process, one thread; results to `queue`
    (the EMA weights as bytes: torch's shared-memory tensors die with the child)."""
    torch.set_num_threads(1)
    small = load_splits(DataConfig("mnist-idx", DATA_DIR))
    splits = small
    if which == "60k":  # the full training split, validated on the same 1,000 digits
        full = load_splits(DataConfig("mnist-idx", FULL_DIR))
        splits = Splits(full.train, small.val, full.description, full.fingerprint)
    cfg = TrialConfig.from_dict({
        "data": {"dataset": "mnist-idx", "data_dir": DATA_DIR}, "model": MODEL,
        "train": {**TRAIN, "epochs": 10_000, "max_seconds": seconds,
                  "early_stop_patience": None}})
    with tempfile.TemporaryDirectory() as tmp:
        r = fit(cfg, LocalSession(Path(tmp), verbose=False), splits)
    h = r.history
    weights = io.BytesIO()
    torch.save(r.ema.state_dict(), weights)
    queue.put((which, {"ema": weights.getvalue(), "cfg": cfg.to_dict(),
                       "train_seconds": r.train_seconds, "steps": h[-1]["step"],
                       "epochs": h[-1]["epoch"], "val_loss": h[-1]["val_loss"],
                       "images_per_s": TRAIN["batch_size"] * h[-1]["step"] / r.train_seconds,
                       "precision": h[-1].get("train_dtype", h[-1].get("precision")),
                       "stop": r.stop_reason}))


def train_both(seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=train_model, args=(w, seconds, queue)) for w in ("9k", "60k")]
    for p in procs:
        p.start()
    out = {}
    while len(out) < len(procs):
        try:
            which, result = queue.get(timeout=30)
            out[which] = result
        except Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("a training process failed (its traceback is above)") from None
    for p in procs:
        p.join()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=240.0, help="training steps' wall budget")
    p.add_argument("--per-digit", type=int, default=30, help="samples per digit to judge")
    p.add_argument("--judge-epochs", type=int, default=1,
                   help="timed and used for judging (the study trains 6; time is linear in it)")
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    print(f"# Full MNIST for the cpu preset — {machine()}; load average "
          f"{os.getloadavg()[0]:.1f}\n")

    # 1. The splits and their load times
    small = load_splits(DataConfig("mnist-idx", DATA_DIR))
    full = load_splits(DataConfig("mnist-idx", FULL_DIR))
    check_splits(small, full)
    load_small, load_full = load_time(DATA_DIR), load_time(FULL_DIR)
    print(f"\nload_splits (median of 3): 9k split {load_small:.2f} s, full {load_full:.2f} s "
          f"({load_full / load_small:.1f}×); tensors {small.train.images.nbytes / 2**20:.0f} vs "
          f"{full.train.images.nbytes / 2**20:.0f} MiB of float32 training images per process")

    # 2. The judge on each split
    j9, s9a = timed(train_judge, small, epochs=a.judge_epochs, verbose=False)
    j60, s60 = timed(train_judge, full, epochs=a.judge_epochs, verbose=False)
    _, s9b = timed(train_judge, small, epochs=a.judge_epochs, verbose=False)
    judges = {"9k judge": j9, "60k judge": j60}
    per_epoch = {"9k": (s9a + s9b) / 2 / a.judge_epochs, "60k": s60 / a.judge_epochs}
    print(f"\njudge training ({a.judge_epochs} epoch(s), {torch.get_num_threads()} threads): 9k "
          f"{s9a:.0f} s / {s9b:.0f} s, 60k {s60:.0f} s: **{s60 / ((s9a + s9b) / 2):.1f}×** "
          f"(60,000 / 9,000 = 6.7× the steps); the study's 6 epochs: 9k ≈ "
          f"{6 * per_epoch['9k'] / 60:.1f} min, 60k ≈ {6 * per_epoch['60k'] / 60:.1f} min")
    for name, j in judges.items():
        print(f"  {name}: accuracy on its own val split {j.val_acc:.2%}; on the common 1,000 "
              f"val digits {accuracy(j, small.val):.2%}")

    # 3. The same model, the same training time, 9k vs 60k digits
    print(f"\ntraining d3 w16 for {a.seconds:.0f} s of steps on each, both at once, 1 thread "
          f"each (load average {os.getloadavg()[0]:.1f}) ...", flush=True)
    runs = train_both(a.seconds)
    ecfg = EvalConfig(n_per_digit=a.per_digit)
    print(f"\n| training digits | steps | epochs | images/s | val loss | judge | judge acc "
          f"(w = 2, {10 * a.per_digit} samples) | Fréchet |\n| --- | ---: | ---: | ---: | ---: "
          f"| --- | ---: | ---: |")
    quality = {}
    for which, r in runs.items():
        cfg = TrialConfig.from_dict(r["cfg"])
        ema = UNet(cfg.model)
        ema.load_state_dict(torch.load(io.BytesIO(r["ema"]), weights_only=True))
        ema.eval()
        for name, j in judges.items():
            m = evaluate_model(ema, cfg, j, None, small.val, None, ecfg, guidance=2.0)
            quality[which, name] = m
            print(f"| {which} | {r['steps']} | {r['epochs']} | {r['images_per_s']:.0f} "
                  f"({r['precision']}) | {r['val_loss']:.4f} | {name} | {m['judge_acc']:.3f} "
                  f"| {m['frechet']:.1f} |", flush=True)

    print("\n60k ÷ 9k, same training time:")
    print(f"  steps {runs['60k']['steps'] / runs['9k']['steps']:.2f}× (equal work if ≈ 1), "
          f"validation loss {runs['60k']['val_loss'] - runs['9k']['val_loss']:+.4f}")
    n = 10 * a.per_digit
    for name in judges:
        q9, q60 = quality["9k", name], quality["60k", name]
        print(f"  {name}: judge accuracy {100 * (q60['judge_acc'] - q9['judge_acc']):+.1f} "
              f"points (2σ of a difference of two {n}-sample accuracies ≤ "
              f"{200 * (0.5 / n) ** 0.5:.1f}), Fréchet {q60['frechet'] / q9['frechet']:.2f}×")
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
