"""The study's answer in words: which configuration is best for its cost and by how much (with ±
where seeds exist), whether the seeds kept the first-seed order, and the headline metric; and
``summary.md``, the short Markdown form the report writes beside index.html.

    for sentence in answer(study):      # what the report's top says
        print(sentence)
    Path("summary.md").write_text(summary(study))
"""

from __future__ import annotations

import pandas as pd

from analysis import tables
from analysis.page import pm
from analysis.results import CLIP_OFF, Study
from study.search_space import describe


def _name(row) -> str:
    """A configuration in words: its axes, its first-seed trial and its number of seeds."""
    seeds = int(row["n"])
    return f"{describe(row)} (trial {row['config']}, {seeds} seed{'s' if seeds > 1 else ''})"


def _q(row, metric: str = "quality", fmt: str = ".3f") -> str:
    return pm(row.get(f"{metric}_mean"), row.get(f"{metric}_std"), fmt)


def _secs(row) -> str:
    mean = row.get("train_cost_s_mean")
    return pm(mean, row.get("train_cost_s_std"), ".1f" if mean < 100 else ".0f") + " s"


def _brief(row) -> str:
    """The runner-up beside the best: its trial, quality, cost and, where the table has it, the
    judge's accuracy (what tells two configurations apart when their quality is level)."""
    judge = f", judge accuracy {_q(row, 'judge_acc')}" if "judge_acc_mean" in row else ""
    return f"trial {row['config']}: {_q(row)} after {_secs(row)}{judge}"


def best_sentence(study: Study, configs: pd.DataFrame | None = None) -> str | None:
    """One sentence with numbers: the best configuration for its cost and what it gains over
    the next-cheapest front configuration. None when no trial succeeded."""
    configs = tables.configurations(study.ok, study.axes) if configs is None else configs
    verdict = tables.best_for_cost(configs)
    if verdict is None:
        return None
    b, r, q = verdict["best"], verdict["runner_up"], study.quality_metric
    text = f"Best for its cost: {_name(b)}, {q} {_q(b)} after {_secs(b)} of training"
    if r is None:
        return text + "; it is the only configuration with a result."
    gain = pm(verdict["gain"], verdict["gain_std"])
    ratio = verdict["cost_ratio"]
    if abs(verdict["gain"]) <= verdict["gain_std"]:  # NaN (no seeds) compares False
        # a lead smaller than the seeds' spread is no answer: say they are level
        return (text + f", level with {describe(r)} ({_brief(r)}): the difference, {gain}, "
                f"is within the seeds' spread, so more seeds are needed to tell them apart.")
    if verdict["runner_up_on_front"]:
        return (text + f": {gain} more than the next-cheapest configuration on the front, "
                f"{describe(r)} ({_brief(r)}), for {ratio:.1f}× its training time.")
    return (text + f": {gain} more than the next best, {describe(r)} ({_brief(r)}), and it is "
            "also the cheapest configuration on the front"
            + (f" ({ratio:.2f}× the next best's training time)." if ratio == ratio else "."))


def answer(study: Study) -> list[str]:
    """The report's opening sentences: the best configuration for its cost, its fidelity and
    diversity, the headline metric with CLIP's picks, and what the seeds say."""
    configs = tables.configurations(study.ok, study.axes)
    first = best_sentence(study, configs)
    if first is None:
        return ["No trial succeeded: there is no answer yet (see the failed trials below)."]
    out = [first]
    b = tables.best_for_cost(configs)["best"]
    facts = [f"judge accuracy {_q(b, 'judge_acc')}"]
    if "recall_mean" in b:
        facts.append(f"recall {_q(b, 'recall')}")
    if "precision_mean" in b:
        facts.append(f"precision {_q(b, 'precision')}")
    ceiling = real_digits(study)
    real = f" (real digits: {', '.join(ceiling)})" if ceiling else ""
    out.append(f"Faithful and diverse: {', '.join(facts)}{real}.")
    if study.headline_metric == "clip_top" and "clip_top_mean" in b:
        k = study.top_k
        line = f"Headline CLIP-top-{k}: {_q(b, 'clip_top', '.2f')}"
        if "judge_acc_top_clip_mean" in b:
            picks, every = b["judge_acc_top_clip_mean"], b["judge_acc_mean"]
            better = "better" if picks > every else "no better" if picks == every else "worse"
            line += (f"; the judge reads {picks:.0%} of CLIP's top-{k} picks as the requested "
                     f"digit against {every:.0%} of all samples: CLIP's selection picks "
                     f"{better} digits")
        out.append(line + ".")
    out.append(seeds_sentence(configs))
    return out


def real_digits(study: Study) -> list[str]:
    """The ceiling of the quality metric and the judge's accuracy: held-out real digits scored
    by the same pipeline ("coverage 0.390", "judge accuracy 0.970"; those recorded)."""
    ref = study.reference or {}
    keys = dict.fromkeys((study.quality_metric, "judge_acc"))  # once, if quality is judge_acc
    names = {"judge_acc": "judge accuracy"}
    return [f"{names.get(k, k)} {ref[k]:.3f}" for k in keys if ref.get(k) is not None]


def seeds_sentence(configs: pd.DataFrame) -> str:
    """Whether the confirmed means keep the first-seed order, in words."""
    order = tables.seed_order(configs)
    if order["compared"] == 0:
        return ("No configuration was trained with a second seed: values are single runs, "
                "without ±.")
    if order["kept"] is None:
        return ("One configuration was confirmed with more seeds (± = std over its seeds); "
                "there is no order to check.")
    head = f"{order['compared']} configurations were confirmed with more seeds (± = std over seeds)"
    if order["kept"]:
        return head + "; their means keep the first-seed order."
    return (head + f"; their means do NOT keep the first-seed order (first seed: "
            f"{' > '.join(order['first'])}; means: {' > '.join(order['mean'])}).")


def summary(study: Study) -> str:
    """A short Markdown summary: the answer, counts, cost, the configurations on the front with
    mean ± std, failures and notes."""
    cost = tables.total_cost(study.results)
    lines = [f"# Study {study.name}", ""]
    if not study.clip_configured:
        lines += ["**CLIP DISABLED**: CLIP columns are absent.", ""]
    elif not study.clip_enabled:
        lines += ["**No CLIP scores**: CLIP was configured but no trial was scored by it.", ""]
    lines += [*answer(study), ""]
    lines += [f"- trials: {cost['trials']} ({cost['ok']} ok, {cost['failed']} failed)",
              f"- quality metric: `{study.quality_metric}`; headline: `{study.headline_metric}`",
              f"- total training time {cost['training_s']:.0f} s, trial wall time "
              f"{cost['trial_wall_s']:.0f} s, worker time {cost['worker_s']:.0f} s, GPU time "
              f"{cost['gpu_s']:.0f} s, training compute {cost['train_gflops']:.4g} GFLOPs"]
    reference = real_digits(study) + ([f"CLIP-top-{study.top_k} {study.reference['clip_top']:.2f}"]
                                      if (study.reference or {}).get("clip_top") is not None
                                      else [])
    if reference:
        lines.append(f"- real digits (reference): {', '.join(reference)}")
    configs = tables.configurations(study.ok, study.axes)
    verdict = tables.best_for_cost(configs)
    if verdict is not None:
        b = verdict["best"]
        lines.append(f"- best: {_name(b)} → {study.quality_metric} {_q(b)}, judge accuracy "
                     f"{_q(b, 'judge_acc')}, training {_secs(b)}")
    else:
        lines.append("- **no successful trial**")
    lines += ["", "## Pareto front of the configurations (mean ± std over seeds)", "",
              tables.to_markdown(config_table(tables.mean_front(configs), study))
              if verdict is not None else "_(none)_"]
    if study.recognisable is not None and verdict is not None:
        r = study.recognisable
        r = r[r["trial_id"].astype(str) == str(r["trial_id"].iloc[0])]
        lines += ["", f"## Recognisable step per digit (trial {r['trial_id'].iloc[0]})", "",
                  tables.to_markdown(r[[c for c in ("digit", "mean_first_step", "frac_pass",
                                                    "total_steps", "noise_no_digit")
                                        if c in r]])]
    fails = tables.failures(study.results, study.axes)
    lines += ["", "## Failed and stopped trials", "",
              tables.to_markdown(fails[["trial_id", "status", "stop_reason", "error"]])
              if len(fails) else "None: every trial completed its budget."]
    notes = [n for n in study.notes if n != CLIP_OFF]  # said in bold at the top
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += ["", "Full report: [index.html](index.html)", ""]
    return "\n".join(lines)


def config_table(configs: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Configurations as the reader sees them: axes, seeds, and mean ± std columns."""
    if configs.empty:
        return pd.DataFrame()
    out = configs[["config", *[a for a in study.axes if a in configs], "n",
                   "stop_reason"]].rename(columns={"stop_reason": "first stop"}).copy()
    shown = [("quality", study.quality_metric, ".3f"), ("judge_acc", "judge_acc", ".3f"),
             ("recall", "recall", ".3f"), ("clip_top", "clip_top", ".2f"),
             ("train_cost_s", "training s", ".0f"), ("trial_wall_s", "wall s", ".0f")]
    for col, title, fmt in shown:
        if f"{col}_mean" in configs:
            out[title] = [pm(m, s, fmt) for m, s in zip(configs[f"{col}_mean"],
                                                         configs[f"{col}_std"], strict=True)]
            if f"{col}_first" in configs and col == "quality":
                out[f"{title} (first seed)"] = configs[f"{col}_first"]
    return out.reset_index(drop=True)
