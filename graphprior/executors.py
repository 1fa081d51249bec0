"""Where groups of runs execute: in the driver, in a local process pool, or on Ray.

The unit of work is a *group*: a list of run configs handed to one ``group_fn`` call
that returns one record per run (``graphprior.sweep.run_group`` trains them one after
another, ``run_ensemble`` together where that is faster). Executors only compute: the driver receives
the records as they finish and is the only process that writes the results store.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

BACKENDS = ("local", "ray", "serial")

Group = Sequence[Any]
GroupFn = Callable[[Group], list[Any]]


class ExecutionError(RuntimeError):
    """Execution broke down as a whole (a worker died, Ray is missing or unreachable)."""


class Executor(Protocol):
    """Runs ``group_fn`` on every group and yields each group's records as soon as it finishes."""

    def map_unordered(self, group_fn: GroupFn, groups: Iterable[Group]) -> Iterator[list[Any]]: ...


def cpu_count() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_torch_threads(threads: int) -> None:
    """Give torch ``threads`` intra-op threads so concurrent workers do not oversubscribe cores."""
    import torch

    torch.set_num_threads(max(1, threads))


PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): a signal sent when the parent thread exits
WATCH_INTERVAL_S = 0.5  # how often a worker without pidfds looks for its driver


def die_with_parent() -> bool:
    """Ask Linux to SIGKILL this process when its parent exits (``prctl(PR_SET_PDEATHSIG)``).

    The signal is tied to the parent *thread*, so it is only safe where the parent's spawning
    thread lives as long as the parent: a fork server's workers (the server is single-threaded).
    Returns whether it was set (False off Linux).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(pid, 0) is all there is


def wait_for_exit(pid: int) -> None:
    """Block until process ``pid`` has exited: on a pidfd where Linux has them (woken at once,
    immune to pid reuse), else by polling every ``WATCH_INTERVAL_S``."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfds: macOS, Linux before 5.3, seccomp
        while _pid_alive(pid):
            time.sleep(WATCH_INTERVAL_S)
        return
    try:
        select.select([pidfd], [], [])
    finally:
        os.close(pidfd)


def watch_driver(driver_pid: int) -> threading.Thread:
    """Start a daemon thread that ends this worker at once when the driver ``driver_pid`` exits.

    Whatever ends the driver (SIGKILL, the OOM killer, a scheduler's SIGTERM), its workers stop
    training instead of finishing groups nobody will store; the fork server, which lives while
    any worker holds its pipe, exits after them.
    """
    def watch() -> None:
        wait_for_exit(driver_pid)
        os._exit(1)  # no cleanup: the driver that would receive anything is gone

    thread = threading.Thread(target=watch, name=f"watch-driver-{driver_pid}", daemon=True)
    thread.start()
    return thread


def init_worker(threads: int, driver_pid: int, parent_is_fork_server: bool) -> None:
    """Initializer of every pool worker: torch threads, and death with the driver (a watchdog
    on the driver's pid; also a parent-death signal where the parent is a fork server)."""
    set_torch_threads(threads)
    if parent_is_fork_server:
        die_with_parent()
    watch_driver(driver_pid)


def kill_workers(pool: ProcessPoolExecutor) -> None:
    """SIGKILL the worker processes of ``pool``: groups in flight when the driver stops are
    lost anyway, and waiting for them would keep an interrupted sweep running for minutes."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()


def _run_with_threads(group_fn: GroupFn, threads: int, group: Group) -> list[Any]:
    set_torch_threads(threads)
    return group_fn(group)


class SerialExecutor:
    """Runs every group in the calling process (debugging, tests, one-off runs)."""

    def map_unordered(self, group_fn: GroupFn, groups: Iterable[Group]) -> Iterator[list[Any]]:
        for group in groups:
            yield group_fn(group)


# imported once by the fork server, so forked workers start without re-importing them
# (torch._dynamo, with sympy, is what torch's optimizers import on their first step: seconds)
PRELOAD = ("torch", "torch._dynamo", "numpy", "graphprior.sweep", "graphprior.generators", "graphprior.priors",
           "graphprior.features", "rnn_models.train", "rnn_models.layered", "rnn_models.batched",
           "rnn_models.ensemble", "rnn_models.native", "reber.tasks")


def default_start_method() -> str:
    """``forkserver`` where available (workers fork from a server that imported torch once), else ``spawn``.

    Plain ``fork`` is avoided: forking a process whose torch/OpenMP threads already ran
    can deadlock.
    """
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class LocalExecutor:
    """A process pool of ``workers`` processes, each with cores // workers torch threads.

    Workers end with the driver, whatever ends it (:func:`init_worker`), and a driver that
    stops early (an error, Ctrl-C, SIGTERM) kills the groups still training.
    """

    def __init__(self, workers: int | None = None, start_method: str | None = None) -> None:
        cores = cpu_count()
        self.workers = cores if workers is None else workers
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if start_method is not None and start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"start_method must be one of {multiprocessing.get_all_start_methods()}, got {start_method!r}"
            )
        self.threads = max(1, cores // self.workers)
        self.start_method = start_method or default_start_method()

    def map_unordered(self, group_fn: GroupFn, groups: Iterable[Group]) -> Iterator[list[Any]]:
        """Train ``groups`` with at most ``workers`` in flight, taking the next group from the
        iterable only when a worker frees (so a driver can claim groups as it needs them)."""
        upcoming = iter(groups)
        first = next(upcoming, None)
        if first is None:
            return
        context = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            context.set_forkserver_preload(list(PRELOAD))
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=init_worker,
            initargs=(self.threads, os.getpid(), self.start_method == "forkserver"),
        )
        pending = set()
        try:
            pending = {pool.submit(group_fn, first)}
            pending |= {pool.submit(group_fn, group) for group in itertools.islice(upcoming, self.workers - 1)}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                # every group that finished is handed over before any error is raised
                failed = [f for f in finished if f.exception() is not None]
                for future in finished:
                    if future.exception() is None:
                        yield future.result()
                if failed:
                    raise failed[0].exception()
                pending |= {pool.submit(group_fn, group) for group in itertools.islice(upcoming, len(finished))}
        except BrokenProcessPool as error:
            raise ExecutionError(
                f"a worker process died ({error}); finished runs are stored, re-run to resume"
            ) from None
        finally:
            if pending:  # stopped early (an error, Ctrl-C, SIGTERM, the caller closed us)
                kill_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)


def import_ray() -> Any:
    """Import Ray, or explain how to install it (it is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise ExecutionError(
            "the ray backend needs Ray: pip install 'graphprior[ray]' (or pip install ray)"
        ) from None
    return ray


class RayExecutor:
    """Ray remote tasks, one per group, gathered by the driver with ``ray.wait``.

    Connects to ``address`` (e.g. ``"auto"`` or ``"ray://head:10001"``), or starts a local
    Ray instance when no Ray is running and no address is given; a Ray instance started
    here is shut down afterwards.
    """

    def __init__(self, address: str | None = None, cpus_per_task: int = 1) -> None:
        if cpus_per_task < 1:
            raise ValueError(f"cpus_per_task must be >= 1, got {cpus_per_task}")
        self.address = address
        self.cpus_per_task = cpus_per_task

    def map_unordered(self, group_fn: GroupFn, groups: Iterable[Group]) -> Iterator[list[Any]]:
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise ExecutionError(f"cannot connect to Ray at {self.address!r}: {error}") from None
        try:
            task = ray.remote(num_cpus=self.cpus_per_task)(_run_with_threads)
            pending = [task.remote(group_fn, self.cpus_per_task, list(group)) for group in groups]
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                yield ray.get(ready[0])
        finally:
            if started_here:
                ray.shutdown()


def make_executor(backend: str = "local", workers: int | None = None, address: str | None = None) -> Executor:
    """The executor for a backend name: ``local`` (process pool), ``ray`` or ``serial`` (in-process)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if address is not None and backend != "ray":
        raise ValueError("address is only used with backend 'ray'")
    if backend == "ray":
        return RayExecutor(address)
    if backend == "serial":
        return SerialExecutor()
    return LocalExecutor(workers)
