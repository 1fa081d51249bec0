"""graphprior.plots: every function returns a Figure whose axes show the data they were given."""

from __future__ import annotations

import math

import igraph
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from graphprior import plots
from graphprior.predict import ablations, cross_validate, importances, load_table


def _visible(figure: Figure) -> list:
    return [ax for ax in figure.axes if ax.get_visible()]


def test_mask_heatmap_draws_the_mask_with_its_density():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = mask[2, 3] = True
    figure = plots.mask_heatmap(mask, "ring")
    (ax,) = figure.axes
    np.testing.assert_array_equal(ax.images[0].get_array(), mask.numpy())
    assert ax.get_title() == "ring\n4x4, 19 % nonzero"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("sending unit j", "receiving unit i")


def test_mask_heatmap_refuses_a_vector():
    with pytest.raises(ValueError, match=r"mask must be 2-D, got shape \(3,\)"):
        plots.mask_heatmap(np.ones(3))


def test_degree_distribution_counts_nodes_per_degree():
    star = igraph.Graph.Star(5)  # one hub of degree 4, four leaves of degree 1
    (ax,) = plots.degree_distribution(star).axes
    assert [bar.get_height() for bar in ax.patches] == [0, 4, 0, 0, 1]
    assert "mean degree 1.6" in ax.get_title()
    assert ax.get_xlabel() == "degree (edges per node)" and ax.get_ylabel() == "nodes"


def test_priors_puts_each_mask_above_its_degrees():
    graphs = {"ring": igraph.Graph.Ring(6), "star": igraph.Graph.Star(6)}
    masks = {name: torch.tensor(np.array(g.get_adjacency().data), dtype=torch.bool) for name, g in graphs.items()}
    figure = plots.priors(graphs, masks)
    masks_row, degrees_row = figure.axes[:2], figure.axes[2:]  # subplots are row-major
    assert [ax.get_title().split("\n")[0] for ax in masks_row] == ["ring", "star"]
    assert all(ax.images for ax in masks_row)
    assert [bar.get_height() for bar in degrees_row[0].patches] == [0, 0, 6]  # a ring: all degree 2
    assert {ax.get_ylabel() for ax in degrees_row} == {"nodes"}
    with pytest.raises(ValueError, match="graphs and masks must have the same names"):
        plots.priors(graphs, {"ring": masks["ring"]})


@pytest.fixture
def runs() -> pd.DataFrame:
    return pd.DataFrame({
        "generator": ["ba", "ba", "ws", "ws", "ws", "ba"],
        "cell": ["gru", "lstm", "gru", "lstm", "gru", "gru"],
        "edges": [10, 20, 30, 40, 50, 60],
        "test_acc": [0.6, 0.7, 0.8, 0.9, 1.0, 0.8],
    })


def test_accuracy_by_group_shows_means_as_bars_and_runs_as_dots(runs):
    (ax,) = _visible(plots.accuracy_by_group(runs))
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == pytest.approx([0.7, 0.9, 0.7, 0.9])  # gru: ba, ws; lstm: ba, ws
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ba", "ws"]
    assert sum(len(line.get_ydata()) for line in ax.lines) == len(runs)
    assert ax.get_ylabel() == "test_acc" and ax.get_xlabel() == "generator"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["gru", "lstm"]


def test_accuracy_by_group_names_missing_columns(runs):
    with pytest.raises(ValueError, match=r"frame lacks columns \['task'\]"):
        plots.accuracy_by_group(runs, by="task")


def test_accuracy_vs_feature_scatters_every_run(runs):
    (ax,) = plots.accuracy_vs_feature(runs, "edges").axes
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    assert sorted(map(tuple, points.tolist())) == sorted(zip(runs.edges, runs.test_acc))
    assert ax.get_title() == "test_acc vs edges"


def test_learning_curves_plot_one_line_per_history():
    histories = {"a": [{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": 0.75}],
                 "b": [{"epoch": 1, "test_acc": 0.4}]}
    (ax,) = plots.learning_curves(histories).axes
    assert [list(line.get_ydata()) for line in ax.lines] == [[0.5, 0.75], [0.4]]
    assert ax.get_xlabel() == "epoch"
    with pytest.raises(ValueError, match=r"histories\['a'\] has no epoch with 'loss'"):
        plots.learning_curves(histories, metric="loss")


def test_single_axes_plots_draw_into_a_given_axes(runs):
    figure, axes = plots.grid(2, columns=2)
    assert plots.accuracy_vs_feature(runs, "edges", ax=axes[1]) is figure
    assert axes[1].collections and not axes[0].collections


def test_grid_hides_unused_panels_and_refuses_none():
    figure, axes = plots.grid(4, columns=3)
    assert len(axes) == 6 and sum(ax.get_visible() for ax in axes) == 4
    with pytest.raises(ValueError, match="n must be >= 1 panels, got 0"):
        plots.grid(0)


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    density = rng.uniform(0.05, 0.5, size=20)
    frame = pd.DataFrame({"graph_id": [f"g{i}" for i in range(20)], "cell": "gru", "nodes": rng.uniform(5, 30, 20),
                          "edges": rng.uniform(10, 90, 20), "density": density,
                          "test_acc": 0.5 + density + rng.normal(0, 0.01, 20)})
    return load_table(frame, features=["nodes", "edges", "density"])


def test_predicted_vs_actual_titles_carry_r2_and_the_ceiling(table):
    result = cross_validate(table, "bayesian_ridge", n_splits=4, n_repeats=2, scope="gru")
    (ax,) = _visible(plots.predicted_vs_actual({"gru": result}, ceilings={"gru": 0.9}))
    r2 = result.summary()["r2"]
    assert ax.get_title() == f"gru: bayesian_ridge\nR² {r2['mean']:.2f} ± {r2['std']:.2f} (noise ceiling 0.90)"
    assert len(ax.collections[0].get_offsets()) == 20  # the first repeat's out-of-fold predictions
    assert ax.get_xlabel() == "actual test_acc" and ax.get_ylabel() == "predicted test_acc"


def test_importances_shows_the_top_features_most_important_on_top(table):
    frame = importances(table, "bayesian_ridge", n_splits=4, n_permutations=2)
    (ax,) = _visible(plots.importances({"gru": frame}, top=2, models={"gru": "bayesian_ridge"}))
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == list(frame.feature[:2][::-1]) and labels[-1] == "density"
    assert ax.get_title() == "gru (bayesian_ridge)" and ax.get_xlabel() == "drop in R² when shuffled"


def test_ablations_draw_one_bar_per_scope_and_feature_set(table):
    sets = ablations(table, "bayesian_ridge", n_splits=4, n_repeats=1)
    (ax,) = plots.ablations({"gru": sets}).axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(sets)
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == pytest.approx([sets[name].summary()["r2"]["mean"] for name in sets])
    assert ax.get_ylim()[1] <= 1.05
    with pytest.raises(ValueError, match="at least one feature set"):
        plots.ablations({"gru": {}})


def test_sequences_to_solve_ends_at_the_share_solved():
    (ax,) = plots.sequences_to_solve({"lstm": [100, 300, math.nan, 200]}, budget=400).axes
    line = ax.lines[0]
    assert list(line.get_xdata()) == [0, 100, 200, 300] and line.get_ydata()[-1] == 0.75
    assert ax.get_legend().get_texts()[0].get_text() == "lstm (3/4)"
