"""The fixed-budget topology study: at equal units and weights, does the recurrent graph's
topology change how well a network learns, and which properties decide it?

A results store of the ``topology`` preset (graphprior/presets/topology.toml) holds runs of
graphs with one node count and an edge budget, so every size feature is constant within a
budget and anything a regressor explains beyond the mean is structure. This module reads
such a store into a frame with ``budget``, ``family`` and ``baseline`` columns
(:func:`topology_frame`) and answers, per budget, task and cell type:

* structure-only R² ± std over repeated grouped CV, next to the noise ceiling, with rank
  correlations and the features that matter (:func:`structure_prediction`, built on
  ``graphprior.predict``);
* the best and worst graph families, each with a 95 % confidence interval over training
  seeds (:func:`family_table`);
* the sparse priors against the equal-parameter dense baseline (``dense_matched``), paired
  over training seeds (:func:`dense_comparison`);
* graph2nn's picture: mean performance over the (clustering, path length) plane with the
  sweet spot marked (:func:`plane_grid`, drawn by ``graphprior.plots.plane_heatmap``).

:func:`write_topology_report` writes all of it: report.md, one heatmap PNG per budget and
task (a panel per cell type) and, per budget and task, the priors' flat table for
``graphprior predict``. You, Leskovec, He & Xie (2020), "Graph Structure of Neural
Networks", ICML, asked the same of MLPs and CNNs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from graphprior.features import FEATURE_NAMES
from graphprior.intervals import t_interval
from graphprior.predict import (
    SIZE_FEATURES,
    PredictionTable,
    TableSource,
    cross_validate,
    feasible_folds,
    importances,
    noise_ceiling,
    read_source,
)
from graphprior.table import normalise, write_table

__all__ = ["BASELINE", "FAMILY_PARAMETERS", "PLANE", "PlaneGrid", "dense_comparison", "family_table", "heatmaps",
           "plane_edges", "plane_grid", "seed_interval", "structure_features", "structure_prediction",
           "topology_frame", "write_topology_report"]

TARGET = "test_acc"
BASELINE = "dense_matched"
"""The generator of the equal-parameter dense baseline (``graphprior.generators.dense_matched``)."""
FAMILY_PARAMETERS: tuple[str, ...] = ("p", "exponent", "blocks", "ratio")
"""Generator parameters that name a family within a generator (rewiring, exponent, blocks,
density ratio); the size parameters (n, k, m, d, budget) are the budget's."""
PLANE = ("average_clustering", "average_shortest_path_length")
"""The features of graph2nn's plane: (clustering, path length)."""
CELLS_ORDER = ("rnn_tanh", "rnn_relu", "lstm", "gru")


# --------------------------------------------------------------------------- the frame

def topology_frame(source: TableSource, target: str = TARGET) -> pd.DataFrame:
    """The done runs of a store (``.db``) or table with the columns the study needs.

    ``budget``: the edge budget a graph was drawn for (its edges less the recorded
    ``edge_deviation``, 0 where none was recorded); ``baseline``: the run is the
    equal-parameter dense baseline; ``family``: generator and its ``FAMILY_PARAMETERS``
    (e.g. ``watts_strogatz p=0.1``); ``cell`` and ``group`` (the graph) as in prediction.
    """
    frame = normalise(read_source(source))
    missing = [c for c in ("generator", "task", "seed", "edges", target, *PLANE) if c not in frame.columns]
    if missing:
        raise ValueError(f"source: not a topology sweep's table, it lacks columns {missing}")
    if frame.empty:
        raise ValueError("source: no runs with status 'done'")
    deviation = frame["edge_deviation"].fillna(0.0) if "edge_deviation" in frame.columns else 0.0
    return frame.assign(
        budget=(frame["edges"] - deviation).round().astype(int),
        baseline=frame["generator"] == BASELINE,
        family=_family_labels(frame),
    )


def _family_labels(frame: pd.DataFrame) -> pd.Series:
    """``generator`` plus the family parameters it was given, e.g. ``block_model_edges blocks=3 ratio=10``."""
    present = [p for p in FAMILY_PARAMETERS if p in frame.columns]

    def label(row: pd.Series) -> str:
        given = [f"{p}={row[p]:g}" for p in present if pd.notna(row[p])]
        return " ".join([str(row["generator"]), *given])

    return frame.apply(label, axis=1) if len(frame) else pd.Series(dtype=str)


def _scopes(frame: pd.DataFrame) -> list[tuple[int, str, str]]:
    """(budget, task, cell) present, in a stable order (cells as the preset lists them)."""
    cells = _cells_in_order(frame)
    keys = frame[["budget", "task", "cell"]].drop_duplicates().itertuples(index=False)
    return sorted(((int(b), str(t), str(c)) for b, t, c in keys), key=lambda k: (k[0], k[1], cells.index(k[2])))


def _cells_in_order(frame: pd.DataFrame) -> list[str]:
    """The frame's cell types in the preset's order (unknown ones last, by name)."""
    order = {cell: i for i, cell in enumerate(CELLS_ORDER)}
    return sorted(set(frame["cell"]), key=lambda c: (order.get(c, len(order)), c))


def _scope(frame: pd.DataFrame, budget: int, task: str, cell: str) -> pd.DataFrame:
    return frame[(frame["budget"] == budget) & (frame["task"] == task) & (frame["cell"] == cell)]


# --------------------------------------------------------------------------- intervals

def seed_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and Student-t confidence interval of per-seed values (``n``: the finite ones; NaN bounds below two)."""
    mean, half = t_interval(values, confidence)
    return {"mean": mean, "low": mean - half, "high": mean + half,
            "n": int(np.count_nonzero(~np.isnan(np.asarray(values, dtype=float))))}


def _per_seed(rows: pd.DataFrame, target: str) -> pd.Series:
    """The target per training seed, averaged over the rows' graphs."""
    return rows.groupby("seed")[target].mean()


# --------------------------------------------------------------------------- families, baseline

def family_table(frame: pd.DataFrame, target: str = TARGET) -> pd.DataFrame:
    """Per budget, task, cell type and family: mean target with its 95 % interval over
    training seeds (each seed's value the mean over the family's graphs), graphs and seeds;
    sorted best first within each scope. The dense baseline is a family of its own."""
    rows = []
    for budget, task, cell in _scopes(frame):
        scope = _scope(frame, budget, task, cell)
        for family, members in scope.groupby("family"):
            interval = seed_interval(_per_seed(members, target).to_numpy())
            rows.append({"budget": budget, "task": task, "cell": cell, "family": family,
                         "baseline": bool(members["baseline"].iloc[0]), "graphs": members["group"].nunique(),
                         "seeds": interval["n"], "mean": interval["mean"], "ci_low": interval["low"],
                         "ci_high": interval["high"]})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(["budget", "task", "cell", "mean"], ascending=[True, True, True, False],
                             ignore_index=True)


def dense_comparison(frame: pd.DataFrame, target: str = TARGET) -> pd.DataFrame:
    """Sparse priors minus the equal-parameter dense baseline, paired over training seeds.

    Per budget, task and cell type: for all priors together (``family = "all priors"``) and
    for each family, the per-seed difference (the family's mean over its graphs at that seed
    minus the baseline's run at that seed) with its mean and 95 % t-interval over the seeds
    both have. Scopes without a baseline run are left out. A best family picked from this
    table is picked after the fact: its interval does not account for the choice.
    """
    rows = []
    for budget, task, cell in _scopes(frame):
        scope = _scope(frame, budget, task, cell)
        dense = _per_seed(scope[scope["baseline"]], target)
        if dense.empty:
            continue
        priors = scope[~scope["baseline"]]
        candidates = [("all priors", priors), *priors.groupby("family")]
        for family, members in candidates:
            sparse = _per_seed(members, target)
            paired = sparse.index.intersection(dense.index)
            interval = seed_interval((sparse[paired] - dense[paired]).to_numpy())
            rows.append({"budget": budget, "task": task, "cell": cell, "family": family,
                         "dense_units": int(scope.loc[scope["baseline"], "nodes"].iloc[0]),
                         "seeds": interval["n"], "difference": interval["mean"], "ci_low": interval["low"],
                         "ci_high": interval["high"]})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- structure-only prediction

def _graph_means(rows: pd.DataFrame, columns: Sequence[str], target: str) -> pd.DataFrame:
    """One row per graph: its features (equal over its runs) and its target averaged over seeds."""
    return rows.groupby("group").agg({**{c: "first" for c in columns}, target: "mean"}).reset_index()


def structure_features(rows: pd.DataFrame) -> list[str]:
    """The structural features that can say anything here: ``FEATURE_NAMES`` less the size
    features, less those undefined (NaN) for some graph or constant over the rows."""
    present = [f for f in FEATURE_NAMES if f in rows.columns and f not in SIZE_FEATURES]
    return [f for f in present if rows[f].notna().all() and rows[f].nunique() > 1]


def structure_prediction(frame: pd.DataFrame, model: str = "random_forest", *, target: str = TARGET,
                         n_splits: int = 5, n_repeats: int = 5, seed: int = 0, top: int = 3,
                         n_jobs: int | None = None) -> pd.DataFrame:
    """Structure-only prediction per budget, task and cell type (the priors; the baseline left out).

    ``model`` (a ``graphprior.predict.REGRESSORS`` name) is cross-validated on every run with
    repeated grouped k-fold (runs of one graph never on both sides; folds lowered to what
    the graphs allow, ``feasible_folds``) on ``structure_features``: with size constant
    within a budget, an R² above zero is structure. Next to it the noise ceiling (the most
    any function of the graph could explain, given the seed-to-seed spread), Spearman and
    Kendall of the out-of-fold predictions and the ``top`` permutation importances.
    Scopes with too few graphs to split are reported with NaN and a ``note``.
    """
    rows = []
    for budget, task, cell in _scopes(frame):
        scope = _scope(frame, budget, task, cell)
        priors = scope[~scope["baseline"]].reset_index(drop=True)
        features = structure_features(priors)
        row = {"budget": budget, "task": task, "cell": cell, "runs": len(priors),
               "graphs": priors["group"].nunique(), "features": len(features), "note": ""}
        table = PredictionTable(priors[["cell", "group", *features, target]], tuple(features), target)
        row["ceiling"] = noise_ceiling(table)["ceiling"]
        folds = feasible_folds(table, n_splits)
        if folds < 2 or not features or np.ptp(table.y) == 0:
            row["note"] = "too few graphs or no varying feature or target to cross-validate"
            rows.append(row)
            continue
        result = cross_validate(table, model, n_splits=folds, n_repeats=n_repeats, seed=seed, n_jobs=n_jobs)
        summary = result.summary()
        row.update({"folds": folds, "r2": summary["r2"]["mean"], "r2_std": summary["r2"]["std"],
                    "spearman": summary["spearman"]["mean"], "kendall": summary["kendall"]["mean"]})
        ranked = importances(table, model, n_splits=folds, n_permutations=3, seed=seed, n_jobs=n_jobs)
        row["top_features"] = ", ".join(f"{r.feature} ({r.mean:+.3f})" for r in ranked.head(top).itertuples())
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the plane

@dataclass(frozen=True)
class PlaneGrid:
    """Mean target over the (clustering, path length) plane of one budget, task and cell type.

    ``means[i, j]``/``counts[i, j]``: mean over the graphs (each averaged over its seeds)
    whose path length is in bin ``i`` of ``y_edges`` and clustering in bin ``j`` of
    ``x_edges``; ``sweet_spot`` the (row, column) of the best bin holding at least
    ``min_graphs`` graphs; ``points`` each graph's ``x``, ``y`` and ``value``.
    """

    means: np.ndarray
    counts: np.ndarray
    x_edges: np.ndarray
    y_edges: np.ndarray
    sweet_spot: tuple[int, int] | None
    points: pd.DataFrame

    def describe(self) -> str:
        """The sweet spot in words: its bin ranges, mean and graphs."""
        if self.sweet_spot is None:
            return "none (no bin holds enough graphs)"
        i, j = self.sweet_spot
        x, y = self.x_edges, self.y_edges
        return (f"C {x[j]:.2f}-{x[j + 1]:.2f}, L {y[i]:.2f}-{y[i + 1]:.2f}: "
                f"{self.means[i, j]:.3f} over {int(self.counts[i, j])} graphs "
                f"(all priors {self.points['value'].mean():.3f}, "
                f"bins {np.nanmin(self.means):.3f}-{np.nanmax(self.means):.3f})")


def plane_edges(values: pd.Series, bins: int) -> np.ndarray:
    """``bins`` equal-width bins spanning ``values``, padded by 2 % of their range on each side
    so that no graph sits on the plot's border (by 0.5 when all values are equal)."""
    low, high = float(values.min()), float(values.max())
    pad = 0.02 * (high - low) if high - low > 1e-9 else 0.5
    return np.linspace(low - pad, high + pad, bins + 1)


def plane_grid(rows: pd.DataFrame, x_edges: np.ndarray, y_edges: np.ndarray, target: str = TARGET,
               min_graphs: int = 2) -> PlaneGrid:
    """Bin the graphs of ``rows`` (one scope's priors) over the plane; see :class:`PlaneGrid`."""
    graphs = _graph_means(rows, PLANE, target)
    x, y, value = graphs[PLANE[0]].to_numpy(), graphs[PLANE[1]].to_numpy(), graphs[target].to_numpy()
    column = np.clip(np.searchsorted(x_edges, x, side="right") - 1, 0, len(x_edges) - 2)
    row = np.clip(np.searchsorted(y_edges, y, side="right") - 1, 0, len(y_edges) - 2)
    shape = (len(y_edges) - 1, len(x_edges) - 1)
    counts = np.zeros(shape)
    sums = np.zeros(shape)
    np.add.at(counts, (row, column), 1)
    np.add.at(sums, (row, column), value)
    with np.errstate(invalid="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    eligible = np.where(counts >= min_graphs, means, -np.inf)
    best = np.unravel_index(np.argmax(eligible), shape)
    sweet = tuple(int(v) for v in best) if np.isfinite(eligible).any() else None
    return PlaneGrid(means, counts, x_edges, y_edges, sweet, pd.DataFrame({"x": x, "y": y, "value": value}))


def heatmaps(frame: pd.DataFrame, out_dir: Path, bins: int = 5, target: str = TARGET,
             min_graphs: int = 2) -> dict[tuple[int, str], tuple[Path, dict[str, PlaneGrid]]]:
    """One PNG per budget and task, a heatmap panel per cell type on shared bins (the
    budget's priors span them); returns the paths and the grids by cell."""
    from graphprior.plots import grid, plane_heatmap

    written = {}
    priors = frame[~frame["baseline"]]
    for budget, task in sorted({(b, t) for b, t, _ in _scopes(priors)}):
        rows = priors[(priors["budget"] == budget) & (priors["task"] == task)]
        x_edges, y_edges = plane_edges(rows[PLANE[0]], bins), plane_edges(rows[PLANE[1]], bins)
        cells = [c for _, _, c in _scopes(rows)]
        figure, axes = grid(len(cells), columns=2, width=4.6)
        grids = {}
        for ax, cell in zip(axes, cells):
            grids[cell] = plane = plane_grid(rows[rows["cell"] == cell], x_edges, y_edges, target, min_graphs)
            plane_heatmap(plane.means, x_edges, y_edges, plane.sweet_spot, title=cell, value=f"mean {target}",
                          points=plane.points, ax=ax)
        figure.suptitle(f"{task}, {budget} edges: mean {target} over the (C, L) plane")
        path = out_dir / f"plane_{budget}_{task}.png"
        figure.savefig(path, dpi=110)
        written[(budget, task)] = (path, grids)
    return written


# --------------------------------------------------------------------------- the report

def write_topology_report(source: TableSource, out_dir: str | Path, *, model: str = "random_forest",
                          bins: int = 5, n_splits: int = 5, n_repeats: int = 5, seed: int = 0,
                          n_jobs: int | None = None) -> list[Path]:
    """Write the study's report of a store or table into ``out_dir``; returns the files.

    ``report.md`` (per budget, task and cell type: structure-only R² ± std next to the noise
    ceiling, rank correlations and the features that matter; best and worst families with
    95 % intervals over seeds; priors minus the dense baseline paired over seeds; the sweet
    spot), ``plane_<budget>_<task>.png`` heatmaps, ``families.csv``, ``dense.csv``,
    ``prediction.csv`` and ``priors_<budget>_<task>.csv`` (the priors' runs, for
    ``graphprior predict``).
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    frame = topology_frame(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    families, dense = family_table(frame), dense_comparison(frame)
    prediction = structure_prediction(frame, model, n_splits=n_splits, n_repeats=n_repeats, seed=seed, n_jobs=n_jobs)
    planes = heatmaps(frame, out, bins)
    written = [path for path, _ in planes.values()]
    for name, table in (("families", families), ("dense", dense), ("prediction", prediction)):
        written.append(write_table(table, out / f"{name}.csv"))
    for budget, task in sorted(planes):
        rows = frame[(frame["budget"] == budget) & (frame["task"] == task) & ~frame["baseline"]]
        written.append(write_table(rows.drop(columns=["group"]), out / f"priors_{budget}_{task}.csv"))
    report = out / "report.md"
    report.write_text(_markdown(frame, families, dense, prediction, planes, model), encoding="utf-8")
    return [report, *written]


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _ci(row: pd.Series, mean: str = "mean") -> str:
    """``mean [low, high]`` of a families or dense row."""
    return f"{_fmt(row[mean])} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"


def _markdown(frame: pd.DataFrame, families: pd.DataFrame, dense: pd.DataFrame, prediction: pd.DataFrame,
              planes: dict, model: str) -> str:
    """The report's text: a section per budget and task, a table row per cell type."""
    lines = ["# Topology study: does structure matter beyond size?", "",
             f"{len(frame)} runs, {frame['group'].nunique()} graphs, "
             f"budgets {sorted(map(int, frame['budget'].unique()))} "
             f"edges, cells {', '.join(_cells_in_order(frame))}, "
             f"training seeds {sorted(map(int, frame['seed'].unique()))}. "
             "Intervals are 95 % Student-t over training seeds; "
             f"R² is {model} on the structural features (size features are constant within a budget), "
             "mean ± std over repeated grouped k-fold.", ""]
    for budget, task in sorted({(b, t) for b, t, _ in _scopes(frame)}):
        lines += [f"## {budget} edges, {task}", ""]
        lines += _prediction_lines(prediction, budget, task)
        lines += _family_lines(families, budget, task)
        lines += _dense_lines(dense, budget, task)
        if (budget, task) in planes:
            path, grids = planes[(budget, task)]
            lines += [f"Sweet spot (best bin with at least 2 graphs) per cell, heatmap `{path.name}`:", ""]
            lines += [f"- {cell}: {plane.describe()}" for cell, plane in grids.items()] + [""]
    return "\n".join(lines)


def _prediction_lines(prediction: pd.DataFrame, budget: int, task: str) -> list[str]:
    rows = prediction[(prediction["budget"] == budget) & (prediction["task"] == task)]
    lines = ["| cell | graphs | runs | structure-only R² | noise ceiling | Spearman | Kendall | top features |",
             "|---|---|---|---|---|---|---|---|"]
    for _, row in rows.iterrows():
        value = lambda name: row.get(name, math.nan)  # noqa: E731 -- a scope too small has no CV columns
        features = row.get("top_features")
        lines.append(f"| {row['cell']} | {row['graphs']} | {row['runs']} "
                     f"| {_fmt(value('r2'))} ± {_fmt(value('r2_std'))} "
                     f"| {_fmt(row['ceiling'])} | {_fmt(value('spearman'))} | {_fmt(value('kendall'))} "
                     f"| {features if isinstance(features, str) else row['note']} |")
    return lines + [""]


def _family_lines(families: pd.DataFrame, budget: int, task: str) -> list[str]:
    lines = ["| cell | best family (mean [95 % CI]) | worst family | dense baseline |", "|---|---|---|---|"]
    rows = families[(families["budget"] == budget) & (families["task"] == task)]
    for cell in _cells_in_order(rows):
        part = rows[rows["cell"] == cell]
        priors, base = part[~part["baseline"]], part[part["baseline"]]
        best, worst = (_family_ci(priors.iloc[i]) if len(priors) else "n/a (no finished prior runs)" for i in (0, -1))
        baseline = _ci(base.iloc[0]) if len(base) else "n/a"
        lines.append(f"| {cell} | {best} | {worst} | {baseline} |")
    return lines + [""]


def _family_ci(row: pd.Series, column: str = "mean") -> str:
    return f"{row.family}: {_ci(row, column)}"


def _dense_lines(dense: pd.DataFrame, budget: int, task: str) -> list[str]:
    rows = dense[(dense["budget"] == budget) & (dense["task"] == task)] if not dense.empty else dense
    if rows.empty:
        return ["No dense baseline runs in this scope.", ""]
    lines = ["| cell | dense units | all priors − dense [95 % CI] | best family − dense (picked after the fact) |",
             "|---|---|---|---|"]
    for cell in _cells_in_order(rows):
        part = rows[rows["cell"] == cell]
        pooled = part[part["family"] == "all priors"].iloc[0]
        families = part[part["family"] != "all priors"].sort_values("difference", ascending=False)
        best = _family_ci(families.iloc[0], "difference") if len(families) else "n/a (no finished prior runs)"
        lines.append(f"| {cell} | {pooled.dense_units} | {_ci(pooled, 'difference')} | {best} |")
    return lines + [""]
