"""Sparsity during learning on embedded-Reber next-symbol prediction: dense, a static random
mask, SET, RigL, DNW and early-frozen RigL at equal density, and what they cost.

For each seed and sparsity (80 %, 90 % of the recurrent and input weights, one mask shared
by the gates, uniform per matrix) a masked LSTM (H=64) is trained through ``fit`` with the
algorithm's hook (``rnn_models.dynamic``). Reported: final test accuracy (fit's
``test_acc``: steps where every allowed next symbol ranks above every other) and the share
of test strings solved at every step (``reber.metrics.hs_success``; the long-range step of
the embedded grammar decides it), wall and CPU seconds of
training (mean and 95 % t-interval over seeds), and the mean dense-gradient entries each
algorithm used (counted by the hooks); then each method's time against static sparse training
(the median of the per-seed ratios).

    python -m benchmarks.bench_dynamic              # 5 seeds, a few minutes on 2 cores
    python -m benchmarks.bench_dynamic --seeds 10 --epochs 30
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.bench_pruning import mean_ci
from reber.metrics import hs_success
from reber.tasks import next_symbol_data
from rnn_models.config import TrainConfig
from rnn_models.dynamic import DNW, RigL, SET, DynamicSparsity, Schedule
from rnn_models.masked import make_rnn
from rnn_models.train import NextSymbolModel, fit

LEVELS = (0.8, 0.9)
METHODS = ("static", "SET", "RigL", "DNW", "RigL frozen")


def hook(method: str, density: float, schedule: Schedule, freeze: int, seed: int) -> DynamicSparsity:
    """The hook of ``method`` at ``density`` (``"static"``: a random mask that never changes)."""
    if method == "static":
        return DynamicSparsity(density, seed=seed)
    if method == "SET":
        return SET(density, schedule, seed=seed)
    if method == "RigL":
        return RigL(density, schedule, seed=seed)
    if method == "DNW":
        return DNW(density, seed=seed)
    return RigL(density, schedule, freeze_epoch=freeze, seed=seed)


def run(method: str, density: float | None, seed: int, data: tuple, config: TrainConfig, hidden: int,
        freeze: int) -> dict[str, float]:
    """Train one model; its accuracy, wall and CPU seconds and dense-gradient entries."""
    train, test = data
    vocab = train.inputs.shape[-1]
    torch.manual_seed(seed)
    model = NextSymbolModel(make_rnn("lstm", vocab, hidden, batch_first=True), vocab)
    steps = config.epochs * -(-train.inputs.shape[0] // config.batch_size)
    schedule = Schedule(update_every=max(1, steps // 40), drop_fraction=0.3, end_step=max(2, int(0.75 * steps)))
    hooks = [] if density is None else [hook(method, density, schedule, freeze, seed)]
    wall, cpu = time.perf_counter(), time.process_time()
    history = fit(model, train, test, config, metrics={"hs_success": hs_success}, hooks=hooks)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"acc": history.final["test_acc"], "hs": history.final["hs_success"], "wall": wall, "cpu": cpu,
            "dense_grad": float(hooks[0].dense_gradient_entries) if hooks else 0.0,
            "frozen": float(hooks[0].frozen_epoch or 0) if hooks else 0.0}


def measure(seeds: int, epochs: int, hidden: int, n_train: int, freeze: int) -> dict:
    """Results per (method, sparsity) and seed, methods interleaved within each seed."""
    data = next_symbol_data("embedded", n_train=n_train, n_test=256, seed=0)
    results: dict = {}
    run("dense", None, 0, data, TrainConfig(epochs=1), hidden, freeze)  # warm-up: the first run pays oneDNN's setup
    for seed in range(seeds):
        config = TrainConfig(lr=1e-2, batch_size=16, epochs=epochs, seed=seed)
        results.setdefault(("dense", 0.0), []).append(run("dense", None, seed, data, config, hidden, freeze))
        for level in LEVELS:
            for method in METHODS:
                results.setdefault((method, level), []).append(
                    run(method, 1.0 - level, seed, data, config, hidden, freeze))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=1024)
    parser.add_argument("--freeze", type=int, default=2, help="epoch after which frozen RigL fixes its mask")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = measure(args.seeds, args.epochs, args.hidden, args.n_train, args.freeze)
    print(f"embedded Reber next symbol, LSTM H={args.hidden}, {args.n_train} training strings, {args.epochs} epochs, "
          f"{args.seeds} seeds, {args.threads} thread(s); mean ± 95 % t-interval\n")
    print("| method | sparsity | test accuracy | strings solved | wall s | CPU s | dense-gradient entries |")
    print("|---|---|---|---|---|---|---|")
    for (method, level), rows in results.items():
        acc, hs, wall, cpu = (mean_ci([r[key] for r in rows]) for key in ("acc", "hs", "wall", "cpu"))
        dense = statistics.mean(r["dense_grad"] for r in rows)
        print(f"| {method} | {level:.0%} | {acc[0]:.3f} ± {acc[1]:.3f} | {hs[0]:.3f} ± {hs[1]:.3f} | "
              f"{wall[0]:.2f} ± {wall[1]:.2f} | {cpu[0]:.2f} ± {cpu[1]:.2f} | {dense:.3g} |")
    print("\n| method | sparsity | wall time / static sparse (median of per-seed ratios) |")
    print("|---|---|---|")
    for level in LEVELS:
        static = [r["wall"] for r in results["static", level]]
        for method in METHODS[1:]:
            ratios = [r["wall"] / s for r, s in zip(results[method, level], static)]
            print(f"| {method} | {level:.0%} | {statistics.median(ratios):.3f} |")


if __name__ == "__main__":
    main()
