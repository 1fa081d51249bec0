"""Magnitude pruning schemes on digits, and the cost of a retraining round.

Accuracy: for each seed a masked MLP (64-100-10, ``rnn_models.mlp.MaskedMLP``) is trained
dense on scikit-learn's 8x8 digits, then one-shot pruned (every layer, readout included)
by each scheme of See, Luong & Manning (2016) and at random, at 50/80/90 %, and retrained
through ``fit``. Reported: test accuracy after pruning and after retraining (mean and 95 %
t-interval over seeds), and the paired gap class-blinded - class-uniform.

Cost: seconds per epoch of a retraining round (a mask set by ``prune`` on a trained model)
against a static masked model (the same mask given at construction), for the MLP and for a
masked GRU classifier (H=64, T=20, 90 % pruned), interleaved, medians of the repeats.

    python -m benchmarks.bench_pruning              # 20 seeds, about two minutes on 2 cores
    python -m benchmarks.bench_pruning --seeds 3    # quick look
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
from scipy import stats

from graphprior.digits import digits
from rnn_models.config import TrainConfig
from rnn_models.masked import make_rnn
from rnn_models.mlp import MaskedMLP
from rnn_models.pruning import SCHEMES, accuracy, iterative_pruning, model_masks, prune
from rnn_models.train import SequenceClassifier, fit

LEVELS = (0.5, 0.8, 0.9)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % t-interval."""
    if len(values) < 2:
        return float(np.mean(values)), float("nan")
    return float(np.mean(values)), float(stats.t.ppf(0.975, len(values) - 1) * stats.sem(values))


def accuracy_table(seeds: int, hidden: int, epochs: int, retrain: int) -> dict:
    """Per seed: dense accuracy; per (scheme, level): accuracy pruned and retrained."""
    train, test = digits()
    dense_config = TrainConfig(lr=3e-3, batch_size=64, epochs=epochs)
    results: dict = {"dense": [], "pruned": {}, "retrained": {}}
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = MaskedMLP((64, hidden, 10))
        fit(model, train, test, dense_config)
        results["dense"].append(accuracy(model, test))
        for level in LEVELS:
            for scheme in SCHEMES:
                pruned = copy.deepcopy(model)
                rounds = iterative_pruning(pruned, train, test, TrainConfig(lr=1e-3, batch_size=64, epochs=retrain,
                                                                            seed=seed),
                                           scheme, level, readout=True, seed=seed)
                results["pruned"].setdefault((scheme, level), []).append(rounds[0].pruned_acc)
                results["retrained"].setdefault((scheme, level), []).append(rounds[0].history.final["test_acc"])
    return results


def _sequences(n: int, steps: int = 20, features: int = 7):
    g = torch.Generator().manual_seed(0)

    class Data:
        task = "classify"

    data = Data()
    data.inputs = torch.randn(n, steps, features, generator=g)
    data.lengths = torch.full((n,), steps)
    data.targets = (data.inputs[:, :, 0].sum(1) > 0).float()
    return data


def epoch_seconds(model: torch.nn.Module, train, test, epochs: int) -> float:
    history = fit(model, train, test, TrainConfig(epochs=epochs, batch_size=64))
    return history.seconds / len(history.epochs)


def cost(repeats: int, epochs: int) -> dict[str, tuple[float, float]]:
    """Median seconds per epoch: retraining round vs static masked model, per model kind."""
    mlp_train, mlp_test = digits()
    seq = _sequences(512)

    def mlp_pair():
        torch.manual_seed(0)
        trained = MaskedMLP((64, 100, 10))
        fit(trained, mlp_train, mlp_test, TrainConfig(epochs=2, batch_size=64))
        prune(trained, "blinded", 0.9, readout=True)
        static = MaskedMLP((64, 100, 10))
        for mask, layer in zip(model_masks(trained).values(), [*static.hidden, static.readout]):
            layer.set_mask("weight", mask)
        return trained, static, mlp_train, mlp_test

    def gru_pair():
        torch.manual_seed(0)
        trained = SequenceClassifier(make_rnn("gru", 7, 64, batch_first=True))
        prune(trained, "blinded", 0.9)
        masks = model_masks(trained)
        static = SequenceClassifier(make_rnn("gru", 7, 64, batch_first=True, ih_mask=masks["rnn.weight_ih_l0"],
                                             hh_mask=masks["rnn.weight_hh_l0"]))
        return trained, static, seq, seq

    out = {}
    for kind, build in (("MLP 64-100-10, digits", mlp_pair), ("GRU H=64, T=20, 512 seqs", gru_pair)):
        rounds, statics = [], []
        for _ in range(repeats):
            trained, static, train, test = build()
            rounds.append(epoch_seconds(trained, train, test, epochs))
            statics.append(epoch_seconds(static, train, test, epochs))
        out[kind] = (statistics.median(statics), statistics.median(rounds))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=30, help="dense training epochs")
    parser.add_argument("--retrain", type=int, default=10, help="retraining epochs after pruning")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats per model kind")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: tiny models, shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    results = accuracy_table(args.seeds, args.hidden, args.epochs, args.retrain)
    dense, ci = mean_ci(results["dense"])
    print(f"digits, MLP 64-{args.hidden}-10, {args.seeds} seeds; dense test accuracy {dense:.4f} ± {ci:.4f}\n")
    print("| scheme | pruned | acc. after pruning | acc. after retraining |")
    print("|---|---|---|---|")
    for level in LEVELS:
        for scheme in SCHEMES:
            p, p_ci = mean_ci(results["pruned"][scheme, level])
            r, r_ci = mean_ci(results["retrained"][scheme, level])
            print(f"| {scheme} | {level:.0%} | {p:.4f} ± {p_ci:.4f} | {r:.4f} ± {r_ci:.4f} |")
    print("\n| pruned | blinded - uniform, after pruning | after retraining |")
    print("|---|---|---|")
    for level in LEVELS:
        gaps = [mean_ci([b - u for b, u in zip(results[stage]["blinded", level], results[stage]["uniform", level])])
                for stage in ("pruned", "retrained")]
        print(f"| {level:.0%} | {gaps[0][0]:+.4f} ± {gaps[0][1]:.4f} | {gaps[1][0]:+.4f} ± {gaps[1][1]:.4f} |")

    print("\n| model | static masked s/epoch | retraining round s/epoch | ratio |")
    print("|---|---|---|---|")
    for kind, (static, round_) in cost(args.repeats, 20).items():
        print(f"| {kind} | {static:.4f} | {round_:.4f} | {round_ / static:.3f} |")
    print(f"\n(total {time.perf_counter() - start:.0f} s, torch threads {args.threads})")


if __name__ == "__main__":
    main()
