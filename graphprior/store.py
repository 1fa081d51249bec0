"""SQLite results store: one row per finished run, keyed by its ``run_id``.

Why SQLite: an embedded file next to the user's work, transactional writes (a sweep
killed at any moment, SIGKILL included, loses at most the runs in flight), and
concurrent readers while the sweep writes (WAL journal mode). Only sweep drivers write
(never their workers; except ``graphprior prune``'s local workers, which add each record
as it is done: the driver's later ``add`` finds it stored); a row is inserted once its run
has finished, one transaction per record, so re-running a sweep skips what is already
there and never duplicates.

Several drivers may share one store (terminals, a cluster job array on a disk where SQLite
locking works): before training, a driver *claims* its runs in the ``claims`` table in one
transaction and refreshes the claims' heartbeat while it trains (:class:`Heartbeat`);
storing a record drops its claim in the same transaction. A claim whose heartbeat is older
than the store's claim timeout (:meth:`ResultsStore.claim_timeout`) belongs to a dead
driver and may be taken over, so each run is trained once and a killed driver's runs are
picked up by the others.
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

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

_CLAIMS_SCHEMA = """CREATE TABLE IF NOT EXISTS claims (
    run_id       TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    claimed_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL
    )"""
CLAIM_TIMEOUT = 60.0
"""Seconds without a heartbeat after which a claim is stale (its driver presumed dead); a
store may set its own (:meth:`ResultsStore.set_claim_timeout`). Drivers beat every sixth of it."""
_LOCK_RETRY_SECONDS = 30.0

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
        _retry_locked(lambda: connection.execute("PRAGMA journal_mode=WAL").fetchall())
        connection.execute("PRAGMA synchronous=NORMAL")
        with self._transaction():
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT_NAME,))
            connection.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            connection.execute(_CLAIMS_SCHEMA)

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._connection)

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()

    def add(self, record: RunRecord, owner: str | None = None) -> bool:
        """Insert one finished run in its own transaction; returns False when it was already stored.

        A stored failed run is replaced by a new record of the same run (a retry); a stored
        done run is never overwritten. With ``owner``, that owner's claim on the run is
        dropped in the same transaction.
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
            added = cursor.rowcount > 0
            if owner is not None and self._has_claims():
                self._connection.execute("DELETE FROM claims WHERE run_id = ? AND owner = ?", (record.run_id, owner))
        return added

    def stored(self) -> dict[str, tuple[str, str]]:
        """run_id -> (status, finished) of every stored run: a record that changed since an
        earlier call has another ``finished`` time."""
        return {run_id: (status, finished)
                for run_id, status, finished in self._connection.execute("SELECT run_id, status, finished FROM runs")}

    # ----------------------------------------------------------------------------- claims

    def claim_timeout(self) -> float:
        """Seconds without a heartbeat after which a claim of this store is stale."""
        row = self._connection.execute("SELECT value FROM meta WHERE key = 'claim_timeout'").fetchone()
        return CLAIM_TIMEOUT if row is None else float(row[0])

    def set_claim_timeout(self, seconds: float) -> None:
        """Set this store's claim timeout: every driver sharing the store judges staleness by it.
        Raise it where a shared disk can stall a driver's heartbeat for long (default 60 s)."""
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"claim timeout must be a positive number of seconds, got {seconds!r}")
        with self._transaction():
            self._connection.execute("INSERT OR REPLACE INTO meta VALUES ('claim_timeout', ?)", (repr(float(seconds)),))

    def _has_claims(self) -> bool:
        return self._connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'claims'").fetchone() is not None

    def claims(self) -> list["Claim"]:
        """Every claim in the store (live or stale), oldest first."""
        if not self._has_claims():
            return []
        rows = self._connection.execute(
            "SELECT run_id, owner, claimed_at, heartbeat_at FROM claims ORDER BY claimed_at, run_id")
        return [Claim(*row) for row in rows]

    def claim(self, owner: str, choose: Callable[[dict[str, tuple[str, str]], set[str]], Sequence[str]],
              now: float | None = None) -> list[str]:
        """Claim runs for ``owner`` in one transaction, so two drivers never claim the same run.

        ``choose(stored, taken)`` gets :meth:`stored` and the run ids under a live claim of
        another owner, and returns the run ids to claim; a stale claim on one of them is taken
        over. Returns the claimed run ids.
        """
        now = time.time() if now is None else now
        timeout = self.claim_timeout()
        with self._transaction():
            self._connection.execute(_CLAIMS_SCHEMA)  # stores made before claims existed
            taken = {run_id for (run_id,) in self._connection.execute(
                "SELECT run_id FROM claims WHERE owner != ? AND heartbeat_at >= ?", (owner, now - timeout))}
            chosen = [run_id for run_id in choose(self.stored(), taken) if run_id not in taken]
            self._connection.executemany("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)",
                                         [(run_id, owner, now, now) for run_id in chosen])
        return chosen

    def heartbeat(self, owner: str, now: float | None = None) -> int:
        """Refresh the heartbeat of ``owner``'s claims; returns how many it holds."""
        now = time.time() if now is None else now
        with self._transaction():
            cursor = self._connection.execute("UPDATE claims SET heartbeat_at = ? WHERE owner = ?", (now, owner))
        return cursor.rowcount

    def release(self, owner: str) -> None:
        """Drop every claim of ``owner`` (a driver that stops leaves no claims behind)."""
        if self._has_claims():
            with self._transaction():
                self._connection.execute("DELETE FROM claims WHERE owner = ?", (owner,))

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
            yield _record(row)

    def records_for(self, run_ids: Iterable[str]) -> dict[str, RunRecord]:
        """The stored records of ``run_ids`` by run id (ids not stored are left out); a search
        reads its candidates' results this way without reading the whole store."""
        wanted = set(run_ids)
        found: dict[str, RunRecord] = {}
        for chunk in [sorted(wanted)[i:i + 500] for i in range(0, len(wanted), 500)]:
            marks = ", ".join("?" * len(chunk))
            cursor = self._connection.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE run_id IN ({marks})", chunk)
            found.update((record.run_id, record) for record in map(_record, cursor))
        return found


def _record(row: Sequence[Any]) -> RunRecord:
    """A stored row (the columns ``_COLUMNS``) as a :class:`RunRecord`."""
    values = dict(zip(_COLUMNS, row))
    for column in _JSON_COLUMNS:
        values[column] = json.loads(values[column])
    values["graph_id"] = values["graph_id"] or None
    return RunRecord(**values)


@dataclass(frozen=True)
class Claim:
    """A run claimed by a driver (``owner``: host:pid:token) at ``claimed_at``, alive as long
    as its ``heartbeat_at`` (Unix seconds) is younger than the store's claim timeout."""

    run_id: str
    owner: str
    claimed_at: float
    heartbeat_at: float

    def age(self, now: float | None = None) -> float:
        """Seconds since the last heartbeat."""
        return (time.time() if now is None else now) - self.heartbeat_at

    def stale(self, timeout: float, now: float | None = None) -> bool:
        """Whether the claim's driver is presumed dead (no heartbeat for ``timeout`` seconds)."""
        return self.age(now) > timeout


def describe_claims(claims: Sequence[Claim], timeout: float, now: float | None = None) -> list[str]:
    """Lines saying which drivers hold claims: runs per owner, heartbeat age, stale ones."""
    now = time.time() if now is None else now
    if not claims:
        return ["in flight: no claimed runs"]
    owners: dict[str, list[Claim]] = {}
    for claim in claims:
        owners.setdefault(claim.owner, []).append(claim)
    stale = sum(claim.stale(timeout, now) for claim in claims)
    lines = [f"in flight: {len(claims)} claimed runs, {len(owners)} drivers"
             + (f"; {stale} stale (no heartbeat for {timeout:g} s: another driver takes them over)" if stale else "")]
    for owner, held in owners.items():
        age = min(claim.age(now) for claim in held)
        state = "stale" if all(claim.stale(timeout, now) for claim in held) else "live"
        lines.append(f"  {owner}: {len(held)} runs, heartbeat {age:.0f} s ago ({state})")
    return lines


def new_owner() -> str:
    """A claim owner unique to this driver: ``host:pid:random token``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Heartbeat:
    """Refreshes ``owner``'s claims in the store at ``path`` every ``interval`` seconds from a
    background thread (its own connection) while the ``with`` block runs, so that a driver
    training for hours keeps its claims and a killed one loses them after the timeout."""

    def __init__(self, path: str | Path, owner: str, interval: float) -> None:
        self.path, self.owner, self.interval = Path(path), owner, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{owner}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        with ResultsStore(self.path, create=False) as store:
            while not self._stop.wait(self.interval):
                try:
                    store.heartbeat(self.owner)
                except sqlite3.Error:
                    pass  # a store locked for long: the next beat tries again


def _retry_locked(action: Callable[[], Any], seconds: float = _LOCK_RETRY_SECONDS) -> Any:
    """``action()``, tried again while SQLite says the database is locked. Switching the
    journal mode fails at once (no busy wait) while another process creates the same store."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return action()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.01, 0.1))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (autocommit connections)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.connection.execute("COMMIT" if exc_type is None else "ROLLBACK")


# --------------------------------------------------------------------------- check and merge


@dataclass
class StoreCheck:
    """What :func:`check_store` found: ``problems`` is damage (the store cannot be trusted);
    stale claims and orphans are leftovers of killed drivers, harmless."""

    path: Path
    problems: list[str]
    counts: dict[str, int]
    claims: list[Claim]
    claim_timeout: float
    orphan_claims: list[str]
    orphan_weights: list[str]


def check_store(path: str | Path) -> StoreCheck:
    """Check a store without writing to it: SQLite's integrity check, the format and its
    schema, every record readable; count runs by status, claims, claims on runs already done
    (orphan claims) and weight files of runs it does not hold (orphan weights).

    A store that cannot be opened at all raises :class:`StoreError` (one line)."""
    path = Path(path)
    with ResultsStore(path, create=False, readonly=True) as store:
        connection = store._connection
        problems = _damage(connection)
        if problems:
            return StoreCheck(path, problems, {}, [], CLAIM_TIMEOUT, [], [])
        with store_errors(path):
            stored, claims, timeout = store.statuses(), store.claims(), store.claim_timeout()
            counts = store.counts()
    done = {run_id for run_id, status in stored.items() if status == "done"}
    orphan_claims = [claim.run_id for claim in claims if claim.run_id in done]
    return StoreCheck(path, [], counts, claims, timeout, orphan_claims, _orphan_weights(path, set(stored)))


def _damage(connection: sqlite3.Connection) -> list[str]:
    """What is wrong inside a store that opened: integrity, schema, unreadable records."""
    try:
        integrity = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            more = f" (and {len(integrity) - 1} more)" if len(integrity) > 1 else ""
            return [f"SQLite integrity check failed: {integrity[0]}{more}"]
        columns = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}
        missing = [c for c in (*_COLUMNS, "finished") if c not in columns]
        if missing:
            return [f"table runs lacks the column(s) {', '.join(missing)}"]
        return _unreadable_records(connection)
    except sqlite3.DatabaseError as error:
        return [str(error)]


def _unreadable_records(connection: sqlite3.Connection) -> list[str]:
    """One line per record whose status or JSON columns cannot be read back."""
    problems = []
    for row in connection.execute(f"SELECT run_id, status, {', '.join(_JSON_COLUMNS)} FROM runs"):
        run_id, status, *texts = row
        bad = [column for column, text in zip(_JSON_COLUMNS, texts) if not _is_json(text)]
        if status not in STATUSES or bad:
            what = f"status {status!r}" if status not in STATUSES else f"column {bad[0]} is not JSON"
            problems.append(f"record {run_id}: {what}")
    return problems


def _is_json(text: Any) -> bool:
    try:
        json.loads(text)
    except (TypeError, ValueError):
        return False
    return True


def _orphan_weights(path: Path, stored: set[str]) -> list[str]:
    """Names of weight files beside the store (``graphprior.weights``) whose run it does not
    hold: left by a driver killed between writing them and storing the record."""
    from graphprior.weights import weights_dir

    folder = weights_dir(path)
    if not folder.is_dir():
        return []
    return sorted(file.name for file in folder.iterdir() if file.name.split(".")[0] not in stored)


@dataclass
class MergeReport:
    """What :func:`merge_stores` did: ``taken[i]`` runs came from ``inputs[i]``; ``same`` runs
    were in several inputs with equal results; one line per conflict."""

    inputs: list[Path]
    output: Path
    taken: list[int]
    same: int
    conflicts: list[str]

    @property
    def runs(self) -> int:
        """Runs in the merged store."""
        return sum(self.taken)


_TIMING = "seconds"  # metrics named *seconds differ between equal runs on different machines


def merge_stores(inputs: Sequence[str | Path], output: str | Path, force: bool = False) -> MergeReport:
    """Write the union of the runs of ``inputs`` into a new store ``output``, never touching the inputs.

    A run in several inputs with equal results (status and metrics other than timings) is
    kept once. With different results it is a conflict, reported, and resolved thus: a done
    record beats a failed one, else the first input (in argument order) wins. Weight files
    of the kept records (``<store>.weights/``) are copied along; claims are not merged (they
    belong to the drivers of the inputs). ``output`` must not exist unless ``force``.
    """
    sources = [Path(p) for p in inputs]
    output = Path(output)
    if not sources:
        raise ValueError("give at least one store to merge")
    _check_merge_output(sources, output, force)
    kept: dict[str, tuple[int, dict[str, Any]]] = {}
    same, conflicts = 0, []
    for index, source in enumerate(sources):
        for values in _raw_rows(source):
            run_id = values["run_id"]
            if run_id not in kept:
                kept[run_id] = (index, values)
                continue
            first_index, first = kept[run_id]
            difference = _difference(first, values)
            if difference is None:
                same += 1
                continue
            winner = index if first["status"] == "failed" and values["status"] == "done" else first_index
            conflicts.append(f"{run_id}: {sources[first_index].name} and {source.name} differ ({difference}); "
                             f"kept {sources[winner].name}'s")
            if winner == index:
                kept[run_id] = (index, values)
    _write_merged(sources, output, kept)
    taken = [sum(index == i for index, _ in kept.values()) for i in range(len(sources))]
    return MergeReport(sources, output, taken, same, conflicts)


def _check_merge_output(sources: Sequence[Path], output: Path, force: bool) -> None:
    for source in sources:
        if not source.is_file():
            raise StoreError(f"{source}: no such results store")
        if output.exists() and output.samefile(source):
            raise StoreError(f"-o {output} is one of the stores to merge: choose a new file")
    if output.exists() and not force:
        raise StoreError(f"-o {output} exists: pass --force to replace it, or choose a new file")
    if output.is_dir():
        raise StoreError(f"-o {output} is a directory, not a results store file")


def _raw_rows(path: Path) -> list[dict[str, Any]]:
    """Every stored row of a store as column -> stored value (``finished`` included)."""
    columns = (*_COLUMNS, "finished")
    with ResultsStore(path, create=False, readonly=True) as store, store_errors(path):
        rows = store._connection.execute(f"SELECT {', '.join(columns)} FROM runs ORDER BY finished, run_id")
        return [dict(zip(columns, row)) for row in rows]


def _difference(first: dict[str, Any], other: dict[str, Any]) -> str | None:
    """How two stored records of one run differ in their results; None when they agree."""
    if first["status"] != other["status"]:
        return f"{first['status']} vs {other['status']}"
    metrics = [{k: v for k, v in json.loads(row["metrics"]).items() if not k.endswith(_TIMING)}
               for row in (first, other)]
    for name in sorted(set(metrics[0]) | set(metrics[1])):
        if metrics[0].get(name) != metrics[1].get(name):
            return f"{name} {metrics[0].get(name)} vs {metrics[1].get(name)}"
    return None


def _write_merged(sources: Sequence[Path], output: Path, kept: dict[str, tuple[int, dict[str, Any]]]) -> None:
    """Write ``kept`` into a temporary store beside ``output``, copy the weight files, then
    move it into place (a failed merge leaves no half-written output)."""
    from graphprior.weights import weights_dir

    columns = (*_COLUMNS, "finished")
    partial = output.with_name(f".{output.name}.{os.getpid()}.merging")
    try:
        with ResultsStore(partial) as merged, store_errors(output):
            with merged._transaction():
                merged._connection.executemany(
                    f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                    [tuple(values[c] for c in columns) for _, values in kept.values()])
        with store_errors(output):
            for run_id, (index, _) in kept.items():
                _copy_weights(weights_dir(sources[index]), weights_dir(output), run_id)
            for suffix in ("-wal", "-shm"):
                output.with_name(output.name + suffix).unlink(missing_ok=True)
            os.replace(partial, output)
    finally:
        for leftover in (partial, partial.with_name(partial.name + "-wal"), partial.with_name(partial.name + "-shm")):
            leftover.unlink(missing_ok=True)


def _copy_weights(source: Path, target: Path, run_id: str) -> None:
    """Copy a run's weight files (every stage) from one weights folder to another."""
    if not source.is_dir():
        return
    for file in source.glob(f"{run_id}.*.safetensors"):
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target / file.name)


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
