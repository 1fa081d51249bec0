"""batched_recurrence: K recurrent layers at once, equal to torch's modules, exact gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_models.batched import CELLS, batched_recurrence, batched_recurrence_fm

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


def hoisted(cell, inputs, *weights_and_states):
    """``batched_recurrence_fm`` called with ``batched_recurrence``'s layout: inputs
    ``(K, B, T, I)``, states ``(K, B, H)``, outputs ``(K, B, T, H)``."""
    weights, states = weights_and_states[:4], weights_and_states[4:]
    states = [None if s is None else s.transpose(1, 2) for s in states]
    return batched_recurrence_fm(cell, inputs.permute(0, 3, 2, 1), *weights, *states).permute(0, 3, 2, 1)


ENGINES = {"stepwise": batched_recurrence, "hoisted": hoisted}


@settings(max_examples=12, deadline=None)
@given(cell=st.sampled_from(CELLS), k=st.integers(1, 4), batch=st.integers(1, 5), steps=st.integers(1, 6),
       features=st.integers(1, 4), hidden=st.integers(1, 6), shared=st.booleans(), bias=st.booleans(),
       states=st.booleans(), engine=st.sampled_from(sorted(ENGINES)), seed=st.integers(0, 2**16))
def test_every_model_equals_its_torch_module(cell, k, batch, steps, features, hidden, shared, bias, states,
                                             engine, seed):
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
        out = ENGINES[engine](cell, inputs, *stacked(modules), *given_states)
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


LSTM_INPUTS = {"stepwise": torch.zeros(2, 3, 5, 2), "hoisted": torch.zeros(2, 2, 5, 3)}
"""K = 2, B = 3, T = 5, I = 2 in each engine's layout: (K, B, T, I) and (K, I, T, B)."""
ENGINE_FUNCTIONS = {"stepwise": batched_recurrence, "hoisted": batched_recurrence_fm}


@pytest.mark.parametrize("engine, change, match", [
    ("stepwise", {"cell": "elman"}, "cell must be one of"),
    ("stepwise", {"inputs": torch.zeros(2, 3, 4)}, r"inputs must be a non-empty \(K, B, T, I\)"),
    ("stepwise", {"weight_hh": torch.zeros(2, 12, 4)}, "weight_hh must be"),
    ("stepwise", {"weight_ih": torch.zeros(2, 16, 5)}, "weight_ih must be"),
    ("stepwise", {"bias_hh": None}, "bias_ih and bias_hh must both be"),
    ("stepwise", {"bias_ih": torch.zeros(2, 15)}, "bias_ih must be"),
    ("stepwise", {"h0": torch.zeros(2, 3, 5)}, r"h0 must be \(2, 3, 4\)"),
    ("stepwise", {"c0": torch.zeros(1, 3, 4)}, "c0 must be"),
    ("hoisted", {"inputs": torch.zeros(2, 2, 5)}, r"inputs must be a non-empty \(K, I, T, B\)"),
    ("hoisted", {"weight_ih": torch.zeros(2, 16, 3)}, r"weight_ih must be \(2, 16, 2\)"),
    ("hoisted", {"h0": torch.zeros(2, 3, 4)}, r"h0 must be \(2, 4, 3\)"),  # (K, H, B), not (K, B, H)
    ("hoisted", {"c0": torch.zeros(2, 4, 3, dtype=torch.float64)}, "c0 must have the inputs' dtype"),
    ("stepwise", {"weight_hh": torch.zeros(2, 16, 4, dtype=torch.float64)}, "weight_hh must have the inputs' dtype"),
])
def test_bad_arguments_are_named_in_the_engines_layout(engine, change, match):
    args = {"cell": "lstm", "inputs": LSTM_INPUTS[engine], "weight_ih": torch.zeros(2, 16, 2),
            "weight_hh": torch.zeros(2, 16, 4), "bias_ih": torch.zeros(2, 16), "bias_hh": torch.zeros(2, 16)}
    assert ENGINE_FUNCTIONS[engine](**args).shape[0] == 2  # the valid call runs
    args.update(change)
    with pytest.raises(ValueError, match=match):
        ENGINE_FUNCTIONS[engine](**args)


def test_c0_is_refused_for_cells_without_a_cell_state():
    args = [torch.zeros(1, 2, 3, 2), torch.zeros(1, 4, 2), torch.zeros(1, 4, 4), None, None]
    with pytest.raises(ValueError, match="c0 is only for cell 'lstm'"):
        batched_recurrence("rnn_tanh", *args, c0=torch.zeros(1, 2, 4))


@pytest.mark.parametrize("cell", CELLS)
def test_hoisted_engine_frees_its_buffers_and_guards_its_output(cell):
    k, batch, steps, features, hidden = 2, 3, 4, 2, 5
    weights = stacked(torch_modules(cell, k, features, hidden), requires_grad=True)
    inputs = torch.randn(k, features, steps, batch)
    out = batched_recurrence_fm(cell, inputs, *weights)
    out.sum().backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        out.sum().backward()  # every saved buffer, the per-step gates too, was freed
    out = batched_recurrence_fm(cell, inputs, *weights)
    out.mul_(2.0)  # the output is an ordinary view: in-place works, and backward then refuses
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_hoisted_gradients_equal_stepwise_engine(cell, shared):
    """Both engines give the same loss gradients for every argument (float32, K=3)."""
    torch.manual_seed(4)
    k, batch, steps, features, hidden = 3, 4, 7, 3, 5
    weights = stacked(torch_modules(cell, k, features, hidden), requires_grad=True)
    base = torch.randn(batch, steps, features) if shared else torch.randn(k, batch, steps, features)
    base.requires_grad_()
    h0 = torch.randn(k, batch, hidden, requires_grad=True)
    c0 = torch.randn(k, batch, hidden, requires_grad=True) if cell == "lstm" else None
    target = torch.randn(k, batch, steps, hidden)
    leaves = [t for t in (base, *weights, h0, c0) if t is not None]
    grads = []
    for run in (batched_recurrence, hoisted):
        x = base.unsqueeze(0).expand(k, -1, -1, -1) if shared else base
        grads.append(torch.autograd.grad((run(cell, x, *weights, h0, c0) * target).sum(), leaves))
    for mine, theirs in zip(*grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("cell, states", [(cell, states) for cell in CELLS
                                          for states in (("none", "h0", "c0", "both") if cell == "lstm" else ("none", "h0"))])
def test_hoisted_gradcheck_in_float64(cell, states, shared, bias):
    """The hoisted engine's backpropagation through time against finite differences, with
    and without biases (the GRU's b_hn then absent) and with any initial states given."""
    torch.manual_seed(5)
    k, batch, steps, features, hidden = 2, 2, 3, 2, 2
    weights = stacked(torch_modules(cell, k, features, hidden, bias, dtype=torch.float64), requires_grad=True)
    base = torch.randn(features, steps, batch, dtype=torch.float64) if shared else \
        torch.randn(k, features, steps, batch, dtype=torch.float64)
    base.requires_grad_()
    given = {name: torch.randn(k, hidden, batch, dtype=torch.float64, requires_grad=True)
             for name in ("h0", "c0") if states in (name, "both")}

    def run(x, *args):
        x = x.unsqueeze(0).expand(k, -1, -1, -1) if shared else x
        return batched_recurrence_fm(cell, x, *args[:4], **dict(zip(given, args[4:])))

    assert torch.autograd.gradcheck(run, (base, *weights, *given.values()))
