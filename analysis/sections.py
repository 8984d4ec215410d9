"""The report's sections after its answer: one function per section, each drawing on a ``Page``
from a ``Study`` (analysis/report.py calls them in order, so one that fails costs only itself).
A section whose inputs are missing says so instead of disappearing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import charts, pictures, tables
from analysis.page import Page
from analysis.results import (
    Study,
    load_npz,
    load_progress,
    load_samples,
    sample_picks,
)
from analysis.summary import config_table
from study.search_space import describe

#: Trials whose per-epoch sample grids the report shows (the best configurations' first seeds).
PROGRESS_TRIALS = 3


def cost_vs_quality(page: Page, study: Study) -> None:
    ok = study.ok.dropna(subset=["quality"])
    if ok.empty:
        page.warn("No successful trial: there is nothing to plot (see the failed trials).")
        return
    label = tables.QUALITY_LABELS.get(study.quality_metric, study.quality_metric)
    configs = tables.configurations(ok, study.axes)
    front = tables.mean_front(configs)
    ref = (study.reference or {}).get(study.quality_metric)
    page.figure("front_errorbars", charts.front_errorbars(configs, front, label, ref),
                "Each configuration at the mean of its seeds, ± one std (error bars where it "
                "was confirmed with more seeds); dotted lines join a first seed to its mean. "
                "Triangles: the first seed was stopped early (by ASHA, early stopping or the "
                "trial's time budget), so its point may understate what the configuration reaches "
                "with more training.")
    page.table(config_table(front, study), "Pareto front of the configurations (mean ± std "
                                           "over seeds; sort any column of the full table "
                                           "below)")
    page.table(config_table(configs, study), "Every configuration", sortable=True)
    points = tables.anytime(study.histories, study.results)
    page.figure("anytime", charts.anytime_chart(points, list(front["config"])),
                "Budget honesty: the in-training probe (judge accuracy of a few samples at the "
                "best of 3 w, after every epoch) against the training seconds spent so far. "
                "A curve that ends in a black ✕ was stopped early; if it was still rising above "
                "the front's curves at that cost, more budget might have made it win.")
    qs = tables.qualities(study)
    costs = [c for c in tables.COSTS if ok[c].notna().any()]
    fronts = tables.fronts(ok, qs, costs)
    with page.details("Every run in each view (quality and cost pairs), and front membership"):
        page.figure("cost_quality", charts.cost_quality(ok, qs, costs, fronts, study.reference),
                    "Every successful run (seeds apart); Pareto front in red (ties kept).")
        member = pd.DataFrame({"trial_id": ok["trial_id"]})
        for (q, c), f in fronts.items():
            member[f"{q} vs {c}"] = ok["trial_id"].isin(f["trial_id"]).map({True: "●",
                                                                            False: ""})
        page.table(member, "Front membership in each view")


def trials(page: Page, study: Study) -> None:
    table = tables.trial_costs(study.results, study.axes)
    if table.empty:
        page.note("No trial has finished yet.")
        return
    page.table(table, "Every trial and its cost (click a column to sort): training and wall "
                      "seconds, worker- and GPU-seconds, start-up, images/s, sampling seconds "
                      "per image, FLOPs", sortable=True)
    thumbs = []
    for row in study.results.itertuples():
        loaded = load_samples(study, row.trial_id)
        if loaded is not None:
            q = "" if pd.isna(row.quality) else f", {study.quality_metric} {row.quality:.3f}"
            thumbs.append((f"thumb_{row.trial_id}", pictures.grid_array(*loaded),
                           f"{row.trial_id}: {describe(row._asdict())}{q}"))
    if thumbs:
        page.text("Every trial's evaluation samples (a row per digit, fixed evaluation noise):")
        page.thumbnails(thumbs)
    else:
        page.note("No trial samples to show.")


def effects(page: Page, study: Study) -> None:
    ok = study.ok.dropna(subset=["quality"])
    # a trial ASHA stopped measured its configuration after a few epochs, not at the budget:
    # averaged in, it would pull a configuration's cell down by when it was stopped
    trained = ok[ok["stop_reason"] != "asha"]
    stopped = len(ok) - len(trained)
    left_out = f" ({stopped} ASHA-stopped trial(s) left out)" if stopped else ""
    if trained.empty:
        page.note("No trial trained to its budget." if len(ok) else "No successful trial.")
    else:
        page.figure("depth_width", charts.axis_heatmaps(trained, study.quality_metric),
                    f"Mean over the runs in each cell that trained to their budget{left_out}.")
        page.figure("lr_effects", charts.axis_effects(trained, study.quality_metric),
                    f"Runs that trained to their budget{left_out}.")
    imp, why = tables.importances(study)
    if imp is not None:
        page.figure("importance", charts.importance_chart(imp),
                    "Optuna fANOVA importance for each objective.")
    if why:
        page.note(f"Hyperparameter importance: {why}.")


def guidance(page: Page, study: Study) -> None:
    sweep = study.guidance_sweep
    if sweep is None:
        page.note("No guidance curves: run `python -m study.post <study dir>` (it runs "
                  "automatically at the end of a study).")
        return
    metrics = [study.quality_metric, "judge_acc", "recall"]
    page.figure("guidance", charts.guidance_curves(sweep, metrics),
                "Each trained model's w is searched on the same evaluation noise at every w: "
                "judge accuracy rises with w while coverage peaks and falls (too little "
                "guidance: wrong digits; too much: the same few digits over and over).")
    q = study.quality_metric if study.quality_metric in sweep else "judge_acc"
    cols = [c for c in ("trial_id", "guidance", q, "judge_acc", "recall") if c in sweep]
    at = pd.to_numeric(sweep["chosen_guidance"], errors="coerce") \
        if "chosen_guidance" in sweep else pd.Series(np.nan, index=sweep.index)
    chosen = sweep[np.isclose(sweep["guidance"], at)]  # the w each trial was evaluated at
    # the search scores cheap samples (fewer DDIM steps); the trial's quality is its full
    # evaluation at the chosen w: both, side by side, so neither number looks like a typo
    evaluated = study.ok[["trial_id", "quality"]].rename(columns={"quality": f"evaluated {q}"})
    search = study.spec.get("guidance") or {}
    how = f" (DDIM-{search['steps']}, {search['n_per_digit']} per digit)" \
        if {"steps", "n_per_digit"} <= set(search) else ""
    page.table(chosen[cols].merge(evaluated, on="trial_id", how="left"),
               f"The w each trial's search chose, what its search samples{how} scored there, "
               f"and the trial's {q} from its full evaluation at that w (the study's sampler)")
    cols = [c for c in ("trial_id", "guidance", q, "precision", "recall", "judge_acc",
                        "judge_no_digit") if c in sweep and sweep[c].notna().any()]
    with page.details("Every point of every guidance search"):
        page.table(sweep[cols], sortable=True)


def per_digit(page: Page, study: Study) -> None:
    long = tables.per_digit_long(study)
    if long.empty:
        page.note("No per-digit tables (trials/<id>/per_digit.csv).")
        return
    metrics = ["judge_acc", "judge_conf"] + (["clip_top", "clip_all"] if study.clip_enabled
                                             else [])
    page.figure("per_digit", charts.per_digit_chart(long, metrics))
    gen = long[long["trial_id"] != "real"]
    if len(gen):
        easy = gen.groupby("digit")["judge_acc"].mean().sort_values(ascending=False)
        page.text(f"Easiest digits (mean judge accuracy over trials): "
                  f"{', '.join(f'{d} ({v:.2f})' for d, v in easy.head(3).items())}; hardest: "
                  f"{', '.join(f'{d} ({v:.2f})' for d, v in easy.tail(3)[::-1].items())}.")
    if not study.clip_enabled:
        page.warn("No CLIP scores: no per-digit CLIP scores and no CLIP ceiling on real digits.")
    if study.sample_scores is None:
        page.note("No per-sample scores (analysis/sample_scores.csv): selection gain not shown.")
        return
    gain = tables.selection_gain(study.sample_scores, study.top_k)
    page.figure("selection_gain", charts.selection_gain_chart(gain, study.top_k,
                                                              study.n_per_digit))
    with page.details(f"Selection gain of top-{study.top_k} of {study.n_per_digit}, per digit"):
        page.table(gain, sortable=True)


def pictures_section(page: Page, study: Study) -> None:
    k = max(1, min(study.top_k, study.n_per_digit // 2))  # the worst and best never overlap
    configs = tables.configurations(study.ok, study.axes)
    best = list(configs["config"].head(PROGRESS_TRIALS)) if len(configs) else []
    for trial_id in best[:2]:
        loaded = load_samples(study, trial_id)
        if loaded is not None:
            images, labels = loaded
            page.figure(f"worst_best_{trial_id}", pictures.worst_and_best(
                images, labels, sample_picks(study, trial_id)["judge"], k,
                f"Trial {trial_id}: the {k} worst (top) and {k} best (bottom) of "
                f"{study.n_per_digit} per digit"),
                "Scored by the judge's confidence in the requested digit: what the worst "
                "samples look like shows how this model fails.")
    shown = [t for t in best if load_progress(study, t) is not None]
    for trial_id in shown:
        page.figure(f"progress_{trial_id}", pictures.progress_grid(
            load_progress(study, trial_id),
            title=f"Trial {trial_id}: probe samples after each epoch (same noise every epoch)"))
    if best and not shown:
        page.note("No per-epoch samples (trials/<id>/progress.npz) for the best trials.")
    top_k_picks(page, study)
    style = load_npz(study.layout.post.style)
    if style is not None:
        page.figure("style_grids", pictures.style_grids(
            style, f"Trial {style['trial_id']}: requested slant and thickness"),
                    "Standard scores of the training digits' slant and thickness; each row "
                    "keeps its noise, so only the requested style changes.")
    elif study.results.get("style", pd.Series(dtype=object)).astype(str).isin(
            ["True", "1", "1.0"]).any():
        page.note("Style trials ran but no style grids were made (analysis/style_grids.npz): "
                  "run `python -m study.post <study dir>`.")
    reverse_process(page, study)


def top_k_picks(page: Page, study: Study) -> None:
    k = study.top_k
    shown = (list(study.sample_scores["trial_id"].astype(str).unique())
             if study.sample_scores is not None else [])
    for trial_id in shown:
        loaded = load_samples(study, trial_id)
        if loaded is None:
            continue
        images, labels = loaded
        picks = sample_picks(study, trial_id)
        page.figure(f"top{k}_{trial_id}", pictures.top_k_grids(
            images, labels, picks, k, f"Trial {trial_id}: top {k} of {study.n_per_digit} per "
                                      f"digit"),
                    "Each image titled with its score (CLIP score, or judge confidence in the "
                    "requested digit)." + ("" if "CLIP" in picks else
                                           " CLIP scores absent: the judge's pick only."))


def reverse_process(page: Page, study: Study) -> None:
    real = load_npz(study.layout.post.real_digits)
    diffusion = study.spec.get("base", {}).get("diffusion", {})
    if real is not None and diffusion:
        page.figure("noise_progression", pictures.noise_progression(
            real["images"], diffusion["timesteps"], diffusion.get("schedule", "linear")))
    else:
        page.note("No real digits saved (analysis/real_digits.npz): forward process not shown.")
    traj = load_npz(study.layout.post.trajectory)
    if traj is None:
        page.note("No reverse trajectory (analysis/trajectory.npz): generation steps not shown.")
        return
    rec = study.recognisable
    mine = rec[rec["trial_id"].astype(str) == str(traj["trial_id"])] if rec is not None else None
    page.figure("generation_steps", pictures.generation_steps(traj))
    steps = dict(zip(mine["digit"], mine["mean_first_step"], strict=True)) if mine is not None \
        else None
    page.figure("recognisable", charts.recognisability_curve(
        traj["conf"], traj["conf_labels"], steps=steps, no_digit=traj.get("no_digit")),
                "Measured, not judged by eye: the first reverse step where the judge's "
                "confidence in the requested digit passes 0.5, averaged over samples. The "
                "judge has a 'no digit' class: the dashed line is its mean probability, high "
                "while the image is still noise.")
    if rec is None:
        return
    sampler = rec["sampler"].iloc[0] if "sampler" in rec else "the evaluation sampler"
    page.text(f"Steps are {sampler} steps of each trial's own evaluation sampler.")
    if "noise_no_digit" in rec:
        page.text(f"At step 0 (pure noise) the judge reads {rec['noise_no_digit'].mean():.0%} "
                  "of the samples as 'no digit': noise is not read as a digit, so a step at "
                  "which the requested digit passes 0.5 is where the digit appeared.")
    fooled = rec[rec.get("noise_conf", pd.Series(0.0, index=rec.index)) > 0.5]
    if len(fooled):
        page.warn("The judge already reads pure noise (step 0) as digit(s) "
                  f"{', '.join(map(str, sorted(fooled['digit'].unique())))}: their "
                  "recognisable step says nothing about the sampler.")
    table = rec.pivot_table(index="digit", columns="trial_id",
                            values=["mean_first_step", "frac_pass"]).reset_index()
    table.columns = [" ".join(str(p) for p in c if p) if isinstance(c, tuple) else c
                     for c in table.columns]
    page.table(table, f"Recognisable step per digit (of {int(traj['total_steps'])})")


def training(page: Page, study: Study) -> None:
    if len(study.histories):
        page.figure("training_curves", charts.training_curves(study.histories))
    else:
        page.note("No training histories found (trials/<id>/outcome.json).")
    fails = tables.failures(study.results, study.axes)
    if study.results.empty:
        page.warn("No trial has finished yet.")
    elif fails.empty:
        page.text("Every trial completed its budget.")
    else:
        n_failed = int((fails["status"] != "ok").sum())
        if n_failed:
            page.warn(f"{n_failed} trial(s) FAILED; reasons below.")
        page.table(fails, "Failed and stopped trials (stop_reason: time_budget / step_budget / "
                          "early_stop / asha / diverged / error)")
