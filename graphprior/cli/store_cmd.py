"""``graphprior store check|merge``: is a results store sound, and stores of several machines as one."""

from __future__ import annotations

from pathlib import Path

import click

from graphprior.cli.errors import writing
from graphprior.store import StoreError, check_store, describe_claims, merge_stores

_STORE = click.Path(dir_okay=False, path_type=Path)
_SHOWN = 20  # conflicts and orphans listed by name; the rest are counted


@click.group()
def store() -> None:
    """Check a results store, or merge the stores of several machines into one."""


@store.command("check")
@click.argument("path", metavar="STORE", type=_STORE)
def check(path: Path) -> None:
    """Check STORE without writing to it: SQLite's integrity check, format and schema, every
    record readable; counts by status, claimed runs (and stale claims of dead drivers), and
    orphans (claims on finished runs, weight files of runs not in the store).

    Exit code 0 for a sound store (stale claims and orphans are harmless leftovers of killed
    drivers), 1 with one line for a damaged one or a file that is not a store.
    """
    try:
        result = check_store(path)
    except StoreError as error:
        raise click.ClickException(str(error)) from None
    if result.problems:
        more = f" (and {len(result.problems) - 1} more problems)" if len(result.problems) > 1 else ""
        raise click.ClickException(
            f"{path} is damaged: {result.problems[0]}{more}; recover it with `sqlite3 {path} .recover` "
            "or re-run its sweeps into a new store")
    counts = result.counts
    click.echo(f"{path}: ok (integrity, format, {sum(counts.values())} readable records); "
               f"{counts['done']} done, {counts['failed']} failed")
    click.echo("\n".join(describe_claims(result.claims, result.claim_timeout)))
    _list("claims on runs already stored (harmless)", result.orphan_claims)
    _list("weight files of runs not in the store (from a killed driver; safe to delete)", result.orphan_weights)


@store.command("merge")
@click.argument("inputs", metavar="STORE...", nargs=-1, required=True, type=_STORE)
@click.option("-o", "--output", required=True, type=_STORE, help="The merged store (a new file).")
@click.option("--force", is_flag=True, help="Replace --output if it exists.")
def merge(inputs: tuple[Path, ...], output: Path, force: bool) -> None:
    """Merge the runs of the STOREs (e.g. one per machine) into a new store -o, never
    changing them; weight files beside them are copied along.

    A run found in several stores with equal results (status and metrics other than
    timings) is kept once. With different results it is a conflict, listed, and resolved
    thus: a done record beats a failed one, else the first store given wins. Claims are not
    merged: they belong to the drivers of the inputs.
    """
    try:
        with writing(output):
            report = merge_stores(inputs, output, force=force)
    except (StoreError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    sources = ", ".join(f"{path} {count}" for path, count in zip(report.inputs, report.taken))
    click.echo(f"merged {len(report.inputs)} stores into {output}: {report.runs} runs ({sources}); "
               f"{report.same} found in several with equal results, {len(report.conflicts)} conflicts")
    _list("conflicts", report.conflicts)


def _list(title: str, items: list[str]) -> None:
    """Print a count and up to ``_SHOWN`` items, one per line."""
    if not items:
        return
    click.echo(f"{len(items)} {title}:")
    for item in items[:_SHOWN]:
        click.echo(f"  {item}")
    if len(items) > _SHOWN:
        click.echo(f"  ... and {len(items) - _SHOWN} more")
