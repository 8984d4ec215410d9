"""Confirmation runs start as soon as their front point is final (study/confirm.py), in the
search's own Tuner (study/search.py)."""

import optuna
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from ray.tune.search import Searcher

from analysis.tables import pareto_front
from study.confirm import ConfirmPlan
from study.presets import SamplerConfig


def _row(trial_id, quality, cost, wall=None, confirm_of=None, seed=0, stop="completed"):
    return {"trial_id": trial_id, "quality": quality, "train_cost_s": cost,
            "trial_wall_s": wall or cost + 30, "confirm_of": confirm_of, "seed": seed,
            "stop_reason": stop, "depth": 3, "width": 8, "lr": 1e-3, "style": False}


def test_front_points_cheaper_than_every_running_trial_are_ready_longest_first():
    rows = pd.DataFrame([_row("cheap", 0.1, 40), _row("mid", 0.3, 90, wall=200),
                         _row("dear", 0.5, 150), _row("worse", 0.2, 100),
                         _row("stopped", 0.9, 20, stop="asha")])
    plan = ConfirmPlan(seeds=(1, 2))
    assert plan.planned(rows) == 6  # cheap, mid, dear: ASHA's stop and the dominated are not
    # a running trial that has trained 95 s can still beat "dear", not the two cheaper points
    ready = plan.ready(rows, spent=[120.0, 95.0])
    assert [(r["confirm_of"], r["seed"]) for r in ready] == [
        ("mid", 1), ("mid", 2), ("cheap", 1), ("cheap", 2)]
    assert ready[0] == {"depth": 3, "width": 8, "lr": 1e-3, "style": False, "seed": 1,
                        "confirm_of": "mid"}
    assert plan.ready(rows, spent=[0.0]) == []  # a trial that has not trained: wait
    # without running trials everything is final; recorded and handed-out runs are not again
    done = pd.concat([rows, pd.DataFrame([_row("c", 0.3, 90, confirm_of="mid", seed=1)])])
    assert [(r["confirm_of"], r["seed"]) for r in plan.ready(done, issued={("dear", 2)})] == [
        ("mid", 2), ("dear", 1), ("cheap", 1), ("cheap", 2)]
    assert plan.ready(pd.DataFrame()) == []
    assert ConfirmPlan.for_study(seed=4, confirm_seeds=2) == ConfirmPlan((5, 6))
    assert ConfirmPlan.for_study(seed=4, confirm_seeds=0) is None


points = st.tuples(st.floats(0, 1), st.floats(1, 300))


@settings(max_examples=300, deadline=None)
@given(st.lists(points, min_size=1, max_size=8), st.lists(points, max_size=3), st.data())
def test_a_ready_point_stays_on_the_front_whatever_the_running_trials_score(done, running,
                                                                           data):
    rows = pd.DataFrame([_row(f"t{i}", q, c) for i, (q, c) in enumerate(done)])
    # each running trial has spent up to its final cost so far
    spent = [data.draw(st.floats(0, cost)) for _, cost in running]
    ready = {r["confirm_of"] for r in ConfirmPlan((1,)).ready(rows, spent)}
    final = pd.concat([rows, pd.DataFrame([_row(f"r{i}", q, c)
                                           for i, (q, c) in enumerate(running)])])
    assert ready <= set(pareto_front(final)["trial_id"])
    if not running:  # nothing can change: the whole front is ready
        assert ready == set(pareto_front(rows)["trial_id"])


def test_searcher_hands_out_confirmations_when_final_then_finishes(tmp_path):
    """Tune's calls to the study's searcher: 3 search trials, then the confirmations of the
    front, each once no running trial has trained less than its point cost."""
    from study.run import build_spec, parse_args
    from study.search import StudySearch
    from study.spec import Sizing, StudyRecord

    spec = build_spec(parse_args(["--preset", "cpu", "--dataset", "digits", "--no-clip",
                                  "--address", "auto", "--output-dir", str(tmp_path),
                                  "--name", "conf", "--num-trials", "3"]))
    spec.layout.root.mkdir(parents=True)
    StudyRecord(spec, Sizing(2, 0.99)).save(spec.layout)
    search = StudySearch(study_dir=spec.study_dir, study_name=spec.name, seed=0,
                         sampler_config=SamplerConfig("random"), num_trials=3,
                         confirm=ConfirmPlan.for_study(0, 1),
                         storage=optuna.storages.RDBStorage(spec.storage))
    search.set_search_properties(None, None, spec.space.to_tune())
    configs = {tid: search.suggest(tid) for tid in ("t1", "t2")}

    def complete(tid, quality, cost):
        search.on_trial_complete(tid, {
            "final": True, "stop_reason": "completed", "epoch": 8, "train_seconds": cost,
            "coverage": quality, "images_seen": 1, "time_total_s": cost + 30,
            **{f"config/{k}": v for k, v in configs[tid].items()}})

    search.on_trial_result("t2", {"train_seconds": 10.0})
    complete("t1", 0.3, 40.0)
    configs["t3"] = search.suggest("t3")  # Optuna's third and last
    assert search.suggest("c1") is None  # t3 has trained nothing yet: it may still beat t1
    search.on_trial_result("t3", {"train_seconds": 60.0})
    search.on_trial_result("t2", {"train_seconds": 45.0})
    first = search.suggest("c1")  # both have trained longer than t1 cost: t1 is final
    assert first["fixed"]["confirm_of"] == "t1" and first["fixed"]["seed"] == 1
    assert {k: first[k] for k in ("depth", "width", "lr")} == \
        {k: configs["t1"][k] for k in ("depth", "width", "lr")}
    assert search.suggest("c2") is None  # nothing else is final yet
    complete("t2", 0.5, 100.0)
    complete("t3", 0.1, 30.0)
    rest = [search.suggest(tid)["fixed"]["confirm_of"] for tid in ("c2", "c3")]
    assert rest == ["t2", "t3"]  # the longest first
    assert search.suggest("c4") == Searcher.FINISHED
    search.on_trial_complete("c1", {"final": True})  # a confirmation is no Optuna trial
    trials = optuna.load_study(study_name="conf", storage=spec.storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
