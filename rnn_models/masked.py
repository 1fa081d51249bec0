"""Masked RNN, LSTM and GRU that keep torch's fused recurrent kernels.

``MaskedRNN``, ``MaskedLSTM`` and ``MaskedGRU`` subclass ``torch.nn.RNN/LSTM/GRU`` and take
the same arguments, plus boolean ``hh_mask`` / ``ih_mask``. A mask is applied to its weight
in place under ``torch.no_grad()``, so the module keeps calling the one fused kernel per
layer (oneDNN on CPU, cuDNN on GPU) and its flat weight buffer stays intact. Masked weights
stay exactly zero:

* at construction and after ``reset_parameters`` / ``load_state_dict`` / ``set_mask``
  (``w.masked_fill_(~mask, 0)``, which also clears a NaN or inf left there);
* their gradients are zero (a gradient hook multiplies them by the mask), so optimizer
  moments of masked weights stay zero and gradient clipping sees only live weights; from a
  zero weight and zero moments every ``torch.optim`` update (Adam, AdamW, SGD with momentum
  and weight decay, RMSprop) is exactly zero, so a weight masked before training stays 0;
* after every optimizer step of ``rnn_models.train.fit``, whose ``Remask`` hook re-applies
  every mask as ``w.mul_(scale)`` with a cached 0/1 copy of the mask in the weight's dtype
  (several times faster than mixing bool and float on CPU). That matters when a mask is
  set or changed while an optimizer has momentum for the weight (pruning, sparse
  training): a loop of your own calls ``Remask(model)()`` after each ``optimizer.step()``.

The exception is a non-finite gradient: ``inf * 0`` is NaN, so a diverged step (which
``rnn_models.train.fit`` stops and reports as failed) can leave NaN at masked positions
until ``apply_masks()`` clears them. Guarding every step against it (``torch.where``)
costs about 10x the multiplication on a CPU, so the hot path does not.

``torch.nn.utils.prune`` and ``parametrize`` are avoided on purpose: they replace the
weights by computed tensors, which breaks RNN ``_flat_weights`` (PyTorch issues 33618,
65688).

Gate layout: ``weight_hh_l{k}`` is ``(G*H, H)`` with gate blocks stacked (LSTM i, f, g, o;
GRU r, z, n). An ``H x H`` mask (``mask[i, j]`` True keeps the edge ``j -> i``) is tiled
block by block with ``mask.repeat(G, 1)``; a full ``(G*H, H)`` mask gives every gate its
own pattern.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, Union

import torch
from torch import nn

GATES: dict[str, int] = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}
"""Gate blocks stacked in the weights of each cell type."""

GATE_NAMES: dict[str, tuple[str, ...]] = {
    "rnn_tanh": ("h",),
    "rnn_relu": ("h",),
    "gru": ("r", "z", "n"),
    "lstm": ("i", "f", "g", "o"),
}
"""Gate blocks in torch's order: LSTM input, forget, cell, output; GRU reset, update, new."""

MaskSpec = Union[torch.Tensor, Sequence[Union[torch.Tensor, None]], None]
"""One mask for every layer/direction, a list per layer or per layer and direction, or None."""

_MASK_SUFFIX = "_mask"


def mask_scale(cache: dict[str, tuple[torch.Tensor, int, torch.Tensor]], name: str, mask: torch.Tensor,
               dtype: torch.dtype) -> torch.Tensor:
    """``mask`` as 0/1 in ``dtype``, kept in ``cache`` under ``name`` until the mask tensor is
    replaced or changed in place (its ``_version`` counter moves)."""
    cached = cache.get(name)
    if cached is None or cached[0] is not mask or cached[1] != mask._version or cached[2].dtype != dtype:
        cached = cache[name] = (mask, mask._version, mask.to(dtype))
    return cached[2]


class Remask:
    """Re-zero the masked weights of every module in ``model`` that holds masks (those with
    a ``mask_pairs()`` method: the masked modules, ``rnn_models.ensemble.EnsembleRNN``), in
    one ``torch._foreach_mul_``. The holders are found once, at construction.

    It is ``rnn_models.train.fit``'s first hook (``after_step``); a loop of your own calls
    the object after each ``optimizer.step()``.
    """

    def __init__(self, model: nn.Module) -> None:
        self.holders = [m for m in model.modules() if callable(getattr(m, "mask_pairs", None))]

    def __call__(self) -> None:
        pairs = [pair for holder in self.holders for pair in holder.mask_pairs()]
        if pairs:
            with torch.no_grad():
                torch._foreach_mul_([weight for weight, _ in pairs], [scale for _, scale in pairs])

    def after_step(self, state: Any) -> None:
        """The training-loop hook: re-mask after every optimizer step."""
        self()


class GradientMask:
    """Tensor hook zeroing a weight's gradient outside the module's current mask (if any):
    ``module`` keeps the mask as the buffer ``{weight_name}_mask`` and its 0/1 copy from
    ``module.scale(weight_name)``.

    It looks the mask up at call time, so masks set, replaced, removed or moved to another
    device later are honoured without re-registering the hook. A callable the module holds
    as ``gradient_tap`` is given ``(weight_name, grad)`` before the masking: the dense
    gradient, for the steps that need it (RigL's growth, ``rnn_models.dynamic``).
    """

    __torch_unserializable__ = True  # re-registered on unpickling; silences torch's warning

    def __init__(self, module: nn.Module, weight_name: str) -> None:
        self.module = weakref.ref(module)
        self.name = weight_name
        self.key = weight_name + _MASK_SUFFIX

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        module = self.module()
        if module is None or self.key not in module._buffers:
            return grad
        tap = module.__dict__.get("gradient_tap")
        if tap is not None:
            tap(self.name, grad)
        return grad * module.scale(self.name)


def full_mask(mask: Any, weight_shape: tuple[int, int], gates: int, what: str) -> torch.Tensor:
    """Expand ``mask`` to ``weight_shape``: an ``(H, in)`` mask is tiled over the gate blocks.

    Raises ValueError naming ``what`` when the mask is not boolean or has neither shape.
    """
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        raise ValueError(f"{what} must be a bool tensor, got dtype {mask.dtype}")
    rows, cols = weight_shape
    if tuple(mask.shape) == (rows // gates, cols):
        return mask.repeat(gates, 1)
    if tuple(mask.shape) != (rows, cols):
        raise ValueError(
            f"{what} must have shape ({rows // gates}, {cols}) (tiled over {gates} gate blocks) "
            f"or ({rows}, {cols}), got {tuple(mask.shape)}"
        )
    return mask.clone()


class _MaskedMixin:
    """Mask buffers, in-place masking and reports shared by the masked torch RNN modules."""

    def __init__(self, *args: Any, hh_mask: MaskSpec = None, ih_mask: MaskSpec = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._mask_cache: dict[str, tuple[torch.Tensor, int, torch.Tensor]] = {}
        self._hooked: set[str] = set()
        for kind, spec in (("hh", hh_mask), ("ih", ih_mask)):
            for name, mask in self._spread(kind, spec).items():
                self.set_mask(name, mask)

    @property
    def cell(self) -> str:
        """Cell type as a key of ``GATES``: rnn_tanh, rnn_relu, gru or lstm."""
        return self.mode.lower()

    @property
    def gates(self) -> int:
        return GATES[self.cell]

    @property
    def maskable_weights(self) -> list[str]:
        """Names of the weights that can carry a mask (``weight_ih_l*`` and ``weight_hh_l*``)."""
        return [n for n in self._flat_weights_names if n.startswith(("weight_ih_", "weight_hh_"))]

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Full-size boolean mask of every masked weight, by weight name."""
        names = self.maskable_weights
        return {n: self._buffers[n + _MASK_SUFFIX] for n in names if n + _MASK_SUFFIX in self._buffers}

    def set_mask(self, weight_name: str, mask: torch.Tensor | None) -> None:
        """Set (or, with None, remove) the mask of one weight and apply it at once.

        ``mask`` is ``(H, in)`` (tiled over the gate blocks) or the weight's full shape.
        """
        if weight_name not in self.maskable_weights:
            raise ValueError(f"weight_name must be one of {self.maskable_weights}, got {weight_name!r}")
        key = weight_name + _MASK_SUFFIX
        if mask is None:
            self._buffers.pop(key, None)
            return
        weight = getattr(self, weight_name)
        full = full_mask(mask, tuple(weight.shape), self.gates, f"mask of {weight_name}")
        if key in self._buffers:
            self._buffers[key] = full.to(weight.device)
        else:
            self.register_buffer(key, full.to(weight.device))
        self._hook_gradient(weight_name)
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every masked weight in place (call after editing weights by hand)."""
        for name, mask in self.masks.items():
            getattr(self, name).masked_fill_(~mask, 0.0)

    def mask_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, 0/1 mask) of every masked weight: what ``Remask`` multiplies."""
        return [(getattr(self, name), self.scale(name)) for name in self.masks]

    def scale(self, name: str) -> torch.Tensor:
        """The mask of weight ``name`` as 0/1 in the weight's dtype (cached, ``mask_scale``)."""
        return mask_scale(self._mask_cache, name, self._buffers[name + _MASK_SUFFIX], getattr(self, name).dtype)

    def reset_parameters(self) -> None:
        """Re-initialise like torch, then zero the masked weights again."""
        super().reset_parameters()
        self.apply_masks()

    def density(self) -> dict[str, dict[str, float]]:
        """Fraction of kept entries per weight: overall and per gate block (``GATE_NAMES``)."""
        def kept(mask: torch.Tensor) -> float:
            return int(mask.count_nonzero()) / mask.numel()

        report = {}
        for name in self.maskable_weights:
            weight = getattr(self, name)
            mask = self._buffers.get(name + _MASK_SUFFIX, torch.ones_like(weight, dtype=torch.bool))
            blocks = mask.chunk(self.gates, dim=0)
            gates = {g: kept(b) for g, b in zip(GATE_NAMES[self.cell], blocks)}
            report[name] = {"total": kept(mask)} | gates
        return report

    def count_nonzero(self) -> int:
        """Number of non-zero parameters (weights and biases)."""
        return sum(int(torch.count_nonzero(p)) for p in self.parameters())

    def _spread(self, kind: str, spec: MaskSpec) -> dict[str, torch.Tensor]:
        """Assign a mask spec to the ``weight_{kind}`` names of every layer and direction."""
        directions = ["", "_reverse"] if self.bidirectional else [""]
        names = [f"weight_{kind}_l{layer}{d}" for layer in range(self.num_layers) for d in directions]
        if spec is None:
            return {}
        if isinstance(spec, Sequence) and not isinstance(spec, torch.Tensor):
            spec = list(spec)
            if len(spec) == self.num_layers:
                spec = [m for m in spec for _ in directions]
            elif len(spec) != len(names):
                raise ValueError(
                    f"{kind}_mask as a list needs num_layers ({self.num_layers}) or "
                    f"num_layers * num_directions ({len(names)}) entries, got {len(spec)}"
                )
        else:
            spec = [spec] * len(names)
        return {name: mask for name, mask in zip(names, spec) if mask is not None}

    def _hook_gradient(self, name: str) -> None:
        """Mask the gradient of weight ``name`` from now on (one hook per weight; weights
        that never had a mask get none, which saves a Python call per backward)."""
        if name not in self._hooked:
            getattr(self, name).register_hook(GradientMask(self, name))
            self._hooked.add(name)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """Load masks too: a mask in ``state_dict`` replaces ours; one it lacks is kept.

        Loading a dense ``torch.nn`` state dict therefore keeps this module's masks; the loaded
        weights are re-masked at once.
        """
        for name in self.maskable_weights:
            key = prefix + name + _MASK_SUFFIX
            if key in state_dict:
                self.set_mask(name, state_dict[key].to(torch.bool))
            elif name + _MASK_SUFFIX in self._buffers:
                state_dict[key] = self._buffers[name + _MASK_SUFFIX]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self.apply_masks()

    def __getstate__(self) -> dict:
        """Pickle and deepcopy without the cached 0/1 masks (they are rebuilt on demand)."""
        state = super().__getstate__()
        state["_mask_cache"], state["_hooked"] = {}, set()
        return state

    def __setstate__(self, state: dict) -> None:
        """Unpickling and deepcopy drop tensor hooks: put them back."""
        super().__setstate__(state)
        for name in self.masks:
            self._hook_gradient(name)

    def extra_repr(self) -> str:
        masked = ", ".join(self.masks) or "none"
        return f"{super().extra_repr()}, masked={masked}"


class MaskedRNN(_MaskedMixin, nn.RNN):
    """``torch.nn.RNN`` (tanh or relu) with boolean ``hh_mask`` / ``ih_mask``; see module doc."""


class MaskedLSTM(_MaskedMixin, nn.LSTM):
    """``torch.nn.LSTM`` with boolean ``hh_mask`` / ``ih_mask``; see module doc.

    With ``proj_size > 0`` an ``hh_mask`` is ``(H, proj_size)`` or ``(4H, proj_size)``;
    ``weight_hr`` is not maskable.
    """


class MaskedGRU(_MaskedMixin, nn.GRU):
    """``torch.nn.GRU`` with boolean ``hh_mask`` / ``ih_mask``; see module doc."""


OPEN_FORGET_BIAS = 30.0
"""The forget-gate bias ``open_forget_gate`` sets: sigmoid(30) is exactly 1.0 in float32
and float64, so the gate is open and its bias gets exactly zero gradient."""


def open_forget_gate(lstm: nn.LSTM) -> nn.LSTM:
    """Turn ``lstm`` (a ``MaskedLSTM``) into an LSTM without forget gate, the "standard
    LSTM" of Gers, Schmidhuber & Cummins (2000): the forget gate's input and recurrent
    weights are masked out (every layer, direction), its biases are held at
    ``OPEN_FORGET_BIAS`` (``bias_ih``) and 0 (``bias_hh``), so f = 1 at every step and the
    cell state is never reset from inside. A saturated sigmoid's derivative is exactly 0,
    so the held biases get zero gradient and stay put (with weight decay an optimizer
    still shrinks them slowly; f stays exactly 1 while the bias is above about 17, tens of
    thousands of steps at usual rates). Returns ``lstm``."""
    if not isinstance(lstm, MaskedLSTM):
        raise ValueError(f"lstm must be a MaskedLSTM (make_rnn('lstm', ...)), got {type(lstm).__name__}")
    hidden = lstm.hidden_size
    rows = slice(hidden, 2 * hidden)  # gate order i, f, g, o
    for name in lstm.maskable_weights:
        weight = getattr(lstm, name)
        mask = lstm.masks.get(name, torch.ones_like(weight, dtype=torch.bool)).clone()
        mask[rows] = False
        lstm.set_mask(name, mask)
    with torch.no_grad():
        for name in (n for n in lstm._flat_weights_names if n.startswith("bias_")):
            bias = getattr(lstm, name)
            bias[rows] = OPEN_FORGET_BIAS if name.startswith("bias_ih") else 0.0
    return lstm


def make_rnn(cell: str, input_size: int, hidden_size: int, **kwargs: Any) -> nn.RNNBase:
    """Build a masked recurrent module by cell name (a key of ``GATES``).

    ``kwargs`` are those of ``torch.nn.RNN/LSTM/GRU`` plus ``hh_mask`` and ``ih_mask``.
    """
    if cell not in GATES:
        raise ValueError(f"cell must be one of {sorted(GATES)}, got {cell!r}")
    if cell.startswith("rnn_"):
        return MaskedRNN(input_size, hidden_size, nonlinearity=cell[4:], **kwargs)
    module = MaskedLSTM if cell == "lstm" else MaskedGRU
    return module(input_size, hidden_size, **kwargs)
