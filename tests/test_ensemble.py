"""fit_ensemble trains K models as one computation with the results of K separate fit runs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_models.ensemble import (
    EnsembleModel,
    EnsembleRNN,
    choose_strategy,
    fit_ensemble,
    per_model_losses,
)
from rnn_models.masked import make_rnn
from rnn_models.train import NextSymbolModel, SequenceClassifier, TrainConfig, fit, task_loss

VOCAB, HIDDEN = 5, 6
CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


def dataset(task: str, n: int, seed: int, steps: int = 9) -> SimpleNamespace:
    """Random sequences with the EncodedDataset tensor attributes."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, steps + 1, (n,), generator=g)
    valid = (torch.arange(steps) < lengths[:, None]).float()
    symbols = torch.randint(0, VOCAB, (n, steps), generator=g)
    inputs = torch.nn.functional.one_hot(symbols, VOCAB).float() * valid[..., None]
    if task == "classify":
        return SimpleNamespace(task=task, inputs=inputs, lengths=lengths, weights=None,
                               targets=torch.randint(0, 2, (n,), generator=g).float())
    targets = (torch.rand(n, steps, VOCAB, generator=g) < 0.4).float() * valid[..., None]
    return SimpleNamespace(task=task, inputs=inputs, lengths=lengths, targets=targets, weights=valid)


DATA = {task: (dataset(task, 48, 0), dataset(task, 24, 1)) for task in ("classify", "next_symbol")}


def build(cell: str, task: str, seed: int, num_layers: int = 1, hidden: int = HIDDEN) -> torch.nn.Module:
    """The single-model path: seed, masked recurrent module with its own mask, head."""
    torch.manual_seed(seed)
    mask = torch.rand(hidden, hidden) < 0.3
    rnn = make_rnn(cell, VOCAB, hidden, num_layers=num_layers, batch_first=True, hh_mask=mask)
    return SequenceClassifier(rnn) if task == "classify" else NextSymbolModel(rnn, VOCAB)


def assert_same_run(solo_history, ensemble_history, solo_model, ensemble_model) -> None:
    """Equal status, reason, per-epoch metrics and final weights (to float tolerance)."""
    assert (ensemble_history.status, ensemble_history.reason) == (solo_history.status, solo_history.reason)
    assert len(ensemble_history.epochs) == len(solo_history.epochs)
    for mine, theirs in zip(ensemble_history.epochs, solo_history.epochs):
        assert mine.keys() == theirs.keys()
        for key in theirs:
            assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-5, nan_ok=True), key
    for (name, p), q in zip(solo_model.named_parameters(), ensemble_model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, equal_nan=True, msg=name)


def solo_and_ensemble(cell, task, seeds, config, strategy, num_layers=1, prepare=None, metrics=None):
    """Train fresh copies of the same models alone and as one ensemble; return both."""
    solo = [build(cell, task, s, num_layers) for s in seeds]
    together = [build(cell, task, s, num_layers) for s in seeds]
    for models in (solo, together):
        if prepare is not None:
            prepare(models)
    train, test = DATA[task]
    solo_histories = [fit(m, train, test, config, metrics) for m in solo]
    histories = fit_ensemble(together, train, test, config, metrics, strategy=strategy)
    return solo, solo_histories, together, histories


@pytest.mark.parametrize("strategy", ["fused", "batched"])
@pytest.mark.parametrize("cell", CELLS)
def test_ensemble_equals_separate_runs(cell: str, strategy: str) -> None:
    config = TrainConfig(epochs=3, batch_size=16, lr=0.01, clip=0.5)
    solo, solo_h, together, histories = solo_and_ensemble(cell, "next_symbol", [0, 1, 2], config, strategy)
    for args in zip(solo_h, histories, solo, together):
        assert_same_run(*args)
    assert all(h.status == "done" for h in histories)


@pytest.mark.parametrize("strategy", ["fused", "batched"])
def test_two_layer_classifiers_with_metrics_and_early_stop(strategy: str) -> None:
    config = TrainConfig(epochs=4, batch_size=16, lr=0.05, patience=1, optimizer="adamw", weight_decay=0.1)
    metrics = {"mean_logit": lambda logits, targets, lengths: float(logits.mean())}
    runs = solo_and_ensemble("gru", "classify", [3, 4, 5, 6], config, strategy, num_layers=2, metrics=metrics)
    solo, solo_h, together, histories = runs
    for args in zip(solo_h, histories, solo, together):
        assert_same_run(*args)
    assert {len(h.epochs) for h in solo_h} != {4}, "early stopping should end some run before epoch 4"


@pytest.mark.parametrize("strategy", ["fused", "batched"])
def test_one_diverging_model_fails_alone(strategy: str) -> None:
    """A NaN recurrent weight would leak through a block-diagonal product (0 * NaN)."""

    def poison(models):
        with torch.no_grad():
            weight = models[1].rnn.weight_hh_l0
            row, col = weight.nonzero()[0]
            weight[row, col] = math.nan

    config = TrainConfig(epochs=2, batch_size=16, clip=1.0)
    solo, solo_h, together, histories = solo_and_ensemble("lstm", "next_symbol", [0, 1, 2], config,
                                                          strategy, prepare=poison)
    assert [h.status for h in histories] == ["done", "failed", "done"]
    assert histories[1].reason == solo_h[1].reason == "non-finite training loss (nan) in epoch 1"
    for args in zip(solo_h, histories, solo, together):
        assert_same_run(*args)


def test_model_diverging_during_training_fails_alone() -> None:
    """A relu network with huge recurrent weights overflows only on longer sequences: it
    fails in a later batch, after updates of all models, and the others are untouched."""

    def inflate(models):
        with torch.no_grad():
            models[0].rnn.weight_hh_l0.mul_(1e6)

    config = TrainConfig(epochs=2, batch_size=8)
    solo, solo_h, together, histories = solo_and_ensemble("rnn_relu", "next_symbol", [0, 1, 2], config,
                                                          "fused", prepare=inflate)
    assert [h.status for h in solo_h] == ["failed", "done", "done"]
    for args in zip(solo_h, histories, solo, together):
        assert_same_run(*args)


def test_clipping_is_per_model() -> None:
    """With one model's gradients 1000x larger, a clip over the whole ensemble would shrink
    the others' updates; per-model clipping keeps each run equal to its solo run."""

    def scale(models):
        with torch.no_grad():
            models[0].readout.weight.mul_(1000.0)

    config = TrainConfig(epochs=2, batch_size=16, clip=0.1, optimizer="sgd", lr=0.5)
    solo, solo_h, together, histories = solo_and_ensemble("lstm", "next_symbol", [0, 1, 2], config,
                                                          "batched", prepare=scale)
    for args in zip(solo_h, histories, solo, together):
        assert_same_run(*args)


@settings(max_examples=12, deadline=None)
@given(count=st.integers(1, 4), cell=st.sampled_from(CELLS), seed=st.integers(0, 1000))
def test_clip_grad_norms_equals_torch_per_model(count: int, cell: str, seed: int) -> None:
    models = [build(cell, "next_symbol", seed + k) for k in range(count)]
    ensemble = EnsembleModel(models, "batched")
    train, _ = DATA["next_symbol"]
    batch = (train.targets[:8], train.lengths[:8], train.weights[:8])
    factors = 10.0 ** (torch.rand(count, generator=torch.Generator().manual_seed(seed)) * 4 - 2)
    losses = per_model_losses("next_symbol", ensemble(train.inputs[:8], batch[1]), *batch)
    (losses * factors).sum().backward()
    ensemble.rnn.mask_gradients()  # as the masked modules' gradient hooks do for each model
    norms = ensemble.clip_grad_norms(0.5)
    for k, model in enumerate(models):
        (factors[k] * task_loss("next_symbol", model(train.inputs[:8], batch[1]), *batch)).backward()
        expected = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        assert float(norms[k]) == pytest.approx(float(expected), rel=1e-4)
        torch.testing.assert_close(ensemble.readout_weight.grad[k], model.readout.weight.grad)
        torch.testing.assert_close(ensemble.rnn.weight_hh_l0.grad[k], model.rnn.weight_hh_l0.grad)


@settings(max_examples=15, deadline=None)
@given(count=st.integers(2, 4), cell=st.sampled_from(CELLS), strategy=st.sampled_from(["fused", "batched"]),
       seed=st.integers(0, 1000), num_layers=st.integers(1, 2))
def test_models_do_not_interact(count: int, cell: str, strategy: str, seed: int, num_layers: int) -> None:
    """After training steps, model j's loss has zero gradient in every other model's
    parameters, its logits equal its own module's, and the fused weights are zero outside
    the diagonal blocks."""
    models = [build(cell, "next_symbol", seed + k, num_layers) for k in range(count)]
    ensemble = EnsembleModel(models, strategy)
    train, _ = DATA["next_symbol"]
    inputs, lengths = train.inputs[:8], train.lengths[:8]
    batch = (train.targets[:8], lengths, train.weights[:8])
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=0.05)
    for _ in range(2):
        optimizer.zero_grad()
        per_model_losses("next_symbol", ensemble(inputs, lengths), *batch).sum().backward()
        ensemble.rnn.mask_gradients()
        optimizer.step()
        ensemble.after_step(torch.ones(count, dtype=torch.bool))
    ensemble.load_into(models, range(count))
    optimizer.zero_grad()
    logits = ensemble(inputs, lengths)
    for k, model in enumerate(models):
        torch.testing.assert_close(logits[k], model(inputs, lengths), rtol=1e-5, atol=1e-6)
    j = seed % count
    task_loss("next_symbol", logits[j], *batch).backward()
    others = torch.arange(count) != j
    for name, param in ensemble.named_parameters():
        assert torch.count_nonzero(param.grad[others]) == 0, name
    for name in ensemble.rnn.weight_names:
        if name.startswith("weight") and name != "weight_ih_l0":
            fused = ensemble.rnn._fuse(name).detach().view(-1, count, HIDDEN, count, HIDDEN)
            off_block = ~torch.eye(count, dtype=torch.bool).view(1, count, 1, count, 1).expand_as(fused)
            assert torch.count_nonzero(fused[off_block]) == 0, name


def test_masks_stay_zero_after_training() -> None:
    models = [build("lstm", "next_symbol", s) for s in range(3)]
    masks = [m.rnn.weight_hh_l0_mask.clone() for m in models]
    fit_ensemble(models, *DATA["next_symbol"], TrainConfig(epochs=2, batch_size=16, lr=0.05), strategy="fused")
    for model, mask in zip(models, masks):
        assert torch.count_nonzero(model.rnn.weight_hh_l0[~mask]) == 0
        assert torch.count_nonzero(model.rnn.weight_hh_l0[mask]) == int(mask.sum())


def test_per_model_losses_equal_task_loss() -> None:
    train, _ = DATA["next_symbol"]
    logits = torch.randn(3, 48, 9, VOCAB)
    losses = per_model_losses("next_symbol", logits, train.targets, train.lengths, train.weights)
    for k in range(3):
        assert float(losses[k]) == pytest.approx(
            float(task_loss("next_symbol", logits[k], train.targets, train.lengths, train.weights)), rel=1e-6)


def test_auto_strategy_follows_the_measured_rule() -> None:
    assert choose_strategy(32, 32, 16) == "batched"
    assert choose_strategy(16, 64, 32) == "batched"
    assert choose_strategy(32, 32, 128) == "separate"
    assert choose_strategy(32, 128, 16) == "separate"
    assert choose_strategy(4, 16, 16) == "separate"


@pytest.mark.parametrize("strategy", ["separate", "auto"])
def test_every_strategy_equals_fit(strategy: str) -> None:
    config = TrainConfig(epochs=1, batch_size=16)
    train, test = DATA["next_symbol"]
    reference = [build("gru", "next_symbol", s) for s in range(16)]
    expected = [fit(m, train, test, config) for m in reference]
    models = [build("gru", "next_symbol", s) for s in range(16)]
    for args in zip(expected, fit_ensemble(models, train, test, config, strategy=strategy), reference, models):
        assert_same_run(*args)


def test_rejects_incompatible_models() -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        EnsembleRNN([make_rnn("lstm", VOCAB, 4), make_rnn("lstm", VOCAB, 5)])
    with pytest.raises(ValueError, match="cell"):
        EnsembleRNN([make_rnn("lstm", VOCAB, 4), make_rnn("gru", VOCAB, 4)])
    with pytest.raises(ValueError, match="unidirectional"):
        EnsembleRNN([make_rnn("gru", VOCAB, 4, bidirectional=True)])
    with pytest.raises(ValueError, match="strategy"):
        EnsembleRNN([make_rnn("gru", VOCAB, 4)], strategy="magic")
    with pytest.raises(ValueError, match="at least one"):
        EnsembleRNN([])
    with pytest.raises(ValueError, match="must all be SequenceClassifier or all NextSymbolModel"):
        EnsembleModel([build("gru", "classify", 0), build("gru", "next_symbol", 0)])
    with pytest.raises(ValueError, match="strategy"):
        fit_ensemble([build("gru", "classify", 0)], *DATA["classify"], TrainConfig(), strategy="parallel")
    with pytest.raises(ValueError, match="at least one"):
        fit_ensemble([], *DATA["classify"], TrainConfig())
    with pytest.raises(ValueError, match="share a task"):
        fit_ensemble([build("gru", "classify", 0)], DATA["classify"][0], DATA["next_symbol"][1], TrainConfig(),
                     strategy="batched")
