"""Named, seeded, validated random-graph generators and conversions of user graphs.

Every generator returns an ``igraph.Graph`` with nodes ``0..n-1``, takes ``seed=`` (same
seed, same graph) and checks its parameters before drawing anything, raising a
``ValueError`` that names the parameter and the allowed range. igraph builds the models it
implements as they are defined in the literature (it is several times faster);
networkx builds the others. ``GENERATORS`` maps a name to its function so sweeps can say
``generator = "watts_strogatz"``; ``generate(name, seed=..., **params)`` calls one.
:func:`random_state` is the one seed discipline: it checks ``seed`` and hands a generator
(or any other seeded function, e.g. in ``graphprior.features``) the random source it draws
from, igraph's global generator included.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args

import igraph
import networkx as nx
import numpy as np

GraphLike = Union[igraph.Graph, nx.Graph]

__all__ = [
    "GENERATORS",
    "PARAMETER_CHECKS",
    "GraphLike",
    "RECORDED_ATTRIBUTES",
    "barabasi_albert",
    "barabasi_albert_edges",
    "block_edge_split",
    "block_model_edges",
    "block_sizes",
    "check_parameters",
    "complete",
    "configuration_model",
    "connected_watts_strogatz",
    "dense_matched",
    "dense_units",
    "directed_scale_free",
    "erdos_renyi_gnm",
    "erdos_renyi_gnp",
    "generate",
    "graph_fingerprint",
    "load_graph",
    "newman_watts_strogatz",
    "planted_partition",
    "powerlaw_cluster",
    "powerlaw_cluster_edges",
    "powerlaw_degrees",
    "random_geometric",
    "random_regular",
    "random_state",
    "recorded_attributes",
    "ring_lattice",
    "save_graph",
    "stochastic_block",
    "to_igraph",
    "to_networkx",
    "watts_strogatz",
    "ws_flex",
]


# ----------------------------------------------------------------------------- checks


def _check_int(name: str, value: object, low: int, high: float = float("inf")) -> int:
    """Return ``value`` as int if it is an integer in [low, high], else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        allowed = f">= {low}" if high == float("inf") else f"in [{low}, {int(high)}]"
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    return int(value)


def _check_float(name: str, value: object, low: float, high: float) -> float:
    """Return ``value`` as float if it is a real number in [low, high], else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _check_seed(seed: object) -> int | None:
    """``seed`` itself when it is None or an integer >= 0, else the ValueError naming it."""
    if seed is None:
        return None
    return _check_int("seed", seed, 0)


SeedKind = Literal["int", "random", "numpy", "igraph"]
_SEED_KINDS: tuple[str, ...] = get_args(SeedKind)
_Function = TypeVar("_Function", bound=Callable[..., Any])


def random_state(kind: SeedKind) -> Callable[[_Function], _Function]:
    """Decorator: check the function's ``seed`` argument once and hand it the generator it needs.

    The one seed discipline of the toolkit (after networkx's ``py_random_state`` and
    ``np_random_state``). ``seed`` must be None or an integer >= 0 (else a ValueError naming
    it); the function then receives as ``seed``:

    * ``"int"``: the checked seed itself, for functions that draw nothing or pass it on;
    * ``"random"``: a ``random.Random(seed)`` (the global ``random`` module for None), the
      stream networkx's generators draw from when given the integer;
    * ``"numpy"``: ``np.random.default_rng(seed)``;
    * ``"igraph"``: the ``"random"`` generator, also installed as igraph's random number
      generator for the call (igraph has no per-call seed) and replaced by igraph's default,
      the ``random`` module, afterwards; for None igraph's generator is left as it is.
    """
    if kind not in _SEED_KINDS:
        raise ValueError(f"kind must be one of {', '.join(_SEED_KINDS)}, got {kind!r}")

    def decorate(function: _Function) -> _Function:
        signature = inspect.signature(function)
        if "seed" not in signature.parameters:
            raise ValueError(f"function: {function.__name__} has no seed parameter to seed")

        @functools.wraps(function)
        def seeded(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            seed = _check_seed(bound.arguments["seed"])
            bound.arguments["seed"] = _random_source(kind, seed)
            if kind != "igraph" or seed is None:
                return function(*bound.args, **bound.kwargs)
            igraph.set_random_number_generator(bound.arguments["seed"])
            try:
                return function(*bound.args, **bound.kwargs)
            finally:
                igraph.set_random_number_generator(random)

        return seeded  # type: ignore[return-value]

    return decorate


def _random_source(kind: SeedKind, seed: int | None) -> Any:
    """What a ``random_state(kind)`` function receives as ``seed`` for a checked seed."""
    if kind == "int":
        return seed
    if kind == "numpy":
        return np.random.default_rng(seed)
    return random if seed is None else random.Random(seed)


def _from_edges(n: int, edges: object, directed: bool = False) -> igraph.Graph:
    return igraph.Graph(n=n, edges=[tuple(map(int, e)) for e in edges], directed=directed)


# ----------------------------------------------------------------------------- small worlds


@random_state("random")
def watts_strogatz(n: int, k: int, p: float, seed: int | None = None) -> igraph.Graph:
    """Watts–Strogatz small world: a ring of ``n`` nodes each joined to its ``k`` nearest
    neighbours, each edge's far end rewired with probability ``p``.

    The original single-endpoint rewiring (networkx); igraph's variant rewires both ends
    and so tends to G(n, m) at p = 1, a different model.
    Watts & Strogatz (1998), "Collective dynamics of 'small-world' networks", Nature 393.
    """
    n, k, p = _check_small_world(n, k, p)
    return to_igraph(nx.watts_strogatz_graph(n, k, p, seed=seed))


def _check_small_world(n: object, k: object, p: object) -> tuple[int, int, float]:
    """The checked parameters of a (Newman–)Watts–Strogatz graph."""
    n = _check_int("n", n, 3)
    return n, _check_even_k(k, n), _check_float("p", p, 0.0, 1.0)


@random_state("random")
def connected_watts_strogatz(
    n: int, k: int, p: float, tries: int = 100, seed: int | None = None
) -> igraph.Graph:
    """Watts–Strogatz graph redrawn until connected, up to ``tries`` times (the study's generator).

    As networkx's ``connected_watts_strogatz_graph``, which Stier et al. (2021) used with
    ``k = n // 5``: an odd ``k`` is rounded down to ``k - 1`` neighbours (``k // 2`` per
    side). Raises RuntimeError when no draw is connected.
    Watts & Strogatz (1998), Nature 393; Stier, Darji & Granitzer (2021), LOD.
    """
    n, k, p, tries = _check_connected_watts_strogatz(n, k, p, tries)
    try:
        graph = nx.connected_watts_strogatz_graph(n, k, p, tries=tries, seed=seed)
    except nx.NetworkXError as error:
        raise RuntimeError(f"no connected Watts–Strogatz graph in {tries} tries (n={n}, k={k}, p={p})") from error
    return to_igraph(graph)


def _check_connected_watts_strogatz(n: object, k: object, p: object, tries: object = 100) -> tuple[int, int, float, int]:
    n = _check_int("n", n, 3)
    return n, _check_int("k", k, 2, n - 1), _check_float("p", p, 0.0, 1.0), _check_int("tries", tries, 1)


@random_state("random")
def newman_watts_strogatz(n: int, k: int, p: float, seed: int | None = None) -> igraph.Graph:
    """Newman–Watts small world: the ring lattice plus, per lattice edge, a shortcut with
    probability ``p`` (no edge is removed, so the graph stays connected).

    Newman & Watts (1999), "Renormalization group analysis of the small-world network
    model", Physics Letters A 263.
    """
    n, k, p = _check_small_world(n, k, p)
    return to_igraph(nx.newman_watts_strogatz_graph(n, k, p, seed=seed))


@random_state("numpy")
def ws_flex(n: int, k: float, p: float, seed: int | None = None) -> igraph.Graph:
    """WS-flex: a Watts–Strogatz graph with a non-integer mean degree ``k``.

    A ring where each node has ``floor(k / 2)`` neighbours per side, plus
    ``round(n * k / 2) - n * floor(k / 2)`` edges from randomly chosen distinct nodes to
    their next-farther ring neighbour, then each edge's far end rewired with probability
    ``p`` as in Watts–Strogatz. Mean degree ``2 * round(n * k / 2) / n``.
    You, Leskovec, He & Xie (2020), "Graph Structure of Neural Networks", ICML.
    """
    n, k, p = _check_ws_flex(n, k, p)
    half = int(k // 2)
    nodes = np.arange(n)
    edges = [(u, (u + d) % n) for d in range(1, half + 1) for u in nodes]
    extra = int(round(n * k / 2)) - n * half
    edges += [(u, (u + half + 1) % n) for u in seed.choice(n, size=extra, replace=False)]
    return _from_edges(n, _rewire_far_ends(n, edges, p, seed))


def _check_ws_flex(n: object, k: object, p: object) -> tuple[int, float, float]:
    n = _check_int("n", n, 5)
    return n, _check_float("k", k, 2.0, n - 3), _check_float("p", p, 0.0, 1.0)


def _rewire_far_ends(n: int, edges: list[tuple[int, int]], p: float, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Watts–Strogatz rewiring: with probability ``p`` move an edge's far end to a node
    that is neither its near end nor already its neighbour (skipped when none is left)."""
    neighbours = [set() for _ in range(n)]
    for u, v in edges:
        neighbours[u].add(v)
        neighbours[v].add(u)
    rewired = []
    for u, v in edges:
        if rng.random() < p and len(neighbours[u]) < n - 1:
            w = int(rng.integers(n))
            while w == u or w in neighbours[u]:
                w = int(rng.integers(n))
            neighbours[u].discard(v)
            neighbours[v].discard(u)
            neighbours[u].add(w)
            neighbours[w].add(u)
            v = w
        rewired.append((u, v))
    return rewired


@random_state("int")
def ring_lattice(n: int, k: int, seed: int | None = None) -> igraph.Graph:
    """Ring lattice: ``n`` nodes on a ring, each joined to its ``k`` nearest neighbours
    (the Watts–Strogatz graph at p = 0; deterministic, ``seed`` is accepted and unused)."""
    n, k = _check_ring_lattice(n, k)
    return igraph.Graph.Watts_Strogatz(1, n, k // 2, 0.0)


def _check_ring_lattice(n: object, k: object) -> tuple[int, int]:
    n = _check_int("n", n, 3)
    return n, _check_even_k(k, n)


def _check_even_k(k: object, n: int) -> int:
    k = _check_int("k", k, 2, n - 1)
    if k % 2:
        raise ValueError(f"k must be even and in [2, n) (here n = {n}), got {k}")
    return k


# ----------------------------------------------------------------------------- scale free


@random_state("random")
def barabasi_albert(n: int, m: int, seed: int | None = None, initial: str = "empty") -> igraph.Graph:
    """Barabási–Albert preferential attachment: each new node links to ``m`` distinct
    existing nodes chosen with probability proportional to their degree.

    ``initial="empty"`` starts from ``m`` unconnected nodes that the first new node joins
    (networkx < 2.6, as in the study: its DAG by node order has exactly ``m`` sources);
    ``"star"`` starts from a star of ``m + 1`` nodes (networkx >= 2.6). Both give
    ``m * (n - m)`` edges. networkx builds it: igraph's model adds a zero-degree appeal.
    Barabási & Albert (1999), "Emergence of scaling in random networks", Science 286.
    """
    n, m, initial = _check_barabasi_albert(n, m, initial)
    centre = m if initial == "empty" else 0  # empty: the state after node m joined nodes 0..m-1
    start = nx.empty_graph(m + 1)
    start.add_edges_from((centre, v) for v in range(m + 1) if v != centre)
    return to_igraph(nx.barabasi_albert_graph(n, m, seed=seed, initial_graph=start))


def _check_barabasi_albert(n: object, m: object, initial: object = "empty") -> tuple[int, int, str]:
    n = _check_int("n", n, 2)
    if initial not in ("empty", "star"):
        raise ValueError(f"initial must be 'empty' or 'star', got {initial!r}")
    return n, _check_int("m", m, 1, n - 1), str(initial)


@random_state("random")
def powerlaw_cluster(n: int, m: int, p: float, seed: int | None = None) -> igraph.Graph:
    """Holme–Kim power-law graph with tunable clustering: Barabási–Albert attachment where,
    with probability ``p``, each further link closes a triangle.

    Holme & Kim (2002), "Growing scale-free networks with tunable clustering", Phys. Rev. E 65.
    """
    n, m, p = _check_powerlaw_cluster(n, m, p)
    return to_igraph(nx.powerlaw_cluster_graph(n, m, p, seed=seed))


def _check_powerlaw_cluster(n: object, m: object, p: object) -> tuple[int, int, float]:
    n = _check_int("n", n, 2)
    return n, _check_int("m", m, 1, n - 1), _check_float("p", p, 0.0, 1.0)


@random_state("random")
def directed_scale_free(
    n: int,
    alpha: float = 0.41,
    beta: float = 0.54,
    gamma: float = 0.05,
    delta_in: float = 0.2,
    delta_out: float = 0.0,
    seed: int | None = None,
) -> igraph.Graph:
    """Directed scale-free graph (Bollobás et al.): new node -> existing (``alpha``), edge
    between existing nodes (``beta``), existing -> new node (``gamma``); ``delta_in``,
    ``delta_out`` bias towards low-degree nodes. Multi-edges and self-loops of the
    networkx multigraph are collapsed, so the result is a simple directed graph.

    Bollobás, Borgs, Chayes & Riordan (2003), "Directed scale-free graphs", SODA.
    """
    n = _check_directed_scale_free(n, alpha, beta, gamma, delta_in, delta_out)
    multi = nx.scale_free_graph(
        n, alpha=alpha, beta=beta, gamma=gamma, delta_in=delta_in, delta_out=delta_out, seed=seed
    )
    simple = nx.DiGraph(multi)
    simple.remove_edges_from(nx.selfloop_edges(simple))
    return to_igraph(simple)


def _check_directed_scale_free(
    n: object, alpha: object = 0.41, beta: object = 0.54, gamma: object = 0.05,
    delta_in: object = 0.2, delta_out: object = 0.0,
) -> int:
    """The checked node count (the probabilities and biases are used as given)."""
    n = _check_int("n", n, 3)  # the model grows from a 3-cycle
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        _check_float(name, value, 0.0, 1.0)
    if not np.isclose(alpha + beta + gamma, 1.0):
        raise ValueError(f"alpha + beta + gamma must equal 1, got {alpha + beta + gamma}")
    _check_float("delta_in", delta_in, 0.0, float("inf"))
    _check_float("delta_out", delta_out, 0.0, float("inf"))
    return n


# ----------------------------------------------------------------------------- classic random graphs


@random_state("igraph")
def erdos_renyi_gnp(n: int, p: float, seed: int | None = None) -> igraph.Graph:
    """Erdős–Rényi G(n, p): each of the n(n-1)/2 node pairs is an edge with probability ``p``.

    Gilbert (1959), "Random graphs", Ann. Math. Statist. 30; Erdős & Rényi (1959).
    """
    n, p = _check_erdos_renyi_gnp(n, p)
    return igraph.Graph.Erdos_Renyi(n=n, p=p)


def _check_erdos_renyi_gnp(n: object, p: object) -> tuple[int, float]:
    return _check_int("n", n, 1), _check_float("p", p, 0.0, 1.0)


@random_state("igraph")
def erdos_renyi_gnm(n: int, m: int, seed: int | None = None) -> igraph.Graph:
    """Erdős–Rényi G(n, m): ``m`` edges drawn uniformly among all node pairs.

    Erdős & Rényi (1959), "On random graphs I", Publ. Math. Debrecen 6.
    """
    n, m = _check_erdos_renyi_gnm(n, m)
    return igraph.Graph.Erdos_Renyi(n=n, m=m)


def _check_erdos_renyi_gnm(n: object, m: object) -> tuple[int, int]:
    n = _check_int("n", n, 1)
    return n, _check_int("m", m, 0, n * (n - 1) // 2)


@random_state("igraph")
def random_regular(n: int, d: int, seed: int | None = None) -> igraph.Graph:
    """Uniform-like random ``d``-regular graph: every node has degree exactly ``d``.

    Steger & Wormald (1999), "Generating random regular graphs quickly", CPC 8.
    """
    n, d = _check_random_regular(n, d)
    return igraph.Graph.K_Regular(n, d)


def _check_random_regular(n: object, d: object) -> tuple[int, int]:
    n = _check_int("n", n, 1)
    d = _check_int("d", d, 0, n - 1)
    if n * d % 2:
        raise ValueError(f"n * d must be even for a d-regular graph, got n={n}, d={d}")
    return n, d


@random_state("int")
def complete(n: int, seed: int | None = None) -> igraph.Graph:
    """Complete graph K_n (deterministic; ``seed`` is accepted and unused): the dense baseline."""
    return igraph.Graph.Full(_check_complete(n))


def _check_complete(n: object) -> int:
    return _check_int("n", n, 1)


@random_state("igraph")
def stochastic_block(sizes: Sequence[int], p: Sequence[Sequence[float]], seed: int | None = None) -> igraph.Graph:
    """Stochastic block model: blocks of the given ``sizes`` (consecutive node ids), nodes of
    blocks r and s joined with probability ``p[r][s]`` (``p`` symmetric).

    Holland, Laskey & Leinhardt (1983), "Stochastic blockmodels: first steps", Social Networks 5.
    """
    sizes, matrix = _check_stochastic_block(sizes, p)
    return igraph.Graph.SBM(matrix.tolist(), sizes)


def _check_stochastic_block(sizes: object, p: object) -> tuple[list[int], np.ndarray]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes:
        raise ValueError(f"sizes must be a non-empty list of block sizes, got {sizes!r}")
    sizes = [_check_int("sizes[i]", s, 1) for s in sizes]
    matrix = np.asarray(p, dtype=float)
    if matrix.shape != (len(sizes), len(sizes)):
        raise ValueError(f"p must be a {len(sizes)} x {len(sizes)} matrix (one row per block), got shape {matrix.shape}")
    if not np.all((matrix >= 0) & (matrix <= 1)) or not np.allclose(matrix, matrix.T):
        raise ValueError("p must be symmetric with entries in [0, 1]")
    return sizes, matrix


@random_state("int")
def planted_partition(groups: int, size: int, p_in: float, p_out: float, seed: int | None = None) -> igraph.Graph:
    """Planted partition: ``groups`` blocks of ``size`` nodes, joined with probability
    ``p_in`` inside a block and ``p_out`` between blocks (a stochastic block model).

    Condon & Karp (2001), "Algorithms for graph partitioning on the planted partition model",
    Random Structures & Algorithms 18.
    """
    groups, size, p_in, p_out = _check_planted_partition(groups, size, p_in, p_out)
    matrix = np.full((groups, groups), p_out)
    np.fill_diagonal(matrix, p_in)
    return stochastic_block([size] * groups, matrix, seed=seed)


def _check_planted_partition(groups: object, size: object, p_in: object, p_out: object) -> tuple[int, int, float, float]:
    return (_check_int("groups", groups, 1), _check_int("size", size, 1),
            _check_float("p_in", p_in, 0.0, 1.0), _check_float("p_out", p_out, 0.0, 1.0))


@random_state("igraph")
def random_geometric(n: int, radius: float, torus: bool = False, seed: int | None = None) -> igraph.Graph:
    """Random geometric graph: ``n`` points uniform in the unit square (or torus), joined
    when closer than ``radius``. Coordinates are kept as vertex attributes ``x``, ``y``.

    Penrose (2003), "Random Geometric Graphs", Oxford University Press.
    """
    n, radius = _check_random_geometric(n, radius)
    return igraph.Graph.GRG(n, radius, torus=bool(torus))


def _check_random_geometric(n: object, radius: object, torus: object = False) -> tuple[int, float]:
    return _check_int("n", n, 1), _check_float("radius", radius, 0.0, float(np.sqrt(2)))


# ----------------------------------------------------------------------------- fixed edge budgets
# Families held at a given (n, edges) so that only topology varies (You et al. 2020 did this
# for MLPs). Each sets the graph attribute ``edge_deviation`` (edges drawn minus ``budget``;
# 0 where the family hits the budget, as all of these do except ``dense_matched``), which a
# sweep's record keeps beside the structural features (``recorded_attributes``).

RECORDED_ATTRIBUTES: tuple[str, ...] = ("edge_deviation",)
"""Graph attributes a sweep's record keeps beside the structural features."""


def recorded_attributes(graph: GraphLike) -> dict[str, float]:
    """The ``RECORDED_ATTRIBUTES`` a graph carries (an ``igraph.Graph``'s graph attributes)."""
    if not isinstance(graph, igraph.Graph):
        return {}
    present = set(graph.attributes())
    return {name: float(graph[name]) for name in RECORDED_ATTRIBUTES if name in present}


def _with_deviation(graph: igraph.Graph, budget: int) -> igraph.Graph:
    graph["edge_deviation"] = graph.ecount() - budget
    return graph


def _check_budget(n: object, budget: object, low: int = 1) -> tuple[int, int]:
    """``n`` >= 2 and an edge ``budget`` a simple graph on ``n`` nodes can hold (at least ``low``)."""
    n = _check_int("n", n, 2)
    return n, _check_int("budget", budget, low, n * (n - 1) // 2)


def _top_up_edges(graph: igraph.Graph, budget: int, closure: float, rng: random.Random) -> igraph.Graph:
    """Add edges until the graph has ``budget`` (or remove random ones down to it).

    Each added edge closes a triangle with probability ``closure`` (two unjoined neighbours
    of a random node, as Holme–Kim's triad step) and otherwise joins two unjoined nodes
    chosen with probability proportional to the product of their degrees (preferential
    attachment), so the top-up keeps the family's character.
    """
    if graph.ecount() > budget:
        graph.delete_edges(rng.sample(range(graph.ecount()), graph.ecount() - budget))
    while graph.ecount() < budget:
        edge = _triad_edge(graph, rng) if rng.random() < closure else None
        graph.add_edge(*(edge or _preferential_edge(graph, rng)))
    return graph


def _triad_edge(graph: igraph.Graph, rng: random.Random) -> tuple[int, int] | None:
    """Two unjoined neighbours of a randomly chosen node, or None when no node has such a pair."""
    centres = list(range(graph.vcount()))
    rng.shuffle(centres)
    for centre in centres:
        pairs = [(u, v) for u, v in itertools.combinations(graph.neighbors(centre), 2) if not graph.are_adjacent(u, v)]
        if pairs:
            return rng.choice(pairs)
    return None


def _preferential_edge(graph: igraph.Graph, rng: random.Random) -> tuple[int, int]:
    """An unjoined pair drawn with probability proportional to (degree + 1) products."""
    adjacency = np.asarray(graph.get_adjacency().data, dtype=bool)
    upper = np.triu(~adjacency, k=1)
    sources, targets = np.nonzero(upper)
    degree = np.asarray(graph.degree(), dtype=float) + 1.0
    weights = degree[sources] * degree[targets]
    chosen = rng.choices(range(len(sources)), weights=weights.tolist())[0]
    return int(sources[chosen]), int(targets[chosen])


def _attachment_count(n: int, budget: int) -> int:
    """The largest ``m <= n // 2`` whose Barabási–Albert graph (``m (n - m)`` edges) fits the budget (at least 1)."""
    return max([m for m in range(1, n // 2 + 1) if m * (n - m) <= budget], default=1)


@random_state("random")
def barabasi_albert_edges(n: int, budget: int, seed: int | None = None) -> igraph.Graph:
    """Barabási–Albert graph with exactly ``budget`` edges.

    Draws ``barabasi_albert(n, m)`` with the largest ``m`` whose ``m (n - m)`` edges fit the
    budget, then adds the rest by preferential attachment (pairs chosen with probability
    proportional to their degree product); a budget below ``n - 1`` (a tree) removes random
    edges of the ``m = 1`` tree instead. Barabási & Albert (1999), Science 286.
    """
    n, budget = _check_barabasi_albert_edges(n, budget)
    base = barabasi_albert(n, _attachment_count(n, budget), seed=seed.randrange(2**31))
    return _with_deviation(_top_up_edges(base, budget, 0.0, seed), budget)


def _check_barabasi_albert_edges(n: object, budget: object) -> tuple[int, int]:
    return _check_budget(n, budget)


@random_state("random")
def powerlaw_cluster_edges(n: int, budget: int, p: float, seed: int | None = None) -> igraph.Graph:
    """Holme–Kim graph (tunable clustering ``p``) with exactly ``budget`` edges.

    ``powerlaw_cluster(n, m, p)`` with the largest ``m`` whose ``m (n - m)`` edges fit, then
    the rest added as Holme–Kim adds them: a triangle closed with probability ``p``, else a
    preferential pair. Holme & Kim (2002), Phys. Rev. E 65.
    """
    n, budget, p = _check_powerlaw_cluster_edges(n, budget, p)
    base = powerlaw_cluster(n, _attachment_count(n, budget), p, seed=seed.randrange(2**31))
    return _with_deviation(_top_up_edges(base, budget, p, seed), budget)


def _check_powerlaw_cluster_edges(n: object, budget: object, p: object) -> tuple[int, int, float]:
    return (*_check_budget(n, budget), _check_float("p", p, 0.0, 1.0))


def powerlaw_degrees(n: int, budget: int, exponent: float) -> list[int]:
    """A graphical degree sequence of ``n`` nodes summing to ``2 * budget`` whose degrees
    follow a power law ``P(k) ~ k^-exponent``.

    Node ``i`` gets the expected degree ``c (i + 1)^(-1 / (exponent - 1))`` (the static model
    of Goh, Kahng & Kim 2001), ``c`` scaled to the budget; rounded by largest remainders,
    kept within ``[1, n - 1]``, then made graphical (Erdős–Gallai) by moving single
    degrees from the largest to the smallest node. Deterministic: the wiring is what varies.
    Returned in decreasing order.
    """
    n, budget, exponent = _check_configuration_model(n, budget, exponent)
    weights = np.arange(1, n + 1, dtype=float) ** (-1.0 / (exponent - 1.0))
    degrees = _round_to_total(weights / weights.sum() * 2 * budget, 2 * budget, n - 1)
    while not igraph.is_graphical(degrees.tolist(), loops=False, multiple=False):
        degrees[np.argmax(degrees)] -= 1
        degrees[np.argmin(degrees)] += 1
    return sorted(degrees.tolist(), reverse=True)


def _round_to_total(values: np.ndarray, total: int, high: int) -> np.ndarray:
    """Integers in ``[1, high]`` near ``values`` summing to ``total`` (largest remainders first)."""
    degrees = np.clip(np.floor(values).astype(np.int64), 1, high)
    order = np.argsort(-(values - np.floor(values)), kind="stable")
    step = 0
    while degrees.sum() != total:
        index = order[step % len(order)] if degrees.sum() < total else order[::-1][step % len(order)]
        change = 1 if degrees.sum() < total else -1
        if 1 <= degrees[index] + change <= high:
            degrees[index] += change
        step += 1
    return degrees


@random_state("igraph")
def configuration_model(n: int, budget: int, exponent: float, seed: int | None = None) -> igraph.Graph:
    """Simple graph with the power-law degree sequence ``powerlaw_degrees(n, budget, exponent)``.

    Exactly ``budget`` edges, every node the degree its sequence prescribes; wired by
    igraph's edge-switching sampler of simple graphs with a given degree sequence (a
    configuration model without loops or multi-edges). Low exponents (near 2) give hubs,
    high ones tend to a regular graph. Molloy & Reed (1995), Random Struct. Algorithms 6.
    """
    degrees = powerlaw_degrees(n, budget, exponent)
    graph = igraph.Graph.Degree_Sequence(degrees, method="edge_switching_simple")
    return _with_deviation(graph, budget)


def _check_configuration_model(n: object, budget: object, exponent: object) -> tuple[int, int, float]:
    n = _check_int("n", n, 2)
    n, budget = _check_budget(n, budget, low=(n + 1) // 2)  # every node needs an edge
    return n, budget, _check_float("exponent", exponent, 1.5, 100.0)


def block_sizes(n: int, blocks: int) -> list[int]:
    """``n`` nodes in ``blocks`` consecutive blocks as equal as possible (larger ones first)."""
    return [n // blocks + (i < n % blocks) for i in range(blocks)]


def block_edge_split(n: int, budget: int, blocks: int, ratio: float) -> tuple[int, int]:
    """(edges inside blocks, edges between blocks) of ``block_model_edges``: the budget split
    so that the density inside over the density between is ``ratio``, as near as whole
    edges and the number of pairs of each kind allow."""
    sizes = block_sizes(n, blocks)
    inside_pairs = sum(s * (s - 1) // 2 for s in sizes)
    between_pairs = n * (n - 1) // 2 - inside_pairs
    weighted = ratio * inside_pairs + between_pairs
    share = ratio * inside_pairs / weighted if weighted else 0.0
    inside = min(max(round(budget * share), budget - between_pairs), inside_pairs, budget)
    return inside, budget - inside


@random_state("numpy")
def block_model_edges(n: int, budget: int, blocks: int, ratio: float, seed: int | None = None) -> igraph.Graph:
    """Stochastic block model with exactly ``budget`` edges and a density ratio ``ratio``.

    ``blocks`` equal blocks of consecutive nodes (vertex attribute ``block``); the budget is
    split into edges inside and between blocks (``block_edge_split``) and each part drawn
    uniformly among its pairs, so the density inside is ``ratio`` times the density between
    (1: G(n, m); large: nearly disjoint communities, high modularity). The G(n, m) form of
    Holland, Laskey & Leinhardt (1983), Social Networks 5.
    """
    n, budget, blocks, ratio = _check_block_model_edges(n, budget, blocks, ratio)
    membership = np.repeat(np.arange(blocks), block_sizes(n, blocks))
    sources, targets = np.triu_indices(n, k=1)
    same = membership[sources] == membership[targets]
    inside, between = block_edge_split(n, budget, blocks, ratio)
    chosen = np.concatenate([seed.choice(np.flatnonzero(same), size=inside, replace=False),
                             seed.choice(np.flatnonzero(~same), size=between, replace=False)])
    graph = _from_edges(n, zip(sources[np.sort(chosen)], targets[np.sort(chosen)]))
    graph.vs["block"] = membership.tolist()
    return _with_deviation(graph, budget)


def _check_block_model_edges(n: object, budget: object, blocks: object, ratio: object) -> tuple[int, int, int, float]:
    n, budget = _check_budget(n, budget)
    return n, budget, _check_int("blocks", blocks, 1, n), _check_float("ratio", ratio, 0.0, 1e6)


def dense_units(budget: int) -> int:
    """Units ``h`` of the complete graph whose ``h (h - 1) / 2`` edges come closest to ``budget`` (ties: fewer)."""
    h = max(2, int((1 + math.sqrt(1 + 8 * budget)) / 2))
    return min((h, h + 1), key=lambda u: (abs(u * (u - 1) // 2 - budget), u))


@random_state("int")
def dense_matched(budget: int, seed: int | None = None) -> igraph.Graph:
    """The equal-parameter dense baseline: the complete graph on ``dense_units(budget)`` nodes.

    A sparse prior of ``budget`` edges on ``n`` nodes masks a recurrent layer to as many
    hidden-to-hidden weights as a fully connected layer of ``h`` units with
    ``h (h - 1) / 2 = budget`` (any orientation; no self-loops): fewer units, every unit
    joined. Where no ``h`` matches exactly the closest is drawn and ``edge_deviation`` says by
    how much it misses. Deterministic; ``seed`` is accepted and unused.
    """
    budget = _check_dense_matched(budget)
    return _with_deviation(igraph.Graph.Full(dense_units(budget)), budget)


def _check_dense_matched(budget: object) -> int:
    return _check_int("budget", budget, 1)


# ----------------------------------------------------------------------------- registry

GENERATORS: dict[str, Callable[..., igraph.Graph]] = {
    "watts_strogatz": watts_strogatz,
    "connected_watts_strogatz": connected_watts_strogatz,
    "newman_watts_strogatz": newman_watts_strogatz,
    "ws_flex": ws_flex,
    "ring_lattice": ring_lattice,
    "barabasi_albert": barabasi_albert,
    "powerlaw_cluster": powerlaw_cluster,
    "directed_scale_free": directed_scale_free,
    "erdos_renyi_gnp": erdos_renyi_gnp,
    "erdos_renyi_gnm": erdos_renyi_gnm,
    "random_regular": random_regular,
    "complete": complete,
    "stochastic_block": stochastic_block,
    "planted_partition": planted_partition,
    "random_geometric": random_geometric,
    "barabasi_albert_edges": barabasi_albert_edges,
    "powerlaw_cluster_edges": powerlaw_cluster_edges,
    "configuration_model": configuration_model,
    "block_model_edges": block_model_edges,
    "dense_matched": dense_matched,
}


PARAMETER_CHECKS: dict[str, Callable[..., object]] = {
    "watts_strogatz": _check_small_world,
    "connected_watts_strogatz": _check_connected_watts_strogatz,
    "newman_watts_strogatz": _check_small_world,
    "ws_flex": _check_ws_flex,
    "ring_lattice": _check_ring_lattice,
    "barabasi_albert": _check_barabasi_albert,
    "powerlaw_cluster": _check_powerlaw_cluster,
    "directed_scale_free": _check_directed_scale_free,
    "erdos_renyi_gnp": _check_erdos_renyi_gnp,
    "erdos_renyi_gnm": _check_erdos_renyi_gnm,
    "random_regular": _check_random_regular,
    "complete": _check_complete,
    "stochastic_block": _check_stochastic_block,
    "planted_partition": _check_planted_partition,
    "random_geometric": _check_random_geometric,
    "barabasi_albert_edges": _check_barabasi_albert_edges,
    "powerlaw_cluster_edges": _check_powerlaw_cluster_edges,
    "configuration_model": _check_configuration_model,
    "block_model_edges": _check_block_model_edges,
    "dense_matched": _check_dense_matched,
}
"""The parameter checks each generator runs before drawing, by generator name."""


def parameters(name: str) -> dict[str, inspect.Parameter]:
    """The parameters generator ``name`` takes besides ``seed``, in order (with defaults)."""
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose one of: {', '.join(sorted(GENERATORS))}")
    return {p.name: p for p in inspect.signature(GENERATORS[name]).parameters.values() if p.name != "seed"}


def _bound_generator(name: str, seed: int | None, params: dict[str, object]) -> Callable[..., igraph.Graph]:
    """The generator called ``name``, after checking that it takes exactly ``params``."""
    accepted = ", ".join(parameters(name))
    function = GENERATORS[name]
    signature = inspect.signature(function)
    try:
        signature.bind(seed=seed, **params)
    except TypeError as error:  # unknown or missing parameter
        raise ValueError(f"{name}: {error}; it takes: {accepted}") from error
    return function


def generate(name: str, seed: int | None = None, **params: object) -> igraph.Graph:
    """Draw one graph from the generator registered as ``name`` (see ``GENERATORS``)."""
    return _bound_generator(name, seed, params)(seed=seed, **params)


def check_parameters(name: str, **params: object) -> None:
    """Raise the ``ValueError`` that ``generate(name, **params)`` would, without drawing a graph
    (a sweep checks every parameter set of a spec before training)."""
    _bound_generator(name, None, params)
    PARAMETER_CHECKS[name](**params)


# ----------------------------------------------------------------------------- user graphs


def to_igraph(graph: GraphLike) -> igraph.Graph:
    """An ``igraph.Graph`` with nodes ``0..n-1`` (igraph input is returned unchanged).

    networkx nodes with integer labels are taken in increasing label order, other labels
    in the graph's node order, so node order (which the ``dag`` orientation uses) does not
    depend on the order edges were added. Labels and attributes are dropped."""
    if isinstance(graph, igraph.Graph):
        return graph
    if isinstance(graph, (nx.MultiGraph, nx.MultiDiGraph)):
        raise ValueError("graph must be a simple networkx Graph or DiGraph, got a multigraph")
    if not isinstance(graph, nx.Graph):
        raise ValueError(f"graph must be an igraph.Graph, networkx.Graph or networkx.DiGraph, got {type(graph).__name__}")
    nodes = list(graph)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in nodes):
        nodes.sort()
    index = {node: i for i, node in enumerate(nodes)}
    edges = [(index[u], index[v]) for u, v in graph.edges()]
    return igraph.Graph(n=len(index), edges=edges, directed=graph.is_directed())


def to_networkx(graph: GraphLike) -> nx.Graph:
    """A ``networkx.Graph`` (or ``DiGraph`` when directed) with nodes ``0..n-1`` (networkx
    input is returned unchanged)."""
    if isinstance(graph, nx.Graph):
        return graph
    g = to_igraph(graph)
    out = nx.DiGraph() if g.is_directed() else nx.Graph()
    out.add_nodes_from(range(g.vcount()))
    out.add_edges_from(g.get_edgelist())
    return out


def graph_fingerprint(graph: GraphLike) -> str:
    """A 16-hex-digit hash of a graph's content: node count, directedness and edge set.

    Equal graphs get equal fingerprints whatever generator, parameters or seed built them
    (a ring lattice is one graph for every seed), so results grouped by fingerprint never
    put one graph on both sides of a cross-validation split. Node labels count (isomorphic
    but relabelled graphs differ), multi-edges count once and an undirected edge ``(u, v)``
    equals ``(v, u)``.
    """
    g = to_igraph(graph)
    edges = np.asarray(g.get_edgelist(), dtype=np.int64).reshape(-1, 2)
    if not g.is_directed():
        edges = np.sort(edges, axis=1)
    edges = np.unique(edges, axis=0)
    digest = hashlib.sha256(f"{g.vcount()}:{int(g.is_directed())}:".encode())
    digest.update(np.ascontiguousarray(edges).tobytes())
    return digest.hexdigest()[:16]


def load_graph(path: str | Path, directed: bool = False) -> igraph.Graph:
    """Read a graph from GraphML (``.graphml``, node order as in the file) or a
    whitespace-separated edge list (any other suffix; ``directed`` applies to edge lists
    only; node order as ``to_igraph``: integer labels sorted, other labels in order of
    appearance)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no graph file at {path}")
    if path.suffix.lower() == ".graphml":
        return igraph.Graph.Read_GraphML(str(path))
    graph = nx.DiGraph() if directed else nx.Graph()
    graph.add_edges_from(_edge_pairs(path))
    return to_igraph(graph)


def _edge_pairs(path: Path) -> list[tuple[int, int] | tuple[str, str]]:
    """The edges of an edge-list file, one ``u v`` pair per line (``#`` starts a comment);
    integer labels as ints when every label is one. A line of another shape is a
    ``ValueError`` naming the file and the line, never a silently different graph."""
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"{path}: line {number}: expected an edge 'u v' (two node labels), got {line.strip()!r}")
        pairs.append((fields[0], fields[1]))
    if all(label.lstrip("-").isdigit() for pair in pairs for label in pair):
        return [(int(u), int(v)) for u, v in pairs]
    return pairs


def save_graph(graph: GraphLike, path: str | Path) -> Path:
    """Write a graph as GraphML (``.graphml``) or as an edge list (any other suffix).

    An edge list cannot hold isolated nodes (reading it back would renumber the rest and
    change every feature), so such a graph is refused there: save it as GraphML.
    """
    path = Path(path)
    g = to_igraph(graph)
    if path.suffix.lower() == ".graphml":
        g.write_graphml(str(path))
        return path
    isolated = [v for v, degree in enumerate(g.degree()) if degree == 0]
    if isolated:
        raise ValueError(
            f"{path}: an edge list cannot hold the {len(isolated)} isolated node(s) of this graph "
            f"(e.g. node {isolated[0]}); save it as .graphml"
        )
    g.write_edgelist(str(path))
    return path
