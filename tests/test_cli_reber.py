"""``graphprior reber sample``, ``dataset`` and ``benchmark`` through click's CliRunner."""

from __future__ import annotations

import pandas as pd
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
        (["benchmark", "--cells", "lstm,transformer"], "--cells"),
        (["benchmark", "--priors", ""], "--priors"),
        (["benchmark", "--batch-size", "300"], "--batch-size"),
        (["benchmark", "--trials", "0"], "--trials"),
    ],
)
def test_bad_options_are_click_errors_naming_the_option(runner, args, option):
    result = runner.invoke(main, ["reber", *args])
    assert result.exit_code == 2
    assert option in result.output


def test_help_explains_every_option(runner):
    for command, options in [("sample", ["--grammar", "-n", "--seed", "--min-length", "--max-length", "--lengths"]),
                             ("dataset", ["--task", "--negatives", "--grammar", "--test-fraction", "--output",
                                          "--test-output"]),
                             ("benchmark", ["--trials", "--first-seed", "--cells", "--priors", "--hidden-size",
                                            "--batch-size", "--optimizer", "--lr", "--budget", "--check-every",
                                            "--workers", "--output"])]:
        result = runner.invoke(main, ["reber", command, "--help"])
        assert result.exit_code == 0
        assert all(option in result.output for option in options)


def test_benchmark_prints_the_hs_table_and_writes_its_files(runner, tmp_path, one_thread):
    out = tmp_path / "hs"
    args = ["reber", "benchmark", "--trials", "2", "--cells", "gru", "--priors", "dense,erdos_renyi_gnp",
            "--hidden-size", "8", "--batch-size", "32", "--budget", "64", "--check-every", "32", "--quiet",
            "-o", str(out)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in result.stdout.splitlines()[:5]]
    assert rows[0][:3] == ["model", "trials", "solved"]
    assert rows[2][:4] == ["LSTM (H&S 1997, published)", "150", "148", "8,440"]
    assert [r[:3] for r in rows[3:]] == [["gru", "2", "0"], ["gru + erdos_renyi_gnp", "2", "0"]]
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials.seed) == [0, 0, 1, 1] and not trials.solved.any()
    assert (out / "summary.md").read_text().startswith("| model")
    assert (out / "sequences.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
