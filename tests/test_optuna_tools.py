"""Optuna's own tools on a finished study's stored ``optuna.db``, as a user opens it after a run:
``optuna.load_study`` and optuna-dashboard (the ``dashboard`` extra:
``pip install -e '.[dashboard]'``, then ``optuna-dashboard sqlite:///runs/<name>/optuna.db``).
The dashboard is called as the WSGI application its server runs, so no port is opened."""

import json
from wsgiref.util import setup_testing_defaults

import pandas as pd
import pytest

from study.layout import ID_DTYPES, StudyLayout
from study.search_space import AXES


def _first_seeds(study_dir) -> pd.DataFrame:
    """The search's own trials (confirmation runs are not Optuna trials)."""
    table = pd.read_csv(study_dir / "results.csv", dtype=ID_DTYPES)
    return table[table["confirm_of"].isna()]


@pytest.mark.slow
def test_stored_study_opens_with_optuna_load_study(smoke_study):
    import optuna

    storage = f"sqlite:///{StudyLayout(smoke_study).optuna_db}"
    study = optuna.load_study(study_name="smoke", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    rows = _first_seeds(smoke_study)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE,
                                optuna.study.StudyDirection.MINIMIZE]
    assert study.metric_names == ["quality", "train_cost_s"]  # what optuna-dashboard shows
    assert len(study.trials) == len(done) == len(rows) == 2
    # each trial's objectives are its row's quality (up) and training seconds (down)
    told = [v for t in sorted(done, key=lambda t: t.values) for v in t.values]
    table = sorted(zip(rows["quality"], rows["train_cost_s"], strict=True))
    assert told == pytest.approx([v for pair in table for v in pair])
    assert all(set(t.params) <= set(AXES) and "lr" in t.params for t in done)
    assert 1 <= len(study.best_trials) <= 2  # its Pareto front
    assert study.user_attrs["study_dir"] == str(smoke_study)  # the directory that owns it


def _get(app, path: str) -> tuple[str, bytes]:
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    return status[0], body


@pytest.mark.slow
def test_stored_study_opens_in_optuna_dashboard(smoke_study):
    dashboard = pytest.importorskip("optuna_dashboard",
                                    reason="pip install -e '.[dashboard]'")
    app = dashboard.wsgi(f"sqlite:///{StudyLayout(smoke_study).optuna_db}")
    status, page = _get(app, "/dashboard")  # the page a browser opens
    assert status.startswith("200") and b"<title>Optuna Dashboard</title>" in page
    status, body = _get(app, "/api/studies")  # its study list
    assert status.startswith("200")
    (summary,) = json.loads(body)["study_summaries"]
    assert summary["study_name"] == "smoke"
    assert summary["directions"] == ["maximize", "minimize"]
    status, body = _get(app, f"/api/studies/{summary['study_id']}")  # history, Pareto front
    detail = json.loads(body)
    assert status.startswith("200") and len(detail["trials"]) == len(_first_seeds(smoke_study))
    assert all(t["state"] == "Complete" and len(t["values"]) == 2 for t in detail["trials"])
    assert 1 <= len(detail["best_trials"]) <= 2
