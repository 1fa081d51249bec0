"""The ``graphprior predict`` command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from graphprior.cli import main


@pytest.fixture(scope="module")
def runs_csv(tmp_path_factory) -> str:
    """A small table of runs of two cell types whose accuracy follows density."""
    rng = np.random.default_rng(0)
    n = 24
    density = rng.uniform(0.05, 0.5, size=2 * n)
    frame = pd.DataFrame({
        "graph_id": [f"g{i}" for i in range(2 * n)],
        "cell": ["gru"] * n + ["lstm"] * n,
        "status": "done",
        "nodes": rng.uniform(10, 50, size=2 * n),
        "density": density,
        "test_acc": 0.5 + 0.9 * density + rng.normal(0, 0.01, size=2 * n),
    })
    path = tmp_path_factory.mktemp("runs") / "runs.csv"
    frame.to_csv(path, index=False)
    return str(path)


FAST = ["--models", "mean,bayesian_ridge", "--folds", "3", "--repeats", "1", "--permutations", "1"]


def test_predict_writes_the_report(runs_csv, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["predict", runs_csv, "-o", str(out), "--by", "cell",
                                       "--study-protocol", *FAST])
    assert result.exit_code == 0, result.output
    assert "gru: best bayesian_ridge" in result.output
    assert {p.name for p in out.iterdir()} == {
        "report.md", "report.json", "predicted_vs_actual.png", "importances.png", "ablations.png"}
    figures = json.loads((out / "report.json").read_text())
    assert figures["features"] == ["nodes", "density"]
    assert set(figures["best_model"]) == {"gru", "lstm", "pooled"}
    assert figures["sizes"]["pooled"] == {"rows": 48, "groups": 48}


def test_predict_mean_over_seeds_averages_the_runs_of_a_graph(tmp_path):
    rng = np.random.default_rng(1)
    graphs = np.repeat(np.arange(12), 3)
    density = rng.uniform(0.05, 0.5, size=12)[graphs]
    frame = pd.DataFrame({"graph_id": [f"g{g}" for g in graphs], "cell": "gru", "status": "done",
                          "seed": np.tile([0, 1, 2], 12), "density": density,
                          "test_acc": 0.5 + density + rng.normal(0, 0.05, size=36)})
    frame.to_csv(tmp_path / "runs.csv", index=False)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "runs.csv"), "-o", str(out),
                                       "--mean-over-seeds", *FAST])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["sizes"]["gru"] == {"rows": 12, "groups": 12}


def test_predict_by_none_evaluates_only_the_pooled_table(runs_csv, tmp_path):
    result = CliRunner().invoke(main, ["predict", runs_csv, "-o", str(tmp_path), "--by", "none", *FAST])
    assert result.exit_code == 0, result.output
    assert set(json.loads((tmp_path / "report.json").read_text())["best_model"]) == {"pooled"}


@pytest.mark.parametrize("options, message", [
    (["--models", "mean,xgboost"], "allowed: bayesian_ridge"),
    (["--target", "accuracy"], "target: column 'accuracy' not in the table"),
    (["--features", "nodes,girth"], "girth"),
    (["--jobs", "0"], "Invalid value for '--jobs': 0 runs nothing"),
    (["--learned-threshold", "nan"], "Invalid value for '--learned-threshold': nan is not a finite"),
    (["--features", "graph_id"], "--features: columns ['graph_id'] are not numeric"),
])
def test_predict_bad_options_give_one_clear_error(runs_csv, tmp_path, options, message):
    result = CliRunner().invoke(main, ["predict", runs_csv, "-o", str(tmp_path), *FAST, *options])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def quick_sized_csv(path, n_graphs: int = 4, cells=("gru", "lstm", "rnn_relu", "rnn_tanh")) -> str:
    """The table of the quick preset's store: every graph once per cell type, one seed."""
    rng = np.random.default_rng(2)
    density = rng.uniform(0.1, 0.5, size=n_graphs)
    frame = pd.DataFrame([
        {"graph_id": f"g{g}", "cell": cell, "status": "done", "nodes": 16.0,
         "density": density[g], "test_acc": 0.6 + density[g] + rng.normal(0, 0.02)}
        for cell in cells for g in range(n_graphs)
    ])
    frame.to_csv(path, index=False)
    return str(path)


def test_predict_on_the_quick_presets_store_chooses_fewer_folds_and_says_so(tmp_path):
    source = quick_sized_csv(tmp_path / "quick.csv")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["predict", source, "--by", "cell", "-o", str(out),
                                       "--models", "mean,bayesian_ridge,knn", "--repeats", "1",
                                       "--permutations", "1"])
    assert result.exit_code == 0, result.output
    assert "gru: 2 folds instead of 5 (4 graphs in 4 runs)" in result.output
    assert "pooled: 4 folds instead of 5 (4 graphs in 16 runs)" in result.output
    assert "gru: left out knn" in result.output and "pooled: best" in result.output
    figures = json.loads((out / "report.json").read_text())
    assert figures["folds"] == {"gru": 2, "lstm": 2, "rnn_relu": 2, "rnn_tanh": 2, "pooled": 4}
    assert "## Notes" in (out / "report.md").read_text()
    assert "Traceback" not in result.output and "too few groups" not in result.output


def test_predict_on_a_table_too_small_for_any_fold_says_what_is_needed(tmp_path):
    source = quick_sized_csv(tmp_path / "tiny.csv", n_graphs=3, cells=("gru",))
    result = CliRunner().invoke(main, ["predict", source, "-o", str(tmp_path / "out"), *FAST])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: too little to cross-validate: gru: left out, 3 graph(s) in 3 run(s); "
        "cross-validation needs at least 2 graphs and 4 runs")


def test_predict_summarises_library_warnings_in_one_line_each(runs_csv, tmp_path):
    result = CliRunner().invoke(main, ["predict", runs_csv, "-o", str(tmp_path), "--models",
                                       "mean,gaussian_process", "--folds", "3", "--repeats", "2",
                                       "--permutations", "1"])
    assert result.exit_code == 0, result.output
    assert "warnings.warn" not in result.output and "Warning:" not in result.output
    assert sum("ConvergenceWarning" in line for line in result.output.splitlines()) <= 1


def test_predict_names_cli_options_not_python_parameters():
    from graphprior.cli.predict_cmd import in_cli_words
    assert in_cli_words("too few groups for n_splits=5 folds; pass features= explicitly") == (
        "too few groups for --folds 5 folds; pass --features explicitly")


def test_predict_help_explains_every_option():
    result = CliRunner().invoke(main, ["predict", "--help"])
    assert result.exit_code == 0
    for option in ("--output", "--by", "--target", "--mean-over-seeds", "--features", "--models", "--folds", "--repeats",
                   "--seed", "--study-protocol", "--learned-threshold", "--permutations", "--jobs"):
        assert option in result.output
