"""SQLite results store: one row per finished run, keyed by its ``run_id``.

Why SQLite: an embedded file next to the user's work, transactional writes (a sweep
killed at any moment, SIGKILL included, loses at most the runs in flight), and
concurrent readers while the sweep writes (WAL journal mode). Only the sweep's driver
process writes; a row is inserted once its run has finished, one transaction per record,
so re-running a sweep skips what is already there and never duplicates.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from graphprior.table import check_table_path, table_frame, write_table

SCHEMA_VERSION = 1
FORMAT_NAME = "graphprior-results"
STATUSES = ("done", "failed")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS runs (
    run_id   TEXT PRIMARY KEY,
    graph_id TEXT NOT NULL,
    seed     INTEGER NOT NULL,
    status   TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    reason   TEXT,
    config   TEXT NOT NULL,
    flat     TEXT NOT NULL,
    metrics  TEXT NOT NULL,
    history  TEXT NOT NULL,
    features TEXT NOT NULL,
    seconds  REAL NOT NULL,
    versions TEXT NOT NULL,
    finished TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
)

_COLUMNS = ("run_id", "graph_id", "seed", "status", "reason", "config", "flat", "metrics",
            "history", "features", "seconds", "versions")
_JSON_COLUMNS = ("config", "flat", "metrics", "history", "features", "versions")
_NO_GRAPH = ""  # a graph_id of None, in a column that every store since version 1 declares NOT NULL


class StoreError(ValueError):
    """A file is not a graphprior results store, or one this version cannot read."""


@dataclass
class RunRecord:
    """The outcome of one run, as stored: config, status, metrics, history, features, timing.

    ``graph_id`` is the content fingerprint of the run's graph
    (``graphprior.generators.graph_fingerprint``; ``graphprior.sweep.graph_id`` for per-gate
    graphs), None for a failed run whose graph could not be drawn.
    """

    run_id: str
    graph_id: str | None
    seed: int
    status: str
    config: dict[str, Any]
    flat: dict[str, Any]
    reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    features: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


def _dumps(value: Any) -> str:
    """JSON with non-finite floats stored as null (SQLite/JSON have no NaN)."""
    return json.dumps(_finite(value))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _check_format(connection: sqlite3.Connection, path: Path) -> bool:
    """Raise StoreError unless the file is empty or a readable store; True when it is a store."""
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as error:
        if isinstance(error, sqlite3.OperationalError) or "malformed" in str(error):
            raise store_error(path, error) from None
        raise StoreError(f"{path} is not a graphprior results store ({error})") from None
    if not tables:
        return False
    meta = dict(connection.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
    if meta.get("format") != FORMAT_NAME or "runs" not in tables:
        raise StoreError(f"{path} is not a graphprior results store (an SQLite file with other tables)")
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has results-store schema version {version}; this graphprior reads up to "
            f"{SCHEMA_VERSION}: upgrade graphprior to read it"
        )
    return True


def store_error(path: Path, error: sqlite3.Error | OSError) -> StoreError:
    """One line for a store that cannot be opened, read or written: what and what to do."""
    detail = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    if "malformed" in detail:
        return StoreError(f"{path} is damaged ({detail}): recover it with `sqlite3 {path} .recover`, "
                          "or run the sweep into a new --store")
    if "readonly" in detail or "read-only" in detail or isinstance(error, PermissionError):
        return StoreError(f"{path} cannot be written ({detail}): make it and its folder writable, "
                          "or choose another --store")
    if "locked" in detail:
        return StoreError(f"{path} is locked by another process ({detail}): wait for it and retry")
    return StoreError(f"{path} cannot be opened ({detail}): check that its folder exists and is "
                      "writable, or choose another --store")


@contextmanager
def store_errors(path: str | Path) -> Iterator[None]:
    """Turn SQLite's and the filesystem's errors on the store at ``path`` into :func:`store_error`."""
    try:
        yield
    except (sqlite3.Error, OSError) as error:
        raise store_error(Path(path), error) from error


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection to ``path``; a read-only one reads a store on a read-only filesystem too
    (``mode=ro``, else ``immutable=1`` where SQLite cannot make its shared-memory file)."""
    if not readonly:
        return sqlite3.connect(path, timeout=30.0, isolation_level=None)
    uri = f"{path.resolve().as_uri()}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
    try:
        connection.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError:
        connection.close()
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:  # immutable=1 would not read these records
            raise StoreError(f"{path} has records not yet merged into it ({wal.name}) and its folder is read-only: "
                             "open it once where the folder is writable (any graphprior command does)") from None
        return sqlite3.connect(f"{uri}&immutable=1", uri=True, timeout=30.0, isolation_level=None)
    except sqlite3.DatabaseError:
        pass  # not an SQLite file at all: _check_format says so
    return connection


class ResultsStore:
    """A results store file, opened for reading and (by the sweep driver) writing.

    ``ResultsStore(path)`` creates the file (and its folder) when it does not exist
    (``create=False`` raises instead); ``readonly=True`` opens an existing store for reading
    only, wherever it lies. Every failure to open it is a :class:`StoreError` of one line.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | Path, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists() and (not create or readonly):
            raise StoreError(f"{self.path}: no such results store")
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a results store file")
        with store_errors(self.path):
            if not readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = _connect(self.path, readonly)
        try:
            with store_errors(self.path):
                if not _check_format(self._connection, self.path):
                    if not create or readonly:
                        raise StoreError(f"{self.path}: an empty file, not a results store")
                    self._initialise()
        except BaseException:
            self._connection.close()
            raise

    def check_writable(self) -> None:
        """Raise :class:`StoreError` unless a record could be written now (a sweep asks before
        training, not after its first run)."""
        with store_errors(self.path):
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                self._connection.execute("UPDATE meta SET value = value WHERE key = 'format'")
            finally:
                self._connection.execute("ROLLBACK")

    def _initialise(self) -> None:
        connection = self._connection
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        with self._transaction():
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT_NAME,))
            connection.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._connection)

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()

    def add(self, record: RunRecord) -> bool:
        """Insert one finished run in its own transaction; returns False when it was already stored.

        A stored failed run is replaced by a new record of the same run (a retry); a stored
        done run is never overwritten.
        """
        values = asdict(record)
        values["graph_id"] = _NO_GRAPH if record.graph_id is None else record.graph_id
        row = tuple(_dumps(values[c]) if c in _JSON_COLUMNS else values[c] for c in _COLUMNS)
        placeholders = ", ".join("?" for _ in _COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
        with self._transaction():
            cursor = self._connection.execute(
                f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
                f"ON CONFLICT(run_id) DO UPDATE SET {updates}, finished = excluded.finished "
                "WHERE runs.status = 'failed'",
                row,
            )
        return cursor.rowcount > 0

    def statuses(self) -> dict[str, str]:
        """run_id -> status of every stored run."""
        return dict(self._connection.execute("SELECT run_id, status FROM runs"))

    def counts(self) -> dict[str, int]:
        """Number of stored runs per status."""
        counts = dict.fromkeys(STATUSES, 0)
        counts.update(self._connection.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"))
        return counts

    def mean_seconds(self) -> float | None:
        """Mean seconds of a whole finished (done) run, None when there are none."""
        return self._connection.execute("SELECT AVG(seconds) FROM runs WHERE status = 'done'").fetchone()[0]

    def records(self) -> Iterable[RunRecord]:
        """Every stored run as a :class:`RunRecord`."""
        cursor = self._connection.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs ORDER BY finished, run_id")
        for row in cursor:
            values = dict(zip(_COLUMNS, row))
            for column in _JSON_COLUMNS:
                values[column] = json.loads(values[column])
            values["graph_id"] = values["graph_id"] or None
            yield RunRecord(**values)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (autocommit connections)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.connection.execute("COMMIT" if exc_type is None else "ROLLBACK")


def read_table(path: str | Path) -> pd.DataFrame:
    """The flat results table of a store: one row per run (``graphprior.table.flat_row``)."""
    with ResultsStore(path, create=False, readonly=True) as store, store_errors(path):
        return table_frame(store.records())


def export_table(store_path: str | Path, output: str | Path) -> pd.DataFrame:
    """Write the flat table to ``output``: CSV for ``.csv``, Parquet for ``.parquet``/``.pq``."""
    output = check_table_path(output)
    frame = read_table(store_path)
    write_table(frame, output)
    return frame
