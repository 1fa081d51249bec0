"""Continual Reber with unbroken streams (Gers, Schmidhuber & Cummins 2000)."""

from __future__ import annotations

import pytest
import torch

from graphprior.continual import evaluate_stream, stream_task
from reber.grammar import ContinualReber, get_grammar
from reber.metrics import stream_report
from reber.tasks import stream_data
from rnn_models.masked import make_rnn, open_forget_gate
from rnn_models.train import NextSymbolModel, TrainConfig, fit, predict

PROCESS = ContinualReber(get_grammar("embedded"))


def stateful_model(cell: str = "lstm", hidden: int = 8, seed: int = 0) -> NextSymbolModel:
    torch.manual_seed(seed)
    return NextSymbolModel(make_rnn(cell, 7, hidden, batch_first=True), 7, stateful=True)


def test_streams_are_window_major_and_unbroken():
    data = stream_data(streams=3, windows=4, window=10, seed=5)
    assert data.streams == 3 and data.inputs.shape == (12, 10, 7)
    for s in range(3):
        stream = "".join(data.strings[w * 3 + s] for w in range(4))
        assert len(stream) == 40 and stream[0] == "B"
        rows = [w * 3 + s for w in range(4)]
        targets = torch.from_numpy(PROCESS.next_symbol_mask(stream)).float()
        torch.testing.assert_close(data.targets[rows].reshape(40, 7), targets)
        assert torch.equal(data.long_range[rows].reshape(-1), torch.from_numpy(PROCESS.long_range_mask(stream)))
    assert bool((data.weights == 1).all())
    assert stream_data(streams=3, windows=4, window=10, seed=5).strings == data.strings
    with pytest.raises(ValueError, match="windows"):
        stream_data(windows=0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_the_state_carried_across_windows_equals_the_whole_stream_at_once(cell):
    data = stream_data(streams=2, windows=3, window=5, seed=1)
    model = stateful_model(cell)
    logits = predict(model, data)                                 # (6, 5, 7): window-major
    whole = torch.stack([torch.cat([data.inputs[w * 2 + s] for w in range(3)]) for s in range(2)])
    model.stateful = False
    expected = model(whole, torch.full((2,), 15))                 # (2, 15, 7) from zero states
    for s in range(2):
        torch.testing.assert_close(torch.cat([logits[w * 2 + s] for w in range(3)]), expected[s])


def test_fit_trains_streams_with_the_state_carried_and_refuses_stateless_models():
    train, test = stream_task(train_windows=12, test_windows=3, streams=4, window=20, seed=2)
    history = fit(stateful_model(), train, test, TrainConfig(epochs=2, lr=0.01))
    assert history.status == "done" and len(history.epochs) == 2
    stateless = NextSymbolModel(make_rnn("lstm", 7, 8, batch_first=True), 7)
    with pytest.raises(ValueError, match="model 0 must carry its state"):
        fit(stateless, train, test, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="stateful needs a torch.nn.RNN"):
        NextSymbolModel(torch.nn.Linear(7, 7), 7, stateful=True)


def test_stream_report_counts_to_the_first_error():
    targets = torch.zeros(10, 3)
    targets[:, 0] = 1.0
    logits = torch.zeros(10, 3)
    logits[:, 0] = 1.0
    starts = torch.tensor([1, 0, 0, 1, 0, 0, 1, 0, 0, 0], dtype=torch.bool)
    long_range = torch.zeros(10, dtype=torch.bool)
    long_range[[2, 8]] = True
    solved = stream_report(logits, targets, long_range, starts)
    assert solved == {"solved": 1.0, "symbols_before_error": 10.0, "strings_before_error": 2.0,
                      "symbol_accuracy": 1.0, "long_range_accuracy": 1.0}
    logits[7, 1] = 2.0  # the first error: step 7, in the third string
    logits[8, 2] = 2.0
    report = stream_report(logits, targets, long_range, starts)
    assert report["solved"] == 0.0 and report["symbols_before_error"] == 7.0
    assert report["strings_before_error"] == 2.0
    assert report["symbol_accuracy"] == pytest.approx(0.8) and report["long_range_accuracy"] == 0.5
    with pytest.raises(ValueError, match="string_starts must have shape"):
        stream_report(logits, targets, long_range, starts[:5])


def test_evaluate_stream_runs_unbroken_and_checks_its_arguments():
    model = stateful_model()
    report = evaluate_stream(model, symbols=2000, window=500, seed=3)
    assert set(report) == {"solved", "symbols_before_error", "strings_before_error", "symbol_accuracy",
                           "long_range_accuracy"}
    assert 0 <= report["symbols_before_error"] <= 2000
    # the same stream read in other windows gives the same measures: nothing is reset
    assert evaluate_stream(model, symbols=2000, window=1000, seed=3) == report
    with pytest.raises(ValueError, match="multiple of window=1000"):
        evaluate_stream(model, symbols=1500)
    with pytest.raises(ValueError, match="stateful"):
        evaluate_stream(NextSymbolModel(make_rnn("lstm", 7, 8, batch_first=True), 7))


def test_an_lstm_without_forget_gate_never_forgets():
    """f = 1 at every step: c_t = c_(t-1) + i * g, and training leaves the gate open."""
    torch.manual_seed(4)
    lstm = open_forget_gate(make_rnn("lstm", 3, 5, batch_first=True))
    x = torch.randn(2, 6, 3)
    _, (_, c) = lstm(x)
    w_ih, w_hh, b = lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0
    h_t, c_t = torch.zeros(2, 5), torch.zeros(2, 5)
    for t in range(6):
        i, f, g, o = (x[:, t] @ w_ih.t() + h_t @ w_hh.t() + b).chunk(4, dim=1)
        assert bool((torch.sigmoid(f) == 1.0).all())
        c_t = c_t + torch.sigmoid(i) * torch.tanh(g)
        h_t = torch.sigmoid(o) * torch.tanh(c_t)
    torch.testing.assert_close(c[0], c_t)
    train, test = stream_task(train_windows=4, test_windows=2, streams=2, window=10, seed=6)
    stateful = NextSymbolModel(open_forget_gate(make_rnn("lstm", 7, 6, batch_first=True)), 7, stateful=True)
    before = stateful.rnn.bias_ih_l0.detach()[6:12].clone()
    fit(stateful, train, test, TrainConfig(epochs=2, lr=0.05))
    assert torch.equal(stateful.rnn.bias_ih_l0.detach()[6:12], before)
    assert bool((stateful.rnn.weight_hh_l0.detach()[6:12] == 0).all())
    with pytest.raises(ValueError, match="must be a MaskedLSTM"):
        open_forget_gate(make_rnn("gru", 3, 5))


def test_a_layered_model_carries_its_state_across_windows_too():
    """A stateful LayeredRNN (all blocks' states carried, on torch's kernels) equals the
    whole stream at once, skip connections included."""
    from rnn_models.layered import LayerConnection, LayeredRNN, LayeredStructure

    structure = LayeredStructure((3, 2, 4), (LayerConnection(0, 1, torch.ones(2, 3, dtype=torch.bool)),
                                             LayerConnection(1, 2, torch.ones(4, 2, dtype=torch.bool)),
                                             LayerConnection(0, 2, torch.eye(4, 3, dtype=torch.bool))))
    torch.manual_seed(3)
    model = NextSymbolModel(LayeredRNN(structure, 7, cell="lstm", batch_first=True), 7, stateful=True)
    data = stream_data(streams=2, windows=3, window=5, seed=4)
    logits = predict(model, data)
    whole = torch.stack([torch.cat([data.inputs[w * 2 + s] for w in range(3)]) for s in range(2)])
    model.stateful = False
    expected = model(whole, torch.full((2,), 15))
    for s in range(2):
        torch.testing.assert_close(torch.cat([logits[w * 2 + s] for w in range(3)]), expected[s])
    with pytest.raises(ValueError, match="hx must hold one state per layer"):
        model.rnn.forward_state(whole, (None,))


class AlwaysPredicts(torch.nn.Module):
    """A constructed stateful model: the same allowed set at every step, whatever it reads."""

    stateful = True

    def __init__(self, allowed: torch.Tensor) -> None:
        super().__init__()
        self.logits = allowed.float() * 2 - 1

    def reset_state(self) -> None:
        pass

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*inputs.shape[:2], -1)


def test_the_first_error_is_counted_at_the_right_position_on_a_constructed_model():
    """The model is right exactly where the stream allows its fixed set: its first error is
    the first step that allows another set, computed here from the stream itself."""
    stream = stream_data(streams=1, windows=4, window=1000, seed=7)
    targets = stream.targets.reshape(4000, 7)
    allowed = targets[0] > 0.5  # what may follow the stream's first symbol
    first = next(t for t in range(4000) if not torch.equal(targets[t] > 0.5, allowed))
    report = evaluate_stream(AlwaysPredicts(allowed), symbols=4000, seed=7)
    assert report["symbols_before_error"] == first
    assert report["solved"] == 0.0
    same = ((targets > 0.5) == allowed).all(dim=1)
    assert report["symbol_accuracy"] == pytest.approx(float(same.float().mean()))
