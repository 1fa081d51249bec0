"""One-line errors shared by the subcommands: files the user names that cannot be written."""

from __future__ import annotations

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
