"""Structural feature tables: graphprior (igraph) vs the study's features with networkx.

Graphs: half Watts–Strogatz (k=6, p=0.1), half Barabási–Albert (m=3), n=64. Measured side by
side in one run: the full ``feature_table`` (all ``FEATURE_NAMES``) for N graphs, and the
study's 23 features computed with networkx as the study did (``networkx_study_features``)
for the first ``--nx-count`` graphs, scaled to N (the work is the same for every graph).
Our table is measured twice: all features (a superset of networkx's 23) and
``study_only=True`` (the same 23 features, equal work). Times are CPU seconds of this process
(``time.process_time``, one thread), which stay meaningful on a busy shared machine.

    .venv/bin/python -m benchmarks.bench_features            # N = 1000, networkx on 100
    .venv/bin/python -m benchmarks.bench_features --quick    # N = 200, networkx on 20
"""

from __future__ import annotations

import argparse
import os
import time

from graphprior.features import feature_table, networkx_study_features
from graphprior.generators import generate, to_networkx

NODES = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="graphs in the table")
    parser.add_argument("--nx-count", type=int, default=100, help="graphs measured with networkx (scaled to --count)")
    parser.add_argument("--quick", action="store_true", help="200 graphs, networkx on 20")
    args = parser.parse_args()
    count, nx_count = (200, 20) if args.quick else (args.count, args.nx_count)

    graphs = [
        generate("connected_watts_strogatz", n=NODES, k=6, p=0.1, seed=s) if s % 2 else generate("barabasi_albert", n=NODES, m=3, seed=s)
        for s in range(count)
    ]
    nx_graphs = [to_networkx(g) for g in graphs[:nx_count]]
    feature_table(graphs[:10])  # warm-up

    start = time.process_time()
    table = feature_table(graphs)
    ours = time.process_time() - start
    start = time.process_time()
    study = feature_table(graphs, study_only=True)
    ours_study = time.process_time() - start
    start = time.process_time()
    reference = [networkx_study_features(g) for g in nx_graphs]
    networkx_seconds = (time.process_time() - start) * count / nx_count
    for row, expected in zip(study.to_dict("records"), reference):  # same numbers, not only faster
        assert all(abs(row[k] - expected[k]) <= 1e-9 * max(1.0, abs(expected[k])) for k in STUDY_FEATURES)

    print(f"{count} graphs of n={NODES} (half WS k=6 p=0.1, half BA m=3); CPU seconds, one thread; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| what | features | seconds | ms per graph | speed-up |")
    print("|---|---|---|---|---|")
    print(f"| graphprior feature_table, all features (igraph) | {table.shape[1]} | {ours:.2f} | {1000 * ours / count:.2f} | "
          f"{networkx_seconds / ours:.0f}x |")
    print(f"| graphprior feature_table, study_only=True (igraph) | {study.shape[1]} | {ours_study:.2f} | "
          f"{1000 * ours_study / count:.2f} | {networkx_seconds / ours_study:.0f}x |")
    print(f"| networkx, the study's features (measured on {nx_count}, scaled) | {len(STUDY_FEATURES)} | "
          f"{networkx_seconds:.2f} | {1000 * networkx_seconds / count:.2f} | 1x |")


if __name__ == "__main__":
    main()
