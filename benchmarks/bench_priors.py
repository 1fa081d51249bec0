"""Many priors at once: random graphs -> boolean recurrent masks.

N Watts–Strogatz (k=6, p=0.1) and N Barabási–Albert (m=3) graphs of n=64 nodes. Graph
generation is timed on its own; the graph -> mask conversion is timed for the batched path
(``priors.recurrent_masks``, one vectorised scatter for the whole list) and, side by side,
for a per-graph loop over ``priors.recurrent_mask`` and for networkx's dense adjacency
(``nx.to_numpy_array``) as the baseline a user would write. Times are CPU seconds of this
process (``time.process_time``, one thread; best of ``--repeat``), which stay meaningful on
a busy shared machine.

    .venv/bin/python -m benchmarks.bench_priors            # N = 1000
    .venv/bin/python -m benchmarks.bench_priors --quick    # N = 200
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import networkx as nx
import numpy as np
import torch

from graphprior.generators import generate, to_networkx
from graphprior.priors import recurrent_mask, recurrent_masks

NODES = 64
MODELS = {"watts_strogatz": dict(n=NODES, k=6, p=0.1), "barabasi_albert": dict(n=NODES, m=3)}


def cpu_seconds(work: Callable[[], object], repeat: int) -> float:
    """Best CPU time of ``repeat`` runs of ``work``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best


def networkx_masks(graphs: list[nx.Graph]) -> torch.Tensor:
    """Baseline: dense symmetric adjacency of each graph with networkx, stacked."""
    return torch.from_numpy(np.stack([nx.to_numpy_array(g, nodelist=range(NODES), dtype=bool) for g in graphs]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="graphs per generator")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 graphs per generator")
    args = parser.parse_args()
    count = 200 if args.quick else args.count
    torch.set_num_threads(1)

    print(f"graph -> mask, {count} graphs of n={NODES} per generator, CPU seconds (best of {args.repeat}), "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| generator | generate graphs (s) | batched masks (s) | per-graph loop (s) | networkx adjacency (s) | batched vs loop | batched vs networkx |")
    print("|---|---|---|---|---|---|---|")
    for name, params in MODELS.items():
        graphs = []
        generation = cpu_seconds(lambda: graphs.__setitem__(slice(None), [generate(name, seed=s, **params) for s in range(count)]), 1)
        nx_graphs = [to_networkx(g) for g in graphs]
        batched = cpu_seconds(lambda: recurrent_masks(graphs, "symmetric"), args.repeat)
        loop = cpu_seconds(lambda: [recurrent_mask(g, "symmetric") for g in graphs], args.repeat)
        baseline = cpu_seconds(lambda: networkx_masks(nx_graphs), args.repeat)
        assert torch.equal(recurrent_masks(graphs), networkx_masks(nx_graphs))
        print(f"| {name} | {generation:.3f} | {batched:.3f} | {loop:.3f} | {baseline:.3f} | "
              f"{loop / batched:.1f}x | {baseline / batched:.1f}x |")

    graphs = [generate("watts_strogatz", seed=s, **MODELS["watts_strogatz"]) for s in range(count)]
    print(f"\norientations, watts_strogatz, {count} graphs (batched, CPU s):\n")
    print("| orientation | seconds |")
    print("|---|---|")
    for orientation in ("symmetric", "random", "dag"):
        print(f"| {orientation} | {cpu_seconds(lambda: recurrent_masks(graphs, orientation, seed=0), args.repeat):.3f} |")


if __name__ == "__main__":
    main()
