"""Compiled recurrent networks of narrow layers: the whole time loop of every layer in one
call each way.

The study's layered DAG models are made of recurrent layers a few units wide (3-4 on
average in the ``paper`` preset, rarely more than 30) run over batches of 128. torch's CPU
kernels pay per step and per layer for such layers (oneDNN's LSTM about 130 µs per layer
step forward and backward, ATen's RNN/GRU loops more), far above their arithmetic, and a
Python-level layer loop pays torch's per-call costs for every layer. Here, compiled by
numba, ``network`` runs all layers and all steps in one call forward and one backward
(``NetworkPlan`` says where each layer reads, keeps its weights and writes): every operand
is feature-major ``(F, T, B)``, so a step's rows are contiguous over the batch and every
product and gate is a loop that LLVM vectorizes over ``B``; each layer's input projection
``W_ih x + b`` covers all steps at once, each block reading only its own source's rows.
``rnn_models.layered.LayeredRNN`` runs on it where ``rnn_models.engines.choose_engine``
picks it. Measurements: docs/bench/layered.md.

``tanh`` is a rational minimax approximation (odd degree-13 numerator, even degree-6
denominator, clamped at |x| = 7.9053), plain arithmetic that LLVM vectorizes (numba's
``np.tanh``/``np.exp`` are scalar libm calls, about 8x slower); its largest error in
float32 is 2.4e-7. ``sigmoid(x) = (1 + tanh(x / 2)) / 2``. The fast-math flags leave out
``nnan``/``ninf`` so that a NaN propagates and a diverging model is seen to fail. Kernels
compile on first use and are cached on disk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numba import njit
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from rnn_models.masked import GATES

_F = np.float32
_LIMIT = _F(7.90531110763549805)
_N0, _N1, _N2, _N3, _N4, _N5, _N6 = (_F(c) for c in (
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
    1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03))
_D0, _D1, _D2, _D3 = (_F(c) for c in (
    1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03))
_JIT = {"fastmath": {"nsz", "arcp", "contract", "afn", "reassoc"}, "error_model": "numpy", "cache": True}
_CODES = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3}


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


@njit(inline="always", **_JIT)
def _copy(source: np.ndarray, target: np.ndarray) -> None:
    """``target[:] = source`` for rows (1-d) as a loop LLVM vectorizes: numba's slice
    assignment costs several times more on rows this short."""
    for b in range(target.shape[0]):
        target[b] = source[b]


@njit(inline="always", **_JIT)
def _zero(rows: np.ndarray) -> None:
    """``rows[:] = 0`` for a 2-d array, as ``_copy`` does it."""
    for r in range(rows.shape[0]):
        row = rows[r]
        for b in range(row.shape[0]):
            row[b] = _F(0.0)


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
def _outer(grad: np.ndarray, states: np.ndarray, out: np.ndarray, block: int, first_row: int) -> None:
    """``out[first_row + r, j] += sum_{t >= 1, b} grad[r, t, b] * states[j, t - 1, b]``: the
    recurrent weights' gradient over all steps at once, one long dot product per entry
    (only the diagonal blocks, as in ``_product``: the others stay as they were, zero)."""
    hidden, steps, batch = states.shape
    span = (steps - 1) * batch
    flat_states = states.reshape((hidden, steps * batch))
    flat_grad = grad.reshape((grad.shape[0], steps * batch))
    for r in range(grad.shape[0]):
        g, target = flat_grad[r, batch:], out[first_row + r]
        start = (first_row + r) % hidden // block * block
        for j in range(start, start + block):
            source = flat_states[j, :span]
            total = _F(0.0)
            for n in range(span):
                total += g[n] * source[n]
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
            _copy(projected[r, t], pre[r])
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
        _copy(projected[r, t], pre[r])
    for j in range(hidden):
        row, value = pre[2 * hidden + j], bias_hn[j]
        for b in range(batch):
            row[b] = value
    if t > 0:
        _product(weight, states, t - 1, pre, block)
    for r in range(2 * hidden):
        source, target = pre[r], gates[r, t]
        for b in range(batch):
            target[b] = _sigmoid(source[b])
    for j in range(hidden):
        x, reset, hn, n = projected[2 * hidden + j, t], gates[j, t], pre[2 * hidden + j], gates[2 * hidden + j, t]
        _copy(hn, recurrent_n[j, t])
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
    """Backpropagation through all steps: from ``grad_states`` (and, LSTM, ``grad_cells``;
    no rows: none) ``(H, T, B)``, fills ``grad_projected`` ``(G*H, T, B)`` (the
    pre-activations' gradient), then, over all steps at once, ``grad_weight`` ``(G*H, H)``
    (added to) and (GRU) ``grad_bias_hn`` ``(H,)`` (the GRU's ``W_hn h + b_hn`` gradient is
    kept for it; for the other cells it is ``grad_projected`` itself)."""
    hidden, steps, batch = states.shape
    rows = weight.shape[0]
    one = _F(1.0)
    grad_h = np.zeros((hidden, batch), dtype=states.dtype)
    grad_c = np.zeros((hidden, batch), dtype=states.dtype)
    grad_pre = np.empty((rows, batch), dtype=states.dtype)
    grad_hh = np.empty((rows if code == 3 else 0, batch), dtype=states.dtype)  # the GRU's recurrent gradient
    grad_n = np.empty((hidden if code == 3 else 0, steps, batch), dtype=states.dtype)
    scratch = np.empty((hidden, batch), dtype=states.dtype)
    for t in range(steps - 1, -1, -1):
        for j in range(hidden):
            dh, up = grad_h[j], grad_states[j, t]
            for b in range(batch):
                dh[b] += up[b]
        recurrent = grad_pre
        if code == 2:
            for j in range(hidden if grad_cells.shape[0] > 0 else 0):
                dc, up = grad_c[j], grad_cells[j, t]
                for b in range(batch):
                    dc[b] += up[b]
            _lstm_step_back(saved, cells, t, grad_h, grad_c, grad_pre, scratch)
            _zero(grad_h)
        elif code == 3:
            _gru_step_back(saved, cells, states, t, grad_h, grad_pre, grad_hh)
            for j in range(hidden):
                _copy(grad_hh[2 * hidden + j], grad_n[j, t])
            recurrent = grad_hh
        else:
            for j in range(hidden):
                dh, h, target = grad_h[j], states[j, t], grad_pre[j]
                for b in range(batch):
                    target[b] = dh[b] * (one - h[b] * h[b]) if code == 0 else (dh[b] if h[b] > 0 else _F(0.0))
            _zero(grad_h)
        for r in range(rows):
            _copy(grad_pre[r], grad_projected[r, t])
        if t > 0:
            _transposed_product(weight, recurrent, grad_h, block)
    if code != 3:
        _outer(grad_projected, states, grad_weight, block, 0)
        return
    _outer(grad_projected[:2 * hidden], states, grad_weight, block, 0)
    _outer(grad_n, states, grad_weight, block, 2 * hidden)
    flat_n = grad_n.reshape((hidden, steps * batch))
    for j in range(hidden):
        source = flat_n[j]
        total = _F(0.0)
        for n in range(source.shape[0]):
            total += source[n]
        grad_bias_hn[j] = total


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
def _project(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, blocks: np.ndarray, hidden: int, block: int,
             out: np.ndarray) -> None:
    """``out[r] = bias[r] + sum_i weight[r, i] x[i + shift]`` over the weight columns ``i`` of
    row r's block k (``(r % hidden) // block``): ``blocks[k]`` is (first column, end column,
    first row of ``x`` read), so each block reads only its own source. Rows of ``x`` and
    ``out`` ``(G*H, N)`` run over all ``N = T * B`` step columns; four columns a pass, so an
    output row is loaded and stored a quarter as often (the loops are bound by that)."""
    for r in range(out.shape[0]):
        k = (r % hidden) // block
        first, end = blocks[k, 0], blocks[k, 1]
        shift = blocks[k, 2] - first
        target, w, value = out[r], weight[r], bias[r]
        for n in range(target.shape[0]):
            target[n] = value
        i = first
        while i + 4 <= end:
            w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]
            s0, s1, s2, s3 = x[i + shift], x[i + 1 + shift], x[i + 2 + shift], x[i + 3 + shift]
            for n in range(target.shape[0]):
                target[n] += w0 * s0[n] + w1 * s1[n] + w2 * s2[n] + w3 * s3[n]
            i += 4
        for i in range(i, end):
            wi, source = w[i], x[i + shift]
            for n in range(target.shape[0]):
                target[n] += wi * source[n]


@njit(**_JIT)
def _project_backward(x: np.ndarray, weight: np.ndarray, blocks: np.ndarray, hidden: int, block: int,
                      grad: np.ndarray, grad_x: np.ndarray, grad_weight: np.ndarray, grad_bias: np.ndarray,
                      first_row: int) -> None:
    """Gradients of ``_project`` from ``grad`` ``(G*H, N)``: ``grad_bias`` and the in-block
    entries of ``grad_weight`` (the others stay zero; four dot products a pass over a
    gradient row), and, added into ``grad_x``, that of the rows of ``x`` from ``first_row``
    on (the input's rows are skipped when it needs none; four gradient rows a pass)."""
    for r in range(grad.shape[0]):
        k = (r % hidden) // block
        first, end = blocks[k, 0], blocks[k, 1]
        shift = blocks[k, 2] - first
        g = grad[r]
        total = _F(0.0)
        for n in range(g.shape[0]):
            total += g[n]
        grad_bias[r] = total
        i = first
        while i + 4 <= end:
            s0, s1, s2, s3 = x[i + shift], x[i + 1 + shift], x[i + 2 + shift], x[i + 3 + shift]
            t0, t1, t2, t3 = _F(0.0), _F(0.0), _F(0.0), _F(0.0)
            for n in range(g.shape[0]):
                t0 += g[n] * s0[n]
                t1 += g[n] * s1[n]
                t2 += g[n] * s2[n]
                t3 += g[n] * s3[n]
            grad_weight[r, i], grad_weight[r, i + 1], grad_weight[r, i + 2], grad_weight[r, i + 3] = t0, t1, t2, t3
            i += 4
        for i in range(i, end):
            source = x[i + shift]
            total = _F(0.0)
            for n in range(g.shape[0]):
                total += g[n] * source[n]
            grad_weight[r, i] = total
    count = grad.shape[0] // hidden * block  # rows per block: every gate's
    for k in range(blocks.shape[0]):
        first, end, row = blocks[k, 0], blocks[k, 1], blocks[k, 2]
        for i in range(first + max(first_row - row, 0), end):  # a block may read input and layer rows
            target = grad_x[row + i - first]
            c = 0
            while c + 4 <= count:
                r0 = c // block * hidden + k * block + c % block
                r1 = (c + 1) // block * hidden + k * block + (c + 1) % block
                r2 = (c + 2) // block * hidden + k * block + (c + 2) % block
                r3 = (c + 3) // block * hidden + k * block + (c + 3) % block
                w0, w1, w2, w3 = weight[r0, i], weight[r1, i], weight[r2, i], weight[r3, i]
                g0, g1, g2, g3 = grad[r0], grad[r1], grad[r2], grad[r3]
                for n in range(target.shape[0]):
                    target[n] += w0 * g0[n] + w1 * g1[n] + w2 * g2[n] + w3 * g3[n]
                c += 4
            for c in range(c, count):
                r0 = c // block * hidden + k * block + c % block
                w0, g0 = weight[r0, i], grad[r0]
                for n in range(target.shape[0]):
                    target[n] += w0 * g0[n]


@njit(inline="always", **_JIT)
def _gates(code: int) -> int:
    """Gate blocks of a cell code (``_CODES``)."""
    return 4 if code == 2 else (3 if code == 3 else 1)


@njit(**_JIT)
def _layer_bias(code: int, weights: np.ndarray, bias_ih: int, bias_hh: int, hidden: int, bias: np.ndarray,
                bias_hn: np.ndarray) -> None:
    """The projection's bias ``b_ih + b_hh`` (GRU: ``b_ih`` alone for the n gate, whose
    ``b_hn`` goes into ``bias_hn``: it sits inside the reset gate's product) from the flat
    ``weights`` at offsets ``bias_ih``/``bias_hh`` (-1: no biases, all zero)."""
    bias[:] = 0.0
    bias_hn[:] = 0.0
    if bias_ih < 0:
        return
    for r in range(bias.shape[0]):
        if code == 3 and r >= 2 * hidden:
            bias[r] = weights[bias_ih + r]
            bias_hn[r - 2 * hidden] = weights[bias_hh + r]
        else:
            bias[r] = weights[bias_ih + r] + weights[bias_hh + r]


@njit(**_JIT)
def _network_forward(code: int, layers: np.ndarray, blocks: np.ndarray, weights: np.ndarray, outs: np.ndarray,
                     final: np.ndarray, states: np.ndarray, saved: np.ndarray, cells: np.ndarray) -> None:
    """Every layer of a ``NetworkPlan`` in order (see there for ``layers``/``blocks``): the
    input projection of each block from its source rows of ``outs`` ``(rows, T, B)`` (the
    input first, then each layer's output), the recurrence (``_forward``) into the layer's
    rows of ``states`` (and, LSTM/GRU, ``saved``/``cells``), and the layer's output, the sum
    of its blocks, into its rows of ``outs`` (the last layer's into ``final``)."""
    gates = _gates(code)
    _, steps, batch = outs.shape
    columns = steps * batch
    flat_outs, flat_final = outs.reshape((outs.shape[0], columns)), final.reshape((final.shape[0], columns))
    flat_states = states.reshape((states.shape[0], columns))
    projected = np.empty((gates * np.max(layers[:, _HIDDEN]), steps, batch), dtype=outs.dtype)
    for j in range(layers.shape[0]):
        hidden, width, first, count = layers[j, _HIDDEN], layers[j, _WIDTH], layers[j, _FIRST], layers[j, _COUNT]
        features, state, rows = layers[j, _FEATURES], layers[j, _STATE], gates * layers[j, _HIDDEN]
        weight_ih = weights[layers[j, _W_IH]:layers[j, _W_IH] + rows * features].reshape((rows, features))
        weight_hh = weights[layers[j, _W_HH]:layers[j, _W_HH] + rows * hidden].reshape((rows, hidden))
        bias, bias_hn = np.empty(rows, dtype=outs.dtype), np.empty(hidden, dtype=outs.dtype)
        _layer_bias(code, weights, layers[j, _B_IH], layers[j, _B_HH], hidden, bias, bias_hn)
        layer_projected = projected[:rows]
        _project(flat_outs, weight_ih, bias, blocks[first:first + count], hidden, width,
                 layer_projected.reshape((rows, columns)))
        gate = layers[j, _GATE]
        _forward(code, layer_projected, weight_hh, bias_hn, states[state:state + hidden],
                 saved[gate:gate + rows] if code >= 2 else saved,
                 cells[state:state + hidden] if code >= 2 else cells, width)
        for u in range(width):
            target = flat_final[u] if j == layers.shape[0] - 1 else flat_outs[layers[j, _OUT] + u]
            _copy(flat_states[state + u], target)
            for k in range(1, count):
                source = flat_states[state + k * width + u]
                for n in range(columns):
                    target[n] += source[n]


@njit(**_JIT)
def _network_backward(code: int, layers: np.ndarray, blocks: np.ndarray, weights: np.ndarray, outs: np.ndarray,
                      states: np.ndarray, saved: np.ndarray, cells: np.ndarray, grad_final: np.ndarray,
                      grad_outs: np.ndarray, grad_states: np.ndarray, grad_cells: np.ndarray,
                      grad_weights: np.ndarray, first_row: int) -> None:
    """Backpropagation through ``_network_forward``, last layer first, from the gradient of
    its ``final`` output: ``grad_outs`` (that of ``outs``, zeros on entry) gathers, in place,
    what every layer passes to its sources, so it is complete for a layer's output when that
    layer's turn comes; ``grad_states`` and (LSTM) ``grad_cells`` (no rows: none) add to the
    states'. Fills ``grad_weights`` (flat, zeros on entry) and the input rows of
    ``grad_outs`` from ``first_row`` on."""
    gates = _gates(code)
    _, steps, batch = outs.shape
    columns = steps * batch
    flat_outs, flat_grad_outs = outs.reshape((outs.shape[0], columns)), grad_outs.reshape((outs.shape[0], columns))
    flat_grad_final = grad_final.reshape((grad_final.shape[0], columns))
    widest = np.max(layers[:, _HIDDEN])
    grad_h = np.empty((widest, steps, batch), dtype=outs.dtype)
    flat_grad_h = grad_h.reshape((widest, columns))
    grad_projected = np.empty((gates * widest, steps, batch), dtype=outs.dtype)
    no_cells = grad_cells[:0]
    for j in range(layers.shape[0] - 1, -1, -1):
        hidden, width, first, count = layers[j, _HIDDEN], layers[j, _WIDTH], layers[j, _FIRST], layers[j, _COUNT]
        features, state, rows = layers[j, _FEATURES], layers[j, _STATE], gates * layers[j, _HIDDEN]
        for k in range(count):
            for u in range(width):
                target = flat_grad_h[k * width + u]
                up = flat_grad_final[u] if j == layers.shape[0] - 1 else flat_grad_outs[layers[j, _OUT] + u]
                _copy(up, target)
                if grad_states.shape[0] > 0:
                    direct = grad_states[state + k * width + u].reshape(columns)
                    for n in range(columns):
                        target[n] += direct[n]
        gate, o_hh, o_ih = layers[j, _GATE], layers[j, _W_HH], layers[j, _W_IH]
        layer_projected = grad_projected[:rows]
        grad_bias_hn = np.empty(hidden, dtype=outs.dtype)
        _backward(code, weights[o_hh:o_hh + rows * hidden].reshape((rows, hidden)), states[state:state + hidden],
                  saved[gate:gate + rows] if code >= 2 else saved,
                  cells[state:state + hidden] if code >= 2 else cells, grad_h[:hidden],
                  grad_cells[state:state + hidden] if code == 2 and grad_cells.shape[0] > 0 else no_cells,
                  layer_projected, grad_weights[o_hh:o_hh + rows * hidden].reshape((rows, hidden)), grad_bias_hn,
                  width)
        grad_bias = np.empty(rows, dtype=outs.dtype)
        _project_backward(flat_outs, weights[o_ih:o_ih + rows * features].reshape((rows, features)),
                          blocks[first:first + count], hidden, width, layer_projected.reshape((rows, columns)),
                          flat_grad_outs, grad_weights[o_ih:o_ih + rows * features].reshape((rows, features)),
                          grad_bias, first_row)
        b_ih, b_hh = layers[j, _B_IH], layers[j, _B_HH]
        if b_ih >= 0:
            for r in range(rows):
                grad_weights[b_ih + r] = grad_bias[r]
                grad_weights[b_hh + r] = grad_bias_hn[r - 2 * hidden] if code == 3 and r >= 2 * hidden else grad_bias[r]


_LAYER_FIELDS = ("hidden", "width", "first_block", "blocks", "features", "weight_ih", "weight_hh", "bias_ih",
                 "bias_hh", "state_row", "gate_row", "output_row")
(_HIDDEN, _WIDTH, _FIRST, _COUNT, _FEATURES, _W_IH, _W_HH, _B_IH, _B_HH, _STATE, _GATE,
 _OUT) = range(len(_LAYER_FIELDS))


@dataclass(frozen=True, eq=False)
class NetworkPlan:
    """Where every layer of a network of compiled recurrent layers reads, keeps its weights
    and writes (``network_plan`` builds it; ``network`` runs it).

    ``layers`` ``(L, 12)``: per layer the columns of ``_LAYER_FIELDS``: fused hidden size,
    block width, first row in ``blocks`` and block count, input features, offsets of
    ``weight_ih``/``weight_hh``/``bias_ih``/``bias_hh`` in the flat weights (-1: no biases),
    first row of its states, of its gates and of its output (-1 for the last layer, whose
    output ``network`` returns on its own). ``blocks`` ``(total, 3)``: per block its first
    and end column of ``weight_ih`` and the first row of the outputs it reads. ``shapes``:
    the parameters' shapes, in order; ``templates``: meta tensors of those shapes (what the
    gradient's flat buffer is cut into views by). ``output_rows``, ``state_rows``,
    ``gate_rows``: rows of the outputs, states and gates buffers.
    """

    cell: str
    input_size: int
    layers: np.ndarray
    blocks: np.ndarray
    shapes: tuple[tuple[int, ...], ...]
    templates: tuple[Tensor, ...]
    output_rows: int
    state_rows: int
    gate_rows: int

    def output_row(self, layer: int) -> int:
        """First row of ``layer``'s output (the sum of its blocks) in ``network``'s outputs
        (every layer's but the last's, which ``network`` returns on its own)."""
        if not 0 <= layer < len(self.layers) - 1:
            raise ValueError(f"layer must be in 0..{len(self.layers) - 2} (the last layer's output is returned "
                             f"on its own), got {layer}")
        return int(self.layers[layer, _OUT])

    def state_row(self, layer: int) -> int:
        """First row of ``layer``'s states (all its blocks) in ``network``'s states."""
        return int(self.layers[layer, _STATE])


def network_plan(cell: str, input_size: int, widths: Sequence[int],
                 reads: Sequence[Sequence[tuple[int, int, int]]], bias: bool = True) -> NetworkPlan:
    """The plan of a network of ``len(widths)`` recurrent layers run in order: layer j has
    ``len(reads[j])`` independent blocks of ``widths[j]`` units (weights in torch's layout,
    gate blocks stacked, ``weight_hh`` block diagonal). Block k reads ``count`` rows of the
    outputs from row ``first`` through ``count`` columns of ``weight_ih`` from ``column``,
    ``reads[j][k] = (first, count, column)``; rows ``0..input_size-1`` of the outputs hold
    the input and each layer's output (the sum of its blocks, ``widths[j]`` rows) follows in
    order, so a layer reads only the input and earlier layers (a run may span both). The
    parameters are, per layer, ``weight_ih`` (as many columns as its blocks read),
    ``weight_hh`` and (``bias``) ``bias_ih``, ``bias_hh``."""
    if cell not in _CODES:
        raise ValueError(f"cell must be one of {sorted(_CODES)}, got {cell!r}")
    if len(widths) != len(reads) or not widths:
        raise ValueError(f"widths and reads must name the same layers (at least one), got {len(widths)} and "
                         f"{len(reads)}")
    gates = GATES[cell]
    layers, blocks, shapes = [], [], []
    offset, state, gate, written = 0, 0, 0, input_size
    for j, (width, layer_reads) in enumerate(zip(widths, reads)):
        if width < 1 or not layer_reads:
            raise ValueError(f"layer {j} needs a width >= 1 and at least one block, got {width} and {len(layer_reads)}")
        first_block = len(blocks)
        for first, count, column in layer_reads:
            if count < 1 or first < 0 or first + count > written or column < 0:
                raise ValueError(f"layer {j} may read rows 0..{written - 1} of the outputs in runs of >= 1 "
                                 f"through columns >= 0, got rows {first}..{first + count - 1} from column {column}")
            blocks.append((column, column + count, first))
        features = max(column + count for _, count, column in layer_reads)
        hidden = width * len(layer_reads)
        rows = gates * hidden
        layer_shapes = [(rows, features), (rows, hidden)] + ([(rows,), (rows,)] if bias else [])
        starts = np.cumsum([offset] + [math.prod(s) for s in layer_shapes])
        layers.append((hidden, width, first_block, len(layer_reads), features, starts[0], starts[1],
                       starts[2] if bias else -1, starts[3] if bias else -1, state, gate, written))
        shapes += layer_shapes
        offset, state, gate, written = int(starts[-1]), state + hidden, gate + rows, written + width
    layers[-1] = layers[-1][:-1] + (-1,)  # the last layer's output is no row of the outputs
    return NetworkPlan(cell, input_size, np.array(layers, dtype=np.int64), np.array(blocks, dtype=np.int64),
                       tuple(shapes), tuple(torch.empty(s, device="meta") for s in shapes), written - widths[-1],
                       state, gate)


class NativeNetwork(torch.autograd.Function):
    """``network`` as an autograd Function: one compiled call forward, one backward."""

    @staticmethod
    def forward(ctx: Any, plan: NetworkPlan, x: Tensor, *parameters: Tensor) -> tuple[Tensor, ...]:
        code = _CODES[plan.cell]
        features, steps, batch = x.shape
        weights = _flatten_dense_tensors(parameters)  # one C++ call for all of them
        outs = x.new_empty(plan.output_rows, steps, batch)
        outs[:features] = x
        final = x.new_empty(int(plan.layers[-1, _WIDTH]), steps, batch)
        states = x.new_empty(plan.state_rows, steps, batch)
        gated = code >= 2
        saved = x.new_empty((plan.gate_rows, steps, batch) if gated else (1, 1, 1))
        cells = x.new_empty((plan.state_rows, steps, batch) if gated else (1, 1, 1))
        _network_forward(code, plan.layers, plan.blocks, _array(weights), _array(outs), _array(final),
                         _array(states), _array(saved), _array(cells))
        ctx.plan = plan
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(weights, outs, states, saved, cells)
        lstm_cells = cells if code == 2 else x.new_empty(0)
        ctx.mark_non_differentiable(outs, *(() if code == 2 else (lstm_cells,)))
        return final, states, lstm_cells, outs

    @staticmethod
    def backward(ctx: Any, grad_final: Tensor | None, grad_states: Tensor | None, grad_cells: Tensor | None,
                 _: Tensor | None) -> tuple[Tensor | None, ...]:
        _refuse_double_backward()
        weights, outs, states, saved, cells = ctx.saved_tensors
        plan = ctx.plan
        steps, batch = outs.shape[1:]
        grad_final = outs.new_zeros(int(plan.layers[-1, _WIDTH]), steps, batch) if grad_final is None \
            else grad_final.contiguous()
        grad_states = states.new_empty(0, 1, 1) if grad_states is None else grad_states.contiguous()
        usable_cells = grad_cells is not None and grad_cells.numel() > 0
        grad_cells = grad_cells.contiguous() if usable_cells else states.new_empty(0, 1, 1)
        grad_outs = torch.zeros_like(outs)
        grad_weights = torch.zeros_like(weights)
        needs_x = ctx.needs_input_grad[1]
        _network_backward(_CODES[plan.cell], plan.layers, plan.blocks, _array(weights), _array(outs),
                          _array(states), _array(saved), _array(cells), _array(grad_final), _array(grad_outs),
                          _array(grad_states), _array(grad_cells), _array(grad_weights),
                          0 if needs_x else plan.input_size)
        grads = _unflatten_dense_tensors(grad_weights, plan.templates)  # views, one C++ call
        return None, (grad_outs[:plan.input_size] if needs_x else None), *grads


def network(plan: NetworkPlan, x: Tensor, parameters: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Run the layers of ``plan`` over feature-major ``x`` ``(I, T, B)``, zero initial states,
    with ``parameters`` in the plan's order and shapes (``NetworkPlan.shapes``). Returns the
    last layer's output ``(W, T, B)``, the states of all blocks ``(sum H, T, B)``
    (``NetworkPlan.state_row``) and, LSTM, their cell states alike (else an empty tensor),
    through which gradients flow, and the outputs the layers read ``(rows, T, B)`` (the
    input, then every other layer's output, ``NetworkPlan.output_row``), which take none."""
    if not isinstance(plan, NetworkPlan):
        raise ValueError(f"plan must be a NetworkPlan (from network_plan), got {type(plan).__name__}")
    parameters = list(parameters)
    if len(parameters) != len(plan.shapes):
        raise ValueError(f"parameters must be the plan's {len(plan.shapes)} tensors, got {len(parameters)}")
    for index, (tensor, shape) in enumerate(zip(parameters, plan.shapes)):
        if tensor.shape != shape or tensor.dtype != torch.float32 or tensor.device.type != "cpu":
            raise ValueError(f"parameters[{index}] must be a float32 CPU tensor of shape {shape}, got "
                             f"{tensor.dtype} {tuple(tensor.shape)} on {tensor.device}")
    if x.dim() != 3 or x.shape[0] != plan.input_size or 0 in x.shape or x.dtype != torch.float32 \
            or x.device.type != "cpu":
        raise ValueError(f"x must be a non-empty float32 CPU tensor of shape ({plan.input_size}, T, B), got "
                         f"{x.dtype} {tuple(x.shape)} on {x.device}")
    return NativeNetwork.apply(plan, x, *parameters)


def _refuse_double_backward() -> None:
    """Raise under ``create_graph=True`` (grad mode on in a backward pass): the kernels have
    no graph of their own, so a second-order gradient would silently miss their part."""
    if torch.is_grad_enabled():
        raise RuntimeError("rnn_models.native's layers have no double backward (create_graph=True); "
                           "use LayeredRNN(engine='torch') for torch's kernels")


def _array(x: Tensor) -> np.ndarray:
    """A contiguous tensor's numpy view (the kernels write through it)."""
    if not x.is_contiguous():
        raise ValueError("the native kernels need contiguous tensors")
    return x.detach().numpy()
