"""Compare studies on one static page: "did my change help?", "CPU vs GPU?".

    python -m analysis.compare runs/a runs/b [runs/c …] [--out DIR]

writes DIR/index.html (default: ``compare-<a>-vs-<b>…/`` beside the first study) with its PNGs:
each study's answer in a sentence, their Pareto fronts overlaid, the best configurations side by
side (with ± over seeds), their samples, and a table of the settings that differ (preset, data,
search space, CLIP, versions, machine, sizing). The first study is the baseline the others are
measured against. Built from the study directories' files alone, like the report. A bad
argument is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import charts, pictures, tables
from analysis.page import Page, pm
from analysis.results import Study, StudyDirError, load_samples, load_study
from analysis.summary import best_sentence, config_table
from study.layout import is_plain
from study.search_space import describe

SECTIONS = [("answer", "The answer"), ("fronts", "1. Fronts"),
            ("best", "2. The best configurations side by side"),
            ("settings", "3. Settings that differ")]
#: Spec fields that name or place a study rather than define it: never a "difference".
_PLACE = {"spec.name", "spec.study_dir", "spec.storage", "spec.tune_storage", "spec.address",
          "study_token", "data_fingerprint"}
ABSENT = "(absent)"  # a setting one study's study.json does not hold
#: The best configuration's rows shown side by side: (column prefix, label, format).
_BEST_ROWS = [("quality", None, ".3f"), ("judge_acc", "judge accuracy", ".3f"),
              ("recall", "recall", ".3f"), ("precision", "precision", ".3f"),
              ("clip_top", "CLIP-top-k", ".2f"), ("train_cost_s", "training s", ".1f"),
              ("trial_wall_s", "trial wall s", ".1f"), ("train_gflops", "training GFLOPs", ".3g")]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise StudyDirError(f"{message}; see python -m analysis.compare --help")


def parse_args(argv) -> argparse.Namespace:
    p = _Parser(prog="python -m analysis.compare", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("studies", nargs="+", type=Path, help="study directories (runs/<name>), "
                   "the first being the baseline")
    p.add_argument("--out", type=Path, help="folder of the page (default: compare-<a>-vs-<b>… "
                   "beside the first study)")
    args = p.parse_args(argv)
    if len(args.studies) < 2:
        raise StudyDirError("give at least two study directories to compare")
    if len({s.resolve() for s in args.studies}) < len(args.studies):
        raise StudyDirError("a study directory is given twice")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise StudyDirError(f"--out {args.out} is a file, not a folder")
    return args


def build_compare(study_dirs, out: Path | None = None) -> Path:
    """Write the comparison page of `study_dirs` (the first is the baseline); its path."""
    studies = [load_study(d) for d in study_dirs]
    names = _names(studies)
    out = Path(out) if out is not None else \
        studies[0].path.parent / ("compare-" + "-vs-".join(names))[:120]
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    page = Page(out, SECTIONS)
    configs = {n: tables.configurations(s.ok, s.axes) for n, s in zip(names, studies,
                                                                       strict=True)}
    page.section = "answer"
    for name, study in zip(names, studies, strict=True):
        page.text(f"{name}: " + (best_sentence(study, configs[name]) or "no successful trial."))
    for line in _against_baseline(names, studies, configs):
        page.text(line)
    metrics = {s.quality_metric for s in studies}
    if len(metrics) > 1:
        page.warn(f"The studies measure quality differently ({', '.join(sorted(metrics))}): "
                  "their quality axes are not comparable.")

    page.section = "fronts"
    label = tables.QUALITY_LABELS.get(studies[0].quality_metric, studies[0].quality_metric)
    page.figure("fronts", charts.fronts_overlay(configs, label),
                "Each study's configurations at the mean of their seeds; the staircase is its "
                "Pareto front (quality up, training seconds down).")
    for name, study in zip(names, studies, strict=True):
        page.table(config_table(tables.mean_front(configs[name]), study),
                   f"{name}: its front (mean ± std over seeds)")

    page.section = "best"
    page.table(_best_side_by_side(names, studies, configs),
               "Each study's best configuration for its cost (mean ± std over seeds)")
    thumbs = []
    for name, study in zip(names, studies, strict=True):
        best = tables.best_trial(study)
        loaded = load_samples(study, best) if best else None
        if loaded is not None:
            thumbs.append((f"best_{name}", pictures.grid_array(*loaded), f"{name}: {best}"))
    if thumbs:
        page.text("Their evaluation samples (a row per digit):")
        page.thumbnails(thumbs)

    page.section = "settings"
    facts = pd.DataFrame({n: _flat(s) for n, s in zip(names, studies, strict=True)}) \
        .fillna(ABSENT)
    differ = facts[facts.nunique(axis=1) > 1]
    if differ.empty:
        page.text("No setting differs: the studies ran with the same options, versions and "
                  "machine.")
    else:
        page.table(differ.rename_axis("setting").reset_index(),
                   f"{len(differ)} settings differ (preset, data, search space, CLIP, "
                   "versions, machine, sizing)")
    with page.details("Every setting"):
        page.table(facts.rename_axis("setting").reset_index())
    return page.write("Comparing " + ", ".join(names))


def _names(studies: list[Study]) -> list[str]:
    """Each study's name, made unique and plain (used in file names)."""
    out = []
    for i, s in enumerate(studies):
        name = s.name if is_plain(s.name) else f"study{i + 1}"
        out.append(name if name not in out else f"{name}-{i + 1}")
    return out


def _against_baseline(names, studies, configs) -> list[str]:
    """One sentence per study after the first: its best against the baseline's best."""
    verdicts = [tables.best_for_cost(configs[n]) for n in names]
    base = verdicts[0]
    lines = []
    for name, study, v in zip(names[1:], studies[1:], verdicts[1:], strict=True):
        if base is None or v is None:
            continue
        b, a = v["best"], base["best"]
        gain = b["quality_mean"] - a["quality_mean"]
        # a one-seed side's spread taken to be the other's, as tables.best_for_cost does
        stds = [x for x in (a.get("quality_std"), b.get("quality_std")) if pd.notna(x)]
        spread = float(np.hypot(stds[0], stds[-1])) if stds else None
        ratio = b["train_cost_s_mean"] / a["train_cost_s_mean"] if a["train_cost_s_mean"] \
            else float("nan")
        word = ("within the seeds' spread" if spread is not None and abs(gain) <= spread
                else "higher" if gain > 0 else "lower" if gain < 0 else "the same")
        lines.append(f"Against {names[0]}: {name}'s best reaches {study.quality_metric} "
                     f"{pm(b['quality_mean'], b.get('quality_std'))} vs "
                     f"{pm(a['quality_mean'], a.get('quality_std'))} "
                     f"({pm(gain, spread, '+.3f')}, {word}) for "
                     f"{ratio:.2f}× the training seconds.")
    return lines


def _best_side_by_side(names, studies, configs) -> pd.DataFrame:
    cols = {}
    for name, study in zip(names, studies, strict=True):
        v = tables.best_for_cost(configs[name])
        if v is None:
            cols[name] = {"configuration": "no successful trial"}
            continue
        b = v["best"]
        col = {"configuration": describe(b), "trial": b["config"], "seeds": int(b["n"])}
        for prefix, label, fmt in _BEST_ROWS:
            if f"{prefix}_mean" in b:
                col[label or study.quality_metric] = pm(b[f"{prefix}_mean"],
                                                        b.get(f"{prefix}_std"), fmt)
        row = study.ok[study.ok["trial_id"] == b["config"]]
        for c in ("images_per_s", "gpu_seconds", "params"):
            if len(row) and pd.notna(row[c].iloc[0]):
                col[c] = f"{row[c].iloc[0]:.4g}"
        cols[name] = col
    return pd.DataFrame(cols).fillna("").rename_axis("").reset_index()


def _flat(study: Study) -> dict[str, str]:
    """study.json as setting → value text, nested keys joined by dots."""
    out: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif prefix not in _PLACE:
            out[prefix] = str(value)

    walk("", study.record)
    out["trials run"] = str(len(study.results))
    return out


def main(argv=None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        page = build_compare(args.studies, args.out)
    except StudyDirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"comparison: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
