"""`graphprior bench run|status`, `table`: options, errors, resume after SIGKILL (`demo`: test_demo.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from graphprior.cli import main
from graphprior.spec import expand, load_spec
from graphprior.store import ResultsStore, read_table

SPEC = """
name = "cli"
[[generators]]
name = "erdos_renyi_gnp"
params = { n = [5, 6, 7, 8], p = 0.4 }
[model]
cells = ["rnn_tanh", "gru"]
[[tasks]]
kind = "classify"
size = 200
[train]
epochs = 2
batch_size = 16
"""


@pytest.fixture
def spec_file(tmp_path) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_run_status_and_table(tmp_path, spec_file):
    store = tmp_path / "r.db"
    result = invoke("bench", "run", str(spec_file), "--store", str(store), "--backend", "serial",
                    "--limit", "3", "--quiet")
    assert result.exit_code == 0, result.output
    assert "cli: 3 done, 0 failed, 0 already stored (of 3)" in result.output
    status = invoke("bench", "status", str(store), "--spec", str(spec_file))
    assert "r.db: 3 done, 0 failed" in status.output and "cli: 5 of 8 runs pending" in status.output
    assert "mean seconds per finished model:" in status.output
    out = tmp_path / "t.parquet"
    assert "wrote 3 runs x" in invoke("table", str(store), "-o", str(out)).output
    pd.testing.assert_frame_equal(pd.read_parquet(out), read_table(store))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "run", "--store", "r.db"], "give either SPEC_FILE or --preset NAME (exactly one)"),
        (["bench", "run", "--preset", "nope", "--store", "r.db"], "unknown preset 'nope'; allowed: paper,"),
        (["bench", "run", "--preset", "quick", "--store", "r.db", "--address", "auto"],
         "address is only used with backend 'ray'"),
        (["bench", "run", "--preset", "quick", "--store", "r.db", "--workers", "0"], "0 is not in the range x>=1"),
        (["bench", "run", "--preset", "quick", "--store", "r.db", "--backend", "spark"], "'spark' is not one of"),
        (["bench", "status", "missing.db"], "missing.db: no such results store"),
        (["table", "notes.txt", "-o", "t.csv"], "notes.txt is not a graphprior results store"),
        (["table", "empty.db", "-o", "t.xlsx"], "output must end in .csv, .parquet or .pq, got 't.xlsx'"),
    ],
)
def test_clear_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a database, " * 200)
    ResultsStore(tmp_path / "empty.db").close()
    result = invoke(*args)
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "r.db").exists()


def test_bad_spec_is_one_line_before_anything_runs(tmp_path, spec_file):
    spec_file.write_text(SPEC.replace("epochs = 2", "epochs = 2\nepoch = 3"))
    result = invoke("bench", "run", str(spec_file), "--store", str(tmp_path / "r.db"))
    assert result.exit_code == 1
    assert result.output == (f"Error: {spec_file}: train: unknown key 'epoch'; allowed: optimizer, lr, "
                             "weight_decay, momentum, batch_size, epochs, clip, patience, device, bucket\n")
    assert not (tmp_path / "r.db").exists()


def _stored(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        with ResultsStore(store, create=False) as results:
            return sum(results.counts().values())
    except Exception:  # noqa: BLE001 -- the store is being created right now
        return 0


def test_resume_after_sigkill_keeps_every_run_once(tmp_path, spec_file):
    store = tmp_path / "r.db"
    command = [str(Path(sys.executable).with_name("graphprior")), "bench", "run", str(spec_file),
               "--store", str(store), "--workers", "2", "--quiet"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while _stored(store) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and its workers, mid-sweep
    process.wait()
    killed_at = _stored(store)
    total = len(expand(load_spec(spec_file)))
    assert 1 <= killed_at < total, process.stderr.read().decode()
    result = invoke("bench", "run", str(spec_file), "--store", str(store), "--backend", "serial", "--quiet")
    assert f"already stored (of {total})" in result.output
    table = read_table(store)
    assert table.run_id.is_unique and set(table.run_id) == {r.run_id for r in expand(load_spec(spec_file))}
    assert (table.status == "done").all()


def test_status_limit_needs_a_spec(tmp_path):
    store = tmp_path / "r.db"
    ResultsStore(store).close()
    result = invoke("bench", "status", str(store), "--limit", "3")
    assert result.exit_code == 2 and "--limit counts pending runs of a spec: give --spec or --preset too" in result.output
