"""Several `graphprior bench run` processes on one results store: each run trained once?
How long, against one process?

For each process count, a fresh store and that many ``graphprior bench run SPEC --store
S --backend serial --group-size 1 --quiet`` commands started at once on a tiny real sweep;
reported: wall time until all have ended (process start and imports included), the
slowest driver's own sweep seconds (``store_runs``: claiming, training, waiting), runs trained (the sum of the commands' own
"N done, M failed" counts: a run trained twice would count twice), runs stored, claims
left, and the speed-up over one process. ``--threads T`` gives each process T torch threads
(``OMP_NUM_THREADS``). ``--fake S`` replaces training by S seconds of sleep per run (a driver
calling ``graphprior.sweep.store_runs`` directly): the coordination alone, as on machines
that each have their own cores. With ``--kill``, one of the processes is SIGKILLed
once it has stored a few runs; the others must take its claimed run over after the store's
claim timeout (set to ``--timeout`` seconds) and the store must end complete.

    nice -n 5 .venv/bin/python -m benchmarks.bench_store_claims                     # 1, 2, 4 processes
    nice -n 5 .venv/bin/python -m benchmarks.bench_store_claims --threads 1
    nice -n 5 .venv/bin/python -m benchmarks.bench_store_claims --fake 0.25
    nice -n 5 .venv/bin/python -m benchmarks.bench_store_claims --processes 2,4 --kill
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from graphprior.spec import expand, load_spec
from graphprior.store import ResultsStore

SPEC = """
name = "claims-bench"
seeds = [0, 1]
[[generators]]
name = "watts_strogatz"
params = {{ n = 16, k = 4, p = [0.0, 0.1, 0.2, 0.3, 0.5, 0.8] }}
[model]
cells = ["rnn_tanh", "gru"]
[[tasks]]
kind = "classify"
size = {size}
[train]
epochs = {epochs}
batch_size = 32
"""
_SUMMARY = re.compile(r": (\d+) done, (\d+) failed.* in ([\d.]+) s")
_FAKE_DRIVER = """
import sys, time
from graphprior.executors import SerialExecutor
from graphprior.spec import expand, load_spec
from graphprior.store import RunRecord
from graphprior.sweep import store_runs

spec, store, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])

def train(group):
    time.sleep(pause * len(group))
    return [RunRecord(run_id=c.run_id, graph_id=c.draw_id, seed=c.seed, status="done", config=c.canonical(),
                      flat=c.flat()) for c in group]

s = store_runs(expand(load_spec(spec)), store, train, SerialExecutor(), progress=False)
print(f"fake: {s.done} done, {s.failed} failed in {s.seconds:.1f} s")
"""


def run_processes(count: int, spec: Path, store: Path, kill_after: int | None, threads: int | None,
                  fake: float | None) -> dict[str, float]:
    """Start ``count`` drivers at once on ``store``; optionally SIGKILL the first one after it
    has stored ``kill_after`` runs. Returns the figures of one row."""
    if fake is None:
        command = [str(Path(sys.executable).with_name("graphprior")), "bench", "run", str(spec), "--store",
                   str(store), "--backend", "serial", "--group-size", "1", "--quiet"]
    else:
        command = [sys.executable, "-c", _FAKE_DRIVER, str(spec), str(store), str(fake)]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    start = time.perf_counter()
    drivers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for _ in range(count)]
    killed = 0
    if kill_after is not None:
        killed = _kill_when_stored(drivers[0], store, kill_after)
    outputs = [driver.communicate() for driver in drivers]
    seconds = time.perf_counter() - start
    crashed = [err.strip().splitlines()[-1] for d, (_, err) in zip(drivers, outputs)
               if d.returncode not in (0, -signal.SIGKILL)]
    summaries = [m for out, _ in outputs if (m := _SUMMARY.search(out))]
    trained = sum(int(m.group(1)) + int(m.group(2)) for m in summaries)
    driving = max((float(m.group(3)) for m in summaries), default=float("nan"))
    with ResultsStore(store, readonly=True) as results:
        stored, claims = sum(results.counts().values()), len(results.claims())
    return {"processes": count, "seconds": seconds, "driving": driving, "trained": trained, "stored": stored,
            "claims": claims,
            "crashed": len(crashed), "killed_stored_before": killed, "errors": crashed}


def _kill_when_stored(victim: subprocess.Popen, store: Path, runs: int) -> int:
    """SIGKILL ``victim`` once the store holds ``runs`` runs; returns how many it held."""
    while victim.poll() is None:
        if store.exists():
            try:
                with ResultsStore(store, readonly=True) as results:
                    held = sum(results.counts().values())
            except Exception:  # noqa: BLE001 -- the store is being created
                held = 0
            if held >= runs:
                os.kill(victim.pid, signal.SIGKILL)
                return held
        time.sleep(0.05)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2,4", help="comma list of process counts")
    parser.add_argument("--size", type=int, default=400, help="strings per task")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--kill", action="store_true", help="SIGKILL one process once 4 runs are stored")
    parser.add_argument("--timeout", type=float, default=5.0, help="the store's claim timeout (seconds)")
    parser.add_argument("--threads", type=int, help="torch threads per process (OMP_NUM_THREADS)")
    parser.add_argument("--fake", type=float, help="sleep this many seconds per run instead of training")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_store_claims_"))
    spec = folder / "spec.toml"
    spec.write_text(SPEC.format(size=args.size, epochs=args.epochs))
    total = len(expand(load_spec(spec)))
    print(f"{total} runs; claim timeout {args.timeout:g} s; kill: {args.kill}; threads: {args.threads}; "
          f"fake: {args.fake}")
    print("| processes | wall s | speed-up | sweep s (slowest driver) | speed-up | runs trained | runs stored "
          "| claims left | crashed |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = base_driving = None
    for count in [int(c) for c in args.processes.split(",")]:
        store = folder / f"p{count}.db"
        with ResultsStore(store) as results:
            results.set_claim_timeout(args.timeout)
        row = run_processes(count, spec, store, 4 if args.kill else None, args.threads, args.fake)
        base, base_driving = base or row["seconds"], base_driving or row["driving"]
        print(f"| {count} | {row['seconds']:.1f} | {base / row['seconds']:.2f}x | {row['driving']:.1f} | "
              f"{base_driving / row['driving']:.2f}x | {row['trained']} | "
              f"{row['stored']} | {row['claims']} | {row['crashed']} |", flush=True)
        for error in row["errors"]:
            print(f"    {error}")


if __name__ == "__main__":
    main()
