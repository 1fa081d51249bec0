"""fit trains K models as one stack (engine "batched") with the results of K separate runs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_models.ensemble import EnsembleModel, EnsembleRNN, per_model_losses, stackable
from rnn_models.masked import Remask, make_rnn
from rnn_models.train import Hook, NextSymbolModel, SequenceClassifier, TrainConfig, TrainState, fit, task_loss

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


def solo_and_ensemble(cell, task, seeds, config, engine="batched", num_layers=1, prepare=None, metrics=None):
    """Train fresh copies of the same models alone and as one ensemble; return both."""
    solo = [build(cell, task, s, num_layers) for s in seeds]
    together = [build(cell, task, s, num_layers) for s in seeds]
    for models in (solo, together):
        if prepare is not None:
            prepare(models)
    train, test = DATA[task]
    solo_histories = [fit(m, train, test, config, metrics) for m in solo]
    histories = fit(together, train, test, config, metrics, engine=engine)
    return solo, solo_histories, together, histories


@pytest.mark.parametrize("cell", CELLS)
def test_ensemble_equals_separate_runs(cell: str) -> None:
    config = TrainConfig(epochs=3, batch_size=16, lr=0.01, clip=0.5)
    solo, solo_h, together, histories = solo_and_ensemble(cell, "next_symbol", [0, 1, 2], config)
    for args in zip(solo_h, histories, solo, together):
        assert_same_run(*args)
    assert all(h.status == "done" for h in histories)


def test_two_layer_classifiers_with_metrics_and_early_stop() -> None:
    config = TrainConfig(epochs=4, batch_size=16, lr=0.05, patience=1, optimizer="adamw", weight_decay=0.1)
    metrics = {"mean_logit": lambda logits, targets, lengths: float(logits.mean())}
    runs = solo_and_ensemble("gru", "classify", [3, 4, 5, 6], config, num_layers=2, metrics=metrics)
    solo, solo_h, together, histories = runs
    for args in zip(solo_h, histories, solo, together):
        assert_same_run(*args)
    assert {len(h.epochs) for h in solo_h} != {4}, "early stopping should end some run before epoch 4"


def test_one_diverging_model_fails_alone() -> None:
    """A model with a NaN weight fails in its first batch; the others train on as alone."""

    def poison(models):
        with torch.no_grad():
            weight = models[1].rnn.weight_hh_l0
            row, col = weight.nonzero()[0]
            weight[row, col] = math.nan

    config = TrainConfig(epochs=2, batch_size=16, clip=1.0)
    solo, solo_h, together, histories = solo_and_ensemble("lstm", "next_symbol", [0, 1, 2], config,
                                                          prepare=poison)
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
                                                          prepare=inflate)
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
                                                          prepare=scale)
    for args in zip(solo_h, histories, solo, together):
        assert_same_run(*args)


@settings(max_examples=12, deadline=None)
@given(count=st.integers(1, 4), cell=st.sampled_from(CELLS), seed=st.integers(0, 1000))
def test_clip_grad_norms_equals_torch_per_model(count: int, cell: str, seed: int) -> None:
    models = [build(cell, "next_symbol", seed + k) for k in range(count)]
    ensemble = EnsembleModel(models)
    train, _ = DATA["next_symbol"]
    batch = (train.targets[:8], train.lengths[:8], train.weights[:8])
    factors = 10.0 ** (torch.rand(count, generator=torch.Generator().manual_seed(seed)) * 4 - 2)
    losses = ensemble.losses("next_symbol", train.inputs[:8], batch[1], *batch[::2])
    (losses * factors).sum().backward()  # masked gradients are zeroed by hooks, as in each model
    norms = ensemble.clip(0.5)
    for k, model in enumerate(models):
        (factors[k] * task_loss("next_symbol", model(train.inputs[:8], batch[1]), *batch)).backward()
        expected = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        assert float(norms[k]) == pytest.approx(float(expected), rel=1e-4)
        torch.testing.assert_close(ensemble.readout_weight.grad[k], model.readout.weight.grad)
        torch.testing.assert_close(ensemble.rnn.weight_hh_l0.grad[k], model.rnn.weight_hh_l0.grad)


@settings(max_examples=15, deadline=None)
@given(count=st.integers(2, 4), cell=st.sampled_from(CELLS), seed=st.integers(0, 1000),
       num_layers=st.integers(1, 2))
def test_models_do_not_interact(count: int, cell: str, seed: int, num_layers: int) -> None:
    """After training steps, model j's loss has zero gradient in every other model's
    parameters and its logits equal its own module's."""
    models = [build(cell, "next_symbol", seed + k, num_layers) for k in range(count)]
    ensemble = EnsembleModel(models)
    train, _ = DATA["next_symbol"]
    inputs, lengths = train.inputs[:8], train.lengths[:8]
    batch = (train.targets[:8], lengths, train.weights[:8])
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=0.05)
    remask = Remask(ensemble)
    for _ in range(2):
        optimizer.zero_grad()
        per_model_losses("next_symbol", ensemble(inputs, lengths), *batch).sum().backward()
        optimizer.step()
        remask()
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


def test_masks_stay_zero_after_training() -> None:
    models = [build("lstm", "next_symbol", s) for s in range(3)]
    masks = [m.rnn.weight_hh_l0_mask.clone() for m in models]
    fit(models, *DATA["next_symbol"], TrainConfig(epochs=2, batch_size=16, lr=0.05), engine="batched")
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


def test_stackable_is_the_one_rule_for_training_together() -> None:
    assert stackable([build("gru", "classify", s) for s in range(3)])
    assert not stackable([])
    assert not stackable([build("gru", "classify", 0), build("gru", "next_symbol", 1)])
    assert not stackable([build("gru", "classify", 0), build("lstm", "classify", 1)])
    assert not stackable([build("gru", "classify", 0, hidden=4), build("gru", "classify", 1)])
    assert not stackable([SequenceClassifier(make_rnn("gru", VOCAB, 4, bidirectional=True, batch_first=True))])
    assert not stackable([torch.nn.Linear(2, 2)])


@pytest.mark.parametrize("engine", ["separate", "auto"])
def test_every_engine_equals_fit(engine: str) -> None:
    config = TrainConfig(epochs=1, batch_size=16)
    train, test = DATA["next_symbol"]
    reference = [build("gru", "next_symbol", s) for s in range(16)]
    expected = [fit(m, train, test, config) for m in reference]
    models = [build("gru", "next_symbol", s) for s in range(16)]
    for args in zip(expected, fit(models, train, test, config, engine=engine), reference, models):
        assert_same_run(*args)


def test_a_hook_stopping_one_stacked_model_leaves_the_others_as_alone() -> None:
    """A hook stops model 1 after 2 steps: it leaves the stack with its weights, its epoch
    is still evaluated, and it equals a solo run stopped the same way; the others train on
    and equal their solo runs."""

    class StopModelAfter(Hook):
        def __init__(self, model: int, steps: int) -> None:
            self.model, self.steps, self.seen = model, steps, 0

        def after_step(self, state: TrainState) -> None:
            if self.model < len(state.models) and state.active[self.model]:
                self.seen += 1
                if self.seen == self.steps:
                    state.stop("enough", model=self.model)

    config = TrainConfig(epochs=2, batch_size=16, lr=0.01)
    train, test = DATA["next_symbol"]
    together = [build("lstm", "next_symbol", s) for s in range(3)]
    histories = fit(together, train, test, config, hooks=[StopModelAfter(1, 2)], engine="batched")
    solo = [build("lstm", "next_symbol", s) for s in range(3)]
    solo_h = [fit(m, train, test, config, hooks=[StopModelAfter(0, 2)] if k == 1 else [])
              for k, m in enumerate(solo)]
    assert [h.reason for h in histories] == ["", "enough", ""]
    assert [len(h.epochs) for h in histories] == [2, 1, 2]
    for args in zip(solo_h, histories, solo, together):
        assert_same_run(*args)


def test_rejects_incompatible_models() -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        EnsembleRNN([make_rnn("lstm", VOCAB, 4), make_rnn("lstm", VOCAB, 5)])
    with pytest.raises(ValueError, match="cell"):
        EnsembleRNN([make_rnn("lstm", VOCAB, 4), make_rnn("gru", VOCAB, 4)])
    with pytest.raises(ValueError, match="unidirectional"):
        EnsembleRNN([make_rnn("gru", VOCAB, 4, bidirectional=True)])
    with pytest.raises(ValueError, match="at least one"):
        EnsembleRNN([])
    with pytest.raises(ValueError, match="must all be SequenceClassifier or all NextSymbolModel"):
        EnsembleModel([build("gru", "classify", 0), build("gru", "next_symbol", 0)])
    with pytest.raises(ValueError, match=r"engine must be one of \('auto', 'separate', 'batched'\)"):
        fit([build("gru", "classify", 0)], *DATA["classify"], TrainConfig(), engine="parallel")
    with pytest.raises(ValueError, match="non-empty sequence"):
        fit([], *DATA["classify"], TrainConfig())
    with pytest.raises(ValueError, match="share a task"):
        fit([build("gru", "classify", 0)], DATA["classify"][0], DATA["next_symbol"][1], TrainConfig(),
            engine="batched")
