"""Speed of the reber package's data path, each variant measured side by side in one run.

1. Length-window sampling: exact dynamic-programming sampling vs. rejection of
   unconstrained uniform-branching samples (same distribution).
2. Batching a classification epoch through an LSTM: length-bucketed batches with
   trimmed padding vs. random batches padded to the dataset's longest string.
3. Feeding batches: tensorized once (EncodedDataset) vs. encoding the strings of
   every batch again.

Run: ``.venv/bin/python -m benchmarks.bench_reber [--quick]``; prints a markdown table
of CPU seconds (one torch thread).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from reber.grammar import REBER
from reber.tasks import classification_data, classification_vocabulary, encode_classification


def _best_of(repeats: int, baseline: Callable[[], object], ours: Callable[[], object]) -> tuple[float, float]:
    """Least CPU time of each of two workloads over ``repeats`` interleaved runs.

    CPU time of this (single-threaded) process is less disturbed by other load on a
    shared machine than wall time; alternating the two spreads any remaining drift.
    """
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(repeats):
        for key, work in enumerate((baseline, ours)):
            start = time.process_time()
            work()
            times[key].append(time.process_time() - start)
    return min(times[0]), min(times[1])


def _rejection_sample(n: int, lo: int, hi: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    kept: list[str] = []
    while len(kept) < n:
        kept += [s for s in REBER.sample(4 * n, seed=rng) if lo <= len(s) <= hi][: n - len(kept)]
    return kept


def bench_sampling(n: int, repeats: int) -> list[tuple[str, float, float]]:
    rows = []
    for lo, hi in [(10, 14), (20, 24)]:
        reject, exact = _best_of(repeats, lambda: _rejection_sample(n, lo, hi, 0),
                                 lambda: REBER.sample(n, seed=0, min_length=lo, max_length=hi))
        rows.append((f"sample {n} strings, length {lo}-{hi}: rejection / exact DP", reject, exact))
    return rows


def _epoch(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    lstm, head = model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for inputs, lengths in batches:
        out, _ = lstm(inputs)
        last = out[torch.arange(len(lengths)), lengths - 1]
        loss = head(last).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def bench_bucketing(n: int, batch_size: int, repeats: int) -> list[tuple[str, float, float]]:
    train, _ = classification_data(n=n, seed=0, max_length=60)
    torch.manual_seed(0)
    model = torch.nn.ModuleList([torch.nn.LSTM(len(train.vocabulary), 32, batch_first=True), torch.nn.Linear(32, 1)])
    bucketed = [(b["inputs"], b["lengths"]) for b in train.loader(batch_size, seed=0)]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    padded = [(train.inputs[i], train.lengths[i]) for i in torch.split(order, batch_size)]
    steps_bucketed = sum(x.shape[0] * x.shape[1] for x, _ in bucketed)
    steps_padded = sum(x.shape[0] * x.shape[1] for x, _ in padded)
    t_padded, t_bucketed = _best_of(repeats, lambda: _epoch(model, padded), lambda: _epoch(model, bucketed))
    return [
        (f"LSTM-32 epoch, {len(train)} strings: random padded / bucketed batches", t_padded, t_bucketed),
        ("time steps computed: random padded / bucketed", float(steps_padded), float(steps_bucketed)),
    ]


def bench_encoding(n: int, batch_size: int, repeats: int) -> list[tuple[str, float, float]]:
    train, _ = classification_data(n=n, seed=0)
    vocabulary = classification_vocabulary()
    labels = train.targets.long().numpy()

    def per_batch() -> None:
        for start in range(0, len(train), batch_size):
            encode_classification(train.strings[start : start + batch_size], labels[start : start + batch_size], vocabulary)

    def once() -> None:
        for _ in train.loader(batch_size, seed=0):
            pass

    return [(f"one pass over {len(train)} strings: encode per batch / tensorized once",
             *_best_of(repeats, per_batch, once))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, repeats = (2_000, 2) if args.quick else (10_000, 3)
    rows = bench_sampling(n, repeats) + bench_bucketing(n, 64, repeats) + bench_encoding(n, 64, repeats)
    print("| measurement | baseline | ours | ratio (baseline / ours) |")
    print("|---|---:|---:|---:|")
    for name, baseline, ours in rows:
        unit = "" if name.startswith("time steps") else " s"
        fmt = "{:.0f}" if not unit else "{:.3f}"
        print(f"| {name} | {fmt.format(baseline)}{unit} | {fmt.format(ours)}{unit} | {baseline / ours:.2f}x |")


if __name__ == "__main__":
    main()
