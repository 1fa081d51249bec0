"""One recurrent layer of K independent models, computed with batched matrix products.

``batched_recurrence`` runs K unidirectional RNN / LSTM / GRU layers of one cell type and
size (different weights) over one batch, with the model axis first, using torch's gate
order and equations (``torch.nn.RNN``, ``torch.nn.LSTM``, ``torch.nn.GRU``). Two engines
compute it, both with hand-written backpropagation through time (a
``torch.autograd.Function`` each), for a CPU where small recurrent models are bound by
per-call overhead and memory traffic rather than by arithmetic (measurements:
docs/bench/ensemble.md, docs/bench/layered.md):

**Stepwise** (``batched_recurrence``; plain ensembles, ``rnn_models.ensemble``):

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

**Hoisted** (``batched_recurrence_fm``; layered ensembles, ``rnn_models.ensemble_layered``,
whose hundreds of blocks are 5-10 units wide):

* feature-major operands: states are ``(K, H, B)``, so every per-step product is
  ``W (G*H, H) @ h (H, B)`` with the wide batch axis as the result's rows. MKL on this
  CPU is 4-5x slower for the transposed orientation with a narrow result
  (``(B, G*H) @ (G*H, H)``: 285 µs vs 58 µs for 40 blocks of H = 10, batch 128);
* the input projection ``W_ih x + b`` of ALL steps is one batched product before the
  time loop (the input is known in advance: for a DAG layer, all its sources are
  complete); an input shared by all models (layer 0) is one plain matrix product;
* per-step buffers are step-major ``(T, K, ., B)``, so a step's slice is contiguous;
* in the backward pass every chain-rule factor that does not depend on the incoming
  gradient is computed for all steps at once after the forward pass. For tanh/relu a
  backward step is 2 calls and the weight, bias and input gradients are each one batched
  product (or sum) over all ``T*B`` columns after the loop; for the GRU and LSTM a step
  is about 5-6 calls plus the accumulation of those gradients while the step's values
  are in cache (``_Sink``).
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


def batched_recurrence_fm(cell: str, inputs: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                          bias_ih: Tensor | None, bias_hh: Tensor | None,
                          h0: Tensor | None = None, c0: Tensor | None = None) -> Tensor:
    """``batched_recurrence`` computed by the hoisted engine, in its feature-major layout:
    inputs ``(K, I, T, B)``, states ``h0``/``c0`` ``(K, H, B)`` (default zeros), outputs
    ``(K, H, T, B)`` (a view of a step-major ``(T, K, H, B)`` tensor). Weights and biases
    as for ``batched_recurrence``; gradients flow to every tensor argument (first order).
    An input shared by all models may be an ``expand``-ed view (model stride 0): its
    projection is then one matrix product for all models."""
    _check_arguments(cell, inputs, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, feature_major=True)
    outer_bias, recurrent_bias = _split_biases(cell, bias_ih, bias_hh)
    outputs = _HoistedRecurrence.apply(cell, inputs, weight_ih, outer_bias, weight_hh, recurrent_bias, h0, c0)
    return outputs.permute(1, 2, 0, 3)  # (T, K, H, B) -> (K, H, T, B)


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
                     c0: Tensor | None, feature_major: bool = False) -> None:
    """Raise ValueError naming the first argument whose value, shape, dtype or device does
    not fit; shapes in ``batched_recurrence``'s layout, or ``batched_recurrence_fm``'s
    (inputs ``(K, I, T, B)``, states ``(K, H, B)``) when ``feature_major``."""
    if cell not in GATES:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    layout = "(K, I, T, B)" if feature_major else "(K, B, T, I)"
    if inputs.dim() != 4 or 0 in inputs.shape:
        raise ValueError(f"inputs must be a non-empty {layout} tensor, got shape {tuple(inputs.shape)}")
    for name, tensor in (("weight_ih", weight_ih), ("weight_hh", weight_hh), ("bias_ih", bias_ih),
                         ("bias_hh", bias_hh), ("h0", h0), ("c0", c0)):
        if tensor is not None and (tensor.dtype != inputs.dtype or tensor.device != inputs.device):
            raise ValueError(f"{name} must have the inputs' dtype and device ({inputs.dtype}, {inputs.device}), "
                             f"got ({tensor.dtype}, {tensor.device})")
    if feature_major:
        k, features, _, batch = inputs.shape
    else:
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
    state_shape = (k, hidden, batch) if feature_major else (k, batch, hidden)
    for name, state in (("h0", h0), ("c0", c0)):
        if state is not None and tuple(state.shape) != state_shape:
            raise ValueError(f"{name} must be {state_shape}, got {tuple(state.shape)}")


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


# == The hoisted engine (batched_recurrence_fm) ========================================

def _columns(x: Tensor) -> Tensor:
    """``(K, F, T, B)`` as ``(K, F, T*B)``."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def _feature_major(x: Tensor) -> Tensor:
    """Step-major ``(T, K, F, B)`` as feature-major ``(K, F, T*B)`` (a copy)."""
    steps, k, features, batch = x.shape
    return x.permute(1, 2, 0, 3).reshape(k, features, steps * batch)


def _sigmoid_derivative(s: Tensor) -> Tensor:
    """``s (1 - s)`` for a tensor of sigmoids."""
    return torch.addcmul(s, s, s, value=-1.0)


def _previous(states: Tensor, first: Tensor | None, scale: float = 1.0) -> Tensor:
    """Step-major ``(T, K, H, B)`` states one step later, times ``scale``: ``first``
    (``(K, H, B)``, None: zeros) at step 0."""
    shifted = torch.empty_like(states)
    torch.mul(states[:-1], scale, out=shifted[1:])
    if first is None:
        shifted[0] = 0.0
    else:
        torch.mul(first, scale, out=shifted[0])
    return shifted


class _HoistedRecurrence(torch.autograd.Function):
    """One layer of K models with hand-written backpropagation through time.

    ``inputs`` is ``(K, I, T, B)``, ``bias`` (``(K, G*H)``) every bias outside a gate
    product, ``bias_hn`` (``(K, H)``, GRU only) the one inside; ``h0``/``c0`` (``(K, H, B)``)
    may be None (zeros). Returns the step-major hidden states ``(T, K, H, B)``: every
    per-step buffer is step-major, so that a step's slice is contiguous and stays in cache.
    """

    @staticmethod
    def forward(ctx: Any, cell: str, inputs: Tensor, weight_ih: Tensor, bias: Tensor | None,
                weight_hh: Tensor, bias_hn: Tensor | None, h0: Tensor | None, c0: Tensor | None) -> Tensor:
        k, _, steps, batch = inputs.shape
        hidden = weight_hh.shape[2]
        scale = _tanh_scale(cell, hidden, weight_ih).unsqueeze(1)
        ctx.shared = inputs.stride(0) == 0 and k > 1
        if ctx.shared:  # one input for all models: one matrix product for all of them
            x = inputs[0].reshape(inputs.shape[1], -1)
            weight = (weight_ih * scale).flatten(0, 1)
            projected = torch.mm(weight, x) if bias is None else \
                torch.addmm((bias * scale.squeeze(1)).reshape(-1, 1), weight, x)
        else:
            x = _columns(inputs)
            projected = torch.bmm(weight_ih * scale, x) if bias is None else \
                torch.baddbmm((bias * scale.squeeze(1)).unsqueeze(2), weight_ih * scale, x)
        projected = projected.view(k, -1, steps, batch)  # scaled W_ih x + b of every step
        wh = weight_hh * scale
        ctx.cell = cell
        if cell == "lstm":
            out, extra = _hoisted_lstm_forward(projected, wh, h0, c0)
        elif cell == "gru":
            out, extra = _hoisted_gru_forward(projected, wh, bias_hn, h0, hidden)
        else:
            out, extra = _hoisted_elman_forward(cell, projected, wh, h0), ()
        ctx.save_for_backward(x, weight_ih, weight_hh, h0, c0, out, *extra)  # freed after backward
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, weight_ih, weight_hh, h0, c0, out, *extra = ctx.saved_tensors
        needs = ctx.needs_input_grad
        owned = not grad_out.is_contiguous()  # then the contiguous copy is ours to overwrite
        grad_out = grad_out.contiguous()
        weight_hh_t = weight_hh.transpose(1, 2).contiguous()
        sink = _Sink(needs, x, ctx.shared, weight_ih, out, h0)
        grad_c0 = None
        if ctx.cell == "lstm":
            grad_h0, grad_c0 = _hoisted_lstm_backward(grad_out, weight_hh_t, c0, sink, *extra)
        elif ctx.cell == "gru":
            grad_h0 = _hoisted_gru_backward(grad_out, weight_hh_t, h0, out, sink, *extra)
        else:
            grad_h0 = _hoisted_elman_backward(ctx.cell, grad_out, weight_hh_t, out, sink, owned)
        grad_inputs, grad_weight_ih, grad_bias, grad_weight_hh, grad_bias_hn = sink.results(ctx.cell)
        if not needs[6]:
            grad_h0 = None
        if not needs[7]:
            grad_c0 = None
        return (None, grad_inputs, grad_weight_ih, grad_bias, grad_weight_hh, grad_bias_hn, grad_h0, grad_c0)


class _Sink:
    """Weight, bias and input gradients from the pre-activation gradients ``(K, G*H, B)``:
    accumulated step by step in the backward loop while each step is in cache (``add``,
    GRU and LSTM), or all steps at once after it (``add_all``, tanh/relu); always in MKL's
    fast orientation (results with the wide axis last: ``x_t g_t^T`` is ``(I, G*H)``)."""

    def __init__(self, needs: tuple[bool, ...], x: Tensor, shared: bool, weight_ih: Tensor, out: Tensor,
                 h0: Tensor | None) -> None:
        self.x, self.shared, self.out, self.h0 = x, shared, out, h0
        steps, k, hidden, self.batch = out.shape
        rows, features = weight_ih.shape[1], weight_ih.shape[2]
        self.needs_inputs, self.needs_bias = needs[1], needs[3] or needs[5]
        self.needs_weight_ih, self.needs_weight_hh = needs[2], needs[4]
        self.weight_ih_t = weight_ih.transpose(1, 2).contiguous() if needs[1] else None
        self.shapes = (steps, k, hidden, rows, features)
        self.grad_inputs = self.weight_ih = self.weight_hh = self.bias_x = self.bias_h = None
        self.direct: tuple[Tensor | None, ...] | None = None

    def _start(self) -> None:
        """Allocate the accumulators (on the first ``add``)."""
        steps, k, hidden, rows, features = self.shapes
        out = self.out
        if self.needs_inputs:
            self.grad_inputs = out.new_empty(steps, k, features, self.batch)
        if self.needs_weight_ih:
            self.weight_ih = out.new_zeros(features, k * rows) if self.shared else out.new_zeros(k, features, rows)
        if self.needs_weight_hh:
            self.weight_hh = out.new_zeros(k, hidden, rows)
        if self.needs_bias:
            self.bias_x = out.new_zeros(k, rows, self.batch)

    def add(self, t: int, grad: Tensor, grad_h: Tensor | None = None) -> None:
        """Step ``t``: ``grad`` (``(K, G*H, B)``) of the input pre-activations, ``grad_h``
        of the recurrent ones (``W_hh h + b_hh``; default: the same)."""
        if self.bias_x is None and self.weight_ih is None and self.weight_hh is None and self.grad_inputs is None:
            self._start()
        columns = slice(t * self.batch, (t + 1) * self.batch)
        if self.weight_ih is not None:
            if self.shared:
                self.weight_ih.addmm_(self.x[:, columns], grad.view(-1, self.batch).t())
            else:
                self.weight_ih.baddbmm_(self.x[:, :, columns], grad.transpose(1, 2))
        if self.needs_inputs:
            torch.bmm(self.weight_ih_t, grad, out=self.grad_inputs[t])
        grad_h = grad if grad_h is None else grad_h
        if self.weight_hh is not None:
            previous = self.out[t - 1] if t else self.h0
            if previous is not None:
                self.weight_hh.baddbmm_(previous, grad_h.transpose(1, 2))
        if self.needs_bias:
            self.bias_x.add_(grad)
            if grad_h is not grad:
                if self.bias_h is None:
                    self.bias_h = torch.zeros_like(self.bias_x)
                self.bias_h.add_(grad_h)

    def add_all(self, grad: Tensor) -> None:
        """All steps at once (instead of ``add``), for cells whose gradients ``grad``
        (step-major ``(T, K, G*H, B)``, input and recurrent the same) are cheap to keep:
        one product each over all ``T*B`` columns, fewer calls than ``add`` per step (which
        pays for tanh/relu with G*H of 5-10 units: measured 8-9 ms vs 9-14 ms per call)."""
        steps, k, rows, batch = grad.shape
        flat = _feature_major(grad)
        inputs = weight_ih = weight_hh = None
        if self.needs_weight_ih:
            weight_ih = torch.matmul(flat, self.x.t()) if self.shared else torch.bmm(flat, self.x.transpose(1, 2))
        if self.needs_inputs:
            inputs = torch.bmm(self.weight_ih_t, flat).view(k, -1, steps, batch)
        if self.needs_weight_hh:
            weight_hh = torch.bmm(flat[:, :, batch:], _feature_major(self.out[:-1]).transpose(1, 2))
            if self.h0 is not None:
                weight_hh.baddbmm_(flat[:, :, :batch], self.h0.transpose(1, 2))
        bias = flat.sum(2) if self.needs_bias else None
        self.direct = (inputs, weight_ih, bias, weight_hh, None)

    def results(self, cell: str) -> tuple[Tensor | None, ...]:
        """Gradients of ``inputs``, ``weight_ih``, the outer bias, ``weight_hh`` and ``b_hn``."""
        if self.direct is not None:
            return self.direct
        k, hidden = self.out.shape[1], self.out.shape[2]
        inputs = None if self.grad_inputs is None else self.grad_inputs.permute(1, 2, 0, 3)
        weight_ih = self.weight_ih
        if weight_ih is not None:
            if self.shared:
                weight_ih = weight_ih.view(-1, k, weight_ih.shape[1] // k).permute(1, 2, 0)
            else:
                weight_ih = weight_ih.transpose(1, 2)
        weight_hh = None if self.weight_hh is None else self.weight_hh.transpose(1, 2)
        bias = bias_hn = None
        if self.needs_bias:
            bias = self.bias_x.sum(2)
            if cell == "gru":
                bias_hn = (self.bias_x if self.bias_h is None else self.bias_h)[:, 2 * hidden:].sum(2)
        return inputs, weight_ih, bias, weight_hh, bias_hn


# -- Elman RNN (tanh / relu): h' = act(W_ih x + b + W_hh h) -------------------------------

def _hoisted_elman_forward(cell: str, projected: Tensor, wh: Tensor, h0: Tensor | None) -> Tensor:
    """The hidden states, step-major ``(T, K, H, B)``."""
    k, hidden, steps, batch = projected.shape
    out = projected.new_empty(steps, k, hidden, batch)
    minus_one = projected.new_full((), -1.0)
    h = h0
    for t in range(steps):
        pre = projected[:, :, t] if h is None else torch.baddbmm(projected[:, :, t], wh, h)
        h = out[t]
        if cell == "rnn_tanh":
            torch.add(minus_one, torch.sigmoid(pre), alpha=2.0, out=h)
        else:
            torch.clamp_min(pre, 0.0, out=h)
    return out


def _hoisted_elman_backward(cell: str, grad_out: Tensor, weight_hh_t: Tensor, out: Tensor, sink: "_Sink",
                            owned: bool) -> Tensor:
    """Backpropagate through all steps into ``sink``; return ``dh0`` (``grad_out`` is
    overwritten when ``owned``)."""
    if cell == "rnn_tanh":
        derivative = torch.addcmul(out.new_ones(()), out, out, value=-1.0)
    else:
        derivative = out.gt(0).to(out.dtype)
    # step-major pre-activation gradients, completed step by step
    grad = grad_out.mul_(derivative) if owned else grad_out * derivative
    for t in range(out.shape[0] - 1, 0, -1):
        grad[t - 1].addcmul_(torch.bmm(weight_hh_t, grad[t]), derivative[t - 1])
    sink.add_all(grad)
    return torch.bmm(weight_hh_t, grad[0])


# -- LSTM: i, f, o = sigmoid, g = tanh; c' = f c + i g; h' = o tanh(c') ---------------------

def _hoisted_lstm_forward(projected: Tensor, wh: Tensor, h0: Tensor | None,
                  c0: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The hidden states, and what the backward pass needs: every gate's sigmoid (the cell
    gate's of ``2 a_g``), ``2 c`` and ``tanh(c)`` of every step (all step-major)."""
    k, rows, steps, batch = projected.shape
    hidden = rows // 4
    gates = projected.new_empty(steps, k, rows, batch)
    cells = projected.new_empty(steps, k, hidden, batch)  # 2c
    tanh_cells = torch.empty_like(cells)
    out = torch.empty_like(cells)
    minus_one = projected.new_full((), -1.0)
    h, c2 = h0, None if c0 is None else c0 * 2.0
    for t in range(steps):
        pre = projected[:, :, t] if h is None else torch.baddbmm(projected[:, :, t], wh, h)
        step = torch.sigmoid(pre, out=gates[t])
        i, f, g_sigmoid, o = step.chunk(4, dim=1)
        c_new = cells[t]
        if c2 is None:
            torch.mul(g_sigmoid - 0.5, i, out=c_new).mul_(4.0)
        else:
            torch.mul(f, c2, out=c_new).addcmul_(i, g_sigmoid - 0.5, value=4.0)  # 2c' = f 2c + 2 i (2 s_g - 1)
        tanh_c = torch.add(minus_one, torch.sigmoid(c_new), alpha=2.0, out=tanh_cells[t])
        h = torch.mul(o, tanh_c, out=out[t])
        c2 = c_new
    return out, (gates, cells, tanh_cells)


def _hoisted_lstm_backward(grad_out: Tensor, weight_hh_t: Tensor, c0: Tensor | None, sink: "_Sink",
                           gates: Tensor, cells: Tensor, tanh_cells: Tensor) -> tuple[Tensor, Tensor]:
    """Backpropagate through all steps into ``sink``; return ``dh0`` and ``dc0``."""
    steps, k, rows, batch = gates.shape
    hidden = rows // 4
    i, f, g_sigmoid, o = gates.view(steps, k, 4, hidden, batch).unbind(2)
    # d a_gate = dc * F[gate] for i, f, g and dh * F[o]; dc += dh * o (1 - tanh(c)^2)
    factors = _sigmoid_derivative(gates).view(steps, k, 4, hidden, batch)
    minus_one = gates.new_full((), -1.0)
    factors[:, :, 0].mul_(torch.add(minus_one, g_sigmoid, alpha=2.0))                 # (2 s_g - 1) s_i'
    factors[:, :, 1].mul_(_previous(cells, None if c0 is None else c0 * 2.0, 0.5))    # c_{t-1} s_f'
    factors[:, :, 2].mul_(torch.mul(i, 4.0))                                          # i (1 - g^2)
    factors[:, :, 3].mul_(tanh_cells)                                                 # tanh(c) s_o'
    through = torch.addcmul(tanh_cells.new_ones(()), tanh_cells, tanh_cells, value=-1.0).mul_(o)
    grad = gates.new_empty(k, rows, batch)  # one step's pre-activation gradients
    split_grad = grad.view(k, 4, hidden, batch)
    grad_h = grad_c = None
    for t in range(steps - 1, -1, -1):
        dh = grad_out[t] if grad_h is None else grad_h.add_(grad_out[t])
        if grad_c is None:
            grad_c = dh * through[t]
        else:
            grad_c.mul_(f[t + 1]).addcmul_(dh, through[t])
        torch.mul(factors[t, :, :3], grad_c.unsqueeze(1), out=split_grad[:, :3])
        torch.mul(factors[t, :, 3], dh, out=split_grad[:, 3])
        sink.add(t, grad)
        grad_h = torch.bmm(weight_hh_t, grad)
    return grad_h, grad_c.mul_(f[0])


# -- GRU: r, z = sigmoid; n = tanh(x_n + r (W_hn h + b_hn)); h' = n + z (h - n) -------------

def _hoisted_gru_forward(projected: Tensor, wh: Tensor, bias_hn: Tensor | None, h0: Tensor | None,
                 hidden: int) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The hidden states, and what the backward pass needs: (r, z, n) of every step and
    ``2 (W_hn h + b_hn)`` of every step (all step-major)."""
    k, rows, steps, batch = projected.shape
    activations = projected.new_empty(steps, k, rows, batch)
    recurrent = projected.new_empty(steps, k, rows, batch)
    out = projected.new_empty(steps, k, hidden, batch)
    minus_one = projected.new_full((), -1.0)
    bias = projected.new_zeros(k, rows, 1)
    if bias_hn is not None:
        bias[:, 2 * hidden:, 0] = bias_hn * 2.0
    bias = bias.expand(k, rows, batch)
    h = h0
    for t in range(steps):
        hh = recurrent[t]
        if h is None:
            hh.copy_(bias)
        else:
            torch.baddbmm(bias, wh, h, out=hh)
        step = activations[t]
        rz = torch.add(projected[:, : 2 * hidden, t], hh[:, : 2 * hidden], out=step[:, : 2 * hidden]).sigmoid_()
        n = torch.addcmul(projected[:, 2 * hidden:, t], rz[:, :hidden], hh[:, 2 * hidden:],
                          out=step[:, 2 * hidden:]).sigmoid_()
        torch.add(minus_one, n, alpha=2.0, out=n)
        z = rz[:, hidden:]
        if h is None:
            h = torch.addcmul(n, z, n, value=-1.0, out=out[t])
        else:
            h = torch.addcmul(n, z, h - n, out=out[t])
    return out, (activations, recurrent)


def _hoisted_gru_backward(grad_out: Tensor, weight_hh_t: Tensor, h0: Tensor | None, out: Tensor, sink: "_Sink",
                          activations: Tensor, recurrent: Tensor) -> Tensor:
    """Backpropagate through all steps into ``sink`` (the input pre-activations' gradients
    and, apart, the recurrent ones of ``W_hh h + b_hh``); return ``dh0``."""
    steps, k, rows, batch = activations.shape
    hidden = rows // 3
    r, z, n = activations.view(steps, k, 3, hidden, batch).unbind(2)
    hh_n = recurrent[:, :, 2 * hidden:]  # 2 (W_hn h + b_hn)
    # every pre-activation gradient is dh times a factor known after the forward pass
    through_n = torch.addcmul(n.new_ones(()), n, n, value=-1.0).mul_(1.0 - z)        # dn_pre / dh
    factors = torch.empty_like(activations).view(steps, k, 3, hidden, batch)
    torch.mul(_sigmoid_derivative(r), hh_n, out=factors[:, :, 0]).mul_(through_n).mul_(0.5)
    torch.sub(_previous(out, h0), n, out=factors[:, :, 1]).mul_(_sigmoid_derivative(z))
    factors[:, :, 2] = through_n
    recurrent_n = through_n.mul_(r)
    grad_x = activations.new_empty(k, rows, batch)  # one step's gradients
    grad_h = torch.empty_like(grad_x)
    split_x, split_h = grad_x.view(k, 3, hidden, batch), grad_h.view(k, 3, hidden, batch)
    carry = None
    for t in range(steps - 1, -1, -1):
        dh = grad_out[t] if carry is None else carry.add_(grad_out[t])
        torch.mul(factors[t], dh.unsqueeze(1), out=split_x)
        split_h[:, :2] = split_x[:, :2]
        torch.mul(recurrent_n[t], dh, out=split_h[:, 2])
        sink.add(t, grad_x, grad_h)
        carry = torch.baddbmm(dh * z[t], weight_hh_t, grad_h)
    return carry
