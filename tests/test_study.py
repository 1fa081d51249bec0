"""Reproducing Stier et al. 2021: the faithful preset, its model options, compare-study."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from graphprior.spec import SpecError, expand, load_preset, validate_spec
from graphprior.sweep import build_model, prior_graphs, task_data
from rnn_models.layered import EmbeddedInput, LayeredRNN
from reber.grammar import get_grammar
from reber.tasks import write_csv

BA = [{"name": "barabasi_albert", "params": {"n": 12, "m": 2}}]


def layered_spec(model: dict | None = None, task: dict | None = None, train: dict | None = None) -> dict:
    return {"generators": BA, "model": {"mapping": "layered", "cells": ["gru"], **(model or {})},
            "tasks": [task or {"kind": "classify", "size": 64}], "train": {"epochs": 1, **(train or {})}}


# ----------------------------------------------------------------------------- input embedding


def test_embedded_input_is_the_studys_embedding_lookup_and_keeps_pads_zero():
    torch.manual_seed(0)
    inner = LayeredRNN(_structure(), input_size=5, cell="gru", batch_first=True)
    net = EmbeddedInput(inner, input_size=26, features=5)
    symbols = torch.tensor([[3, 0, 25, 7]])
    one_hot = nn.functional.one_hot(symbols, 26).float()
    one_hot[0, 3] = 0.0  # a pad step
    lookup = nn.Embedding(26, 5)
    lookup.weight.data.copy_(net.embedding.weight.t())
    embedded = net.embedding(one_hot)
    assert torch.equal(embedded[0, :3], lookup(symbols)[0, :3])
    assert torch.equal(embedded[0, 3], torch.zeros(5))
    assert torch.equal(net(one_hot)[0], inner(embedded)[0])
    assert net.output_size == inner.output_size and net.batch_first
    weights = EmbeddedInput(inner, 26, 400).embedding.weight.detach()  # N(0, 1) like nn.Embedding
    assert abs(float(weights.mean())) < 0.02 and abs(float(weights.std()) - 1.0) < 0.02


def _structure():
    from graphprior.generators import generate
    from graphprior.priors import layered_structure

    return layered_structure(generate("barabasi_albert", n=12, m=2, seed=1))


def test_input_encoding_is_left_out_of_the_run_id_at_its_default_and_builds_the_embedding():
    plain, = expand(layered_spec())
    same, = expand(layered_spec({"input_encoding": "one_hot"}))
    embedded, = expand(layered_spec({"input_encoding": "embedding"}))
    assert "input_encoding" not in plain.canonical() and plain.run_id == same.run_id
    assert embedded.canonical()["input_encoding"] == "embedding" and embedded.run_id != plain.run_id
    structure = _structure()
    model = build_model(embedded, prior_graphs(embedded), vocabulary_size=26, task="classify")
    assert isinstance(model.rnn, EmbeddedInput) and isinstance(model.rnn.rnn, LayeredRNN)
    assert model.rnn.embedding.weight.shape == (structure.widths[0], 26)
    assert model.rnn.rnn.input_size == structure.widths[0]
    assert isinstance(build_model(plain, prior_graphs(plain), 26, "classify").rnn, LayeredRNN)


def test_input_embedding_is_refused_for_the_recurrent_mapping():
    spec = layered_spec({"mapping": "recurrent", "orientation": "symmetric", "input_encoding": "embedding"})
    with pytest.raises(SpecError, match=r"^model.input_encoding: 'embedding' is for mapping"):
        validate_spec(spec)


# ----------------------------------------------------------------------------- data paths from the environment


@pytest.fixture
def data_folder(tmp_path, monkeypatch):
    reber = get_grammar("reber")
    write_csv(tmp_path / "train.csv", reber.sample(20, seed=1) + ["BTXXZE"] * 20, [1] * 20 + [0] * 20)
    write_csv(tmp_path / "test.csv", reber.sample(8, seed=2) + ["BPE"] * 8, [1] * 8 + [0] * 8)
    monkeypatch.setenv("H20_DATA", str(tmp_path))
    return tmp_path


def test_data_file_paths_expand_environment_variables(data_folder, monkeypatch):
    task = {"kind": "classify", "train_file": "$H20_DATA/train.csv", "test_file": "${H20_DATA}/test.csv"}
    config, = expand(layered_spec(task=task))
    assert config.task.train_file == str(data_folder / "train.csv")
    assert config.task.test_file == str(data_folder / "test.csv")
    digest = hashlib.sha256((data_folder / "train.csv").read_bytes() + (data_folder / "test.csv").read_bytes())
    assert config.task.data_sha256 == digest.hexdigest()[:16]
    train, test = task_data(config.task)
    assert len(train.strings) == 40 and train.strings[-1] == "BTXXZE" and test.strings[-1] == "BPE"
    monkeypatch.chdir(data_folder.parent)
    monkeypatch.setenv("H20_DATA", data_folder.name)  # relative: made absolute
    config, = expand(layered_spec(task=task))
    assert config.task.train_file == str(data_folder / "train.csv")


def test_an_unset_variable_in_a_data_path_is_one_line_naming_it(monkeypatch):
    monkeypatch.delenv("H20_NOPE", raising=False)
    task = {"kind": "classify", "train_file": "${H20_NOPE}/train.csv", "test_file": "${H20_NOPE}/test.csv"}
    with pytest.raises(SpecError) as error:
        validate_spec(layered_spec(task=task))
    assert str(error.value) == ("tasks[0].train_file: '${H20_NOPE}/train.csv' needs the environment variable "
                                "H20_NOPE, which is not set (point it at the folder holding the data files)")


# ----------------------------------------------------------------------------- the faithful preset


def test_the_study_preset_without_its_data_says_which_variable_to_set(monkeypatch):
    monkeypatch.delenv("GRAPHPRIOR_STUDY_DATA", raising=False)
    with pytest.raises(SpecError, match=r"^tasks\[0\]\.train_file: .*GRAPHPRIOR_STUDY_DATA, which is not set"):
        load_preset("paper-study")


def test_the_study_preset_validates_on_the_studys_files(stier2021, monkeypatch):
    monkeypatch.setenv("GRAPHPRIOR_STUDY_DATA", str(stier2021))
    spec = load_preset("paper-study")
    runs = expand(spec)
    assert len(runs) == 800
    assert {r.cell for r in runs} == {"rnn_tanh", "rnn_relu", "lstm", "gru"}
    assert {r.mapping for r in runs} == {"layered"} and {r.input_encoding for r in runs} == {"embedding"}
    train = runs[0].train
    assert (train.epochs, train.batch_size, train.lr, train.optimizer, train.clip, train.bucket) == \
        (15, 128, 0.001, "adam", 5.0, False)
    task = runs[0].task
    assert task.train_file == os.path.join(str(stier2021), "dataset", "train_data.csv")
    assert len(task_data(task)[0].strings) == 18_750 and len(task_data(task)[1].strings) == 6_250
    paper = expand(load_preset("paper"))
    assert [(r.generator, r.params, r.graph_seed) for r in paper] == [(r.generator, r.params, r.graph_seed)
                                                                      for r in runs]


# ----------------------------------------------------------------------------- the study's bugs as options


def _connection_masks(net: LayeredRNN) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(connection mask, the block's input-weight mask) of every masked block."""
    out = []
    for j in range(1, net.structure.depth):
        for b, connection in enumerate(net.connections[j]):
            where = net.block_slices(j, b)["weight_ih_l0"]
            layer = net.layers[j]
            full = layer.masks.get("weight_ih_l0", torch.ones_like(layer.weight_ih_l0, dtype=torch.bool))
            out.append((connection.mask, full[where]))
    return out


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_row_repeated_gate_masks_are_the_studys_np_repeat_layout(cell):
    structure = _structure()
    tiled = LayeredRNN(structure, input_size=4, cell=cell, gate_masks="tiled")
    study = LayeredRNN(structure, input_size=4, cell=cell, gate_masks="row_repeated")
    gates = tiled.gates
    pairs = _connection_masks(study)
    assert len(pairs) >= 2
    for (mask, block), (_, tiled_block) in zip(pairs, _connection_masks(tiled)):
        assert torch.equal(block, torch.from_numpy(np.repeat(mask.numpy(), gates, 0)))  # the study's code
        assert torch.equal(tiled_block, mask.repeat(gates, 1))
        assert torch.equal(block.sum(), tiled_block.sum())  # as many weights, scrambled across gates
    for a, b in zip(tiled.layers, study.layers):
        assert torch.equal(a.masks.get("weight_hh_l0", torch.ones(1)), b.masks.get("weight_hh_l0", torch.ones(1)))
    assert any(not torch.equal(block, tiled_block)
               for (_, block), (_, tiled_block) in zip(pairs, _connection_masks(tiled)))


def test_row_repeated_changes_nothing_for_one_gate_cells_and_small_example_is_exact():
    structure = _structure()
    for cell in ("rnn_tanh", "rnn_relu"):
        a = LayeredRNN(structure, 4, cell=cell, gate_masks="tiled")
        b = LayeredRNN(structure, 4, cell=cell, gate_masks="row_repeated")
        assert all(torch.equal(x.masks.get("weight_ih_l0", torch.ones(1)), y.masks.get("weight_ih_l0", torch.ones(1)))
                   for x, y in zip(a.layers, b.layers))
    from rnn_models.layered import GATE_MASKS

    mask = torch.tensor([[1, 0], [0, 1]], dtype=torch.bool)
    assert GATE_MASKS["row_repeated"](mask, 3).int().tolist() == [[1, 0]] * 3 + [[0, 1]] * 3
    assert GATE_MASKS["tiled"](mask, 3).int().tolist() == [[1, 0], [0, 1]] * 3
    with pytest.raises(ValueError, match="gate_masks must be one of"):
        LayeredRNN(structure, 4, cell="gru", gate_masks="rows")


def test_row_repeated_in_a_spec_changes_only_the_masks():
    tiled, = expand(layered_spec())
    study, = expand(layered_spec({"gate_layout": "row_repeated"}))
    assert study.canonical()["gate_layout"] == "row_repeated" and study.run_id != tiled.run_id
    graphs = prior_graphs(study)
    a, b = (build_model(c, graphs, 26, "classify").rnn for c in (tiled, study))
    assert [m.shape for m in a.state_dict().values()] == [m.shape for m in b.state_dict().values()]
    for (mask, block), _ in zip(_connection_masks(b), _connection_masks(a)):
        assert torch.equal(block, mask.repeat_interleave(3, 0))
    recurrent = {"generators": BA, "model": {"cells": ["lstm"], "gate_layout": "row_repeated"},
                 "tasks": [{"kind": "classify", "size": 64}], "train": {"epochs": 1}}
    config, = expand(recurrent)
    plain, = expand({**recurrent, "model": {"cells": ["lstm"]}})
    graphs = prior_graphs(config)
    hh = build_model(config, graphs, 26, "classify").rnn.masks["weight_hh_l0"]
    hh_plain = build_model(plain, graphs, 26, "classify").rnn.masks["weight_hh_l0"]
    assert torch.equal(hh, hh_plain[:12].repeat_interleave(4, 0))


def test_padded_position_readout_reads_the_batchs_last_step():
    from rnn_models.layered import PaddedPositionClassifier
    from rnn_models.train import SequenceClassifier

    torch.manual_seed(0)
    inner = LayeredRNN(_structure(), input_size=5, cell="gru", batch_first=True)
    net = EmbeddedInput(inner, 26, 5, pad=True)
    study = PaddedPositionClassifier(net)
    correct = SequenceClassifier(net)
    correct.readout.load_state_dict(study.readout.state_dict())
    inputs = nn.functional.one_hot(torch.randint(0, 26, (3, 6)), 26).float()
    lengths = torch.tensor([6, 4, 2])
    for row, length in enumerate(lengths.tolist()):
        inputs[row, length:] = 0.0
    output = net(inputs)[0]
    assert torch.allclose(study(inputs, lengths), study.readout(output[:, -1]).squeeze(1))
    got, want = study(inputs, lengths), correct(inputs, lengths)
    assert torch.allclose(got[0], want[0])  # the longest string ends at the batch's last step
    assert not torch.isclose(got[1], want[1]) and not torch.isclose(got[2], want[2])
    embedded = net.embedding(inputs) + (inputs.sum(-1, keepdim=True) == 0) * net.pad_embedding
    assert torch.equal(output, inner(embedded)[0]) and torch.equal(embedded[2, 3], net.pad_embedding)
    assert "pad_embedding" not in dict(EmbeddedInput(inner, 26, 5).named_parameters())


def test_padded_position_in_a_spec_builds_the_studys_readout_and_is_classify_only():
    from rnn_models.layered import PaddedPositionClassifier

    plain, = expand(layered_spec({"input_encoding": "embedding"}))
    study, = expand(layered_spec({"input_encoding": "embedding", "readout": "padded_position"}))
    assert "readout" not in plain.canonical() and study.canonical()["readout"] == "padded_position"
    model = build_model(study, prior_graphs(study), 26, "classify")
    assert isinstance(model, PaddedPositionClassifier) and model.rnn.pad_embedding.shape == (model.rnn.rnn.input_size,)
    with pytest.raises(ValueError, match="readout 'padded_position' is for classify tasks"):
        build_model(study, prior_graphs(study), 7, "next_symbol")


# ----------------------------------------------------------------------------- generated data like the study's


def test_study_lengths_match_the_studys_length_distributions_and_stay_out_of_old_ids():
    from reber.tasks import classification_strings

    (train, labels), (test, test_labels) = classification_strings(25_000, "paper", seed=3, lengths="study")
    strings = np.array(train + test, dtype=object)
    labels = np.r_[labels, test_labels]
    valid = np.array([len(s) for s in strings[labels == 1]])
    invalid = np.array([len(s) for s in strings[labels == 0]])
    assert 11 <= valid.min() and valid.max() <= 53 and 11 <= invalid.min()
    assert abs(valid.mean() - 23.64) < 0.4 and np.median(valid) == 23  # the study's: 23.64, 23
    assert abs(invalid.mean() - 18.74) < 0.6 and np.median(invalid) == 18  # 18.74, 18
    (old, _), _ = classification_strings(4000, "paper", seed=3)
    assert np.mean([len(s) for s in old]) > 22.0 and max(len(s) for s in old) <= 35
    plain, = expand(layered_spec())
    study, = expand(layered_spec(task={"kind": "classify", "size": 64, "lengths": "study"}))
    assert "lengths" not in plain.canonical()["task"] and study.canonical()["task"]["lengths"] == "study"
    assert min(len(s) for s in task_data(study.task)[0].strings) >= 11
    with pytest.raises(SpecError, match=r"^tasks\[0\]\.lengths: 'study' is for generated classify data"):
        validate_spec(layered_spec(task={"kind": "next_symbol", "lengths": "study"}))
    with pytest.raises(ValueError, match="lengths must be 'uniform' or 'study'"):
        classification_strings(40, lengths="grammar")


# ----------------------------------------------------------------------------- compare-study

FEATURES = ("nodes", "edges", "density", "diameter")


def _features(rng: np.random.Generator) -> dict[str, float]:
    nodes = int(rng.integers(10, 51))
    return {"nodes": nodes, "edges": nodes * 2 + int(rng.integers(0, 9)), "density": float(rng.uniform(0.05, 0.4)),
            "diameter": int(rng.integers(2, 9))}


@pytest.fixture
def study_store(tmp_path):
    """A tiny store (30 gru runs near 0.9, 24 rnn_tanh runs of which 6 never learned) and a
    tiny reference folder (40 runs per cell type; gru clearly better than ours)."""
    from graphprior.store import ResultsStore, RunRecord

    rng = np.random.default_rng(0)
    ours = [("gru", 0.9 + 0.02 * rng.standard_normal()) for _ in range(30)]
    ours += [("rnn_tanh", 0.5 if i < 6 else 0.85 + 0.03 * rng.standard_normal()) for i in range(24)]
    with ResultsStore(tmp_path / "runs.db") as store:
        for i, (cell, accuracy) in enumerate(ours):
            store.add(RunRecord(run_id=f"r{i}", graph_id=f"g{i}", seed=0, status="done", config={},
                                flat={"cell": cell}, metrics={"test_acc": accuracy}, features=_features(rng)))
    folder = tmp_path / "reference" / "structure"
    folder.mkdir(parents=True)
    for cell, centre in (("rnn_tanh", 0.86), ("rnn_relu", 0.8), ("gru", 0.97), ("lstm", 0.95)):
        rows = [{"mode": cell.upper(), "graph": "barabasi_albert", "graph_nr": i, **_features(rng),
                 "test_acc": min(1.0, centre + 0.01 * rng.standard_normal())} for i in range(40)]
        pd.DataFrame(rows).to_csv(folder / f"{cell}.csv", index=False)
    return tmp_path / "runs.db", tmp_path / "reference", ours


def test_two_sample_sees_one_value_where_float32_and_float64_counts_agree():
    from scipy import stats

    from graphprior.study import two_sample

    rng = np.random.default_rng(0)
    counts = np.concatenate([np.full(70, 3089), rng.integers(5000, 6250, 130)])
    theirs = counts / 6250
    ours = (counts.astype(np.float32) / np.float32(6250)).astype(float)
    assert not np.array_equal(ours, theirs)
    assert stats.ks_2samp(ours, theirs).pvalue < 1e-6
    assert two_sample(ours, theirs) == {"mannwhitney_p": 1.0, "ks_p": 1.0}


def test_compare_study_measures_distributions_tests_and_both_protocols(study_store):
    from scipy import stats

    from graphprior.study import NEVER_LEARNED, compare_study

    store, reference, ours = study_store
    result = compare_study(store, reference, n_repeats=1)
    cells = result.cells.set_index("cell")
    assert list(cells.index) == ["rnn_tanh", "gru"]  # the store's cells, in the study's order
    tanh = np.array([a for c, a in ours if c == "rnn_tanh"])
    assert cells.loc["rnn_tanh", "ours_n"] == 24 and cells.loc["rnn_tanh", "ours_never_learned"] == 0.25
    assert cells.loc["rnn_tanh", "ours_mean"] == pytest.approx(tanh.mean())
    assert cells.loc["rnn_tanh", "ours_median"] == pytest.approx(np.median(tanh))
    study_tanh = pd.read_csv(reference / "structure" / "rnn_tanh.csv").test_acc.to_numpy()
    assert cells.loc["rnn_tanh", "study_n"] == 40 and cells.loc["rnn_tanh", "study_never_learned"] == 0.0
    assert cells.loc["rnn_tanh", "mannwhitney_p"] == pytest.approx(
        stats.mannwhitneyu(tanh, study_tanh, alternative="two-sided").pvalue)
    assert cells.loc["rnn_tanh", "ks_p"] == pytest.approx(stats.ks_2samp(tanh, study_tanh).pvalue)
    assert cells.loc["gru", "mannwhitney_p"] < 1e-6 and NEVER_LEARNED == 0.55
    r2 = result.r2
    assert len(r2) == 2 * 2 * 2 * 3  # cells x tables x protocols x the study's regressors
    assert set(r2.model) == {"bayesian_ridge", "random_forest", "adaboost"} and r2.r2.notna().all()


def test_compare_study_command_writes_the_report_and_one_line_per_cell(study_store, tmp_path):
    from click.testing import CliRunner

    from graphprior.cli import main

    store, reference, _ = study_store
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["compare-study", str(store), "--reference", str(reference), "-o", str(out),
                                       "--repeats", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("rnn_tanh: ours n=24 mean") and "never 25%" in lines[0] and "KS p=" in lines[0]
    assert lines[1].startswith("gru: ours n=30") and lines[2] == f"report: {out / 'report.md'}"
    report = (out / "report.md").read_text()
    assert "| rnn_tanh | 24 |" in report and "![gru](accuracy_gru.png)" in report
    assert "single 90/10 split" in report and "repeated grouped 5-fold CV" in report
    assert (out / "accuracy_gru.png").read_bytes()[:4] == b"\x89PNG"
    assert len(pd.read_csv(out / "r2.csv")) == 24


def test_compare_study_without_reference_is_one_line(study_store, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from graphprior.cli import main

    store, _, _ = study_store
    monkeypatch.delenv("GRAPHPRIOR_STUDY_DATA", raising=False)
    result = CliRunner().invoke(main, ["compare-study", str(store), "-o", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "--reference: no folder given; pass --reference or set GRAPHPRIOR_STUDY_DATA" in result.output
    result = CliRunner().invoke(main, ["compare-study", str(store), "--reference", str(tmp_path)])
    assert result.exit_code == 2 and "has no structure/rnn_tanh.csv" in result.output
    result = CliRunner().invoke(main, ["compare-study", str(tmp_path / "none.db"), "--reference", str(tmp_path)])
    assert result.exit_code == 2 and "STORE: no results store at" in result.output
