"""Pruning sweeps: the [prune] table, prune runs in the store, weights beside it, resuming."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from graphprior.cli import main
from graphprior.executors import make_executor
from graphprior.features import graph_features
from graphprior.priors import mask_to_graph
from graphprior.prune import (
    CONTROLS,
    PruneRunConfig,
    expand_prune,
    load_prune_preset,
    run_prune,
    validate_prune_spec,
)
from graphprior.spec import SpecError, expand, preset_names
from graphprior.store import ResultsStore
from graphprior.weights import load_run_model, weights_dir
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
        assert record.features == pytest.approx(graph_features(mask_to_graph(mask, backend="igraph")))
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


def _count(store: Path) -> int:
    try:
        with sqlite3.connect(store) as connection:
            return connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_sweep_killed_with_sigkill_resumes(tmp_path):
    store, spec_file = tmp_path / "results.db", tmp_path / "spec.toml"
    data = _spec()
    data["generators"][0]["params"]["p"] = [0.1, 0.3, 0.5, 0.7, 0.9]
    spec_file.write_text(_toml(data))
    command = [sys.executable, "-c", "from graphprior.cli import main; main()", "prune", str(spec_file),
               "--store", str(store), "--backend", "serial", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 20
    while _count(store) == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stored = _count(store)
    assert 1 <= stored, process.stderr.read().decode()
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
