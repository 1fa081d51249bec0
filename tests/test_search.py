"""graphprior.search: valid genomes within the budget, strategies, resume, surrogate, CLI."""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from killing import kill_after_first_run
from graphprior.cli import main
from graphprior.cli.search_cmd import STRATEGY_NAMES
from graphprior.executors import SerialExecutor
from graphprior.generators import check_parameters, load_graph
from graphprior.search import (
    STRATEGIES,
    SearchSpace,
    recurrent_weights,
    run_search,
    select_by_prediction,
    validate_search_spec,
)
from graphprior.spec import SpecError
from graphprior.store import ResultsStore

SPEC: dict = {
    "name": "tiny-search",
    "seed": 0,
    "generators": [
        {"name": "watts_strogatz", "params": {"n": [6, 8, 10], "k": [2, 4], "p": {"uniform": [0.0, 1.0]}}},
        {"name": "erdos_renyi_gnp", "params": {"n": {"uniform_int": [6, 10]}, "p": {"uniform": [0.05, 0.6]}}},
        {"name": "barabasi_albert", "params": {"n": {"uniform_int": [6, 9]}, "m": {"min": [2, {"div": ["n", 3]}]}}},
    ],
    "model": {"cells": ["rnn_tanh", "gru"]},
    "tasks": [{"kind": "classify", "negatives": "hard", "size": 48}],
    "train": {"epochs": 1, "batch_size": 16, "lr": 0.01},
    "search": {"max_weights": 60, "orientations": ["symmetric", "dag", "random"], "self_loops": [False, True],
               "gate_layouts": ["tiled", "per_gate"], "metric": "test_loss", "mode": "min",
               "batch": 3, "population": 4, "tournament": 2, "proposals": 8},
}


def spec_with(**search: object) -> dict:
    data = copy.deepcopy(SPEC)
    data["search"].update(search)
    return data


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace(validate_search_spec(SPEC))


def assert_valid(space: SearchSpace, genome) -> None:
    assert space.problem(genome) is None
    check_parameters(genome.generator, **space.resolved(genome))  # the generator's own checks
    assert recurrent_weights(space.runs(genome)[0]) <= space.settings.max_weights


# ------------------------------------------------------------------ genomes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_mutation_and_crossover_stay_valid_and_within_budget(space: SearchSpace, seed: int) -> None:
    rng = np.random.default_rng(seed)
    first, second = space.sample(rng), space.sample(rng)
    assert_valid(space, first)
    child = space.mutate(first, rng)
    assert_valid(space, child)
    assert child != first
    crossed = space.crossover(first, child if seed % 2 else second, rng)
    assert_valid(space, crossed)
    for name in ("generator", "graph_seed", "cell", "orientation", "self_loops", "gate_layout"):
        assert getattr(crossed, name) in (getattr(first, name), getattr(child if seed % 2 else second, name))


def test_operators_are_seeded(space: SearchSpace) -> None:
    def draw(seed: int) -> tuple:
        rng = np.random.default_rng(seed)
        a = space.sample(rng)
        return a, space.mutate(a, rng), space.crossover(a, space.sample(rng), rng)

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_budget_counts_gate_blocks(space: SearchSpace) -> None:
    genome = space.sample(np.random.default_rng(0))
    tiled_rnn = genome.__class__(**{**genome.__dict__, "cell": "rnn_tanh", "gate_layout": "tiled"})
    tiled_gru = genome.__class__(**{**genome.__dict__, "cell": "gru", "gate_layout": "tiled"})
    assert space.weights(tiled_gru) == 3 * space.weights(tiled_rnn) > 0


# ------------------------------------------------------------------ the spec


@pytest.mark.parametrize("change, start", [
    ({"search": None}, "search: required table is missing"),
    ({"search": {"max_weights": 60, "populaton": 3}}, "search: unknown key 'populaton'; allowed: max_weights"),
    ({"search": {"max_weights": 60, "tournament": 9, "population": 4}}, "search.tournament: must be at most population"),
    ({"search": {"max_weights": 60, "regressor": "magic"}}, "search.regressor: unknown regressor 'magic'"),
    ({"search": {"max_weights": 60, "orientations": ["sideways"]}}, "search.orientations[0]: "),
    ({"search": {"max_weights": 0}}, "search.max_weights: must be greater than or equal to 1"),
    ({"search": {"max_weights": 5}, "generators": [{"name": "ring_lattice", "params": {"n": [6, 8], "k": 2}}]},
     "search.max_weights: no candidate of 200 drawn from the search space has at most 5 recurrent weights "
     "(the smallest drawn has 12)"),
    ({"search": {"max_weights": 60}, "model": {"mapping": "layered"}}, "model.mapping: a search needs"),
    ({"search": {"max_weights": 60}, "sparsity": {"method": "set"}}, "sparsity: not allowed in a search spec"),
    ({"search": {"max_weights": 60, "proposals": 2}}, "search.proposals: must be at least batch"),
    # a parameter error that mentions "budget" is not a budget problem
    ({"search": {"max_weights": 5}, "generators": [{"name": "barabasi_albert_edges", "params": {
        "n": {"uniform_int": [6, 10]}, "budget": {"uniform_int": [10, 40]}}}]},
     "search.max_weights: no candidate of 200 drawn from the search space has at most 5 recurrent weights"),
    ({"search": {"max_weights": 60, "orientations": ["as_given"]}},
     "search: no candidate of 200 drawn from the search space can be built; the first: orientation 'as_given' "
     "needs directed graphs"),
])
def test_bad_search_spec_is_one_line(change: dict, start: str) -> None:
    data = copy.deepcopy(SPEC)
    data.update(change)
    if data["search"] is None:
        del data["search"]
    with pytest.raises(SpecError) as error:
        validate_search_spec(data)
    assert str(error.value).startswith(start) and "\n" not in str(error.value)


def test_bad_spec_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[[generators]]\nname = "watts_strogatz"\nparams = { n = 8, k = 2, p = 0.1 }\n'
                    "[search]\nmax_weights = 60\nbatch = 0\n")
    result = CliRunner().invoke(main, ["search", str(path), "--budget", "2", "--store", str(tmp_path / "s.db")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == \
        f"Error: {path}: search.batch: must be greater than or equal to 1, got 0"


def test_cli_strategy_names_match() -> None:
    assert STRATEGY_NAMES == STRATEGIES


# ------------------------------------------------------------------ searching


def search(store: Path, strategy: str, budget: int = 10, seed: int = 0, **changes: object):
    return run_search(spec_with(**changes), store, budget, strategy=strategy, seed=seed,
                      executor=SerialExecutor(), progress=False)


@pytest.fixture(scope="module")
def surrogate_run(tmp_path_factory: pytest.TempPathFactory):
    store = tmp_path_factory.mktemp("surrogate") / "s.db"
    return store, search(store, "surrogate", budget=10, explore=0.0)


def test_search_runs_end_to_end_within_budget(surrogate_run) -> None:
    store, result = surrogate_run
    assert len(result.candidates) == 10 == result.trained_runs
    assert len({c.genome for c in result.candidates}) == 10
    space = SearchSpace(result.spec)
    assert all(space.weights(c.genome) <= 60 for c in result.candidates)
    with ResultsStore(store, readonly=True) as results:
        records = list(results.records())
    assert {r.run_id for r in records} == {i for c in result.candidates for i in c.run_ids}
    assert all(r.features["nodes"] >= 6 for r in records)  # stored with their features
    losses = [c.score for c in result.candidates]
    assert result.best.score == min(losses)
    curve = result.best_so_far()
    assert curve[-1] == min(losses) and all(a >= b for a, b in zip(curve, curve[1:]))


def test_store_feeds_predict(surrogate_run) -> None:
    from graphprior.predict import load_table

    store, result = surrogate_run
    table = load_table(store, target="test_loss")
    assert len(table.frame) == len(result.candidates)


def test_surrogate_trains_the_top_predicted(surrogate_run) -> None:
    _, result = surrogate_run
    spec = result.spec.settings
    warmup = [g for g in result.generations if g.predicted is None]
    guided = [g for g in result.generations if g.predicted is not None]
    assert sum(len(g.chosen) for g in warmup) == spec.population
    assert guided and result.proposed > len(result.candidates)
    for generation in guided:
        assert len(generation.proposed) == spec.proposals
        assert len(generation.chosen) == min(spec.batch, 10 - spec.population)
        assert len(set(generation.predicted)) > 1  # a fitted model, not the fallback
        ranked = sorted(range(len(generation.proposed)), key=lambda i: -generation.predicted[i])
        top = {generation.proposed[i] for i in ranked[: len(generation.chosen)]}
        assert set(generation.chosen) == top


def test_select_by_prediction_explores() -> None:
    predicted = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    assert select_by_prediction(predicted, 2, 0.0, np.random.default_rng(0)) == [1, 3]
    picks = [select_by_prediction(predicted, 2, 0.5, np.random.default_rng(s)) for s in range(20)]
    assert all(1 in p and len(p) == 2 for p in picks)
    assert {i for p in picks for i in p} == {0, 1, 2, 3, 4}


def test_ablation_filters_at_random(tmp_path: Path) -> None:
    result = search(tmp_path / "a.db", "evolution-no-surrogate", budget=7)
    guided = result.generations[2:]
    assert all(len(g.proposed) == 8 and len(g.chosen) == 3 and set(g.chosen) <= set(g.proposed) for g in guided)
    assert all(g.predicted is None for g in result.generations)


def test_search_is_reproducible_by_seed(tmp_path: Path) -> None:
    first = search(tmp_path / "1.db", "evolution", budget=7)
    again = search(tmp_path / "2.db", "evolution", budget=7)
    other = search(tmp_path / "3.db", "evolution", budget=7, seed=1)
    assert [c.genome for c in first.candidates] == [c.genome for c in again.candidates]
    assert [c.score for c in first.candidates] == [c.score for c in again.candidates]
    assert [c.genome for c in first.candidates] != [c.genome for c in other.candidates]


def test_sigkilled_search_resumes_without_retraining(tmp_path: Path, surrogate_run) -> None:
    """Killed after its first stored run, the same command finishes the same search and
    trains only what was missing; the CLI writes the graph, features, report and PNG."""
    spec_file = tmp_path / "search.toml"
    data = spec_with(explore=0.0)
    spec_file.write_text(_toml(data))
    assert validate_search_spec(tomllib.loads(spec_file.read_text())).settings == \
        validate_search_spec(data).settings
    store, out = tmp_path / "k.db", tmp_path / "out"
    arguments = ["search", str(spec_file), "--budget", "10", "--store", str(store), "--strategy", "surrogate",
                 "--backend", "serial", "--retrain", "1", "--out", str(out), "--quiet"]
    stored, stderr = kill_after_first_run(arguments, store, seconds=120)
    assert stored >= 1, stderr
    with ResultsStore(store) as results:
        before = results.stored()
        results.set_claim_timeout(0.5)  # the killed driver's claim goes stale at once, not after 60 s
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    assert f"{10 - len(before)} runs trained now" in result.output
    with ResultsStore(store, readonly=True) as results:
        after = results.stored()
    assert all(after[run_id] == kept for run_id, kept in before.items())  # not trained again
    _, uninterrupted = surrogate_run
    trained = {i for c in uninterrupted.candidates for i in c.run_ids}
    assert trained <= set(after) and len(after) == 11  # the same candidates, and one re-training run
    graph = load_graph(out / "best.graphml")
    assert graph.vcount() == int(uninterrupted.best.features["nodes"])
    assert "## Best prior" in (out / "report.md").read_text()
    assert "Re-trained on 1 fresh training seeds" in (out / "report.md").read_text()
    assert (out / "best_so_far.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    features = (out / "best_features.csv").read_text().splitlines()
    assert "density" in features[0].split(",") and len(features) == 2
    assert len((out / "history.csv").read_text().splitlines()) == 11


def _toml(data: dict) -> str:
    """A TOML text of the test spec (tables and inline values only)."""
    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, (dict, list))]
    for generator in data["generators"]:
        lines += ["[[generators]]", f"name = {value(generator['name'])}", f"params = {value(generator['params'])}"]
    for task in data["tasks"]:
        lines += ["[[tasks]]"] + [f"{k} = {value(v)}" for k, v in task.items()]
    for table in ("model", "train", "search"):
        lines += [f"[{table}]"] + [f"{k} = {value(v)}" for k, v in data[table].items()]
    return "\n".join(lines) + "\n"


def test_unbuildable_options_are_never_proposed(space: SearchSpace) -> None:
    mixed = SearchSpace(validate_search_spec(spec_with(orientations=["as_given", "symmetric"])))
    rng = np.random.default_rng(0)
    genomes = [mixed.sample(rng) for _ in range(30)]
    assert {g.orientation for g in genomes} == {"symmetric"}
    assert "needs directed graphs" in mixed.problem(dataclasses.replace(genomes[0], orientation="as_given"))


def test_one_network_under_two_graph_seeds_is_one_candidate(tmp_path: Path) -> None:
    """A deterministic generator ignores the graph seed: the space holds 2 networks, not
    2 x 2**31, and the search trains each once and then stops."""
    data = spec_with(orientations=["symmetric"], self_loops=[False], gate_layouts=["tiled"], batch=2,
                     proposals=4, population=2)
    data["generators"] = [{"name": "ring_lattice", "params": {"n": [6, 8], "k": 2}}]
    data["model"] = {"cells": ["rnn_tanh"]}
    space = SearchSpace(validate_search_spec(data))
    rng = np.random.default_rng(0)
    first, second = space.sample(rng), space.sample(rng)
    twin = dataclasses.replace(first, graph_seed=first.graph_seed + 1)
    assert space.identity(twin) == space.identity(first) and space.weights(twin) == space.weights(first)
    result = run_search(data, tmp_path / "r.db", 5, strategy="random", executor=SerialExecutor(), progress=False)
    assert sorted(dict(c.genome.params)["n"] for c in result.candidates) == [6, 8]
    assert result.trained_runs == 2


@pytest.mark.parametrize("strategy", ["surrogate", "evolution-no-surrogate"])
def test_a_larger_budget_extends_a_search_keeping_its_candidates(tmp_path: Path, strategy: str) -> None:
    """Budget 5 with batch 3 cuts the second generation short; budget 8 afterwards trains
    that generation's other candidate and the next one, and ends where a direct run ends."""
    store = tmp_path / "e.db"
    short = search(store, strategy, budget=5, explore=0.5)
    longer = search(store, strategy, budget=8, explore=0.5)
    direct = search(tmp_path / "d.db", strategy, budget=8, explore=0.5)
    assert [c.genome for c in longer.candidates[:5]] == [c.genome for c in short.candidates]
    assert [c.genome for c in longer.candidates] == [c.genome for c in direct.candidates]
    assert longer.trained_runs == 3


def test_losses_are_finite(surrogate_run) -> None:
    _, result = surrogate_run
    assert all(math.isfinite(c.score) for c in result.candidates)


def test_store_reads_the_records_asked_for(surrogate_run) -> None:
    store, result = surrogate_run
    wanted = [result.candidates[1].run_ids[0], result.candidates[4].run_ids[0]]
    with ResultsStore(store, readonly=True) as results:
        found = results.records_for([*wanted, "not-a-run"])
        every = {r.run_id: r for r in results.records()}
    assert set(found) == set(wanted)
    assert all(found[i] == every[i] for i in wanted)


def test_an_unknown_metric_stops_the_search_with_one_line(tmp_path: Path) -> None:
    from graphprior.search import SearchError

    with pytest.raises(SearchError) as error:
        search(tmp_path / "m.db", "random", budget=3, metric="test_accuracy")
    assert str(error.value).startswith("search.metric: 'test_accuracy' is not a metric of this task's runs; "
                                       "they have cpu_seconds, epoch, fit_seconds, test_acc")


def test_the_example_spec_is_valid() -> None:
    from graphprior.search import load_search_spec

    spec = load_search_spec(Path(__file__).resolve().parents[1] / "examples" / "search.toml")
    assert spec.settings.max_weights == 160 and len(SearchSpace(spec).options["cell"]) == 3


def test_the_sparsity_method_can_be_searched(tmp_path: Path) -> None:
    space = SearchSpace(validate_search_spec(spec_with(sparsity_methods=["none", "set"])))
    rng = np.random.default_rng(0)
    genomes = [space.sample(rng) for _ in range(20)]
    assert {g.sparsity for g in genomes} == {"none", "set"}
    for genome in genomes:
        run = space.runs(genome)[0]
        if genome.sparsity == "none":
            assert run.sparsity is None and "sparsity" not in run.canonical()  # a plain run's id
        else:
            assert (run.sparsity.method, run.sparsity.prior, run.sparsity.masks) == \
                ("set", "start", "per_gate" if genome.gate_layout == "per_gate" else "shared")
    result = search(tmp_path / "sparse.db", "random", budget=3, sparsity_methods=["set"])
    with ResultsStore(tmp_path / "sparse.db", readonly=True) as results:
        records = list(results.records())
    assert len(records) == 3 and all(r.status == "done" and r.config["sparsity"]["method"] == "set" for r in records)
    assert all(c.genome.sparsity == "set" for c in result.candidates)
