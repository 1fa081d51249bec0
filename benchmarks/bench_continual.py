"""Continual embedded Reber with no resets (Gers, Schmidhuber & Cummins 2000): which cells
and priors learn to reset themselves.

For each condition (LSTM without forget gate, LSTM, GRU, tanh RNN; dense, Watts–Strogatz
and Barabási–Albert recurrent masks of similar density), ``--seeds`` trials: a fresh
network of ``--hidden`` units trained by ``fit`` on 16 parallel unbroken streams
(truncated backpropagation through time over 50-symbol windows, the state carried from
window to window, never reset; ``graphprior.continual.stream_task``), Adam at ``--lr``,
``--epochs`` epochs, then run over one fresh 100,000-symbol stream without any reset
(``graphprior.continual.evaluate_stream``). Reported per condition: trials that process
the whole stream without an error (the paper's "solved"), median symbols and strings
before the first error, mean symbol accuracy and long-range (T/P) accuracy with a 95 %
bootstrap interval over trials.

``--reset strings`` adds the paper's comparison condition, "external reset": the state is
zeroed at every string start, in training and in the evaluation stream (the windows are
run in pieces cut there, so it costs more time per trial). ``--cells``, ``--priors`` and
``--reset`` take comma lists to run only some conditions. The "paper (qualitative)"
column is what Gers, Schmidhuber & Cummins (2000) state for the condition in their
abstract (their numeric table was not available to us: no numbers are compared).

    .venv/bin/python -m benchmarks.bench_continual                 # 10 seeds, no reset
    .venv/bin/python -m benchmarks.bench_continual --cells lstm_no_forget,lstm --priors dense --reset never,strings
    .venv/bin/python -m benchmarks.bench_continual --seeds 3 --quick
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from graphprior.continual import evaluate_stream, stream_task
from graphprior.generators import generate
from graphprior.priors import recurrent_mask
from rnn_models.masked import make_rnn, open_forget_gate
from rnn_models.train import NextSymbolModel, TrainConfig, fit

CELLS = ("lstm_no_forget", "lstm", "gru", "rnn_tanh")
PRIORS = ("dense", "watts_strogatz", "barabasi_albert")
RESETS = ("never", "strings")

PAPER = {
    ("lstm_no_forget", "never"): "fails (standard LSTM fails the continual task)",
    ("lstm", "never"): "solves (LSTM with forget gates easily solves it)",
    ("rnn_tanh", "never"): "fails (\"all algorithms fail\" the continual task)",
    ("lstm_no_forget", "strings"): "solves (standard LSTM with external reset: the non-continual task)",
}
"""What the paper's abstract states for a (cell, reset) condition; "-" where it says nothing."""


def choices(value: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A comma list of ``allowed`` names (argparse type)."""
    picked = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in picked if v not in allowed]
    if bad or not picked:
        raise argparse.ArgumentTypeError(f"{bad[0] if bad else value!r} is not one of {', '.join(allowed)}")
    return picked


def prior_mask(prior: str, hidden: int, seed: int) -> torch.Tensor | None:
    """The recurrent mask of a prior (None: dense): WS k = 4, p = 0.1; BA m = 2."""
    if prior == "dense":
        return None
    params = {"watts_strogatz": {"k": 4, "p": 0.1}, "barabasi_albert": {"m": 2}}[prior]
    return recurrent_mask(generate(prior, n=hidden, seed=seed, **params), orientation="symmetric")


def build(cell: str, prior: str, hidden: int, seed: int) -> NextSymbolModel:
    torch.manual_seed(seed)
    mask = prior_mask(prior, hidden, seed)
    rnn = make_rnn("lstm" if cell == "lstm_no_forget" else cell, 7, hidden, batch_first=True, hh_mask=mask)
    if cell == "lstm_no_forget":
        open_forget_gate(rnn)
    return NextSymbolModel(rnn, 7, stateful=True)


def interval(values: list[float], seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the mean."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(2000, len(values))).mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--symbols", type=int, default=100_000, help="evaluation stream length")
    parser.add_argument("--quick", action="store_true", help="LSTM with and without forget gate, dense only")
    parser.add_argument("--cells", type=lambda v: choices(v, CELLS), default=CELLS,
                        help=f"comma list of {', '.join(CELLS)}")
    parser.add_argument("--priors", type=lambda v: choices(v, PRIORS), default=PRIORS,
                        help=f"comma list of {', '.join(PRIORS)}")
    parser.add_argument("--reset", type=lambda v: choices(v, RESETS), default=RESETS[:1],
                        help="comma list: never (the continual task) and/or strings (external reset at string starts)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cells, priors = (CELLS[:2], PRIORS[:1]) if args.quick else (args.cells, args.priors)
    config = TrainConfig(epochs=args.epochs, lr=args.lr, clip=5.0)
    print(f"{args.seeds} trials per condition, H = {args.hidden}, {args.epochs} epochs of 16 streams x 1,000 "
          f"symbols (50-symbol windows), Adam {args.lr}; evaluation: one fresh {args.symbols:,}-symbol stream\n")
    print("| cell | prior | reset | density | solved | median symbols before error | median strings before error "
          "| symbol accuracy (95 % CI) | T/P accuracy (95 % CI) | s per trial (train + eval) | paper (qualitative) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for cell in cells:
        for reset in args.reset:
            for prior in priors:
                print(condition_row(cell, prior, reset, args, config), flush=True)


def condition_row(cell: str, prior: str, reset: str, args: argparse.Namespace, config: TrainConfig) -> str:
    """Train and evaluate ``args.seeds`` trials of one condition; its table row."""
    reports, train_seconds, eval_seconds, density = [], [], [], 1.0
    resets = reset == "strings"
    for seed in range(args.seeds):
        start = time.process_time()
        model = build(cell, prior, args.hidden, seed)
        masks = model.rnn.masks
        if "weight_hh_l0" in masks and prior != "dense":
            density = float(masks["weight_hh_l0"][: args.hidden].float().mean())
        train, test = stream_task(seed=seed, resets=resets)  # 16 streams x 20 windows of 50 symbols
        fit(model, train, test, config)
        trained = time.process_time()
        reports.append(evaluate_stream(model, symbols=args.symbols, seed=10_000 + seed, resets=resets))
        train_seconds.append(trained - start)
        eval_seconds.append(time.process_time() - trained)
    accuracy = [r["symbol_accuracy"] for r in reports]
    long_range = [r["long_range_accuracy"] for r in reports]
    lo, hi = interval(accuracy)
    lo_lr, hi_lr = interval(long_range)
    train_s, eval_s = statistics.fmean(train_seconds), statistics.fmean(eval_seconds)
    return (f"| {cell} | {prior} | {reset} | {density:.2f} | {sum(r['solved'] for r in reports):.0f} / {len(reports)} | "
            f"{statistics.median(r['symbols_before_error'] for r in reports):,.0f} | "
            f"{statistics.median(r['strings_before_error'] for r in reports):,.0f} | "
            f"{statistics.fmean(accuracy):.4f} ({lo:.4f}-{hi:.4f}) | "
            f"{statistics.fmean(long_range):.3f} ({lo_lr:.3f}-{hi_lr:.3f}) | "
            f"{train_s + eval_s:.1f} ({train_s:.1f} + {eval_s:.1f}) | {PAPER.get((cell, reset), '-')} |")

if __name__ == "__main__":
    main()
