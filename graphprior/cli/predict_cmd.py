"""``graphprior predict``: how much of performance does structure alone predict?"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from sklearn.exceptions import ConvergenceWarning

from graphprior.cli.errors import writing
from graphprior.predict import REGRESSORS, TARGET, load_table
from graphprior.report import build_report, write_report
from graphprior.store import StoreError


# the Python parameters that the library's messages name -> the options that set them here
OPTION_NAMES: dict[str, str] = {
    "n_splits": "--folds", "n_repeats": "--repeats", "features": "--features",
    "target": "--target", "task": "--task", "models": "--models", "sources": "SOURCES",
    "source": "SOURCES", "mean_over_seeds": "--mean-over-seeds", "threshold": "--learned-threshold",
}
_PARAMETER = re.compile(r"\b(" + "|".join(OPTION_NAMES) + r")(=|:)")


def _names(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def in_cli_words(message: str) -> str:
    """``message`` with the Python parameters it names (``n_splits=``, ``features:``) replaced
    by the command-line options that set them (``--folds``, ``--features``)."""
    def option(match: re.Match) -> str:  # n_splits=5 -> --folds 5; features= -> --features
        name, sign = match.groups()
        if sign == ":":
            return OPTION_NAMES[name] + ":"
        value_follows = match.end() < len(message) and not message[match.end()].isspace()
        return OPTION_NAMES[name] + (" " if value_follows else "")

    return _PARAMETER.sub(option, message)


def _jobs(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value == 0:
        raise click.BadParameter("0 runs nothing; give 1 or more, or -1 for all cores")
    return value


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number; give the accuracy, e.g. 0.52")
    return value


@contextmanager
def summarised_warnings(parallel: bool) -> Iterator[None]:
    """Collect the libraries' warnings during the analysis and print one line per kind.

    Hundreds of fits may each warn (a Gaussian process at its length-scale bound); a user needs
    to know that they did, not every source line. Parallel workers are told to ignore the
    scikit-learn convergence warnings, which they cannot report back.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if parallel:
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
        yield
    counts = Counter(w.category.__name__ for w in caught)
    examples: dict[str, str] = {}
    for w in caught:
        examples.setdefault(w.category.__name__, in_cli_words(str(w.message).strip().splitlines()[0]))
    for category, count in counts.items():
        if count == 1:
            click.echo(f"note: {examples[category]}", err=True)
        else:
            click.echo(f"note: {count} {category}s from the fits, e.g. {examples[category][:160]}",
                       err=True)


@click.command("predict")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", "output", type=click.Path(file_okay=False), default="predict-report",
              show_default=True, help="Folder for report.md, report.json and the PNG plots.")
@click.option("--by", type=click.Choice(["cell", "none"]), default="cell", show_default=True,
              help="'cell': evaluate each cell type separately and pooled (cell type one-hot "
                   "as a feature); 'none': pooled only.")
@click.option("--target", default=TARGET, show_default=True, help="Column to predict.")
@click.option("--task", default=None, help="Keep the runs of this task (classify, next_symbol, "
              "continual); required when a sweep's table holds several.")
@click.option("--mean-over-seeds", is_flag=True,
              help="Predict each graph's target averaged over its training seeds (one row per "
                   "graph and cell type): the expected performance that structure can "
                   "determine, without the seed-to-seed noise it cannot.")
@click.option("--features", default=None, metavar="A,B,...",
              help="Comma-separated feature columns [default: the columns named in "
                   "graphprior.features.FEATURE_NAMES].")
@click.option("--models", default=",".join(REGRESSORS), show_default=True, metavar="NAME,...",
              help=f"Comma-separated regressors; allowed: {', '.join(REGRESSORS)}.")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(min=2),
              help="k of the grouped k-fold cross-validation.")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(min=1),
              help="Repetitions of the k-fold split, each with the graphs shuffled anew.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the splits and of every model.")
@click.option("--study-protocol", is_flag=True,
              help="Also score every model on the study's single random 90/10 row split "
                   "(random_state 7), to show how much one split flatters.")
@click.option("--learned-threshold", default=None, type=float, metavar="ACC", callback=_finite,
              help="Treat runs with target <= ACC as never learned (e.g. 0.52 for a balanced "
                   "binary task): report a 'learns at all' classifier and a regressor among "
                   "the runs that learned.")
@click.option("--permutations", default=5, show_default=True, type=click.IntRange(min=1),
              help="Shuffles per feature and fold for the permutation importances.")
@click.option("--jobs", default=1, show_default=True, type=int, callback=_jobs,
              help="Parallel fits (joblib n_jobs; -1 = all cores).")
def predict(
    sources: tuple[str, ...],
    output: str,
    by: str,
    target: str,
    task: str | None,
    mean_over_seeds: bool,
    features: str | None,
    models: str,
    folds: int,
    repeats: int,
    seed: int,
    study_protocol: bool,
    learned_threshold: float | None,
    permutations: int,
    jobs: int,
) -> None:
    """Predict performance from structure with repeated grouped cross-validation.

    SOURCES are results stores (.db), CSV or Parquet tables, or the study's published
    tables (columns mode, graph, graph_nr); several are concatenated. Only runs with
    status 'done' are used. Runs of one graph never sit on both sides of a split.

    Writes OUTPUT/report.md, OUTPUT/report.json (every figure) and plots:
    predicted_vs_actual.png, importances.png, ablations.png.
    """
    try:
        with summarised_warnings(parallel=jobs != 1):
            table = load_table(list(sources), target=target, features=_names(features), task=task,
                               mean_over_seeds=mean_over_seeds)
            report = build_report(
                table, models=_names(models) or [], by_cell=by == "cell", n_splits=folds,
                n_repeats=repeats, seed=seed, study_protocol=study_protocol,
                learned_threshold=learned_threshold, n_permutations=permutations, n_jobs=jobs,
                progress=True,
            )
    except StoreError as error:  # a damaged or foreign store: a runtime error, like in every command
        raise click.ClickException(str(error)) from None
    except ValueError as error:
        raise click.UsageError(in_cli_words(str(error))) from error
    for note in report.notes:
        click.echo(f"note: {in_cli_words(note)}", err=True)
    with writing(output):
        written = write_report(report, Path(output))
    for scope, model in report.best.items():
        r2 = next(r for r in report.comparison if r.scope == scope and r.model == model)
        summary = r2.summary()["r2"]
        click.echo(f"{scope}: best {model}, R² {summary['mean']:.3f} ± {summary['std']:.3f} "
                   f"({report.folds[scope]} folds)")
    click.echo(f"wrote {', '.join(str(p) for p in written)}")
