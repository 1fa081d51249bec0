"""The study's dataset against generated paper-style data: length distributions and negative mix.

Lengths (mean, median, quantiles) per class, and for the invalid strings the share with a
letter outside the grammar ("foreign"), else by the first position where the string
leaves the grammar (the 3rd symbol, or later). Prints one markdown table (docs/study.md).

    GRAPHPRIOR_STUDY_DATA=../shared/reference/stier2021 .venv/bin/python -m benchmarks.bench_study_data
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from reber.grammar import get_grammar
from reber.tasks import classification_strings, read_csv

REBER = get_grammar("reber")


def break_position(string: str) -> int:
    """1-based position of the first symbol the grammar does not allow there (len + 1: none)."""
    for i, symbol in enumerate(string):
        if symbol not in REBER.next_symbols(string[:i]):
            return i + 1
    return len(string) + 1


def profile(strings: list[str], labels: np.ndarray) -> pd.DataFrame:
    """One row per class (valid, invalid, all): length statistics; the invalid row the mix."""
    strings_ = np.array(strings, dtype=object)
    rows = {}
    for name, chosen in (("valid", labels == 1), ("invalid", labels == 0), ("all", labels >= 0)):
        length = np.array([len(s) for s in strings_[chosen]])
        rows[name] = {"mean": length.mean(), "median": np.median(length),
                      **{f"q{q:02d}": np.quantile(length, q / 100) for q in (5, 25, 75, 95)},
                      "min": length.min(), "max": length.max()}
    negatives = strings_[labels == 0]
    foreign = np.array([any(c not in REBER.alphabet for c in s) for s in negatives])
    position = np.array([break_position(s) for s in negatives[~foreign]])
    rows["invalid"].update(foreign=foreign.mean(), third=(position == 3).sum() / len(negatives),
                           later=(position > 3).sum() / len(negatives))
    return pd.DataFrame(rows).T


def main() -> None:
    folder = Path(os.environ.get("GRAPHPRIOR_STUDY_DATA", "../shared/reference/stier2021")) / "dataset"
    tables = {}
    if folder.is_dir():
        (train, y_train), (test, y_test) = (read_csv(folder / f"{p}_data.csv") for p in ("train", "test"))
        tables["study's files"] = profile(train + test, np.r_[y_train, y_test])
    else:
        print(f"study's dataset not found at {folder}: set GRAPHPRIOR_STUDY_DATA")
    for lengths in ("uniform", "study"):
        (train, y_train), (test, y_test) = classification_strings(25_000, "paper", seed=0, lengths=lengths)
        tables[f"paper, lengths={lengths}"] = profile(train + test, np.r_[y_train, y_test])
    frame = pd.concat(tables, names=["data", "class"])
    print(frame.round(3).to_markdown())


if __name__ == "__main__":
    main()
