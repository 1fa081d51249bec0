"""Every picture the reports, the CLI and the notebooks draw (matplotlib).

Each function returns a :class:`matplotlib.figure.Figure` built without pyplot, so it
works headless and in threads; in a notebook the figure shows itself, and
``figure.savefig(path)`` writes it. Functions that draw on a single axes take ``ax=`` to
draw into a figure of your own instead (and return that axes' figure).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    import igraph
    import torch

    from graphprior.predict import CVResult

_WIDTH = 3.8  # inches per panel


def _axes(ax: Axes | None, size: tuple[float, float] = (5.0, 3.6)) -> Axes:
    """``ax`` itself, or the axes of a new figure of ``size`` inches."""
    if ax is not None:
        return ax
    return Figure(figsize=size, layout="constrained").subplots()


def grid(n: int, columns: int = 3, width: float = _WIDTH, height: float | None = None) -> tuple[Figure, np.ndarray]:
    """A figure of ``n`` panels in rows of ``columns``; unused panels hidden."""
    if n < 1:
        raise ValueError(f"n must be >= 1 panels, got {n}")
    columns = min(n, columns)
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(width * columns, (height or width) * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return figure, axes


def _integer_ticks(*axes: Axis) -> None:
    """Ticks only at whole numbers (units, degrees, counts, epochs)."""
    for axis in axes:
        axis.set_major_locator(MaxNLocator(integer=True))


def _as_array(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """A 2-D numpy array of a mask given as a torch tensor or array."""
    array = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {array.shape}")
    return array


# --------------------------------------------------------------------------- priors

def mask_heatmap(mask: torch.Tensor | np.ndarray, title: str = "recurrent mask", *, ax: Axes | None = None) -> Figure:
    """A recurrent mask as a black-and-white matrix: ``mask[i, j]`` (edge j -> i) is black.

    Rows are the receiving units, columns the sending ones, so a symmetric (undirected)
    prior looks mirrored about the diagonal and a DAG by node order is triangular.
    """
    array = _as_array(mask)
    ax = _axes(ax, (4.0, 3.8))
    ax.imshow(array != 0, cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    density = float((array != 0).mean())
    ax.set_title(f"{title}\n{array.shape[0]}x{array.shape[1]}, {100 * density:.0f} % nonzero", fontsize=9)
    ax.set(xlabel="sending unit j", ylabel="receiving unit i")
    _integer_ticks(ax.xaxis, ax.yaxis)
    return ax.figure


def degree_distribution(graph: igraph.Graph, title: str = "degree distribution", *, ax: Axes | None = None) -> Figure:
    """Histogram of a graph's (total) node degrees: how many nodes have each degree."""
    degrees = np.asarray(graph.degree(), dtype=int)
    ax = _axes(ax, (4.0, 3.0))
    counts = np.bincount(degrees, minlength=degrees.max(initial=0) + 1)
    ax.bar(np.arange(len(counts)), counts, width=0.8, color="tab:blue")
    ax.set_title(f"{title}\nmean degree {degrees.mean():.1f}", fontsize=9)
    ax.set(xlabel="degree (edges per node)", ylabel="nodes")
    _integer_ticks(ax.xaxis, ax.yaxis)
    return ax.figure


def priors(graphs: Mapping[str, igraph.Graph], masks: Mapping[str, torch.Tensor | np.ndarray]) -> Figure:
    """One column per named prior: its mask above, its graph's degree distribution below."""
    if set(graphs) != set(masks):
        raise ValueError(f"graphs and masks must have the same names, got {sorted(graphs)} and {sorted(masks)}")
    names = list(graphs)
    figure = Figure(figsize=(_WIDTH * len(names), 2 * _WIDTH), layout="constrained")
    axes = figure.subplots(2, len(names), squeeze=False, height_ratios=[1.2, 0.8])
    for column, name in enumerate(names):
        mask_heatmap(masks[name], name, ax=axes[0, column])
        degree_distribution(graphs[name], "degrees", ax=axes[1, column])
    figure.suptitle("Priors: recurrent masks (black = connection) and degree distributions")
    return figure


# --------------------------------------------------------------------------- sweep results

def accuracy_by_group(frame: pd.DataFrame, by: str = "generator", hue: str = "cell", value: str = "test_acc",
                      *, ax: Axes | None = None) -> Figure:
    """Every run's ``value`` as a dot, grouped by ``by`` on the x axis and ``hue`` side by
    side, with each group's mean as a bar: the spread next to the average."""
    _require(frame, [by, hue, value], "frame")
    ax = _axes(ax, (7.0, 3.8))
    groups = sorted(frame[by].unique())
    hues = sorted(frame[hue].unique())
    width = 0.8 / len(hues)
    rng = np.random.default_rng(0)  # horizontal jitter, the same picture every time
    for i, name in enumerate(hues):
        positions = np.arange(len(groups)) + (i - (len(hues) - 1) / 2) * width
        rows = frame[frame[hue] == name]
        means = [rows.loc[rows[by] == g, value].mean() for g in groups]
        ax.bar(positions, means, width * 0.9, alpha=0.35, color=f"C{i}", label=name)
        for position, g in zip(positions, groups):
            values = rows.loc[rows[by] == g, value].to_numpy()
            jitter = rng.uniform(-width / 4, width / 4, size=len(values))
            ax.plot(position + jitter, values, "o", markersize=3, color=f"C{i}")
    ax.set_xticks(np.arange(len(groups)), groups)
    low = frame[value].min()
    ax.set_ylim(max(0.0, low - 0.05 * (frame[value].max() - low + 1e-9)), None)
    ax.set(xlabel=by, ylabel=value, title=f"{value} by {by} and {hue} (dots: runs, bars: means)")
    ax.legend(title=hue, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax.figure


def accuracy_vs_feature(frame: pd.DataFrame, feature: str, value: str = "test_acc", hue: str = "cell",
                        *, ax: Axes | None = None) -> Figure:
    """Scatter of ``value`` against one structural ``feature``, one colour per ``hue``."""
    _require(frame, [feature, value, hue], "frame")
    ax = _axes(ax)
    for i, (name, rows) in enumerate(frame.groupby(hue, sort=True)):
        ax.scatter(rows[feature], rows[value], s=12, alpha=0.75, color=f"C{i}", label=str(name))
    ax.set(xlabel=feature, ylabel=value, title=f"{value} vs {feature}")
    ax.legend(title=hue, fontsize=8)
    return ax.figure


def learning_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], metric: str = "test_acc",
                    *, ax: Axes | None = None) -> Figure:
    """``metric`` per epoch of each named run's history (``History.epochs`` or a stored
    run's ``history``: a list of per-epoch dicts with ``epoch``)."""
    ax = _axes(ax)
    for name, epochs in histories.items():
        points = [(e["epoch"], e[metric]) for e in epochs if metric in e]
        if not points:
            raise ValueError(f"histories[{name!r}] has no epoch with {metric!r}")
        x, y = zip(*points)
        ax.plot(x, y, marker="o", markersize=3, label=name)
    ax.set(xlabel="epoch", ylabel=metric, title=f"learning curves: {metric}")
    _integer_ticks(ax.xaxis)
    ax.legend(fontsize=8, loc="lower right")
    return ax.figure


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; it has {list(frame.columns)}")


# --------------------------------------------------------------------------- prediction

def predicted_vs_actual(results: Mapping[str, CVResult], target: str = "test_acc",
                        ceilings: Mapping[str, float] | None = None) -> Figure:
    """Out-of-fold predictions (first repeat) against the truth, one panel per scope, with
    the cross-validated R² (mean ± std over folds) and, where known, the noise ceiling."""
    figure, axes = grid(len(results))
    for ax, (scope, result) in zip(axes, results.items()):
        points = result.predictions[result.predictions["repeat"] == 0]
        ax.scatter(points["actual"], points["predicted"], s=10, alpha=0.7)
        low = min(points["actual"].min(), points["predicted"].min())
        high = max(points["actual"].max(), points["predicted"].max())
        ax.plot([low, high], [low, high], color="grey", linewidth=1, label="perfect prediction")
        r2 = result.summary()["r2"]
        title = f"{scope}: {result.model}\nR² {r2['mean']:.2f} ± {r2['std']:.2f}"
        ceiling = (ceilings or {}).get(scope, math.nan)
        if not math.isnan(ceiling):
            title += f" (noise ceiling {ceiling:.2f})"
        ax.set_title(title, fontsize=9)
        ax.set(xlabel=f"actual {target}", ylabel=f"predicted {target}")
        ax.legend(fontsize=7, loc="upper left")
    figure.suptitle("Predicted vs actual (out-of-fold, grouped cross-validation)")
    return figure


def importances(frames: Mapping[str, pd.DataFrame], top: int = 10, models: Mapping[str, str] | None = None) -> Figure:
    """The ``top`` permutation importances (drop in held-out R² when a feature is shuffled)
    per scope, with their standard deviation; ``models`` names each scope's model."""
    figure, axes = grid(len(frames), width=4.4)
    for ax, (scope, frame) in zip(axes, frames.items()):
        shown = frame.head(top).iloc[::-1]
        ax.barh(shown["feature"], shown["mean"], xerr=shown["std"], color="tab:green")
        ax.axvline(0, color="grey", linewidth=1)
        model = (models or {}).get(scope)
        ax.set_title(f"{scope} ({model})" if model else scope, fontsize=9)
        ax.set_xlabel("drop in R² when shuffled")
        ax.tick_params(axis="y", labelsize=8)
    figure.suptitle(f"Most important features (top {top}, permutation importance)")
    return figure


def ablations(sets: Mapping[str, Mapping[str, CVResult]]) -> Figure:
    """R² (mean ± std over folds) of each feature set, grouped by scope: does structure
    predict beyond size? (``size`` is nodes, edges and other size counts only.)"""
    scopes = list(sets)
    names = list(dict.fromkeys(n for by_name in sets.values() for n in by_name))
    if not names:
        raise ValueError("sets must hold at least one feature set")
    figure = Figure(figsize=(max(5.0, 1.8 * len(scopes)), 3.8), layout="constrained")
    ax = figure.subplots()
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        summaries = [sets[s][name].summary()["r2"] if name in sets[s] else {"mean": np.nan, "std": np.nan}
                     for s in scopes]
        positions = np.arange(len(scopes)) + i * width
        ax.bar(positions, [r["mean"] for r in summaries], width, yerr=[r["std"] for r in summaries], label=name)
    ax.set_xticks(np.arange(len(scopes)) + 0.4 - width / 2, scopes)
    ax.axhline(0, color="grey", linewidth=1)
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, -1.0), min(high, 1.05))  # R² <= 1; a hopeless set would squash the rest
    ax.set(ylabel="cross-validated R² (clipped at -1)", title="Feature ablations: size only vs structure")
    ax.legend(title="features", fontsize=8)
    return figure


# --------------------------------------------------------------------------- benchmarks

def sequences_to_solve(sequences: Mapping[str, Sequence[float]], budget: float | None = None,
                       *, ax: Axes | None = None) -> Figure:
    """Share of trials solved against training sequences, one curve per model (the
    Hochreiter & Schmidhuber 1997 benchmark); unsolved trials (NaN) never count."""
    ax = _axes(ax)
    for name, values in sequences.items():
        values = np.asarray(values, dtype=float)
        solved = np.sort(values[np.isfinite(values)])
        shares = np.arange(1, len(solved) + 1) / max(len(values), 1)
        ax.step(np.r_[0, solved], np.r_[0, shares], where="post", label=f"{name} ({len(solved)}/{len(values)})")
    if budget is not None:
        ax.axvline(budget, color="grey", linestyle="--", linewidth=1, label="budget")
    ax.set(xlabel="training sequences", ylabel="share of trials solved", ylim=(0, 1.02),
           title="Embedded Reber: trials solved vs training sequences")
    ax.legend(fontsize=8)
    return ax.figure



def structure_emergence(curves: Mapping[str, Sequence[Sequence[float]]], threshold: float = 0.9,
                        path: str | None = None, *, ax: Axes | None = None) -> Figure:
    """Structure-emergence curves of sparsity during learning: per algorithm (a key of
    ``curves``), the Jaccard overlap of each epoch's mask with the final mask (one list per
    run, e.g. a record's ``mask_jaccard_final`` per epoch; ``rnn_models.dynamic``'s
    ``overlap_with_final``), the mean over runs with its range shaded, and ``threshold``
    (structure "determined") dashed. With ``path`` the figure is also written there (PNG)."""
    ax = _axes(ax, (5.5, 3.6))
    for i, (name, runs) in enumerate(curves.items()):
        if not runs or not all(runs):
            raise ValueError(f"curves[{name!r}] must hold at least one non-empty curve")
        width = min(len(run) for run in runs)
        values = np.array([run[:width] for run in runs], dtype=float)
        epochs = np.arange(1, width + 1)
        ax.plot(epochs, values.mean(0), marker="o", markersize=3, color=f"C{i}", label=name)
        ax.fill_between(epochs, values.min(0), values.max(0), color=f"C{i}", alpha=0.15)
    ax.axhline(threshold, color="0.4", linestyle="--", linewidth=1)
    ax.set(xlabel="epoch", ylabel="Jaccard overlap with the final mask", ylim=(0.0, 1.02),
           title="structure emergence")
    _integer_ticks(ax.xaxis)
    ax.legend(fontsize=8, loc="lower right")
    if path is not None:
        ax.figure.savefig(path, dpi=120, bbox_inches="tight")
    return ax.figure


# --------------------------------------------------------------------------- topology

PLANE_LABELS: tuple[str, str] = ("average clustering C", "average path length L")
"""Axis labels of the (clustering, path length) plane (``plane_heatmap``)."""


def plane_heatmap(means: np.ndarray, x_edges: Sequence[float], y_edges: Sequence[float],
                  sweet_spot: tuple[int, int] | None = None, title: str = "", value: str = "mean test_acc",
                  points: pd.DataFrame | None = None, *, ax: Axes | None = None) -> Figure:
    """graph2nn's picture (You et al. 2020): mean performance over the (clustering, path
    length) plane. ``means[i, j]`` is the mean over the graphs whose path length falls in
    bin ``i`` (``y_edges``) and clustering in bin ``j`` (``x_edges``), NaN where no graph
    falls (left blank); ``sweet_spot`` (row, column) is marked with a star; ``points``
    (columns ``x``, ``y``) draws each graph as a dot."""
    ax = _axes(ax, (4.6, 3.8))
    image = ax.pcolormesh(np.asarray(x_edges), np.asarray(y_edges), np.ma.masked_invalid(means),
                          cmap="viridis", shading="flat")
    ax.figure.colorbar(image, ax=ax, label=value)
    if points is not None:
        ax.scatter(points["x"], points["y"], s=6, color="white", edgecolors="black", linewidths=0.3)
    if sweet_spot is not None:
        row, column = sweet_spot
        ax.plot((x_edges[column] + x_edges[column + 1]) / 2, (y_edges[row] + y_edges[row + 1]) / 2, marker="*",
                markersize=16, color="red", markeredgecolor="white", label="sweet spot")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)  # off the data
    ax.set(xlabel=PLANE_LABELS[0], ylabel=PLANE_LABELS[1], title=title)
    return ax.figure


def best_so_far(curves: Mapping[str, Sequence[Sequence[float]]], metric: str = "test_acc", *,
                ax: Axes | None = None) -> Figure:
    """Best-so-far curves of searches (``graphprior.search``): per strategy (a key of
    ``curves``), the best score after each trained candidate, one list per search seed; the
    mean over seeds with a 95% t-interval shaded when there are several."""
    from graphprior.intervals import t_interval

    ax = _axes(ax, (5.5, 3.6))
    for i, (name, runs) in enumerate(curves.items()):
        if not runs or not all(len(run) for run in runs):
            raise ValueError(f"curves[{name!r}] must hold at least one non-empty curve")
        width = min(len(run) for run in runs)
        values = np.array([run[:width] for run in runs], dtype=float)
        steps = np.arange(1, width + 1)
        mean, half = t_interval(values, axis=0)
        ax.plot(steps, mean, color=f"C{i}", label=f"{name} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(steps, mean - half, mean + half, color=f"C{i}", alpha=0.15)
    ax.set(xlabel="candidates trained", ylabel=f"best {metric} so far", title="search: best so far")
    _integer_ticks(ax.xaxis)
    ax.legend(fontsize=8, loc="lower right")
    return ax.figure
