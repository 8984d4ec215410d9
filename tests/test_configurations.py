"""analysis/tables.py's seed-aware tables on hand-made rows: configurations with mean ± std over
their seeds, the front of the means and the best configuration for its cost, whether the seeds
keep the first-seed order, the anytime series, the trial cost table; and the sentences the
report and summary.md lead with."""

import numpy as np
import pandas as pd
import pytest

from analysis import tables
from analysis.summary import seeds_sentence
from study.rows import COLUMNS

AXES = ["depth", "width", "lr"]


def _rows(*runs) -> pd.DataFrame:
    """runs: (trial_id, confirm_of, depth, quality, train seconds[, stop_reason])."""
    rows = []
    for tid, of, depth, q, secs, *reason in runs:
        rows.append({"trial_id": tid, "confirm_of": of, "status": "ok", "depth": depth,
                     "width": 8, "lr": 1e-3 * depth, "quality": q, "judge_acc": q + 0.2,
                     "recall": q - 0.1, "train_cost_s": secs, "trial_wall_s": secs + 10,
                     "stop_reason": reason[0] if reason else "completed"})
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def test_configurations_group_first_seeds_with_their_confirmations():
    df = _rows(("a", None, 2, 0.5, 10.0), ("a1", "a", 2, 0.7, 12.0), ("a2", "a", 2, 0.6, 14.0),
               ("b", None, 3, 0.65, 30.0), ("c", None, 4, 0.2, 5.0, "asha"))
    configs = tables.configurations(df, AXES).set_index("config")
    assert list(configs.index) == ["b", "a", "c"]  # by mean quality, best first
    a = configs.loc["a"]
    assert a["n"] == 3 and a["trials"] == "a a1 a2" and a["stop_reason"] == "completed"
    assert a["quality_first"] == 0.5
    assert a["quality_mean"] == pytest.approx(0.6)
    assert a["quality_std"] == pytest.approx(0.1)  # sample std (ddof=1)
    assert a["train_cost_s_mean"] == pytest.approx(12.0)
    assert a["judge_acc_mean"] == pytest.approx(0.8) and a["recall_std"] == pytest.approx(0.1)
    assert configs.loc["b", "n"] == 1 and np.isnan(configs.loc["b", "quality_std"])
    assert configs.loc["c", "stop_reason"] == "asha"
    assert "clip_top_mean" not in configs  # an all-empty column is left out


def test_configurations_of_nothing():
    assert tables.configurations(_rows(), AXES).empty
    failed = _rows(("x", None, 2, np.nan, np.nan))
    assert tables.configurations(failed, AXES).empty
    assert tables.best_for_cost(tables.configurations(failed, AXES)) is None


def test_best_for_cost_names_the_best_on_the_front_and_its_gain_over_the_next_cheapest():
    df = _rows(("cheap", None, 2, 0.4, 5.0), ("mid", None, 3, 0.6, 10.0),
               ("mid1", "mid", 3, 0.62, 11.0), ("top", None, 4, 0.8, 40.0),
               ("top1", "top", 4, 0.84, 44.0), ("bad", None, 5, 0.3, 50.0))
    configs = tables.configurations(df, AXES)
    front = tables.mean_front(configs)
    assert list(front["config"]) == ["cheap", "mid", "top"]  # "bad" is dominated
    v = tables.best_for_cost(configs)
    assert v["best"]["config"] == "top" and v["runner_up"]["config"] == "mid"
    assert v["runner_up_on_front"]
    assert v["gain"] == pytest.approx(0.82 - 0.61)
    assert v["gain_std"] == pytest.approx(np.hypot(np.std([0.8, 0.84], ddof=1),
                                                   np.std([0.6, 0.62], ddof=1)))
    assert v["cost_ratio"] == pytest.approx(42.0 / 10.5)


def test_best_for_cost_when_the_best_is_also_the_cheapest():
    configs = tables.configurations(_rows(("a", None, 2, 0.9, 5.0), ("b", None, 3, 0.5, 9.0)),
                                    AXES)
    v = tables.best_for_cost(configs)
    assert v["best"]["config"] == "a" and v["runner_up"]["config"] == "b"
    assert not v["runner_up_on_front"] and v["gain"] == pytest.approx(0.4)
    assert np.isnan(v["gain_std"])  # neither has seeds: no ±
    alone = tables.best_for_cost(tables.configurations(_rows(("a", None, 2, 0.9, 5.0)), AXES))
    assert alone["runner_up"] is None and np.isnan(alone["gain"])


def test_best_for_cost_breaks_a_quality_tie_by_judge_accuracy():
    df = _rows(("a", None, 2, 0.7, 5.0), ("b", None, 3, 0.7, 5.0))
    df.loc[df["trial_id"] == "b", "judge_acc"] = 0.99
    assert tables.best_for_cost(tables.configurations(df, AXES))["best"]["config"] == "b"


@pytest.mark.parametrize("second_seeds, kept", [((0.62, 0.64), True), ((0.95, 0.97), False)])
def test_seed_order_says_whether_the_means_keep_the_first_seed_order(second_seeds, kept):
    df = _rows(("a", None, 2, 0.8, 5.0), ("a1", "a", 2, 0.78, 5.0),
               ("b", None, 3, 0.6, 9.0), ("b1", "b", 3, second_seeds[0], 9.0),
               ("b2", "b", 3, second_seeds[1], 9.0), ("c", None, 4, 0.9, 20.0))
    configs = tables.configurations(df, AXES)
    order = tables.seed_order(configs)
    assert order["compared"] == 2  # c has one seed: not compared
    assert order["first"] == ["a", "b"] and order["kept"] is kept
    assert order["mean"] == (["a", "b"] if kept else ["b", "a"])
    text = seeds_sentence(configs)
    assert ("their means keep the first-seed order" in text) == kept
    assert ("do NOT keep" in text) == (not kept)


def test_seed_order_without_confirmations():
    configs = tables.configurations(_rows(("a", None, 2, 0.8, 5.0)), AXES)
    assert tables.seed_order(configs) == {"compared": 0, "kept": None, "first": [], "mean": []}
    assert "without ±" in seeds_sentence(configs)


def test_anytime_series_marks_each_trials_last_epoch_and_how_it_stopped():
    results = _rows(("a", None, 2, 0.8, 6.0), ("s", None, 3, 0.3, 2.0, "asha"),
                    ("a1", "a", 2, 0.7, 6.0))
    hist = pd.DataFrame({"trial_id": ["a", "a", "a", "s", "a1", "a1", "a1", "gone"],
                         "epoch": [1, 2, 3, 1, 1, 2, 3, 1],
                         "train_seconds": [2.0, 4.0, 6.0, 2.0, 2.0, 4.0, 6.0, 1.0],
                         "probe_judge_acc": [0.1, 0.5, 0.9, 0.2, 0.2, 0.4, 0.8, 0.5]})
    points = tables.anytime(hist, results)
    assert set(points["trial_id"]) == {"a", "s", "a1"}  # a history without a row is left out
    last = points[points["last"]].set_index("trial_id")
    assert last.loc["a", "epoch"] == 3 and last.loc["s", "stop_reason"] == "asha"
    assert last.loc["s", "train_seconds"] == 2.0
    assert points.groupby("trial_id")["last"].sum().eq(1).all()
    assert bool(last.loc["a", "first_seed"]) and not bool(last.loc["a1", "first_seed"])
    assert last.loc["a1", "config"] == "a"
    assert tables.anytime(pd.DataFrame(), results).empty


def test_trial_costs_has_every_cost_column_and_sampling_seconds_per_image():
    df = _rows(("a", None, 2, 0.8, 6.0))
    df["eval_sample_s"], df["n_samples"] = 2.0, 100
    table = tables.trial_costs(df, AXES)
    assert set(tables.COST_COLUMNS) <= set(table.columns)
    assert table.loc[0, "sample_s_per_image"] == pytest.approx(0.02)
    assert {"stop_reason", "confirm_of", *AXES} <= set(table.columns)


def test_the_answer_calls_a_lead_within_the_seeds_spread_a_tie():
    from types import SimpleNamespace

    from analysis.summary import best_sentence

    study = SimpleNamespace(quality_metric="coverage")
    # "top" leads "mid" (0.61 ± 0.014) by 0.19 ± 0.03: an answer
    clear = _rows(("mid", None, 3, 0.6, 10.0), ("mid1", "mid", 3, 0.62, 11.0),
                  ("top", None, 4, 0.8, 40.0), ("top1", "top", 4, 0.84, 44.0))
    text = best_sentence(study, tables.configurations(clear, AXES))
    assert "more than the next-cheapest configuration on the front" in text
    assert "level with" not in text
    # one lucky seed 0.02 ahead of a configuration whose seeds spread by 0.1: a tie
    tied = _rows(("mid", None, 3, 0.5, 10.0), ("mid1", "mid", 3, 0.7, 11.0),
                 ("top", None, 4, 0.62, 40.0))
    text = best_sentence(study, tables.configurations(tied, AXES))
    assert text.startswith("Best for its cost: d4") and "level with d3" in text, text
    # the one-seed side takes the study's seed spread (here mid's alone): ± hypot(0.141, 0.141)
    assert "the difference, 0.020 ± 0.200, is within the seeds' spread" in text, text
    # the runner-up's fidelity beside it: what may tell the two apart when quality cannot
    assert "(trial mid: 0.600 ± 0.141 after 10.5 ± 0.7 s, judge accuracy 0.800 ± 0.141)" \
        in text, text
    # two one-seed configurations 0.01 apart, beside a confirmed one whose seeds differ by
    # 0.1: the study's seed spread (0.071) applies to both, so the lead is no answer either
    lucky = _rows(("low", None, 2, 0.2, 5.0), ("low1", "low", 2, 0.3, 6.0),
                  ("mid", None, 3, 0.5, 10.0), ("top", None, 4, 0.51, 40.0))
    text = best_sentence(study, tables.configurations(lucky, AXES))
    assert "level with d3" in text and "0.010 ± 0.100" in text, text
