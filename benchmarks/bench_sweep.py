"""Seconds per model of the ``paper`` preset, measured on a seeded sample and extrapolated to 800.

Runs a seeded sample of the paper preset's runs (``--runs``, as ``bench run --limit``)
through the real sweep machinery (local process pool, results store) for ``--epochs``
epochs on the full 25,000-string dataset, then scales each model's training time to the
preset's 15 epochs (epochs cost the same each: same data, same model) and adds the
per-model overhead (graph, prior, model, features; the median, so the once-per-worker
dataset build is left out). Both wall-clock and CPU seconds are reported: on a shared,
busy machine the CPU figure is the one that holds. The study needed 1,970–3,450 s per
model; the target here is <= 9 s per model with 2 workers on 2 cores.

    .venv/bin/python -m benchmarks.bench_sweep            # 8 runs, 1 epoch each, 2 workers, groups of 16
    .venv/bin/python -m benchmarks.bench_sweep --quick    # 4 runs
    GRAPHPRIOR_STUDY_DATA=../shared/reference/stier2021 \
        .venv/bin/python -m benchmarks.bench_sweep --preset paper-study   # on the study's dataset
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from graphprior.executors import cpu_count
from graphprior.spec import expand, load_preset
from graphprior.store import read_table
from graphprior.sweep import run_sweep

STUDY_SECONDS = (1970.0, 3450.0)
TARGET_SECONDS = 9.0


def measure(runs: int, epochs: int, workers: int, seed: int, group_size: int,
            preset: str = "paper") -> tuple[pd.DataFrame, float, int]:
    """Run the sample; return its table, the sweep's wall seconds and the preset's epochs."""
    paper = load_preset(preset)
    spec = paper.model_copy(update={"train": paper.train.model_copy(update={"epochs": epochs}), "seed": seed})
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        run_sweep(spec, Path(folder) / "bench.db", workers=workers, limit=runs, group_size=group_size)
        wall = time.perf_counter() - start
        table = read_table(Path(folder) / "bench.db")
    return table, wall, paper.train.epochs


def per_model(table: pd.DataFrame, epochs: int, full_epochs: int) -> dict[str, float]:
    """Seconds per model at the preset's epochs: scaled training time plus median overhead."""
    done = table[table.status == "done"]
    scale = full_epochs / epochs
    overhead = (done.seconds - done.fit_seconds).median()
    return {
        "wall": float(done.fit_seconds.mean() * scale + overhead),
        "cpu": float(done.cpu_seconds.mean() * scale + overhead),
    }


def report(table: pd.DataFrame, wall: float, epochs: int, full_epochs: int, workers: int,
           preset: str = "paper") -> str:
    """The markdown table of the measurement and its ratios to the target and the study."""
    seconds = per_model(table, epochs, full_epochs)
    total = len(expand(load_preset(preset)))
    done = table[table.status == "done"]
    lines = [
        f"{preset} preset: {len(table)} sampled runs ({len(done)} done), {epochs} epoch(s) measured and "
        f"scaled to {full_epochs}; {workers} worker(s) on {cpu_count()} core(s); sweep wall time {wall:.0f} s",
        "",
        "| measure | s/model (1 worker) | effective s/model (all workers) | 800 models (h) "
        "| / target 9 s | study / this |",
        "|---|---|---|---|---|---|",
    ]
    for name, value in seconds.items():
        effective = value / workers
        lines.append(
            f"| {name} | {value:.1f} | {effective:.1f} | {effective * total / 3600:.1f} "
            f"| {effective / TARGET_SECONDS:.1f}x | {STUDY_SECONDS[0] / effective:.0f}–{STUDY_SECONDS[1] / effective:.0f}x |"
        )
    lines += ["", "| cell | runs | mean fit s/epoch (wall) | mean fit CPU s/epoch | CPU s/model at the preset's epochs "
              "| mean test_acc |", "|---|---|---|---|---|---|"]
    for cell, group in done.groupby("cell"):
        lines.append(f"| {cell} | {len(group)} | {group.fit_seconds.mean() / epochs:.1f} | "
                     f"{group.cpu_seconds.mean() / epochs:.2f} | {group.cpu_seconds.mean() * full_epochs / epochs:.0f} | "
                     f"{group.test_acc.mean():.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="sampled runs of the preset (default 8)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs measured per run (default 1)")
    parser.add_argument("--workers", type=int, default=cpu_count(), help="worker processes (default: cores)")
    parser.add_argument("--seed", type=int, default=2021, help="seed of the preset (and so of the sample)")
    parser.add_argument("--group-size", type=int, default=16,
                        help="runs per worker call, trained as one ensemble where faster (default 16; 1: one by one)")
    parser.add_argument("--quick", action="store_true", help="4 runs")
    parser.add_argument("--preset", default="paper", help="the preset measured (default paper; paper-study: "
                                                          "the study's dataset, needs GRAPHPRIOR_STUDY_DATA)")
    args = parser.parse_args()
    runs = 4 if args.quick else args.runs
    table, wall, full_epochs = measure(runs, args.epochs, args.workers, args.seed, args.group_size, args.preset)
    print(report(table, wall, args.epochs, full_epochs, args.workers, args.preset))


if __name__ == "__main__":
    main()
