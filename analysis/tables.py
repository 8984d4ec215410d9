"""Derived tables of a study: Pareto fronts, configurations with their seeds (mean ± std), the
anytime view, cost totals, failures, hyperparameter importance, per-digit scores and selection
gains. Each function takes a ``Study`` (or a DataFrame) and returns a pandas DataFrame (or a
small dict) the report prints and the charts draw.

    front = pareto_front(study.ok, quality="judge_acc", cost="train_cost_s")
    configs = configurations(study.ok, study.axes)   # one row per configuration, mean ± std
    best = best_for_cost(configs)                    # the answer the report leads with
    imp, why = importances(study)        # (None, reason) when Optuna cannot rank the axes

A *configuration* is a point of the searched axes (``Study.axes``): a first-seed trial and the
confirmation runs that repeat it with other seeds (``confirm_of`` = its trial id).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.results import Study

#: Cost axes of the cost-vs-quality views: measured training seconds, and training compute.
COSTS = {"train_cost_s": "training seconds",
         "train_gflops": "training GFLOPs (3 × forward GFLOPs × images seen)"}
QUALITY_LABELS = {"clip_top": "CLIP-top-k score", "judge_acc": "judge accuracy",
                  "coverage": "coverage (class-conditional, judge features)",
                  "recall": "recall (class-conditional)", "precision": "precision",
                  "frechet": "Fréchet distance (judge features)", "clip_all": "CLIP score (all)",
                  "judge_conf": "judge confidence", "quality": "quality"}
#: Front columns beside the study's searched axes (Study.axes).
FRONT_METRICS = ["quality", "judge_acc", "clip_top", "frechet", "train_cost_s", "train_gflops",
                 "params"]

#: Columns summarised per configuration as mean ± std over its seeds.
SEED_METRICS = ["quality", "judge_acc", "recall", "precision", "clip_top", "judge_acc_top_clip",
                "frechet", "train_cost_s", "trial_wall_s", "train_gflops"]
#: Stop reasons of a trial that ended before its epoch budget (the anytime view marks them).
EARLY = ("asha", "early_stop", "time_budget", "step_budget")
#: Every cost column of a trial, in the order the report's trial table shows them.
COST_COLUMNS = ["train_seconds", "trial_wall_s", "worker_seconds", "gpu_seconds", "startup_s",
                "images_per_s", "sample_s_per_image", "eval_s", "forward_gflops",
                "train_gflops", "params"]

__all__ = ["pareto_front", "qualities", "fronts", "front_table", "total_cost", "failures",
           "importances", "per_digit_long", "selection_gain", "reference_table",
           "configurations", "mean_front", "best_for_cost", "best_trial", "seed_order",
           "anytime", "trial_costs", "to_markdown", "COSTS", "QUALITY_LABELS", "SEED_METRICS"]


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


def configurations(ok: pd.DataFrame, axes) -> pd.DataFrame:
    """One row per configuration of the successful trials `ok`: ``config`` (the first-seed
    trial's id), its axes, ``n`` (runs with a quality), ``stop_reason`` of the first seed, the
    trial ids, and for each SEED_METRICS column present: ``<m>_first`` (the first seed's value),
    ``<m>_mean`` and ``<m>_std`` (sample std over the seeds; NaN with one seed). Sorted by mean
    quality, best first."""
    ok = ok.dropna(subset=["quality"])
    if ok.empty:
        return pd.DataFrame(columns=["config", "n", *axes])
    key = ok["confirm_of"].where(ok["confirm_of"].notna(), ok["trial_id"]).astype(str)
    metrics = [m for m in SEED_METRICS if m in ok and ok[m].notna().any()]
    rows = []
    for config, g in ok.assign(config=key).groupby("config", sort=False):
        first = g[g["confirm_of"].isna()]
        head = (first if len(first) else g).iloc[0]
        row = {"config": config, **{a: head[a] for a in axes if a in g}, "n": len(g),
               "stop_reason": head["stop_reason"] if len(first) else None,
               "trials": " ".join(g["trial_id"].astype(str))}
        for m in metrics:
            v = pd.to_numeric(g[m], errors="coerce")
            row[f"{m}_first"] = float(first[m].iloc[0]) if len(first) else np.nan
            row[f"{m}_mean"] = float(v.mean())
            row[f"{m}_std"] = float(v.std(ddof=1)) if v.notna().sum() > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows).sort_values("quality_mean", ascending=False, kind="stable") \
        .reset_index(drop=True)


def mean_front(configs: pd.DataFrame) -> pd.DataFrame:
    """The Pareto front of configurations by mean quality and mean training seconds."""
    if configs.empty or "quality_mean" not in configs:
        return configs
    return pareto_front(configs, "quality_mean", "train_cost_s_mean")


def best_for_cost(configs: pd.DataFrame) -> dict | None:
    """The answer a report leads with: on the mean front, the configuration of highest mean
    quality (ties: higher judge accuracy, then recall, then cheaper), and what it gains over the
    next-cheapest front configuration. None without a configuration.

    Returns {"best": row, "runner_up": row or None (the next-cheapest front point; without one,
    the second-best configuration overall), "runner_up_on_front": bool, "gain", "gain_std"
    (sqrt of the two seed variances, a one-seed side taking seed_spread's; NaN when no
    configuration has seeds), "cost_ratio": best's mean training seconds ÷ the runner-up's}."""
    front = mean_front(configs)
    if front.empty:
        return None
    keys = [c for c in ("quality_mean", "judge_acc_mean", "recall_mean") if c in front]
    order = front.sort_values([*keys, "train_cost_s_mean"],
                              ascending=[False] * len(keys) + [True], kind="stable")
    best = order.iloc[0]
    cheaper = front[front["train_cost_s_mean"] < best["train_cost_s_mean"]]
    on_front = len(cheaper) > 0
    if on_front:
        runner = cheaper.iloc[-1]  # the front is sorted by cost: the next-cheapest point
    else:
        rest = configs[configs["config"] != best["config"]]
        runner = rest.iloc[0] if len(rest) else None  # configs are sorted best first
    out = {"best": best, "runner_up": runner, "runner_up_on_front": on_front,
           "gain": np.nan, "gain_std": np.nan, "cost_ratio": np.nan}
    if runner is not None:
        out["gain"] = best["quality_mean"] - runner["quality_mean"]
        # a side run with one seed takes the spread its study's seeds show (same protocol):
        # two one-seed configurations are no more certain than two confirmed ones
        pooled = seed_spread(configs)
        spread = [v if pd.notna(v) else pooled for v in (best["quality_std"],
                                                          runner["quality_std"])]
        out["gain_std"] = float(np.hypot(*spread))  # NaN when no configuration has seeds
        if runner["train_cost_s_mean"] > 0:
            out["cost_ratio"] = best["train_cost_s_mean"] / runner["train_cost_s_mean"]
    return out


def seed_spread(configs: pd.DataFrame) -> float:
    """The study's typical seed-to-seed std of quality: the root mean of the confirmed
    configurations' variances (NaN when none was run with more than one seed)."""
    var = configs.loc[configs["n"] > 1, "quality_std"].dropna() ** 2 \
        if "quality_std" in configs else pd.Series(dtype=float)
    return float(np.sqrt(var.mean())) if len(var) else np.nan


def seed_order(configs: pd.DataFrame) -> dict:
    """Whether the confirmed configurations (n > 1) rank the same by their first seed's quality
    as by their mean: {"compared": how many, "kept": bool or None (fewer than 2 compared),
    "first": ids by first-seed quality, "mean": ids by mean quality, best first}."""
    c = configs[configs["n"] > 1].dropna(subset=["quality_first", "quality_mean"]) \
        if "quality_first" in configs else configs.iloc[0:0]
    first = list(c.sort_values("quality_first", ascending=False, kind="stable")["config"])
    mean = list(c.sort_values("quality_mean", ascending=False, kind="stable")["config"])
    return {"compared": len(c), "kept": first == mean if len(c) > 1 else None,
            "first": first, "mean": mean}


def anytime(histories: pd.DataFrame, results: pd.DataFrame,
            metric: str = "probe_judge_acc") -> pd.DataFrame:
    """Quality as training went on: per trial and epoch, the cumulative training seconds and the
    in-training probe (`metric`), with the trial's configuration, its stop reason, whether it
    was a first seed, and `last` on each trial's final epoch (where an early stop ended it)."""
    cols = ["trial_id", "epoch", "train_seconds", metric]
    if histories.empty or not {"epoch", "train_seconds", metric} <= set(histories):
        return pd.DataFrame(columns=[*cols, "config", "stop_reason", "first_seed", "last"])
    h = histories[cols].dropna(subset=["train_seconds", metric])
    info = results[["trial_id", "confirm_of", "stop_reason", "status"]].assign(
        config=lambda d: d["confirm_of"].where(d["confirm_of"].notna(), d["trial_id"]),
        first_seed=lambda d: d["confirm_of"].isna())
    out = h.merge(info.drop(columns="confirm_of"), on="trial_id", how="inner")
    out = out.sort_values(["trial_id", "epoch"]).reset_index(drop=True)
    out["last"] = ~out["trial_id"].duplicated(keep="last")
    return out


def trial_costs(df: pd.DataFrame, axes) -> pd.DataFrame:
    """Every trial with its axes, outcome, quality and every cost column; sampling seconds per
    image is the evaluation's sampling time over its samples."""
    d = df.assign(sample_s_per_image=pd.to_numeric(df["eval_sample_s"], errors="coerce")
                  / pd.to_numeric(df["n_samples"], errors="coerce"))
    cols = ["trial_id", "confirm_of", *[a for a in axes if a in d], "status", "stop_reason",
            "epochs_run", "quality", "judge_acc", "recall", "guidance", *COST_COLUMNS]
    return d[[c for c in cols if c in d]].reset_index(drop=True)


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


def best_trial(study: Study) -> str | None:
    """The first-seed trial of the configuration `best_for_cost` names (None without one)."""
    verdict = best_for_cost(configurations(study.ok, study.axes))
    return None if verdict is None else str(verdict["best"]["config"])


def reference_table(study: Study) -> pd.DataFrame:
    """The real-data reference row next to the best configuration's first-seed trial (same
    metrics)."""
    if not study.reference:
        return pd.DataFrame()
    metrics = ["coverage", "precision", "recall", "judge_acc", "judge_no_digit", "judge_conf",
               "judge_acc_top_judge", "frechet"]
    if study.clip_enabled:
        metrics += ["clip_top", "clip_all", "clip_gain", "clip_acc_all", "clip_acc_top",
                    "judge_acc_top_clip"]
    rows = [{"source": study.reference.get("source", "real digits"),
             **{m: study.reference.get(m) for m in metrics}}]
    best = study.ok[study.ok["trial_id"] == best_trial(study)]
    if len(best):
        rows.append({"source": f"best trial {best['trial_id'].iloc[0]}",
                     **{m: best[m].iloc[0] for m in metrics}})
    return pd.DataFrame(rows).dropna(axis=1, how="all")


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
