"""Every subcommand on bad values and bad files (issue 19): one line on stderr starting "Error",
the documented exit code (2: usage, 1: runtime; see ``graphprior --help``), never a traceback."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphprior.cli import SHORT_HELP, SUBCOMMANDS, main

from test_store import _damage, _stored

# (exit code, command line); {T} is a folder of bad files (see ``bad_files``)
CASES = [
    (2, "generate erdos_renyi_gnp --n -5 --p 0.1 -o {T}/o.graphml"),
    (2, "generate erdos_renyi_gnp --n 10 --p nan -o {T}/o.graphml"),
    (2, "generate erdos_renyi_gnp --n 10 --p inf -o {T}/o.graphml"),
    (2, "generate erdos_renyi_gnp --n 10 --p 1e999 -o {T}/o.graphml"),
    (2, "generate watts_strogatz --n 10 --k nan --p 0.1 -o {T}/o.graphml"),
    (2, "generate watts_strogatz --n 10 --k 1e30 --p 0.1 -o {T}/o.graphml"),
    (2, "generate barabasi_albert --n 10 --m 0 -o {T}/o.graphml"),
    (2, "generate nosuch --n 10 -o {T}/o.graphml"),
    (2, "generate erdos_renyi_gnp --n 10 --p 0.1 --param x -o {T}/o.graphml"),
    (2, "generate erdos_renyi_gnp --n 10 --p 0.1 --param q=3 -o {T}/o.graphml"),
    (2, "generate erdos_renyi_gnp --n 10 --param p=a -o {T}/o.graphml"),
    (2, "generate erdos_renyi_gnp --n 10 --p 0.1 --count 0 -o {T}/o.graphml"),
    (2, "generate erdos_renyi_gnp --n 10 --p 0.1 -o {T}/dir"),
    (1, "generate erdos_renyi_gnp --n 10 --p 0.1 -o {T}/file/o.graphml"),
    (2, "generate erdos_renyi_gnp --n 100000000 --p 0.1 -o {T}/o.graphml"),
    (2, "generate stochastic_block --param sizes=[3,-2] --param p=[[0.1,0.1],[0.1,0.1]] -o {T}/o.graphml"),
    (2, "generate stochastic_block --param sizes=5 --param p=0.1 -o {T}/o.graphml"),
    (2, "generate planted_partition --param groups=2 --param size=nan --param p_in=0.1 --param p_out=0.1 -o {T}/o.graphml"),
    (2, "generate random_geometric --n 10 --param radius=nan -o {T}/o.graphml"),
    (2, "generate directed_scale_free --n 10 --param alpha=nan -o {T}/o.graphml"),
    (2, "generate erdos_renyi_gnm --n 10 --m 1000 -o {T}/o.graphml"),
    (2, "generate random_regular --n 5 --param d=3 -o {T}/o.graphml"),
    (2, "generate erdos_renyi_gnp --n 10 --p 0.1 -o {T}/o.xyz"),
    (2, "features {T}/missing -o {T}/f.csv"),
    (2, "features {T}/dir -o {T}/f.csv"),
    (2, "features {T}/empty -o {T}/f.csv"),
    (2, "features {T}/garbage -o {T}/f.csv"),
    (2, "features {T}/garbage.edges -o {T}/f.csv"),
    (2, "features {T}/g.edges -o {T}/f.txt"),
    (2, "features {T}/g.edges -o {T}/dir"),
    (1, "features {T}/g.edges -o {T}/file/f.csv"),
    (2, "features {T}/g.edges --seed -1 -o {T}/f.csv"),
    (2, "reber sample -n -1"),
    (2, "reber sample --grammar nosuch"),
    (2, "reber sample --min-length 10 --max-length 5"),
    (2, "reber sample --lengths uniform"),
    (2, "reber sample --max-length 1000000000 --lengths uniform"),
    (2, "reber dataset --max-length 99999999 -o {T}/d.csv"),
    (2, "reber dataset --test-fraction 0 -o {T}/d.csv"),
    (2, "reber dataset --test-fraction nan -o {T}/d.csv"),
    (2, "reber dataset -n 1 --task next_symbol -o {T}/d.csv"),
    (2, "reber dataset -n 0 -o {T}/d.csv"),
    (2, "reber dataset --task next_symbol --negatives hard -o {T}/d.csv"),
    (2, "reber dataset -n 10 --min-length 100 --max-length 5 -o {T}/d.csv"),
    (2, "reber dataset -n 10 -o {T}/dir"),
    (1, "reber dataset -n 10 -o {T}/file/d.csv"),
    (2, "reber benchmark --trials 0"),
    (2, "reber benchmark --cells foo"),
    (2, "reber benchmark --priors foo"),
    (2, "reber benchmark --lr nan --trials 1"),
    (2, "reber benchmark --lr -1"),
    (2, "reber benchmark --hidden-size 1"),
    (2, "reber benchmark --budget 0"),
    (1, "bench run {T}/missing.toml --store {T}/s.db"),
    (2, "bench run {T}/dir --store {T}/s.db"),
    (1, "bench run {T}/empty --store {T}/s.db"),
    (1, "bench run {T}/garbage.toml --store {T}/s.db"),
    (1, "bench run {T}/garbage --store {T}/s.db"),
    (1, "bench run {T}/bad.toml --store {T}/s.db"),
    (1, "bench run --preset nope --store {T}/s.db"),
    (2, "bench run --store {T}/s.db"),
    (2, "bench run --preset quick --store {T}/s.db --workers 0"),
    (2, "bench run --preset quick --store {T}/s.db --backend spark"),
    (2, "bench run --preset quick --store {T}/s.db --limit 0"),
    (2, "bench run --preset quick --store {T}/s.db --group-size 0"),
    (2, "bench run --preset quick --store {T}/dir"),
    (1, "bench run --preset quick --store {T}/garbage.db"),
    (1, "bench run --preset quick --store {T}/text.db"),
    (1, "bench run --preset quick --store {T}/d.db"),
    (1, "bench run --preset quick --store {T}/file/s.db"),
    (1, "bench run --preset quick --store {T}/s.db --address auto"),
    (1, "bench status {T}/missing.db"),
    (2, "bench status {T}/dir"),
    (1, "bench status {T}/empty"),
    (1, "bench status {T}/garbage.db"),
    (1, "bench status {T}/text.db"),
    (1, "bench status {T}/d.db"),
    (1, "bench status {T}/r.db --preset nope"),
    (1, "bench status {T}/r.db --spec {T}/garbage.toml"),
    (2, "bench status {T}/r.db --limit 0 --preset quick"),
    (1, "table {T}/missing.db -o {T}/t.csv"),
    (2, "table {T}/dir -o {T}/t.csv"),
    (1, "table {T}/empty -o {T}/t.csv"),
    (1, "table {T}/garbage.db -o {T}/t.csv"),
    (1, "table {T}/text.db -o {T}/t.csv"),
    (1, "table {T}/d.db -o {T}/t.csv"),
    (2, "table {T}/r.db -o {T}/t.txt"),
    (2, "table {T}/r.db -o {T}/dir"),
    (1, "table {T}/r.db -o {T}/file/t.csv"),
    (2, "demo --spec {T}/missing.toml"),
    (1, "demo --spec {T}/garbage.toml"),
    (1, "demo --spec {T}/bad.toml"),
    (2, "demo --workers 0"),
    (2, "demo --out {T}/file"),
    (1, "demo --out {T}/file/out"),
    (2, "predict {T}/missing.db"),
    (2, "predict {T}/dir"),
    (2, "predict {T}/empty"),
    (2, "predict {T}/empty.csv"),
    (2, "predict {T}/garbage.csv"),
    (2, "predict {T}/garbage"),
    (1, "predict {T}/garbage.db"),
    (1, "predict {T}/text.db"),
    (1, "predict {T}/d.db"),
    (2, "predict {T}/r.db --jobs 0"),
    (2, "predict {T}/r.db --folds 1"),
    (2, "predict {T}/r.db --folds -3"),
    (2, "predict {T}/r.db --repeats 0"),
    (2, "predict {T}/r.db --learned-threshold nan"),
    (2, "predict {T}/r.db --learned-threshold inf"),
    (2, "predict {T}/r.db --models foo"),
    (2, "predict {T}/r.db --by foo"),
    (2, "predict {T}/r.db --features nosuch"),
    (2, "predict {T}/r.db --target nosuch"),
    (2, "predict {T}/r.db --task nosuch"),
    (2, "predict {T}/r.db --permutations 0"),
    (2, "predict {T}/r.db -o {T}/file"),
    (1, "prune {T}/missing.toml --store {T}/p.db"),
    (1, "prune {T}/garbage.toml --store {T}/p.db"),
    (1, "prune {T}/bad.toml --store {T}/p.db"),
    (1, "prune --preset nope --store {T}/p.db"),
    (2, "prune --store {T}/p.db"),
    (1, "prune --preset prune-demo --store {T}/d.db"),
    (2, "prune --preset prune-demo --store {T}/p.db --workers 0"),
    (1, "store check {T}/missing.db"),
    (2, "store check {T}/dir"),
    (1, "store check {T}/garbage.db"),
    (1, "store check {T}/text.db"),
    (1, "store check {T}/empty"),
    (1, "store merge {T}/r.db {T}/garbage.db -o {T}/m.db"),
    (1, "store merge {T}/r.db {T}/missing.db -o {T}/m.db"),
    (1, "store merge {T}/r.db {T}/r.db -o {T}/file/m.db"),
    (2, "compare-study {T}/missing.db"),
    (2, "compare-study {T}/d.db"),
    (2, "compare-study {T}/dir"),
    (2, "compare-study {T}/r.db --repeats 0"),
    (2, "search {T}/missing.toml --budget 2 --store {T}/s.db"),
    (2, "search {T}/dir --budget 2 --store {T}/s.db"),
    (1, "search {T}/garbage.toml --budget 2 --store {T}/s.db"),
    (1, "search {T}/bad.toml --budget 2 --store {T}/s.db"),
    (1, "search {T}/nosearch.toml --budget 2 --store {T}/s.db"),
    (1, "search {T}/badsearch.toml --budget 2 --store {T}/s.db"),
    (2, "search {T}/search.toml --budget 0 --store {T}/s.db"),
    (2, "search {T}/search.toml --budget 2 --store {T}/s.db --strategy nope"),
    (2, "search {T}/search.toml --budget 2 --store {T}/s.db --retrain -1"),
    (2, "search {T}/search.toml --budget 2 --store {T}/s.db --out {T}/file"),
    (1, "search {T}/search.toml --budget 2 --store {T}/garbage.db"),
    (1, "search {T}/search.toml --budget 2 --store {T}/text.db"),
    (2, "topology {T}/missing.db"),
    (2, "topology {T}/dir"),
    (1, "topology {T}/garbage.db"),
    (2, "topology {T}/garbage.csv"),
    (2, "topology {T}/r.db"),
    (2, "topology {T}/r.db --bins 0"),
    (2, "topology {T}/r.db --folds 1"),
    (2, "topology {T}/r.db -o {T}/file"),
    (2, "nosuch"),
    (2, "bench nosuch")
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    """Missing, empty, garbage and damaged inputs, folders where files belong, a good store."""
    folder = tmp_path_factory.mktemp("bad")
    (folder / "empty").write_text("")
    (folder / "garbage").write_bytes(b"\x00\xffgarbage\x01 not anything\n")
    (folder / "garbage.toml").write_text("name = [unclosed\n")
    (folder / "bad.toml").write_text('name = "x"\n[[generators]]\nname = "erdos_renyi_gnp"\nparams = {n = 8, p = 1.5}\n'
                                     '[model]\ncells = ["gru"]\n[[tasks]]\nkind = "classify"\nsize = 50\n')
    (folder / "dir").mkdir()
    search = (Path(__file__).parents[1] / "examples" / "search.toml").read_text()
    (folder / "search.toml").write_text(search)
    (folder / "nosearch.toml").write_text(search.split("[search]")[0])
    (folder / "badsearch.toml").write_text(search.replace("max_weights = 160", "max_weights = -3"))
    (folder / "empty.csv").write_text("")
    (folder / "garbage.csv").write_text('a,b\n1\n"unclosed\n')
    (folder / "garbage.edges").write_text("a b c\nx\n")
    (folder / "g.edges").write_text("0 1\n1 2\n")
    (folder / "garbage.db").write_bytes(b"SQLite format 3\x00" + b"\x07" * 5000)
    (folder / "text.db").write_text("hello")
    (folder / "file").write_text("a file where a folder should be")
    _stored(folder / "r.db", n=4)
    _damage(_stored(folder / "d.db", n=40))
    return folder


def assert_one_line_error(exit_code: int, stderr: str, expected: int, where: str = "") -> None:
    """The contract of every failure: the exit code, a last stderr line "Error: ...", no traceback."""
    lines = stderr.strip().splitlines()
    assert exit_code == expected, f"{where}: exit {exit_code}\n{stderr}"
    assert lines and lines[-1].startswith("Error: "), f"{where}\n{stderr}"
    assert "Traceback" not in stderr, f"{where}\n{stderr}"


@pytest.mark.parametrize(("code", "line"), CASES, ids=[line[:70] for _, line in CASES])
def test_bad_input_is_one_line_with_the_documented_exit_code(bad_files, code, line):
    args = [word.format(T=bad_files) for word in line.split()]
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert_one_line_error(result.exit_code, result.stderr, code, line)


def test_the_cases_cover_every_subcommand():
    covered = {line.split()[0] for _, line in CASES}
    assert set(SUBCOMMANDS) <= covered


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_one_line(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "x"\n')
    spec.chmod(0)
    result = CliRunner().invoke(main, ["bench", "run", str(spec), "--store", str(tmp_path / "r.db")])
    assert_one_line_error(result.exit_code, result.stderr, 1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.one_of(st.integers(-10**12, 10**12), st.just(0)),
       p=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1)))
def test_generate_with_any_numbers_draws_or_refuses_in_one_line(tmp_path, n, p):
    result = CliRunner().invoke(main, ["generate", "erdos_renyi_gnp", "--n", str(n), "--p", repr(p),
                                       "-o", str(tmp_path / "g.graphml")])
    valid = 1 <= n and math.isfinite(p) and 0 <= p <= 1
    small = valid and n <= 10_000_000 and p * n * (n - 1) / 2 <= 50_000_000
    if small and n <= 2000:
        assert result.exit_code == 0, result.output
    elif not small:
        assert_one_line_error(result.exit_code, result.stderr, 2, f"--n {n} --p {p}")


def test_generate_names_the_option_and_limit_of_a_graph_too_large():
    result = CliRunner().invoke(main, ["generate", "erdos_renyi_gnp", "--n", "100000000", "--p", "0.1", "-o", "g.graphml"])
    assert_one_line_error(result.exit_code, result.stderr, 2)
    assert "--n: erdos_renyi_gnp would draw 100,000,000 nodes; the limit is 10,000,000" in result.stderr
    result = CliRunner().invoke(main, ["generate", "complete", "--n", "20000", "-o", "g.graphml"])
    assert "--n: complete would draw about 199,990,000 edges; the limit is 50,000,000" in result.stderr


def test_running_out_of_memory_is_one_runtime_error(monkeypatch, tmp_path):
    """What no size check foresees (a MemoryError anywhere) still ends in one line, exit code 1."""
    import graphprior.cli.graphs_cmd as graphs

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(graphs, "generate_graph", exhausted)
    result = CliRunner().invoke(main, ["generate", "complete", "--n", "10", "-o", str(tmp_path / "g.graphml")])
    assert_one_line_error(result.exit_code, result.stderr, 1)
    assert "graphprior generate ran out of memory" in result.stderr


def test_short_help_table_matches_every_command():
    """``graphprior --help`` lists the commands from SHORT_HELP without importing them: each
    entry must be the command's own first paragraph, and every command must have one."""
    ctx = click.Context(main)
    assert set(SHORT_HELP) == set(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        command = main.get_command(ctx, name)
        for limit in (45, 1000):
            assert click.Command(name, help=SHORT_HELP[name]).get_short_help_str(limit) == \
                command.get_short_help_str(limit), name


def test_help_lists_the_commands_without_importing_them():
    code = ("import sys; from click.testing import CliRunner; from graphprior.cli import main; "
            "out = CliRunner().invoke(main, ['--help']).output; "
            "print(sorted(m for m in ('torch', 'igraph', 'sklearn', 'pandas') if m in sys.modules)); print(out)")
    listed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert listed.splitlines()[0] == "[]"
    for name in SUBCOMMANDS:
        assert f"  {name} " in listed


@pytest.mark.parametrize(("code", "args"), [
    (2, ["generate", "erdos_renyi_gnp", "--n", "100000000", "--p", "0.1", "-o", "{T}/g.graphml"]),
    (1, ["bench", "status", "{T}/d.db"]),
    (2, ["reber", "sample", "--max-length", "1000000000", "--lengths", "uniform"]),
    (1, ["predict", "{T}/garbage.db"]),
    (2, ["nosuch"]),
])
def test_the_installed_command_fails_in_one_line(bad_files, code, args):
    """The same contract through the console script, in a process of its own."""
    command = [str(Path(sys.executable).with_name("graphprior")), *(a.format(T=bad_files) for a in args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert_one_line_error(result.returncode, result.stderr, code, " ".join(args))


def _readme_quick_flow() -> list[list[str]]:
    """The README's commands on the quick preset's store (results.db), in order."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    lines = [line.split("#")[0].split() for line in readme.splitlines() if line.startswith("graphprior ")]
    return [words[1:] for words in lines if "results.db" in words]


def test_the_readmes_flow_runs_top_to_bottom_on_the_quick_presets_store(tmp_path, monkeypatch):
    """The README's own commands (issue 19: its predict step failed on this store), run as
    written; only the speed of the analysis is turned down (repeats, permutations, models)."""
    flow = _readme_quick_flow()
    assert [words[:2] for words in flow] == [["bench", "run"], ["bench", "status"], ["table", "results.db"],
                                             ["predict", "results.db"]]
    monkeypatch.chdir(tmp_path)
    speed = {"run": ["--backend", "serial", "--quiet"],
             "predict": ["--repeats", "1", "--permutations", "1", "--models", "mean,bayesian_ridge,knn"]}
    for words in flow:
        extra = speed.get(words[1] if words[0] == "bench" else words[0], [])
        result = CliRunner().invoke(main, [*words, *extra])
        assert result.exit_code == 0, f"{words}: {result.output}"
        assert "Traceback" not in result.output
    assert "16 done, 0 failed" in CliRunner().invoke(main, ["bench", "status", "results.db"]).output
    assert (tmp_path / "report" / "report.md").exists()
