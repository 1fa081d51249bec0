"""One recurrent layer of K independent models, computed with batched matrix products.

``batched_recurrence`` runs K unidirectional RNN / LSTM / GRU layers of one cell type and
size (different weights) over one batch, with the model axis first, using torch's gate
order and equations (``torch.nn.RNN``, ``torch.nn.LSTM``, ``torch.nn.GRU``), with
hand-written backpropagation through time (a ``torch.autograd.Function``), for a CPU where
small recurrent models are bound by per-call overhead and memory traffic rather than by
arithmetic (measurements: docs/bench/ensemble.md). ``rnn_models.ensemble`` stacks K models
on it.

* ``tanh`` is computed as ``2 sigmoid(2x) - 1`` (``torch.tanh`` is about 6x slower than
  ``torch.sigmoid`` in this CPU build): the weights of the gate blocks that feed a tanh are
  doubled once per call, so one ``sigmoid_`` covers all gates of a step, and the LSTM
  carries ``2c`` so that ``tanh(c)`` is one more ``sigmoid``;
* each step multiplies the rows ``[x_t, 1, h_{t-1}]`` by one joint weight
  ``[W_ih, b, W_hh]^T``: one matrix product per step for input, bias and recurrence;
* the backward pass is a handful of in-place calls per step, with all weight and bias
  gradients accumulated step by step in one ``baddbmm_`` (transposed, its fast layout);
* every step works on small ``(K, B, .)`` tensors that the allocator recycles while they
  are in cache. This wins for models of H >= 16-32 units: their per-step tensors are what
  the cache holds, and whole-sequence buffers would be passes over main memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnn_models.masked import GATES

CELLS = tuple(GATES)
"""Cell types ``batched_recurrence`` accepts."""

_TANH_BLOCKS = {"lstm": (1.0, 1.0, 2.0, 1.0), "gru": (1.0, 1.0, 2.0), "rnn_tanh": (2.0,), "rnn_relu": (1.0,)}
"""Per gate block: 2 where a tanh follows (computed as ``2 sigmoid(2a) - 1``), else 1."""


def batched_recurrence(cell: str, inputs: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                       bias_ih: Tensor | None, bias_hh: Tensor | None,
                       h0: Tensor | None = None, c0: Tensor | None = None) -> Tensor:
    """Outputs ``(K, B, T, H)`` of K recurrent layers for inputs ``(K, B, T, I)``; the result
    is a view of a ``(T, K, B, H)`` tensor.

    ``weight_ih`` is ``(K, G*H, I)``, ``weight_hh`` ``(K, G*H, H)``, the biases ``(K, G*H)``
    or both None, with G gate blocks stacked in torch's order (LSTM i, f, g, o; GRU r, z,
    n). ``h0`` and (LSTM only) ``c0`` are ``(K, B, H)`` initial states (default zeros).
    Model k's slice equals torch's module with model k's weights; gradients flow to every
    tensor argument (first order only). Pass an input shared by all models as an
    ``expand``-ed view (model stride 0): it is never copied K times.
    """
    _check_arguments(cell, inputs, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0)
    k, batch, _, _ = inputs.shape
    hidden = weight_hh.shape[2]
    outer_bias, recurrent_bias = _split_biases(cell, bias_ih, bias_hh)
    if cell == "gru" and recurrent_bias is None:
        recurrent_bias = weight_hh.new_zeros(k, hidden)
    h0 = inputs.new_zeros(k, batch, hidden) if h0 is None else h0
    if cell == "lstm" and c0 is None:
        c0 = inputs.new_zeros(k, batch, hidden)
    outputs = _Recurrence.apply(cell, inputs, weight_ih, outer_bias, weight_hh, recurrent_bias, h0, c0)
    return outputs.permute(1, 2, 0, 3)  # (T, K, B, H) -> (K, B, T, H)


def _split_biases(cell: str, bias_ih: Tensor | None, bias_hh: Tensor | None) -> tuple[Tensor | None, ...]:
    """The bias added to the input projection, and (GRU only) the ``b_hn`` that sits inside
    the reset gate's product ``r * (W_hn h + b_hn)``; every other bias adds outside."""
    if bias_ih is None:
        return None, None
    if cell != "gru":
        return bias_ih + bias_hh, None
    hidden = bias_hh.shape[1] // 3
    outer = torch.cat([bias_ih[:, : 2 * hidden] + bias_hh[:, : 2 * hidden], bias_ih[:, 2 * hidden:]], dim=1)
    return outer, bias_hh[:, 2 * hidden:]


def _check_arguments(cell: str, inputs: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                     bias_ih: Tensor | None, bias_hh: Tensor | None, h0: Tensor | None,
                     c0: Tensor | None) -> None:
    """Raise ValueError naming the first argument whose value, shape, dtype or device does
    not fit (shapes in ``batched_recurrence``'s layout)."""
    if cell not in GATES:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    if inputs.dim() != 4 or 0 in inputs.shape:
        raise ValueError(f"inputs must be a non-empty (K, B, T, I) tensor, got shape {tuple(inputs.shape)}")
    for name, tensor in (("weight_ih", weight_ih), ("weight_hh", weight_hh), ("bias_ih", bias_ih),
                         ("bias_hh", bias_hh), ("h0", h0), ("c0", c0)):
        if tensor is not None and (tensor.dtype != inputs.dtype or tensor.device != inputs.device):
            raise ValueError(f"{name} must have the inputs' dtype and device ({inputs.dtype}, {inputs.device}), "
                             f"got ({tensor.dtype}, {tensor.device})")
    k, batch, _, features = inputs.shape
    gates = GATES[cell]
    if weight_hh.dim() != 3 or weight_hh.shape[0] != k or weight_hh.shape[1] != gates * weight_hh.shape[2]:
        raise ValueError(f"weight_hh must be (K={k}, {gates}*H, H), got {tuple(weight_hh.shape)}")
    rows, hidden = weight_hh.shape[1], weight_hh.shape[2]
    if tuple(weight_ih.shape) != (k, rows, features):
        raise ValueError(f"weight_ih must be {(k, rows, features)}, got {tuple(weight_ih.shape)}")
    if (bias_ih is None) != (bias_hh is None):
        raise ValueError("bias_ih and bias_hh must both be tensors or both be None")
    for name, bias in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if bias is not None and tuple(bias.shape) != (k, rows):
            raise ValueError(f"{name} must be {(k, rows)}, got {tuple(bias.shape)}")
    if c0 is not None and cell != "lstm":
        raise ValueError(f"c0 is only for cell 'lstm', got cell {cell!r}")
    for name, state in (("h0", h0), ("c0", c0)):
        if state is not None and tuple(state.shape) != (k, batch, hidden):
            raise ValueError(f"{name} must be {(k, batch, hidden)}, got {tuple(state.shape)}")


def _tanh_from_sigmoid_(x: Tensor) -> Tensor:
    """In place: ``x`` holding ``sigmoid(2a)`` becomes ``tanh(a) = 2 sigmoid(2a) - 1``."""
    return x.mul_(2.0).sub_(1.0)


def _tanh_scale(cell: str, hidden: int, like: Tensor) -> Tensor:
    """``(G*H,)`` factor per gate row: 2 for the rows of gates that feed a tanh, else 1."""
    return like.new_tensor(_TANH_BLOCKS[cell]).repeat_interleave(hidden)


class _Rows:
    """Each step's input rows ``z_t = [x_t, 1, h_{t-1}]`` for all models (``[x_t, 1]`` for
    the GRU, whose recurrent product stays apart) and the joint weight ``[W_ih, b, W_hh]``:
    one matrix product per step gives ``x_t W_ih^T + b + h_{t-1} W_hh^T``, and one more per
    step in the backward pass gives the gradients of all three. The rows of the gates that
    feed a tanh are doubled in the forward weight."""

    def __init__(self, cell: str, inputs: Tensor, weight_ih: Tensor, bias: Tensor | None,
                 weight_hh: Tensor | None) -> None:
        k, batch, _, self.features = inputs.shape
        bias = weight_ih.new_zeros(weight_ih.shape[:2]) if bias is None else bias
        parts = [weight_ih, bias.unsqueeze(2)] + ([] if weight_hh is None else [weight_hh])
        self.weight = torch.cat(parts, dim=2)  # (K, G*H, I + 1 [+ H])
        scale = _tanh_scale(cell, weight_ih.shape[1] // GATES[cell], weight_ih)
        self.scaled_t = (self.weight * scale[:, None]).transpose(1, 2).contiguous()
        self.steps, self.ones = inputs.unbind(2), inputs.new_ones(k, batch, 1)
        self.saved: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.steps)

    def pre_activations(self, t: int, h: Tensor | None = None) -> Tensor:
        """Step t's (scaled) pre-activations ``(K, B, G*H)``, a fresh tensor."""
        rows = torch.cat([self.steps[t], self.ones] + ([] if h is None else [h]), dim=2)
        self.saved.append(rows)
        return torch.bmm(rows, self.scaled_t)


class _Gradients:
    """Gradients of the weights, biases and inputs, accumulated step by step in the backward
    loop while each step's pre-activation gradients are in cache, as ``z_t^T g`` (the
    transposed layout is the fast one for ``baddbmm_``)."""

    def __init__(self, needs: tuple[bool, ...], rows: _Rows, weight_ih: Tensor, weight_hh: Tensor,
                 h0: Tensor, states: list[Tensor]) -> None:
        self.rows, self.weight_ih, self.h0, self.states = rows, weight_ih, h0, states
        self.needs_inputs, self.needs_weight_ih, self.needs_bias = needs
        self.joint_t = torch.zeros_like(rows.scaled_t)
        self.joint = rows.weight.shape[2] > rows.features + 1  # W_hh inside the joint weight
        self.weight_hh_t = None if self.joint else weight_hh.new_zeros(weight_hh.transpose(1, 2).shape)
        self.grad_inputs = None
        if self.needs_inputs:
            k, batch = h0.shape[:2]
            self.grad_inputs = weight_ih.new_empty(len(rows), k, batch, rows.features)

    def add(self, t: int, grad_x: Tensor, grad_hh: Tensor) -> None:
        """Add step ``t``: ``grad_x`` and ``grad_hh`` (``(K, B, G*H)``) are the gradients of
        the input and of the recurrent pre-activations (the same tensor except for the GRU)."""
        self.joint_t.baddbmm_(self.rows.saved[t].transpose(1, 2), grad_x)
        if not self.joint:
            previous = self.h0 if t == 0 else self.states[t - 1]
            self.weight_hh_t.baddbmm_(previous.transpose(1, 2), grad_hh)
        if self.needs_inputs:
            torch.bmm(grad_x, self.weight_ih, out=self.grad_inputs[t])

    def results(self) -> tuple[Tensor | None, ...]:
        """Gradients of ``inputs``, ``weight_ih``, the outer bias and ``weight_hh``."""
        features = self.rows.features
        inputs = None if self.grad_inputs is None else self.grad_inputs.permute(1, 2, 0, 3)
        weight_ih = self.joint_t[:, :features].transpose(1, 2).contiguous() if self.needs_weight_ih else None
        bias = self.joint_t[:, features].clone() if self.needs_bias else None
        recurrent = self.joint_t[:, features + 1:] if self.joint else self.weight_hh_t
        return inputs, weight_ih, bias, recurrent.transpose(1, 2).contiguous()


class _Recurrence(torch.autograd.Function):
    """One layer of K models with hand-written backpropagation through time.

    ``bias`` (``(K, G*H)``) is every bias outside a gate product; ``bias_hn`` (``(K, H)``,
    GRU only) the one inside. Returns the hidden states ``(T, K, B, H)``.
    """

    @staticmethod
    def forward(ctx: Any, cell: str, inputs: Tensor, weight_ih: Tensor, bias: Tensor | None,
                weight_hh: Tensor, bias_hn: Tensor | None, h0: Tensor, c0: Tensor | None) -> Tensor:
        ctx.cell = cell
        rows = _Rows(cell, inputs, weight_ih, bias, None if cell == "gru" else weight_hh)
        if cell == "lstm":
            states, ctx.saved = _lstm_forward(rows, h0, c0)
        elif cell == "gru":
            states, ctx.saved = _gru_forward(rows, weight_hh, bias_hn, h0)
        else:
            states = _elman_forward(cell, rows, h0)
            ctx.saved = ()
        ctx.rows, ctx.states = rows, states
        ctx.save_for_backward(weight_ih, weight_hh, h0, c0)
        return torch.stack(states)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_outputs: Tensor) -> tuple[Tensor | None, ...]:
        weight_ih, weight_hh, h0, c0 = ctx.saved_tensors
        grad_outputs, states = grad_outputs.contiguous(), ctx.states
        grads = _Gradients(ctx.needs_input_grad[1:4], ctx.rows, weight_ih, weight_hh, h0, states)
        grad_bias_hn = grad_c0 = None
        if ctx.cell == "lstm":
            grad_h0, grad_c0 = _lstm_backward(grad_outputs, grads, weight_hh, c0, *ctx.saved)
        elif ctx.cell == "gru":
            grad_h0, grad_bias_hn = _gru_backward(grad_outputs, grads, states, weight_hh, h0, *ctx.saved)
        else:
            grad_h0 = _elman_backward(ctx.cell, grad_outputs, grads, states, weight_hh)
        grad_inputs, grad_weight_ih, grad_bias, grad_weight_hh = grads.results()
        return (None, grad_inputs, grad_weight_ih, grad_bias, grad_weight_hh, grad_bias_hn, grad_h0, grad_c0)


# -- Elman RNN (tanh / relu): h' = act(x W_ih^T + b + W_hh h) -----------------------------

def _elman_forward(cell: str, rows: _Rows, h0: Tensor) -> list[Tensor]:
    """The hidden state of every step."""
    states, h = [], h0
    for t in range(len(rows)):
        h = rows.pre_activations(t, h)
        h = _tanh_from_sigmoid_(h.sigmoid_()) if cell == "rnn_tanh" else h.relu_()
        states.append(h)
    return states


def _elman_backward(cell: str, grad_outputs: Tensor, grads: _Gradients, states: list[Tensor],
                    weight_hh: Tensor) -> Tensor:
    """Backpropagate through all steps into ``grads``; return ``dh0``."""
    one = grad_outputs.new_ones(())
    grad_h = torch.zeros_like(states[0])
    for t in range(len(states) - 1, -1, -1):
        dh, h = grad_h.add_(grad_outputs[t]), states[t]
        step = torch.addcmul(one, h, h, value=-1.0).mul_(dh) if cell == "rnn_tanh" else dh * h.gt(0)
        grads.add(t, step, step)
        grad_h = torch.bmm(step, weight_hh)
    return grad_h


# -- LSTM: i, f, o = sigmoid, g = tanh; c' = f c + i g; h' = o tanh(c') ---------------------

def _lstm_forward(rows: _Rows, h0: Tensor, c0: Tensor) -> tuple[list[Tensor], tuple[list[Tensor], ...]]:
    """The hidden state of every step, and what the backward pass needs: every gate's
    sigmoid (the cell gate's of ``2 a_g``), ``2 c`` and ``tanh(c)`` (carrying ``2 c``
    makes ``tanh(c) = 2 sigmoid(2c) - 1`` one sigmoid)."""
    states, gates, cells, tanh_cells = [], [], [], []
    h, c2 = h0, c0 * 2.0
    for t in range(len(rows)):
        step = rows.pre_activations(t, h).sigmoid_()
        i, f, g_sigmoid, o = step.chunk(4, dim=2)
        c2 = torch.mul(f, c2).addcmul_(i, g_sigmoid - 0.5, value=4.0)  # 2c' = f 2c + 2 i (2 s_g - 1)
        tanh_c = _tanh_from_sigmoid_(torch.sigmoid(c2))
        h = o * tanh_c
        states.append(h)
        gates.append(step)
        cells.append(c2)
        tanh_cells.append(tanh_c)
    return states, (gates, cells, tanh_cells)


_LSTM_GATE_SCALE = (2.0, 0.5, 4.0, 1.0)
"""Constant factors of the gate gradients: g = 2 s_g - 1, c = (2c) / 2 and
tanh'(a_g) = 4 s_g (1 - s_g)."""


def _lstm_backward(grad_outputs: Tensor, grads: _Gradients, weight_hh: Tensor, c0: Tensor, gates: list[Tensor],
                   cells: list[Tensor], tanh_cells: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Backpropagate through all steps into ``grads``; return ``dh0, dc0``."""
    k, batch, hidden = c0.shape
    one = c0.new_ones(())
    scale = c0.new_tensor(_LSTM_GATE_SCALE).view(4, 1)
    upstream = c0.new_empty(k, batch, 4 * hidden)  # what multiplies each gate's s (1 - s)
    u_i, u_f, u_g, u_o = upstream.chunk(4, dim=2)
    grad_h, grad_c = torch.zeros_like(c0), torch.zeros_like(c0)
    for t in range(len(gates) - 1, -1, -1):
        step, tanh_c = gates[t], tanh_cells[t]
        i, f, g_sigmoid, o = step.chunk(4, dim=2)
        dh = grad_h.add_(grad_outputs[t])
        grad_c.addcmul_(dh, torch.addcmul(one, tanh_c, tanh_c, value=-1.0).mul_(o))
        torch.sub(g_sigmoid, 0.5, out=u_i).mul_(grad_c)
        torch.mul(grad_c, cells[t - 1] if t else c0 * 2.0, out=u_f)
        torch.mul(grad_c, i, out=u_g)
        torch.mul(dh, tanh_c, out=u_o)
        grad_c.mul_(f)
        grad = torch.addcmul(step, step, step, value=-1.0).mul_(upstream)
        grad.view(k, batch, 4, hidden).mul_(scale)
        grads.add(t, grad, grad)
        grad_h = torch.bmm(grad, weight_hh)
    return grad_h, grad_c


# -- GRU: r, z = sigmoid; n = tanh(x_n + r (W_hn h + b_hn)); h' = n + z (h - n) -------------

def _gru_forward(rows: _Rows, weight_hh: Tensor, bias_hn: Tensor,
                 h0: Tensor) -> tuple[list[Tensor], tuple[list[Tensor], ...]]:
    """The hidden state of every step, and what the backward pass needs: (r, z, n) and
    ``W_hh h`` (``+ b_hn`` in the n block) of every step."""
    k, batch, hidden = h0.shape
    weight_t = weight_hh.transpose(1, 2).contiguous()
    bias = torch.cat([bias_hn.new_zeros(k, 2 * hidden), bias_hn], dim=1).unsqueeze(1).expand(-1, batch, -1)
    states, activations, recurrent = [], [], []
    h = h0
    for t in range(len(rows)):
        hh = torch.baddbmm(bias, h, weight_t)
        step = rows.pre_activations(t)
        r, z = step[..., : 2 * hidden].add_(hh[..., : 2 * hidden]).sigmoid_().chunk(2, dim=2)
        n = _tanh_from_sigmoid_(step[..., 2 * hidden:].addcmul_(r, hh[..., 2 * hidden:], value=2.0).sigmoid_())
        h = torch.addcmul(n, z, h - n)
        states.append(h)
        activations.append(step)
        recurrent.append(hh)
    return states, (activations, recurrent)


def _gru_backward(grad_outputs: Tensor, grads: _Gradients, states: list[Tensor], weight_hh: Tensor, h0: Tensor,
                  activations: list[Tensor], recurrent: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Backpropagate through all steps into ``grads``; return ``dh0`` and ``db_hn``."""
    hidden = weight_hh.shape[2]
    one = h0.new_ones(())
    hn_sum = torch.zeros_like(h0)
    grad_h = torch.zeros_like(h0)
    for t in range(len(states) - 1, -1, -1):
        step = activations[t]
        r, z, n = step.chunk(3, dim=2)
        rz, hh_n = step[..., : 2 * hidden], recurrent[t][..., 2 * hidden:]
        dh = grad_h.add_(grad_outputs[t])
        previous = states[t - 1] if t else h0
        # dn_pre = dh (1 - z) (1 - n^2); dz_pre = dh (h - n) z (1 - z); dr_pre = dn_pre hh_n r (1 - r)
        grad_n = torch.addcmul(one, n, n, value=-1.0).mul_(dh)
        grad_n.addcmul_(grad_n, z, value=-1.0)
        grad = torch.addcmul(rz, rz, rz, value=-1.0)
        grad[..., :hidden].mul_(grad_n * hh_n)
        grad[..., hidden:].mul_((previous - n).mul_(dh))
        grad = torch.cat([grad, grad_n], dim=2)
        grad_hh = grad.clone()
        grad_hh[..., 2 * hidden:].mul_(r)
        hn_sum.add_(grad_hh[..., 2 * hidden:])
        grads.add(t, grad, grad_hh)
        grad_h = torch.baddbmm(z * dh, grad_hh, weight_hh)
    return grad_h, hn_sum.sum(dim=1)
