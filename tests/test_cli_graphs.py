"""``graphprior generate`` and ``graphprior features`` through click's test runner."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from graphprior.cli import main
from graphprior.features import FEATURE_NAMES
from graphprior.generators import generate, load_graph


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_generate_writes_the_seeded_graph_and_a_summary(runner, tmp_path):
    out = tmp_path / "prior.graphml"
    result = runner.invoke(main, ["generate", "watts_strogatz", "--n", "64", "--k", "6", "--p", "0.1", "--seed", "0", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "watts_strogatz (seed 0): 64 nodes, 192 edges, mean degree 6.00" in result.output
    expected = generate("watts_strogatz", n=64, k=6, p=0.1, seed=0)
    assert load_graph(out).get_edgelist() == expected.get_edgelist()


def test_generate_takes_any_parameter_and_many_graphs(runner, tmp_path):
    out = tmp_path / "sbm" / "g.edgelist"
    args = ["generate", "stochastic_block", "--param", "sizes=[4, 6]", "--param", "p=[[1, 0], [0, 1]]", "--count", "2", "-o", str(out)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "sbm").iterdir())
    assert [f.name for f in files] == ["g_0000.edgelist", "g_0001.edgelist"]
    assert load_graph(files[1]).ecount() == 6 + 15


@pytest.mark.parametrize(
    "args, message",
    [
        (["watts_strogatz", "--n", "64", "--k", "5", "--p", "0.1"], "k must be even"),
        (["watts_strogatz", "--n", "64", "--k", "6", "--param", "p"], "expected KEY=VALUE"),
        (["barabasi_albert", "--n", "10", "--m", "2", "--param", "q=1"], "unexpected keyword argument 'q'"),
        (["small_world", "--n", "10"], "Invalid value for 'GENERATOR'"),
    ],
)
def test_generate_reports_bad_parameters(runner, tmp_path, args, message):
    result = runner.invoke(main, ["generate", *args, "-o", str(tmp_path / "x.graphml")])
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq"])
def test_features_table_from_files(runner, tmp_path, suffix):
    paths = []
    for seed in range(3):
        path = tmp_path / f"g{seed}.graphml"
        generate("barabasi_albert", n=20, m=2, seed=seed).write_graphml(str(path))
        paths.append(str(path))
    out = tmp_path / f"features{suffix}"
    result = runner.invoke(main, ["features", *paths, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"3 graphs x {len(FEATURE_NAMES)} features" in result.output
    table = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert list(table.columns) == ["graph", *FEATURE_NAMES]
    assert table["graph"].tolist() == paths
    assert table["edges"].tolist() == [2 * 18] * 3


def test_features_refuses_other_table_formats(runner, tmp_path):
    path = tmp_path / "g.graphml"
    generate("complete", n=4).write_graphml(str(path))
    result = runner.invoke(main, ["features", str(path), "-o", str(tmp_path / "f.xlsx")])
    assert result.exit_code == 2 and "output must end in .csv, .parquet or .pq, got 'f.xlsx'" in result.output
    assert not (tmp_path / "f.xlsx").exists()


def test_features_names_a_file_that_is_no_graph(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "broken.graphml").write_text("<graphml><graph")
    for name in ("empty.txt", "broken.graphml"):
        result = CliRunner().invoke(main, ["features", str(tmp_path / name), "-o", str(tmp_path / "f.csv")])
        assert result.exit_code == 2 and name in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("text, line", [("a b c\nx\n", "line 1: expected an edge 'u v'"),
                                         ("0 1\n1\n", "line 2: expected an edge 'u v'")])
def test_features_refuses_a_malformed_edge_list(tmp_path, text, line):
    (tmp_path / "bad.edges").write_text(text)
    result = CliRunner().invoke(main, ["features", str(tmp_path / "bad.edges"), "-o", str(tmp_path / "f.csv")])
    assert result.exit_code == 2 and line in result.output and "Traceback" not in result.output
    assert not (tmp_path / "f.csv").exists()


def test_an_edge_list_error_names_the_file(tmp_path):
    import igraph

    from graphprior.generators import save_graph

    with pytest.raises(ValueError, match=r"lonely.edges: an edge list cannot hold the 1 isolated node"):
        save_graph(igraph.Graph(n=3, edges=[(0, 1)]), tmp_path / "lonely.edges")


def test_generate_help_lists_every_generator_with_its_parameters():
    from graphprior.generators import GENERATORS, parameters

    help_text = CliRunner().invoke(main, ["generate", "--help"]).output
    for name in GENERATORS:
        assert f"{name}({', '.join(parameters(name))})" in help_text
    assert "barabasi_albert(n, m, initial)" in help_text
    with pytest.raises(ValueError, match="unknown generator 'nope'"):
        parameters("nope")
