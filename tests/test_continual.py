"""Continual Reber with unbroken streams (Gers, Schmidhuber & Cummins 2000)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphprior.continual import evaluate_stream, stream_task
from reber.grammar import ContinualReber, get_grammar
from reber.metrics import stream_report
from reber.tasks import stream_data
from rnn_models.masked import make_rnn, open_forget_gate
from rnn_models.train import NextSymbolModel, TrainConfig, fit, predict, reset_pieces

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


# --------------------------------------------------------------------------- external reset
def string_pieces(data, stream: int) -> list[torch.Tensor]:
    """The inputs of one stream of ``data`` cut at its string starts (the last piece may
    be a string the stream cut short)."""
    rows = range(stream, len(data.lengths), data.streams)
    inputs = torch.cat([data.inputs[r] for r in rows])
    starts = torch.cat([data.resets[r] for r in rows]).nonzero().flatten().tolist() + [len(inputs)]
    return [inputs[a:b] for a, b in zip(starts, starts[1:])]


def layered_model(cell: str) -> NextSymbolModel:
    from rnn_models.layered import LayerConnection, LayeredRNN, LayeredStructure

    structure = LayeredStructure((3, 2, 4), (LayerConnection(0, 1, torch.ones(2, 3, dtype=torch.bool)),
                                             LayerConnection(1, 2, torch.ones(4, 2, dtype=torch.bool)),
                                             LayerConnection(0, 2, torch.eye(4, 3, dtype=torch.bool))))
    torch.manual_seed(3)
    return NextSymbolModel(LayeredRNN(structure, 7, cell=cell, batch_first=True), 7, stateful=True)


def reset_model(kind: str) -> NextSymbolModel:
    """Every cell type dense, masked (a ring), the LSTM without forget gate, layered."""
    if kind.startswith("layered_"):
        return layered_model(kind.removeprefix("layered_"))
    torch.manual_seed(0)
    cell, _, variant = kind.partition(":")
    ring = (torch.eye(8, dtype=torch.bool) | torch.eye(8, dtype=torch.bool).roll(1, 1)) if variant == "masked" else None
    rnn = make_rnn(cell, 7, 8, batch_first=True, hh_mask=ring)
    if variant == "no_forget":
        open_forget_gate(rnn)
    return NextSymbolModel(rnn, 7, stateful=True)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh", "rnn_relu", "lstm:masked", "gru:masked",
                                  "lstm:no_forget", "layered_lstm", "layered_gru"])
def test_with_resets_the_carried_state_equals_each_string_from_a_zero_state(kind):
    data = stream_data(streams=3, windows=6, window=10, seed=1, resets=True)
    assert data.resets.shape == (18, 10) and data.resets.dtype == torch.bool
    assert bool(data.resets[3:, 0].any())  # some later window starts with a string: reset at its first step
    model = reset_model(kind)
    logits = predict(model, data)                                   # windows, state carried, reset at starts
    carried = predict(model, stream_data(streams=3, windows=6, window=10, seed=1))  # the same streams, no reset
    model.stateful = False
    for s in range(3):
        mine = torch.cat([logits[r] for r in range(s, 18, 3)])
        pieces = string_pieces(data, s)
        assert len(pieces) >= 5 and sum(len(p) for p in pieces) == 60
        expected = torch.cat([model(p.unsqueeze(0), torch.tensor([len(p)]))[0] for p in pieces])
        torch.testing.assert_close(mine, expected)
        unreset = torch.cat([carried[r] for r in range(s, 18, 3)])
        assert not torch.allclose(unreset, expected, atol=1e-4)    # without resets the state runs on
    with pytest.raises(ValueError, match="resets need a model that carries its state"):
        model(data.inputs[:3], data.lengths[:3], resets=data.resets[:3])


def test_string_starts_are_the_reset_flags_and_the_windows_are_cut_there():
    data = stream_data(streams=2, windows=3, window=10, seed=5, resets=True)
    for s in range(2):
        stream = "".join(data.strings[w * 2 + s] for w in range(3))
        assert torch.equal(torch.cat([data.resets[w * 2 + s] for w in range(3)]),
                           torch.from_numpy(PROCESS.start_mask(stream)))
    assert stream_data(streams=2, windows=3, window=10, seed=5).resets is None
    flags = torch.zeros(2, 8, dtype=torch.bool)
    flags[0, 3] = flags[1, 5] = flags[1, 3] = True
    assert reset_pieces(flags) == [(0, 3), (3, 5), (5, 8)]
    flags[0, 0] = True
    assert reset_pieces(flags) == [(0, 3), (3, 5), (5, 8)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=9, max_size=9), min_size=1, max_size=4))
def test_reset_pieces_cover_the_window_and_start_exactly_at_the_flagged_steps(rows):
    flags = torch.tensor(rows, dtype=torch.bool)
    pieces = reset_pieces(flags)
    assert pieces[0][0] == 0 and pieces[-1][1] == 9
    assert all(end == start for (_, end), (start, _) in zip(pieces, pieces[1:])) and all(a < b for a, b in pieces)
    assert {a for a, _ in pieces} - {0} == {t for t in range(9) if bool(flags[:, t].any())} - {0}


class StepCounter(torch.nn.Module):
    """A constructed recurrent module: its output and state count the steps since its state
    was last zeroed (1 at the step read right after a reset); it keeps every output."""

    batch_first = True

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list[torch.Tensor] = []

    def forward_state(self, x: torch.Tensor, hx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        before = torch.zeros(1, x.shape[0], 1) if hx is None else hx
        counts = before[0].unsqueeze(1) + torch.arange(1, x.shape[1] + 1, dtype=torch.float32).view(1, -1, 1)
        self.outputs.append(counts)
        return counts, counts[:, -1].unsqueeze(0)


def counts_from(starts: torch.Tensor) -> torch.Tensor:
    """Steps since the last flagged step, 1 at a flagged step (the first step counts 1)."""
    counts, count = [], 0
    for flag in starts.tolist():
        count = 1 if flag else count + 1
        counts.append(count)
    return torch.tensor(counts, dtype=torch.float32)


@pytest.mark.parametrize("resets", [False, True])
def test_evaluate_stream_resets_exactly_at_string_starts_or_never(resets):
    counter = StepCounter()
    model = NextSymbolModel(counter, 7, output_size=1, stateful=True)
    evaluate_stream(model, symbols=3000, window=1000, seed=11, resets=resets)
    seen = torch.cat([out[0, :, 0] for out in counter.outputs])
    assert len(seen) == 3000
    stream = "".join(stream_data(streams=1, windows=3, window=1000, seed=11).strings)
    starts = torch.from_numpy(PROCESS.start_mask(stream))
    if resets:
        assert int(starts.sum()) > 100
        assert torch.equal(seen, counts_from(starts))          # zeroed at every string start, nowhere else
    else:
        assert torch.equal(seen, torch.arange(1, 3001, dtype=torch.float32))  # never zeroed inside the stream


def test_fit_passes_the_resets_of_stream_batches_to_the_model():
    train, test = stream_task(train_windows=12, test_windows=3, streams=4, window=20, seed=2, resets=True)
    assert train.resets is not None and test.resets is not None
    counter = StepCounter()
    model = NextSymbolModel(counter, 7, output_size=1, stateful=True)
    history = fit(model, train, test, TrainConfig(epochs=1, lr=0.01))
    assert history.status == "done"
    training = [out[:, :, 0] for out in counter.outputs if out.shape[0] == 4]  # not the 1-stream test data
    trained = torch.cat(training, dim=1)                             # the epoch's 3 windows, in pieces
    flags = torch.cat([train.resets[w * 4:(w + 1) * 4] for w in range(3)], dim=1)
    assert trained.shape == (4, 60)
    for s in range(4):
        assert torch.equal(trained[s], counts_from(flags[s]))
    plain = stream_task(train_windows=12, test_windows=3, streams=4, window=20, seed=2)
    assert plain[0].resets is None and torch.equal(plain[0].inputs, train.inputs)
    unflagged = copy.copy(train)
    unflagged.streams = None
    with pytest.raises(ValueError, match=r"train.resets must be a bool \(12, 20\) tensor of stream data"):
        fit(model, unflagged, test, TrainConfig(epochs=1))


def tiny_continual_spec(task: dict) -> dict:
    return {
        "name": "protocols",
        "generators": [{"name": "barabasi_albert", "params": {"n": 8, "m": 2}}],
        "model": {"cells": ["lstm"]},
        "tasks": [task],
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.01},
    }


STREAM_TASK = {"kind": "continual", "size": 32, "streams": 4, "window": 20, "stream_symbols": 2000}


@pytest.mark.parametrize(("task", "protocol"), [
    ({"kind": "continual_windows", "size": 8}, "windows"),
    (STREAM_TASK, "never"),
    ({**STREAM_TASK, "reset": "strings"}, "strings"),
])
def test_the_config_and_the_record_say_which_protocol_ran(task, protocol):
    from graphprior.spec import expand
    from graphprior.sweep import run_one

    (config,) = expand(tiny_continual_spec(task))
    record = run_one(config)
    assert record.status == "done", record.reason
    assert record.flat["reset"] == config.task.reset_protocol == protocol
    assert record.config["task"]["kind"] == task["kind"]
    assert record.config["task"].get("reset") == ("strings" if protocol == "strings" else None)
    assert ("stream_solved" in record.metrics) == (protocol != "windows")


def test_the_reset_field_keeps_old_run_ids_and_refuses_bad_values():
    from graphprior.spec import SpecError, TaskSpec, expand

    never, strings = TaskSpec(kind="continual"), TaskSpec(kind="continual", reset="strings")
    assert "reset" not in never.model_dump() and TaskSpec(kind="continual", reset="never") == never
    assert strings.model_dump()["reset"] == "strings" and strings != never
    (old,) = expand(tiny_continual_spec(STREAM_TASK))
    (explicit,) = expand(tiny_continual_spec({**STREAM_TASK, "reset": "never"}))
    (reset,) = expand(tiny_continual_spec({**STREAM_TASK, "reset": "strings"}))
    assert old.run_id == explicit.run_id != reset.run_id
    with pytest.raises(SpecError, match=r"^tasks\[0\]\.reset: must be 'never' or 'strings', got 'sometimes'$"):
        expand(tiny_continual_spec({**STREAM_TASK, "reset": "sometimes"}))
    with pytest.raises(SpecError, match=r"^tasks\[0\]\.reset: 'strings' is only for kind = \"continual\""):
        expand(tiny_continual_spec({"kind": "continual_windows", "size": 8, "reset": "strings"}))
