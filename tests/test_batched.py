"""batched_recurrence: K recurrent layers at once, equal to torch's modules, exact gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_models.batched import CELLS, batched_recurrence

TORCH_MODULES = {"rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def torch_modules(cell: str, count: int, inputs: int, hidden: int, bias: bool = True,
                  dtype: torch.dtype = torch.float32) -> list[torch.nn.RNNBase]:
    """``count`` torch recurrent modules of ``cell`` with their default random weights."""
    kwargs = {"nonlinearity": cell[4:]} if cell.startswith("rnn_") else {}
    return [TORCH_MODULES[cell](inputs, hidden, batch_first=True, bias=bias, **kwargs).to(dtype)
            for _ in range(count)]


def stacked(modules: list[torch.nn.RNNBase], requires_grad: bool = False) -> list[torch.Tensor | None]:
    """The modules' weight_ih, weight_hh, bias_ih, bias_hh stacked on a leading model axis."""
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    out = []
    for name in names:
        if not hasattr(modules[0], name):
            out.append(None)
            continue
        out.append(torch.stack([getattr(m, name).detach() for m in modules]).requires_grad_(requires_grad))
    return out


def reference(cell: str, modules: list[torch.nn.RNNBase], inputs: torch.Tensor, h0: torch.Tensor,
              c0: torch.Tensor | None) -> torch.Tensor:
    """Each model run alone by torch: ``(K, B, T, H)``."""
    outs = []
    for k, module in enumerate(modules):
        state = (h0[k: k + 1], c0[k: k + 1]) if cell == "lstm" else h0[k: k + 1]
        outs.append(module(inputs[k], state)[0])
    return torch.stack(outs)


@settings(max_examples=12, deadline=None)
@given(cell=st.sampled_from(CELLS), k=st.integers(1, 4), batch=st.integers(1, 5), steps=st.integers(1, 6),
       features=st.integers(1, 4), hidden=st.integers(1, 6), shared=st.booleans(), bias=st.booleans(),
       states=st.booleans(), seed=st.integers(0, 2**16))
def test_every_model_equals_its_torch_module(cell, k, batch, steps, features, hidden, shared, bias, states, seed):
    torch.manual_seed(seed)
    modules = torch_modules(cell, k, features, hidden, bias)
    if shared:
        inputs = torch.randn(batch, steps, features).unsqueeze(0).expand(k, -1, -1, -1)
    else:
        inputs = torch.randn(k, batch, steps, features)
    h0 = torch.randn(k, batch, hidden) if states else torch.zeros(k, batch, hidden)
    c0 = (torch.randn(k, batch, hidden) if states else torch.zeros(k, batch, hidden)) if cell == "lstm" else None
    with torch.no_grad():  # without states the engine's own zero default must match torch's
        given_states = (h0, c0) if states else (None, None)
        out = batched_recurrence(cell, inputs, *stacked(modules), *given_states)
        expected = reference(cell, modules, inputs, h0, c0)
    assert out.shape == (k, batch, steps, hidden)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_equal_torch_autograd(cell):
    """Loss gradients of every argument equal those of torch's modules (float32, K=3)."""
    torch.manual_seed(1)
    k, batch, steps, features, hidden = 3, 4, 7, 3, 5
    modules = torch_modules(cell, k, features, hidden)
    weights = stacked(modules, requires_grad=True)
    inputs = torch.randn(k, batch, steps, features, requires_grad=True)
    h0 = torch.randn(k, batch, hidden, requires_grad=True)
    c0 = torch.randn(k, batch, hidden, requires_grad=True) if cell == "lstm" else None
    target = torch.randn(k, batch, steps, hidden)
    (batched_recurrence(cell, inputs, *weights, h0, c0) * target).sum().backward()
    ours = [t.grad for t in (inputs, *weights, h0, c0) if t is not None]
    for t in (inputs, h0, c0):
        if t is not None:
            t.grad = None
    (reference(cell, modules, inputs, h0, c0) * target).sum().backward()
    theirs = [inputs.grad] + [torch.stack([getattr(m, n).grad for m in modules])
                              for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
    theirs += [h0.grad] + ([c0.grad] if c0 is not None else [])
    for mine, torchs in zip(ours, theirs):
        torch.testing.assert_close(mine, torchs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_in_float64(cell, shared):
    """Hand-written backpropagation through time against finite differences."""
    torch.manual_seed(2)
    k, batch, steps, features, hidden = 2, 2, 3, 2, 2
    modules = torch_modules(cell, k, features, hidden, dtype=torch.float64)
    weights = stacked(modules, requires_grad=True)
    base = torch.randn(batch, steps, features, dtype=torch.float64) if shared else \
        torch.randn(k, batch, steps, features, dtype=torch.float64)
    base.requires_grad_()
    h0 = torch.randn(k, batch, hidden, dtype=torch.float64, requires_grad=True)
    states = (h0, torch.randn(k, batch, hidden, dtype=torch.float64, requires_grad=True)) if cell == "lstm" \
        else (h0,)

    def run(x, *args):
        x = x.unsqueeze(0).expand(k, -1, -1, -1) if shared else x
        return batched_recurrence(cell, x, *args)

    assert torch.autograd.gradcheck(run, (base, *weights, *states))


def test_relu_gradient_is_zero_where_the_unit_is_off():
    """ReLU units below zero pass no gradient: a bias far below zero silences everything."""
    k, batch, steps, hidden = 2, 3, 4, 3
    weights = [torch.randn(k, hidden, 2), torch.randn(k, hidden, hidden),
               torch.full((k, hidden), -100.0), torch.zeros(k, hidden)]
    weights = [w.requires_grad_() for w in weights]
    out = batched_recurrence("rnn_relu", torch.rand(k, batch, steps, 2), *weights)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert all(torch.equal(w.grad, torch.zeros_like(w)) for w in weights)


def test_models_do_not_interact():
    """Changing one model's weights changes only that model's outputs."""
    torch.manual_seed(3)
    k, hidden = 3, 4
    weights = stacked(torch_modules("lstm", k, 2, hidden))
    inputs = torch.randn(5, 6, 2).unsqueeze(0).expand(k, -1, -1, -1)
    before = batched_recurrence("lstm", inputs, *weights)
    weights[1] = weights[1].clone()
    weights[1][1] += 1.0
    after = batched_recurrence("lstm", inputs, *weights)
    assert torch.equal(after[[0, 2]], before[[0, 2]])
    assert not torch.allclose(after[1], before[1])


@pytest.mark.parametrize("change, match", [
    ({"cell": "elman"}, "cell must be one of"),
    ({"inputs": torch.zeros(2, 3, 4)}, r"inputs must be a non-empty \(K, B, T, I\)"),
    ({"weight_hh": torch.zeros(2, 12, 4)}, "weight_hh must be"),
    ({"weight_ih": torch.zeros(2, 16, 5)}, "weight_ih must be"),
    ({"bias_hh": None}, "bias_ih and bias_hh must both be"),
    ({"bias_ih": torch.zeros(2, 15)}, "bias_ih must be"),
    ({"h0": torch.zeros(2, 3, 5)}, r"h0 must be \(2, 3, 4\)"),
    ({"c0": torch.zeros(1, 3, 4)}, "c0 must be"),
    ({"c0": torch.zeros(2, 3, 4, dtype=torch.float64)}, "c0 must have the inputs' dtype"),
    ({"weight_hh": torch.zeros(2, 16, 4, dtype=torch.float64)}, "weight_hh must have the inputs' dtype"),
])
def test_bad_arguments_are_named(change, match):
    args = {"cell": "lstm", "inputs": torch.zeros(2, 3, 5, 2), "weight_ih": torch.zeros(2, 16, 2),
            "weight_hh": torch.zeros(2, 16, 4), "bias_ih": torch.zeros(2, 16), "bias_hh": torch.zeros(2, 16)}
    assert batched_recurrence(**args).shape[0] == 2  # the valid call runs
    args.update(change)
    with pytest.raises(ValueError, match=match):
        batched_recurrence(**args)


def test_c0_is_refused_for_cells_without_a_cell_state():
    args = [torch.zeros(1, 2, 3, 2), torch.zeros(1, 4, 2), torch.zeros(1, 4, 4), None, None]
    with pytest.raises(ValueError, match="c0 is only for cell 'lstm'"):
        batched_recurrence("rnn_tanh", *args, c0=torch.zeros(1, 2, 4))
