"""``graphprior bench run|status``, ``graphprior table`` and ``graphprior demo``."""

from __future__ import annotations

from pathlib import Path

import click

from graphprior.cli.errors import writing
from graphprior.executors import BACKENDS, ExecutionError
from graphprior.spec import SpecError, SweepSpec, expand, load_preset, load_spec, sample_runs
from graphprior.store import ResultsStore, StoreError, describe_claims, export_table, store_errors
from graphprior.table import check_table_path

_USER_ERRORS = (SpecError, StoreError, ExecutionError, ValueError)
_STORE = click.Path(dir_okay=False, path_type=Path)
GROUP_SIZE = 16  # runs per worker call, trained as one ensemble where that is faster


def _spec_from(spec_file: Path | None, preset: str | None) -> SweepSpec:
    """The spec named by exactly one of a TOML file and a preset name."""
    if (spec_file is None) == (preset is None):
        raise click.UsageError("give either SPEC_FILE or --preset NAME (exactly one)")
    try:
        return load_preset(preset) if preset else load_spec(spec_file)
    except SpecError as error:
        raise click.ClickException(str(error)) from None


def _sweep(spec: SweepSpec, store: Path, **options: object) -> None:
    from graphprior.sweep import run_sweep  # imports torch only when a sweep runs

    try:
        summary = run_sweep(spec, store, **options)
    except _USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"{spec.name}: {summary.done} done, {summary.failed} failed, {summary.skipped} already stored "
        f"(of {summary.total}) in {summary.seconds:.1f} s -> {store}"
    )


@click.group()
def bench() -> None:
    """Train prior-initialized networks on Reber benchmarks, resumably, into a results store."""


@bench.command("run")
@click.argument("spec_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", help="A shipped spec instead of SPEC_FILE, e.g. quick, paper, prior, paper-study; "
                                 "an unknown name lists them all.")
@click.option("--store", required=True, type=_STORE, help="SQLite results store (created if missing).")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes (local backend) [default: cores].")
@click.option("--backend", type=click.Choice(BACKENDS), default="local", show_default=True,
              help="local: process pool; ray: Ray tasks; serial: in this process.")
@click.option("--address", help="Ray cluster address (backend ray), e.g. auto or ray://head:10001.")
@click.option("--limit", type=click.IntRange(min=1), help="Run only a seeded sample of this many runs of the spec.")
@click.option("--retry-failed", is_flag=True, help="Run again the runs stored as failed.")
@click.option("--group-size", type=click.IntRange(min=1), default=GROUP_SIZE, show_default=True,
              help="Runs sent to a worker at once (sharing cell, size, task, training and seed) and "
                   "trained as one ensemble where that is faster; 1 trains every run on its own.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(spec_file: Path | None, preset: str | None, store: Path, workers: int | None, backend: str,
        address: str | None, limit: int | None, retry_failed: bool, group_size: int, quiet: bool) -> None:
    """Run the sweep of SPEC_FILE (TOML) or --preset into --store, skipping stored runs.

    Killed at any moment, the same command resumes: finished runs are kept once,
    only runs in flight are lost.
    """
    spec = _spec_from(spec_file, preset)
    _sweep(spec, store, backend=backend, workers=workers, address=address, limit=limit,
           retry_failed=retry_failed, group_size=group_size, progress=not quiet)


@bench.command("status")
@click.argument("store", type=_STORE)
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also count the runs of this spec still pending.")
@click.option("--preset", help="Also count the runs of this preset still pending.")
@click.option("--limit", type=click.IntRange(min=1), help="The --limit the sweep was run with.")
def status(store: Path, spec_file: Path | None, preset: str | None, limit: int | None) -> None:
    """Counts of done and failed runs in STORE, mean seconds per model, the runs drivers are
    training now (claimed: owner, heartbeat age, stale claims), pending runs of a spec."""
    if limit is not None and not (spec_file or preset):
        raise click.UsageError("--limit counts pending runs of a spec: give --spec or --preset too")
    try:
        with ResultsStore(store, readonly=True) as results, store_errors(store):
            counts, seconds, stored = results.counts(), results.mean_seconds(), results.statuses()
            claims, timeout = results.claims(), results.claim_timeout()
    except StoreError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{store}: {counts['done']} done, {counts['failed']} failed")
    if seconds is not None:
        click.echo(f"mean seconds per finished model: {seconds:.2f}")
    click.echo("\n".join(describe_claims(claims, timeout)))
    if spec_file or preset:
        spec = _spec_from(spec_file, preset)
        runs = sample_runs(expand(spec), limit, seed=spec.seed)
        pending = sum(run.run_id not in stored for run in runs)
        click.echo(f"{spec.name}: {pending} of {len(runs)} runs pending")


@click.command()
@click.argument("store", type=_STORE)
@click.option("-o", "--output", required=True, type=_STORE, help="Output file: .csv, .parquet or .pq.")
def table(store: Path, output: Path) -> None:
    """Write the flat results table of STORE (one row per run: config, features, metrics)."""
    try:
        check_table_path(output)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="-o") from None
    try:
        with writing(output):
            frame = export_table(store, output)
    except _USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {len(frame)} runs x {frame.shape[1]} columns to {output}")


@click.command()
@click.option("--out", "out", default="results", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for results.db, table.csv, report.md, report.html and the pictures.")
@click.option("--spec", "spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Tell the story of this sweep spec (TOML) instead of the built-in demo sweep; "
                   "it needs one task and at least 5 graphs for the cross-validation.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes [default: cores].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out: Path, spec_file: Path | None, workers: int | None, quiet: bool) -> None:
    """The toolkit's story end to end, in about two minutes on two cores.

    Draws random graphs (Watts–Strogatz, Barabási–Albert, Erdős–Rényi), trains them as
    masked RNN/LSTM/GRU networks on embedded-Reber next-symbol prediction, measures their
    structure and predicts accuracy from it with grouped cross-validation. Writes
    OUT/report.html (open it in a browser), OUT/report.md, the PNG pictures, the results
    store and the flat table; ends with the numbers that matter.
    """
    from graphprior.demo import analyse, demo_spec, write_demo_report

    try:
        spec = load_spec(spec_file) if spec_file else demo_spec()
    except SpecError as error:
        raise click.ClickException(str(error)) from None
    if len(spec.tasks) != 1:
        raise click.BadParameter(f"the demo predicts one task's accuracy; the spec has {len(spec.tasks)}",
                                 param_hint="--spec")
    with writing(out, "--out"):
        out.mkdir(parents=True, exist_ok=True)  # before any training: a bad --out fails at once
    store = out / "results.db"
    _sweep(spec, store, workers=workers, group_size=GROUP_SIZE, progress=not quiet)
    with writing(out, "--out"):
        frame = export_table(store, out / "table.csv")
    try:
        result = analyse(spec, store, frame, progress=not quiet)
    except ValueError as error:
        raise click.ClickException(f"cannot predict from this sweep: {error}") from None
    with writing(out, "--out"):
        write_demo_report(result, out)
    numbers = result.headline()
    click.echo(f"structure predicts test accuracy: R² {numbers['r2']:.2f} ± {numbers['r2_std']:.2f} "
               f"(noise ceiling {numbers['ceiling']:.2f})")
    click.echo(f"size features alone: R² {numbers['size_r2']:.2f}; all features: {numbers['full_r2']:.2f}")
    click.echo(f"report: {out / 'report.html'} (markdown: {out / 'report.md'})")
