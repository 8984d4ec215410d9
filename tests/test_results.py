"""The results table: atomic writes (a crash mid-write leaves the old table), upserts, rows."""

import pandas as pd
import pytest

from study.results import finished_rows, read_results, upsert, write_atomic
from study.rows import COLUMNS


def test_upsert_inserts_and_replaces(tmp_path):
    upsert(tmp_path, {"trial_id": "a", "status": "ok", "quality": 0.5})
    upsert(tmp_path, {"trial_id": "b", "status": "failed", "error": "boom"})
    df = upsert(tmp_path, {"trial_id": "a", "status": "ok", "quality": 0.9})
    again = read_results(tmp_path)
    assert list(again.columns) == COLUMNS and len(again) == 2
    assert again.set_index("trial_id").loc["a", "quality"] == 0.9
    assert again.set_index("trial_id").loc["b", "error"] == "boom"
    assert len(df) == 2


def test_crash_during_write_keeps_the_old_table(tmp_path, monkeypatch):
    upsert(tmp_path, {"trial_id": "a", "status": "ok", "quality": 0.5})
    before = (tmp_path / "results.csv").read_bytes()

    def crash(self, f, **kw):
        f.write("trial_id,sta")  # half a header, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", crash)
    with pytest.raises(KeyboardInterrupt):
        upsert(tmp_path, {"trial_id": "b", "status": "ok"})
    assert (tmp_path / "results.csv").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temp file left


def test_upsert_keeps_exactly_the_columns(tmp_path):
    df = upsert(tmp_path, {"trial_id": "x", "unexpected": 1})
    assert list(df.columns) == COLUMNS and df["quality"].isna().all()


def test_write_atomic_roundtrip(tmp_path):
    df = pd.DataFrame([{"trial_id": "t", "lr": 1e-3}], columns=COLUMNS)
    write_atomic(df, tmp_path / "r.csv")
    assert pd.read_csv(tmp_path / "r.csv")["lr"].iloc[0] == 1e-3


def test_all_digit_trial_ids_stay_strings(tmp_path):
    """Tune's hex trial ids are sometimes all digits: read back, they must still match."""
    upsert(tmp_path, {"trial_id": "92990835", "status": "ok"})
    upsert(tmp_path, {"trial_id": "bf51eb8b", "status": "ok", "confirm_of": "92990835"})
    df = read_results(tmp_path)
    assert list(df["trial_id"]) == ["92990835", "bf51eb8b"]
    assert df["confirm_of"].iloc[1] == "92990835"
    assert set(finished_rows(tmp_path)) == {"92990835", "bf51eb8b"}
