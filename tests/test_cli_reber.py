"""``graphprior reber sample`` and ``graphprior reber dataset`` through click's CliRunner."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from graphprior.cli import main
from reber.grammar import EMBEDDED_REBER, REBER
from reber.tasks import read_csv


@pytest.fixture
def runner():
    return CliRunner()


def test_sample_prints_one_valid_string_per_line(runner):
    result = runner.invoke(main, ["reber", "sample", "--grammar", "embedded", "-n", "5", "--seed", "0"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines == EMBEDDED_REBER.sample(5, seed=0)
    assert len(lines) == 5 and all(EMBEDDED_REBER.is_valid(s) for s in lines)


def test_sample_honours_the_length_window(runner):
    args = ["reber", "sample", "-n", "20", "--min-length", "12", "--max-length", "14", "--lengths", "uniform"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert all(REBER.is_valid(s) and 12 <= len(s) <= 14 for s in result.output.splitlines())


def test_dataset_classify_writes_the_study_format(runner, tmp_path):
    out = tmp_path / "data.csv"
    args = ["reber", "dataset", "--task", "classify", "--negatives", "hard", "-n", "200", "--seed", "0", "-o", str(out)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith(",string,valid\n")
    strings, labels = read_csv(out)
    assert len(strings) == len(set(strings)) == 200 and labels.sum() == 100
    assert [int(REBER.is_valid(s)) for s in strings] == labels.tolist()
    assert "150 training and 50 test" in result.output


def test_dataset_next_symbol_with_separate_test_file(runner, tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    args = ["reber", "dataset", "--task", "next_symbol", "-n", "40", "-o", str(train), "--test-output", str(test)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    (a, ya), (b, yb) = read_csv(train), read_csv(test)
    assert len(a) == len(b) == 20 and not set(a) & set(b)
    assert ya.tolist() == yb.tolist() == [1] * 20 and all(EMBEDDED_REBER.is_valid(s) for s in a + b)


@pytest.mark.parametrize(
    "args, option",
    [
        (["sample", "--grammar", "dyck"], "--grammar"),
        (["sample", "-n", "-2"], "-n"),
        (["sample", "--max-length", "3"], "--max-length"),
        (["sample", "--lengths", "uniform"], "--max-length"),
        (["dataset", "-o", "x.csv", "-n", "7"], "-n"),
        (["dataset", "-o", "x.csv", "--test-fraction", "1.5"], "--test-fraction"),
        (["dataset", "-o", "x.csv", "--task", "next_symbol", "--negatives", "hard"], "--negatives"),
        (["dataset", "--task", "classify"], "--output"),
    ],
)
def test_bad_options_are_click_errors_naming_the_option(runner, args, option):
    result = runner.invoke(main, ["reber", *args])
    assert result.exit_code == 2
    assert option in result.output


def test_help_explains_every_option(runner):
    for command, options in [("sample", ["--grammar", "-n", "--seed", "--min-length", "--max-length", "--lengths"]),
                             ("dataset", ["--task", "--negatives", "--grammar", "--test-fraction", "--output",
                                          "--test-output"])]:
        result = runner.invoke(main, ["reber", command, "--help"])
        assert result.exit_code == 0
        assert all(option in result.output for option in options)
