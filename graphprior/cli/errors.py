"""One-line errors shared by the subcommands: files the user names that cannot be written,
work too large for the memory, numbers that are not finite."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click


@contextmanager
def writing(path: str | Path, option: str = "-o/--output") -> Iterator[None]:
    """Turn a filesystem error while writing ``path`` into one line naming it and ``option``
    (exit code 1): a folder that is read-only, a full disk, a file where a folder should be."""
    try:
        yield
    except OSError as error:
        reason = error.strerror or str(error)
        where = f" ({error.filename})" if error.filename and str(error.filename) != str(path) else ""
        raise click.ClickException(
            f"cannot write {path}: {reason}{where}; choose another {option} or make its folder writable"
        ) from None


def out_of_memory(command: str | None) -> click.ClickException:
    """The one line (exit code 1) for a ``MemoryError`` anywhere in ``command``: what ran out
    and what to do, instead of a traceback."""
    where = f"graphprior {command}" if command else "graphprior"
    return click.ClickException(f"{where} ran out of memory; ask for less (fewer nodes, runs or rows, "
                                 "a smaller --count or --workers) or free memory")


def finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A click callback refusing NaN and infinity, which ``click.FloatRange`` lets through."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value
