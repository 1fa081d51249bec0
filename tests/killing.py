"""Shared by the resume tests: start a graphprior command, SIGKILL it once it has stored a run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path


def stored_count(store: Path) -> int:
    """Runs stored so far, read without creating the file or keeping a connection open."""
    if not store.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=0.1)) as connection:
            return connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.Error:
        return 0


def kill_after_first_run(arguments: list[str], store: Path, seconds: float, poll: float = 0.02) -> tuple[int, str]:
    """Run ``graphprior ARGUMENTS`` (one torch thread), SIGKILL it as soon as ``store`` holds a
    run (or after ``seconds``), and return the runs stored then and the command's stderr."""
    command = [sys.executable, "-c", "from graphprior.cli import main; main()", *arguments]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + seconds
    while stored_count(store) == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(poll)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return stored_count(store), process.stderr.read().decode()
