"""Workers die with their driver: SIGKILL or SIGTERM of `graphprior bench run` leaves no
process training, and the same command then finishes the sweep with every run stored once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from graphprior.cli import main
from graphprior.executors import LocalExecutor, _pid_alive, wait_for_exit, watch_driver
from graphprior.spec import expand, load_spec
from graphprior.store import ResultsStore, read_table

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# runs of a second or two each on two cores: long enough to be killed mid-training
SPEC = """
name = "kill"
[[generators]]
name = "erdos_renyi_gnp"
params = { n = [5, 6, 7, 8], p = 0.4 }
[model]
cells = ["rnn_tanh", "gru"]
[[tasks]]
kind = "classify"
size = 400
[train]
epochs = 20
batch_size = 16
"""
GONE_WITHIN_S = 10  # the "a few seconds"; the fork server's own exit (torch loaded) takes ~1.5 s


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` from /proc (every thread's list)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``: the fork server, the resource tracker, the workers."""
    found, frontier = set(), [pid]
    while frontier:
        for child in children(frontier.pop()):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def _stored(store: Path) -> int:
    try:
        with ResultsStore(store, create=False) as results:
            return sum(results.counts().values())
    except Exception:  # noqa: BLE001 -- not created yet, or being created right now
        return 0


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _survivors(pids: set[int]) -> set[int]:
    return {pid for pid in pids if _pid_alive(pid)}


@pytest.fixture
def spec_file(tmp_path) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    return path


def _start_sweep(spec_file: Path, store: Path) -> tuple[subprocess.Popen, set[int]]:
    """A real `graphprior bench run` with 2 workers, returned once a run is stored and both
    workers are training the next ones, with the pids of all its descendants."""
    command = [str(Path(sys.executable).with_name("graphprior")), "bench", "run", str(spec_file),
               "--store", str(store), "--workers", "2", "--group-size", "1", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    started = _wait_until(lambda: _stored(store) >= 1 or process.poll() is not None, 240)
    pids = descendants(process.pid)
    assert started and process.poll() is None, process.stderr.read().decode() if process.poll() else "too slow"
    assert len(pids) >= 4, pids  # resource tracker, fork server, two workers
    return process, pids


def _rerun_stores_every_run_once(spec_file: Path, store: Path, killed_at: int) -> None:
    total = len(expand(load_spec(spec_file)))
    assert 1 <= killed_at < total
    result = CliRunner().invoke(main, ["bench", "run", str(spec_file), "--store", str(store), "--backend", "serial",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"{total - killed_at} done, 0 failed, {killed_at} already stored (of {total})" in result.output
    table = read_table(store)
    assert table.run_id.is_unique and set(table.run_id) == {r.run_id for r in expand(load_spec(spec_file))}
    assert (table.status == "done").all()


def test_sigkill_of_the_driver_leaves_no_worker(tmp_path, spec_file):
    store = tmp_path / "r.db"
    process, pids = _start_sweep(spec_file, store)
    process.send_signal(signal.SIGKILL)  # the driver only, as the OOM killer does
    process.wait()
    assert _wait_until(lambda: not _survivors(pids), GONE_WITHIN_S), _survivors(pids)
    _rerun_stores_every_run_once(spec_file, store, _stored(store))


def test_sigterm_ends_the_driver_like_ctrl_c(tmp_path, spec_file):
    store = tmp_path / "r.db"
    process, pids = _start_sweep(spec_file, store)
    process.send_signal(signal.SIGTERM)  # a scheduler's stop
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert stderr.decode().strip().splitlines()[-1] == "Aborted!" and "Traceback" not in stderr.decode()
    assert _wait_until(lambda: not _survivors(pids), GONE_WITHIN_S), _survivors(pids)
    _rerun_stores_every_run_once(spec_file, store, _stored(store))


def test_a_failing_group_stops_the_groups_still_training(tmp_path):
    """The first error ends the pool at once: the other worker's group (10 minutes long) is
    killed, not waited for. ``eval`` of a text is a picklable group function."""
    pidfile = tmp_path / "pid"
    sleeper = f"open({str(pidfile)!r}, 'w').write(str(__import__('os').getpid())) and __import__('time').sleep(600)"
    failing = (f"(next(i for i in range(4000) if __import__('os').path.exists({str(pidfile)!r}) "
               "or __import__('time').sleep(0.05)), 1 / 0)")
    with pytest.raises(ZeroDivisionError):
        list(LocalExecutor(2).map_unordered(eval, [sleeper, failing]))
    assert not _pid_alive(int(pidfile.read_text()))


def test_a_zombie_counts_as_gone_and_wait_for_exit_returns_when_a_process_ends():
    """A driver killed but not yet reaped by its parent is a zombie: its workers must not wait
    for it to be reaped."""
    process = subprocess.Popen(["sleep", "600"])
    assert _pid_alive(process.pid)
    process.kill()
    assert _wait_until(lambda: not _pid_alive(process.pid), 10)  # a zombie until wait() below
    wait_for_exit(process.pid)  # returns at once for an exited process
    process.wait()
    assert not _pid_alive(process.pid)


def test_watch_driver_ends_a_worker_whose_driver_exits():
    """The watchdog alone, outside any pool: a process watching a `sleep` ends when it is killed."""
    driver = subprocess.Popen(["sleep", "600"])
    worker = subprocess.Popen([sys.executable, "-c", "import sys, time; from graphprior.executors import watch_driver; "
                               f"watch_driver({driver.pid}); print('watching', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE)
    assert worker.stdout.readline() == b"watching\n"
    driver.kill()
    assert worker.wait(timeout=GONE_WITHIN_S) == 1
    driver.wait()


def test_watch_driver_is_a_daemon_thread_that_leaves_a_live_driver_alone():
    thread = watch_driver(os.getpid())
    assert thread.daemon and thread.is_alive()
