"""A compiled recurrent layer for narrow layers: the whole time loop in one call each way.

The study's layered DAG models are made of recurrent layers a few units wide (3-4 on
average in the ``paper`` preset, rarely more than 30) run over batches of 128. torch's CPU
kernels pay per step and per layer for such layers (oneDNN's LSTM about 130 µs per layer
step forward and backward, ATen's RNN/GRU loops more), far above their arithmetic. Here,
compiled by numba, one call runs all steps of a layer: every operand is feature-major
``(F, T, B)``, so a step's rows are contiguous over the batch and every product and gate
is a loop that LLVM vectorizes over ``B``; the layer's weights stay in registers and L1.
The input projection ``W_ih x + b`` of all steps is one more compiled call (each block
of a fused layer reading only its own source's columns), before the recurrence.
Measurements: docs/bench/layered.md.

``tanh`` is a rational minimax approximation (odd degree-13 numerator, even degree-6
denominator, clamped at |x| = 7.9053), plain arithmetic that LLVM vectorizes (numba's
``np.tanh``/``np.exp`` are scalar libm calls, about 8x slower); its largest error in
float32 is 2.4e-7. ``sigmoid(x) = (1 + tanh(x / 2)) / 2``. The fast-math flags leave out
``nnan``/``ninf`` so that a NaN propagates and a diverging model is seen to fail. Kernels
compile on first use and are cached on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numba import njit
from torch import Tensor

from rnn_models.masked import GATES

ENABLED = True
"""Use these kernels where they apply (``applies``); False keeps torch's own kernels (for
comparisons and tests)."""

_F = np.float32
_LIMIT = _F(7.90531110763549805)
_N0, _N1, _N2, _N3, _N4, _N5, _N6 = (_F(c) for c in (
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
    1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03))
_D0, _D1, _D2, _D3 = (_F(c) for c in (
    1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03))
_JIT = {"fastmath": {"nsz", "arcp", "contract", "afn", "reassoc"}, "error_model": "numpy", "cache": True}
_CODES = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3}


def applies(x: Tensor) -> bool:
    """Whether the kernels can run on ``x``: a float32 CPU tensor outside CPU autocast (and
    ``ENABLED``)."""
    return (ENABLED and x.dtype == torch.float32 and x.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu"))


@njit(inline="always", **_JIT)
def _tanh(x: float) -> float:
    """float32 ``tanh`` as a clamped rational function (see the module docstring)."""
    x = _LIMIT if x > _LIMIT else x
    x = -_LIMIT if x < -_LIMIT else x
    x2 = x * x
    p = x2 * _N0 + _N1
    p = x2 * p + _N2
    p = x2 * p + _N3
    p = x2 * p + _N4
    p = x2 * p + _N5
    p = x2 * p + _N6
    q = x2 * _D0 + _D1
    q = x2 * q + _D2
    q = x2 * q + _D3
    return x * p / q


@njit(inline="always", **_JIT)
def _sigmoid(x: float) -> float:
    """float32 ``sigmoid`` through ``_tanh`` (vectorizes like it)."""
    return _F(0.5) * _tanh(_F(0.5) * x) + _F(0.5)


@njit(**_JIT)
def tanh_array(values: np.ndarray) -> None:
    """``values`` (1-d) replaced by the kernels' ``tanh`` of them (for tests)."""
    for e in range(values.shape[0]):
        values[e] = _tanh(values[e])


@njit(**_JIT)
def _product(weight: np.ndarray, states: np.ndarray, t: int, out: np.ndarray, block: int) -> None:
    """``out[r] += sum_j weight[r, j] * states[j, t]`` for every row of ``out`` (each row a
    vector over the batch): the recurrent product of step ``t + 1``. ``weight`` is block
    diagonal with blocks ``block`` units wide: row r reads only its own block's columns."""
    hidden = states.shape[0]
    for r in range(out.shape[0]):
        target, w = out[r], weight[r]
        start = (r % hidden) // block * block
        for j in range(start, start + block):
            wj, source = w[j], states[j, t]
            for b in range(source.shape[0]):
                target[b] += wj * source[b]


@njit(**_JIT)
def _transposed_product(weight: np.ndarray, grad: np.ndarray, out: np.ndarray, block: int) -> None:
    """``out[j] += sum_r weight[r, j] * grad[r]`` (the gradient reaching the previous state;
    block diagonal as in ``_product``)."""
    hidden = out.shape[0]
    for r in range(grad.shape[0]):
        w, g = weight[r], grad[r]
        start = (r % hidden) // block * block
        for j in range(start, start + block):
            wj, target = w[j], out[j]
            for b in range(out.shape[1]):
                target[b] += wj * g[b]


@njit(**_JIT)
def _outer(grad: np.ndarray, states: np.ndarray, t: int, out: np.ndarray, block: int) -> None:
    """``out[r, j] += sum_b grad[r, b] * states[j, t, b]`` (a weight gradient; only the
    diagonal blocks, as in ``_product``: the others stay as they were, zero)."""
    hidden = states.shape[0]
    for r in range(grad.shape[0]):
        g, target = grad[r], out[r]
        start = (r % hidden) // block * block
        for j in range(start, start + block):
            source = states[j, t]
            total = _F(0.0)
            for b in range(source.shape[0]):
                total += g[b] * source[b]
            target[j] += total


@njit(**_JIT)
def _forward(code: int, projected: np.ndarray, weight: np.ndarray, bias_hn: np.ndarray, states: np.ndarray,
             saved: np.ndarray, cells: np.ndarray, block: int) -> None:
    """All steps, feature-major ``(F, T, B)``. ``projected`` ``(G*H, T, B)`` holds ``W_ih x_t +
    b`` (GRU: without ``b_hn``); ``weight`` is ``W_hh`` ``(G*H, H)``; states start at zero.
    Fills ``states`` ``(H, T, B)`` and what the backward pass needs: for the LSTM and GRU
    the gate activations ``saved`` ``(G*H, T, B)`` and ``cells`` ``(H, T, B)`` (LSTM: the
    cell states; GRU: ``W_hn h + b_hn``)."""
    hidden, steps, batch = states.shape
    rows = projected.shape[0]
    pre = np.empty((rows, batch), dtype=states.dtype)
    for t in range(steps):
        if code == 3:
            _gru_step(projected, weight, bias_hn, states, saved, cells, t, pre, block)
            continue
        for r in range(rows):
            pre[r] = projected[r, t]
        if t > 0:
            _product(weight, states, t - 1, pre, block)
        if code == 2:
            _lstm_step(pre, saved, cells, states, t)
            continue
        for j in range(hidden):
            source, target = pre[j], states[j, t]
            for b in range(batch):
                target[b] = _tanh(source[b]) if code == 0 else max(source[b], _F(0.0))


@njit(**_JIT)
def _lstm_step(pre: np.ndarray, gates: np.ndarray, cells: np.ndarray, states: np.ndarray, t: int) -> None:
    """Step ``t``: gates (sigmoid i, f, o; tanh g) of pre-activations ``pre`` ``(4H, B)``;
    ``c_t = f c_{t-1} + i g``; ``h_t = o tanh(c_t)``."""
    hidden, _, batch = cells.shape
    for r in range(4 * hidden):
        source, target = pre[r], gates[r, t]
        if 2 * hidden <= r < 3 * hidden:
            for b in range(batch):
                target[b] = _tanh(source[b])
        else:
            for b in range(batch):
                target[b] = _sigmoid(source[b])
    for j in range(hidden):
        i, f, g, after = gates[j, t], gates[hidden + j, t], gates[2 * hidden + j, t], cells[j, t]
        if t == 0:
            for b in range(batch):
                after[b] = i[b] * g[b]
        else:
            before = cells[j, t - 1]
            for b in range(batch):
                after[b] = f[b] * before[b] + i[b] * g[b]
    for j in range(hidden):
        o, after, target = gates[3 * hidden + j, t], cells[j, t], states[j, t]
        for b in range(batch):
            target[b] = o[b] * _tanh(after[b])


@njit(**_JIT)
def _gru_step(projected: np.ndarray, weight: np.ndarray, bias_hn: np.ndarray, states: np.ndarray,
              gates: np.ndarray, recurrent_n: np.ndarray, t: int, pre: np.ndarray, block: int) -> None:
    """Step ``t``: ``r, z = sigmoid(x_rz + W_rz h)``; ``n = tanh(x_n + r (W_hn h + b_hn))``;
    ``h' = n + z (h - n)``. Keeps r, z, n in ``gates`` and ``W_hn h + b_hn`` in
    ``recurrent_n``; ``pre`` ``(3H, B)`` is scratch."""
    hidden, _, batch = states.shape
    for r in range(2 * hidden):
        pre[r] = projected[r, t]
    for j in range(hidden):
        pre[2 * hidden + j] = bias_hn[j]
    if t > 0:
        _product(weight, states, t - 1, pre, block)
    for r in range(2 * hidden):
        source, target = pre[r], gates[r, t]
        for b in range(batch):
            target[b] = _sigmoid(source[b])
    for j in range(hidden):
        x, reset, hn, n = projected[2 * hidden + j, t], gates[j, t], pre[2 * hidden + j], gates[2 * hidden + j, t]
        recurrent_n[j, t] = hn
        for b in range(batch):
            n[b] = _tanh(x[b] + reset[b] * hn[b])
    for j in range(hidden):
        n, z, target = gates[2 * hidden + j, t], gates[hidden + j, t], states[j, t]
        if t == 0:
            for b in range(batch):
                target[b] = n[b] - z[b] * n[b]
        else:
            before = states[j, t - 1]
            for b in range(batch):
                target[b] = n[b] + z[b] * (before[b] - n[b])


@njit(**_JIT)
def _backward(code: int, weight: np.ndarray, states: np.ndarray, saved: np.ndarray, cells: np.ndarray,
              grad_states: np.ndarray, grad_cells: np.ndarray, grad_projected: np.ndarray,
              grad_weight: np.ndarray, grad_bias_hn: np.ndarray, block: int) -> None:
    """Backpropagation through all steps: from ``grad_states`` (and, LSTM, ``grad_cells``)
    ``(H, T, B)``, fills ``grad_projected`` ``(G*H, T, B)`` (the pre-activations' gradient),
    ``grad_weight`` ``(G*H, H)`` and (GRU) ``grad_bias_hn`` ``(H,)``."""
    hidden, steps, batch = states.shape
    rows = weight.shape[0]
    one = _F(1.0)
    grad_h = np.zeros((hidden, batch), dtype=states.dtype)
    grad_c = np.zeros((hidden, batch), dtype=states.dtype)
    grad_pre = np.empty((rows, batch), dtype=states.dtype)
    grad_hh = np.empty((rows, batch), dtype=states.dtype)
    scratch = np.empty((hidden, batch), dtype=states.dtype)
    grad_bias_hn[:] = 0.0
    for t in range(steps - 1, -1, -1):
        for j in range(hidden):
            dh, up = grad_h[j], grad_states[j, t]
            for b in range(batch):
                dh[b] += up[b]
        recurrent = grad_pre
        if code == 2:
            for j in range(hidden):
                dc, up = grad_c[j], grad_cells[j, t]
                for b in range(batch):
                    dc[b] += up[b]
            _lstm_step_back(saved, cells, t, grad_h, grad_c, grad_pre, scratch)
            grad_h[:] = 0.0
        elif code == 3:
            _gru_step_back(saved, cells, states, t, grad_h, grad_pre, grad_hh)
            for j in range(hidden):
                source = grad_hh[2 * hidden + j]
                total = _F(0.0)
                for b in range(batch):
                    total += source[b]
                grad_bias_hn[j] += total
            recurrent = grad_hh
        else:
            for j in range(hidden):
                dh, h, target = grad_h[j], states[j, t], grad_pre[j]
                for b in range(batch):
                    target[b] = dh[b] * (one - h[b] * h[b]) if code == 0 else (dh[b] if h[b] > 0 else _F(0.0))
            grad_h[:] = 0.0
        for r in range(rows):
            grad_projected[r, t] = grad_pre[r]
        if t > 0:
            _outer(recurrent, states, t - 1, grad_weight, block)
            _transposed_product(weight, recurrent, grad_h, block)


@njit(**_JIT)
def _lstm_step_back(gates: np.ndarray, cells: np.ndarray, t: int, grad_h: np.ndarray, grad_c: np.ndarray,
                    grad_pre: np.ndarray, tanh_c: np.ndarray) -> None:
    """Step ``t`` backward: from ``grad_h`` (of ``h_t``) and ``grad_c`` (of ``c_t``), the
    pre-activations' gradient ``grad_pre`` ``(4H, B)``; ``grad_c`` becomes that of ``c_{t-1}``."""
    hidden, _, batch = cells.shape
    one, zero = _F(1.0), _F(0.0)
    for j in range(hidden):
        after, t_c = cells[j, t], tanh_c[j]
        for b in range(batch):
            t_c[b] = _tanh(after[b])
    for j in range(hidden):
        dh, o, t_c, dc = grad_h[j], gates[3 * hidden + j, t], tanh_c[j], grad_c[j]
        for b in range(batch):
            dc[b] += dh[b] * o[b] * (one - t_c[b] * t_c[b])
    for j in range(hidden):
        i, f, g, o = gates[j, t], gates[hidden + j, t], gates[2 * hidden + j, t], gates[3 * hidden + j, t]
        dh, t_c, dc = grad_h[j], tanh_c[j], grad_c[j]
        di, df, dg, do = grad_pre[j], grad_pre[hidden + j], grad_pre[2 * hidden + j], grad_pre[3 * hidden + j]
        if t == 0:
            for b in range(batch):
                df[b] = zero
        else:
            before = cells[j, t - 1]
            for b in range(batch):
                df[b] = dc[b] * before[b] * f[b] * (one - f[b])
        for b in range(batch):
            di[b] = dc[b] * g[b] * i[b] * (one - i[b])
            dg[b] = dc[b] * i[b] * (one - g[b] * g[b])
            do[b] = dh[b] * t_c[b] * o[b] * (one - o[b])
    for j in range(hidden):
        f, dc = gates[hidden + j, t], grad_c[j]
        for b in range(batch):
            dc[b] *= f[b]


@njit(**_JIT)
def _gru_step_back(gates: np.ndarray, recurrent_n: np.ndarray, states: np.ndarray, t: int, grad_h: np.ndarray,
                   grad_pre: np.ndarray, grad_hh: np.ndarray) -> None:
    """Step ``t`` backward: from ``grad_h`` (of ``h_t``) the input pre-activations' gradient
    ``grad_pre`` and the recurrent ones' ``grad_hh`` (``(3H, B)``, of ``W_hh h + b_hh``);
    ``grad_h`` becomes the direct part ``z dh`` of the previous state's gradient."""
    hidden, _, batch = states.shape
    one, zero = _F(1.0), _F(0.0)
    for j in range(hidden):
        r, z, n, hn = gates[j, t], gates[hidden + j, t], gates[2 * hidden + j, t], recurrent_n[j, t]
        dh = grad_h[j]
        dr, dz, dn = grad_pre[j], grad_pre[hidden + j], grad_pre[2 * hidden + j]
        hr, hz, hnn = grad_hh[j], grad_hh[hidden + j], grad_hh[2 * hidden + j]
        before = states[j, t - 1 if t > 0 else 0]
        for b in range(batch):
            d_n = dh[b] * (one - z[b]) * (one - n[b] * n[b])
            d_r = d_n * hn[b] * r[b] * (one - r[b])
            previous = before[b] if t > 0 else zero
            d_z = dh[b] * (previous - n[b]) * z[b] * (one - z[b])
            dn[b] = d_n
            dr[b] = d_r
            dz[b] = d_z
            hnn[b] = d_n * r[b]
            hr[b] = d_r
            hz[b] = d_z
            dh[b] *= z[b]


@njit(**_JIT)
def _project(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, ranges: np.ndarray, hidden: int, block: int,
             out: np.ndarray) -> None:
    """``out[r] = bias[r] + sum_i weight[r, i] x[i]`` over the columns ``ranges[k]`` of row
    r's block k (``(r % hidden) // block``): each block reads only its own source. Rows of
    ``x`` ``(I, N)`` and ``out`` ``(G*H, N)`` run over all ``N = T * B`` step columns."""
    for r in range(out.shape[0]):
        k = (r % hidden) // block
        target, w, value = out[r], weight[r], bias[r]
        for n in range(target.shape[0]):
            target[n] = value
        for i in range(ranges[k, 0], ranges[k, 1]):
            wi, source = w[i], x[i]
            for n in range(target.shape[0]):
                target[n] += wi * source[n]


@njit(**_JIT)
def _project_backward(x: np.ndarray, weight: np.ndarray, ranges: np.ndarray, hidden: int, block: int,
                      grad: np.ndarray, grad_x: np.ndarray, grad_weight: np.ndarray, grad_bias: np.ndarray) -> None:
    """Gradients of ``_project`` from ``grad`` ``(G*H, N)``: ``grad_bias`` and the in-block
    entries of ``grad_weight`` (the others stay zero), and ``grad_x`` ``(I, N)`` (zeros on
    entry; skipped when it has no rows)."""
    for r in range(grad.shape[0]):
        k = (r % hidden) // block
        g, w = grad[r], weight[r]
        total = _F(0.0)
        for n in range(g.shape[0]):
            total += g[n]
        grad_bias[r] = total
        for i in range(ranges[k, 0], ranges[k, 1]):
            source = x[i]
            total = _F(0.0)
            for n in range(g.shape[0]):
                total += g[n] * source[n]
            grad_weight[r, i] = total
            if grad_x.shape[0] > 0:
                wi, target = w[i], grad_x[i]
                for n in range(g.shape[0]):
                    target[n] += wi * g[n]


class BlockProjection(torch.autograd.Function):
    """``W_ih x + bias`` for all steps at once, each block of rows reading only its own
    columns of ``x`` (``_project``): ``x`` ``(I, T, B)``, ``weight_ih`` ``(G*H, I)``,
    ``bias`` ``(G*H,)``, ``ranges`` ``(blocks, 2)`` int64 column ranges; ``(G*H, T, B)``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight_ih: Tensor, bias: Tensor, ranges: np.ndarray, hidden: int,
                block: int) -> Tensor:
        features, steps, batch = x.shape
        x, weight_ih = x.contiguous(), weight_ih.contiguous()
        out = x.new_empty(weight_ih.shape[0], steps, batch)
        _project(_array(x).reshape(features, -1), _array(weight_ih), _array(bias.contiguous()), ranges, hidden,
                 block, _array(out).reshape(out.shape[0], -1))
        ctx.save_for_backward(x, weight_ih)
        ctx.ranges, ctx.hidden, ctx.block = ranges, hidden, block
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        _refuse_double_backward()
        x, weight_ih = ctx.saved_tensors
        features = x.shape[0]
        grad = grad.contiguous()
        needs_x = ctx.needs_input_grad[0]
        grad_x = torch.zeros_like(x) if needs_x else x.new_empty(0, 1)
        grad_weight = torch.zeros_like(weight_ih)
        grad_bias = grad.new_empty(grad.shape[0])
        columns = _array(grad_x).reshape(features, -1) if needs_x else _array(grad_x)
        _project_backward(_array(x).reshape(features, -1), _array(weight_ih), ctx.ranges, ctx.hidden, ctx.block,
                          _array(grad).reshape(grad.shape[0], -1), columns, _array(grad_weight), _array(grad_bias))
        return (grad_x if needs_x else None), grad_weight, grad_bias, None, None, None


class NativeRecurrence(torch.autograd.Function):
    """One recurrent layer over pre-projected inputs, feature-major: ``projected``
    ``(G*H, T, B)`` (``W_ih x_t`` plus every bias outside the recurrence), ``weight_hh``
    ``(G*H, H)``, ``bias_hn`` ``(H,)`` (GRU, else ignored); zero initial states. Returns the
    states ``(H, T, B)`` and the LSTM's cell states (else an empty tensor)."""

    @staticmethod
    def forward(ctx: Any, cell: str, projected: Tensor, weight_hh: Tensor, bias_hn: Tensor,
                block: int) -> tuple[Tensor, Tensor]:
        rows, steps, batch = projected.shape
        hidden = weight_hh.shape[1]
        code = _CODES[cell]
        projected, weight_hh = projected.contiguous(), weight_hh.contiguous()
        states = projected.new_empty(hidden, steps, batch)
        saved = projected.new_empty((rows, steps, batch) if code >= 2 else (1, 1, 1))
        cells = projected.new_empty((hidden, steps, batch) if code >= 2 else (1, 1, 1))
        hn = bias_hn.contiguous() if code == 3 else projected.new_zeros(1)
        _forward(code, _array(projected), _array(weight_hh), _array(hn), _array(states), _array(saved),
                 _array(cells), block)
        ctx.code, ctx.block = code, block
        ctx.save_for_backward(weight_hh, states, saved, cells)
        second = cells if code == 2 else projected.new_empty(0)
        if code != 2:
            ctx.mark_non_differentiable(second)
        return states, second

    @staticmethod
    def backward(ctx: Any, grad_states: Tensor, grad_cells: Tensor | None) -> tuple[Tensor | None, ...]:
        _refuse_double_backward()
        weight_hh, states, saved, cells = ctx.saved_tensors
        code = ctx.code
        hidden, steps, batch = states.shape
        rows = weight_hh.shape[0]
        grad_states = grad_states.contiguous() if grad_states is not None else torch.zeros_like(states)
        if code == 2 and grad_cells is not None and grad_cells.numel():
            grad_cells = grad_cells.contiguous()
        else:
            grad_cells = states.new_zeros((hidden, steps, batch) if code == 2 else (1, 1, 1))
        grad_projected = states.new_empty(rows, steps, batch)
        grad_weight = torch.zeros_like(weight_hh)
        grad_bias_hn = states.new_empty(hidden if code == 3 else 1)
        _backward(code, _array(weight_hh), _array(states), _array(saved), _array(cells), _array(grad_states),
                  _array(grad_cells), _array(grad_projected), _array(grad_weight), _array(grad_bias_hn), ctx.block)
        return None, grad_projected, grad_weight, grad_bias_hn if code == 3 else None, None


def _refuse_double_backward() -> None:
    """Raise under ``create_graph=True`` (grad mode on in a backward pass): the kernels have
    no graph of their own, so a second-order gradient would silently miss their part."""
    if torch.is_grad_enabled():
        raise RuntimeError("rnn_models.native's layers have no double backward (create_graph=True); "
                           "set rnn_models.native.ENABLED = False to use torch's kernels")


def _array(x: Tensor) -> np.ndarray:
    """A contiguous tensor's numpy view (the kernels write through it)."""
    if not x.is_contiguous():
        raise ValueError("the native kernels need contiguous tensors")
    return x.detach().numpy()


def recurrent_layer(cell: str, x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None,
                    bias_hh: Tensor | None, block: int | None = None,
                    sources: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """One torch-convention recurrent layer (weights ``(G*H, I)``, ``(G*H, H)``, biases
    ``(G*H,)`` or None) over feature-major inputs ``x`` ``(I, T, B)``, zero initial states:
    the states ``(H, T, B)`` and (LSTM) the cell states ``(H, T, B)``.

    ``block``: the layer is ``H / block`` independent blocks of ``block`` units, each gate
    block alike (``LayeredRNN``'s fused layers): ``weight_hh`` is block diagonal and only
    those blocks are computed. ``sources``: the input columns each block reads, as
    consecutive widths summing to ``I`` (block k reads only its own), so ``weight_ih`` is
    block structured too; default: every block reads all of ``x``. Entries outside the
    blocks must be zero; their gradient is zero. Default: one block, dense."""
    _check_arguments(cell, x, weight_ih, weight_hh, bias_ih, bias_hh)
    features, steps, batch = x.shape
    hidden = weight_hh.shape[1]
    block = hidden if block is None else block
    if not 1 <= block <= hidden or hidden % block:
        raise ValueError(f"block must divide the hidden size {hidden}, got {block}")
    ranges = _column_ranges(sources, hidden // block, features)
    bias_hn = weight_hh.new_zeros(hidden)
    if bias_ih is None:
        outer = weight_ih.new_zeros(weight_ih.shape[0])
    else:
        outer = bias_ih + bias_hh
        if cell == "gru":  # b_hn sits inside the reset gate's product
            outer = torch.cat([outer[: 2 * hidden], bias_ih[2 * hidden:]])
            bias_hn = bias_hh[2 * hidden:]
    projected = BlockProjection.apply(x, weight_ih, outer, ranges, hidden, block)
    return NativeRecurrence.apply(cell, projected, weight_hh, bias_hn, block)


def _column_ranges(sources: Sequence[int] | None, blocks: int, features: int) -> np.ndarray:
    """``(blocks, 2)`` column ranges of the input each block reads."""
    if sources is None:
        return np.array([[0, features]] * blocks, dtype=np.int64)
    widths = [int(w) for w in sources]
    if len(widths) != blocks or sum(widths) != features or min(widths) < 1:
        raise ValueError(f"sources must be {blocks} input widths >= 1 summing to {features}, got {widths}")
    ends = np.cumsum(widths)
    return np.stack([ends - np.array(widths), ends], axis=1).astype(np.int64)


def _check_arguments(cell: str, x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None,
                     bias_hh: Tensor | None) -> None:
    """Raise ValueError naming the first argument that does not fit: the kernels index
    without bounds checks, so a shape that disagrees with the cell would read and write
    out of bounds."""
    if cell not in _CODES:
        raise ValueError(f"cell must be one of {sorted(_CODES)}, got {cell!r}")
    for name, tensor in (("x", x), ("weight_ih", weight_ih), ("weight_hh", weight_hh), ("bias_ih", bias_ih),
                         ("bias_hh", bias_hh)):
        if tensor is not None and (tensor.dtype != torch.float32 or tensor.device.type != "cpu"):
            raise ValueError(f"{name} must be a float32 CPU tensor (the kernels' tanh is float32-accurate), "
                             f"got {tensor.dtype} on {tensor.device}")
    if x.dim() != 3 or 0 in x.shape:
        raise ValueError(f"x must be a non-empty (I, T, B) tensor, got shape {tuple(x.shape)}")
    rows = GATES[cell] * weight_hh.shape[-1]
    if weight_hh.dim() != 2 or weight_hh.shape[0] != rows or rows == 0:
        raise ValueError(f"weight_hh must be ({GATES[cell]}*H, H) for cell {cell!r}, got {tuple(weight_hh.shape)}")
    if tuple(weight_ih.shape) != (rows, x.shape[0]):
        raise ValueError(f"weight_ih must be {(rows, x.shape[0])}, got {tuple(weight_ih.shape)}")
    if (bias_ih is None) != (bias_hh is None):
        raise ValueError("bias_ih and bias_hh must both be tensors or both be None")
    for name, bias in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if bias is not None and tuple(bias.shape) != (rows,):
            raise ValueError(f"{name} must be ({rows},), got {tuple(bias.shape)}")
