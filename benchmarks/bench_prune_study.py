"""The study's RNN pruning curves side by side with ours, per cell type.

Stier, Darji & Granitzer (2021) trained networks of 3 recurrent layers of 50 units per
cell type (batch 32, 50 epochs) on their Reber-string dataset, pruned them at 0..100 % of
the weights by one global percentile of the magnitudes and retrained 10 epochs; their
tables are ``stier2021/prune/<cell>.csv`` (one row per level and epoch). Here: the same
network (``rnn_models.masked.make_rnn(cell, ..., num_layers=3)``: the plain 3x50 stack, in
a ``SequenceClassifier``), Adam lr 1e-3, clip 5, batch 32, on the study's own CSV strings
(``stier2021/dataset``), trained once per cell, then for each level a copy pruned
one-shot class-blinded over all recurrent weights (``rnn_models.pruning.prune``, one
global magnitude threshold; the readout is not pruned) and retrained. Reported per level
and cell: our test accuracy right after pruning and after retraining, next to the study's
(its epoch 0, right after pruning, and its last retraining epoch; level 0: its first and
last training epoch). ``--weights`` prunes only the input-to-hidden or hidden-to-hidden
weights and compares with the study's run doing the same.

The reference folder is ``$GRAPHPRIOR_STIER2021`` or ``../shared/reference/stier2021``
(beside the repository); without it the benchmark says so and exits 0. The full protocol
(18,750 strings, 50 + 10 x 10 epochs, 4 cells) takes hours on a CPU; the defaults run a
documented subset (a seeded subsample of the strings, fewer epochs):

    nice -n 5 python -m benchmarks.bench_prune_study                       # the subset in docs/bench/pruning.md
    python -m benchmarks.bench_prune_study --train-size 18750 --test-size 6250 --epochs 50 --retrain 10  # full
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import sys
import time
from pathlib import Path

import torch

from rnn_models.config import TrainConfig
from rnn_models.masked import make_rnn
from rnn_models.pruning import accuracy, prune
from rnn_models.train import SequenceClassifier, fit

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
LEVELS = tuple(range(0, 101, 10))
ENV = "GRAPHPRIOR_STIER2021"


def reference_dir() -> Path | None:
    """The study's reference folder (``$GRAPHPRIOR_STIER2021``, else the shared one), or None."""
    given = os.environ.get(ENV)
    folder = Path(given) if given else Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "stier2021"
    return folder if (folder / "prune").is_dir() and (folder / "dataset").is_dir() else None


STUDY_WEIGHTS = ("both", "ih", "hh")
"""The order of the study's three runs per pruning level in its tables: all weights, the
input-to-hidden ones only, the hidden-to-hidden ones only (as its protocol lists them; only
the third can relearn after pruning 100 %, and only the third does in its tables)."""


def study_curve(folder: Path, cell: str, weights: str = "both") -> dict[int, tuple[float, float]]:
    """Per pruning level of the study's table for ``cell``: its test accuracy right after
    pruning (epoch 0) and after its last retraining epoch, for the run pruning ``weights``
    (``STUDY_WEIGHTS``). A level's rows hold one run per weight set, each from epoch 0; level
    0 (no pruning) is the one training run: its first and last epoch."""
    runs: dict[int, list[dict[int, float]]] = {}
    with open(folder / "prune" / f"{cell}.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            level, epoch = int(row["prune"]), int(row["epoch"])
            blocks = runs.setdefault(level, [])
            if not blocks or epoch in blocks[-1]:  # the epochs start again: the next weight set
                blocks.append({})
            blocks[-1][epoch] = float(row["test_acc"])
    index = STUDY_WEIGHTS.index(weights)
    curve = {}
    for level, blocks in runs.items():
        epochs = blocks[0] if level == 0 or len(blocks) <= index else blocks[index]
        curve[level] = (epochs[min(epochs)], epochs[max(epochs)])
    return curve


def load_strings(path: Path, size: int | None, seed: int):
    """The study's CSV at ``path`` as an ``EncodedDataset``: a seeded subsample of ``size``
    strings (all of them when None or larger), encoded as ``reber.tasks`` encodes the study's data."""
    from reber.tasks import classification_vocabulary, encode_classification, read_csv

    strings, labels = read_csv(path)
    if size is not None and size < len(strings):
        index = sorted(torch.randperm(len(strings), generator=torch.Generator().manual_seed(seed))[:size].tolist())
        strings, labels = [strings[i] for i in index], labels[index]
    return encode_classification(strings, labels, classification_vocabulary("reber"))


def our_curve(cell: str, train, test, epochs: int, retrain: int, levels: tuple[int, ...],
              seed: int, weights: str = "both") -> dict[int, tuple[float, float]]:
    """Per level: test accuracy of the trained 3x50 network pruned (before, after retraining)."""
    torch.manual_seed(seed)
    model = SequenceClassifier(make_rnn(cell, train.inputs.shape[-1], 50, num_layers=3, batch_first=True))
    config = TrainConfig(lr=1e-3, batch_size=32, clip=5.0, epochs=epochs, seed=seed, bucket=True)
    trained_acc = fit(model, train, test, config).final["test_acc"]
    curve = {0: (trained_acc, trained_acc)}
    for level in levels:
        if level == 0:
            continue
        pruned = copy.deepcopy(model)
        prune(pruned, "blinded", level / 100, weights=weights)
        before = accuracy(pruned, test)
        after = fit(pruned, train, test, TrainConfig(lr=1e-3, batch_size=32, clip=5.0, epochs=retrain, seed=seed,
                                                     bucket=True)).final["test_acc"]
        curve[level] = (before, after)
    return curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--levels", nargs="+", type=int, default=list(LEVELS), help="percent pruned")
    parser.add_argument("--train-size", type=int, default=6000, help="training strings (study: 18,750)")
    parser.add_argument("--test-size", type=int, default=2000, help="test strings (study: 6,250)")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs before pruning (study: 50)")
    parser.add_argument("--retrain", type=int, default=3, help="retraining epochs per level (study: 10)")
    parser.add_argument("--weights", choices=STUDY_WEIGHTS, default="both",
                        help="the prunable weights, ours and the study's run compared (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    folder = reference_dir()
    if folder is None:
        print(f"skipped: the study's reference folder is absent (set {ENV} to the stier2021 folder, "
              "or place it at ../shared/reference/stier2021)")
        return 0
    if any(not 0 <= level <= 100 for level in args.levels):
        raise SystemExit("--levels: percentages must be in 0..100")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    train = load_strings(folder / "dataset" / "train_data.csv", args.train_size, args.seed)
    test = load_strings(folder / "dataset" / "test_data.csv", args.test_size, args.seed + 1)
    levels = tuple(sorted(set(args.levels) | {0}))
    print(f"3x50 stacks on the study's strings: {len(train)} train / {len(test)} test, {args.epochs} epochs, "
          f"{args.retrain} retraining epochs per level, pruning weights {args.weights}, seed {args.seed}\n")
    ours = {cell: our_curve(cell, train, test, args.epochs, args.retrain, levels, args.seed, args.weights)
            for cell in args.cells}
    print("| level | " + " | ".join(f"{c}: ours pruned / retrained | {c}: study pruned / retrained" for c in args.cells)
          + " |")
    print("|---|" + "---|---|" * len(args.cells))
    theirs = {cell: study_curve(folder, cell, args.weights) for cell in args.cells}
    for level in levels:
        cells = []
        for cell in args.cells:
            before, after = ours[cell][level]
            first, last = theirs[cell].get(level, (float("nan"), float("nan")))
            cells.append(f"{before:.3f} / {after:.3f} | {first:.3f} / {last:.3f}")
        print(f"| {level} % | " + " | ".join(cells) + " |")
    print(f"\n(total {time.perf_counter() - start:.0f} s wall, {time.process_time():.0f} s CPU, "
          f"torch threads {args.threads})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
