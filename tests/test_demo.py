"""``graphprior demo``: the sweep, the prediction and a report that lists every picture it wrote."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from click.testing import CliRunner

from graphprior import demo
from graphprior.cli import main
from graphprior.spec import expand

TINY = """
name = "tiny"
seed = 3
sampling = "random"
n_samples = 6
seeds = [0, 1]
[[generators]]
name = "erdos_renyi_gnp"
params = { n = { uniform_int = [5, 12] }, p = { uniform = [0.2, 0.8] } }
[model]
cells = ["rnn_tanh", "gru"]
[[tasks]]
kind = "next_symbol"
grammar = "embedded"
size = 64
[train]
epochs = 2
batch_size = 16
lr = 0.01
"""
PICTURES = ("priors.png", "accuracy_by_generator.png", "accuracy_vs_edges.png", "learning_curves.png",
            "predicted_vs_actual.png", "importances.png", "ablations.png")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo on a 24-run sweep with fast prediction settings."""
    folder = tmp_path_factory.mktemp("demo")
    (folder / "tiny.toml").write_text(TINY)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "PREDICT_OPTIONS", {"models": ("mean", "bayesian_ridge"), "n_splits": 3,
                                                "n_repeats": 1, "n_permutations": 1})
        result = CliRunner().invoke(main, ["demo", "--spec", str(folder / "tiny.toml"), "--out",
                                           str(folder / "results"), "--workers", "1", "--quiet"])
    return result, folder / "results"


def test_demo_writes_store_table_and_every_picture(demo_run):
    result, out = demo_run
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "table.csv")
    assert len(table) == 24 and (table.status == "done").all()
    for name in (*PICTURES, "report.md", "report.html", "report.json", "results.db"):
        assert (out / name).stat().st_size > 0, name
    for name in PICTURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_lists_its_pictures_and_numbers(demo_run):
    _, out = demo_run
    markdown = (out / "report.md").read_text()
    assert re.findall(r"!\[[^\]]*\]\(([\w.]+)\)", markdown) == list(PICTURES)
    assert "24 runs: 24 done, 0 failed" in markdown
    assert re.search(r"R² -?\d\.\d\d ± \d\.\d\d", markdown) and "noise ceiling" in markdown
    assert re.search(r"\| gru +\| +0\.\d{3} +\|", markdown)  # accuracy by cell and generator
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html
    assert re.findall(r'<img alt="[^"]*" src="([\w.]+)"', html) == list(PICTURES)


def test_the_terminal_ends_with_the_numbers_and_the_report_path(demo_run):
    result, out = demo_run
    last = result.stdout.strip().splitlines()[-3:]
    assert re.fullmatch(r"structure predicts test accuracy: R² -?\d\.\d\d ± \d\.\d\d \(noise ceiling \d\.\d\d\)",
                        last[0])
    assert re.fullmatch(r"size features alone: R² -?\d\.\d\d; all features: -?\d\.\d\d", last[1])
    assert last[2] == f"report: {out / 'report.html'} (markdown: {out / 'report.md'})"


def test_the_demo_sweep_is_large_enough_to_predict_and_small_enough_for_two_cores():
    runs = expand(demo.demo_spec())
    assert len(runs) == 192
    assert len({(r.generator, r.graph_seed) for r in runs}) == 24


def test_a_spec_with_two_tasks_is_refused(tmp_path):
    (tmp_path / "two.toml").write_text(TINY + '[[tasks]]\nkind = "classify"\n')
    result = CliRunner().invoke(main, ["demo", "--spec", str(tmp_path / "two.toml"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "the demo predicts one task's accuracy; the spec has 2" in result.output
    assert not (tmp_path / "r").exists()


def test_demo_help_explains_every_option():
    result = CliRunner().invoke(main, ["demo", "--help"])
    assert result.exit_code == 0
    assert all(option in result.output for option in ("--out", "--spec", "--workers", "--quiet"))
    assert "report.html" in result.output
