"""Ensemble training vs. training the same models one after another.

Models·epochs per second of K masked LSTMs (80 % sparse ``weight_hh``) on the embedded-Reber
next-symbol task (256 training and 256 test strings, batch 128 unless ``--batch-size``), trained by
``rnn_models.train.fit`` one after another ("solo") and by
``rnn_models.ensemble.fit_ensemble`` with each forward strategy, side by side in one run.
Every measurement runs in a forked child process, which also reports its peak resident
memory above the parent's (``ru_maxrss``). Times are the child's CPU time
(``time.process_time``, one torch thread), which stays meaningful on a shared, busy machine
where wall time does not. Solo time for large K is measured on the first
``--solo-cap`` models and scaled to K (models are trained independently, so the time is
linear in K). Each child first trains once for one epoch, untimed, so one-off costs
(oneDNN primitive creation per sequence length, lazy initialisation) are left out.

    .venv/bin/python -m benchmarks.bench_ensemble            # K in {1,4,16,64}, H in {16..128}
    .venv/bin/python -m benchmarks.bench_ensemble --quick    # K in {4,32}, H = 32
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from reber.tasks import next_symbol_data
from rnn_models.ensemble import choose_strategy, fit_ensemble
from rnn_models.masked import make_rnn
from rnn_models.train import NextSymbolModel, TrainConfig, fit

DENSITY = 0.2  # 80 % of weight_hh masked
FUSED_MAX_UNITS = 2048  # beyond this the block-diagonal weight alone takes too long to time


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


def measure(count: int, hidden: int, config: TrainConfig, data: tuple, solo_cap: int) -> dict[str, tuple]:
    """Seconds and extra peak memory of solo and ensemble training of ``count`` models."""
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

    def ensemble(strategy: str) -> Callable[[], float]:
        def work() -> float:
            fit_ensemble(build_models(count, hidden, vocabulary), train, test, warm_up, strategy=strategy)
            models = build_models(count, hidden, vocabulary)
            start = time.process_time()
            fit_ensemble(models, train, test, config, strategy=strategy)
            return time.process_time() - start
        return work

    results = {"solo": in_child(solo), "batched": in_child(ensemble("batched"))}
    if count * hidden <= FUSED_MAX_UNITS:
        results["fused"] = in_child(ensemble("fused"))
    return results


def row(count: int, hidden: int, results: dict[str, tuple], epochs: int, batch_size: int) -> str:
    """One markdown table row: rates, ratios to solo, the automatic choice, memory."""
    rate = {name: count * epochs / seconds for name, (seconds, _) in results.items()}
    cells = [str(count), str(hidden), f"{rate['solo']:.2f}"]
    cells += [f"{rate[n]:.2f}" if n in rate else "skipped" for n in ("fused", "batched")]
    cells += [f"{rate[n] / rate['solo']:.2f}x" if n in rate else "-" for n in ("fused", "batched")]
    cells.append(choose_strategy(count, hidden, batch_size))
    cells.append(" / ".join(f"{results[n][1]:.0f}" if n in results else "-" for n in ("solo", "fused", "batched")))
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="K in {4, 32}, H = 32 only")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default 128, the paper preset's)")
    parser.add_argument("--solo-cap", type=int, default=8, help="solo models timed per size (default 8)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [(k, 32) for k in (4, 32)] if args.quick else [
        (k, h) for h in (16, 32, 64, 128) for k in (1, 4, 16, 64)]
    data = next_symbol_data("embedded", n_train=256, n_test=256, seed=0)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size)
    print(f"LSTM, {1 - DENSITY:.0%} sparse weight_hh, embedded Reber next-symbol, 256 strings, "
          f"batch {args.batch_size}, {args.epochs} epochs, torch {torch.__version__}, 1 thread, CPU time\n")
    print("| K | H | solo models·epochs/s | fused | batched | fused / solo | batched / solo | auto picks "
          "| peak MiB solo / fused / batched |")
    print("|---|---|---|---|---|---|---|---|---|")
    for count, hidden in sizes:
        print(row(count, hidden, measure(count, hidden, config, data, args.solo_cap), args.epochs, args.batch_size),
              flush=True)

if __name__ == "__main__":
    main()
