"""Ensemble training vs. training the same models one after another.

Models·epochs per second of K masked LSTMs (80 % sparse ``weight_hh``) on the embedded-Reber
next-symbol task (256 training and 256 test strings), trained by ``rnn_models.train.fit``
one after another ("solo", torch's fused masked modules, ``engine="separate"``) and as
one stack (``engine="batched"``: ``rnn_models.ensemble``), side by side in one run.
Every measurement runs in a forked child process, which also reports its peak resident
memory above the parent's (``ru_maxrss``). Times are the child's CPU time
(``time.process_time``, one torch thread), which stays more meaningful than wall time on a
shared, busy machine; the methods are measured in interleaved rounds (``--repeats``) and
the median of each is reported, so a burst of load from elsewhere hits all of them alike.
Solo time for large K is measured on the first ``--solo-cap`` models and scaled to K
(models are trained independently, so the time is linear in K). Each child first trains
once for one epoch, untimed, so one-off costs (oneDNN primitive creation per sequence
length, lazy initialisation) are left out.

Two tables: the headline (K = 32, H = 32 at several batch sizes) and the scaling grid
(K in {1, 4, 16, 64} x H in {16, 32, 64, 128} at ``--batch-size``; ``--quick``: a subset).

    .venv/bin/python -m benchmarks.bench_ensemble --quick    # a few minutes
    .venv/bin/python -m benchmarks.bench_ensemble            # the full grid
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from reber.tasks import next_symbol_data
from rnn_models.engines import choose_engine
from rnn_models.masked import make_rnn
from rnn_models.train import NextSymbolModel, TrainConfig, fit

DENSITY = 0.2  # 80 % of weight_hh masked


def build_models(count: int, hidden: int, vocabulary: int) -> list[NextSymbolModel]:
    """``count`` masked LSTM next-symbol models, model k from seed k (mask and weights)."""
    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        mask = torch.rand(hidden, hidden) < DENSITY
        rnn = make_rnn("lstm", vocabulary, hidden, batch_first=True, hh_mask=mask)
        models.append(NextSymbolModel(rnn, vocabulary))
    return models


def in_child(work: Callable[[], float]) -> tuple[float, float]:
    """Run ``work`` (returns CPU seconds) in a forked process; seconds and extra peak MiB."""
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()

    def target() -> None:
        seconds = work()
        child.send((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))

    process = context.Process(target=target)
    process.start()
    seconds, peak = parent.recv()
    process.join()
    return seconds, max(peak - base, 0) / 1024


METHODS = ("solo", "batched")


def measure(count: int, hidden: int, config: TrainConfig, data: tuple, solo_cap: int,
            repeats: int) -> dict[str, tuple[float, float]]:
    """Median CPU seconds and extra peak MiB of solo and ensemble training of ``count``
    models, the methods measured in ``repeats`` interleaved rounds."""
    train, test = data
    vocabulary = train.inputs.shape[-1]
    warm_up = replace(config, epochs=1)

    def solo() -> float:
        fit(build_models(1, hidden, vocabulary)[0], train, test, warm_up)
        models = build_models(min(count, solo_cap), hidden, vocabulary)
        start = time.process_time()
        for model in models:
            fit(model, train, test, config)
        return (time.process_time() - start) * count / len(models)

    def stacked() -> float:
        fit(build_models(count, hidden, vocabulary), train, test, warm_up, engine="batched")
        models = build_models(count, hidden, vocabulary)
        start = time.process_time()
        fit(models, train, test, config, engine="batched")
        return time.process_time() - start

    works = {"solo": solo, "batched": stacked}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in works}
    for _ in range(repeats):
        for name, work in works.items():
            samples[name].append(in_child(work))
    return {name: (statistics.median(s for s, _ in runs), max(m for _, m in runs)) for name, runs in samples.items()}


def row(count: int, hidden: int, batch_size: int, results: dict[str, tuple], epochs: int) -> str:
    """One markdown table row: rates, ratios to solo, the automatic choice, memory."""
    rate = {name: count * epochs / seconds for name, (seconds, _) in results.items()}
    cells = [str(count), str(hidden), str(batch_size), f"{rate['solo']:.1f}"]
    cells += [f"{rate['batched']:.1f}", f"{rate['batched'] / rate['solo']:.2f}x"]
    cells.append(choose_engine("stack", "cpu", num_models=count, hidden_size=hidden, batch_size=batch_size))
    cells.append(" / ".join(f"{results[n][1]:.0f}" for n in METHODS))
    return "| " + " | ".join(cells) + " |"


def table(sizes: list[tuple[int, int, int]], args: argparse.Namespace, data: tuple) -> None:
    """Measure and print one markdown table, a row as soon as it is measured."""
    print("| K | H | batch | solo models·epochs/s | batched | batched / solo | auto picks | peak MiB solo / batched |")
    print("|---|---|---|---|---|---|---|---|")
    for count, hidden, batch_size in sizes:
        config = TrainConfig(epochs=args.epochs, batch_size=batch_size)
        results = measure(count, hidden, config, data, args.solo_cap, args.repeats)
        print(row(count, hidden, batch_size, results, args.epochs), flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="headline and a 2 x 2 subset of the grid")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the grid (default 32)")
    parser.add_argument("--headline-batches", type=int, nargs="+", default=[16, 32, 128],
                        help="batch sizes of the K = 32, H = 32 headline (default 16 32 128)")
    parser.add_argument("--solo-cap", type=int, default=8, help="solo models timed per size (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per size (default 3)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = next_symbol_data("embedded", n_train=256, n_test=256, seed=0)
    print(f"LSTM, {1 - DENSITY:.0%} sparse weight_hh, embedded Reber next-symbol, 256 strings, "
          f"{args.epochs} epochs, torch {torch.__version__}, 1 thread, median CPU time of "
          f"{args.repeats} interleaved rounds\n")
    table([(32, 32, batch) for batch in args.headline_batches], args, data)
    grid = [(k, h) for h in (16, 64) for k in (4, 16)] if args.quick else [
        (k, h) for h in (16, 32, 64, 128) for k in (1, 4, 16, 64)]
    table([(k, h, args.batch_size) for k, h in grid], args, data)


if __name__ == "__main__":
    main()
