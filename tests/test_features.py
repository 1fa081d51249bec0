"""Features: every value against a networkx (or scipy) reference, and the study's conventions."""

from __future__ import annotations

import statistics

import igraph
import networkx as nx
import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from graphprior.features import FEATURE_NAMES, STUDY_FEATURES, feature_table, graph_features, networkx_study_features
from graphprior.generators import generate, to_igraph, to_networkx


def dag_layer_of(dag: nx.DiGraph) -> dict:
    layer = {}
    for v in nx.topological_sort(dag):
        layer[v] = max((layer[u] + 1 for u in dag.predecessors(v)), default=0)
    return layer


def networkx_reference(graph: nx.Graph) -> dict[str, float]:
    """Every feature of a connected undirected graph, computed independently with networkx
    (the study's 23 as in ``benchmarks/bench_features.py``)."""
    n = graph.number_of_nodes()
    dag = nx.DiGraph()
    dag.add_nodes_from(graph)
    dag.add_edges_from((min(u, v), max(u, v)) for u, v in graph.edges())
    layer = dag_layer_of(dag)
    widths = np.bincount(list(layer.values()))
    skips = [(layer[u], layer[v]) for u, v in dag.edges() if layer[v] - layer[u] > 1]
    degree = np.array([d for _, d in graph.degree()], dtype=float)
    in_degree = [d for _, d in dag.in_degree()]
    out_degree = [d for _, d in dag.out_degree()]
    ig = to_igraph(graph)
    partition = [set(c) for c in ig.community_multilevel()]  # a partition to score with networkx
    mean_abs_difference = np.abs(degree[:, None] - degree[None, :]).mean()
    components = list(nx.connected_components(graph))
    row = {
        **networkx_study_features(graph),
        "degree_min": degree.min(),
        "degree_max": degree.max(),
        "degree_skewness": scipy.stats.skew(degree),
        "degree_kurtosis": scipy.stats.kurtosis(degree),
        "degree_entropy": scipy.stats.entropy(np.unique(degree, return_counts=True)[1]),
        "degree_gini": mean_abs_difference / (2 * degree.mean()),
        "average_clustering": nx.average_clustering(graph),
        "transitivity": nx.transitivity(graph),
        "degree_assortativity": nx.degree_assortativity_coefficient(graph),
        "components": len(components),
        "largest_component_fraction": max(map(len, components)) / n,
        "spectral_radius": max(abs(nx.adjacency_spectrum(graph))),
        "algebraic_connectivity": sorted(nx.laplacian_spectrum(graph))[1],
        "modularity": nx.community.modularity(graph, partition),
        "communities": len(partition),
        "in_degree_std": statistics.stdev(in_degree),
        "in_degree_max": max(in_degree),
        "out_degree_std": statistics.stdev(out_degree),
        "out_degree_max": max(out_degree),
        "reciprocity": nx.overall_reciprocity(dag),
        "strong_components": nx.number_strongly_connected_components(dag),
        "largest_strong_component_fraction": max(map(len, nx.strongly_connected_components(dag))) / n,
        "layer_width_mean": widths.mean(),
        "layer_width_max": widths.max(),
        "skip_connections": len(set(skips)),
        "skip_edges": len(skips),
    }
    return row


connected_graphs = st.one_of(
    st.builds(lambda n, s: generate("barabasi_albert", n=n, m=max(1, n // 10), seed=s), st.integers(10, 30), st.integers(0, 999)),
    st.builds(
        lambda n, s: generate("connected_watts_strogatz", n=n, k=max(2, n // 5), p=1.0, seed=s),
        st.integers(10, 30),
        st.integers(0, 999),
    ),
    st.builds(lambda n, s: generate("powerlaw_cluster", n=n, m=2, p=0.5, seed=s), st.integers(8, 30), st.integers(0, 999)),
)


@given(graph=connected_graphs)
@settings(max_examples=20, deadline=None)
def test_every_feature_equals_its_networkx_reference(graph):
    ours = graph_features(graph)
    reference = networkx_reference(to_networkx(graph))
    assert list(ours) == list(FEATURE_NAMES) and set(reference) == set(FEATURE_NAMES)
    for name in FEATURE_NAMES:
        assert ours[name] == pytest.approx(reference[name], rel=1e-7, abs=1e-9, nan_ok=True), name


def test_feature_names_cover_the_study_and_more():
    assert len(FEATURE_NAMES) >= 35 and len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert FEATURE_NAMES[: len(STUDY_FEATURES)] == STUDY_FEATURES and len(STUDY_FEATURES) == 23


def test_disconnected_graph_follows_networkx_closeness_and_components():
    graph = nx.disjoint_union(nx.path_graph(4), nx.complete_graph(3))
    graph.add_node(7)
    ours = graph_features(graph)
    closeness = list(nx.closeness_centrality(graph).values())  # Wasserman-Faust scaled
    assert ours["closeness_mean"] == pytest.approx(statistics.fmean(closeness))
    assert ours["closeness_var"] == pytest.approx(statistics.variance(closeness))
    assert (ours["components"], ours["largest_component_fraction"]) == (3, 0.5)
    betweenness = list(nx.betweenness_centrality(graph).values())
    assert ours["nodes_betweenness_var"] == pytest.approx(statistics.variance(betweenness))
    assert ours["edge_betweenness_mean"] == pytest.approx(statistics.fmean(nx.edge_betweenness_centrality(graph).values()))
    assert ours["diameter"] == 3 and ours["algebraic_connectivity"] == pytest.approx(0.0, abs=1e-9)
    distances = [d for _, lengths in nx.all_pairs_shortest_path_length(graph) for d in lengths.values() if d]
    assert ours["average_shortest_path_length"] == pytest.approx(statistics.fmean(distances))


def test_directed_graph_statistics_against_networkx():
    graph = to_networkx(generate("directed_scale_free", n=60, seed=3))
    ours = graph_features(graph)
    assert ours["reciprocity"] == pytest.approx(nx.overall_reciprocity(graph))
    assert ours["strong_components"] == nx.number_strongly_connected_components(graph)
    assert ours["in_degree_max"] == max(d for _, d in graph.in_degree())
    assert ours["out_degree_std"] == pytest.approx(statistics.stdev(d for _, d in graph.out_degree()))
    skeleton = nx.Graph(graph)
    assert ours["edges"] == skeleton.number_of_edges()
    assert ours["degree_mean"] == pytest.approx(statistics.fmean(nx.degree_centrality(skeleton).values()))


def test_directed_acyclic_input_keeps_its_own_layers():
    dag = igraph.Graph(n=4, edges=[(3, 0), (0, 1), (1, 2), (3, 2)], directed=True)
    ours = graph_features(dag)
    assert (ours["layers"], ours["source_nodes"], ours["sink_nodes"]) == (4, 1, 1)
    assert (ours["skip_connections"], ours["skip_edges"]) == (1, 1)


def test_sampled_paths_above_the_threshold():
    graph = generate("connected_watts_strogatz", n=60, k=4, p=0.2, seed=0)
    exact = graph_features(graph)
    everything = graph_features(graph, path_sample_threshold=10, path_samples=60)
    sampled = graph_features(graph, path_sample_threshold=10, path_samples=15, seed=1)
    for name in ("diameter", "average_shortest_path_length", "eccentricity_mean", "closeness_mean", "spectral_radius"):
        assert everything[name] == pytest.approx(exact[name], rel=1e-6), name
    assert exact["algebraic_connectivity"] == pytest.approx(everything["algebraic_connectivity"], rel=1e-4)
    assert sampled["diameter"] <= exact["diameter"]
    assert sampled["average_shortest_path_length"] == pytest.approx(exact["average_shortest_path_length"])  # exact
    assert sampled == graph_features(graph, path_sample_threshold=10, path_samples=15, seed=1)


def test_small_world_sigma_is_optional_and_seeded():
    graph = generate("connected_watts_strogatz", n=40, k=6, p=0.1, seed=0)
    assert "small_world_sigma" not in graph_features(graph)
    row = graph_features(graph, small_world=True, small_world_references=3, seed=2)
    assert row["small_world_sigma"] > 1.5  # clustered, short paths
    assert row == graph_features(graph, small_world=True, small_world_references=3, seed=2)
    random_like = graph_features(generate("erdos_renyi_gnm", n=40, m=120, seed=0), small_world=True, small_world_references=3)
    assert random_like["small_world_sigma"] < row["small_world_sigma"]


def test_table_prefix_and_bad_options():
    graphs = [generate("barabasi_albert", n=12, m=2, seed=s) for s in range(3)]
    table = feature_table(graphs)
    assert isinstance(table, pd.DataFrame) and table.shape == (3, len(FEATURE_NAMES))
    assert list(table.columns) == list(FEATURE_NAMES)
    assert table.loc[1].to_dict() == graph_features(graphs[1])
    prefixed = feature_table(graphs, prefix="network_", small_world=True, small_world_references=2)
    assert prefixed.columns[-1] == "network_small_world_sigma" and prefixed.columns[0] == "network_layers"
    with pytest.raises(ValueError, match="path_sample_threshold must be an integer >= 1"):
        graph_features(graphs[0], path_sample_threshold=0)
    with pytest.raises(ValueError, match="graph must have at least one node"):
        graph_features(igraph.Graph())
    for seed in (-1, 0.5):
        with pytest.raises(ValueError, match=f"seed must be an integer >= 0, got {seed}"):
            graph_features(graphs[0], seed=seed)


def test_study_only_gives_the_same_study_columns():
    graphs = [generate("connected_watts_strogatz", n=20, k=4, p=0.3, seed=s) for s in range(2)]
    study = feature_table(graphs, study_only=True)
    assert list(study.columns) == list(STUDY_FEATURES)
    pd.testing.assert_frame_equal(study, feature_table(graphs)[list(STUDY_FEATURES)])


def test_edge_cases_give_numbers():
    single = graph_features(igraph.Graph(n=1))
    assert single["nodes"] == 1 and single["edges"] == 0 and single["layers"] == 1
    empty = graph_features(igraph.Graph(n=5))
    assert empty["components"] == 5 and empty["edge_betweenness_mean"] == 0 and empty["modularity"] == 0
    ring = graph_features(generate("ring_lattice", n=10, k=2))
    assert ring["degree_skewness"] == 0 and ring["degree_gini"] == 0 and ring["degree_entropy"] == 0


@pytest.mark.reference
def test_study_columns_and_conventions_match_the_published_tables(stier2021):
    """The study's tables fix the names, order and conventions our features follow."""
    table = pd.read_csv(stier2021 / "structure" / "gru.csv")
    assert tuple(table.columns[3:26]) == STUDY_FEATURES
    n, e = table["nodes"], table["edges"]
    np.testing.assert_allclose(table["density"], e / (n * (n - 1)))  # E/(N(N-1))
    np.testing.assert_allclose(table["degree_mean"], 2 * table["density"])  # degree centrality
    aspl = table["average_shortest_path_length"]
    np.testing.assert_allclose(table["nodes_betweenness_mean"], (aspl - 1) / (n - 2))  # normalised, undirected
    np.testing.assert_allclose(table["edge_betweenness_mean"], aspl / e)
    np.testing.assert_allclose(table["eccentricity_std"] ** 2, table["eccentricity_var"])
    # eccentricities are integers: their sum of squares is an integer only under ddof=1
    squares = table["eccentricity_var"] * (n - 1) + (table["eccentricity_mean"] * n) ** 2 / n
    np.testing.assert_allclose(squares, squares.round(), atol=1e-6)


@pytest.mark.reference
def test_regenerated_study_graphs_reproduce_the_deterministic_columns(stier2021):
    """Same generator and size -> same nodes, edges, density, degree mean (and, for BA, sources)."""
    table = pd.read_csv(stier2021 / "structure" / "lstm.csv").drop_duplicates(["graph", "nodes"]).head(30)
    for row in table.itertuples():
        n = int(row.nodes)
        if row.graph == "barabasi_albert":
            graph = generate("barabasi_albert", n=n, m=n // 10, seed=0)
        else:
            graph = generate("connected_watts_strogatz", n=n, k=n // 5, p=1.0, seed=0)
        ours = graph_features(graph)
        for name in ("nodes", "edges", "density", "degree_mean"):
            assert ours[name] == pytest.approx(getattr(row, name)), (row.graph, n, name)
        if row.graph == "barabasi_albert":
            assert ours["source_nodes"] == row.source_nodes
        assert ours["nodes_betweenness_mean"] == pytest.approx((ours["average_shortest_path_length"] - 1) / (n - 2))
