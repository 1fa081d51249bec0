"""``graphprior compare-study``: a sweep's accuracies and R² against Stier et al. 2021's."""

from __future__ import annotations

from pathlib import Path

import click

from graphprior.cli.errors import writing
from graphprior.study import REFERENCE_VARIABLE, cell_line, compare_study as compare, write_study_report


@click.command("compare-study")
@click.argument("store", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("study-report"),
              show_default=True, help="Folder for report.md, cells.csv, r2.csv and the histogram PNGs.")
@click.option("--reference", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"The study's data folder (structure/*.csv) [default: ${REFERENCE_VARIABLE}].")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Repeats of the grouped 5-fold cross-validation.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the CV splits.")
def compare_study(store: Path, output: Path, reference: Path | None, repeats: int, seed: int) -> None:
    """Compare the runs of STORE with the study's published results, per cell type.

    Test-accuracy distributions (means, medians, never-learned share, Mann–Whitney and
    Kolmogorov–Smirnov tests, overlaid histograms) and the R² of the study's three
    regressors on both tables, under its single 90/10 split and under repeated grouped CV.
    Prints one line per cell type; writes a markdown report with PNGs into --output.
    """
    if not store.is_file():
        raise click.UsageError(f"STORE: no results store at {store}")
    try:
        comparison = compare(store, reference, n_repeats=repeats, seed=seed)
    except ValueError as error:
        raise click.UsageError(str(error).replace("reference:", "--reference:", 1)) from None
    for _, row in comparison.cells.iterrows():
        click.echo(cell_line(row))
    with writing(output, "-o/--output"):
        report = write_study_report(comparison, store, output)
    click.echo(f"report: {report}")
