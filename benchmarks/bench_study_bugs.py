"""What the study's two bugs change: paired runs of the ``paper-study`` preset with and without each.

For ``--graphs`` graphs of each generator drawn as the preset draws them, every run is
trained three ways on the study's dataset (needs ``GRAPHPRIOR_STUDY_DATA``): as the preset
does (correct), with ``gate_layout = "row_repeated"`` (GRU and LSTM only: one-gate cells are
unchanged by it) and with ``readout = "padded_position"``; same graph, seed and batch
order, so each difference is the option's alone. Prints one row per run and the mean
paired difference per option and cell.

    GRAPHPRIOR_STUDY_DATA=../shared/reference/stier2021 \\
        nice -n 5 .venv/bin/python -m benchmarks.bench_study_bugs --graphs 2 --store /tmp/study_bugs.db
"""

from __future__ import annotations

import argparse

import pandas as pd

from graphprior.executors import make_executor
from graphprior.spec import RunConfig, expand, load_preset
from graphprior.store import read_table
from graphprior.sweep import run_group, store_runs

OPTIONS = {"row_repeated": {"gate_layout": "row_repeated"}, "padded_position": {"readout": "padded_position"}}
CELLS = {"row_repeated": ("gru", "lstm"), "padded_position": ("rnn_tanh", "rnn_relu", "gru", "lstm")}


def baseline_runs(graphs: int, cells: tuple[str, ...]) -> list[RunConfig]:
    """The preset's runs of the first ``graphs`` draws of each generator, for ``cells``."""
    runs = expand(load_preset("paper-study"))
    draws: dict[str, list[str]] = {}
    for run in runs:
        chosen = draws.setdefault(run.generator, [])
        if run.draw_id not in chosen and len(chosen) < graphs:
            chosen.append(run.draw_id)
    keep = {d for chosen in draws.values() for d in chosen}
    return [r for r in runs if r.draw_id in keep and r.cell in cells]


def with_option(run: RunConfig, option: str) -> RunConfig:
    """The same run with one study bug switched on."""
    fields = {name: getattr(run, name) for name in RunConfig.model_fields}
    return RunConfig(**{**fields, **OPTIONS[option]})


def paired(graphs: int) -> list[tuple[str, RunConfig, RunConfig]]:
    """(option, correct run, run with the bug) for every measured pair."""
    base = baseline_runs(graphs, tuple(sorted({c for cells in CELLS.values() for c in cells})))
    return [(option, run, with_option(run, option)) for option, cells in CELLS.items()
            for run in base if run.cell in cells]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=2, help="graphs per generator")
    parser.add_argument("--store", default="/tmp/study_bugs.db")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    pairs = paired(args.graphs)
    runs = list({r.run_id: r for _, a, b in pairs for r in (a, b)}.values())
    store_runs(runs, args.store, run_group, make_executor("local", workers=args.workers), name="study-bugs")
    accuracy = read_table(args.store).set_index("run_id")["test_acc"]
    rows = pd.DataFrame([{"option": option, "cell": a.cell, "generator": a.generator, "n": a.params["n"],
                          "correct": accuracy.get(a.run_id), "bug": accuracy.get(b.run_id)}
                         for option, a, b in pairs])
    rows["difference"] = rows.bug - rows.correct
    print(rows.round(3).to_markdown(index=False))
    print()
    summary = rows.groupby(["option", "cell"]).agg(models=("difference", "size"), correct=("correct", "mean"),
                                                   bug=("bug", "mean"), difference=("difference", "mean"))
    print(summary.round(3).to_markdown())


if __name__ == "__main__":
    main()
