"""``graphprior topology``: the fixed-budget topology study's report from a results store."""

from __future__ import annotations

from pathlib import Path

import click

from graphprior.cli.errors import writing
from graphprior.predict import REGRESSORS
from graphprior.store import StoreError


@click.command("topology")
@click.argument("store", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("topology-report"),
              show_default=True, help="Folder for report.md, the heatmap PNGs and the CSV tables.")
@click.option("--model", type=click.Choice(list(REGRESSORS)), default="random_forest", show_default=True,
              help="Regressor of the structure-only R².")
@click.option("--bins", type=click.IntRange(min=1), default=5, show_default=True,
              help="Bins per axis of the (clustering, path length) heatmaps.")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="k of the grouped k-fold (lowered where a scope has too few graphs).")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Repetitions of the k-fold split.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the splits and model.")
def topology(store: Path, output: Path, model: str, bins: int, folds: int, repeats: int, seed: int) -> None:
    """Report a fixed-budget topology sweep (preset 'topology'): does structure matter beyond size?

    STORE is a results store (.db) or its flat table (.csv, .parquet). Per edge budget,
    task and cell type: structure-only R² ± std next to the noise ceiling, Spearman and
    Kendall, the features that matter; best and worst graph families with 95 % intervals
    over training seeds; the sparse priors minus the equal-parameter dense baseline
    (dense_matched), paired over seeds; and mean performance over the (clustering, path
    length) plane as heatmaps with the sweet spot marked.
    """
    from graphprior.topology import write_topology_report

    if not store.is_file():
        raise click.UsageError(f"STORE: no results store or table at {store}")
    try:
        with writing(output):
            written = write_topology_report(store, output, model=model, bins=bins, n_splits=folds,
                                            n_repeats=repeats, seed=seed)
    except StoreError as error:
        raise click.ClickException(str(error)) from None
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    click.echo(f"report: {written[0]}")
    click.echo(f"wrote {len(written) - 1} more files into {output}")
