"""The flat results table: one row per run, as files and as the input of prediction.

A results store (:mod:`graphprior.store`) keeps each run as a nested record; users,
spreadsheets and regressions want one flat row per run. This module is the one place
that says what such a row holds (:func:`flat_row`, :func:`table_frame`), how a table is
written to and read from CSV or Parquet (:func:`write_table`, :func:`read_frame`), and
how a table of either known format (a store's, or the published tables of Stier et al.
2021) gets the ``cell`` and ``group`` columns that prediction needs (:func:`normalise`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # the store imports this module to build its table
    from graphprior.store import RunRecord

__all__ = ["LEAD_COLUMNS", "TABLE_SUFFIXES", "check_table_path", "flat_row", "normalise", "read_frame",
           "table_frame", "write_table"]

#: The first columns of every row; with ``cell``, ``test_acc`` and ``seconds`` they are the
#: columns of a table without runs.
LEAD_COLUMNS: tuple[str, ...] = ("run_id", "graph_id", "status", "reason")
TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".parquet", ".pq")


def flat_row(record: RunRecord) -> dict[str, Any]:
    """One run as a flat row: ``run_id``, ``graph_id``, ``status``, ``reason``, the flattened
    config (``generator``, graph parameters such as ``n``/``k``/``p``, ``cell``, ``mapping``,
    ...), the structural features, the final epoch's metrics (``epoch``, ``test_acc``, ...,
    ``fit_seconds``, ``cpu_seconds``) and the run's ``seconds``.

    A feature or metric whose name is already a column (or is ``seconds``) gets its own,
    ``feature_<name>`` or ``metric_<name>``, so no value is lost.
    """
    row: dict[str, Any] = dict(zip(LEAD_COLUMNS, (record.run_id, record.graph_id, record.status, record.reason)))
    row.update(record.flat)
    _add_columns(row, record.features, "feature")
    _add_columns(row, record.metrics, "metric")
    row["seconds"] = record.seconds
    return row


def _add_columns(row: dict[str, Any], values: dict[str, Any], kind: str) -> None:
    """Put ``values`` into ``row``, a name already taken (or ``seconds``) as ``<kind>_<name>``."""
    for name, value in values.items():
        row[name if name not in row and name != "seconds" else f"{kind}_{name}"] = value


def table_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """The flat table of some records: one :func:`flat_row` per record, in their order.

    Without records it still has the lead columns, so code reading ``status`` or
    ``test_acc`` of an empty sweep sees an empty column rather than a KeyError.
    """
    frame = pd.DataFrame([flat_row(record) for record in records])
    if frame.empty:
        return pd.DataFrame(columns=[*LEAD_COLUMNS, "cell", "test_acc", "seconds"])
    return frame


def check_table_path(path: str | Path, argument: str = "output") -> Path:
    """``path`` as a Path when it ends in a table suffix (``.csv``, ``.parquet``, ``.pq``),
    else a ValueError naming ``argument``: checked before any work whose result it would hold."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"{argument} must end in .csv, .parquet or .pq, got {path.name!r}")
    return path


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` without its index: CSV for ``.csv``, Parquet for ``.parquet``/``.pq``
    (the folder is created); returns the path."""
    path = check_table_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def read_frame(path: str | Path, argument: str = "source") -> pd.DataFrame:
    """Read a table written by :func:`write_table` (or any CSV/Parquet file)."""
    path = check_table_path(path, argument)
    try:
        return pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except ValueError as error:  # pandas' parser and pyarrow errors name neither file nor argument
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{argument}: {path} is not a readable table ({reason})") from None


def normalise(frame: pd.DataFrame, name: str = "") -> pd.DataFrame:
    """Add ``cell`` and ``group`` columns to a raw table of either known format.

    A results store's table has ``cell`` and ``graph_id``, the content fingerprint of the
    run's graph (and ``status``: only ``done`` runs are kept), so the runs of one graph form
    one group. The study's tables have ``mode`` (e.g. ``RNN_TANH``) and a graph is
    ``(graph, graph_nr)`` within a mode (every cell type was trained on its own graphs).
    Without any graph identifier every run (``run_id``) or row is its own group; ``name``
    keeps the rows of several such tables apart.
    """
    frame = frame.copy()
    if "status" in frame.columns:
        frame = frame[frame["status"] == "done"]
    frame = frame.reset_index(drop=True)
    if "cell" in frame.columns:
        cell = frame["cell"].astype(str).str.lower()
    elif "mode" in frame.columns:
        cell = frame["mode"].astype(str).str.lower()
    else:
        cell = pd.Series("all", index=frame.index)
    if "graph_id" in frame.columns:
        group = frame["graph_id"].astype(str)
    elif {"graph", "graph_nr"} <= set(frame.columns):
        group = cell + "/" + frame["graph"].astype(str) + "/" + frame["graph_nr"].astype(str)
    elif "run_id" in frame.columns:
        group = frame["run_id"].astype(str)
    else:
        group = name + "row" + frame.index.astype(str)
    return frame.assign(cell=cell.to_numpy(), group=group.to_numpy())
