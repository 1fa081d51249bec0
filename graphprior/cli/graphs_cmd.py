"""``graphprior generate`` and ``graphprior features``: random graphs to files, files to tables."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from graphprior.cli.errors import writing
from graphprior.generators import (
    GENERATORS,
    check_parameters,
    generate as generate_graph,
    load_graph,
    parameters,
    save_graph,
)
from graphprior.table import check_table_path, write_table

MAX_NODES = 10_000_000
MAX_EDGES = 50_000_000
"""The largest graph ``generate`` draws: igraph holds ~40 bytes an edge and the file takes
~60 more, so the limit is a few GB of memory and disk (larger sizes ended in MemoryError)."""


def _pairs(n: float) -> float:
    return n * (n - 1) / 2


# generator -> (expected edges from its parameters, the options that set them); directed
# scale-free graphs add an edge per step and a node on a share alpha + gamma of the steps
_EXPECTED_EDGES: dict[str, tuple[Callable[..., float], str]] = {
    "watts_strogatz": (lambda n, k, **_: n * k / 2, "--n, --k"),
    "connected_watts_strogatz": (lambda n, k, **_: n * k / 2, "--n, --k"),
    "newman_watts_strogatz": (lambda n, k, p, **_: n * k / 2 * (1 + p), "--n, --k, --p"),
    "ws_flex": (lambda n, k, **_: n * k / 2, "--n, --k"),
    "ring_lattice": (lambda n, k, **_: n * k / 2, "--n, --k"),
    "barabasi_albert": (lambda n, m, **_: n * m, "--n, --m"),
    "powerlaw_cluster": (lambda n, m, **_: n * m, "--n, --m"),
    "directed_scale_free": (lambda n, alpha=0.41, gamma=0.05, **_: n / max(alpha + gamma, 1e-9),
                            "--n, --param alpha/gamma"),
    "erdos_renyi_gnp": (lambda n, p, **_: p * _pairs(n), "--n, --p"),
    "erdos_renyi_gnm": (lambda m, **_: m, "--m"),
    "random_regular": (lambda n, d, **_: n * d / 2, "--n, --param d"),
    "complete": (lambda n, **_: _pairs(n), "--n"),
    "stochastic_block": (lambda sizes, p, **_: sum(p[i][j] * (_pairs(a) if i == j else a * b / 2)
                                                   for i, a in enumerate(sizes) for j, b in enumerate(sizes)),
                         "--param sizes/p"),
    "planted_partition": (lambda groups, size, p_in, p_out, **_: groups * p_in * _pairs(size)
                          + p_out * _pairs(groups) * size * size, "--param groups/size/p_in/p_out"),
    "random_geometric": (lambda n, radius, **_: _pairs(n) * min(1.0, 3.1416 * radius * radius), "--n, --param radius"),
    **dict.fromkeys(("barabasi_albert_edges", "powerlaw_cluster_edges", "configuration_model", "block_model_edges",
                     "dense_matched"), (lambda budget, **_: budget, "--param budget")),
}


def _expected_nodes(params: dict[str, Any]) -> tuple[float, str]:
    """Nodes a generator draws, and the option that sets them."""
    if "sizes" in params:
        return float(sum(params["sizes"])), "--param sizes"
    if "groups" in params:
        return float(params["groups"] * params["size"]), "--param groups/size"
    if "n" not in params:  # dense_matched: the units its edge budget asks for
        from graphprior.generators import dense_units

        return float(dense_units(params["budget"])), "--param budget"
    return float(params["n"]), "--n"


def check_size(name: str, params: dict[str, Any]) -> None:
    """A usage error naming the options when the graph asked for exceeds ``MAX_NODES`` nodes or
    ``MAX_EDGES`` expected edges (checked before drawing: the parameters are valid already)."""
    nodes, node_option = _expected_nodes(params)
    if nodes > MAX_NODES:
        raise click.BadParameter(f"{name} would draw {nodes:,.0f} nodes; the limit is {MAX_NODES:,}",
                                 param_hint=node_option)
    edges_of, edge_options = _EXPECTED_EDGES[name]
    edges = edges_of(**params)
    if edges > MAX_EDGES:
        raise click.BadParameter(f"{name} would draw about {edges:,.0f} edges; the limit is {MAX_EDGES:,} "
                                 "(fewer nodes or a sparser graph)", param_hint=edge_options)


def _parse_params(pairs: tuple[str, ...]) -> dict[str, object]:
    """``key=value`` pairs; values are read as JSON (numbers, lists, true/false) or kept as text."""
    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--param")
        try:
            params[key] = json.loads(text)
        except json.JSONDecodeError:
            params[key] = text
    return params


def _numbered(path: Path, index: int, count: int) -> Path:
    return path if count == 1 else path.with_name(f"{path.stem}_{index:04d}{path.suffix}")


def _generators_epilog() -> str:
    """The generators and the parameters each takes (click keeps the \\b paragraph as is)."""
    lines = [f"  {name}({', '.join(parameters(name))})" for name in GENERATORS]
    return ("Generators and their parameters (those without an option above: --param KEY=VALUE):\n\n\b\n"
            + "\n".join(lines)
            + f"\n\nGraphs are limited to {MAX_NODES:,} nodes and {MAX_EDGES:,} expected edges.")


@click.command(epilog=_generators_epilog())
@click.argument("name", type=click.Choice(sorted(GENERATORS)), metavar="GENERATOR")
@click.option("--n", type=int, help="Number of nodes.")
@click.option("--k", type=float, help="Neighbours per node (Watts–Strogatz family; mean degree for ws_flex).")
@click.option("--m", type=int, help="Edges per new node (Barabási–Albert, Holme–Kim) or edge count (G(n, m)).")
@click.option("--p", type=float, help="Rewiring / edge / triangle probability.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Any other generator parameter (JSON value), repeatable.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed; graph i of --count uses seed + i.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True, help="Number of graphs; files get a _NNNN suffix.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="GraphML (.graphml) or edge-list file.")
def generate(name: str, n: int | None, k: float | None, m: int | None, p: float | None, params: tuple[str, ...], seed: int, count: int, output: Path) -> None:
    """Draw a random graph from GENERATOR and write it to a file.

    Example: graphprior generate watts_strogatz --n 64 --k 6 --p 0.1 --seed 0 -o prior.graphml
    """
    options = {key: value for key, value in (("n", n), ("k", k), ("m", m), ("p", p)) if value is not None}
    if "k" in options and float(options["k"]).is_integer() and name != "ws_flex":
        options["k"] = int(options["k"])
    options.update(_parse_params(params))
    try:
        check_parameters(name, **options)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    check_size(name, options)
    with writing(output):
        output.parent.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        try:
            graph = generate_graph(name, seed=seed + index, **options)
        except (ValueError, RuntimeError) as error:
            raise click.UsageError(str(error)) from None
        with writing(_numbered(output, index, count)):
            try:
                path = save_graph(graph, _numbered(output, index, count))
            except ValueError as error:  # e.g. isolated nodes, which an edge list cannot hold
                raise click.BadParameter(str(error), param_hint="-o/--output") from None
        degrees = graph.degree()
        click.echo(
            f"{name} (seed {seed + index}): {graph.vcount()} nodes, {graph.ecount()} edges, "
            f"mean degree {sum(degrees) / max(len(degrees), 1):.2f}, "
            f"{'connected' if graph.is_connected() else 'disconnected'} -> {path}"
        )


@click.command()
@click.argument("graphs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Table: .csv, .parquet or .pq.")
@click.option("--directed", is_flag=True, help="Read edge-list files as directed graphs.")
@click.option("--small-world", is_flag=True, help="Add the small-world coefficient sigma (slow).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of community detection and sampling.")
def features(graphs: tuple[Path, ...], output: Path, directed: bool, small_world: bool, seed: int) -> None:
    """Compute structural features of graph files (GraphML or edge lists) into one table.

    Example: graphprior features graphs/*.graphml -o features.csv
    """
    try:
        check_table_path(output)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="-o") from None
    with writing(output):  # a folder that cannot be made fails now, not after the features
        output.parent.mkdir(parents=True, exist_ok=True)
    from graphprior.features import feature_table  # torch and scipy: only when features are computed

    table = feature_table([_read(path, directed) for path in graphs], progress=True, small_world=small_world, seed=seed)
    table.insert(0, "graph", [str(path) for path in graphs])
    with writing(output):
        write_table(table, output)
    click.echo(f"{len(table)} graphs x {table.shape[1] - 1} features -> {output}")


def _read(path: Path, directed: bool) -> Any:
    """A graph file, or a usage error naming the file that could not be read as a graph."""
    try:
        graph = load_graph(path, directed=directed)
    except Exception as error:  # igraph and networkx raise several kinds for a broken file
        raise click.BadParameter(f"{path}: not a readable graph ({type(error).__name__}: {error})",
                                 param_hint="GRAPHS") from None
    if graph.vcount() == 0:
        raise click.BadParameter(f"{path}: the graph has no nodes", param_hint="GRAPHS")
    return graph
