"""The report's charts: one function per chart, each taking a table and returning a matplotlib
Figure (seaborn styling). Figures are built with ``matplotlib.figure.Figure`` rather than
pyplot, so nothing accumulates in pyplot's global state while a report draws dozens of them,
and a notebook shows exactly the figures it asks for.

    fig = cost_quality(study.ok, ["judge_acc"], fronts=fronts(study.ok, ["judge_acc"]))
    fig.savefig("cost_quality.png")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from analysis.tables import COSTS, EARLY, QUALITY_LABELS, mean_front

sns.set_theme(style="whitegrid", font_scale=0.9)


def _label(col: str) -> str:
    return QUALITY_LABELS.get(col) or COSTS.get(col) or col


def _figure(nrows: int, ncols: int, width: float, height: float):
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _trial_hue(df: pd.DataFrame) -> pd.Series:
    return "d" + df["depth"].astype("Int64").astype(str) + " w" + \
        df["width"].astype("Int64").astype(str)


def cost_quality(df: pd.DataFrame, quality_cols: Sequence[str], costs: Sequence[str] = tuple(COSTS),
                 fronts: Mapping | None = None, reference: Mapping | None = None) -> Figure:
    """Every trial as a point, one panel per (quality, cost) pair, with its Pareto front drawn
    as a staircase and labelled; the real-data score as a dashed line where there is one."""
    fig, axes = _figure(len(quality_cols), len(costs), 5.2, 3.6)
    data = df.assign(model=_trial_hue(df))
    for i, q in enumerate(quality_cols):
        for j, c in enumerate(costs):
            ax = axes[i, j]
            sub = data.dropna(subset=[q, c])
            sns.scatterplot(sub, x=c, y=q, hue="model", style="model", s=60, ax=ax,
                            legend=i == 0 and j == len(costs) - 1)
            front = (fronts or {}).get((q, c))
            if front is not None and len(front):
                f = front.sort_values(c)
                ax.step(f[c], f[q], where="post", color="crimson", lw=1.2, label="Pareto front")
                ax.scatter(f[c], f[q], s=140, facecolors="none", edgecolors="crimson")
                for r in f.itertuples():
                    ax.annotate(str(r.trial_id), (getattr(r, c), getattr(r, q)), fontsize=7,
                                xytext=(4, 4), textcoords="offset points")
            if reference and reference.get(q) is not None:
                ax.axhline(reference[q], ls="--", color="grey", lw=1)
                ax.annotate("real digits", (0.01, reference[q]), xycoords=("axes fraction",
                            "data"), fontsize=7, color="grey", va="bottom")
            if c == "train_gflops":
                _log_if_wide(ax, sub[c])
            ax.set(xlabel=_label(c), ylabel=_label(q))
    legend = axes[0, -1].get_legend()
    if legend is not None:
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    fig.suptitle("Cost vs quality (red: Pareto front, higher quality at lower cost)")
    return fig


def front_errorbars(configs: pd.DataFrame, front: pd.DataFrame, quality_label: str,
                    reference: float | None = None) -> Figure:
    """Every configuration at its mean quality and mean training seconds, ± one std over its
    seeds as error bars (confirmed configurations); the first seed's own point as a small open
    marker joined to its mean; configurations whose first seed stopped early as triangles; the
    mean Pareto front as a staircase."""
    fig, axes = _figure(1, 1, 7.2, 4.2)
    ax = axes[0, 0]
    if configs.empty:
        _empty(ax, "no successful configuration")
        return fig
    early = configs["stop_reason"].isin(EARLY)
    seeds = configs["n"] > 1
    std = configs.get("quality_std", pd.Series(np.nan, index=configs.index)).fillna(0)
    cost_std = configs.get("train_cost_s_std", pd.Series(np.nan, index=configs.index)).fillna(0)
    for mask, marker, label in ((~early, "o", "trained to its budget"),
                                (early, "v", "first seed stopped early")):
        for many, colour in ((False, "grey"), (True, "tab:blue")):
            sel = configs[mask & (seeds == many)]
            if sel.empty:
                continue
            ax.errorbar(sel["train_cost_s_mean"], sel["quality_mean"], yerr=std[sel.index],
                        xerr=cost_std[sel.index], fmt=marker, ms=7, color=colour, capsize=3,
                        lw=1, label=f"{label}, {'mean ± std of seeds' if many else 'one seed'}")
    conf = configs[seeds & configs["quality_first"].notna()] if "quality_first" in configs \
        else configs.iloc[0:0]
    for r in conf.itertuples():
        ax.plot([r.train_cost_s_first, r.train_cost_s_mean], [r.quality_first, r.quality_mean],
                color="tab:blue", lw=0.6, ls=":")
    if len(conf):
        ax.scatter(conf["train_cost_s_first"], conf["quality_first"], s=25, facecolors="none",
                   edgecolors="tab:blue", label="first seed alone")
    if len(front):
        f = front.sort_values("train_cost_s_mean")
        ax.step(f["train_cost_s_mean"], f["quality_mean"], where="post", color="crimson",
                lw=1.2, label="Pareto front of the means")
        for r in f.itertuples():
            ax.annotate(str(r.config), (r.train_cost_s_mean, r.quality_mean), fontsize=7,
                        xytext=(5, 5), textcoords="offset points")
    if reference is not None:
        ax.axhline(reference, ls="--", color="grey", lw=1)
        ax.annotate("real digits", (0.01, reference), xycoords=("axes fraction", "data"),
                    fontsize=7, color="grey", va="bottom")
    ax.set(xlabel="training seconds (mean over seeds)", ylabel=f"{quality_label} (mean)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("Configurations: mean ± std over seeds, with the front of the means")
    return fig


def fronts_overlay(configs: Mapping[str, pd.DataFrame], quality_label: str) -> Figure:
    """Several studies on one cost-quality plane: each study's configurations (mean ± std over
    seeds) and the Pareto front of its means, one colour per study."""
    fig, axes = _figure(1, 1, 7.2, 4.4)
    ax = axes[0, 0]
    palette = sns.color_palette("tab10", max(1, len(configs)))
    costs = []
    for colour, (name, c) in zip(palette, configs.items(), strict=False):
        if c.empty:
            continue
        std = c["quality_std"].fillna(0) if "quality_std" in c else None
        ax.errorbar(c["train_cost_s_mean"], c["quality_mean"], yerr=std, fmt="o", ms=5,
                    color=colour, alpha=0.6, capsize=2, lw=0.8)
        f = mean_front(c).sort_values("train_cost_s_mean")
        ax.step(f["train_cost_s_mean"], f["quality_mean"], where="post", color=colour, lw=1.6,
                label=f"{name} ({len(c)} configurations)")
        ax.scatter(f["train_cost_s_mean"], f["quality_mean"], s=90, facecolors="none",
                   edgecolors=colour)
        costs.append(c["train_cost_s_mean"])
    if costs:
        _log_if_wide(ax, pd.concat(costs))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    else:
        _empty(ax, "no successful configuration in any study")
    ax.set(xlabel="training seconds (mean over seeds)", ylabel=f"{quality_label} (mean)")
    fig.suptitle("Pareto fronts of the studies (circled: on the front; bars: ± std over seeds)")
    return fig


def anytime_chart(points: pd.DataFrame, highlight: Sequence[str] = (),
                  metric: str = "probe_judge_acc",
                  quality_label: str = "judge probe accuracy") -> Figure:
    """Quality against training seconds as each trial trained (the in-training probe after
    every epoch): the front's configurations in colour, the others grey; a trial's last point
    is an ✕ where it stopped early, a dot where it used its whole budget."""
    fig, axes = _figure(1, 1, 7.2, 4.0)
    ax = axes[0, 0]
    if points.empty:
        _empty(ax, "no per-epoch probe history")
        return fig
    palette = dict(zip(highlight, sns.color_palette("tab10", max(1, len(highlight))),
                       strict=False))
    for _, g in points.groupby("trial_id", sort=False):
        config = g["config"].iloc[0]
        colour = palette.get(config, "lightgrey")
        first = bool(g["first_seed"].iloc[0])
        label = f"{config}" if config in palette and first else None
        ax.plot(g["train_seconds"], g[metric], color=colour, lw=1.4 if first else 0.9,
                ls="-" if first else "--", marker=".", ms=4, label=label,
                zorder=3 if config in palette else 2)
        end = g[g["last"]].iloc[0]
        stopped = end["stop_reason"] in EARLY
        ax.scatter([end["train_seconds"]], [end[metric]], marker="X" if stopped else "o",
                   s=70 if stopped else 18, color="black" if stopped else colour, zorder=4)
    ax.scatter([], [], marker="X", s=70, color="black", label="stopped early here")
    ax.set(xlabel="training seconds so far", ylabel=quality_label)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1),
              title="front configs (dashed: other seeds)", title_fontsize=7)
    fig.suptitle("Anytime view: quality as training went on (would a stopped trial have won?)")
    return fig


def axis_heatmaps(df: pd.DataFrame, quality: str, cost: str = "train_cost_s") -> Figure:
    """Mean quality and mean cost by depth × width (number of trials in each cell annotated)."""
    fig, axes = _figure(1, 2, 4.6, 3.4)
    ok = df.dropna(subset=["depth", "width"])
    for ax, col, cmap in ((axes[0, 0], quality, "viridis"), (axes[0, 1], cost, "magma_r")):
        table = ok.pivot_table(index="depth", columns="width", values=col, aggfunc="mean")
        counts = ok.pivot_table(index="depth", columns="width", values="trial_id",
                                aggfunc="count").reindex_like(table)
        annot = table.map(lambda v: "" if pd.isna(v) else f"{v:.3g}") + \
            counts.map(lambda n: "" if pd.isna(n) else f"\n(n={int(n)})")
        if table.size and table.notna().any().any():
            sns.heatmap(table, annot=annot, fmt="", cmap=cmap, ax=ax, cbar=True,
                        annot_kws={"fontsize": 8})
        else:
            _empty(ax, f"no trials with {col}")
        ax.set_title(f"mean {_label(col)}")
    fig.suptitle("Depth × width")
    return fig


def axis_effects(df: pd.DataFrame, quality: str, cost: str = "train_cost_s") -> Figure:
    """Quality and cost against the learning rate, the continuous searched axis. (Guidance w is
    not searched: each model's own w, chosen after training, is in the guidance section; plotted
    here it would show the training cost "depending" on a knob chosen after it was spent.)"""
    fig, axes = _figure(1, 2, 4.4, 3.0)
    data = df.assign(model=_trial_hue(df))
    for j, y in enumerate((quality, cost)):
        sub = data.dropna(subset=["lr", y])
        sns.scatterplot(sub, x="lr", y=y, hue="model", s=50, ax=axes[0, j], legend=j == 1)
        _log_if_wide(axes[0, j], sub["lr"])
        axes[0, j].set(xlabel="learning rate", ylabel=_label(y))
    if axes[0, 1].get_legend() is not None:
        sns.move_legend(axes[0, 1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    fig.suptitle("Quality and cost vs learning rate")
    return fig


def importance_chart(imp: pd.DataFrame) -> Figure:
    """Optuna's importance of each searched axis, one bar group per objective."""
    fig, axes = _figure(1, 1, 6, 0.5 + 0.45 * max(1, imp["param"].nunique()))
    sns.barplot(imp, y="param", x="importance", hue="objective", ax=axes[0, 0], orient="h")
    axes[0, 0].set(xlim=(0, 1), xlabel="importance (fANOVA, sums to 1 per objective)", ylabel="")
    fig.suptitle("Hyperparameter importance (Optuna)")
    return fig


def guidance_curves(sweep: pd.DataFrame, metrics: Sequence[str]) -> Figure:
    """Each trial's guidance search: quality against w; the w it chose is marked with a star."""
    metrics = [m for m in metrics if m in sweep and sweep[m].notna().any()]
    fig, axes = _figure(1, max(1, len(metrics)), 4.2, 3.2)
    for ax, m in zip(axes[0], metrics, strict=False):
        sns.lineplot(sweep, x="guidance", y=m, hue="trial_id", marker="o", ax=ax,
                     legend=m == metrics[-1])
        if "chosen_guidance" in sweep:
            for _, g in sweep.groupby("trial_id"):
                w = g["chosen_guidance"].iloc[0]
                y = np.interp(w, g["guidance"], g[m])
                ax.scatter([w], [y], marker="*", s=140, color="black", zorder=5)
        ax.set(xlabel="guidance w", ylabel=_label(m))
    if metrics:  # beside the last panel, not over its curves
        sns.move_legend(axes[0, len(metrics) - 1], "upper left", bbox_to_anchor=(1.02, 1),
                        fontsize=7)
    else:
        _empty(axes[0, 0], "no guidance search metrics")
    fig.suptitle("Guidance tuned per trained model (★ = the w each trial's search chose)")
    return fig


def per_digit_chart(per_digit: pd.DataFrame, metrics: Sequence[str]) -> Figure:
    """Heatmaps trial × digit for each metric; the real-data row ('real') sits on top."""
    metrics = [m for m in metrics if m in per_digit and per_digit[m].notna().any()]
    n_rows = per_digit["trial_id"].nunique()
    fig, axes = _figure(1, max(1, len(metrics)), 5.0, 0.8 + 0.32 * n_rows)
    order = ["real"] + sorted(t for t in per_digit["trial_id"].unique() if t != "real")
    for ax, m in zip(axes[0], metrics, strict=False):
        table = per_digit.pivot_table(index="trial_id", columns="digit", values=m)
        table = table.reindex([t for t in order if t in table.index])
        sns.heatmap(table, annot=table.size <= 200, fmt=".2f", cmap="viridis", ax=ax,
                    annot_kws={"fontsize": 7}, cbar=True)
        ax.set(title=_label(m), xlabel="digit", ylabel="")
    if not metrics:
        _empty(axes[0, 0], "no per-digit metrics")
    fig.suptitle("Per digit (row 'real' = real validation digits: the ceiling)")
    return fig


def selection_gain_chart(gain: pd.DataFrame, k: int, n: int) -> Figure:
    """What top-k-of-n selection adds per digit: judge accuracy (judge's pick) and CLIP score
    (CLIP's pick, when CLIP ran)."""
    cols = [c for c in ("judge_gain", "clip_gain") if c in gain and gain[c].notna().any()]
    fig, axes = _figure(1, len(cols), 5.0, 3.0)
    titles = {"judge_gain": "judge accuracy: top-k by judge − all",
              "clip_gain": "CLIP score: top-k by CLIP − all"}
    for ax, c in zip(axes[0], cols, strict=True):
        sns.barplot(gain, x="digit", y=c, hue="trial_id", ax=ax, legend=c == cols[-1])
        ax.axhline(0, color="black", lw=0.8)
        ax.set(title=titles[c], ylabel="gain")
    fig.suptitle(f"Selection gain of top-{k} of {n} per digit")
    return fig


def training_curves(histories: pd.DataFrame) -> Figure:
    """Per-epoch train loss, EMA validation loss and the judge probe of every trial."""
    metrics = [m for m in ("train_loss", "val_loss", "probe_judge_acc")
               if m in histories and histories[m].notna().any()]
    fig, axes = _figure(1, max(1, len(metrics)), 4.0, 3.0)
    titles = {"train_loss": "train ε-MSE", "val_loss": "validation ε-MSE (EMA)",
              "probe_judge_acc": "judge probe accuracy"}
    for ax, m in zip(axes[0], metrics, strict=False):
        sns.lineplot(histories, x="epoch", y=m, hue="trial_id", marker="o", ax=ax,
                     legend=m == metrics[-1])
        ax.set(title=titles[m], ylabel="", yscale="linear" if m == "probe_judge_acc" else "log")
    if not metrics:
        _empty(axes[0, 0], "no training history")
    if axes[0, -1].get_legend() is not None:
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    fig.suptitle("Training curves")
    return fig


def recognisability_curve(conf: np.ndarray, labels: np.ndarray, threshold: float = 0.5,
                          steps: Mapping[int, float] | None = None,
                          no_digit: np.ndarray | None = None) -> Figure:
    """Mean judge confidence in the requested digit after each reverse step, per digit; the
    dotted line is the threshold, and `steps` (digit → mean first step) are marked. `no_digit`
    (S+1, N): the judge's probability of its "no digit" class, drawn as its mean (dashed)."""
    fig, axes = _figure(1, 1, 6.5, 3.4)
    ax = axes[0, 0]
    palette = sns.color_palette("tab10", 10)
    for d in np.unique(labels):
        mean = conf[:, labels == d].mean(axis=1)
        ax.plot(np.arange(len(mean)), mean, color=palette[int(d) % 10], label=str(int(d)))
        s = (steps or {}).get(int(d))
        if s is not None and np.isfinite(s):
            ax.axvline(s, color=palette[int(d) % 10], lw=0.6, ls=":")
    if no_digit is not None:
        ax.plot(np.arange(len(no_digit)), no_digit.mean(axis=1), color="black", ls="--", lw=1.5,
                label="no digit")
    ax.axhline(threshold, color="black", ls=":", lw=1)
    ax.set(xlabel=f"reverse step (0 = noise, {conf.shape[0] - 1} = final image)",
           ylabel="judge probability", ylim=(0, 1))
    ax.legend(title="digit", ncols=2, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("When does each digit become recognisable?")
    return fig


def _log_if_wide(ax, values: pd.Series) -> None:
    """Log x-axis for values spanning a decade or more; a narrower range keeps a linear axis
    (a log axis without a decade in it labels only its minor ticks, on top of each other)."""
    v = values[values > 0]
    if len(v) and v.max() >= 10 * v.min():
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(4))


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
