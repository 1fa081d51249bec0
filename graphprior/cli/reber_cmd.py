"""``graphprior reber``: sample Reber-grammar strings, write task datasets as CSV, and run
the Hochreiter & Schmidhuber (1997) embedded-Reber benchmark."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
import numpy as np

from graphprior import hs_benchmark as hs
from graphprior.cli.errors import finite, writing
from reber.grammar import GRAMMARS, get_grammar
from reber.tasks import classification_strings, next_symbol_data, write_csv

T = TypeVar("T")
_OPTION_NAMES = {"n": "-n", "min_length": "--min-length", "max_length": "--max-length",
                 "test_fraction": "--test-fraction", "n_train": "-n", "n_test": "-n / --test-fraction",
                 "hidden_size": "--hidden-size", "batch_size": "--batch-size", "budget": "--budget",
                 "check_every": "--check-every"}
_DEFAULT_N = {"classify": 25_000, "next_symbol": 512}
_DEFAULT_GRAMMAR = {"classify": "reber", "next_symbol": "embedded"}
_DEFAULT_TEST_FRACTION = {"classify": 0.25, "next_symbol": 0.5}
_PROTOCOL = hs.Protocol()  # the benchmark's defaults
MAX_LENGTH = 10_000
"""Longest string length the options accept: the samplers' tables grow with it (10^9 filled memory)."""
_LENGTH = click.IntRange(min=0, max=MAX_LENGTH)


def _run_library(call: Callable[[], T]) -> T:
    """Run ``call``; a library ``ValueError`` (whose message starts with the argument's
    name) becomes a click error naming the command-line option."""
    try:
        return call()
    except ValueError as error:
        name = re.match(r"\w+", str(error))
        hint = name and _OPTION_NAMES.get(name.group())
        raise click.BadParameter(str(error), param_hint=hint) from error


@click.group()
def reber() -> None:
    """Reber-grammar strings and datasets (Reber 1967; Hochreiter & Schmidhuber 1997)."""


@reber.command()
@click.option("--grammar", type=click.Choice(sorted(GRAMMARS)), default="reber", show_default=True,
              help="'reber': the plain grammar (strings B...E); 'embedded': B, T|P, a Reber string, the same T|P, E.")
@click.option("-n", "n", type=click.IntRange(min=0), default=10, show_default=True, help="Number of strings.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed; the same seed gives the same strings.")
@click.option("--min-length", type=_LENGTH, default=None, help="Shortest allowed string length.")
@click.option("--max-length", type=_LENGTH, default=None, help="Longest allowed string length.")
@click.option("--lengths", type=click.Choice(["grammar", "uniform"]), default="grammar", show_default=True,
              help="'grammar': uniform branching at every state (short strings are common); "
                   "'uniform': length uniform in the window, then a uniformly chosen string of it (needs --max-length).")
def sample(grammar: str, n: int, seed: int, min_length: int | None, max_length: int | None, lengths: str) -> None:
    """Print N strings of a grammar, one per line.

    Example: graphprior reber sample --grammar embedded -n 5 --seed 0
    """
    strings = _run_library(lambda: get_grammar(grammar).sample(n, seed, min_length, max_length, lengths))
    for string in strings:
        click.echo(string)


@reber.command()
@click.option("--task", type=click.Choice(["classify", "next_symbol"]), default="classify", show_default=True,
              help="'classify': balanced valid/invalid strings; 'next_symbol': valid strings only "
                   "(the Hochreiter & Schmidhuber 1997 protocol; every row has valid=1).")
@click.option("--negatives", type=click.Choice(["paper", "hard"]), default=None,
              help="classify only. 'paper' (default): like the study's dataset (foreign letters, strings broken "
                   "early); 'hard': one edit (substitution, insertion, deletion, transposition) of a valid string.")
@click.option("--grammar", type=click.Choice(sorted(GRAMMARS)), default=None,
              help="Grammar of the valid strings [default: reber for classify, embedded for next_symbol].")
@click.option("-n", "n", type=click.IntRange(min=1), default=None,
              help="Number of strings, train and test together [default: 25000 for classify, 512 for next_symbol].")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Share of the strings in the test split [default: 0.25 for classify, 0.5 for next_symbol].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")
@click.option("--min-length", type=_LENGTH, default=None,
              help="Shortest valid string [default: 11 for classify, none for next_symbol].")
@click.option("--max-length", type=_LENGTH, default=None,
              help="Longest valid string [default: 35 for classify, none for next_symbol].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV file in the study's format (',string,valid'). Without --test-output it holds the "
                   "training rows followed by the test rows.")
@click.option("--test-output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the test split to this CSV instead, leaving only the training split in --output.")
def dataset(task: str, negatives: str | None, grammar: str | None, n: int | None, test_fraction: float | None,
            seed: int, min_length: int | None, max_length: int | None, output: Path,
            test_output: Path | None) -> None:
    """Write a task dataset as CSV.

    Example: graphprior reber dataset --task classify --negatives hard -n 25000 --seed 0 -o data.csv
    """
    if negatives is not None and task != "classify":
        raise click.BadOptionUsage("negatives", "--negatives applies only to --task classify")
    n = _DEFAULT_N[task] if n is None else n
    grammar = grammar or _DEFAULT_GRAMMAR[task]
    test_fraction = _DEFAULT_TEST_FRACTION[task] if test_fraction is None else test_fraction
    window = {name: value for name, value in (("min_length", min_length), ("max_length", max_length))
              if value is not None}
    if task == "classify":
        train, test = _run_library(lambda: classification_strings(
            n, negatives or "paper", grammar, test_fraction, seed, **window))
    else:
        n_test = min(max(round(n * test_fraction), 1), n - 1)
        train_set, test_set = _run_library(lambda: next_symbol_data(
            grammar, n - n_test, n_test, seed, **window))
        train = (train_set.strings, np.ones(len(train_set), int))
        test = (test_set.strings, np.ones(len(test_set), int))
    if test_output is None:
        with writing(output):
            write_csv(output, train[0] + test[0], np.r_[train[1], test[1]])
    else:
        with writing(output):
            write_csv(output, *train)
        with writing(test_output, "--test-output"):
            write_csv(test_output, *test)
    click.echo(f"wrote {len(train[0])} training and {len(test[0])} test strings", err=True)


def _choices(value: str, allowed: tuple[str, ...], option: str) -> list[str]:
    """A comma-separated option value as a list, every item one of ``allowed``."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if not items or unknown:
        raise click.BadParameter(f"{', '.join(unknown) or 'nothing'} not allowed; choose from {', '.join(allowed)}",
                                 param_hint=option)
    return items


@reber.command()
@click.option("--trials", type=click.IntRange(min=1), default=10, show_default=True,
              help="Independent trials per model (H&S ran 150): fresh data, graph and weights each, "
                   "seeded --first-seed, --first-seed + 1, ...")
@click.option("--first-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the first trial; give the previous --trials to extend an earlier run with new trials.")
@click.option("--cells", default="lstm", show_default=True, metavar="CELL,...",
              help="Cell types, comma-separated: lstm, gru, rnn_tanh, rnn_relu.")
@click.option("--priors", default="dense,watts_strogatz", show_default=True, metavar="PRIOR,...",
              help="Hidden-to-hidden structures, comma-separated: dense (no mask) or a random graph of about "
                   "4 neighbours per unit: watts_strogatz (p 0.1), barabasi_albert (m 2), erdos_renyi_gnp.")
@click.option("--hidden-size", type=click.IntRange(min=2), default=_PROTOCOL.hidden_size, show_default=True,
              help="Units per network.")
@click.option("--batch-size", type=click.IntRange(min=1), default=_PROTOCOL.batch_size, show_default=True,
              help="Sequences per weight update: 1 is H&S's online learning, more is mini-batch training.")
@click.option("--optimizer", type=click.Choice(["adam", "sgd", "rmsprop"]), default=_PROTOCOL.optimizer,
              show_default=True, help="Optimizer (H&S used plain gradient descent).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_PROTOCOL.lr, callback=finite,
              show_default=True, help="Learning rate.")
@click.option("--budget", type=click.IntRange(min=1), default=_PROTOCOL.budget, show_default=True,
              help="Training sequences after which an unsolved trial gives up.")
@click.option("--check-every", type=click.IntRange(min=1), default=_PROTOCOL.check_every, show_default=True,
              help="Test the success criterion every this many training sequences (the resolution of the count).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trials run at once in worker processes.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for trials.csv (one row per trial), summary.md and sequences.png.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def benchmark(trials: int, first_seed: int, cells: str, priors: str, hidden_size: int, batch_size: int,
              optimizer: str, lr: float, budget: int, check_every: int, workers: int, output: Path | None,
              quiet: bool) -> None:
    """Hochreiter & Schmidhuber (1997), experiment 1: learn embedded Reber to their criterion.

    Each trial trains a fresh network on next-symbol prediction of 256 embedded-Reber
    strings until, at every step of all 256 test and 256 training strings, the outputs of
    the allowed next symbols are the most active (solved), or until --budget sequences.
    Prints trials solved and the mean and median training sequences to solve per model,
    under H&S's published LSTM row (148 of 150 trials, mean 8,440 sequences).

    Example: graphprior reber benchmark --trials 20 --priors dense,watts_strogatz -o hs/
    """
    from tqdm import tqdm

    from graphprior.plots import sequences_to_solve

    protocol = _run_library(lambda: hs.Protocol(hidden_size=hidden_size, batch_size=batch_size,
                                                optimizer=optimizer, lr=lr, budget=budget,
                                                check_every=check_every))
    chosen_priors = _choices(priors, hs.PRIORS, "--priors")
    for prior in chosen_priors:  # a prior the hidden size cannot hold fails before any trial
        try:
            hs.prior_mask(prior, hidden_size, first_seed)
        except ValueError as error:
            raise click.BadParameter(f"{hidden_size} units cannot hold a {prior} prior ({error})",
                                     param_hint="--hidden-size") from None
    specs = hs.trial_specs(_choices(cells, hs.CELLS, "--cells"), chosen_priors, trials, protocol, first_seed)
    if output is not None:
        with writing(output):
            output.mkdir(parents=True, exist_ok=True)  # before the trials: a bad -o fails at once
    done = []
    with tqdm(total=len(specs), unit="trial", desc="H&S benchmark", disable=quiet) as bar:
        for trial in hs.run_benchmark(specs, workers=workers):
            done.append(trial)
            bar.update()
    frame = hs.trials_frame(done).sort_values(["seed", "model"], kind="stable", ignore_index=True)
    table = hs.summary_markdown(hs.summary(frame))
    click.echo(table)
    if output is not None:
        curves = {model: group["sequences"].to_numpy() for model, group in frame.groupby("model", sort=False)}
        with writing(output):
            frame.to_csv(output / "trials.csv", index=False)
            (output / "summary.md").write_text(table + "\n", encoding="utf-8")
            sequences_to_solve(curves, budget=budget).savefig(output / "sequences.png", dpi=110)
        click.echo(f"wrote {output / 'trials.csv'}, {output / 'summary.md'}, {output / 'sequences.png'}", err=True)
