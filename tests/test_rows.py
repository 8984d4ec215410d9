"""study/rows.py: every outcome's row has the same columns with the same meaning, and the
search space's axes reach every place they must (config, columns, names, Tune)."""

import pytest

from study import rows
from study.search_space import AXES, SearchSpace, apply, describe, trial_name, values
from trainables.config import TrialConfig

CTX = rows.RowContext(workers=2, gpus_per_worker=0.5, quality_metric="coverage")
CFG = apply({"depth": 2, "width": 8, "lr": 2e-3, "style": False}, TrialConfig())
EPOCH = {"epoch": 3, "train_seconds": 30.0, "images_seen": 3 * 1600, "train_dtype": "bf16",
         "train_loss": 0.05, "val_loss": 0.04, rows.PROBE: 0.7, "probe_s_total": 3.0,
         "trainer_start_s": 8.0, "worker_setup_s": 1.0, "images_per_s": 999.0}
EVALUATION = {"coverage": 0.35, "judge_acc": 0.9, "frechet": 12.0, "eval_s": 5.0,
              "n_samples": 100, "clip_top": None, "guidance": 1.5}


def test_every_outcome_has_the_same_columns_and_meanings():
    done = rows.finished("a", CFG, {**EPOCH, **EVALUATION, "stop_reason": "completed",
                                    "eval_total_s": 5.0}, 60.0, CTX)
    stopped = rows.finished("b", CFG, {**EPOCH, **EVALUATION, "stop_reason": "asha",
                                       "eval_total_s": 4.0}, 50.0, CTX)
    failed = rows.failed("c", CFG, "boom", CTX, EPOCH, 40.0)
    for row in (done, stopped, failed):
        assert list(row) == rows.COLUMNS
        # one definition per column, whatever the outcome
        assert row["images_seen"] == 4800 and row["images_per_s"] == 4800 / 30.0
        assert row["epochs_run"] == 3 and row["train_dtype"] == "bf16"
        assert row["worker_seconds"] == row["trial_wall_s"] * 2
        assert row["gpu_seconds"] == row["trial_wall_s"] * 2 * 0.5
        assert (row["depth"], row["width"], row["lr"]) == (2, 8, 2e-3)
    # start-up: wall time not spent training, probing or evaluating inside the trial
    assert done["startup_s"] == 60.0 - 30.0 - 3.0 - 5.0
    assert stopped["startup_s"] == 50.0 - 30.0 - 3.0 - 4.0  # it evaluated itself too
    assert (done["quality"], stopped["quality"], failed["quality"]) == (0.35, 0.35, None)
    assert done["guidance"] == 1.5 and failed["guidance"] is None  # the tuned w, evaluated
    assert (done["train_cost_s"], failed["train_cost_s"]) == (30.0, None)
    assert (done["stop_reason"], stopped["stop_reason"], failed["stop_reason"]) == (
        "completed", "asha", "error")


def test_a_diverged_report_is_a_failed_row_that_keeps_its_measurements():
    row = rows.finished("d", CFG, {**EPOCH, "stop_reason": "diverged",
                                    "error": "training diverged: non-finite loss"}, 20.0, CTX)
    assert (row["status"], row["stop_reason"], row["quality"]) == ("failed", "diverged", None)
    assert row["error"].startswith("training diverged") and row["train_seconds"] == 30.0


def test_size_and_artefacts_fill_their_columns():
    row = rows.finished("a", CFG, {**EPOCH, **EVALUATION, "stop_reason": "completed"}, 60.0,
                         CTX, size={"params": 1000, "forward_gflops": 0.01},
                         artefacts={"samples_path": "trials/a/samples.npz"}, confirm_of="z")
    assert row["train_gflops"] == pytest.approx(3 * 0.01 * 4800)
    assert row["samples_path"] == "trials/a/samples.npz" and row["confirm_of"] == "z"


def test_every_axis_reaches_the_config_the_columns_the_name_and_tune():
    space = SearchSpace()
    assert set(AXES) <= set(rows.COLUMNS) and set(space.to_tune()) == set(AXES)
    params = {"depth": 3, "width": 16, "lr": 1e-3, "style": True}
    cfg = apply(params, TrialConfig())
    assert values(cfg) == params  # each axis sets its field, and reads back from it
    assert trial_name("abc", params) == "abc_d3w16"
    assert describe(params) == "d3 w16 lr=0.001 style"


@pytest.mark.parametrize("space, match", [
    ({"depth": (5,)}, "depth choices \\[5\\] must lie in 1..4"),
    ({"lr": (1e-3,)}, "lr range \\[0.001\\] must be \\[low, high\\]"),
    ({"lr": (2e-3, 1e-3)}, "lr range \\[0.002, 0.001\\] must be positive and low <= high"),
    ({"style": ("yes",)}, "style choices"),
])
def test_bad_ranges_name_the_axis(space, match):
    with pytest.raises(ValueError, match=match):
        SearchSpace(**space)
