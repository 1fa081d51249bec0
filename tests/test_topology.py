"""The fixed-budget topology study: budget generators, the preset, the dense baseline, the report."""

from __future__ import annotations

import math

import igraph
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from graphprior import generators as G
from graphprior.cli import main
from graphprior.features import graph_features
from graphprior.spec import SpecError, expand, load_preset, validate_spec
from graphprior.topology import (
    dense_comparison,
    family_table,
    heatmaps,
    plane_grid,
    seed_interval,
    structure_prediction,
    topology_frame,
)

BUDGETED = {
    "barabasi_albert_edges": {},
    "powerlaw_cluster_edges": {"p": 0.5},
    "configuration_model": {"exponent": 2.5},
    "block_model_edges": {"blocks": 3, "ratio": 5.0},
}


# --------------------------------------------------------------------------- generators

@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(BUDGETED)), n=st.integers(6, 24), fraction=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**20))
def test_budget_generators_draw_exactly_n_nodes_and_budget_edges(name, n, fraction, seed):
    low = (n + 1) // 2 if name == "configuration_model" else 1
    budget = low + round(fraction * (n * (n - 1) // 2 - low))
    graph = G.generate(name, n=n, budget=budget, seed=seed, **BUDGETED[name])
    assert (graph.vcount(), graph.ecount(), graph["edge_deviation"]) == (n, budget, 0)
    assert graph.is_simple() and not graph.is_directed()


# graph_fingerprint at seeds 0 and 1 (n = 30, budget = 100): a stored sweep names its graphs by
# the generator call, so a draw must never change (as tests/test_generators.py's GOLDEN)
GOLDEN = {
    "barabasi_albert_edges": ("acc637d8bd66b991", "356e78209dbef170"),
    "powerlaw_cluster_edges": ("fae7426c75603876", "65fd2bf339e35ca3"),
    "configuration_model": ("bb6834d0dd804ac5", "b0b128031e14de60"),
    "block_model_edges": ("4f08950f98741466", "3eed80ca14a715cc"),
    "dense_matched": ("89edaa62362d50fa", "89edaa62362d50fa"),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_budget_generators_draw_what_they_always_drew(name):
    params = {"budget": 100} if name == "dense_matched" else {"n": 30, "budget": 100, **BUDGETED[name]}
    assert tuple(G.graph_fingerprint(G.generate(name, seed=seed, **params)) for seed in (0, 1)) == GOLDEN[name]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_budget_generators_check_exactly_the_parameters_they_take(name):
    import inspect

    takes = [p for p in inspect.signature(G.GENERATORS[name]).parameters if p != "seed"]
    assert list(inspect.signature(G.PARAMETER_CHECKS[name]).parameters) == takes


@pytest.mark.parametrize("name", sorted(BUDGETED))
def test_budget_generators_are_seeded(name):
    draw = lambda seed: G.generate(name, n=20, budget=50, seed=seed, **BUDGETED[name]).get_edgelist()  # noqa: E731
    assert draw(3) == draw(3)
    assert len({tuple(draw(seed)) for seed in range(4)}) == 4


def test_barabasi_albert_edges_keeps_the_attachment_graph_and_tops_it_up():
    # m = 4 gives 4 * 26 = 104 edges; 16 more by preferential attachment
    graph = G.barabasi_albert_edges(30, 120, seed=1)
    assert graph.ecount() == 120 and graph.is_connected()
    assert max(graph.degree()) >= 12  # hubs, as a scale-free graph has (a 120-edge G(n, m) rarely tops 14)
    assert G.barabasi_albert_edges(30, 10, seed=1).ecount() == 10  # below a tree: edges removed


def test_powerlaw_cluster_edges_clustering_rises_with_p():
    def clustering(p):
        return np.mean([G.powerlaw_cluster_edges(30, 120, p, seed=s).transitivity_avglocal_undirected()
                        for s in range(4)])

    assert clustering(1.0) > clustering(0.0) + 0.1


@pytest.mark.parametrize("exponent", [2.1, 3.0, 8.0])
def test_configuration_model_has_the_prescribed_degree_sequence(exponent):
    degrees = G.powerlaw_degrees(30, 120, exponent)
    assert sum(degrees) == 240 and min(degrees) >= 1 and max(degrees) <= 29
    assert igraph.is_graphical(degrees, loops=False, multiple=False)
    graph = G.configuration_model(30, 120, exponent, seed=2)
    assert sorted(graph.degree(), reverse=True) == degrees and graph.is_simple()


def test_power_law_degrees_spread_more_at_low_exponents():
    hubs = [max(G.powerlaw_degrees(30, 120, e)) for e in (2.1, 3.0, 8.0)]
    assert hubs[0] > hubs[1] > hubs[2]
    assert G.powerlaw_degrees(30, 120, 100.0) == [8] * 30  # a very high exponent: regular (mean degree 8)


@pytest.mark.parametrize(("blocks", "ratio"), [(2, 1.0), (3, 5.0), (5, 4.0)])
def test_block_model_edges_has_the_block_densities_it_promises(blocks, ratio):
    n, budget = 30, 120
    sizes = G.block_sizes(n, blocks)
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
    inside, between = G.block_edge_split(n, budget, blocks, ratio)
    inside_pairs = sum(s * (s - 1) // 2 for s in sizes)
    between_pairs = n * (n - 1) // 2 - inside_pairs
    assert inside + between == budget
    assert (inside / inside_pairs) / (between / between_pairs) == pytest.approx(ratio, rel=0.1)
    graph = G.block_model_edges(n, budget, blocks, ratio, seed=0)
    block = graph.vs["block"]
    drawn_inside = sum(block[u] == block[v] for u, v in graph.get_edgelist())
    assert (drawn_inside, graph.ecount() - drawn_inside) == (inside, between)


def test_block_model_edges_fills_the_blocks_first_when_the_ratio_is_huge():
    assert G.block_edge_split(30, 120, 3, 1e6) == (120, 0)  # 3 x 45 = 135 pairs inside hold all
    assert G.block_edge_split(30, 200, 3, 1e6) == (135, 65)  # more than fit inside: the rest between


@pytest.mark.parametrize(("budget", "units", "deviation"), [(120, 16, 0), (210, 21, 0), (100, 15, 5), (1, 2, 0)])
def test_dense_matched_is_the_closest_complete_graph(budget, units, deviation):
    graph = G.dense_matched(budget)
    assert (graph.vcount(), graph.ecount() - budget, graph["edge_deviation"]) == (units, deviation, deviation)
    assert graph.ecount() == units * (units - 1) // 2


@pytest.mark.parametrize(("name", "params", "message"), [
    ("barabasi_albert_edges", {"n": 10, "budget": 46}, r"budget must be an integer in \[1, 45\], got 46"),
    ("powerlaw_cluster_edges", {"n": 10, "budget": 20, "p": 2}, r"p must be a number in \[0.0, 1.0\], got 2"),
    ("configuration_model", {"n": 10, "budget": 4, "exponent": 2.5}, r"budget must be an integer in \[5, 45\]"),
    ("configuration_model", {"n": 10, "budget": 20, "exponent": 1.0}, r"exponent must be a number in \[1.5, 100.0\]"),
    ("block_model_edges", {"n": 10, "budget": 20, "blocks": 11, "ratio": 2.0},
     r"blocks must be an integer in \[1, 10\]"),
    ("dense_matched", {"budget": 0}, r"budget must be an integer >= 1, got 0"),
])
def test_bad_budget_parameters_are_one_line_naming_them(name, params, message):
    with pytest.raises(ValueError, match=message):
        G.generate(name, seed=0, **params)
    with pytest.raises(ValueError, match=message):
        G.check_parameters(name, **params)


def test_graphprior_generate_draws_budget_graphs_and_refuses_too_many_units(tmp_path):
    out = tmp_path / "g.graphml"
    result = CliRunner().invoke(main, ["generate", "configuration_model", "--n", "30", "--param", "budget=120",
                                       "--param", "exponent=2.5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "30 nodes, 120 edges" in result.output and igraph.Graph.Read_GraphML(str(out)).ecount() == 120
    result = CliRunner().invoke(main, ["generate", "dense_matched", "--param", "budget=100000000000000",
                                       "-o", str(out)])
    assert result.exit_code == 2 and "dense_matched would draw 14,142,136 nodes" in result.output


def test_the_edge_deviation_joins_the_runs_features():
    from graphprior.sweep import structural_features

    assert G.recorded_attributes(G.dense_matched(100)) == {"edge_deviation": 5.0}
    assert G.recorded_attributes(G.ring_lattice(10, 4)) == {}
    features = structural_features([G.dense_matched(100)])
    assert features["edge_deviation"] == 5.0 and features["edges"] == 105.0
    assert "edge_deviation" not in structural_features([G.ring_lattice(10, 4)])


# --------------------------------------------------------------------------- the preset

def test_the_topology_preset_validates_with_one_budget_of_nodes_and_edges_per_graph():
    spec = load_preset("topology")
    runs = expand(spec)
    graphs = {(r.generator, tuple(sorted(r.params.items())), r.graph_seed) for r in runs}
    assert len(runs) == len(graphs) * 4 * 2 * 5 == 4160  # every graph x 4 cells x 2 tasks x 5 seeds
    assert {r.cell for r in runs} == {"rnn_tanh", "rnn_relu", "lstm", "gru"}
    assert {(r.task.kind, r.task.negatives) for r in runs} == {("classify", "hard"), ("next_symbol", "paper")}
    per_generator = {}
    for name, params, _ in graphs:
        per_generator.setdefault(name, set()).add(params)
    # deterministic generators are drawn once per budget (repetitions = 1), the rest three times
    counts = {name: sum(1 for g in graphs if g[0] == name) for name in per_generator}
    assert counts["ring_lattice"] == 2 and counts["dense_matched"] == 2
    assert counts["erdos_renyi_gnm"] == 6 and counts["watts_strogatz"] == 36


def test_the_presets_graphs_have_30_nodes_and_hit_the_budget():
    spec = load_preset("topology")
    seen = {}
    for run in expand(spec):
        key = (run.generator, tuple(sorted(run.params.items())), run.graph_seed)
        if key in seen:
            continue
        graph = G.generate(run.generator, seed=run.graph_seed, **run.params)
        seen[key] = graph.ecount()
        assert graph.ecount() in (120, 210)
        assert graph.vcount() == (30 if run.generator != "dense_matched" else {120: 16, 210: 21}[graph.ecount()])
    assert len(seen) == 104


def test_a_generators_repetitions_override_the_sweeps_and_need_grid_sampling():
    base = {"generators": [{"name": "ring_lattice", "params": {"n": 6, "k": 2}, "repetitions": 1},
                           {"name": "erdos_renyi_gnm", "params": {"n": 6, "m": 5}}],
            "repetitions": 3, "model": {"cells": ["gru"]}}
    runs = expand(base)
    assert [r.generator for r in runs].count("ring_lattice") == 1
    assert [r.generator for r in runs].count("erdos_renyi_gnm") == 3
    assert validate_spec(base).to_toml_dict()["generators"][0]["repetitions"] == 1
    random = {**base, "sampling": "random", "n_samples": 2, "repetitions": 1}
    with pytest.raises(SpecError, match=r'^generators\[0\]\.repetitions: is only allowed with sampling = "grid"$'):
        validate_spec(random)


# --------------------------------------------------------------------------- the dense baseline

@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm"])
def test_the_dense_baseline_has_as_many_recurrent_weights_as_the_sparse_budget(cell):
    from graphprior.spec import RunConfig
    from graphprior.sweep import build_run
    from rnn_models.masked import GATES

    def recurrent_weights(generator: str, params: dict) -> tuple[int, int]:
        config = RunConfig(generator=generator, params=params, graph_seed=0, mapping="recurrent",
                           orientation="symmetric", self_loops=False, gate_layout="tiled", cell=cell,
                           task={"kind": "classify", "size": 40}, train={"epochs": 1}, seed=0)
        rnn = build_run(config).model.rnn
        weights = rnn.weight_hh_l0
        return int((weights != 0).sum()), weights.shape[1]

    sparse, units = recurrent_weights("watts_strogatz", {"n": 30, "k": 8, "p": 0.3})
    dense, dense_units = recurrent_weights("dense_matched", {"budget": 120})
    assert sparse == dense == GATES[cell] * 2 * 120
    assert (units, dense_units) == (30, 16)


# --------------------------------------------------------------------------- the analysis

def _table(seeds=(0, 1, 2), noise=0.0) -> pd.DataFrame:
    """A topology sweep's flat table, made up: 12 WS graphs over p and a dense baseline, two
    cells, one task; the target rises with clustering, the baseline sits 0.05 below the priors."""
    rng = np.random.default_rng(0)
    rows = []
    graphs = [("watts_strogatz", {"p": p}, G.watts_strogatz(16, 4, p, seed=s)) for p in (0.0, 0.1, 0.3, 1.0)
              for s in range(3)] + [("dense_matched", {}, G.dense_matched(32))]
    for index, (generator, params, graph) in enumerate(graphs):
        features = graph_features(graph) | G.recorded_attributes(graph)
        for cell in ("gru", "lstm"):
            for seed in seeds:
                base = 0.5 + 0.4 * features["average_clustering"] if generator != "dense_matched" else None
                rows.append({"run_id": f"{index}-{cell}-{seed}", "graph_id": f"g{index}", "status": "done",
                             "generator": generator, **params, "cell": cell, "task": "classify", "seed": seed,
                             **features, "test_acc": base + noise * rng.normal() if base is not None else math.nan})
    frame = pd.DataFrame(rows)
    priors = frame["generator"] != "dense_matched"
    per_seed = frame[priors].groupby(["cell", "seed"])["test_acc"].transform("mean")
    dense = frame[priors].assign(d=per_seed - 0.05).groupby(["cell", "seed"])["d"].first()
    keys = frame.loc[~priors, ["cell", "seed"]].itertuples(index=False)
    frame.loc[~priors, "test_acc"] = [dense[(cell, seed)] for cell, seed in keys]
    return frame


def test_topology_frame_adds_budget_family_and_baseline():
    frame = topology_frame(_table())
    assert set(frame["budget"]) == {32}
    assert frame.loc[frame["baseline"], "generator"].unique().tolist() == ["dense_matched"]
    assert set(frame["family"]) == {"watts_strogatz p=0", "watts_strogatz p=0.1", "watts_strogatz p=0.3",
                                    "watts_strogatz p=1", "dense_matched"}
    with pytest.raises(ValueError, match=r"source: not a topology sweep's table, it lacks columns \['edges'"):
        topology_frame(_table().drop(columns=["edges"]))


def test_seed_interval_is_the_student_t_interval():
    interval = seed_interval([1.0, 2.0, 3.0])
    assert interval["mean"] == 2.0 and interval["n"] == 3
    assert interval["high"] - 2.0 == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)
    assert math.isnan(seed_interval([1.0])["low"])
    assert seed_interval([1.0, math.nan, 3.0]) == pytest.approx({"mean": 2.0, "low": 2.0 - 12.7062047,
                                                                 "high": 2.0 + 12.7062047, "n": 2})


def test_the_dense_comparison_pairs_seeds_and_finds_the_gap():
    dense = dense_comparison(topology_frame(_table(noise=0.02)))
    pooled = dense[dense["family"] == "all priors"]
    assert set(pooled["cell"]) == {"gru", "lstm"} and (pooled["seeds"] == 3).all()
    np.testing.assert_allclose(pooled["difference"], 0.05, atol=1e-12)
    np.testing.assert_allclose(pooled["ci_high"] - pooled["ci_low"], 0.0, atol=1e-9)  # the gap is exact per seed
    assert (pooled["dense_units"] == 8).all()  # 28 and 36 edges are as close to 32: the fewer units


def test_the_family_table_ranks_families_with_intervals():
    families = family_table(topology_frame(_table(noise=0.02)))
    gru = families[(families["cell"] == "gru") & ~families["baseline"]]
    assert gru["family"].iloc[0] == "watts_strogatz p=0"  # the ring lattice clusters most
    assert (gru["ci_low"] <= gru["mean"]).all() and (gru["mean"] <= gru["ci_high"]).all()
    assert (gru["graphs"] == 3).all() and (gru["seeds"] == 3).all()


def test_structure_prediction_finds_a_target_that_structure_sets_despite_constant_size():
    prediction = structure_prediction(topology_frame(_table(noise=0.01)), n_repeats=2, n_splits=4)
    assert set(prediction["cell"]) == {"gru", "lstm"}
    assert (prediction["r2"] > 0.5).all() and (prediction["ceiling"] > 0.9).all()
    assert (prediction["spearman"] > 0.8).all()
    assert prediction["top_features"].str.len().gt(0).all()
    assert (prediction["graphs"] == 12).all()  # the baseline is left out


def test_plane_grid_bins_graphs_and_marks_the_best_bin():
    rows = pd.DataFrame({"group": ["a", "a", "b", "c", "d"], "seed": [0, 1, 0, 0, 0],
                         "average_clustering": [0.1, 0.1, 0.15, 0.9, 0.95],
                         "average_shortest_path_length": [3.0, 3.0, 3.1, 1.5, 1.6],
                         "test_acc": [0.6, 0.8, 0.6, 0.9, 0.95]})
    grid = plane_grid(rows, np.array([0.0, 0.5, 1.0]), np.array([1.0, 2.0, 4.0]))
    np.testing.assert_array_equal(grid.counts, [[0, 2], [2, 0]])
    np.testing.assert_allclose(grid.means, [[np.nan, 0.925], [0.65, np.nan]])
    assert grid.sweet_spot == (0, 1)
    assert "0.925 over 2 graphs" in grid.describe()


def test_the_heatmap_is_written_with_labelled_axes(tmp_path):
    written = heatmaps(topology_frame(_table()), tmp_path, bins=3)
    (path, grids), = written.values()
    assert path == tmp_path / "plane_32_classify.png" and path.stat().st_size > 10_000
    from graphprior.plots import plane_heatmap

    figure = plane_heatmap(grids["gru"].means, grids["gru"].x_edges, grids["gru"].y_edges, grids["gru"].sweet_spot,
                           title="gru")
    ax = figure.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("average clustering C", "average path length L")
    assert ax.get_title() == "gru"
    assert ax.get_legend().get_texts()[0].get_text() == "sweet spot"


def test_the_topology_command_writes_the_report(tmp_path):
    table = tmp_path / "runs.csv"
    _table(noise=0.02).to_csv(table, index=False)
    result = CliRunner().invoke(main, ["topology", str(table), "-o", str(tmp_path / "out"), "--repeats", "1",
                                       "--folds", "3", "--bins", "3", "--model", "bayesian_ridge"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## 32 edges, classify" in report and "budgets [32] edges, cells lstm, gru" in report
    assert "| gru | 8 | 0.050 [0.050, 0.050] |" in report
    assert "Sweet spot" in report and (tmp_path / "out" / "plane_32_classify.png").is_file()
    priors = pd.read_csv(tmp_path / "out" / "priors_32_classify.csv")
    assert "dense_matched" not in set(priors["generator"])


def test_a_cell_whose_prior_runs_all_failed_reads_n_a(tmp_path):
    table = _table(noise=0.02)
    failed = (table["cell"] == "lstm") & (table["generator"] != "dense_matched")
    table.loc[failed, "status"], table.loc[failed, "test_acc"] = "failed", math.nan
    table.to_csv(tmp_path / "runs.csv", index=False)
    result = CliRunner().invoke(main, ["topology", str(tmp_path / "runs.csv"), "-o", str(tmp_path / "out"),
                                       "--repeats", "1", "--folds", "3", "--bins", "3", "--model", "bayesian_ridge"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| lstm | n/a (no finished prior runs) | n/a (no finished prior runs) |" in report
    assert "| lstm | 8 | n/a [n/a, n/a] | n/a (no finished prior runs) |" in report
    assert "| gru | 8 | 0.050 [0.050, 0.050] |" in report  # the other cell as before


def test_the_topology_command_names_a_bad_store_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["topology", str(tmp_path / "nope.db")])
    assert result.exit_code == 2 and "STORE: no results store or table at" in result.output
    table = tmp_path / "t.csv"
    pd.DataFrame({"a": [1]}).to_csv(table, index=False)
    result = CliRunner().invoke(main, ["topology", str(table)])
    assert result.exit_code == 2 and "not a topology sweep's table" in result.output


def test_a_tiny_budget_sweep_records_the_deviation_and_reports(tmp_path):
    """End to end: budget generators and the dense baseline through a sweep, the store, the report."""
    from graphprior.sweep import run_sweep

    spec = {"name": "tiny-topology", "seed": 3, "seeds": [0, 1],
            "generators": [{"name": "barabasi_albert_edges", "params": {"n": 8, "budget": 14}},
                           {"name": "block_model_edges", "params": {"n": 8, "budget": 14, "blocks": 2,
                                                                    "ratio": [1.0, 20.0]}},
                           {"name": "dense_matched", "params": {"budget": 14}}],
            "model": {"cells": ["rnn_tanh"]},
            "tasks": [{"kind": "classify", "size": 60}], "train": {"epochs": 1, "batch_size": 32}}
    store = tmp_path / "t.db"
    summary = run_sweep(spec, store, backend="serial", progress=False)
    assert (summary.done, summary.failed) == (8, 0)
    frame = topology_frame(store)
    dense = frame[frame["baseline"]]
    assert set(dense["edge_deviation"]) == {1.0} and set(dense["nodes"]) == {6}  # K6 has 15 edges
    assert set(frame["budget"]) == {14} and set(frame.loc[~frame["baseline"], "edge_deviation"]) == {0.0}
    assert len(dense_comparison(frame)) == 1 + 3  # all priors and the three families


def test_predict_handles_the_constant_size_columns_of_a_budget():
    from graphprior.predict import ablations, load_table

    frame = topology_frame(_table(noise=0.01))
    with pytest.warns(UserWarning, match="degree_assortativity"):  # undefined for the ring lattice
        table = load_table(frame[~frame["baseline"] & (frame["cell"] == "gru")], task="classify")
    assert table.frame["nodes"].nunique() == table.frame["edges"].nunique() == 1
    results = ablations(table, "log_bayesian_ridge", n_splits=3, n_repeats=1)
    size, structure = (results[name].summary()["r2"]["mean"] for name in ("size", "structure"))
    assert math.isfinite(size) and size < 0.5 < structure  # size says little here, structure all
