"""Sweep specs: validation messages, expansion, stable ids, presets."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphprior.spec import (
    SpecError,
    expand,
    load_preset,
    load_spec,
    preset_names,
    sample_runs,
    validate_spec,
)

WS = {"name": "watts_strogatz", "params": {"n": 12, "k": 4, "p": [0.1, 0.9]}}


def spec(**changes):
    data = {"generators": [copy.deepcopy(WS)], "model": {"cells": ["lstm", "gru"]}}
    data.update(changes)
    return data


def error_of(data) -> str:
    with pytest.raises(SpecError) as info:
        validate_spec(data)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"foo": 1}, "spec: unknown key 'foo'; allowed: name, seed, sampling, n_samples, repetitions, "
                     "seeds, generators, model, tasks, train, sparsity"),
        ({"train": {"epohcs": 3}}, "train: unknown key 'epohcs'; allowed: optimizer, lr, weight_decay, "
                                   "momentum, batch_size, epochs, clip, patience, device, bucket"),
        ({"train": {"epochs": "ten"}}, "train.epochs: must be a valid integer, unable to parse string "
                                       "as an integer, got 'ten'"),
        ({"train": {"epochs": 0}}, "train.epochs: must be in 1..100000, got 0"),
        ({"tasks": [{"test_fraction": 1.5}]}, "tasks[0].test_fraction: must be less than 1, got 1.5"),
        ({"train": {"lr": float("inf")}}, "train.lr: must be a finite number, got inf"),
        ({"model": {"cells": ["lstm", "lsmt"]}},
         "model.cells[1]: must be 'rnn_tanh', 'rnn_relu', 'lstm' or 'gru', got 'lsmt'"),
        ({"model": {"cells": []}}, "model.cells: must have at least 1 item, not 0, got []"),
        ({"model": {"mapping": "layered", "orientation": "symmetric"}},
         "model.orientation: the layered mapping is the DAG by node order: use 'dag' or leave it out"),
        ({"sampling": "random"}, 'n_samples: is required when sampling = "random" (graphs per generator)'),
        ({"n_samples": 3}, 'n_samples: is only allowed with sampling = "random"'),
        ({"train": {"device": "gpu"}}, "train.device: must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu'"),
        ({"seeds": [0, 2**70]}, "seeds[1]: must be less than 9223372036854775808, got 1180591620717411303424"),
        ({"seeds": [-1]}, "seeds[0]: must be greater than or equal to 0, got -1"),
    ],
)
def test_validation_error_is_one_line_naming_key_and_allowed(changes, message):
    assert error_of(spec(**changes)) == message


@pytest.mark.parametrize(
    ("generator", "message"),
    [
        ({"name": "watts_strogats", "params": {}}, "generators[0].name: unknown generator 'watts_strogats'; "
                                                   "allowed: barabasi_albert,"),
        ({"name": "watts_strogatz", "params": {"n": 10, "k": 4}},
         "generators[0].params: missing required parameter 'p' of watts_strogatz"),
        ({"name": "watts_strogatz", "params": {"n": 10, "k": 4, "p": 0.1, "q": 1}},
         "generators[0].params.q: unknown parameter of watts_strogatz; allowed: n, k, p"),
        ({"name": "watts_strogatz", "params": {"n": {"uniform_int": [10, 5]}, "k": 4, "p": 0.1}},
         "generators[0].params.n: uniform_int needs low <= high, got [10, 5]"),
        ({"name": "watts_strogatz", "params": {"n": 10, "k": 4, "p": [0.1, float("nan")]}},
         "generators[0].params.p: a list of values must be non-empty and hold finite numbers, strings or "
         "booleans, got [0.1, nan]"),
        ({"name": "watts_strogatz", "params": {"n": {"normal": [10, 5]}, "k": 4, "p": 0.1}},
         "generators[0].params.n: a table must have exactly one key out of uniform, uniform_int, add, sub, "
         "mul, div, min, max, got ['normal']"),
        ({"name": "watts_strogatz", "params": {"n": 10, "k": {"div": ["x", 2]}, "p": 0.1}},
         "generators[0].params.k: refers to unknown parameter 'x'; known: n, k, p"),
        ({"name": "watts_strogatz", "params": {"n": {"add": ["k", 1]}, "k": {"div": ["n", 2]}, "p": 0.1}},
         "generators[0].params.n: derived values form a cycle: n, k"),
        ({"name": "watts_strogatz", "params": {"n": {"uniform_int": [10, 20]}, "k": 4, "p": 0.1}},
         'generators[0].params.n: a distribution needs sampling = "random"'),
    ],
)
def test_generator_errors_name_the_parameter(generator, message):
    assert error_of(spec(generators=[generator])).startswith(message)


@pytest.mark.parametrize(
    ("generator", "message"),
    [
        ({"name": "watts_strogatz", "params": {"n": 16, "k": 4, "p": [0.1, 1.5]}},
         "generators[0].params: p must be a number in [0.0, 1.0], got 1.5 (in watts_strogatz with "
         "n=16, k=4, p=1.5)"),
        ({"name": "watts_strogatz", "params": {"n": 10, "k": 20, "p": 0.1}},
         "generators[0].params: k must be an integer in [2, 9], got 20"),
        ({"name": "barabasi_albert", "params": {"n": 0, "m": 1}},
         "generators[0].params: n must be an integer >= 2, got 0"),
        ({"name": "watts_strogatz", "params": {"n": [10, 40], "k": {"div": ["n", 2]}, "p": 0.1}},
         "generators[0].params: k must be even and in [2, n) (here n = 10), got 5 (in watts_strogatz with n=10"),
    ],
)
def test_generator_values_are_checked_by_the_generator_before_training(generator, message):
    assert error_of(spec(generators=[generator])).startswith(message)


def test_sampled_generator_values_are_checked_before_training():
    data = spec(sampling="random", n_samples=20, generators=[
        {"name": "erdos_renyi_gnp", "params": {"n": 8, "p": {"uniform": [0.5, 1.5]}}}])
    assert error_of(data).startswith("generators[0].params: p must be a number in [0.0, 1.0], got 1.")


def test_toml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[generators]]\nname = "watts_strogatz"\nparams = { n = 8, k = 2, p = 0.5 }\n[train]\nepochs = -1\n')
    with pytest.raises(SpecError, match=r"bad.toml: train.epochs: must be in 1..100000, got -1$"):
        load_spec(path)
    path.write_text("generators = [")
    with pytest.raises(SpecError, match="bad.toml: not valid TOML"):
        load_spec(path)
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "missing.toml")


def test_grid_expansion_counts_and_ids():
    runs = expand(spec(repetitions=2, seeds=[0, 1], tasks=[{"kind": "classify"}, {"kind": "next_symbol"}]))
    # 2 values of p x 2 repetitions = 4 graphs; x 2 cells x 2 tasks x 2 seeds
    assert len(runs) == 4 * 2 * 2 * 2
    assert len({r.run_id for r in runs}) == len(runs)
    assert len({r.draw_id for r in runs}) == 4
    assert {r.params["p"] for r in runs} == {0.1, 0.9}
    same_graph = [r for r in runs if r.draw_id == runs[0].draw_id]
    assert len(same_graph) == 2 * 2 * 2 and len({r.graph_seed for r in same_graph}) == 1


def test_adding_a_grid_value_keeps_existing_run_ids():
    before = {r.run_id for r in expand(spec())}
    wider = spec()
    wider["generators"][0]["params"]["p"] = [0.1, 0.5, 0.9]
    after = {r.run_id for r in expand(wider)}
    assert before < after and len(after) == 3 * 2


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), samples=st.integers(1, 12))
def test_random_sampling_is_seeded_and_derived_values_follow(seed, samples):
    data = spec(
        seed=seed, sampling="random", n_samples=samples,
        generators=[{"name": "barabasi_albert", "params": {"n": {"uniform_int": [10, 50]}, "m": {"div": ["n", 10]}}},
                    {"name": "erdos_renyi_gnp", "params": {"n": [8, 9], "p": {"uniform": [0.2, 0.4]}}}],
    )
    runs = expand(data)
    assert [r.run_id for r in runs] == [r.run_id for r in expand(data)]
    ba = [r.params for r in runs if r.generator == "barabasi_albert"]
    assert all(10 <= p["n"] <= 50 and p["m"] == p["n"] // 10 for p in ba)
    er = [r.params for r in runs if r.generator == "erdos_renyi_gnp"]
    assert all(p["n"] in (8, 9) and 0.2 <= p["p"] <= 0.4 for p in er)
    assert len({r.draw_id for r in runs}) <= 2 * samples


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 200), a=st.integers(1, 9), b=st.integers(-5, 5))
def test_derived_expressions(n, a, b):
    params = {"n": n, "d": {"max": [{"div": ["n", a]}, {"add": [{"mul": ["n", 0]}, b]}]}, "m": {"sub": ["n", "d"]}}
    data = spec(generators=[{"name": "erdos_renyi_gnm", "params": params}], model={"cells": ["gru"]})
    # `d` is not a parameter of erdos_renyi_gnm: the spec names it
    assert error_of(data).startswith("generators[0].params.d: unknown parameter of erdos_renyi_gnm")
    data["generators"][0]["params"] = {"n": n, "m": {"sub": ["n", {"max": [{"div": ["n", a]}, b]}]}}
    m = n - max(n // a, b)
    if not 0 <= m <= n * (n - 1) // 2:  # the generator's own check, before any training
        assert error_of(data).startswith(f"generators[0].params: m must be an integer in [0, {n * (n - 1) // 2}]")
        return
    (run,) = expand(data)
    assert run.params == {"n": n, "m": m}


def test_run_ids_are_stable_across_key_order():
    forward = spec(generators=[{"name": "watts_strogatz", "params": {"n": 12, "k": 4, "p": 0.3}}])
    backward = spec(generators=[{"name": "watts_strogatz", "params": {"p": 0.3, "k": 4, "n": 12}}])
    assert [r.run_id for r in expand(forward)] == [r.run_id for r in expand(backward)]
    changed = spec(generators=[{"name": "watts_strogatz", "params": {"n": 12, "k": 4, "p": 0.3}}], train={"lr": 0.01})
    assert not {r.run_id for r in expand(forward)} & {r.run_id for r in expand(changed)}


def test_sample_runs_is_a_seeded_subset_in_order():
    runs = expand(spec(repetitions=5))
    sample = sample_runs(runs, 7, seed=3)
    assert len(sample) == 7 and sample == sample_runs(runs, 7, seed=3)
    positions = [runs.index(r) for r in sample]
    assert positions == sorted(positions)
    assert sample_runs(runs, None) == runs
    with pytest.raises(ValueError, match="limit must be >= 1"):
        sample_runs(runs, 0)


def test_presets_match_their_protocols():
    assert set(preset_names()) >= {"quick", "paper", "prior"}
    paper = expand(load_preset("paper"))
    assert len(paper) == 800
    assert {r.cell for r in paper} == {"rnn_tanh", "rnn_relu", "lstm", "gru"}
    assert {(r.mapping, r.orientation) for r in paper} == {("layered", "dag")}
    assert len({r.draw_id for r in paper}) == 200
    for run in paper:
        n = run.params["n"]
        assert 10 <= n <= 50
        assert run.params == ({"n": n, "m": n // 10} if run.generator == "barabasi_albert"
                              else {"n": n, "k": n // 5, "p": 1.0})
        assert (run.task.size, run.task.negatives, run.train.epochs, run.train.batch_size,
                run.train.lr, run.train.clip) == (25_000, "paper", 15, 128, 1e-3, 5.0)
    assert len(expand(load_preset("quick"))) == 16
    prior = expand(load_preset("prior"))
    assert {r.task.kind for r in prior} == {"classify", "next_symbol"} and {r.mapping for r in prior} == {"recurrent"}
    assert len(prior) == 1800 and {r.seed for r in prior} == {0, 1, 2}
    assert len({r.draw_id for r in prior}) == 75 and all(6 <= r.params["n"] <= 32 for r in prior)
    with pytest.raises(SpecError, match="unknown preset 'nope'; allowed: .*paper"):
        load_preset("nope")


def test_to_toml_dict_round_trips():
    data = spec(sampling="random", n_samples=2,
                generators=[{"name": "barabasi_albert", "params": {"n": {"uniform_int": [10, 50]}, "m": {"div": ["n", 10]}}}])
    original = validate_spec(data)
    assert validate_spec(original.to_toml_dict()) == original
