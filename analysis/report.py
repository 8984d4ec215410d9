"""The study report: ``runs/<name>/report/index.html`` with its PNGs beside it, and a short
``summary.md``. Built from the study directory's files alone (no Ray, no cluster)::

    python -m analysis.report runs/<name>

Its top answers the study's question in one sentence with numbers (analysis/summary.py); the
sections below (analysis/sections.py) show the evidence. ``study/run.py`` builds it at the end
of every study; ``analysis/cost_vs_quality.ipynb`` calls the same functions interactively. A
section whose inputs are missing (CLIP disabled, no post-study inputs, every trial failed) says
so instead of disappearing.
"""

from __future__ import annotations

import html
import json
import sys
import time
import traceback
from pathlib import Path

import pandas as pd

from analysis import sections, tables
from analysis.page import Page
from analysis.results import CLIP_OFF, Study, StudyDirError, load_study
from analysis.summary import answer, summary

__all__ = ["SECTIONS", "build_report", "Page", "main"]

#: (id, title) of every section, in order; tests check that each is present.
SECTIONS = [
    ("answer", "The answer"),
    ("cost-quality", "1. Cost vs quality, with seeds and budgets"),
    ("trials", "2. Every trial: cost table and samples"),
    ("effects", "3. Effects of the searched axes"),
    ("guidance", "4. Guidance"),
    ("per-digit", "5. Per digit"),
    ("pictures", "6. Pictures: worst and best, growth per epoch, style, reverse process"),
    ("training", "7. Training curves, failed and stopped trials"),
    ("settings", "8. Settings, versions, machine and total cost"),
]


def build_report(study_dir: Path | str) -> Path:
    """Write report/index.html (+ PNGs) and report/summary.md; returns the index.html path."""
    study = load_study(study_dir)
    out = study.layout.report
    out.root.mkdir(exist_ok=True)
    for old in out.root.glob("*.png"):  # no stale figure survives a rebuild
        old.unlink()
    page = Page(out.root, SECTIONS)
    draws = (answer_section, sections.cost_vs_quality, sections.trials, sections.effects,
             sections.guidance, sections.per_digit, sections.pictures_section,
             sections.training, settings)
    for (sid, _), draw in zip(SECTIONS, draws, strict=True):
        page.section = sid
        try:
            draw(page, study)
        except Exception as e:  # one broken chart must not cost the rest of the report
            page.warn(f"This section could not be drawn: {type(e).__name__}: {e}")
            page.html(f"<pre>{html.escape(traceback.format_exc(limit=3))}</pre>")
    index = page.write(f"Diffusion study {study.name}", out.index.name)
    out.summary.write_text(summary(study))
    return index


def answer_section(page: Page, study: Study) -> None:
    """The answer at a glance, then what the reader must know before trusting it."""
    sentences = answer(study)
    page.html("<div class='answer'>" + "".join(f"<p>{html.escape(s)}</p>" for s in sentences)
              + "</div>")
    for n in study.notes:
        if n == CLIP_OFF:
            page.warn(n)
        else:
            page.note(n)
    if study.clip_configured and not study.clip_enabled:
        page.warn("CLIP was configured but no trial has a CLIP score.")
    ref = tables.reference_table(study)
    if not ref.empty:
        page.table(ref, "Real-data reference row (same protocol) next to the best trial")


def settings(page: Page, study: Study) -> None:
    s, facts = study.spec, study.record
    table = {"name": study.name, "directory": str(study.path), "preset": s.get("preset"),
             "trials requested": s.get("num_trials"), "quality": study.quality_metric,
             "headline": study.headline_metric,
             "CLIP": facts.get("clip_description") or "disabled",
             "data": facts.get("data_description"), "judge validation accuracy":
             facts.get("judge_val_acc"), "search space": json.dumps(s.get("space")),
             "evaluation": json.dumps(s.get("evaluation")), "seed": s.get("seed"),
             "confirmation seeds": s.get("confirm_seeds"),
             "workers per trial": s.get("workers_per_trial"),
             "base diffusion / sampler": json.dumps({**s.get("base", {}).get("diffusion", {}),
                                                     **s.get("base", {}).get("sample", {})}),
             "base training": json.dumps(s.get("base", {}).get("train")),
             "report built": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    cost = tables.total_cost(study.results)
    cost["post_study_s"] = (study.post or {}).get("seconds")
    page.table(pd.DataFrame([cost]), "Total cost (all trials; post_study_s = guidance sweep and "
                                     "trajectories after the study)")
    page.table(_kv(table), "Configuration")
    page.table(_kv(facts.get("versions") or {}), "Versions")
    page.table(_kv(facts.get("machine") or {}), "Machine")


def _kv(d: dict) -> pd.DataFrame:
    return pd.DataFrame({"setting": list(d), "value": [str(v) for v in d.values()]})


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
