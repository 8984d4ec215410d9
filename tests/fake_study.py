"""A study directory written by hand, for tests of the report and its pages (no Ray, no
training): `fake_study` writes results.csv, study.json and per-trial files the way a study does,
and `fake_scores` a per-sample score table."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from study.rows import CLIP_COLUMNS, COLUMNS

#: The ok runs of a fake study: (trial id, confirm_of, depth, width, stop_reason, quality,
#: training seconds). Configurations: "good" (2 seeds), "big" (2 seeds, the best, dearer),
#: "early" (stopped by early stopping) and "asha1" (stopped by ASHA, cheapest).
RUNS = [("good", None, 2, 8, "completed", 0.6, 6.0),
        ("early", None, 2, 8, "early_stop", 0.4, 4.0),
        ("big", None, 3, 16, "completed", 0.7, 20.0),
        ("asha1", None, 3, 8, "asha", 0.3, 3.0),
        ("good_s1", "good", 2, 8, "completed", 0.58, 6.5),
        ("big_s1", "big", 3, 16, "completed", 0.66, 21.0)]


def fake_scores(clip: bool) -> pd.DataFrame:
    """Per-sample judge (and CLIP) scores of two trials "a" and "b", 4 samples per digit."""
    rng = np.random.default_rng(1)
    n = 40
    s = pd.DataFrame({"trial_id": np.repeat(["a", "b"], n), "index": np.tile(np.arange(n), 2),
                      "label": np.tile(np.repeat(np.arange(10), 4), 2),
                      "judge_conf": rng.uniform(size=2 * n),
                      "judge_pred": rng.integers(0, 10, 2 * n)})
    if clip:
        s["clip_score"] = rng.uniform(18, 30, 2 * n)
    return s


def fake_study(root: Path, clip: bool, ok: bool = True, drop_clip_columns: bool = False,
               style: bool = False) -> Path:
    """A study directory written by hand: a failed trial and, unless `ok` is False, the ok runs
    of RUNS (first seeds and confirmations), each with samples, a per-digit table, a history
    with the probe and training seconds, the probe's samples per epoch and a guidance curve.
    `style`: the best configuration is a style-on model with style grids."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    rows = [{"trial_id": "bad1", "status": "failed", "stop_reason": "error",
             "error": "RuntimeError: CUDA out of memory (boom)", "depth": 3, "width": 64,
             "lr": 3e-3, "confirm_of": None}]
    for tid, confirm_of, depth, width, reason, q, secs in RUNS if ok else []:
        epochs = 2 if reason == "completed" else 1
        row = {"trial_id": tid, "status": "ok", "stop_reason": reason, "confirm_of": confirm_of,
               "depth": depth, "width": width, "lr": 1e-3 * (1 + depth / 10),
               "style": style and depth == 3 and width == 16, "seed": 1 if confirm_of else 0,
               "params": 1000 * width, "forward_gflops": 0.001 * width,
               "images_seen": 500 * epochs, "train_gflops": 1.5 * width * epochs,
               "trial_wall_s": secs + 10, "worker_seconds": secs + 10, "gpu_seconds": 0.0,
               "startup_s": 8.0, "images_per_s": 500 * epochs / secs, "workers": 1,
               "epochs_run": epochs, "epochs": 2, "guidance": 2.0, "quality": q,
               "quality_metric": "coverage", "coverage": q, "precision": q + 0.1,
               "recall": q - 0.1, "judge_acc": min(1.0, q + 0.3), "judge_conf": q,
               "judge_no_digit": 0.01, "frechet": 100 * (1 - q), "train_cost_s": secs,
               "train_seconds": secs, "eval_s": 3.0, "eval_sample_s": 2.0, "n_samples": 40,
               "samples_path": f"trials/{tid}/samples.npz"}
        if clip:
            row.update(clip_top=25 * q, clip_all=20 * q, clip_gain=5 * q,
                       judge_acc_top_clip=min(1.0, q + 0.35))
        rows.append(row)
        _trial_files(root / "trials" / tid, rng, clip, epochs, secs, q)
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    if drop_clip_columns:
        df = df.drop(columns=list(CLIP_COLUMNS))
    df.to_csv(root / "results.csv", index=False)
    spec = {"name": root.name, "clip": {"model": "tiny"} if clip else None,
            "space": {"depth": [2, 3], "width": [8, 16], "lr": [1e-3, 2e-3],
                      "style": [False, True]}, "confirm_seeds": 1,
            "evaluation": {"n_per_digit": 4, "top_k": 3},
            "base": {"diffusion": {"timesteps": 50, "schedule": "linear"}}}
    record = {"spec": spec, "quality_metric": "coverage",
              "headline_metric": "clip_top" if clip else "coverage",
              "versions": {"python": "3.x"}, "machine": {"cpus": 2}}
    (root / "study.json").write_text(json.dumps(record))
    if clip and ok:
        scores = fake_scores(clip=True)
        scores["trial_id"] = scores["trial_id"].map({"a": "good", "b": "early"})
        (root / "analysis").mkdir()
        scores.to_csv(root / "analysis" / "sample_scores.csv", index=False)
    if style and ok:
        (root / "analysis").mkdir(exist_ok=True)
        np.savez_compressed(root / "analysis" / "style_grids.npz", trial_id=np.array("big"),
                            attributes=np.array(["slant", "thickness"]),
                            levels=np.array([-2.0, 0.0, 2.0]), labels=np.arange(10),
                            images=rng.integers(0, 256, (2, 3, 10, 28, 28), dtype=np.uint8))
    return root


def _trial_files(tdir: Path, rng, clip: bool, epochs: int, secs: float, q: float) -> None:
    """samples.npz, per_digit.csv, outcome.json (history), progress.npz and guidance.csv."""
    tdir.mkdir(parents=True)
    labels = np.repeat(np.arange(10), 4)
    np.savez_compressed(tdir / "samples.npz",
                        images=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
                        labels=labels, config=np.array("{}"),
                        judge_conf=rng.uniform(size=40).astype(np.float32))
    per_digit = pd.DataFrame({"digit": range(10), "judge_acc": rng.uniform(size=10),
                              "judge_conf": rng.uniform(size=10)})
    if clip:
        per_digit["clip_top"] = rng.uniform(20, 30, 10)
    per_digit.to_csv(tdir / "per_digit.csv", index=False)
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "lr": 1e-3,
                "train_seconds": secs * e / epochs, "probe_judge_acc": q * e / epochs,
                "probe_guidance": 2.0} for e in range(1, epochs + 1)]
    (tdir / "outcome.json").write_text(json.dumps({"metrics": {}, "history": history}))
    np.savez_compressed(tdir / "progress.npz",
                        images=rng.integers(0, 256, (epochs, 20, 28, 28), dtype=np.uint8),
                        labels=np.repeat(np.arange(10), 2), epochs=np.arange(1, epochs + 1),
                        guidance=np.full(epochs, 2.0))
    pd.DataFrame({"guidance": [0.0, 1.0, 2.0, 4.0],
                  "coverage": [q - 0.2, q - 0.05, q, q - 0.1],
                  "precision": [0.3, 0.5, 0.6, 0.8], "recall": [0.8, 0.7, 0.6, 0.4],
                  "judge_acc": [0.4, 0.7, 0.9, 0.95], "judge_no_digit": [0.1, 0.05, 0.0, 0.0]}
                 ).to_csv(tdir / "guidance.csv", index=False)
