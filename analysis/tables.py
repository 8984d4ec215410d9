"""Derived tables of a study: Pareto fronts, cost totals, failures, hyperparameter importance,
per-digit scores and selection gains. Each function takes a ``Study`` (or a DataFrame) and
returns a pandas DataFrame the report prints and the charts draw.

    front = pareto_front(study.ok, quality="judge_acc", cost="train_cost_s")
    imp, why = importances(study)        # (None, reason) when Optuna cannot rank the axes
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.results import Study

#: Cost axes of the cost-vs-quality views: measured training seconds, and training compute.
COSTS = {"train_cost_s": "training seconds",
         "train_gflops": "training GFLOPs (3 × forward GFLOPs × images seen)"}
QUALITY_LABELS = {"clip_top": "CLIP-top-k score", "judge_acc": "judge accuracy",
                  "frechet": "Fréchet distance (judge features)", "clip_all": "CLIP score (all)",
                  "judge_conf": "judge confidence", "quality": "quality"}
#: Front columns beside the study's searched axes (Study.axes).
FRONT_METRICS = ["quality", "judge_acc", "clip_top", "frechet", "train_cost_s", "train_gflops",
                 "params"]

__all__ = ["pareto_front", "qualities", "fronts", "front_table", "total_cost", "failures",
           "importances", "per_digit_long", "selection_gain", "reference_table",
           "to_markdown", "COSTS", "QUALITY_LABELS"]


def pareto_front(df: pd.DataFrame, quality: str = "quality", cost: str = "train_cost_s",
                 ) -> pd.DataFrame:
    """Rows not dominated by any other (higher quality and lower cost; ties are kept)."""
    ok = df.dropna(subset=[quality, cost])
    keep = []
    for i, r in ok.iterrows():
        dominated = ((ok[quality] >= r[quality]) & (ok[cost] <= r[cost])
                     & ((ok[quality] > r[quality]) | (ok[cost] < r[cost]))).any()
        if not dominated:
            keep.append(i)
    return ok.loc[keep].sort_values(cost)


def qualities(study: Study) -> list[str]:
    """Quality columns to chart: CLIP-top-k when CLIP ran, and always the judge's accuracy."""
    return (["clip_top"] if study.clip_enabled else []) + ["judge_acc"]


def fronts(df: pd.DataFrame, quality_cols, cost_cols=tuple(COSTS)) -> dict:
    """{(quality, cost): Pareto front} for every pair (higher quality, lower cost)."""
    return {(q, c): pareto_front(df, quality=q, cost=c) for q in quality_cols for c in cost_cols}


def front_table(study: Study) -> pd.DataFrame:
    """The study's headline front (quality vs training seconds) over first-seed trials."""
    df = study.ok
    first_seed = df[df["confirm_of"].isna()]
    cols = [c for c in ["trial_id", *study.axes, *FRONT_METRICS]
            if c in df and (c != "clip_top" or study.clip_enabled)]
    return pareto_front(first_seed, "quality", "train_cost_s")[cols]


def total_cost(df: pd.DataFrame) -> dict:
    """Summed cost columns over all trials (failed ones too: they cost as much)."""
    def total(col):
        return float(pd.to_numeric(df[col], errors="coerce").fillna(0).sum())

    return {"trials": len(df), "ok": int((df["status"] == "ok").sum()),
            "failed": int((df["status"] != "ok").sum()),
            "training_s": total("train_seconds"), "trial_wall_s": total("trial_wall_s"),
            "worker_s": total("worker_seconds"), "gpu_s": total("gpu_seconds"),
            "eval_s": total("eval_s"), "train_gflops": total("train_gflops")}


def failures(df: pd.DataFrame, axes=("depth", "width", "lr", "guidance")) -> pd.DataFrame:
    """Failed trials and trials stopped before their budget, with the reason and their axes."""
    stopped = (df["status"] != "ok") | (df["stop_reason"].fillna("") != "completed")
    cols = ["trial_id", "status", "stop_reason", "error", *[a for a in axes if a in df],
            "epochs_run"]
    out = df.loc[stopped, cols].copy()
    out["error"] = out["error"].fillna("")
    return out.reset_index(drop=True)


def importances(study: Study) -> tuple[pd.DataFrame | None, str]:
    """Optuna's fANOVA hyperparameter importance for each objective, read from the study's own
    optuna.db. Returns (table objective × param or None, why objectives are missing or "")."""
    db = study.path / "optuna.db"
    if not db.exists():
        return None, "no optuna.db in the study directory"
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        ot = optuna.load_study(study_name=study.name, storage=f"sqlite:///{db}")
    except Exception as e:  # a foreign or corrupt database must not stop the report
        return None, f"optuna.db could not be read ({type(e).__name__}: {e})"
    done = [t for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE]
    varying = {p for p in {k for t in done for k in t.params}
               if len({t.params.get(p) for t in done}) > 1}
    if len(done) < 2 or not varying:
        return None, (f"not enough trials: {len(done)} complete trial(s), "
                      f"{len(varying)} varying hyperparameter(s); importance needs at least 2 "
                      f"of each kind")
    names = ot.metric_names or ["quality", "train_cost_s"]
    rows, problems = [], []
    for i, name in enumerate(names):
        # fANOVA splits the variance of each objective, so its direction does not matter
        # (Optuna's default PED-ANOVA ranks for *low* values); a seed keeps reports stable.
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        try:
            imp = optuna.importance.get_param_importances(
                ot, evaluator=evaluator, target=lambda t, i=i: t.values[i])
        except (RuntimeError, ValueError) as e:  # e.g. every trial scored the same
            problems.append(f"{name}: Optuna could not rank the hyperparameters ({e})")
            continue
        rows += [{"objective": name, "param": p, "importance": v} for p, v in imp.items()]
    return (pd.DataFrame(rows) if rows else None), "; ".join(problems)


def per_digit_long(study: Study) -> pd.DataFrame:
    """Per-digit scores of every trial, with the real-data reference as trial 'real'."""
    frames = [study.per_digit] if len(study.per_digit) else []
    if study.reference and study.reference.get("per_digit"):
        frames.append(pd.DataFrame(study.reference["per_digit"]).assign(trial_id="real"))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def selection_gain(scores: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per trial and digit, what keeping the top k samples buys over keeping all of them:
    judge accuracy of the judge's pick, and the CLIP score of CLIP's pick (when present)."""
    rows = []
    for (trial, digit), g in scores.groupby(["trial_id", "label"]):
        correct = (g["judge_pred"] == g["label"]).astype(float)
        row = {"trial_id": trial, "digit": int(digit), "judge_acc_all": correct.mean(),
               "judge_acc_top": correct[g["judge_conf"].nlargest(k).index].mean()}
        row["judge_gain"] = row["judge_acc_top"] - row["judge_acc_all"]
        if "clip_score" in g and g["clip_score"].notna().any():
            row.update(clip_all=g["clip_score"].mean(),
                       clip_top=g["clip_score"].nlargest(k).mean())
            row["clip_gain"] = row["clip_top"] - row["clip_all"]
        rows.append(row)
    return pd.DataFrame(rows)


def reference_table(study: Study) -> pd.DataFrame:
    """The real-data reference row next to the best trial's row (same metrics)."""
    if not study.reference:
        return pd.DataFrame()
    metrics = ["judge_acc", "judge_conf", "judge_acc_top_judge", "frechet"]
    if study.clip_enabled:
        metrics += ["clip_top", "clip_all", "clip_gain", "clip_acc_all", "clip_acc_top"]
    rows = [{"source": study.reference.get("source", "real digits"),
             **{m: study.reference.get(m) for m in metrics}}]
    best = study.best(study.quality_metric)
    if len(best):
        rows.append({"source": f"best trial {best['trial_id'].iloc[0]}",
                     **{m: best[m].iloc[0] for m in metrics}})
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub Markdown table (pandas' own needs the optional `tabulate`)."""
    if df.empty:
        return "_(none)_"

    def cell(v):
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else f"{v:.{digits}g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |",
             "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)
