"""Pruning sweeps: the [prune] table, prune runs in the store, weights beside it, resuming."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from killing import kill_after_first_run, stored_count
from graphprior.cli import main
from graphprior.executors import make_executor
from graphprior.features import graph_features
from graphprior.priors import mask_to_graph
from graphprior import prune as prune_module
from graphprior.prune import (
    CONTROLS,
    PruneRunConfig,
    expand_prune,
    load_prune_preset,
    pruned_features,
    pruned_graphs,
    run_prune,
    structure_id,
    validate_prune_spec,
)
from graphprior.spec import SpecError, expand, preset_names
from graphprior.sweep import build_run, graph_id, prior_graphs, structural_features
from graphprior.store import ResultsStore
from graphprior.weights import kept_weights, load_run_model, weights_dir
from rnn_models import pruning

pytestmark = pytest.mark.usefixtures("one_thread")


def _spec(**prune: object) -> dict:
    """A tiny prune spec: WS graphs of 8 units as a tanh RNN, 2 epochs on 200 strings."""
    return {
        "name": "tiny",
        "generators": [{"name": "watts_strogatz", "params": {"n": 8, "k": 2, "p": [0.2, 0.8]}}],
        "model": {"cells": ["rnn_tanh"]},
        "tasks": [{"kind": "classify", "size": 200}],
        "train": {"epochs": 2, "batch_size": 50, "lr": 0.01},
        "prune": {"amounts": [0.5], "retrain_epochs": 1, **prune},
    }


def _toml(data: dict) -> str:
    """``data`` (a prune spec of this file: tables of scalars and lists) as TOML text."""
    def value(v: object) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "true" if v is True else "false" if v is False else f'"{v}"' if isinstance(v, str) else repr(v)

    lines = [f"name = {value(data['name'])}"]
    for table in ("generators", "tasks"):
        for item in data[table]:
            lines += [f"[[{table}]]", *(f"{k} = {value(v)}" for k, v in item.items())]
    for table in ("model", "train", "prune"):
        lines += [f"[{table}]", *(f"{k} = {value(v)}" for k, v in data[table].items())]
    return "\n".join(lines) + "\n"


def _serial() -> object:
    return make_executor("serial")


def _stored(store: Path) -> list:
    with ResultsStore(store, create=False) as results:
        return list(results.records())


# ------------------------------------------------------------------ specs


def test_prune_spec_validates_and_expands_to_every_setting():
    spec = validate_prune_spec(_spec(schemes=["blinded", "uniform"], amounts=[0.5, 0.8], weights="hh",
                                     controls=["rewind", "random_mask"]))
    assert spec.prune.retrain_epochs == 1 and spec.prune.weights == ("hh",)
    runs = expand_prune(spec)
    bases = expand(spec.sweep)
    assert len(runs) == len(bases) * 2 * 2 * 3 == len({r.run_id for r in runs})
    assert {r.prune.control for r in runs} == {"none", "rewind", "random_mask"}
    assert {r.base().run_id for r in runs} == {b.run_id for b in bases}
    assert not {r.run_id for r in runs} & {b.run_id for b in bases}  # a prune run is never a plain run
    assert isinstance(runs[0], PruneRunConfig) and runs[0].flat()["prune_scheme"] == "blinded"


def test_prune_spec_defaults_retraining_to_the_train_epochs():
    data = _spec()
    del data["prune"]["retrain_epochs"]
    assert validate_prune_spec(data).prune.retrain_epochs == 2


def test_prune_spec_choices_follow_rnn_models():
    from graphprior.prune import PruneSettings

    field = PruneSettings.model_fields["schemes"].annotation.__args__[0]
    assert field.__args__ == pruning.SCHEMES
    assert set(CONTROLS) == {"rewind", "reinit", "random_mask"}


@pytest.mark.parametrize(("prune", "message"), [
    ({"schemes": "magnitude"}, "prune.schemes[0]: must be 'blinded', 'uniform', 'distributed' or 'random'"),
    ({"amounts": [0.5, 1.0]}, "prune.amounts[1]: must be a fraction in (0, 1), got 1.0"),
    ({"amounts": 0}, "prune.amounts[0]: must be a fraction in (0, 1), got 0"),
    ({"rounds": 0}, "prune.rounds: must be greater than or equal to 1, got 0"),
    ({"weights": "all"}, "prune.weights[0]: must be 'ih', 'hh' or 'both'"),
    ({"controls": ["rewind", "shuffle"]}, "prune.controls[1]: must be 'rewind', 'reinit' or 'random_mask'"),
    ({"sparsity": 0.5}, "prune: unknown key 'sparsity'; allowed: schemes, amounts, rounds"),
    ({"min_gain": -1}, "prune.min_gain: must be greater than 0"),
])
def test_bad_prune_values_are_one_line_naming_them(prune, message):
    with pytest.raises(SpecError) as error:
        validate_prune_spec(_spec(**prune))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_prune_spec_is_a_sweep_spec_plus_a_prune_table():
    data = _spec()
    data["model"]["cells"] = ["transformer"]
    with pytest.raises(SpecError, match=r"^model\.cells\[0\]: "):
        validate_prune_spec(data)
    data = _spec()
    del data["prune"]
    with pytest.raises(SpecError, match=r"^prune: required table is missing"):
        validate_prune_spec(data)


def test_presets_validate():
    assert set(preset_names(prune=True)) >= {"prune-demo", "prune-study"}
    assert not set(preset_names()) & set(preset_names(prune=True))
    study = load_prune_preset("prune-study")
    assert study.sweep.model.mapping == "layered" and study.prune.retrain_epochs == 10
    assert len(expand_prune(study)) == 4 * 3 * 9
    with pytest.raises(SpecError, match="unknown prune preset 'quick'; allowed: prune-demo"):
        load_prune_preset("quick")


# ------------------------------------------------------------------ runs and weights


def test_a_prune_run_records_accuracies_density_and_pruned_features(tmp_path):
    store = tmp_path / "results.db"
    spec = _spec(weights="hh", amounts=[0.5], controls=["rewind"], keep_weights=True)
    summary = run_prune(spec, store, limit=2, executor=_serial(), progress=False)
    assert (summary.done, summary.failed) == (2, 0)
    records = {r.config["prune"]["control"]: r for r in _stored(store)}
    for record in records.values():
        metrics = record.metrics
        for name in ("trained_acc", "pruned_acc", "retrained_acc", "robustness_auc", "robust_acc_90"):
            assert 0.0 <= metrics[name] <= 1.0, name
        assert metrics["retrained_acc"] == metrics["test_acc"]
        assert metrics["remaining"] == pytest.approx(0.5)
        assert 0.0 < metrics["weight_density"] < 1.0
        model = load_run_model(store, record.run_id)
        mask = pruning.model_masks(model)["rnn.weight_hh_l0"]
        structure = mask_to_graph(mask & ~torch.eye(8, dtype=torch.bool), backend="igraph", directed=False)
        assert record.features == pytest.approx(graph_features(structure))  # the bench convention
        assert record.graph_id == structure_id(model)  # the pruned structure's own id
        base = PruneRunConfig.model_validate(record.config).base()
        assert record.flat["base_graph_id"] == graph_id(prior_graphs(base)) != record.graph_id
    prior = load_run_model(store, records["none"].run_id, stage="init")
    assert int(pruning.model_masks(prior)["rnn.weight_hh_l0"].sum()) == 2 * int(mask.sum())
    assert records["rewind"].history[-1]["round"] == 2.0  # training, one pruning round, the control


def test_load_run_model_round_trips_the_kept_weights(tmp_path):
    import torch

    store = tmp_path / "results.db"
    run_prune(_spec(keep_weights=True, readout=True), store, limit=1, executor=_serial(), progress=False)
    (record,) = _stored(store)
    folder = weights_dir(store)
    assert folder == tmp_path / "results.db.weights"
    assert sorted(p.name for p in folder.iterdir()) == [f"{record.run_id}.final.safetensors",
                                                        f"{record.run_id}.init.safetensors"]
    model = load_run_model(store, record.run_id)
    from rnn_models.pruning import accuracy
    from graphprior.sweep import task_data

    _, test = task_data(PruneRunConfig.model_validate(record.config).task)
    assert accuracy(model, test) == pytest.approx(record.metrics["test_acc"])
    again = load_run_model(store, record.run_id)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="is not in the store"):
        load_run_model(store, "0123456789abcdef")


def test_no_weights_unless_asked(tmp_path):
    store = tmp_path / "results.db"
    run_prune(_spec(), store, limit=1, executor=_serial(), progress=False)
    assert not weights_dir(store).exists()
    with pytest.raises(ValueError, match="kept no final weights"):
        load_run_model(store, _stored(store)[0].run_id)


# ------------------------------------------------------------------ resuming


def test_a_sweep_cut_short_resumes_without_losing_or_duplicating(tmp_path):
    store = tmp_path / "results.db"
    spec = _spec(controls=["reinit"])
    first = run_prune(spec, store, limit=2, executor=_serial(), progress=False)
    kept = {r.run_id: r.metrics for r in _stored(store)}
    second = run_prune(spec, store, executor=_serial(), progress=False)
    assert (first.done, second.total, second.skipped, second.done) == (2, 4, 2, 2)
    records = _stored(store)
    assert len(records) == 4 == len({r.run_id for r in records})
    assert all(kept[r.run_id] == r.metrics for r in records if r.run_id in kept)


def test_a_sweep_killed_with_sigkill_resumes(tmp_path):
    store, spec_file = tmp_path / "results.db", tmp_path / "spec.toml"
    data = _spec()
    data["generators"][0]["params"]["p"] = [0.1, 0.3, 0.5, 0.7, 0.9]
    spec_file.write_text(_toml(data))
    stored, stderr = kill_after_first_run(["prune", str(spec_file), "--store", str(store), "--backend", "serial",
                                           "--quiet"], store, seconds=20)
    assert 1 <= stored, stderr
    summary = run_prune(data, store, executor=_serial(), progress=False)
    assert (summary.skipped, summary.done, summary.total) == (stored, 5 - stored, 5)
    records = _stored(store)
    assert len(records) == 5 == len({r.run_id for r in records})
    assert all(r.status == "done" for r in records)


# ------------------------------------------------------------------ the command


def test_the_command_runs_resumes_and_reports_bad_specs(tmp_path):
    store, spec_file = tmp_path / "results.db", tmp_path / "spec.toml"
    spec_file.write_text(_toml(_spec()))
    runner = CliRunner()
    first = runner.invoke(main, ["prune", str(spec_file), "--store", str(store), "--backend", "serial",
                                 "--limit", "1", "--quiet"])
    assert first.exit_code == 0, first.output
    assert "tiny: 1 done, 0 failed, 0 already stored (of 1)" in first.output
    again = runner.invoke(main, ["prune", str(spec_file), "--store", str(store), "--backend", "serial", "--quiet"])
    assert again.exit_code == 0 and "1 done, 0 failed, 1 already stored (of 2)" in again.output
    bad = _spec(amounts=[1.5])
    spec_file.write_text(_toml(bad))
    result = runner.invoke(main, ["prune", str(spec_file), "--store", str(store)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {spec_file}: prune.amounts[0]: must be a fraction in (0, 1), got 1.5"
    usage = runner.invoke(main, ["prune", "--store", str(store)])
    assert usage.exit_code == 2 and "exactly one" in usage.output


def test_an_unwritable_weights_folder_fails_before_any_training(tmp_path):
    """keep_weights: the folder beside the store is checked first, not after the training."""
    from graphprior.prune import run_prune
    from graphprior.store import StoreError

    (tmp_path / "r.db.weights").write_text("a file where the weights folder should be")
    with pytest.raises(StoreError, match=r"r.db.weights cannot be"):
        run_prune(_spec(keep_weights=True), tmp_path / "r.db", backend="serial", progress=False)
    assert not (tmp_path / "r.db").exists()  # refused before the store was even opened


# ------------------------------------------------------------------ features and ids comparable with bench records


@pytest.mark.parametrize("model", [
    {"cells": ["lstm"]},
    {"cells": ["gru"], "gate_layout": "per_gate"},
    {"cells": ["lstm"], "self_loops": True},
    {"cells": ["rnn_tanh"], "orientation": "dag"},
])
def test_an_unpruned_prior_has_its_bench_records_features(model):
    """Prune records use the bench convention: the undirected graph of the hidden-to-hidden
    connections, so an unpruned prior gives back exactly its bench record's features."""
    data = _spec()
    data["model"] = model
    config = expand_prune(data)[0]
    built = build_run(config.base())
    per_gate = model.get("gate_layout") == "per_gate"
    assert pruned_features(built.model, per_gate) == pytest.approx(structural_features(built.graphs), nan_ok=True)
    assert len(pruned_graphs(built.model, per_gate)) == len(built.graphs)


def test_an_unpruned_layered_network_has_its_generator_graphs_features():
    data = _spec()
    data["generators"] = [{"name": "planted_partition", "params": {"groups": 3, "size": 4, "p_in": 0.0, "p_out": 0.6}}]
    data["model"] = {"cells": ["gru"], "mapping": "layered"}
    built = build_run(expand_prune(data)[0].base())
    assert pruned_features(built.model) == pytest.approx(structural_features(built.graphs), nan_ok=True)


def test_each_pruned_structure_gets_its_own_graph_id(tmp_path):
    """Schemes and amounts give other structures, hence other ids (not seed repeats of the
    base graph); the controls keeping the pruned mask share its id."""
    store = tmp_path / "results.db"
    data = _spec(schemes=["blinded", "random"], amounts=[0.3, 0.6], controls=["rewind", "random_mask"])
    data["generators"][0]["params"]["p"] = 0.5
    run_prune(data, store, executor=_serial(), progress=False)
    records = _stored(store)
    assert len(records) == 2 * 2 * 3 and all(r.status == "done" for r in records)
    assert len({r.flat["base_graph_id"] for r in records}) == 1
    by_setting: dict = {}
    for r in records:
        by_setting.setdefault((r.config["prune"]["scheme"], r.config["prune"]["amount"]), {})[
            r.config["prune"]["control"]] = r.graph_id
    assert len({ids["none"] for ids in by_setting.values()}) == 4
    assert all(ids["rewind"] == ids["none"] != ids["random_mask"] for ids in by_setting.values())
    assert not {r.graph_id for r in records} & {records[0].flat["base_graph_id"]}
    # predict averages a structure's runs: with the base graph's id it refused (features differ)
    from graphprior.predict import load_table
    from graphprior.store import read_table

    table = load_table(store, mean_over_seeds=True, target="seconds")  # the tiny nets: test_acc constant
    assert len(table.frame) == len({r.graph_id for r in records}) >= 4  # one row per structure
    frame = read_table(store)
    with pytest.raises(ValueError, match="mean_over_seeds: features"):
        load_table(frame.assign(graph_id=frame["base_graph_id"]), mean_over_seeds=True, target="seconds")


# ------------------------------------------------------------------ each record stored as soon as it is done


class _Killed(BaseException):
    """Stands for the process being killed in the middle of a group (not caught as a failure)."""


def test_a_groups_finished_runs_are_stored_before_the_group_ends(tmp_path, monkeypatch):
    store = tmp_path / "results.db"
    data = _spec(controls=["rewind", "reinit"])
    data["generators"][0]["params"]["p"] = 0.5
    real = prune_module._control

    def control(trained, pruned, config):
        if config.prune.control == "reinit":
            raise _Killed
        return real(trained, pruned, config)

    monkeypatch.setattr(prune_module, "_control", control)
    with pytest.raises(_Killed):
        run_prune(data, store, executor=_serial(), progress=False)
    kept = {r.config["prune"]["control"]: r for r in _stored(store)}
    assert set(kept) == {"none", "rewind"}  # stored as each was done, before the group ended
    monkeypatch.setattr(prune_module, "_control", real)
    summary = run_prune(data, store, executor=_serial(), progress=False)
    assert (summary.total, summary.skipped, summary.done) == (3, 2, 1)
    records = _stored(store)
    assert len(records) == 3 == len({r.run_id for r in records})
    assert all(r.metrics == kept[r.config["prune"]["control"]].metrics for r in records if r.run_id in
               {k.run_id for k in kept.values()})


def test_a_sweep_killed_inside_a_group_resumes_with_its_finished_runs(tmp_path):
    """One trained network, eight variants: a SIGKILL after the first stored record leaves
    part of the group stored; the resumed sweep trains the network again, not those runs."""
    store, spec_file = tmp_path / "results.db", tmp_path / "spec.toml"
    data = _spec(schemes=["blinded", "random"], amounts=[0.3, 0.6], controls=["reinit"])
    data["generators"][0]["params"]["p"] = 0.5
    data["tasks"][0]["size"] = 400
    data["train"]["epochs"] = 3
    spec_file.write_text(_toml(data))
    stored, stderr = kill_after_first_run(["prune", str(spec_file), "--store", str(store), "--backend", "serial",
                                           "--quiet"], store, seconds=60, poll=0.01)
    assert 1 <= stored < 8, stderr  # the group's first runs, not the whole group
    summary = run_prune(data, store, executor=_serial(), progress=False)
    assert (summary.skipped, summary.done, summary.total) == (stored, 8 - stored, 8)
    records = _stored(store)
    assert len(records) == 8 == len({r.run_id for r in records})
    assert all(r.status == "done" for r in records)


# ------------------------------------------------------------------ rewinding to epoch k


def test_rewind_epoch_is_checked_and_leaves_other_run_ids_alone():
    runs = expand_prune(_spec(controls=["rewind", "reinit"]))
    late = expand_prune(_spec(controls=["rewind", "reinit"], rewind_epoch=1))
    assert all("rewind_epoch" not in r.canonical()["prune"] for r in runs)  # ids of older specs stay
    same = {r.run_id for r in runs} & {r.run_id for r in late}
    assert {r.prune.control for r in late if r.run_id in same} == {"none", "reinit"}
    assert {r.prune.rewind_epoch for r in late if r.prune.control == "rewind"} == {1}
    with pytest.raises(SpecError, match=r"^prune.rewind_epoch: must be below the train table's epochs \(2\), got 2$"):
        validate_prune_spec(_spec(controls=["rewind"], rewind_epoch=2))
    with pytest.raises(SpecError, match=r"^prune.rewind_epoch: is only for the rewind control"):
        validate_prune_spec(_spec(rewind_epoch=1))
    with pytest.raises(SpecError, match=r"^prune.rewind_epoch: must be greater than or equal to 1"):
        validate_prune_spec(_spec(controls=["rewind"], rewind_epoch=0))


def test_rewind_to_epoch_k_keeps_and_uses_the_weights_of_epoch_k(tmp_path):
    store = tmp_path / "results.db"
    data = _spec(controls=["rewind"], rewind_epoch=2, keep_weights=True)
    data["train"]["epochs"] = 3
    data["generators"][0]["params"]["p"] = 0.5
    run_prune(data, store, executor=_serial(), progress=False)
    records = {r.config["prune"]["control"]: r for r in _stored(store)}
    late = records["rewind"]
    assert late.config["prune"]["rewind_epoch"] == 2 and "rewind_epoch" not in records["none"].config["prune"]
    names = sorted(p.name for p in weights_dir(store).iterdir())
    assert f"{late.run_id}.rewind.safetensors" in names
    assert f"{records['none'].run_id}.rewind.safetensors" not in names
    listed = kept_weights(store)
    assert set(listed) == set(r.run_id for r in records.values())
    assert list(listed[late.run_id]) == ["init", "final", "rewind"] and list(listed[records["none"].run_id]) == [
        "init", "final"]
    assert all(path.is_file() for stages in listed.values() for path in stages.values())
    epoch_k = load_run_model(store, late.run_id, stage="rewind")
    init = load_run_model(store, late.run_id, stage="init")
    final = load_run_model(store, late.run_id)
    assert not torch.equal(epoch_k.rnn.weight_hh_l0, init.rnn.weight_hh_l0)
    # the control starts from the pruned mask with the epoch-2 weights: its pruned_acc
    for name, mask in pruning.model_masks(final).items():
        epoch_k.get_submodule(name.rsplit(".", 1)[0]).set_mask(name.rsplit(".", 1)[1], mask)
    from graphprior.sweep import task_data

    _, test = task_data(PruneRunConfig.model_validate(late.config).task)
    assert pruning.accuracy(epoch_k, test) == pytest.approx(late.metrics["pruned_acc"])
    control_epochs = [e for e in late.history if e["round"] == 2.0]
    assert len(control_epochs) == 3 - 2  # the rest of the schedule, from epoch 2


def test_structure_id_follows_every_mask_entry():
    built = build_run(expand_prune(_spec())[0].base())
    first = structure_id(built.model)
    assert structure_id(copy.deepcopy(built.model)) == first and len(first) == 16
    ih = copy.deepcopy(built.model)
    pruning.prune(ih, "blinded", 0.1, weights="ih")
    hh = copy.deepcopy(built.model)
    pruning.prune(hh, "blinded", 0.1, weights="hh")
    assert len({first, structure_id(ih), structure_id(hh)}) == 3


def test_a_prune_spec_refuses_a_sparsity_table_instead_of_ignoring_it():
    data = _spec()
    data["sparsity"] = {"method": "set", "density": 0.5}
    with pytest.raises(SpecError, match=r"^sparsity: not allowed in a prune spec") as error:
        validate_prune_spec(data)
    assert "\n" not in str(error.value)
