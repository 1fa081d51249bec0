"""The study's dataset against generated paper-style data: length distributions, negative
mix, what the negatives hold, and what a small network learns from each.

Lengths (mean, median, quantiles) per class, and for the invalid strings the share with a
letter outside the grammar ("foreign"), else by the first position where the string
leaves the grammar (the 3rd symbol, or later). Then, for the negatives within the
grammar's alphabet, how many adjacent pairs no valid string holds ("impossible bigrams",
a cue a network can read locally). With ``--learn``, a dense GRU is trained on the study's
files, on the same files with the later-broken (then also the third-broken) negatives
replaced by one wrong symbol in a valid string (same length, same break position), and on
generated data; its test accuracy is reported per kind of string. Prints markdown tables (docs/study.md).

    GRAPHPRIOR_STUDY_DATA=../shared/reference/stier2021 .venv/bin/python -m benchmarks.bench_study_data --learn
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from graphprior.intervals import t_interval
from reber.grammar import get_grammar
from reber.tasks import break_at, classification_strings, classification_vocabulary, encode_classification, read_csv
from rnn_models.config import TrainConfig
from rnn_models.train import SequenceClassifier, fit, predict

REBER = get_grammar("reber")
KINDS = ("valid", "foreign", "third", "later")
Split = tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray]]


def break_position(string: str) -> int:
    """1-based position of the first symbol the grammar does not allow there (len + 1: none)."""
    for i, symbol in enumerate(string):
        if symbol not in REBER.next_symbols(string[:i]):
            return i + 1
    return len(string) + 1


def kind(string: str, label: int) -> str:
    """Which of ``KINDS`` a labelled string is: valid, or how the invalid one breaks."""
    if label == 1:
        return "valid"
    if any(c not in REBER.alphabet for c in string):
        return "foreign"
    return "third" if break_position(string) == 3 else "later"


def possible_bigrams(max_length: int = 14) -> frozenset[str]:
    """Every pair of adjacent symbols that some valid string holds (all of Reber's 20 occur
    in strings of at most 14 symbols)."""
    return frozenset(s[i : i + 2] for s in REBER.enumerate(max_length) for i in range(len(s) - 1))


def impossible_bigrams(string: str, possible: frozenset[str]) -> int:
    """How many adjacent pairs of ``string`` no valid string holds."""
    return sum(string[i : i + 2] not in possible for i in range(len(string) - 1))


def profile(strings: list[str], labels: np.ndarray) -> pd.DataFrame:
    """One row per class (valid, invalid, all): length statistics; the invalid row the mix."""
    strings_ = np.array(strings, dtype=object)
    rows = {}
    for name, chosen in (("valid", labels == 1), ("invalid", labels == 0), ("all", labels >= 0)):
        length = np.array([len(s) for s in strings_[chosen]])
        rows[name] = {"mean": length.mean(), "median": np.median(length),
                      **{f"q{q:02d}": np.quantile(length, q / 100) for q in (5, 25, 75, 95)},
                      "min": length.min(), "max": length.max()}
    kinds = np.array([kind(s, 0) for s in strings_[labels == 0]])
    rows["invalid"].update({k: float(np.mean(kinds == k)) for k in KINDS[1:]})
    return pd.DataFrame(rows).T


def negative_content(strings: list[str], labels: np.ndarray) -> pd.DataFrame:
    """Per kind of negative within the alphabet (third, later): count, mean number of
    impossible bigrams, shares with at least one and at least three, mean symbols after the
    break."""
    possible = possible_bigrams()
    rows = {}
    for name in ("third", "later"):
        chosen = [s for s, y in zip(strings, labels) if y == 0 and kind(s, 0) == name]
        bad = np.array([impossible_bigrams(s, possible) for s in chosen])
        after = np.array([len(s) - break_position(s) for s in chosen])
        rows[name] = {"n": len(chosen), "impossible bigrams": bad.mean(), ">= 1": np.mean(bad >= 1),
                      ">= 3": np.mean(bad >= 3), "symbols after break": after.mean()}
    return pd.DataFrame(rows).T


def one_wrong_symbol(strings: Sequence[str], labels: np.ndarray, kinds: Sequence[str],
                     rng: np.random.Generator) -> list[str]:
    """``strings`` with every negative of ``kinds`` (third, later) replaced by a valid
    string of the same set broken at the same position (``break_at``), of the same length
    where one exists, else of the nearest longer length: the lengths, positions and mix
    stay, the corrupted tail goes."""
    valid = [s for s, y in zip(strings, labels) if y == 1]
    by_length: dict[int, list[str]] = {}
    for s in valid:
        by_length.setdefault(len(s), []).append(s)
    lengths = np.array(sorted(by_length))
    out = list(strings)
    for i, (s, y) in enumerate(zip(strings, labels)):
        if y == 0 and kind(s, 0) in kinds:
            position = break_position(s) - 1
            fits = lengths[lengths >= max(len(s), position + 2)]
            length = int(fits[0]) if len(fits) else int(lengths[-1])
            base = by_length[length][int(rng.integers(len(by_length[length])))]
            out[i] = break_at(base, min(position, len(base) - 2), REBER, rng)
    return out


def accuracy_by_kind(split: Split, seed: int, epochs: int) -> dict[str, float]:
    """Test accuracy per kind (and overall) of a dense 16-unit GRU trained on ``split`` with
    Adam 1e-3, batch 128, clipping 5: a fixed learner, so only the data differ."""
    (train, y_train), (test, y_test) = split
    vocabulary = classification_vocabulary("reber")
    train_set, test_set = encode_classification(train, y_train, vocabulary), encode_classification(test, y_test, vocabulary)
    torch.manual_seed(seed)
    model = SequenceClassifier(nn.GRU(len(vocabulary), 16, batch_first=True))
    fit(model, train_set, test_set, TrainConfig(epochs=epochs, clip=5.0, seed=seed))
    right = ((predict(model, test_set) > 0).numpy() == (y_test == 1))
    kinds = np.array([kind(s, y) for s, y in zip(test, y_test)])
    return {"all": float(right.mean()), **{k: float(right[kinds == k].mean()) for k in KINDS}}


def learned(splits: dict[str, Split], seeds: int, epochs: int) -> pd.DataFrame:
    """Mean test accuracy per kind over ``seeds`` seeds (± the 95 % t half-width) per data set."""
    rows = {}
    for name, split in splits.items():
        runs = pd.DataFrame([accuracy_by_kind(split, seed, epochs) for seed in range(seeds)])
        mean, half = t_interval(runs.to_numpy(), axis=0)
        rows[name] = {column: f"{m:.3f} ± {h:.3f}" for column, m, h in zip(runs.columns, mean, half)}
    return pd.DataFrame(rows).T


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learn", action="store_true", help="train the dense GRU on each data set")
    parser.add_argument("--seeds", type=_positive, default=5, help="seeds per data set with --learn (default 5)")
    parser.add_argument("--epochs", type=_positive, default=10, help="epochs per run with --learn (default 10)")
    args = parser.parse_args(argv)
    folder = Path(os.environ.get("GRAPHPRIOR_STUDY_DATA", "../shared/reference/stier2021")) / "dataset"
    splits: dict[str, Split] = {}
    if folder.is_dir():
        splits["study's files"] = tuple(read_csv(folder / f"{p}_data.csv") for p in ("train", "test"))
    else:
        print(f"study's dataset not found at {folder}: set GRAPHPRIOR_STUDY_DATA")
    for lengths in ("uniform", "study"):
        splits[f"paper, lengths={lengths}"] = classification_strings(25_000, "paper", seed=0, lengths=lengths)
    joined = {name: (train + test, np.r_[y_train, y_test]) for name, ((train, y_train), (test, y_test)) in splits.items()}
    print(pd.concat({name: profile(*data) for name, data in joined.items()}, names=["data", "class"]).round(3).to_markdown())
    print()
    print(pd.concat({name: negative_content(*data) for name, data in joined.items()}, names=["data", "kind"])
          .round(3).to_markdown())
    if args.learn:
        chosen = {name: split for name, split in splits.items() if name != "paper, lengths=uniform"}
        for kinds in (("later",), ("third", "later")) if "study's files" in splits else ():
            rng = np.random.default_rng(0)
            chosen[f"study's files, {' and '.join(kinds)} as one wrong symbol"] = tuple(
                (one_wrong_symbol(strings, labels, kinds, rng), labels) for strings, labels in splits["study's files"])
        print()
        print(learned(chosen, args.seeds, args.epochs).to_markdown())


if __name__ == "__main__":
    main()
