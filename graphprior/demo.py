"""The demo's whole story in one report: priors drawn, networks trained, structure measured
and used to predict performance (``graphprior demo``, ``make demo``).

:data:`DEMO_SPEC` is a sweep small enough for two cores in about two minutes and large
enough for prediction to mean something: 24 graphs (Watts–Strogatz, Barabási–Albert,
Erdős–Rényi, 6 to 32 nodes) x 4 cell types x 2 training seeds on embedded-Reber
next-symbol prediction, where capacity and wiring decide accuracy (docs/bench/predict.md).
:func:`analyse` predicts accuracy from structure; :func:`write_demo_report` writes
``report.md``, ``report.html`` and the pictures.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from graphprior import plots
from graphprior.predict import POOLED, load_table
from graphprior.report import (DPI, Report, best_results, build_report, figures, markdown_body,
                               markdown_to_html, report_json)
from graphprior.spec import RunConfig, SweepSpec, validate_spec
from graphprior.store import ResultsStore

DEMO_SPEC: dict[str, Any] = {
    "name": "demo",
    "seed": 7,
    "sampling": "random",
    "n_samples": 8,
    "seeds": [0, 1],
    "generators": [
        {"name": "watts_strogatz",
         "params": {"n": {"uniform_int": [6, 32]}, "k": [2, 4], "p": {"uniform": [0.0, 1.0]}}},
        {"name": "barabasi_albert", "params": {"n": {"uniform_int": [6, 32]}, "m": {"uniform_int": [1, 5]}}},
        {"name": "erdos_renyi_gnp", "params": {"n": {"uniform_int": [6, 32]}, "p": {"uniform": [0.02, 0.6]}}},
    ],
    "model": {"mapping": "recurrent", "orientation": "symmetric", "cells": ["rnn_tanh", "rnn_relu", "lstm", "gru"]},
    "tasks": [{"kind": "next_symbol", "grammar": "embedded", "size": 1000}],
    "train": {"epochs": 10, "batch_size": 64, "lr": 0.01, "clip": 5.0},
}
"""The demo sweep (the ``prior`` preset's design at a third of the graphs, one task, two seeds)."""

PREDICT_OPTIONS: dict[str, Any] = {
    "models": ("mean", "bayesian_ridge", "extra_trees"),
    "n_splits": 5,
    "n_repeats": 2,
    "n_permutations": 3,
}
"""Prediction settings: a mean baseline, a linear and a tree model; grouped 5-fold CV twice."""

SIZE_FEATURE = "edges"
"""The feature the accuracy scatter is drawn against (capacity: masked connections)."""


def demo_spec() -> SweepSpec:
    """:data:`DEMO_SPEC`, validated."""
    return validate_spec(DEMO_SPEC)


@dataclass
class DemoResult:
    """What the demo produced: the flat table, the prediction report, the runs' records."""

    spec: SweepSpec
    frame: pd.DataFrame
    report: Report
    records: list[Any]

    @property
    def done(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == "done"]

    def headline(self) -> dict[str, float]:
        """The numbers that matter: pooled R² of the best model (± std over folds), its
        noise ceiling, and the R² of size features alone and of all features."""
        scope = POOLED if POOLED in self.report.best else next(iter(self.report.best))
        r2 = best_results(self.report)[scope].summary()["r2"]
        sets = self.report.ablations[scope]
        return {
            "r2": r2["mean"], "r2_std": r2["std"],
            "ceiling": self.report.ceilings[scope]["ceiling"],
            "size_r2": sets["size"].summary()["r2"]["mean"] if "size" in sets else math.nan,
            "full_r2": sets["full"].summary()["r2"]["mean"] if "full" in sets else math.nan,
        }


def analyse(spec: SweepSpec, store: str | Path, frame: pd.DataFrame, *, progress: bool = False) -> DemoResult:
    """Predict the sweep's test accuracy from structure (each cell type and pooled)."""
    with warnings.catch_warnings():
        # a ring lattice (WS, p = 0) has no degree assortativity: the column is left out
        warnings.filterwarnings("ignore", message="features: leaving out", category=UserWarning)
        table = load_table(frame, task=spec.tasks[0].kind)
    report = build_report(table, progress=progress, **PREDICT_OPTIONS)
    with ResultsStore(store, create=False) as results:
        records = [r for r in results.records() if r.status == "done"]
    return DemoResult(spec, frame, report, records)


# --------------------------------------------------------------------------- pictures

def example_priors(records: list[Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The graph and the recurrent mask of the first stored run of each generator, rebuilt
    from the run's config (the DAG by node order for the layered mapping)."""
    from graphprior.priors import recurrent_mask
    from graphprior.sweep import prior_graphs

    first: dict[str, Any] = {}
    for record in sorted(records, key=lambda r: r.run_id):
        first.setdefault(record.config["generator"], record)
    graphs, masks = {}, {}
    for generator, record in first.items():
        config = RunConfig.model_validate(record.config)
        graph = prior_graphs(config)[0]
        name = f"{generator} ({_params(config.params)})"
        graphs[name] = graph
        masks[name] = recurrent_mask(graph, orientation=config.orientation, self_loops=config.self_loops,
                                     seed=config.graph_seed)
    return graphs, masks


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def learning_histories(result: DemoResult) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Per cell type, the per-epoch histories of its best and its worst run."""
    by_run = {r.run_id: r for r in result.records}
    histories: dict[str, dict[str, list[dict[str, float]]]] = {}
    for cell, rows in result.done.groupby("cell", sort=True):
        ranked = rows.sort_values("test_acc")
        for label, row in (("best", ranked.iloc[-1]), ("worst", ranked.iloc[0])):
            name = f"{label}: {row['generator']}, {row['nodes']:.0f} nodes"
            histories.setdefault(cell, {})[name] = by_run[row["run_id"]].history
    return histories


def learning_figure(histories: dict[str, dict[str, list[dict[str, float]]]]) -> Figure:
    """One panel of learning curves per cell type."""
    figure, axes = plots.grid(len(histories), columns=4, height=3.2)
    for ax, (cell, runs) in zip(axes, histories.items()):
        plots.learning_curves(runs, ax=ax)
        ax.set_title(cell)
    figure.suptitle("Test accuracy per epoch: the best and the worst run of each cell type")
    return figure


def demo_figures(result: DemoResult) -> dict[str, Figure]:
    """Every picture of the demo report by file name."""
    done = result.done
    graphs, masks = example_priors(result.records)
    pictures = {
        "priors.png": plots.priors(graphs, masks),
        "accuracy_by_generator.png": plots.accuracy_by_group(done, "generator", "cell"),
        f"accuracy_vs_{SIZE_FEATURE}.png": plots.accuracy_vs_feature(done, SIZE_FEATURE),
        "learning_curves.png": learning_figure(learning_histories(result)),
    }
    return {**pictures, **figures(result.report)}


# --------------------------------------------------------------------------- report

def _picture(name: str, caption: str) -> list[str]:
    return [f"![{caption}]({name})", "", f"*{caption}*", ""]


def demo_markdown(result: DemoResult) -> str:
    """The demo report as markdown; pictures are referenced by their file names."""
    done, spec = result.done, result.spec
    numbers = result.headline()
    failed = result.frame[result.frame["status"] == "failed"]
    task = spec.tasks[0]
    accuracy = done.pivot_table(index="cell", columns="generator", values="test_acc", aggfunc="mean")
    lines = [
        f"# graphprior demo: does a network's structure predict how well it learns? (`{spec.name}` sweep)", "",
        f"{done['graph_id'].nunique()} random graphs ({', '.join(g.name for g in spec.generators)}) became the "
        f"sparsity masks of recurrent networks ({', '.join(spec.model.cells)}), each trained with "
        f"{len(spec.seeds)} seed(s) on {task.kind} ({task.grammar} Reber, {task.size} strings) for "
        f"{spec.train.epochs} epochs. Their structural features then predict the test accuracy under "
        "cross-validation grouped by graph (runs of one graph never sit on both sides of a split).", "",
        "## The numbers", "",
        f"- {len(result.frame)} runs: {len(done)} done, {len(failed)} failed; "
        f"{done['seconds'].mean():.2f} s per model (in a worker).",
        f"- Structure predicts test accuracy with **R² {numbers['r2']:.2f} ± {numbers['r2_std']:.2f}** "
        f"(all runs pooled, best model); the noise ceiling, the most any function of structure can "
        f"reach given the seed-to-seed spread, is {numbers['ceiling']:.2f}.",
        f"- Size features alone (nodes, edges, ...): R² {numbers['size_r2']:.2f}; all features: "
        f"{numbers['full_r2']:.2f}.", "",
        "## 1. The priors", "",
        "A graph's adjacency matrix masks the recurrent weights: unit j feeds unit i only where the "
        f"graph has the edge j -> i (orientation: {spec.model.orientation}, mapping: {spec.model.mapping}).", "",
        *_picture("priors.png", "One graph of each generator: its mask and its degree distribution"),
        "## 2. What the networks learned", "",
        accuracy.to_markdown(floatfmt=".3f"), "",
        *_picture("accuracy_by_generator.png", "Test accuracy by generator and cell type"),
        *_picture(f"accuracy_vs_{SIZE_FEATURE}.png", f"Test accuracy against the number of {SIZE_FEATURE}"),
        *_picture("learning_curves.png", "Test accuracy per epoch: the best and the worst run of each cell"),
        "## 3. Predicting accuracy from structure", "",
        *_picture("predicted_vs_actual.png", "Predicted vs actual accuracy, with R² and the noise ceiling"),
        *_picture("importances.png", "The most important features"),
        *_picture("ablations.png", "Size-only features vs structure: the ablation"),
        *markdown_body(result.report, heading_level=3),
    ]
    if not failed.empty:
        lines += ["## Failed runs", "", *[f"- `{r.run_id}`: {r.reason}" for r in failed.itertuples()], ""]
    lines += ["## Files", "",
              "`results.db` (the results store; `graphprior bench status`), `table.csv` (one row per run: "
              "configuration, structural features, metrics), `report.json` (every prediction figure).", ""]
    return "\n".join(lines)


def write_demo_report(result: DemoResult, out: str | Path) -> list[Path]:
    """Write ``report.md``, ``report.html``, ``report.json`` and the PNG pictures into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in demo_figures(result).items():
        figure.savefig(out / name, dpi=DPI)
        written.append(out / name)
    text = demo_markdown(result)
    pages = {"report.md": text, "report.html": markdown_to_html(text, "graphprior demo"),
             "report.json": report_json(result.report)}
    for name, content in pages.items():
        (out / name).write_text(content, encoding="utf-8")
        written.append(out / name)
    return written
