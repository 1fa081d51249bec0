"""Structural features of graphs (priors, trained masks, whole networks) as table rows.

``graph_features(graph)`` returns one dict per graph, ``feature_table(graphs)`` a pandas
DataFrame with one row per graph and the columns ``FEATURE_NAMES``. Everything is
computed with igraph and numpy: one Brandes pass of edge betweenness also yields node
betweenness and the mean path length, and the diameter is the largest eccentricity (no
second all-pairs search); above ``path_sample_threshold`` nodes eccentricity, closeness
and diameter use BFS from ``path_samples`` seeded random sources.

The first 23 columns (``STUDY_FEATURES``) are those of Stier, Darji & Granitzer (2021),
named and computed as in their published tables (checked against them, see
``tests/test_features.py``): all on the undirected simple graph, with networkx's
conventions - degree centrality deg/(n-1), closeness of the undirected graph
(Wasserman-Faust scaled when disconnected), betweenness normalised (nodes by
2/((n-1)(n-2)), edges by 2/(n(n-1))), ``density = E/(N(N-1))`` (half of networkx's),
``*_var`` the sample variance (ddof=1) and ``*_std`` its square root; ``layers``,
``source_nodes`` and ``sink_nodes`` of the DAG by node order (lower -> higher index; a
directed acyclic graph keeps its own edges), a layer being the longest path from a source.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

import igraph
import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse.linalg
from tqdm.auto import tqdm

from graphprior.generators import GraphLike, random_state, to_igraph, to_networkx
from graphprior.priors import dag_layers

__all__ = ["FEATURE_NAMES", "SMALL_WORLD_FEATURES", "STUDY_FEATURES", "feature_table", "graph_features"]


def _stats(name: str) -> tuple[str, str, str]:
    return (f"{name}_mean", f"{name}_var", f"{name}_std")


STUDY_FEATURES: tuple[str, ...] = (
    "layers",
    "nodes",
    "edges",
    "source_nodes",
    "sink_nodes",
    "diameter",
    "density",
    "average_shortest_path_length",
    *_stats("eccentricity"),
    *_stats("degree"),
    *_stats("closeness"),
    *_stats("nodes_betweenness"),
    *_stats("edge_betweenness"),
)
"""The study's 23 features, in the column order of its published ``structure/*.csv``."""

FEATURE_NAMES: tuple[str, ...] = STUDY_FEATURES + (
    # degree distribution of the undirected graph (raw degrees)
    "degree_min",
    "degree_max",
    "degree_skewness",
    "degree_kurtosis",
    "degree_entropy",
    "degree_gini",
    # clustering, mixing, connectivity, spectrum, communities
    "average_clustering",
    "transitivity",
    "degree_assortativity",
    "components",
    "largest_component_fraction",
    "spectral_radius",
    "algebraic_connectivity",
    "modularity",
    "communities",
    # the oriented graph: directed input as given, undirected input as its DAG by node order
    "in_degree_std",
    "in_degree_max",
    "out_degree_std",
    "out_degree_max",
    "reciprocity",
    "strong_components",
    "largest_strong_component_fraction",
    # the layered DAG
    "layer_width_mean",
    "layer_width_max",
    "skip_connections",
    "skip_edges",
)
"""Names ``graph_features`` returns by default, in table order."""

SMALL_WORLD_FEATURES: tuple[str, ...] = ("small_world_sigma",)
"""Added at the end when ``small_world=True``."""


@random_state("int")
def graph_features(
    graph: GraphLike,
    *,
    small_world: bool = False,
    small_world_references: int = 10,
    path_sample_threshold: int = 1000,
    path_samples: int = 256,
    seed: int = 0,
    prefix: str = "",
    study_only: bool = False,
) -> dict[str, float]:
    """Structural features of one graph (``igraph.Graph``, ``networkx.Graph``/``DiGraph``).

    ``small_world`` adds the small-world coefficient sigma (Humphries & Gurney 2008) against
    ``small_world_references`` seeded degree-preserving random graphs (slow, off by
    default). Graphs with more than ``path_sample_threshold`` nodes get eccentricity,
    closeness and diameter from ``path_samples`` random BFS sources (the mean path length
    stays exact). ``prefix`` is put before every name, e.g. to join the features of a prior and
    of its whole network (``priors.network_graph``) in one row. ``study_only`` computes
    just ``STUDY_FEATURES`` (about twice as fast). ``seed`` (None or an integer >= 0) seeds
    the sampled sources, community detection, the Fiedler solver and the random references.
    """
    if isinstance(path_sample_threshold, bool) or not isinstance(path_sample_threshold, int) or path_sample_threshold < 1:
        raise ValueError(f"path_sample_threshold must be an integer >= 1, got {path_sample_threshold!r}")
    if isinstance(path_samples, bool) or not isinstance(path_samples, int) or path_samples < 1:
        raise ValueError(f"path_samples must be an integer >= 1, got {path_samples!r}")
    g = to_igraph(graph)
    if g.vcount() == 0:
        raise ValueError("graph must have at least one node")
    skeleton = _skeleton(g)
    edges = np.asarray(skeleton.get_edgelist(), dtype=np.int64).reshape(-1, 2)
    row = _path_features(skeleton, edges, path_sample_threshold, path_samples, seed)
    row.update(_oriented_features(g, skeleton))
    if not study_only:
        row.update(_degree_features(skeleton))
        row.update(_cohesion_features(skeleton, seed))
        row.update(_spectral_features(skeleton, edges, path_sample_threshold, seed))
    if small_world:
        row["small_world_sigma"] = _small_world_sigma(skeleton, small_world_references, seed)
    return {prefix + name: float(row[name]) for name in _names(small_world, study_only)}


def _names(small_world: object, study_only: object) -> tuple[str, ...]:
    """Column names in table order for the chosen options."""
    return (STUDY_FEATURES if study_only else FEATURE_NAMES) + (SMALL_WORLD_FEATURES if small_world else ())


def feature_table(graphs: Iterable[GraphLike], *, progress: bool = False, **options: object) -> pd.DataFrame:
    """One row of ``graph_features`` per graph (options are passed on) as a DataFrame."""
    rows = [graph_features(g, **options) for g in tqdm(graphs, desc="features", disable=not progress)]
    prefix = str(options.get("prefix", ""))
    names = _names(options.get("small_world"), options.get("study_only"))
    return pd.DataFrame(rows, columns=[prefix + name for name in names])


# ----------------------------------------------------------------------------- helpers


def _skeleton(g: igraph.Graph) -> igraph.Graph:
    """The undirected simple graph (no direction, loops or multi-edges) the study measured."""
    if not g.is_directed() and g.is_simple():
        return g
    skeleton = g.as_undirected(mode="collapse") if g.is_directed() else g.copy()
    return skeleton.simplify()


def _summary(name: str, values: np.ndarray) -> dict[str, float]:
    """Mean, sample variance (ddof=1, as the study) and its square root."""
    mean, var = _mean_and_variance(values)
    return {f"{name}_mean": mean, f"{name}_var": var, f"{name}_std": var**0.5}


def _mean_and_variance(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample variance (NaN for fewer than two values), without np.var's overhead."""
    count = len(values)
    mean = float(values.sum()) / count if count else float("nan")
    var = float(((values - mean) ** 2).sum()) / (count - 1) if count > 1 else float("nan")
    return mean, var


def _path_features(
    u: igraph.Graph, edges: np.ndarray, threshold: int, samples: int, seed: int
) -> dict[str, float]:
    """Size, density, degree centrality, betweenness and path statistics with one Brandes pass.

    Edge betweenness (Brandes 2001) gives the rest: summed over all edges it is the sum of
    all pairwise distances (so the mean path length), and summed over the edges at a node it
    is twice the node's betweenness plus the number of nodes it reaches. Eccentricity and
    closeness come from BFS (from every node, or from a seeded sample above ``threshold``);
    the diameter is the largest eccentricity. Scales follow networkx (see module docstring).
    """
    n, e = u.vcount(), u.ecount()
    components = u.connected_components()
    reach = np.asarray(components.sizes(), dtype=float)[components.membership] - 1  # others each node reaches
    flow = np.asarray(u.edge_betweenness(directed=False), dtype=float) if e else np.zeros(0)
    through = (np.bincount(edges.ravel(), weights=np.repeat(flow, 2), minlength=n) - reach) / 2
    if n <= threshold:
        chosen = np.arange(n)
    else:
        chosen = np.sort(np.random.default_rng(seed).choice(n, size=min(samples, n), replace=False))
    eccentricity = np.asarray(u.eccentricity(vertices=chosen.tolist()), dtype=float)
    closeness = np.asarray(u.closeness(vertices=chosen.tolist()), dtype=float) * reach[chosen] / max(n - 1, 1)
    closeness[reach[chosen] == 0] = 0.0  # isolated nodes: igraph gives NaN, networkx 0
    pairs = reach.sum() / 2
    row = {
        "nodes": n,
        "edges": e,
        "density": e / (n * (n - 1)) if n > 1 else 0.0,
        "diameter": eccentricity.max(),
        "average_shortest_path_length": flow.sum() / pairs if pairs else 0.0,
    }
    row.update(_summary("eccentricity", eccentricity))
    row.update(_summary("degree", np.asarray(u.degree(), dtype=float) / max(n - 1, 1)))
    row.update(_summary("closeness", closeness))
    row.update(_summary("nodes_betweenness", through * (2.0 / ((n - 1) * (n - 2)) if n > 2 else 1.0)))
    if e:
        row.update(_summary("edge_betweenness", flow * (2.0 / (n * (n - 1)))))
    else:
        row.update(dict.fromkeys(_stats("edge_betweenness"), 0.0))
    return row


def _degree_features(u: igraph.Graph) -> dict[str, float]:
    """Shape of the degree distribution: extremes, skewness and excess kurtosis (biased
    moments as ``scipy.stats.skew``/``kurtosis``; 0 for a regular graph), Shannon entropy
    (nats) of the degree histogram, and Gini coefficient. Moments are taken with numpy
    directly: scipy's per-call overhead (~1 ms) would triple the time of a table row."""
    degree = np.sort(np.asarray(u.degree(), dtype=float))
    n = len(degree)
    centred = degree - degree.mean()
    m2, m3, m4 = (np.mean(centred**k) for k in (2, 3, 4))
    counts = np.unique(degree, return_counts=True)[1] / n
    ranks = np.arange(1, n + 1)
    return {
        "degree_min": degree[0],
        "degree_max": degree[-1],
        "degree_skewness": m3 / m2**1.5 if m2 > 0 else 0.0,
        "degree_kurtosis": m4 / m2**2 - 3.0 if m2 > 0 else 0.0,
        "degree_entropy": float(-np.sum(counts * np.log(counts))),
        "degree_gini": float(np.sum((2 * ranks - n - 1) * degree) / (n * degree.sum())) if degree.sum() else 0.0,
    }


@random_state("igraph")
def _cohesion_features(u: igraph.Graph, seed: int) -> dict[str, float]:
    """Clustering, assortativity, components and Louvain modularity (on igraph's generator, seeded)."""
    transitivity = u.transitivity_undirected()
    components = u.connected_components()
    partition = u.community_multilevel()
    return {
        "average_clustering": u.transitivity_avglocal_undirected(mode="zero"),
        "transitivity": 0.0 if np.isnan(transitivity) else transitivity,
        "degree_assortativity": u.assortativity_degree(directed=False),
        "components": len(components),
        "largest_component_fraction": max(components.sizes()) / u.vcount(),
        "modularity": partition.modularity if u.ecount() else 0.0,
        "communities": len(partition),
    }


def _spectral_features(u: igraph.Graph, edges: np.ndarray, threshold: int, seed: int) -> dict[str, float]:
    """Spectral radius of the adjacency matrix and algebraic connectivity (Fiedler value)."""
    n = u.vcount()
    if n == 1:
        return {"spectral_radius": 0.0, "algebraic_connectivity": 0.0}
    if n > threshold:
        adjacency = nx.to_scipy_sparse_array(to_networkx(u), dtype=float)
        start = np.ones(n)  # a fixed start vector: ARPACK's default one is random
        radius = scipy.sparse.linalg.eigsh(adjacency, k=1, which="LA", v0=start, return_eigenvectors=False)[0]
        fiedler = nx.algebraic_connectivity(to_networkx(u), method="tracemin_lu", seed=seed)
        return {"spectral_radius": float(radius), "algebraic_connectivity": float(fiedler)}
    adjacency = np.zeros((n, n))
    adjacency[edges[:, 0], edges[:, 1]] = adjacency[edges[:, 1], edges[:, 0]] = 1.0
    laplacian = np.diag(adjacency.sum(axis=1)) - adjacency
    spectra = np.linalg.eigvalsh(np.stack([adjacency, laplacian]))  # one LAPACK call for both
    return {"spectral_radius": float(spectra[0, -1]), "algebraic_connectivity": max(float(spectra[1, 1]), 0.0)}


def _oriented_features(g: igraph.Graph, u: igraph.Graph) -> dict[str, float]:
    """Directed and layered-DAG statistics of the oriented graph (see ``FEATURE_NAMES``)."""
    n = g.vcount()
    oriented = g.copy().simplify() if g.is_directed() else None
    layer, sources, targets = dag_layers(oriented if oriented is not None and oriented.is_dag() else u)
    dag_in, dag_out = np.bincount(targets, minlength=n), np.bincount(sources, minlength=n)
    if oriented is not None:
        in_degree, out_degree = np.asarray(oriented.indegree()), np.asarray(oriented.outdegree())
        strong = oriented.connected_components(mode="strong").sizes()
        reciprocity = oriented.reciprocity() if oriented.ecount() else 0.0
    else:  # the DAG by node order: no cycle, so every node is its own strong component
        in_degree, out_degree, strong, reciprocity = dag_in, dag_out, [1] * n, 0.0
    widths = np.bincount(layer)
    gap = layer[targets] - layer[sources]
    skips = set(zip(layer[sources][gap > 1].tolist(), layer[targets][gap > 1].tolist()))
    return {
        "layers": len(widths),
        "source_nodes": int(np.count_nonzero(dag_in == 0)),
        "sink_nodes": int(np.count_nonzero(dag_out == 0)),
        "in_degree_std": _mean_and_variance(in_degree)[1] ** 0.5,
        "in_degree_max": in_degree.max(),
        "out_degree_std": _mean_and_variance(out_degree)[1] ** 0.5,
        "out_degree_max": out_degree.max(),
        "reciprocity": reciprocity,
        "strong_components": len(strong),
        "largest_strong_component_fraction": max(strong) / n,
        "layer_width_mean": n / len(widths),
        "layer_width_max": widths.max(),
        "skip_connections": len(skips),
        "skip_edges": int((gap > 1).sum()),
    }


@random_state("igraph")
def _small_world_sigma(u: igraph.Graph, references: int, seed: int) -> float:
    """sigma = (C / C_r) / (L / L_r): average clustering C and mean path length L against
    degree-preserving random rewirings (Humphries & Gurney 2008; as networkx's ``sigma``,
    but rewired with igraph's degree-preserving swaps, seeded, connectivity not enforced)."""
    if isinstance(references, bool) or not isinstance(references, int) or references < 1:
        raise ValueError(f"small_world_references must be an integer >= 1, got {references!r}")
    clustering, length = u.transitivity_avglocal_undirected(mode="zero"), u.average_path_length()
    reference_c, reference_l = [], []
    for _ in range(references):
        random_graph = u.copy()
        random_graph.rewire(n=10 * u.ecount())
        reference_c.append(random_graph.transitivity_avglocal_undirected(mode="zero"))
        reference_l.append(random_graph.average_path_length())
    with np.errstate(divide="ignore", invalid="ignore"):
        return float((clustering / np.mean(reference_c)) / (length / np.mean(reference_l)))


def _study_summary(name: str, values: object) -> dict[str, float]:
    """Mean, sample variance and standard deviation with the standard library, as the study."""
    values = list(values)
    variance = statistics.variance(values)
    return {f"{name}_mean": statistics.fmean(values), f"{name}_var": variance, f"{name}_std": variance**0.5}


def networkx_study_features(graph: nx.Graph) -> dict[str, float]:
    """The study's 23 features of a connected undirected graph computed as the study did, with
    networkx (its conventions: DAG lower -> higher index, density E/(N(N-1)), normalised
    centralities, sample variance). Many times slower than ``graph_features``; kept as the
    independent reference those are tested against and benchmarks/bench_features.py times."""
    dag = nx.DiGraph()
    dag.add_nodes_from(graph)
    dag.add_edges_from((min(u, v), max(u, v)) for u, v in graph.edges())
    n = graph.number_of_nodes()
    row = {
        "layers": nx.dag_longest_path_length(dag) + 1,
        "nodes": n,
        "edges": graph.number_of_edges(),
        "source_nodes": sum(1 for _, d in dag.in_degree() if d == 0),
        "sink_nodes": sum(1 for _, d in dag.out_degree() if d == 0),
        "diameter": nx.diameter(graph),
        "density": graph.number_of_edges() / (n * (n - 1)),
        "average_shortest_path_length": nx.average_shortest_path_length(graph),
        **_study_summary("eccentricity", nx.eccentricity(graph).values()),
        **_study_summary("degree", nx.degree_centrality(graph).values()),
        **_study_summary("closeness", nx.closeness_centrality(graph).values()),
        **_study_summary("nodes_betweenness", nx.betweenness_centrality(graph).values()),
        **_study_summary("edge_betweenness", nx.edge_betweenness_centrality(graph).values()),
    }
    return {name: row[name] for name in STUDY_FEATURES}
