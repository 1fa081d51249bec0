"""Several drivers on one results store (issue 19): claims, heartbeats, take-over of a dead
driver's runs, each run trained once, and a new store created by several processes at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from graphprior.executors import SerialExecutor
from graphprior.spec import expand
from graphprior.store import CLAIM_TIMEOUT, Heartbeat, ResultsStore, RunRecord, new_owner
from graphprior.sweep import claim_wave, pending_runs, store_runs

SPEC = {
    "name": "claims",
    "generators": [{"name": "watts_strogatz", "params": {"n": 6, "k": 2, "p": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]}}],
    "model": {"cells": ["rnn_tanh", "gru"]},
    "tasks": [{"kind": "classify", "size": 120}],
    "train": {"epochs": 1, "batch_size": 32},
}


def spec_runs(**changes):
    return expand({**SPEC, **changes})


def fake_record(config) -> RunRecord:
    return RunRecord(run_id=config.run_id, graph_id=config.draw_id, seed=config.seed, status="done",
                     config=config.canonical(), flat=config.flat(), metrics={"test_acc": 0.5})


class Trainer:
    """A group trainer that records which runs it trained (in-process drivers)."""

    def __init__(self, pause: float = 0.0) -> None:
        self.trained: list[str] = []
        self.pause = pause

    def __call__(self, group):
        self.trained.extend(config.run_id for config in group)
        time.sleep(self.pause * len(group))
        return [fake_record(config) for config in group]


def new_store(path: Path, timeout: float | None = None) -> Path:
    with ResultsStore(path) as store:
        if timeout is not None:
            store.set_claim_timeout(timeout)
    return path


# --------------------------------------------------------------------------- the store's claims


def test_a_claim_excludes_live_claims_of_others_and_takes_over_stale_ones(tmp_path):
    path = new_store(tmp_path / "r.db", timeout=10.0)
    with ResultsStore(path) as store:
        a_and_b = lambda stored, taken: ["a", "b"]  # noqa: E731
        assert store.claim("A", lambda stored, taken: ["a", "b"], now=100.0) == ["a", "b"]
        seen = {}

        def record_taken(stored, taken):
            seen["taken"] = set(taken)
            return ["a", "b", "c"]

        assert store.claim("B", record_taken, now=105.0) == ["c"]  # a, b: A's live claims
        assert seen["taken"] == {"a", "b"}
        assert store.heartbeat("A", now=108.0) == 2
        assert store.claim("B", a_and_b, now=117.0) == []  # A beat at 108: alive until 118
        assert store.claim("B", a_and_b, now=118.5) == ["a", "b"]  # stale: taken over
        claims = {c.run_id: c for c in store.claims()}
        assert {c.owner for c in claims.values()} == {"B"} and claims["a"].claimed_at == 118.5
        assert claims["c"].heartbeat_at == 105.0 and claims["c"].stale(10.0, now=115.1)
        assert not claims["c"].stale(10.0, now=114.9) and claims["c"].age(now=110.0) == 5.0
        store.release("B")
        assert store.claims() == []


def test_storing_a_record_drops_only_its_owners_claim(tmp_path):
    (config,) = spec_runs(model={"cells": ["gru"]})[:1]
    with ResultsStore(tmp_path / "r.db") as store:
        store.claim("A", lambda stored, taken: [config.run_id])
        assert store.add(fake_record(config), owner="B")  # B took over meanwhile: A's claim stays
        assert [c.owner for c in store.claims()] == ["A"]
        assert store.stored()[config.run_id][0] == "done"
        store.add(fake_record(config), owner="A")
        assert store.claims() == []


def test_the_claim_timeout_is_the_stores_and_checked(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        assert store.claim_timeout() == CLAIM_TIMEOUT == 60.0
        store.set_claim_timeout(2.5)
        assert store.claim_timeout() == 2.5
        for bad in (0, -1.0, float("nan"), "10"):
            with pytest.raises(ValueError, match="claim timeout must be a positive number of seconds"):
                store.set_claim_timeout(bad)
    with ResultsStore(tmp_path / "r.db", readonly=True) as store:
        assert store.claim_timeout() == 2.5


def test_a_heartbeat_thread_keeps_claims_fresh(tmp_path):
    path = new_store(tmp_path / "r.db")
    with ResultsStore(path) as store:
        store.claim("A", lambda stored, taken: ["x"], now=1.0)
        with Heartbeat(path, "A", interval=0.05):
            deadline = time.time() + 10
            while store.claims()[0].heartbeat_at == 1.0 and time.time() < deadline:
                time.sleep(0.02)
        assert store.claims()[0].heartbeat_at > time.time() - 10


def test_owners_are_unique_and_name_host_and_pid():
    first, second = new_owner(), new_owner()
    assert first != second and first.split(":")[1] == str(os.getpid())


def test_pending_runs_leave_runs_taken_by_live_drivers():
    runs = spec_runs()[:4]
    ids = [r.run_id for r in runs]
    pending = pending_runs(runs, {ids[0]: "done", ids[1]: "failed"}, retry_failed=True, taken={ids[2]})
    assert [r.run_id for r in pending] == [ids[1], ids[3]]


def test_a_driver_claims_as_many_groups_as_its_executor_runs_at_once():
    from graphprior.executors import LocalExecutor

    assert claim_wave(SerialExecutor()) == 1
    assert claim_wave(LocalExecutor(workers=3)) == 1  # claims follow the pool as workers free
    assert claim_wave(object()) is None  # e.g. Ray: the cluster schedules every group


def test_a_new_store_waits_for_another_process_creating_it(tmp_path):
    """SQLite fails ``PRAGMA journal_mode=WAL`` at once, without its busy wait, while another
    connection writes: two sweeps creating one store crashed with 'database is locked'."""
    import sqlite3

    path = tmp_path / "r.db"
    creator = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    creator.execute("BEGIN IMMEDIATE")
    creator.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    committer = threading.Timer(0.3, lambda: creator.execute("COMMIT"))
    committer.start()
    with ResultsStore(path) as store:  # opened while the other connection still writes
        assert store.counts() == {"done": 0, "failed": 0} and store.claims() == []
    committer.join()
    creator.close()


# --------------------------------------------------------------------------- drivers in one process


def test_a_stale_claim_is_taken_over(tmp_path):
    runs = spec_runs()[:3]
    path = new_store(tmp_path / "r.db", timeout=5.0)
    with ResultsStore(path) as store:  # a driver that died 10 s ago holding the first run
        store.claim("dead:1:x", lambda stored, taken: [runs[0].run_id], now=time.time() - 10)
    trainer = Trainer()
    summary = store_runs(runs, path, trainer, SerialExecutor(), progress=False)
    assert sorted(trainer.trained) == sorted(r.run_id for r in runs) and summary.done == 3
    with ResultsStore(path) as store:
        assert store.claims() == [] and len(store.stored()) == 3


def test_a_live_claim_is_left_to_its_driver_which_is_waited_for(tmp_path):
    runs = spec_runs()[:4]
    taken = runs[1]
    path = new_store(tmp_path / "r.db", timeout=0.6)
    with ResultsStore(path) as store:
        store.claim("other", lambda stored, taken_ids: [taken.run_id])

    def other_driver():  # trains for 1.5 claim timeouts, beating, then stores its run
        with Heartbeat(path, "other", interval=0.1), ResultsStore(path) as store:
            time.sleep(0.9)
            store.add(fake_record(taken), owner="other")

    thread = threading.Thread(target=other_driver)
    thread.start()
    trainer = Trainer()
    summary = store_runs(runs, path, trainer, SerialExecutor(), progress=False)
    thread.join()
    assert sorted(trainer.trained) == sorted(r.run_id for r in runs if r is not taken)
    assert (summary.done, summary.others, summary.skipped) == (3, 1, 0)
    with ResultsStore(path) as store:
        assert len(store.stored()) == 4 and store.claims() == []


def test_a_retried_failure_is_retried_once_not_again_after_another_driver_retried_it(tmp_path):
    runs = spec_runs()[:2]
    path = tmp_path / "r.db"

    def fail(group):
        return [RunRecord(run_id=c.run_id, graph_id=None, seed=c.seed, status="failed", reason="boom",
                          config=c.canonical(), flat=c.flat()) for c in group]

    store_runs(runs, path, fail, SerialExecutor(), progress=False)
    calls = []

    def fail_again(group):
        calls.extend(c.run_id for c in group)
        return fail(group)

    summary = store_runs(runs, path, fail_again, SerialExecutor(), retry_failed=True, progress=False)
    assert sorted(calls) == sorted(r.run_id for r in runs) and summary.failed == 2  # once each, no loop


def test_claims_are_released_when_training_raises(tmp_path):
    runs = spec_runs()[:2]
    path = tmp_path / "r.db"

    def crash(group):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store_runs(runs, path, crash, SerialExecutor(), progress=False)
    with ResultsStore(path) as store:
        assert store.claims() == [] and store.stored() == {}


# --------------------------------------------------------------------------- drivers in several processes

DRIVER = textwrap.dedent("""
    import dataclasses, json, os, sys, time
    from graphprior.executors import SerialExecutor
    from graphprior.spec import expand
    from graphprior.store import RunRecord
    from graphprior.sweep import store_runs

    store, log, pause, spec = sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4])

    def note(event, run_id):
        with open(log, "a") as f:
            f.write(f"{event} {os.getpid()} {run_id}\\n")

    def train(group):
        records = []
        for c in group:
            note("start", c.run_id)
            time.sleep(pause)
            records.append(RunRecord(run_id=c.run_id, graph_id=c.draw_id, seed=c.seed, status="done",
                                     config=c.canonical(), flat=c.flat(), metrics={"test_acc": 0.5}))
        return records

    summary = store_runs(expand(spec), store, train, SerialExecutor(), progress=False)
    print(json.dumps(dataclasses.asdict(summary)))
""")


def start_drivers(count: int, store: Path, log: Path, pause: float) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", DRIVER, str(store), str(log), str(pause), json.dumps(SPEC)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]


def starts(log: Path) -> list[tuple[int, str]]:
    lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return [(int(pid), run_id) for event, pid, run_id in lines if event == "start"]


@pytest.mark.parametrize("count", [2, 4])
def test_several_processes_on_a_new_store_train_every_run_once(tmp_path, count):
    store, log = tmp_path / "r.db", tmp_path / "log"  # the store does not exist yet: all create it at once
    drivers = start_drivers(count, store, log, pause=0.05)
    outputs = [driver.communicate(timeout=120) for driver in drivers]
    assert all(driver.returncode == 0 for driver in drivers), [err for _, err in outputs]
    summaries = [json.loads(out) for out, _ in outputs]
    total = len(spec_runs())
    trained = Counter(run_id for _, run_id in starts(log))
    assert len(trained) == total and set(trained.values()) == {1}  # every run trained exactly once
    assert sum(s["done"] for s in summaries) == total
    assert all(s["done"] + s["others"] + s["skipped"] == total for s in summaries)
    with ResultsStore(store) as results:
        assert results.counts() == {"done": total, "failed": 0} and results.claims() == []


def test_a_killed_driver_loses_nothing_and_its_run_is_taken_over(tmp_path):
    store, log = new_store(tmp_path / "r.db", timeout=1.0), tmp_path / "log"
    victim, survivor = start_drivers(2, store, log, pause=0.3)
    deadline = time.time() + 60
    while sum(pid == victim.pid for pid, _ in starts(log)) < 2 and time.time() < deadline:
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)  # in the middle of its second run
    victim.wait()
    out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err
    started = starts(log)
    by_victim = [run_id for pid, run_id in started if pid == victim.pid]
    with ResultsStore(store) as results:
        stored = results.stored()
        assert len(stored) == len(spec_runs()) and results.counts()["failed"] == 0
        claims = results.claims()
    assert claims == []
    in_flight = by_victim[-1]  # the run the victim was training when it died
    twice = [run_id for run_id, n in Counter(run_id for _, run_id in started).items() if n > 1]
    assert twice == [in_flight]  # taken over by the survivor; every other run trained once
    assert json.loads(out)["done"] == len(spec_runs()) - len(by_victim) + 1


def test_two_bench_run_commands_share_a_store(tmp_path):
    """The CLI itself, twice at once on a tiny real sweep: every run is trained by one of them."""
    spec = tmp_path / "tiny.toml"
    spec.write_text(textwrap.dedent("""
        name = "tiny"
        seeds = [0, 1]
        [[generators]]
        name = "watts_strogatz"
        params = { n = 6, k = 2, p = [0.0, 0.5] }
        [model]
        cells = ["rnn_tanh", "gru"]
        [[tasks]]
        kind = "classify"
        size = 60
        [train]
        epochs = 1
        batch_size = 32
    """))
    store = tmp_path / "r.db"
    command = [str(Path(sys.executable).with_name("graphprior")), "bench", "run", str(spec), "--store", str(store),
               "--backend", "serial", "--group-size", "1", "--quiet"]
    drivers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [driver.communicate(timeout=300) for driver in drivers]
    assert [d.returncode for d in drivers] == [0, 0], [err for _, err in outputs]
    done = [int(out.split(": ")[1].split(" done")[0]) for out, _ in outputs]
    assert sum(done) == 8, outputs  # 8 runs, each trained by exactly one of the two
    with ResultsStore(store) as results:
        assert sum(results.counts().values()) == 8 and results.claims() == []
