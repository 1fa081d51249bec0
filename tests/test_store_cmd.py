"""`graphprior store check|merge` and `bench status` showing claims (issue 19)."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from graphprior.cli import main
from graphprior.store import ResultsStore, RunRecord, StoreError, check_store, merge_stores
from graphprior.weights import weights_dir


def record(i: int, status: str = "done", acc: float = 0.5, **changes) -> RunRecord:
    values = dict(run_id=f"run{i:04d}", graph_id=f"g{i}", seed=i, status=status, config={"i": i}, flat={"i": i},
                  reason=None if status == "done" else "boom",
                  metrics={"test_acc": acc, "fit_seconds": 1.0 + i} if status == "done" else {},
                  history=[{"epoch": e} for e in range(30)], seconds=2.0)
    values.update(changes)
    return RunRecord(**values)


def make_store(path: Path, *records: RunRecord) -> Path:
    with ResultsStore(path) as store:
        for r in records:
            store.add(r)
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def damage(path: Path) -> None:
    """Overwrite the start of every data page after the first two (the schema stays readable)."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for offset in range(2 * page, len(data), page):
        data[offset:offset + 64] = b"\x07" * 64
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- check


def test_check_a_good_store_counts_claims_and_orphans(tmp_path):
    path = make_store(tmp_path / "r.db", record(0), record(1), record(2, "failed"))
    with ResultsStore(path) as store:
        store.claim("host:1:live", lambda stored, taken: ["run0009"])
        store.claim("host:2:dead", lambda stored, taken: ["run0008", "run0000"], now=time.time() - 600)
    folder = weights_dir(path)
    folder.mkdir()
    (folder / "run0000.final.safetensors").write_bytes(b"x")
    (folder / "run0077.final.safetensors").write_bytes(b"x")
    result = check_store(path)
    assert result.problems == [] and result.counts == {"done": 2, "failed": 1}
    assert result.orphan_claims == ["run0000"] and result.orphan_weights == ["run0077.final.safetensors"]
    out = invoke("store", "check", str(path))
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == f"{path}: ok (integrity, format, 3 readable records); 2 done, 1 failed"
    assert lines[1] == ("in flight: 3 claimed runs, 2 drivers; 2 stale (no heartbeat for 60 s: "
                        "another driver takes them over)")
    assert "  host:1:live: 1 runs, heartbeat 0 s ago (live)" in lines
    assert "  host:2:dead: 2 runs, heartbeat 600 s ago (stale)" in lines
    assert "1 claims on runs already stored (harmless):" in lines and "  run0000" in lines
    assert "  run0077.final.safetensors" in lines


def test_check_a_damaged_store_is_one_line_and_exit_1(tmp_path):
    path = make_store(tmp_path / "r.db", *[record(i) for i in range(40)])
    damage(path)
    result = invoke("store", "check", str(path))
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith(f"Error: {path} is damaged: ") and "sqlite3" in line and "Traceback" not in line


def test_check_finds_an_unreadable_record_and_a_missing_column(tmp_path):
    path = make_store(tmp_path / "r.db", record(0), record(1))
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE runs SET metrics = '{not json' WHERE run_id = 'run0001'")
    assert check_store(path).problems == ["record run0001: column metrics is not JSON"]
    line = invoke("store", "check", str(path)).output.strip()
    assert line.startswith(f"Error: {path} is damaged: record run0001: column metrics is not JSON")
    other = make_store(tmp_path / "o.db", record(0))
    with sqlite3.connect(other) as connection:
        connection.execute("ALTER TABLE runs DROP COLUMN versions")
    assert check_store(other).problems == ["table runs lacks the column(s) versions"]


@pytest.mark.parametrize(("name", "message"), [
    ("missing.db", "missing.db: no such results store"),
    ("notes.txt", "notes.txt is not a graphprior results store"),
])
def test_check_of_no_store_is_one_line(tmp_path, name, message):
    (tmp_path / "notes.txt").write_text("not a database " * 300)
    result = invoke("store", "check", str(tmp_path / name))
    assert result.exit_code == 1 and message in result.output and len(result.output.splitlines()) == 1


# --------------------------------------------------------------------------- merge


def test_merge_disjoint_stores_is_their_union_and_leaves_them_alone(tmp_path):
    a = make_store(tmp_path / "a.db", record(0), record(1))
    b = make_store(tmp_path / "b.db", record(2), record(3, "failed"))
    with ResultsStore(a) as store:  # a claim of a's driver does not travel
        store.claim("host:1:x", lambda stored, taken: ["run0009"])
    before = {p: digest(p) for p in (a, b)}
    out = tmp_path / "c.db"
    result = invoke("store", "merge", str(a), str(b), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (f"merged 2 stores into {out}: 4 runs ({a} 2, {b} 2); "
                                     "0 found in several with equal results, 0 conflicts")
    assert {p: digest(p) for p in (a, b)} == before
    with ResultsStore(out) as merged, ResultsStore(a) as first:
        assert merged.statuses() == {"run0000": "done", "run0001": "done", "run0002": "done", "run0003": "failed"}
        assert merged.claims() == []
        records = {r.run_id: r for r in merged.records()}
        assert records["run0001"] == next(r for r in first.records() if r.run_id == "run0001")
        assert merged.stored()["run0000"] == first.stored()["run0000"]  # finished times kept


def test_merge_overlapping_stores_keeps_equal_runs_once(tmp_path):
    a = make_store(tmp_path / "a.db", record(0), record(1))
    # the same run trained on another machine: other timings, equal results
    b = make_store(tmp_path / "b.db", record(1, metrics={"test_acc": 0.5, "fit_seconds": 99.0}), record(2))
    report = merge_stores([a, b], tmp_path / "c.db")
    assert (report.runs, report.taken, report.same, report.conflicts) == (3, [2, 1], 1, [])


def test_merge_conflicts_are_reported_and_resolved_as_documented(tmp_path):
    a = make_store(tmp_path / "a.db", record(0, acc=0.5), record(1, "failed"), record(2))
    b = make_store(tmp_path / "b.db", record(0, acc=0.75), record(1, acc=0.9), record(2))
    out = tmp_path / "c.db"
    result = invoke("store", "merge", str(a), str(b), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "1 found in several with equal results, 2 conflicts" in result.output
    assert "  run0000: a.db and b.db differ (test_acc 0.5 vs 0.75); kept a.db's" in result.output
    assert "  run0001: a.db and b.db differ (failed vs done); kept b.db's" in result.output
    with ResultsStore(out) as merged:
        acc = {r.run_id: r.metrics.get("test_acc") for r in merged.records()}
    assert acc == {"run0000": 0.5, "run0001": 0.9, "run0002": 0.5}  # first wins; done beats failed


def test_merge_copies_the_weight_files_of_kept_runs(tmp_path):
    a = make_store(tmp_path / "a.db", record(0))
    b = make_store(tmp_path / "b.db", record(1))
    for store, run_id in ((a, "run0000"), (b, "run0001")):
        weights_dir(store).mkdir()
        (weights_dir(store) / f"{run_id}.final.safetensors").write_bytes(run_id.encode())
    merge_stores([a, b], tmp_path / "c.db")
    copied = weights_dir(tmp_path / "c.db")
    assert sorted(p.name for p in copied.iterdir()) == ["run0000.final.safetensors", "run0001.final.safetensors"]
    assert (copied / "run0001.final.safetensors").read_bytes() == b"run0001"


def test_merge_refuses_to_overwrite_unless_forced_and_never_writes_an_input(tmp_path):
    a = make_store(tmp_path / "a.db", record(0))
    b = make_store(tmp_path / "b.db", record(1))
    out = make_store(tmp_path / "c.db", record(5))
    refused = invoke("store", "merge", str(a), str(b), "-o", str(out))
    assert refused.exit_code == 1 and f"-o {out} exists: pass --force to replace it" in refused.output
    forced = invoke("store", "merge", str(a), str(b), "-o", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    with ResultsStore(out) as merged:
        assert set(merged.statuses()) == {"run0000", "run0001"}
    before = digest(a)
    for args in ((str(a), str(b), "-o", str(a), "--force"), (str(b), "-o", str(tmp_path / "." / "b.db"))):
        result = invoke("store", "merge", *args)
        assert result.exit_code == 1 and "is one of the stores to merge" in result.output
    assert digest(a) == before
    missing = invoke("store", "merge", str(tmp_path / "nope.db"), "-o", str(tmp_path / "d.db"))
    assert missing.exit_code == 1 and "nope.db: no such results store" in missing.output
    assert not (tmp_path / "d.db").exists()
    assert invoke("store", "merge", "-o", str(tmp_path / "d.db")).exit_code == 2  # no STORE


def test_merge_of_a_damaged_input_is_one_line_and_writes_nothing(tmp_path):
    a = make_store(tmp_path / "a.db", *[record(i) for i in range(40)])
    damage(a)
    with pytest.raises(StoreError, match="a.db is damaged"):
        merge_stores([a], tmp_path / "c.db")
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith("a.db")]  # no output, no leftovers


# --------------------------------------------------------------------------- bench status


def test_bench_status_shows_claimed_runs_and_stale_claims(tmp_path):
    path = make_store(tmp_path / "r.db", record(0))
    assert "in flight: no claimed runs" in invoke("bench", "status", str(path)).output
    with ResultsStore(path) as store:
        store.set_claim_timeout(30)
        store.claim("node7:41:ab", lambda stored, taken: ["run0001", "run0002"], now=time.time() - 5)
        store.claim("node8:42:cd", lambda stored, taken: ["run0003"], now=time.time() - 100)
    lines = invoke("bench", "status", str(path)).output.splitlines()
    assert lines[0] == f"{path}: 1 done, 0 failed"
    assert "in flight: 3 claimed runs, 2 drivers; 1 stale (no heartbeat for 30 s: another driver takes them over)" in lines
    assert "  node7:41:ab: 2 runs, heartbeat 5 s ago (live)" in lines
    assert "  node8:42:cd: 1 runs, heartbeat 100 s ago (stale)" in lines
