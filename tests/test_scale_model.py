"""The study's discrete-event scale model (benchmarks/scale_model.py) on cases small enough to
check by hand, and its inputs file."""

from dataclasses import replace

import numpy as np
import pytest

from benchmarks.scale_model import (
    INPUTS,
    Scenario,
    asha_continues,
    asha_rungs,
    load_inputs,
    simulate,
    what_if,
)

# 1 trial: 5 s start-up, 3 epochs of 10 s, 2 s evaluation = 37 s
ONE = Scenario(name="one", trials=1, devices=1, epochs=3, epoch_s=10.0, startup_s=5.0, eval_s=2.0)


def test_one_trial_is_startup_plus_training_plus_evaluation():
    r = simulate(ONE)
    assert r.wall_s == pytest.approx(5 + 3 * 10 + 2)
    assert r.shares["train"] == pytest.approx(30 / 37)
    assert r.shares["startup"] == pytest.approx(5 / 37)
    assert r.shares["eval"] == pytest.approx(2 / 37)
    assert r.trial_train_share == pytest.approx(30 / 37)
    assert r.epochs_trained == 3


def test_four_equal_trials_on_two_slots_run_in_two_waves():
    r = simulate(replace(ONE, trials=4, devices=2))
    assert r.wall_s == pytest.approx(2 * 37)
    assert r.shares["train"] == pytest.approx(30 / 37)


def test_launch_overhead_and_driver_costs_add_up():
    s = replace(ONE, launch_s=1.0, epoch_overhead_s=0.5, optuna_finished=(0,),
                optuna_ask_ms=(200.0,), optuna_tell_ms=(100.0,))
    # ask 0.2 + launch 1 + start-up 5 + 3 × (10 + 0.5) + eval 2, then the tell 0.1
    assert simulate(s).wall_s == pytest.approx(0.2 + 1 + 5 + 31.5 + 2 + 0.1)


def test_asha_stops_shorten_the_study():
    s = replace(ONE, trials=9, epochs=9, asha_grace=1)  # rungs at 1, 3 and 9 epochs
    plain = simulate(replace(s, asha_grace=None))
    assert plain.wall_s == pytest.approx(9 * (5 + 90 + 2))
    asha = simulate(s)
    assert asha.stopped > 0 and asha.epochs_trained < 9 * 9 and asha.wall_s < plain.wall_s
    # one slot, so the wall time is each trial's start-up, epochs and evaluation in turn
    assert asha.wall_s == pytest.approx(9 * (5 + 2) + 10 * asha.epochs_trained)


def test_stopped_trials_evaluated_in_the_driver_free_their_slot_but_hold_the_driver():
    s = replace(ONE, trials=6, devices=3, epochs=3, asha_grace=1, driver_eval_s=50.0)
    in_driver = simulate(replace(s, stopped_eval_in_driver=True))
    own_slot = simulate(s)
    assert in_driver.stopped == own_slot.stopped > 0
    assert in_driver.driver_busy_s == pytest.approx(50.0 * in_driver.stopped)
    assert in_driver.wall_s > own_slot.wall_s


def test_a_rung_decided_in_the_driver_waits_for_it_and_one_in_the_trial_does_not():
    # one trial, rungs after epochs 1 and 3; the driver needs 1 s per reported result
    s = replace(ONE, asha_grace=1, driver_result_s=1.0)
    in_driver = simulate(replace(s, rungs_in_driver=True))
    in_trial = simulate(replace(s, rung_s=0.5))
    # ASHA's first trial at a rung always goes on: only the wait differs
    assert in_driver.stopped == in_trial.stopped == 0
    assert in_driver.wall_s == pytest.approx(37 + 2 * 1)  # waits for the driver at each rung
    assert in_trial.wall_s == pytest.approx(37 + 2 * 0.5)  # asks the keeper instead


def test_overlap_hides_startup():
    s = replace(ONE, trials=4, devices=2)
    overlapped = simulate(replace(s, prestart=2))
    # the second wave started up during the first: one start-up, two waves of training + eval
    assert overlapped.wall_s == pytest.approx(5 + 2 * (30 + 2))
    assert overlapped.wall_s < simulate(s).wall_s


def test_packing_slows_each_trial_and_a_lone_trial_runs_at_full_speed():
    s = replace(ONE, trials=2, trials_per_device=2, packing_speed={1: 1.0, 2: 0.5})
    assert simulate(s).wall_s == pytest.approx(5 + 60 + 2)  # two at half speed
    assert simulate(replace(s, trials=1)).wall_s == pytest.approx(37)  # alone: full speed
    # ASHA decides at epoch 1 (after 20 s at half speed): when it stops one trial there, the
    # other trains its last 2 epochs alone at full speed (20 s), else both at half speed (40 s)
    walls = {round(simulate(replace(s, asha_grace=1, seed=seed)).wall_s, 6) for seed in range(6)}
    assert walls == {5 + 20 + 20 + 2, 5 + 20 + 40 + 2}


def test_time_budget_ends_training_mid_epoch():
    r = simulate(replace(ONE, max_train_s=25.0))
    assert r.wall_s == pytest.approx(5 + 25 + 2)
    assert r.epochs_trained == 3  # the last one partial, as fit reports it


def test_asha_rule_matches_tune():
    assert asha_rungs(2, 3, 9) == [2, 6]  # cpu preset: 8 epochs, grace 8 // 3
    assert asha_rungs(6, 3, 21) == [6, 18]  # gpu preset: 20 epochs
    assert asha_continues([], 0.0, 3)  # the first at a rung always continues
    assert not asha_continues([0.5], 0.4, 3) and asha_continues([0.5], 0.5, 3)
    recorded = [0.1, 0.2, 0.3, 0.4]
    cutoff = np.percentile(recorded, 100 * (1 - 1 / 3))
    assert asha_continues(recorded, cutoff, 3) and not asha_continues(recorded, cutoff - 1e-9, 3)


def test_inputs_file_loads_and_every_number_has_a_source():
    import json

    specs = json.loads(INPUTS.read_text())["scenarios"]
    for name, spec in specs.items():
        for key, v in spec.items():
            if key not in ("about", "base", "measured"):
                assert isinstance(v, dict) and v.get("source"), (name, key)
    scenarios = load_inputs(INPUTS)
    assert {"cpu-6", "gpu-64"} <= set(scenarios)
    s, measured = scenarios["cpu-6"]
    assert measured["wall_s"] > 0
    gpu = scenarios["gpu-64"][0]
    assert gpu.devices == 64 and gpu.trials == 512
    # the driver's costs are measured (benchmarks/driver_cost.py), and the cluster inherits them
    assert gpu.driver_trial_s == s.driver_trial_s > 0 and gpu.driver_result_s > 0
    # the study as it runs now: ASHA in the trials, stopped trials evaluate themselves
    assert not scenarios["cpu-18a"][0].rungs_in_driver and s.rungs_in_driver
    # the cluster is the gpu preset as it is: its ASHA setting, and a sampler whose latency
    # (GP) --sampler tpe would replace with TPE's, measured in the same run
    from study.presets import PRESETS

    assert (gpu.asha_grace is not None) == PRESETS["gpu"].asha
    tpe = what_if(gpu, tpe=True)
    assert tpe.optuna_ask_ms == gpu.tpe_ask_ms and max(gpu.tpe_ask_ms) < min(gpu.optuna_ask_ms)


def test_a_slower_sampler_keeps_the_driver_busier():
    # 40 trials of 3 s training on 8 slots: 5 waves, 15 s, when suggestions are quick
    many = replace(ONE, trials=40, devices=8, epoch_s=1.0, startup_s=0.0, eval_s=0.0,
                   optuna_finished=(0, 40),
                   optuna_ask_ms=(2000.0, 2000.0), tpe_ask_ms=(50.0, 50.0),
                   tpe_tell_ms=(5.0, 5.0), optuna_tell_ms=(5.0, 5.0))
    slow, fast = simulate(many), simulate(what_if(many, tpe=True))
    # 40 asks of 2 s, one at a time: the driver, not the 8 slots, sets the pace
    assert slow.driver_busy_s == pytest.approx(40 * 2.005, rel=0.01)
    assert slow.wall_s > 40 * 2 > 20 > fast.wall_s
