"""The study report: ``runs/<name>/report/index.html`` with its PNGs beside it, and a short
``summary.md``. Built from the study directory's files alone (no Ray, no cluster)::

    python -m analysis.report runs/<name>

``study/run.py`` builds it at the end of every study; ``analysis/cost_vs_quality.ipynb`` calls
the same functions interactively. A section whose inputs are missing (CLIP disabled, no
post-study sweep, every trial failed) says so instead of disappearing.
"""

from __future__ import annotations

import html
import json
import sys
import time
import traceback
from pathlib import Path

import pandas as pd

from analysis import charts, pictures, tables
from analysis.results import (
    CLIP_OFF,
    Study,
    StudyDirError,
    load_npz,
    load_samples,
    load_study,
    sample_picks,
)
from study.search_space import describe

REPORT_DIR = "report"
DPI = 100
#: (id, title) of every section, in order; tests check that each is present.
SECTIONS = [
    ("header", "Study"),
    ("cost-quality", "1. Cost vs quality"),
    ("effects", "2. Effects of the searched axes"),
    ("guidance", "3. Guidance"),
    ("per-digit", "4. Per digit"),
    ("pictures", "5. Pictures"),
    ("training", "6. Training curves, failed and stopped trials"),
]
_CSS = """body{font-family:sans-serif;max-width:1150px;margin:auto;padding:1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;
padding:2px 6px;text-align:right}th{background:#eee}img{max-width:100%;margin:.5em 0}
.warn{background:#fff3cd;border:2px solid #e0a800;padding:.6em;font-weight:bold}
.note{color:#555;font-style:italic}"""


class Page:
    """Collects the HTML of each section and writes figures as PNGs beside index.html."""

    def __init__(self, out: Path):
        self.out = out
        self.parts: dict[str, list[str]] = {sid: [] for sid, _ in SECTIONS}
        self.section = SECTIONS[0][0]
        self.images: list[Path] = []

    def html(self, text: str) -> None:
        self.parts[self.section].append(text)

    def text(self, text: str, cls: str | None = None) -> None:
        self.html(f"<p{f' class={cls!r}' if cls else ''}>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        self.text(text, "note")

    def warn(self, text: str) -> None:
        self.html(f"<div class='warn'>{html.escape(text)}</div>")

    def table(self, df: pd.DataFrame, caption: str = "") -> None:
        if caption:
            self.html(f"<h4>{html.escape(caption)}</h4>")
        if df.empty:
            self.note("(no rows)")
        else:
            self.html(df.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}",
                                 border=0))

    def figure(self, name: str, fig, caption: str = "") -> None:
        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        self.images.append(path)
        self.html(f"<figure><img src='{path.name}' alt='{html.escape(name)}'>"
                  f"<figcaption class='note'>{html.escape(caption)}</figcaption></figure>")

    def render(self, title: str) -> str:
        body = [f"<section id='{sid}'><h2>{html.escape(t)}</h2>{''.join(self.parts[sid])}"
                f"</section>" for sid, t in SECTIONS]
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
                f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
                + "\n".join(body) + "</body></html>")


def build_report(study_dir: Path | str) -> Path:
    """Write report/index.html (+ PNGs) and report/summary.md; returns the index.html path."""
    study = load_study(study_dir)
    out = study.path / REPORT_DIR
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):  # no stale figure survives a rebuild
        old.unlink()
    page = Page(out)
    for (sid, _), draw in zip(SECTIONS, (header, cost_vs_quality, effects, guidance, per_digit,
                                         pictures_section, training), strict=True):
        page.section = sid
        try:
            draw(page, study)
        except Exception as e:  # one broken chart must not cost the rest of the report
            page.warn(f"This section could not be drawn: {type(e).__name__}: {e}")
            page.html(f"<pre>{html.escape(traceback.format_exc(limit=3))}</pre>")
    index = out / "index.html"
    index.write_text(page.render(f"Diffusion study {study.name}"))
    (out / "summary.md").write_text(summary(study))
    return index


def header(page: Page, study: Study) -> None:
    s, facts = study.spec, study.record
    for n in study.notes:
        if n == CLIP_OFF:
            page.warn(n)
        else:
            page.note(n)
    if study.clip_configured and not study.clip_enabled:
        page.warn("CLIP was configured but no trial has a CLIP score.")
    settings = {"name": study.name, "directory": str(study.path), "preset": s.get("preset"),
                "trials requested": s.get("num_trials"), "quality": study.quality_metric,
                "CLIP": facts.get("clip_description") or "disabled",
                "data": facts.get("data_description"), "judge validation accuracy":
                facts.get("judge_val_acc"), "search space": json.dumps(s.get("space")),
                "evaluation": json.dumps(s.get("evaluation")), "seed": s.get("seed"),
                "workers per trial": s.get("workers_per_trial"),
                "base diffusion / sampler": json.dumps({**s.get("base", {}).get("diffusion", {}),
                                                        **s.get("base", {}).get("sample", {})}),
                "base training": json.dumps(s.get("base", {}).get("train")),
                "report built": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    page.table(_kv(settings), "Configuration")
    page.table(_kv(facts.get("versions") or {}), "Versions")
    page.table(_kv(facts.get("machine") or {}), "Machine")
    cost = tables.total_cost(study.results)
    cost["post_study_s"] = (study.post or {}).get("seconds")
    page.table(pd.DataFrame([cost]), "Total cost (all trials; post_study_s = guidance sweep and "
                                     "trajectories after the study)")
    ref = tables.reference_table(study)
    if ref.empty:
        page.note("No real-data reference row (reference.json missing).")
    else:
        page.table(ref, "Real-data reference row (same protocol) next to the best trial")


def cost_vs_quality(page: Page, study: Study) -> None:
    ok = study.ok.dropna(subset=["quality"])
    if ok.empty:
        page.warn("No successful trial: there is nothing to plot (see section 6 for reasons).")
        return
    qs = tables.qualities(study)
    costs = [c for c in tables.COSTS if ok[c].notna().any()]
    fronts = tables.fronts(ok, qs, costs)
    page.figure("cost_quality", charts.cost_quality(ok, qs, costs, fronts, study.reference),
                "Every successful trial; Pareto front in red (ties kept).")
    page.table(tables.front_table(study), f"Pareto front: {study.quality_metric} up, training "
                                          "seconds down (first-seed trials)")
    member = pd.DataFrame({"trial_id": ok["trial_id"]})
    for (q, c), f in fronts.items():
        member[f"{q} vs {c}"] = ok["trial_id"].isin(f["trial_id"]).map({True: "●", False: ""})
    page.table(member, "Front membership in each view")


def effects(page: Page, study: Study) -> None:
    ok = study.ok.dropna(subset=["quality"])
    if ok.empty:
        page.note("No successful trial.")
    else:
        page.figure("depth_width", charts.axis_heatmaps(ok, study.quality_metric),
                    "Mean over trials in each cell.")
        page.figure("lr_guidance", charts.axis_effects(ok, study.quality_metric))
    imp, why = tables.importances(study)
    if imp is not None:
        page.figure("importance", charts.importance_chart(imp),
                    "Optuna fANOVA importance for each objective.")
    if why:
        page.note(f"Hyperparameter importance: {why}.")


def guidance(page: Page, study: Study) -> None:
    sweep = study.guidance_sweep
    if sweep is None:
        page.note("No guidance sweep: run `python -m study.post <study dir>` where the "
                  "checkpoints are (it runs automatically at the end of a study).")
        return
    metrics = (["clip_top"] if study.clip_enabled else []) + ["judge_acc", "frechet"]
    page.figure("guidance", charts.guidance_curves(sweep, metrics),
                "Same evaluation noise at every w; accuracy usually rises with w while the "
                "Fréchet distance is U-shaped (too little guidance: wrong digits; too much: "
                "distorted ones).")
    best = sweep.loc[sweep.groupby("trial_id")["judge_acc"].idxmax(),
                     ["trial_id", "trained_guidance", "guidance", "judge_acc"]]
    best_f = sweep.loc[sweep.groupby("trial_id")["frechet"].idxmin(),
                       ["trial_id", "guidance", "frechet"]]
    page.table(best.merge(best_f, on="trial_id", suffixes=("_best_acc", "_best_frechet")),
               "Best w per trial by judge accuracy and by Fréchet distance")
    cols = [c for c in ("trial_id", "guidance", "judge_acc", "judge_conf", "frechet",
                        "clip_top", "clip_all") if c in sweep and sweep[c].notna().any()]
    page.table(sweep[cols], "Guidance sweep")


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
    page.table(gain, f"Selection gain of top-{study.top_k} of {study.n_per_digit}")


def pictures_section(page: Page, study: Study) -> None:
    k = study.top_k
    shown = (list(study.sample_scores["trial_id"].astype(str).unique())
             if study.sample_scores is not None else
             list(study.best(study.quality_metric, 2)["trial_id"]))
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
    if not shown:
        page.note("No trial samples to show.")
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
    page.figure("recognisable", charts.recognisability_curve(traj["conf"], traj["conf_labels"],
                                                             steps=steps),
                "Measured, not judged by eye: the first reverse step where the judge's "
                "confidence in the requested digit passes 0.5, averaged over samples.")
    if rec is not None:
        sampler = rec["sampler"].iloc[0] if "sampler" in rec else "the evaluation sampler"
        page.text(f"Steps are {sampler} steps of each trial's own evaluation sampler.")
        fooled = rec[rec.get("noise_conf", pd.Series(0.0, index=rec.index)) > 0.5]
        if len(fooled):
            page.warn("The judge already reads pure noise (step 0) as digit(s) "
                      f"{', '.join(map(str, sorted(fooled['digit'].unique())))}: their "
                      "recognisable step says nothing about the sampler.")
        page.table(rec.pivot_table(index="digit", columns="trial_id",
                                   values=["mean_first_step", "frac_pass"]).reset_index()
                   .pipe(_flat), f"Recognisable step per digit (of {int(traj['total_steps'])})")


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


def _kv(d: dict) -> pd.DataFrame:
    return pd.DataFrame({"setting": list(d), "value": [str(v) for v in d.values()]})


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    df.columns = [" ".join(str(p) for p in c if p) if isinstance(c, tuple) else c
                  for c in df.columns]
    return df


def summary(study: Study) -> str:
    """A short Markdown summary: counts, CLIP status, cost, best trial, front, failures."""
    cost = tables.total_cost(study.results)
    lines = [f"# Study {study.name}", ""]
    if not study.clip_configured:
        lines += ["**CLIP DISABLED**: quality is the judge's conditional accuracy; CLIP "
                  "columns are absent.", ""]
    elif not study.clip_enabled:
        lines += ["**No CLIP scores**: CLIP was configured but no trial was scored by it.", ""]
    lines += [f"- trials: {cost['trials']} ({cost['ok']} ok, {cost['failed']} failed)",
              f"- quality metric: `{study.quality_metric}`",
              f"- total training time {cost['training_s']:.0f} s, trial wall time "
              f"{cost['trial_wall_s']:.0f} s, worker time {cost['worker_s']:.0f} s, GPU time "
              f"{cost['gpu_s']:.0f} s, training compute {cost['train_gflops']:.4g} GFLOPs"]
    if study.reference:
        lines.append(f"- real digits (reference): judge accuracy "
                     f"{study.reference.get('judge_acc', float('nan')):.3f}"
                     + (f", CLIP-top-{study.top_k} {study.reference['clip_top']:.2f}"
                        if study.reference.get("clip_top") is not None else ""))
    best = study.best(study.quality_metric)
    if len(best):
        b = best.iloc[0]
        lines.append(f"- best trial {b['trial_id']}: {describe(b)} → {study.quality_metric} "
                     f"{b[study.quality_metric]:.3f}, "
                     + ("" if study.quality_metric == "judge_acc" else
                        f"judge accuracy {b['judge_acc']:.3f}, ") +
                     f"Fréchet {b['frechet']:.1f}, training {b['train_cost_s']:.0f} s")
    else:
        lines.append("- **no successful trial**")
    lines += ["", "## Pareto front (quality up, training seconds down)", "",
              tables.to_markdown(tables.front_table(study)) if len(best) else "_(none)_"]
    if study.recognisable is not None and len(best):
        r = study.recognisable
        r = r[r["trial_id"].astype(str) == str(r["trial_id"].iloc[0])]
        lines += ["", f"## Recognisable step per digit (trial {r['trial_id'].iloc[0]})", "",
                  tables.to_markdown(r[[c for c in ("digit", "mean_first_step", "frac_pass",
                                                    "total_steps", "noise_conf") if c in r]])]
    fails = tables.failures(study.results, study.axes)
    lines += ["", "## Failed and stopped trials", "",
              tables.to_markdown(fails[["trial_id", "status", "stop_reason", "error"]])
              if len(fails) else "None: every trial completed its budget."]
    notes = [n for n in study.notes if n != CLIP_OFF]  # said in bold at the top
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += ["", "Full report: [index.html](index.html)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m analysis.report runs/<name>", file=sys.stderr)
        return 2
    try:
        index = build_report(Path(args[0]))
    except StudyDirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
