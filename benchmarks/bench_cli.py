"""Seconds to print ``graphprior --help`` and a few subcommands' ``--help``, each in a fresh process.

A user's first command is ``graphprior --help``; the target is under half a second. Each
command runs ``--repeats`` times in a subprocess through the installed console script (as a
user types it) and the median wall-clock time is reported, with the interpreter's own start
(``python -c pass``) as the floor no command can go under.

    nice -n 5 .venv/bin/python -m benchmarks.bench_cli                # 7 repeats
    nice -n 5 .venv/bin/python -m benchmarks.bench_cli --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--help",), ("bench", "--help"), ("bench", "run", "--help"), ("generate", "--help"),
    ("features", "--help"), ("reber", "--help"), ("predict", "--help"), ("store", "--help"),
)


def median_seconds(command: list[str], repeats: int) -> float:
    """Median wall-clock seconds of ``command`` over ``repeats`` runs (its output discarded)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    script = str(Path(sys.executable).with_name("graphprior"))
    print("| command | median s |\n|---|---|")
    print(f"| `python -c pass` (floor) | {median_seconds([sys.executable, '-c', 'pass'], args.repeats):.3f} |")
    for words in COMMANDS:
        print(f"| `graphprior {' '.join(words)}` | {median_seconds([script, *words], args.repeats):.3f} |")


if __name__ == "__main__":
    main()
