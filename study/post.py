"""Post-study evaluation: the inputs of the report that need the trained checkpoints.

Runs once at the end of a study (``study/driver.py``), or again by hand::

    python -m study.post runs/<name>

It writes, under ``runs/<name>/analysis/``:

- ``guidance_sweep.csv``: every trial's guidance search, one row per (trial, w): the quality
  and judge metrics at each w the search scored, and the w it chose (read from the trials'
  ``guidance.csv``; nothing is sampled again);

and, for the best trials (by the study's quality and by judge accuracy), from their EMA weights:

- ``sample_scores.csv``: each evaluation sample's judge confidence and prediction and, when
  CLIP is enabled, its CLIP score, so the report can show top-k selections by either;
- ``recognisable_steps.csv``: per trial and digit, the mean first reverse step at which the
  judge's confidence in the requested digit passes 0.5, and the fraction of samples that ever
  pass;
- ``trajectory.npz``: for the best trial, a few images per digit at evenly spaced reverse steps
  and, at every step, the judge's confidence in the requested digit and its probability of
  "no digit" (its rejection class: noise is read as no digit, not as some digit);
- ``style_grids.npz``: for the best style-on trial (when the search had style), its digits
  drawn at each requested slant and thickness, the same noise along each row;
- ``real_digits.npz``: one real validation digit per class, for the forward-noise figure;
- ``post.json``: which trials were evaluated, and what it cost.

Everything here is plain PyTorch on the driver; ``analysis/`` then reads these files alone.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from study.layout import StudyLayout
from study.results import read_results
from study.spec import StudyRecord
from trainables.data import DIGITS
from trainables.judge import NO_DIGIT

RECOGNISED = 0.5  # judge confidence in the requested digit that counts as "recognisable"
TRAJECTORY_COLUMNS = 8  # reverse steps kept as images in trajectory.npz
TRAJECTORY_ROWS_PER_DIGIT = 1  # images per digit kept in trajectory.npz


def best_trials(df: pd.DataFrame, top_n: int) -> list[str]:
    """Trial ids of the best `top_n` ok trials by quality, then the best by judge accuracy."""
    ok = df[(df["status"] == "ok") & df["checkpoint_path"].notna()]
    ids = list(ok.sort_values("quality", ascending=False, na_position="last")
               ["trial_id"].head(top_n))
    by_judge = ok.dropna(subset=["judge_acc"]).sort_values("judge_acc", ascending=False)
    if len(by_judge) and by_judge["trial_id"].iloc[0] not in ids:
        ids.append(by_judge["trial_id"].iloc[0])
    return [str(i) for i in ids]


def first_pass_steps(conf: np.ndarray, threshold: float = RECOGNISED) -> np.ndarray:
    """conf: (S+1, N) confidence after each reverse step (row 0 is the noise). Returns (N,) the
    first step whose confidence exceeds `threshold`, NaN for a sample that never does."""
    above = conf > threshold
    first = above.argmax(axis=0).astype(float)
    first[~above.any(axis=0)] = np.nan
    return first


def recognisable_table(trial_id: str, conf: np.ndarray, labels: np.ndarray,
                       no_digit: np.ndarray | None = None) -> list[dict]:
    """Per digit: mean first recognisable step over the samples that get there, and how many do.
    `no_digit` (S+1, N): the judge's "no digit" probability at every step; its mean at step 0
    (pure noise) is `noise_no_digit`."""
    first = first_pass_steps(conf)
    steps = conf.shape[0] - 1
    rows = []
    for d in np.unique(labels):
        f = first[labels == d]
        passed = ~np.isnan(f)
        mean = float(f[passed].mean()) if passed.any() else float("nan")
        rows.append({"trial_id": trial_id, "digit": int(d), "mean_first_step": mean,
                     "mean_first_fraction": mean / steps, "frac_pass": float(passed.mean()),
                     "total_steps": steps, "n_samples": int(len(f)),
                     # a judge that already reads pure noise as d makes d's step meaningless
                     "noise_conf": float(conf[0, labels == d].mean()),
                     **({"noise_no_digit": float(no_digit[0, labels == d].mean())}
                        if no_digit is not None else {})})
    return rows


def post_study(study_dir: Path, top_n: int = 2) -> None:
    """Write the guidance curves, sample scores and reverse-trajectory inputs of the report."""
    import torch

    from trainables.diffusion import Schedule
    from trainables.eval_tools import EvalTools
    from trainables.sample import generate, load_samples, to_uint8
    from trainables.train_loop import load_checkpoint

    layout = StudyLayout(Path(study_dir))
    spec = StudyRecord.load(layout).spec
    df = read_results(layout.root)
    post = layout.post
    post.root.mkdir(exist_ok=True)
    t0 = time.perf_counter()

    tools = EvalTools.load(torch.load(layout.judge, weights_only=True), spec.clip,
                           spec.base.data)
    judge, clip, real, ecfg = tools.judge, tools.clip, tools.real, spec.evaluation
    _save_real_digits(post.real_digits, real, to_uint8)

    sweep = guidance_curves(layout, df)
    scores, recognisable = [], []
    ids = best_trials(df, top_n)
    for rank, trial_id in enumerate(ids):
        row = df[df["trial_id"] == trial_id].iloc[0]
        cfg, _, ema, _ = load_checkpoint(layout.root / row["checkpoint_path"])
        w = float(row["guidance"])  # the trial's tuned w

        # Per-sample scores of the trial's own evaluation samples (fixed evaluation noise)
        images, labels, _ = load_samples(layout.root / row["samples_path"])
        probs = judge.probs(images)
        s = pd.DataFrame({"trial_id": trial_id, "index": np.arange(len(labels)),
                          "label": labels.numpy(),
                          "judge_conf": probs.gather(1, labels[:, None]).squeeze(1).numpy(),
                          "judge_pred": probs.argmax(1).numpy()})
        if clip is not None:
            s["clip_score"] = clip.score(images, labels)["clip_score"].numpy()
        scores.append(s)

        # Reverse trajectory with the trial's own sampler and tuned w, judged at every step
        sc = cfg.sample
        _, traj_labels, traj = generate(ema, Schedule.from_config(cfg.diffusion), DIGITS,
                                        ecfg.n_per_digit, w, sc.sampler, sc.steps,
                                        sc.eta, seed=ecfg.seed, return_trajectory=True,
                                        amp=sc.amp)
        step_probs = [judge.probs(x) for x in traj]
        conf = np.stack([p.gather(1, traj_labels[:, None]).squeeze(1).numpy()
                         for p in step_probs])  # (S+1, N)
        no_digit = np.stack([p[:, NO_DIGIT].numpy() for p in step_probs])  # (S+1, N)
        recognisable += [{**r, "sampler": sc.sampler} for r in recognisable_table(
            trial_id, conf, traj_labels.numpy(), no_digit)]
        if rank == 0:
            _save_trajectory(post.trajectory, trial_id, traj, traj_labels, conf,
                             to_uint8, no_digit)

    style_trial = _style_grids(layout, df, ecfg, to_uint8)

    _write(post.guidance_sweep, sweep)
    _write(post.sample_scores, pd.concat(scores) if scores else pd.DataFrame())
    _write(post.recognisable, pd.DataFrame(recognisable))
    seconds = time.perf_counter() - t0
    post.summary.write_text(json.dumps({"trials": ids, "style_trial": style_trial,
                                        "seconds": seconds,
                                        "recognised_threshold": RECOGNISED}, indent=1))
    print(f"post-study: guidance curves of {sweep['trial_id'].nunique() if len(sweep) else 0} "
          f"trial(s), sample scores and reverse trajectories of {len(ids)} in {seconds:.0f}s "
          f"-> {post.root}", flush=True)


def guidance_curves(layout: StudyLayout, df: pd.DataFrame) -> pd.DataFrame:
    """Every ok trial's guidance search (trials/<id>/guidance.csv), one row per (trial, w), with
    the w the search chose as `chosen_guidance`."""
    curves = []
    for row in df[df["status"] == "ok"].itertuples():
        path = layout.trial(row.trial_id).guidance
        if path.exists():
            curves.append(pd.read_csv(path).assign(trial_id=row.trial_id,
                                                   chosen_guidance=row.guidance))
    return pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()


def _write(path: Path, df: pd.DataFrame) -> None:
    df.to_csv(path, index=False)


def _save_real_digits(path: Path, real, to_uint8) -> None:
    idx = [int(np.flatnonzero(real.labels.numpy() == d)[0]) for d in DIGITS
           if (real.labels == d).any()]
    np.savez_compressed(path, images=to_uint8(real.images[idx]), labels=real.labels[idx].numpy())


def _style_grids(layout: StudyLayout, df: pd.DataFrame, ecfg, to_uint8) -> str | None:
    """style_grids.npz of the best ok style-on trial, at its tuned w (None: no such trial)."""
    from trainables.diffusion import Schedule
    from trainables.sample import style_sweep
    from trainables.style import STYLE_NAMES
    from trainables.train import STYLE_LEVELS
    from trainables.train_loop import load_checkpoint

    if "style" not in df:
        return None
    styled = df[(df["status"] == "ok") & df["checkpoint_path"].notna()
                & df["style"].astype(str).isin(["True", "1", "1.0"])]
    if styled.empty:
        return None
    row = styled.sort_values("quality", ascending=False, na_position="last").iloc[0]
    cfg, _, ema, _ = load_checkpoint(layout.root / row["checkpoint_path"])
    sc, images = cfg.sample, []
    for name in STYLE_NAMES:
        columns, labels = style_sweep(ema, Schedule.from_config(cfg.diffusion), name,
                                      STYLE_LEVELS, guidance=float(row["guidance"]),
                                      sampler=sc.sampler, steps=sc.steps, eta=sc.eta,
                                      seed=ecfg.seed)
        images.append(np.stack([to_uint8(c) for c in columns]))  # (L, D, 28, 28)
    np.savez_compressed(layout.post.style, trial_id=np.array(str(row["trial_id"])),
                        attributes=np.array(STYLE_NAMES), levels=np.array(STYLE_LEVELS),
                        labels=labels.numpy(), images=np.stack(images))  # (A, L, D, 28, 28)
    return str(row["trial_id"])


def _save_trajectory(path: Path, trial_id: str, traj, labels, conf: np.ndarray,
                     to_uint8, no_digit: np.ndarray | None = None) -> None:
    steps = len(traj) - 1
    cols = sorted({round(i * steps / (TRAJECTORY_COLUMNS - 1))
                   for i in range(TRAJECTORY_COLUMNS)})
    labels_np = labels.numpy()
    rows = np.concatenate([np.flatnonzero(labels_np == d)[:TRAJECTORY_ROWS_PER_DIGIT]
                           for d in np.unique(labels_np)])
    np.savez_compressed(
        path, trial_id=np.array(trial_id), steps=np.array(cols), total_steps=np.array(steps),
        images=np.stack([to_uint8(traj[s][rows]) for s in cols]),  # (C, R, 28, 28)
        labels=labels_np[rows], rows=rows,  # rows index conf's samples
        conf=conf.astype(np.float32), conf_labels=labels_np,
        **({"no_digit": no_digit.astype(np.float32)} if no_digit is not None else {}))


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not StudyLayout(Path(args[0])).exists():
        print("usage: python -m study.post runs/<name>  (a study directory with study.json)",
              file=sys.stderr)
        return 2
    post_study(Path(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
