"""``graphprior prune``: pruning sweeps (magnitude schemes, lottery controls) into a results store."""

from __future__ import annotations

from pathlib import Path

import click

from graphprior.cli.bench_cmd import _USER_ERRORS, run

_SHARED_OPTIONS = ("store", "workers", "backend", "address", "limit", "retry_failed", "quiet")
"""Options that mean what they mean for ``bench run``, defined there once."""


@click.command()
@click.argument("spec_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", help="A shipped prune spec instead of SPEC_FILE: prune-demo or prune-study.")
def prune(spec_file: Path | None, preset: str | None, store: Path, workers: int | None, backend: str,
          address: str | None, limit: int | None, retry_failed: bool, quiet: bool) -> None:
    """Train, prune, retrain and control the networks of SPEC_FILE (a sweep spec with a
    [prune] table) or --preset into --store, skipping stored runs.

    Each run x scheme x amount x weights x control is one record of the store, with the
    accuracy before and after pruning and retraining, the remaining density, the robustness
    to further pruning and the features of the pruned structure; `graphprior table` and
    `graphprior predict` read them. Killed at any moment, the same command resumes.
    """
    from graphprior.prune import load_prune_preset, load_prune_spec, run_prune

    if (spec_file is None) == (preset is None):
        raise click.UsageError("give either SPEC_FILE or --preset NAME (exactly one)")
    try:
        spec = load_prune_preset(preset) if preset else load_prune_spec(spec_file)
        summary = run_prune(spec, store, backend=backend, workers=workers, address=address, limit=limit,
                            retry_failed=retry_failed, progress=not quiet)
    except _USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"{spec.name}: {summary.done} done, {summary.failed} failed, {summary.skipped} already stored "
        f"(of {summary.total}) in {summary.seconds:.1f} s -> {store}"
    )


prune.params += [option for option in run.params if option.name in _SHARED_OPTIONS]
