"""Sweep execution: real tiny runs end to end, failures recorded, resume, grouping."""

from __future__ import annotations

import functools
import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphprior.priors import recurrent_mask
from graphprior.spec import expand
from graphprior.store import ResultsStore, RunRecord, read_table
from graphprior.sweep import (
    build_model,
    group_runs,
    guarded,
    library_versions,
    outcome,
    pending_runs,
    prior_graphs,
    run_group,
    run_one,
    run_sweep,
)

TINY_TASK = {"kind": "classify", "negatives": "paper", "size": 120}
TINY_TRAIN = {"epochs": 1, "batch_size": 32, "lr": 0.01}


def tiny_spec(**changes) -> dict:
    data = {
        "name": "tiny",
        "generators": [
            {"name": "watts_strogatz", "params": {"n": 6, "k": 2, "p": [0.0, 0.5]}},
            # valid values, but this seed's one try is disconnected: no graph, so its runs fail
            {"name": "connected_watts_strogatz", "params": {"n": 6, "k": 2, "p": 0.85, "tries": 1}},
        ],
        "model": {"cells": ["rnn_tanh", "gru"]},
        "tasks": [TINY_TASK],
        "train": TINY_TRAIN,
    }
    data.update(changes)
    return data


def fake_run(config) -> RunRecord:
    """A stand-in for run_one: instant, deterministic, raises for p == 0.5 with gru."""
    if config.cell == "gru" and config.params.get("p") == 0.5:
        raise RuntimeError(f"injected failure\nfor {config.run_id}")
    return RunRecord(run_id=config.run_id, graph_id=config.draw_id, seed=config.seed, status="done",
                     config=config.canonical(), flat=config.flat(), metrics={"test_acc": config.params["p"]})


fake_group = functools.partial(run_group, run_fn=fake_run)


def test_tiny_sweep_end_to_end_with_two_workers(tmp_path):
    store = tmp_path / "r.db"
    summary = run_sweep(tiny_spec(), store, workers=2, progress=False)
    assert (summary.total, summary.done, summary.failed, summary.skipped) == (6, 4, 2, 0)
    table = read_table(store)
    assert len(table) == 6 and table.run_id.is_unique
    done = table[table.status == "done"]
    assert set(done.cell) == {"rnn_tanh", "gru"} and set(done.p) == {0.0, 0.5}
    assert done.test_acc.between(0, 1).all() and (done.epoch == 1).all()
    assert {"test_loss", "train_loss"} <= set(table.columns)
    failed = table[table.status == "failed"]
    assert set(failed.generator) == {"connected_watts_strogatz"}
    assert failed.reason.str.startswith("RuntimeError: no connected Watts–Strogatz graph").all()
    with ResultsStore(store) as results:
        records = {r.run_id: r for r in results.records()}
    some = next(r for r in records.values() if r.status == "done")
    assert some.features and some.versions == library_versions() and some.history[0]["epoch"] == 1
    # features are the graph's: the same graph gives the same features for both cells
    by_graph = {}
    for record in records.values():
        if record.status == "done":
            by_graph.setdefault(record.graph_id, []).append(record.features)
    assert all(f == fs[0] for fs in by_graph.values() for f in fs)
    assert set(some.features) <= set(table.columns) | {f"feature_{name}" for name in some.features}


def test_same_seed_same_numbers():
    (config, *_) = expand(tiny_spec(generators=[{"name": "watts_strogatz", "params": {"n": 6, "k": 2, "p": 0.3}}]))
    first, second = run_one(config), run_one(config)
    scores = [{k: v for k, v in r.metrics.items() if not k.endswith("seconds")} for r in (first, second)]
    assert scores[0] == scores[1] and first.history == second.history
    assert {"test_acc", "test_loss", "fit_seconds", "cpu_seconds"} <= set(first.metrics)


def test_failures_are_recorded_and_the_sweep_goes_on(tmp_path):
    store = tmp_path / "r.db"
    spec = tiny_spec(generators=[{"name": "watts_strogatz", "params": {"n": 6, "k": 2, "p": [0.1, 0.5]}}])
    summary = run_sweep(spec, store, backend="serial", group_fn=fake_group, group_size=3, progress=False)
    assert (summary.done, summary.failed) == (3, 1)
    table = read_table(store).set_index("cell")
    assert table.loc["gru"].set_index("p").loc[0.5, "reason"].startswith("RuntimeError: injected failure for ")
    # resuming skips every stored run, done or failed; --retry-failed re-runs the failed one
    again = run_sweep(spec, store, backend="serial", group_fn=fake_group, progress=False)
    assert (again.skipped, again.done, again.failed) == (4, 0, 0)
    retry = run_sweep(spec, store, backend="serial", group_fn=fake_group, retry_failed=True, progress=False)
    assert (retry.skipped, retry.failed) == (3, 1)
    assert len(read_table(store)) == 4


def test_local_pool_runs_an_injected_group_trainer(tmp_path):
    store = tmp_path / "r.db"
    spec = tiny_spec(generators=[{"name": "watts_strogatz", "params": {"n": 6, "k": 2, "p": [0.1, 0.2, 0.5]}}])
    summary = run_sweep(spec, store, workers=2, group_fn=fake_group, group_size=2, progress=False)
    assert (summary.done, summary.failed) == (5, 1)
    assert sorted(read_table(store).test_acc.dropna()) == [0.1, 0.1, 0.2, 0.2, 0.5]


def test_limit_runs_a_seeded_sample_and_resumes_within_it(tmp_path):
    store = tmp_path / "r.db"
    spec = tiny_spec(generators=[{"name": "watts_strogatz", "params": {"n": 6, "k": 2, "p": [0.1, 0.2, 0.3]}}],
                     model={"cells": ["rnn_tanh"]})
    first = run_sweep(spec, store, backend="serial", group_fn=fake_group, limit=2, progress=False)
    assert (first.total, first.done) == (2, 2)
    assert run_sweep(spec, store, backend="serial", group_fn=fake_group, limit=2, progress=False).skipped == 2
    assert run_sweep(spec, store, backend="serial", group_fn=fake_group, progress=False).done == 1


class _History:
    def __init__(self, status, reason, final):
        self.status, self.reason, self.final = status, reason, final


def test_outcome_of_a_history():
    assert outcome(_History("done", "", {"test_loss": 0.3})) == ("done", None)
    assert outcome(_History("done", "early stop after epoch 2", {})) == ("done", "early stop after epoch 2")
    assert outcome(_History("failed", "non-finite training loss (nan) in epoch 1", {})) == (
        "failed", "non-finite training loss (nan) in epoch 1")
    assert outcome(_History("done", "", {"test_loss": math.nan})) == ("failed", "non-finite final metric test_loss")


def test_guarded_turns_exceptions_into_one_line_reasons():
    (config, *_) = expand(tiny_spec(generators=[{"name": "watts_strogatz", "params": {"n": 6, "k": 2, "p": 0.5}}],
                                    model={"cells": ["gru"]}))
    record = guarded(fake_run, config)
    assert record.status == "failed" and record.reason == f"RuntimeError: injected failure for {config.run_id}"
    assert record.run_id == config.run_id and record.config == config.canonical()


@settings(max_examples=20, deadline=None)
@given(size=st.integers(1, 5), done=st.sets(st.integers(0, 11)), failed=st.sets(st.integers(0, 11)))
def test_grouping_and_pending_runs(size, done, failed):
    runs = expand(tiny_spec(generators=[{"name": "erdos_renyi_gnp", "params": {"n": [5, 6], "p": [0.1, 0.2, 0.3]}}]))
    groups = group_runs(runs, size)
    assert sorted(r.run_id for g in groups for r in g) == sorted(r.run_id for r in runs)
    assert all(1 <= len(g) <= size and len({r.group_key() for r in g}) == 1 for g in groups)
    statuses = {runs[i].run_id: "done" for i in done} | {runs[i].run_id: "failed" for i in failed - done}
    assert {r.run_id for r in pending_runs(runs, statuses)} == {r.run_id for r in runs} - set(statuses)
    assert {r.run_id for r in pending_runs(runs, statuses, retry_failed=True)} == (
        {r.run_id for r in runs} - {k for k, v in statuses.items() if v == "done"})
    with pytest.raises(ValueError, match="group_size must be >= 1, got 0"):
        group_runs(runs, 0)


def test_executor_choices_and_missing_ray(monkeypatch, tmp_path):
    from graphprior.executors import ExecutionError, LocalExecutor, make_executor

    with pytest.raises(ValueError, match="backend must be one of local, ray, serial, got 'spark'"):
        make_executor("spark")
    with pytest.raises(ValueError, match="address is only used with backend 'ray'"):
        make_executor("local", address="auto")
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        LocalExecutor(0)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ExecutionError, match=r"the ray backend needs Ray: pip install 'graphprior\[ray\]'"):
        run_sweep(tiny_spec(), tmp_path / "r.db", backend="ray", group_fn=fake_group, progress=False)


@pytest.mark.parametrize(
    ("model", "task"),
    [
        ({"mapping": "layered", "cells": ["lstm"]}, {"kind": "classify", "size": 60}),
        ({"gate_layout": "per_gate", "orientation": "random", "cells": ["gru"]}, {"kind": "next_symbol", "size": 40}),
        ({"orientation": "dag", "self_loops": True, "cells": ["rnn_relu"]}, {"kind": "continual_windows", "size": 8}),
        ({"cells": ["lstm"]}, {"kind": "continual", "size": 32, "streams": 4, "window": 20, "stream_symbols": 2000}),
        ({"mapping": "layered", "cells": ["gru"]},
         {"kind": "continual", "size": 32, "streams": 4, "window": 20, "stream_symbols": 2000}),
    ],
)
def test_every_mapping_and_task_runs(model, task):
    data = tiny_spec(generators=[{"name": "barabasi_albert", "params": {"n": 8, "m": 2}}], model=model, tasks=[task])
    (config,) = expand(data)
    record = run_one(config)
    assert record.status == "done", record.reason
    assert 0 <= record.metrics["test_acc"] <= 1 and record.features["nodes"] == 8
    stream = {k: v for k, v in record.metrics.items() if k.startswith("stream_")}
    if task["kind"] == "continual":  # the paper's measures on a fresh unbroken stream
        assert set(stream) == {"stream_solved", "stream_symbols_before_error", "stream_strings_before_error",
                               "stream_symbol_accuracy", "stream_long_range_accuracy"}
        assert 0 <= stream["stream_symbols_before_error"] <= 2000
        assert (record.flat["streams"], record.flat["window"]) == (4, 20)
    else:
        assert stream == {} and record.flat["window"] is None


def test_the_stream_protocol_has_its_own_run_ids_and_leaves_the_others_alone():
    """Old continual runs (windows reset at each start) are now ``continual_windows``;
    ``continual`` runs carry their stream settings in the run id; other tasks' run ids
    do not mention the stream fields at all."""
    from graphprior.spec import TaskSpec

    assert "window" not in TaskSpec(kind="next_symbol").model_dump()
    stream = TaskSpec(kind="continual")
    assert (stream.streams, stream.window, stream.stream_symbols, stream.grammar) == (16, 50, 100_000, "embedded")
    assert TaskSpec(kind="continual", window=20) != stream


def test_records_of_equal_graphs_share_a_graph_id():
    # WS without rewiring is the ring lattice for every graph seed: one graph, one group
    data = tiny_spec(generators=[{"name": "watts_strogatz", "params": {"n": 6, "k": 2, "p": 0.0}},
                                 {"name": "erdos_renyi_gnp", "params": {"n": 6, "p": 0.5}}],
                     model={"cells": ["rnn_relu"]}, repetitions=2)
    records = run_group(expand(data))
    assert all(r.status == "done" for r in records), [r.reason for r in records]
    by_generator: dict[str, set] = {}
    for record in records:
        by_generator.setdefault(record.flat["generator"], set()).add(record.graph_id)
    assert len(by_generator["watts_strogatz"]) == 1 and len(by_generator["erdos_renyi_gnp"]) == 2


def test_per_gate_layout_draws_one_graph_per_gate():
    data = tiny_spec(generators=[{"name": "erdos_renyi_gnp", "params": {"n": 10, "p": 0.3}}],
                     model={"gate_layout": "per_gate", "cells": ["lstm"]})
    (config,) = expand(data)
    graphs = prior_graphs(config)
    assert len(graphs) == 4 and len({tuple(g.get_edgelist()) for g in graphs}) == 4
    tiled = prior_graphs(config.model_copy(update={"gate_layout": "tiled"}))
    assert [g.get_edgelist() for g in tiled] == [graphs[0].get_edgelist()]
    mask = build_model(config, graphs, vocabulary_size=7, task="classify").rnn.masks["weight_hh_l0"]
    blocks = mask.reshape(4, 10, 10)
    assert all(blocks[i].equal(recurrent_mask(g)) for i, g in enumerate(graphs))


@pytest.mark.parametrize("engine", ["batched", "separate"])
def test_ensemble_group_trainer_matches_runs_one_by_one(engine):
    """Runs trained together as one stack get the records they get alone (float tolerance);
    a run whose graph cannot be drawn fails on its own."""
    from graphprior.sweep import run_ensemble

    configs = expand(tiny_spec())
    together = run_ensemble(configs, engine=engine)
    assert [r.run_id for r in together] == [c.run_id for c in configs]
    for config, record in zip(configs, together):
        alone = run_one(config) if config.generator == "watts_strogatz" else guarded(run_one, config)
        assert (record.status, record.reason) == (alone.status, alone.reason)
        if record.status != "done":
            assert record.reason.startswith("RuntimeError: no connected Watts–Strogatz graph")
            continue
        assert record.features == pytest.approx(alone.features, nan_ok=True)
        for key, value in alone.metrics.items():
            if not key.endswith("seconds"):
                assert record.metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
        assert len(record.history) == len(alone.history)


def test_groups_default_to_the_ensemble_trainer(tmp_path):
    store = tmp_path / "r.db"
    summary = run_sweep(tiny_spec(), store, backend="serial", group_size=8, progress=False)
    assert (summary.done, summary.failed) == (4, 2)
    assert read_table(store).run_id.is_unique


def test_layered_runs_of_different_shapes_share_one_group():
    """The study's layered mapping: DAGs of different sizes share one group and one fit
    call (one model after another, on the compiled network), with the records they get alone."""
    from graphprior.sweep import run_ensemble

    spec = tiny_spec(
        generators=[{"name": "barabasi_albert", "params": {"n": [6, 9], "m": 2}}],
        model={"mapping": "layered", "orientation": "dag", "cells": ["gru"]},
    )
    configs = expand(spec)
    assert len({c.group_key() for c in configs}) == 1
    together = run_ensemble(configs)
    for config, record in zip(configs, together):
        alone = run_one(config)
        assert record.status == alone.status == "done"
        for key, value in alone.metrics.items():
            if not key.endswith("seconds"):
                assert record.metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_a_run_failing_after_training_fails_alone_in_an_ensemble(monkeypatch):
    """An error while finishing one run (here: its features) is that run's failure, as in
    run_group, never the whole group's."""
    import graphprior.sweep as sweep

    configs = [c for c in expand(tiny_spec()) if c.generator == "watts_strogatz" and c.cell == "gru"]
    bad_edges = sweep.prior_graphs(configs[0])[0].get_edgelist()
    assert sweep.prior_graphs(configs[1])[0].get_edgelist() != bad_edges
    real = sweep.structural_features

    def features(graphs):
        if graphs[0].get_edgelist() == bad_edges:
            raise RuntimeError("features broke")
        return real(graphs)

    monkeypatch.setattr(sweep, "structural_features", features)
    records = sweep.run_ensemble(configs, engine="batched")
    assert [(r.status, r.reason) for r in records] == [("failed", "RuntimeError: features broke"), ("done", None)]


class WeightNorm:
    """A hook recording the weight norm per epoch (picklable: module level)."""

    def on_epoch_end(self, state):
        import torch

        with torch.no_grad():
            norm = torch.linalg.vector_norm(torch.cat([p.reshape(-1) for p in state.model.parameters()]))
        state.record("weight_norm", float(norm))


@pytest.mark.parametrize("group_size", [1, 8])
def test_values_a_hook_records_reach_the_store(tmp_path, group_size):
    from graphprior.sweep import run_ensemble

    store = tmp_path / "r.db"
    group_fn = functools.partial(run_ensemble, hooks=[WeightNorm()]) if group_size > 1 else \
        functools.partial(run_group, run_fn=functools.partial(run_one, hooks=[WeightNorm()]))
    run_sweep(tiny_spec(), store, backend="serial", group_size=group_size, group_fn=group_fn, progress=False)
    with ResultsStore(store) as results:
        records = [r for r in results.records() if r.status == "done"]
    assert len(records) == 4
    for record in records:
        norms = [epoch["weight_norm"] for epoch in record.history]
        assert len(norms) == len(record.history) >= 1 and all(n > 0 for n in norms)
