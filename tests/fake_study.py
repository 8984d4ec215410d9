"""A study directory written by hand, for tests of the report and its pages (no Ray, no
training): `fake_study` writes results.csv, study.json and per-trial files the way a study does,
and `fake_scores` a per-sample score table."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from study.rows import CLIP_COLUMNS, COLUMNS


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


def fake_study(root: Path, clip: bool, ok: bool = True, drop_clip_columns: bool = False) -> Path:
    """A study directory written by hand: an ok trial (samples, per-digit table, history)
    unless `ok` is False, a failed trial and an early-stopped one."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    rows = [{"trial_id": "bad1", "status": "failed", "stop_reason": "error",
             "error": "RuntimeError: CUDA out of memory (boom)", "depth": 3, "width": 64,
             "lr": 3e-3, "guidance": 4.0, "confirm_of": None}]
    if ok:
        base = {"status": "ok", "depth": 2, "width": 8, "confirm_of": None, "params": 1000,
                "forward_gflops": 0.01, "images_seen": 1000, "train_gflops": 30.0,
                "trial_wall_s": 20.0, "workers": 1, "epochs_run": 2}
        for tid, reason, q in (("good", "completed", 0.6), ("early", "early_stop", 0.4)):
            row = {**base, "trial_id": tid, "stop_reason": reason, "lr": 1e-3 * (1 + q),
                   "guidance": 2.0, "quality": q, "judge_acc": q, "judge_conf": q,
                   "frechet": 100 * (1 - q), "train_cost_s": 10 * q, "train_seconds": 10 * q,
                   "samples_path": f"trials/{tid}/samples.npz"}
            if clip:
                row.update(clip_top=25 * q, clip_all=20 * q, clip_gain=5 * q)
                row["quality"] = row["clip_top"]
            rows.append(row)
            tdir = root / "trials" / tid
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
                        "probe_judge_acc": 0.2 * e} for e in (1, 2)]
            (tdir / "outcome.json").write_text(json.dumps({"metrics": {}, "history": history}))
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    if drop_clip_columns:
        df = df.drop(columns=list(CLIP_COLUMNS))
    df.to_csv(root / "results.csv", index=False)
    spec = {"name": root.name, "clip": {"model": "tiny"} if clip else None,
            "evaluation": {"n_per_digit": 4, "top_k": 3},
            "base": {"diffusion": {"timesteps": 50, "schedule": "linear"}}}
    record = {"spec": spec, "quality_metric": "clip_top" if clip else "judge_acc",
              "versions": {"python": "3.x"}, "machine": {"cpus": 2}}
    (root / "study.json").write_text(json.dumps(record))
    if clip and ok:
        scores = fake_scores(clip=True)
        scores["trial_id"] = scores["trial_id"].map({"a": "good", "b": "early"})
        (root / "analysis").mkdir()
        scores.to_csv(root / "analysis" / "sample_scores.csv", index=False)
    return root
