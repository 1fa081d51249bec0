"""Priors: graph -> masks (orientation, loops, gates, inputs, layers, init) and back."""

from __future__ import annotations

import igraph
import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphprior.generators import generate, to_networkx
from graphprior.priors import (
    dag_layers,
    gate_mask,
    input_mask,
    layered_structure,
    mask_to_graph,
    network_graph,
    prior_init_,
    recurrent_mask,
    recurrent_masks,
    spectral_radius,
)

random_graphs = st.builds(
    lambda n, p, seed: generate("erdos_renyi_gnp", n=n, p=p, seed=seed),
    st.integers(2, 20),
    st.floats(0.0, 0.6),
    st.integers(0, 10**6),
)


def edge_set(g: igraph.Graph) -> set[frozenset]:
    return {frozenset(e) for e in g.get_edgelist()}


@given(g=random_graphs)
@settings(max_examples=25, deadline=None)
def test_symmetric_mask_round_trips_to_the_same_graph(g):
    mask = recurrent_mask(g, "symmetric")
    assert mask.dtype == torch.bool and mask.shape == (g.vcount(), g.vcount())
    assert torch.equal(mask, mask.T) and not mask.diagonal().any()
    back = mask_to_graph(mask, backend="igraph", directed=False)
    assert edge_set(back) == edge_set(g)
    assert nx.is_isomorphic(mask_to_graph(mask, directed=False), to_networkx(g))


@given(g=random_graphs, seed=st.integers(0, 100))
@settings(max_examples=25, deadline=None)
def test_dag_and_random_orientations_keep_one_direction_per_edge(g, seed):
    dag = recurrent_mask(g, "dag")
    assert not torch.triu(dag).any()  # mask[i, j] only for j < i: edges lower -> higher
    for mask in (dag, recurrent_mask(g, "random", seed=seed)):
        assert not (mask & mask.T).any()
        assert torch.equal(mask | mask.T, recurrent_mask(g, "symmetric"))
        assert edge_set(mask_to_graph(mask, backend="igraph", directed=False)) == edge_set(g)
    assert torch.equal(recurrent_mask(g, "random", seed=seed), recurrent_mask(g, "random", seed=seed))


def test_mask_entry_is_edge_from_column_to_row():
    g = igraph.Graph(n=3, edges=[(0, 2), (2, 1)], directed=True)
    mask = recurrent_mask(g, "as_given")
    assert mask.nonzero().tolist() == [[1, 2], [2, 0]]
    assert sorted(mask_to_graph(mask).edges()) == [(0, 2), (2, 1)]
    assert torch.equal(recurrent_mask(nx.DiGraph([(0, 2), (2, 1)]), "as_given"), mask)


def test_random_orientation_is_roughly_fair():
    g = generate("complete", n=40)
    mask = recurrent_mask(g, "random", seed=0)
    assert 0.45 < torch.tril(mask, -1).sum().item() / g.ecount() < 0.55
    assert not torch.equal(mask, recurrent_mask(g, "random", seed=1))


def test_orientation_rules_for_directed_input():
    g = nx.DiGraph([(2, 0), (0, 2), (1, 2)])
    g.add_edge(1, 1)
    with pytest.raises(ValueError, match="'as_given' needs directed graphs"):
        recurrent_mask(nx.Graph([(0, 1)]), "as_given")
    symmetric = recurrent_mask(g, "symmetric")
    assert symmetric.sum() == 4  # 0-2 merged, 1-2 both ways, loop dropped
    assert recurrent_mask(g, "dag").nonzero().tolist() == [[2, 0], [2, 1]]
    assert recurrent_mask(g, "as_given", self_loops=None).nonzero().tolist() == [[0, 2], [1, 1], [2, 0], [2, 1]]


def test_repeated_edges_get_one_random_direction():
    g = igraph.Graph(n=3, edges=[(0, 1), (0, 1), (1, 0), (1, 2)])
    for seed in range(10):
        mask = recurrent_mask(g, "random", seed=seed)
        assert int(mask.sum()) == 2 and not (mask & mask.T).any()


def test_self_loops_on_off_or_as_in_the_graph():
    g = igraph.Graph(n=3, edges=[(0, 1), (2, 2)])
    assert recurrent_mask(g, self_loops=True).diagonal().all()
    assert not recurrent_mask(g, self_loops=False).diagonal().any()
    assert recurrent_mask(g, self_loops=None).diagonal().tolist() == [False, False, True]


def test_batch_equals_one_by_one_and_checks_sizes():
    graphs = [generate("barabasi_albert", n=16, m=2, seed=s) for s in range(5)]
    for orientation in ("symmetric", "dag"):
        batch = recurrent_masks(graphs, orientation)
        assert batch.shape == (5, 16, 16)
        for g, mask in zip(graphs, batch):
            assert torch.equal(mask, recurrent_mask(g, orientation))
    with pytest.raises(ValueError, match="same number of nodes, got \\[3, 16\\]"):
        recurrent_masks(graphs + [generate("complete", n=3)])
    with pytest.raises(ValueError, match="orientation must be one of symmetric, random, dag, as_given"):
        recurrent_mask(graphs[0], "up")
    with pytest.raises(ValueError, match="self_loops must be True, False or None"):
        recurrent_mask(graphs[0], self_loops="yes")


@pytest.mark.parametrize("cell, gates", [("lstm", 4), ("gru", 3), ("rnn_tanh", 1)])
def test_gate_tiling_places_every_block_exactly_over_the_graph(cell, gates):
    hidden = 12
    mask = recurrent_mask(generate("watts_strogatz", n=hidden, k=4, p=0.3, seed=0), "random", seed=0)
    full = gate_mask(mask, cell)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}[cell](3, hidden)
    with torch.no_grad():
        module.weight_hh_l0.mul_(full)
    for g in range(gates):
        block = module.weight_hh_l0[g * hidden : (g + 1) * hidden]
        assert torch.equal(block != 0, mask)
    if gates > 1:  # the study's row-by-row repetition scrambles the blocks
        assert not torch.equal(mask.repeat_interleave(gates, dim=0), full)


def test_one_independent_graph_per_gate():
    masks = [recurrent_mask(generate("erdos_renyi_gnp", n=8, p=0.3, seed=s)) for s in range(3)]
    full = gate_mask(masks, "gru")
    for g in range(3):
        assert torch.equal(full[g * 8 : (g + 1) * 8], masks[g])
    with pytest.raises(ValueError, match="one \\(H, H\\) mask or 4 of them"):
        gate_mask(masks, "lstm")
    with pytest.raises(ValueError, match="gates must be an integer >= 1 or one of"):
        gate_mask(masks[0], "transformer")
    with pytest.raises(ValueError, match="square bool tensors"):
        gate_mask(masks[0].float(), 2)


def test_input_masks():
    assert input_mask(3, 5).all() and input_mask(3, 5, gates="lstm").shape == (20, 3)
    picked = input_mask(2, 10, 0.3, seed=1)
    assert picked.any(dim=1).sum() == 3 and torch.equal(picked, input_mask(2, 10, 0.3, seed=1))
    assert input_mask(2, 4, [1, 3]).any(dim=1).tolist() == [False, True, False, True]
    dag = recurrent_mask(igraph.Graph(n=4, edges=[(0, 2), (1, 2), (2, 3)]), "dag", self_loops=True)
    sources = input_mask(2, 4, "sources", recurrent=dag, gates=2)
    assert sources.shape == (8, 2) and sources[:4].any(dim=1).tolist() == [True, True, False, False]
    assert torch.equal(sources[:4], sources[4:])
    for bad, message in [
        (dict(nodes=1.5), "fraction must be in \\(0, 1\\]"),
        (dict(nodes=[7]), "unit indices in \\[0, 4\\)"),
        (dict(nodes="sources"), "needs recurrent"),
        (dict(nodes="most"), "nodes must be 'all', 'sources'"),
    ]:
        with pytest.raises(ValueError, match=message):
            input_mask(2, 4, **bad)
    with pytest.raises(ValueError, match="input_size must be an integer >= 1"):
        input_mask(0, 4)


def test_layered_structure_of_a_small_dag_with_a_skip():
    # undirected edges, oriented lower -> higher: 0->2, 1->2, 2->3, 1->3
    g = nx.Graph([(0, 2), (1, 2), (2, 3), (1, 3)])
    structure = layered_structure(g)
    assert structure.widths == (2, 1, 1)
    connections = {(c.source, c.target): c.mask.tolist() for c in structure.connections}
    assert connections == {(0, 1): [[True, True]], (1, 2): [[True]], (0, 2): [[False, True]]}
    assert [(c.source, c.target) for c in structure.skip_connections] == [(0, 2)]
    assert structure.recurrent_masks is None


def test_layered_structure_of_a_directed_dag_and_recurrent_options():
    g = igraph.Graph(n=4, edges=[(3, 0), (3, 1), (0, 2), (1, 2)], directed=True)  # 3 is the source
    layer, _, _ = dag_layers(g)
    assert layer.tolist() == [1, 1, 2, 0]
    structure = layered_structure(g, recurrent="self")
    assert structure.widths == (1, 2, 1)
    assert [m.tolist() for m in structure.recurrent_masks] == [[[True]], [[True, False], [False, True]], [[True]]]
    assert all(m.all() for m in layered_structure(g, recurrent="dense").recurrent_masks)
    assert not any(m.any() for m in layered_structure(g, recurrent="none").recurrent_masks)
    with pytest.raises(ValueError, match="directed with a cycle"):
        layered_structure(igraph.Graph(n=2, edges=[(0, 1), (1, 0)], directed=True))
    with pytest.raises(ValueError, match="recurrent must be None or one of dense, self, none"):
        layered_structure(g, recurrent="full")


@given(g=random_graphs)
@settings(max_examples=20, deadline=None)
def test_layered_structure_accounts_for_every_edge(g):
    structure = layered_structure(g)
    assert sum(structure.widths) == g.vcount()
    assert sum(int(c.mask.sum()) for c in structure.connections) == g.ecount()
    layer, sources, targets = dag_layers(g)
    assert np.all(layer[targets] > layer[sources])
    assert np.all((layer == 0) | np.isin(np.arange(g.vcount()), targets))


def test_prior_init_scales_by_fan_in_and_keeps_zeros():
    hidden = 200
    mask = torch.rand(hidden, hidden, generator=torch.Generator().manual_seed(0)) < 0.25
    weight = prior_init_(torch.empty(4 * hidden, hidden), mask, gain=2.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(weight != 0, mask.repeat(4, 1))
    scaled = weight * mask.repeat(4, 1).sum(dim=1, keepdim=True).sqrt()
    assert abs(scaled[mask.repeat(4, 1)].std().item() - 2.0) < 0.05


def test_prior_init_spectral_radius_per_gate_block():
    mask = recurrent_mask(generate("watts_strogatz", n=30, k=4, p=0.2, seed=0))
    weight = prior_init_(torch.empty(90, 30), mask, radius=0.9, generator=torch.Generator().manual_seed(0))
    for block in weight.split(30):
        assert spectral_radius(block) == pytest.approx(0.9, rel=1e-6)
        assert np.isclose(np.abs(np.linalg.eigvals(block.double().numpy())).max(), 0.9)


def test_prior_init_refuses_or_skips_nilpotent_dag_masks():
    dag = recurrent_mask(generate("complete", n=10), "dag")
    weight = torch.zeros(10, 10)
    with pytest.raises(ValueError, match="nilpotent with spectral radius 0"):
        prior_init_(weight, dag, radius=1.0)
    assert not weight.any()  # refused before touching the weight
    skipped = prior_init_(weight, dag, radius=1.0, nilpotent="skip", generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(skipped).all() and torch.equal(skipped != 0, dag)
    with_loops = recurrent_mask(generate("complete", n=10), "dag", self_loops=True)
    assert spectral_radius(prior_init_(torch.empty(10, 10), with_loops, radius=0.5)) == pytest.approx(0.5)
    for bad, message in [
        (dict(radius=0), "radius must be a positive number"),
        (dict(nilpotent="warn"), "nilpotent must be 'raise' or 'skip'"),
        (dict(gain=0, radius=0.5), "gain must be a positive number, got 0"),
        (dict(radius="a"), "radius must be a positive number or None, got 'a'"),
    ]:
        with pytest.raises(ValueError, match=message):
            prior_init_(torch.empty(10, 10), dag, **bad)
    with pytest.raises(ValueError, match="weight must have shape \\(G\\*H, H\\), got \\(10,\\)"):
        prior_init_(torch.empty(10), dag)
    with pytest.raises(ValueError, match="mask must be a bool tensor of shape \\(10, 10\\) or \\(30, 10\\)"):
        prior_init_(torch.empty(30, 10), torch.ones(20, 10, dtype=torch.bool))


def test_mask_to_graph_reads_a_trained_weight_and_gate_stacks():
    weight = torch.tensor([[0.0, 0.3, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 0.2]])
    assert sorted(mask_to_graph(weight).edges()) == [(0, 2), (1, 0), (2, 2)]
    stacked = torch.cat([weight, weight.T])
    assert sorted(mask_to_graph(stacked, backend="igraph").get_edgelist()) == [(0, 1), (0, 2), (1, 0), (2, 0), (2, 2)]
    with pytest.raises(ValueError, match="backend must be 'networkx' or 'igraph'"):
        mask_to_graph(weight, backend="graph-tool")
    with pytest.raises(ValueError, match="mask must have shape \\(H, H\\) or \\(G\\*H, H\\)"):
        mask_to_graph(torch.ones(4, 3))


def test_network_graph_wires_inputs_hidden_and_outputs():
    recurrent = recurrent_mask(generate("ring_lattice", n=6, k=2), "dag")
    inputs = input_mask(3, 6, [0, 1], gates=4)
    net = network_graph(recurrent, inputs, outputs=2)
    assert net.vcount() == 3 + 6 + 2
    assert net.ecount() == 3 * 2 + int(recurrent.sum()) + 6 * 2
    assert net.vs["role"].count("input") == 3 and net.vs["role"].count("output") == 2
    assert net.are_adjacent(0, 3) and not net.are_adjacent(0, 5) and net.are_adjacent(3, 4)
    dense = network_graph(recurrent, 3)
    assert dense.ecount() == 3 * 6 + int(recurrent.sum()) + 6
    with pytest.raises(ValueError, match="outputs mask must have shape \\(O, 6\\)"):
        network_graph(recurrent, 3, torch.ones(2, 5, dtype=torch.bool))
