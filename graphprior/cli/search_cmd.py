"""``graphprior search``: search a space of graph priors under a parameter budget."""

from __future__ import annotations

import math
from pathlib import Path

import click

from graphprior.cli.errors import writing
from graphprior.executors import BACKENDS, ExecutionError
from graphprior.spec import SpecError
from graphprior.store import StoreError

STRATEGY_NAMES = ("random", "evolution", "surrogate", "evolution-no-surrogate")
"""``graphprior.search.STRATEGIES``, here so that ``--help`` imports no torch (a test checks they agree)."""
_USER_ERRORS = (SpecError, StoreError, ExecutionError, ValueError)
_FILE = click.Path(dir_okay=False, path_type=Path)


def default_out(store: Path) -> Path:
    """Where the results go without ``--out``: ``<store stem>_search`` beside the store."""
    return store.with_name(f"{store.stem}_search")


@click.command()
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--budget", required=True, type=click.IntRange(min=1), help="Candidates to train (each with the spec's training seeds).")
@click.option("--store", required=True, type=_FILE, help="SQLite results store (created if missing; resumes).")
@click.option("--strategy", type=click.Choice(STRATEGY_NAMES), help="Search strategy [default: the spec's search.strategy].")
@click.option("--seed", type=click.IntRange(min=0), help="Seed of the proposals [default: the spec's seed].")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes (local backend) [default: cores].")
@click.option("--backend", type=click.Choice(BACKENDS), default="local", show_default=True,
              help="local: process pool; ray: Ray tasks; serial: in this process.")
@click.option("--address", help="Ray cluster address (backend ray), e.g. auto or ray://head:10001.")
@click.option("--retrain", type=click.IntRange(min=0), default=3, show_default=True,
              help="Re-train the best prior on this many fresh training seeds for the report.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for best.graphml, report.md, best_so_far.png [default: STORE's name + _search].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def search(spec_file: Path, budget: int, store: Path, strategy: str | None, seed: int | None, workers: int | None,
           backend: str, address: str | None, retrain: int, out: Path | None, quiet: bool) -> None:
    """Search the graph priors of SPEC_FILE (a sweep spec with a [search] table) for the best one.

    Trains --budget candidates (each within the spec's search.max_weights recurrent weights)
    into --store as ordinary runs, which `graphprior table` and `graphprior predict` read.
    Strategies: random search, regularised evolution, evolution with a performance-predictor
    surrogate, and the surrogate's ablation. Writes the best prior as OUT/best.graphml with
    its features, history.csv, best_so_far.png and report.md. Killed at any moment, the same
    command resumes where it stopped, training nothing twice.
    """
    from graphprior.executors import make_executor
    from graphprior.search import SearchSpace, fresh_seeds, load_search_spec, run_search, write_outputs
    from graphprior.search import retrain as retrain_best

    out = out or default_out(store)
    try:
        spec = load_search_spec(spec_file)
    except SpecError as error:
        raise click.ClickException(str(error)) from None
    with writing(out, "--out"):
        out.mkdir(parents=True, exist_ok=True)  # a bad --out fails before any training

    try:
        executor = make_executor(backend, workers=workers, address=address)
        result = run_search(spec, store, budget, strategy=strategy, seed=seed, executor=executor,
                            progress=not quiet)
        best = result.best
        retrained = retrain_best(SearchSpace(spec), best.genome, fresh_seeds(spec, retrain), store, executor) \
            if retrain else []
    except _USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    with writing(out, "--out"):
        paths = write_outputs(result, out, retrained)
    click.echo(f"{spec.name} ({result.strategy}, seed {result.seed}): {len(result.candidates)} candidates, "
               f"{result.trained_runs} runs trained now; best {spec.settings.metric} {best.score:.4f}"
               + (f", re-trained {_finished_mean(retrained)}" if retrained else ""))
    click.echo(f"best prior: {paths['graph']}; report: {paths['report']}")


def _finished_mean(values: list[float]) -> str:
    """The mean of the re-trained scores, as report.md gives it (failed seeds, NaN, left out
    and counted)."""
    finished = [v for v in values if not math.isnan(v)]
    failed = len(values) - len(finished)
    mean = f"{sum(finished) / len(finished):.4f}" if finished else "nan"
    return mean + (f" ({failed} of {len(values)} seeds failed)" if failed else "")
