"""Results store: inserts, resume semantics, format errors, concurrent readers, table export."""

from __future__ import annotations

import math
import subprocess
import sqlite3
import threading

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphprior.store import (SCHEMA_VERSION, ResultsStore, RunRecord, StoreError, export_table, read_table,
                              store_errors)


def record(i: int, status: str = "done", **changes) -> RunRecord:
    values = dict(
        run_id=f"run{i:04d}", graph_id=f"g{i // 2}", seed=i, status=status,
        config={"generator": "watts_strogatz", "params": {"n": 10 + i}},
        flat={"generator": "watts_strogatz", "n": 10 + i, "cell": "lstm" if i % 2 else "gru"},
        reason=None if status == "done" else "ValueError: boom",
        metrics={"test_acc": 0.5 + i / 1000, "test_loss": 0.7} if status == "done" else {},
        history=[{"epoch": 1, "test_acc": 0.5}] if status == "done" else [],
        features={"density": 0.25, "n": 99.0}, seconds=1.5 + i, versions={"torch": "x"},
    )
    values.update(changes)
    return RunRecord(**values)


def test_add_and_read_back(tmp_path):
    path = tmp_path / "new folder" / "r.db"
    with ResultsStore(path) as store:
        assert store.add(record(0)) and store.add(record(1)) and store.add(record(2, "failed"))
        assert store.counts() == {"done": 2, "failed": 1}
        assert store.mean_seconds() == pytest.approx(2.0)
        stored = {r.run_id: r for r in store.records()}
    assert stored["run0001"] == record(1)
    table = read_table(path)
    assert list(table.columns[:4]) == ["run_id", "graph_id", "status", "reason"]
    row = table.set_index("run_id").loc["run0001"]
    assert (row.cell, row.n, row.test_acc, row.seconds) == ("lstm", 11, 0.501, 2.5)
    assert list(table.columns[4:7]) == ["generator", "n", "cell"]  # config columns in config order
    # a feature whose name collides with a config column keeps both
    assert row.feature_n == 99.0 and row.density == 0.25
    assert table.set_index("run_id").loc["run0002", "reason"] == "ValueError: boom"


def test_done_is_never_overwritten_failed_is_replaced(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        store.add(record(0))
        assert not store.add(record(0, seconds=99.0))
        store.add(record(1, "failed"))
        assert store.add(record(1))
        assert store.statuses() == {"run0000": "done", "run0001": "done"}
        assert [r.seconds for r in store.records() if r.run_id == "run0000"] == [1.5]


def test_non_finite_metrics_are_stored_as_null(tmp_path):
    path = tmp_path / "r.db"
    with ResultsStore(path) as store:
        store.add(record(0, "failed", metrics={"test_loss": math.nan}, history=[{"loss": math.inf}]))
    assert pd.isna(read_table(path).loc[0, "test_loss"])


def test_not_a_store_and_newer_schema_errors(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("hello, this is not sqlite " * 100)
    with pytest.raises(StoreError, match="notes.db is not a graphprior results store"):
        ResultsStore(text)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(StoreError, match="other.db is not a graphprior results store"):
        read_table(other)
    newer = tmp_path / "newer.db"
    ResultsStore(newer).close()
    with sqlite3.connect(newer) as connection:
        connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}; this graphprior reads up to "
                                         f"{SCHEMA_VERSION}: upgrade graphprior"):
        ResultsStore(newer)
    with pytest.raises(StoreError, match="no such results store"):
        read_table(tmp_path / "missing.db")
    with pytest.raises(StoreError, match="is a directory"):
        ResultsStore(tmp_path)
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreError, match="empty.db: an empty file, not a results store"):
        read_table(empty)
    assert empty.stat().st_size == 0  # reading never writes a schema into a stranger's file


def test_concurrent_reader_while_writing(tmp_path):
    path = tmp_path / "r.db"
    ResultsStore(path).close()
    seen: list[int] = []
    failures: list[BaseException] = []

    def read_repeatedly():
        try:
            for _ in range(30):
                seen.append(len(read_table(path)))
        except BaseException as error:  # noqa: BLE001 -- reported below
            failures.append(error)

    reader = threading.Thread(target=read_repeatedly)
    with ResultsStore(path) as store:
        reader.start()
        for i in range(60):
            store.add(record(i))
        reader.join()
    assert not failures
    assert seen == sorted(seen) and 0 <= seen[0] and seen[-1] <= 60
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def nulls_as_none(frame: pd.DataFrame) -> pd.DataFrame:
    """CSV cannot tell None from NaN: compare missing values as None."""
    return frame.astype(object).where(frame.notna(), None)


@settings(max_examples=10, deadline=None)
@given(statuses=st.lists(st.sampled_from(["done", "failed"]), min_size=1, max_size=8))
def test_export_round_trips_csv_and_parquet(tmp_path_factory, statuses):
    folder = tmp_path_factory.mktemp("export")
    with ResultsStore(folder / "r.db") as store:
        for i, status in enumerate(statuses):
            store.add(record(i, status))
    table = read_table(folder / "r.db")
    assert len(table) == len(statuses) and table.run_id.is_unique
    for name in ("t.csv", "t.parquet"):
        export_table(folder / "r.db", folder / name)
        back = pd.read_csv(folder / name) if name.endswith(".csv") else pd.read_parquet(folder / name)
        pd.testing.assert_frame_equal(nulls_as_none(back), nulls_as_none(table), check_dtype=False)


def test_export_rejects_unknown_suffix(tmp_path):
    ResultsStore(tmp_path / "r.db").close()
    with pytest.raises(ValueError, match=r"output must end in .csv, .parquet or .pq, got 't.xlsx'"):
        export_table(tmp_path / "r.db", tmp_path / "t.xlsx")


def test_a_record_without_a_graph_round_trips_through_the_not_null_column(tmp_path):
    path = tmp_path / "r.db"
    with ResultsStore(path) as store:
        store.add(record(0))
        store.add(record(1, "failed", graph_id=None))
        assert {r.run_id: r.graph_id for r in store.records()} == {"run0000": "g0", "run0001": None}
    with sqlite3.connect(path) as connection:  # the column stays NOT NULL, as in every store so far
        assert connection.execute("SELECT graph_id FROM runs ORDER BY run_id").fetchall() == [("g0",), ("",)]
    table = read_table(path).set_index("run_id")
    assert table.loc["run0000", "graph_id"] == "g0" and pd.isna(table.loc["run0001", "graph_id"])


def test_a_failed_run_records_its_graphs_fingerprint_or_none_when_it_has_no_graph(tmp_path):
    from graphprior.generators import generate, graph_fingerprint
    from graphprior.spec import RunConfig, expand
    from graphprior.sweep import guarded

    def boom(config):
        raise RuntimeError("boom")

    spec = {"name": "fails", "tasks": [{"kind": "classify", "size": 40}], "model": {"cells": ["gru"]},
            "generators": [{"name": "watts_strogatz", "params": {"n": 6, "k": 2, "p": 0.5}}]}
    (drawn,) = expand(spec)
    # k odd: no graph (a spec refuses it; a config made by hand reaches the generator)
    undrawable = RunConfig.model_validate({**drawn.model_dump(), "params": {"n": 6, "k": 3, "p": 0.5}})
    records = [guarded(boom, config) for config in (drawn, undrawable)]
    assert [r.status for r in records] == ["failed", "failed"]
    expected = graph_fingerprint(generate("watts_strogatz", n=6, k=2, p=0.5, seed=drawn.graph_seed))
    assert [r.graph_id for r in records] == [expected, None]
    with ResultsStore(tmp_path / "r.db") as store:
        for r in records:
            store.add(r)
        assert sorted(store.records(), key=lambda r: r.run_id) == sorted(records, key=lambda r: r.run_id)


# --------------------------------------------------------------------------- filesystem faults (issue 19)

def _stored(path, n: int = 40):
    with ResultsStore(path) as store:
        for i in range(n):
            store.add(record(i, history=[{"epoch": e, "test_acc": 0.5} for e in range(50)]))
    return path


def _damage(path) -> None:
    """Overwrite the start of every data page after the first two (the schema stays readable)."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for offset in range(2 * page, len(data), page):
        data[offset:offset + 64] = b"\x07" * 64
    path.write_bytes(bytes(data))


def test_a_damaged_store_is_one_line_saying_so(tmp_path):
    path = _stored(tmp_path / "r.db")
    _damage(path)
    with pytest.raises(StoreError, match=r"r.db is damaged \(database disk image is malformed\): recover it"):
        read_table(path)
    with pytest.raises(StoreError, match="is damaged"):
        with ResultsStore(path) as store, store_errors(path):
            store.statuses()


def test_a_store_where_no_folder_can_be_made_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StoreError, match=r"file/r.db cannot be opened \(.*\): check that its folder"):
        ResultsStore(tmp_path / "file" / "r.db")


@pytest.fixture
def immutable(tmp_path):
    """Make paths immutable (chattr +i, which binds root too); undone after the test."""
    made = []

    def make(path):
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here")
        made.append(path)
        return path

    yield make
    for path in reversed(made):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def test_a_store_on_a_read_only_folder_is_read_read_only(tmp_path, immutable):
    folder = tmp_path / "ro"
    path = _stored(folder / "r.db", n=4)
    immutable(folder)  # no -wal/-shm file can be made beside it, as on a read-only filesystem
    assert len(read_table(path)) == 4
    with ResultsStore(path, readonly=True) as store:
        assert store.counts()["done"] == 4


def test_a_read_only_store_with_unmerged_records_says_so_instead_of_losing_them(tmp_path, immutable):
    """A sweep killed before SQLite merged its write-ahead log leaves records in ``-wal``;
    read without it (``immutable=1``) they would be silently missing."""
    import shutil
    import sqlite3

    source = _stored(tmp_path / "src" / "r.db", n=2)
    writer = sqlite3.connect(source)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("INSERT INTO meta (key, value) VALUES ('note', 'unmerged')")  # a write that stays in the WAL
    writer.commit()
    folder = tmp_path / "ro"
    folder.mkdir()
    for suffix in ("", "-wal"):
        shutil.copy(f"{source}{suffix}", folder / f"r.db{suffix}")
    writer.close()
    assert (folder / "r.db-wal").stat().st_size > 0
    immutable(folder)
    with pytest.raises(StoreError, match=r"has records not yet merged into it \(r.db-wal\)"):
        ResultsStore(folder / "r.db", readonly=True)


def test_an_immutable_store_with_pending_runs_is_refused_before_training(tmp_path, immutable):
    from graphprior.executors import SerialExecutor
    from graphprior.spec import expand, load_preset
    from graphprior.sweep import store_runs

    path = immutable(_stored(tmp_path / "r.db", n=2))
    trained = []

    def train(group):
        trained.extend(group)
        return []

    runs = expand(load_preset("quick"))[:3]
    with pytest.raises(StoreError, match=r"r.db cannot be written \(attempt to write a readonly database\)"):
        store_runs(runs, path, train, SerialExecutor(), progress=False)
    assert trained == []
