"""Generators: documented sizes and degrees, seeds, parameter errors, conversions, files."""

from __future__ import annotations

import itertools
import math
import random
import re
from pathlib import Path

import igraph
import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphprior.generators import (
    GENERATORS,
    generate,
    graph_fingerprint,
    load_graph,
    random_state,
    save_graph,
    to_igraph,
    to_networkx,
)

# one valid parameter set per registered generator
EXAMPLES: dict[str, dict] = {
    "watts_strogatz": dict(n=20, k=4, p=0.3),
    "connected_watts_strogatz": dict(n=20, k=5, p=1.0),
    "newman_watts_strogatz": dict(n=20, k=4, p=0.3),
    "ws_flex": dict(n=20, k=4.5, p=0.3),
    "ring_lattice": dict(n=12, k=4),
    "barabasi_albert": dict(n=30, m=3),
    "powerlaw_cluster": dict(n=30, m=2, p=0.5),
    "directed_scale_free": dict(n=40),
    "erdos_renyi_gnp": dict(n=30, p=0.2),
    "erdos_renyi_gnm": dict(n=30, m=40),
    "random_regular": dict(n=20, d=3),
    "complete": dict(n=7),
    "stochastic_block": dict(sizes=[5, 7], p=[[0.8, 0.1], [0.1, 0.6]]),
    "planted_partition": dict(groups=3, size=4, p_in=0.9, p_out=0.1),
    "random_geometric": dict(n=30, radius=0.3),
    "barabasi_albert_edges": dict(n=30, budget=100),
    "powerlaw_cluster_edges": dict(n=30, budget=100, p=0.5),
    "configuration_model": dict(n=30, budget=100, exponent=2.5),
    "block_model_edges": dict(n=30, budget=100, blocks=3, ratio=5.0),
    "dense_matched": dict(budget=100),
}
DETERMINISTIC = {"ring_lattice", "complete", "dense_matched"}


def test_every_generator_has_an_example():
    assert set(EXAMPLES) == set(GENERATORS)


# graph_fingerprint of each example at seeds 0 and 1, as drawn since the first release: stored
# sweeps name their graphs by (generator, params, seed), so a draw must never change. A
# failure after upgrading networkx or igraph means their random streams changed.
GOLDEN: dict[str, tuple[str, str]] = {
    "barabasi_albert": ("816f03621b9f33ff", "9d0258008e5337d6"),
    "complete": ("e8ddf1b7883d3b51", "e8ddf1b7883d3b51"),
    "connected_watts_strogatz": ("10479054d402e044", "428576b5e786ed91"),
    "directed_scale_free": ("29cc46cee95af41e", "dbc67e3a781fa5c9"),
    "erdos_renyi_gnm": ("f5febcf250e7b6e7", "8e7591df65a1f3ef"),
    "erdos_renyi_gnp": ("e91a58e380e9f5f8", "47fc305421f05b75"),
    "newman_watts_strogatz": ("9a2c842e5d6d076d", "88149e10ec843274"),
    "planted_partition": ("3dfc2a8c64c57162", "e48b0f51c49c6050"),
    "powerlaw_cluster": ("1231f0711c72c992", "f6b97820cd03e378"),
    "random_geometric": ("488f756874fd841d", "211d83698b229378"),
    "barabasi_albert_edges": ("acc637d8bd66b991", "356e78209dbef170"),
    "powerlaw_cluster_edges": ("fae7426c75603876", "65fd2bf339e35ca3"),
    "configuration_model": ("bb6834d0dd804ac5", "b0b128031e14de60"),
    "block_model_edges": ("4f08950f98741466", "3eed80ca14a715cc"),
    "dense_matched": ("89edaa62362d50fa", "89edaa62362d50fa"),
    "random_regular": ("f9a9443e7b3ac419", "1662c7136bba5924"),
    "ring_lattice": ("0ab6a53520625513", "0ab6a53520625513"),
    "stochastic_block": ("b08e2b5062d1d138", "00f18d8b8f6bcafb"),
    "watts_strogatz": ("e299afab4ed6e005", "9541f8696552e603"),
    "ws_flex": ("bba0c6bb0edc9586", "f71804e666b31ef0"),
}


def test_every_generator_has_its_golden_draws():
    assert set(GOLDEN) == set(GENERATORS)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_seed_draws_the_graph_it_always_drew(name):
    drawn = tuple(graph_fingerprint(generate(name, seed=seed, **EXAMPLES[name])) for seed in (0, 1))
    assert drawn == GOLDEN[name]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_same_seed_same_graph_other_seed_other_graph(name):
    first = generate(name, seed=3, **EXAMPLES[name])
    assert isinstance(first, igraph.Graph) and first.is_simple()
    assert first.get_edgelist() == generate(name, seed=np.int64(3), **EXAMPLES[name]).get_edgelist()
    prints = {graph_fingerprint(generate(name, seed=seed, **EXAMPLES[name])) for seed in range(3, 8)}
    assert len(prints) == (1 if name in DETERMINISTIC else 5)


@pytest.mark.parametrize("seed", [-1, 2.5, True, "7"])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_bad_seed_is_one_clear_error(name, seed):
    with pytest.raises(ValueError, match=re.escape(f"seed must be an integer >= 0, got {seed!r}")):
        GENERATORS[name](**EXAMPLES[name], seed=seed)


def test_no_seed_draws_from_the_global_generators():
    """seed=None follows Python's global random module, as networkx and igraph do."""
    for name in ("watts_strogatz", "erdos_renyi_gnp"):
        random.seed(11)
        first = generate(name, **EXAMPLES[name]).get_edgelist()
        random.seed(11)
        assert generate(name, **EXAMPLES[name]).get_edgelist() == first
        assert generate(name, **EXAMPLES[name]).get_edgelist() != first


@pytest.mark.parametrize("kind, expected", [("int", int), ("random", random.Random), ("numpy", np.random.Generator),
                                            ("igraph", random.Random)])
def test_random_state_hands_each_kind_its_source(kind, expected):
    @random_state(kind)
    def draw(size: int, seed: int | None = None) -> object:
        return seed

    given = draw(3, 5)  # a positional seed is found too
    assert isinstance(given, expected)
    if kind == "int":
        assert given == 5 and draw(3) is None
    elif kind == "numpy":
        assert given.random() == np.random.default_rng(5).random()
    else:
        assert given.random() == random.Random(5).random()
        assert draw(3) is random


def test_random_state_seeds_igraph_for_the_call_and_restores_it_after_an_error():
    @random_state("igraph")
    def draw(seed: int | None = None, fail: bool = False) -> list:
        edges = igraph.Graph.Erdos_Renyi(n=12, p=0.5).get_edgelist()
        if fail:
            raise RuntimeError("boom")
        return edges

    assert draw(seed=4) == draw(seed=4) != draw(seed=5)
    with pytest.raises(RuntimeError, match="boom"):
        draw(seed=4, fail=True)
    assert igraph_draws_from_python_random()


def igraph_draws_from_python_random() -> bool:
    """Whether igraph's generator is its default again: Python's seeded global ``random``."""
    random.seed(0)
    first = igraph.Graph.Erdos_Renyi(n=20, p=0.5).get_edgelist()
    random.seed(0)
    return igraph.Graph.Erdos_Renyi(n=20, p=0.5).get_edgelist() == first


def test_random_state_refuses_bad_kinds_and_functions_without_a_seed():
    with pytest.raises(ValueError, match="kind must be one of int, random, numpy, igraph, got 'torch'"):
        random_state("torch")
    with pytest.raises(ValueError, match="function: draw has no seed parameter"):
        @random_state("int")
        def draw(n: int) -> int:
            return n


def test_no_module_swaps_igraphs_generator_but_random_state():
    """igraph's global generator is set in one place: ``random_state``."""
    root = Path(__file__).resolve().parents[1]
    swaps = [path.relative_to(root).as_posix()
             for folder in ("graphprior", "rnn_models", "reber", "benchmarks")
             for path in (root / folder).rglob("*.py")
             if "set_random_number_generator" in path.read_text(encoding="utf-8")]
    assert swaps == ["graphprior/generators.py"]
    assert (root / "graphprior/generators.py").read_text(encoding="utf-8").count("set_random_number_generator(") == 2


def degrees(g: igraph.Graph) -> np.ndarray:
    return np.asarray(g.degree())


@given(n=st.integers(6, 40), half=st.integers(1, 2), p=st.floats(0, 1), seed=st.integers(0, 10**6))
@settings(max_examples=25, deadline=None)
def test_watts_strogatz_keeps_size_and_edge_count(n, half, p, seed):
    g = generate("watts_strogatz", n=n, k=2 * half, p=p, seed=seed)
    assert (g.vcount(), g.ecount()) == (n, n * half)
    assert g.is_simple()


def test_watts_strogatz_without_rewiring_is_the_ring_lattice():
    g = generate("watts_strogatz", n=12, k=4, p=0.0, seed=0)
    lattice = generate("ring_lattice", n=12, k=4)
    assert set(map(frozenset, g.get_edgelist())) == set(map(frozenset, lattice.get_edgelist()))
    assert set(degrees(lattice)) == {4}
    assert lattice.are_adjacent(0, 11) and lattice.are_adjacent(0, 2) and not lattice.are_adjacent(0, 3)


@pytest.mark.parametrize("n", [10, 23, 37, 50])
def test_connected_watts_strogatz_as_the_study(n):
    """k = n // 5 as in the study: an odd k is rounded down like networkx does."""
    k = n // 5
    g = generate("connected_watts_strogatz", n=n, k=k, p=1.0, seed=n)
    assert g.is_connected()
    assert g.ecount() == n * (k // 2)


def test_connected_watts_strogatz_gives_up_after_its_tries():
    with pytest.raises(RuntimeError, match="no connected Watts–Strogatz graph in 1 tries"):
        generate("connected_watts_strogatz", n=40, k=2, p=1.0, tries=1, seed=1)


def test_newman_watts_strogatz_only_adds_shortcuts():
    g = generate("newman_watts_strogatz", n=20, k=4, p=0.5, seed=1)
    lattice = set(map(frozenset, generate("ring_lattice", n=20, k=4).get_edgelist()))
    assert lattice <= set(map(frozenset, g.get_edgelist()))
    assert g.ecount() > len(lattice)
    assert degrees(g).min() >= 4


@given(n=st.integers(8, 40), k=st.floats(2, 5), p=st.floats(0, 1), seed=st.integers(0, 10**6))
@settings(max_examples=25, deadline=None)
def test_ws_flex_has_the_fractional_mean_degree(n, k, p, seed):
    g = generate("ws_flex", n=n, k=k, p=p, seed=seed)
    assert g.vcount() == n and g.is_simple()
    assert g.ecount() == round(n * k / 2)
    assert abs(np.mean(degrees(g)) - k) <= 1 / n + 1e-9
    if p == 0:
        assert set(degrees(g)) <= {2 * int(k // 2), 2 * int(k // 2) + 1, 2 * int(k // 2) + 2}


@pytest.mark.parametrize("initial, sources", [("empty", 3), ("star", 1)])
def test_barabasi_albert_edges_degrees_and_start(initial, sources):
    n, m = 40, 3
    g = generate("barabasi_albert", n=n, m=m, initial=initial, seed=2)
    assert g.ecount() == m * (n - m)
    assert degrees(g).min() >= (1 if initial == "star" else m)
    assert all(degrees(g)[m + 1 :] >= m)
    no_lower_neighbour = [v for v in range(n) if all(u > v for u in g.neighbors(v))]
    assert len(no_lower_neighbour) == sources


def test_powerlaw_cluster_edge_count():
    g = generate("powerlaw_cluster", n=50, m=2, p=0.7, seed=0)
    assert g.ecount() == 2 * (50 - 2)


def test_directed_scale_free_needs_three_nodes():
    with pytest.raises(ValueError, match="n must be an integer >= 3, got 2"):
        generate("directed_scale_free", n=2, seed=0)


def test_directed_scale_free_is_simple_and_directed():
    g = generate("directed_scale_free", n=60, seed=0)
    assert g.is_directed() and g.vcount() == 60 and g.is_simple()
    with pytest.raises(ValueError, match="alpha \\+ beta \\+ gamma must equal 1"):
        generate("directed_scale_free", n=10, alpha=0.5, beta=0.5, gamma=0.5)


def test_erdos_renyi_extremes_and_edge_count():
    assert generate("erdos_renyi_gnp", n=9, p=1.0, seed=0).ecount() == 36
    assert generate("erdos_renyi_gnp", n=9, p=0.0, seed=0).ecount() == 0
    g = generate("erdos_renyi_gnm", n=30, m=57, seed=0)
    assert g.ecount() == 57 and g.is_simple()


def test_random_regular_and_complete_degrees():
    assert set(degrees(generate("random_regular", n=20, d=3, seed=0))) == {3}
    assert set(degrees(generate("complete", n=7))) == {6}


def test_block_models_with_pure_blocks_are_disjoint_cliques():
    g = generate("stochastic_block", sizes=[3, 5], p=[[1, 0], [0, 1]], seed=0)
    assert sorted(g.connected_components().sizes()) == [3, 5]
    assert g.ecount() == 3 + 10
    pp = generate("planted_partition", groups=4, size=3, p_in=1.0, p_out=0.0, seed=0)
    assert pp.connected_components().sizes() == [3] * 4


def test_random_geometric_joins_exactly_the_close_pairs():
    g = generate("random_geometric", n=40, radius=0.25, seed=5)
    points = np.column_stack([g.vs["x"], g.vs["y"]])
    close = {(i, j) for i, j in itertools.combinations(range(40), 2) if np.linalg.norm(points[i] - points[j]) < 0.25}
    assert {tuple(sorted(e)) for e in g.get_edgelist()} == close


BAD = [
    ("watts_strogatz", dict(n=20, k=3, p=0.1), "k must be even"),
    ("watts_strogatz", dict(n=20, k=20, p=0.1), "k must be"),
    ("watts_strogatz", dict(n=20, k=4, p=1.5), "p must be a number in \\[0.0, 1.0\\]"),
    ("barabasi_albert", dict(n=10, m=10), "m must be an integer in \\[1, 9\\]"),
    ("barabasi_albert", dict(n=10, m=2, initial="ring"), "initial must be 'empty' or 'star'"),
    ("erdos_renyi_gnm", dict(n=5, m=11), "m must be an integer in \\[0, 10\\]"),
    ("random_regular", dict(n=5, d=3), "n \\* d must be even"),
    ("ws_flex", dict(n=10, k=8.5, p=0.1), "k must be a number in \\[2.0, 7"),
    ("stochastic_block", dict(sizes=[2, 3], p=[[0.5]]), "p must be a 2 x 2 matrix"),
    ("stochastic_block", dict(sizes=[2, 3], p=[[0.5, 0.1], [0.2, 0.5]]), "p must be symmetric"),
    ("random_geometric", dict(n=5, radius=-1), "radius must be a number"),
    ("complete", dict(n=0), "n must be an integer >= 1"),
    ("watts_strogatz", dict(n=20, k=4, p=0.1, q=2), "unexpected keyword argument 'q'; it takes: n, k, p"),
    ("watts_strogatz", dict(n=20, k=4), "missing a required argument: 'p'"),
    ("erdos_renyi_gnp", dict(n=5.5, p=0.1), "n must be an integer"),
]


@pytest.mark.parametrize("name, params, message", BAD)
def test_bad_parameters_raise_one_clear_error(name, params, message):
    with pytest.raises(ValueError, match=message):
        generate(name, seed=0, **params)


def test_unknown_generator():
    with pytest.raises(ValueError, match="unknown generator 'ws'; choose one of: barabasi_albert"):
        generate("ws", n=3)


def test_igraph_seeding_leaves_the_global_generator_alone():
    generate("erdos_renyi_gnp", n=10, p=0.5, seed=1)
    assert igraph_draws_from_python_random()


@pytest.mark.parametrize("kind", [nx.Graph, nx.DiGraph])
def test_networkx_round_trip_keeps_node_order_and_direction(kind):
    original = kind()
    original.add_nodes_from(["c", "a", "b", "d"])
    original.add_edges_from([("a", "b"), ("c", "a"), ("b", "d")])
    g = to_igraph(original)
    assert g.is_directed() == original.is_directed()
    assert sorted(g.get_edgelist()) == sorted([(1, 2), (0, 1), (2, 3)])
    back = to_networkx(g)
    assert type(back) is kind and nx.is_isomorphic(back, original)
    assert to_networkx(original) is original and to_igraph(g) is g


def test_conversion_refuses_multigraphs_and_other_objects():
    with pytest.raises(ValueError, match="multigraph"):
        to_igraph(nx.MultiGraph([(0, 1), (0, 1)]))
    with pytest.raises(ValueError, match="graph must be an igraph.Graph, networkx.Graph or networkx.DiGraph, got list"):
        to_igraph([(0, 1)])


@pytest.mark.parametrize("suffix", [".graphml", ".edgelist"])
def test_save_and_load_round_trip(tmp_path, suffix):
    g = generate("barabasi_albert", n=15, m=2, seed=0)
    path = save_graph(g, tmp_path / f"g{suffix}")
    loaded = load_graph(path)
    assert loaded.vcount() == 15
    assert sorted(map(sorted, loaded.get_edgelist())) == sorted(map(sorted, g.get_edgelist()))


def test_isolated_nodes_survive_graphml_and_are_refused_by_edge_lists(tmp_path):
    g = generate("erdos_renyi_gnp", n=30, p=0.03, seed=0)
    assert 0 in g.degree()
    assert load_graph(save_graph(g, tmp_path / "g.graphml")).vcount() == 30
    with pytest.raises(ValueError, match=r"edge list cannot hold the \d+ isolated node\(s\).*save it as .graphml"):
        save_graph(g, tmp_path / "g.txt")


def test_edge_list_labels_are_sorted_and_direction_is_a_choice(tmp_path):
    path = tmp_path / "edges.txt"
    path.write_text("2 0\n10 2\n1 2\n")
    g = load_graph(path, directed=True)
    assert g.is_directed() and g.vcount() == 4
    assert sorted(g.get_edgelist()) == [(1, 2), (2, 0), (3, 2)]  # labels 0, 1, 2, 10 -> 0..3
    (tmp_path / "names.txt").write_text("x y\ny z\n")
    assert load_graph(tmp_path / "names.txt").ecount() == 2
    with pytest.raises(FileNotFoundError, match="no graph file"):
        load_graph(tmp_path / "missing.graphml")


def test_complete_graph_size_formula():
    for n in (1, 2, 5):
        assert generate("complete", n=n).ecount() == math.comb(n, 2)


def test_fingerprint_is_the_graph_content_not_how_it_was_drawn():
    lattices = {graph_fingerprint(generate("ring_lattice", n=12, k=4, seed=s)) for s in range(5)}
    assert len(lattices) == 1
    assert graph_fingerprint(generate("watts_strogatz", n=12, k=4, p=0.0, seed=3)) in lattices
    drawn = {graph_fingerprint(generate("erdos_renyi_gnp", n=20, p=0.3, seed=s)) for s in range(5)}
    assert len(drawn) == 5


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 15), st.floats(0.0, 1.0), st.integers(0, 10_000))
def test_fingerprint_ignores_edge_order_and_direction_of_undirected_edges(n, p, seed):
    g = generate("erdos_renyi_gnp", n=n, p=p, seed=seed)
    edges = g.get_edgelist()
    rng = np.random.default_rng(seed)
    shuffled = [(v, u) if rng.random() < 0.5 else (u, v) for u, v in rng.permutation(edges).tolist()] if edges else []
    same = igraph.Graph(n=n, edges=shuffled)
    assert graph_fingerprint(same) == graph_fingerprint(g) == graph_fingerprint(to_networkx(g))
    assert graph_fingerprint(igraph.Graph(n=n + 1, edges=edges)) != graph_fingerprint(g)
    if edges:
        assert graph_fingerprint(igraph.Graph(n=n, edges=edges, directed=True)) != graph_fingerprint(g)
        assert graph_fingerprint(igraph.Graph(n=n, edges=edges[1:])) != graph_fingerprint(g)


def test_every_generator_has_its_parameter_check_with_the_same_parameters():
    import inspect

    import graphprior.generators as G

    assert set(G.PARAMETER_CHECKS) == set(G.GENERATORS)
    for name, function in G.GENERATORS.items():
        takes = [p for p in inspect.signature(function).parameters if p != "seed"]
        assert list(inspect.signature(G.PARAMETER_CHECKS[name]).parameters) == takes, name


@pytest.mark.parametrize(("name", "params"), [
    ("watts_strogatz", {"n": 16, "k": 4, "p": 1.5}),
    ("watts_strogatz", {"n": 10, "k": 20, "p": 0.1}),
    ("erdos_renyi_gnp", {"n": 0, "p": 0.1}),
    ("random_regular", {"n": 5, "d": 3}),
    ("barabasi_albert", {"n": 10, "m": 2, "mode": 1}),
])
def test_check_parameters_raises_what_generate_raises_without_drawing(name, params):
    import graphprior.generators as G

    with pytest.raises(ValueError) as drawn:
        G.generate(name, seed=0, **params)
    with pytest.raises(ValueError) as checked:
        G.check_parameters(name, **params)
    assert str(checked.value) == str(drawn.value)
    G.check_parameters("erdos_renyi_gnp", n=100_000_000, p=0.5)  # checks only: instant, no memory
