"""Filesystem faults end in one line and exit code 1 (issue 19): unwritable outputs, damaged stores."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from graphprior.cli import main
from graphprior.store import ResultsStore

from test_store import _damage, _stored


def one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def blocked(tmp_path):
    """A path whose folder is a regular file: no write can succeed there (even as root)."""
    (tmp_path / "file").write_text("not a folder")
    return tmp_path / "file"


@pytest.fixture
def store(tmp_path):
    return _stored(tmp_path / "r.db", n=4)


def test_unwritable_outputs_are_one_line(tmp_path, blocked, store):
    graph = tmp_path / "g.edges"
    graph.write_text("0 1\n1 2\n")
    runs = [
        ["generate", "watts_strogatz", "--n", "10", "--k", "4", "--p", "0.1", "-o", str(blocked / "g.edges")],
        ["features", str(graph), "-o", str(blocked / "f.csv")],
        ["reber", "dataset", "-n", "20", "-o", str(blocked / "d.csv")],
        ["table", str(store), "-o", str(blocked / "t.csv")],
    ]
    for args in runs:
        result = CliRunner().invoke(main, args)
        one_line_error(result, f"cannot write {blocked}", "choose another -o/--output")


@pytest.mark.parametrize("args", [["table", "{store}", "-o", "{tmp}/t.csv"], ["bench", "status", "{store}"],
                                  ["bench", "run", "--preset", "quick", "--store", "{store}", "--quiet"]])
def test_a_damaged_store_is_one_line(tmp_path, store, args):
    _damage(store)
    result = CliRunner().invoke(main, [a.format(store=store, tmp=tmp_path) for a in args])
    one_line_error(result, f"{store} is damaged (database disk image is malformed)")


def test_a_store_in_an_unusable_folder_is_one_line(blocked):
    result = CliRunner().invoke(main, ["bench", "run", "--preset", "quick", "--store", str(blocked / "r.db")])
    one_line_error(result, "r.db cannot be opened", "--store")


def test_status_reads_a_store_read_only(store):
    with ResultsStore(store) as results:
        assert results.counts()["done"] == 4
    result = CliRunner().invoke(main, ["bench", "status", str(store)])
    assert result.exit_code == 0 and "4 done, 0 failed" in result.output


def test_the_demo_and_the_hs_benchmark_refuse_an_unwritable_output_before_any_training(blocked):
    runner = CliRunner()
    one_line_error(runner.invoke(main, ["demo", "--out", str(blocked / "out"), "--quiet"]), "--out", str(blocked))
    one_line_error(runner.invoke(main, ["reber", "benchmark", "--trials", "1", "--cells", "lstm", "--quiet",
                                        "-o", str(blocked / "hs")]), "-o/--output")


def test_the_hs_benchmark_says_when_the_hidden_size_cannot_hold_a_prior():
    result = CliRunner().invoke(main, ["reber", "benchmark", "--trials", "1", "--cells", "lstm", "--priors",
                                       "watts_strogatz", "--hidden-size", "2", "--quiet"])
    assert result.exit_code == 2
    assert "--hidden-size: 2 units cannot hold a watts_strogatz prior" in result.output
