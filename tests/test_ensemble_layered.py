"""Layered ensembles: K LayeredRNN models of different DAGs trained as one computation."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_layered import structures

from rnn_models import native
from rnn_models.ensemble_layered import LayeredEnsembleModel, choose_layered_strategy, fit_layered_ensemble
from rnn_models.layered import LayerConnection, LayeredRNN, LayeredStructure
from rnn_models.masked import GATES
from rnn_models.train import NextSymbolModel, SequenceClassifier, TrainConfig, fit

VOCABULARY = 4


@dataclass
class Data:
    """A small classification or next-symbol dataset with the EncodedDataset attributes."""

    task: str
    inputs: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor | None = None


def toy(n: int, seed: int, task: str = "classify") -> Data:
    """Random one-hot sequences of lengths 1..8; label: the last symbol is symbol 0."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 9, (n,), generator=g)
    symbols = torch.randint(0, VOCABULARY, (n, 8), generator=g)
    inputs = torch.nn.functional.one_hot(symbols, VOCABULARY).float()
    inputs[torch.arange(8) >= lengths[:, None]] = 0
    if task == "classify":
        return Data(task, inputs, lengths, (symbols[torch.arange(n), lengths - 1] == 0).float())
    return Data(task, inputs, lengths, inputs.roll(-1, dims=1))


def three_structures() -> list[LayeredStructure]:
    """Depths 1, 3 and 4, different widths, skips into different layers."""
    g = torch.Generator().manual_seed(0)

    def c(s, t, widths):
        return LayerConnection(s, t, torch.rand(widths[t], widths[s], generator=g) < 0.6)

    a = (3,)
    b = (2, 4, 1)
    d = (3, 1, 2, 3)
    return [
        LayeredStructure(a, ()),
        LayeredStructure(b, (c(0, 1, b), c(1, 2, b), c(0, 2, b))),
        LayeredStructure(d, (c(0, 1, d), c(1, 2, d), c(2, 3, d), c(0, 3, d), c(1, 3, d))),
    ]


def build(structures_: list[LayeredStructure], cell: str, head: type = SequenceClassifier) -> list:
    models = []
    for seed, structure in enumerate(structures_):
        torch.manual_seed(seed)
        rnn = LayeredRNN(structure, VOCABULARY, cell=cell, batch_first=True)
        models.append(head(rnn) if head is SequenceClassifier else head(rnn, VOCABULARY))
    return models


@settings(max_examples=10, deadline=None)
@given(shapes=st.lists(structures(), min_size=1, max_size=3), cell=st.sampled_from(sorted(GATES)),
       classify=st.booleans())
def test_ensemble_forward_equals_each_model(shapes, cell, classify):
    models = build(shapes, cell, SequenceClassifier if classify else NextSymbolModel)
    ensemble = LayeredEnsembleModel(models)
    data = toy(5, 1)
    logits = ensemble(data.inputs, data.lengths)
    for k, model in enumerate(models):
        torch.testing.assert_close(logits[k], model(data.inputs, data.lengths))


@pytest.mark.parametrize(("cell", "task"), [(c, "classify") for c in sorted(GATES)] + [("gru", "next_symbol")])
def test_fit_equals_solo_fits(cell, task):
    """Per-model losses, metrics and trained weights equal separate fit() runs (Adam,
    clipping per model active, early stopping per model)."""
    config = TrainConfig(lr=0.02, batch_size=16, epochs=3, clip=0.05, patience=1, seed=3)
    models = build(three_structures(), cell, SequenceClassifier if task == "classify" else NextSymbolModel)
    solo = [copy.deepcopy(m) for m in models]
    train, test = toy(48, 1, task), toy(24, 2, task)
    histories = fit_layered_ensemble(models, train, test, config, strategy="batched")
    for model, alone, history in zip(models, solo, histories):
        expected = fit(alone, train, test, config)
        assert (history.status, history.reason) == (expected.status, expected.reason)
        assert history.status == "done"
        for got, want in zip(history.epochs, expected.epochs):
            assert got.keys() == want.keys()
            for key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-5), key
        for (name, got), want in zip(model.state_dict().items(), alone.state_dict().values()):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)


def test_one_diverging_model_fails_alone():
    config = TrainConfig(lr=0.02, batch_size=16, epochs=2, clip=1.0, seed=0)
    models = build(three_structures(), "gru")
    with torch.no_grad():
        models[1].readout.bias.fill_(math.nan)
    solo = [copy.deepcopy(m) for m in models]
    train, test = toy(32, 1), toy(16, 2)
    histories = fit_layered_ensemble(models, train, test, config, strategy="batched")
    assert histories[1].status == "failed"
    assert histories[1].reason == "non-finite training loss (nan) in epoch 1"
    for k in (0, 2):
        expected = fit(solo[k], train, test, config)
        assert histories[k].status == "done"
        assert histories[k].final["test_loss"] == pytest.approx(expected.final["test_loss"], rel=1e-4)


def test_masks_and_padding_stay_zero_through_training():
    """No weight outside a block's mask, a model's widths or its blocks becomes non-zero."""
    models = build(three_structures(), "lstm")
    ensemble = LayeredEnsembleModel(models)
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=0.1)
    data = toy(16, 0)
    for _ in range(3):
        optimizer.zero_grad()
        ensemble(data.inputs, data.lengths).pow(2).sum().backward()
        ensemble.rnn.mask_gradients()
        optimizer.step()
        ensemble.after_step(torch.ones(3, dtype=torch.bool))
    core = ensemble.rnn
    assert [call["width"] for call in core.plans[1]] == [1, 4]  # layer 1 runs narrow and wide blocks apart
    for name in core.weight_names:
        param, mask = getattr(core, name), core._buffers.get(name + "_mask")
        if mask is not None:
            assert torch.all(param[~mask] == 0), name
            assert param[mask].ne(0).any(), name
    assert torch.all(core.weight_ih_l1[0] == 0)  # model 0 has one layer: nothing in layer 1
    for k, model in enumerate(models):  # padded read-out columns stay zero
        assert torch.all(ensemble.readout_weight[k, :, model.readout.in_features:] == 0)


def test_write_back_round_trips():
    models = build(three_structures(), "rnn_relu")
    before = [copy.deepcopy(m.state_dict()) for m in models]
    ensemble = LayeredEnsembleModel(models)
    for model in models:
        for p in model.parameters():
            p.data.zero_()
    ensemble.load_into(models, [0, 1, 2])
    for model, state in zip(models, before):
        for name, value in model.state_dict().items():
            torch.testing.assert_close(value, state[name], msg=name)


def test_auto_strategy_follows_measurements(monkeypatch):
    cells = ("rnn_tanh", "rnn_relu", "lstm", "gru")
    assert [choose_layered_strategy(c, "cpu") for c in cells] == ["separate"] * 4  # compiled layers
    assert choose_layered_strategy("lstm", "cuda:0") == "batched"
    monkeypatch.setattr(native, "ENABLED", False)
    assert [choose_layered_strategy(c, "cpu") for c in cells] == ["batched"] * 4
    with pytest.raises(ValueError, match="cell must be one of"):
        choose_layered_strategy("cnn", "cpu")


def test_separate_strategy_is_plain_fit():
    config = TrainConfig(lr=0.02, batch_size=64, epochs=1, seed=0)
    models = build(three_structures()[:2], "lstm")
    solo = [copy.deepcopy(m) for m in models]
    train, test = toy(32, 1), toy(16, 2)
    assert fit_layered_ensemble(models, train, test, config) == [fit(m, train, test, config) for m in solo]


def test_bad_arguments_raise():
    structure = three_structures()[1]
    lstm, gru = build([structure], "lstm")[0], build([structure], "gru")[0]
    config = TrainConfig(epochs=1)
    with pytest.raises(ValueError, match="models must hold at least one model"):
        fit_layered_ensemble([], toy(4, 0), toy(4, 1), config)
    with pytest.raises(ValueError, match=r"models\[1\].rnn has \(cell, input_size, bias\)"):
        LayeredEnsembleModel([lstm, gru])
    plain = SequenceClassifier(torch.nn.LSTM(VOCABULARY, 3, batch_first=True))
    with pytest.raises(ValueError, match=r"models\[0\].rnn must be a LayeredRNN"):
        LayeredEnsembleModel([plain])
    with pytest.raises(ValueError, match="models must all be SequenceClassifier or all NextSymbolModel"):
        LayeredEnsembleModel([lstm, NextSymbolModel(lstm.rnn, VOCABULARY)])
    with pytest.raises(ValueError, match="train and test must share a task"):
        fit_layered_ensemble([lstm], toy(4, 0), toy(4, 1, "next_symbol"), config, strategy="batched")
    with pytest.raises(ValueError, match="strategy must be one of"):
        fit_layered_ensemble([lstm], toy(4, 0), toy(4, 1), config, strategy="fused")
    with pytest.raises(ValueError, match=r"inputs must be \(batch, time, 4\)"):
        LayeredEnsembleModel([lstm]).rnn(torch.zeros(2, 3, 5))


def test_take_gradient_is_an_index_add():
    """The ensemble's gather (index_select forward, index_add_ backward) passes gradcheck,
    repeated indices included."""
    from rnn_models.ensemble_layered import _take

    source = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    for index in (torch.tensor([2, 0, 3]), torch.tensor([1, 1, 0, 3, 1])):
        assert torch.autograd.gradcheck(lambda x, i=index: _take(x, i), (source,))


@pytest.mark.parametrize("cell", sorted(GATES))
def test_both_engines_give_the_same_ensemble(cell, monkeypatch):
    """The layered ensemble's outputs and gradients with the hoisted and the stepwise engine."""
    import rnn_models.ensemble_layered as layered

    torch.manual_seed(6)
    models = build(three_structures(), cell)
    data = toy(5, seed=1)
    inputs, lengths = data.inputs, data.lengths
    results = []
    for engine in ("hoisted", "stepwise"):
        monkeypatch.setitem(layered.ENGINES, cell, engine)
        ensemble = LayeredEnsembleModel(models)
        out = ensemble(inputs, lengths)
        out.pow(2).sum().backward()
        results.append([out.detach()] + [p.grad for p in ensemble.parameters()])
    for mine, theirs in zip(*results):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
