"""The flat results table: rows from records, empty tables, files, normalisation for prediction."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from graphprior.store import RunRecord
from graphprior.table import (
    LEAD_COLUMNS,
    check_table_path,
    flat_row,
    normalise,
    read_frame,
    table_frame,
    write_table,
)


def record(i: int, status: str = "done", graph_id: str | None = "g0") -> RunRecord:
    return RunRecord(
        run_id=f"run{i}", graph_id=graph_id, seed=i, status=status, config={},
        flat={"generator": "watts_strogatz", "n": 10, "cell": "GRU"},
        reason=None if status == "done" else "ValueError: boom",
        metrics={"test_acc": 0.5 + i / 10, "seconds": 9.0} if status == "done" else {},
        features={"density": 0.25, "n": 99.0}, seconds=1.5 + i,
    )


def test_flat_row_orders_lead_config_features_metrics_and_keeps_colliding_names():
    row = flat_row(record(1))
    assert row == {"run_id": "run1", "graph_id": "g0", "status": "done", "reason": None,
                   "generator": "watts_strogatz", "n": 10, "cell": "GRU",
                   "density": 0.25, "feature_n": 99.0, "test_acc": 0.6, "metric_seconds": 9.0, "seconds": 2.5}
    assert list(row)[:4] == list(LEAD_COLUMNS)


def test_table_frame_has_one_row_per_record_and_columns_when_empty():
    frame = table_frame([record(0), record(1, "failed", graph_id=None)])
    assert frame["run_id"].tolist() == ["run0", "run1"]
    assert frame.loc[0, "graph_id"] == "g0" and pd.isna(frame.loc[1, "graph_id"])
    assert pd.isna(frame.loc[0, "reason"]) and frame.loc[1, "reason"] == "ValueError: boom"
    empty = table_frame([])
    assert empty.empty and list(empty.columns) == [*LEAD_COLUMNS, "cell", "test_acc", "seconds"]


@pytest.mark.parametrize("name", ["t.csv", "t.parquet", "t.PQ"])
def test_write_and_read_back(tmp_path, name):
    frame = table_frame([record(0), record(1)])
    path = write_table(frame, tmp_path / "new folder" / name)
    assert path == tmp_path / "new folder" / name and path.is_file()
    pd.testing.assert_frame_equal(read_frame(path).fillna(-1), frame.fillna(-1), check_dtype=False)


def test_other_suffixes_are_refused_naming_the_argument(tmp_path):
    assert check_table_path("a/b.CSV") == Path("a/b.CSV")
    with pytest.raises(ValueError, match="output must end in .csv, .parquet or .pq, got 't.xlsx'"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.xlsx")
    assert not (tmp_path / "t.xlsx").exists()
    with pytest.raises(ValueError, match="source must end in .csv, .parquet or .pq, got 'runs.txt'"):
        read_frame(tmp_path / "runs.txt")


def test_normalise_a_store_table_keeps_done_runs_grouped_by_graph():
    frame = table_frame([record(0), record(1), record(2, "failed", graph_id=None)])
    frame.loc[1, "graph_id"] = "g1"
    out = normalise(frame)
    assert out["run_id"].tolist() == ["run0", "run1"]
    assert out["cell"].tolist() == ["gru", "gru"] and out["group"].tolist() == ["g0", "g1"]
    assert "cell" in frame.columns and "group" not in frame.columns  # the input is left alone


def test_normalise_the_study_tables_groups_by_mode_graph_and_number():
    study = pd.DataFrame({"mode": ["RNN_TANH", "RNN_TANH", "GRU"], "graph": ["ba", "ba", "ba"],
                          "graph_nr": [3, 3, 3], "test_acc": [0.5, 0.6, 0.7]})
    out = normalise(study)
    assert out["cell"].tolist() == ["rnn_tanh", "rnn_tanh", "gru"]
    assert out["group"].tolist() == ["rnn_tanh/ba/3", "rnn_tanh/ba/3", "gru/ba/3"]


def test_normalise_without_graph_ids_makes_every_run_or_row_a_group():
    assert normalise(pd.DataFrame({"run_id": ["a", "b"], "x": [1, 2]}))["group"].tolist() == ["a", "b"]
    rows = normalise(pd.DataFrame({"x": [1, 2]}), name="0:")
    assert rows["group"].tolist() == ["0:row0", "0:row1"] and rows["cell"].tolist() == ["all", "all"]
