"""Heads and the training loop: true last step, both tasks, failure, determinism."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
import torch
from torch import nn

from rnn_models.config import ConfigError
from rnn_models.masked import make_rnn
from rnn_models.train import (
    EVENTS,
    Hook,
    NextSymbolModel,
    SequenceClassifier,
    TrainConfig,
    TrainState,
    batches,
    clip_gradients,
    fit,
    task_accuracy,
    task_loss,
)

VOCAB = 4


@dataclass
class Toy:
    """The tensor attributes of reber.tasks.EncodedDataset, from random symbols."""

    task: str
    inputs: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor | None = None


def random_symbols(n: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-hot inputs (zero after each end), indices (-1 after the end) and lengths."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, steps + 1, (n,), generator=gen)
    indices = torch.randint(0, VOCAB, (n, steps), generator=gen)
    indices[torch.arange(steps) >= lengths.unsqueeze(1)] = -1
    inputs = torch.zeros(n, steps, VOCAB)
    valid = indices >= 0
    inputs[valid] = nn.functional.one_hot(indices[valid], VOCAB).float()
    return inputs, indices, lengths


def classify_data(n: int, seed: int) -> Toy:
    """Label: the sequence's last symbol is 0 (only readable at the true last step)."""
    inputs, indices, lengths = random_symbols(n, 8, seed)
    last = indices.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
    return Toy("classify", inputs, lengths, (last == 0).float())


def next_symbol_data(n: int, seed: int) -> Toy:
    """After symbol s the symbols s+1 and s+2 (mod V) may follow; the first step is unscored."""
    inputs, indices, lengths = random_symbols(n, 6, seed)
    targets = torch.zeros(n, 6, VOCAB)
    valid = indices >= 0
    for shift in (1, 2):
        targets[valid] += nn.functional.one_hot((indices[valid] + shift) % VOCAB, VOCAB).float()
    weights = valid.float()
    weights[:, 0] = 0.0
    return Toy("next_symbol", inputs, lengths, targets, weights)


def classifier(seed: int = 0, cell: str = "lstm", **kwargs) -> SequenceClassifier:
    torch.manual_seed(seed)
    return SequenceClassifier(make_rnn(cell, VOCAB, 8, batch_first=True, **kwargs))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_reads_the_true_last_step(bidirectional):
    model = classifier(bidirectional=bidirectional).eval()
    data = classify_data(6, seed=1)
    garbage = data.inputs + 5.0 * (torch.arange(8) >= data.lengths.unsqueeze(1)).unsqueeze(2).float()
    with torch.no_grad():
        logits = model(data.inputs, data.lengths)
        torch.testing.assert_close(model(garbage, data.lengths), logits)
        for b, n in enumerate(data.lengths.tolist()):
            alone = model(data.inputs[b:b + 1, :n], data.lengths[b:b + 1])
            torch.testing.assert_close(alone, logits[b:b + 1])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_bidirectional_classifier_reads_both_directions_over_the_whole_sequence(cell):
    """Forward half at the last true step, backward half at step 0: both equal torch's final
    hidden states of the unpadded sequence."""
    model = classifier(cell=cell, bidirectional=True).eval()
    data = classify_data(5, seed=3)
    with torch.no_grad():
        logits = model(data.inputs, data.lengths)
        for b, n in enumerate(data.lengths.tolist()):
            state = model.rnn(data.inputs[b:b + 1, :n])[1]
            h_n = state[0] if cell == "lstm" else state
            features = torch.cat([h_n[0], h_n[1]], dim=1)          # (1, 2H): forward, backward
            torch.testing.assert_close(model.readout(features).squeeze(1), logits[b:b + 1])


def test_classifier_on_time_major_rnn_matches_batch_first():
    torch.manual_seed(0)
    time_major = SequenceClassifier(make_rnn("gru", VOCAB, 5))
    batch_first = SequenceClassifier(make_rnn("gru", VOCAB, 5, batch_first=True))
    batch_first.load_state_dict(time_major.state_dict())
    data = classify_data(4, seed=2)
    expected = batch_first(data.inputs, data.lengths)
    torch.testing.assert_close(time_major(data.inputs, data.lengths), expected)


def test_next_symbol_model_shapes_and_causality():
    torch.manual_seed(0)
    model = NextSymbolModel(make_rnn("gru", VOCAB, 6, batch_first=True), VOCAB)
    data = next_symbol_data(5, seed=3)
    logits = model(data.inputs, data.lengths)
    assert logits.shape == (5, 6, VOCAB)
    changed = data.inputs.clone()
    changed[:, 3:] = 7.0  # later steps cannot change earlier predictions
    torch.testing.assert_close(model(changed, data.lengths)[:, :3], logits[:, :3])
    with pytest.raises(ValueError, match="unidirectional"):
        NextSymbolModel(make_rnn("gru", VOCAB, 6, bidirectional=True), VOCAB)


def test_fit_learns_classification_and_reports_history():
    config = TrainConfig(lr=0.05, batch_size=16, epochs=6, clip=5.0)
    history = fit(classifier(), classify_data(192, seed=4), classify_data(64, seed=5), config)
    assert history.status == "done" and history.reason == ""
    assert [e["epoch"] for e in history.epochs] == list(range(1, 7))
    assert history.final == history.epochs[-1]
    assert set(history.final) == {"epoch", "train_loss", "test_loss", "test_acc"}
    assert history.final["test_acc"] > 0.9
    assert history.epochs[-1]["test_loss"] < history.epochs[0]["test_loss"]
    assert history.seconds > 0


def test_fit_next_symbol_with_weights_and_custom_metric():
    train, test = next_symbol_data(128, seed=6), next_symbol_data(48, seed=7)
    seen = {}

    def scored_accuracy(logits, targets, lengths):
        seen["shape"] = tuple(logits.shape)
        return task_accuracy("next_symbol", logits, targets, lengths, test.weights)

    torch.manual_seed(0)
    model = NextSymbolModel(make_rnn("lstm", VOCAB, 8, batch_first=True), VOCAB)
    history = fit(model, train, test, TrainConfig(lr=0.05, batch_size=16, epochs=5),
                  metrics={"scored_accuracy": scored_accuracy})
    assert seen["shape"] == (48, 6, VOCAB)  # whole test set, dataset order, full length
    assert history.final["scored_accuracy"] == history.final["test_acc"]
    assert history.final["test_acc"] > 0.9


def test_fit_is_deterministic_for_a_seed():
    train, test = classify_data(64, seed=8), classify_data(32, seed=9)
    config = TrainConfig(batch_size=16, epochs=2, lr=0.01)
    models = [classifier(seed=3, num_layers=2, dropout=0.3) for _ in range(3)]  # dropout draws
    first = fit(models[0], train, test, config)
    second = fit(models[1], train, test, config)
    other = fit(models[2], train, test, replace(config, seed=1))
    assert first == second
    assert first.epochs != other.epochs


def test_nan_loss_fails_cleanly():
    train = classify_data(32, seed=10)
    train.inputs[3, 0, 0] = math.nan
    history = fit(classifier(), train, classify_data(8, seed=11), TrainConfig(batch_size=8, epochs=3))
    assert history.status == "failed"
    assert "non-finite training loss" in history.reason and "epoch 1" in history.reason
    assert history.epochs == [] and history.final == {}


def test_early_stopping_after_patience_epochs_without_improvement():
    config = TrainConfig(optimizer="sgd", lr=1e-30, batch_size=16, epochs=10, patience=2)
    history = fit(classifier(), classify_data(32, seed=12), classify_data(16, seed=13), config)
    assert history.status == "done"
    assert len(history.epochs) == 3 and "early stop after epoch 3" in history.reason


def test_gradient_clipping_bounds_each_step():
    model = classifier()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    config = TrainConfig(optimizer="sgd", lr=1.0, batch_size=16, epochs=1, clip=1e-4)
    fit(model, classify_data(32, seed=14), classify_data(8, seed=15), config)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert 0 < float((after - before).norm()) <= 2 * 1e-4 * (1 + 1e-5)  # two batches


def test_loss_and_accuracy_ignore_pads_and_unscored_steps():
    data = next_symbol_data(4, seed=16)
    torch.manual_seed(0)
    logits = torch.randn(4, 6, VOCAB)
    changed = logits.clone()
    unscored = data.weights == 0
    changed[unscored] = 100.0
    args = ("next_symbol", data.targets, data.lengths, data.weights)
    assert torch.equal(task_loss(args[0], changed, *args[1:]), task_loss(args[0], logits, *args[1:]))
    assert task_accuracy(args[0], changed, *args[1:]) == task_accuracy(args[0], logits, *args[1:])


def test_next_symbol_accuracy_ranks_allowed_above_disallowed():
    targets = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    logits = torch.tensor([[[2.0, 0.5, 0.4], [3.0, 1.0, -1.0], [0.0, 0.0, 0.0]]])
    # step 0: allowed {0, 1} both above 0.4 -> right; step 1: 0 outranks allowed 1 -> wrong;
    # step 2: nothing allowed -> not scored
    assert task_accuracy("next_symbol", logits, targets, torch.tensor([3])) == 0.5
    assert task_accuracy("classify", torch.tensor([0.3, -2.0, 1.0]), torch.tensor([1.0, 0.0, 0.0]),
                         torch.tensor([1, 1, 1])) == pytest.approx(2 / 3)


def test_classify_accuracy_is_the_exact_count_ratio():
    # 3089 right of 6250: the float32 mean is 0.49423998..., the ratio (and the study's) 0.49424
    targets = torch.zeros(6250)
    logits = torch.cat([-torch.ones(3089), torch.ones(6250 - 3089)])
    accuracy = task_accuracy("classify", logits, targets, torch.ones(6250, dtype=torch.long))
    assert accuracy == 0.49424
    assert float(torch.tensor(3089.0) / 6250) != 0.49424


@pytest.mark.parametrize("bucket", [False, True])
def test_batches_cover_every_sequence_once(bucket):
    lengths = torch.tensor([5, 1, 3, 5, 2, 4, 1, 3, 2, 4, 5])
    groups = batches(lengths, 3, bucket, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(groups).tolist()) == list(range(11))
    if bucket:  # batches are runs of the length-sorted order
        spans = sorted((int(lengths[b].min()), int(lengths[b].max())) for b in groups)
        assert all(hi <= lo_next for (_, hi), (lo_next, _) in zip(spans, spans[1:]))


@pytest.mark.parametrize("field, value, match", [
    ("optimizer", "lbfgs", "optimizer must be one of"),
    ("lr", 0.0, "lr must be > 0"),
    ("batch_size", 0, "batch_size must be >= 1"),
    ("epochs", 0, r"epochs must be in 1..100000, got 0"),
    ("epochs", 100_001, r"epochs must be in 1..100000"),
    ("seed", -1, "seed must be >= 0"),
    ("bucket", 1, "bucket must be bool, got 1"),
    ("clip", -1.0, "clip must be None or > 0"),
    ("patience", 0, "patience must be None or >= 1"),
    ("momentum", 1.0, "momentum must be in"),
    ("device", "gpu0", "device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu0'"),
    ("lr", "0.1", "lr must be int or float, got '0.1'"),
    ("epochs", None, "epochs must be int, got None"),
    ("batch_size", 2.5, "batch_size must be int, got 2.5"),
    ("clip", True, "clip must be int or float or None, got True"),
])
def test_config_rejects_bad_values(field, value, match):
    """Each bad value is a ConfigError naming the field (what graphprior's specs report too)."""
    with pytest.raises(ConfigError, match=match) as caught:
        TrainConfig(**{field: value})
    assert caught.value.field == field


def test_config_takes_a_torch_device():
    assert TrainConfig(device=torch.device("cpu")).device == "cpu"


def test_spec_train_table_is_train_config():
    """The sweep spec's ``[train]`` has TrainConfig's fields (less the run's seed), its
    defaults (but the study's clip of 5) and its checks."""
    from dataclasses import fields

    from graphprior.spec import SpecError, TrainSpec, validate_spec

    assert list(TrainSpec.model_fields) == [f.name for f in fields(TrainConfig) if f.name != "seed"]
    assert TrainConfig(**TrainSpec().model_dump()) == TrainConfig(clip=5.0)
    spec = {"generators": [{"name": "ring_lattice", "params": {"n": 6, "k": 2}}], "train": {"momentum": 1.5}}
    with pytest.raises(SpecError, match=r"^train.momentum: must be in \[0, 1\), got 1.5$"):
        validate_spec(spec)


def test_fit_rejects_malformed_data():
    good = classify_data(8, seed=17)
    with pytest.raises(ValueError, match="train.task must be one of"):
        fit(classifier(), replace(good, task="regress"), good, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match=r"test.targets must have shape \(8,\)"):
        fit(classifier(), good, replace(good, targets=torch.zeros(8, 2)), TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="share a task"):
        fit(classifier(), good, next_symbol_data(8, seed=18), TrainConfig(epochs=1))


def test_optimizers_run_fused_where_torch_has_a_fused_kernel():
    parameters = [torch.nn.Parameter(torch.zeros(3))]
    for name in ("adam", "adamw"):
        assert TrainConfig(optimizer=name).make_optimizer(parameters).defaults["fused"] is True, name
    assert not TrainConfig(optimizer="sgd").make_optimizer(parameters).defaults["fused"]  # sparse gradients
    assert "fused" not in TrainConfig(optimizer="rmsprop").make_optimizer(parameters).defaults
    integer = [torch.zeros(3, dtype=torch.int64)]
    assert not TrainConfig().make_optimizer(parameters + integer).defaults["fused"]


def test_make_optimizer_takes_parameter_groups_and_named_parameters():
    model = nn.Linear(3, 2)
    groups = [{"params": [model.weight]}, {"params": model.bias, "lr": 0.1}]
    optimizer = TrainConfig().make_optimizer(groups)
    assert optimizer.defaults["fused"] is True and optimizer.param_groups[1]["lr"] == 0.1
    named = TrainConfig().make_optimizer(model.named_parameters())
    assert named.defaults["fused"] is True and len(named.param_groups[0]["params"]) == 2


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0, math.nan, math.inf])
@pytest.mark.parametrize("second_dtype", [torch.float32, torch.float64])
def test_clip_gradients_follows_torchs_clip_grad_norm(scale, second_dtype):
    torch.manual_seed(6)
    gradients = [torch.randn(4, 3) * scale, torch.randn(5, dtype=second_dtype) * scale]
    mine = [nn.Parameter(torch.zeros_like(g)) for g in gradients]
    theirs = [nn.Parameter(torch.zeros_like(g)) for g in gradients]
    for a, b, g in zip(mine, theirs, gradients):
        a.grad, b.grad = g.clone(), g.clone()
    clip_gradients(mine + [nn.Parameter(torch.zeros(2))], 2.0)  # a parameter without a gradient is skipped
    nn.utils.clip_grad_norm_(theirs, 2.0)
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a.grad, b.grad, equal_nan=True)
    if scale == 0.01:
        assert all(torch.equal(a.grad, g) for a, g in zip(mine, gradients))  # untouched, not multiplied by 1


class EventLog(Hook):
    """Records every event with the epoch and step it saw; stops after ``stop_at`` steps."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.events: list[tuple[str, int, int]] = []
        self.stop_at = stop_at

    def _log(self, name: str, state: TrainState) -> None:
        self.events.append((name, state.epoch, state.step))

    def on_train_begin(self, state: TrainState) -> None:
        self._log("on_train_begin", state)

    def before_batch(self, state: TrainState) -> None:
        self._log("before_batch", state)

    def before_step(self, state: TrainState) -> None:
        assert all(p.grad is not None for p in state.model.parameters())  # the latest gradients
        self._log("before_step", state)

    def after_step(self, state: TrainState) -> None:
        self._log("after_step", state)
        if state.step == self.stop_at:
            state.stop("the hook had seen enough")

    def on_epoch_end(self, state: TrainState) -> None:
        assert set(state.scores[0]) == {"test_loss", "test_acc"}
        self._log("on_epoch_end", state)

    def on_train_end(self, state: TrainState) -> None:
        self._log("on_train_end", state)


def test_a_hook_sees_every_step_and_epoch_in_order():
    train, test = classify_data(40, seed=20), classify_data(8, seed=21)
    log = EventLog()
    fit(classifier(), train, test, TrainConfig(batch_size=16, epochs=2), hooks=[log])
    steps_per_epoch = 3  # 40 sequences in batches of 16
    expected = [("on_train_begin", 0, 0)]
    step = 0
    for epoch in (1, 2):
        for _ in range(steps_per_epoch):
            expected += [("before_batch", epoch, step), ("before_step", epoch, step), ("after_step", epoch, step + 1)]
            step += 1
        expected.append(("on_epoch_end", epoch, step))
    expected.append(("on_train_end", 2, step))
    assert log.events == expected


def test_a_hook_can_stop_training_mid_epoch_and_the_epoch_is_still_scored():
    train, test = classify_data(40, seed=20), classify_data(8, seed=21)
    log = EventLog(stop_at=4)
    history = fit(classifier(), train, test, TrainConfig(batch_size=16, epochs=5), hooks=[log])
    assert (history.status, history.reason) == ("done", "the hook had seen enough")
    assert [e["epoch"] for e in history.epochs] == [1, 2]
    assert [name for name, _, _ in log.events].count("after_step") == 4
    assert log.events[-2:] == [("on_epoch_end", 2, 4), ("on_train_end", 2, 4)]


class WeightNorm(Hook):
    """The worked example of docs/models.md: the weight norm of each model per epoch."""

    def on_epoch_end(self, state: TrainState) -> None:
        with torch.no_grad():
            norm = torch.linalg.vector_norm(torch.cat([p.reshape(-1) for p in state.model.parameters()]))
        state.record("weight_norm", float(norm))


def test_values_a_hook_records_join_the_epochs_history():
    model = classifier()
    history = fit(model, classify_data(32, seed=22), classify_data(8, seed=23),
                  TrainConfig(batch_size=16, epochs=2), hooks=[WeightNorm()])
    assert [set(e) for e in history.epochs] == [{"epoch", "train_loss", "test_loss", "test_acc", "weight_norm"}] * 2
    final = torch.linalg.vector_norm(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert history.final["weight_norm"] == pytest.approx(float(final))
    assert history.epochs[0]["weight_norm"] != history.epochs[1]["weight_norm"]


def test_hooks_are_checked():
    data = classify_data(16, seed=24)
    with pytest.raises(ValueError, match=r"hooks\[1\] \(object\) has none of the hook methods"):
        fit(classifier(), data, data, TrainConfig(epochs=1), hooks=[WeightNorm(), object()])

    class Clobber(Hook):
        def on_epoch_end(self, state):
            state.record("test_acc", 1.0)

    with pytest.raises(ValueError, match="name 'test_acc' is one of the loop's own columns"):
        fit(classifier(), data, data, TrainConfig(epochs=1), hooks=[Clobber()])
    assert EVENTS == ("on_train_begin", "before_batch", "before_step", "after_step", "on_epoch_end", "on_train_end")


def test_any_object_with_some_hook_methods_is_a_hook():
    class OnlyEnd:
        def __init__(self):
            self.calls = 0

        def on_train_end(self, state):
            self.calls += 1

    data = classify_data(16, seed=25)
    hook = OnlyEnd()
    fit([classifier(0), classifier(1)], data, data, TrainConfig(epochs=1), hooks=[hook], engine="separate")
    assert hook.calls == 2
