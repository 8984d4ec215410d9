"""analysis/: Pareto fronts on hand-made points, every chart on a small fixture table, the
recognisable-step measurement, reports of hand-made study directories (failed trials, no CLIP
columns, CLIP present, nothing ok), and the report and notebook end to end on a real smoke
study."""

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_study import RUNS, fake_scores, fake_study
from matplotlib.figure import Figure

from analysis import charts, pictures, tables
from analysis.report import SECTIONS, build_report
from analysis.results import load_study
from study.post import first_pass_steps, recognisable_table
from study.rows import COLUMNS

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "analysis" / "cost_vs_quality.ipynb"


# --- Pareto fronts ---------------------------------------------------------------------------

def _points(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["trial_id", "quality", "train_cost_s"])


def test_pareto_keeps_ties_and_drops_dominated_points():
    df = _points(("a", 0.9, 10.0), ("b", 0.9, 10.0),  # an exact tie: both stay
                 ("c", 0.9, 12.0),  # same quality, dearer than a: dominated
                 ("d", 0.5, 5.0), ("e", 0.4, 6.0),  # e: worse and dearer than d
                 ("f", 0.95, 20.0), ("g", 0.5, 5.0),  # g ties d
                 ("h", 0.3, 4.0), ("i", np.nan, 1.0))  # h: cheapest; i: failed
    front = tables.pareto_front(df)
    assert sorted(front["trial_id"]) == ["a", "b", "d", "f", "g", "h"]
    assert front["train_cost_s"].is_monotonic_increasing  # listed cheapest first


@pytest.mark.parametrize("rows, expected", [
    ([], []),
    ([("only", 0.1, 3.0)], ["only"]),
    ([("x", 0.5, 5.0), ("y", 0.5, 4.0)], ["y"]),  # same quality, cheaper wins
    ([("x", 0.5, 5.0), ("y", 0.6, 5.0)], ["y"]),  # same cost, better wins
])
def test_pareto_small_cases(rows, expected):
    assert list(tables.pareto_front(_points(*rows))["trial_id"]) == expected


# --- Recognisable step -----------------------------------------------------------------------

def test_first_recognisable_step_is_measured_per_sample():
    conf = np.array([[0.1, 0.1, 0.1],   # step 0 (noise)
                     [0.2, 0.6, 0.1],
                     [0.7, 0.4, 0.2],   # sample 1 dips again: the *first* pass counts
                     [0.9, 0.9, 0.3]])  # sample 2 never passes 0.5
    first = first_pass_steps(conf)
    assert first[:2].tolist() == [2, 1] and np.isnan(first[2])
    rows = recognisable_table("t", conf, np.array([4, 4, 7]))
    four, seven = rows
    assert four["mean_first_step"] == 1.5 and four["frac_pass"] == 1.0
    assert four["mean_first_fraction"] == 0.5 and four["total_steps"] == 3
    assert np.isnan(seven["mean_first_step"]) and seven["frac_pass"] == 0.0
    assert four["noise_conf"] == pytest.approx(0.1)


# --- Charts on a small fixture table ---------------------------------------------------------

@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i, (d, w) in enumerate([(2, 8), (2, 16), (3, 8), (3, 16), (2, 8), (3, 16)]):
        rows.append({"trial_id": f"t{i}", "status": "ok", "stop_reason": "completed",
                     "depth": d, "width": w, "lr": 10 ** rng.uniform(-4, -2.5),
                     "guidance": rng.uniform(0, 6), "quality": rng.uniform(0.2, 0.9),
                     "clip_top": rng.uniform(20, 30), "frechet": rng.uniform(10, 300),
                     "train_cost_s": rng.uniform(5, 50), "train_gflops": rng.uniform(1e2, 1e4)})
    rows.append({"trial_id": "bad", "status": "failed", "stop_reason": "error",
                 "error": "RuntimeError: boom", "depth": 3, "width": 8, "lr": 1e-3,
                 "guidance": 1.0})
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    df["judge_acc"] = df["quality"]
    return df


def _png(fig) -> bytes:
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    assert buf.tell() > 1000
    return buf.getvalue()


def test_cost_quality_chart(table):
    ok = table[table["status"] == "ok"]
    qs, costs = ["clip_top", "judge_acc"], list(tables.COSTS)
    fig = charts.cost_quality(ok, qs, costs, tables.fronts(ok, qs, costs), {"judge_acc": 0.95})
    assert len(fig.axes) == 4
    _png(fig)


def test_axis_charts(table):
    ok = table[table["status"] == "ok"]
    _png(charts.axis_heatmaps(ok, "judge_acc"))
    _png(charts.axis_effects(ok, "judge_acc"))
    imp = pd.DataFrame({"objective": ["quality"] * 2 + ["train_cost_s"] * 2,
                        "param": ["lr", "width"] * 2, "importance": [0.7, 0.3, 0.1, 0.9]})
    _png(charts.importance_chart(imp))


def test_guidance_curves_chart():
    ws = [0, 1, 2, 4]
    sweep = pd.DataFrame({"trial_id": np.repeat(["a", "b"], 4), "guidance": ws * 2,
                          "chosen_guidance": [1.5] * 4 + [3.0] * 4,
                          "judge_acc": [0.3, 0.6, 0.8, 0.9] * 2,
                          "frechet": [50, 20, 25, 60] * 2, "clip_top": [np.nan] * 8})
    fig = charts.guidance_curves(sweep, ["clip_top", "judge_acc", "frechet"])
    assert len(fig.axes) == 2  # the all-empty CLIP column is left out
    _png(fig)


@pytest.mark.parametrize("clip", [True, False])
def test_per_digit_and_selection_gain_charts(clip):
    long = pd.DataFrame({"trial_id": np.repeat(["real", "a"], 10), "digit": np.tile(range(10), 2),
                         "judge_acc": np.linspace(0, 1, 20), "judge_conf": np.linspace(1, 0, 20)})
    if clip:
        long["clip_top"] = np.linspace(20, 30, 20)
    fig = charts.per_digit_chart(long, ["judge_acc", "judge_conf", "clip_top"])
    assert len([a for a in fig.axes if a.get_title()]) == (3 if clip else 2)
    _png(fig)
    gain = tables.selection_gain(fake_scores(clip), k=3)
    assert len(gain) == 20 and (gain["judge_acc_top"] >= 0).all()
    assert ("clip_gain" in gain) == clip and (not clip or (gain["clip_gain"] >= 0).all())
    _png(charts.selection_gain_chart(gain, 3, 4))


def test_training_and_recognisability_charts():
    hist = pd.DataFrame({"trial_id": np.repeat(["a", "b"], 3), "epoch": [1, 2, 3] * 2,
                         "train_loss": [0.5, 0.3, 0.2] * 2, "val_loss": [0.4, 0.3, 0.25] * 2,
                         "lr": [1e-3] * 6, "probe_judge_acc": [0.1, 0.4, 0.8] * 2})
    _png(charts.training_curves(hist))
    conf = np.linspace(0, 1, 6 * 20).reshape(6, 20)
    _png(charts.recognisability_curve(conf, np.repeat(np.arange(10), 2), steps={0: 3.0}))


def test_picture_functions():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 4)
    scores = rng.uniform(size=40)
    assert pictures.top_k_indices(scores, labels, 3, 2).tolist() == \
        sorted(range(12, 16), key=lambda i: -scores[i])[:2]
    _png(pictures.top_k_grids(images, labels, {"CLIP": scores, "judge": 1 - scores}, 3))
    _png(pictures.noise_progression(images[:3], timesteps=50))
    traj = {"images": rng.integers(0, 256, (4, 10, 28, 28), dtype=np.uint8),
            "steps": np.array([0, 2, 4, 5]), "labels": np.arange(10), "rows": np.arange(10),
            "conf": np.linspace(0, 1, 6 * 10).reshape(6, 10), "total_steps": np.array(5),
            "trial_id": np.array("t0")}
    _png(pictures.generation_steps(traj))


def test_markdown_table():
    md = tables.to_markdown(pd.DataFrame({"a": [1.23456, np.nan], "b": ["x|y", "z"]}))
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1.235 | x\\|y |", "|  | z |"]


# --- Reports of hand-made study directories --------------------------------------------------

def _check_page(index: Path) -> str:
    page = index.read_text()
    for sid, title in SECTIONS:
        assert f"<section id='{sid}'><h2>{title}</h2>" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    for name in images:
        assert (index.parent / name).stat().st_size > 1000, name
    assert "could not be drawn" not in page
    return page


@pytest.fixture(scope="module")
def nocl_report(tmp_path_factory) -> tuple[Path, str]:
    """(study directory, report page) of a fake study with a failed trial, without CLIP
    columns, whose best configuration is a style model: built once for the tests below."""
    study_dir = fake_study(tmp_path_factory.mktemp("report") / "nocl", clip=False,
                           drop_clip_columns=True, style=True)
    return study_dir, _check_page(build_report(study_dir))


def test_report_of_failed_trials_without_clip_columns(nocl_report):
    study_dir, page = nocl_report
    study = load_study(study_dir)
    assert not study.clip_enabled and study.results["clip_top"].isna().all()
    assert "CLIP DISABLED" in page and "no CLIP columns" in page
    assert "1 trial(s) FAILED" in page and "CUDA out of memory (boom)" in page
    assert "early_stop" in page and "reference.json is missing" in page
    assert "Hyperparameter importance: no optuna.db" in page
    # each trained model's guidance search, from trials/<id>/guidance.csv (no post-study step)
    assert "guidance.png" in page and "The w each trial&#x27;s search chose" in page
    # the search's cheap score beside the trial's full evaluation at the chosen w
    chosen = page[page.index("The w each trial&#x27;s search chose"):]
    assert "<th>evaluated coverage</th>" in chosen[:chosen.index("</table>")]
    summary = (study_dir / "report" / "summary.md").read_text()
    assert "**CLIP DISABLED**" in summary and "(boom)" in summary
    assert "- best: d3 w16 lr=0.0013 style (trial big, 2 seeds) → coverage 0.680 ± 0.028" \
        in summary


def test_report_with_clip_shows_clip_views(tmp_path):
    study_dir = fake_study(tmp_path / "cl", clip=True)
    page = _check_page(build_report(study_dir))
    assert "CLIP DISABLED" not in page
    assert "top 3 by" in page or "top3_good.png" in page
    assert (study_dir / "report" / "selection_gain.png").exists()
    assert "clip_top" in (study_dir / "report" / "summary.md").read_text()


def test_report_when_every_trial_failed(tmp_path):
    study_dir = fake_study(tmp_path / "allbad", clip=False, ok=False)
    page = _check_page(build_report(study_dir))
    assert "No successful trial" in page and "No guidance curves" in page
    assert "no successful trial" in (study_dir / "report" / "summary.md").read_text()


def test_guidance_curves_come_from_the_post_study_the_trials_or_their_rows(tmp_path):
    """analysis/guidance_sweep.csv when study/post.py ran; else each trial's guidance.csv; else
    the quality at each w that its results.csv row keeps (`guidance_curve`); else none."""
    study_dir = fake_study(tmp_path / "g", clip=False)
    sweep = load_study(study_dir).guidance_sweep
    assert sweep.groupby("trial_id").size().to_dict() == {r[0]: 4 for r in RUNS}
    assert (sweep["chosen_guidance"] == 2.0).all() and "judge_no_digit" in sweep
    for f in study_dir.glob("trials/*/guidance.csv"):
        f.unlink()
    table = pd.read_csv(study_dir / "results.csv", dtype={"trial_id": str})
    table["guidance_curve"] = None
    table.loc[table["trial_id"] == "good", "guidance_curve"] = json.dumps({"1": 0.5, "2": 0.6})
    table.loc[table["trial_id"] == "big", "guidance_curve"] = "{hand-edited"  # skipped
    table.to_csv(study_dir / "results.csv", index=False)
    sweep = load_study(study_dir).guidance_sweep
    assert sweep[["trial_id", "guidance", "coverage"]].values.tolist() == [["good", 1.0, 0.5],
                                                                          ["good", 2.0, 0.6]]
    table["guidance_curve"] = None
    table.to_csv(study_dir / "results.csv", index=False)
    study = load_study(study_dir)
    assert study.guidance_sweep is None and any("No guidance curves" in n for n in study.notes)
    (study_dir / "analysis").mkdir()
    pd.DataFrame({"trial_id": ["good"], "guidance": [3.0], "chosen_guidance": [3.0],
                  "coverage": [0.7]}).to_csv(study_dir / "analysis" / "guidance_sweep.csv",
                                             index=False)
    assert load_study(study_dir).guidance_sweep["guidance"].tolist() == [3.0]


def test_report_answers_at_a_glance(nocl_report):
    """Its top sentence names the best configuration for its cost with mean ± std over seeds
    and what it gains; then a sortable table of every trial with every cost column, a thumbnail
    of every trial's samples, the worst samples beside the best, per-epoch grids of the best
    configurations, and the style grids."""
    study_dir, page = nocl_report
    answer = re.search(r"<div class='answer'><p>(.*?)</p>", page)[1]
    # big (0.70, 0.66 over 2 seeds) against good (0.60, 0.58), the next-cheapest on the front
    assert answer.startswith("Best for its cost: d3 w16 lr=0.0013 style (trial big, 2 seeds), "
                             "coverage 0.680 ± 0.028 after 20.5 ± 0.7 s of training: 0.090 ± "
                             "0.032 more than the next-cheapest configuration on the front, "
                             "d2 w8"), answer
    assert "for 3.3× its training time." in answer
    trials = re.search(r"<table[^>]*class=\"dataframe sortable\".*?</table>",
                       page[page.index("<section id='trials'>"):], re.S)[0]
    headers = re.findall(r"<th>([^<]*)</th>", trials)
    assert set(tables.COST_COLUMNS) | {"stop_reason", "quality"} <= set(headers)
    assert len(re.findall(r"<tr[ >]", trials)) == 1 + len(RUNS) + 1  # header, runs, bad1
    assert (study_dir / "report" / "sort.js").exists()
    images = set(re.findall(r'<img src="([^"]+)"', page))
    assert {f"thumb_{r[0]}.png" for r in RUNS} <= images  # bad1 left no samples
    assert {"worst_best_big.png", "worst_best_good.png", "style_grids.png"} <= images
    # per-epoch grids of the best 3 configurations' first seeds (by mean quality)
    assert {i for i in images if i.startswith("progress_")} == {
        "progress_big.png", "progress_good.png", "progress_early.png"}


def test_report_of_a_study_with_no_finished_trial(tmp_path):
    study_dir = tmp_path / "fresh"
    study_dir.mkdir()
    pd.DataFrame(columns=COLUMNS).to_csv(study_dir / "results.csv", index=False)
    (study_dir / "study.json").write_text(json.dumps({"spec": {"name": "fresh", "clip": None}}))
    page = _check_page(build_report(study_dir))
    assert "No trial has finished yet" in page and "No successful trial" in page


def test_analysis_never_imports_ray():
    code = ("import sys, analysis.report, analysis.charts, analysis.pictures, analysis.tables; "
            "sys.exit('ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_report_cli_rejects_non_study_dirs(tmp_path, make):
    target = tmp_path / "nothing"
    if make == "empty":
        target.mkdir()
    p = subprocess.run([sys.executable, "-m", "analysis.report", str(target)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    err = p.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err


def test_notebook_is_committed_without_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert code[0].source.startswith("STUDY_DIR = ")


# --- End to end on a real smoke study --------------------------------------------------------

@pytest.mark.slow
def test_study_run_writes_post_study_inputs_and_report(smoke_study):
    study_dir = smoke_study
    log = (study_dir.parent / "run.log").read_text()
    assert "post-study:" in log and "report: " in log and "warning:" not in log
    post = study_dir / "analysis"
    sweep = pd.read_csv(post / "guidance_sweep.csv")
    assert set(sweep["guidance"].unique()) == {1.0, 3.0}  # the smoke preset's grid
    results = pd.read_csv(study_dir / "results.csv")
    assert sweep["trial_id"].nunique() == len(results)  # every trial's search, as it ran
    assert sweep["coverage"].between(0, 1).all() and sweep["judge_acc"].between(0, 1).all()
    rec = pd.read_csv(post / "recognisable_steps.csv")
    shown = json.loads((post / "post.json").read_text())["trials"]
    assert len(rec) == 10 * len(shown) and rec["frac_pass"].between(0, 1).all()
    with np.load(post / "trajectory.npz") as z:
        assert z["conf"].shape[0] == int(z["total_steps"]) + 1
        assert z["images"].shape[1:] == (10, 28, 28)
    page = (study_dir / "report" / "index.html").read_text()
    # the answer's numbers stand next to their ceiling: real digits scored the same way
    ref = json.loads((study_dir / "reference.json").read_text())
    assert f"(real digits: coverage {ref['coverage']:.3f}, judge accuracy {ref['judge_acc']:.3f})" \
        in page
    # and the summary's reference line leads with the quality metric, not the judge alone
    summary = (study_dir / "report" / "summary.md").read_text()
    assert f"- real digits (reference): coverage {ref['coverage']:.3f}, judge accuracy " \
        f"{ref['judge_acc']:.3f}" in summary


@pytest.mark.slow
def test_report_cli_end_to_end(smoke_study):
    study_dir = smoke_study
    p = subprocess.run([sys.executable, "-m", "analysis.report", str(study_dir)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    index = study_dir / "report" / "index.html"
    assert p.stdout.strip() == f"report: {index}"
    page = _check_page(index)
    images = set(re.findall(r'<img src="([^"]+)"', page))
    expected = {"cost_quality.png", "depth_width.png", "lr_effects.png", "importance.png",
                "guidance.png", "per_digit.png", "selection_gain.png", "noise_progression.png",
                "generation_steps.png", "recognisable.png", "training_curves.png"}
    assert expected <= images and any(i.startswith("top3_") for i in images)
    # CLIP on (the tiny local model): no "disabled" banner, CLIP-top-3 is the quality
    assert "CLIP DISABLED" not in page and "Every trial completed its budget" in page
    assert "Recognisable step per digit" in page
    summary = (study_dir / "report" / "summary.md").read_text()
    n = len(pd.read_csv(study_dir / "results.csv"))  # 2 trials + the front's confirmations
    assert "Pareto front" in summary and f"trials: {n} ({n} ok, 0 failed)" in summary
    assert "quality metric: `coverage`" in summary


@pytest.mark.slow
def test_notebook_runs_on_the_smoke_study(smoke_study):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if c.cell_type == "code")
    params.source = f"STUDY_DIR = {str(smoke_study)!r}"
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 10  # every chart and picture of sections 1-6
