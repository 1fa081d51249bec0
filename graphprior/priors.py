"""Graphs -> weight masks of recurrent networks ("prior initialization"), and back.

Convention everywhere: ``mask[i, j]`` is True when unit ``j`` feeds unit ``i`` (an edge
``j -> i``), as in ``weight_hh[i, j]``. Random graphs from network science are mostly
undirected, a recurrent matrix is directed, so the orientation is an explicit choice:

* ``"symmetric"``: both directions of every edge;
* ``"random"``: one direction per edge, by a seeded coin;
* ``"dag"``: lower -> higher node index (a DAG, as in Stier, Darji & Granitzer 2021);
* ``"as_given"``: the edges of a directed graph (an undirected graph is refused).

For ``symmetric``, ``random`` and ``dag`` a directed graph is first read as undirected.
Self-loops (the diagonal) are switched on or off with ``self_loops`` (``None`` keeps the
graph's own loops).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import igraph
import networkx as nx
import numpy as np
import torch

from graphprior.generators import GraphLike, to_igraph
from rnn_models.layered import LayerConnection, LayeredStructure
from rnn_models.masked import GATES

ORIENTATIONS = ("symmetric", "random", "dag", "as_given")
RECURRENT_LAYOUTS = ("dense", "self", "none")

__all__ = [
    "ORIENTATIONS",
    "dag_layers",
    "gate_count",
    "gate_mask",
    "input_mask",
    "layered_structure",
    "mask_to_graph",
    "network_graph",
    "prior_init_",
    "recurrent_mask",
    "recurrent_masks",
    "spectral_radius",
]


# ----------------------------------------------------------------------------- graph -> mask


def recurrent_mask(
    graph: GraphLike, orientation: str = "symmetric", self_loops: bool | None = False, seed: int | None = None
) -> torch.Tensor:
    """Boolean ``(H, H)`` hidden-to-hidden mask of a graph of ``H`` nodes (``mask[i, j]``
    True <=> edge ``j -> i``); see the module docstring for ``orientation``."""
    return recurrent_masks([graph], orientation, self_loops, seed)[0]


def recurrent_masks(
    graphs: Sequence[GraphLike],
    orientation: str = "symmetric",
    self_loops: bool | None = False,
    seed: int | None = None,
) -> torch.Tensor:
    """Masks of many graphs with the same node count at once: boolean ``(B, H, H)``.

    All edges of the batch are oriented and scattered in one vectorised step, so 1000
    priors of 64 nodes take milliseconds. ``random`` orientation draws one seeded coin per
    edge over the whole batch, so a batch is reproducible for the same ``seed``.
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {', '.join(ORIENTATIONS)}, got {orientation!r}")
    if self_loops not in (True, False, None):
        raise ValueError(f"self_loops must be True, False or None (keep the graph's), got {self_loops!r}")
    converted = [to_igraph(g) for g in graphs]
    if not converted:
        raise ValueError("graphs must contain at least one graph")
    n = converted[0].vcount()
    if any(g.vcount() != n for g in converted):
        raise ValueError(f"graphs must all have the same number of nodes, got {sorted({g.vcount() for g in converted})}")
    if orientation == "as_given" and not all(g.is_directed() for g in converted):
        raise ValueError("orientation 'as_given' needs directed graphs; choose 'symmetric', 'random' or 'dag' for undirected ones")
    batch, sources, targets = _batched_edges(converted)
    loops = sources == targets
    loop_batch, loop_nodes = batch[loops], sources[loops]
    batch, sources, targets = batch[~loops], sources[~loops], targets[~loops]
    if orientation != "as_given":
        merge = any(g.is_directed() or not g.is_simple() for g in converted)
        batch, sources, targets = _undirected_pairs(batch, sources, targets, n, merge)
        sources, targets = _orient(sources, targets, orientation, np.random.default_rng(seed))
    masks = np.zeros((len(converted), n, n), dtype=bool)
    masks[batch, targets, sources] = True
    if orientation == "symmetric":
        masks[batch, sources, targets] = True
    if self_loops is None:
        masks[loop_batch, loop_nodes, loop_nodes] = True
    else:
        masks[:, np.arange(n), np.arange(n)] = self_loops
    return torch.from_numpy(masks)


def _batched_edges(graphs: Sequence[igraph.Graph]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Graph index, source and target of every edge of a list of graphs."""
    lists = [g.get_edgelist() for g in graphs]
    flat = itertools.chain.from_iterable(itertools.chain.from_iterable(lists))
    edges = np.fromiter(flat, dtype=np.int64).reshape(-1, 2)
    batch = np.repeat(np.arange(len(lists)), [len(e) for e in lists])
    return batch, edges[:, 0], edges[:, 1]


def _undirected_pairs(
    batch: np.ndarray, sources: np.ndarray, targets: np.ndarray, n: int, dedupe: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges as (lower, higher) node pairs; with ``dedupe``, reciprocal or repeated edges
    become one pair (so a random orientation cannot give both directions)."""
    low, high = np.minimum(sources, targets), np.maximum(sources, targets)
    if dedupe:
        keys = np.unique((batch * n + low) * n + high)
        batch, low, high = keys // (n * n), keys // n % n, keys % n
    return batch, low, high


def _orient(low: np.ndarray, high: np.ndarray, orientation: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sources and targets of undirected pairs under an orientation rule."""
    if orientation == "random":
        flip = rng.random(len(low)) < 0.5
        return np.where(flip, high, low), np.where(flip, low, high)
    return low, high  # dag: lower -> higher; symmetric adds the reverse afterwards


# ----------------------------------------------------------------------------- gate layout and inputs


def gate_count(gates: int | str) -> int:
    """Number of gate blocks: an integer >= 1 or a cell name of ``rnn_models.masked.GATES``."""
    if isinstance(gates, str):
        if gates not in GATES:
            raise ValueError(f"gates must be an integer >= 1 or one of {', '.join(GATES)}, got {gates!r}")
        return GATES[gates]
    if isinstance(gates, bool) or not isinstance(gates, int) or gates < 1:
        raise ValueError(f"gates must be an integer >= 1 or one of {', '.join(GATES)}, got {gates!r}")
    return gates


def gate_mask(masks: torch.Tensor | Sequence[torch.Tensor], gates: int | str) -> torch.Tensor:
    """The ``(G*H, H)`` mask of ``weight_hh`` with its G gate blocks stacked (LSTM i,f,g,o;
    GRU r,z,n): one ``(H, H)`` mask tiled block by block (``mask.repeat(G, 1)``, never row
    by row), or a sequence of G masks, one independent graph per gate."""
    count = gate_count(gates)
    blocks = [masks] * count if isinstance(masks, torch.Tensor) else list(masks)
    if len(blocks) != count:
        raise ValueError(f"masks must be one (H, H) mask or {count} of them (one per gate), got {len(blocks)}")
    shape = tuple(blocks[0].shape)
    for block in blocks:
        if block.dtype != torch.bool or block.dim() != 2 or block.shape[0] != block.shape[1] or tuple(block.shape) != shape:
            raise ValueError(f"masks must be square bool tensors of one shape, got {block.dtype} {tuple(block.shape)}")
    return torch.cat(blocks, dim=0)


def input_mask(
    input_size: int,
    hidden_size: int,
    nodes: str | float | Sequence[int] = "all",
    *,
    recurrent: torch.Tensor | None = None,
    gates: int | str = 1,
    seed: int | None = None,
) -> torch.Tensor:
    """Boolean ``(G*H, I)`` input-to-hidden mask: every input wired to the chosen hidden nodes.

    ``nodes`` is ``"all"`` (dense, the default), ``"sources"`` (units without incoming edge
    in the ``recurrent`` mask, e.g. the sources of a ``dag`` prior), a fraction in (0, 1]
    of the units (at least one, drawn with ``seed``), or explicit unit indices.
    """
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size must be an integer >= 1, got {input_size!r}")
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
        raise ValueError(f"hidden_size must be an integer >= 1, got {hidden_size!r}")
    wired = torch.zeros(hidden_size, dtype=torch.bool)
    wired[_wired_units(hidden_size, nodes, recurrent, seed)] = True
    return wired[:, None].expand(hidden_size, input_size).repeat(gate_count(gates), 1)


def _wired_units(hidden_size: int, nodes: object, recurrent: torch.Tensor | None, seed: int | None) -> np.ndarray:
    if isinstance(nodes, str):
        if nodes == "all":
            return np.arange(hidden_size)
        if nodes != "sources":
            raise ValueError(f"nodes must be 'all', 'sources', a fraction in (0, 1] or unit indices, got {nodes!r}")
        if recurrent is None or tuple(recurrent.shape) != (hidden_size, hidden_size):
            raise ValueError(f"nodes='sources' needs recurrent, the ({hidden_size}, {hidden_size}) recurrent mask")
        incoming = recurrent.clone().fill_diagonal_(False).any(dim=1)
        return np.flatnonzero(~incoming.numpy())
    if isinstance(nodes, float):
        if not 0.0 < nodes <= 1.0:
            raise ValueError(f"nodes as a fraction must be in (0, 1], got {nodes}")
        count = max(1, round(nodes * hidden_size))
        return np.random.default_rng(seed).choice(hidden_size, size=count, replace=False)
    units = np.asarray(list(nodes), dtype=np.int64)
    if units.size == 0 or units.min() < 0 or units.max() >= hidden_size:
        raise ValueError(f"nodes must be a non-empty list of unit indices in [0, {hidden_size}), got {list(units)}")
    return units


# ----------------------------------------------------------------------------- layered DAG (the study)


def dag_layers(graph: GraphLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The DAG of a graph and each node's layer (longest path from a source).

    Undirected graphs are oriented lower -> higher node index (the study's rule); directed
    graphs must be acyclic and keep their edges. Returns ``(layer, sources, targets)``:
    the layer of every node and the DAG's edges (self-loops and reciprocal pairs merged).
    """
    g = to_igraph(graph)
    n = g.vcount()
    edges = np.asarray(g.get_edgelist(), dtype=np.int64).reshape(-1, 2)
    edges = edges[edges[:, 0] != edges[:, 1]]
    if g.is_directed():
        if not g.is_dag():
            raise ValueError("graph is directed with a cycle; a layered structure needs a DAG (or an undirected graph)")
        rank = np.empty(n, dtype=np.int64)
        rank[g.topological_sorting()] = np.arange(n)
        sources, targets = edges[:, 0], edges[:, 1]
    else:
        rank = np.arange(n)
        sources, targets = np.minimum(edges[:, 0], edges[:, 1]), np.maximum(edges[:, 0], edges[:, 1])
    if g.is_directed() or not g.is_simple():  # merge reciprocal and multiple edges
        keys = np.unique(sources * n + targets)
        sources, targets = keys // n, keys % n
    order = np.argsort(rank[targets], kind="stable")
    layer = [0] * n
    for s, t in zip(sources[order].tolist(), targets[order].tolist()):
        if layer[s] >= layer[t]:
            layer[t] = layer[s] + 1
    return np.asarray(layer, dtype=np.int64), sources, targets


def layered_structure(graph: GraphLike, recurrent: str | None = None) -> LayeredStructure:
    """The study's layered recurrent architecture of a graph as ``LayeredStructure``.

    DAG by node order (see ``dag_layers``); one recurrent layer per DAG layer, its units
    the layer's nodes in index order; a masked connection for every pair of layers joined
    by an edge: ``target == source + 1`` is the main path, larger gaps are skip
    connections. ``recurrent`` masks each layer's hidden-to-hidden weights: ``None`` leaves
    them dense and unmasked (the study), ``"dense"`` gives explicit all-True masks,
    ``"self"`` keeps only each unit's own recurrence, ``"none"`` removes them all.
    Stier, Darji & Granitzer (2021), "Experiments on Properties of Hidden Structures of
    Sparse Neural Networks", LOD.
    """
    if recurrent is not None and recurrent not in RECURRENT_LAYOUTS:
        raise ValueError(f"recurrent must be None or one of {', '.join(RECURRENT_LAYOUTS)}, got {recurrent!r}")
    layer, sources, targets = dag_layers(graph)
    widths = np.bincount(layer)
    position = np.empty_like(layer)
    for depth in range(len(widths)):
        members = np.flatnonzero(layer == depth)
        position[members] = np.arange(len(members))
    connections = []
    for s_layer, t_layer in sorted(set(zip(layer[sources].tolist(), layer[targets].tolist()))):
        chosen = (layer[sources] == s_layer) & (layer[targets] == t_layer)
        mask = torch.zeros(int(widths[t_layer]), int(widths[s_layer]), dtype=torch.bool)
        mask[position[targets[chosen]], position[sources[chosen]]] = True
        connections.append(LayerConnection(s_layer, t_layer, mask))
    return LayeredStructure(tuple(widths.tolist()), tuple(connections), _layer_recurrent_masks(widths, recurrent))


def _layer_recurrent_masks(widths: np.ndarray, recurrent: str | None) -> tuple[torch.Tensor, ...] | None:
    if recurrent is None:
        return None
    make = {
        "dense": lambda w: torch.ones(w, w, dtype=torch.bool),
        "self": lambda w: torch.eye(w, dtype=torch.bool),
        "none": lambda w: torch.zeros(w, w, dtype=torch.bool),
    }[recurrent]
    return tuple(make(int(w)) for w in widths)


# ----------------------------------------------------------------------------- initialisation


def spectral_radius(matrix: torch.Tensor) -> float:
    """Largest absolute eigenvalue of a square matrix (computed in float64)."""
    return float(torch.linalg.eigvals(matrix.detach().double()).abs().max())


def prior_init_(
    weight: torch.Tensor,
    mask: torch.Tensor,
    *,
    gain: float = 1.0,
    radius: float | None = None,
    nilpotent: str = "raise",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Initialise ``weight`` (``(G*H, H)``, in place, like ``torch.nn.init``) from a prior mask.

    Each live weight of unit i is drawn from N(0, gain² / d_i), d_i the unit's in-degree in
    the mask (LeCun-style fan-in scaling per unit, so sparse units are not starved), and
    masked weights are zero. With ``radius``, each gate block is then scaled to that
    spectral radius (echo-state style, Jaeger 2001). A block whose mask has no directed
    cycle (a DAG prior) is nilpotent, radius 0, and cannot be scaled: ``nilpotent="raise"``
    raises ValueError, ``"skip"`` leaves the block fan-in scaled.
    ``mask`` is ``(H, H)`` (tiled over gates) or ``(G*H, H)``.
    """
    if nilpotent not in ("raise", "skip"):
        raise ValueError(f"nilpotent must be 'raise' or 'skip', got {nilpotent!r}")
    if radius is not None and not (isinstance(radius, (int, float)) and radius > 0):
        raise ValueError(f"radius must be a positive number or None, got {radius!r}")
    if not (isinstance(gain, (int, float)) and gain > 0):
        raise ValueError(f"gain must be a positive number, got {gain!r}")
    if weight.dim() != 2 or weight.shape[1] == 0 or weight.shape[0] % weight.shape[1]:
        raise ValueError(f"weight must have shape (G*H, H), got {tuple(weight.shape)}")
    hidden = weight.shape[1]
    full = gate_mask(mask, weight.shape[0] // hidden) if tuple(mask.shape) == (hidden, hidden) else mask
    if tuple(full.shape) != tuple(weight.shape) or full.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape ({hidden}, {hidden}) or {tuple(weight.shape)}")
    if radius is not None and nilpotent == "raise" and any(_nilpotent(m) for m in full.split(hidden)):
        raise ValueError(
            "mask has no directed cycle (e.g. a DAG prior), so the masked matrix is nilpotent with "
            "spectral radius 0 and cannot be scaled; pass radius=None or nilpotent='skip'"
        )
    with torch.no_grad():
        fan_in = full.sum(dim=1, keepdim=True).clamp(min=1).to(weight.dtype)
        weight.normal_(generator=generator).mul_(gain / fan_in.sqrt()).mul_(full)
        if radius is not None:
            for block, block_mask in zip(weight.split(hidden), full.split(hidden)):
                _scale_block(block, block_mask, radius)
    return weight


def _nilpotent(block_mask: torch.Tensor) -> bool:
    """True when a square mask has no directed cycle (self-loops count): every matrix
    with this pattern is nilpotent, its spectral radius exactly 0."""
    return mask_to_graph(block_mask, backend="igraph").is_dag()


def _scale_block(block: torch.Tensor, block_mask: torch.Tensor, radius: float) -> None:
    """Scale one square block in place to spectral radius ``radius`` (skip a nilpotent one)."""
    if not _nilpotent(block_mask):
        block.mul_(radius / spectral_radius(block))


# ----------------------------------------------------------------------------- mask -> graph


def mask_to_graph(mask: torch.Tensor | np.ndarray, backend: str = "networkx", directed: bool = True) -> GraphLike:
    """The graph of a mask or weight matrix: edge ``j -> i`` wherever ``mask[i, j]`` is non-zero.

    Accepts ``(H, H)`` masks, trained weights (their non-zero pattern) and ``(G*H, H)`` gate
    stacks (an edge where any gate block has one). ``directed=False`` joins ``i`` and ``j``
    when either direction is present. ``backend`` is ``"networkx"`` or ``"igraph"``.
    """
    if backend not in ("networkx", "igraph"):
        raise ValueError(f"backend must be 'networkx' or 'igraph', got {backend!r}")
    pattern = (mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)) != 0
    if pattern.ndim != 2 or pattern.shape[0] % max(pattern.shape[1], 1) or pattern.shape[1] == 0:
        raise ValueError(f"mask must have shape (H, H) or (G*H, H), got {pattern.shape}")
    hidden = pattern.shape[1]
    pattern = pattern.reshape(-1, hidden, hidden).any(axis=0)
    targets, sources = np.nonzero(pattern)
    if not directed:
        keep = sources <= targets
        sources, targets = np.where(keep, sources, targets), np.where(keep, targets, sources)
        edges = np.unique(np.stack([sources, targets], axis=1), axis=0)
    else:
        edges = np.stack([sources, targets], axis=1)
    if backend == "igraph":
        return igraph.Graph(n=hidden, edges=edges.tolist(), directed=directed)
    graph = nx.DiGraph() if directed else nx.Graph()
    graph.add_nodes_from(range(hidden))
    graph.add_edges_from(edges.tolist())
    return graph


def network_graph(
    recurrent: torch.Tensor, inputs: torch.Tensor | int, outputs: torch.Tensor | int = 1
) -> igraph.Graph:
    """The whole network as one directed graph: inputs -> hidden units -> outputs.

    Nodes ``0..I-1`` are inputs, then the ``H`` hidden units (edges of the ``recurrent``
    mask), then the outputs; vertex attribute ``role`` says which. ``inputs`` is an
    input mask ``(H, I)`` or ``(G*H, I)`` (any gate wires it) or a count for dense wiring;
    ``outputs`` an output mask ``(O, H)`` or a count for a dense readout.
    """
    hidden = recurrent.shape[0]
    if tuple(recurrent.shape) != (hidden, hidden):
        raise ValueError(f"recurrent must be a square (H, H) mask, got {tuple(recurrent.shape)}")
    wired_in = _dense_or_mask("inputs", inputs, rows=hidden, by_rows=True)
    wired_out = _dense_or_mask("outputs", outputs, rows=hidden, by_rows=False)
    n_in, n_out = wired_in.shape[1], wired_out.shape[0]
    in_t, in_s = np.nonzero(wired_in)
    rec_t, rec_s = np.nonzero(recurrent.cpu().numpy())
    out_t, out_s = np.nonzero(wired_out)
    sources = np.concatenate([in_s, rec_s + n_in, out_s + n_in])
    targets = np.concatenate([in_t + n_in, rec_t + n_in, out_t + n_in + hidden])
    graph = igraph.Graph(n=n_in + hidden + n_out, edges=np.stack([sources, targets], 1).tolist(), directed=True)
    graph.vs["role"] = ["input"] * n_in + ["hidden"] * hidden + ["output"] * n_out
    return graph


def _dense_or_mask(name: str, value: torch.Tensor | int, rows: int, by_rows: bool) -> np.ndarray:
    """A boolean wiring matrix from a mask or a count (dense); gate stacks are merged."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"{name} must be a mask or a count >= 1, got {value}")
        return np.ones((rows, value) if by_rows else (value, rows), dtype=bool)
    array = value.cpu().numpy() != 0
    if by_rows:
        if array.ndim != 2 or array.shape[0] % rows:
            raise ValueError(f"{name} mask must have shape (H, I) or (G*H, I) with H = {rows}, got {array.shape}")
        return array.reshape(-1, rows, array.shape[1]).any(axis=0)
    if array.ndim != 2 or array.shape[1] != rows:
        raise ValueError(f"{name} mask must have shape (O, {rows}), got {array.shape}")
    return array
