"""Sparsity during learning in sweeps: the [sparsity] spec section, its runs, their records,
the `sparse` preset and resuming a dynamic-sparsity sweep after SIGKILL."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from killing import kill_after_first_run, stored_count
from graphprior.executors import make_executor
from graphprior.features import FEATURE_NAMES, graph_features
from graphprior.predict import load_table
from graphprior.priors import mask_to_graph
from graphprior.sparsity import sparsity_hook, sparsity_results, steps_per_epoch
from graphprior.spec import SpecError, expand, load_preset, validate_spec
from graphprior.store import ResultsStore
from graphprior.sweep import build_run, run_ensemble, run_one, run_sweep, train_config
from rnn_models.dynamic import DNW, SET, DynamicSparsity, RigL, jaccard
from rnn_models.pruning import model_masks
from rnn_models.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _spec(sparsity: object = None, epochs: int = 3, **changes: object) -> dict:
    """A tiny sweep: WS graphs of 8 units as an LSTM, ``epochs`` epochs on 200 Reber strings."""
    data = {
        "name": "tiny-sparse",
        "generators": [{"name": "watts_strogatz", "params": {"n": 8, "k": 2, "p": 0.5}}],
        "model": {"cells": ["lstm"]},
        "tasks": [{"kind": "classify", "size": 200}],
        "train": {"epochs": epochs, "batch_size": 25, "lr": 0.02},
        **changes,
    }
    if sparsity is not None:
        data["sparsity"] = sparsity
    return data


FREE = {"method": "set", "prior": "none", "density": 0.25}


# ------------------------------------------------------------------ the spec section


def test_a_spec_without_the_section_keeps_its_runs_and_ids():
    plain = expand(_spec())
    assert "sparsity" not in plain[0].canonical()
    assert [r.run_id for r in plain] == [r.run_id for r in expand({**_spec(), "sparsity": []})]
    sparse = expand(_spec({"method": "static"}))
    assert sparse[0].canonical()["sparsity"]["method"] == "static"
    assert sparse[0].run_id != plain[0].run_id
    assert "sparsity" not in validate_spec(_spec()).to_toml_dict()


def test_methods_and_densities_multiply_the_runs_like_cells():
    runs = expand(_spec({"method": ["static", "set", "rigl", "dnw"], "prior": "none", "density": [0.5, 0.25]},
                        seeds=[0, 1]))
    assert len(runs) == 4 * 2 * 2 == len({r.run_id for r in runs})
    assert {(r.sparsity.method, r.sparsity.density) for r in runs} == {
        (m, d) for m in ("static", "set", "rigl", "dnw") for d in (0.5, 0.25)}
    assert runs[0].flat()["sparsity_method"] == "static" and runs[0].flat()["sparsity_density"] == 0.5


def test_several_tables_and_their_generators_select_the_graphs():
    data = _spec([{"method": "static", "generators": "barabasi_albert"},
                  {"method": ["set", "rigl"], "prior": "none", "density": 0.25, "generators": ["watts_strogatz"]},
                  {"method": "dnw", "prior": "confine", "density": 0.5, "freeze": 0.9}])
    data["generators"].append({"name": "barabasi_albert", "params": {"n": 8, "m": 2}})
    runs = expand(data)
    settings = sorted((r.generator, r.sparsity.method, r.sparsity.prior) for r in runs)
    assert settings == [("barabasi_albert", "dnw", "confine"), ("barabasi_albert", "static", "start"),
                        ("watts_strogatz", "dnw", "confine"), ("watts_strogatz", "rigl", "none"),
                        ("watts_strogatz", "set", "none")]


@pytest.mark.parametrize(("sparsity", "message"), [
    ({"method": "set", "prior": "none", "density": 1.5},
     "sparsity[0].density[0]: must be less than or equal to 1, got 1.5"),
    ({"method": "set", "prior": "none", "density": 0.0},
     "sparsity[0].density[0]: must be greater than 0, got 0.0"),
    ({"method": ["rigl", "set"], "prior": "none", "density": 0.5, "freeze": 2},
     "sparsity[0].freeze: is for the early-frozen variant of rigl and dnw, not 'set'"),
    ({"method": "static", "freeze": 0.9}, "sparsity[0].freeze: is for the early-frozen variant of rigl and dnw, "
                                          "not 'static'"),
    ({"method": "rigl", "density": 0.5},
     'sparsity[0].density: is the prior\'s own with prior = "start": leave it out, or use prior = "confine" or "none"'),
    ({"method": "rigl", "prior": "confine"}, 'sparsity[0].density: is required with prior = "confine"'),
    ({"method": "lth"}, "sparsity[0].method[0]: must be 'static', 'set', 'rigl' or 'dnw', got 'lth'"),
    ({"method": "rigl", "freeze": 4}, "sparsity[0].freeze: epoch 4 is after the last epoch (3)"),
    ({"method": "rigl", "freeze": 0}, "sparsity[0].freeze: must be an epoch (int >= 1) or an epoch-to-epoch "
                                      "Jaccard threshold (float in (0, 1]), got 0"),
    ({"method": "rigl", "end": 1.5}, "sparsity[0].end: must be a step (int >= 1) or a fraction of training "
                                     "(float in (0, 1]), got 1.5"),
    ({"method": "set", "feature_epochs": [1, 7]}, "sparsity[0].feature_epochs: epoch 7 is after the last epoch (3)"),
    ({"method": "set", "generators": "erdos"},
     "sparsity[0].generators[0]: unknown generator 'erdos'; the spec's: watts_strogatz"),
    ({"method": "set", "masks": "tiled"}, "sparsity[0].masks: must be 'shared' or 'per_gate', got 'tiled'"),
    ({"method": "set", "speed": 2}, "sparsity[0]: unknown key 'speed'; allowed: prior, weights, allocation, masks, "
                                    "update_every, drop_fraction, end, freeze, feature_epochs, method, density, "
                                    "generators"),
])
def test_bad_sections_are_one_line_naming_the_field(sparsity, message):
    with pytest.raises(SpecError) as error:
        validate_spec(_spec(sparsity))
    assert str(error.value) == message


def test_per_gate_priors_need_per_gate_masks():
    data = _spec({"method": "set"}, model={"cells": ["gru"], "gate_layout": "per_gate"})
    with pytest.raises(SpecError, match=r'^sparsity\[0\].masks: must be "per_gate" with gate_layout = "per_gate"'):
        validate_spec(data)
    (run,) = expand({**data, "sparsity": {"method": "set", "masks": "per_gate", "update_every": 2}})
    record = run_one(run)
    assert record.status == "done" and record.metrics["mask_density"] == pytest.approx(
        float(model_masks(build_run(run).model)["rnn.weight_hh_l0"].float().mean()))


def test_layered_runs_cannot_drop_their_prior():
    data = _spec({"method": "set", "prior": "none", "density": 0.5}, model={"mapping": "layered", "cells": ["gru"]})
    with pytest.raises(SpecError, match=r'^sparsity\[0\].prior: the layered mapping is its prior\'s structure'):
        validate_spec(data)


# ------------------------------------------------------------------ the hook of a run


def test_the_hook_of_each_setting():
    cases = {"static": DynamicSparsity, "set": SET, "rigl": RigL, "dnw": DNW}
    for method, kind in cases.items():
        (run,) = expand(_spec({"method": method, "prior": "none", "density": 0.25, "update_every": 3,
                               "end": 0.5, "allocation": "erk", "masks": "per_gate"}))
        built = build_run(run)
        hook = sparsity_hook(run, built.train)
        assert type(hook) is kind
        assert (hook.density, hook.allocation, hook.shared_gates, hook.weights, hook.confine, hook.seed) == (
            0.25, "erk", False, "hh", False, run.seed)
        steps = steps_per_epoch(run, built.train)
        assert steps == 6  # 150 training strings in batches of 25
        if method in ("set", "rigl"):
            assert (hook.schedule.update_every, hook.schedule.end_step) == (3, round(0.5 * 3 * steps))
    (run,) = expand(_spec({"method": "rigl", "prior": "confine", "density": 0.5, "end": 7, "freeze": 2}))
    hook = sparsity_hook(run, build_run(run).train)
    assert (hook.schedule.end_step, hook.freeze_epoch, hook.freeze_jaccard, hook.confine) == (7, 2, None, True)
    (run,) = expand(_spec({"method": "dnw", "prior": "confine", "density": 0.5, "freeze": 0.95}))
    hook = sparsity_hook(run, build_run(run).train)
    assert (hook.freeze_epoch, hook.freeze_jaccard) == (None, 0.95)


def test_prior_none_trains_an_unmasked_model_from_a_random_start():
    (run,) = expand(_spec({"method": "static", "prior": "none", "density": 0.25}))
    built = build_run(run)
    assert bool(model_masks(built.model)["rnn.weight_hh_l0"].all())  # the prior is not a mask
    (prior,) = expand(_spec({"method": "static"}))
    assert not bool(model_masks(build_run(prior).model)["rnn.weight_hh_l0"].all())


# ------------------------------------------------------------------ records


def test_a_record_holds_the_mask_its_emergence_and_its_features():
    (run,) = expand(_spec({"method": "set", "prior": "none", "density": 0.25, "update_every": 2,
                           "feature_epochs": [1]}))
    record = run_one(run)
    assert record.status == "done"
    metrics = record.metrics
    assert metrics["mask_density"] == pytest.approx(16 / 64)  # round(0.25 * 64) connections of 8 x 8
    assert (metrics["frozen_epoch"], metrics["dense_gradient_entries"], metrics["dense_gradient_passes"]) == (0, 0, 0)
    jaccards = [row["mask_jaccard_final"] for row in record.history]
    assert jaccards[-1] == 1.0 and record.history[-1]["mask_hamming_final"] == 0.0
    assert metrics["determined_epoch"] == next(e for e, j in enumerate(jaccards, 1) if j >= 0.9)
    assert "feature_edges" in record.history[0] and "feature_edges" not in record.history[1]
    assert set(record.features) == set(FEATURE_NAMES)
    assert set(record.features) == {k.removeprefix("feature_") for k in record.history[0] if k.startswith("feature_")}


def by_hand(mask: torch.Tensor) -> dict[str, float]:
    """Features of a recurrent mask in the records' convention: the undirected graph of its
    connections between distinct units."""
    pairs = mask & ~torch.eye(mask.shape[0], dtype=torch.bool)
    return graph_features(mask_to_graph(pairs, backend="igraph", directed=False))


def test_the_final_and_freeze_epoch_features_are_those_of_the_masks():
    (run,) = expand(_spec({"method": "rigl", "prior": "none", "density": 0.25, "update_every": 1, "freeze": 2}))
    built = build_run(run)
    hook = sparsity_hook(run, built.train)
    history = fit(built.model, built.train, built.test, train_config(run), hooks=[hook])
    metrics, rows, features = sparsity_results(run, built.model, hook, list(history.epochs))
    assert metrics["frozen_epoch"] == 2 and hook.frozen_epoch == 2
    hh = built.model.rnn.masks["weight_hh_l0"]
    assert features == by_hand(hh[:8])
    assert features != by_hand(hook.epoch_masks[0].view(8, 8))  # the mask changed after epoch 1
    expected = by_hand(hook.epoch_masks[1].view(8, 8))  # the connections (row = target, col = source) after epoch 2
    assert {k.removeprefix("feature_"): v for k, v in rows[1].items() if k.startswith("feature_")} == expected
    assert not any(k.startswith("feature_") for k in rows[0])
    assert [r["mask_jaccard_final"] for r in rows] == [jaccard(m, hook.epoch_masks[-1]) for m in hook.epoch_masks]


def test_a_confined_run_keeps_its_mask_inside_the_prior():
    (run,) = expand(_spec({"method": "rigl", "prior": "confine", "density": 0.5, "update_every": 1}))
    prior = build_run(run).model.rnn.masks["weight_hh_l0"].clone()
    built = build_run(run)
    hook = sparsity_hook(run, built.train)
    fit(built.model, built.train, built.test, train_config(run), hooks=[hook])
    final = built.model.rnn.masks["weight_hh_l0"]
    assert bool((final <= prior).all()) and int(final.sum()) == 4 * round(0.5 * int(prior[:8].sum()))


def test_dense_gradient_work_is_stored_for_rigl_and_dnw():
    runs = expand(_spec({"method": ["rigl", "dnw"], "prior": "none", "density": 0.25, "update_every": 2}))
    records = {r.config["sparsity"]["method"]: r for r in map(run_one, runs)}
    # DNW reads the dense gradient at every step (6 a epoch), RigL at its update steps
    assert records["dnw"].metrics["dense_gradient_passes"] == 3 * 6
    updates = [s for s in range(1, 19) if s % 2 == 0 and s < round(0.75 * 18)]  # every 2 steps before the end
    assert records["rigl"].metrics["dense_gradient_passes"] == len(updates)
    assert records["dnw"].metrics["dense_gradient_entries"] == 3 * 6 * 4 * 48  # inactive 48 of 64, 4 gates


def test_the_group_trainer_trains_sparsity_runs_one_by_one():
    sparse = expand(_spec({"method": "set", "prior": "none", "density": 0.25, "update_every": 2}, seeds=[0, 1]))
    plain = expand(_spec(seeds=[0, 1]))
    records = run_ensemble([*plain, *sparse], engine="batched")  # a stack for the plain ones
    assert [r.run_id for r in records] == [r.run_id for r in [*plain, *sparse]]
    assert all(r.status == "done" for r in records)
    for config, record in zip(sparse, records[2:]):
        alone = run_one(config)
        assert record.metrics["test_acc"] == pytest.approx(alone.metrics["test_acc"])
        assert record.history[-1]["mask_jaccard_prev"] == alone.history[-1]["mask_jaccard_prev"]
        assert record.features == alone.features


def test_predict_reads_a_sparsity_store_unchanged(tmp_path):
    store = tmp_path / "sparse.db"
    data = _spec({"method": ["static", "set"], "prior": "none", "density": [0.25, 0.5], "update_every": 2},
                 epochs=2, seeds=[0, 1])
    summary = run_sweep(data, store, executor=make_executor("serial"), progress=False, group_size=4)
    assert (summary.done, summary.failed) == (8, 0)
    table = load_table(store)
    assert len(table.frame) == 8
    assert set(table.features) == set(FEATURE_NAMES)
    with ResultsStore(store, create=False) as results:
        edges = sorted(r.features["edges"] for r in results.records())
    assert sorted(table.X["edges"].tolist()) == edges and edges[0] < edges[-1]


# ------------------------------------------------------------------ the preset


def test_the_sparse_preset_compares_every_method_at_equal_density():
    spec = load_preset("sparse")
    runs = expand(spec)
    kinds = {}
    for run in runs:
        s = run.sparsity
        kinds.setdefault((run.generator, s.method, s.prior, s.density, s.freeze), []).append(run.seed)
    assert set(kinds) == {
        ("watts_strogatz", "static", "start", None, None), ("barabasi_albert", "static", "start", None, None),
        ("watts_strogatz", "static", "none", 1.0, None), ("watts_strogatz", "static", "none", 0.1875, None),
        *(("watts_strogatz", m, "none", 0.1875, None) for m in ("set", "rigl", "dnw")),
        *(("watts_strogatz", m, "none", 0.1875, 2) for m in ("rigl", "dnw")),
    }
    assert all(sorted(seeds) == [0, 1, 2] for seeds in kinds.values())
    assert len(runs) == 27 and {r.task.kind for r in runs} == {"next_symbol"} and {r.task.grammar for r in runs} == {
        "embedded"}
    ws = next(r for r in runs if r.generator == "watts_strogatz" and r.sparsity.prior == "start")
    mask = build_run(ws).model.rnn.masks["weight_hh_l0"][:32]
    assert float(mask.float().mean()) == 0.1875  # the WS prior has exactly the methods' density


# ------------------------------------------------------------------ resuming


def test_a_dynamic_sparsity_sweep_killed_with_sigkill_resumes(tmp_path):
    store, spec_file = tmp_path / "results.db", tmp_path / "spec.toml"
    spec_file.write_text("\n".join([
        'name = "killed"', "seeds = [0, 1, 2, 3, 4]",
        "[[generators]]", 'name = "watts_strogatz"', "params = { n = 8, k = 2, p = 0.5 }",
        "[model]", 'cells = ["gru"]', "[[tasks]]", "size = 200",
        "[train]", "epochs = 3", "batch_size = 25", "lr = 0.02",
        "[sparsity]", 'method = ["rigl", "dnw"]', 'prior = "none"', "density = 0.25", "update_every = 2",
    ]) + "\n")
    with ResultsStore(store) as results:
        results.set_claim_timeout(2.0)  # the killed driver's claim goes stale in 2 s, not 60
    stored, stderr = kill_after_first_run(["bench", "run", str(spec_file), "--store", str(store), "--backend",
                                           "serial", "--group-size", "1", "--quiet"], store, seconds=60)
    assert 1 <= stored < 10, stderr
    with ResultsStore(store, create=False) as results:
        kept = {r.run_id: r.metrics for r in results.records()}
    summary = run_sweep(validate_spec(_killed_spec()), store, executor=make_executor("serial"), progress=False)
    assert (summary.skipped, summary.done, summary.total) == (stored, 10 - stored, 10)
    with ResultsStore(store, create=False) as results:
        records = list(results.records())
    assert len(records) == 10 == len({r.run_id for r in records})
    assert all(r.status == "done" and "mask_jaccard_final" in r.history[-1] for r in records)
    assert all(kept[r.run_id] == r.metrics for r in records if r.run_id in kept)


def _killed_spec() -> dict:
    """The spec of the SIGKILL test's file, as data."""
    return {"name": "killed", "seeds": [0, 1, 2, 3, 4],
            "generators": [{"name": "watts_strogatz", "params": {"n": 8, "k": 2, "p": 0.5}}],
            "model": {"cells": ["gru"]}, "tasks": [{"size": 200}],
            "train": {"epochs": 3, "batch_size": 25, "lr": 0.02},
            "sparsity": {"method": ["rigl", "dnw"], "prior": "none", "density": 0.25, "update_every": 2}}


# ------------------------------------------------------------------ the emergence plot


def test_the_emergence_plot_is_written_with_labelled_axes(tmp_path):
    from graphprior.plots import structure_emergence

    path = tmp_path / "emergence.png"
    figure = structure_emergence({"SET": [[0.5, 0.8, 1.0], [0.4, 0.9, 1.0]], "RigL": [[0.9, 1.0, 1.0]]},
                                 path=str(path))
    (ax,) = figure.axes
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "Jaccard overlap with the final mask")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SET", "RigL"]
    assert list(ax.lines[0].get_ydata()) == pytest.approx([0.45, 0.85, 1.0])
    with pytest.raises(ValueError, match=r"curves\['DNW'\] must hold"):
        structure_emergence({"DNW": []})
