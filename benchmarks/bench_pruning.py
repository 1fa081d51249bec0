"""Magnitude pruning schemes on digits (and MNIST), structure alone on Reber, and the cost of a retraining round.

Accuracy: for each seed a masked MLP (64-100-10, ``rnn_models.mlp.MaskedMLP``) is trained
dense on scikit-learn's 8x8 digits, then one-shot pruned (every layer, readout included)
by each scheme of See, Luong & Manning (2016) and at random, at 50/80/90 %, and retrained
through ``fit``. Reported: test accuracy after pruning and after retraining (mean and 95 %
t-interval over seeds), and the paired gap class-blinded - class-uniform.

Cost: seconds per epoch of a retraining round (a mask set by ``prune`` on a trained model)
against a static masked model (the same mask given at construction), for the MLP and for a
masked GRU classifier (H=64, T=20, 90 % pruned), interleaved, medians of the repeats.

Structure alone (``--parts reber``): on embedded-Reber next-symbol prediction (a small
masked LSTM), per seed a dense network is trained (weights kept at initialisation and at
epoch k), its hidden-to-hidden weights pruned class-blinded to the density of a
Watts-Strogatz prior and retrained; then at that one density: the pruned mask rewound to
initialisation and to epoch k, re-initialised, and a random mask of the same per-matrix
density, each trained again; and the WS prior mask trained from the same initialisation,
re-initialised, and replaced by a random mask. Reported per arm: test accuracy and the area
under its robustness curve (further hidden-to-hidden pruning without retraining), mean and
95 % t-interval over seeds.

MNIST (``--idx DIR``, ``--parts mnist``): the study's 784-100-10 setting with the schemes of
the digits table, read from the four IDX files in DIR (``graphprior.digits.mnist``).

    python -m benchmarks.bench_pruning --parts digits cost    # 20 seeds, about two minutes on 2 cores
    nice -n 5 python -m benchmarks.bench_pruning --parts reber --seeds 8
    python -m benchmarks.bench_pruning --parts mnist --idx ~/mnist --seeds 5 --epochs 10 --retrain 5
    python -m benchmarks.bench_pruning --seeds 3              # quick look at digits and cost
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from graphprior.intervals import t_interval

from graphprior.digits import digits, mnist
from rnn_models.config import TrainConfig
from rnn_models.masked import make_rnn
from rnn_models.mlp import MaskedMLP
from rnn_models.pruning import (
    SCHEMES,
    KeepWeights,
    accuracy,
    iterative_pruning,
    model_masks,
    prune,
    random_masks,
    reinit,
    rewind,
    robustness_curve,
)
from rnn_models.train import NextSymbolModel, SequenceClassifier, fit

LEVELS = (0.5, 0.8, 0.9)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % t-interval."""
    return t_interval(values)


def accuracy_table(train, test, seeds: int, hidden: int, epochs: int, retrain: int) -> dict:
    """Per seed: dense accuracy of an MLP (inputs-``hidden``-10) trained on ``train``; per
    (scheme, level): accuracy pruned and retrained."""
    inputs = train.inputs.shape[-1]
    dense_config = TrainConfig(lr=3e-3, batch_size=64, epochs=epochs)
    results: dict = {"dense": [], "pruned": {}, "retrained": {}}
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = MaskedMLP((inputs, hidden, 10))
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


def print_schemes(title: str, results: dict, seeds: int) -> None:
    """The scheme table and the blinded - uniform gap of ``accuracy_table``'s results."""
    dense, ci = mean_ci(results["dense"])
    print(f"{title}, {seeds} seeds; dense test accuracy {dense:.4f} ± {ci:.4f}\n")
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
    print()


# ---------------------------------------------------------------------------------------
# structure alone on Reber
# ---------------------------------------------------------------------------------------

ARMS = ("dense", "pruned + retrained", "pruned mask, rewound to init", "pruned mask, rewound to epoch k",
        "pruned mask, re-initialised", "pruned density, random mask", "WS prior mask", "WS prior, re-initialised",
        "WS prior density, random mask")


@dataclass(frozen=True)
class ReberSetting:
    """The structure-alone comparison's task and schedule (``--parts reber``)."""

    hidden: int = 16
    ws_k: int = 2
    epochs: int = 8
    rewind_epoch: int = 2
    retrain: int = 4
    strings: int = 512
    lr: float = 1e-2


def _reber_model(setting: ReberSetting, vocabulary: int, hh_mask: torch.Tensor | None = None) -> torch.nn.Module:
    return NextSymbolModel(make_rnn("lstm", vocabulary, setting.hidden, batch_first=True, hh_mask=hh_mask), vocabulary)


def ws_mask(setting: ReberSetting, seed: int) -> torch.Tensor:
    """The hidden-to-hidden mask of a Watts-Strogatz prior (n = hidden, k = ws_k, p = 0.5)."""
    from graphprior.generators import watts_strogatz
    from graphprior.priors import recurrent_mask

    return recurrent_mask(watts_strogatz(setting.hidden, setting.ws_k, 0.5, seed=seed))


def _arm_score(model: torch.nn.Module, test) -> tuple[float, float]:
    curve = robustness_curve(model, test, weights="hh")
    return curve.accuracy[0], curve.auc


def structure_seed(setting: ReberSetting, seed: int, train, test) -> dict[str, tuple[float, float]]:
    """One seed of the structure-alone comparison: (test accuracy, robustness AUC) per arm."""
    vocabulary = train.inputs.shape[-1]
    config = TrainConfig(lr=setting.lr, batch_size=32, epochs=setting.epochs, clip=5.0, seed=seed, bucket=True)
    prior = ws_mask(setting, seed)
    torch.manual_seed(seed)
    dense = _reber_model(setting, vocabulary)
    keep = KeepWeights(epochs=(0, setting.rewind_epoch))
    fit(dense, train, test, config, hooks=[keep])
    pruned = copy.deepcopy(dense)
    amount = 1.0 - float(prior.float().mean())  # the prior's hidden-to-hidden density
    iterative_pruning(pruned, train, test, dataclasses.replace(config, epochs=setting.retrain), "blinded", amount,
                      weights="hh", seed=seed)
    dense_support = model_masks(dense)
    torch.manual_seed(seed)
    ws = _reber_model(setting, vocabulary, hh_mask=prior)  # the same initial draw as the dense network
    ws_support = model_masks(ws)

    def fresh(offset: int) -> torch.nn.Module:
        torch.manual_seed(10_000 * (offset + 1) + seed)
        return _reber_model(setting, vocabulary)

    arms = {"dense": dense, "pruned + retrained": pruned}
    late = copy.deepcopy(pruned)
    rewind(late, keep.weights[setting.rewind_epoch])
    fit(late, train, test, dataclasses.replace(config, epochs=setting.epochs - setting.rewind_epoch))
    arms["pruned mask, rewound to epoch k"] = late
    stack = {}
    stack["pruned mask, rewound to init"] = copy.deepcopy(pruned)
    rewind(stack["pruned mask, rewound to init"], keep.weights[0])
    stack["pruned mask, re-initialised"] = copy.deepcopy(pruned)
    reinit(stack["pruned mask, re-initialised"], fresh(0))
    stack["pruned density, random mask"] = copy.deepcopy(pruned)
    random_masks(stack["pruned density, random mask"], dense_support, seed=seed, weights="hh")
    rewind(stack["pruned density, random mask"], keep.weights[0])
    stack["WS prior mask"] = ws
    stack["WS prior, re-initialised"] = copy.deepcopy(ws)
    reinit(stack["WS prior, re-initialised"], fresh(1))
    stack["WS prior density, random mask"] = copy.deepcopy(ws)
    random_masks(stack["WS prior density, random mask"], {k: torch.ones_like(v) for k, v in ws_support.items()},
                 seed=seed + 1, weights="hh")
    fit(list(stack.values()), train, test, config)
    arms.update(stack)
    return {arm: _arm_score(arms[arm], test) for arm in ARMS}


def structure_table(setting: ReberSetting, seeds: int) -> dict[str, list[tuple[float, float]]]:
    """Per arm, per seed: (test accuracy, robustness AUC) on embedded-Reber next-symbol strings."""
    from reber.tasks import next_symbol_data

    train, test = next_symbol_data("embedded", n_train=setting.strings, n_test=setting.strings, seed=0)
    results: dict[str, list[tuple[float, float]]] = {arm: [] for arm in ARMS}
    for seed in range(seeds):
        for arm, score in structure_seed(setting, seed, train, test).items():
            results[arm].append(score)
    return results


def print_structure(setting: ReberSetting, results: dict[str, list[tuple[float, float]]]) -> None:
    seeds = len(results["dense"])
    density = setting.ws_k / setting.hidden
    print(f"embedded Reber next-symbol, LSTM H={setting.hidden}, {setting.strings} train / {setting.strings} test "
          f"strings, {setting.epochs} epochs (rewind epoch k = {setting.rewind_epoch}, {setting.retrain} retraining "
          f"epochs), hidden-to-hidden density of WS(k={setting.ws_k}) ~ {density:.3f}, {seeds} seeds\n")
    print("| arm | test accuracy | robustness AUC |")
    print("|---|---|---|")
    for arm in ARMS:
        acc, acc_ci = mean_ci([a for a, _ in results[arm]])
        auc, auc_ci = mean_ci([u for _, u in results[arm]])
        print(f"| {arm} | {acc:.4f} ± {acc_ci:.4f} | {auc:.4f} ± {auc_ci:.4f} |")
    print("\n| paired difference (accuracy) | mean ± 95 % CI |")
    print("|---|---|")
    for a, b in (("pruned mask, rewound to init", "pruned density, random mask"),
                 ("pruned mask, re-initialised", "pruned density, random mask"),
                 ("WS prior mask", "WS prior density, random mask"),
                 ("pruned mask, rewound to init", "WS prior mask")):
        gap, ci = mean_ci([x[0] - y[0] for x, y in zip(results[a], results[b])])
        print(f"| {a} - {b} | {gap:+.4f} ± {ci:.4f} |")
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=("digits", "cost", "reber", "mnist"), default=None,
                        help="what to run (default: digits and cost, plus mnist with --idx)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=30, help="dense training epochs (MLP)")
    parser.add_argument("--retrain", type=int, default=10, help="retraining epochs after pruning (MLP)")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats per model kind")
    parser.add_argument("--idx", type=Path, default=None, help="folder of the four MNIST IDX files (784-100-10)")
    parser.add_argument("--reber-epochs", type=int, default=ReberSetting.epochs)
    parser.add_argument("--reber-strings", type=int, default=ReberSetting.strings)
    parser.add_argument("--reber-hidden", type=int, default=ReberSetting.hidden)
    parser.add_argument("--reber-k", type=int, default=ReberSetting.ws_k, help="Watts-Strogatz degree of the prior")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: tiny models, shared CPU)")
    args = parser.parse_args(argv)
    parts = args.parts or ["digits", "cost"] + (["mnist"] if args.idx else [])
    if "mnist" in parts and args.idx is None:
        parser.error("--parts mnist needs --idx DIR (the folder of the MNIST IDX files)")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    if "digits" in parts:
        train, test = digits()
        print_schemes(f"digits, MLP 64-{args.hidden}-10", accuracy_table(train, test, args.seeds, args.hidden,
                                                                         args.epochs, args.retrain), args.seeds)
    if "mnist" in parts:
        train, test = mnist(args.idx)
        print_schemes(f"MNIST ({len(train)} train / {len(test)} test), MLP 784-{args.hidden}-10",
                      accuracy_table(train, test, args.seeds, args.hidden, args.epochs, args.retrain), args.seeds)
    if "reber" in parts:
        setting = ReberSetting(epochs=args.reber_epochs, strings=args.reber_strings, hidden=args.reber_hidden,
                               ws_k=args.reber_k,
                               rewind_epoch=min(ReberSetting.rewind_epoch, args.reber_epochs - 1))
        print_structure(setting, structure_table(setting, args.seeds))
    if "cost" in parts:
        print("| model | static masked s/epoch | retraining round s/epoch | ratio |")
        print("|---|---|---|---|")
        for kind, (static, round_) in cost(args.repeats, 20).items():
            print(f"| {kind} | {static:.4f} | {round_:.4f} | {round_ / static:.3f} |")
    print(f"\n(total {time.perf_counter() - start:.0f} s wall, {time.process_time():.0f} s CPU, "
          f"torch threads {args.threads})")


if __name__ == "__main__":
    main()
