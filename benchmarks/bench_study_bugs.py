"""What the study's two bugs change: paired runs of the ``paper-study`` preset with and without each.

For ``--graphs`` graphs of each generator drawn as the preset draws them, every run is
trained three ways on the study's dataset (needs ``GRAPHPRIOR_STUDY_DATA``): as the preset
does (correct), with ``gate_layout = "row_repeated"`` (GRU and LSTM only: one-gate cells are
unchanged by it) and with ``readout = "padded_position"``; same graph, seed and batch
order, so each difference is the option's alone. Prints one row per run and the mean
paired difference per option and cell.

    GRAPHPRIOR_STUDY_DATA=../shared/reference/stier2021 \\
        nice -n 5 .venv/bin/python -m benchmarks.bench_study_bugs --graphs 2 --store /tmp/study_bugs.db

``--compare BUG.db CORRECT.db`` pairs two finished sweeps instead (e.g. the
``paper-study-padded`` spec's and the preset's, or two datasets): runs of the same graph
draw, cell and seed, per cell the mean accuracy of each (columns named by the stores' file
names), the paired difference first − second with its 95 % t-interval, the
never-learned shares (test accuracy <= 0.55) and the Wilcoxon signed-rank p-value.

    .venv/bin/python -m benchmarks.bench_study_bugs --compare padded.db paper-study.db
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from graphprior.executors import make_executor
from graphprior.intervals import t_interval
from graphprior.spec import RunConfig, expand, load_preset
from graphprior.store import ResultsStore, read_table
from graphprior.study import NEVER_LEARNED, comparable
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


def accuracies(store: str) -> pd.DataFrame:
    """Cell and final test accuracy of a store's finished runs, keyed by graph draw (the
    fields ``RunConfig.draw_id`` hashes), cell and seed: what two sweeps differing only in a
    model option or the data share."""
    keys, values = [], []
    with ResultsStore(store, readonly=True) as results:
        for record in results.records():
            if record.status == "done":
                config = record.config
                keys.append(json.dumps([config["generator"], config["params"], config["graph_seed"], config["cell"],
                                        config["seed"]], sort_keys=True))
                values.append((config["cell"], record.metrics.get("test_acc")))
    frame = pd.DataFrame(values, index=keys, columns=["cell", "acc"])
    frame["acc"] = comparable(frame["acc"].to_numpy())
    return frame


def compare_stores(bug: str, correct: str) -> pd.DataFrame:
    """Per cell: the paired runs of two sweeps, their means, the difference with its 95 %
    interval, never-learned shares and the Wilcoxon signed-rank p-value."""
    pairs = pd.merge(accuracies(bug), accuracies(correct).drop(columns="cell"), left_index=True, right_index=True,
                     suffixes=("_bug", ""))
    rows = []
    for cell, part in pairs.groupby("cell"):
        difference = (part["acc_bug"] - part["acc"]).to_numpy(dtype=float)
        mean, half = t_interval(difference)
        rows.append({"cell": cell, "pairs": len(part), "correct": part["acc"].mean(), "bug": part["acc_bug"].mean(),
                     "difference": mean, "ci_low": mean - half, "ci_high": mean + half,
                     "never_correct": float(np.mean(part["acc"] <= NEVER_LEARNED)),
                     "never_bug": float(np.mean(part["acc_bug"] <= NEVER_LEARNED)),
                     "wilcoxon_p": float(stats.wilcoxon(difference).pvalue) if np.any(difference) else 1.0})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=2, help="graphs per generator")
    parser.add_argument("--store", default="/tmp/study_bugs.db")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--compare", nargs=2, metavar=("BUG_DB", "CORRECT_DB"),
                        help="pair two finished sweeps instead of training")
    args = parser.parse_args()
    if args.compare:
        table = compare_stores(*args.compare)
        table["wilcoxon_p"] = table["wilcoxon_p"].map("{:.2g}".format)
        first, second = (Path(name).stem for name in args.compare)  # "bug": the first store, "correct": the second
        table = table.rename(columns={"bug": first, "correct": second, "never_bug": f"never_{first}",
                                      "never_correct": f"never_{second}"})
        print(table.round(3).to_markdown(index=False))
        return
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
