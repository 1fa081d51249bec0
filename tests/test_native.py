"""rnn_models.native: compiled recurrent layers equal torch's, gradients included."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_models import native
from rnn_models.masked import GATES

CELLS = sorted(GATES)
TORCH = {"rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def torch_layer(cell: str, features: int, hidden: int, bias: bool) -> torch.nn.RNNBase:
    kwargs = {"nonlinearity": cell[4:]} if cell.startswith("rnn_") else {}
    return TORCH[cell](features, hidden, bias=bias, **kwargs)


def one_layer(cell: str, x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
              bias_ih: torch.Tensor | None, bias_hh: torch.Tensor | None, block: int | None = None,
              sources: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent layer as a one-layer ``native.network`` over feature-major ``x``
    ``(I, T, B)``: its states ``(H, T, B)`` and (LSTM) cell states. ``block``: the layer is
    independent blocks of that many units; ``sources``: the input widths each block reads
    (default: every block reads all of ``x``)."""
    features, hidden = x.shape[0], weight_hh.shape[1]
    blocks = hidden // (block or hidden)
    if sources is None:
        reads = [(0, features, 0)] * blocks
    else:
        starts = [sum(sources[:k]) for k in range(len(sources))]
        reads = [(start, width, start) for start, width in zip(starts, sources)]
    plan = native.network_plan(cell, features, [block or hidden], [reads], bias=bias_ih is not None)
    parameters = [weight_ih, weight_hh] + ([bias_ih, bias_hh] if bias_ih is not None else [])
    _, states, cells, _ = native.network(plan, x, parameters)
    return states, cells


def run_native(cell: str, layer: torch.nn.RNNBase, x: torch.Tensor, block: int | None = None):
    """``one_layer`` on ``layer``'s weights for batch-second ``x`` ``(T, B, I)``:
    outputs ``(T, B, H)`` and the last cell state ``(B, H)`` (LSTM)."""
    biases = (layer.bias_ih_l0, layer.bias_hh_l0) if layer.bias else (None, None)
    h, c = one_layer(cell, x.permute(2, 0, 1), layer.weight_ih_l0, layer.weight_hh_l0, *biases,
                                  block=block)
    return h.permute(1, 2, 0), (c[:, -1].t() if cell == "lstm" else None)


@settings(max_examples=24, deadline=None)
@given(cell=st.sampled_from(CELLS), steps=st.integers(1, 6), batch=st.integers(1, 5),
       features=st.integers(1, 9), hidden=st.integers(1, 6), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_layer_equals_torch_with_gradients(cell, steps, batch, features, hidden, bias, seed):
    torch.manual_seed(seed)
    layer = torch_layer(cell, features, hidden, bias)
    x = torch.randn(steps, batch, features, requires_grad=True)
    target = torch.randn(steps, batch, hidden)
    results = []
    for compute in ("native", "torch"):
        layer.zero_grad()
        x.grad = None
        if compute == "native":
            out, last_c = run_native(cell, layer, x)
        else:
            out, state = layer(x)
            last_c = state[1][0] if cell == "lstm" else None
        loss = (out * target).sum() + (last_c.sum() if last_c is not None else 0.0)
        loss.backward()
        results.append([out.detach(), x.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    for mine, theirs in zip(*results):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_block_diagonal_weights_compute_only_their_blocks(cell):
    """With ``block``, only the diagonal blocks of every gate are read and get gradients;
    the result is torch's on the same (block-diagonal) weights."""
    torch.manual_seed(1)
    hidden, block = 6, 2
    layer = torch_layer(cell, 3, hidden, bias=True)
    diagonal = torch.block_diag(*[torch.ones(block, block)] * (hidden // block)).bool()
    with torch.no_grad():
        layer.weight_hh_l0.mul_(diagonal.repeat(GATES[cell], 1))
    x = torch.randn(5, 4, 3)
    native_out, _ = run_native(cell, layer, x, block=block)
    native_out.square().sum().backward()
    native_grad = layer.weight_hh_l0.grad.clone()
    layer.zero_grad()
    torch_out = layer(x)[0]
    torch_out.square().sum().backward()
    torch.testing.assert_close(native_out, torch_out, rtol=1e-5, atol=1e-6)
    off_block = ~diagonal.repeat(GATES[cell], 1)
    assert torch.equal(native_grad[off_block], torch.zeros(int(off_block.sum())))
    torch.testing.assert_close(native_grad[~off_block], layer.weight_hh_l0.grad[~off_block], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_block_sources_read_only_their_own_columns(cell):
    """With ``sources``, block k's rows read only block k's input columns (and get gradients
    only there); the result is torch's on the same block-structured weights."""
    torch.manual_seed(3)
    hidden, block, sources = 6, 2, (1, 6, 2)  # a block of 6 columns: four a pass, then the rest
    layer = torch_layer(cell, sum(sources), hidden, bias=True)
    own = torch.zeros(hidden, sum(sources), dtype=torch.bool)
    for k, (start, width) in enumerate(zip((0, 1, 7), sources)):
        own[k * block: (k + 1) * block, start: start + width] = True
    diagonal = torch.block_diag(*[torch.ones(block, block)] * (hidden // block)).bool()
    with torch.no_grad():
        layer.weight_ih_l0.mul_(own.repeat(GATES[cell], 1))
        layer.weight_hh_l0.mul_(diagonal.repeat(GATES[cell], 1))
    x = torch.randn(5, 4, sum(sources), requires_grad=True)
    biases = (layer.bias_ih_l0, layer.bias_hh_l0)
    h, _ = one_layer(cell, x.permute(2, 0, 1), layer.weight_ih_l0, layer.weight_hh_l0, *biases,
                                  block=block, sources=sources)
    h.square().sum().backward()
    mine = (h.permute(1, 2, 0).detach(), x.grad.clone(), layer.weight_ih_l0.grad.clone())
    layer.zero_grad()
    x.grad = None
    out = layer(x)[0]
    out.square().sum().backward()
    torch.testing.assert_close(mine[0], out.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mine[1], x.grad, rtol=1e-4, atol=1e-5)
    off_block = ~own.repeat(GATES[cell], 1)
    assert torch.equal(mine[2][off_block], torch.zeros(int(off_block.sum())))
    torch.testing.assert_close(mine[2][~off_block], layer.weight_ih_l0.grad[~off_block], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_nan_propagates(cell):
    """A NaN weight must surface as NaN (the kernels' fast-math keeps NaN semantics), so a
    diverging model is seen to fail."""
    layer = torch_layer(cell, 2, 3, bias=True)
    with torch.no_grad():
        layer.weight_hh_l0[:, 0] = math.nan
    out, _ = run_native(cell, layer, torch.randn(4, 2, 2))
    assert out[1:].isnan().any(dim=2).all()


def test_kernel_tanh_is_float32_accurate_and_odd():
    """An rnn_tanh unit with unit input weight and no recurrence outputs the kernels' tanh."""
    positive = torch.linspace(0.0, 20.0, 200_001)
    x = torch.cat([-positive.flip(0)[:-1], positive])  # exactly symmetric around 0
    y = one_layer("rnn_tanh", x.view(1, 1, -1), torch.ones(1, 1), torch.zeros(1, 1), None, None)[0].flatten()
    error = (y.double() - torch.tanh(x.double())).abs()
    assert error.max() < 3e-7  # float32's own resolution near 1 is 6e-8 per ulp
    assert torch.equal(y, -y.flip(0))
    assert y[200_000] == 0.0


def test_double_backward_is_refused_not_dropped():
    """The kernels have no graph of their own: create_graph=True must raise, never return
    a gradient that silently misses their part."""
    layer = torch_layer("gru", 2, 3, bias=True)
    out, _ = run_native("gru", layer, torch.randn(4, 2, 2))
    with pytest.raises(RuntimeError, match="no double backward"):
        torch.autograd.grad(out.sum(), [layer.weight_hh_l0], create_graph=True)


def test_network_runs_layers_in_order_reading_earlier_outputs():
    """A two-layer plan: layer 1's two blocks read the input and layer 0's output; the
    outputs hold the input and layer 0's block sum, the last layer's comes on its own, and
    all equal single layers composed by hand."""
    torch.manual_seed(4)
    plan = native.network_plan("gru", 2, [3, 2], [[(0, 2, 0)], [(0, 2, 0), (2, 3, 2)]])
    parameters = [torch.randn(shape) * 0.5 for shape in plan.shapes]  # off-block entries are never read
    x = torch.randn(2, 5, 4)
    output, states, cells, outs = native.network(plan, x, parameters)
    assert output.shape == (2, 5, 4) and outs.shape == (2 + 3, 5, 4) and states.shape == (3 + 4, 5, 4)
    assert cells.numel() == 0 and not outs.requires_grad
    torch.testing.assert_close(outs[:2], x)
    first, _ = one_layer("gru", x, *parameters[:4])
    torch.testing.assert_close(outs[2:5], first)
    second, _ = one_layer("gru", torch.cat([x, first]), *parameters[4:], block=2, sources=(2, 3))
    torch.testing.assert_close(states[3:], second)
    torch.testing.assert_close(output, second[:2] + second[2:])
    assert (plan.output_row(0), plan.state_row(1)) == (2, 3)
    with pytest.raises(ValueError, match=r"layer must be in 0..0 \(the last layer's output is returned on its own"):
        plan.output_row(1)


@pytest.mark.parametrize("input_grad", [False, True])
def test_network_gradients_of_a_block_reading_input_and_layer_rows(input_grad):
    """A block may read a run spanning the input's last row and layer 0's output; the
    gradient layer 0 gets through it must not depend on whether the input needs one."""
    torch.manual_seed(7)
    plan = native.network_plan("rnn_tanh", 2, [2, 1], [[(0, 2, 0)], [(1, 3, 0)]])
    parameters = [(torch.randn(shape) * 0.5).requires_grad_() for shape in plan.shapes]
    x = torch.randn(2, 6, 3, requires_grad=input_grad)
    output, _, _, _ = native.network(plan, x, parameters)
    output.square().sum().backward()
    mine = [p.grad.clone() for p in parameters]
    for p in parameters:
        p.grad = None
    first, _ = one_layer("rnn_tanh", x, *parameters[:4])
    second, _ = one_layer("rnn_tanh", torch.cat([x[1:], first]), *parameters[4:])
    second.square().sum().backward()
    for a, b in zip(mine, parameters):
        torch.testing.assert_close(a, b.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("widths, reads, match", [
    ([], [], "widths and reads must name the same layers"),
    ([2], [[(0, 2, 0)], [(0, 2, 0)]], "widths and reads must name the same layers"),
    ([0], [[(0, 2, 0)]], "layer 0 needs a width >= 1 and at least one block"),
    ([2], [[]], "layer 0 needs a width >= 1 and at least one block"),
    ([2], [[(0, 3, 0)]], r"layer 0 may read rows 0..1 of the outputs"),
    ([2, 1], [[(0, 2, 0)], [(2, 3, 0)]], r"layer 1 may read rows 0..3 of the outputs .* got rows 2..4"),
    ([2], [[(0, 0, 0)]], "in runs of >= 1"),
    ([2], [[(0, 1, -1)]], "through columns >= 0"),
])
def test_network_plan_names_what_is_wrong(widths, reads, match):
    with pytest.raises(ValueError, match=match):
        native.network_plan("lstm", 2, widths, reads)
    with pytest.raises(ValueError, match="cell must be one of"):
        native.network_plan("elman", 2, [1], [[(0, 2, 0)]])


def test_network_refuses_parameters_and_inputs_that_do_not_fit_its_plan():
    plan = native.network_plan("rnn_tanh", 2, [3], [[(0, 2, 0)]], bias=False)
    assert plan.shapes == ((3, 2), (3, 3))
    good = [torch.zeros(3, 2), torch.zeros(3, 3)]
    x = torch.zeros(2, 4, 5)
    assert native.network(plan, x, good)[0].shape == (3, 4, 5)
    with pytest.raises(ValueError, match="plan must be a NetworkPlan"):
        native.network({"cell": "rnn_tanh"}, x, good)
    with pytest.raises(ValueError, match="parameters must be the plan's 2 tensors, got 1"):
        native.network(plan, x, good[:1])
    with pytest.raises(ValueError, match=r"parameters\[1\] must be a float32 CPU tensor of shape \(3, 3\)"):
        native.network(plan, x, [good[0], torch.zeros(3, 2)])
    with pytest.raises(ValueError, match=r"parameters\[0\] must be a float32 CPU tensor"):
        native.network(plan, x, [good[0].double(), good[1]])
    with pytest.raises(ValueError, match=r"x must be a non-empty float32 CPU tensor of shape \(2, T, B\)"):
        native.network(plan, torch.zeros(3, 4, 5), good)
    with pytest.raises(ValueError, match=r"x must be a non-empty float32 CPU tensor"):
        native.network(plan, torch.zeros(2, 0, 5), good)
